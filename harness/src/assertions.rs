//! kube-rs reads and bounded waits on Flux objects: readiness, `spec.suspend`, the handled
//! reconcile token, and fingerprints (generation, labels, annotations) to prove that nothing changed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use kube::api::{DynamicObject, ListParams};
use kube::discovery::ApiResource;
use kube::runtime::wait::await_condition;
use kube::{Api, Client};

use crate::flux;

/// One status condition of a Flux object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// The condition `type_` (e.g. `Ready`) of `obj`, if it has one.
pub fn condition(obj: &DynamicObject, type_: &str) -> Option<Condition> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| Condition {
            status: c["status"].as_str().unwrap_or_default().to_string(),
            reason: c["reason"].as_str().unwrap_or_default().to_string(),
            message: c["message"].as_str().unwrap_or_default().to_string(),
        })
}

/// Ready=True for the object's current generation.
pub fn is_ready(obj: &DynamicObject) -> bool {
    let observed = obj.data["status"]["observedGeneration"].as_i64();
    condition(obj, "Ready").is_some_and(|c| c.status == "True")
        && observed == obj.metadata.generation
}

pub fn is_suspended(obj: &DynamicObject) -> bool {
    obj.data["spec"]["suspend"].as_bool().unwrap_or(false)
}

/// `status.lastHandledReconcileAt`: the last `reconcile.fluxcd.io/requestedAt` token the controller handled.
pub fn last_handled_reconcile_at(obj: &DynamicObject) -> Option<String> {
    obj.data["status"]["lastHandledReconcileAt"]
        .as_str()
        .map(str::to_string)
}

/// `status.artifact.revision` of a source (`main@sha1:<commit>`); empty when it has no artifact.
pub fn artifact_revision(obj: &DynamicObject) -> String {
    obj.data["status"]["artifact"]["revision"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `reconcile.fluxcd.io/requestedAt` annotation, the token `flux reconcile` sets.
pub fn requested_at(obj: &DynamicObject) -> Option<String> {
    obj.metadata
        .annotations
        .as_ref()?
        .get("reconcile.fluxcd.io/requestedAt")
        .cloned()
}

/// A one-line summary of an object's state, for timeout messages.
pub fn describe(obj: &DynamicObject) -> String {
    let ready = condition(obj, "Ready")
        .map(|c| format!("Ready={} {}: {}", c.status, c.reason, c.message))
        .unwrap_or_else(|| "no Ready condition".into());
    format!(
        "{}/{} suspend={} gen={:?} observed={:?} {ready}",
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.metadata.name.as_deref().unwrap_or_default(),
        is_suspended(obj),
        obj.metadata.generation,
        obj.data["status"]["observedGeneration"].as_i64(),
    )
}

/// Reads one object.
pub async fn get(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
) -> Result<DynamicObject> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    api.get(name)
        .await
        .with_context(|| format!("reading {} {namespace}/{name}", resource.kind))
}

/// Waits until `pred` holds for the object, at most `timeout`; the error names the object's last state.
pub async fn wait_until(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&DynamicObject) -> bool,
) -> Result<DynamicObject> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    let waited = tokio::time::timeout(
        timeout,
        await_condition(api.clone(), name, move |o: Option<&DynamicObject>| {
            o.is_some_and(&pred)
        }),
    )
    .await;
    match waited {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => Err(anyhow!(
            "{} {namespace}/{name} disappeared while waiting for {what}",
            resource.kind
        )),
        Ok(Err(e)) => Err(anyhow!(
            "watching {} {namespace}/{name}: {e}",
            resource.kind
        )),
        Err(_) => {
            let last = api
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .map(|o| describe(&o))
                .unwrap_or_else(|| "not found".into());
            Err(anyhow!(
                "timed out after {timeout:?} waiting for {} {namespace}/{name} to be {what}; last state: {last}",
                resource.kind
            ))
        }
    }
}

/// Waits for Ready=True at the current generation.
pub async fn wait_ready(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<DynamicObject> {
    wait_until(
        client, resource, namespace, name, "Ready", timeout, is_ready,
    )
    .await
}

/// Waits for Ready (as [`wait_ready`]) and fails when the object is still suspended: what a
/// resume must leave behind.
pub async fn wait_resumed(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<DynamicObject> {
    let obj = wait_ready(client, resource, namespace, name, timeout).await?;
    anyhow::ensure!(
        !is_suspended(&obj),
        "{} {namespace}/{name} is Ready but still suspended",
        resource.kind
    );
    Ok(obj)
}

/// `Kind/namespace/name -> generation, labels and annotations` of every Kustomization, HelmRelease,
/// GitRepository and HelmChart (only those called `name`, when given): equal fingerprints before and
/// after a command prove it wrote nothing to those Flux objects. Everything a command can write shows
/// here (`spec.suspend` bumps the generation, a reconcile request is an annotation); the status the
/// controllers keep writing on every interval does not, so a scheduled reconcile is no false alarm.
pub async fn flux_fingerprint(
    client: &Client,
    name: Option<&str>,
) -> Result<BTreeMap<String, String>> {
    let params = match name {
        Some(name) => ListParams::default().fields(&format!("metadata.name={name}")),
        None => ListParams::default(),
    };
    let mut out = BTreeMap::new();
    for resource in [
        flux::kustomizations(),
        flux::helmreleases(),
        flux::gitrepositories(),
        flux::helmcharts(),
    ] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        for obj in api.list(&params).await? {
            out.insert(
                format!(
                    "{}/{}/{}",
                    resource.kind,
                    obj.metadata.namespace.unwrap_or_default(),
                    obj.metadata.name.unwrap_or_default()
                ),
                format!(
                    "generation {} labels {:?} annotations {:?}",
                    obj.metadata.generation.unwrap_or_default(),
                    obj.metadata.labels.unwrap_or_default(),
                    obj.metadata.annotations.unwrap_or_default()
                ),
            );
        }
    }
    Ok(out)
}

/// A Flux object that is not Ready, and why (its Ready condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `False`, `Unknown` or `missing` (no Ready condition yet).
    pub status: String,
    pub why: String,
}

/// Every Flux object of the cluster that is not Ready (sources, Kustomizations, HelmReleases).
pub async fn not_ready(client: &Client) -> Result<Vec<NotReady>> {
    let mut out = Vec::new();
    for resource in [
        flux::gitrepositories(),
        flux::ocirepositories(),
        flux::helmrepositories(),
        flux::helmcharts(),
        flux::kustomizations(),
        flux::helmreleases(),
    ] {
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::all_with(client.clone(), &resource);
        let list = match api.list(&Default::default()).await {
            Ok(list) => list,
            // A source kind this cluster's Flux does not serve.
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e.into()),
        };
        for obj in list {
            // An OCI HelmRepository is a static object: source-controller gives it no conditions.
            let static_oci = resource.kind == "HelmRepository" && obj.data["spec"]["type"] == "oci";
            if is_ready(&obj) || is_suspended(&obj) || static_oci {
                continue;
            }
            let ready = condition(&obj, "Ready");
            out.push(NotReady {
                kind: resource.kind.clone(),
                namespace: obj.metadata.namespace.clone().unwrap_or_default(),
                name: obj.metadata.name.clone().unwrap_or_default(),
                status: ready
                    .as_ref()
                    .map_or_else(|| "missing".to_string(), |c| c.status.clone()),
                why: ready.map_or_else(String::new, |c| {
                    format!("{}: {}", c.reason, c.message.replace('\n', " "))
                }),
            });
        }
    }
    Ok(out)
}

/// What is not Ready on each cluster, as an aligned table for the end of `harness up`.
pub fn not_ready_table(rows: &[(String, NotReady)]) -> String {
    let mut cells = vec![["CLUSTER", "KIND", "NAMESPACE/NAME", "READY", "WHY"].map(String::from)];
    for (cluster, r) in rows {
        let mut why = r.why.clone();
        if why.chars().count() > 160 {
            why = why.chars().take(157).collect::<String>() + "...";
        }
        cells.push([
            cluster.clone(),
            r.kind.clone(),
            format!("{}/{}", r.namespace, r.name),
            r.status.clone(),
            why,
        ]);
    }
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..4).map(width).collect();
    let mut table = String::new();
    for c in &cells {
        for (i, w) in widths.iter().enumerate() {
            table.push_str(&format!("{:<w$}  ", c[i]));
        }
        table.push_str(&c[4]);
        table.push('\n');
    }
    table
}
