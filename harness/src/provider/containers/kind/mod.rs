//! The `kind` provider (`HARNESS_PROVIDER=kind`): the `infra` and `apps` clusters as kind clusters
//! (`kind-configs/<cluster>.yaml`, one control-plane node each, API servers on 127.0.0.1), Flux from
//! its release manifest, and the fixtures served by the harness's git server on the gateway of the
//! `kind` Docker network, the one address both the host and the kind nodes reach.
//!
//! It needs a Docker engine and network access (node image, Flux manifest and images). It is the
//! provider of the nightly workflow; it cannot run on machines without a Docker engine, where it
//! fails at once, before anything is created.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::provider::Environment;
use crate::provider::ProviderOptions;
use crate::provider::containers::Common;
use crate::provider::containers::engine::Engine;
use crate::provider::containers::images::KindImages;
use crate::sys::exec::run;
use crate::toolchain::{Tool, Toolchain};
use crate::topology::CLUSTERS;

pub use crate::provider::containers::flux_manifest;
pub use running::remove_stale_clusters;

mod running;

use running::KindRunning;

/// `kind-configs/<cluster>.yaml` of this checkout.
pub fn config_path(cluster: &str) -> PathBuf {
    crate::repo_root()
        .join("kind-configs")
        .join(format!("{cluster}.yaml"))
}

/// Where the kind provider's images come from: `HARNESS_KIND_IMAGES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSource {
    /// Every image built on this machine (`harness/src/provider/containers/images.rs`); no registry needed. The default.
    Local,
    /// The node image of `kind-configs/` and Flux's release manifest and images, pulled from their
    /// registries (where registries are reachable, e.g. GitHub's runners).
    Upstream,
}

impl ImageSource {
    pub fn from_env() -> Result<Self> {
        match crate::config::get().kind_images.as_deref().unwrap_or("") {
            "" | "local" => Ok(Self::Local),
            "upstream" => Ok(Self::Upstream),
            other => bail!(
                "HARNESS_KIND_IMAGES={other} is unknown: use local (build every image here) or upstream (pull from registries)"
            ),
        }
    }
}

/// The IPv4 gateway of the `kind` Docker network (created by the first `kind create cluster`).
fn kind_network_gateway() -> Result<Ipv4Addr> {
    let out = run(
        "docker network inspect kind",
        duct::cmd!(
            "docker",
            "network",
            "inspect",
            "kind",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}"
        ),
        Duration::from_secs(30),
    )?;
    // kind's network is dual-stack: the IPv4 entry is usually, not always, the first.
    out.split_whitespace()
        .find_map(|g| g.parse::<Ipv4Addr>().ok())
        .with_context(|| {
            format!("the `kind` Docker network has no IPv4 gateway (gateways: {out:?}): recreate it with `docker network rm kind` once no kind cluster uses it")
        })
}

/// Creates both kind clusters, installs Flux and bootstraps the fixtures; on failure everything
/// created is deleted again and the error names the diagnostics directory.
pub fn start(options: &ProviderOptions) -> Result<Environment> {
    let served = crate::provider::begin_start(options)?;
    let source = ImageSource::from_env()?;
    let state_dir = options.state_dir.clone();
    // A crashed run's own Docker engine is stopped first, so that it is not taken for a foreign
    // one. A state directory that does not exist holds nothing to stop, and is created only once
    // an engine answers: a start that fails on the engine leaves nothing behind.
    let early = match state_dir.exists() {
        true => Some(crate::provider::claim_and_reap(&state_dir)?),
        false => None,
    };
    // Then the engine, still before anything is built (writes the state directory only when it
    // starts one).
    let engine = Engine::ensure(&state_dir)?;
    let toolchain = Toolchain::from_env()?;
    toolchain.ensure(&[Tool::Kind, Tool::Kubernetes, Tool::Task, Tool::Flux])?;
    let images = images(source, &toolchain, &engine)?;
    // Nothing to reap in a directory that did not exist (and a dockerd just started here is ours);
    // taken only now, so that a start that fails on the engine or the images creates nothing.
    let owner = match early {
        Some(owner) => owner,
        None => crate::provider::Owner::claim(&state_dir)?,
    };
    let stale = remove_stale_clusters(&state_dir)?;
    if !stale.is_empty() {
        eprintln!(
            "harness: deleted kind clusters left by an earlier run: {}",
            stale.join(", ")
        );
    }
    crate::provider::clear_entries(
        &state_dir,
        &["git", "kind-logs", "kubeconfig"]
            .into_iter()
            .map(String::from)
            .chain(CLUSTERS.iter().map(|c| format!("kind-{c}.kubeconfig")))
            .chain(CLUSTERS.iter().map(|c| format!("kind-{c}.yaml")))
            .collect::<Vec<_>>(),
    )?;
    let kind = toolchain.binary(Tool::Kind, "kind");
    refuse_foreign_clusters(&kind)?;

    let running = KindRunning {
        kind,
        common: Common::new(&toolchain, owner),
        created: Mutex::new(Vec::new()),
        engine,
    };
    let manifest = images.flux_manifest.to_string_lossy().into_owned();
    let started = (|| {
        // Both recorded first: a create that fails half-way leaves containers to delete.
        running.record_created(&CLUSTERS)?;
        crate::provider::each_cluster(|cluster| {
            running.create_cluster(cluster, &images, options.create_timeout)
        })?;
        running.merge_kubeconfigs()?;
        running.common.bring_up(
            kind_network_gateway()?,
            "`kind` Docker",
            &manifest,
            &served,
            options,
            &toolchain,
        )
    })();
    let label = "kind-environment-start";
    let kubectl = running.common.kubectl.clone();
    crate::provider::containers::finish(
        running, kubectl, started, served, toolchain, options, label,
    )
}

/// The node image, the images to load and the Flux manifest: built here (`local`), or upstream's
/// with only the fixture app built here.
fn images(source: ImageSource, toolchain: &Toolchain, engine: &Engine) -> Result<KindImages> {
    match source {
        ImageSource::Local => {
            crate::provider::containers::images::ensure_kind_images(toolchain, engine)
        }
        ImageSource::Upstream => {
            let fixture_app = crate::provider::containers::images::ensure_fixture_app(toolchain)?;
            engine.ensure_privileged(&fixture_app)?;
            Ok(KindImages {
                node: String::new(),
                load: vec![fixture_app],
                flux_manifest: PathBuf::from(flux_manifest(toolchain)?),
                kubeadm_patches: Vec::new(),
            })
        }
    }
}

/// Fails when a kind cluster named like one of ours exists that this state directory did not
/// create: the harness only ever deletes its own clusters.
fn refuse_foreign_clusters(kind: &Path) -> Result<()> {
    let existing = run(
        "kind get clusters",
        duct::cmd!(kind, "get", "clusters"),
        Duration::from_secs(60),
    )?;
    if let Some(taken) = CLUSTERS
        .iter()
        .find(|c| existing.lines().any(|l| l.trim() == **c))
    {
        bail!(
            "a kind cluster named {taken} already exists (not created by this state directory): delete it with `kind delete cluster --name {taken}` and rerun"
        );
    }
    Ok(())
}

/// `kind-configs/<cluster>.yaml`, with the locally built node image and kubeadm patches when the
/// images are local (`images.node` not empty).
pub fn cluster_config(cluster: &str, images: &KindImages) -> Result<String> {
    let path = config_path(cluster);
    let mut config: serde_norway::Value = serde_norway::from_str(&fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not YAML", path.display()))?;
    if !images.node.is_empty() {
        for node in config["nodes"].as_sequence_mut().into_iter().flatten() {
            node["image"] = images.node.clone().into();
        }
        let mut patches = config["kubeadmConfigPatches"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        patches.extend(images.kubeadm_patches.iter().map(|p| p.clone().into()));
        config["kubeadmConfigPatches"] = patches.into();
    }
    Ok(serde_norway::to_string(&config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(node: &str) -> KindImages {
        KindImages {
            node: node.to_string(),
            load: Vec::new(),
            flux_manifest: PathBuf::new(),
            kubeadm_patches: vec![
                "kind: ClusterConfiguration\nimageRepository: k8s-ops.local\n".into(),
            ],
        }
    }

    /// Local images: every node runs the local node image and kubeadm gets the image patch after
    /// the config's own patches; upstream images: the config as written.
    #[test]
    fn the_generated_config_points_kind_at_the_local_images_only_when_they_are_local() {
        for cluster in CLUSTERS {
            let written: serde_norway::Value =
                serde_norway::from_str(&fs::read_to_string(config_path(cluster)).unwrap()).unwrap();
            let local: serde_norway::Value = serde_norway::from_str(
                &cluster_config(cluster, &images("k8s-ops.local/kind-node:v1")).unwrap(),
            )
            .unwrap();
            assert_eq!(local["nodes"][0]["image"], "k8s-ops.local/kind-node:v1");
            let patches = local["kubeadmConfigPatches"].as_sequence().unwrap();
            let own = written["kubeadmConfigPatches"].as_sequence().unwrap();
            assert_eq!(&patches[..own.len()], own.as_slice());
            assert!(
                patches[own.len()]
                    .as_str()
                    .unwrap()
                    .contains("imageRepository: k8s-ops.local")
            );
            assert_eq!(local["networking"], written["networking"]);
            let upstream: serde_norway::Value =
                serde_norway::from_str(&cluster_config(cluster, &images("")).unwrap()).unwrap();
            assert_eq!(upstream, written);
        }
    }
}
