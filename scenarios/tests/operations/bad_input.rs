//! Refusals that change nothing: unknown and ambiguous APPs, the bad-input matrix.

use super::prelude::*;

const AMBIGUOUS_NS: &str = "ops-ambiguous";

/// A second (suspended) HelmRelease `odoo` in another namespace makes APP=odoo ambiguous: every
/// command that resolves APP refuses listing both candidates and asking for NAMESPACE=; nothing
/// changes on either cluster.
#[rstest]
#[case::suspend("flux:suspend")]
#[case::resume("flux:resume")]
#[case::reconcile("flux:reconcile")]
#[case::logs("flux:logs")]
#[tokio::test]
async fn ambiguous_app_is_refused(#[case] task: &str) {
    scenario(&format!("ambiguous-odoo-{task}"), |env| async move {
        let _alone = alone().await;
        let apps = env.client("apps").await?;
        Created::on(&apps)
            .namespace(AMBIGUOUS_NS)
            .object(&Kind::HelmRelease.resource(), AMBIGUOUS_NS, "odoo")
            .around(async {
                harness::apply_yaml(
                    &apps,
                    &format!(
                        r#"
apiVersion: v1
kind: Namespace
metadata:
  name: {AMBIGUOUS_NS}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: odoo
  namespace: {AMBIGUOUS_NS}
spec:
  suspend: true
  interval: 1h
  chart:
    spec:
      chart: ./fixtures-charts/odoo
      sourceRef:
        kind: GitRepository
        name: flux-system
        namespace: flux-system
"#
                    ),
                )
                .await?;
                let before = Settled::read(env).await?;
                let out = env.task().run(&[task, "APP=odoo", "CLUSTER=apps"])?;
                let e = one_error(&out)?;
                for needle in [
                    "ambiguous",
                    "business/odoo",
                    &format!("{AMBIGUOUS_NS}/odoo"),
                    "NAMESPACE=",
                ] {
                    anyhow::ensure!(e.contains(needle), "error lacks {needle:?}: {e}");
                }
                before.unchanged(env).await
            })
            .await
    })
    .await;
}

/// An unknown APP: exit ≠ 0, one error naming the close names; nothing changes. An app of the
/// other cluster is unknown here.
#[rstest]
#[case::typo_suspend(&["flux:suspend", "APP=odooo", "CLUSTER=apps"], &["'odooo'", "did you mean: odoo"])]
#[case::transposed_resume(&["flux:resume", "APP=gatsu", "CLUSTER=infra"], &["'gatsu'", "did you mean: gatus"])]
#[case::prefix_reconcile(&["flux:reconcile", "APP=whoam", "CLUSTER=apps"], &["'whoam'", "whoami"])]
#[case::app_of_the_other_cluster(&["flux:suspend", "APP=gatus", "CLUSTER=apps"], &["no Kustomization or HelmRelease named 'gatus'", "on cluster apps"])]
#[case::wrong_namespace(&["flux:suspend", "APP=odoo", "NAMESPACE=observability", "CLUSTER=apps"], &["'odoo' in namespace observability"])]
#[case::nothing_close(&["flux:resume", "APP=zzzzzzzz", "CLUSTER=apps"], &["'zzzzzzzz'", "task flux:status CLUSTER=apps"])]
#[tokio::test]
async fn unknown_app_is_refused(#[case] args: &[&str], #[case] expected: &[&str]) {
    scenario(
        &format!("unknown-app-{}", args.join("-")),
        |env| async move {
            let _alone = alone().await;
            let before = Settled::read(env).await?;
            let out = env.task().run(args)?;
            let e = one_error(&out)?;
            for needle in expected {
                anyhow::ensure!(e.contains(needle), "error lacks {needle:?}: {e}");
            }
            before.unchanged(env).await
        },
    )
    .await;
}

/// The marker a shell injection would create (`MARKER` in the case values). Short and independent
/// of where the checkout lives, so that every injected value stays within the name length limits
/// and is refused for its characters, wherever the tests run.
fn marker_path() -> PathBuf {
    PathBuf::from(format!("/tmp/k8s-ops-inj-{}", std::process::id()))
}

/// Bad input is refused before anything runs: exit ≠ 0, exactly one `error:` line (go-task's own
/// `task: Failed to run task …` may follow), no Flux object changed on either cluster, and no
/// injected command ran (the MARKER file does not exist).
#[rstest]
#[case::semicolon(&["flux:suspend", "APP=odoo;touch MARKER", "CLUSTER=apps"], "APP=")]
#[case::command_substitution(&["flux:suspend", "APP=$(touch MARKER)", "CLUSTER=apps"], "APP=")]
#[case::backticks(&["flux:reconcile", "APP=`touch MARKER`", "CLUSTER=apps"], "APP=")]
#[case::space(&["flux:suspend", "APP=odoo whoami", "CLUSTER=apps"], "APP=")]
#[case::newline(&["flux:suspend", "APP=odoo\nwhoami", "CLUSTER=apps"], "APP=")]
#[case::uppercase(&["flux:suspend", "APP=Odoo", "CLUSTER=apps"], "APP=")]
#[case::leading_dash_flag(&["flux:resume", "APP=--all", "CLUSTER=apps"], "APP=")]
#[case::too_long(&["flux:suspend", "APP=LONG254", "CLUSTER=apps"], "254 characters")]
#[case::namespace_too_long(&["flux:suspend", "NAMESPACE=LONG64", "CLUSTER=apps"], "at most 63")]
#[case::namespace_injection(&["flux:resume", "APP=odoo", "NAMESPACE=$(touch MARKER)", "CLUSTER=apps"], "NAMESPACE=")]
#[case::unknown_cluster(&["flux:suspend", "APP=odoo", "CLUSTER=prod"], "unknown CLUSTER")]
#[case::cluster_injection(&["flux:status", "CLUSTER=apps;touch MARKER"], "unknown CLUSTER")]
#[case::cluster_all_on_suspend(&["flux:suspend", "APP=odoo", "CLUSTER=all"], "CLUSTER=all is only for read-only")]
#[case::cluster_all_on_suspend_all(&["--yes", "flux:suspend-all", "CLUSTER=all"], "CLUSTER=all is only for read-only")]
#[case::cluster_all_on_reconcile(&["flux:reconcile", "APP=odoo", "CLUSTER=all"], "CLUSTER=all is only for read-only")]
#[case::missing_app(&["flux:suspend", "CLUSTER=apps"], "APP or NAMESPACE is required")]
#[case::missing_app_diff(&["flux:diff", "CLUSTER=apps"], "APP is required")]
#[case::type_bogus(&["flux:suspend", "APP=odoo", "TYPE=bogus", "CLUSTER=apps"], "TYPE='bogus'")]
#[case::reason_quote(&["flux:suspend", "APP=odoo", "CLUSTER=apps", "REASON=say \"hi\""], "REASON=")]
#[case::reason_newline(&["--yes", "flux:suspend-all", "CLUSTER=apps", "REASON=one\ntwo"], "REASON=")]
#[case::reason_too_long(&["flux:suspend", "APP=odoo", "CLUSTER=apps", "REASON=LONG201"], "at most 200")]
#[case::suspended_by_pipe(&["flux:suspend", "APP=odoo", "CLUSTER=apps", "SUSPENDED_BY=a|b"], "SUSPENDED_BY=")]
#[case::status_type_bogus(&["flux:status", "TYPE=bogus", "CLUSTER=apps"], "TYPE='bogus'")]
#[case::wait_not_bool(&["flux:resume", "APP=odoo", "WAIT=maybe", "CLUSTER=apps"], "WAIT='maybe'")]
#[case::level_bogus(&["flux:logs", "APP=odoo", "LEVEL=trace", "CLUSTER=apps"], "LEVEL='trace'")]
#[case::since_injection(&["flux:logs", "APP=odoo", "SINCE=1h;touch MARKER", "CLUSTER=apps"], "SINCE=")]
#[case::tail_negative(&["flux:logs", "APP=odoo", "TAIL=-1", "CLUSTER=apps"], "TAIL='-1'")]
#[case::source_kind_bogus(&["flux:reconcile-source", "SOURCE_KIND=svn", "CLUSTER=apps"], "SOURCE_KIND='svn'")]
#[case::resource_injection(&["flux:trace", "RESOURCE=deploy/$(touch MARKER)", "NAMESPACE=observability", "CLUSTER=infra"], "RESOURCE=")]
#[case::resource_without_namespace(&["flux:trace", "RESOURCE=deploy/gatus", "CLUSTER=infra"], "NAMESPACE is required")]
#[case::watch_on_all(&["flux:events", "WATCH=true", "CLUSTER=all"], "WATCH=true needs one cluster")]
#[case::unicode(&["flux:suspend", "APP=odöo", "CLUSTER=apps"], "APP=")]
#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing(#[case] args: &[&str], #[case] expected: &str) {
    let marker = marker_path();
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("MARKER", &marker.display().to_string())
                .replace("LONG254", &"a".repeat(254))
                .replace("LONG64", &"n".repeat(64))
                .replace("LONG201", &"r".repeat(201))
        })
        .collect();
    scenario(
        &format!(
            "bad-input-{}",
            args.join(" ")
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(60)
                .collect::<String>()
        ),
        |env| async move {
            let _alone = alone().await;
            let _ = std::fs::remove_file(&marker);
            let before = Settled::read(env).await?;
            let out = env.task().run(&args)?;
            let e = one_error(&out)?;
            anyhow::ensure!(
                e.contains(expected),
                "error lacks {expected:?}: {e}\n{}",
                out.transcript()
            );
            anyhow::ensure!(e.contains(" — "), "error names no fix: {e}");
            anyhow::ensure!(
                !marker.exists(),
                "injected command ran: {} exists",
                marker.display()
            );
            before.unchanged(env).await
        },
    )
    .await;
}
