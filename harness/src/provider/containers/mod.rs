//! What the providers whose clusters run in Docker containers (`kind`, `k3s`) share once their
//! clusters exist: bounded commands, Flux from its release manifest, the fixtures git server on a
//! Docker network's gateway (the one address both this host and the cluster's pods reach), the
//! fixtures bootstrap, and the faults done through kubectl (scaling a controller to 0 and back).
//! Below it: the two providers, the Docker engine they run on, the kind images built here and the
//! host packages those need. Nothing outside `provider` starts an engine or builds an image.

pub mod engine;
pub mod images;
#[cfg(feature = "k3s")]
pub mod k3s;
pub mod kind;
pub mod packages;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{ProviderOptions, Step};
use crate::apply;
use crate::fixtures;
use crate::flux::CONTROLLERS;
use crate::gitops::Served;
use crate::gitops::gitserver::{FixturesRepo, GitServer};
use crate::gitops::standins::{self, Prepared};
use crate::sys::exec::run;
use crate::sys::process::PortBlock;
use crate::toolchain::{Tool, Toolchain};

/// `kind-configs/<cluster>.yaml` of this checkout: the kind provider's cluster configuration.
pub fn kind_config_path(cluster: &str) -> PathBuf {
    kind::config_path(cluster)
}

/// The kind images (`harness images`), built here when absent. Needs no environment: a Docker
/// engine it starts keeps its state in the tool cache (stopped first if an earlier, killed run
/// left it; a second run meanwhile is refused), never in an environment's state directory.
pub fn kind_images(toolchain: &Toolchain) -> Result<images::KindImages> {
    let engine_dir = toolchain.cache_root().join("engine");
    let _owner = super::Owner::claim(&engine_dir)?;
    crate::sys::process::reap_stale(&engine_dir);
    let engine = engine::Engine::ensure(&engine_dir)?;
    images::ensure_kind_images(toolchain, &engine)
}

/// A Docker engine able to run kind's privileged node containers, held until the value is
/// dropped: the one running, else one started with its state in `dir` (stopped on drop). A kind
/// start beside it finds an engine it did not start and leaves it up, so what that start left
/// can still be listed afterwards.
pub fn hold_engine_for_kind(dir: &Path) -> Result<impl Drop + use<>> {
    let engine = engine::Engine::ensure(dir)?;
    let probe = images::ensure_fixture_app(&Toolchain::from_env()?)?;
    engine.ensure_privileged(&probe)?;
    Ok(engine)
}

/// Where Flux's install manifest comes from: `HARNESS_FLUX_INSTALL_MANIFEST` (a local file), else
/// the release asset of the pinned flux version (`toolchain/versions.yaml`).
pub fn flux_manifest(toolchain: &Toolchain) -> Result<String> {
    match crate::config::get().flux_install_manifest.clone() {
        Some(path) => {
            if !path.is_file() {
                bail!(
                    "{}={} does not exist: point it at a copy of Flux's install.yaml or unset it to download the release manifest",
                    crate::config::FLUX_INSTALL_MANIFEST,
                    path.display()
                );
            }
            Ok(path.to_string_lossy().into_owned())
        }
        _ => Ok(format!(
            "https://github.com/fluxcd/flux2/releases/download/{}/install.yaml",
            toolchain.versions().get(Tool::Flux)
        )),
    }
}

/// kubectl on the environment's merged kubeconfig (contexts `infra` and `apps`).
#[derive(Debug, Clone)]
pub(crate) struct Kubectl {
    pub kubectl: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    /// `kubectl --kubeconfig <merged> --context <cluster> <args>`.
    pub fn cmd(&self, cluster: &str, args: &[&str]) -> duct::Expression {
        let mut all: Vec<std::ffi::OsString> = vec![
            "--kubeconfig".into(),
            self.kubeconfig.clone().into(),
            "--context".into(),
            cluster.into(),
        ];
        all.extend(args.iter().map(Into::into));
        duct::cmd(&self.kubectl, all)
    }

    /// [`Kubectl::cmd`] run within `timeout`; the error names the command and the context.
    pub fn run(&self, cluster: &str, args: &[&str], timeout: Duration) -> Result<String> {
        run(
            &format!("kubectl {} (context {cluster})", args.join(" ")),
            self.cmd(cluster, args),
            timeout,
        )
    }

    /// Every node of `cluster` Ready (cluster creation may return before that).
    pub fn wait_nodes_ready(&self, cluster: &str) -> Result<()> {
        self.run(
            cluster,
            &[
                "wait",
                "--for=condition=Ready",
                "nodes",
                "--all",
                "--timeout=180s",
            ],
            Duration::from_secs(210),
        )
        .map(drop)
    }

    /// `kubectl apply --server-side -f <manifest>`, then every controller Deployment Available.
    pub fn install_flux(&self, cluster: &str, manifest: &str, timeout: Duration) -> Result<()> {
        self.run(
            cluster,
            &["apply", "--server-side", "-f", manifest],
            timeout,
        )
        .with_context(|| format!("installing Flux on cluster {cluster}"))?;
        for controller in CONTROLLERS {
            self.rollout(cluster, controller, timeout)?;
        }
        Ok(())
    }

    fn rollout(&self, cluster: &str, controller: Tool, timeout: Duration) -> Result<()> {
        let deployment = format!("deployment/{}", controller.key());
        let limit = format!("--timeout={}s", timeout.as_secs());
        self.run(
            cluster,
            &[
                "rollout",
                "status",
                &deployment,
                "-n",
                crate::flux::NAMESPACE,
                &limit,
            ],
            timeout + Duration::from_secs(30),
        )
        .map(drop)
    }

    /// Scales the controller's Deployment to 0 and waits until its pods are gone.
    pub fn stop_controller(&self, cluster: &str, controller: Tool) -> Result<()> {
        self.scale(cluster, controller, 0)?;
        let selector = format!("app={}", controller.key());
        self.run(
            cluster,
            &[
                "wait",
                "--for=delete",
                "pod",
                "-l",
                &selector,
                "-n",
                crate::flux::NAMESPACE,
                "--timeout=90s",
            ],
            Duration::from_secs(120),
        )
        .map(drop)
    }

    /// Scales the controller's Deployment back to 1 and waits until it is Available.
    pub fn start_controller(&self, cluster: &str, controller: Tool) -> Result<()> {
        self.scale(cluster, controller, 1)?;
        self.rollout(cluster, controller, Duration::from_secs(180))
    }

    fn scale(&self, cluster: &str, controller: Tool, replicas: u8) -> Result<()> {
        let deployment = format!("deployment/{}", controller.key());
        let replicas = format!("--replicas={replicas}");
        self.run(
            cluster,
            &[
                "scale",
                &deployment,
                "-n",
                crate::flux::NAMESPACE,
                &replicas,
            ],
            Duration::from_secs(30),
        )
        .map(drop)
    }

    /// Waits (at most 2 minutes) until the API server of `cluster` no longer answers `/readyz`.
    pub fn wait_api_down(&self, cluster: &str) -> Result<()> {
        crate::sys::poll::wait_for(
            &format!("the API server of {cluster} to stop"),
            Duration::from_secs(120),
            || {
                let answers = self
                    .run(
                        cluster,
                        &["--request-timeout=3s", "get", "--raw", "/readyz"],
                        Duration::from_secs(10),
                    )
                    .is_ok();
                Ok((!answers).then_some(()))
            },
        )
    }
}

/// The fixtures git server of a container environment, and the port block it holds.
struct FixturesServer {
    git: GitServer,
    _port: PortBlock,
}

/// [`crate::provider::finish_start`] for a container provider, whose kubectl and merged
/// kubeconfig (`kubectl`, of its [`Common`]) reach its clusters.
pub(crate) fn finish<R: crate::provider::Running + 'static>(
    running: R,
    kubectl: Kubectl,
    started: Result<(FixturesRepo, Prepared)>,
    served: crate::gitops::Served,
    toolchain: Toolchain,
    options: &ProviderOptions,
    label: &str,
) -> Result<crate::provider::Environment> {
    let reach = crate::provider::Reach {
        kubectl: &kubectl.kubectl,
        kubeconfig: &kubectl.kubeconfig,
        label,
    };
    crate::provider::finish_start(running, started, reach, served, toolchain, options)
}

/// What a container environment holds besides its clusters: kubectl on the merged kubeconfig, the
/// state directory and, once [`Common::bring_up`] ran, the fixtures git server.
pub(crate) struct Common {
    pub kubectl: Kubectl,
    pub state_dir: PathBuf,
    fixtures: Mutex<Option<FixturesServer>>,
    /// This process' hold on the state directory, for as long as the clusters live.
    _owner: super::Owner,
}

impl Common {
    pub fn new(toolchain: &Toolchain, owner: super::Owner) -> Self {
        let state_dir = owner.dir();
        Self {
            kubectl: Kubectl {
                kubectl: toolchain.binary(Tool::Kubernetes, "kubectl"),
                kubeconfig: state_dir.join("kubeconfig"),
            },
            state_dir: state_dir.to_path_buf(),
            fixtures: Mutex::new(None),
            _owner: owner,
        }
    }

    /// Waits for the nodes, serves the fixtures on `gateway` (`network` names it in errors),
    /// installs Flux from `manifest` and bootstraps the fixtures on both clusters: everything a
    /// container provider does once its clusters exist and the merged kubeconfig reaches them.
    pub fn bring_up(
        &self,
        gateway: Ipv4Addr,
        network: &str,
        manifest: &str,
        served: &Served,
        options: &ProviderOptions,
        toolchain: &Toolchain,
    ) -> Result<(FixturesRepo, Prepared)> {
        super::each_cluster(|cluster| {
            self.kubectl.wait_nodes_ready(cluster)?;
            options.progress.done(cluster, Step::ControlPlane);
            Ok(())
        })?;
        let port = PortBlock::first_free(20000, 1)?;
        let (git, repo) = GitServer::start_on(
            gateway,
            &self.state_dir.join("git"),
            &served.dir,
            port.base,
        )
        .with_context(|| {
            format!(
                "starting the fixtures git server on {gateway} (the {network} network's gateway)"
            )
        })?;
        *self.fixtures.lock().unwrap() = Some(FixturesServer { git, _port: port });
        super::each_cluster(|cluster| {
            self.kubectl
                .install_flux(cluster, manifest, options.flux_timeout)?;
            options.progress.done(cluster, Step::Flux);
            Ok(())
        })?;
        let prepared = standins::prepare(
            toolchain,
            &served.entry_paths(),
            &repo,
            served.standins,
            standins::Serving::Not(
                "the kind provider's Flux runs in containers, which cannot reach the registry on 127.0.0.1",
            ),
        )?;
        for line in prepared.report.lines() {
            eprintln!("harness: {line}");
        }
        super::each_cluster(|cluster| {
            crate::sys::exec::runtime()
                .block_on(async {
                    let client = apply::client_for(&self.kubectl.kubeconfig, cluster).await?;
                    fixtures::bootstrap(
                        &client,
                        served,
                        cluster,
                        repo.url(),
                        &prepared,
                        options.ready_timeout,
                    )
                    .await
                })
                .with_context(|| format!("bootstrapping the fixtures on cluster {cluster}"))?;
            options.progress.done(cluster, Step::Fixtures);
            Ok(())
        })?;
        Ok((repo, prepared))
    }

    /// The git server's logs and `<state>/<cluster_logs>`, those that exist.
    pub fn log_paths(&self, cluster_logs: &str) -> Vec<PathBuf> {
        let mut paths = vec![
            self.state_dir.join("git"),
            self.state_dir.join(cluster_logs),
        ];
        paths.retain(|p| p.exists());
        paths
    }

    /// The clusters are containers, not processes of ours, and the git server is a thread of this
    /// process: none to list.
    pub fn processes(&self) -> Vec<(String, u32)> {
        Vec::new()
    }

    /// Fails naming the git server's log when it stopped serving.
    pub fn health(&self) -> Result<()> {
        if let Some(server) = self.fixtures.lock().unwrap().as_ref() {
            server.git.ensure_running()?;
        }
        Ok(())
    }

    /// Stops the git server and frees its port.
    pub fn stop(&self) {
        if let Some(mut server) = self.fixtures.lock().unwrap().take() {
            server.git.stop();
        }
    }
}
