//! CLUSTER decides, never the kubeconfig's current context.

use super::prelude::*;

/// `echo` exists on both clusters. With a kubeconfig whose current-context is `apps`,
/// `task flux:suspend APP=echo CLUSTER=infra` suspends infra's echo and leaves apps' untouched;
/// resume likewise.
#[tokio::test]
async fn cluster_isolation_ignores_the_current_context() {
    scenario("isolation-echo", |env| async move {
        let _writing = writing().await;
        let _echo = exclusive("echo").await;
        let infra = env.client("infra").await?;
        let apps = env.client("apps").await?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig-current-apps");
        let mut config: serde_norway::Value =
            serde_norway::from_str(&std::fs::read_to_string(env.kubeconfig())?)?;
        config["current-context"] = serde_norway::Value::String("apps".into());
        std::fs::write(&kubeconfig, serde_norway::to_string(&config)?)?;
        let task = env.task().env("KUBECONFIG", &kubeconfig);
        let ks = Kind::Kustomization.resource();
        let apps_before = flux_fingerprint(&apps, Some("echo")).await?;
        anyhow::ensure!(!apps_before.is_empty(), "no echo on apps");

        let out = task.run(&["flux:suspend", "APP=echo", "CLUSTER=infra"])?;
        ok(&out)?;
        let obj = assertions::get(&infra, &ks, "flux-system", "echo").await?;
        anyhow::ensure!(
            is_suspended(&obj),
            "infra echo not suspended:\n{}",
            out.transcript()
        );
        same_fingerprint(
            "apps (echo)",
            &apps_before,
            &flux_fingerprint(&apps, Some("echo")).await?,
        )?;
        anyhow::ensure!(
            !is_suspended(&assertions::get(&apps, &ks, "flux-system", "echo").await?),
            "apps echo suspended"
        );

        let out = task.run(&["flux:resume", "APP=echo", "CLUSTER=infra"])?;
        ok(&out)?;
        assertions::wait_resumed(&infra, &ks, "flux-system", "echo", SETTLE).await?;
        same_fingerprint(
            "apps (echo)",
            &apps_before,
            &flux_fingerprint(&apps, Some("echo")).await?,
        )?;
        Ok(())
    })
    .await;
}
