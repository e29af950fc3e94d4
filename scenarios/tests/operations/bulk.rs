//! NAMESPACE-wide suspend/resume, suspend-all / resume-all, and their confirmation.

use super::prelude::*;

/// `NAMESPACE=business` without APP suspends every Kustomization/HelmRelease there (the
/// HelmReleases odoo and whoami, and in the app-namespace layout their Kustomizations) and nothing
/// outside it (in the first layout the Kustomizations odoo/whoami live in flux-system); resume
/// brings them back to Ready.
#[tokio::test]
async fn namespace_wide_suspend_and_resume() {
    scenario("namespace-suspend-resume-business", |env| async move {
        let _writing = writing().await;
        let _odoo = exclusive("odoo").await;
        let _whoami = exclusive("whoami").await;
        let apps = env.client("apps").await?;
        let hr = Kind::HelmRelease.resource();

        let out = env
            .task()
            .run(&["flux:suspend", "NAMESPACE=business", "CLUSTER=apps"])?;
        ok(&out)?;
        // The fixtures' objects (other scenarios' own objects live in ops-* namespaces).
        for (kind, obj) in ks_and_hr(&apps).await? {
            let (ns, name) = ns_name(&obj);
            if ns != "business" && ns != "flux-system" {
                continue;
            }
            let want = ns == "business";
            anyhow::ensure!(
                is_suspended(&obj) == want,
                "{kind:?} {ns}/{name}: suspended={} after suspending namespace business:\n{}",
                is_suspended(&obj),
                out.transcript()
            );
        }
        for name in ["odoo", "whoami"] {
            anyhow::ensure!(
                assertions::get(&apps, &hr, "business", name)
                    .await
                    .map(|o| is_suspended(&o))?,
                "HelmRelease business/{name} not suspended"
            );
        }

        let out = env
            .task()
            .run(&["flux:resume", "NAMESPACE=business", "CLUSTER=apps"])?;
        ok(&out)?;
        for name in ["odoo", "whoami"] {
            assertions::wait_resumed(&apps, &hr, "business", name, SETTLE).await?;
        }

        Ok(())
    })
    .await;
}

/// `task --yes flux:suspend-all CLUSTER=infra` suspends every Kustomization and HelmRelease of
/// infra and changes nothing on apps; `resume-all` without --yes refuses (no TTY) and changes
/// nothing; `task --yes flux:resume-all` brings every object back to Ready.
#[tokio::test]
async fn suspend_all_and_resume_all_with_yes() {
    scenario("suspend-all-resume-all-infra", |env| async move {
        // Alone: asserts that nothing changed on apps.
        let _alone = alone().await;
        let infra = env.client("infra").await?;
        let before = Settled::read(env).await?;
        let objects = ks_and_hr(&infra).await?;
        anyhow::ensure!(objects.len() >= 4, "infra has only {} ks/hr", objects.len());

        let out = env
            .task()
            .run(&["--yes", "flux:suspend-all", "CLUSTER=infra"])?;
        ok(&out)?;
        for (kind, obj) in ks_and_hr(&infra).await? {
            let (ns, name) = ns_name(&obj);
            anyhow::ensure!(
                is_suspended(&obj),
                "{kind:?} {ns}/{name} not suspended after suspend-all:\n{}",
                out.transcript()
            );
        }
        before.unchanged_on(env, "apps").await?;

        // Without --yes (and with an answer on stdin, which is still no TTY): refused, no change.
        let mid = Settled::read(env).await?;
        let out = env
            .task()
            .run_with_stdin(&["flux:resume-all", "CLUSTER=infra"], Some("y\n"))?;
        anyhow::ensure!(
            !out.success(),
            "resume-all without --yes ran:\n{}",
            out.transcript()
        );
        ensure_contains(&out, &["--yes"])?;
        mid.unchanged(env).await?;

        let out = env
            .task()
            .run(&["--yes", "flux:resume-all", "CLUSTER=infra"])?;
        ok(&out)?;
        for (kind, obj) in ks_and_hr(&infra).await? {
            let (ns, name) = ns_name(&obj);
            assertions::wait_resumed(&infra, &kind.resource(), &ns, &name, SETTLE).await?;
        }
        before.unchanged_on(env, "apps").await?;
        Ok(())
    })
    .await;
}

/// Without `--yes` and without a TTY the bulk suspend refuses, even with `y` on stdin: exit ≠ 0,
/// go-task names `--yes`, and no Flux object changes on either cluster.
#[rstest]
#[case::suspend_all_infra(&["flux:suspend-all", "CLUSTER=infra"], None)]
#[case::suspend_all_apps_answer_on_stdin(&["flux:suspend-all", "CLUSTER=apps"], Some("y\n"))]
#[case::suspend_all_namespace(&["flux:suspend-all", "NAMESPACE=business", "CLUSTER=apps"], None)]
#[tokio::test]
async fn bulk_suspend_refuses_without_yes(#[case] args: &[&str], #[case] stdin: Option<&str>) {
    scenario(
        &format!("bulk-refuses-{}", args.join("-")),
        |env| async move {
            let _alone = alone().await;
            let before = Settled::read(env).await?;
            let out = env.task().run_with_stdin(args, stdin)?;
            anyhow::ensure!(!out.success(), "ran without --yes:\n{}", out.transcript());
            ensure_contains(&out, &["--yes"])?;
            before.unchanged(env).await
        },
    )
    .await;
}

/// A hold survives an emergency stop: one app suspended on its own, then suspend-all and resume-all
/// of its cluster; resume-all brings back exactly what suspend-all suspended (its batch) and lists
/// the held app as left alone, still suspended with its own record.
#[tokio::test]
async fn resume_all_leaves_a_held_app_suspended() {
    scenario("resume-all-hold", |env| async move {
        let _alone = alone().await;
        let (cluster, app) = layout(env)?.app(Role::SecondRelease);
        let held = layout(env)?.objects_of(cluster, app);
        let client = env.client(cluster).await?;
        let at = format!("CLUSTER={cluster}");
        ok(&env
            .task()
            .run(&["flux:suspend", &format!("APP={app}"), &at, "REASON=upgrade pending"])?)?;
        let result = async {
            ok(&env.task().run(&["--yes", "flux:suspend-all", &at, "REASON=incident"])?)?;
            let out = env.task().run(&["--yes", "flux:resume-all", &at])?;
            ok(&out)?;
            ensure_contains(&out, &["resuming batch ", "left alone"])?;
            for (kind, obj) in ks_and_hr(&client).await? {
                let (ns, name) = ns_name(&obj);
                let is_held = held.iter().any(|o| o.kind == kind && o.namespace == ns && name == app);
                if is_held {
                    let reason = obj
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("k8s-ops.io/suspend-reason").cloned());
                    anyhow::ensure!(
                        is_suspended(&obj) && reason.as_deref() == Some("upgrade pending"),
                        "the held {kind:?} {ns}/{name} was resumed or lost its record ({reason:?}):\n{}",
                        out.transcript()
                    );
                } else {
                    assertions::wait_resumed(&client, &kind.resource(), &ns, &name, SETTLE).await?;
                }
            }
            anyhow::Ok(())
        }
        .await;
        let resumed = env.task().run(&["flux:resume", &format!("APP={app}"), &at])?;
        result?;
        ok(&resumed)
    })
    .await;
}

/// resume-all follows `dependsOn`: three Kustomizations whose names sort against their chain
/// (a-third needs b-second needs c-first) resume c-first, b-second, a-third, each Ready before the
/// next; a dependsOn cycle among them is refused before the prompt, and nothing is resumed.
#[tokio::test]
async fn resume_all_follows_depends_on_and_refuses_a_cycle() {
    scenario("resume-all-depends-on", |env| async move {
        let _writing = writing().await;
        let infra = env.client("infra").await?;
        let (ns, chain) = ("ops-chain", ["c-first", "b-second", "a-third"]);
        let ks = Kind::Kustomization.resource();
        // Each applies a prefixed copy of the Kustomization-only app into the scenario's namespace.
        let (cluster, app) = layout(env)?.app(Role::KustomizationOnly);
        let own = layout(env)?
            .objects_of(cluster, app)
            .into_iter()
            .find(|o| o.kind == Kind::Kustomization)
            .context("the Kustomization-only app has a Kustomization")?;
        let template = assertions::get(&env.client(cluster).await?, &ks, own.namespace, app).await?;
        let path = template.data["spec"]["path"]
            .as_str()
            .context("its spec.path")?
            .to_string();
        let kustomization = |name: &str, after: Option<&str>| {
            format!(
                "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  interval: 1h\n  path: {path}\n  prune: true\n  targetNamespace: {ns}\n  namePrefix: {name}-\n  sourceRef: {{kind: GitRepository, name: flux-system, namespace: flux-system}}\n  dependsOn: [{dep}]\n---\n",
                dep = after.map(|d| format!("{{name: {d}}}")).unwrap_or_default(),
            )
        };
        let mut created = Created::on(&infra).namespace(ns);
        for name in chain {
            created = created.object(&ks, ns, name);
        }
        created
            .around(async {
                let mut yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n");
                yaml += &kustomization(chain[0], None);
                yaml += &kustomization(chain[1], Some(chain[0]));
                yaml += &kustomization(chain[2], Some(chain[1]));
                harness::apply_yaml(&infra, &yaml).await?;
                for name in chain {
                    assertions::wait_ready(&infra, &ks, ns, name, SETTLE).await?;
                }
                let at = [format!("NAMESPACE={ns}"), "CLUSTER=infra".to_string()];
                let bulk = |task: &str| {
                    env.task()
                        .run(&["--yes", task, at[0].as_str(), at[1].as_str()])
                };
                ok(&bulk("flux:suspend-all")?)?;
                let out = bulk("flux:resume-all")?;
                ok(&out)?;
                let position = |name: &str| {
                    out.stdout
                        .find(&format!("Kustomization {ns}/{name} resumed"))
                        .with_context(|| format!("{name} not resumed:\n{}", out.transcript()))
                };
                let order = [position(chain[0])?, position(chain[1])?, position(chain[2])?];
                anyhow::ensure!(
                    order.is_sorted(),
                    "resumed out of dependsOn order:\n{}",
                    out.transcript()
                );

                // c-first now needs a-third: a cycle. Refused before the prompt; all stay suspended.
                harness::apply_yaml(&infra, &kustomization(chain[0], Some(chain[2]))).await?;
                ok(&bulk("flux:suspend-all")?)?;
                let out = bulk("flux:resume-all")?;
                anyhow::ensure!(!out.success(), "a cycle was resumed:\n{}", out.transcript());
                ensure_contains(&out, &["depend on each other in a cycle"])?;
                for name in chain {
                    let obj = assertions::get(&infra, &ks, ns, name).await?;
                    anyhow::ensure!(is_suspended(&obj), "{name} was resumed despite the cycle");
                }
                // The cycle fixed, the batch resumes.
                harness::apply_yaml(&infra, &kustomization(chain[0], None)).await?;
                ok(&bulk("flux:resume-all")?)
            })
            .await
    })
    .await;
}
