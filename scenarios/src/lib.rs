//! Support for the scenarios: one environment per test binary, shared by its scenarios and stopped
//! when the binary exits; scenario bodies that save diagnostics when they fail.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use harness::fixtures::{FLUX_SYSTEM_LAYOUT, Layout};

pub mod cleanup;
pub mod flux_state;
pub mod output;
use harness::provider::{Environment, ProviderKind, ProviderOptions};

static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
/// Set when a scenario failed: with `HARNESS_RETAIN=1` the environment then stays up at exit.
static FAILED: AtomicBool = AtomicBool::new(false);

/// The environment of this test binary, started on first use (state in `target/harness/<binary>`,
/// or `HARNESS_STATE_DIR`, so a run killed half-way has its leftovers stopped by the next). A failed start fails every
/// scenario with the reason: nothing is skipped.
pub fn env() -> &'static Environment {
    let started = ENV.get_or_init(|| {
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| {
                p.file_stem().map(|s| {
                    s.to_string_lossy()
                        .split('-')
                        .next()
                        .unwrap_or("scenarios")
                        .to_string()
                })
            })
            .unwrap_or_else(|| "scenarios".into());
        // HARNESS_STATE_DIR and HARNESS_PORT_BASE as for `harness up`.
        let config = harness::config::get();
        let state_dir = config.state_dir.clone().unwrap_or_else(|| {
            harness::repo_root()
                .join("target")
                .join("harness")
                .join(binary)
        });
        // Started on its own thread: it runs its own async runtimes, and tests call this from theirs.
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut options = ProviderOptions::new(&state_dir);
            if let Some(base) = &config.port_base {
                let base = base.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "HARNESS_PORT_BASE={base} is not a port number: give one like 31000"
                    )
                })?;
                options = options.port_base(base);
            }
            let env = ProviderKind::from_env()?.start(&options)?;
            eprintln!("scenarios: environment ready in {:.0?}", started.elapsed());
            anyhow::Ok(env)
        })
        .join()
        .map_err(|_| "environment start panicked".to_string())
        .and_then(|r| r.map_err(|e| format!("{e:#}")))
    });
    match started {
        Ok(env) => env,
        Err(e) => panic!("the environment did not start: {e}"),
    }
}

/// The fixture repository the environment serves (`HARNESS_GITOPS_DIR` picks the second layout;
/// existing clusters are expected to run the first): scenarios take every name from it.
pub fn layout(env: &Environment) -> anyhow::Result<&'static Layout> {
    match &env.served {
        None => Ok(&FLUX_SYSTEM_LAYOUT),
        Some(served) => Layout::of(served).ok_or_else(|| {
            anyhow::anyhow!(
                "the environment serves {}, which no scenario knows: HARNESS_GITOPS_DIR must be fixtures/gitops, fixtures/gitops-namespaced or fixtures/gitops-homeops",
                served.dir.display()
            )
        }),
    }
}

#[dtor::dtor(unsafe)]
fn stop_environment_at_exit() {
    if let Some(Ok(env)) = ENV.get() {
        if env.retain && FAILED.load(Ordering::SeqCst) {
            // Left up on purpose: the reaper leaves it when this binary exits.
            harness::provider::retain(&env.state_dir);
            eprintln!(
                "scenarios: a scenario failed and HARNESS_RETAIN=1: the environment stays up (but not the fixtures' Git server, a thread of this test binary): export KUBECONFIG={}; remove it with `HARNESS_STATE_DIR={} cargo run -p harness -- down`",
                env.kubeconfig().display(),
                env.state_dir.display()
            );
            return;
        }
        env.stop();
    }
}

/// Runs a scenario that may change anything on the clusters; on error saves the environment's
/// diagnostics and panics with their path. On existing clusters it refuses (fails, naming the way
/// out) unless `HARNESS_ALLOW_DESTRUCTIVE=1`.
pub async fn scenario<F, Fut>(name: &str, body: F)
where
    F: FnOnce(&'static Environment) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if ProviderKind::from_env().ok() == Some(ProviderKind::Existing)
        && !harness::config::get().allow_destructive
    {
        panic!(
            "refusing scenario {name} on existing clusters: it changes fixtures the real clusters do not have; \
             run `cargo test -p scenarios --test canary` there, or set HARNESS_ALLOW_DESTRUCTIVE=1"
        );
    }
    run_scenario(name, body).await
}

/// Runs a scenario body (no provider check); on error saves diagnostics and panics with their path.
pub async fn run_scenario<F, Fut>(name: &str, body: F)
where
    F: FnOnce(&'static Environment) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let env = env();
    if let Err(e) = body(env).await {
        FAILED.store(true, Ordering::SeqCst);
        let dir = env.diagnostics(name);
        panic!(
            "scenario {name} failed: {e:#}\ndiagnostics: {}",
            dir.display()
        );
    }
}

/// Default bound for a Flux object to reach the state a task asked for.
pub const SETTLE: Duration = Duration::from_secs(120);

/// Asserts a task succeeded, with its transcript otherwise.
pub fn ok(out: &harness::TaskOutput) -> anyhow::Result<()> {
    anyhow::ensure!(out.success(), "task failed:\n{}", out.transcript());
    Ok(())
}

static WRITERS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Held by every scenario that changes cluster state: many at once.
pub async fn writing() -> tokio::sync::RwLockReadGuard<'static, ()> {
    WRITERS.read().await
}

/// Held by a scenario that proves a command changed nothing anywhere: no other scenario writes
/// while it runs.
pub async fn alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    WRITERS.write().await
}

/// Serialises scenarios that change the same fixture (e.g. `apps/odoo`), so that scenarios on
/// different apps still run in parallel.
pub async fn exclusive(key: &str) -> tokio::sync::OwnedMutexGuard<()> {
    static LOCKS: OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    > = OnceLock::new();
    let lock = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(key.to_string())
        .or_default()
        .clone();
    lock.lock_owned().await
}
