//! Renders a served GitOps repository the way Flux will, without a cluster: from a cluster's entry
//! path (the root Kustomization, the repository's own bootstrap objects left out as
//! [`crate::gitops`] does), every Flux Kustomization it yields whose source is the served
//! repository is built in turn — `kubectl kustomize` on its `spec.path` with Flux's generated
//! kustomization when the path has none, its `components`, `patches`, `targetNamespace`,
//! `namePrefix`/`nameSuffix` — and its `postBuild` substitution applied by `flux envsubst` (Flux's
//! own implementation) with `substitute` and the values of the ConfigMaps/Secrets of
//! `substituteFrom` found in the render.
//!
//! What the harness needs it for ([`crate::gitops::standins`]): the kinds no API serves (stand-in CRDs),
//! the sources that cannot be fetched here (stand-in sources), and the Flux objects a cluster must
//! end up with (scenarios compare the cluster with the render).

mod build;
mod substitute;

pub use build::documents;

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use build::{Build, build};
use substitute::{substitute, variables};

/// The two tools a render runs: `kubectl kustomize` and `flux envsubst`.
#[derive(Debug, Clone)]
pub struct Tools {
    pub kubectl: PathBuf,
    pub flux: PathBuf,
}

impl Tools {
    pub fn of(toolchain: &crate::toolchain::Toolchain) -> Self {
        use crate::toolchain::Tool;
        Self {
            kubectl: toolchain.binary(Tool::Kubernetes, "kubectl"),
            flux: toolchain.binary(Tool::Flux, "flux"),
        }
    }
}

/// One object of the render, with the Flux Kustomization that applies it (`namespace/name`).
#[derive(Debug, Clone)]
pub struct Object {
    pub value: Value,
    pub by: String,
}

impl Object {
    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or_default()
    }
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
    pub fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
    }
    /// `(group, version)` of its apiVersion (`""` for the core group).
    pub fn group_version(&self) -> (&str, &str) {
        match self.api_version().split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", self.api_version()),
        }
    }
    /// A Flux object: its group is one of Flux's `*.toolkit.fluxcd.io`.
    pub fn is_flux(&self) -> bool {
        self.group_version().0.ends_with(".toolkit.fluxcd.io")
    }
    /// `Kind namespace/name`, as the closing tables write it.
    pub fn id(&self) -> String {
        format!(
            "{} {}/{}",
            self.kind(),
            self.namespace().unwrap_or("-"),
            self.name()
        )
    }
}

/// A cluster's render.
#[derive(Debug, Clone, Default)]
pub struct Render {
    pub objects: Vec<Object>,
    /// Flux Kustomizations whose content is not in the render, with why (another source, suspended).
    pub not_rendered: Vec<(String, String)>,
    /// Substitutions that could not be resolved (a substituteFrom object that is not in the repo).
    pub notes: Vec<String>,
}

impl Render {
    /// The Flux objects (every `*.toolkit.fluxcd.io` kind), as `Kind namespace/name`.
    pub fn flux_objects(&self) -> BTreeSet<String> {
        self.objects
            .iter()
            .filter(|o| o.is_flux())
            .map(Object::id)
            .collect()
    }
}

/// The root Kustomization of every environment.
pub const ROOT: &str = "flux-system/flux-system";

/// Renders the cluster whose entry path is `entry` in `checkout`: the entry path, then every Flux
/// Kustomization it yields (and they yield) whose source is the served repository, in turn.
pub fn cluster(checkout: &Path, entry: &str, tools: &Tools) -> Result<Render> {
    let root_objects = build(checkout, &Build::path(entry), tools)
        .with_context(|| format!("rendering the entry path ./{entry}"))?;
    let (installation, root_objects): (Vec<Value>, Vec<Value>) = root_objects
        .into_iter()
        .filter(|o| !is_bootstrap(o))
        .partition(crate::gitops::is_flux_installation);
    let mut walk = Walk::default();
    if !installation.is_empty() {
        walk.render
            .notes
            .push(installation_note(entry, &installation));
    }
    walk.push(root_objects, ROOT);
    while let Some((ks, attempts)) = walk.queue.pop_front() {
        let namespace = ks["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let id = format!(
            "{namespace}/{}",
            ks["metadata"]["name"].as_str().unwrap_or_default()
        );
        let spec = &ks["spec"];
        if let Some(why) = not_rendered(spec, &namespace) {
            walk.render.not_rendered.push((id, why));
            continue;
        }
        let (vars, missing) = variables(spec, &namespace, &walk.render.objects);
        if !missing.is_empty() && attempts < 3 && !walk.queue.is_empty() {
            // Its substituteFrom objects may come with a Kustomization later in the queue.
            walk.queue.push_back((ks, attempts + 1));
            continue;
        }
        for m in missing {
            walk.render.notes.push(format!(
                "Kustomization {id}: substituteFrom {m} is not in the repository"
            ));
        }
        let built = build(checkout, &Build::of(spec), tools)
            .with_context(|| format!("rendering Kustomization {id}"))?;
        let built = substitute(built, &vars, tools).with_context(|| {
            format!("substituting the postBuild variables of Kustomization {id}")
        })?;
        walk.push(built, &id);
    }
    Ok(walk.render)
}

/// The render so far and the Flux Kustomizations still to render (each with how often it was put
/// back to wait for its substituteFrom objects); each Kustomization is queued once.
struct Walk {
    render: Render,
    queue: VecDeque<(Value, usize)>,
    seen: BTreeSet<String>,
}

impl Default for Walk {
    fn default() -> Self {
        Self {
            render: Render::default(),
            queue: VecDeque::new(),
            seen: BTreeSet::from([ROOT.to_string()]),
        }
    }
}

impl Walk {
    /// Adds `objects`, applied by `by`, and queues the Flux Kustomizations among them.
    fn push(&mut self, objects: Vec<Value>, by: &str) {
        for value in objects {
            let object = Object {
                value,
                by: by.to_string(),
            };
            if object.kind() == "Kustomization"
                && object.group_version().0 == "kustomize.toolkit.fluxcd.io"
            {
                let key = format!(
                    "{}/{}",
                    object.namespace().unwrap_or("default"),
                    object.name()
                );
                if self.seen.insert(key) {
                    self.queue.push_back((object.value.clone(), 0));
                }
            }
            self.render.objects.push(object);
        }
    }
}

/// Why a Kustomization's content is not rendered: another source than the served repository, or
/// suspended in the repository. `None`: it is rendered.
fn not_rendered(spec: &Value, namespace: &str) -> Option<String> {
    let source = &spec["sourceRef"];
    let source_ns = source["namespace"].as_str().unwrap_or(namespace);
    if source["kind"] != "GitRepository"
        || source["name"] != "flux-system"
        || source_ns != crate::flux::NAMESPACE
    {
        return Some(format!(
            "its source {} {source_ns}/{} is not the served repository",
            source["kind"].as_str().unwrap_or("?"),
            source["name"].as_str().unwrap_or("?")
        ));
    }
    (spec["suspend"] == true).then(|| "suspended in the repository".to_string())
}

/// The note that the repository's own Flux installation in the entry path is left out.
fn installation_note(entry: &str, installation: &[Value]) -> String {
    let ids: Vec<String> = installation
        .iter()
        .map(|o| {
            format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["namespace"].as_str().unwrap_or("-"),
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    format!(
        "the repository's own Flux installation is left out of ./{entry} ({}): the environment runs Flux already",
        ids.join(", ")
    )
}

/// What `flux bootstrap` leaves in a repository, which the environment's own Flux replaces (the
/// root Kustomization's patches in [`crate::gitops`] leave the same objects out).
fn is_bootstrap(o: &Value) -> bool {
    let meta = &o["metadata"];
    meta["labels"]["app.kubernetes.io/part-of"] == "flux"
        || (meta["name"] == "flux-system"
            && meta["namespace"] == crate::flux::NAMESPACE
            && matches!(
                o["apiVersion"].as_str(),
                Some(a) if a.starts_with("source.toolkit.fluxcd.io/") || a.starts_with("kustomize.toolkit.fluxcd.io/")
            )
            && matches!(o["kind"].as_str(), Some("GitRepository" | "Kustomization")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_objects_are_left_out_like_the_root_patches_do() {
        let docs = documents(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: flux-system, namespace: flux-system}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: source-controller, namespace: flux-system, labels: {app.kubernetes.io/part-of: flux}}\n---\n\
             apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps, namespace: flux-system}\n",
        )
        .unwrap();
        let kept: Vec<_> = docs.iter().filter(|d| !is_bootstrap(d)).collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0]["metadata"]["name"], "apps");
    }
}
