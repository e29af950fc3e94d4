//! Server-side apply of multi-document YAML with kube-rs, and the kube-rs client for a context.

use std::path::Path;

use anyhow::{Context, Result};
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Api, Client, Discovery, ResourceExt};
use serde::Deserialize;

/// Field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "k8s-ops-harness";

/// A kube-rs client for `context` of the kubeconfig file at `path` (never the ambient kubeconfig).
pub async fn client_for(path: &Path, context: &str) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("context {context} in {}", path.display()))?;
    Ok(Client::try_from(config)?)
}

/// Applies every document of `yaml` (server-side apply, forced), resolving kinds by discovery.
pub async fn apply_yaml(client: &Client, yaml: &str) -> Result<Vec<String>> {
    let discovery = discover(client).await?;
    let mut applied = Vec::new();
    for doc in serde_norway::Deserializer::from_str(yaml) {
        let value = serde_norway::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_norway::from_value(value)?;
        applied.push(apply_object(client, &discovery, obj).await?);
    }
    Ok(applied)
}

/// The cluster's API. A group whose CRD was just created can answer 404 for a moment while the
/// API server registers it: tried again, briefly, before that is an error.
async fn discover(client: &Client) -> Result<Discovery> {
    let mut attempt = 1;
    loop {
        match Discovery::new(client.clone()).run().await {
            Ok(discovery) => return Ok(discovery),
            Err(_) if attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("discovering the API of the cluster"),
        }
    }
}

/// Applies one object; returns `Kind/namespace/name`.
pub async fn apply_object(
    client: &Client,
    discovery: &Discovery,
    obj: DynamicObject,
) -> Result<String> {
    let types = obj
        .types
        .clone()
        .context("object without apiVersion/kind")?;
    let gvk = kube::core::GroupVersionKind::try_from(&types)?;
    let (resource, caps) = discovery.resolve_gvk(&gvk).with_context(|| {
        format!(
            "the API server does not serve {}/{}",
            types.api_version, types.kind
        )
    })?;
    let name = obj.name_any();
    let api = dynamic_api(client, &resource, &caps, obj.namespace().as_deref());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(&obj))
        .await
        .with_context(|| format!("applying {} {name}", types.kind))?;
    Ok(format!(
        "{}/{}/{}",
        types.kind,
        obj.namespace().unwrap_or_default(),
        name
    ))
}

/// An `Api<DynamicObject>` for a discovered resource, namespaced when it is.
pub fn dynamic_api(
    client: &Client,
    resource: &ApiResource,
    caps: &ApiCapabilities,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match (&caps.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, resource),
        (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), resource),
        (Scope::Cluster, _) => Api::all_with(client.clone(), resource),
    }
}
