//! The environment's own contract: it starts, it is torn down by pid leaving nothing bound, and
//! bad conditions (a taken port) fail at once with one line naming the fix and nothing started.

use std::net::TcpListener;
use std::path::Path;

use std::time::Duration;

use harness::provider::ProviderOptions;
use harness::provider::local;

fn state_dir(name: &str) -> std::path::PathBuf {
    harness::repo_root()
        .join("target")
        .join("harness")
        .join(name)
}

#[test]
fn teardown_stops_every_process_and_frees_every_port() {
    let (env, report) =
        local::start(&ProviderOptions::new(state_dir("lifecycle"))).expect("environment starts");
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
            !harness::sys::exec::alive(pid),
            "{name} (pid {pid}) still running after teardown"
        );
    }
    for port in report.ports.clone() {
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
    let (env, _) = local::start(&ProviderOptions::new(&dir)).expect("environment starts");
    let processes = env.processes();
    let kubeconfig = std::fs::read(dir.join("kubeconfig")).unwrap();
    let err = match local::start(&ProviderOptions::new(&dir)) {
        Ok(_) => panic!("a second environment started in {}", dir.display()),
        Err(e) => e,
    };
    assert!(
        matches!(
            harness::error::kind_of(&err),
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
            harness::sys::exec::alive(*pid),
            "{name} (pid {pid}) was stopped"
        );
    }
    assert_eq!(std::fs::read(dir.join("kubeconfig")).unwrap(), kubeconfig);
    drop(env);
    let (again, _) =
        local::start(&ProviderOptions::new(&dir)).expect("free once the first is gone");
    drop(again);
}

#[test]
fn a_taken_port_fails_fast_naming_the_port_and_the_fix() {
    let blocker = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = blocker.local_addr().unwrap().port();
    let dir = state_dir("taken-port");
    let options = ProviderOptions::new(&dir).port_base(port);
    let err = match local::start(&options) {
        Ok(_) => panic!("started although 127.0.0.1:{port} is taken"),
        Err(e) => e,
    };
    assert!(
        matches!(harness::error::kind_of(&err), Some(harness::Error::PortTaken { port: p, .. }) if *p == port),
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
    let err = match local::start(&options) {
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
        harness::sys::process::recorded_pids(&dir)
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
    let stopped = harness::sys::process::reap_stale(&dir);
    assert_eq!(stopped.len(), 2 * 9, "{stopped:?}");
    assert_eq!(alive(), 0, "processes outlived `harness down`");
}
