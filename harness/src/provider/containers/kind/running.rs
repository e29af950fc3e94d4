//! What a kind environment runs and how it goes: the clusters this run created (recorded in the
//! state directory, so that a crash leaves a record to delete), their kubeconfigs, the fault
//! injection by `docker exec`, and the teardown that deletes them all at once.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::cluster_config;
use crate::provider::containers::Common;
use crate::provider::containers::engine::Engine;
use crate::provider::containers::images::KindImages;
use crate::provider::{Faults, Running};
use crate::sys::exec::run;
use crate::toolchain::{Tool, Toolchain};
use crate::topology::CLUSTERS;

/// The record of the clusters a run created, so that `harness down` and the next start delete
/// what a crashed run left.
pub(super) fn created_record(state_dir: &Path) -> PathBuf {
    state_dir.join("kind-clusters")
}

/// Deletes the kind clusters an earlier run in `state_dir` created and did not delete (it
/// crashed); returns their names. Needs an answering engine (a crashed run's own engine still runs).
pub fn remove_stale_clusters(state_dir: &Path) -> Result<Vec<String>> {
    let record = created_record(state_dir);
    let Ok(text) = fs::read_to_string(&record) else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.is_empty() || crate::provider::containers::engine::answers().is_err() {
        return Ok(Vec::new());
    }
    let kind = Toolchain::from_env()?.binary(Tool::Kind, "kind");
    for (_, deleted) in delete_clusters(&kind, state_dir, &names) {
        deleted?;
    }
    fs::remove_file(&record)?;
    Ok(names)
}

/// Deletes the kind clusters `names` of `state_dir` (each with its own kubeconfig there, so the
/// user's is never touched), all at once: deleting one is seconds of container removal, and the
/// reaper's bound is the slowest one, not their sum. Returns each name with its outcome.
pub(super) fn delete_clusters(
    kind: &Path,
    state_dir: &Path,
    names: &[String],
) -> Vec<(String, Result<()>)> {
    std::thread::scope(|scope| {
        let threads: Vec<_> = names
            .iter()
            .map(|name| {
                let delete = duct::cmd!(
                    kind,
                    "delete",
                    "cluster",
                    "--name",
                    name,
                    "--kubeconfig",
                    cluster_kubeconfig(state_dir, name)
                );
                let label = format!("kind delete cluster --name {name}");
                scope.spawn(move || run(&label, delete, Duration::from_secs(180)).map(drop))
            })
            .collect();
        names
            .iter()
            .cloned()
            .zip(threads)
            .map(|(name, thread)| {
                let outcome = thread
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("deleting {name} panicked")));
                (name, outcome)
            })
            .collect()
    })
}

/// The kubeconfig `kind create cluster` wrote for `cluster` in `state_dir`.
pub(super) fn cluster_kubeconfig(state_dir: &Path, cluster: &str) -> PathBuf {
    state_dir.join(format!("kind-{cluster}.kubeconfig"))
}

pub(super) struct KindRunning {
    pub(super) kind: PathBuf,
    pub(super) common: Common,
    /// Clusters this run created (and therefore deletes); never one that existed before.
    pub(super) created: Mutex<Vec<String>>,
    /// The Docker engine: stopped after the clusters are deleted, if this run started it.
    pub(super) engine: Engine,
}

impl KindRunning {
    pub(super) fn cluster_kubeconfig(&self, cluster: &str) -> PathBuf {
        cluster_kubeconfig(&self.common.state_dir, cluster)
    }

    /// `kind create cluster` from `kind-configs/<cluster>.yaml`; its output goes to
    /// `<state>/kind-logs/create-<cluster>.log`. `kind create --wait` only warns when the node is
    /// not Ready in time: [`Common::bring_up`] waits for that.
    pub(super) fn create_cluster(
        &self,
        cluster: &str,
        images: &KindImages,
        timeout: Duration,
    ) -> Result<()> {
        let log_dir = self.common.state_dir.join("kind-logs");
        fs::create_dir_all(&log_dir)?;
        let log = log_dir.join(format!("create-{cluster}.log"));
        let config = self.common.state_dir.join(format!("kind-{cluster}.yaml"));
        fs::write(&config, cluster_config(cluster, images)?)?;
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
                &config,
                "--kubeconfig",
                &kubeconfig,
                "--wait",
                "120s"
            )
            .stderr_to_stdout()
            .stdout_file(fs::File::create(&log)?),
            timeout,
        );
        // One line: kind's last line, and where the rest is.
        result.with_context(|| {
            format!(
                "creating kind cluster {cluster} (bounded by --create-timeout; last line of {}: {})",
                log.display(),
                crate::sys::process::tail(&log, 1).trim()
            )
        })?;
        let mut load = vec!["load", "docker-image", "--name", cluster];
        load.extend(images.load.iter().map(String::as_str));
        run(
            &format!(
                "kind load docker-image --name {cluster} {}",
                images.load.join(" ")
            ),
            duct::cmd(&self.kind, load),
            Duration::from_secs(300),
        )?;
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

    /// Records `clusters` as this run's, in memory (deleted by [`Self::stop`]) and in the state
    /// directory (deleted by the next start or `harness down` after a crash).
    pub(super) fn record_created(&self, clusters: &[&str]) -> Result<()> {
        let mut created = self.created.lock().unwrap();
        created.extend(clusters.iter().map(|c| c.to_string()));
        fs::write(
            created_record(&self.common.state_dir),
            created.join("\n") + "\n",
        )?;
        Ok(())
    }

    /// One kubeconfig with contexts `infra` and `apps` (`kubectl config view --flatten`).
    pub(super) fn merge_kubeconfigs(&self) -> Result<()> {
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
    pub(super) fn export_logs(&self) {
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
    fn faults(&self) -> Option<&dyn Faults> {
        Some(self)
    }

    /// Exports the clusters' logs (`kind export logs`) first, then lists them with the git server's.
    fn log_paths(&self) -> Vec<PathBuf> {
        self.export_logs();
        let mut paths = self.common.log_paths("kind-logs");
        paths.extend(self.engine.log_path());
        paths
    }

    fn processes(&self) -> Vec<(String, u32)> {
        let mut all = self.common.processes();
        all.extend(self.engine.processes());
        all
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
        let mut all_deleted = true;
        for (cluster, deleted) in delete_clusters(&self.kind, &self.common.state_dir, &created) {
            if let Err(e) = deleted {
                eprintln!(
                    "harness: {e:#}: `harness down` or the next start deletes it, or by hand: `kind delete cluster --name {cluster}`"
                );
                all_deleted = false;
            }
        }
        if all_deleted {
            let _ = fs::remove_file(created_record(&self.common.state_dir));
        }
        self.common.stop();
        self.engine.stop();
    }
}

impl Drop for KindRunning {
    fn drop(&mut self) {
        self.stop();
    }
}
