//! `flux:reconcile-source`.

use super::prelude::*;

/// `flux:reconcile-source` makes source-controller handle a new request on GitRepository
/// flux-system and prints the revision it has.
#[rstest]
#[case::infra("infra")]
#[case::apps("apps")]
#[tokio::test]
async fn reconcile_source(#[case] cluster: &str) {
    scenario(&format!("reconcile-source-{cluster}"), |env| async move {
        let _writing = writing().await;
        let _source = exclusive(&format!("source-{cluster}")).await;
        let client = env.client(cluster).await?;
        let git = harness::flux::gitrepositories();
        let before = last_handled_reconcile_at(
            &assertions::get(&client, &git, "flux-system", "flux-system").await?,
        );
        // requestedAt tokens have a 1 s resolution in some flux versions: never reuse the same second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let out = env
            .task()
            .run(&["flux:reconcile-source", &format!("CLUSTER={cluster}")])?;
        ok(&out)?;
        let repo = assertions::get(&client, &git, "flux-system", "flux-system").await?;
        let after = last_handled_reconcile_at(&repo);
        anyhow::ensure!(
            after.is_some() && after != before,
            "lastHandledReconcileAt did not advance ({before:?} → {after:?})"
        );
        anyhow::ensure!(
            is_ready(&repo),
            "GitRepository not Ready: {}",
            assertions::describe(&repo)
        );
        let revision = assertions::artifact_revision(&repo);
        ensure_contains(
            &out,
            &[&format!(
                "✓ source git flux-system/flux-system on {cluster} at revision {revision}"
            )],
        )?;
        Ok(())
    })
    .await;
}
