//! The gatus/odoo fixtures: what `fixtures/gitops` deploys on each cluster, how a cluster is pointed
//! at the served repository (GitRepository + root Kustomization `flux-system`, as `flux bootstrap`
//! would leave them; see [`crate::gitops`]) and the wait until every fixture is Ready — or, for an
//! operator's own repository, until what can become Ready has, and what is not Ready and why.

use std::time::Duration;

use anyhow::{Context, Result};
use kube::Client;
use kube::discovery::ApiResource;

use crate::assertions::NotReady;
use crate::gitops::Served;
use crate::{apply, assertions, flux};

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

const fn ks(cluster: &'static str, namespace: &'static str, name: &'static str) -> FluxObject {
    FluxObject {
        cluster,
        kind: Kind::Kustomization,
        namespace,
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

/// What a scenario acts on, named by its role: every fixture repository has an app for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The story's app: `odoo` on `apps`, a Kustomization and a HelmRelease (the story's suspend
    /// and reconcile criteria).
    Odoo,
    /// `gatus` on `infra`.
    Gatus,
    /// An app that is only a Kustomization.
    KustomizationOnly,
    /// A second HelmRelease on `apps` (the first layout's uses `spec.chartRef`).
    SecondRelease,
}

/// One fixture GitOps repository: the one description every scenario takes names from, so the
/// same scenarios run on either layout.
#[derive(Debug)]
pub struct Layout {
    /// Directory under the checkout's root.
    pub dir: &'static str,
    /// Every Kustomization and HelmRelease it yields that must become Ready.
    pub objects: &'static [FluxObject],
    /// What it yields that cannot become Ready here (an unreachable remote chart), on purpose.
    pub not_ready: &'static [FluxObject],
    /// `(role, cluster, app name)`.
    pub apps: [(Role, &'static str, &'static str); 4],
    /// The file of odoo's HelmRelease, relative to the repository root.
    pub odoo_helmrelease: &'static str,
    /// A `dependsOn` chain of Kustomizations on one cluster, first to last (empty: none).
    pub chain: &'static [FluxObject],
}

/// `fixtures/gitops`: every Kustomization in `flux-system`, HelmReleases in the app's namespace.
pub const FLUX_SYSTEM_LAYOUT: Layout = Layout {
    dir: "fixtures/gitops",
    objects: &[
        ks("infra", "flux-system", "flux-system"),
        ks("infra", "flux-system", "gatus"),
        ks("infra", "flux-system", "echo"),
        hr("infra", "observability", "gatus"),
        ks("apps", "flux-system", "flux-system"),
        ks("apps", "flux-system", "odoo"),
        ks("apps", "flux-system", "whoami"),
        ks("apps", "flux-system", "echo"),
        hr("apps", "business", "odoo"),
        hr("apps", "business", "whoami"), // uses spec.chartRef
    ],
    not_ready: &[],
    apps: [
        (Role::Odoo, "apps", "odoo"),
        (Role::Gatus, "infra", "gatus"),
        (Role::KustomizationOnly, "infra", "echo"),
        (Role::SecondRelease, "apps", "whoami"),
    ],
    odoo_helmrelease: "kubernetes/apps/business/odoo/app/helmrelease.yaml",
    chain: &[],
};

/// `fixtures/gitops-namespaced`: each Kustomization in its app's namespace next to its
/// HelmRelease (onedr0p's cluster-template layout), entry paths `clusters/<cluster>`, `flux
/// bootstrap`'s own objects in the repo, a dependsOn chain, substitution, an operator CRD.
pub const APP_NAMESPACE_LAYOUT: Layout = Layout {
    dir: "fixtures/gitops-namespaced",
    objects: &[
        ks("infra", "flux-system", "flux-system"),
        ks("infra", "observability", "gatus"),
        ks("infra", "observability", "remote-dashboard"),
        hr("infra", "observability", "gatus"),
        ks("apps", "flux-system", "flux-system"),
        ks("apps", "volsync-system", "volsync"),
        ks("apps", "business", "odoo"),
        ks("apps", "business", "whoami"),
        hr("apps", "business", "odoo"),
        hr("apps", "business", "whoami"),
    ],
    // remote-dashboard's unreachable chart: a stand-in with `--standins auto` (the
    // default); listed not Ready with `never` (harness/tests/up.rs).
    not_ready: &[],
    apps: [
        (Role::Odoo, "apps", "odoo"),
        (Role::Gatus, "infra", "gatus"),
        (Role::KustomizationOnly, "apps", "volsync"),
        (Role::SecondRelease, "apps", "whoami"),
    ],
    odoo_helmrelease: "kubernetes/apps/business/odoo/app/helmrelease.yaml",
    chain: &[
        ks("apps", "volsync-system", "volsync"),
        ks("apps", "business", "odoo"),
        ks("apps", "business", "whoami"),
    ],
};

/// `fixtures/gitops-homeops`: the shape of a real home-ops repository (entry paths
/// `kubernetes/<cluster>/flux`, OCI charts on ghcr.io, kinds only operators serve, a 3-level
/// dependsOn chain with `wait: true`, postBuild substitution through a parent's patch, Flux-level
/// components); it comes up offline with stand-ins ([`crate::gitops::standins`]).
pub const HOMEOPS_LAYOUT: Layout = Layout {
    dir: "fixtures/gitops-homeops",
    objects: &[
        ks("infra", "flux-system", "flux-system"),
        ks("infra", "flux-system", "cluster-apps"),
        ks("infra", "flux-system", "kube-prometheus-stack"),
        ks("infra", "flux-system", "blackbox-exporter"),
        ks("infra", "flux-system", "grafana"),
        ks("infra", "flux-system", "gatus"),
        ks("infra", "flux-system", "echo"),
        hr("infra", "observability", "kube-prometheus-stack"),
        hr("infra", "observability", "blackbox-exporter"),
        hr("infra", "observability", "gatus"),
        ks("apps", "flux-system", "flux-system"),
        ks("apps", "flux-system", "cluster-apps"),
        ks("apps", "flux-system", "cloudnative-pg"),
        ks("apps", "flux-system", "postgres-cluster"),
        ks("apps", "flux-system", "odoo"),
        ks("apps", "flux-system", "whoami"),
        ks("apps", "flux-system", "platform-policies"),
        // A StatefulSet with a volume claim and a Job, waited for: kwok's volume and pod stages.
        ks("apps", "flux-system", "redis"),
        hr("apps", "database", "cloudnative-pg"),
        hr("apps", "database", "postgres-cluster"),
        hr("apps", "business", "odoo"),
        hr("apps", "business", "whoami"),
    ],
    // Its admin Secret comes from an ExternalSecret, and no secret store runs here.
    not_ready: &[hr("infra", "observability", "grafana")],
    apps: [
        (Role::Odoo, "apps", "odoo"),
        (Role::Gatus, "infra", "gatus"),
        (Role::KustomizationOnly, "infra", "echo"),
        (Role::SecondRelease, "apps", "whoami"),
    ],
    odoo_helmrelease: "kubernetes/apps/apps/business/odoo/app/helmrelease.yaml",
    chain: &[
        ks("apps", "flux-system", "cloudnative-pg"),
        ks("apps", "flux-system", "postgres-cluster"),
        ks("apps", "flux-system", "odoo"),
    ],
};

/// Every fixture repository the scenarios know.
pub const LAYOUTS: [&Layout; 3] = [&FLUX_SYSTEM_LAYOUT, &APP_NAMESPACE_LAYOUT, &HOMEOPS_LAYOUT];

impl Layout {
    /// `(cluster, name)` of the app playing `role`.
    pub fn app(&self, role: Role) -> (&'static str, &'static str) {
        let (_, cluster, name) = self
            .apps
            .iter()
            .find(|(r, _, _)| *r == role)
            .expect("every layout names an app for every role");
        (cluster, name)
    }

    /// The app's Flux objects (Kustomization first), from [`Layout::objects`].
    pub fn objects_of(&self, cluster: &str, name: &str) -> Vec<FluxObject> {
        let mut objects: Vec<FluxObject> = self
            .objects
            .iter()
            .filter(|o| o.cluster == cluster && o.name == name)
            .copied()
            .collect();
        objects.sort_by_key(|o| o.kind != Kind::Kustomization);
        objects
    }

    /// The served repository's layout, when it is one of [`LAYOUTS`].
    pub fn of(served: &Served) -> Option<&'static Layout> {
        LAYOUTS.into_iter().find(|l| {
            crate::repo_root()
                .join(l.dir)
                .canonicalize()
                .is_ok_and(|d| d == served.dir)
        })
    }
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

/// Points `cluster` at the served repository and waits: for the fixtures, until every expected
/// object is Ready (a failure fails the start); for any other repository, until everything is Ready
/// or what is not has stopped changing (listed by [`not_ready_table`] afterwards; `--strict` fails).
/// The GitRepository goes first and must be Ready before the root Kustomization exists: a
/// Kustomization created before its artifact schedules a retry that fires later, in the middle of
/// a scenario, and changes the cluster behind its back.
pub async fn bootstrap(
    client: &Client,
    served: &Served,
    cluster: &str,
    url: &str,
    prepared: &crate::gitops::standins::Prepared,
    timeout: Duration,
) -> Result<()> {
    // One deadline for the whole bootstrap: each wait gets what is left of it.
    let deadline = tokio::time::Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let (source, root) = served.root_manifests(cluster, url);
    // Before anything of the repository is applied: the kinds no API of the cluster serves.
    if let Some(render) = prepared.renders.get(cluster) {
        let crds = crate::gitops::standins::install_crds(client, cluster, render).await?;
        prepared.report.crds.lock().unwrap().extend(crds);
    }
    if let Some(secret) = served.sops_secret() {
        apply::apply_yaml(client, &secret)
            .await
            .context("creating the SOPS decryption Secret flux-system/sops-age")?;
    }
    apply::apply_yaml(client, &source)
        .await
        .context("creating GitRepository flux-system")?;
    assertions::wait_ready(
        client,
        &flux::gitrepositories(),
        flux::NAMESPACE,
        "flux-system",
        left(),
    )
    .await
    .with_context(|| format!("the served repository {url} did not become Ready on {cluster}"))?;
    apply::apply_yaml(client, &root)
        .await
        .context("creating Kustomization flux-system")?;
    // A fixture repository's objects are all expected Ready, unless its remote sources are left
    // as they are (`--standins never`): then what cannot be fetched is listed once settled.
    let known =
        Layout::of(served).filter(|_| served.standins != crate::gitops::standins::Mode::Never);
    if let Some(layout) = known {
        wait_all_ready(client, layout, cluster, left()).await?;
    }
    // Kinds the render did not show get stand-in CRDs while the start settles (a few rounds).
    let late = prepared
        .renders
        .contains_key(cluster)
        .then_some((cluster, &prepared.report.crds));
    let not_ready = settle(client, late, left()).await?;
    anyhow::ensure!(
        !served.strict || not_ready.is_empty(),
        "not Ready on {cluster} (--strict): {}",
        not_ready
            .iter()
            .map(|r| format!("{} {}/{}: {}", r.kind, r.namespace, r.name, r.why))
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(())
}

/// How many times one start installs stand-in CRDs for kinds its Kustomizations failed on.
const LATE_CRD_ROUNDS: usize = 3;

/// Waits until nothing is left not Ready, or until what is left has stayed the same for a while
/// (20 s when all of it failed, Ready=False; 60 s while something is still in progress); at most
/// `timeout`. With `late` (the cluster and its stand-in CRDs), a Kustomization failing on a kind
/// the API server does not serve gets a stand-in CRD for it, at most [`LATE_CRD_ROUNDS`] times.
/// Returns what is left.
async fn settle(
    client: &Client,
    late: Option<(
        &str,
        &std::sync::Mutex<Vec<crate::gitops::standins::StandinCrd>>,
    )>,
    timeout: Duration,
) -> Result<Vec<NotReady>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = crate::assertions::not_ready(client).await?;
    let mut since = tokio::time::Instant::now();
    let mut rounds = 0;
    loop {
        if last.is_empty() {
            return Ok(last);
        }
        if let Some((cluster, installed)) = late.filter(|_| rounds < LATE_CRD_ROUNDS) {
            let crds =
                crate::gitops::standins::install_unmatched(client, cluster, &last, installed)
                    .await?;
            if !crds.is_empty() {
                rounds += 1;
                since = tokio::time::Instant::now();
                for c in &crds {
                    eprintln!(
                        "harness: {cluster}: stand-in CRD {} ({} failed on kind {}, which the render did not show)",
                        c.name,
                        c.found_by.as_deref().unwrap_or("a Kustomization"),
                        c.kind
                    );
                }
            }
        }
        let now = tokio::time::Instant::now();
        let quiet = if last.iter().all(|r| r.status == "False") {
            Duration::from_secs(20)
        } else {
            Duration::from_secs(60)
        };
        if now - since >= quiet || now >= deadline {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let current = crate::assertions::not_ready(client).await?;
        if current != last {
            last = current;
            since = tokio::time::Instant::now();
        }
    }
}

/// Waits (all within `timeout`) for every object `layout` yields on `cluster` to be Ready.
pub async fn wait_all_ready(
    client: &Client,
    layout: &Layout,
    cluster: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    for obj in layout.objects.iter().filter(|o| o.cluster == cluster) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assertions::wait_ready(client, &obj.kind.resource(), obj.namespace, obj.name, left)
            .await
            .with_context(|| format!("fixtures on cluster {cluster} did not become Ready"))?;
    }
    Ok(())
}
