//! `harness down` and `harness status` of a state directory, and the pid of the `harness up`
//! serving it.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use harness::processes as process;

/// The pid of the `harness up` serving `state_dir`, while it runs.
pub fn supervisor_pid(state_dir: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(state_dir.join("supervisor.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    harness::processes::alive(pid).then_some(pid)
}

pub fn down(state_dir: &Path) -> Result<()> {
    if let Some(pid) = supervisor_pid(state_dir) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        process::wait_for(
            "the harness to stop its environment",
            Duration::from_secs(90),
            || Ok(supervisor_pid(state_dir).is_none().then_some(())),
        )?;
        println!("harness: stopped the environment of harness pid {pid}");
    }
    // Refused while another process (a scenario binary, a second `up`) still owns the directory.
    let _owner = harness::provider::Owner::claim(state_dir)?;
    stop_leftovers(state_dir)?;
    let _ = fs::remove_file(state_dir.join("supervisor.pid"));
    println!("harness: nothing of {} is running", state_dir.display());
    Ok(())
}

/// Deletes what an environment of `state_dir` left behind (this process owns the directory).
pub fn stop_leftovers(state_dir: &Path) -> Result<()> {
    for removed in harness::provider::reap_leftovers(state_dir)? {
        println!("harness: {removed}");
    }
    let _ = fs::remove_file(state_dir.join("retained"));
    Ok(())
}

pub fn status(state_dir: &Path) -> Result<()> {
    match supervisor_pid(state_dir) {
        Some(pid) => println!("up: harness pid {pid}, state {}", state_dir.display()),
        None => println!("down: no harness running for {}", state_dir.display()),
    }
    let mut rows = process::recorded_pids(state_dir);
    rows.sort();
    for (name, pid, alive) in rows {
        println!(
            "  {:<40} pid {pid:<8} {}",
            name,
            if alive { "running" } else { "gone" }
        );
    }
    let kubeconfig = state_dir.join("kubeconfig");
    if kubeconfig.exists() {
        println!("export KUBECONFIG={}", kubeconfig.display());
    }
    Ok(())
}
