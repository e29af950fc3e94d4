//! Debian packages the container providers need on the host (the Docker engine, debootstrap for the
//! base image, busybox for the fixture app image), installed by the harness itself where it may.

use anyhow::{Result, bail};

use crate::sys::exec::run;

/// Makes sure every `(command, Debian package)` is there: installs the missing packages with
/// `apt-get` when this process is root on a Debian-like machine, else fails in one line naming
/// every missing package at once. Package scripts do not start services (`policy-rc.d` 101):
/// the harness starts what it needs itself, by pid.
pub fn ensure_packages(needed: &[(&str, &str)]) -> Result<()> {
    if missing_of(needed).is_empty() {
        return Ok(());
    }
    // One apt-get at a time among the harness's own runs (parallel tests, `harness images` beside
    // a kind start): apt's own lock fails the second one instead of waiting. Checked again once
    // held: the other one may just have installed the same packages.
    let _apt =
        crate::sys::lock::exclusive(&std::env::temp_dir().join("k8s-ops-harness-locks/apt.lock"))?;
    let missing = missing_of(needed);
    if missing.is_empty() {
        return Ok(());
    }
    install(&missing)
}

/// The Debian packages of `needed` whose command is not installed, each once.
fn missing_of<'a>(needed: &[(&str, &'a str)]) -> Vec<&'a str> {
    let mut missing: Vec<&str> = needed
        .iter()
        .filter(|(command, _)| crate::sys::path::which(command).is_none())
        .map(|(_, package)| *package)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    missing
}

fn install(missing: &[&str]) -> Result<()> {
    let list = missing.join(" ");
    if !nix::unistd::geteuid().is_root() || crate::sys::path::on_path("apt-get").is_none() {
        bail!("missing Debian packages {list}: install them (`sudo apt-get install -y {list}`)");
    }
    eprintln!("harness: installing {list} from Debian's packages");
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let timeout = std::time::Duration::from_secs(600);
    let result = run(
        "apt-get update",
        duct::cmd!("apt-get", "update", "-qq"),
        timeout,
    )
    .and_then(|_| {
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(missing);
        run(
            &format!("apt-get install {list}"),
            duct::cmd("apt-get", args).env("DEBIAN_FRONTEND", "noninteractive"),
            timeout,
        )
    });
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    result.map(drop)
}
