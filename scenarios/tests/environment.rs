//! Smoke scenarios of the environment itself: both clusters up with healthy Flux, the fixtures
//! Ready, controller logs reachable through `flux logs`.

use harness::assertions;
use harness::fixtures::Kind;
use harness::toolchain::Tool;
use rstest::rstest;
use scenarios::{layout, scenario};

/// Runs the pinned flux CLI against one context of the environment.
fn flux(
    env: &harness::provider::Environment,
    args: &[&str],
) -> anyhow::Result<std::process::Output> {
    Ok(duct::cmd(env.toolchain.binary(Tool::Flux, "flux"), args)
        .env("KUBECONFIG", env.kubeconfig())
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()?)
}

#[rstest]
#[case::infra("infra")]
#[case::apps("apps")]
#[tokio::test]
async fn flux_check_passes(#[case] cluster: &str) {
    scenario(&format!("flux-check-{cluster}"), |env| async move {
        let out = flux(env, &["check", "--context", cluster, "--timeout", "60s"])?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::ensure!(
            out.status.success(),
            "flux check failed on {cluster}:\n{text}"
        );
        for controller in [
            "source-controller",
            "kustomize-controller",
            "helm-controller",
            "notification-controller",
        ] {
            anyhow::ensure!(
                text.contains(&format!("{controller}: deployment ready")),
                "{controller} not reported ready:\n{text}"
            );
        }
        anyhow::ensure!(text.contains("all checks passed"), "{text}");
        Ok(())
    })
    .await;
}

#[rstest]
#[case::infra("infra")]
#[case::apps("apps")]
#[tokio::test]
async fn every_fixture_is_ready(#[case] cluster: &str) {
    scenario(&format!("fixtures-ready-{cluster}"), |env| async move {
        let client = env.client(cluster).await?;
        let layout = layout(env)?;
        let expected: Vec<_> = layout
            .objects
            .iter()
            .filter(|o| o.cluster == cluster)
            .collect();
        anyhow::ensure!(
            expected.iter().any(|o| o.kind == Kind::HelmRelease),
            "no HelmRelease expected on {cluster}"
        );
        for obj in expected {
            let live =
                assertions::get(&client, &obj.kind.resource(), obj.namespace, obj.name).await?;
            anyhow::ensure!(
                assertions::is_ready(&live),
                "{cluster}: {:?} {}",
                obj.kind,
                assertions::describe(&live)
            );
            anyhow::ensure!(
                !assertions::is_suspended(&live),
                "{cluster}: {} starts suspended",
                obj.name
            );
        }
        Ok(())
    })
    .await;
}

#[rstest]
#[case::infra("infra", "gatus")]
#[case::apps("apps", "odoo")]
#[tokio::test]
async fn flux_logs_serve_the_real_controller_lines(#[case] cluster: &str, #[case] app: &str) {
    scenario(&format!("flux-logs-{cluster}"), |env| async move {
        let out = flux(
            env,
            &[
                "logs",
                "--context",
                cluster,
                "--all-namespaces",
                "--kind",
                "HelmRelease",
                "--name",
                app,
            ],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success(),
            "flux logs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::ensure!(
            text.lines()
                .any(|l| l.contains(&format!("HelmRelease/{app}"))),
            "no helm-controller line for {app} on {cluster}:\n{text}"
        );
        Ok(())
    })
    .await;
}

/// What cannot reconcile here (the second layout's unreachable remote chart) did not fail the
/// start: it is exactly what `harness up`'s closing table lists (`fixtures::not_ready`), with why.
/// On the first layout that table is empty.
#[rstest]
#[case::infra("infra")]
#[case::apps("apps")]
#[tokio::test]
async fn only_what_cannot_reconcile_here_is_not_ready(#[case] cluster: &str) {
    scenario(&format!("not-ready-{cluster}"), |env| async move {
        let client = env.client(cluster).await?;
        let listed: Vec<(String, String, String)> = harness::assertions::not_ready(&client)
            .await?
            .into_iter()
            .filter(|r| r.kind == "Kustomization" || r.kind == "HelmRelease")
            .map(|r| {
                anyhow::ensure!(!r.why.is_empty(), "{r:?} says no reason");
                Ok((r.kind, r.namespace, r.name))
            })
            .collect::<anyhow::Result<_>>()?;
        let expected: Vec<(String, String, String)> = layout(env)?
            .not_ready
            .iter()
            .filter(|o| o.cluster == cluster)
            .map(|o| {
                (
                    format!("{:?}", o.kind),
                    o.namespace.to_string(),
                    o.name.to_string(),
                )
            })
            .collect();
        anyhow::ensure!(
            listed == expected,
            "not Ready on {cluster}: {listed:?}, expected {expected:?}"
        );
        Ok(())
    })
    .await;
}
