//! Stand-ins for what an operator's repository needs and this machine cannot provide, so that the
//! repository comes up offline (`harness up --gitops DIR --offline-standins auto|always|never`):
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

/// The label of everything the harness stands in with (CRDs), and the annotation naming what a
/// stand-in source replaces (on the source, in the served copy).
pub const STANDIN_LABEL: &str = "k8s-ops.harness/stand-in";
pub const STANDIN_FOR: &str = "k8s-ops.harness/stand-in-for";

/// `--offline-standins` / `HARNESS_OFFLINE_STANDINS`.
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
    /// `HARNESS_OFFLINE_STANDINS`, `auto` when unset; anything else is refused in one line.
    pub fn from_env() -> Result<Self> {
        match std::env::var("HARNESS_OFFLINE_STANDINS")
            .ok()
            .filter(|v| !v.is_empty())
        {
            None => Ok(Self::Auto),
            Some(v) => <Self as clap::ValueEnum>::from_str(&v, true).map_err(|_| {
                anyhow::anyhow!(
                    "HARNESS_OFFLINE_STANDINS={v}: not a mode — use auto, always or never"
                )
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
    /// The repository's objects of that kind (`Kind namespace/name`).
    pub objects: Vec<String>,
}

/// Which source a remote source of the repository ended up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Used {
    /// The real one: its URL answered (or `--offline-standins never`).
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
            rows.push([
                c.cluster.clone(),
                "CustomResourceDefinition".to_string(),
                c.name.clone(),
                format!(
                    "the CRD of {} ({} object{}, e.g. {first}; no controller)",
                    c.kind,
                    c.objects.len(),
                    if c.objects.len() == 1 { "" } else { "s" }
                ),
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
    let tools = render::Tools::of(toolchain);
    let mut prepared = Prepared::default();
    for (cluster, entry) in entries {
        // A repository the renderer cannot follow still comes up, without stand-ins for it.
        let r = match render::cluster(repo.work_dir(), entry, &tools) {
            Ok(r) => r,
            Err(e) => {
                prepared.report.notes.push(format!(
                    "{cluster}: cannot render the repository ({e:#}): no stand-ins for this cluster"
                ));
                continue;
            }
        };
        for (ks, why) in &r.not_rendered {
            prepared
                .report
                .notes
                .push(format!("{cluster}: Kustomization {ks} not rendered: {why}"));
        }
        prepared
            .report
            .notes
            .extend(r.notes.iter().map(|n| format!("{cluster}: {n}")));
        prepared.renders.insert(cluster.clone(), r);
    }
    let plans = plan_sources(&prepared.renders);
    let mut probe = Probe::default();
    let mut standins = Vec::new();
    for plan in plans {
        let used = match (&serving, mode) {
            (_, Mode::Never) => Used::Real("--offline-standins never".to_string()),
            _ if plan.kind == "Bucket" => Used::Unavailable("no stand-in for a Bucket".to_string()),
            (Serving::Not(why), _) => match probe.answers(&plan.url) {
                Ok(()) => Used::Real("it answers".to_string()),
                Err(e) => Used::Unavailable(format!("{e}; no stand-in: {why}")),
            },
            (Serving::At { registry_port, .. }, _) => {
                let answer = probe.answers(&plan.url);
                match (mode, answer) {
                    (Mode::Auto, Ok(())) => Used::Real("it answers".to_string()),
                    (_, answer) => Used::StandIn {
                        url: plan.standin_url(*registry_port, repo),
                        why: match answer {
                            Ok(()) => "--offline-standins always".to_string(),
                            Err(e) => e,
                        },
                    },
                }
            }
        };
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

/// One remote source of the render and what its consumers need from it.
#[derive(Debug, Clone, Default)]
struct SourcePlan {
    clusters: BTreeSet<String>,
    kind: String,
    namespace: String,
    name: String,
    url: String,
    spec: Value,
    /// Charts asked for: `(chart name, version constraint)`.
    charts: BTreeSet<(String, String)>,
    /// Paths Kustomizations read from it.
    paths: BTreeSet<String>,
}

const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
const FLUX_CONFIG: &str = "application/vnd.cncf.flux.config.v1+json";
const FLUX_CONTENT: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";

/// Every source object of the renders that is not the served repository, with its consumers.
fn plan_sources(renders: &BTreeMap<String, Render>) -> Vec<SourcePlan> {
    let mut plans: BTreeMap<(String, String, String), SourcePlan> = BTreeMap::new();
    for (cluster, render) in renders {
        for o in &render.objects {
            let (group, _) = o.group_version();
            if group != "source.toolkit.fluxcd.io"
                || !matches!(
                    o.kind(),
                    "OCIRepository" | "HelmRepository" | "GitRepository" | "Bucket"
                )
            {
                continue;
            }
            let url = o.value["spec"]["url"]
                .as_str()
                .or(o.value["spec"]["endpoint"].as_str())
                .unwrap_or_default()
                .to_string();
            let namespace = o.namespace().unwrap_or("default").to_string();
            let plan = plans
                .entry((
                    o.kind().to_string(),
                    namespace.clone(),
                    o.name().to_string(),
                ))
                .or_insert_with(|| SourcePlan {
                    kind: o.kind().to_string(),
                    namespace,
                    name: o.name().to_string(),
                    url,
                    spec: o.value["spec"].clone(),
                    ..SourcePlan::default()
                });
            plan.clusters.insert(cluster.clone());
        }
    }
    for render in renders.values() {
        for o in &render.objects {
            let ns = o.namespace().unwrap_or("default");
            let spec = &o.value["spec"];
            let mut consume = |source: &Value, f: &mut dyn FnMut(&mut SourcePlan)| {
                let key = (
                    source["kind"].as_str().unwrap_or_default().to_string(),
                    source["namespace"].as_str().unwrap_or(ns).to_string(),
                    source["name"].as_str().unwrap_or_default().to_string(),
                );
                if let Some(plan) = plans.get_mut(&key) {
                    f(plan);
                }
            };
            match (o.group_version().0, o.kind()) {
                ("helm.toolkit.fluxcd.io", "HelmRelease") => {
                    if spec["chartRef"].is_object() {
                        consume(&spec["chartRef"], &mut |p| {
                            let chart = p.url.rsplit('/').next().unwrap_or("chart").to_string();
                            p.charts.insert((chart, String::new()));
                        });
                    }
                    let chart = &spec["chart"]["spec"];
                    if chart.is_object() {
                        let name = chart["chart"].as_str().unwrap_or_default().to_string();
                        let version = chart["version"].as_str().unwrap_or_default().to_string();
                        consume(&chart["sourceRef"], &mut |p| {
                            p.charts.insert((name.clone(), version.clone()));
                        });
                    }
                }
                ("source.toolkit.fluxcd.io", "HelmChart") => {
                    let name = spec["chart"].as_str().unwrap_or_default().to_string();
                    let version = spec["version"].as_str().unwrap_or_default().to_string();
                    consume(&spec["sourceRef"], &mut |p| {
                        p.charts.insert((name.clone(), version.clone()));
                    });
                }
                ("kustomize.toolkit.fluxcd.io", "Kustomization") => {
                    let path = spec["path"].as_str().unwrap_or("./").to_string();
                    consume(&spec["sourceRef"], &mut |p| {
                        p.paths.insert(path.clone());
                    });
                }
                _ => {}
            }
        }
    }
    plans
        .into_values()
        .filter(|p| {
            !(p.kind == "GitRepository" && p.namespace == "flux-system" && p.name == "flux-system")
        })
        .collect()
}

/// One artifact to push: repository, tag, config and layer.
#[derive(Debug, Clone)]
struct Artifact {
    repository: String,
    tag: String,
    config_type: &'static str,
    config: Vec<u8>,
    layer_type: String,
    layer: Vec<u8>,
}

impl SourcePlan {
    /// The source's URL, as a repository path of the local registry: `<host>/<path>`, lowercase.
    fn registry_path(&self) -> String {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        rest.trim_end_matches('/')
            .to_lowercase()
            .replace(':', "-")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "./_-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }

    fn git_repo_name(&self) -> String {
        format!("standin-{}-{}", self.namespace, self.name)
    }

    fn standin_url(&self, registry_port: u16, repo: &FixturesRepo) -> String {
        match self.kind.as_str() {
            "GitRepository" => repo.sibling_url(&self.git_repo_name()),
            _ => format!("oci://127.0.0.1:{registry_port}/{}", self.registry_path()),
        }
    }

    /// The tag an OCIRepository is pointed at: its `ref.tag`, a version its `ref.semver` accepts,
    /// else `latest`.
    fn oci_tag(&self) -> String {
        let r = &self.spec["ref"];
        if let Some(tag) = r["tag"].as_str() {
            return tag.to_string();
        }
        if let Some(semver) = r["semver"].as_str() {
            return pick_version(semver);
        }
        "latest".to_string()
    }

    /// What the stand-in serves: per chart a Helm chart (HelmRepository), or the one artifact of
    /// an OCIRepository (a chart when a HelmRelease uses it, else the Kustomizations' paths).
    fn artifacts(&self) -> Vec<Artifact> {
        let origin = &self.url;
        match self.kind.as_str() {
            "HelmRepository" => self
                .charts
                .iter()
                .map(|(chart, constraint)| {
                    let version = pick_version(constraint);
                    chart_artifact(
                        format!("{}/{}", self.registry_path(), chart),
                        version.replace('+', "_"),
                        chart,
                        &version,
                        HELM_CHART,
                        origin,
                    )
                })
                .collect(),
            _ => {
                let tag = self.oci_tag();
                let selected = self.spec["layerSelector"]["mediaType"].as_str();
                if let Some((chart, _)) = self.charts.iter().next() {
                    let version = semver_of(&tag).unwrap_or_else(|| "0.0.0-standin".to_string());
                    vec![chart_artifact(
                        self.registry_path(),
                        tag,
                        chart,
                        &version,
                        selected.unwrap_or(HELM_CHART),
                        origin,
                    )]
                } else {
                    let files: Vec<(String, String)> = self
                        .paths
                        .iter()
                        .map(|p| {
                            let p = p.trim_start_matches("./").trim_end_matches('/');
                            let file = if p.is_empty() {
                                "kustomization.yaml".to_string()
                            } else {
                                format!("{p}/kustomization.yaml")
                            };
                            (file, empty_kustomization(origin))
                        })
                        .collect();
                    vec![Artifact {
                        repository: self.registry_path(),
                        tag,
                        config_type: FLUX_CONFIG,
                        config: b"{}".to_vec(),
                        layer_type: selected.unwrap_or(FLUX_CONTENT).to_string(),
                        layer: tgz(&files),
                    }]
                }
            }
        }
    }
}

fn empty_kustomization(origin: &str) -> String {
    format!(
        "# k8s-ops harness stand-in for {origin}: its content cannot be fetched here\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n"
    )
}

fn chart_artifact(
    repository: String,
    tag: String,
    chart: &str,
    version: &str,
    layer_type: &str,
    origin: &str,
) -> Artifact {
    let description = format!("k8s-ops harness stand-in for {chart} {version} of {origin}");
    let chart_yaml = format!(
        "apiVersion: v2\nname: {chart}\nversion: {version}\ndescription: {}\ntype: application\nannotations:\n  {STANDIN_FOR}: {}\n",
        render_json(&description),
        render_json(origin)
    );
    let template = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-standin\n  namespace: {{{{ .Release.Namespace }}}}\n  labels:\n    {STANDIN_LABEL}: \"true\"\ndata:\n  standInFor: {}\n",
        render_json(&format!("{origin} {chart} {version}"))
    );
    let files = vec![
        (format!("{chart}/Chart.yaml"), chart_yaml),
        (format!("{chart}/values.yaml"), "{}\n".to_string()),
        (format!("{chart}/templates/standin.yaml"), template),
    ];
    Artifact {
        repository,
        tag,
        config_type: HELM_CONFIG,
        config: serde_json::to_vec(&json!({"apiVersion": "v2", "name": chart, "version": version, "description": description, "type": "application"})).expect("json"),
        layer_type: layer_type.to_string(),
        layer: tgz(&files),
    }
}

fn render_json(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// A gzipped tar of `(path, content)` files, reproducible (fixed mtime and mode).
fn tgz(files: &[(String, String)]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(encoder);
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path, content.as_bytes())
            .expect("writing to memory");
    }
    tar.into_inner()
        .and_then(|mut gz| {
            gz.flush()?;
            gz.finish()
        })
        .expect("writing to memory")
}

/// `tag` as a chart version: a SemVer, `v` prefix dropped.
fn semver_of(tag: &str) -> Option<String> {
    let t = tag.trim_start_matches('v').replace('_', "+");
    semver::Version::parse(&t).ok().map(|v| v.to_string())
}

/// A version that the Helm (Masterminds) constraint `constraint` accepts: the exact version, else
/// the first of the bounds it names (and their neighbours) that it matches, else `1.0.0`.
pub fn pick_version(constraint: &str) -> String {
    let c = constraint.trim();
    if c.is_empty() || c == "*" {
        return "1.0.0".to_string();
    }
    if let Some(v) = semver_of(c) {
        return v;
    }
    let first = c.split("||").next().unwrap_or(c).trim();
    // Masterminds ANDs with spaces or commas; the semver crate with commas.
    let mut normalized = String::new();
    for part in first.split([',', ' ']).filter(|p| !p.is_empty()) {
        if !normalized.is_empty()
            && !part
                .starts_with(|ch: char| ch.is_ascii_digit() || ch == 'v' || ch == 'x' || ch == '*')
        {
            normalized.push_str(", ");
        } else if !normalized.is_empty() && normalized.ends_with(|ch: char| "<>=~^".contains(ch)) {
            // `>= 1.0`: the operator and its version belong together.
        } else if !normalized.is_empty() {
            normalized.push_str(", ");
        }
        normalized.push_str(part.trim_start_matches('v'));
    }
    let req = semver::VersionReq::parse(&normalized).ok();
    let mut candidates = Vec::new();
    for bound in first
        .split(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
        .filter(|s| !s.is_empty())
    {
        let n: Vec<u64> = bound.split('.').filter_map(|p| p.parse().ok()).collect();
        let (a, b, z) = (
            n.first().copied().unwrap_or(0),
            n.get(1).copied().unwrap_or(0),
            n.get(2).copied().unwrap_or(0),
        );
        for (x, y, w) in [(a, b, z), (a, b, z + 1), (a, b + 1, 0), (a + 1, 0, 0)] {
            candidates.push(semver::Version::new(x, y, w));
        }
        if a > 0 && b == 0 && z == 0 {
            candidates.push(semver::Version::new(a - 1, 99, 0));
        }
    }
    candidates.push(semver::Version::new(1, 0, 0));
    candidates
        .into_iter()
        .find(|v| req.as_ref().is_none_or(|r| r.matches(v)))
        .map(|v| v.to_string())
        .unwrap_or_else(|| "1.0.0".to_string())
}

/// Whether URLs answer: a TCP connection to their host and port within 3 s (names resolved within
/// 5 s). Remembered per host and port.
#[derive(Default)]
struct Probe(BTreeMap<(String, u16), Result<(), String>>);

impl Probe {
    fn answers(&mut self, url: &str) -> Result<(), String> {
        let Some((host, port)) = host_port(url) else {
            return Err(format!("cannot tell the host of {url}"));
        };
        self.0
            .entry((host.clone(), port))
            .or_insert_with(|| connect(&host, port))
            .clone()
    }
}

/// Host and port of a source URL: `oci://`, `https://`, `http://`, `ssh://`, or scp-like `git@host:path`.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => {
            // scp-like: user@host:path
            let (_, after) = url.split_once('@')?;
            let (host, _) = after.split_once(':')?;
            return Some((host.to_string(), 22));
        }
    };
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default = match scheme {
        "http" => 80,
        "ssh" => 22,
        _ => 443,
    };
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h.to_string(), p.parse().ok()?)),
        _ if !authority.is_empty() => Some((authority.to_string(), default)),
        _ => None,
    }
}

fn connect(host: &str, port: u16) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = format!("{host}:{port}");
    std::thread::spawn({
        let name = name.clone();
        move || {
            let _ = tx.send(name.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        }
    });
    let addrs = match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(addrs)) if !addrs.is_empty() => addrs,
        Ok(Ok(_)) | Ok(Err(_)) => return Err(format!("no answer: {host} does not resolve")),
        Err(_) => return Err(format!("no answer: resolving {host} took over 5 s")),
    };
    match TcpStream::connect_timeout(&addrs[0], Duration::from_secs(3)) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("no answer from {name}: {e}")),
    }
}

/// Points the source documents of `plan` in the served copy at their stand-in; returns how many
/// documents changed.
fn rewrite(work: &Path, plan: &SourcePlan, url: &str) -> Result<usize> {
    let mut changed = 0;
    for file in yaml_files(work)? {
        let text = std::fs::read_to_string(&file)?;
        if !text.contains(&plan.name) || !text.contains(&plan.kind) {
            continue;
        }
        let mut docs = split_documents(&text);
        let mut touched = false;
        for doc in docs.iter_mut() {
            let Ok(mut value) = serde_norway::from_str::<Value>(doc) else {
                continue;
            };
            let meta = &value["metadata"];
            let same = value["kind"] == plan.kind.as_str()
                && value["apiVersion"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("source.toolkit.fluxcd.io/"))
                && meta["name"] == plan.name.as_str()
                && meta["namespace"]
                    .as_str()
                    .is_none_or(|n| n == plan.namespace || n.contains("${"))
                && value["spec"]["url"]
                    .as_str()
                    .is_some_and(|u| u == plan.url || u.contains("${"));
            if !same {
                continue;
            }
            point_at_standin(&mut value, plan, url);
            *doc = serde_norway::to_string(&value)?;
            touched = true;
            changed += 1;
        }
        if touched {
            std::fs::write(&file, docs.join("---\n"))?;
        }
    }
    Ok(changed)
}

/// The stand-in spec of a source document: the local URL, plain HTTP, no credentials, no
/// verification, a ref the stand-in has.
fn point_at_standin(value: &mut Value, plan: &SourcePlan, url: &str) {
    let annotations = &mut value["metadata"]["annotations"];
    if !annotations.is_object() {
        *annotations = json!({});
    }
    annotations[STANDIN_FOR] = json!(plan.url);
    let spec = value["spec"].as_object_mut().expect("a source has a spec");
    for field in [
        "secretRef",
        "certSecretRef",
        "proxySecretRef",
        "verify",
        "serviceAccountName",
        "passCredentials",
        "provider",
    ] {
        spec.remove(field);
    }
    spec.insert("url".into(), json!(url));
    match plan.kind.as_str() {
        "GitRepository" => {
            spec.insert("ref".into(), json!({"branch": "main"}));
        }
        "HelmRepository" => {
            spec.insert("type".into(), json!("oci"));
            spec.insert("insecure".into(), json!(true));
        }
        _ => {
            spec.insert("insecure".into(), json!(true));
            if plan.spec["ref"]["tag"].is_null() && plan.spec["ref"]["semver"].is_null() {
                spec.insert("ref".into(), json!({"tag": plan.oci_tag()}));
            }
        }
    }
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with('.') || path.is_symlink() {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The documents of a YAML stream as text, split at its `---` lines (each ends with a newline).
fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            docs.push(String::new());
        } else {
            let last = docs.last_mut().expect("one document at least");
            last.push_str(line);
            last.push('\n');
        }
    }
    docs
}

/// Pushes one artifact to the local registry (plain HTTP, 127.0.0.1).
async fn push(port: u16, artifact: &Artifact) -> Result<()> {
    // reqwest, under the OCI client, needs a TLS provider even for plain HTTP: kube's ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let reference: oci_client::Reference =
        format!("127.0.0.1:{port}/{}:{}", artifact.repository, artifact.tag)
            .parse()
            .with_context(|| {
                format!(
                    "{}:{} is no OCI reference",
                    artifact.repository, artifact.tag
                )
            })?;
    let layer = oci_client::client::ImageLayer::new(
        artifact.layer.clone(),
        artifact.layer_type.clone(),
        None,
    );
    let config = oci_client::client::Config::new(
        artifact.config.clone(),
        artifact.config_type.to_string(),
        None,
    );
    let auth = oci_client::secrets::RegistryAuth::Anonymous;
    let layers = [layer];
    let push = client.push(&reference, &layers, config, &auth, None);
    tokio::time::timeout(Duration::from_secs(60), push)
        .await
        .context("the local registry did not take the push within 60 s")?
        .with_context(|| format!("pushing {reference}"))?;
    Ok(())
}

/// CNCF distribution's registry on 127.0.0.1, storing in the state directory.
pub struct Registry {
    pub process: ManagedProcess,
}

impl Registry {
    pub fn start(toolchain: &Toolchain, state_dir: &Path, port: u16) -> Result<Self> {
        toolchain.ensure(&[Tool::Registry])?;
        let dir = state_dir.join("registry");
        std::fs::create_dir_all(dir.join("data"))?;
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                render_json(&dir.join("data").to_string_lossy())
            ),
        )?;
        crate::sys::process::ensure_ports_free(
            &[port],
            "stop what uses it or choose other ports with --port-base",
        )?;
        let mut command = std::process::Command::new(toolchain.binary(Tool::Registry, "registry"));
        command.arg("serve").arg(&config);
        let logs = LogFiles {
            raw: dir.join("registry.log"),
            cri: None,
        };
        let mut process = ManagedProcess::spawn("registry", command, &logs, state_dir)?;
        let url = format!("http://127.0.0.1:{port}/v2/");
        let up = crate::sys::process::wait_for(
            "the local registry to answer",
            Duration::from_secs(30),
            || {
                process.ensure_running()?;
                Ok(ureq::get(&url).call().ok().map(|_| ()))
            },
        );
        if let Err(e) = up {
            process.stop(Duration::from_secs(5));
            bail!("{e:#}; see {}", logs.raw.display());
        }
        Ok(Self { process })
    }
}

/// Installs on `cluster` a stand-in CRD for every kind of `render` that it does not serve and the
/// repository ships no CRD for; returns them.
pub async fn install_crds(
    client: &Client,
    cluster: &str,
    render: &Render,
) -> Result<Vec<StandinCrd>> {
    let discovery = kube::Discovery::new(client.clone())
        .run()
        .await
        .context("discovering the API of the cluster")?;
    let mut served = BTreeSet::new();
    for group in discovery.groups() {
        for (resource, _) in group.resources_by_stability() {
            served.insert((resource.group.clone(), resource.kind.clone()));
        }
        for version in group.versions() {
            for (resource, _) in group.versioned_resources(version) {
                served.insert((resource.group.clone(), resource.kind.clone()));
            }
        }
    }
    let crds = standin_crds(cluster, render, &served);
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    // Typed, with no discovery per object: right after a CRD of a new group is created, discovery
    // of that group answers 404 for a moment.
    let params = kube::api::PatchParams::apply(crate::apply::FIELD_MANAGER).force();
    for crd in &crds {
        let object: CustomResourceDefinition = serde_norway::from_str(&crd_manifest(crd))
            .with_context(|| format!("the stand-in CRD {} is not a CRD", crd.name))?;
        api.patch(&crd.name, &params, &kube::api::Patch::Apply(&object))
            .await
            .with_context(|| format!("creating the stand-in CRD {}", crd.name))?;
    }
    for crd in &crds {
        let established = kube::runtime::wait::await_condition(
            api.clone(),
            &crd.name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .with_context(|| {
                format!("the stand-in CRD {} not established within 30 s", crd.name)
            })??;
    }
    Ok(crds)
}

/// The stand-in CRDs `render` needs where `served` (group, kind) are served.
fn standin_crds(
    cluster: &str,
    render: &Render,
    served: &BTreeSet<(String, String)>,
) -> Vec<StandinCrd> {
    let shipped: BTreeSet<(String, String)> = render
        .objects
        .iter()
        .filter(|o| {
            o.kind() == "CustomResourceDefinition" && o.group_version().0 == "apiextensions.k8s.io"
        })
        .map(|o| {
            (
                o.value["spec"]["group"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                o.value["spec"]["names"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let mut wanted: BTreeMap<(String, String), Vec<&Object>> = BTreeMap::new();
    for o in &render.objects {
        let (group, _) = o.group_version();
        if group.is_empty() {
            continue;
        }
        let key = (group.to_string(), o.kind().to_string());
        if served.contains(&key) || shipped.contains(&key) {
            continue;
        }
        wanted.entry(key).or_default().push(o);
    }
    wanted
        .into_iter()
        .map(|((group, kind), objects)| {
            let versions: BTreeSet<String> = objects
                .iter()
                .map(|o| o.group_version().1.to_string())
                .collect();
            let gvk = kube::api::GroupVersionKind::gvk(
                &group,
                versions.iter().next().expect("one object"),
                &kind,
            );
            let plural = kube::discovery::ApiResource::from_gvk(&gvk).plural;
            StandinCrd {
                cluster: cluster.to_string(),
                name: format!("{plural}.{group}"),
                kind,
                versions: versions.into_iter().collect(),
                namespaced: objects.iter().any(|o| o.namespace().is_some()),
                objects: objects.iter().map(|o| o.id()).collect(),
            }
        })
        .collect()
}

/// A permissive CRD: every version served, the first stored, any content kept.
fn crd_manifest(crd: &StandinCrd) -> String {
    let (plural, group) = crd.name.split_once('.').expect("<plural>.<group>");
    let versions: Vec<Value> = crd
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({"name": v, "served": true, "storage": i == 0,
                   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}})
        })
        .collect();
    let mut annotations = json!({STANDIN_FOR: format!("{} of the served repository: no controller runs it", crd.kind)});
    // Kubernetes' own groups (Gateway API's gateway.networking.k8s.io …) refuse a CRD without it;
    // a value starting with "unapproved" is accepted and says what it is.
    if group.ends_with(".k8s.io") || group.ends_with(".kubernetes.io") {
        annotations["api-approved.kubernetes.io"] = json!("unapproved, k8s-ops harness stand-in");
    }
    serde_json::to_string(&json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": crd.name,
            "labels": {STANDIN_LABEL: "true", "app.kubernetes.io/managed-by": "k8s-ops-harness"},
            "annotations": annotations,
        },
        "spec": {
            "group": group,
            "scope": if crd.namespaced { "Namespaced" } else { "Cluster" },
            "names": {"kind": crd.kind, "plural": plural, "singular": crd.kind.to_lowercase(), "listKind": format!("{}List", crd.kind)},
            "versions": versions,
        }
    }))
    .expect("json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Object {
        Object {
            value,
            by: render::ROOT.to_string(),
        }
    }

    #[rstest::rstest]
    #[case::exact("1.2.3", "1.2.3")]
    #[case::v_prefix("v4.0.1", "4.0.1")]
    #[case::empty("", "1.0.0")]
    #[case::wildcard("1.x", "1.0.0")]
    #[case::caret("^2.1", "2.1.0")]
    #[case::range(">=1.0.0 <2.0.0", "1.0.0")]
    #[case::range_comma(">=3.1, <4", "3.1.0")]
    #[case::exclusive_lower(">1.5.0", "1.5.1")]
    #[case::or("~1.2.0 || ^3", "1.2.0")]
    fn a_version_the_constraint_accepts(#[case] constraint: &str, #[case] want: &str) {
        assert_eq!(pick_version(constraint), want);
    }

    #[rstest::rstest]
    #[case::oci("oci://ghcr.io/bjw-s-labs/helm/app-template", Some(("ghcr.io", 443)))]
    #[case::https_port("https://charts.example.com:8443/stable", Some(("charts.example.com", 8443)))]
    #[case::http("http://10.0.0.1/charts", Some(("10.0.0.1", 80)))]
    #[case::ssh("ssh://git@github.com/org/repo", Some(("github.com", 22)))]
    #[case::scp("git@github.com:org/repo.git", Some(("github.com", 22)))]
    #[case::nothing("charts", None)]
    fn host_and_port_of_a_source_url(#[case] url: &str, #[case] want: Option<(&str, u16)>) {
        assert_eq!(host_port(url), want.map(|(h, p)| (h.to_string(), p)));
    }

    #[test]
    fn a_closed_port_does_not_answer_and_a_listener_does() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().port();
        let mut probe = Probe::default();
        assert_eq!(probe.answers(&format!("http://127.0.0.1:{open}/x")), Ok(()));
        drop(listener);
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let why = probe
            .answers(&format!("oci://127.0.0.1:{closed}/x"))
            .unwrap_err();
        assert!(why.starts_with("no answer from 127.0.0.1:"), "{why}");
        let why = Probe::default()
            .answers("oci://no-such-host.invalid/charts")
            .unwrap_err();
        assert!(why.contains("does not resolve"), "{why}");
    }

    #[test]
    fn unknown_kinds_get_crds_unless_served_or_shipped() {
        let render = Render {
            objects: vec![
                object(
                    json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "r", "namespace": "observability"}}),
                ),
                object(
                    json!({"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore", "metadata": {"name": "s"}}),
                ),
                object(
                    json!({"apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource", "metadata": {"name": "v", "namespace": "x"}}),
                ),
                object(
                    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "replicationsources.volsync.backube"},
                              "spec": {"group": "volsync.backube", "names": {"kind": "ReplicationSource"}}}),
                ),
                object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})),
                object(
                    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}),
                ),
            ],
            ..Render::default()
        };
        let served = BTreeSet::from([
            ("apps".to_string(), "Deployment".to_string()),
            (
                "apiextensions.k8s.io".to_string(),
                "CustomResourceDefinition".to_string(),
            ),
        ]);
        let crds = standin_crds("apps", &render, &served);
        let names: Vec<(&str, bool)> = crds
            .iter()
            .map(|c| (c.name.as_str(), c.namespaced))
            .collect();
        assert_eq!(
            names,
            [
                ("clustersecretstores.external-secrets.io", false),
                ("prometheusrules.monitoring.coreos.com", true)
            ]
        );
        let manifest: Value = serde_json::from_str(&crd_manifest(&crds[1])).unwrap();
        assert_eq!(manifest["metadata"]["labels"][STANDIN_LABEL], "true");
        assert_eq!(
            manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
        assert_eq!(manifest["spec"]["names"]["plural"], "prometheusrules");
    }

    #[test]
    fn helm_releases_ask_their_sources_for_charts() {
        let objects = vec![
            object(
                json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository", "metadata": {"name": "app-template", "namespace": "business"},
                          "spec": {"url": "oci://ghcr.io/bjw-s-labs/helm/app-template", "ref": {"tag": "4.2.0"}, "layerSelector": {"mediaType": HELM_CHART, "operation": "copy"}}}),
            ),
            object(
                json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "odoo", "namespace": "business"},
                          "spec": {"chartRef": {"kind": "OCIRepository", "name": "app-template"}}}),
            ),
            object(
                json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository", "metadata": {"name": "bitnami", "namespace": "flux-system"},
                          "spec": {"url": "https://charts.bitnami.com/bitnami"}}),
            ),
            object(
                json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "redis", "namespace": "db"},
                          "spec": {"chart": {"spec": {"chart": "redis", "version": "19.x", "sourceRef": {"kind": "HelmRepository", "name": "bitnami", "namespace": "flux-system"}}}}}),
            ),
        ];
        let renders = BTreeMap::from([(
            "apps".to_string(),
            Render {
                objects,
                ..Render::default()
            },
        )]);
        let plans = plan_sources(&renders);
        assert_eq!(plans.len(), 2);
        let helm = plans.iter().find(|p| p.kind == "HelmRepository").unwrap();
        assert_eq!(helm.registry_path(), "charts.bitnami.com/bitnami");
        let artifacts = helm.artifacts();
        assert_eq!(
            (artifacts[0].repository.as_str(), artifacts[0].tag.as_str()),
            ("charts.bitnami.com/bitnami/redis", "19.0.0")
        );
        let oci = plans.iter().find(|p| p.kind == "OCIRepository").unwrap();
        let artifacts = oci.artifacts();
        assert_eq!(
            (artifacts[0].repository.as_str(), artifacts[0].tag.as_str()),
            ("ghcr.io/bjw-s-labs/helm/app-template", "4.2.0")
        );
        assert_eq!(artifacts[0].layer_type, HELM_CHART);
        let config: Value = serde_json::from_slice(&artifacts[0].config).unwrap();
        assert_eq!(
            (config["name"].as_str(), config["version"].as_str()),
            (Some("app-template"), Some("4.2.0"))
        );
    }

    #[test]
    fn only_the_source_documents_are_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ocirepository.yaml");
        let other =
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-template # kept as written\n";
        std::fs::write(
            &file,
            format!("---\n{other}---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata:\n  name: app-template\nspec:\n  url: oci://ghcr.io/bjw-s-labs/helm/app-template\n  ref:\n    digest: sha256:abc\n  verify:\n    provider: cosign\n"),
        )
        .unwrap();
        let plan = SourcePlan {
            kind: "OCIRepository".into(),
            namespace: "business".into(),
            name: "app-template".into(),
            url: "oci://ghcr.io/bjw-s-labs/helm/app-template".into(),
            spec: json!({"ref": {"digest": "sha256:abc"}}),
            ..SourcePlan::default()
        };
        let url = "oci://127.0.0.1:5000/ghcr.io/bjw-s-labs/helm/app-template";
        assert_eq!(rewrite(dir.path(), &plan, url).unwrap(), 1);
        let docs = split_documents(&std::fs::read_to_string(&file).unwrap());
        let value: Value = serde_norway::from_str(&docs[2]).unwrap();
        assert_eq!(
            value["spec"]["url"],
            "oci://127.0.0.1:5000/ghcr.io/bjw-s-labs/helm/app-template"
        );
        assert_eq!(value["spec"]["insecure"], true);
        assert_eq!(value["spec"]["ref"], json!({"tag": "latest"}));
        assert!(value["spec"]["verify"].is_null());
        assert_eq!(
            value["metadata"]["annotations"][STANDIN_FOR],
            "oci://ghcr.io/bjw-s-labs/helm/app-template"
        );
        assert_eq!(docs[1], other, "the other document stays as written");
    }
}
