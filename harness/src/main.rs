//! `harness up | down | status | toolchain | images | bench`: the operator's way to get the two
//! ephemeral clusters, e.g. to reproduce a `task flux:*` bug locally. This file parses the command
//! line; the handlers are in `cli/`.

mod cli;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use harness::config;
use harness::gitops::GitopsOptions;
use harness::provider::{ProviderKind, ProviderOptions};

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
        } => cli::up::up(
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
        Command::Down => cli::state::down(&cli.state_dir),
        Command::Status => cli::state::status(&cli.state_dir),
        Command::Toolchain { export, import } => cli::tools::toolchain(export, import),
        Command::Images => cli::tools::images(),
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
