//! The gatus/odoo fixtures: what `fixtures/gitops` deploys on each cluster, how a cluster is pointed
//! at it (GitRepository + root Kustomization `flux-system`, as `flux bootstrap` would leave them) and
//! the wait until every fixture is Ready.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use kube::Client;
use kube::discovery::ApiResource;

use crate::{apply, assertions, flux};

/// The clusters every provider creates, with their kubectl context names.
pub const CLUSTERS: [&str; 2] = ["infra", "apps"];

/// Kind of a Flux object the fixtures create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kustomization,
    HelmRelease,
}

impl Kind {
    pub fn resource(self) -> ApiResource {
        match self {
            Kind::Kustomization => flux::kustomizations(),
            Kind::HelmRelease => flux::helmreleases(),
        }
    }
}

/// One Flux object of the fixtures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FluxObject {
    pub cluster: &'static str,
    pub kind: Kind,
    pub namespace: &'static str,
    pub name: &'static str,
}

const fn ks(cluster: &'static str, name: &'static str) -> FluxObject {
    FluxObject {
        cluster,
        kind: Kind::Kustomization,
        namespace: "flux-system",
        name,
    }
}

const fn hr(cluster: &'static str, namespace: &'static str, name: &'static str) -> FluxObject {
    FluxObject {
        cluster,
        kind: Kind::HelmRelease,
        namespace,
        name,
    }
}

/// Every Kustomization and HelmRelease `fixtures/gitops` yields, per cluster.
pub const EXPECTED: [FluxObject; 10] = [
    ks("infra", "flux-system"),
    ks("infra", "gatus"),
    ks("infra", "echo"),
    hr("infra", "observability", "gatus"),
    ks("apps", "flux-system"),
    ks("apps", "odoo"),
    ks("apps", "whoami"),
    ks("apps", "echo"),
    hr("apps", "business", "odoo"),
    hr("apps", "business", "whoami"), // uses spec.chartRef
];

/// Directory whose content becomes the first commit of the served fixtures repository.
pub fn gitops_dir() -> PathBuf {
    crate::repo_root().join("fixtures").join("gitops")
}

/// GitRepository and root Kustomization `flux-system` for `cluster`, pointing at `url`.
/// Long intervals: a new commit reaches the cluster only when someone asks for a reconcile.
pub fn bootstrap_manifests(cluster: &str, url: &str) -> String {
    format!(
        r#"apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: flux-system
  namespace: flux-system
spec:
  interval: 1h
  url: {url}
  ref:
    branch: main
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: flux-system
  namespace: flux-system
spec:
  interval: 1h
  path: ./kubernetes/clusters/{cluster}
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
"#
    )
}

/// A kwok node: kwok marks it Ready and runs (simulates) every pod scheduled to it.
pub const KWOK_NODE: &str = r#"apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    type: kwok
"#;

/// Points `cluster` at the fixtures repository and waits until every expected object is Ready.
/// The GitRepository goes first and must be Ready before the root Kustomization exists: a
/// Kustomization created before its artifact schedules a retry that fires later, in the middle of
/// a scenario, and changes the cluster behind its back.
pub async fn bootstrap(client: &Client, cluster: &str, url: &str, timeout: Duration) -> Result<()> {
    let manifests = bootstrap_manifests(cluster, url);
    let (source, root) = manifests
        .split_once("---\n")
        .expect("GitRepository, then Kustomization");
    apply::apply_yaml(client, source)
        .await
        .context("creating GitRepository flux-system")?;
    assertions::wait_ready(
        client,
        &flux::gitrepositories(),
        "flux-system",
        "flux-system",
        timeout,
    )
    .await
    .with_context(|| format!("the fixtures repository {url} did not become Ready on {cluster}"))?;
    apply::apply_yaml(client, root)
        .await
        .context("creating Kustomization flux-system")?;
    wait_all_ready(client, cluster, timeout).await
}

/// Waits (all within `timeout`) for every fixture object of `cluster` to be Ready.
pub async fn wait_all_ready(client: &Client, cluster: &str, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    for obj in EXPECTED.iter().filter(|o| o.cluster == cluster) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assertions::wait_ready(client, &obj.kind.resource(), obj.namespace, obj.name, left)
            .await
            .with_context(|| format!("fixtures on cluster {cluster} did not become Ready"))?;
    }
    Ok(())
}
