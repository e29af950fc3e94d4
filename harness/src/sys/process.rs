//! Processes the harness starts itself: spawned with their output in log files (raw, and CRI-format
//! for the ones kwok serves as pod logs), recorded in a pid file, and stopped by their own pid.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::poll::until;

/// Environment variable stamped on every process the harness starts, naming its state directory, so
/// that a later run can tell its own leftovers from anything else on the machine.
pub const STATE_MARKER_ENV: &str = "K8S_OPS_HARNESS_STATE";

/// Where a process' output goes.
#[derive(Debug, Clone)]
pub struct LogFiles {
    /// Everything the process printed, as printed.
    pub raw: PathBuf,
    /// The same lines in the CRI log format (`<RFC3339Nano> <stream> F <line>`) that kwok serves as
    /// the logs of the simulated pod standing for this process.
    pub cri: Option<PathBuf>,
}

/// A child process owned by the harness.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    pid_file: PathBuf,
    log: PathBuf,
}

impl ManagedProcess {
    /// Starts `command` with stdin closed and its output in `logs`; records its pid in `pid_dir`.
    pub fn spawn(
        name: &str,
        mut command: Command,
        logs: &LogFiles,
        state_dir: &Path,
    ) -> Result<Self> {
        if let Some(parent) = logs.raw.parent() {
            fs::create_dir_all(parent)?;
        }
        let program = command.get_program().to_string_lossy().into_owned();
        command
            .env(STATE_MARKER_ENV, state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name} ({program})"))?;
        let raw = shared_append(&logs.raw)?;
        let cri = logs.cri.as_deref().map(shared_append).transpose()?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        copy_lines(stdout, "stdout", raw.clone(), cri.clone());
        copy_lines(stderr, "stderr", raw, cri);

        let pid_dir = state_dir.join("pids");
        fs::create_dir_all(&pid_dir)?;
        let pid_file = pid_dir.join(format!("{name}.pid"));
        fs::write(&pid_file, child.id().to_string())?;
        Ok(Self {
            name: name.to_string(),
            child,
            pid_file,
            log: logs.raw.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `Some(exit status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails with the tail of its log if the process has already exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.exited() {
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 15)
            );
        }
        Ok(())
    }

    /// SIGTERM to its pid, SIGKILL after `grace`; waits for it and removes its pid file.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_none() {
            terminate_pid(self.child.id(), grace, || {
                self.child.try_wait().ok().flatten().is_some()
            });
        }
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.pid_file);
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// Stops a process that is not our child (e.g. started by kwokctl) by its pid: SIGTERM, SIGKILL
/// after `grace`; fails naming the pid when it is still there 5 s after the SIGKILL.
pub fn stop_pid(pid: u32, grace: Duration) -> Result<()> {
    terminate_pid(pid, grace, || !crate::sys::exec::alive(pid));
    if !crate::sys::exec::wait_gone(pid, Duration::from_secs(5)) {
        bail!(
            "pid {pid} is still there {:?} after SIGTERM and 5s after SIGKILL (state {:?})",
            grace,
            crate::sys::exec::state(pid)
        );
    }
    Ok(())
}

/// SIGTERM, then SIGKILL once `grace` has passed without `gone()` turning true.
fn terminate_pid(pid: u32, grace: Duration, mut gone: impl FnMut() -> bool) {
    let pid = Pid::from_raw(pid as i32);
    if kill(pid, Signal::SIGTERM).is_err() {
        return;
    }
    if until(grace, Duration::from_millis(50), || gone().then_some(())).is_none() {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// Stops processes left by an earlier run that died without tearing down (a crash, SIGKILL):
/// every pid in `<state_dir>/pids` (recursively) whose process still carries this state directory.
/// Returns the names of the processes stopped.
pub fn reap_stale(state_dir: &Path) -> Vec<String> {
    stop_recorded(state_dir, state_dir)
}

/// Where a recorded process stands in the shutdown order: servers stop after their clients, so
/// that none waits on a client or retries a backend that is already gone (stopped all at once, a
/// kube-apiserver that loses etcd does not exit before SIGKILL, 10 s later).
fn shutdown_stage(name: &str) -> u8 {
    match name {
        "etcd" => 2,
        "kube-apiserver" => 1,
        _ => 0,
    }
}

/// Stops every process recorded by a pid file under `pid_root` that belongs to `state_dir`, in
/// stages (clients, then kube-apiserver, then etcd): SIGTERM to a whole stage at once, SIGKILL to
/// those still there after 10 s. Returns their names.
pub fn stop_recorded(pid_root: &Path, state_dir: &Path) -> Vec<String> {
    let mut stages: [Vec<(u32, String)>; 3] = Default::default();
    for pid_file in pid_files(pid_root) {
        let pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) =
            pid.filter(|pid| belongs_to(*pid, state_dir) && crate::sys::exec::alive(*pid))
        {
            let name = pid_file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            stages[usize::from(shutdown_stage(&name))].push((pid, name));
        }
        let _ = fs::remove_file(&pid_file);
    }
    let mut stopped = Vec::new();
    for targets in stages {
        terminate_all(&targets);
        stopped.extend(targets.into_iter().map(|(_, name)| name));
    }
    stopped
}

/// SIGTERM to every `(pid, name)` at once; SIGKILL to those still there after 10 s; returns once
/// all are gone (or 5 s after the SIGKILL).
fn terminate_all(targets: &[(u32, String)]) {
    for (pid, _) in targets {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
    }
    let gone = |pid: u32| !crate::sys::exec::alive(pid);
    let all_gone = || targets.iter().all(|(pid, _)| gone(*pid)).then_some(());
    if until(Duration::from_secs(10), Duration::from_millis(50), all_gone).is_some() {
        return;
    }
    for (pid, _) in targets {
        if !gone(*pid) {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
    until(Duration::from_secs(5), Duration::from_millis(20), all_gone);
}

/// `(name, pid, alive)` of every pid file under `state_dir` (the harness' own and kwokctl's).
pub fn recorded_pids(state_dir: &Path) -> Vec<(String, u32, bool)> {
    pid_files(state_dir)
        .into_iter()
        .filter_map(|f| {
            let pid: u32 = fs::read_to_string(&f).ok()?.trim().parse().ok()?;
            let name = f.file_stem()?.to_string_lossy().into_owned();
            Some((
                name,
                pid,
                belongs_to(pid, state_dir) && crate::sys::exec::alive(pid),
            ))
        })
        .collect()
}

/// Pid files under `dir`: the harness' own (`pids/*.pid`) and kwokctl's (`**/pids/*.pid`).
fn pid_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "pid")
                && d.file_name().is_some_and(|n| n == "pids")
            {
                found.push(path);
            }
        }
    }
    found
}

/// True when process `pid` was started for `state_dir` (marker env var or a path in its command line).
pub fn belongs_to(pid: u32, state_dir: &Path) -> bool {
    let needle = state_dir.to_string_lossy().into_owned();
    let read = |what: &str| fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
    let environ = String::from_utf8_lossy(&read("environ")).into_owned();
    let cmdline = String::from_utf8_lossy(&read("cmdline")).into_owned();
    environ.contains(&format!("{STATE_MARKER_ENV}={needle}")) || cmdline.contains(&needle)
}

type SharedFile = std::sync::Arc<std::sync::Mutex<fs::File>>;

fn shared_append(path: &Path) -> Result<SharedFile> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(std::sync::Arc::new(std::sync::Mutex::new(file)))
}

/// Copies the lines of `from` into the raw log and, as CRI-format lines, into the CRI log.
fn copy_lines(
    from: impl Read + Send + 'static,
    stream: &'static str,
    raw: SharedFile,
    cri: Option<SharedFile>,
) {
    std::thread::spawn(move || {
        let reader = BufReader::new(from);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line);
            if let Ok(mut f) = raw.lock() {
                let _ = writeln!(f, "{text}");
            }
            if let Some(cri) = &cri
                && let Ok(mut f) = cri.lock()
            {
                let _ = writeln!(f, "{}", cri_line(jiff::Timestamp::now(), stream, &text));
            }
        }
    });
}

/// One line in the CRI container log format that kubelet (and kwok) serve.
pub fn cri_line(at: jiff::Timestamp, stream: &str, text: &str) -> String {
    format!(
        "{} {stream} F {text}",
        at.strftime("%Y-%m-%dT%H:%M:%S.%9fZ")
    )
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fails with one line naming the port and the fix when a port on 127.0.0.1 is taken.
pub fn ensure_ports_free(ports: &[u16], fix: &str) -> Result<()> {
    for &port in ports {
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            return Err(crate::Error::PortTaken {
                port,
                fix: fix.to_string(),
            }
            .into());
        }
    }
    Ok(())
}

/// A block of ports on 127.0.0.1 reserved by this process: a machine-wide lock file per block keeps
/// concurrent harness runs (parallel test binaries, `harness up`) from picking the same ports
/// between probing and binding. Released when dropped.
#[derive(Debug)]
pub struct PortBlock {
    pub base: u16,
    pub len: u16,
    _lock: super::lock::FileLock,
}

impl PortBlock {
    /// Reserves exactly `base..base+len`, failing with one line naming the port and `fix`.
    pub fn reserve(base: u16, len: u16, fix: &str) -> Result<Self> {
        let lock = lock_block(base)?.with_context(|| {
            format!(
                "ports {base}-{} are reserved by another harness run: {fix}",
                base + len - 1
            )
        })?;
        let ports: Vec<u16> = (base..base + len).collect();
        ensure_ports_free(&ports, fix)?;
        Ok(Self {
            base,
            len,
            _lock: lock,
        })
    }

    /// Reserves the first block of `len` free ports at or above `start`, in steps of `len`, below
    /// the kernel's ephemeral range (32768+) so that no outgoing connection takes one meanwhile.
    pub fn first_free(start: u16, len: u16) -> Result<Self> {
        let mut base = start;
        while base + len <= 32768 {
            if let Some(lock) = lock_block(base)?
                && (base..base + len).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
            {
                return Ok(Self {
                    base,
                    len,
                    _lock: lock,
                });
            }
            base += len;
        }
        bail!(
            "no block of {len} free ports on 127.0.0.1 between {start} and 32767: stop other harness environments (`cargo run -p harness -- down`)"
        )
    }

    pub fn range(&self) -> std::ops::Range<u16> {
        self.base..self.base + self.len
    }
}

/// The machine-wide lock of the block starting at `base`; `None` when another process holds it.
fn lock_block(base: u16) -> Result<Option<super::lock::FileLock>> {
    let dir = std::env::temp_dir().join("k8s-ops-harness-ports");
    super::lock::try_exclusive(&dir.join(format!("{base}.lock")))
}

#[cfg(test)]
mod tests;
