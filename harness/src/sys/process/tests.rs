//! Tests of `process`.

use super::*;
use crate::sys::poll::wait_for;

#[test]
fn cri_lines_have_rfc3339_nanos_stream_and_full_tag() {
    let at: jiff::Timestamp = "2026-11-27T19:00:00.5Z".parse().unwrap();
    assert_eq!(
        cri_line(at, "stderr", "{\"level\":\"info\"}"),
        "2026-11-27T19:00:00.500000000Z stderr F {\"level\":\"info\"}"
    );
}

#[test]
fn spawned_processes_are_logged_and_stopped_by_pid() {
    let dir = tempfile::tempdir().unwrap();
    let logs = LogFiles {
        raw: dir.path().join("raw.log"),
        cri: Some(dir.path().join("cri.log")),
    };
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo hello; echo oops >&2; exec sleep 60"]);
    let mut p = ManagedProcess::spawn("sleeper", cmd, &logs, dir.path()).unwrap();
    let pid = p.pid();
    wait_for("log lines", Duration::from_secs(5), || {
        Ok(tail(&logs.raw, 5).contains("oops").then_some(()))
    })
    .unwrap();
    assert!(
        belongs_to(pid, dir.path()),
        "the process carries no state marker"
    );
    p.stop(Duration::from_secs(5));
    assert!(p.exited().is_some());
    assert!(!dir.path().join("pids/sleeper.pid").exists());
    let cri = fs::read_to_string(logs.cri.unwrap()).unwrap();
    assert!(cri.lines().any(|l| l.ends_with(" stdout F hello")), "{cri}");
}

#[test]
fn stale_processes_of_this_state_dir_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let logs = LogFiles {
        raw: dir.path().join("raw.log"),
        cri: None,
    };
    let mut cmd = Command::new("sleep");
    cmd.arg("60");
    let p = ManagedProcess::spawn("orphan", cmd, &logs, dir.path()).unwrap();
    let pid = p.pid();
    std::mem::forget(p); // as if the harness had crashed
    assert_eq!(reap_stale(dir.path()), vec!["orphan".to_string()]);
    wait_for("orphan gone", Duration::from_secs(5), || {
        Ok((!crate::sys::exec::alive(pid)).then_some(()))
    })
    .unwrap();
}
