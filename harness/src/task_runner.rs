//! Runs the real `task` binary on the repository's Taskfiles through duct, exactly as an operator
//! types `task flux:suspend APP=odoo CLUSTER=apps`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The outcome of one `task` invocation.
#[derive(Debug, Clone)]
pub struct TaskOutput {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl TaskOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout and stderr together, for assertions on messages.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// A readable transcript for failure messages and diagnostics.
    pub fn transcript(&self) -> String {
        format!(
            "$ task {}\n[exit {:?} after {:.1?}]\n--- stdout\n{}--- stderr\n{}",
            self.args.join(" "),
            self.code,
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// How to run `task`: which binary, in which checkout, with which environment.
#[derive(Debug, Clone)]
pub struct TaskRunner {
    task_bin: PathBuf,
    repo_root: PathBuf,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
}

impl TaskRunner {
    /// `task_bin` runs the Taskfile at `repo_root` (`task --dir repo_root`).
    pub fn new(task_bin: impl Into<PathBuf>, repo_root: impl Into<PathBuf>) -> Self {
        Self {
            task_bin: task_bin.into(),
            repo_root: repo_root.into(),
            env: vec![("NO_COLOR".into(), "1".into())],
            timeout: Duration::from_secs(300),
        }
    }

    /// Adds or overrides one environment variable (e.g. `KUBECONFIG`, `PATH`).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Upper bound for one invocation; a task still running then is killed and reported.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn repo_root(&self) -> &Path {
        &self.repo_root
    }

    /// `task <args>` as a `std::process::Command` with this runner's environment, no stdin and its
    /// own process group (as a shell starts a foreground job), for callers that stream its output
    /// or signal it themselves.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.task_bin);
        cmd.arg("--dir")
            .arg(&self.repo_root)
            .args(args)
            .current_dir(&self.repo_root);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(std::process::Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd
    }

    /// Runs `task <args>` with no stdin (never a TTY, as in CI) and captures its output.
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> Result<TaskOutput> {
        self.run_with_stdin(args, None)
    }

    /// Runs `task <args>` feeding `stdin` (e.g. an answer to a prompt); fails when it did not
    /// finish within the timeout.
    pub fn run_with_stdin<S: AsRef<str>>(
        &self,
        args: &[S],
        stdin: Option<&str>,
    ) -> Result<TaskOutput> {
        match self.run_within(args, stdin)? {
            Some(out) => Ok(out),
            None => Err(crate::Error::timeout(
                format!(
                    "`task {}`",
                    args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ")
                ),
                self.timeout,
            )
            .into()),
        }
    }

    /// Runs `task <args>` in its own process group; `None` when it did not finish within the
    /// timeout. Either way the group is killed at the end, so nothing it started (bash, flux,
    /// kubectl) outlives the run.
    pub fn run_within<S: AsRef<str>>(
        &self,
        args: &[S],
        stdin: Option<&str>,
    ) -> Result<Option<TaskOutput>> {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        let mut full: Vec<OsString> = vec!["--dir".into(), self.repo_root.clone().into_os_string()];
        full.extend(args.iter().map(OsString::from));
        let mut expr = duct::cmd(&self.task_bin, &full)
            .dir(&self.repo_root)
            .stdout_capture()
            .stderr_capture();
        expr = match stdin {
            Some(input) => expr.stdin_bytes(input.as_bytes().to_vec()),
            None => expr.stdin_null(),
        };
        for (k, v) in &self.env {
            expr = expr.env(k, v);
        }
        let started = Instant::now();
        let out = crate::sys::exec::bounded(expr, self.timeout, |_| {})
            .with_context(|| format!("starting {}", self.task_bin.display()))?;
        Ok(out.map(|out| TaskOutput {
            args,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_past_the_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let child_pid = dir.path().join("child.pid");
        // A stand-in `task` that starts a long child (as task starts bash and flux) and waits.
        let script = dir.path().join("task");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nsleep 300 &\necho $! > {}\nwait\n",
                child_pid.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let runner = TaskRunner::new(&script, dir.path()).timeout(Duration::from_secs(2));
        let e = runner.run(&["flux:logs"]).unwrap_err();
        assert_eq!(
            crate::error::kind_of(&e),
            Some(&crate::Error::timeout(
                "`task flux:logs`",
                Duration::from_secs(2)
            ))
        );
        assert_eq!(
            e.to_string(),
            "`task flux:logs` did not finish within 2s (killed)"
        );
        let pid: u32 = std::fs::read_to_string(&child_pid)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            crate::sys::exec::wait_gone(pid, Duration::from_secs(5)),
            "the task's child {pid} outlived the timeout"
        );
    }
}
