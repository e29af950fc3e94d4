//! `harness bench`: side-by-side timings in one run (ratios matter, not absolute times), written as
//! a markdown table to `docs/benchmarks.md`. Never used as an assertion in a test.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::gitops::standins::Mode;
use crate::provider::ProviderOptions;
use crate::provider::local;
use crate::task_runner::TaskRunner;
use crate::toolchain::{Tool, Toolchain};

/// Repeated timings of one command.
#[derive(Debug, Clone)]
pub struct Sample {
    pub label: String,
    pub runs: Vec<Duration>,
}

impl Sample {
    pub fn median(&self) -> Duration {
        let mut v = self.runs.clone();
        v.sort();
        v[v.len() / 2]
    }

    fn min(&self) -> Duration {
        *self.runs.iter().min().expect("at least one run")
    }

    fn max(&self) -> Duration {
        *self.runs.iter().max().expect("at least one run")
    }

    fn row(&self) -> String {
        format!(
            "| {} | {} | {:.3} | {:.3} – {:.3} |",
            self.label,
            self.runs.len(),
            self.median().as_secs_f64(),
            self.min().as_secs_f64(),
            self.max().as_secs_f64()
        )
    }
}

/// Times `n` runs of `timed`, each preceded by an untimed `setup`.
fn sample(
    label: &str,
    n: usize,
    mut setup: impl FnMut() -> Result<()>,
    mut timed: impl FnMut() -> Result<()>,
) -> Result<Sample> {
    let mut runs = Vec::with_capacity(n);
    for _ in 0..n {
        setup()?;
        let t = Instant::now();
        timed()?;
        runs.push(t.elapsed());
    }
    eprintln!(
        "bench: {label}: median {:.3}s",
        Sample {
            label: label.into(),
            runs: runs.clone()
        }
        .median()
        .as_secs_f64()
    );
    Ok(Sample {
        label: label.to_string(),
        runs,
    })
}

/// `## title` and a markdown table of `samples`, first column headed `what`.
fn table(title: &str, what: &str, samples: &[&Sample]) -> String {
    let mut text =
        format!("## {title}\n\n| {what} | runs | median s | min – max s |\n|---|---|---|---|\n");
    for s in samples {
        text += &s.row();
        text.push('\n');
    }
    text
}

fn ratio(a: &Sample, b: &Sample) -> f64 {
    a.median().as_secs_f64() / b.median().as_secs_f64()
}

fn verdict(value: f64, goal: f64) -> String {
    if value <= goal {
        format!("{value:.2}× (goal ≤ {goal}×: met)")
    } else {
        format!("{value:.2}× (goal ≤ {goal}×: **missed**)")
    }
}

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

/// One section of the report: a numbered title, a table of samples, and what stands below it.
struct Section {
    number: u8,
    title: String,
    /// The heading of the table's first column.
    what: &'static str,
    rows: Vec<Sample>,
    /// Markdown below the table: verdicts, notes, further tables.
    below: String,
}

impl Section {
    fn render(&self) -> String {
        let rows: Vec<&Sample> = self.rows.iter().collect();
        format!(
            "{}\n{}\n",
            table(
                &format!("{}. {}", self.number, self.title),
                self.what,
                &rows
            ),
            self.below
        )
    }
}

/// What the command sections share: the running environment's task runner, a flux runner and the
/// repetitions.
struct Bench<'a> {
    env: &'a crate::provider::Environment,
    task: TaskRunner,
    flux_bin: PathBuf,
    reps: usize,
}

impl Bench<'_> {
    /// One flux command line (words split on white space) against the environment.
    fn flux(&self, line: &str) -> Result<()> {
        let args: Vec<&str> = line.split_whitespace().collect();
        let out = duct::cmd(&self.flux_bin, &args)
            .env("KUBECONFIG", self.env.kubeconfig())
            .stdout_null()
            .stderr_capture()
            .unchecked()
            .run()?;
        ensure!(
            out.status.success(),
            "flux {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn task(&self, args: &[&str]) -> Result<()> {
        run_task(&self.task, args)
    }

    /// Runs `flux <verb> <kind> odoo -n <namespace> --context apps <extra>` for each object the
    /// task acts on, in `ODOO`'s order or reversed: the raw commands doing the task's work.
    fn flux_odoo(&self, verb: &str, extra: &str, reversed: bool) -> Result<()> {
        let mut objects = ODOO.to_vec();
        if reversed {
            objects.reverse();
        }
        for (kind, namespace) in objects {
            self.flux(&format!(
                "{verb} {kind} odoo -n {namespace} --context apps {extra}"
            ))?;
        }
        Ok(())
    }

    /// Undoes a suspend of odoo without waiting (the setup of every suspend sample).
    fn resume_raw(&self) -> Result<()> {
        self.flux_odoo("resume", "--wait=false", true)
    }

    /// Suspends odoo with the raw commands (the setup of every resume sample).
    fn suspend_raw(&self) -> Result<()> {
        self.flux_odoo("suspend", "", false)
    }
}

/// The objects `task flux:* APP=odoo CLUSTER=apps` acts on: (flux kind, namespace), Kustomization
/// first as suspend and reconcile go.
const ODOO: [(&str, &str); 2] = [("ks", "flux-system"), ("hr", "business")];

fn run_task(runner: &TaskRunner, args: &[&str]) -> Result<()> {
    let out = runner.run(args)?;
    ensure!(out.success(), "{}", out.transcript());
    Ok(())
}

fn nothing() -> Result<()> {
    Ok(())
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

/// Section 1: environment starts (first those serving `--gitops`, each stopped), their phases,
/// memory and teardown. Returns the section, the last environment (kept running for the command
/// sections) and its resident memory in KiB.
fn environment_section(
    options: &BenchOptions,
) -> Result<(Section, crate::provider::Environment, u64)> {
    let (gitops, gitops_verdict) = gitops_starts(options)?;
    let mut totals = Vec::new();
    let mut teardowns = Vec::new();
    let mut phase_rows = String::new();
    let mut rss = 0;
    let mut env = None;
    for i in 0..options.env_starts {
        let (started, report) = local::start(&ProviderOptions::new(&options.state_dir))?;
        totals.push(report.total);
        for (cluster, p) in &report.phases {
            let _ = writeln!(
                phase_rows,
                "| {} | {cluster} | {:.1} | {:.1} | {:.1} |",
                i + 1,
                p.control_plane.as_secs_f64(),
                p.flux.as_secs_f64(),
                p.fixtures.as_secs_f64()
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
            report.total.as_secs_f64()
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
        "{gitops_verdict}Resident memory of the running environment ({} processes): {:.0} MiB.\n\n| start | cluster | control plane s | Flux s | fixtures Ready s |\n|---|---|---|---|---|\n{phase_rows}",
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
const GITOPS_START_BUDGET: Duration = Duration::from_secs(180);

/// With `--gitops DIR`: `--env-starts` environment starts serving DIR with stand-in sources where
/// its sources do not answer (`auto`), then as many without any (`never`: what cannot be fetched
/// stays not Ready, and the start ends when that has settled), each stopped again. Returns the
/// rows and the verdict against [`GITOPS_START_BUDGET`].
fn gitops_starts(options: &BenchOptions) -> Result<(Vec<Sample>, String)> {
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
            let (started, report) =
                local::start(&ProviderOptions::new(&options.state_dir).gitops(gitops))?;
            runs.push(report.total);
            drop(started);
            eprintln!(
                "bench: environment start {} with --gitops, {what}: {:.1}s",
                i + 1,
                report.total.as_secs_f64()
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
fn suite_section() -> Result<Section> {
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

/// Section 3: `task --list` without a kubeconfig against `task --version`.
fn listing_section(bench: &Bench) -> Result<Section> {
    let bare = bench.task.clone().env("KUBECONFIG", "/nonexistent");
    let version = sample("`task --version`", bench.reps, nothing, || {
        run_task(&bare, &["--version"])
    })?;
    let list = sample(
        "`task --list` (KUBECONFIG=/nonexistent)",
        bench.reps,
        nothing,
        || run_task(&bare, &["--list"]),
    )?;
    Ok(Section {
        number: 3,
        title: "Listing tasks needs no cluster".into(),
        what: "command",
        below: format!(
            "`--list` / `--version`: {}\n",
            verdict(ratio(&list, &version), 1.3)
        ),
        rows: vec![version, list],
    })
}

/// Section 4: `task flux:suspend` / `resume` / `reconcile` against raw flux: against the one raw
/// command an operator who knows the namespace types for the HelmRelease, and against the raw
/// commands doing the task's whole work (Kustomization and HelmRelease). The goals are judged on
/// the second: the same work with and without the task.
fn overhead_section(bench: &Bench) -> Result<Section> {
    let suspend = overhead_rows(
        bench.reps,
        [
            "raw `flux suspend hr odoo -n business --context apps`",
            "raw `flux suspend ks` + `flux suspend hr` (the task's work)",
            "`task flux:suspend APP=odoo CLUSTER=apps` (resolves, suspends ks + hr with the record, verifies)",
        ],
        &|| bench.resume_raw(),
        [
            &|| bench.flux("suspend hr odoo -n business --context apps"),
            &|| bench.flux_odoo("suspend", "", false),
            &|| bench.task(&["flux:suspend", "APP=odoo", "CLUSTER=apps"]),
        ],
    )?;
    let resume = overhead_rows(
        bench.reps,
        [
            "raw `flux resume hr odoo -n business --context apps --wait=false`",
            "raw `flux resume hr` + `flux resume ks`, `--wait=false` (the task's work)",
            "`task flux:resume APP=odoo CLUSTER=apps WAIT=false` (resolves, removes the record and resumes hr + ks, verifies)",
        ],
        &|| bench.suspend_raw(),
        [
            &|| bench.flux("resume hr odoo -n business --context apps --wait=false"),
            &|| bench.flux_odoo("resume", "--wait=false", true),
            &|| bench.task(&["flux:resume", "APP=odoo", "CLUSTER=apps", "WAIT=false"]),
        ],
    )?;
    bench.task(&["flux:resume", "APP=odoo", "CLUSTER=apps"])?;
    let reconcile = overhead_rows(
        bench.reps.clamp(1, 3),
        [
            "raw `flux reconcile hr odoo -n business --with-source --context apps`",
            "raw `flux reconcile ks` + `flux reconcile hr`, `--with-source` (the task's work)",
            "`task flux:reconcile APP=odoo CLUSTER=apps` (ks + hr, with sources)",
        ],
        &nothing,
        [
            &|| bench.flux("reconcile hr odoo -n business --with-source --context apps"),
            &|| bench.flux_odoo("reconcile", "--with-source", false),
            &|| bench.task(&["flux:reconcile", "APP=odoo", "CLUSTER=apps"]),
        ],
    )?;
    let judge = |[one, work, task]: &[Sample; 3], goal: f64| {
        format!(
            "{} against the same work raw; {:.2}× the one raw command",
            verdict(ratio(task, work), goal),
            ratio(task, one)
        )
    };
    Ok(Section {
        number: 4,
        title: "Toolkit overhead against raw flux".into(),
        what: "command",
        below: format!(
            "suspend: {}. resume: {}. reconcile: {}. Besides the raw commands' work the task finds the namespace, writes or removes the suspend record and reads the state back. Against the one raw command the sub-second tasks pay for process starts (task, bash, one kubectl list before the patch: about 0.1–0.2 s), which is most of their cost at this size.\n",
            judge(&suspend, 3.0),
            judge(&resume, 3.0),
            judge(&reconcile, 1.5),
        ),
        rows: suspend.into_iter().chain(resume).chain(reconcile).collect(),
    })
}

/// Three samples of one task against raw flux, each run after `setup`: the one raw command, the
/// raw commands doing the task's work, the task (`timed`, in that order, labelled by `labels`).
fn overhead_rows(
    reps: usize,
    labels: [&str; 3],
    setup: &dyn Fn() -> Result<()>,
    timed: [&dyn Fn() -> Result<()>; 3],
) -> Result<[Sample; 3]> {
    let [one, work, task] = timed;
    Ok([
        sample(labels[0], reps, setup, one)?,
        sample(labels[1], reps, setup, work)?,
        sample(labels[2], reps, setup, task)?,
    ])
}

/// Section 5: `task flux:suspend APP=odoo` with more and more extra objects on the cluster; `None`
/// without `--scale`.
fn scale_section(bench: &Bench, scale: &[usize]) -> Result<Option<Section>> {
    let rt = crate::sys::exec::runtime();
    let client = rt.block_on(bench.env.client("apps"))?;
    let mut rows = Vec::new();
    let mut created = 0;
    for &extra in scale {
        rt.block_on(create_extra(&client, created, extra))?;
        created = extra;
        rows.push(sample(
            &format!("{extra} extra HelmReleases + {extra} Kustomizations"),
            bench.reps,
            || bench.resume_raw(),
            || bench.task(&["flux:suspend", "APP=odoo", "CLUSTER=apps"]),
        )?);
    }
    bench.task(&["flux:resume", "APP=odoo", "CLUSTER=apps"])?;
    rt.block_on(delete_extra(&client, created))?;
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    let below = format!("largest / smallest: {}\n", verdict(ratio(last, first), 1.2));
    Ok(Some(Section {
        number: 5,
        title: "APP resolution at scale (`task flux:suspend APP=odoo CLUSTER=apps`, extra objects over ≤ 100 namespaces)".into(),
        what: "cluster holds",
        rows,
        below,
    }))
}

/// Section 6: `task flux:status CLUSTER=all` against each cluster alone.
fn both_clusters_section(bench: &Bench) -> Result<Section> {
    let status = |cluster: &str| {
        sample(
            &format!("`task flux:status CLUSTER={cluster}`"),
            bench.reps,
            nothing,
            || bench.task(&["flux:status", &format!("CLUSTER={cluster}")]),
        )
    };
    let infra = status("infra")?;
    let apps = status("apps")?;
    let all = status("all")?;
    let slowest = if infra.median() > apps.median() {
        &infra
    } else {
        &apps
    };
    Ok(Section {
        number: 6,
        title: "Both clusters at once".into(),
        what: "command",
        below: format!(
            "all / slowest single: {}\n",
            verdict(ratio(&all, slowest), 1.2)
        ),
        rows: vec![infra, apps, all],
    })
}

/// Section 7, the kind provider beside the local environment (still running): image build (cold when
/// asked, then cached), both kind clusters with Flux and the fixtures Ready, memory of both
/// environments at once, teardown.
fn kind_section(
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
fn time_kind_starts(
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

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Suspended (so no controller works on them) HelmReleases and Kustomizations `bench-<i>` spread
/// over at most 100 namespaces, from index `from` up to `to`.
async fn create_extra(client: &kube::Client, from: usize, to: usize) -> Result<()> {
    let mut yaml = String::new();
    for ns in (from..to)
        .map(|i| i % 100)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench-{ns:03}\n"
        );
    }
    for i in from..to {
        let ns = i % 100;
        let _ = write!(
            yaml,
            "---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: bench-{i}\n  namespace: bench-{ns:03}\nspec:\n  suspend: true\n  interval: 1h\n  chartRef:\n    kind: HelmChart\n    name: none\n    namespace: flux-system\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: bench-{i}\n  namespace: bench-{ns:03}\nspec:\n  suspend: true\n  interval: 1h\n  prune: false\n  path: ./none\n  sourceRef:\n    kind: GitRepository\n    name: none\n"
        );
    }
    crate::apply::apply_yaml(client, &yaml).await?;
    Ok(())
}

async fn delete_extra(client: &kube::Client, created: usize) -> Result<()> {
    use kube::api::{Api, DeleteParams};
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for ns in 0..created.min(100) {
        let _ = namespaces
            .delete(&format!("bench-{ns:03}"), &DeleteParams::default())
            .await;
    }
    Ok(())
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
