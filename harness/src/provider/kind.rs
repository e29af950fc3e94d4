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
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Environment, Faults, Running};
use crate::fixtures::{self, CLUSTERS};
use crate::gitserver::{FixturesRepo, GitServer};
use crate::process::PortBlock;
use crate::toolchain::{Tool, Toolchain};
use crate::{apply, diagnostics};

/// The four Flux controllers the release manifest installs (Deployments in `flux-system`).
const CONTROLLERS: [Tool; 4] = [
    Tool::SourceController,
    Tool::KustomizeController,
    Tool::HelmController,
    Tool::NotificationController,
];

/// Environment variable naming a local copy of Flux's `install.yaml` (air-gapped runs).
pub const FLUX_MANIFEST_ENV: &str = "HARNESS_FLUX_INSTALL_MANIFEST";

/// How to start the kind environment.
#[derive(Debug, Clone)]
pub struct KindOptions {
    /// Everything the environment writes: kubeconfigs, git server, logs.
    pub state_dir: PathBuf,
    /// Upper bound for one `kind create cluster` (node image pull included); kind itself waits
    /// at most 120s for the control plane to be Ready.
    pub create_timeout: Duration,
    /// Upper bound for applying Flux and for each controller Deployment to be Available.
    pub flux_timeout: Duration,
    /// Upper bound for the fixtures of one cluster to become Ready (real images are pulled here).
    pub ready_timeout: Duration,
}

impl KindOptions {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            create_timeout: Duration::from_secs(600),
            flux_timeout: Duration::from_secs(300),
            ready_timeout: Duration::from_secs(600),
        }
    }
}

/// `kind-configs/<cluster>.yaml` of this checkout.
pub fn config_path(cluster: &str) -> PathBuf {
    crate::repo_root()
        .join("kind-configs")
        .join(format!("{cluster}.yaml"))
}

/// Where Flux's install manifest comes from: `HARNESS_FLUX_INSTALL_MANIFEST` (a local file), else
/// the release asset of the pinned flux version (`toolchain/versions.yaml`).
pub fn flux_manifest(toolchain: &Toolchain) -> Result<String> {
    match std::env::var_os(FLUX_MANIFEST_ENV) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!(
                    "{FLUX_MANIFEST_ENV}={} does not exist: point it at a copy of Flux's install.yaml or unset it to download the release manifest",
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

/// Fails with one line naming the problem and the fix unless a Docker engine answers.
pub fn require_docker_engine() -> Result<()> {
    const FIX: &str =
        "start a Docker engine (e.g. `sudo systemctl start docker`) or use HARNESS_PROVIDER=local";
    if !on_path("docker") {
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

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Runs `expr` with stdout and stderr captured; `None` when it did not finish within `timeout`
/// (it is killed then).
fn finish(expr: duct::Expression, timeout: Duration) -> Result<Option<std::process::Output>> {
    let handle = expr
        .stdout_capture()
        .stderr_capture()
        .stdin_null()
        .unchecked()
        .start()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(out) = handle.try_wait()? {
            return Ok(Some(out.clone()));
        }
        if Instant::now() > deadline {
            let _ = handle.kill();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `expr` to completion within `timeout` (killed after it); returns trimmed stdout. On failure
/// the error names `what`, the exit status and the last lines of stderr (or stdout).
fn run(what: &str, expr: duct::Expression, timeout: Duration) -> Result<String> {
    let Some(out) = finish(expr, timeout).with_context(|| format!("starting {what}"))? else {
        bail!("{what} did not finish within {timeout:?} (killed)");
    };
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let text = if stderr.is_empty() { stdout } else { stderr };
    let lines: Vec<&str> = text.lines().collect();
    bail!(
        "{what} failed ({}): {}",
        out.status,
        lines[lines.len().saturating_sub(5)..].join("\n")
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
    kubectl: PathBuf,
    state_dir: PathBuf,
    /// Clusters this run created (and therefore deletes); never one that existed before.
    created: Mutex<Vec<String>>,
    git: Mutex<Option<GitServer>>,
    /// Held until the environment is gone (the git server's port).
    port: Mutex<Option<PortBlock>>,
}

/// Creates both kind clusters, installs Flux and bootstraps the fixtures; on failure everything
/// created is deleted again and the error names the diagnostics directory.
pub fn start(options: &KindOptions) -> Result<Environment> {
    // Fail fast, before anything is built or created.
    require_docker_engine()?;
    for (cmd, fix) in [
        ("git", "apt-get install -y git"),
        ("lighttpd", "apt-get install -y lighttpd"),
    ] {
        if !on_path(cmd)
            && !["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .any(|d| Path::new(d).join(cmd).is_file())
        {
            bail!("HARNESS_PROVIDER=kind needs `{cmd}` for the fixtures git server: {fix}");
        }
    }
    let toolchain = Toolchain::from_env()?;
    toolchain.ensure(&[Tool::Kind, Tool::Kubernetes, Tool::Task, Tool::Flux])?;
    let manifest = flux_manifest(&toolchain)?;
    let kind = toolchain.binary(Tool::Kind, "kind");
    let kubectl = toolchain.binary(Tool::Kubernetes, "kubectl");

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
    fs::create_dir_all(&state_dir)?;
    let stale = crate::process::reap_stale(&state_dir);
    if !stale.is_empty() {
        eprintln!(
            "harness: stopped {} processes left by an earlier run in {}: {}",
            stale.len(),
            state_dir.display(),
            stale.join(", ")
        );
    }
    for sub in ["git", "pids", "kind-logs", "kubeconfig"]
        .into_iter()
        .map(String::from)
        .chain(CLUSTERS.iter().map(|c| format!("kind-{c}.kubeconfig")))
    {
        let p = state_dir.join(sub);
        if p.is_dir() {
            fs::remove_dir_all(&p)?;
        } else if p.exists() {
            fs::remove_file(&p)?;
        }
    }

    let running = KindRunning {
        kind: kind.clone(),
        kubectl: kubectl.clone(),
        state_dir: state_dir.clone(),
        created: Mutex::new(Vec::new()),
        git: Mutex::new(None),
        port: Mutex::new(None),
    };
    let kubeconfig = state_dir.join("kubeconfig");
    let result = (|| -> Result<FixturesRepo> {
        for cluster in CLUSTERS {
            running.create_cluster(cluster, options.create_timeout)?;
        }
        running.merge_kubeconfigs(&kubeconfig)?;
        // `kind create --wait` only warns when the node is not Ready in time.
        for cluster in CLUSTERS {
            run(
                &format!("kubectl wait --for=condition=Ready nodes --all (context {cluster})"),
                running.kubectl_args(
                    cluster,
                    &[
                        "wait",
                        "--for=condition=Ready",
                        "nodes",
                        "--all",
                        "--timeout=180s",
                    ],
                ),
                Duration::from_secs(210),
            )?;
        }

        let gateway = kind_network_gateway()?;
        let port = PortBlock::first_free(20000, 1)?;
        let (git, fixtures_repo) = GitServer::start_on(
            gateway,
            &state_dir.join("git"),
            &fixtures::gitops_dir(),
            port.base,
            &state_dir,
        )
        .with_context(|| {
            format!("starting the fixtures git server on {gateway} (the `kind` network's gateway)")
        })?;
        *running.port.lock().unwrap() = Some(port);
        *running.git.lock().unwrap() = Some(git);

        for cluster in CLUSTERS {
            running.install_flux(cluster, &manifest, options.flux_timeout)?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for cluster in CLUSTERS {
            let client = rt.block_on(apply::client_for(&kubeconfig, cluster))?;
            rt.block_on(fixtures::bootstrap(
                &client,
                cluster,
                fixtures_repo.url(),
                options.ready_timeout,
            ))
            .with_context(|| format!("bootstrapping the fixtures on kind cluster {cluster}"))?;
        }
        Ok(fixtures_repo)
    })();
    let fixtures = match result {
        Ok(f) => f,
        Err(e) => {
            let dir = diagnostics::collect(
                &kubectl,
                &kubeconfig,
                &CLUSTERS.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                &running.log_paths(),
                "kind-environment-start",
            );
            // `running` is dropped on return, which deletes the clusters this run created.
            return Err(e.context(format!("diagnostics saved in {}", dir.display())));
        }
    };
    Ok(Environment {
        kubeconfig,
        state_dir,
        fixtures: Some(fixtures),
        toolchain,
        running: Box::new(running),
    })
}

impl KindRunning {
    fn cluster_kubeconfig(&self, cluster: &str) -> PathBuf {
        self.state_dir.join(format!("kind-{cluster}.kubeconfig"))
    }

    /// `kind create cluster` from `kind-configs/<cluster>.yaml`; its output goes to
    /// `<state>/kind-logs/create-<cluster>.log`.
    fn create_cluster(&self, cluster: &str, timeout: Duration) -> Result<()> {
        let log_dir = self.state_dir.join("kind-logs");
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
                &self.kubectl,
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
    fn merge_kubeconfigs(&self, out: &Path) -> Result<()> {
        let paths: Vec<PathBuf> = CLUSTERS
            .iter()
            .map(|c| self.cluster_kubeconfig(c))
            .collect();
        let merged = run(
            "kubectl config view --flatten",
            duct::cmd!(&self.kubectl, "config", "view", "--flatten")
                .env("KUBECONFIG", std::env::join_paths(&paths)?),
            Duration::from_secs(30),
        )?;
        fs::write(out, merged + "\n")?;
        Ok(())
    }

    /// kubectl on the merged kubeconfig, context `cluster`.
    fn kubectl_args(&self, cluster: &str, args: &[&str]) -> duct::Expression {
        let mut all: Vec<std::ffi::OsString> = vec![
            "--kubeconfig".into(),
            self.state_dir.join("kubeconfig").into(),
            "--context".into(),
            cluster.into(),
        ];
        all.extend(args.iter().map(Into::into));
        duct::cmd(&self.kubectl, all)
    }

    /// `kubectl apply --server-side -f <manifest>`, then every controller Deployment Available.
    fn install_flux(&self, cluster: &str, manifest: &str, timeout: Duration) -> Result<()> {
        run(
            &format!("kubectl apply --server-side -f {manifest} (context {cluster})"),
            self.kubectl_args(cluster, &["apply", "--server-side", "-f", manifest]),
            timeout,
        )
        .with_context(|| format!("installing Flux on kind cluster {cluster}"))?;
        self.wait_controllers(cluster, timeout)
    }

    fn wait_controllers(&self, cluster: &str, timeout: Duration) -> Result<()> {
        let limit = format!("--timeout={}s", timeout.as_secs());
        for controller in CONTROLLERS {
            let deployment = format!("deployment/{}", controller.key());
            run(
                &format!("kubectl rollout status {deployment} -n flux-system (context {cluster})"),
                self.kubectl_args(
                    cluster,
                    &[
                        "rollout",
                        "status",
                        &deployment,
                        "-n",
                        "flux-system",
                        &limit,
                    ],
                ),
                timeout + Duration::from_secs(30),
            )?;
        }
        Ok(())
    }

    /// `kind export logs` of every created cluster into `<state>/kind-logs/<cluster>` (bounded).
    fn export_logs(&self) {
        for cluster in self.created.lock().unwrap().iter() {
            let dir = self.state_dir.join("kind-logs").join(cluster);
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
    /// Scales the controller's Deployment to 0 and waits until its pods are gone.
    fn stop_controller(&self, cluster: &str, controller: Tool) -> Result<()> {
        let deployment = format!("deployment/{}", controller.key());
        let selector = format!("app={}", controller.key());
        run(
            &format!("kubectl scale {deployment} --replicas=0"),
            self.kubectl_args(
                cluster,
                &["scale", &deployment, "-n", "flux-system", "--replicas=0"],
            ),
            Duration::from_secs(30),
        )?;
        run(
            &format!("waiting for the {} pods to go", controller.key()),
            self.kubectl_args(
                cluster,
                &[
                    "wait",
                    "--for=delete",
                    "pod",
                    "-l",
                    &selector,
                    "-n",
                    "flux-system",
                    "--timeout=90s",
                ],
            ),
            Duration::from_secs(120),
        )?;
        Ok(())
    }

    /// Scales the Deployment back to 1 and waits until it is Available.
    fn start_controller(&self, cluster: &str, controller: Tool) -> Result<()> {
        let deployment = format!("deployment/{}", controller.key());
        run(
            &format!("kubectl scale {deployment} --replicas=1"),
            self.kubectl_args(
                cluster,
                &["scale", &deployment, "-n", "flux-system", "--replicas=1"],
            ),
            Duration::from_secs(30),
        )?;
        run(
            &format!("kubectl rollout status {deployment}"),
            self.kubectl_args(
                cluster,
                &[
                    "rollout",
                    "status",
                    &deployment,
                    "-n",
                    "flux-system",
                    "--timeout=180s",
                ],
            ),
            Duration::from_secs(210),
        )?;
        Ok(())
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
        crate::process::wait_for(
            &format!("the API server of {cluster} to stop"),
            Duration::from_secs(120),
            || {
                let answers = run(
                    "kubectl get --raw /readyz",
                    self.kubectl_args(
                        cluster,
                        &["--request-timeout=3s", "get", "--raw", "/readyz"],
                    ),
                    Duration::from_secs(10),
                )
                .is_ok();
                Ok((!answers).then_some(()))
            },
        )
    }
}

impl Running for KindRunning {
    /// Exports the clusters' logs (`kind export logs`) first, then lists them with the git server's.
    fn log_paths(&self) -> Vec<PathBuf> {
        self.export_logs();
        let mut paths = vec![self.state_dir.join("git"), self.state_dir.join("kind-logs")];
        paths.retain(|p| p.exists());
        paths
    }

    fn processes(&self) -> Vec<(String, u32)> {
        // The clusters are containers, not processes of ours; only the git server is.
        self.git
            .lock()
            .unwrap()
            .as_ref()
            .map(|g| vec![("git-server".to_string(), g.pid())])
            .unwrap_or_default()
    }

    fn health(&self) -> Result<()> {
        if let Some(git) = self.git.lock().unwrap().as_ref() {
            let pid = git.pid();
            if !Path::new(&format!("/proc/{pid}")).exists() {
                bail!("the fixtures git server (pid {pid}) died");
            }
        }
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
        if let Some(mut git) = self.git.lock().unwrap().take() {
            git.stop();
        }
        self.port.lock().unwrap().take();
    }
}

impl Drop for KindRunning {
    fn drop(&mut self) {
        self.stop();
    }
}
