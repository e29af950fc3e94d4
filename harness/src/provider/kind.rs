//! The `kind` provider (`HARNESS_PROVIDER=kind`): the `infra` and `apps` clusters as kind clusters
//! (`kind-configs/<cluster>.yaml`, one control-plane node each, API servers on 127.0.0.1), Flux from
//! its release manifest, and the fixtures served by the harness's git server on the gateway of the
//! `kind` Docker network, the one address both the host and the kind nodes reach.
//!
//! It needs a Docker engine and network access (node image, Flux manifest and images). It is the
//! provider of the nightly workflow; it cannot run on machines without a Docker engine, where it
//! fails at once, before anything is created.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::containers::{Common, ContainerOptions, finish, run};
use super::{Environment, Faults, Running};
use crate::fixtures::CLUSTERS;
use crate::toolchain::{Tool, Toolchain};

pub use super::containers::{FLUX_MANIFEST_ENV, flux_manifest};

/// `kind-configs/<cluster>.yaml` of this checkout.
pub fn config_path(cluster: &str) -> PathBuf {
    crate::repo_root()
        .join("kind-configs")
        .join(format!("{cluster}.yaml"))
}

/// Fails with one line naming the problem and the fix unless a Docker engine answers.
pub fn require_docker_engine() -> Result<()> {
    const FIX: &str =
        "start a Docker engine (e.g. `sudo systemctl start docker`) or use HARNESS_PROVIDER=local";
    if crate::toolchain::on_path("docker").is_none() {
        bail!(
            "HARNESS_PROVIDER=kind needs a Docker engine, but `docker` is not on PATH: install Docker Engine (https://docs.docker.com/engine/install/) or use HARNESS_PROVIDER=local"
        );
    }
    let out = finish(
        duct::cmd!("docker", "info", "--format", "{{.ServerVersion}}"),
        Duration::from_secs(30),
    )?;
    let why = match out {
        Some(out) if out.status.success() => return Ok(()),
        Some(out) => {
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}, no output", out.status))
        }
        None => "no answer within 30s".to_string(),
    };
    bail!(
        "HARNESS_PROVIDER=kind needs a running Docker engine, but `docker info` failed ({why}): {FIX}"
    )
}

/// The IPv4 gateway of the `kind` Docker network (created by the first `kind create cluster`).
fn kind_network_gateway() -> Result<Ipv4Addr> {
    let out = run(
        "docker network inspect kind",
        duct::cmd!(
            "docker",
            "network",
            "inspect",
            "kind",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}"
        ),
        Duration::from_secs(30),
    )?;
    // kind's network is dual-stack: the IPv4 entry is usually, not always, the first.
    out.split_whitespace()
        .find_map(|g| g.parse::<Ipv4Addr>().ok())
        .with_context(|| {
            format!("the `kind` Docker network has no IPv4 gateway (gateways: {out:?}): recreate it with `docker network rm kind` once no kind cluster uses it")
        })
}

struct KindRunning {
    kind: PathBuf,
    common: Common,
    /// Clusters this run created (and therefore deletes); never one that existed before.
    created: Mutex<Vec<String>>,
}

/// Creates both kind clusters, installs Flux and bootstraps the fixtures; on failure everything
/// created is deleted again and the error names the diagnostics directory.
pub fn start(options: &ContainerOptions) -> Result<Environment> {
    // Fail fast, before anything is built or created.
    require_docker_engine()?;
    super::require_git_server_tools()?;
    let toolchain = Toolchain::from_env()?;
    toolchain.ensure(&[Tool::Kind, Tool::Kubernetes, Tool::Task, Tool::Flux])?;
    let manifest = flux_manifest(&toolchain)?;
    let kind = toolchain.binary(Tool::Kind, "kind");

    let existing = run(
        "kind get clusters",
        duct::cmd!(&kind, "get", "clusters"),
        Duration::from_secs(60),
    )?;
    if let Some(taken) = CLUSTERS
        .iter()
        .find(|c| existing.lines().any(|l| l.trim() == **c))
    {
        bail!(
            "a kind cluster named {taken} already exists (an earlier run?): delete it with `kind delete cluster --name {taken}` and rerun"
        );
    }

    let state_dir = options.state_dir.clone();
    super::fresh_state_dir(
        &state_dir,
        &["git", "pids", "kind-logs", "kubeconfig"]
            .into_iter()
            .map(String::from)
            .chain(CLUSTERS.iter().map(|c| format!("kind-{c}.kubeconfig")))
            .collect::<Vec<_>>(),
    )?;

    let running = KindRunning {
        kind,
        common: Common::new(&toolchain, &state_dir),
        created: Mutex::new(Vec::new()),
    };
    let started = (|| {
        for cluster in CLUSTERS {
            running.create_cluster(cluster, options.create_timeout)?;
        }
        running.merge_kubeconfigs()?;
        running
            .common
            .bring_up(kind_network_gateway()?, "`kind` Docker", &manifest, options)
    })();
    Common::environment(
        running,
        |r| &r.common,
        toolchain,
        started,
        "kind-environment-start",
    )
}

impl KindRunning {
    fn cluster_kubeconfig(&self, cluster: &str) -> PathBuf {
        self.common
            .state_dir
            .join(format!("kind-{cluster}.kubeconfig"))
    }

    /// `kind create cluster` from `kind-configs/<cluster>.yaml`; its output goes to
    /// `<state>/kind-logs/create-<cluster>.log`. `kind create --wait` only warns when the node is
    /// not Ready in time: [`Common::bring_up`] waits for that.
    fn create_cluster(&self, cluster: &str, timeout: Duration) -> Result<()> {
        let log_dir = self.common.state_dir.join("kind-logs");
        fs::create_dir_all(&log_dir)?;
        let log = log_dir.join(format!("create-{cluster}.log"));
        // Recorded first: a create that fails half-way leaves containers to delete.
        self.created.lock().unwrap().push(cluster.to_string());
        let kubeconfig = self.cluster_kubeconfig(cluster);
        let result = run(
            &format!("kind create cluster --name {cluster}"),
            duct::cmd!(
                &self.kind,
                "create",
                "cluster",
                "--name",
                cluster,
                "--config",
                config_path(cluster),
                "--kubeconfig",
                &kubeconfig,
                "--wait",
                "120s"
            )
            .stderr_to_stdout()
            .stdout_file(fs::File::create(&log)?),
            timeout,
        );
        result.with_context(|| {
            format!(
                "creating kind cluster {cluster} (see {}): {}",
                log.display(),
                crate::process::tail(&log, 5).trim()
            )
        })?;
        run(
            &format!("kubectl config rename-context kind-{cluster} {cluster}"),
            duct::cmd!(
                &self.common.kubectl.kubectl,
                "--kubeconfig",
                &kubeconfig,
                "config",
                "rename-context",
                format!("kind-{cluster}"),
                cluster
            ),
            Duration::from_secs(30),
        )?;
        Ok(())
    }

    /// One kubeconfig with contexts `infra` and `apps` (`kubectl config view --flatten`).
    fn merge_kubeconfigs(&self) -> Result<()> {
        let paths: Vec<PathBuf> = CLUSTERS
            .iter()
            .map(|c| self.cluster_kubeconfig(c))
            .collect();
        let merged = run(
            "kubectl config view --flatten",
            duct::cmd!(&self.common.kubectl.kubectl, "config", "view", "--flatten")
                .env("KUBECONFIG", std::env::join_paths(&paths)?),
            Duration::from_secs(30),
        )?;
        fs::write(&self.common.kubectl.kubeconfig, merged + "\n")?;
        Ok(())
    }

    /// `kind export logs` of every created cluster into `<state>/kind-logs/<cluster>` (bounded).
    fn export_logs(&self) {
        for cluster in self.created.lock().unwrap().iter() {
            let dir = self.common.state_dir.join("kind-logs").join(cluster);
            if let Err(e) = run(
                &format!("kind export logs --name {cluster}"),
                duct::cmd!(&self.kind, "export", "logs", &dir, "--name", cluster),
                Duration::from_secs(120),
            ) {
                eprintln!("harness: {e:#}");
            }
        }
    }
}

impl Faults for KindRunning {
    fn stop_controller(&self, cluster: &str, controller: Tool) -> Result<()> {
        self.common.kubectl.stop_controller(cluster, controller)
    }

    fn start_controller(&self, cluster: &str, controller: Tool) -> Result<()> {
        self.common.kubectl.start_controller(cluster, controller)
    }

    /// Moves the kube-apiserver static pod manifest out of the node's manifest directory (the
    /// kubelet stops it and does not bring it back) and waits until the API server stops answering.
    fn stop_apiserver(&self, cluster: &str) -> Result<()> {
        let node = format!("{cluster}-control-plane");
        run(
            &format!("moving kube-apiserver.yaml out of {node}'s manifests"),
            duct::cmd!(
                "docker",
                "exec",
                &node,
                "mv",
                "/etc/kubernetes/manifests/kube-apiserver.yaml",
                "/root/kube-apiserver.yaml.stopped"
            ),
            Duration::from_secs(30),
        )?;
        self.common.kubectl.wait_api_down(cluster)
    }
}

impl Running for KindRunning {
    /// Exports the clusters' logs (`kind export logs`) first, then lists them with the git server's.
    fn log_paths(&self) -> Vec<PathBuf> {
        self.export_logs();
        self.common.log_paths("kind-logs")
    }

    fn processes(&self) -> Vec<(String, u32)> {
        self.common.processes()
    }

    fn health(&self) -> Result<()> {
        self.common.health()?;
        for cluster in self.created.lock().unwrap().iter() {
            let node = format!("{cluster}-control-plane");
            let state = run(
                &format!("docker inspect {node}"),
                duct::cmd!("docker", "inspect", "-f", "{{.State.Running}}", &node),
                Duration::from_secs(30),
            )?;
            if state != "true" {
                bail!("kind node container {node} is not running");
            }
        }
        Ok(())
    }

    /// Deletes the clusters this run created and stops the git server.
    fn stop(&self) {
        let created: Vec<String> = self.created.lock().unwrap().drain(..).collect();
        for cluster in created {
            if let Err(e) = run(
                &format!("kind delete cluster --name {cluster}"),
                duct::cmd!(
                    &self.kind,
                    "delete",
                    "cluster",
                    "--name",
                    &cluster,
                    "--kubeconfig",
                    self.cluster_kubeconfig(&cluster)
                ),
                Duration::from_secs(180),
            ) {
                eprintln!(
                    "harness: {e:#}: delete it by hand with `kind delete cluster --name {cluster}`"
                );
            }
        }
        self.common.stop();
    }
}

impl Drop for KindRunning {
    fn drop(&mut self) {
        self.stop();
    }
}
