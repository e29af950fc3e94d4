//! `harness up`: takes the state directory, starts the environment on a thread of its own (a
//! SIGTERM or Ctrl-C during the start stops what was started), prints how to use it, and serves it
//! until SIGTERM/Ctrl-C or until one of its processes dies.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use harness::assertions;
use harness::provider::{Environment, Progress, ProviderKind, ProviderOptions};
use harness::toolchain::{Tool, Toolchain};

use super::state::{stop_leftovers, supervisor_pid};

pub fn up(provider: ProviderKind, options: ProviderOptions) -> Result<()> {
    // In seconds, before any build: everything missing at once; then what was asked to be served.
    harness::toolchain::prerequisites::check()?;
    options.gitops.resolve()?;
    let state_dir = options.state_dir.clone();
    let state_dir = state_dir.as_path();
    claim(state_dir)?;
    let rt = harness::processes::runtime();
    // Listening from here to the end: a SIGTERM (`harness down`) or Ctrl-C at any moment counts,
    // also one that arrives between the start-up and the wait below.
    let mut shutdown = {
        let _runtime = rt.enter();
        Shutdown::listen()?
    };
    let options = options.progress(Progress::new(|cluster, step| {
        eprintln!("harness: {cluster}: {step}")
    }));
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
        let env = provider.start(&options);
        let _ = tx.send(env.map(|env| (env, started.elapsed())));
    });
    let started = harness::processes::runtime().block_on(async {
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
    not_ready: &[(String, assertions::NotReady)],
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
        print!("{}", assertions::not_ready_table(not_ready));
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
async fn not_ready_everywhere(env: &Environment) -> Result<Vec<(String, assertions::NotReady)>> {
    let mut rows = Vec::new();
    for cluster in env.clusters() {
        let client = env.client(&cluster).await?;
        for row in assertions::not_ready(&client).await? {
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
