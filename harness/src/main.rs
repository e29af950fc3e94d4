//! `harness up | down | status | toolchain`: the operator's way to get the two ephemeral clusters,
//! e.g. to reproduce a `task flux:*` bug locally.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use harness::gitops::GitopsOptions;
use harness::provider::local;
use harness::provider::{Environment, ProviderKind, ProviderOptions};
use harness::sys::process;
use harness::toolchain::{Tool, Toolchain};
use harness::{config, fixtures};

#[derive(Parser)]
#[command(
    version,
    about = "Ephemeral infra + apps clusters with real Flux, for the k8s-ops Taskfiles"
)]
struct Cli {
    /// Where the environment keeps its state, logs and kubeconfig.
    #[arg(long, global = true, env = config::STATE_DIR, default_value_os_t = harness::repo_root().join(".harness"))]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the tools if needed, start both clusters with Flux and the fixtures, and keep them
    /// running until Ctrl-C or `harness down`.
    Up {
        /// Which clusters: local (processes on this machine), kind or k3s (Docker), or
        /// existing (HARNESS_KUBECONFIG; nothing is started).
        #[arg(long, env = config::PROVIDER, default_value = "local", value_parser = ProviderKind::parse)]
        provider: ProviderKind,
        /// First of the local environment's 41 consecutive ports on 127.0.0.1.
        #[arg(long, env = config::PORT_BASE, default_value_t = 31000)]
        port_base: u16,
        /// Upper bound for the fixtures of one cluster to become Ready.
        #[arg(long, default_value = "240", value_parser = parse_secs)]
        ready_timeout: Duration,
        /// Upper bound for creating one kind or k3s cluster.
        #[arg(long, default_value = "600", value_parser = parse_secs)]
        create_timeout: Duration,
        /// Keep the environment up when its start fails, saying how to reach it.
        #[arg(long, env = config::RETAIN, value_parser = parse_flag)]
        retain: bool,
        /// Serve this GitOps checkout (its working tree, uncommitted edits included) instead of
        /// fixtures/gitops, to reproduce a task bug with your own cluster's objects.
        #[arg(long, env = config::GITOPS_DIR, value_name = "DIR")]
        gitops: Option<PathBuf>,
        /// A cluster's entry path in the --gitops checkout, e.g. apps=kubernetes/apps-cluster
        /// (repeatable); without it the known layouts are looked up.
        #[arg(long, value_name = "CLUSTER=PATH", value_parser = parse_cluster_path)]
        cluster_path: Vec<(String, String)>,
        /// Fail the start when anything of the --gitops repository is not Ready (default: list it
        /// at the end and stay up).
        #[arg(long)]
        strict: bool,
        /// The age key Flux decrypts the repository's SOPS secrets with (Secret flux-system/sops-age).
        #[arg(long, value_name = "FILE")]
        sops_age_key: Option<PathBuf>,
        /// Which remote sources (OCI/Helm/Git) of the repository are replaced by local stand-ins:
        /// `auto` those whose URL does not answer, `always` all, `never` none.
        #[arg(
            long = "standins",
            value_name = "WHICH",
            env = config::STANDINS,
            value_enum,
            default_value_t
        )]
        offline_standins: harness::gitops::standins::Mode,
    },
    /// Stop the environment started by `up` (and anything a crashed run left behind).
    Down,
    /// Show whether an environment is up, its processes and its kubeconfig.
    Status,
    /// Build every pinned tool into the machine-wide cache and print where they are; or move the
    /// built tools to another machine as one archive.
    Toolchain {
        /// Write every built tool of a pinned version in the cache to FILE (a zstd-compressed tar
        /// with its sha256 manifest) instead.
        #[arg(long, value_name = "FILE", conflicts_with = "import")]
        export: Option<PathBuf>,
        /// Add the tools of such an archive that the cache lacks (each file verified first), then
        /// build whatever is still missing.
        #[arg(long, value_name = "FILE", env = config::TOOLS_ARCHIVE)]
        import: Option<PathBuf>,
    },
    /// Build every image the kind provider runs (cached by version; a Docker engine is started
    /// for the build where none answers, and stopped after it) and print them.
    Images,
    /// Time the environment and the tasks side by side; writes docs/benchmarks.md.
    Bench {
        /// Environment starts to time.
        #[arg(long, default_value_t = 3)]
        env_starts: usize,
        /// Repetitions of each command.
        #[arg(long, default_value_t = 7)]
        reps: usize,
        /// Extra HelmReleases/Kustomizations for the APP-resolution scale test.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        scale: Vec<usize>,
        /// Skip timing the scenario suite (serial vs parallel `cargo test`).
        #[arg(long)]
        no_suite: bool,
        /// Also time the kind provider (images, start, memory beside the local one, teardown).
        #[arg(long)]
        kind: bool,
        /// With --kind: remove every locally built image first and time the cold image build.
        #[arg(long, requires = "kind")]
        kind_cold: bool,
        /// Also time environment starts serving this GitOps checkout, in the same run.
        #[arg(long, value_name = "DIR")]
        gitops: Option<PathBuf>,
        /// Where the markdown report goes.
        #[arg(long, default_value_os_t = harness::bench::default_output())]
        output: PathBuf,
    },
}

/// `1`/`true` or `0`/`false` (also from HARNESS_RETAIN).
fn parse_flag(s: &str) -> Result<bool, String> {
    match s {
        "1" | "true" => Ok(true),
        "0" | "false" | "" => Ok(false),
        _ => Err(format!("`{s}` is not 1/true or 0/false")),
    }
}

fn parse_cluster_path(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((cluster, path)) if !cluster.is_empty() && !path.is_empty() => {
            Ok((cluster.to_string(), path.to_string()))
        }
        _ => Err(format!(
            "`{s}` is not CLUSTER=PATH, e.g. apps=kubernetes/clusters/apps"
        )),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("`{s}` is not a number of seconds"))
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up {
            provider,
            port_base,
            ready_timeout,
            create_timeout,
            retain,
            gitops,
            cluster_path,
            strict,
            sops_age_key,
            offline_standins,
        } => up(
            provider,
            ProviderOptions::new(&cli.state_dir)
                .port_base(port_base)
                .ready_timeout(ready_timeout)
                .create_timeout(create_timeout)
                .retain(retain)
                .gitops(GitopsOptions {
                    dir: gitops,
                    cluster_paths: cluster_path.into_iter().collect(),
                    strict,
                    sops_age_key,
                    offline_standins: Some(offline_standins),
                }),
        ),
        Command::Down => down(&cli.state_dir),
        Command::Status => status(&cli.state_dir),
        Command::Toolchain { export, import } => toolchain(export, import),
        Command::Images => images(),
        Command::Bench {
            env_starts,
            reps,
            scale,
            no_suite,
            kind,
            kind_cold,
            gitops,
            output,
        } => harness::bench::run(&harness::bench::BenchOptions {
            env_starts,
            reps,
            scale,
            suite: !no_suite,
            kind: kind.then_some(kind_cold),
            gitops: gitops.map(|d| d.canonicalize().unwrap_or(d)),
            state_dir: harness::bench::default_state_dir(),
            output,
        })
        .map(|md| println!("{md}")),
    };
    if let Err(e) = result {
        eprintln!("harness: error: {e:#}");
        std::process::exit(1);
    }
}

fn supervisor_pid(state_dir: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(state_dir.join("supervisor.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    harness::sys::exec::alive(pid).then_some(pid)
}

fn up(provider: ProviderKind, options: ProviderOptions) -> Result<()> {
    // In seconds, before any build: everything missing at once; then what was asked to be served.
    harness::toolchain::prerequisites::check()?;
    options.gitops.resolve()?;
    let state_dir = options.state_dir.clone();
    let state_dir = state_dir.as_path();
    claim(state_dir)?;
    let rt = harness::sys::exec::runtime();
    // Listening from here to the end: a SIGTERM (`harness down`) or Ctrl-C at any moment counts,
    // also one that arrives between the start-up and the wait below.
    let mut shutdown = {
        let _runtime = rt.enter();
        Shutdown::listen()?
    };
    let (env, took) = match start_unless_stopped(provider, options, &mut shutdown) {
        Ok(Some(started)) => started,
        Ok(None) => {
            eprintln!("harness: interrupted during start-up; stopping what was started");
            if let Err(e) = stop_leftovers(state_dir) {
                eprintln!("harness: {e:#}");
            }
            let _ = fs::remove_file(state_dir.join("supervisor.pid"));
            std::process::exit(130);
        }
        Err(e) => {
            let _ = fs::remove_file(state_dir.join("supervisor.pid"));
            return Err(e);
        }
    };
    let not_ready = rt.block_on(not_ready_everywhere(&env))?;
    print_up(&env, provider, took, &not_ready, state_dir);
    let outcome = rt.block_on(serve(&env, &mut shutdown));
    if let Err(e) = &outcome {
        let dir = env.diagnostics("harness-up");
        eprintln!("harness: {e:#}; diagnostics in {}", dir.display());
    }
    println!("harness: stopping");
    // Stopped and its state directory released before `harness down` sees this process gone.
    drop(env);
    let _ = fs::remove_file(state_dir.join("supervisor.pid"));
    outcome
}

/// Records this process as the one serving `state_dir` (`harness down` signals it); fails when
/// another one already does.
fn claim(state_dir: &Path) -> Result<()> {
    if let Some(pid) = supervisor_pid(state_dir) {
        return Err(harness::Error::StateDirOwned {
            dir: state_dir.to_path_buf(),
            owner: format!("pid {pid} (harness up)"),
        }
        .into());
    }
    fs::create_dir_all(state_dir)?;
    fs::write(
        state_dir.join("supervisor.pid"),
        std::process::id().to_string(),
    )?;
    Ok(())
}

/// Starts the environment on a thread of its own; `None` when SIGTERM/Ctrl-C came first.
fn start_unless_stopped(
    provider: ProviderKind,
    options: ProviderOptions,
    shutdown: &mut Shutdown,
) -> Result<Option<(Environment, Duration)>> {
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let env = match provider {
            ProviderKind::Local => local::start(&options).map(|(env, _)| env),
            other => other.start(&options),
        };
        let _ = tx.send(env.map(|env| (env, started.elapsed())));
    });
    let started = harness::sys::exec::runtime().block_on(async {
        tokio::select! {
            r = &mut rx => Some(r),
            _ = shutdown.recv() => None,
        }
    });
    match started {
        None => Ok(None),
        Some(sent) => Ok(Some(sent.context("start-up thread vanished")??)),
    }
}

/// What is up, what is not Ready, and how to use it from another shell.
fn print_up(
    env: &Environment,
    provider: ProviderKind,
    took: Duration,
    not_ready: &[(String, fixtures::NotReady)],
    state_dir: &Path,
) {
    let what = match &env.served {
        Some(served) if !served.is_fixtures => format!("{}", served.dir.display()),
        _ => "the fixtures".to_string(),
    };
    let ready = if not_ready.is_empty() {
        "all Ready"
    } else {
        "NOT all Ready (below)"
    };
    println!(
        "harness: infra and apps ({provider:?}) are up with Flux and {what}, {ready}, in {took:.0?}"
    );
    if let Ok(fixtures) = env.fixtures() {
        println!(
            "  served repo: {} (checkout: {})",
            fixtures.url(),
            fixtures.work_dir().display()
        );
    }
    for line in env.served.iter().flat_map(|s| s.describe()) {
        println!("  entry path of {line}");
    }
    let report = &env.standins.report;
    let (standing_in, real): (Vec<_>, Vec<_>) = report
        .sources
        .iter()
        .partition(|s| matches!(s.used, harness::gitops::standins::Used::StandIn { .. }));
    if !report.sources.is_empty() {
        println!(
            "  remote sources: {} real, {} stand-in (each said at start, `harness: source …`)",
            real.len(),
            standing_in.len()
        );
    }
    if !report.is_empty() {
        println!(
            "Stand-ins (not real: no controller behind these CRDs, a minimal chart or empty content behind these sources):"
        );
        print!("{}", report.table());
    }
    if !not_ready.is_empty() {
        println!("Not Ready (the environment stays up; `--strict` fails instead):");
        print!("{}", fixtures::not_ready_table(not_ready));
    }
    println!("  logs: {}", state_dir.display());
    println!("Use it from another shell:");
    // GITOPS_DIR: `task flux:diff` finds an object's spec.path in the served fixtures checkout.
    let gitops = env
        .fixtures()
        .map(|f| format!(" GITOPS_DIR={}", f.work_dir().display()))
        .unwrap_or_default();
    println!(
        "  export KUBECONFIG={} PATH={}:$PATH{gitops}",
        env.kubeconfig.display(),
        operator_path(&env.toolchain)
    );
    println!("  task flux:status CLUSTER=all");
    println!("Stop with Ctrl-C here or `cargo run -p harness -- down`.");
}

/// Serves until SIGTERM/Ctrl-C (`Ok`) or until a process of the environment dies (its error);
/// health is checked every 10 s.
async fn serve(env: &Environment, shutdown: &mut Shutdown) -> Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = shutdown.recv() => return Ok(()),
            _ = tick.tick() => env.health()?,
        }
    }
}

/// What is not Ready on each cluster now.
async fn not_ready_everywhere(env: &Environment) -> Result<Vec<(String, fixtures::NotReady)>> {
    let mut rows = Vec::new();
    for cluster in env.clusters() {
        let client = env.client(&cluster).await?;
        for row in fixtures::not_ready(&client).await? {
            rows.push((cluster.clone(), row));
        }
    }
    Ok(rows)
}

fn operator_path(toolchain: &Toolchain) -> String {
    [Tool::Task, Tool::Flux, Tool::Kubernetes]
        .iter()
        .map(|t| toolchain.bin_dir(*t).display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// SIGTERM and SIGINT, listened to from creation on (a signal that arrives while nobody awaits
/// [`Shutdown::recv`] is kept for the next call).
struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn listen() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn down(state_dir: &Path) -> Result<()> {
    if let Some(pid) = supervisor_pid(state_dir) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        process::wait_for(
            "the harness to stop its environment",
            Duration::from_secs(90),
            || Ok(supervisor_pid(state_dir).is_none().then_some(())),
        )?;
        println!("harness: stopped the environment of harness pid {pid}");
    }
    // Refused while another process (a scenario binary, a second `up`) still owns the directory.
    let _owner = harness::provider::Owner::claim(state_dir)?;
    stop_leftovers(state_dir)?;
    let _ = fs::remove_file(state_dir.join("supervisor.pid"));
    println!("harness: nothing of {} is running", state_dir.display());
    Ok(())
}

/// Deletes what an environment of `state_dir` left behind (this process owns the directory).
fn stop_leftovers(state_dir: &Path) -> Result<()> {
    for removed in harness::provider::reap_leftovers(state_dir)? {
        println!("harness: {removed}");
    }
    let _ = fs::remove_file(state_dir.join("retained"));
    Ok(())
}

fn status(state_dir: &Path) -> Result<()> {
    match supervisor_pid(state_dir) {
        Some(pid) => println!("up: harness pid {pid}, state {}", state_dir.display()),
        None => println!("down: no harness running for {}", state_dir.display()),
    }
    let mut rows = process::recorded_pids(state_dir);
    rows.sort();
    for (name, pid, alive) in rows {
        println!(
            "  {:<40} pid {pid:<8} {}",
            name,
            if alive { "running" } else { "gone" }
        );
    }
    let kubeconfig = state_dir.join("kubeconfig");
    if kubeconfig.exists() {
        println!("export KUBECONFIG={}", kubeconfig.display());
    }
    Ok(())
}

/// Builds the kind images. Needs no environment: an engine it starts keeps its state in the tool
/// cache, never in an environment's state directory, so it runs beside a running environment
/// without touching it.
fn images() -> Result<()> {
    harness::toolchain::prerequisites::check()?;
    let toolchain = Toolchain::from_env()?;
    // A Docker engine an earlier, killed run of this command started is stopped first; a second
    // `harness images` running meanwhile is refused instead.
    let engine_dir = toolchain.cache_root().join("engine");
    let _owner = harness::provider::Owner::claim(&engine_dir)?;
    process::reap_stale(&engine_dir);
    let engine = harness::provider::containers::engine::Engine::ensure(&engine_dir)?;
    let images = harness::provider::containers::images::ensure_kind_images(&toolchain, &engine)?;
    println!("node image   {}", images.node);
    for image in &images.load {
        println!("kind load    {image}");
    }
    println!("flux install {}", images.flux_manifest.display());
    Ok(())
}

fn toolchain(export: Option<PathBuf>, import: Option<PathBuf>) -> Result<()> {
    let toolchain = Toolchain::from_env()?;
    if let Some(file) = export {
        let dirs = toolchain.export(&file)?;
        println!(
            "exported {} tool directories to {}: {}",
            dirs.len(),
            file.display(),
            dirs.join(" ")
        );
        return Ok(());
    }
    if let Some(file) = import.filter(|f| !f.as_os_str().is_empty()) {
        let report = toolchain.import(&file)?;
        println!("imported {}: {report}", file.display());
    }
    toolchain.ensure_all()?;
    for tool in Tool::ALL {
        println!(
            "{:<24} {:<10} {}",
            tool.key(),
            toolchain.versions().get(tool),
            toolchain.bin_dir(tool).display()
        );
    }
    Ok(())
}
