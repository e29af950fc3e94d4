//! Cluster providers: what creates the `infra` and `apps` clusters with Flux and the fixtures.
//! Every provider hands back the same [`Environment`], so the scenarios do not care which one ran.
//! Each provider's [`Running`] owns its state directory ([`Owner`]) and whatever it started.

pub(crate) mod containers;
pub mod existing;
pub mod local;
pub(crate) mod owner;
pub(crate) mod reaper;

pub use containers::images::KindImages;
pub use containers::{hold_engine_for_kind, kind_config_path, kind_images};
pub use owner::Owner;
pub use reaper::retain;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::environment::diagnostics;
pub use crate::environment::{Environment, Faults, Running};
use crate::gitops::gitserver::FixturesRepo;
use crate::gitops::standins::Prepared;
use crate::gitops::{GitopsOptions, Served};
use crate::toolchain::Toolchain;
pub(crate) use crate::topology::{each_cluster, per_cluster};

/// How any provider is started: one type for all of them, built with [`ProviderOptions::new`] and
/// its setters. Providers ignore what does not apply to them (`port_base` is the local provider's;
/// `create_timeout` and `flux_timeout` the container providers').
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// Everything the environment writes (cleared at start; stale processes in it are stopped first).
    pub state_dir: PathBuf,
    /// First port of the local environment's block; `None` picks a free block at or above 20000.
    pub port_base: Option<u16>,
    /// Upper bound for the fixtures of one cluster to become Ready.
    pub ready_timeout: Duration,
    /// Upper bound for creating one container cluster.
    pub create_timeout: Duration,
    /// Upper bound for applying Flux and for each controller Deployment to become Available.
    pub flux_timeout: Duration,
    /// Keep a failed environment up, saying how to reach it (`HARNESS_RETAIN=1`): what a person
    /// reproducing a failure needs first. `harness down` removes it afterwards.
    pub retain: bool,
    /// The GitOps repository to serve (`fixtures/gitops` unless given) and how.
    pub gitops: GitopsOptions,
    /// Told each step of a cluster's start as it completes (what `harness bench` times, what `harness
    /// up` prints); `existing` starts nothing and tells nothing.
    pub progress: Progress,
}

/// A step of one cluster's start, announced when it is done, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The control plane answers.
    ControlPlane,
    /// Flux is installed and its controllers are healthy.
    Flux,
    /// The served repository's objects are Ready (or settled).
    Fixtures,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::ControlPlane => "control plane answers",
            Step::Flux => "Flux installed and healthy",
            Step::Fixtures => "served repository Ready",
        })
    }
}

/// Who is told of each [`Step`] of a start: nobody by default. The start announces its steps and
/// the listener keeps its own clock, so timing a start needs nothing back from it (as kind's
/// status logger).
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<Listener>>);

/// What hears a [`Step`]: the cluster's name and the step.
type Listener = dyn Fn(&str, Step) + Send + Sync;

impl Progress {
    pub fn new(listener: impl Fn(&str, Step) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(listener)))
    }

    /// Announces that `cluster` finished `step`.
    pub(crate) fn done(&self, cluster: &str, step: Step) {
        if let Some(listener) = &self.0 {
            listener(cluster, step);
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(listener)"
        } else {
            "Progress(none)"
        })
    }
}

impl ProviderOptions {
    /// Defaults, with `retain` from `HARNESS_RETAIN` (`1` or `true`, as `harness up` reads it).
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            port_base: None,
            ready_timeout: Duration::from_secs(240),
            create_timeout: Duration::from_secs(600),
            flux_timeout: Duration::from_secs(300),
            retain: crate::config::get().retain,
            gitops: GitopsOptions::from_env(),
            progress: Progress::default(),
        }
    }

    pub fn port_base(mut self, port_base: u16) -> Self {
        self.port_base = Some(port_base);
        self
    }

    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    pub fn create_timeout(mut self, timeout: Duration) -> Self {
        self.create_timeout = timeout;
        self
    }

    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    pub fn gitops(mut self, gitops: GitopsOptions) -> Self {
        self.gitops = gitops;
        self
    }

    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// What a failed start does with what it started (`running`): drops it (everything stops),
    /// or with `retain` leaves it up and adds to `error` how to reach it and how to remove it.
    pub(crate) fn failed_start<R>(
        &self,
        running: R,
        kubeconfig: &Path,
        error: anyhow::Error,
    ) -> anyhow::Error {
        if !self.retain {
            drop(running);
            return error;
        }
        std::mem::forget(running);
        reaper::retain(&self.state_dir);
        anyhow::anyhow!(
            "{error:#}; kept up for inspection (HARNESS_RETAIN=1): export KUBECONFIG={}, remove it with `HARNESS_STATE_DIR={} cargo run -p harness -- down` (the fixtures' Git server is part of this process and stops when it exits)",
            kubeconfig.display(),
            self.state_dir.display()
        )
    }
}

/// How every provider's start begins, before anything is built, created or taken: the
/// prerequisites (everything missing at once) and what is served (a wrong `--gitops`,
/// `--cluster-path` or `--sops-age-key`), each failing in one line. Returns what is served.
pub(crate) fn begin_start(options: &ProviderOptions) -> Result<Served> {
    crate::toolchain::prerequisites::check()?;
    options.gitops.resolve()
}

/// What a start used to reach its clusters: the kubectl binary, the merged kubeconfig, and the
/// label its diagnostics are saved under.
pub(crate) struct Reach<'a> {
    pub kubectl: &'a Path,
    pub kubeconfig: &'a Path,
    pub label: &'a str,
}

/// How every provider's start ends (one place for a failed start): an [`Environment`] of
/// `running` once `started` gave the served repository and its stand-ins; otherwise the
/// diagnostics are saved and named in the error, and `running` is stopped, or with `retain` kept
/// up ([`ProviderOptions::failed_start`]).
pub(crate) fn finish_start<R: Running + 'static>(
    running: R,
    started: Result<(FixturesRepo, Prepared)>,
    reach: Reach<'_>,
    served: Served,
    toolchain: Toolchain,
    options: &ProviderOptions,
) -> Result<Environment> {
    let (fixtures, standins) = match started {
        Ok(started) => started,
        Err(e) => {
            let logs = running.log_paths();
            let e = diagnostics::attach(e, reach.kubectl, reach.kubeconfig, &logs, reach.label);
            return Err(options.failed_start(running, reach.kubeconfig, e));
        }
    };
    Ok(Environment {
        kubeconfig: reach.kubeconfig.to_path_buf(),
        state_dir: options.state_dir.clone(),
        fixtures: Some(fixtures),
        served: Some(served),
        standins,
        toolchain,
        retain: options.retain,
        running: Box::new(running),
    })
}

/// Which provider creates the clusters: `HARNESS_PROVIDER=local|kind|k3s|existing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Local processes built from upstream Go modules (the default; what CI here runs).
    Local,
    /// kind clusters (`kind-configs/`), where Docker runs.
    Kind,
    /// k3s through testcontainers, where Docker runs.
    K3s,
    /// Clusters someone else runs, through `HARNESS_KUBECONFIG`.
    Existing,
}

impl ProviderKind {
    /// From `HARNESS_PROVIDER` (default `local`).
    pub fn from_env() -> Result<Self> {
        Self::parse(crate::config::get().provider.as_deref().unwrap_or(""))
    }

    /// From a `HARNESS_PROVIDER` value (`""` is the default, `local`).
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "" | "local" => Ok(Self::Local),
            "kind" => Ok(Self::Kind),
            "k3s" => Ok(Self::K3s),
            "existing" => Ok(Self::Existing),
            other => anyhow::bail!(
                "HARNESS_PROVIDER={other} is unknown: use local, kind, k3s or existing"
            ),
        }
    }

    /// Starts (or, for `existing`, connects to) the two clusters.
    pub fn start(self, options: &ProviderOptions) -> Result<Environment> {
        match self {
            Self::Local => local::start(options),
            Self::Existing => existing::start(existing::kubeconfig_from_env()?),
            Self::Kind => containers::kind::start(options),
            Self::K3s => start_k3s(options),
        }
    }
}

#[cfg(feature = "k3s")]
fn start_k3s(options: &ProviderOptions) -> Result<Environment> {
    containers::k3s::start(options)
}

#[cfg(not(feature = "k3s"))]
fn start_k3s(_options: &ProviderOptions) -> Result<Environment> {
    anyhow::bail!(
        "HARNESS_PROVIDER=k3s needs the harness's `k3s` cargo feature, which this build left out: build without --no-default-features (or with --features harness/k3s), or use HARNESS_PROVIDER=local"
    )
}

/// Takes `state_dir` for this process, stops what an earlier run left in it (the processes it
/// recorded, by pid, saying so) and removes `entries` (files or directories) from it, so that a
/// start begins clean.
pub(crate) fn fresh_state_dir(state_dir: &Path, entries: &[String]) -> Result<Owner> {
    let owner = claim_and_reap(state_dir)?;
    clear_entries(state_dir, entries)?;
    Ok(owner)
}

/// Takes `state_dir` for this process (refused while another one owns it: nothing is stopped
/// then), then stops the processes an earlier, dead owner recorded there (by pid), saying so.
pub(crate) fn claim_and_reap(state_dir: &Path) -> Result<Owner> {
    let owner = Owner::claim(state_dir)?;
    reaper::forget_retained(state_dir);
    let stale = crate::sys::process::reap_stale(state_dir);
    if !stale.is_empty() {
        eprintln!(
            "harness: stopped {} processes left by an earlier run in {}: {}",
            stale.len(),
            state_dir.display(),
            stale.join(", ")
        );
    }
    Ok(owner)
}

/// Removes what an environment of `state_dir` left behind when its owner died: the kind clusters it
/// recorded (while a Docker engine it started still runs), then its processes by pid, then its k3s
/// containers. Says what it removed, one item per entry. The caller owns `state_dir`.
pub fn reap_leftovers(state_dir: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let clusters = containers::kind::remove_stale_clusters(state_dir)?;
    if !clusters.is_empty() {
        removed.push(format!("deleted kind clusters: {}", clusters.join(", ")));
    }
    let stale = crate::sys::process::reap_stale(state_dir);
    if !stale.is_empty() {
        removed.push(format!(
            "stopped {} processes: {}",
            stale.len(),
            stale.join(", ")
        ));
    }
    // k3s containers (none can exist where no engine answers).
    #[cfg(feature = "k3s")]
    if containers::k3s::require_docker_engine().is_ok() {
        containers::k3s::remove_stale_containers(state_dir)?;
    }
    let _ = fs::remove_file(state_dir.join("supervisor.pid"));
    Ok(removed)
}

/// Creates `state_dir` and removes `entries` (files or directories) from it.
pub(crate) fn clear_entries(state_dir: &Path, entries: &[String]) -> Result<()> {
    fs::create_dir_all(state_dir)?;
    for entry in entries {
        let p = state_dir.join(entry);
        if p.is_dir() {
            fs::remove_dir_all(&p)?;
        } else if p.exists() {
            fs::remove_file(&p)?;
        }
    }
    Ok(())
}
