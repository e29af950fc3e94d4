//! Stand-ins for what an operator's repository needs and this machine cannot provide, so that the
//! repository comes up offline (`harness up --gitops DIR --standins auto|always|never`):
//!
//! - **Stand-in CRDs**: every apiVersion/kind of the [`crate::gitops::render`] that the cluster does not
//!   serve and that the repository does not ship a CRD for (PrometheusRule, ExternalSecret,
//!   HTTPRoute …) gets a permissive CRD (`x-kubernetes-preserve-unknown-fields`), labelled
//!   [`STANDIN_LABEL`]. Nothing reconciles those objects: they only exist.
//! - **Stand-in sources**: every OCIRepository, HelmRepository and GitRepository whose URL does not
//!   answer (`auto`; all of them with `always`, none with `never`) is pointed, in the *served copy*
//!   only, at what the harness serves on 127.0.0.1: the [`Registry`] (CNCF distribution's
//!   registry) holding a minimal chart of each chart name and version the HelmReleases ask for
//!   (HelmRepositories become OCI Helm repositories there), or an empty Flux artifact / Git
//!   repository with the paths the Kustomizations read. The HelmReleases install and become Ready,
//!   and `dependsOn` chains proceed.
//!
//! [`Report`] says what is a stand-in; `harness up`'s closing tables list it apart from what is
//! genuinely not Ready.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::Client;
use serde_json::{Value, json};

use crate::gitops::gitserver::FixturesRepo;
use crate::gitops::render::{self, Object, Render};
use crate::sys::process::{LogFiles, ManagedProcess};
use crate::toolchain::{Tool, Toolchain};

mod artifacts;
mod crds;
mod registry;
mod rewrite;
mod sources;

use artifacts::*;
pub use crds::{install_crds, install_unmatched};
pub use registry::Registry;
use rewrite::*;
use sources::*;

/// The label of everything the harness stands in with (CRDs), and the annotation naming what a
/// stand-in source replaces (on the source, in the served copy).
pub const STANDIN_LABEL: &str = "k8s-ops.harness/stand-in";
pub const STANDIN_FOR: &str = "k8s-ops.harness/stand-in-for";

/// `--standins` / `HARNESS_STANDINS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// A stand-in for each source whose URL does not answer; the real one where it does.
    #[default]
    Auto,
    /// A stand-in for every remote source, answering or not.
    Always,
    /// No stand-in source (stand-in CRDs still: without them nothing below the root applies).
    Never,
}

impl Mode {
    /// `HARNESS_STANDINS`, `auto` when unset; anything else is refused in one line.
    pub fn from_env() -> Result<Self> {
        match crate::config::get().standins.clone() {
            None => Ok(Self::Auto),
            Some(v) => <Self as clap::ValueEnum>::from_str(&v, true).map_err(|_| {
                anyhow::anyhow!("HARNESS_STANDINS={v}: not a mode — use auto, always or never")
            }),
        }
    }
}

/// A stand-in CRD installed on a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandinCrd {
    pub cluster: String,
    /// `<plural>.<group>`.
    pub name: String,
    pub kind: String,
    pub versions: Vec<String>,
    pub namespaced: bool,
    /// The repository's objects of that kind (`Kind namespace/name`) the render saw.
    pub objects: Vec<String>,
    /// The Kustomization whose dry-run failed on the kind, when the render did not show it.
    pub found_by: Option<String>,
}

/// Which source a remote source of the repository ended up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Used {
    /// The real one: its URL answered (or `--standins never`).
    Real(String),
    /// A stand-in at this URL, and why.
    StandIn { url: String, why: String },
    /// Neither works here (a kind with no stand-in): why.
    Unavailable(String),
}

/// One remote source of the repository and what was used for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUse {
    pub clusters: Vec<String>,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub url: String,
    pub used: Used,
}

impl SourceUse {
    /// One line for the start's output.
    pub fn line(&self) -> String {
        let what = format!(
            "{} {}/{} ({})",
            self.kind,
            self.namespace,
            self.name,
            self.clusters.join(", ")
        );
        match &self.used {
            Used::Real(why) => format!("{what}: real {} — {why}", self.url),
            Used::StandIn { url, why } => {
                format!("{what}: stand-in {url} for {} — {why}", self.url)
            }
            Used::Unavailable(why) => format!("{what}: {} — {why}", self.url),
        }
    }
}

/// What in the environment is not real.
#[derive(Debug, Default)]
pub struct Report {
    pub crds: Mutex<Vec<StandinCrd>>,
    pub sources: Vec<SourceUse>,
    /// The render's notes and the Kustomizations it could not render.
    pub notes: Vec<String>,
}

impl Report {
    pub fn crds(&self) -> Vec<StandinCrd> {
        self.crds.lock().unwrap().clone()
    }

    /// The closing table of stand-ins: CLUSTER, KIND, NAME, STANDS IN FOR.
    pub fn table(&self) -> String {
        let mut rows = vec![["CLUSTER", "KIND", "NAME", "STANDS IN FOR"].map(String::from)];
        for c in self.crds() {
            let first = c.objects.first().cloned().unwrap_or_default();
            let what = match &c.found_by {
                Some(ks) => format!(
                    "the CRD of {} ({ks} failed on it; the render did not show it; no controller)",
                    c.kind
                ),
                None => format!(
                    "the CRD of {} ({} object{}, e.g. {first}; no controller)",
                    c.kind,
                    c.objects.len(),
                    if c.objects.len() == 1 { "" } else { "s" }
                ),
            };
            rows.push([
                c.cluster.clone(),
                "CustomResourceDefinition".to_string(),
                c.name.clone(),
                what,
            ]);
        }
        for s in &self.sources {
            if let Used::StandIn { url, .. } = &s.used {
                rows.push([
                    s.clusters.join(","),
                    s.kind.clone(),
                    format!("{}/{}", s.namespace, s.name),
                    format!("{} (served at {url}, minimal content)", s.url),
                ]);
            }
        }
        aligned(&rows)
    }

    /// What the start says about the repository: one line per remote source (which one is used)
    /// and the render's notes.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .sources
            .iter()
            .map(|s| format!("source {}", s.line()))
            .collect();
        lines.extend(self.notes.iter().map(|n| format!("note: {n}")));
        lines
    }

    pub fn is_empty(&self) -> bool {
        self.crds().is_empty()
            && !self
                .sources
                .iter()
                .any(|s| matches!(s.used, Used::StandIn { .. }))
    }
}

/// Left-aligned columns, the last one unpadded.
pub fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    }
    out
}

/// The render of each cluster and the stand-ins prepared for them.
#[derive(Debug, Default)]
pub struct Prepared {
    pub renders: BTreeMap<String, Render>,
    pub report: Report,
}

/// Where stand-in sources are served, or why not (the kind provider: its Flux runs in containers,
/// which cannot reach 127.0.0.1 of this machine).
pub enum Serving<'a> {
    At {
        registry_port: u16,
        state_dir: &'a Path,
        process: &'a Mutex<Option<ManagedProcess>>,
    },
    Not(&'static str),
}

/// Renders every cluster of the served copy, decides per remote source, serves what stands in,
/// and commits the rewritten sources to the served copy (never the operator's checkout).
pub fn prepare(
    toolchain: &Toolchain,
    entries: &BTreeMap<String, String>,
    repo: &FixturesRepo,
    mode: Mode,
    serving: Serving<'_>,
) -> Result<Prepared> {
    let mut prepared = render_all(toolchain, entries, repo);
    let mut probe = Probe::default();
    let mut standins = Vec::new();
    for plan in plan_sources(&prepared.renders) {
        let used = decide(&plan, &serving, mode, &mut probe, repo);
        if matches!(used, Used::StandIn { .. }) {
            standins.push(plan.clone());
        }
        prepared.report.sources.push(SourceUse {
            clusters: plan.clusters.iter().cloned().collect(),
            kind: plan.kind.clone(),
            namespace: plan.namespace.clone(),
            name: plan.name.clone(),
            url: plan.url.clone(),
            used,
        });
    }
    if standins.is_empty() {
        return Ok(prepared);
    }
    let Serving::At {
        registry_port,
        state_dir,
        process,
    } = serving
    else {
        unreachable!("stand-ins are only planned where they are served")
    };
    if standins.iter().any(|p| p.kind != "GitRepository") {
        let registry = Registry::start(toolchain, state_dir, registry_port)?;
        *process.lock().unwrap() = Some(registry.process);
        push_artifacts(&standins, registry_port)?;
    }
    for plan in &standins {
        if plan.kind == "GitRepository" {
            repo.add_repository(&plan.git_repo_name(), &plan.paths)?;
        }
        let changed = rewrite(
            repo.work_dir(),
            plan,
            &plan.standin_url(registry_port, repo),
        )?;
        if changed == 0 {
            prepared.report.notes.push(format!(
                "{} {}/{}: not found as a document of the repository (generated?): its stand-in is not applied",
                plan.kind, plan.namespace, plan.name
            ));
        }
    }
    repo.commit_all("harness: stand-in sources (served copy only)")?;
    Ok(prepared)
}

/// The render of each cluster, with what the renderer could not follow as notes: a repository
/// the renderer cannot follow still comes up, without stand-ins for that cluster.
fn render_all(
    toolchain: &Toolchain,
    entries: &BTreeMap<String, String>,
    repo: &FixturesRepo,
) -> Prepared {
    let tools = render::Tools::of(toolchain);
    let mut prepared = Prepared::default();
    for (cluster, entry) in entries {
        let r = match render::cluster(repo.work_dir(), entry, &tools) {
            Ok(r) => r,
            Err(e) => {
                prepared.report.notes.push(format!(
                    "{cluster}: cannot render the repository ({e:#}): no stand-ins for this cluster"
                ));
                continue;
            }
        };
        let notes = &mut prepared.report.notes;
        for (ks, why) in &r.not_rendered {
            notes.push(format!("{cluster}: Kustomization {ks} not rendered: {why}"));
        }
        notes.extend(r.notes.iter().map(|n| format!("{cluster}: {n}")));
        prepared.renders.insert(cluster.clone(), r);
    }
    prepared
}

/// Whether a remote source is used as it is, stood in for, or unavailable, and why: `never` uses
/// everything as it is; `auto` stands in for what does not answer, `always` for everything, where
/// stand-ins are served; a Bucket has no stand-in.
fn decide(
    plan: &SourcePlan,
    serving: &Serving<'_>,
    mode: Mode,
    probe: &mut Probe,
    repo: &FixturesRepo,
) -> Used {
    match (serving, mode) {
        (_, Mode::Never) => Used::Real("--standins never".to_string()),
        _ if plan.kind == "Bucket" => Used::Unavailable("no stand-in for a Bucket".to_string()),
        (Serving::Not(why), _) => match probe.answers(&plan.url) {
            Ok(()) => Used::Real("it answers".to_string()),
            Err(e) => Used::Unavailable(format!("{e}; no stand-in: {why}")),
        },
        (Serving::At { registry_port, .. }, _) => match (mode, probe.answers(&plan.url)) {
            (Mode::Auto, Ok(())) => Used::Real("it answers".to_string()),
            (_, answer) => Used::StandIn {
                url: plan.standin_url(*registry_port, repo),
                why: match answer {
                    Ok(()) => "--standins always".to_string(),
                    Err(e) => e,
                },
            },
        },
    }
}

/// Pushes the artifacts of every stand-in that is not a Git repository to the local registry.
fn push_artifacts(standins: &[SourcePlan], registry_port: u16) -> Result<()> {
    let rt = crate::sys::exec::runtime();
    for plan in standins.iter().filter(|p| p.kind != "GitRepository") {
        for artifact in plan.artifacts() {
            rt.block_on(push(registry_port, &artifact))
                .with_context(|| {
                    format!(
                        "pushing the stand-in for {} {}/{}",
                        plan.kind, plan.namespace, plan.name
                    )
                })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    pub(super) fn object(value: Value) -> Object {
        Object {
            value,
            by: render::ROOT.to_string(),
        }
    }
}
