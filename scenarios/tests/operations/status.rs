//! The read-only overviews: `flux:status`, `flux:list-suspended`, `flux:check`, `flux:tree`,
//! `flux:trace`, `flux:alerts`.

use super::prelude::*;

/// Object rows of the status table (between the header and the blank line).
fn status_rows(out: &TaskOutput) -> Vec<String> {
    out.stdout
        .lines()
        .skip_while(|l| !l.starts_with("CLUSTER"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// `flux:status CLUSTER=all`: one table with both clusters' fixtures.
#[tokio::test]
async fn status_of_all_clusters() {
    scenario("status-all", |env| async move {
        let out = env.task().run(&["flux:status", "CLUSTER=all"])?;
        ok(&out)?;
        let rows = status_rows(&out);
        for (cluster, kind, ns, name) in [
            ("infra", "HelmRelease", "observability", "gatus"),
            ("infra", "Kustomization", "flux-system", "echo"),
            ("infra", "GitRepository", "flux-system", "flux-system"),
            ("apps", "HelmRelease", "business", "odoo"),
            ("apps", "HelmRelease", "business", "whoami"),
            ("apps", "HelmChart", "flux-system", "whoami"),
            ("apps", "Kustomization", "flux-system", "echo"),
        ] {
            anyhow::ensure!(
                rows.iter().any(|r| {
                    let f: Vec<&str> = r.split_whitespace().collect();
                    f.len() >= 4 && f[..4] == [cluster, kind, ns, name]
                }),
                "no row {cluster} {kind} {ns}/{name}:\n{}",
                out.transcript()
            );
        }
        Ok(())
    })
    .await;
}

/// `FAILED=true` shows a deliberately broken Kustomization (path not in the repo), and only it.
#[tokio::test]
async fn status_failed_shows_only_the_broken_app() {
    scenario("status-failed-broken-ks", |env| async move {
        // Alone: no other scenario's object may be transiently not Ready meanwhile.
        let _alone = alone().await;
        let apps = env.client("apps").await?;
        let ks = Kind::Kustomization.resource();
        let name = "ops-broken-path";
        Created::on(&apps)
            .object(&ks, "flux-system", name)
            .around(async {
                harness::apply_yaml(
                    &apps,
                    &format!(
                        r#"
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: {name}
  namespace: flux-system
spec:
  interval: 1h
  retryInterval: 1h
  timeout: 30s
  path: ./kubernetes/apps/does-not-exist
  prune: false
  sourceRef:
    kind: GitRepository
    name: flux-system
"#
                    ),
                )
                .await?;
                assertions::wait_until(
                    &apps,
                    &ks,
                    "flux-system",
                    name,
                    "Ready=False",
                    SETTLE,
                    |o| assertions::condition(o, "Ready").is_some_and(|c| c.status == "False"),
                )
                .await?;
                for cluster in ["all", "apps"] {
                    let out = env.task().run(&[
                        "flux:status",
                        &format!("CLUSTER={cluster}"),
                        "FAILED=true",
                    ])?;
                    ok(&out)?;
                    let rows = status_rows(&out);
                    anyhow::ensure!(
                        rows.len() == 1
                            && rows[0].split_whitespace().take(4).collect::<Vec<_>>()
                                == ["apps", "Kustomization", "flux-system", name],
                        "FAILED=true CLUSTER={cluster}: not only ks flux-system/{name}:\n{}",
                        out.transcript()
                    );
                    ensure_contains(&out, &["1 object(s), 1 not ready"])?;
                }
                Ok(())
            })
            .await
    })
    .await;
}

/// `flux:list-suspended` shows a suspended app (its Kustomization and HelmRelease) and nothing
/// that is not suspended; CLUSTER=all labels each cluster.
#[tokio::test]
async fn list_suspended_shows_only_suspended_objects() {
    scenario("list-suspended-whoami", |env| async move {
        // Alone: the exact set of suspended objects is asserted.
        let _alone = alone().await;
        let apps = env.client("apps").await?;
        let out = env.task().run(&["flux:list-suspended", "CLUSTER=all"])?;
        ok(&out)?;
        ensure_contains(&out, &["[infra] no suspended", "[apps] no suspended"])?;

        ok(&env
            .task()
            .run(&["flux:suspend", "APP=whoami", "CLUSTER=apps"])?)?;
        let result = async {
            let out = env.task().run(&["flux:list-suspended", "CLUSTER=apps"])?;
            ok(&out)?;
            let rows: Vec<Vec<String>> = out
                .stdout
                .lines()
                .skip(1)
                .filter(|l| !l.trim().is_empty())
                // KIND NAMESPACE NAME, then the suspend record (by whom, when).
                .map(|l| l.split_whitespace().take(3).map(str::to_string).collect())
                .collect();
            ensure_contains(&out, &["SUSPENDED", " by "])?;
            let want = vec![
                vec![
                    "Kustomization".to_string(),
                    "flux-system".into(),
                    "whoami".into(),
                ],
                vec![
                    "HelmRelease".to_string(),
                    "business".into(),
                    "whoami".into(),
                ],
            ];
            anyhow::ensure!(
                rows == want,
                "list-suspended rows {rows:?}, want {want:?}:\n{}",
                out.transcript()
            );
            // Cross-check with the cluster: exactly those are suspended.
            let suspended: Vec<String> = ks_and_hr(&apps)
                .await?
                .into_iter()
                .filter(|(_, o)| is_suspended(o))
                .map(|(k, o)| format!("{k:?} {}/{}", ns_name(&o).0, ns_name(&o).1))
                .collect();
            anyhow::ensure!(
                suspended
                    == [
                        "Kustomization flux-system/whoami",
                        "HelmRelease business/whoami"
                    ],
                "suspended on apps: {suspended:?}"
            );
            let out = env.task().run(&["flux:list-suspended", "CLUSTER=all"])?;
            ok(&out)?;
            ensure_contains(
                &out,
                &["[infra] no suspended", "[apps] HelmRelease", "whoami"],
            )?;
            Ok(())
        }
        .await;
        ok(&env
            .task()
            .run(&["flux:resume", "APP=whoami", "CLUSTER=apps"])?)?;
        result
    })
    .await;
}

/// `flux:check` passes on each cluster and on both (lines labelled per cluster).
#[rstest]
#[case::infra("infra", &["✔ all checks passed"])]
#[case::apps("apps", &["✔ all checks passed"])]
#[case::all("all", &["[infra] ✔ all checks passed", "[apps] ✔ all checks passed", "[apps] ✔ helm-controller: deployment ready"])]
#[tokio::test]
async fn check(#[case] cluster: &str, #[case] expected: &[&str]) {
    scenario(&format!("check-{cluster}"), |env| async move {
        let out = env
            .task()
            .run(&["flux:check", &format!("CLUSTER={cluster}")])?;
        ok(&out)?;
        ensure_contains(&out, expected)?;
        Ok(())
    })
    .await;
}

/// `flux:tree` of an app and of the cluster root.
#[rstest]
#[case::odoo(&["APP=odoo", "CLUSTER=apps"], &["Kustomization/flux-system/odoo", "HelmRelease/business/odoo", "Deployment/business/odoo"], &["gatus", "whoami"])]
#[case::root_infra(&["CLUSTER=infra"], &["Kustomization/flux-system/flux-system", "Kustomization/flux-system/gatus", "HelmRelease/observability/gatus", "Deployment/observability/gatus", "Deployment/tools/echo"], &["odoo"])]
#[case::root_apps(&["CLUSTER=apps"], &["Kustomization/flux-system/whoami", "HelmChart/flux-system/whoami", "HelmRelease/business/whoami"], &["gatus"])]
#[tokio::test]
async fn tree(#[case] vars: &[&str], #[case] expected: &[&str], #[case] absent: &[&str]) {
    scenario(&format!("tree-{}", vars.join("-")), |env| async move {
        let mut args = vec!["flux:tree"];
        args.extend_from_slice(vars);
        let out = env.task().run(&args)?;
        ok(&out)?;
        ensure_contains(&out, expected)?;
        for a in absent {
            anyhow::ensure!(
                !out.stdout.contains(a),
                "tree shows {a}:\n{}",
                out.transcript()
            );
        }
        Ok(())
    })
    .await;
}

/// `flux:trace` of the gatus Deployment (named after the release) and of APP=gatus: the managing
/// objects and the GitRepository revision the cluster really has.
#[rstest]
#[case::deployment(&["RESOURCE=deploy/gatus", "NAMESPACE=observability", "CLUSTER=infra"], &["Object:         Deployment/gatus", "HelmRelease:    gatus", "HelmChart:      observability-gatus", "GitRepository: flux-system"])]
#[case::app(&["APP=gatus", "CLUSTER=infra"], &["HelmRelease/gatus", "Kustomization/gatus", "Kustomization:   gatus", "Kustomization:   flux-system"])]
#[tokio::test]
async fn trace(#[case] vars: &[&str], #[case] expected: &[&str]) {
    scenario(&format!("trace-{}", vars.join("-")), |env| async move {
        let infra = env.client("infra").await?;
        let repo = assertions::get(
            &infra,
            &harness::flux::gitrepositories(),
            "flux-system",
            "flux-system",
        )
        .await?;
        let revision = assertions::artifact_revision(&repo);
        anyhow::ensure!(
            !revision.is_empty(),
            "GitRepository on infra has no artifact revision"
        );
        let mut args = vec!["flux:trace"];
        args.extend_from_slice(vars);
        let out = env.task().run(&args)?;
        ok(&out)?;
        ensure_contains(&out, expected)?;
        ensure_contains(&out, &[revision.as_str()])?;
        Ok(())
    })
    .await;
}

/// `flux:alerts` lists the Alert and Provider flux-alerts of each cluster with their state.
#[rstest]
#[case::all("all", &["[infra] # Alerts", "[apps] # Alerts", "[infra] # Providers", "[apps] # Providers", "Alert is Ready", "Provider is Ready"])]
#[case::apps("apps", &["# Alerts", "# Providers", "flux-alerts", "Alert is Ready", "# Recent warnings"])]
#[tokio::test]
async fn alerts(#[case] cluster: &str, #[case] expected: &[&str]) {
    scenario(&format!("alerts-{cluster}"), |env| async move {
        let out = env
            .task()
            .run(&["flux:alerts", &format!("CLUSTER={cluster}")])?;
        ok(&out)?;
        ensure_contains(&out, expected)?;
        let lines_with_alert = out
            .stdout
            .lines()
            .filter(|l| l.contains("flux-alerts"))
            .count();
        anyhow::ensure!(
            lines_with_alert >= 2,
            "Alert and Provider flux-alerts not both listed:\n{}",
            out.transcript()
        );
        Ok(())
    })
    .await;
}
