//! The `existing` provider: clusters someone else runs (e.g. the real `infra` and `apps`), reached
//! through a kubeconfig. It never creates, changes or deletes a cluster by itself; scenarios decide
//! what they may do there (only the canary app, unless destructive scenarios are allowed).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::{Environment, Faults, Running};
use crate::toolchain::{Tool, Toolchain};
use crate::topology::CLUSTERS;

/// `HARNESS_KUBECONFIG`, else `KUBECONFIG`: the kubeconfig with contexts `infra` and `apps`.
pub fn kubeconfig_from_env() -> Result<PathBuf> {
    crate::config::get()
        .kubeconfig
        .clone()
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .context("HARNESS_PROVIDER=existing needs the clusters' kubeconfig: set HARNESS_KUBECONFIG=/path/to/kubeconfig")
}

/// Checks that every context exists and answers, then hands out an environment over them.
pub fn start(kubeconfig: PathBuf) -> Result<Environment> {
    if !kubeconfig.is_file() {
        bail!(
            "kubeconfig {} does not exist: set HARNESS_KUBECONFIG to the file with contexts {}",
            kubeconfig.display(),
            CLUSTERS.join(", ")
        );
    }
    let toolchain = Toolchain::from_env()?;
    toolchain.ensure(&[Tool::Task, Tool::Flux, Tool::Kubernetes])?;
    for cluster in CLUSTERS {
        let out = duct::cmd!(
            toolchain.binary(Tool::Kubernetes, "kubectl"),
            "--kubeconfig",
            &kubeconfig,
            "--context",
            cluster,
            "--request-timeout=5s",
            "get",
            "--raw",
            "/readyz"
        )
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stdout);
            bail!(
                "context {cluster} in {} does not answer ({}): fix the kubeconfig or the cluster",
                kubeconfig.display(),
                why.lines().last().unwrap_or("no output").trim()
            );
        }
    }
    Ok(Environment {
        retain: false,
        kubeconfig,
        state_dir: crate::repo_root()
            .join("target")
            .join("harness")
            .join("existing"),
        fixtures: None,
        served: None,
        standins: Default::default(),
        toolchain,
        running: Box::new(ExistingClusters),
    })
}

/// Nothing to stop and nothing to break: the clusters are not ours.
struct ExistingClusters;

impl Running for ExistingClusters {
    /// The clusters are not ours: no process to stop or break.
    fn faults(&self) -> Option<&dyn Faults> {
        None
    }
    fn log_paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    fn processes(&self) -> Vec<(String, u32)> {
        Vec::new()
    }
    fn health(&self) -> Result<()> {
        Ok(())
    }
    fn stop(&self) {}
}
