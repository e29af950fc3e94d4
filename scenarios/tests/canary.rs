//! The non-destructive acceptance check, safe on the real clusters: suspend, resume and reconcile of
//! ONE canary app (`HARNESS_CANARY_APP` on `HARNESS_CANARY_CLUSTER`, default odoo on apps), whose
//! suspension is undone even when a step fails. Runs on every provider:
//! `HARNESS_PROVIDER=existing HARNESS_KUBECONFIG=~/.kube/config cargo test -p scenarios --test canary`.

use anyhow::{Context, Result};
use harness::assertions::{self, is_ready, is_suspended, last_handled_reconcile_at, requested_at};
use harness::flux;
use harness::provider::{Environment, existing};
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use scenarios::{SETTLE, ok, run_scenario};

struct Canary {
    cluster: String,
    app: String,
}

impl Canary {
    fn from_env() -> Self {
        Self {
            cluster: std::env::var("HARNESS_CANARY_CLUSTER").unwrap_or_else(|_| "apps".into()),
            app: std::env::var("HARNESS_CANARY_APP").unwrap_or_else(|_| "odoo".into()),
        }
    }

    /// `(resource, namespace)` of every Kustomization and HelmRelease named like the app.
    async fn objects(&self, client: &kube::Client) -> Result<Vec<(ApiResource, String)>> {
        let mut found = Vec::new();
        for resource in [flux::kustomizations(), flux::helmreleases()] {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            for obj in api
                .list(&ListParams::default().fields(&format!("metadata.name={}", self.app)))
                .await?
            {
                found.push((resource.clone(), obj.metadata.namespace.unwrap_or_default()));
            }
        }
        anyhow::ensure!(
            !found.is_empty(),
            "canary {} has no Kustomization or HelmRelease on {}",
            self.app,
            self.cluster
        );
        Ok(found)
    }

    fn args(&self, task: &str) -> Vec<String> {
        vec![
            format!("flux:{task}"),
            format!("APP={}", self.app),
            format!("CLUSTER={}", self.cluster),
        ]
    }

    /// suspend → resume → reconcile, each checked on the cluster with kube-rs.
    async fn exercise(&self, env: &Environment) -> Result<()> {
        let client = env.client(&self.cluster).await?;
        let objects = self.objects(&client).await?;
        for (resource, ns) in &objects {
            let obj = assertions::get(&client, resource, ns, &self.app).await?;
            anyhow::ensure!(
                !is_suspended(&obj),
                "canary {} {ns}/{} is already suspended: resume it before the check",
                resource.kind,
                self.app
            );
        }
        let outcome = self.steps(env, &client, &objects).await;
        // Leave the canary as found, whatever happened.
        let restored = env.task().run(&self.args("resume"));
        outcome?;
        ok(&restored?)
    }

    async fn steps(
        &self,
        env: &Environment,
        client: &kube::Client,
        objects: &[(ApiResource, String)],
    ) -> Result<()> {
        ok(&env.task().run(&self.args("suspend"))?)?;
        for (resource, ns) in objects {
            let obj = assertions::get(client, resource, ns, &self.app).await?;
            anyhow::ensure!(
                is_suspended(&obj),
                "{} {ns}/{} not suspended by flux:suspend",
                resource.kind,
                self.app
            );
        }
        ok(&env.task().run(&self.args("resume"))?)?;
        for (resource, ns) in objects {
            assertions::wait_resumed(client, resource, ns, &self.app, SETTLE)
                .await
                .context("after flux:resume")?;
        }
        ok(&env.task().run(&self.args("reconcile"))?)?;
        for (resource, ns) in objects {
            let obj = assertions::get(client, resource, ns, &self.app).await?;
            let token = requested_at(&obj).context("flux:reconcile set no reconcile request")?;
            anyhow::ensure!(
                last_handled_reconcile_at(&obj).as_deref() == Some(token.as_str()),
                "{} {ns}/{}: request {token} not handled",
                resource.kind,
                self.app
            );
            anyhow::ensure!(
                is_ready(&obj),
                "{} {ns}/{} not Ready: {}",
                resource.kind,
                self.app,
                assertions::describe(&obj)
            );
        }
        Ok(())
    }
}

/// The canary check on this binary's environment (the local clusters in CI, the real ones with
/// HARNESS_PROVIDER=existing).
#[tokio::test]
async fn canary_suspend_resume_reconcile() {
    let canary = Canary::from_env();
    run_scenario(
        &format!("canary-{}-{}", canary.cluster, canary.app),
        |env| async move { canary.exercise(env).await },
    )
    .await;
}

/// The `existing` provider for real: the local clusters stand in for production, reached only
/// through their kubeconfig, and the canary check runs through that provider.
#[tokio::test]
async fn the_existing_provider_runs_the_canary_on_clusters_it_does_not_own() {
    run_scenario("existing-provider", |local| async move {
        let production = existing::start(local.kubeconfig().to_path_buf())?;
        anyhow::ensure!(
            production.processes().is_empty(),
            "the existing provider must own no process"
        );
        anyhow::ensure!(
            production.faults().is_none(),
            "the existing provider must refuse fault injection"
        );
        anyhow::ensure!(
            production.fixtures().is_err(),
            "the existing provider serves no fixtures repo"
        );
        let canary = Canary {
            cluster: "infra".into(),
            app: "gatus".into(),
        };
        canary.exercise(&production).await?;
        drop(production); // stops nothing: the local clusters must still answer
        local.health()
    })
    .await;
}

#[test]
fn an_unreachable_existing_cluster_fails_in_one_line_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: x}\ncontexts:\n- name: infra\n  context: {cluster: c, user: u}\n- name: apps\n  context: {cluster: c, user: u}\n",
    )
    .unwrap();
    let err = match existing::start(kubeconfig) {
        Ok(_) => panic!("connected to a cluster that does not exist"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.starts_with("context infra in "), "{err}");
    assert!(
        err.contains("does not answer") && err.contains("fix the kubeconfig"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
