//! The served repository on the clusters as Flux renders it: every Flux object it
//! declares exists, nearly all of them are Ready, every kind it uses is served (by Kubernetes, Flux,
//! a CRD of its own, or a labelled stand-in CRD), every stand-in source is the harness's own on
//! 127.0.0.1 and says what it stands in for, and the tasks work in the middle of its `dependsOn`
//! chain. The render is the harness's own (`harness::gitops::render`, the same walk Flux makes from each
//! cluster's entry path): the scenarios compare the clusters with it, not with a list written here.

use std::collections::BTreeSet;

use harness::assertions::{self, is_ready, is_suspended, last_handled_reconcile_at, requested_at};
use harness::gitops::render::{Object, Render};
use harness::gitops::standins::{STANDIN_FOR, STANDIN_LABEL, Used};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use rstest::rstest;
use scenarios::{SETTLE, alone, exclusive, layout, ok, scenario, writing};

/// Share of the declared Flux objects that must be Ready (at least 95 %: what stays not Ready must be the exception, each with its reason).
const READY_SHARE: f64 = 0.95;

fn render<'a>(
    env: &'a harness::provider::Environment,
    cluster: &str,
) -> anyhow::Result<&'a Render> {
    let render = env.standins.renders.get(cluster).ok_or_else(|| {
        anyhow::anyhow!("no render of {cluster}: {:?}", env.standins.report.notes)
    })?;
    anyhow::ensure!(
        render.objects.iter().any(Object::is_flux),
        "the render of {cluster} declares no Flux object"
    );
    Ok(render)
}

/// The API resource of a rendered object's apiVersion/kind, from the cluster's discovery.
async fn resource_of(client: &kube::Client, o: &Object) -> anyhow::Result<ApiResource> {
    let (group, version) = o.group_version();
    let gvk = GroupVersionKind::gvk(group, version, o.kind());
    let (resource, _) = pinned_kind(client, &gvk)
        .await
        .map_err(|e| anyhow::anyhow!("{} is not served: {e}", o.api_version()))?;
    Ok(resource)
}

async fn live(client: &kube::Client, o: &Object) -> anyhow::Result<Option<DynamicObject>> {
    let resource = resource_of(client, o).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        o.namespace().unwrap_or("default"),
        &resource,
    );
    Ok(api.get_opt(o.name()).await?)
}

/// Ready, or an object Flux keeps without conditions: an OCI HelmRepository (source-controller),
/// an Alert or Provider of notification's v1beta3 API (static objects since that version).
fn ready_or_static(o: &DynamicObject, kind: &str) -> bool {
    let v1beta3 = o
        .types
        .as_ref()
        .is_some_and(|t| t.api_version == "notification.toolkit.fluxcd.io/v1beta3");
    is_ready(o)
        || (kind == "HelmRepository" && o.data["spec"]["type"] == "oci")
        || (matches!(kind, "Alert" | "Provider") && v1beta3)
}

/// Every Flux object of the render is on the cluster, and the cluster's Kustomizations and
/// HelmReleases are exactly the render's (none missing, none the render does not know).
#[rstest]
#[case::infra("infra")]
#[case::apps("apps")]
#[tokio::test]
async fn every_declared_flux_object_exists(#[case] cluster: &str) {
    scenario(&format!("declared-exist-{cluster}"), |env| async move {
        // Counts the cluster's objects: no scenario adds or removes any meanwhile (late_kinds).
        let _counting = writing().await;
        let render = render(env, cluster)?;
        let client = env.client(cluster).await?;
        let declared: Vec<&Object> = render.objects.iter().filter(|o| o.is_flux()).collect();
        let mut missing = Vec::new();
        for o in &declared {
            if live(&client, o).await?.is_none() {
                missing.push(o.id());
            }
        }
        anyhow::ensure!(
            missing.is_empty(),
            "{} of the {} Flux objects the repository declares for {cluster} are not there: {missing:?}",
            missing.len(),
            declared.len()
        );
        for resource in [harness::flux::kustomizations(), harness::flux::helmreleases()] {
            let on_cluster: BTreeSet<String> = Api::<DynamicObject>::all_with(client.clone(), &resource)
                .list(&Default::default())
                .await?
                .into_iter()
                .map(|o| {
                    let (ns, name) = scenarios::flux_state::ns_name(&o);
                    format!("{} {ns}/{name}", resource.kind)
                })
                .collect();
            let mut in_render: BTreeSet<String> = render
                .flux_objects()
                .into_iter()
                .filter(|id| id.starts_with(&format!("{} ", resource.kind)))
                .collect();
            // The root Kustomization that points the cluster at its entry path is the harness's
            // own (what `flux bootstrap` writes), not part of the render of that path.
            if resource.kind == "Kustomization" {
                in_render.insert("Kustomization flux-system/flux-system".to_string());
            }
            anyhow::ensure!(
                on_cluster == in_render,
                "{cluster}: {}s on the cluster {on_cluster:?}, in the render {in_render:?}",
                resource.kind
            );
        }
        Ok(())
    })
    .await;
}

/// Every apiVersion/kind the repository uses is served; what neither Kubernetes, Flux nor the
/// repository provides is a CRD labelled as a stand-in, and every stand-in the report lists is.
#[rstest]
#[case::infra("infra")]
#[case::apps("apps")]
#[tokio::test]
async fn every_kind_is_served_and_stand_in_crds_say_so(#[case] cluster: &str) {
    scenario(&format!("kinds-served-{cluster}"), |env| async move {
        // Counts the cluster's objects: no scenario adds or removes any meanwhile (late_kinds).
        let _counting = writing().await;
        let render = render(env, cluster)?;
        let client = env.client(cluster).await?;
        let kinds: BTreeSet<(String, String)> = render
            .objects
            .iter()
            .map(|o| (o.api_version().to_string(), o.kind().to_string()))
            .collect();
        let mut unserved = Vec::new();
        for (api_version, kind) in &kinds {
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            if pinned_kind(&client, &GroupVersionKind::gvk(group, version, kind))
                .await
                .is_err()
            {
                unserved.push(format!("{api_version} {kind}"));
            }
        }
        anyhow::ensure!(unserved.is_empty(), "{cluster} does not serve {unserved:?}");
        let crds: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &ApiResource::erase::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(&()),
        );
        let standins: Vec<_> = env
            .standins
            .report
            .crds()
            .into_iter()
            .filter(|c| c.cluster == cluster)
            .collect();
        for standin in &standins {
            let crd = crds.get(&standin.name).await?;
            anyhow::ensure!(
                crd.metadata.labels.as_ref().and_then(|l| l.get(STANDIN_LABEL)).map(String::as_str)
                    == Some("true"),
                "{cluster}: CRD {} has no {STANDIN_LABEL} label",
                standin.name
            );
            anyhow::ensure!(
                assertions::condition(&crd, "Established").is_some_and(|c| c.status == "True"),
                "{cluster}: stand-in CRD {} is not Established",
                standin.name
            );
        }
        // The other way round: no CRD is labelled a stand-in that the report does not list.
        let labelled: BTreeSet<String> = crds
            .list(&kube::api::ListParams::default().labels(&format!("{STANDIN_LABEL}=true")))
            .await?
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        let listed: BTreeSet<String> = standins.iter().map(|c| c.name.clone()).collect();
        anyhow::ensure!(
            labelled == listed,
            "{cluster}: stand-in CRDs {labelled:?}, the report lists {listed:?}"
        );
        Ok(())
    })
    .await;
}

/// At least 95 % of the Flux objects the repository declares on both clusters are Ready (an OCI
/// HelmRepository, static, counts as Ready); the Kustomizations and HelmReleases that are not are
/// exactly what the layout says cannot work here, each with a reason.
#[tokio::test]
async fn nearly_every_declared_object_is_ready() {
    scenario("declared-ready", |env| async move {
        // No scenario suspends anything while this one counts.
        let _alone = alone().await;
        let (mut declared, mut ready) = (0usize, 0usize);
        let mut not_ready = Vec::new();
        let mut expected = Vec::new();
        for cluster in ["infra", "apps"] {
            let client = env.client(cluster).await?;
            for o in render(env, cluster)?.objects.iter().filter(|o| o.is_flux()) {
                declared += 1;
                let obj = live(&client, o)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("{cluster}: {} is not there", o.id()))?;
                if ready_or_static(&obj, o.kind()) && !is_suspended(&obj) {
                    ready += 1;
                    continue;
                }
                if matches!(o.kind(), "Kustomization" | "HelmRelease") {
                    let why = assertions::condition(&obj, "Ready")
                        .map(|c| format!("{}: {}", c.reason, c.message))
                        .unwrap_or_default();
                    anyhow::ensure!(
                        !why.is_empty(),
                        "{cluster}: {} is not Ready and says no reason",
                        o.id()
                    );
                }
                not_ready.push(format!("{cluster} {}", o.id()));
            }
            expected.extend(
                layout(env)?
                    .not_ready
                    .iter()
                    .filter(|o| o.cluster == cluster)
                    .map(|o| format!("{cluster} {:?} {}/{}", o.kind, o.namespace, o.name)),
            );
        }
        let share = ready as f64 / declared as f64;
        anyhow::ensure!(
            share >= READY_SHARE,
            "{ready} of {declared} declared Flux objects Ready ({:.1} %), not Ready: {not_ready:?}",
            share * 100.0
        );
        anyhow::ensure!(
            not_ready == expected,
            "not Ready: {not_ready:?}, the layout says only {expected:?} cannot work here"
        );
        Ok(())
    })
    .await;
}

/// Every remote source is either the real one (its declared URL, on the cluster as declared) or
/// the harness's stand-in: on 127.0.0.1, annotated with the URL it stands in for, and Ready.
#[rstest]
#[case::infra("infra")]
#[case::apps("apps")]
#[tokio::test]
async fn stand_in_sources_are_local_and_say_what_they_replace(#[case] cluster: &str) {
    scenario(&format!("stand-in-sources-{cluster}"), |env| async move {
        let render = render(env, cluster)?;
        let client = env.client(cluster).await?;
        let sources: Vec<&Object> = render
            .objects
            .iter()
            .filter(|o| {
                o.group_version().0 == "source.toolkit.fluxcd.io"
                    && matches!(o.kind(), "OCIRepository" | "HelmRepository" | "GitRepository" | "Bucket")
            })
            .collect();
        let reported: Vec<_> = env
            .standins
            .report
            .sources
            .iter()
            .filter(|s| s.clusters.iter().any(|c| c == cluster))
            .collect();
        anyhow::ensure!(
            reported.len() == sources.len(),
            "{cluster}: the render declares {} remote sources, the report says what was used for {}",
            sources.len(),
            reported.len()
        );
        for s in reported {
            let declared = sources
                .iter()
                .find(|o| o.kind() == s.kind && o.namespace() == Some(s.namespace.as_str()) && o.name() == s.name)
                .ok_or_else(|| anyhow::anyhow!("{cluster}: reported source {} is not in the render", s.line()))?;
            let obj = live(&client, declared)
                .await?
                .ok_or_else(|| anyhow::anyhow!("{cluster}: {} is not there", declared.id()))?;
            let url = obj.data["spec"]["url"].as_str().unwrap_or_default();
            let annotation = obj.metadata.annotations.as_ref().and_then(|a| a.get(STANDIN_FOR));
            match &s.used {
                Used::StandIn { url: local, .. } => {
                    anyhow::ensure!(
                        url == local && (url.contains("//127.0.0.1:")),
                        "{cluster}: {} points at {url}, its stand-in is {local}",
                        declared.id()
                    );
                    anyhow::ensure!(
                        annotation == Some(&s.url),
                        "{cluster}: {} stands in for {} but is annotated {annotation:?}",
                        declared.id(),
                        s.url
                    );
                    anyhow::ensure!(
                        ready_or_static(&obj, &s.kind),
                        "{cluster}: stand-in {} is not Ready: {}",
                        declared.id(),
                        assertions::describe(&obj)
                    );
                }
                Used::Real(_) | Used::Unavailable(_) => anyhow::ensure!(
                    url == s.url && annotation.is_none(),
                    "{cluster}: {} is the real source {} but points at {url} ({annotation:?})",
                    declared.id(),
                    s.url
                ),
            }
        }
        Ok(())
    })
    .await;
}

/// Suspend, resume and reconcile of the Kustomization in the middle of the repository's
/// `dependsOn` chain, by its name through the real tasks; the end of the chain stays Ready.
/// `fixtures/gitops` has no chain: `.ci/run` runs this on the two layouts that have one.
#[tokio::test]
#[ignore = "needs a dependsOn chain: HARNESS_GITOPS_DIR=fixtures/gitops-homeops or fixtures/gitops-namespaced, --include-ignored (.ci/run does)"]
async fn tasks_work_in_the_middle_of_the_depends_on_chain() {
    scenario("chain-middle", |env| async move {
        let chain = layout(env)?.chain;
        anyhow::ensure!(
            chain.len() >= 3,
            "{} has no dependsOn chain of three: serve fixtures/gitops-homeops or fixtures/gitops-namespaced (HARNESS_GITOPS_DIR)",
            layout(env)?.dir
        );
        let (middle, last) = (chain[1], chain[chain.len() - 1]);
        let _writing = writing().await;
        let _middle = exclusive(middle.name).await;
        let client = env.client(middle.cluster).await?;
        let resource = middle.kind.resource();
        let args = |task: &str| {
            [
                format!("flux:{task}"),
                format!("APP={}", middle.name),
                format!("CLUSTER={}", middle.cluster),
            ]
        };
        let run = |task: &str| {
            let args = args(task);
            env.task().run(&args.iter().map(String::as_str).collect::<Vec<_>>())
        };

        let out = run("suspend")?;
        ok(&out)?;
        let obj = assertions::get(&client, &resource, middle.namespace, middle.name).await?;
        anyhow::ensure!(is_suspended(&obj), "{} not suspended after:\n{}", middle.name, out.transcript());

        let out = run("resume")?;
        ok(&out)?;
        assertions::wait_resumed(&client, &resource, middle.namespace, middle.name, SETTLE).await?;

        let before = last_handled_reconcile_at(&assertions::get(&client, &resource, middle.namespace, middle.name).await?);
        let out = run("reconcile")?;
        ok(&out)?;
        let obj = assertions::get(&client, &resource, middle.namespace, middle.name).await?;
        let token = requested_at(&obj);
        anyhow::ensure!(
            token.is_some() && token != before && last_handled_reconcile_at(&obj) == token,
            "{}: reconcile request {token:?} not handled when the task returned ({:?})\n{}",
            middle.name,
            last_handled_reconcile_at(&obj),
            out.transcript()
        );
        assertions::wait_resumed(&client, &last.kind.resource(), last.namespace, last.name, SETTLE).await?;
        Ok(())
    })
    .await;
}

/// A kind the render did not show (here: a Kustomization created after the start, reading a path
/// no Kustomization of the repository reads) fails Flux's dry-run with `no matches for kind`; the
/// stand-in the start installs for it then (what `harness up` does while it settles) serves the
/// kind, and the Kustomization becomes Ready. Everything it added is removed afterwards.
#[tokio::test]
#[ignore = "needs fixtures/gitops-homeops: HARNESS_GITOPS_DIR=fixtures/gitops-homeops, --include-ignored (.ci/run does)"]
async fn late_kinds_get_a_stand_in_crd_and_the_kustomization_applies() {
    scenario("late-kinds", |env| async move {
        homeops_only(env, "its kubernetes/extras/late-kind is the path read")?;
        let _alone = alone().await;
        let cluster = "infra";
        let client = env.client(cluster).await?;
        let kustomizations: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), "flux-system", &harness::flux::kustomizations());
        let late: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "late-kind", "namespace": "flux-system"},
            "spec": {"interval": "1h", "retryInterval": "1h", "path": "./kubernetes/extras/late-kind", "prune": true,
                     "sourceRef": {"kind": "GitRepository", "name": "flux-system"}},
        }))?;
        let uid = kustomizations.create(&Default::default(), &late).await?.metadata.uid;
        let outcome = late_kind_applies(env, &client).await;
        // Removed whatever happened: the Kustomization (pruning its Probe), then the stand-in.
        kustomizations.delete("late-kind", &Default::default()).await?;
        let gone = kube::runtime::wait::await_condition(
            kustomizations.clone(),
            "late-kind",
            kube::runtime::wait::conditions::is_deleted(uid.as_deref().unwrap_or_default()),
        );
        tokio::time::timeout(SETTLE, gone)
            .await
            .map_err(|_| anyhow::anyhow!("Kustomization late-kind not gone within {SETTLE:?}"))??;
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(client.clone());
        let _ = crds.delete("probes.monitoring.coreos.com", &Default::default()).await;
        env.standins.report.crds.lock().unwrap().retain(|c| !(c.cluster == cluster && c.kind == "Probe"));
        outcome
    })
    .await;
}

/// The middle of `late_kinds_…`: the dry-run fails on the kind, the stand-in is installed, the
/// Kustomization (asked to reconcile again, its retry an hour away) applies the Probe.
async fn late_kind_applies(
    env: &harness::provider::Environment,
    client: &kube::Client,
) -> anyhow::Result<()> {
    let failing = assertions::wait_until(
        client,
        &harness::flux::kustomizations(),
        "flux-system",
        "late-kind",
        "Ready=False",
        SETTLE,
        |o| assertions::condition(o, "Ready").is_some_and(|c| c.status == "False"),
    )
    .await?;
    let why = assertions::condition(&failing, "Ready")
        .map(|c| c.message)
        .unwrap_or_default();
    anyhow::ensure!(
        why.contains(r#"no matches for kind "Probe" in version "monitoring.coreos.com/v1""#),
        "late-kind failed otherwise: {why}"
    );
    let not_ready = harness::assertions::not_ready(client).await?;
    let installed = harness::gitops::standins::install_unmatched(
        client,
        "infra",
        &not_ready,
        &env.standins.report.crds,
    )
    .await?;
    let names: Vec<&str> = installed.iter().map(|c| c.name.as_str()).collect();
    anyhow::ensure!(
        names == ["probes.monitoring.coreos.com"],
        "stand-ins installed: {names:?}"
    );
    anyhow::ensure!(
        installed[0].found_by.as_deref() == Some("Kustomization flux-system/late-kind")
            && installed[0].namespaced,
        "{:?}",
        installed[0]
    );
    let table = env.standins.report.table();
    anyhow::ensure!(
        table.contains("the CRD of Probe (Kustomization flux-system/late-kind failed on it"),
        "{table}"
    );
    assertions::wait_ready(
        client,
        &harness::flux::kustomizations(),
        "flux-system",
        "late-kind",
        SETTLE,
    )
    .await?;
    let probe = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "Probe",
    ));
    let probes: Api<DynamicObject> = Api::namespaced_with(client.clone(), "flux-system", &probe);
    anyhow::ensure!(
        probes.get_opt("blackbox-home").await?.is_some(),
        "the Probe was not applied"
    );
    // Once stood in, a kind is not installed twice.
    let again = harness::gitops::standins::install_unmatched(
        client,
        "infra",
        &[failing_row()],
        &env.standins.report.crds,
    )
    .await?;
    anyhow::ensure!(again.is_empty(), "installed again: {again:?}");
    Ok(())
}

/// A Kustomization row failing on the kind already stood in.
fn failing_row() -> harness::assertions::NotReady {
    harness::assertions::NotReady {
        kind: "Kustomization".into(),
        namespace: "flux-system".into(),
        name: "late-kind".into(),
        status: "False".into(),
        why: r#"BuildFailed: no matches for kind "Probe" in version "monitoring.coreos.com/v1""#
            .into(),
    }
}

/// Workloads a repository waits for become Ready under kwok: a StatefulSet's volume claim on the
/// repository's own storage class is Bound (kwok's volume stages, widened to every class), its pod
/// Ready, and a Job complete (kwok's pod stages).
#[tokio::test]
#[ignore = "needs fixtures/gitops-homeops: HARNESS_GITOPS_DIR=fixtures/gitops-homeops, --include-ignored (.ci/run does)"]
async fn volume_claims_are_bound_and_jobs_complete() {
    scenario("volumes-and-jobs", |env| async move {
        homeops_only(env, "its database/redis app is the one read")?;
        let client = env.client("apps").await?;
        let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
            Api::namespaced(client.clone(), "database");
        let claim = claims.get("data-redis-0").await?;
        let spec = claim.spec.clone().unwrap_or_default();
        let phase = claim.status.and_then(|s| s.phase);
        anyhow::ensure!(
            phase.as_deref() == Some("Bound")
                && spec.storage_class_name.as_deref() == Some("ceph-block"),
            "claim data-redis-0: phase {phase:?}, class {:?}",
            spec.storage_class_name
        );
        let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> =
            Api::namespaced(client.clone(), "database");
        let ready = sets
            .get("redis")
            .await?
            .status
            .and_then(|s| s.ready_replicas);
        anyhow::ensure!(
            ready == Some(1),
            "StatefulSet redis: {ready:?} ready replicas"
        );
        let jobs: Api<k8s_openapi::api::batch::v1::Job> =
            Api::namespaced(client.clone(), "database");
        let job = jobs.get("redis-warmup").await?;
        let complete = job
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True");
        anyhow::ensure!(complete, "Job redis-warmup did not complete");
        Ok(())
    })
    .await;
}

/// Fails naming the fix unless the environment serves `fixtures/gitops-homeops` (`why`: what of it
/// the scenario reads).
fn homeops_only(env: &harness::provider::Environment, why: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        layout(env)?.dir == "fixtures/gitops-homeops",
        "serve fixtures/gitops-homeops (HARNESS_GITOPS_DIR): {why}"
    );
    Ok(())
}
