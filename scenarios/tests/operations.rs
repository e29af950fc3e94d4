//! Issue 4: every `task flux:*` command proven on the real clusters — bulk and namespace-wide
//! writes, the read-only commands (logs, events, diff, status, check, tree, trace, alerts,
//! list-suspended), source reconciles, APP resolution failures, the bad-input matrix, cluster
//! isolation, idempotency and a release that fails after resume.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use harness::assertions::{
    self, flux_fingerprint, is_ready, is_suspended, last_handled_reconcile_at,
};
use harness::exec;
use harness::fixtures::{Kind, Role};
use harness::provider::Environment;
use harness::task_runner::TaskOutput;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use kube::{Api, Client};
use nix::sys::signal::Signal;
use rstest::rstest;
use scenarios::{SETTLE, alone, exclusive, layout, ok, scenario, writing};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

type Fingerprint = BTreeMap<String, String>;

/// Fingerprints of every Flux object on both clusters once they stopped changing: the "before" of
/// a scenario that must change nothing.
struct Settled {
    infra: Fingerprint,
    apps: Fingerprint,
}

impl Settled {
    /// Reads both clusters until two reads 1 s apart agree (a Kustomization of a previous scenario
    /// may still be applying its objects), for at most 60 s.
    async fn read(env: &Environment) -> anyhow::Result<Self> {
        let infra = env.client("infra").await?;
        let apps = env.client("apps").await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = (
            flux_fingerprint(&infra, None).await?,
            flux_fingerprint(&apps, None).await?,
        );
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = (
                flux_fingerprint(&infra, None).await?,
                flux_fingerprint(&apps, None).await?,
            );
            if now == last {
                return Ok(Self {
                    infra: now.0,
                    apps: now.1,
                });
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "Flux objects kept changing for 60 s, no stable fingerprint"
            );
            last = now;
        }
    }

    /// Fails naming every Flux object of `cluster` that differs from the settled state now.
    async fn unchanged_on(&self, env: &Environment, cluster: &str) -> anyhow::Result<()> {
        let before = match cluster {
            "infra" => &self.infra,
            "apps" => &self.apps,
            other => anyhow::bail!("no settled fingerprint of cluster {other}"),
        };
        let client = env.client(cluster).await?;
        same_fingerprint(cluster, before, &flux_fingerprint(&client, None).await?)
    }

    /// [`Settled::unchanged_on`] both clusters.
    async fn unchanged(&self, env: &Environment) -> anyhow::Result<()> {
        self.unchanged_on(env, "infra").await?;
        self.unchanged_on(env, "apps").await
    }
}

/// Fails naming every object whose fingerprint differs (or that appeared/disappeared).
fn same_fingerprint(
    cluster: &str,
    before: &Fingerprint,
    after: &Fingerprint,
) -> anyhow::Result<()> {
    let mut changed = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            Some(w) if w == v => {}
            Some(w) => changed.push(format!("{k}: {v} → {w}")),
            None => changed.push(format!("{k}: deleted")),
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        changed.push(format!("{k}: created"));
    }
    anyhow::ensure!(
        changed.is_empty(),
        "Flux objects on {cluster} changed: {}",
        changed.join(", ")
    );
    Ok(())
}

/// Lines of the output (stdout + stderr) that start with `error:`.
fn error_lines(out: &TaskOutput) -> Vec<String> {
    out.combined()
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_string)
        .collect()
}

/// A failed task: exit ≠ 0 and exactly one `error:` line, which is returned.
fn one_error(out: &TaskOutput) -> anyhow::Result<String> {
    anyhow::ensure!(
        !out.success(),
        "task succeeded, expected a refusal:\n{}",
        out.transcript()
    );
    let errors = error_lines(out);
    anyhow::ensure!(
        errors.len() == 1,
        "expected exactly one `error:` line, got {}:\n{}",
        errors.len(),
        out.transcript()
    );
    Ok(errors[0].clone())
}

fn ensure_contains(out: &TaskOutput, needles: &[&str]) -> anyhow::Result<()> {
    let text = out.combined();
    for n in needles {
        anyhow::ensure!(
            text.contains(n),
            "output lacks {n:?}:\n{}",
            out.transcript()
        );
    }
    Ok(())
}

/// Every Kustomization and HelmRelease of a cluster.
async fn ks_and_hr(client: &Client) -> anyhow::Result<Vec<(Kind, DynamicObject)>> {
    let mut out = Vec::new();
    for kind in [Kind::Kustomization, Kind::HelmRelease] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource());
        out.extend(
            api.list(&ListParams::default())
                .await?
                .into_iter()
                .map(|o| (kind, o)),
        );
    }
    Ok(out)
}

fn ns_name(obj: &DynamicObject) -> (String, String) {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// Deletes an object (if present) and waits, bounded, until it is gone (finalizers done).
async fn delete_and_wait(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    if api.get_opt(name).await?.is_some() {
        api.delete(name, &DeleteParams::default()).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get_opt(name).await?.is_some() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} {namespace}/{name} still present 60 s after delete",
            resource.kind
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// Deletes a namespace and waits, bounded, until it is gone.
async fn delete_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_some() {
        api.delete(name, &DeleteParams::default()).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while api.get_opt(name).await?.is_some() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "namespace {name} still present 90 s after delete"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Where a spawned task writes: a pipe (scripts, CI) or a terminal (an operator's shell).
#[derive(Debug, Clone, Copy)]
enum Stdout {
    Pipe,
    Terminal,
}

/// `task` started as its own process group (as a shell starts a foreground job), so that a Ctrl-C
/// (SIGINT to the group) reaches it and everything it started; returns its stdout to read (with a
/// terminal: the pseudo-terminal's master side, which ends when the last writer has exited).
fn spawn_task(
    env: &Environment,
    args: &[&str],
    stdout: Stdout,
) -> anyhow::Result<(Child, Box<dyn std::io::Read + Send>)> {
    let mut cmd = env.task().command(args);
    cmd.stderr(Stdio::piped());
    match stdout {
        Stdout::Pipe => {
            let mut child = cmd.stdout(Stdio::piped()).spawn()?;
            let out = child.stdout.take().context("piped stdout")?;
            Ok((child, Box::new(out)))
        }
        Stdout::Terminal => {
            let pty = nix::pty::openpty(None, None)?;
            cmd.stdout(Stdio::from(pty.slave));
            let child = cmd.spawn()?;
            // `cmd` held the only other copy of the terminal's slave side: without it, the
            // master reads EOF (EIO) once the task and everything it started are gone.
            drop(cmd);
            Ok((child, Box::new(std::fs::File::from(pty.master))))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// NAMESPACE-wide suspend/resume
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// suspend-all / resume-all
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// logs
// ---------------------------------------------------------------------------------------------

/// `flux:logs` shows the real controller lines of the app, and only of it.
#[rstest]
#[case::odoo_both_kinds("apps", &["APP=odoo"], &["HelmRelease/odoo.business", "Kustomization/odoo.flux-system"], "/odoo.")]
#[case::gatus_helmrelease_only("infra", &["APP=gatus", "TYPE=hr"], &["HelmRelease/gatus.observability"], "HelmRelease/gatus.observability")]
#[case::whoami_chart_ref("apps", &["APP=whoami", "NAMESPACE=business"], &["HelmRelease/whoami.business"], "HelmRelease/whoami.business")]
// odoo is a Kustomization and a HelmRelease: one controller shows only its own kind's lines.
#[case::odoo_helm_controller("apps", &["APP=odoo", "CONTROLLER=helm"], &["HelmRelease/odoo.business"], "HelmRelease/odoo.business")]
#[case::odoo_kustomize_controller("apps", &["APP=odoo", "CONTROLLER=kustomize-controller", "LEVEL=info", "SINCE=1h"], &["Kustomization/odoo.flux-system"], "Kustomization/odoo.flux-system")]
#[tokio::test]
async fn logs_show_the_apps_controller_lines(
    #[case] cluster: &str,
    #[case] vars: &[&str],
    #[case] expected: &[&str],
    #[case] every_line: &str,
) {
    scenario(
        &format!("logs-{cluster}-{}", vars.join("-")),
        |env| async move {
            let _writing = writing().await;
            let mut args = vec!["flux:logs".to_string(), format!("CLUSTER={cluster}")];
            args.extend(vars.iter().map(|v| v.to_string()));
            let out = env.task().run(&args)?;
            ok(&out)?;
            ensure_contains(&out, expected)?;
            let lines: Vec<&str> = out
                .stdout
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect();
            anyhow::ensure!(!lines.is_empty(), "no log lines:\n{}", out.transcript());
            for line in lines {
                anyhow::ensure!(
                    line.contains(every_line),
                    "a log line of another object: {line}\n{}",
                    out.transcript()
                );
            }
            Ok(())
        },
    )
    .await;
}

/// `CONTROLLER=` shows that controller's lines only: every line names one of its kinds or none
/// (start-up lines), and its own kind does appear. Short and full names.
#[rstest]
#[case::helm("helm", &["HelmRelease"])]
#[case::kustomize("kustomize-controller", &["Kustomization"])]
#[case::source("source", &["GitRepository", "HelmRepository", "HelmChart", "OCIRepository", "Bucket"])]
#[tokio::test]
async fn logs_of_one_controller_only(#[case] controller: &str, #[case] kinds: &[&str]) {
    scenario(&format!("logs-controller-{controller}"), |env| async move {
        let _writing = writing().await;
        let out = env.task().run(&[
            "flux:logs",
            "CLUSTER=apps",
            &format!("CONTROLLER={controller}"),
            "FOLLOW=false",
        ])?;
        ok(&out)?;
        let mut own = 0;
        for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
            // "<ts> <level> <Kind>[/<name>.<namespace>] - <msg>", or "<ts> <level>  - <msg>"
            let kind = line.split_whitespace().nth(2).unwrap_or_default();
            // kind-less: "-", or "/<name>." of a start-up line without a kind ("/health probe.")
            let kind = kind.split('/').next().unwrap_or_default();
            if kind.is_empty() || kind == "-" {
                continue;
            }
            anyhow::ensure!(
                kinds.contains(&kind),
                "CONTROLLER={controller} printed a {kind} line: {line}\n{}",
                out.transcript()
            );
            own += 1;
        }
        anyhow::ensure!(own > 0, "no {kinds:?} line:\n{}", out.transcript());
        Ok(())
    })
    .await;
}

/// Streaming: `FOLLOW=true`, or nothing at all at a terminal (as the story types it). The app's
/// existing lines arrive, a reconcile started meanwhile adds new ones, and a Ctrl-C (SIGINT to the
/// process group) stops task, bash and flux/kubectl within seconds. With CONTROLLER the stream is
/// that controller's (kubectl logs), in the same format.
#[rstest]
#[case::follow_true(&["FOLLOW=true"], Stdout::Pipe)]
#[case::terminal_default(&[], Stdout::Terminal)]
#[case::terminal_one_controller(&["CONTROLLER=helm"], Stdout::Terminal)]
#[tokio::test]
async fn logs_stream_until_ctrl_c(#[case] vars: &[&str], #[case] stdout: Stdout) {
    scenario(&format!("logs-follow-odoo-{stdout:?}-{}", vars.join("-")), |env| async move {
        let _writing = writing().await;
        let _odoo = exclusive("odoo").await;
        let mut args = vec!["flux:logs", "APP=odoo", "CLUSTER=apps"];
        args.extend(vars);
        let (mut child, out) = spawn_task(env, &args, stdout)?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // A terminal ends lines with \r\n.
                if tx.send(line.trim_end_matches('\r').to_string()).is_err() {
                    break;
                }
            }
        });
        let result = async {
            // Existing lines first, until none arrived for 2 s (at most 30 s).
            let mut lines: Vec<String> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match rx.recv_timeout(Duration::from_secs(2)) {
                    Ok(l) => lines.push(l),
                    Err(mpsc::RecvTimeoutError::Timeout) if !lines.is_empty() => break,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        anyhow::bail!("flux:logs {vars:?} on a {stdout:?} ended on its own after {} line(s): {lines:?}", lines.len())
                    }
                }
                anyhow::ensure!(Instant::now() < deadline, "no quiet moment in 30 s of logs: {lines:?}");
            }
            anyhow::ensure!(
                lines.iter().any(|l| l.contains("HelmRelease/odoo.business")),
                "no HelmRelease/odoo line while following: {lines:?}"
            );
            let out = env.task().run(&["flux:reconcile", "APP=odoo", "CLUSTER=apps"])?;
            ok(&out)?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(l) if l.contains("/odoo.") => break,
                    Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        anyhow::bail!("the stream ended while following")
                    }
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no new odoo line streamed within 30 s of a reconcile"
                );
            }
            Ok(())
        }
        .await;

        // Ctrl-C: SIGINT to the foreground group; everything must be gone within 15 s.
        let tree = exec::descendants(pid);
        exec::signal_group(pid, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut exited = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                exited = Some(status);
            }
            if exited.is_some() && !tree.iter().any(|p| exec::alive(*p)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let leftovers: Vec<u32> = tree.iter().copied().filter(|p| exec::alive(*p)).collect();
        if exited.is_none() || !leftovers.is_empty() {
            exec::signal_group(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
        let _ = reader.join();
        result?;
        anyhow::ensure!(exited.is_some(), "task flux:logs {vars:?} still running 15 s after SIGINT");
        anyhow::ensure!(
            leftovers.is_empty(),
            "processes of flux:logs {vars:?} still running 15 s after SIGINT: {leftovers:?} (of {tree:?})"
        );
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// events
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// diff
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// status, check, tree, trace, alerts
// ---------------------------------------------------------------------------------------------

/// Object rows of the status table (between the header and the blank line).
fn status_rows(out: &TaskOutput) -> Vec<String> {
    out.stdout
        .lines()
        .skip_while(|l| !l.starts_with("CLUSTER"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// `flux:status CLUSTER=all`: one table with both clusters' fixtures.
#[tokio::test]
async fn status_of_all_clusters() {
    scenario("status-all", |env| async move {
        let out = env.task().run(&["flux:status", "CLUSTER=all"])?;
        ok(&out)?;
        let rows = status_rows(&out);
        for (cluster, kind, ns, name) in [
            ("infra", "HelmRelease", "observability", "gatus"),
            ("infra", "Kustomization", "flux-system", "echo"),
            ("infra", "GitRepository", "flux-system", "flux-system"),
            ("apps", "HelmRelease", "business", "odoo"),
            ("apps", "HelmRelease", "business", "whoami"),
            ("apps", "HelmChart", "flux-system", "whoami"),
            ("apps", "Kustomization", "flux-system", "echo"),
        ] {
            anyhow::ensure!(
                rows.iter().any(|r| {
                    let f: Vec<&str> = r.split_whitespace().collect();
                    f.len() >= 4 && f[..4] == [cluster, kind, ns, name]
                }),
                "no row {cluster} {kind} {ns}/{name}:\n{}",
                out.transcript()
            );
        }
        Ok(())
    })
    .await;
}

/// `FAILED=true` shows a deliberately broken Kustomization (path not in the repo), and only it.
#[tokio::test]
async fn status_failed_shows_only_the_broken_app() {
    scenario("status-failed-broken-ks", |env| async move {
        // Alone: no other scenario's object may be transiently not Ready meanwhile.
        let _alone = alone().await;
        let apps = env.client("apps").await?;
        let ks = Kind::Kustomization.resource();
        let name = "ops-broken-path";
        harness::apply::apply_yaml(
            &apps,
            &format!(
                r#"
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: {name}
  namespace: flux-system
spec:
  interval: 1h
  retryInterval: 1h
  timeout: 30s
  path: ./kubernetes/apps/does-not-exist
  prune: false
  sourceRef:
    kind: GitRepository
    name: flux-system
"#
            ),
        )
        .await?;
        let result = async {
            assertions::wait_until(&apps, &ks, "flux-system", name, "Ready=False", SETTLE, |o| {
                assertions::condition(o, "Ready").is_some_and(|c| c.status == "False")
            })
            .await?;
            for cluster in ["all", "apps"] {
                let out = env
                    .task()
                    .run(&["flux:status", &format!("CLUSTER={cluster}"), "FAILED=true"])?;
                ok(&out)?;
                let rows = status_rows(&out);
                anyhow::ensure!(
                    rows.len() == 1
                        && rows[0].split_whitespace().take(4).collect::<Vec<_>>()
                            == ["apps", "Kustomization", "flux-system", name],
                    "FAILED=true CLUSTER={cluster} should list only apps Kustomization flux-system/{name}:\n{}",
                    out.transcript()
                );
                ensure_contains(&out, &["1 object(s), 1 not ready"])?;
            }
            Ok(())
        }
        .await;
        delete_and_wait(&apps, &ks, "flux-system", name).await?;
        result
    })
    .await;
}

/// `flux:check` passes on each cluster and on both (lines labelled per cluster).
#[rstest]
#[case::infra("infra", &["✔ all checks passed"])]
#[case::apps("apps", &["✔ all checks passed"])]
#[case::all("all", &["[infra] ✔ all checks passed", "[apps] ✔ all checks passed", "[apps] ✔ helm-controller: deployment ready"])]
#[tokio::test]
async fn check(#[case] cluster: &str, #[case] expected: &[&str]) {
    scenario(&format!("check-{cluster}"), |env| async move {
        let out = env
            .task()
            .run(&["flux:check", &format!("CLUSTER={cluster}")])?;
        ok(&out)?;
        ensure_contains(&out, expected)?;
        Ok(())
    })
    .await;
}

/// `flux:tree` of an app and of the cluster root.
#[rstest]
#[case::odoo(&["APP=odoo", "CLUSTER=apps"], &["Kustomization/flux-system/odoo", "HelmRelease/business/odoo", "Deployment/business/odoo"], &["gatus", "whoami"])]
#[case::root_infra(&["CLUSTER=infra"], &["Kustomization/flux-system/flux-system", "Kustomization/flux-system/gatus", "HelmRelease/observability/gatus", "Deployment/observability/gatus", "Deployment/tools/echo"], &["odoo"])]
#[case::root_apps(&["CLUSTER=apps"], &["Kustomization/flux-system/whoami", "HelmChart/flux-system/whoami", "HelmRelease/business/whoami"], &["gatus"])]
#[tokio::test]
async fn tree(#[case] vars: &[&str], #[case] expected: &[&str], #[case] absent: &[&str]) {
    scenario(&format!("tree-{}", vars.join("-")), |env| async move {
        let mut args = vec!["flux:tree"];
        args.extend_from_slice(vars);
        let out = env.task().run(&args)?;
        ok(&out)?;
        ensure_contains(&out, expected)?;
        for a in absent {
            anyhow::ensure!(
                !out.stdout.contains(a),
                "tree shows {a}:\n{}",
                out.transcript()
            );
        }
        Ok(())
    })
    .await;
}

/// `flux:trace` of the gatus Deployment (named after the release) and of APP=gatus: the managing
/// objects and the GitRepository revision the cluster really has.
#[rstest]
#[case::deployment(&["RESOURCE=deploy/gatus", "NAMESPACE=observability", "CLUSTER=infra"], &["Object:         Deployment/gatus", "HelmRelease:    gatus", "HelmChart:      observability-gatus", "GitRepository: flux-system"])]
#[case::app(&["APP=gatus", "CLUSTER=infra"], &["HelmRelease/gatus", "Kustomization/gatus", "Kustomization:   gatus", "Kustomization:   flux-system"])]
#[tokio::test]
async fn trace(#[case] vars: &[&str], #[case] expected: &[&str]) {
    scenario(&format!("trace-{}", vars.join("-")), |env| async move {
        let infra = env.client("infra").await?;
        let repo = assertions::get(
            &infra,
            &harness::flux::gitrepositories(),
            "flux-system",
            "flux-system",
        )
        .await?;
        let revision = assertions::artifact_revision(&repo);
        anyhow::ensure!(
            !revision.is_empty(),
            "GitRepository on infra has no artifact revision"
        );
        let mut args = vec!["flux:trace"];
        args.extend_from_slice(vars);
        let out = env.task().run(&args)?;
        ok(&out)?;
        ensure_contains(&out, expected)?;
        ensure_contains(&out, &[revision.as_str()])?;
        Ok(())
    })
    .await;
}

/// `flux:alerts` lists the Alert and Provider flux-alerts of each cluster with their state.
#[rstest]
#[case::all("all", &["[infra] # Alerts", "[apps] # Alerts", "[infra] # Providers", "[apps] # Providers", "Alert is Ready", "Provider is Ready"])]
#[case::apps("apps", &["# Alerts", "# Providers", "flux-alerts", "Alert is Ready", "# Recent warnings"])]
#[tokio::test]
async fn alerts(#[case] cluster: &str, #[case] expected: &[&str]) {
    scenario(&format!("alerts-{cluster}"), |env| async move {
        let out = env
            .task()
            .run(&["flux:alerts", &format!("CLUSTER={cluster}")])?;
        ok(&out)?;
        ensure_contains(&out, expected)?;
        let lines_with_alert = out
            .stdout
            .lines()
            .filter(|l| l.contains("flux-alerts"))
            .count();
        anyhow::ensure!(
            lines_with_alert >= 2,
            "Alert and Provider flux-alerts not both listed:\n{}",
            out.transcript()
        );
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// reconcile-source, list-suspended
// ---------------------------------------------------------------------------------------------

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

/// `flux:list-suspended` shows a suspended app (its Kustomization and HelmRelease) and nothing
/// that is not suspended; CLUSTER=all labels each cluster.
#[tokio::test]
async fn list_suspended_shows_only_suspended_objects() {
    scenario("list-suspended-whoami", |env| async move {
        // Alone: the exact set of suspended objects is asserted.
        let _alone = alone().await;
        let apps = env.client("apps").await?;
        let out = env.task().run(&["flux:list-suspended", "CLUSTER=all"])?;
        ok(&out)?;
        ensure_contains(&out, &["[infra] no suspended", "[apps] no suspended"])?;

        ok(&env
            .task()
            .run(&["flux:suspend", "APP=whoami", "CLUSTER=apps"])?)?;
        let result = async {
            let out = env.task().run(&["flux:list-suspended", "CLUSTER=apps"])?;
            ok(&out)?;
            let rows: Vec<Vec<String>> = out
                .stdout
                .lines()
                .skip(1)
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.split_whitespace().map(str::to_string).collect())
                .collect();
            let want = vec![
                vec![
                    "Kustomization".to_string(),
                    "flux-system".into(),
                    "whoami".into(),
                ],
                vec![
                    "HelmRelease".to_string(),
                    "business".into(),
                    "whoami".into(),
                ],
            ];
            anyhow::ensure!(
                rows == want,
                "list-suspended rows {rows:?}, want {want:?}:\n{}",
                out.transcript()
            );
            // Cross-check with the cluster: exactly those are suspended.
            let suspended: Vec<String> = ks_and_hr(&apps)
                .await?
                .into_iter()
                .filter(|(_, o)| is_suspended(o))
                .map(|(k, o)| format!("{k:?} {}/{}", ns_name(&o).0, ns_name(&o).1))
                .collect();
            anyhow::ensure!(
                suspended
                    == [
                        "Kustomization flux-system/whoami",
                        "HelmRelease business/whoami"
                    ],
                "suspended on apps: {suspended:?}"
            );
            let out = env.task().run(&["flux:list-suspended", "CLUSTER=all"])?;
            ok(&out)?;
            ensure_contains(
                &out,
                &["[infra] no suspended", "[apps] HelmRelease", "whoami"],
            )?;
            Ok(())
        }
        .await;
        ok(&env
            .task()
            .run(&["flux:resume", "APP=whoami", "CLUSTER=apps"])?)?;
        result
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// APP resolution failures
// ---------------------------------------------------------------------------------------------

const AMBIGUOUS_NS: &str = "ops-ambiguous";

/// A second (suspended) HelmRelease `odoo` in another namespace makes APP=odoo ambiguous: every
/// command that resolves APP refuses listing both candidates and asking for NAMESPACE=; nothing
/// changes on either cluster.
#[rstest]
#[case::suspend("flux:suspend")]
#[case::resume("flux:resume")]
#[case::reconcile("flux:reconcile")]
#[case::logs("flux:logs")]
#[tokio::test]
async fn ambiguous_app_is_refused(#[case] task: &str) {
    scenario(&format!("ambiguous-odoo-{task}"), |env| async move {
        let _alone = alone().await;
        let apps = env.client("apps").await?;
        harness::apply::apply_yaml(
            &apps,
            &format!(
                r#"
apiVersion: v1
kind: Namespace
metadata:
  name: {AMBIGUOUS_NS}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: odoo
  namespace: {AMBIGUOUS_NS}
spec:
  suspend: true
  interval: 1h
  chart:
    spec:
      chart: ./fixtures-charts/odoo
      sourceRef:
        kind: GitRepository
        name: flux-system
        namespace: flux-system
"#
            ),
        )
        .await?;
        let result = async {
            let before = Settled::read(env).await?;
            let out = env.task().run(&[task, "APP=odoo", "CLUSTER=apps"])?;
            let e = one_error(&out)?;
            for needle in [
                "ambiguous",
                "business/odoo",
                &format!("{AMBIGUOUS_NS}/odoo"),
                "NAMESPACE=",
            ] {
                anyhow::ensure!(e.contains(needle), "error lacks {needle:?}: {e}");
            }
            before.unchanged(env).await
        }
        .await;
        delete_and_wait(&apps, &Kind::HelmRelease.resource(), AMBIGUOUS_NS, "odoo").await?;
        delete_namespace(&apps, AMBIGUOUS_NS).await?;
        result
    })
    .await;
}

/// An unknown APP: exit ≠ 0, one error naming the close names; nothing changes. An app of the
/// other cluster is unknown here.
#[rstest]
#[case::typo_suspend(&["flux:suspend", "APP=odooo", "CLUSTER=apps"], &["'odooo'", "did you mean: odoo"])]
#[case::transposed_resume(&["flux:resume", "APP=gatsu", "CLUSTER=infra"], &["'gatsu'", "did you mean: gatus"])]
#[case::prefix_reconcile(&["flux:reconcile", "APP=whoam", "CLUSTER=apps"], &["'whoam'", "whoami"])]
#[case::app_of_the_other_cluster(&["flux:suspend", "APP=gatus", "CLUSTER=apps"], &["no Kustomization or HelmRelease named 'gatus'", "on cluster apps"])]
#[case::wrong_namespace(&["flux:suspend", "APP=odoo", "NAMESPACE=observability", "CLUSTER=apps"], &["'odoo' in namespace observability"])]
#[case::nothing_close(&["flux:resume", "APP=zzzzzzzz", "CLUSTER=apps"], &["'zzzzzzzz'", "task flux:status CLUSTER=apps"])]
#[tokio::test]
async fn unknown_app_is_refused(#[case] args: &[&str], #[case] expected: &[&str]) {
    scenario(
        &format!("unknown-app-{}", args.join("-")),
        |env| async move {
            let _alone = alone().await;
            let before = Settled::read(env).await?;
            let out = env.task().run(args)?;
            let e = one_error(&out)?;
            for needle in expected {
                anyhow::ensure!(e.contains(needle), "error lacks {needle:?}: {e}");
            }
            before.unchanged(env).await
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

/// The marker a shell injection would create (`MARKER` in the case values). Short and independent
/// of where the checkout lives, so that every injected value stays within the name length limits
/// and is refused for its characters, wherever the tests run.
fn marker_path() -> PathBuf {
    PathBuf::from(format!("/tmp/k8s-ops-inj-{}", std::process::id()))
}

/// Bad input is refused before anything runs: exit ≠ 0, exactly one `error:` line (go-task's own
/// `task: Failed to run task …` may follow), no Flux object changed on either cluster, and no
/// injected command ran (the MARKER file does not exist).
#[rstest]
#[case::semicolon(&["flux:suspend", "APP=odoo;touch MARKER", "CLUSTER=apps"], "APP=")]
#[case::command_substitution(&["flux:suspend", "APP=$(touch MARKER)", "CLUSTER=apps"], "APP=")]
#[case::backticks(&["flux:reconcile", "APP=`touch MARKER`", "CLUSTER=apps"], "APP=")]
#[case::space(&["flux:suspend", "APP=odoo whoami", "CLUSTER=apps"], "APP=")]
#[case::newline(&["flux:suspend", "APP=odoo\nwhoami", "CLUSTER=apps"], "APP=")]
#[case::uppercase(&["flux:suspend", "APP=Odoo", "CLUSTER=apps"], "APP=")]
#[case::leading_dash_flag(&["flux:resume", "APP=--all", "CLUSTER=apps"], "APP=")]
#[case::too_long(&["flux:suspend", "APP=LONG254", "CLUSTER=apps"], "254 characters")]
#[case::namespace_too_long(&["flux:suspend", "NAMESPACE=LONG64", "CLUSTER=apps"], "at most 63")]
#[case::namespace_injection(&["flux:resume", "APP=odoo", "NAMESPACE=$(touch MARKER)", "CLUSTER=apps"], "NAMESPACE=")]
#[case::unknown_cluster(&["flux:suspend", "APP=odoo", "CLUSTER=prod"], "unknown CLUSTER")]
#[case::cluster_injection(&["flux:status", "CLUSTER=apps;touch MARKER"], "unknown CLUSTER")]
#[case::cluster_all_on_suspend(&["flux:suspend", "APP=odoo", "CLUSTER=all"], "CLUSTER=all is only for read-only")]
#[case::cluster_all_on_suspend_all(&["--yes", "flux:suspend-all", "CLUSTER=all"], "CLUSTER=all is only for read-only")]
#[case::cluster_all_on_reconcile(&["flux:reconcile", "APP=odoo", "CLUSTER=all"], "CLUSTER=all is only for read-only")]
#[case::missing_app(&["flux:suspend", "CLUSTER=apps"], "APP or NAMESPACE is required")]
#[case::missing_app_diff(&["flux:diff", "CLUSTER=apps"], "APP is required")]
#[case::type_bogus(&["flux:suspend", "APP=odoo", "TYPE=bogus", "CLUSTER=apps"], "TYPE='bogus'")]
#[case::status_type_bogus(&["flux:status", "TYPE=bogus", "CLUSTER=apps"], "TYPE='bogus'")]
#[case::wait_not_bool(&["flux:resume", "APP=odoo", "WAIT=maybe", "CLUSTER=apps"], "WAIT='maybe'")]
#[case::level_bogus(&["flux:logs", "APP=odoo", "LEVEL=trace", "CLUSTER=apps"], "LEVEL='trace'")]
#[case::since_injection(&["flux:logs", "APP=odoo", "SINCE=1h;touch MARKER", "CLUSTER=apps"], "SINCE=")]
#[case::tail_negative(&["flux:logs", "APP=odoo", "TAIL=-1", "CLUSTER=apps"], "TAIL='-1'")]
#[case::source_kind_bogus(&["flux:reconcile-source", "SOURCE_KIND=svn", "CLUSTER=apps"], "SOURCE_KIND='svn'")]
#[case::resource_injection(&["flux:trace", "RESOURCE=deploy/$(touch MARKER)", "NAMESPACE=observability", "CLUSTER=infra"], "RESOURCE=")]
#[case::resource_without_namespace(&["flux:trace", "RESOURCE=deploy/gatus", "CLUSTER=infra"], "NAMESPACE is required")]
#[case::watch_on_all(&["flux:events", "WATCH=true", "CLUSTER=all"], "WATCH=true needs one cluster")]
#[case::unicode(&["flux:suspend", "APP=odöo", "CLUSTER=apps"], "APP=")]
#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing(#[case] args: &[&str], #[case] expected: &str) {
    let marker = marker_path();
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("MARKER", &marker.display().to_string())
                .replace("LONG254", &"a".repeat(254))
                .replace("LONG64", &"n".repeat(64))
        })
        .collect();
    scenario(
        &format!(
            "bad-input-{}",
            args.join(" ")
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(60)
                .collect::<String>()
        ),
        |env| async move {
            let _alone = alone().await;
            let _ = std::fs::remove_file(&marker);
            let before = Settled::read(env).await?;
            let out = env.task().run(&args)?;
            let e = one_error(&out)?;
            anyhow::ensure!(
                e.contains(expected),
                "error lacks {expected:?}: {e}\n{}",
                out.transcript()
            );
            anyhow::ensure!(e.contains(" — "), "error names no fix: {e}");
            anyhow::ensure!(
                !marker.exists(),
                "injected command ran: {} exists",
                marker.display()
            );
            before.unchanged(env).await
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Isolation, idempotency, failing release
// ---------------------------------------------------------------------------------------------

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

/// Suspending a suspended app and resuming a resumed one succeed and leave the same state (the
/// app's objects from the served layout's description).
#[rstest]
#[case::gatus_infra(Role::Gatus)]
#[case::second_release_apps(Role::SecondRelease)]
#[tokio::test]
async fn suspend_and_resume_are_idempotent(#[case] role: Role) {
    scenario(&format!("idempotent-{role:?}"), |env| async move {
        let (cluster, app) = layout(env)?.app(role);
        let objects = layout(env)?.objects_of(cluster, app);
        let _writing = writing().await;
        let _app = exclusive(app).await;
        let client = env.client(cluster).await?;
        let vars = [format!("APP={app}"), format!("CLUSTER={cluster}")];
        for round in 1..=2 {
            let out = env.task().run(&["flux:suspend", &vars[0], &vars[1]])?;
            anyhow::ensure!(
                out.success(),
                "suspend #{round} failed:\n{}",
                out.transcript()
            );
            for o in &objects {
                let obj = assertions::get(&client, &o.kind.resource(), o.namespace, app).await?;
                anyhow::ensure!(
                    is_suspended(&obj),
                    "{:?} {}/{app} not suspended after suspend #{round}",
                    o.kind,
                    o.namespace
                );
            }
        }
        for round in 1..=2 {
            let out = env.task().run(&["flux:resume", &vars[0], &vars[1]])?;
            anyhow::ensure!(
                out.success(),
                "resume #{round} failed:\n{}",
                out.transcript()
            );
            for o in &objects {
                assertions::wait_resumed(&client, &o.kind.resource(), o.namespace, app, SETTLE)
                    .await
                    .with_context(|| format!("after resume #{round}"))?;
            }
        }
        Ok(())
    })
    .await;
}

/// A release that cannot become Ready (values the API server rejects): suspend succeeds, resume
/// fails although `flux resume` itself exits 0, naming the object and its Ready message.
#[tokio::test]
async fn resume_of_a_failing_release_fails() {
    scenario("failing-release-resume", |env| async move {
        let _writing = writing().await;
        let apps = env.client("apps").await?;
        let ns = "ops-failing";
        let name = "ops-broken";
        let hr = Kind::HelmRelease.resource();
        harness::apply::apply_yaml(
            &apps,
            &format!(
                r#"
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: {name}
  namespace: {ns}
spec:
  interval: 1h
  timeout: 20s
  chart:
    spec:
      chart: ./fixtures-charts/odoo
      interval: 1h
      sourceRef:
        kind: GitRepository
        name: flux-system
        namespace: flux-system
  install:
    timeout: 20s
    remediation:
      retries: 0
  values:
    # Renders, but the API server rejects a Deployment with negative replicas: install fails.
    replicaCount: -1
"#
            ),
        )
        .await?;
        let result = async {
            assertions::wait_until(
                &apps,
                &hr,
                ns,
                name,
                "Ready=False",
                Duration::from_secs(60),
                |o| assertions::condition(o, "Ready").is_some_and(|c| c.status == "False"),
            )
            .await?;
            let task = env.task().timeout(Duration::from_secs(100));
            let out = task.run(&["flux:suspend", &format!("APP={name}"), "CLUSTER=apps"])?;
            ok(&out)?;
            anyhow::ensure!(
                is_suspended(&assertions::get(&apps, &hr, ns, name).await?),
                "not suspended"
            );
            let out = task.run(&["flux:resume", &format!("APP={name}"), "CLUSTER=apps"])?;
            anyhow::ensure!(
                !out.success(),
                "resume of a failing release succeeded:\n{}",
                out.transcript()
            );
            ensure_contains(
                &out,
                &[&format!(
                    "✗ HelmRelease {ns}/{name} resumed on apps but is not Ready"
                )],
            )?;
            let obj = assertions::get(&apps, &hr, ns, name).await?;
            anyhow::ensure!(!is_suspended(&obj), "still suspended after resume");
            anyhow::ensure!(
                !is_ready(&obj),
                "the broken release is Ready: {}",
                assertions::describe(&obj)
            );
            Ok(())
        }
        .await;
        delete_and_wait(&apps, &hr, ns, name).await?;
        delete_and_wait(
            &apps,
            &harness::flux::helmcharts(),
            "flux-system",
            &format!("{ns}-{name}"),
        )
        .await?;
        delete_namespace(&apps, ns).await?;
        result
    })
    .await;
}
