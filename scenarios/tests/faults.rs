//! Faults: what the `task flux:*` commands do when part of the platform is down. This
//! binary breaks its own environment (the last step stops the `apps` API server for good), so it
//! is one test with sequential steps; each step's failure is collected and the test fails at the
//! end naming all of them, so that a failing step does not hide the later ones.

use std::time::Duration;

use harness::assertions::{self, is_suspended};
use harness::fixtures::Kind;
use harness::provider::Environment;
use harness::toolchain::Tool;
use scenarios::{SETTLE, ok, scenario};

/// The reconcile timeout the test asks for (`TIMEOUT=`), and how long the task may take with it.
const RECONCILE_TIMEOUT: &str = "20s";
const RECONCILE_BOUND: Duration = Duration::from_secs(60);
/// How fast a task must fail when an API server is down (preflight waits at most 5 s).
const API_DOWN_BOUND: Duration = Duration::from_secs(15);

/// The environment's fault injection; a provider that does not own the processes has none.
fn faults(env: &Environment) -> anyhow::Result<&dyn harness::provider::Faults> {
    env.faults().ok_or_else(|| {
        anyhow::anyhow!(
            "this provider does not own the clusters' processes: run the fault scenarios with HARNESS_PROVIDER=local"
        )
    })
}

/// helm-controller of apps down: `task flux:reconcile APP=odoo CLUSTER=apps TIMEOUT=20s` fails
/// within its timeout with a message naming the HelmRelease; started again, the same reconcile
/// succeeds.
async fn helm_controller_down(env: &'static Environment) -> anyhow::Result<()> {
    let apps = env.client("apps").await?;
    let hr = Kind::HelmRelease.resource();
    faults(env)?.stop_controller("apps", Tool::HelmController)?;
    let args = [
        "flux:reconcile",
        "APP=odoo",
        "CLUSTER=apps",
        &format!("TIMEOUT={RECONCILE_TIMEOUT}"),
    ];
    let outcome = env
        .task()
        .timeout(RECONCILE_BOUND + Duration::from_secs(30))
        .run_within(&args, None);
    // Start it again before judging, so the next step has a healthy helm-controller.
    faults(env)?.start_controller("apps", Tool::HelmController)?;
    let checked = match outcome? {
        None => Err(anyhow::anyhow!(
            "`task {}` was still running after {:?} with helm-controller down: the task has no TIMEOUT \
             (flux reconcile waits its default 5m); killed",
            args.join(" "),
            RECONCILE_BOUND + Duration::from_secs(30)
        )),
        Some(out) => (|| {
            anyhow::ensure!(
                !out.success(),
                "reconcile succeeded with helm-controller down:\n{}",
                out.transcript()
            );
            anyhow::ensure!(
                out.elapsed <= RECONCILE_BOUND,
                "reconcile failed only after {:?} (asked TIMEOUT={RECONCILE_TIMEOUT}):\n{}",
                out.elapsed,
                out.transcript()
            );
            anyhow::ensure!(
                out.combined().contains("HelmRelease business/odoo"),
                "failure does not name HelmRelease business/odoo:\n{}",
                out.transcript()
            );
            Ok(())
        })(),
    };
    // Recovery: with helm-controller back, the same reconcile succeeds and odoo is Ready.
    let out = env.task().timeout(Duration::from_secs(180)).run(&[
        "flux:reconcile",
        "APP=odoo",
        "CLUSTER=apps",
    ])?;
    let recovered = ok(&out);
    assertions::wait_ready(&apps, &hr, "business", "odoo", SETTLE).await?;
    checked?;
    recovered
}

/// apps API server down (for good): tasks on apps fail within seconds naming the cluster, tasks on
/// infra still work, and `task flux:status CLUSTER=all` still reports infra's objects, with
/// exit ≠ 0 and an error naming apps.
async fn apps_apiserver_down(env: &'static Environment) -> anyhow::Result<()> {
    let infra = env.client("infra").await?;
    let mut failures = Vec::new();
    let pid = env
        .processes()
        .into_iter()
        .find(|(name, _)| name == "apps-kube-apiserver")
        .map(|(_, pid)| pid)
        .ok_or_else(|| anyhow::anyhow!("no apps-kube-apiserver among {:?}", env.processes()))?;
    // Bounded by the provider (SIGTERM, SIGKILL after 5 s): it fails when the process stays.
    faults(env)?.stop_apiserver("apps")?;
    anyhow::ensure!(
        !harness::processes::alive(pid),
        "kube-apiserver of apps (pid {pid}) still runs after stop_apiserver returned"
    );
    let apps = env.client("apps").await?;
    let answered = tokio::time::timeout(Duration::from_secs(5), apps.apiserver_version()).await;
    anyhow::ensure!(
        !matches!(answered, Ok(Ok(_))),
        "the apps API server still answers after stop_apiserver"
    );

    for args in [
        &["flux:suspend", "APP=odoo", "CLUSTER=apps"][..],
        &["flux:reconcile", "APP=odoo", "CLUSTER=apps"][..],
        &["flux:status", "CLUSTER=apps"][..],
    ] {
        let step = match env
            .task()
            .timeout(API_DOWN_BOUND * 4)
            .run_within(args, None)?
        {
            None => Err(anyhow::anyhow!(
                "`task {}` hung with the apps API server down",
                args.join(" ")
            )),
            Some(out) => (|| {
                anyhow::ensure!(
                    !out.success(),
                    "succeeded with the apps API server down:\n{}",
                    out.transcript()
                );
                anyhow::ensure!(
                    out.elapsed <= API_DOWN_BOUND,
                    "took {:?} to fail:\n{}",
                    out.elapsed,
                    out.transcript()
                );
                let errors: Vec<&str> = out
                    .stderr
                    .lines()
                    .filter(|l| l.starts_with("error:"))
                    .collect();
                anyhow::ensure!(
                    errors.len() == 1
                        && errors[0].contains("apps")
                        && errors[0].contains("API server"),
                    "expected one error line naming the API server of apps:\n{}",
                    out.transcript()
                );
                Ok(())
            })(),
        };
        if let Err(e) = step {
            failures.push(format!("{e:#}"));
        }
    }

    // infra is unaffected.
    let out = env
        .task()
        .run(&["flux:suspend", "APP=echo", "CLUSTER=infra"])?;
    if let Err(e) = ok(&out) {
        failures.push(format!("suspend on infra with apps down: {e:#}"));
    }
    let out = env
        .task()
        .run(&["flux:resume", "APP=echo", "CLUSTER=infra"])?;
    if let Err(e) = ok(&out) {
        failures.push(format!("resume on infra with apps down: {e:#}"));
    }
    let echo = assertions::wait_ready(
        &infra,
        &Kind::Kustomization.resource(),
        "flux-system",
        "echo",
        SETTLE,
    )
    .await?;
    if is_suspended(&echo) {
        failures.push("infra echo still suspended".into());
    }

    // CLUSTER=all: infra still reported; apps named as failing; exit ≠ 0 (a cluster failed).
    match env
        .task()
        .timeout(API_DOWN_BOUND * 4)
        .run_within(&["flux:status", "CLUSTER=all"], None)?
    {
        None => failures
            .push("`task flux:status CLUSTER=all` hung with the apps API server down".into()),
        Some(out) => {
            let text = out.combined();
            let infra_rows = out
                .stdout
                .lines()
                .filter(|l| l.starts_with("infra "))
                .count();
            if out.success()
                || out.elapsed > API_DOWN_BOUND
                || infra_rows < 5
                || !text
                    .lines()
                    .any(|l| l.starts_with("error:") && l.contains("apps"))
            {
                failures.push(format!(
                    "status CLUSTER=all with apps down should list infra's objects ({infra_rows} row(s) seen), \
                     name apps in an error line and exit ≠ 0, within {API_DOWN_BOUND:?}:\n{}",
                    out.transcript()
                ));
            }
        }
    }
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

#[tokio::test]
async fn tasks_under_faults() {
    scenario("faults", |env| async move {
        let mut failures = Vec::new();
        // Recoverable fault first; the permanent one (API server) last.
        if let Err(e) = helm_controller_down(env).await {
            failures.push(format!("helm-controller of apps down: {e:#}"));
        }
        if let Err(e) = apps_apiserver_down(env).await {
            failures.push(format!("API server of apps down: {e:#}"));
        }
        anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
        Ok(())
    })
    .await;
}
