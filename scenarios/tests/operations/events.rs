//! `flux:events`: an app's own events, and every cluster's.

use super::prelude::*;

/// `flux:events` with APP shows the events of its Kustomization and HelmRelease, also for a
/// HelmRelease using `spec.chartRef`; without APP and CLUSTER=all, labelled events of both.
#[rstest]
#[case::odoo(&["APP=odoo", "CLUSTER=apps"], &["# events of Kustomization flux-system/odoo on apps", "# events of HelmRelease business/odoo on apps", "InstallSucceeded"])]
#[case::whoami_chart_ref(&["APP=whoami", "CLUSTER=apps"], &["# events of Kustomization flux-system/whoami on apps", "# events of HelmRelease business/whoami on apps", "InstallSucceeded", "business/whoami"])]
#[case::gatus_infra(&["APP=gatus", "CLUSTER=infra"], &["# events of HelmRelease observability/gatus on infra", "InstallSucceeded"])]
#[case::all_clusters(&["CLUSTER=all"], &["[infra] ", "[apps] ", "Kustomization/gatus", "Kustomization/odoo"])]
#[tokio::test]
async fn events(#[case] vars: &[&str], #[case] expected: &[&str]) {
    scenario(&format!("events-{}", vars.join("-")), |env| async move {
        let mut args = vec!["flux:events"];
        args.extend_from_slice(vars);
        let out = env.task().run(&args)?;
        ok(&out)?;
        ensure_contains(&out, expected)?;
        if let Some(app) = vars.iter().find_map(|v| v.strip_prefix("APP=")) {
            // The HelmRelease section lists an event of that HelmRelease itself.
            let section = out
                .stdout
                .split("# events of HelmRelease")
                .nth(1)
                .unwrap_or_default()
                .to_lowercase();
            anyhow::ensure!(
                section.contains(&format!("helmrelease/{app}")),
                "no event of HelmRelease {app} in:\n{}",
                out.transcript()
            );
        }
        Ok(())
    })
    .await;
}
