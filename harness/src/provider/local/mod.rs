//! The `local` provider: everything as local processes on 127.0.0.1, built from upstream Go modules.
//! Per cluster: a kwokctl `binary` control plane, the Flux CRDs, the four real controllers, and the
//! fixtures reconciled Ready from the harness's own Git smart-HTTP server (`gitserver`, in this
//! process) shared by both clusters.

pub(crate) mod flux;
pub(crate) mod kwok;
mod running;

use std::fs;
use std::sync::Mutex;

use anyhow::{Context, Result};

use super::{Environment, ProviderOptions, Step};
use crate::apply;
use crate::fixtures;
use crate::gitops::Served;
use crate::gitops::gitserver::GitServer;
use crate::gitops::standins::{self, Prepared};
use crate::sys::process::PortBlock;
use crate::toolchain::{Tool, Toolchain};
use crate::topology::CLUSTERS;
use flux::FluxControllers;
use kwok::{ClusterPorts, KwokCluster};
use running::{LocalCluster, LocalRunning};

/// How many ports of 127.0.0.1 one environment takes from its port base: the git server, one block
/// per cluster, the stand-ins' registry.
pub const PORTS_PER_ENV: u16 = 2 + ClusterPorts::LEN * CLUSTERS.len() as u16;

/// Starts both clusters; on failure everything started is stopped and the error names the logs.
/// Step by step: prerequisites and the served repository (fail fast), tools, a clean state
/// directory, a port block, then [`bring_up`].
/// Each cluster's steps are announced to `options.progress`.
pub fn start(options: &ProviderOptions) -> Result<Environment> {
    let served = super::begin_start(options)?;
    let toolchain = Toolchain::from_env()?;
    toolchain.ensure_all()?;
    let state_dir = options.state_dir.clone();
    let owner = super::fresh_state_dir(
        &state_dir,
        &["clusters", "git", "pids", "kubeconfig"].map(String::from),
    )?;
    let running = LocalRunning {
        toolchain: toolchain.clone(),
        state_dir: state_dir.clone(),
        git: Mutex::new(None),
        registry: Mutex::new(None),
        clusters: Mutex::new(Vec::new()),
        ports: reserve_ports(options)?,
        _owner: owner,
    };
    let brought_up = bring_up(&running, &served, options);
    let kubectl = toolchain.binary(Tool::Kubernetes, "kubectl");
    let reach = super::Reach {
        kubectl: &kubectl,
        kubeconfig: &state_dir.join("kubeconfig"),
        label: "environment-start",
    };
    super::finish_start(running, brought_up, reach, served, toolchain, options)
}

/// The environment's port block: `--port-base` exactly (failing in one line when taken), else the
/// first free block at or above 20000.
fn reserve_ports(options: &ProviderOptions) -> Result<PortBlock> {
    match options.port_base {
        Some(base) => PortBlock::reserve(
            base,
            PORTS_PER_ENV,
            &format!(
                "stop what uses it (another `harness up`? run `cargo run -p harness -- down`) or choose other ports with --port-base / HARNESS_PORT_BASE (this environment needs {PORTS_PER_ENV} ports from {base})"
            ),
        ),
        None => PortBlock::first_free(20000, PORTS_PER_ENV),
    }
}

/// The git server, both clusters at once ([`start_cluster`]), the merged kubeconfig (also after a
/// failure: the diagnostics read the clusters through it). Returns the served repository and its
/// stand-ins.
fn bring_up(
    running: &LocalRunning,
    served: &Served,
    options: &ProviderOptions,
) -> Result<(crate::gitops::gitserver::FixturesRepo, Prepared)> {
    let state_dir = &running.state_dir;
    let base = running.ports.base;
    let (git, fixtures_repo) = GitServer::start(&state_dir.join("git"), &served.dir, base)?;
    *running.git.lock().unwrap() = Some(git);
    let prepared = standins::prepare(
        &running.toolchain,
        &served.entry_paths(),
        &fixtures_repo,
        served.standins,
        standins::Serving::At {
            registry_port: base + PORTS_PER_ENV - 1,
            state_dir,
            process: &running.registry,
        },
    )?;
    for line in prepared.report.lines() {
        eprintln!("harness: {line}");
    }
    let repo = ServedAt {
        served,
        url: fixtures_repo.url(),
        prepared: &prepared,
    };
    let first_error = start_clusters(running, repo, options)
        .into_iter()
        .find_map(Result::err);
    let kubeconfig = state_dir.join("kubeconfig");
    {
        let clusters = running.clusters.lock().unwrap();
        let refs: Vec<&KwokCluster> = clusters.iter().map(|c| &c.kwok).collect();
        fs::write(&kubeconfig, kwok::merged_kubeconfig(&refs, CLUSTERS[0]))?;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok((fixtures_repo, prepared)),
    }
}

/// Starts every cluster at once, one thread each, on its share of the port block; returns each
/// cluster's outcome.
fn start_clusters(
    running: &LocalRunning,
    repo: ServedAt<'_>,
    options: &ProviderOptions,
) -> Vec<Result<()>> {
    // kwok's stages for nodes, pods and volumes (without them, kwokctl's defaults: no volumes).
    let stages = match kwok::Stages::from_module(&running.toolchain) {
        Ok(stages) => Some(stages),
        Err(e) => {
            eprintln!(
                "harness: kwok's volume stages are not available ({e:#}): volume claims stay Pending, and StatefulSets with them not Ready"
            );
            None
        }
    };
    let stages = stages.as_ref();
    super::per_cluster(|i, name| {
        let ports = ClusterPorts {
            base: running.ports.base + 1 + i as u16 * ClusterPorts::LEN,
        };
        start_cluster(running, name, ports, repo, options, stages)
    })
}

/// The served repository and the URL Flux clones it from.
#[derive(Clone, Copy)]
struct ServedAt<'a> {
    served: &'a Served,
    url: &'a str,
    prepared: &'a Prepared,
}

/// One cluster of `running`: its control plane (kwok), Flux, the served repository; what of it
/// started is kept in `running.clusters`, whether the start succeeds or not. Each step done is
/// announced to `options.progress`.
fn start_cluster(
    running: &LocalRunning,
    name: &str,
    ports: ClusterPorts,
    repo: ServedAt,
    options: &ProviderOptions,
    stages: Option<&kwok::Stages>,
) -> Result<()> {
    let (toolchain, state_dir) = (&running.toolchain, running.state_dir.as_path());
    let dir = state_dir.join("clusters").join(name);
    let log_dir = dir.join("flux");
    let kwok = KwokCluster::create(
        toolchain,
        name,
        &dir.join("kwok"),
        ports,
        &format!(
            "{}{}",
            flux::cluster_logs_config(&log_dir)?,
            stages.map_or("", |s| s.config.as_str())
        ),
        state_dir,
    )?;
    options.progress.done(name, Step::ControlPlane);
    let rt = crate::sys::exec::runtime();
    // Whatever happens next, what runs belongs to `running`: a failed start drops or retains it
    // in one place ([`ProviderOptions::failed_start`]).
    let mut cluster = LocalCluster {
        name: name.to_string(),
        kwok,
        flux: None,
    };
    let started = (|| {
        let client = rt
            .block_on(async {
                let client = apply::client_for(cluster.kwok.kubeconfig(), name).await?;
                apply::apply_yaml(&client, fixtures::KWOK_NODE)
                    .await
                    .context("creating the kwok node")?;
                if let Some(stages) = stages {
                    apply::apply_yaml(&client, &stages.storage_class)
                        .await
                        .context("creating kwok's StorageClass")?;
                }
                flux::install(&client, toolchain).await?;
                anyhow::Ok(client)
            })
            .with_context(|| format!("installing Flux on {name}"))?;
        let flux = cluster.flux.insert(FluxControllers::start(
            toolchain,
            name,
            cluster.kwok.kubeconfig(),
            ports,
            &log_dir,
            state_dir,
        )?);
        options.progress.done(name, Step::Flux);
        let ready = rt.block_on(fixtures::bootstrap(
            &client,
            repo.served,
            name,
            repo.url,
            repo.prepared,
            options.ready_timeout,
        ));
        ready.map_err(|e| match flux.ensure_running() {
            Ok(()) => e,
            Err(died) => died.context("a Flux controller died"),
        })
    })();
    running.clusters.lock().unwrap().push(cluster);
    started?;
    options.progress.done(name, Step::Fixtures);
    Ok(())
}
