//! Suspend and resume again (idempotent), and a resume whose release then fails.

use super::prelude::*;

/// Suspending a suspended app and resuming a resumed one succeed and leave the same state (the
/// app's objects from the served layout's description). Without waiting (`WAIT=false`: one merge
/// patch, no `flux resume`), the controllers still reconcile the resumed objects at their new
/// generation: the spec change is what wakes them, as after `flux resume --wait=false`.
#[rstest]
#[case::gatus_infra(Role::Gatus, "true")]
#[case::second_release_apps(Role::SecondRelease, "true")]
#[case::gatus_infra_without_waiting(Role::Gatus, "false")]
#[tokio::test]
async fn suspend_and_resume_are_idempotent(#[case] role: Role, #[case] wait: &str) {
    scenario(
        &format!("idempotent-{role:?}-wait-{wait}"),
        |env| async move {
            let (cluster, app) = layout(env)?.app(role);
            let objects = layout(env)?.objects_of(cluster, app);
            let _writing = writing().await;
            let _app = exclusive(app).await;
            let client = env.client(cluster).await?;
            let vars = [format!("APP={app}"), format!("CLUSTER={cluster}")];
            for round in 1..=2 {
                let out = env.task().run(&["flux:suspend", &vars[0], &vars[1]])?;
                anyhow::ensure!(
                    out.success(),
                    "suspend #{round} failed:\n{}",
                    out.transcript()
                );
                for o in &objects {
                    let obj =
                        assertions::get(&client, &o.kind.resource(), o.namespace, app).await?;
                    anyhow::ensure!(
                        is_suspended(&obj),
                        "{:?} {}/{app} not suspended after suspend #{round}",
                        o.kind,
                        o.namespace
                    );
                }
            }
            for round in 1..=2 {
                let out = env.task().run(&[
                    "flux:resume",
                    &vars[0],
                    &vars[1],
                    &format!("WAIT={wait}"),
                ])?;
                anyhow::ensure!(
                    out.success(),
                    "resume #{round} failed:\n{}",
                    out.transcript()
                );
                for o in &objects {
                    assertions::wait_resumed(&client, &o.kind.resource(), o.namespace, app, SETTLE)
                        .await
                        .with_context(|| format!("after resume #{round}"))?;
                }
            }
            Ok(())
        },
    )
    .await;
}

/// A release that cannot become Ready (values the API server rejects): suspend succeeds, resume
/// fails although `flux resume` itself exits 0, naming the object and its Ready message.
#[tokio::test]
async fn resume_of_a_failing_release_fails() {
    scenario("failing-release-resume", |env| async move {
        let _writing = writing().await;
        let apps = env.client("apps").await?;
        let ns = "ops-failing";
        let name = "ops-broken";
        let hr = Kind::HelmRelease.resource();
        Created::on(&apps)
            .namespace(ns)
            .object(
                &harness::flux::helmcharts(),
                "flux-system",
                &format!("{ns}-{name}"),
            )
            .object(&hr, ns, name)
            .around(async {
                harness::apply_yaml(
                    &apps,
                    &format!(
                        r#"
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: {name}
  namespace: {ns}
spec:
  interval: 1h
  timeout: 20s
  chart:
    spec:
      chart: ./fixtures-charts/odoo
      interval: 1h
      sourceRef:
        kind: GitRepository
        name: flux-system
        namespace: flux-system
  install:
    timeout: 20s
    remediation:
      retries: 0
  values:
    # Renders, but the API server rejects a Deployment with negative replicas: install fails.
    replicaCount: -1
"#
                    ),
                )
                .await?;
                assertions::wait_until(
                    &apps,
                    &hr,
                    ns,
                    name,
                    "Ready=False",
                    Duration::from_secs(60),
                    |o| assertions::condition(o, "Ready").is_some_and(|c| c.status == "False"),
                )
                .await?;
                let task = env.task().timeout(Duration::from_secs(100));
                let out = task.run(&["flux:suspend", &format!("APP={name}"), "CLUSTER=apps"])?;
                ok(&out)?;
                anyhow::ensure!(
                    is_suspended(&assertions::get(&apps, &hr, ns, name).await?),
                    "not suspended"
                );
                let out = task.run(&["flux:resume", &format!("APP={name}"), "CLUSTER=apps"])?;
                anyhow::ensure!(
                    !out.success(),
                    "resume of a failing release succeeded:\n{}",
                    out.transcript()
                );
                ensure_contains(
                    &out,
                    &[&format!(
                        "✗ HelmRelease {ns}/{name} resumed on apps but is not Ready"
                    )],
                )?;
                let obj = assertions::get(&apps, &hr, ns, name).await?;
                anyhow::ensure!(!is_suspended(&obj), "still suspended after resume");
                anyhow::ensure!(
                    !is_ready(&obj),
                    "the broken release is Ready: {}",
                    assertions::describe(&obj)
                );
                Ok(())
            })
            .await
    })
    .await;
}

/// The suspend record: who, when and why are written with spec.suspend in one request, shown by
/// `flux:list-suspended` and `flux:status`, and removed by resume; an object suspended by hand is
/// listed as unrecorded; a whole namespace shares one batch id.
#[tokio::test]
async fn suspend_records_who_when_and_why_and_resume_removes_it() {
    scenario("suspend-record", |env| async move {
        let (cluster, app) = layout(env)?.app(Role::SecondRelease);
        let objects = layout(env)?.objects_of(cluster, app);
        let _writing = writing().await;
        let _app = exclusive(app).await;
        let client = env.client(cluster).await?;
        let vars = [format!("APP={app}"), format!("CLUSTER={cluster}")];
        let before = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2);
        let out = env.task().run(&[
            "flux:suspend",
            &vars[0],
            &vars[1],
            "REASON=chart 25 upgrade pending",
            "SUSPENDED_BY=alice@laptop",
        ])?;
        ok(&out)?;
        for o in &objects {
            let obj = assertions::get(&client, &o.kind.resource(), o.namespace, app).await?;
            let note = |key: &str| obj.metadata.annotations.as_ref()?.get(key).cloned();
            anyhow::ensure!(is_suspended(&obj), "{:?} {app} not suspended", o.kind);
            anyhow::ensure!(
                note("k8s-ops.io/suspended-by").as_deref() == Some("alice@laptop")
                    && note("k8s-ops.io/suspend-reason").as_deref()
                        == Some("chart 25 upgrade pending")
                    && note("k8s-ops.io/suspend-batch").is_none(),
                "{:?} {app}: record {:?}",
                o.kind,
                obj.metadata.annotations
            );
            let at: jiff::Timestamp = note("k8s-ops.io/suspended-at")
                .context("no suspended-at")?
                .parse()?;
            anyhow::ensure!(
                at >= before && at <= jiff::Timestamp::now(),
                "suspended-at {at}"
            );
        }
        let listed = env.task().run(&["flux:list-suspended", &vars[1]])?;
        ok(&listed)?;
        ensure_contains(
            &listed,
            &["by alice@laptop at ", ": chart 25 upgrade pending"],
        )?;
        let status = env.task().run(&["flux:status", &vars[1]])?;
        ok(&status)?;
        ensure_contains(&status, &["Suspended:", "by alice@laptop at "])?;

        let out = env.task().run(&["flux:resume", &vars[0], &vars[1]])?;
        ok(&out)?;
        for o in &objects {
            assertions::wait_resumed(&client, &o.kind.resource(), o.namespace, app, SETTLE).await?;
            let obj = assertions::get(&client, &o.kind.resource(), o.namespace, app).await?;
            let left: Vec<&String> = obj
                .metadata
                .annotations
                .iter()
                .flatten()
                .map(|(k, _)| k)
                .filter(|k| k.starts_with("k8s-ops.io/"))
                .collect();
            anyhow::ensure!(
                left.is_empty(),
                "{:?} {app}: record left after resume: {left:?}",
                o.kind
            );
        }
        Ok(())
    })
    .await;
}

/// Suspended by something else (here a plain merge patch, as `kubectl patch` does): listed as
/// unrecorded, not attributed to anyone.
#[tokio::test]
async fn a_suspension_by_hand_is_listed_as_unrecorded() {
    scenario("suspend-unrecorded", |env| async move {
        let (cluster, app) = layout(env)?.app(Role::Gatus);
        let o = layout(env)?
            .objects_of(cluster, app)
            .into_iter()
            .find(|o| o.kind == Kind::HelmRelease)
            .context("gatus has a HelmRelease")?;
        let _writing = writing().await;
        let _app = exclusive(app).await;
        let client = env.client(cluster).await?;
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(client.clone(), o.namespace, &o.kind.resource());
        let patch = |suspend: bool| {
            kube::api::Patch::Merge(serde_json::json!({"spec": {"suspend": suspend}}))
        };
        api.patch(app, &Default::default(), &patch(true)).await?;
        let listed = async {
            let out = env
                .task()
                .run(&["flux:list-suspended", &format!("CLUSTER={cluster}")])?;
            ok(&out)?;
            let line = out
                .stdout
                .lines()
                .find(|l| l.starts_with("HelmRelease") && l.contains(app))
                .with_context(|| format!("{app} not listed:\n{}", out.transcript()))?
                .to_string();
            anyhow::ensure!(line.contains("unrecorded"), "{line}");
            anyhow::Ok(())
        }
        .await;
        api.patch(app, &Default::default(), &patch(false)).await?;
        listed
    })
    .await;
}
