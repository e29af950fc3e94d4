//! The postBuild substitution of a Kustomization: its variables (`substitute` over the data of its
//! `substituteFrom` objects found in the render) applied by `flux envsubst`, Flux's own
//! implementation.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::Value;

use super::build::documents;
use super::{Object, Tools};

/// The postBuild variables of a Kustomization: its `substituteFrom` objects' data (in order, from
/// the render) overridden by `substitute`, as kustomize-controller loads them; and the
/// substituteFrom objects (not optional) that are not in the render.
pub(super) fn variables(
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
pub(super) fn data_of(o: &Value) -> BTreeMap<String, String> {
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
pub(super) fn substitute(
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
    use super::super::ROOT;
    use super::*;

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
}
