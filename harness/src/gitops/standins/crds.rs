//! Stand-in CRDs: a permissive CRD for every kind of a render that nothing on the cluster serves.

use super::*;

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
    apply_crds(client, &crds).await?;
    Ok(crds)
}

/// Creates the stand-in CRDs and waits (30 s each) until the API server serves them.
async fn apply_crds(client: &Client, crds: &[StandinCrd]) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    // Typed, with no discovery per object: right after a CRD of a new group is created, discovery
    // of that group answers 404 for a moment.
    let params = kube::api::PatchParams::apply(crate::apply::FIELD_MANAGER).force();
    for crd in crds {
        let object: CustomResourceDefinition = serde_norway::from_str(&crd_manifest(crd))
            .with_context(|| format!("the stand-in CRD {} is not a CRD", crd.name))?;
        api.patch(&crd.name, &params, &kube::api::Patch::Apply(&object))
            .await
            .with_context(|| format!("creating the stand-in CRD {}", crd.name))?;
    }
    for crd in crds {
        let established = kube::runtime::wait::await_condition(
            api.clone(),
            &crd.name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        let what = format!("establishing the stand-in CRD {}", crd.name);
        crate::sys::exec::within(Duration::from_secs(30), what, established).await?;
    }
    Ok(())
}

/// The kinds a Flux message says the API server does not serve (`no matches for kind "K" in
/// version "group/version"`, kustomize-controller's dry-run error): (group, version, kind).
/// Kubernetes' core group ("v1") has no group to stand in for and is left out.
pub(crate) fn unmatched_kinds(message: &str) -> Vec<(String, String, String)> {
    const NEEDLE: &str = "no matches for kind \"";
    let mut found = Vec::new();
    let mut rest = message;
    while let Some(at) = rest.find(NEEDLE) {
        rest = &rest[at + NEEDLE.len()..];
        let Some((kind, after)) = rest.split_once('"') else {
            break;
        };
        rest = after;
        let Some((gv, after)) = after
            .strip_prefix(" in version \"")
            .and_then(|a| a.split_once('"'))
        else {
            continue;
        };
        rest = after;
        if let Some((group, version)) = gv.split_once('/') {
            let kind = (group.to_string(), version.to_string(), kind.to_string());
            if !found.contains(&kind) {
                found.push(kind);
            }
        }
    }
    found
}

/// After the start applied the repository: the kinds its Kustomizations failed on although the
/// render did not show them (behind a substitution it could not resolve, in a source it could not
/// read). Each gets a stand-in CRD on `cluster` (namespaced, unless its kind starts with
/// `Cluster`: the dry-run error does not say), recorded in `installed`, and the Kustomization is
/// asked to reconcile again at once. Returns the new ones; a kind already stood in is left alone.
pub async fn install_unmatched(
    client: &Client,
    cluster: &str,
    failing: &[crate::assertions::NotReady],
    installed: &Mutex<Vec<StandinCrd>>,
) -> Result<Vec<StandinCrd>> {
    let mut crds: Vec<StandinCrd> = Vec::new();
    let mut retry = BTreeSet::new();
    for ks in failing.iter().filter(|r| r.kind == "Kustomization") {
        for (group, version, kind) in unmatched_kinds(&ks.why) {
            let gvk = kube::api::GroupVersionKind::gvk(&group, &version, &kind);
            let name = format!(
                "{}.{group}",
                kube::discovery::ApiResource::from_gvk(&gvk).plural
            );
            let known = |c: &StandinCrd| c.cluster == cluster && c.name == name;
            if installed.lock().unwrap().iter().any(known) || crds.iter().any(known) {
                continue;
            }
            crds.push(StandinCrd {
                cluster: cluster.to_string(),
                name,
                namespaced: !kind.starts_with("Cluster"),
                kind,
                versions: vec![version],
                objects: Vec::new(),
                found_by: Some(format!("Kustomization {}/{}", ks.namespace, ks.name)),
            });
            retry.insert((ks.namespace.clone(), ks.name.clone()));
        }
    }
    if crds.is_empty() {
        return Ok(crds);
    }
    apply_crds(client, &crds).await?;
    installed.lock().unwrap().extend(crds.iter().cloned());
    let now = jiff::Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}});
    for (namespace, name) in retry {
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(client.clone(), &namespace, &crate::flux::kustomizations());
        api.patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .with_context(|| format!("asking Kustomization {namespace}/{name} to reconcile again"))?;
    }
    Ok(crds)
}

/// The stand-in CRDs `render` needs where `served` (group, kind) are served.
pub(super) fn standin_crds(
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
                found_by: None,
            }
        })
        .collect()
}

/// The version a CRD stores: the newest by Kubernetes' version priority (GA over beta over alpha,
/// higher numbers first), as the API server would prefer it.
pub(super) fn storage_version(versions: &[String]) -> Option<&String> {
    versions
        .iter()
        .max_by_key(|v| kube::core::Version::parse(v).priority())
}

/// A permissive CRD: every version served, the newest stored, any content kept.
pub(super) fn crd_manifest(crd: &StandinCrd) -> String {
    let (plural, group) = crd.name.split_once('.').expect("<plural>.<group>");
    let storage = storage_version(&crd.versions);
    let versions: Vec<Value> = crd
        .versions
        .iter()
        .map(|v| {
            json!({"name": v, "served": true, "storage": Some(v) == storage,
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
    use crate::gitops::standins::tests::object;
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

    #[rstest::rstest]
    #[case::one(&["v1"], "v1")]
    #[case::ga_over_beta(&["v1", "v1beta1"], "v1")]
    #[case::beta_over_alpha(&["v1alpha1", "v1beta2"], "v1beta2")]
    #[case::higher_ga(&["v1", "v2", "v2beta1"], "v2")]
    fn the_newest_version_is_stored(#[case] versions: &[&str], #[case] stored: &str) {
        let versions: Vec<String> = versions.iter().map(|v| v.to_string()).collect();
        assert_eq!(storage_version(&versions).map(String::as_str), Some(stored));
        let crd = StandinCrd {
            cluster: "apps".into(),
            name: "widgets.example.io".into(),
            kind: "Widget".into(),
            versions: versions.clone(),
            namespaced: true,
            objects: vec![],
            found_by: None,
        };
        let manifest: Value = serde_json::from_str(&crd_manifest(&crd)).unwrap();
        let stored_in_manifest: Vec<&str> = manifest["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["storage"] == true)
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(stored_in_manifest, [stored]);
    }

    #[rstest::rstest]
    #[case::dry_run(
        r#"Kustomization/flux-system/late dry-run failed: no matches for kind "Probe" in version "monitoring.coreos.com/v1""#,
        &[("monitoring.coreos.com", "v1", "Probe")]
    )]
    #[case::two_and_a_repeat(
        r#"no matches for kind "A" in version "a.io/v1", no matches for kind "B" in version "b.io/v2beta1"; no matches for kind "A" in version "a.io/v1""#,
        &[("a.io", "v1", "A"), ("b.io", "v2beta1", "B")]
    )]
    #[case::core_group_left_out(r#"no matches for kind "Thing" in version "v1""#, &[])]
    #[case::other_failure("kustomize build failed: accumulating resources", &[])]
    #[case::cut_short(r#"no matches for kind "Probe" in vers"#, &[])]
    fn unmatched_kinds_are_read_from_the_dry_run_error(
        #[case] message: &str,
        #[case] want: &[(&str, &str, &str)],
    ) {
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(g, v, k)| (g.to_string(), v.to_string(), k.to_string()))
            .collect();
        assert_eq!(unmatched_kinds(message), want);
    }
}
