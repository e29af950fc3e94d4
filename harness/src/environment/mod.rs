//! What a started environment is, whichever provider started it: two clusters with Flux behind one
//! kubeconfig ([`Environment`]), what runs them ([`Running`], with [`Faults`] where the provider
//! owns the processes), the clusters ([`CLUSTERS`], from `topology`) and what a failure
//! leaves behind ([`diagnostics`]). Providers build it; scenarios and `harness up` use it.

pub(crate) mod diagnostics;

pub use crate::topology::CLUSTERS;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::gitops::Served;
use crate::gitops::gitserver::FixturesRepo;
use crate::task_runner::TaskRunner;
use crate::toolchain::{Tool, Toolchain};

/// Fault injection and process facts only a provider that owns the processes can offer.
pub trait Faults: Send + Sync {
    /// Stops one Flux controller (`helm-controller`, …) of `cluster`.
    fn stop_controller(&self, cluster: &str, controller: Tool) -> Result<()>;
    /// Starts it again and waits until it is healthy.
    fn start_controller(&self, cluster: &str, controller: Tool) -> Result<()>;
    /// Stops the kube-apiserver of `cluster` (for good: the environment is unusable for it after).
    fn stop_apiserver(&self, cluster: &str) -> Result<()>;
}

/// What a provider started; torn down when dropped.
pub trait Running: Send + Sync {
    /// Fault injection, where the provider owns the clusters' processes (`None`: `existing`).
    fn faults(&self) -> Option<&dyn Faults>;
    /// Logs worth keeping when a scenario fails (files or directories).
    fn log_paths(&self) -> Vec<PathBuf>;
    /// `name pid` of every process the environment runs (for `harness status`).
    fn processes(&self) -> Vec<(String, u32)>;
    /// Fails naming the first process that died.
    fn health(&self) -> Result<()>;
    /// Stops everything, by pid.
    fn stop(&self);
}

/// Two clusters with Flux and the fixtures, reachable through one kubeconfig whose contexts are
/// `infra` and `apps`.
pub struct Environment {
    pub kubeconfig: PathBuf,
    pub state_dir: PathBuf,
    /// The served fixtures repository (providers that serve it; `None` on existing clusters).
    pub fixtures: Option<FixturesRepo>,
    /// What the fixtures repository serves (`fixtures/gitops` or `--gitops DIR`) and its entry paths.
    pub served: Option<Served>,
    /// The repository's render per cluster and what in the environment is a stand-in.
    pub standins: crate::gitops::standins::Prepared,
    pub toolchain: Toolchain,
    /// Started with `retain`: a failed scenario leaves it up (see `scenarios`).
    pub retain: bool,
    /// What the provider started (its drop stops it and then releases the state directory).
    pub(crate) running: Box<dyn Running>,
}

impl Environment {
    /// The fixtures repository, on providers that serve it.
    pub fn fixtures(&self) -> Result<&FixturesRepo> {
        self.fixtures.as_ref().context(
            "this provider serves no fixtures repository (existing clusters reconcile their own)",
        )
    }

    pub fn clusters(&self) -> Vec<String> {
        CLUSTERS.iter().map(|c| c.to_string()).collect()
    }

    /// A kube-rs client for one cluster's context (create one per async runtime).
    pub async fn client(&self, cluster: &str) -> Result<kube::Client> {
        crate::apply::client_for(&self.kubeconfig, cluster).await
    }

    /// `task` in this checkout with the environment's kubeconfig and the pinned flux/kubectl first on
    /// PATH. `HTTPS_PROXY` points at a closed local port so `flux check`'s release lookup on GitHub
    /// fails at once instead of hanging (cluster traffic is loopback and never proxied).
    pub fn task(&self) -> TaskRunner {
        TaskRunner::new(
            self.toolchain.binary(Tool::Task, "task"),
            crate::repo_root(),
        )
        .env("KUBECONFIG", &self.kubeconfig)
        .env("PATH", self.toolchain.path_env())
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
    }

    /// Fault injection, where the provider owns the clusters' processes (`None` for `existing`).
    pub fn faults(&self) -> Option<&dyn Faults> {
        self.running.faults()
    }

    pub fn processes(&self) -> Vec<(String, u32)> {
        self.running.processes()
    }

    pub fn health(&self) -> Result<()> {
        self.running.health()
    }

    /// Saves the clusters' state and every log under `target/harness-diagnostics/` and returns the path.
    pub fn diagnostics(&self, label: &str) -> PathBuf {
        diagnostics::collect(
            &self.toolchain.binary(Tool::Kubernetes, "kubectl"),
            &self.kubeconfig,
            &self.clusters(),
            &self.running.log_paths(),
            label,
        )
    }

    /// Stops every process of the environment.
    pub fn stop(&self) {
        self.running.stop();
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        self.running.stop();
    }
}
