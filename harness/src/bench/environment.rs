//! Environment starts (the fixtures and `--gitops`, with and without stand-ins), their phases,
//! memory and teardown; the scenario suite serial against parallel.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::BenchOptions;
use super::report::{Sample, Section, nothing, ratio, sample};
use super::rss_kib;
use crate::gitops::standins::Mode;
use crate::provider::{Environment, Progress, ProviderKind, ProviderOptions, Step};

/// One timed start of the local provider, measured from here: its total, and per cluster the time
/// from the start call to its control plane, then to Flux, then to the fixtures Ready.
struct Timed {
    env: Environment,
    total: Duration,
    phases: Vec<(String, [Duration; 3])>,
}

/// Starts the local provider with `options`, timing each cluster's announced steps.
fn timed_start(options: ProviderOptions) -> Result<Timed> {
    let steps: Arc<Mutex<Vec<(String, Step, Instant)>>> = Arc::default();
    let heard = steps.clone();
    let options = options.progress(Progress::new(move |cluster, step| {
        heard
            .lock()
            .unwrap()
            .push((cluster.to_string(), step, Instant::now()))
    }));
    let t0 = Instant::now();
    let env = ProviderKind::Local.start(&options)?;
    let total = t0.elapsed();
    let steps = steps.lock().unwrap();
    let at = |cluster: &str, step: Step| {
        steps
            .iter()
            .find(|(c, s, _)| c == cluster && *s == step)
            .map(|(_, _, at)| *at)
            .with_context(|| format!("{cluster} announced no {step:?} step"))
    };
    let mut phases = Vec::new();
    for cluster in env.clusters() {
        let control_plane = at(&cluster, Step::ControlPlane)?;
        let flux = at(&cluster, Step::Flux)?;
        let fixtures = at(&cluster, Step::Fixtures)?;
        phases.push((
            cluster,
            [control_plane - t0, flux - control_plane, fixtures - flux],
        ));
    }
    Ok(Timed { env, total, phases })
}

/// Section 1: environment starts (first those serving `--gitops`, each stopped), their phases,
/// memory and teardown. Returns the section, the last environment (kept running for the command
/// sections) and its resident memory in KiB.
pub(super) fn environment_section(options: &BenchOptions) -> Result<(Section, Environment, u64)> {
    let (gitops, gitops_verdict) = gitops_starts(options)?;
    let mut totals = Vec::new();
    let mut teardowns = Vec::new();
    let mut phase_rows = String::new();
    let mut rss = 0;
    let mut env = None;
    for i in 0..options.env_starts {
        let Timed {
            env: started,
            total,
            phases,
        } = timed_start(ProviderOptions::new(&options.state_dir))?;
        totals.push(total);
        for (cluster, [control_plane, flux, fixtures]) in &phases {
            let _ = writeln!(
                phase_rows,
                "| {} | {cluster} | {:.1} | {:.1} | {:.1} |",
                i + 1,
                control_plane.as_secs_f64(),
                flux.as_secs_f64(),
                fixtures.as_secs_f64()
            );
        }
        rss = started
            .processes()
            .iter()
            .map(|(_, pid)| rss_kib(*pid))
            .sum::<u64>();
        if i + 1 < options.env_starts {
            let t = Instant::now();
            drop(started);
            teardowns.push(t.elapsed());
        } else {
            env = Some(started);
        }
        eprintln!(
            "bench: environment start {}: {:.1}s",
            i + 1,
            total.as_secs_f64()
        );
    }
    let env = env.context("at least one environment start (--env-starts)")?;
    let mut rows = vec![Sample {
        label: "start both clusters, Flux and fixtures Ready".into(),
        runs: totals,
    }];
    rows.extend(gitops);
    if !teardowns.is_empty() {
        rows.push(Sample {
            label: "teardown (stop every process by pid)".into(),
            runs: teardowns,
        });
    }
    let below = format!(
        "{gitops_verdict}Resident memory of the running environment ({} processes): {:.0} MiB.\n\n| start | cluster | control plane s (from the start call) | Flux s | fixtures Ready s |\n|---|---|---|---|---|\n{phase_rows}",
        env.processes().len(),
        rss as f64 / 1024.0
    );
    let section = Section {
        number: 1,
        title: "Environment (local provider, tools already built)".into(),
        what: "measure",
        rows,
        below,
    };
    Ok((section, env, rss))
}

/// The budget of a start serving an operator's repository with its stand-ins, on 2 cores.
pub(super) const GITOPS_START_BUDGET: Duration = Duration::from_secs(180);

/// With `--gitops DIR`: `--env-starts` environment starts serving DIR with stand-in sources where
/// its sources do not answer (`auto`), then as many without any (`never`: what cannot be fetched
/// stays not Ready, and the start ends when that has settled), each stopped again. Returns the
/// rows and the verdict against [`GITOPS_START_BUDGET`].
pub(super) fn gitops_starts(options: &BenchOptions) -> Result<(Vec<Sample>, String)> {
    let Some(dir) = &options.gitops else {
        return Ok((Vec::new(), String::new()));
    };
    let shown = dir
        .strip_prefix(crate::repo_root())
        .unwrap_or(dir)
        .display();
    let mut rows = Vec::new();
    for (mode, what) in [
        (Mode::Auto, "with stand-in sources (`--standins auto`)"),
        (Mode::Never, "without stand-in sources (`--standins never`)"),
    ] {
        let mut runs = Vec::new();
        for i in 0..options.env_starts {
            let gitops = crate::gitops::GitopsOptions {
                dir: Some(dir.clone()),
                offline_standins: Some(mode),
                ..Default::default()
            };
            let timed = timed_start(ProviderOptions::new(&options.state_dir).gitops(gitops))?;
            runs.push(timed.total);
            drop(timed.env);
            eprintln!(
                "bench: environment start {} with --gitops, {what}: {:.1}s",
                i + 1,
                timed.total.as_secs_f64()
            );
        }
        rows.push(Sample {
            label: format!(
                "start both clusters serving `--gitops {shown}` {what} (Ready, or settled)"
            ),
            runs,
        });
    }
    let with = rows[0].median();
    let verdict = format!(
        "`--gitops {shown}` with stand-ins: {:.1} s (budget ≤ {} s on 2 cores: {}).\n\n",
        with.as_secs_f64(),
        GITOPS_START_BUDGET.as_secs(),
        if with <= GITOPS_START_BUDGET {
            "met"
        } else {
            "**missed**"
        }
    );
    Ok((rows, verdict))
}

/// Section 2: the acceptance scenarios serial and in parallel (each run starts its own
/// environment), through `cargo test`.
pub(super) fn suite_section() -> Result<Section> {
    let suite = |threads: Option<&str>| -> Result<()> {
        let mut args = vec![
            "test",
            "-q",
            "-p",
            "scenarios",
            "--test",
            "acceptance",
            "--",
        ];
        args.extend(threads);
        let out = duct::cmd(
            std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            &args,
        )
        .dir(crate::repo_root())
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()?;
        ensure!(
            out.status.success(),
            "the acceptance suite failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(())
    };
    let serial = sample(
        "acceptance scenarios, `--test-threads=1`",
        1,
        nothing,
        || suite(Some("--test-threads=1")),
    )?;
    let parallel = sample(
        "acceptance scenarios, parallel (default)",
        1,
        nothing,
        || suite(None),
    )?;
    Ok(Section {
        number: 2,
        title: "Scenario suite wall time (includes its environment start)".into(),
        what: "run",
        below: format!("parallel / serial: {:.2}×\n", ratio(&parallel, &serial)),
        rows: vec![serial, parallel],
    })
}
