//! Flux on one cluster of the local provider: the CRDs (labelled as `flux check` expects), the
//! real controllers running as local processes against the cluster, and kwok-simulated
//! `flux-system` Deployments standing for them so that `flux check` and `flux logs` work. kwok
//! serves each simulated pod's logs from the CRI-format copy of the real controller's output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::DynamicObject;
use kube::runtime::wait::{await_condition, conditions};

use super::kwok::ClusterPorts;
use crate::apply;
use crate::flux::{CONTROLLERS, NAMESPACE};
use crate::sys::poll::wait_for;
use crate::sys::process::{LogFiles, ManagedProcess};
use crate::toolchain::{Tool, Toolchain};

/// Labels `flux check` and `flux logs` select Flux components by.
fn component_labels(toolchain: &Toolchain) -> String {
    format!(
        "app.kubernetes.io/instance: flux-system\n    app.kubernetes.io/part-of: flux\n    app.kubernetes.io/version: {}",
        toolchain.versions().get(Tool::Flux)
    )
}

/// Where a controller's output goes on this cluster: `<dir>/<controller>.log` as printed and
/// `<dir>/<controller>.cri.log` for kwok.
pub fn controller_logs(dir: &Path, controller: Tool) -> LogFiles {
    LogFiles {
        raw: dir.join(format!("{}.log", controller.key())),
        cri: Some(dir.join(format!("{}.cri.log", controller.key()))),
    }
}

/// kwok `ClusterLogs` mapping each simulated controller pod (single container named after the
/// controller) to the CRI copy of the real controller's output. Goes into the kwokctl configuration,
/// read by kwok when it starts; the files are created empty so kwok can open them at once.
pub fn cluster_logs_config(log_dir: &Path) -> Result<String> {
    fs::create_dir_all(log_dir)?;
    let mut entries = String::new();
    for controller in CONTROLLERS {
        let cri = controller_logs(log_dir, controller)
            .cri
            .expect("controllers have CRI logs");
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cri)?;
        entries.push_str(&format!(
            "  - containers: [{}]\n    logsFile: {}\n    follow: true\n",
            controller.key(),
            cri.display()
        ));
    }
    Ok(format!(
        "---\napiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterLogs\nmetadata:\n  name: flux-controllers\nspec:\n  selector:\n    matchNamespaces: [{NAMESPACE}]\n  logs:\n{entries}"
    ))
}

/// Installs the Flux CRDs and the `flux-system` namespace with its simulated controller Deployments.
pub async fn install(client: &Client, toolchain: &Toolchain) -> Result<()> {
    let labels = component_labels(toolchain);
    let mut crds = String::new();
    let mut crd_names = Vec::new();
    for controller in CONTROLLERS {
        let dir = toolchain.crd_dir(controller);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .with_context(|| format!("{} is missing: rebuild the toolchain", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        for file in files {
            let mut obj: DynamicObject = serde_norway::from_str(&fs::read_to_string(&file)?)?;
            let l = obj.metadata.labels.get_or_insert_with(Default::default);
            for line in labels.lines() {
                let (k, v) = line
                    .trim()
                    .split_once(": ")
                    .expect("label lines are `k: v`");
                l.insert(k.to_string(), v.to_string());
            }
            crd_names.push(obj.metadata.name.clone().unwrap_or_default());
            crds.push_str("---\n");
            crds.push_str(&serde_norway::to_string(&obj)?);
        }
    }
    apply::apply_yaml(client, &crds)
        .await
        .context("installing the Flux CRDs")?;
    let crd_api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    for name in crd_names {
        let established = await_condition(crd_api.clone(), &name, conditions::is_crd_established());
        let what = format!("establishing CRD {name}");
        crate::sys::exec::within(Duration::from_secs(60), what, established).await?;
    }

    let mut manifests = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n  labels:\n    {labels}\n"
    );
    for controller in CONTROLLERS {
        manifests.push_str(&simulated_deployment(toolchain, controller, &labels));
    }
    apply::apply_yaml(client, &manifests)
        .await
        .context("creating the flux-system Deployments")?;
    Ok(())
}

/// A kwok-simulated Deployment standing for a controller that runs as a local process.
fn simulated_deployment(toolchain: &Toolchain, controller: Tool, labels: &str) -> String {
    let name = controller.key();
    let version = toolchain.versions().get(controller);
    format!(
        r#"---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {NAMESPACE}
  labels:
    app.kubernetes.io/component: {name}
    control-plane: controller
    {labels}
  annotations:
    k8s-ops-harness/simulated: "kwok pod; the real {name} runs as a local process of the harness"
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: {name}
        image: ghcr.io/fluxcd/{name}:{version}
"#
    )
}

/// Addresses of one controller process.
#[derive(Debug, Clone, Copy)]
struct ControllerPorts {
    metrics: u16,
    health: u16,
}

fn controller_ports(ports: ClusterPorts, controller: Tool) -> ControllerPorts {
    let i = CONTROLLERS
        .iter()
        .position(|c| *c == controller)
        .expect("a Flux controller") as u16;
    ControllerPorts {
        metrics: ports.flux(2 * i),
        health: ports.flux(2 * i + 1),
    }
}

fn storage_port(ports: ClusterPorts) -> u16 {
    ports.flux(8)
}

fn events_port(ports: ClusterPorts) -> u16 {
    ports.flux(9)
}

fn receiver_port(ports: ClusterPorts) -> u16 {
    ports.flux(10)
}

/// How often the local controllers re-check a dependsOn that is not Ready yet (Flux's default:
/// 30 s; the kind provider keeps the release's flags).
pub const REQUEUE_DEPENDENCY: &str = "5s";

/// The command line of one controller against the cluster in `kubeconfig`.
fn controller_command(
    toolchain: &Toolchain,
    controller: Tool,
    kubeconfig: &Path,
    ports: ClusterPorts,
    dir: &Path,
) -> Command {
    let p = controller_ports(ports, controller);
    let mut cmd = Command::new(toolchain.binary(controller, controller.key()));
    cmd.env("KUBECONFIG", kubeconfig)
        .env("RUNTIME_NAMESPACE", NAMESPACE)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .arg("--log-level=info")
        .arg("--log-encoding=json")
        .arg("--enable-leader-election=false")
        .arg("--watch-all-namespaces=true")
        .arg(format!("--metrics-addr=127.0.0.1:{}", p.metrics))
        .arg(format!("--health-addr=127.0.0.1:{}", p.health));
    match controller {
        Tool::NotificationController => {
            cmd.arg(format!("--events-addr=127.0.0.1:{}", events_port(ports)))
                .arg(format!("--receiverAddr=127.0.0.1:{}", receiver_port(ports)));
        }
        _ => {
            cmd.arg(format!(
                "--events-addr=http://127.0.0.1:{}/",
                events_port(ports)
            ));
        }
    }
    if matches!(controller, Tool::KustomizeController | Tool::HelmController) {
        // Flux re-checks a dependency that is not Ready every 30 s by default: a dependsOn chain
        // of two then costs a minute of idle start-up. 5 s keeps the same behaviour, sooner.
        cmd.arg(format!("--requeue-dependency={REQUEUE_DEPENDENCY}"));
    }
    if controller == Tool::SourceController {
        let storage = dir.join("source-controller-storage");
        let _ = fs::create_dir_all(&storage);
        cmd.arg(format!("--storage-path={}", storage.display()))
            .arg(format!("--storage-addr=127.0.0.1:{}", storage_port(ports)))
            .arg(format!(
                "--storage-adv-addr=127.0.0.1:{}",
                storage_port(ports)
            ));
    }
    cmd
}

/// The four controllers of one cluster, running as processes of the harness.
#[derive(Debug)]
pub struct FluxControllers {
    cluster: String,
    kubeconfig: PathBuf,
    ports: ClusterPorts,
    dir: PathBuf,
    state_dir: PathBuf,
    processes: Vec<ManagedProcess>,
}

impl FluxControllers {
    /// Starts every controller and waits for its health endpoint.
    pub fn start(
        toolchain: &Toolchain,
        cluster: &str,
        kubeconfig: &Path,
        ports: ClusterPorts,
        dir: &Path,
        state_dir: &Path,
    ) -> Result<Self> {
        let mut this = Self {
            cluster: cluster.to_string(),
            kubeconfig: kubeconfig.to_path_buf(),
            ports,
            dir: dir.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            processes: Vec::new(),
        };
        for controller in CONTROLLERS {
            this.start_one(toolchain, controller)?;
        }
        Ok(this)
    }

    fn process_name(&self, controller: Tool) -> String {
        format!("{}-{}", self.cluster, controller.key())
    }

    /// (Re)starts one controller and waits until its `/readyz` answers 200.
    pub fn start_one(&mut self, toolchain: &Toolchain, controller: Tool) -> Result<()> {
        self.stop_one(controller);
        let cmd = controller_command(
            toolchain,
            controller,
            &self.kubeconfig,
            self.ports,
            &self.dir,
        );
        let logs = controller_logs(&self.dir, controller);
        let mut process =
            ManagedProcess::spawn(&self.process_name(controller), cmd, &logs, &self.state_dir)?;
        let health = controller_ports(self.ports, controller).health;
        wait_for(
            &format!("{} on {} to be healthy", controller.key(), self.cluster),
            Duration::from_secs(60),
            || {
                process.ensure_running()?;
                Ok(http_ok(health, "/readyz").then_some(()))
            },
        )
        .with_context(|| format!("see {}", logs.raw.display()))?;
        self.processes.push(process);
        Ok(())
    }

    /// Stops one controller (fault injection); a no-op when it is not running.
    pub fn stop_one(&mut self, controller: Tool) {
        let name = self.process_name(controller);
        if let Some(pos) = self.processes.iter().position(|p| p.name() == name) {
            let mut p = self.processes.remove(pos);
            p.stop(Duration::from_secs(10));
        }
    }

    /// Fails naming the controller and its log when one has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        for p in &mut self.processes {
            p.ensure_running()?;
        }
        Ok(())
    }

    /// `(name, pid, log)` of every running controller.
    pub fn describe(&self) -> Vec<(String, u32, PathBuf)> {
        self.processes
            .iter()
            .map(|p| (p.name().to_string(), p.pid(), p.log_path().to_path_buf()))
            .collect()
    }

    pub fn stop(&mut self) {
        for mut p in self.processes.drain(..).rev() {
            p.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for FluxControllers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when `GET http://127.0.0.1:<port><path>` answers 200 within a second.
fn http_ok(port: u16, path: &str) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(1)))
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .map(|r| r.status() == 200)
        .unwrap_or(false)
}
