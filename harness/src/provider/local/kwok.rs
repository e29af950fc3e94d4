//! One Kubernetes control plane started by kwokctl's `binary` runtime from local binaries: etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler and kwok (simulated nodes and pods), all
//! bound to 127.0.0.1 on ports the harness chose.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::sys::process::{self, STATE_MARKER_ENV};
use crate::toolchain::{Tool, Toolchain};

/// The ports of one cluster (control plane and its Flux controllers), a contiguous block.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct ClusterPorts {
    pub base: u16,
}

impl ClusterPorts {
    /// How many ports one cluster uses.
    pub const LEN: u16 = 20;

    pub fn apiserver(&self) -> u16 {
        self.base
    }
    fn etcd(&self) -> u16 {
        self.base + 1
    }
    fn etcd_peer(&self) -> u16 {
        self.base + 2
    }
    fn kwok(&self) -> u16 {
        self.base + 3
    }
    fn controller_manager(&self) -> u16 {
        self.base + 4
    }
    fn scheduler(&self) -> u16 {
        self.base + 5
    }
    /// Ports from `base + 6` on are handed to the Flux controllers.
    pub fn flux(&self, index: u16) -> u16 {
        assert!(index < Self::LEN - 6, "cluster port block exhausted");
        self.base + 6 + index
    }
}

/// A running kwokctl cluster and the kubeconfig (one context, named after the cluster) to reach it.
#[derive(Debug)]
pub struct KwokCluster {
    name: String,
    workdir: PathBuf,
    kubeconfig: PathBuf,
    ports: ClusterPorts,
    state_dir: PathBuf,
}

impl KwokCluster {
    /// Creates cluster `name` under `workdir`. `extra_config` is appended to the kwokctl configuration
    /// (e.g. kwok `ClusterLogs` documents, read by kwok at start).
    pub fn create(
        toolchain: &Toolchain,
        name: &str,
        workdir: &Path,
        ports: ClusterPorts,
        extra_config: &str,
        state_dir: &Path,
    ) -> Result<Self> {
        fs::create_dir_all(workdir)?;
        let config = workdir.join("kwokctl.yaml");
        fs::write(
            &config,
            format!("{}{extra_config}", kwokctl_config(toolchain, ports)),
        )?;
        let kwokctl_kubeconfig = workdir.join("kwokctl-kubeconfig.yaml");
        // Not `exec::bounded`: kwokctl starts the cluster's etcd and control plane, which must
        // outlive it (a group kill would take them down); `--timeout 4m` bounds it instead.
        let out = duct::cmd!(
            toolchain.binary(Tool::Kwok, "kwokctl"),
            "--name",
            name,
            "-c",
            &config,
            "create",
            "cluster",
            "--runtime",
            "binary",
            "--kubeconfig",
            &kwokctl_kubeconfig,
            "--wait",
            "90s",
            "--timeout",
            "4m"
        )
        .env("KWOK_WORKDIR", workdir)
        .env(STATE_MARKER_ENV, state_dir)
        .env_remove("KUBECONFIG")
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()?;
        let cluster = Self {
            name: name.to_string(),
            workdir: workdir.to_path_buf(),
            kubeconfig: workdir.join("kubeconfig.yaml"),
            ports,
            state_dir: state_dir.to_path_buf(),
        };
        let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
        fs::write(workdir.join("kwokctl-create.log"), &transcript)?;
        if !out.status.success() {
            cluster.stop();
            bail!(
                "kwokctl could not create cluster {name} (logs: {}): {}",
                cluster.cluster_dir().join("logs").display(),
                transcript.lines().last().unwrap_or_default()
            );
        }
        fs::write(&cluster.kubeconfig, cluster.kubeconfig_yaml())?;
        cluster.wait_ready(toolchain)?;
        Ok(cluster)
    }

    /// Waits (90 s) until the API server answers `/readyz` with `ok`, failing at once when etcd or
    /// kube-apiserver has died.
    fn wait_ready(&self, toolchain: &Toolchain) -> Result<()> {
        let kubectl = toolchain.binary(Tool::Kubernetes, "kubectl");
        crate::sys::poll::wait_for(
            &format!("cluster {} API server to be ready", self.name),
            Duration::from_secs(90),
            || {
                self.ensure_running()?;
                let ready = crate::sys::exec::run(
                    "kubectl get --raw /readyz",
                    duct::cmd!(
                        &kubectl,
                        "--kubeconfig",
                        &self.kubeconfig,
                        "get",
                        "--raw",
                        "/readyz",
                        "--request-timeout=5s"
                    ),
                    Duration::from_secs(10),
                );
                Ok(ready.is_ok_and(|out| out == "ok").then_some(()))
            },
        )
    }

    /// kubeconfig with one context named after the cluster (client certificate auth).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver())
    }

    fn cluster_dir(&self) -> PathBuf {
        self.workdir.join("clusters").join(&self.name)
    }

    /// Control-plane component logs (etcd, kube-apiserver, …, kwok-controller).
    pub fn logs_dir(&self) -> PathBuf {
        self.cluster_dir().join("logs")
    }

    /// The kubeconfig entries (cluster, user, context) for this cluster, certificates by path.
    pub fn kubeconfig_yaml(&self) -> String {
        let pki = self.cluster_dir().join("pki");
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {name}\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {name}-admin\n  user:\n    client-certificate: {crt}\n    client-key: {key}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\n",
            name = self.name,
            server = self.server(),
            ca = pki.join("ca.crt").display(),
            crt = pki.join("admin.crt").display(),
            key = pki.join("admin.key").display(),
        )
    }

    /// Pid of one control-plane component (`kube-apiserver`, `etcd`, …), from kwokctl's pid file.
    pub fn component_pid(&self, component: &str) -> Option<u32> {
        fs::read_to_string(
            self.cluster_dir()
                .join("pids")
                .join(format!("{component}.pid")),
        )
        .ok()
        .and_then(|s| s.trim().parse().ok())
    }

    /// Fails naming the component when a control-plane process has died.
    pub fn ensure_running(&self) -> Result<()> {
        for component in ["etcd", "kube-apiserver"] {
            if let Some(pid) = self.component_pid(component)
                && !crate::sys::exec::alive(pid)
            {
                bail!(
                    "{component} of cluster {} exited; see {}",
                    self.name,
                    self.logs_dir().join(format!("{component}.log")).display()
                );
            }
        }
        Ok(())
    }

    /// Stops every control-plane process by the pid kwokctl recorded (SIGTERM, then SIGKILL).
    pub fn stop(&self) {
        process::stop_recorded(&self.cluster_dir().join("pids"), &self.state_dir);
    }
}

impl Drop for KwokCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// kwokctl configuration: every binary local (nothing is downloaded), everything on 127.0.0.1.
fn kwokctl_config(toolchain: &Toolchain, ports: ClusterPorts) -> String {
    let k8s = |bin: &str| {
        toolchain
            .binary(Tool::Kubernetes, bin)
            .display()
            .to_string()
    };
    format!(
        r#"apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  bindAddress: 127.0.0.1
  kubeVersion: {kube_version}
  kubeApiserverBinary: {apiserver}
  kubeControllerManagerBinary: {kcm}
  kubeSchedulerBinary: {scheduler}
  kubectlBinary: {kubectl}
  etcdBinary: {etcd}
  kwokControllerBinary: {kwok}
  kubeApiserverPort: {p_api}
  etcdPort: {p_etcd}
  etcdPeerPort: {p_peer}
  kwokControllerPort: {p_kwok}
  kubeControllerManagerPort: {p_kcm}
  kubeSchedulerPort: {p_sched}
"#,
        kube_version = toolchain.versions().get(Tool::Kubernetes),
        apiserver = k8s("kube-apiserver"),
        kcm = k8s("kube-controller-manager"),
        scheduler = k8s("kube-scheduler"),
        kubectl = k8s("kubectl"),
        etcd = toolchain.binary(Tool::Etcd, "etcd").display(),
        kwok = toolchain.binary(Tool::Kwok, "kwok").display(),
        p_api = ports.apiserver(),
        p_etcd = ports.etcd(),
        p_peer = ports.etcd_peer(),
        p_kwok = ports.kwok(),
        p_kcm = ports.controller_manager(),
        p_sched = ports.scheduler(),
    )
}

/// kwok's own stages, from its pinned module: what kwokctl gives nodes and pods by default
/// (`kustomize/stage/fast`: nodes initialized and heartbeating with leases; pods Ready, Jobs' pods
/// complete, deleted pods removed), plus its volume stages (`kustomize/stage/volume/fast`: a claim
/// gets a volume and is Bound, a deleted claim releases and deletes it), so that StatefulSets with
/// volume claims become Ready. kwokctl adds its defaults only when it is given no stage at all,
/// hence both sets here.
#[derive(Debug, Clone)]
pub struct Stages {
    /// The Stage documents, for the kwokctl configuration.
    pub config: String,
    /// kwok's StorageClass `kwok-volume`, the cluster's default class, to apply once it runs.
    pub storage_class: String,
}

impl Stages {
    /// Rendered with the pinned kubectl's kustomize from the module (downloaded by Go if needed).
    /// The volume stages are widened to every storage class: the clusters have no other
    /// provisioner, and an operator's repository names its own classes.
    pub fn from_module(toolchain: &Toolchain) -> Result<Self> {
        let module = toolchain.module_dir(Tool::Kwok)?;
        let kubectl = toolchain.binary(Tool::Kubernetes, "kubectl");
        let (mut config, mut storage_class) = (String::new(), None);
        for dir in ["kustomize/stage/fast", "kustomize/stage/volume/fast"] {
            let path = module.join(dir);
            let out = crate::sys::exec::run(
                &format!("kubectl kustomize {}", path.display()),
                duct::cmd!(&kubectl, "kustomize", &path),
                Duration::from_secs(60),
            )?;
            for mut doc in crate::gitops::render::documents(&out)? {
                match doc["kind"].as_str() {
                    Some("Stage") => {
                        widen_to_every_storage_class(&mut doc);
                        config.push_str("---\n");
                        config.push_str(&serde_norway::to_string(&doc)?);
                    }
                    Some("StorageClass") => storage_class = Some(serde_norway::to_string(&doc)?),
                    // Its RBAC is for an in-cluster kwok; this one uses the admin's credentials.
                    _ => {}
                }
            }
        }
        Ok(Self {
            config,
            storage_class: storage_class
                .with_context(|| format!("no StorageClass in {}", module.display()))?,
        })
    }
}

/// Drops a stage's condition on `spec.storageClassName` (`== 'kwok-volume'`).
fn widen_to_every_storage_class(stage: &mut serde_json::Value) {
    if let Some(conditions) = stage["spec"]["selector"]["matchExpressions"].as_array_mut() {
        conditions.retain(|c| {
            !c["cel"]["expression"]
                .as_str()
                .is_some_and(|e| e.contains("storageClassName"))
        });
    }
}

/// Merges per-cluster kubeconfigs into one file whose contexts are the cluster names.
pub fn merged_kubeconfig(clusters: &[&KwokCluster], current: &str) -> String {
    let mut clusters_yaml = String::new();
    let mut users_yaml = String::new();
    let mut contexts_yaml = String::new();
    for c in clusters {
        let pki = c.cluster_dir().join("pki");
        clusters_yaml.push_str(&format!(
            "- name: {n}\n  cluster:\n    server: {s}\n    certificate-authority: {ca}\n",
            n = c.name,
            s = c.server(),
            ca = pki.join("ca.crt").display()
        ));
        users_yaml.push_str(&format!(
            "- name: {n}-admin\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n",
            n = c.name,
            crt = pki.join("admin.crt").display(),
            key = pki.join("admin.key").display()
        ));
        contexts_yaml.push_str(&format!(
            "- name: {n}\n  context:\n    cluster: {n}\n    user: {n}-admin\n",
            n = c.name
        ));
    }
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: {current}\nclusters:\n{clusters_yaml}users:\n{users_yaml}contexts:\n{contexts_yaml}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_stages_take_every_storage_class() {
        let mut stage = serde_json::json!({"kind": "Stage", "spec": {"selector": {"matchExpressions": [
            {"cel": {"expression": "self.spec.storageClassName == 'kwok-volume'"}},
            {"cel": {"expression": "!has(self.metadata.deletionTimestamp)"}},
            {"key": ".status.phase", "operator": "In", "values": ["Running"]},
        ]}}});
        widen_to_every_storage_class(&mut stage);
        let left: Vec<String> = stage["spec"]["selector"]["matchExpressions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(
            left.iter().all(|c| !c.contains("storageClassName")),
            "{left:?}"
        );
    }
}
