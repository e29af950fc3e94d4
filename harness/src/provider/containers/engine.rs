//! The Docker engine the container providers (`kind`, `k3s`) use.
//!
//! An engine that already answers (`docker info`, at `DOCKER_HOST` or the default socket) is used as
//! it is and never stopped: the harness does not touch an engine it did not start. Where none
//! answers and this process is root, the harness installs Debian's `docker.io` if `dockerd` is
//! missing, starts `dockerd` on the default socket (unix socket only, no TCP), waits for it, and
//! stops it by its pid with the environment. Where a privileged container cannot start because
//! this machine's root lacks capabilities Docker grants to privileged containers (this project's
//! VMs lack `CAP_SYS_RESOURCE`), it restarts `dockerd` with `harness/scripts/runc-without-unheld-caps.sh`
//! as the default runtime: detected by a probe container, never assumed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::sys::process::{LogFiles, ManagedProcess};

/// The socket of an engine the harness starts (Docker's default, so `docker` and `kind` reach it
/// without `DOCKER_HOST`).
pub const SOCKET: &str = "/var/run/docker.sock";

/// What a privileged container fails with when the host root lacks a capability Docker grants it.
const CAPS_ERROR: &str = "unable to apply caps";

/// The engine in use: started by this process (and stopped with it), or found running.
pub struct Engine {
    daemon: Mutex<Option<ManagedProcess>>,
    state_dir: PathBuf,
}

impl Engine {
    /// An engine answering `docker info`: the one already running, else one started here.
    pub fn ensure(state_dir: &Path) -> Result<Self> {
        let root = nix::unistd::geteuid().is_root();
        let can_install = root && crate::sys::path::on_path("apt-get").is_some();
        if crate::sys::path::on_path("docker").is_none() && !can_install {
            return Err(missing(
                "a Docker engine",
                "`docker` is not on PATH".into(),
                "install Docker Engine (https://docs.docker.com/engine/install/) or use HARNESS_PROVIDER=local".into(),
            ));
        }
        let engine = Self {
            daemon: Mutex::new(None),
            state_dir: state_dir.to_path_buf(),
        };
        let why = match answers() {
            Ok(()) => return Ok(engine),
            Err(why) => why,
        };
        if let Some(host) = std::env::var_os("DOCKER_HOST").filter(|h| !h.is_empty()) {
            return Err(missing(
                "a running Docker engine",
                format!(
                    "none answers at DOCKER_HOST={} ({why})",
                    host.to_string_lossy()
                ),
                format!(
                    "start that engine, or unset DOCKER_HOST to let the harness (as root) start its own on {SOCKET}"
                ),
            ));
        }
        if !root {
            return Err(missing(
                "a running Docker engine",
                format!("`docker info` failed ({why})"),
                "start a Docker engine (e.g. `sudo systemctl start docker`), run as root to let the harness start one, or use HARNESS_PROVIDER=local".into(),
            ));
        }
        crate::provider::containers::packages::ensure_packages(&[
            ("dockerd", "docker.io"),
            ("docker", "docker.io"),
        ])?;
        engine.start(false)?;
        Ok(engine)
    }

    /// Starts `dockerd` (with the runc wrapper as default runtime when `wrapped`) and waits until it
    /// answers.
    fn start(&self, wrapped: bool) -> Result<()> {
        // A stale socket of a dead engine would make dockerd refuse to start.
        let _ = std::fs::remove_file(SOCKET);
        let mut cmd = Command::new(crate::sys::path::which("dockerd").context("dockerd")?);
        cmd.args(["--host", &format!("unix://{SOCKET}")]);
        if wrapped {
            let wrapper = crate::repo_root().join("harness/scripts/runc-without-unheld-caps.sh");
            cmd.args([
                "--add-runtime",
                &format!("runc-without-unheld-caps={}", wrapper.display()),
                "--default-runtime",
                "runc-without-unheld-caps",
            ]);
        }
        let log = self.state_dir.join("engine").join("dockerd.log");
        let daemon = ManagedProcess::spawn(
            "dockerd",
            cmd,
            &LogFiles {
                raw: log.clone(),
                cri: None,
            },
            &self.state_dir,
        )?;
        let mut slot = self.daemon.lock().unwrap();
        *slot = Some(daemon);
        let daemon = slot.as_mut().expect("just set");
        crate::sys::poll::wait_for(
            &format!("dockerd to answer on {SOCKET} (log: {})", log.display()),
            Duration::from_secs(60),
            || {
                daemon.ensure_running()?;
                Ok(answers().is_ok().then_some(()))
            },
        )?;
        eprintln!(
            "harness: started dockerd (pid {}{}) on {SOCKET}; log {}",
            daemon.pid(),
            if wrapped {
                ", runc without the capabilities this root lacks"
            } else {
                ""
            },
            log.display()
        );
        Ok(())
    }

    /// Whether this process started the engine (and will stop it).
    pub fn started_here(&self) -> bool {
        self.daemon.lock().unwrap().is_some()
    }

    /// Proves that a privileged container starts from `image`. Where it fails for lack of host
    /// capabilities and the engine is ours, restarts the engine with the runc wrapper and proves
    /// it again; otherwise fails in one line naming the fix.
    pub fn ensure_privileged(&self, image: &str) -> Result<()> {
        let why = match probe_privileged(image) {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if !why.contains(CAPS_ERROR) || !self.started_here() {
            bail!(
                "the Docker engine cannot start privileged containers, which kind nodes are ({why}): run the harness where Docker may grant them (rootful Docker), or let it start its own engine (stop this one)"
            );
        }
        self.stop();
        self.start(true)?;
        probe_privileged(image).map_err(|why| {
            anyhow::anyhow!(
                "even with the runc wrapper, privileged containers fail ({why}): this machine cannot run kind nodes; use HARNESS_PROVIDER=local"
            )
        })
    }

    /// Stops the engine if this process started it (by its pid; dockerd stops its containers).
    pub fn stop(&self) {
        if let Some(mut daemon) = self.daemon.lock().unwrap().take() {
            daemon.stop(Duration::from_secs(30));
        }
    }

    /// The engine's own process, if started here.
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.daemon
            .lock()
            .unwrap()
            .as_ref()
            .map(|d| vec![(d.name().to_string(), d.pid())])
            .unwrap_or_default()
    }

    /// The engine's log, if started here.
    pub fn log_path(&self) -> Option<PathBuf> {
        self.daemon
            .lock()
            .unwrap()
            .as_ref()
            .map(|d| d.log_path().to_path_buf())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// [`crate::Error::EngineMissing`] of the kind provider.
fn missing(needs: &'static str, why: String, fix: String) -> anyhow::Error {
    crate::Error::EngineMissing {
        provider: "kind",
        needs,
        why,
        fix,
    }
    .into()
}

/// `Ok` when `docker info` answers within 20 s; otherwise its first line of complaint.
pub fn answers() -> std::result::Result<(), String> {
    if crate::sys::path::on_path("docker").is_none() {
        return Err("`docker` is not on PATH".into());
    }
    match captured(
        duct::cmd!("docker", "info", "--format", "{{.ServerVersion}}"),
        Duration::from_secs(20),
    ) {
        Ok(Some(out)) if out.status.success() => Ok(()),
        Ok(Some(out)) => Err(first_line(&out)),
        Ok(None) => Err("`docker info` gave no answer within 20s".into()),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// `docker run --rm --privileged --entrypoint true <image>`; the error is the engine's own line.
fn probe_privileged(image: &str) -> std::result::Result<(), String> {
    match captured(
        duct::cmd!(
            "docker",
            "run",
            "--rm",
            "--privileged",
            "--entrypoint",
            "true",
            image
        ),
        Duration::from_secs(60),
    ) {
        Ok(Some(out)) if out.status.success() => Ok(()),
        Ok(Some(out)) => Err(first_line(&out)),
        Ok(None) => Err("the probe container did not exit within 60s".into()),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// `expr` with its output captured, bounded by `timeout` ([`crate::sys::exec::bounded`]).
fn captured(expr: duct::Expression, timeout: Duration) -> Result<Option<std::process::Output>> {
    crate::sys::exec::bounded(
        expr.stdout_capture().stderr_capture().stdin_null(),
        timeout,
        |_| {},
    )
}

/// The first non-empty line of stderr, else of stdout, else the exit status.
fn first_line(out: &std::process::Output) -> String {
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}, no output", out.status))
}

#[cfg(test)]
mod tests {
    /// The wrapper removes exactly the capabilities missing from its bounding set, wherever they
    /// stand in each array, from both files runc reads, and leaves the JSON valid.
    #[test]
    fn runc_wrapper_drops_only_unheld_capabilities() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let bnd = status
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        // Bit 24 is CAP_SYS_RESOURCE, 0 CAP_CHOWN, 21 CAP_SYS_ADMIN.
        let caps = ["CAP_SYS_RESOURCE", "CAP_CHOWN", "CAP_SYS_ADMIN"];
        let bits = [24, 0, 21];
        let spec = serde_json::json!({"process": {"capabilities": {
            "bounding": caps, "effective": ["CAP_CHOWN", "CAP_SYS_RESOURCE"], "permitted": ["CAP_SYS_RESOURCE"]
        }}});
        std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        let process = serde_json::json!({"capabilities": {"bounding": caps}});
        let process_file = dir.path().join("process.json");
        std::fs::write(
            &process_file,
            serde_json::to_string_pretty(&process).unwrap(),
        )
        .unwrap();
        // Run a copy whose search for the real runc finds /bin/sh and whose `exec` of it is
        // replaced by `exit 0`: only the edits of the two files are under test, and no runc needs
        // to be installed (a fresh machine has none before the kind provider installs docker.io).
        let script = crate::repo_root().join("harness/scripts/runc-without-unheld-caps.sh");
        let out = duct::cmd!(
            "sh",
            "-c",
            format!(
                "sed -e 's/exec \"$runc\" \"$@\"/exit 0/' -e 's|^for runc in .*; do$|for runc in /bin/sh; do|' {} > {}/w.sh && sh {}/w.sh --root /x create --bundle {} id && sh {}/w.sh exec --process {} id",
                script.display(),
                dir.path().display(),
                dir.path().display(),
                bundle.display(),
                dir.path().display(),
                process_file.display()
            )
        )
        .stderr_to_stdout()
        .unchecked()
        .run()
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let held = |bit: u32| bnd >> bit & 1 == 1;
        let expected: Vec<&str> = caps
            .iter()
            .zip(bits)
            .filter(|(_, b)| held(*b))
            .map(|(c, _)| *c)
            .collect();
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(
            spec["process"]["capabilities"]["bounding"],
            serde_json::json!(expected)
        );
        let process: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&process_file).unwrap()).unwrap();
        assert_eq!(
            process["capabilities"]["bounding"],
            serde_json::json!(expected)
        );
        assert_eq!(
            spec["process"]["capabilities"]["permitted"],
            serde_json::json!(if held(24) {
                vec!["CAP_SYS_RESOURCE"]
            } else {
                vec![]
            })
        );
    }
}
