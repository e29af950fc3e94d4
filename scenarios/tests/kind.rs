//! What only real containers can show (the kind provider): the fixture apps' pods run their
//! containers and serve HTTP, their logs are the app's own output, and `task flux:logs` prints
//! lines the real controller pods wrote.
//!
//! Ignored unless asked for, since the default `local` provider simulates pods (kwok):
//! `HARNESS_PROVIDER=kind cargo test -p scenarios --test kind -- --include-ignored` (`.ci/run` does).

use harness::provider::Environment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, LogParams};
use rstest::rstest;
use scenarios::{ok, scenario};

/// The one pod of `app` in `namespace`, proven to run on this cluster's kind node with every
/// container started and ready.
async fn running_pod(
    env: &Environment,
    cluster: &str,
    namespace: &str,
    selector: &str,
) -> anyhow::Result<(Api<Pod>, Pod)> {
    let pods: Api<Pod> = Api::namespaced(env.client(cluster).await?, namespace);
    let list = pods.list(&ListParams::default().labels(selector)).await?;
    let [pod] = list.items.as_slice() else {
        anyhow::bail!(
            "{cluster}: expected one pod {selector} in {namespace}, found {}",
            list.items.len()
        );
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    anyhow::ensure!(
        node.as_deref() == Some(&format!("{cluster}-control-plane")),
        "{cluster}: pod {name} is on {node:?}, not the kind node"
    );
    let status = pod.status.clone().unwrap_or_default();
    anyhow::ensure!(
        status.phase.as_deref() == Some("Running"),
        "{cluster}: pod {name} is {:?}",
        status.phase
    );
    let containers = status.container_statuses.unwrap_or_default();
    anyhow::ensure!(
        !containers.is_empty(),
        "{cluster}: pod {name} has no containers"
    );
    for c in &containers {
        let started = c
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.clone());
        anyhow::ensure!(
            c.ready && c.started == Some(true) && started.is_some() && c.container_id.is_some(),
            "{cluster}: container {} of {name} is not running: {c:?}",
            c.name
        );
    }
    Ok((pods, pod.clone()))
}

#[rstest]
#[case::gatus_on_infra("infra", "observability", "gatus", 8080)]
#[case::odoo_on_apps("apps", "business", "odoo", 8069)]
#[case::whoami_on_apps("apps", "business", "whoami", 80)]
#[ignore = "kind provider only: HARNESS_PROVIDER=kind cargo test -p scenarios --test kind -- --include-ignored"]
#[tokio::test]
async fn fixture_pods_run_and_serve_http(
    #[case] cluster: &str,
    #[case] namespace: &str,
    #[case] app: &str,
    #[case] port: u16,
) {
    scenario(&format!("kind-pods-{app}"), |env| async move {
        let selector = format!("app.kubernetes.io/instance={app}");
        let (pods, pod) = running_pod(env, cluster, namespace, &selector).await?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        // Through the API server's pod proxy: the node reaches the pod's IP on its bridge.
        let client = env.client(cluster).await?;
        let request = http::Request::get(format!(
            "/api/v1/namespaces/{namespace}/pods/{name}:{port}/proxy/"
        ))
        .body(Vec::new())?;
        let body = client.request_text(request).await?;
        anyhow::ensure!(
            body.trim() == format!("{app} ok"),
            "{cluster}: {app} answered {body:?}"
        );
        let logs = pods.logs(&name, &LogParams::default()).await?;
        anyhow::ensure!(
            logs.contains(&format!("{app}: fixture app starting, HTTP on :{port}")),
            "{cluster}: the {app} pod's log is not the app's own output:\n{logs}"
        );
        Ok(())
    })
    .await;
}

/// odoo's log shows the config file its HelmRelease values rendered (`workers = 2`): the app
/// read what Flux applied.
#[ignore = "kind provider only: HARNESS_PROVIDER=kind cargo test -p scenarios --test kind -- --include-ignored"]
#[tokio::test]
async fn odoo_logs_the_config_flux_applied() {
    scenario("kind-odoo-config", |env| async move {
        let (pods, pod) =
            running_pod(env, "apps", "business", "app.kubernetes.io/instance=odoo").await?;
        let logs = pods
            .logs(
                &pod.metadata.name.clone().unwrap_or_default(),
                &LogParams::default(),
            )
            .await?;
        anyhow::ensure!(
            logs.contains("odoo: config /etc/odoo/odoo.conf:") && logs.contains("workers = 2"),
            "odoo did not log its rendered config:\n{logs}"
        );
        Ok(())
    })
    .await;
}

/// `task flux:logs` prints lines that the helm-controller pod itself wrote (its container log, as
/// the kubelet keeps it), for the cluster's app.
#[rstest]
#[case::infra("infra", "gatus", "HelmRelease/gatus.observability")]
#[case::apps("apps", "odoo", "HelmRelease/odoo.business")]
#[ignore = "kind provider only: HARNESS_PROVIDER=kind cargo test -p scenarios --test kind -- --include-ignored"]
#[tokio::test]
async fn task_logs_are_the_controller_pods_lines(
    #[case] cluster: &str,
    #[case] app: &str,
    #[case] marker: &str,
) {
    scenario(&format!("kind-task-logs-{cluster}"), |env| async move {
        let out = env.task().run(&[
            "flux:logs".to_string(),
            format!("CLUSTER={cluster}"),
            format!("APP={app}"),
            "TYPE=hr".to_string(),
        ])?;
        ok(&out)?;
        let (pods, pod) =
            running_pod(env, cluster, "flux-system", "app=helm-controller").await?;
        let pod_log = pods
            .logs(&pod.metadata.name.clone().unwrap_or_default(), &LogParams::default())
            .await?;
        // flux logs reformats each JSON line; the reconciliation message is kept verbatim.
        let messages: Vec<String> = pod_log
            .lines()
            .filter(|l| l.contains(&format!("\"name\":\"{app}\"")))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["msg"].as_str().map(str::to_string))
            .collect();
        anyhow::ensure!(
            !messages.is_empty(),
            "{cluster}: the helm-controller pod logged nothing about {app}:\n{pod_log}"
        );
        let printed: Vec<&str> = out.stdout.lines().filter(|l| l.contains(marker)).collect();
        anyhow::ensure!(
            !printed.is_empty(),
            "{cluster}: flux:logs printed no {marker} line:\n{}",
            out.transcript()
        );
        anyhow::ensure!(
            printed.iter().any(|l| messages.iter().any(|m| l.contains(m.as_str()))),
            "{cluster}: no printed line carries a message of the pod's own log\nprinted: {printed:?}\npod messages: {messages:?}"
        );
        Ok(())
    })
    .await;
}
