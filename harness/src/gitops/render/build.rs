//! One `kustomize build` as kustomize-controller runs it for a Kustomization's spec: its path,
//! with the kustomization Flux generates when the path has none, and its own transformations.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{Value, json};

use super::Tools;

/// One `kustomize build` as kustomize-controller runs it for a Kustomization's spec.
#[derive(Debug, Default)]
pub(super) struct Build {
    path: String,
    components: Vec<String>,
    patches: Vec<Value>,
    target_namespace: Option<String>,
    name_prefix: Option<String>,
    name_suffix: Option<String>,
}

impl Build {
    pub(super) fn path(path: &str) -> Self {
        Self {
            path: path.to_string(),
            ..Self::default()
        }
    }

    pub(super) fn of(spec: &Value) -> Self {
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

/// The bound of one `kubectl kustomize` (a large app directory builds in well under a second).
const KUSTOMIZE_BOUND: std::time::Duration = std::time::Duration::from_secs(120);

pub(super) const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

pub(super) fn has_kustomization(dir: &Path) -> bool {
    KUSTOMIZATION_FILES.iter().any(|f| dir.join(f).is_file())
}

/// Builds `build` in `checkout`: the objects it yields, as JSON values.
pub(super) fn build(checkout: &Path, build: &Build, tools: &Tools) -> Result<Vec<Value>> {
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
    let out = crate::sys::exec::run(
        &format!("kubectl kustomize {}", build.path),
        duct::cmd!(
            &tools.kubectl,
            "kustomize",
            "--load-restrictor=LoadRestrictionsNone",
            &target
        ),
        KUSTOMIZE_BOUND,
    )?;
    documents(&out)
}

/// The kustomization kustomize-controller generates around a Kustomization's path: the path
/// itself when it has a kustomization, else every manifest below it (a subdirectory with its own
/// kustomization as a whole), then the Kustomization's own transformations.
/// Paths in it are relative to `at`, the wrapper's directory (kustomize refuses absolute
/// component paths). Written as JSON, which is YAML.
pub(super) fn wrapper_kustomization(at: &Path, dir: &Path, build: &Build) -> Result<String> {
    let up = "../".repeat(at.components().count().saturating_sub(1));
    let relative = |p: &Path| format!("{up}{}", p.to_string_lossy().trim_start_matches('/'));
    let mut resources = Vec::new();
    if has_kustomization(dir) {
        resources.push(dir.to_path_buf());
    } else {
        collect_manifests(dir, &mut resources)?;
    }
    let mut k = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources.iter().map(|r| relative(r)).collect::<Vec<_>>(),
    });
    if !build.components.is_empty() {
        let components: Vec<String> = build
            .components
            .iter()
            .map(|c| relative(&dir.join(c)))
            .collect();
        k["components"] = json!(components);
    }
    for (key, value) in [
        ("namespace", &build.target_namespace),
        ("namePrefix", &build.name_prefix),
        ("nameSuffix", &build.name_suffix),
    ] {
        if let Some(value) = value {
            k[key] = json!(value);
        }
    }
    if !build.patches.is_empty() {
        k["patches"] = json!(build.patches);
    }
    Ok(serde_json::to_string_pretty(&k)?)
}

/// Every Kubernetes manifest below `dir` (sorted), as kustomize-controller's generator finds them.
pub(super) fn collect_manifests(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
