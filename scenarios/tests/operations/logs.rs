//! `flux:logs`: an app's lines, one controller's lines, and streaming until Ctrl-C.

use super::prelude::*;

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
