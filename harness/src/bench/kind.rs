//! The kind provider beside the running local environment: image build (cold when asked), starts,
//! memory, teardown.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::report::{Sample, table};
use super::{BenchOptions, rss_kib};
use crate::provider::ProviderOptions;
use crate::toolchain::Toolchain;

/// Section 7, the kind provider beside the local environment (still running): image build (cold when
/// asked, then cached), both kind clusters with Flux and the fixtures Ready, memory of both
/// environments at once, teardown.
pub(super) fn kind_section(
    toolchain: &Toolchain,
    options: &BenchOptions,
    cold: bool,
    local_rss_kib: u64,
) -> Result<String> {
    use crate::sys::exec::run;
    let state_dir = options.state_dir.with_file_name("bench-kind");
    let engine = crate::provider::containers::engine::Engine::ensure(&state_dir)?;
    let mut rows = Vec::new();
    if cold {
        let listed = run(
            "docker images",
            duct::cmd!("docker", "images", "--format", "{{.Repository}}:{{.Tag}}"),
            Duration::from_secs(60),
        )?;
        let ours: Vec<&str> = listed
            .lines()
            .filter(|l| l.starts_with(crate::provider::containers::images::REPOSITORY))
            .collect();
        if !ours.is_empty() {
            let mut args = vec!["rmi", "--force"];
            args.extend(&ours);
            run(
                "docker rmi",
                duct::cmd("docker", args),
                Duration::from_secs(300),
            )?;
        }
        let _ = std::fs::remove_dir_all(toolchain.cache_root().join("images"));
        let t = Instant::now();
        crate::provider::containers::images::ensure_kind_images(toolchain, &engine)?;
        rows.push(Sample {
            label: "build every kind image, cold (tools already built)".into(),
            runs: vec![t.elapsed()],
        });
    }
    let t = Instant::now();
    crate::provider::containers::images::ensure_kind_images(toolchain, &engine)?;
    rows.push(Sample {
        label: "kind images, cached (checks only)".into(),
        runs: vec![t.elapsed()],
    });
    drop(engine);
    let (starts, teardowns, memory) = time_kind_starts(options, &state_dir, local_rss_kib)?;
    rows.push(Sample {
        label: "start both kind clusters, Flux and fixtures Ready (images cached)".into(),
        runs: starts,
    });
    rows.push(Sample {
        label: "teardown (delete both clusters, stop the engine)".into(),
        runs: teardowns,
    });
    let refs: Vec<&Sample> = rows.iter().collect();
    Ok(format!(
        "{}\n{memory}\n",
        table(
            "7. kind provider (every image built here)",
            "measure",
            &refs
        )
    ))
}

/// `--env-starts` kind environment starts and teardowns, and the memory line of the last one.
pub(super) fn time_kind_starts(
    options: &BenchOptions,
    state_dir: &std::path::Path,
    local_rss_kib: u64,
) -> Result<(Vec<Duration>, Vec<Duration>, String)> {
    use crate::sys::exec::run;
    let mut starts = Vec::new();
    let mut teardowns = Vec::new();
    let mut memory = String::new();
    for i in 0..options.env_starts.max(1) {
        let t = Instant::now();
        let env = crate::provider::containers::kind::start(&ProviderOptions::new(state_dir))?;
        starts.push(t.elapsed());
        eprintln!("bench: kind start {}: {:.1?}", i + 1, t.elapsed());
        let stats = run(
            "docker stats",
            duct::cmd!(
                "docker",
                "stats",
                "--no-stream",
                "--format",
                "{{.Name}} {{.MemUsage}}"
            ),
            Duration::from_secs(60),
        )?;
        let harness_rss: u64 = env.processes().iter().map(|(_, pid)| rss_kib(*pid)).sum();
        memory = format!(
            "Memory with both environments up: local {:.0} MiB (its processes), kind: {} (node containers, `docker stats`), plus {:.0} MiB of harness-started processes (dockerd; the git server is a thread of the harness).\n",
            local_rss_kib as f64 / 1024.0,
            stats.lines().collect::<Vec<_>>().join(", "),
            harness_rss as f64 / 1024.0
        );
        let t = Instant::now();
        drop(env);
        teardowns.push(t.elapsed());
    }
    Ok((starts, teardowns, memory))
}
