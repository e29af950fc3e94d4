//! What a local environment runs: per cluster its control plane (kwok) and Flux controllers, the
//! git server and the stand-ins' registry; the fault injection on them, their health, and the
//! teardown by pid that leaves every port of the block free.

use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};

use super::flux::FluxControllers;
use super::kwok::KwokCluster;
use crate::gitops::gitserver::GitServer;
use crate::provider::{Faults, Owner, Running};
use crate::sys::process::{self, PortBlock};
use crate::toolchain::{Tool, Toolchain};

/// A cluster whose control plane runs; its Flux controllers once they started (`None`: the start
/// failed before).
pub(super) struct LocalCluster {
    pub(super) name: String,
    pub(super) kwok: KwokCluster,
    pub(super) flux: Option<FluxControllers>,
}

pub(super) struct LocalRunning {
    pub(super) toolchain: Toolchain,
    pub(super) state_dir: PathBuf,
    pub(super) git: Mutex<Option<GitServer>>,
    /// The registry serving stand-in charts (only when the repository needs one).
    pub(super) registry: Mutex<Option<process::ManagedProcess>>,
    pub(super) clusters: Mutex<Vec<LocalCluster>>,
    /// Held until the environment is gone.
    pub(super) ports: PortBlock,
    /// This process' hold on `state_dir`: dropped last, after [`Drop`] stopped everything.
    pub(super) _owner: Owner,
}

impl LocalCluster {
    pub(super) fn flux_mut(&mut self) -> Result<&mut FluxControllers> {
        let name = &self.name;
        self.flux
            .as_mut()
            .with_context(|| format!("Flux never started on {name}"))
    }
}

impl LocalRunning {
    pub(super) fn with_cluster<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut LocalCluster) -> Result<T>,
    ) -> Result<T> {
        let mut clusters = self.clusters.lock().unwrap();
        let cluster = clusters
            .iter_mut()
            .find(|c| c.name == name)
            .with_context(|| format!("no cluster {name}"))?;
        f(cluster)
    }
}

impl Faults for LocalRunning {
    fn stop_controller(&self, cluster: &str, controller: Tool) -> Result<()> {
        self.with_cluster(cluster, |c| {
            c.flux_mut()?.stop_one(controller);
            Ok(())
        })
    }

    fn start_controller(&self, cluster: &str, controller: Tool) -> Result<()> {
        self.with_cluster(cluster, |c| {
            c.flux_mut()?.start_one(&self.toolchain, controller)
        })
    }

    fn stop_apiserver(&self, cluster: &str) -> Result<()> {
        self.with_cluster(cluster, |c| {
            let pid = c
                .kwok
                .component_pid("kube-apiserver")
                .context("no kube-apiserver pid file")?;
            // kube-apiserver stops listening at once on SIGTERM but lingers; SIGKILL after 5 s.
            process::stop_pid(pid, Duration::from_secs(5))
        })
    }
}

impl Running for LocalRunning {
    fn faults(&self) -> Option<&dyn Faults> {
        Some(self)
    }

    fn log_paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.state_dir.join("git"), self.state_dir.join("registry")];
        if let Ok(dir) = fs::read_dir(self.state_dir.join("clusters")) {
            for entry in dir.flatten() {
                let cluster = entry.path();
                paths.push(cluster.join("flux"));
                paths.push(
                    cluster
                        .join("kwok")
                        .join("clusters")
                        .join(entry.file_name())
                        .join("logs"),
                );
            }
        }
        paths.retain(|p| p.exists());
        paths
    }

    /// The git server is no process of its own (a thread of this one): not listed.
    fn processes(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for c in self.clusters.lock().unwrap().iter() {
            for component in [
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kwok-controller",
            ] {
                if let Some(pid) = c.kwok.component_pid(component) {
                    out.push((format!("{}-{component}", c.name), pid));
                }
            }
            out.extend(
                c.flux
                    .iter()
                    .flat_map(|f| f.describe())
                    .map(|(n, pid, _)| (n, pid)),
            );
        }
        if let Some(registry) = self.registry.lock().unwrap().as_ref() {
            out.push(("registry".to_string(), registry.pid()));
        }
        out
    }

    fn health(&self) -> Result<()> {
        if let Some(git) = self.git.lock().unwrap().as_ref() {
            git.ensure_running()?;
        }
        if let Some(registry) = self.registry.lock().unwrap().as_mut() {
            registry.ensure_running()?;
        }
        for c in self.clusters.lock().unwrap().iter_mut() {
            c.kwok.ensure_running()?;
            if let Some(flux) = c.flux.as_mut() {
                flux.ensure_running()?;
            }
        }
        Ok(())
    }

    fn stop(&self) {
        // Both clusters at once: each stops its Flux controllers, then its control plane in order.
        let clusters: Vec<LocalCluster> = self.clusters.lock().unwrap().drain(..).collect();
        std::thread::scope(|scope| {
            for mut c in clusters {
                scope.spawn(move || {
                    if let Some(flux) = c.flux.as_mut() {
                        flux.stop();
                    }
                    c.kwok.stop();
                });
            }
        });
        if let Some(mut git) = self.git.lock().unwrap().take() {
            git.stop();
        }
        if let Some(mut registry) = self.registry.lock().unwrap().take() {
            registry.stop(Duration::from_secs(5));
        }
        process::reap_stale(&self.state_dir);
        // A killed Go process can still hold its sockets for a moment after its pid looks gone
        // (other threads still exiting): return only once every port is free again (bounded).
        let _ = crate::sys::poll::wait_for(
            "the environment's ports to be free",
            Duration::from_secs(15),
            || {
                Ok(self
                    .ports
                    .range()
                    .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
                    .then_some(()))
            },
        );
    }
}

impl Drop for LocalRunning {
    fn drop(&mut self) {
        self.stop();
    }
}
