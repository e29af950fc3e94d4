//! The tasks against raw flux on the running environment: listing without a cluster, the
//! overhead of suspend / resume / reconcile, APP resolution at scale, both clusters at once.

use std::path::PathBuf;

use anyhow::{Result, ensure};

use super::report::{Sample, Section, nothing, ratio, sample, verdict};
use crate::task_runner::TaskRunner;

/// What the command sections share: the running environment's task runner, a flux runner and the
/// repetitions.
pub(super) struct Bench<'a> {
    pub(super) env: &'a crate::provider::Environment,
    pub(super) task: TaskRunner,
    pub(super) flux_bin: PathBuf,
    pub(super) reps: usize,
}

impl Bench<'_> {
    /// One flux command line (words split on white space) against the environment.
    fn flux(&self, line: &str) -> Result<()> {
        let args: Vec<&str> = line.split_whitespace().collect();
        let out = duct::cmd(&self.flux_bin, &args)
            .env("KUBECONFIG", self.env.kubeconfig())
            .stdout_null()
            .stderr_capture()
            .unchecked()
            .run()?;
        ensure!(
            out.status.success(),
            "flux {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn task(&self, args: &[&str]) -> Result<()> {
        run_task(&self.task, args)
    }

    /// Runs `flux <verb> <kind> odoo -n <namespace> --context apps <extra>` for each object the
    /// task acts on, in `ODOO`'s order or reversed: the raw commands doing the task's work.
    fn flux_odoo(&self, verb: &str, extra: &str, reversed: bool) -> Result<()> {
        let mut objects = ODOO.to_vec();
        if reversed {
            objects.reverse();
        }
        for (kind, namespace) in objects {
            self.flux(&format!(
                "{verb} {kind} odoo -n {namespace} --context apps {extra}"
            ))?;
        }
        Ok(())
    }

    /// Undoes a suspend of odoo without waiting (the setup of every suspend sample).
    fn resume_raw(&self) -> Result<()> {
        self.flux_odoo("resume", "--wait=false", true)
    }

    /// Suspends odoo with the raw commands (the setup of every resume sample).
    fn suspend_raw(&self) -> Result<()> {
        self.flux_odoo("suspend", "", false)
    }
}

/// The objects `task flux:* APP=odoo CLUSTER=apps` acts on: (flux kind, namespace), Kustomization
/// first as suspend and reconcile go.
pub(super) const ODOO: [(&str, &str); 2] = [("ks", "flux-system"), ("hr", "business")];

pub(super) fn run_task(runner: &TaskRunner, args: &[&str]) -> Result<()> {
    let out = runner.run(args)?;
    ensure!(out.success(), "{}", out.transcript());
    Ok(())
}

/// Section 3: `task --list` without a kubeconfig against `task --version`.
pub(super) fn listing_section(bench: &Bench) -> Result<Section> {
    let bare = bench.task.clone().env("KUBECONFIG", "/nonexistent");
    let version = sample("`task --version`", bench.reps, nothing, || {
        run_task(&bare, &["--version"])
    })?;
    let list = sample(
        "`task --list` (KUBECONFIG=/nonexistent)",
        bench.reps,
        nothing,
        || run_task(&bare, &["--list"]),
    )?;
    Ok(Section {
        number: 3,
        title: "Listing tasks needs no cluster".into(),
        what: "command",
        below: format!(
            "`--list` / `--version`: {}\n",
            verdict(ratio(&list, &version), 1.3)
        ),
        rows: vec![version, list],
    })
}

/// Section 4: `task flux:suspend` / `resume` / `reconcile` against raw flux: against the one raw
/// command an operator who knows the namespace types for the HelmRelease, and against the raw
/// commands doing the task's whole work (Kustomization and HelmRelease). The goals are judged on
/// the second: the same work with and without the task.
pub(super) fn overhead_section(bench: &Bench) -> Result<Section> {
    let suspend = overhead_rows(
        bench.reps,
        [
            "raw `flux suspend hr odoo -n business --context apps`",
            "raw `flux suspend ks` + `flux suspend hr` (the task's work)",
            "`task flux:suspend APP=odoo CLUSTER=apps` (resolves, suspends ks + hr with the record, verifies)",
        ],
        &|| bench.resume_raw(),
        [
            &|| bench.flux("suspend hr odoo -n business --context apps"),
            &|| bench.flux_odoo("suspend", "", false),
            &|| bench.task(&["flux:suspend", "APP=odoo", "CLUSTER=apps"]),
        ],
    )?;
    let resume = overhead_rows(
        bench.reps,
        [
            "raw `flux resume hr odoo -n business --context apps --wait=false`",
            "raw `flux resume hr` + `flux resume ks`, `--wait=false` (the task's work)",
            "`task flux:resume APP=odoo CLUSTER=apps WAIT=false` (resolves, removes the record and resumes hr + ks, verifies)",
        ],
        &|| bench.suspend_raw(),
        [
            &|| bench.flux("resume hr odoo -n business --context apps --wait=false"),
            &|| bench.flux_odoo("resume", "--wait=false", true),
            &|| bench.task(&["flux:resume", "APP=odoo", "CLUSTER=apps", "WAIT=false"]),
        ],
    )?;
    bench.task(&["flux:resume", "APP=odoo", "CLUSTER=apps"])?;
    let reconcile = overhead_rows(
        bench.reps.clamp(1, 3),
        [
            "raw `flux reconcile hr odoo -n business --with-source --context apps`",
            "raw `flux reconcile ks` + `flux reconcile hr`, `--with-source` (the task's work)",
            "`task flux:reconcile APP=odoo CLUSTER=apps` (ks + hr, with sources)",
        ],
        &nothing,
        [
            &|| bench.flux("reconcile hr odoo -n business --with-source --context apps"),
            &|| bench.flux_odoo("reconcile", "--with-source", false),
            &|| bench.task(&["flux:reconcile", "APP=odoo", "CLUSTER=apps"]),
        ],
    )?;
    let judge = |[one, work, task]: &[Sample; 3], goal: f64| {
        format!(
            "{} against the same work raw; {:.2}× the one raw command",
            verdict(ratio(task, work), goal),
            ratio(task, one)
        )
    };
    Ok(Section {
        number: 4,
        title: "Toolkit overhead against raw flux".into(),
        what: "command",
        below: format!(
            "suspend: {}. resume: {}. reconcile: {}. Besides the raw commands' work the task finds the namespace, writes or removes the suspend record and reads the state back. Against the one raw command the sub-second tasks pay for process starts (task, bash, one kubectl list before the patch: about 0.1–0.2 s), which is most of their cost at this size.\n",
            judge(&suspend, 3.0),
            judge(&resume, 3.0),
            judge(&reconcile, 1.5),
        ),
        rows: suspend.into_iter().chain(resume).chain(reconcile).collect(),
    })
}

/// Three samples of one task against raw flux, each run after `setup`: the one raw command, the
/// raw commands doing the task's work, the task (`timed`, in that order, labelled by `labels`).
pub(super) fn overhead_rows(
    reps: usize,
    labels: [&str; 3],
    setup: &dyn Fn() -> Result<()>,
    timed: [&dyn Fn() -> Result<()>; 3],
) -> Result<[Sample; 3]> {
    let [one, work, task] = timed;
    Ok([
        sample(labels[0], reps, setup, one)?,
        sample(labels[1], reps, setup, work)?,
        sample(labels[2], reps, setup, task)?,
    ])
}

/// Section 5: `task flux:suspend APP=odoo` with more and more extra objects on the cluster; `None`
/// without `--scale`.
pub(super) fn scale_section(bench: &Bench, scale: &[usize]) -> Result<Option<Section>> {
    let rt = crate::sys::exec::runtime();
    let client = rt.block_on(bench.env.client("apps"))?;
    let mut rows = Vec::new();
    let mut created = 0;
    for &extra in scale {
        rt.block_on(create_extra(&client, created, extra))?;
        created = extra;
        rows.push(sample(
            &format!("{extra} extra HelmReleases + {extra} Kustomizations"),
            bench.reps,
            || bench.resume_raw(),
            || bench.task(&["flux:suspend", "APP=odoo", "CLUSTER=apps"]),
        )?);
    }
    bench.task(&["flux:resume", "APP=odoo", "CLUSTER=apps"])?;
    rt.block_on(delete_extra(&client, created))?;
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    let below = format!("largest / smallest: {}\n", verdict(ratio(last, first), 1.2));
    Ok(Some(Section {
        number: 5,
        title: "APP resolution at scale (`task flux:suspend APP=odoo CLUSTER=apps`, extra objects over ≤ 100 namespaces)".into(),
        what: "cluster holds",
        rows,
        below,
    }))
}

/// Section 6: `task flux:status CLUSTER=all` against each cluster alone.
pub(super) fn both_clusters_section(bench: &Bench) -> Result<Section> {
    let status = |cluster: &str| {
        sample(
            &format!("`task flux:status CLUSTER={cluster}`"),
            bench.reps,
            nothing,
            || bench.task(&["flux:status", &format!("CLUSTER={cluster}")]),
        )
    };
    let infra = status("infra")?;
    let apps = status("apps")?;
    let all = status("all")?;
    let slowest = if infra.median() > apps.median() {
        &infra
    } else {
        &apps
    };
    Ok(Section {
        number: 6,
        title: "Both clusters at once".into(),
        what: "command",
        below: format!(
            "all / slowest single: {}\n",
            verdict(ratio(&all, slowest), 1.2)
        ),
        rows: vec![infra, apps, all],
    })
}

/// Suspended (so no controller works on them) HelmReleases and Kustomizations `bench-<i>` spread
/// over at most 100 namespaces, from index `from` up to `to`.
pub(super) async fn create_extra(client: &kube::Client, from: usize, to: usize) -> Result<()> {
    use serde_json::json;
    let namespaces: std::collections::BTreeSet<usize> = (from..to).map(|i| i % 100).collect();
    let mut objects: Vec<serde_json::Value> = namespaces
        .iter()
        .map(|ns| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("bench-{ns:03}")}}))
        .collect();
    for i in from..to {
        let metadata =
            json!({"name": format!("bench-{i}"), "namespace": format!("bench-{:03}", i % 100)});
        objects.push(json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": metadata,
            "spec": {
                "suspend": true,
                "interval": "1h",
                "chartRef": {"kind": "HelmChart", "name": "none", "namespace": crate::flux::NAMESPACE},
            },
        }));
        objects.push(json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": metadata,
            "spec": {
                "suspend": true,
                "interval": "1h",
                "prune": false,
                "path": "./none",
                "sourceRef": {"kind": "GitRepository", "name": "none"},
            },
        }));
    }
    // JSON documents are YAML documents.
    let yaml: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
    crate::apply::apply_yaml(client, &yaml.join("\n---\n")).await?;
    Ok(())
}

pub(super) async fn delete_extra(client: &kube::Client, created: usize) -> Result<()> {
    use kube::api::{Api, DeleteParams};
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for ns in 0..created.min(100) {
        let _ = namespaces
            .delete(&format!("bench-{ns:03}"), &DeleteParams::default())
            .await;
    }
    Ok(())
}
