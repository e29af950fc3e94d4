//! `flux:diff` against a local checkout: clean, drift, and the failures.

use super::prelude::*;

#[derive(Debug, Clone, Copy)]
enum DiffCase {
    /// An unchanged copy of the served checkout: no drift, exit 0.
    Clean,
    /// odoo's HelmRelease values changed locally: drift reported, exit 0 (documented).
    Drift,
    /// odoo's kustomization.yaml lists a file that does not exist: flux diff errors, task fails.
    BrokenBuild,
    /// GITOPS_DIR without the Kustomization's spec.path: one `error:` line, task fails.
    MissingPath,
}

#[rstest]
#[case::clean(DiffCase::Clean)]
#[case::drift(DiffCase::Drift)]
#[case::broken_build(DiffCase::BrokenBuild)]
#[case::missing_path(DiffCase::MissingPath)]
#[tokio::test]
async fn diff_against_a_local_checkout(#[case] case: DiffCase) {
    scenario(&format!("diff-odoo-{case:?}"), |env| async move {
        // odoo must stay as Git has it while diffing (a suspend would show as drift).
        let _odoo = exclusive("odoo").await;
        let dir = tempfile::tempdir()?;
        let gitops = dir.path().join("checkout");
        exec::copy_tree(env.fixtures()?.work_dir(), &gitops, &[".git"])?;
        let app = gitops.join("kubernetes/apps/business/odoo/app");
        match case {
            DiffCase::Clean => {}
            DiffCase::Drift => {
                let f = app.join("helmrelease.yaml");
                let text = std::fs::read_to_string(&f)?;
                anyhow::ensure!(
                    text.contains("workers: 2"),
                    "odoo fixture has no `workers: 2`"
                );
                std::fs::write(&f, text.replace("workers: 2", "workers: 7"))?;
            }
            DiffCase::BrokenBuild => {
                let f = app.join("kustomization.yaml");
                let text = std::fs::read_to_string(&f)?;
                std::fs::write(
                    &f,
                    format!("{}\n  - ./does-not-exist.yaml\n", text.trim_end()),
                )?;
            }
            DiffCase::MissingPath => std::fs::remove_dir_all(&app)?,
        }
        let out = env.task().run(&[
            "flux:diff",
            "APP=odoo",
            "CLUSTER=apps",
            &format!("GITOPS_DIR={}", gitops.display()),
        ])?;
        match case {
            DiffCase::Clean => {
                ok(&out)?;
                ensure_contains(&out, &["no drift"])?;
                anyhow::ensure!(
                    !out.combined().contains("drift found"),
                    "drift on a clean copy:\n{}",
                    out.transcript()
                );
            }
            DiffCase::Drift => {
                ok(&out)?;
                ensure_contains(
                    &out,
                    &["drift found", "HelmRelease/business/odoo", "workers"],
                )?;
            }
            DiffCase::BrokenBuild => {
                anyhow::ensure!(
                    !out.success(),
                    "diff of a broken build succeeded:\n{}",
                    out.transcript()
                );
                anyhow::ensure!(
                    !out.combined().contains("drift found"),
                    "a build error reported as drift:\n{}",
                    out.transcript()
                );
                ensure_contains(&out, &["does-not-exist"])?;
            }
            DiffCase::MissingPath => {
                let e = one_error(&out)?;
                anyhow::ensure!(
                    e.contains("spec.path") && e.contains("GITOPS_DIR"),
                    "unclear error: {e}"
                );
            }
        }
        Ok(())
    })
    .await;
}
