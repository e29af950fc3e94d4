//! `harness bench`: side-by-side timings in one run (ratios matter, not absolute times), written as
//! a markdown table to `docs/benchmarks.md`. Never used as an assertion in a test.

//!
//! Here: [`run`] (the sections in order, the report's header) and the options; `report`: one
//! sample, its table row and the goals' verdicts; `environment`: environment starts and the
//! scenario suite; `tasks`: the tasks against raw flux, at scale, on both clusters; `kind`:
//! the kind provider beside the local one.

mod environment;
mod kind;
mod report;
mod tasks;

pub use report::Sample;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::toolchain::{Tool, Toolchain};
use environment::{environment_section, suite_section};
use kind::kind_section;
use tasks::{Bench, both_clusters_section, listing_section, overhead_section, scale_section};

/// Options of a benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Environment starts to time.
    pub env_starts: usize,
    /// Repetitions of each command.
    pub reps: usize,
    /// Extra HelmRelease/Kustomization counts for the APP-resolution scale test.
    pub scale: Vec<usize>,
    /// Also time the scenario suite serial vs parallel (runs `cargo test`).
    pub suite: bool,
    /// Also time the kind provider (images, environment start, teardown) while the local
    /// environment runs; `Some(true)` rebuilds every image from the cached tools first (cold).
    pub kind: Option<bool>,
    /// Also time environment starts serving this GitOps checkout (`harness up --gitops`), in the
    /// same run as the fixtures' starts.
    pub gitops: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub output: PathBuf,
}

/// Runs every benchmark and writes the markdown report, its sections in order; returns it.
pub fn run(options: &BenchOptions) -> Result<String> {
    let toolchain = Toolchain::from_env()?;
    toolchain.ensure_all()?;
    let (environment, env, rss) = environment_section(options)?;
    let bench = Bench {
        env: &env,
        task: env.task().timeout(Duration::from_secs(300)),
        flux_bin: toolchain.binary(Tool::Flux, "flux"),
        reps: options.reps,
    };
    let mut sections = vec![
        environment,
        listing_section(&bench)?,
        overhead_section(&bench)?,
    ];
    sections.extend(scale_section(&bench, &options.scale)?);
    sections.push(both_clusters_section(&bench)?);
    drop(env);
    if options.suite {
        sections.push(suite_section()?);
    }
    let mut md = header(&toolchain, options)?;
    sections.sort_by_key(|s| s.number);
    for section in &sections {
        md += &section.render();
    }
    match options.kind {
        Some(cold) => md += &kind_section(&toolchain, options, cold, rss)?,
        None => md += "The `kind` provider is not timed in this run (`--kind`).\n",
    }
    md += "`k3s` is not timed: it cannot run here (k3s cannot be built from a served module and its image cannot be pulled).\n";
    std::fs::write(&options.output, &md)
        .with_context(|| format!("writing {}", options.output.display()))?;
    Ok(md)
}

/// The command line that reproduces this run.
fn command_line(options: &BenchOptions) -> String {
    let scale: Vec<String> = options.scale.iter().map(usize::to_string).collect();
    let mut line = format!(
        "cargo run -p harness -- bench --env-starts {} --reps {} --scale {}",
        options.env_starts,
        options.reps,
        scale.join(",")
    );
    if !options.suite {
        line += " --no-suite";
    }
    match options.kind {
        Some(true) => line += " --kind --kind-cold",
        Some(false) => line += " --kind",
        None => {}
    }
    if let Some(dir) = &options.gitops {
        let dir = dir.strip_prefix(crate::repo_root()).unwrap_or(dir);
        line += &format!(" --gitops {}", dir.display());
    }
    line
}

fn header(toolchain: &Toolchain, options: &BenchOptions) -> Result<String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let versions = Tool::ALL
        .iter()
        .map(|t| format!("{} {}", t.key(), toolchain.versions().get(*t)))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!(
        "# Benchmarks\n\nWritten by `{}` on {} — machine: {cpu}, {cores} cores, {:.0} GiB; {versions}.\nMedians of repeated runs with their spread; every comparison is made in the same run, so read the ratios, not the absolute times.\n\n",
        command_line(options),
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        mem_kib as f64 / 1024.0 / 1024.0
    ))
}

/// Resident memory of `pid` in KiB (0 when it is gone).
pub(super) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Default output path.
pub fn default_output() -> PathBuf {
    crate::repo_root().join("docs").join("benchmarks.md")
}

/// State dir of benchmark environments.
pub fn default_state_dir() -> PathBuf {
    crate::repo_root()
        .join("target")
        .join("harness")
        .join("bench")
}
