//! The `k3s` provider (`HARNESS_PROVIDER=k3s`; the harness's default cargo feature `k3s`): the
//! `infra` and `apps` clusters as two k3s containers started through testcontainers' k3s module
//! (image `rancher/k3s:<k3s pin of toolchain/versions.yaml>`), each API server published on
//! 127.0.0.1 only, Flux from its release manifest, and the fixtures served by the harness's git
//! server on the gateway of the containers' Docker network, which their pods reach.
//!
//! It needs a Docker engine that runs privileged containers (what k3s in Docker needs) and network
//! access (k3s image, Flux manifest and images). Without an engine it fails at once, before
//! anything is created. The containers carry the label [`STATE_LABEL`] = the state directory, so a
//! run that died without tearing down is cleaned up by the next start in the same directory.

use std::collections::HashMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::config::Kubeconfig;
use testcontainers_modules::k3s::{K3s, KUBE_SECURE_PORT};
use testcontainers_modules::testcontainers::bollard::Docker;
use testcontainers_modules::testcontainers::bollard::models::{HostConfig, PortBinding};
use testcontainers_modules::testcontainers::bollard::query_parameters::{
    ListContainersOptions, RemoveContainerOptions,
};
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::{Container, ImageExt};

use crate::provider::ProviderOptions;
use crate::provider::containers::{self, Common};
use crate::provider::{Environment, Faults, Running};
use crate::toolchain::{Tool, Toolchain};
use crate::topology::CLUSTERS;

/// Label on every container of this provider; its value is the environment's state directory.
pub const STATE_LABEL: &str = "io.k8s-ops.harness.state-dir";

/// The tag of the `rancher/k3s` image (testcontainers' k3s module names the image), from the
/// `k3s` pin of `toolchain/versions.yaml`.
pub fn image_tag(toolchain: &Toolchain) -> Result<String> {
    Ok(toolchain.versions().pin("k3s")?.to_string())
}

/// Runs `fut` on the harness runtime with a Docker API client (`DOCKER_HOST`, else the default
/// socket), bounded by `timeout`.
fn with_docker<T>(timeout: Duration, fut: impl AsyncFnOnce(Docker) -> Result<T>) -> Result<T> {
    crate::sys::exec::runtime().block_on(async {
        let docker = Docker::connect_with_defaults()?;
        crate::sys::exec::within(timeout, "the Docker engine's answer", fut(docker)).await
    })
}

/// Fails with one line naming the problem and the fix unless a Docker engine answers.
pub fn require_docker_engine() -> Result<()> {
    if let Err(e) = with_docker(Duration::from_secs(30), async |docker| {
        docker.ping().await?;
        Ok(())
    }) {
        let why = format!("{e:#}").replace('\n', " ");
        return Err(crate::Error::EngineMissing {
            provider: "k3s",
            needs: "a running Docker engine",
            why: format!("none answered at {} ({why})", docker_host()),
            fix: "start a Docker engine (e.g. `sudo systemctl start docker`), point DOCKER_HOST at one, or use HARNESS_PROVIDER=local".into(),
        }
        .into());
    }
    Ok(())
}

/// Where the Docker client connects: `DOCKER_HOST`, else the default socket.
fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// Publishes only the API server port, on 127.0.0.1 and a port Docker picks (testcontainers would
/// publish every exposed port on all interfaces).
pub fn publish_api_on_loopback(host: &mut HostConfig) {
    host.publish_all_ports = Some(false);
    host.port_bindings = Some(HashMap::from([(
        KUBE_SECURE_PORT.to_string(),
        Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".to_string()),
            host_port: Some(String::new()),
        }]),
    )]));
}

/// `k3s.yaml` (cluster, context and user all named `default`, server `https://127.0.0.1:6443`)
/// as the kubeconfig of `cluster`: every name `cluster`, the server on the published `port`.
pub fn cluster_kubeconfig(cluster: &str, k3s_yaml: &str, port: u16) -> Result<Kubeconfig> {
    let mut config = Kubeconfig::from_yaml(k3s_yaml).context("parsing k3s.yaml")?;
    if config.clusters.len() != 1 || config.contexts.len() != 1 || config.auth_infos.len() != 1 {
        bail!(
            "k3s.yaml of {cluster} has {} clusters, {} contexts and {} users; expected one of each",
            config.clusters.len(),
            config.contexts.len(),
            config.auth_infos.len()
        );
    }
    let named = &mut config.clusters[0];
    named.name = cluster.to_string();
    named
        .cluster
        .as_mut()
        .context("k3s.yaml has a cluster entry without a cluster")?
        .server = Some(format!("https://127.0.0.1:{port}"));
    config.auth_infos[0].name = cluster.to_string();
    let context = &mut config.contexts[0];
    context.name = cluster.to_string();
    let inner = context
        .context
        .as_mut()
        .context("k3s.yaml has a context entry without a context")?;
    inner.cluster = cluster.to_string();
    inner.user = Some(cluster.to_string());
    config.current_context = None;
    Ok(config)
}

/// One kubeconfig holding every `(cluster, k3s.yaml, published port)`, contexts named by cluster.
pub fn merged_kubeconfig(parts: &[(&str, String, u16)]) -> Result<String> {
    let mut merged = Kubeconfig::default();
    for (cluster, k3s_yaml, port) in parts {
        merged = merged.merge(cluster_kubeconfig(cluster, k3s_yaml, *port)?)?;
    }
    Ok(serde_norway::to_string(&merged)?)
}

struct K3sCluster {
    name: String,
    container: Container<K3s>,
}

struct K3sRunning {
    common: Common,
    clusters: Mutex<Vec<K3sCluster>>,
}

/// Starts both k3s containers, installs Flux and bootstraps the fixtures; on failure everything
/// started is removed again and the error names the diagnostics directory.
pub fn start(options: &ProviderOptions) -> Result<Environment> {
    let served = crate::provider::begin_start(options)?;
    require_docker_engine()?;
    let toolchain = Toolchain::from_env()?;
    toolchain.ensure(&[Tool::Kubernetes, Tool::Task, Tool::Flux])?;
    let manifest = containers::flux_manifest(&toolchain)?;
    let tag = image_tag(&toolchain)?;

    let state_dir = options.state_dir.clone();
    let owner = crate::provider::fresh_state_dir(
        &state_dir,
        &["git", "pids", "k3s-logs", "kubeconfig"]
            .into_iter()
            .map(String::from)
            .chain(CLUSTERS.iter().map(|c| format!("k3s-{c}")))
            .collect::<Vec<_>>(),
    )?;
    remove_stale_containers(&state_dir)?;

    let running = K3sRunning {
        common: Common::new(&toolchain, owner),
        clusters: Mutex::new(Vec::new()),
    };
    let started = (|| {
        for cluster in CLUSTERS {
            running.start_cluster(cluster, &tag, options.create_timeout)?;
        }
        running.write_kubeconfig()?;
        running.common.bring_up(
            running.gateway()?,
            "containers' Docker",
            &manifest,
            &served,
            options,
            &toolchain,
        )
    })();
    let label = "k3s-environment-start";
    let kubectl = running.common.kubectl.clone();
    crate::provider::containers::finish(
        running, kubectl, started, served, toolchain, options, label,
    )
}

/// Removes the containers an earlier run in `state_dir` left behind (it died without teardown).
pub fn remove_stale_containers(state_dir: &Path) -> Result<()> {
    let label = format!("{STATE_LABEL}={}", state_dir.display());
    let removed = with_docker(Duration::from_secs(120), async |docker| {
        let stale = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([("label".to_string(), vec![label])])),
                ..Default::default()
            }))
            .await?;
        let mut removed = Vec::new();
        for id in stale.into_iter().filter_map(|c| c.id) {
            docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await?;
            removed.push(id);
        }
        Ok(removed)
    })
    .context("removing the k3s containers of an earlier run")?;
    if !removed.is_empty() {
        eprintln!(
            "harness: removed {} k3s containers left by an earlier run in {}",
            removed.len(),
            state_dir.display()
        );
    }
    Ok(())
}

impl K3sRunning {
    fn conf_dir(&self, cluster: &str) -> PathBuf {
        self.common.state_dir.join(format!("k3s-{cluster}"))
    }

    /// One k3s server container (`--node-name=<cluster>`, traefik left out: Flux needs no ingress),
    /// waited for by the module's readiness line within `timeout` (image pull included).
    fn start_cluster(&self, cluster: &str, tag: &str, timeout: Duration) -> Result<()> {
        let conf = self.conf_dir(cluster);
        fs::create_dir_all(&conf)?;
        let container = K3s::default()
            .with_conf_mount(&conf)
            .with_tag(tag)
            .with_cmd([
                "server".to_string(),
                "--snapshotter=native".to_string(),
                "--disable=traefik".to_string(),
                format!("--node-name={cluster}"),
            ])
            .with_container_name(format!("k8s-ops-{cluster}-{}", std::process::id()))
            .with_label(STATE_LABEL, self.common.state_dir.display().to_string())
            .with_privileged(true)
            .with_userns_mode("host")
            .with_startup_timeout(timeout)
            .with_host_config_modifier(publish_api_on_loopback)
            .start()
            .with_context(|| {
                format!("starting the k3s container of {cluster} (rancher/k3s:{tag})")
            })?;
        self.clusters.lock().unwrap().push(K3sCluster {
            name: cluster.to_string(),
            container,
        });
        Ok(())
    }

    /// The merged kubeconfig, from each container's `k3s.yaml` and published API port.
    fn write_kubeconfig(&self) -> Result<()> {
        let clusters = self.clusters.lock().unwrap();
        let mut parts = Vec::new();
        for c in clusters.iter() {
            let port = c.container.get_host_port_ipv4(KUBE_SECURE_PORT)?;
            let yaml = crate::sys::poll::wait_for(
                &format!("{}/k3s.yaml", self.conf_dir(&c.name).display()),
                Duration::from_secs(60),
                || Ok(c.container.image().read_kube_config().ok()),
            )?;
            parts.push((c.name.as_str(), yaml, port));
        }
        fs::write(&self.common.kubectl.kubeconfig, merged_kubeconfig(&parts)?)?;
        Ok(())
    }

    /// The IPv4 gateway of the first container's Docker network (both are on the same one).
    fn gateway(&self) -> Result<Ipv4Addr> {
        let id = self.clusters.lock().unwrap()[0].container.id().to_string();
        let gateways = with_docker(Duration::from_secs(30), async |docker| {
            let inspect = docker.inspect_container(&id, None).await?;
            Ok(inspect
                .network_settings
                .and_then(|n| n.networks)
                .unwrap_or_default()
                .into_values()
                .filter_map(|e| e.gateway)
                .collect::<Vec<_>>())
        })?;
        gateways
            .iter()
            .find_map(|g| g.parse::<Ipv4Addr>().ok())
            .with_context(|| format!("container {id} has no IPv4 gateway (gateways: {gateways:?})"))
    }

    /// Each container's output into `<state>/k3s-logs/<cluster>.log`.
    fn save_logs(&self) {
        let dir = self.common.state_dir.join("k3s-logs");
        for c in self.clusters.lock().unwrap().iter() {
            let mut text = c.container.stdout_to_vec().unwrap_or_default();
            text.extend(c.container.stderr_to_vec().unwrap_or_default());
            let saved = fs::create_dir_all(&dir)
                .and_then(|()| fs::write(dir.join(format!("{}.log", c.name)), text));
            if let Err(e) = saved {
                eprintln!("harness: saving the k3s log of {}: {e}", c.name);
            }
        }
    }
}

impl Faults for K3sRunning {
    fn stop_controller(&self, cluster: &str, controller: Tool) -> Result<()> {
        self.common.kubectl.stop_controller(cluster, controller)
    }

    fn start_controller(&self, cluster: &str, controller: Tool) -> Result<()> {
        self.common.kubectl.start_controller(cluster, controller)
    }

    /// Stops the cluster's container: the API server runs inside the one k3s process, so the
    /// whole cluster stops with it (for good, as the trait says).
    fn stop_apiserver(&self, cluster: &str) -> Result<()> {
        {
            let clusters = self.clusters.lock().unwrap();
            let c = clusters
                .iter()
                .find(|c| c.name == cluster)
                .with_context(|| format!("no k3s cluster {cluster}"))?;
            c.container
                .stop()
                .with_context(|| format!("stopping the k3s container of {cluster}"))?;
        }
        self.common.kubectl.wait_api_down(cluster)
    }
}

impl Running for K3sRunning {
    fn faults(&self) -> Option<&dyn Faults> {
        Some(self)
    }

    /// Saves the containers' output first, then lists it with the git server's logs.
    fn log_paths(&self) -> Vec<PathBuf> {
        self.save_logs();
        self.common.log_paths("k3s-logs")
    }

    fn processes(&self) -> Vec<(String, u32)> {
        self.common.processes()
    }

    fn health(&self) -> Result<()> {
        self.common.health()?;
        for c in self.clusters.lock().unwrap().iter() {
            if !c.container.is_running()? {
                bail!(
                    "the k3s container of {} ({}) is not running",
                    c.name,
                    c.container.id()
                );
            }
        }
        Ok(())
    }

    /// Removes the containers this run started (by id) and stops the git server.
    fn stop(&self) {
        let clusters: Vec<K3sCluster> = self.clusters.lock().unwrap().drain(..).collect();
        for c in clusters {
            let id = c.container.id().to_string();
            if let Err(e) = c.container.rm() {
                eprintln!(
                    "harness: removing the k3s container of {} failed ({e}): remove it with `docker rm -f {id}`",
                    c.name
                );
            }
        }
        self.common.stop();
    }
}

impl Drop for K3sRunning {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
