//! The served copy's rewrite: each source that is stood in for points at its stand-in, in the
//! served copy only (never the operator's checkout), annotated with the URL it replaces.

use super::*;

/// Points the source documents of `plan` in the served copy at their stand-in; returns how many
/// documents changed.
pub(super) fn rewrite(work: &Path, plan: &SourcePlan, url: &str) -> Result<usize> {
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
pub(super) fn point_at_standin(value: &mut Value, plan: &SourcePlan, url: &str) {
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

pub(super) fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
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
pub(super) fn split_documents(text: &str) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
