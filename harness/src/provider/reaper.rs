//! The reaper: nothing an environment starts outlives its owner. Whoever takes a state directory
//! ([`super::Owner`]: `harness up`, a scenario binary, `harness bench`) also starts a small
//! watcher, its own executable again in a hidden mode, joined to it by a pipe that only the owner
//! holds open. However the owner ends — exit, panic, SIGTERM, SIGINT, SIGKILL, the OOM killer —
//! the kernel closes that pipe, and the watcher then takes the directory and removes what is left
//! there: the kind clusters it recorded, every recorded process by pid (TERM, bounded wait, KILL;
//! a Docker engine the harness started among them, after the clusters), the k3s containers
//! labelled with it. An environment kept on purpose (`--retain`, `HARNESS_RETAIN=1`) says so in
//! the state directory ([`retain`]), and the watcher leaves it up. `PR_SET_PDEATHSIG` alone could
//! not do this: the control planes are kwokctl's grandchildren, reparented long before.
//!
//! The watcher is entered from a constructor that runs before `main` in every binary that links
//! this crate (the harness binary, each scenario test binary), so it needs no second binary.

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

/// Set on the watcher process only: the state directory it watches.
const REAPER_ENV: &str = "K8S_OPS_HARNESS_REAPER";
/// In the state directory: the environment is kept on purpose; the watcher leaves it.
const RETAINED: &str = "retained";

/// Runs before `main`: in a watcher process, watches and reaps, then exits.
#[ctor::ctor(unsafe)]
fn watcher_mode() {
    if let Some(dir) = std::env::var_os(REAPER_ENV) {
        std::process::exit(watch(Path::new(&dir)));
    }
}

/// The owner's end of the pipe: dropping it (or dying) wakes the watcher.
#[derive(Debug)]
pub(crate) struct Reaper {
    pipe: Option<ChildStdin>,
    pid: u32,
}

/// An owner that ends cleanly (the state directory's lock already released: [`super::Owner`]'s
/// fields drop in order) wakes its watcher and waits, bounded, until it has looked at the
/// directory and gone: a next owner of the directory right after (a test, a second start) then
/// finds it free instead of held by the watcher for that moment.
impl Drop for Reaper {
    fn drop(&mut self) {
        drop(self.pipe.take());
        crate::sys::exec::wait_gone(self.pid, Duration::from_secs(15));
    }
}

impl Reaper {
    /// Starts the watcher of `state_dir` (its output in `<state_dir>/reaper.log`).
    pub(crate) fn spawn(state_dir: &Path) -> Result<Self> {
        let log = fs::File::create(state_dir.join("reaper.log"))?;
        let mut child: Child = Command::new("/proc/self/exe")
            // Should the constructor not run, a test binary lists no test of this name and exits.
            .args(["--exact", "__harness_reaper__"])
            .env(REAPER_ENV, state_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a Ctrl-C to the owner's terminal does not reach it.
            .process_group(0)
            .spawn()
            .context("starting the reaper (this executable, as a watcher)")?;
        let pipe = child.stdin.take().expect("piped");
        fs::write(state_dir.join("reaper.pid"), child.id().to_string())?;
        // Reaped when it exits while this process still lives: no zombie.
        let pid = child.id();
        std::thread::spawn(move || child.wait());
        Ok(Self {
            pipe: Some(pipe),
            pid,
        })
    }
}

/// Marks the environment of `state_dir` as kept on purpose: its watcher leaves it up.
pub fn retain(state_dir: &Path) {
    let _ = fs::write(
        state_dir.join(RETAINED),
        "kept on purpose (--retain / HARNESS_RETAIN=1): `harness down` removes it\n",
    );
}

/// The directory's new owner reaps a retained environment itself: the mark goes.
pub(crate) fn forget_retained(state_dir: &Path) {
    let _ = fs::remove_file(state_dir.join(RETAINED));
}

/// The watcher: waits for the owner's end of the pipe to close, then reaps unless the environment
/// is retained or a new owner has taken the directory. Returns the exit code.
fn watch(state_dir: &Path) -> i32 {
    // SIGINT/SIGHUP of a terminal are for the owner; the watcher still stops on SIGTERM.
    for signal in [nix::sys::signal::SIGINT, nix::sys::signal::SIGHUP] {
        // SAFETY: setting a signal to be ignored installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigIgn) };
    }
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let at = jiff::Timestamp::now();
    if state_dir.join(RETAINED).exists() {
        eprintln!("reaper {at}: the owner is gone; the environment is retained, left up");
        return 0;
    }
    // The owner's lock goes with its last file descriptor; a new owner may have taken it since.
    let lock = crate::sys::poll::until(Duration::from_secs(10), Duration::from_millis(100), || {
        crate::sys::lock::try_exclusive(&state_dir.join("owner.lock")).transpose()
    });
    let _lock = match lock {
        Some(Ok(lock)) => lock,
        None => {
            eprintln!("reaper {at}: a new owner holds the directory; it reaps for itself");
            return 0;
        }
        Some(Err(e)) => {
            eprintln!("reaper {at}: {e:#}");
            return 1;
        }
    };
    match super::reap_leftovers(state_dir) {
        Ok(removed) if removed.is_empty() => {
            eprintln!("reaper {at}: the owner is gone and left nothing running");
            0
        }
        Ok(removed) => {
            eprintln!("reaper {at}: the owner is gone; {}", removed.join("; "));
            0
        }
        Err(e) => {
            eprintln!("reaper {at}: {e:#}");
            1
        }
    }
}

/// What of the environment in `state_dir` is still there, waiting up to `bound` for it to go: the
/// processes among `recorded` ([`crate::sys::process::recorded_pids`], read while it ran) and its
/// watcher that still run (`name (pid)`), and the ports of `ports` still taken on 127.0.0.1.
/// Both empty: nothing outlived the environment's owner.
pub fn left_after(
    state_dir: &Path,
    recorded: &[(String, u32, bool)],
    ports: std::ops::Range<u16>,
    bound: Duration,
) -> (Vec<String>, Vec<u16>) {
    let reaper: Option<u32> = fs::read_to_string(state_dir.join("reaper.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    let left = || {
        let processes: Vec<String> = recorded
            .iter()
            .map(|(name, pid, _)| (name.as_str(), *pid))
            .chain(reaper.map(|pid| ("reaper", pid)))
            .filter(|(_, pid)| crate::sys::exec::alive(*pid))
            .map(|(name, pid)| format!("{name} ({pid})"))
            .collect();
        let ports: Vec<u16> = ports
            .clone()
            .filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err())
            .collect();
        (processes, ports)
    };
    let gone = crate::sys::poll::wait_for("the environment to be gone", bound, || {
        let now = left();
        Ok((now.0.is_empty() && now.1.is_empty()).then_some(now))
    });
    gone.unwrap_or_else(|_| left())
}

/// What of a kind environment in `state_dir` is still there: the record of its clusters, and kind
/// node containers on an answering Docker engine (none answering: the engine the harness started
/// is gone, and its containers with it). Empty: nothing of it is left.
pub fn kind_left(state_dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    if let Ok(record) = fs::read_to_string(state_dir.join("kind-clusters")) {
        left.push(format!("the record of kind clusters {}", record.trim()));
    }
    let nodes = crate::sys::exec::run(
        "docker ps (kind node containers)",
        duct::cmd!(
            "docker",
            "ps",
            "-a",
            "--filter",
            "label=io.x-k8s.kind.cluster",
            "--format",
            "{{.Names}}"
        ),
        Duration::from_secs(30),
    );
    if let Ok(names) = nodes {
        left.extend(
            names
                .split_whitespace()
                .map(|n| format!("kind node container {n}")),
        );
    }
    left
}
