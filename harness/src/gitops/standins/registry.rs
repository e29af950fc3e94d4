//! CNCF distribution's registry: the local OCI registry that serves the stand-in charts.

use super::*;

/// CNCF distribution's registry on 127.0.0.1, storing in the state directory.
pub struct Registry {
    pub process: ManagedProcess,
}

impl Registry {
    pub fn start(toolchain: &Toolchain, state_dir: &Path, port: u16) -> Result<Self> {
        toolchain.ensure(&[Tool::Registry])?;
        let dir = state_dir.join("registry");
        std::fs::create_dir_all(dir.join("data"))?;
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                render_json(&dir.join("data").to_string_lossy())
            ),
        )?;
        crate::sys::process::ensure_ports_free(
            &[port],
            "stop what uses it or choose other ports with --port-base",
        )?;
        let mut command = std::process::Command::new(toolchain.binary(Tool::Registry, "registry"));
        command.arg("serve").arg(&config);
        let logs = LogFiles {
            raw: dir.join("registry.log"),
            cri: None,
        };
        let mut process = ManagedProcess::spawn("registry", command, &logs, state_dir)?;
        let url = format!("http://127.0.0.1:{port}/v2/");
        let up = crate::sys::poll::wait_for(
            "the local registry to answer",
            Duration::from_secs(30),
            || {
                process.ensure_running()?;
                Ok(ureq::get(&url).call().ok().map(|_| ()))
            },
        );
        if let Err(e) = up {
            process.stop(Duration::from_secs(5));
            bail!("{e:#}; see {}", logs.raw.display());
        }
        Ok(Self { process })
    }
}
