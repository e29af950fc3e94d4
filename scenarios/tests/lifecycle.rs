//! The environment's own contract: it starts, it is torn down by pid leaving nothing bound, and
//! bad conditions (a taken port) fail at once with one line naming the fix and nothing started.

use std::net::TcpListener;
use std::path::Path;

use std::time::Duration;

use harness::provider::local;
use harness::provider::{ProviderKind, ProviderOptions};

fn state_dir(name: &str) -> std::path::PathBuf {
    harness::repo_root()
        .join("target")
        .join("harness")
        .join(name)
}

#[test]
fn teardown_stops_every_process_and_frees_every_port() {
    let len = local::PORTS_PER_ENV;
    let base = harness::processes::free_port_base(25000, len).unwrap();
    let env = ProviderKind::Local
        .start(&ProviderOptions::new(state_dir("lifecycle")).port_base(base))
        .expect("environment starts");
    let processes = env.processes();
    // Per cluster: etcd, apiserver, controller-manager, scheduler, kwok, 4 Flux controllers (the git
    // server is a thread of this process, its port checked below).
    assert_eq!(
        processes.len(),
        2 * 9,
        "unexpected process set: {processes:?}"
    );
    env.health().expect("every process is running");
    drop(env);
    for (name, pid) in processes {
        assert!(
            !harness::processes::alive(pid),
            "{name} (pid {pid}) still running after teardown"
        );
    }
    for port in base..base + len {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} still bound after teardown"
        );
    }
}

/// One owner per state directory: a second start on it (another test binary, a second `harness
/// up`) is refused in one line naming this process, before it stops or clears anything there.
#[test]
fn a_second_start_on_an_owned_state_directory_is_refused_and_touches_nothing() {
    let dir = state_dir("owned");
    let env = ProviderKind::Local
        .start(&ProviderOptions::new(&dir))
        .expect("environment starts");
    let processes = env.processes();
    let kubeconfig = std::fs::read(dir.join("kubeconfig")).unwrap();
    let err = match ProviderKind::Local.start(&ProviderOptions::new(&dir)) {
        Ok(_) => panic!("a second environment started in {}", dir.display()),
        Err(e) => e,
    };
    assert!(
        matches!(
            harness::kind_of(&err),
            Some(harness::Error::StateDirOwned { .. })
        ),
        "{err:#}"
    );
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!("is in use by pid {}", std::process::id())),
        "{text}"
    );
    env.health().expect("every process still running");
    for (name, pid) in &processes {
        assert!(
            harness::processes::alive(*pid),
            "{name} (pid {pid}) was stopped"
        );
    }
    assert_eq!(std::fs::read(dir.join("kubeconfig")).unwrap(), kubeconfig);
    drop(env);
    let again = ProviderKind::Local
        .start(&ProviderOptions::new(&dir))
        .expect("free once the first is gone");
    drop(again);
}

#[test]
fn a_taken_port_fails_fast_naming_the_port_and_the_fix() {
    let blocker = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = blocker.local_addr().unwrap().port();
    let dir = state_dir("taken-port");
    let options = ProviderOptions::new(&dir).port_base(port);
    let err = match ProviderKind::Local.start(&options) {
        Ok(_) => panic!("started although 127.0.0.1:{port} is taken"),
        Err(e) => e,
    };
    assert!(
        matches!(harness::kind_of(&err), Some(harness::Error::PortTaken { port: p, .. }) if *p == port),
        "{err:#}"
    );
    let err = format!("{err:#}");
    assert!(
        err.contains("HARNESS_PORT_BASE"),
        "the error names no fix: {err}"
    );
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(
        !Path::new(&dir.join("pids")).exists()
            || std::fs::read_dir(dir.join("pids"))
                .unwrap()
                .next()
                .is_none(),
        "something was started"
    );
}

/// `retain`: a start that fails (here: fixtures not Ready within 1 s) leaves the environment up,
/// says how to reach it, and the clusters answer there; what `harness down` does then stops every
/// process it left.
#[test]
fn a_failed_start_with_retain_stays_up_until_harness_down() {
    let dir = state_dir("retain");
    let options = ProviderOptions::new(&dir)
        .ready_timeout(Duration::from_secs(1))
        .retain(true);
    let err = match ProviderKind::Local.start(&options) {
        Ok(_) => panic!("the fixtures were Ready within 1 s: this test needs a failing start"),
        Err(e) => format!("{e:#}"),
    };
    let kubeconfig = dir.join("kubeconfig");
    assert!(
        err.contains(&format!(
            "kept up for inspection (HARNESS_RETAIN=1): export KUBECONFIG={}, remove it with `HARNESS_STATE_DIR={} cargo run -p harness -- down`",
            kubeconfig.display(),
            dir.display()
        )),
        "{err}"
    );
    let alive = || {
        harness::processes::recorded_pids(&dir)
            .into_iter()
            .filter(|(_, _, alive)| *alive)
            .count()
    };
    // The fixtures' git server is a thread of this process: kept while it lives, in no pid file.
    assert_eq!(alive(), 2 * 9, "not every process was kept up");
    let toolchain = harness::toolchain::Toolchain::from_env().unwrap();
    for cluster in ["infra", "apps"] {
        let out = duct::cmd!(
            toolchain.binary(harness::toolchain::Tool::Kubernetes, "kubectl"),
            "--kubeconfig",
            &kubeconfig,
            "--context",
            cluster,
            "get",
            "namespace",
            "flux-system"
        )
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap();
        assert!(
            out.status.success(),
            "the retained {cluster} does not answer: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let stopped = harness::processes::reap_stale(&dir);
    assert_eq!(stopped.len(), 2 * 9, "{stopped:?}");
    assert_eq!(alive(), 0, "processes outlived `harness down`");
}

/// A scenario binary that dies mid-test leaves nothing behind: a panicking scenario (the binary
/// then exits with the failure, its environment stopped at exit), and one aborted (no exit code
/// path runs, as after the OOM killer: only the reaper answers). Within 15 s no recorded process,
/// no port of its block and no reaper remain. With `HARNESS_PROVIDER=kind` (.ci/run's kind stage),
/// within the same 15 s no kind cluster or node container of it remains either, nor a Docker
/// engine it started (the reaper deletes both clusters at once).
#[rstest::rstest]
#[case::panic("panic")]
#[case::abort("abort")]
fn a_scenario_binary_that_dies_mid_test_leaves_nothing(#[case] how: &str) {
    let dir = state_dir(&format!("dies-{how}"));
    let len = local::PORTS_PER_ENV;
    // A block of its own (released here, reserved again by the child).
    let from = if how == "panic" { 26000 } else { 26000 + len };
    let base = harness::processes::free_port_base(from, len).unwrap();
    let out = duct::cmd!(
        std::env::current_exe().unwrap(),
        "--exact",
        "dies_mid_scenario_on_purpose",
        "--include-ignored",
        "--nocapture"
    )
    .env("LIFECYCLE_DIE", how)
    .env("HARNESS_STATE_DIR", &dir)
    .env("HARNESS_PORT_BASE", base.to_string())
    .env_remove("HARNESS_RETAIN")
    .stderr_to_stdout()
    .stdout_capture()
    .unchecked()
    .run()
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the scenario did not die:\n{said}");
    assert!(
        said.contains("dying mid-scenario"),
        "it died elsewhere:\n{said}"
    );
    // What ran, as the child saw it just before it died (a clean exit removes the pid files).
    let recorded: Vec<(String, u32, bool)> = said
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("recorded ")?.split(' ');
            Some((words.next()?.to_string(), words.next()?.parse().ok()?, true))
        })
        .collect();
    let kind = harness::provider::ProviderKind::from_env().unwrap()
        == harness::provider::ProviderKind::Kind;
    // Local: the control planes and Flux of both clusters. Kind: at least the clusters' record.
    assert!(
        recorded.len() >= 2 * 9 || kind && said.contains("kind clusters: infra apps"),
        "{recorded:?}\n{said}"
    );
    let bound = Duration::from_secs(15);
    let left = harness::processes::left_after(&dir, &recorded, base..base + len, bound);
    let log = std::fs::read_to_string(dir.join("reaper.log")).unwrap_or_default();
    assert_eq!(
        left,
        (vec![], vec![]),
        "{bound:?} after it died; reaper.log: {log}\n{said}"
    );
    if kind {
        let kind_left = harness::processes::kind_left(&dir);
        assert!(kind_left.is_empty(), "{kind_left:?}; reaper.log: {log}");
    }
}

/// The body of `a_scenario_binary_that_dies_mid_test_leaves_nothing`, run by it in a child process:
/// starts the scenario environment, then dies as `LIFECYCLE_DIE` says.
#[test]
#[ignore = "dies on purpose: run in a child process by a_scenario_binary_that_dies_mid_test_leaves_nothing"]
fn dies_mid_scenario_on_purpose() {
    let env = scenarios::env();
    env.health().expect("every process is running");
    for (name, pid, _) in harness::processes::recorded_pids(&env.state_dir) {
        eprintln!("recorded {name} {pid}");
    }
    if let Ok(clusters) = std::fs::read_to_string(env.state_dir.join("kind-clusters")) {
        eprintln!(
            "kind clusters: {}",
            clusters.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    eprintln!("dying mid-scenario ({:?})", std::env::var("LIFECYCLE_DIE"));
    if std::env::var("LIFECYCLE_DIE").as_deref() == Ok("abort") {
        std::process::abort();
    }
    panic!("dying mid-scenario, on purpose");
}
