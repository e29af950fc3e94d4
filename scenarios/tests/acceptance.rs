//! Story 3.1's acceptance criteria on real Flux: `task flux:suspend APP=… CLUSTER=…` suspends the
//! app's HelmRelease (and its Kustomization) where it lives, `task flux:resume` undoes it, and
//! `task flux:reconcile` makes the controllers handle a new reconcile request now.

use harness::assertions::{
    self, flux_fingerprint, is_ready, is_suspended, last_handled_reconcile_at, requested_at,
};
use harness::fixtures::{FluxObject, Kind, Role};
use harness::provider::Environment;
use rstest::rstest;
use scenarios::{SETTLE, exclusive, layout, ok, scenario, writing};

/// A fixture app: the role's app in the served layout, with its Flux objects from that layout's
/// description (Kustomization first).
#[derive(Debug, Clone)]
struct App {
    cluster: &'static str,
    name: &'static str,
    objects: Vec<FluxObject>,
}

impl App {
    fn of(env: &Environment, role: Role) -> anyhow::Result<Self> {
        let layout = layout(env)?;
        let (cluster, name) = layout.app(role);
        let objects = layout.objects_of(cluster, name);
        anyhow::ensure!(
            !objects.is_empty(),
            "{} lists no object of {name}",
            layout.dir
        );
        Ok(Self {
            cluster,
            name,
            objects,
        })
    }

    fn other_cluster(&self) -> &'static str {
        if self.cluster == "apps" {
            "infra"
        } else {
            "apps"
        }
    }
}

/// The story's suspend criterion: suspend acts on the app's HelmRelease in its own namespace (and
/// its Kustomization), nothing on the other cluster changes; resume brings it back to Ready.
#[rstest]
#[case::odoo_on_apps(Role::Odoo)]
#[case::gatus_on_infra(Role::Gatus)]
#[case::kustomization_only_app(Role::KustomizationOnly)]
#[case::second_helm_release(Role::SecondRelease)]
#[tokio::test]
async fn suspend_then_resume(#[case] role: Role) {
    scenario(&format!("suspend-resume-{role:?}"), |env| async move {
        let app = App::of(env, role)?;
        let _writing = writing().await;
        let _app = exclusive(app.name).await;
        let client = env.client(app.cluster).await?;
        let other = env.client(app.other_cluster()).await?;
        // Objects with the app's name on the other cluster (echo exists on both) must not change.
        let other_before = flux_fingerprint(&other, Some(app.name)).await?;

        let out = env.task().run(&[
            "flux:suspend",
            &format!("APP={}", app.name),
            &format!("CLUSTER={}", app.cluster),
        ])?;
        ok(&out)?;
        for o in &app.objects {
            let obj = assertions::get(&client, &o.kind.resource(), o.namespace, app.name).await?;
            anyhow::ensure!(
                is_suspended(&obj),
                "{:?} {}/{} not suspended after:\n{}",
                o.kind,
                o.namespace,
                app.name,
                out.transcript()
            );
        }
        anyhow::ensure!(
            flux_fingerprint(&other, Some(app.name)).await? == other_before,
            "suspend on {} changed Flux objects on {}",
            app.cluster,
            app.other_cluster()
        );

        let out = env.task().run(&[
            "flux:resume",
            &format!("APP={}", app.name),
            &format!("CLUSTER={}", app.cluster),
        ])?;
        ok(&out)?;
        for o in &app.objects {
            assertions::wait_resumed(&client, &o.kind.resource(), o.namespace, app.name, SETTLE)
                .await?;
        }
        anyhow::ensure!(
            flux_fingerprint(&other, Some(app.name)).await? == other_before,
            "resume on {} changed Flux objects on {}",
            app.cluster,
            app.other_cluster()
        );
        Ok(())
    })
    .await;
}

/// The story's reconcile criterion: reconcile sets a new `reconcile.fluxcd.io/requestedAt` token on
/// the app's objects and the controllers handle exactly that token (`status.lastHandledReconcileAt`)
/// before the task returns.
#[rstest]
#[case::odoo_on_apps(Role::Odoo)]
#[case::gatus_on_infra(Role::Gatus)]
#[case::kustomization_only_app(Role::KustomizationOnly)]
#[case::second_helm_release(Role::SecondRelease)]
#[tokio::test]
async fn reconcile_is_handled_now(#[case] role: Role) {
    scenario(&format!("reconcile-{role:?}"), |env| async move {
        let app = App::of(env, role)?;
        let _writing = writing().await;
        let _app = exclusive(app.name).await;
        let client = env.client(app.cluster).await?;
        let mut before = Vec::new();
        for o in &app.objects {
            let obj = assertions::get(&client, &o.kind.resource(), o.namespace, app.name).await?;
            before.push(last_handled_reconcile_at(&obj));
        }

        let out = env.task().run(&["flux:reconcile", &format!("APP={}", app.name), &format!("CLUSTER={}", app.cluster)])?;
        ok(&out)?;
        for (o, previous) in app.objects.iter().zip(before) {
            let (kind, ns) = (o.kind, o.namespace);
            let obj = assertions::get(&client, &kind.resource(), ns, app.name).await?;
            let token = requested_at(&obj);
            anyhow::ensure!(token.is_some() && token != previous, "{kind:?} {ns}/{}: no new reconcile request ({token:?})", app.name);
            anyhow::ensure!(
                last_handled_reconcile_at(&obj) == token,
                "{kind:?} {ns}/{}: controller had not handled request {token:?} when the task returned ({:?})\n{}",
                app.name,
                last_handled_reconcile_at(&obj),
                out.transcript()
            );
            anyhow::ensure!(is_ready(&obj), "{kind:?} {ns}/{} not Ready after reconcile: {}", app.name, assertions::describe(&obj));
        }
        Ok(())
    })
    .await;
}

/// The reconcile criterion, the operator's reason for it: a commit pushed to Git is applied by
/// `task flux:reconcile` at once, without waiting for the 1h source interval.
#[tokio::test]
async fn reconcile_applies_a_new_commit_without_waiting_for_the_interval() {
    scenario("reconcile-new-commit-odoo", |env| async move {
        let _writing = writing().await;
        let _app = exclusive("odoo").await;
        let client = env.client("apps").await?;
        let path = layout(env)?.odoo_helmrelease;
        let current = std::fs::read_to_string(env.fixtures()?.work_dir().join(path))?;
        let workers = format!("workers: {}", 3 + (std::process::id() % 90));
        let changed = current
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("workers:") {
                    format!("      {workers}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        anyhow::ensure!(
            changed != current,
            "the odoo fixture has no `workers:` value to change"
        );
        let commit = env
            .fixtures()?
            .commit_file(path, &changed, "test: change odoo workers")?;

        let out = env
            .task()
            .run(&["flux:reconcile", "APP=odoo", "CLUSTER=apps"])?;
        ok(&out)?;
        let repo = assertions::get(
            &client,
            &harness::flux::gitrepositories(),
            "flux-system",
            "flux-system",
        )
        .await?;
        let revision = assertions::artifact_revision(&repo);
        anyhow::ensure!(
            revision.ends_with(&commit),
            "GitRepository still at {revision}, expected commit {commit}"
        );
        let hr =
            assertions::get(&client, &Kind::HelmRelease.resource(), "business", "odoo").await?;
        let applied = hr.data["spec"]["values"]["config"]["workers"].to_string();
        anyhow::ensure!(
            workers.ends_with(&applied),
            "HelmRelease values not updated: workers={applied}, want {workers}"
        );
        let cm: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client.clone(), "business");
        let conf = cm
            .get("odoo-config")
            .await?
            .data
            .unwrap_or_default()
            .remove("odoo.conf")
            .unwrap_or_default();
        anyhow::ensure!(
            conf.contains(&workers.replace(": ", " = ")),
            "release not upgraded, odoo.conf:\n{conf}"
        );
        Ok(())
    })
    .await;
}
