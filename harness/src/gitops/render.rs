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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

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

/// Renders the cluster whose entry path is `entry` in `checkout`.
pub fn cluster(checkout: &Path, entry: &str, tools: &Tools) -> Result<Render> {
    let mut render = Render::default();
    let root_objects = build(checkout, &Build::path(entry), tools)
        .with_context(|| format!("rendering the entry path ./{entry}"))?;
    let mut queue: VecDeque<(Value, usize)> = VecDeque::new();
    let mut seen = BTreeSet::from([ROOT.to_string()]);
    let mut push = |render: &mut Render, objects: Vec<Value>, by: &str, queue: &mut VecDeque<_>| {
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
                if seen.insert(key) {
                    queue.push_back((object.value.clone(), 0));
                }
            }
            render.objects.push(object);
        }
    };
    let (installation, root_objects): (Vec<Value>, Vec<Value>) = root_objects
        .into_iter()
        .filter(|o| !is_bootstrap(o))
        .partition(crate::gitops::is_flux_installation);
    if !installation.is_empty() {
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
        render.notes.push(format!(
            "the repository's own Flux installation is left out of ./{entry} ({}): the environment runs Flux already",
            ids.join(", ")
        ));
    }
    push(&mut render, root_objects, ROOT, &mut queue);

    while let Some((ks, attempts)) = queue.pop_front() {
        let namespace = ks["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let id = format!(
            "{namespace}/{}",
            ks["metadata"]["name"].as_str().unwrap_or_default()
        );
        let spec = &ks["spec"];
        let source = &spec["sourceRef"];
        let source_ns = source["namespace"].as_str().unwrap_or(&namespace);
        if source["kind"] != "GitRepository"
            || source["name"] != "flux-system"
            || source_ns != crate::flux::NAMESPACE
        {
            render.not_rendered.push((
                id,
                format!(
                    "its source {} {source_ns}/{} is not the served repository",
                    source["kind"].as_str().unwrap_or("?"),
                    source["name"].as_str().unwrap_or("?")
                ),
            ));
            continue;
        }
        if spec["suspend"] == true {
            render
                .not_rendered
                .push((id, "suspended in the repository".to_string()));
            continue;
        }
        let (vars, missing) = variables(spec, &namespace, &render.objects);
        if !missing.is_empty() && attempts < 3 && !queue.is_empty() {
            // Its substituteFrom objects may come with a Kustomization later in the queue.
            queue.push_back((ks, attempts + 1));
            continue;
        }
        for m in missing {
            render.notes.push(format!(
                "Kustomization {id}: substituteFrom {m} is not in the repository"
            ));
        }
        let built = build(checkout, &Build::of(spec), tools)
            .with_context(|| format!("rendering Kustomization {id}"))?;
        let built = substitute(built, &vars, tools).with_context(|| {
            format!("substituting the postBuild variables of Kustomization {id}")
        })?;
        push(&mut render, built, &id, &mut queue);
    }
    Ok(render)
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

/// One `kustomize build` as kustomize-controller runs it for a Kustomization's spec.
#[derive(Debug, Default)]
struct Build {
    path: String,
    components: Vec<String>,
    patches: Vec<Value>,
    target_namespace: Option<String>,
    name_prefix: Option<String>,
    name_suffix: Option<String>,
}

impl Build {
    fn path(path: &str) -> Self {
        Self {
            path: path.to_string(),
            ..Self::default()
        }
    }

    fn of(spec: &Value) -> Self {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        };
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(String::from);
        Self {
            path: spec["path"].as_str().unwrap_or("./").to_string(),
            components: strings(&spec["components"]),
            patches: spec["patches"].as_array().cloned().unwrap_or_default(),
            target_namespace: text(&spec["targetNamespace"]),
            name_prefix: text(&spec["namePrefix"]),
            name_suffix: text(&spec["nameSuffix"]),
        }
    }

    fn is_plain(&self) -> bool {
        self.components.is_empty()
            && self.patches.is_empty()
            && self.target_namespace.is_none()
            && self.name_prefix.is_none()
            && self.name_suffix.is_none()
    }
}

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

fn has_kustomization(dir: &Path) -> bool {
    KUSTOMIZATION_FILES.iter().any(|f| dir.join(f).is_file())
}

/// Builds `build` in `checkout`: the objects it yields, as JSON values.
fn build(checkout: &Path, build: &Build, tools: &Tools) -> Result<Vec<Value>> {
    let relative = build.path.trim_start_matches("./").trim_end_matches('/');
    anyhow::ensure!(
        !relative.split('/').any(|p| p == ".."),
        "spec.path {} leaves the repository",
        build.path
    );
    let dir = checkout.join(relative);
    anyhow::ensure!(
        dir.is_dir(),
        "spec.path {} is not a directory of the repository",
        build.path
    );
    let wrapper = tempfile::tempdir()?;
    let target = if has_kustomization(&dir) && build.is_plain() {
        dir.clone()
    } else {
        std::fs::write(
            wrapper.path().join("kustomization.yaml"),
            wrapper_kustomization(wrapper.path(), &dir, build)?,
        )?;
        wrapper.path().to_path_buf()
    };
    let out = duct::cmd!(
        &tools.kubectl,
        "kustomize",
        "--load-restrictor=LoadRestrictionsNone",
        &target
    )
    .stdout_capture()
    .stderr_capture()
    .unchecked()
    .run()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        build.path,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    documents(&String::from_utf8_lossy(&out.stdout))
}

/// The kustomization kustomize-controller generates around a Kustomization's path: the path
/// itself when it has a kustomization, else every manifest below it (a subdirectory with its own
/// kustomization as a whole), then the Kustomization's own transformations.
/// Paths in it are relative to `at`, the wrapper's directory (kustomize refuses absolute
/// component paths).
fn wrapper_kustomization(at: &Path, dir: &Path, build: &Build) -> Result<String> {
    let up = "../".repeat(at.components().count().saturating_sub(1));
    let relative = |p: &Path| {
        let p = p.to_string_lossy();
        json(&format!("{up}{}", p.trim_start_matches('/')))
    };
    let mut resources = Vec::new();
    if has_kustomization(dir) {
        resources.push(dir.to_path_buf());
    } else {
        collect_manifests(dir, &mut resources)?;
    }
    let mut k = String::from(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    for r in &resources {
        let _ = writeln!(k, "  - {}", relative(r));
    }
    if !build.components.is_empty() {
        k.push_str("components:\n");
        for c in &build.components {
            let _ = writeln!(k, "  - {}", relative(&dir.join(c)));
        }
    }
    if let Some(ns) = &build.target_namespace {
        let _ = writeln!(k, "namespace: {}", json(ns));
    }
    if let Some(p) = &build.name_prefix {
        let _ = writeln!(k, "namePrefix: {}", json(p));
    }
    if let Some(s) = &build.name_suffix {
        let _ = writeln!(k, "nameSuffix: {}", json(s));
    }
    if !build.patches.is_empty() {
        let _ = writeln!(k, "patches: {}", serde_json::to_string(&build.patches)?);
    }
    Ok(k)
}

fn json(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// Every Kubernetes manifest below `dir` (sorted), as kustomize-controller's generator finds them.
fn collect_manifests(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            if has_kustomization(&path) {
                out.push(path);
            } else {
                collect_manifests(&path, out)?;
            }
        } else if [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e)) {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if documents(&text).is_ok_and(|d| !d.is_empty()) {
                out.push(path);
            }
        }
    }
    Ok(())
}

/// The Kubernetes objects (an apiVersion and a kind) of a multi-document YAML stream.
pub fn documents(text: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value: Value = match serde::Deserialize::deserialize(doc) {
            Ok(v) => v,
            Err(e) => return Err(anyhow::anyhow!("not YAML: {e}")),
        };
        if value["apiVersion"].is_string() && value["kind"].is_string() {
            out.push(value);
        }
    }
    Ok(out)
}

/// The postBuild variables of a Kustomization: its `substituteFrom` objects' data (in order, from
/// the render) overridden by `substitute`, as kustomize-controller loads them; and the
/// substituteFrom objects (not optional) that are not in the render.
fn variables(
    spec: &Value,
    namespace: &str,
    objects: &[Object],
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut vars = BTreeMap::new();
    let mut missing = Vec::new();
    let post = &spec["postBuild"];
    for from in post["substituteFrom"].as_array().into_iter().flatten() {
        let kind = from["kind"].as_str().unwrap_or_default();
        let name = from["name"].as_str().unwrap_or_default();
        let found = objects.iter().rev().find(|o| {
            o.api_version() == "v1"
                && o.kind() == kind
                && o.name() == name
                && o.namespace().unwrap_or("default") == namespace
        });
        match found {
            Some(o) => vars.extend(data_of(&o.value)),
            None if from["optional"] == true => {}
            None => missing.push(format!("{kind} {namespace}/{name}")),
        }
    }
    for (k, v) in post["substitute"].as_object().into_iter().flatten() {
        vars.insert(
            k.clone(),
            v.as_str().map_or_else(|| v.to_string(), String::from),
        );
    }
    (vars, missing)
}

/// The key/values of a ConfigMap, or of a Secret that is not SOPS-encrypted.
fn data_of(o: &Value) -> BTreeMap<String, String> {
    use base64::Engine as _;
    let mut out = BTreeMap::new();
    if o.get("sops").is_some() {
        return out;
    }
    let secret = o["kind"] == "Secret";
    for (k, v) in o["data"].as_object().into_iter().flatten() {
        let text = v.as_str().unwrap_or_default();
        let value = if secret {
            match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(_) => continue,
            }
        } else {
            text.to_string()
        };
        out.insert(k.clone(), value);
    }
    if secret {
        for (k, v) in o["stringData"].as_object().into_iter().flatten() {
            out.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
        }
    }
    out
}

/// Applies the variables with `flux envsubst` (non-strict, as kustomize-controller does) to every
/// object not annotated `kustomize.toolkit.fluxcd.io/substitute: disabled`.
fn substitute(
    objects: Vec<Value>,
    vars: &BTreeMap<String, String>,
    tools: &Tools,
) -> Result<Vec<Value>> {
    let (disabled, enabled): (Vec<Value>, Vec<Value>) = objects.into_iter().partition(|o| {
        o["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/substitute"] == "disabled"
    });
    if enabled.is_empty() {
        return Ok(disabled);
    }
    let stream = enabled
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()?
        .join("\n---\n");
    let env: Vec<(String, String)> = vars
        .iter()
        .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let out = duct::cmd!(&tools.flux, "envsubst")
        .full_env(env)
        .stdin_bytes(stream)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()?;
    anyhow::ensure!(
        out.status.success(),
        "flux envsubst: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let mut substituted = documents(&String::from_utf8_lossy(&out.stdout))?;
    substituted.extend(disabled);
    Ok(substituted)
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

    #[test]
    fn variables_come_from_substitute_over_substitute_from() {
        let cm = Object {
            value: serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cluster-settings", "namespace": "flux-system"},
                "data": {"CLUSTER": "apps", "DOMAIN": "example.com"}}),
            by: ROOT.to_string(),
        };
        let secret = Object {
            value: serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "cluster-secrets", "namespace": "flux-system"},
                "data": {"TOKEN": "c2VjcmV0"}}),
            by: ROOT.to_string(),
        };
        let spec = serde_json::json!({"postBuild": {
            "substitute": {"DOMAIN": "override.test"},
            "substituteFrom": [
                {"kind": "ConfigMap", "name": "cluster-settings"},
                {"kind": "Secret", "name": "cluster-secrets"},
                {"kind": "Secret", "name": "not-there", "optional": true},
                {"kind": "ConfigMap", "name": "missing"}]}});
        let (vars, missing) = variables(&spec, "flux-system", &[cm, secret]);
        assert_eq!(vars["CLUSTER"], "apps");
        assert_eq!(vars["DOMAIN"], "override.test");
        assert_eq!(vars["TOKEN"], "secret");
        assert_eq!(missing, ["ConfigMap flux-system/missing"]);
    }

    #[test]
    fn a_path_without_kustomization_gets_flux_generated_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app/sub")).unwrap();
        std::fs::write(
            dir.path().join("app/a.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("app/notes.yaml"), "just: data\n").unwrap();
        std::fs::write(
            dir.path().join("app/sub/kustomization.yaml"),
            "resources: []\n",
        )
        .unwrap();
        let build = Build {
            path: "./app".into(),
            components: vec!["../components/common".into()],
            target_namespace: Some("business".into()),
            ..Build::default()
        };
        let k =
            wrapper_kustomization(Path::new("/tmp/w"), &dir.path().join("app"), &build).unwrap();
        let parsed: serde_json::Value = serde_norway::from_str(&k).unwrap();
        let resources: Vec<&str> = parsed["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(resources.len(), 2, "{k}");
        assert!(
            resources[0].ends_with("app/a.yaml") && resources[1].ends_with("app/sub"),
            "{k}"
        );
        assert!(
            resources
                .iter()
                .all(|r| r.starts_with("../../") && !r.starts_with("../../../")),
            "{k}"
        );
        assert!(
            parsed["components"][0]
                .as_str()
                .unwrap()
                .ends_with("app/../components/common")
        );
        assert_eq!(parsed["namespace"], "business");
    }
}
