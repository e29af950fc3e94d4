//! Running processes and watching them, in one place: one bounded run (its own process group,
//! the whole group killed when the bound passes), one "is this pid alive", one walk of a process
//! tree, one tree copy, and one tokio runtime for the blocking API. The harness and the scenarios
//! use these instead of polling `/proc` or writing their own wait loops.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The runtime behind the harness's blocking functions (environment start, `harness up`, bench):
/// several threads may `block_on` it at once (one per cluster). Never call it from inside another
/// runtime (a `#[tokio::test]`): use the async API there.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("harness-runtime")
            .enable_all()
            .build()
            .expect("the harness's tokio runtime")
    })
}

/// The state letter of `pid` in `/proc/<pid>/stat` (`R`, `S`, `Z`, …); `None` when there is no
/// such process.
pub fn state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the state follows the last ')'.
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// Whether `pid` runs: it exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    state(pid).is_some_and(|s| s != 'Z')
}

/// Waits until `pid` is gone (or a zombie) for at most `bound`; true when it is.
pub fn wait_gone(pid: u32, bound: Duration) -> bool {
    super::poll::until(bound, Duration::from_millis(20), || {
        (!alive(pid)).then_some(())
    })
    .is_some()
}

/// `pid` and every live process below it, parents before children.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let ppid = fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit(')')
                    .next()?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u32>()
                    .ok()
            });
        if let Some(ppid) = ppid {
            parents.push((p, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree.retain(|p| alive(*p));
    tree
}

/// Sends `signal` to the process group `pgid` (a process started by [`bounded`] leads its own).
pub fn signal_group(pgid: u32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid as i32), signal);
}

/// Runs `expr` (with the redirections its caller set) as the leader of its own process group and
/// waits at most `timeout`. Returns its output, or `None` when the bound passed. Either way the
/// whole group is killed at the end, so nothing it started (bash, flux, kubectl, docker) outlives
/// the run. `tick` is called about once a second with the time so far (a heartbeat for long runs).
pub fn bounded(
    expr: duct::Expression,
    timeout: Duration,
    mut tick: impl FnMut(Duration),
) -> Result<Option<Output>> {
    let handle = expr
        .before_spawn(|cmd| {
            std::os::unix::process::CommandExt::process_group(cmd, 0);
            Ok(())
        })
        .unchecked()
        .start()?;
    let group = handle.pids().first().copied();
    let kill_group = || {
        if let Some(pgid) = group {
            signal_group(pgid, Signal::SIGKILL);
        }
    };
    let started = Instant::now();
    let mut next_tick = Duration::from_secs(1);
    let finished = super::poll::until(timeout, Duration::from_millis(20), || {
        let elapsed = started.elapsed();
        if elapsed >= next_tick {
            tick(elapsed);
            next_tick += Duration::from_secs(1);
        }
        handle.try_wait().transpose()
    });
    kill_group();
    match finished {
        Some(out) => Ok(Some(out?.clone())),
        None => {
            let _ = handle.kill();
            Ok(None)
        }
    }
}

/// [`bounded`] with stdout and stderr captured and stdin closed: trimmed stdout on success. A
/// failure names `what`, the exit status and the last lines of stderr (or stdout); an overrun
/// names the bound.
pub fn run(what: &str, expr: duct::Expression, timeout: Duration) -> Result<String> {
    let out = bounded(
        expr.stdout_capture().stderr_capture().stdin_null(),
        timeout,
        |_| {},
    )
    .with_context(|| format!("starting {what}"))?;
    let Some(out) = out else {
        return Err(crate::Error::timeout(what, timeout).into());
    };
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let text = if stderr.is_empty() { stdout } else { stderr };
    let lines: Vec<&str> = text.lines().collect();
    bail!(
        "{what} failed ({}): {}",
        out.status,
        lines[lines.len().saturating_sub(5)..].join("\n")
    )
}

/// Copies the tree `from` into `to` (created): directories recursively, symlinks below `from` as
/// symlinks, files by content and mode, made writable by their owner (a copy of a read-only tree,
/// such as a module in Go's cache, is one to change); entries named in `skip` (e.g. `.git`) are
/// left out at every level. `from` may also be a single file. The one directory copy of the crate.
pub fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> io::Result<()> {
    if !fs::metadata(from)?.is_dir() {
        return copy_file(from, to);
    }
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        if skip.iter().any(|s| entry.file_name() == *s) {
            continue;
        }
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, dest)?;
        } else {
            copy_tree(&entry.path(), &dest, skip)?;
        }
    }
    Ok(())
}

/// One file of [`copy_tree`]: content and mode, plus the owner's write bit.
fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::copy(from, to)?;
    let mut permissions = fs::metadata(to)?.permissions();
    permissions.set_mode(permissions.mode() | 0o200);
    fs::set_permissions(to, permissions)
}

/// `fut`'s outcome, or an error saying "<what> did not finish within <bound>" once `bound` has
/// passed: the one conversion of a bounded wait into this crate's errors.
pub async fn within<T, E>(
    bound: std::time::Duration,
    what: impl std::fmt::Display,
    fut: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> anyhow::Result<T>
where
    E: Into<anyhow::Error>,
{
    match tokio::time::timeout(bound, fut).await {
        Ok(outcome) => outcome.map_err(Into::into),
        Err(_) => anyhow::bail!("{what} did not finish within {bound:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_past_its_bound_is_killed_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let child_pid = dir.path().join("child.pid");
        let script = format!("sleep 300 & echo $! > {}; wait", child_pid.display());
        let started = Instant::now();
        let out = bounded(
            duct::cmd!("sh", "-c", script).stdout_null(),
            Duration::from_secs(1),
            |_| {},
        )
        .unwrap();
        assert!(out.is_none(), "the run ended on its own: {out:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: u32 = fs::read_to_string(&child_pid)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "the child {pid} outlived the bound"
        );
    }

    #[test]
    fn run_returns_stdout_or_names_the_failure_and_the_bound() {
        let ok = run("echo", duct::cmd!("echo", " hi "), Duration::from_secs(5)).unwrap();
        assert_eq!(ok, "hi");
        let e = run(
            "failing step",
            duct::cmd!("sh", "-c", "echo out; echo why >&2; exit 3"),
            Duration::from_secs(5),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "failing step failed (exit status: 3): why");
        let e = run(
            "slow step",
            duct::cmd!("sleep", "5"),
            Duration::from_millis(300),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "slow step did not finish within 300ms (killed)");
    }

    #[test]
    fn alive_descendants_and_state_follow_proc() {
        let me = std::process::id();
        assert!(alive(me));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(descendants(me).contains(&pid));
        // Running, sleeping, or in a disk wait while exec loads it on a busy machine.
        assert!(
            matches!(state(pid), Some('R' | 'S' | 'D')),
            "{:?}",
            state(pid)
        );
        child.kill().unwrap();
        // Killed but not reaped: a zombie, which is not alive.
        assert!(wait_gone(pid, Duration::from_secs(5)));
        assert_eq!(state(pid), Some('Z'));
        child.wait().unwrap();
        assert_eq!(state(pid), None);
        assert!(!descendants(me).contains(&pid));
    }

    #[test]
    fn copy_tree_keeps_symlinks_and_leaves_out_skipped_names() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        fs::create_dir_all(from.join(".git")).unwrap();
        fs::create_dir_all(from.join("a/b")).unwrap();
        fs::write(from.join("a/b/file"), "x").unwrap();
        fs::write(from.join(".git/HEAD"), "ref").unwrap();
        std::os::unix::fs::symlink("a/b/file", from.join("link")).unwrap();
        let to = dir.path().join("to");
        copy_tree(&from, &to, &[".git"]).unwrap();
        assert_eq!(fs::read_to_string(to.join("a/b/file")).unwrap(), "x");
        assert_eq!(
            fs::read_link(to.join("link")).unwrap(),
            Path::new("a/b/file")
        );
        assert!(!to.join(".git").exists());
    }

    #[test]
    fn copy_tree_copies_read_only_files_writable_with_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("tool");
        fs::write(&from, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&from, fs::Permissions::from_mode(0o555)).unwrap();
        let to = dir.path().join("copy");
        copy_tree(&from, &to, &[]).unwrap();
        assert_eq!(fs::read_to_string(&to).unwrap(), "#!/bin/sh\n");
        let mode = fs::metadata(&to).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{mode:o}");
    }
}
