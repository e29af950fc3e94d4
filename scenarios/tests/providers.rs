//! Provider selection and the kind provider's inputs, hermetic on any machine: Docker stand-ins,
//! never the host's engine. This binary never starts the shared environment (`scenarios::env()`)
//! and never creates a cluster.
//!
//! - `kind-configs/*.yaml` go through the real kind v0.31.0 binary (from the toolchain). kind decodes
//!   the config strictly (unknown fields, apiVersion, kind) before it touches Docker, but runs its
//!   semantic validation (`Config.Validate()`: name, ports, subnets, roles) only after `docker info`
//!   and `docker ps` answered (pkg/cluster/internal/create/create.go). So the configs also run
//!   against an offline `docker` stand-in (first on the child's PATH) that answers those two and
//!   refuses everything else: kind then validates, resolves the node image and stops at the Docker
//!   network. The stand-in records every call, which shows what kind asked Docker for.
//! - `HARNESS_PROVIDER` is read through `ProviderKind::from_env` in a child process (env vars are
//!   process-global and these tests run in parallel threads) or through the pure `ProviderKind::parse`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use harness::provider::ProviderKind;
use harness::toolchain::{Tool, Toolchain};
use rstest::rstest;

const CLUSTERS: [&str; 2] = ["infra", "apps"];

/// kind v0.31.0's default node image (sigs.k8s.io/kind/pkg/apis/config/defaults/image.go); the
/// test `the_pinned_node_image_is_kinds_own_default` asks the kind binary itself.
const KIND_DEFAULT_IMAGE: &str =
    "kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f";

/// The Docker stand-in: answers `-v`, `info`, `ps` (no nodes) and `inspect` (image present), refuses
/// everything else (pull, network, run, …), and appends each call to `calls.log` next to itself.
const DOCKER_STANDIN: &str = r#"#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls.log"
case "$1" in
  -v) echo "Docker version 0.0.0-offline-stand-in"; exit 0;;
  info) echo '{"CgroupDriver":"systemd","CgroupVersion":"2","MemoryLimit":true,"PidsLimit":true,"CPUShares":true,"SecurityOptions":[]}'; exit 0;;
  ps) exit 0;;
  inspect) exit 0;;
  *) echo "offline docker stand-in: refusing '$1'" >&2; exit 1;;
esac
"#;

fn repo_config(cluster: &str) -> PathBuf {
    harness::provider::kind_config_path(cluster)
}

fn kind_binary() -> &'static Path {
    static KIND: OnceLock<PathBuf> = OnceLock::new();
    KIND.get_or_init(|| {
        let toolchain = Toolchain::from_env().expect("toolchain cache");
        toolchain
            .ensure(&[Tool::Kind])
            .expect("building kind v0.31.0 from its Go module");
        toolchain.binary(Tool::Kind, "kind")
    })
}

/// A Docker CLI whose engine is down, as on this project's CI machines: answers `-v`, fails the
/// rest with the daemon's message. Used instead of the host's docker, so that no test here depends
/// on (or could create clusters on) a real engine.
const DOCKER_NO_ENGINE: &str = r#"#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls.log"
case "$1" in
  -v) echo "Docker version 0.0.0-no-engine-stand-in"; exit 0;;
  *) echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1;;
esac
"#;

/// A directory holding `docker` = `script`, to put first on a child's PATH.
fn docker_dir(scratch: &Path, script: &str) -> PathBuf {
    let bin = scratch.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let docker = bin.join("docker");
    fs::write(&docker, script).unwrap();
    fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bin
}

/// `bin` first on the current PATH.
fn path_with(bin: &Path) -> std::ffi::OsString {
    let mut dirs = vec![bin.to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

struct KindRun {
    success: bool,
    stderr: String,
    /// Calls the Docker stand-in received (empty without a stand-in, or when kind never called it).
    docker_calls: Vec<String>,
}

/// `kind create cluster --config <config>` in a scratch directory, with its kubeconfig there too
/// (kind cleans up a failed create in the kubeconfig it was given). `docker` is the stand-in
/// script first on PATH: [`DOCKER_STANDIN`] (offline engine) or [`DOCKER_NO_ENGINE`].
fn kind_create(config: &Path, docker: &str) -> KindRun {
    let scratch = tempfile::tempdir().unwrap();
    let path = path_with(&docker_dir(scratch.path(), docker));
    let kubeconfig = scratch.path().join("kubeconfig");
    let out = Command::new(kind_binary())
        .arg("create")
        .arg("cluster")
        .arg("--config")
        .arg(config)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("PATH", path)
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KIND_CLUSTER_NAME")
        .env_remove("KIND_EXPERIMENTAL_PROVIDER")
        .env_remove("KIND_EXPERIMENTAL_DOCKER_NETWORK")
        .current_dir(scratch.path())
        .output()
        .unwrap();
    let docker_calls = fs::read_to_string(scratch.path().join("bin").join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    KindRun {
        success: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        docker_calls,
    }
}

/// Calls to the stand-in that ask the engine something: all but `docker -v`, with which kind's
/// provider auto-detection only looks at the CLI, before it reads the config.
fn engine_calls(run: &KindRun) -> Vec<&String> {
    run.docker_calls.iter().filter(|c| *c != "-v").collect()
}

fn yaml(path: &Path) -> serde_norway::Value {
    serde_norway::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// A copy of `kind-configs/infra.yaml` changed by `edit`, in `dir`.
fn broken_copy(dir: &Path, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
    let original = fs::read_to_string(repo_config("infra")).unwrap();
    let changed = edit(original.clone());
    assert_ne!(changed, original, "the edit for {name} changed nothing");
    let path = dir.join(name);
    fs::write(&path, changed).unwrap();
    path
}

#[test]
fn kind_configs_name_the_clusters_pin_the_image_and_keep_the_api_on_loopback() {
    let mut ports = Vec::new();
    for cluster in CLUSTERS {
        let path = repo_config(cluster);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# "),
            "{} needs a comment header",
            path.display()
        );
        let c = yaml(&path);
        assert_eq!(c["kind"].as_str(), Some("Cluster"));
        assert_eq!(c["apiVersion"].as_str(), Some("kind.x-k8s.io/v1alpha4"));
        assert_eq!(c["name"].as_str(), Some(cluster));
        assert_eq!(
            c["networking"]["apiServerAddress"].as_str(),
            Some("127.0.0.1")
        );
        ports.push(c["networking"]["apiServerPort"].as_u64().unwrap());
        let nodes = c["nodes"].as_sequence().unwrap();
        assert!(!nodes.is_empty());
        for node in nodes {
            assert_eq!(node["image"].as_str(), Some(KIND_DEFAULT_IMAGE));
        }
    }
    assert_ne!(ports[0], ports[1], "the API servers need distinct ports");
}

#[test]
fn kind_decodes_and_validates_the_configs_up_to_the_docker_network() {
    for cluster in CLUSTERS {
        let run = kind_create(&repo_config(cluster), DOCKER_STANDIN);
        assert!(!run.success, "{}", run.stderr);
        // Decoded, validated, image resolved: kind got as far as the network, which the stand-in refuses.
        assert!(
            run.stderr.contains("failed to ensure docker network"),
            "{cluster}: kind did not get past config validation:\n{}",
            run.stderr
        );
        assert!(
            run.docker_calls.contains(&format!(
                "ps -a --filter label=io.x-k8s.kind.cluster={cluster} --format {{{{.Names}}}}"
            )),
            "{cluster}: kind did not use the config's name: {:?}",
            run.docker_calls
        );
        assert!(
            run.docker_calls
                .contains(&format!("inspect --type=image {KIND_DEFAULT_IMAGE}")),
            "{cluster}: kind resolved another node image: {:?}",
            run.docker_calls
        );
        assert!(
            !run.docker_calls.iter().any(|c| c.starts_with("run")),
            "{:?}",
            run.docker_calls
        );
    }
}

#[test]
fn the_pinned_node_image_is_kinds_own_default() {
    let dir = tempfile::tempdir().unwrap();
    let no_image = broken_copy(dir.path(), "no-image.yaml", |t| {
        t.lines()
            .filter(|l| !l.trim_start().starts_with("image:"))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    });
    let run = kind_create(&no_image, DOCKER_STANDIN);
    let inspected: Vec<&String> = run
        .docker_calls
        .iter()
        .filter(|c| c.starts_with("inspect --type=image "))
        .collect();
    assert_eq!(
        inspected,
        vec![&format!("inspect --type=image {KIND_DEFAULT_IMAGE}")],
        "{}",
        run.stderr
    );
}

#[test]
fn kind_rejects_an_unknown_field_and_a_wrong_api_version_before_touching_docker() {
    let dir = tempfile::tempdir().unwrap();
    let unknown_field = broken_copy(dir.path(), "unknown-field.yaml", |t| {
        t.replace("name: infra\n", "name: infra\nnodeCount: 2\n")
    });
    let wrong_version = broken_copy(dir.path(), "wrong-version.yaml", |t| {
        t.replace("kind.x-k8s.io/v1alpha4", "kind.x-k8s.io/v1alpha3")
    });
    for docker in [DOCKER_STANDIN, DOCKER_NO_ENGINE] {
        let run = kind_create(&unknown_field, docker);
        assert!(!run.success);
        assert!(
            run.stderr.contains("unable to decode config")
                && run
                    .stderr
                    .contains("field nodeCount not found in type v1alpha4.Cluster"),
            "{}",
            run.stderr
        );
        assert!(engine_calls(&run).is_empty(), "{:?}", run.docker_calls);

        let run = kind_create(&wrong_version, docker);
        assert!(!run.success);
        assert!(
            run.stderr
                .contains("unknown apiVersion: kind.x-k8s.io/v1alpha3"),
            "{}",
            run.stderr
        );
        assert!(engine_calls(&run).is_empty(), "{:?}", run.docker_calls);
    }
}

#[test]
fn kind_validates_ports_only_once_docker_answers() {
    let dir = tempfile::tempdir().unwrap();
    let bad_port = broken_copy(dir.path(), "bad-port.yaml", |t| {
        t.replace("apiServerPort: 36441", "apiServerPort: 70000")
    });
    let run = kind_create(&bad_port, DOCKER_STANDIN);
    assert!(!run.success);
    assert!(
        run.stderr
            .contains("invalid apiServerPort: invalid port number: 70000"),
        "{}",
        run.stderr
    );
    assert!(
        !run.docker_calls.iter().any(|c| c.starts_with("inspect")),
        "kind went past validation: {:?}",
        run.docker_calls
    );
}

#[test]
fn without_a_docker_engine_kind_loads_the_config_then_stops_at_docker_info() {
    for cluster in CLUSTERS {
        let run = kind_create(&repo_config(cluster), DOCKER_NO_ENGINE);
        assert!(!run.success);
        assert!(
            run.stderr.contains("failed to get docker info"),
            "{cluster}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("decode"), "{}", run.stderr);
    }
}

#[test]
fn provider_names_parse_and_an_unknown_one_names_the_fix() {
    assert_eq!(ProviderKind::parse("").unwrap(), ProviderKind::Local);
    assert_eq!(ProviderKind::parse("local").unwrap(), ProviderKind::Local);
    assert_eq!(ProviderKind::parse("kind").unwrap(), ProviderKind::Kind);
    assert_eq!(ProviderKind::parse("k3s").unwrap(), ProviderKind::K3s);
    assert_eq!(
        ProviderKind::parse("existing").unwrap(),
        ProviderKind::Existing
    );
    let e = format!("{:#}", ProviderKind::parse("bogus").unwrap_err());
    assert_eq!(
        e,
        "HARNESS_PROVIDER=bogus is unknown: use local, kind, k3s or existing"
    );
}

/// Where `child_start_provider_from_env` writes its outcome.
const CHILD_OUT: &str = "PROVIDERS_TEST_CHILD_OUT";

/// Not a test of its own: the body of the child process the provider-selection tests start
/// (`--ignored --exact`), because `HARNESS_PROVIDER` is process-global. Runs
/// `ProviderKind::from_env()?.start(<state>)` and writes the outcome to `$PROVIDERS_TEST_CHILD_OUT`.
#[test]
#[ignore = "helper process of the provider-selection tests, started by them with --ignored"]
fn child_start_provider_from_env() {
    let out = std::env::var_os(CHILD_OUT)
        .expect("started by start_in_child, which sets PROVIDERS_TEST_CHILD_OUT");
    let out = PathBuf::from(out);
    let state = out.with_file_name("state");
    let result = ProviderKind::from_env()
        .and_then(|p| p.start(&harness::provider::ProviderOptions::new(&state)));
    let text = match result {
        Ok(env) => {
            env.stop();
            "started".to_string()
        }
        Err(e) => format!("error: {e:#}"),
    };
    fs::write(out, text).unwrap();
}

struct ChildOutcome {
    text: String,
    scratch: tempfile::TempDir,
}

/// This test binary again, running only `child_start_provider_from_env` with `env` set; killed
/// (and the test failed) if it has not finished within 5 minutes.
fn start_in_child(env: &[(&str, &std::ffi::OsStr)]) -> ChildOutcome {
    const BOUND: Duration = Duration::from_secs(300);
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("outcome");
    let log = scratch.path().join("child.log");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child_start_provider_from_env",
        "--exact",
        "--ignored",
        "--test-threads=1",
    ])
    .env(CHILD_OUT, &out)
    .stdout(fs::File::create(&log).unwrap())
    .stderr(fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the child did not finish within {BOUND:?} (killed): {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "child test failed ({status}): {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let text = fs::read_to_string(&out).expect("the child wrote no outcome");
    ChildOutcome { text, scratch }
}

/// No process anywhere still refers to `dir` (command line or working directory).
fn no_process_refers_to(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cwd = fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        assert!(
            !cmdline.contains(&needle) && !cwd.starts_with(dir),
            "process {} left behind: {cmdline}",
            entry.file_name().to_string_lossy()
        );
    }
}

/// How a case takes the Docker engine away: kind talks to it through the `docker` CLI (a stand-in
/// whose engine is down goes first on PATH), k3s through the Docker API at `DOCKER_HOST` (pointed
/// at a socket that does not exist, or a closed loopback port). Neither touches a real engine.
#[derive(Debug, Clone, Copy)]
enum NoEngine {
    /// The stand-in CLI whose engine is down, with `DOCKER_HOST` at a missing socket (so the
    /// harness, even as root, does not start an engine of its own).
    CliAtMissingSocket,
    MissingSocket,
    ClosedPort,
}

#[rstest]
#[case::kind(
    "kind",
    NoEngine::CliAtMissingSocket,
    "HARNESS_PROVIDER=kind needs a running Docker engine, but none answers at DOCKER_HOST=unix:///",
    "): start that engine, or unset DOCKER_HOST to let the harness (as root) start its own on /var/run/docker.sock"
)]
#[case::k3s_missing_socket(
    "k3s",
    NoEngine::MissingSocket,
    "HARNESS_PROVIDER=k3s needs a running Docker engine, but none answered at unix:///",
    "): start a Docker engine (e.g. `sudo systemctl start docker`), point DOCKER_HOST at one, or use HARNESS_PROVIDER=local"
)]
#[case::k3s_closed_port(
    "k3s",
    NoEngine::ClosedPort,
    "HARNESS_PROVIDER=k3s needs a running Docker engine, but none answered at tcp://127.0.0.1:9 (",
    "): start a Docker engine (e.g. `sudo systemctl start docker`), point DOCKER_HOST at one, or use HARNESS_PROVIDER=local"
)]
fn without_a_running_docker_engine_a_container_provider_fails_fast_in_one_line_and_creates_nothing(
    #[case] provider: &str,
    #[case] no_engine: NoEngine,
    #[case] starts: &str,
    #[case] ends: &str,
) {
    let scratch = tempfile::tempdir().unwrap();
    let socket = scratch.path().join("no-engine.sock");
    let path = path_with(&docker_dir(scratch.path(), DOCKER_NO_ENGINE));
    let docker_host = match no_engine {
        NoEngine::CliAtMissingSocket | NoEngine::MissingSocket => {
            format!("unix://{}", socket.display())
        }
        NoEngine::ClosedPort => "tcp://127.0.0.1:9".to_string(),
    };
    let mut env: Vec<(&str, &std::ffi::OsStr)> = vec![
        ("HARNESS_PROVIDER", provider.as_ref()),
        ("DOCKER_HOST", docker_host.as_ref()),
    ];
    let stand_in = matches!(no_engine, NoEngine::CliAtMissingSocket);
    if stand_in {
        env.push(("PATH", path.as_os_str()));
    }
    let child = start_in_child(&env);
    let e = child
        .text
        .strip_prefix("error: ")
        .unwrap_or_else(|| panic!("{provider} started without Docker: {}", child.text));
    assert!(!e.contains('\n'), "not one line: {e}");
    assert!(e.starts_with(starts), "{e}");
    assert!(e.ends_with(ends), "{e}");
    assert!(
        e.contains(docker_host.as_str()),
        "the error names DOCKER_HOST: {e}"
    );
    if stand_in {
        // Failing fast: the engine check is the first thing kind's start does with Docker.
        let calls = fs::read_to_string(scratch.path().join("bin").join("calls.log")).unwrap();
        assert_eq!(
            calls.lines().collect::<Vec<_>>(),
            ["info --format {{.ServerVersion}}"]
        );
    }
    assert!(
        !child.scratch.path().join("state").exists(),
        "the {provider} provider created its state dir before failing"
    );
    no_process_refers_to(child.scratch.path());
}

/// A PATH holding only `go` and `git` (links to the real ones): the prerequisites, nothing else.
fn path_with_go_and_git() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for tool in ["go", "git"] {
        let real = harness::processes::which(tool).unwrap_or_else(|| panic!("{tool} on PATH"));
        std::os::unix::fs::symlink(real, dir.path().join(tool)).unwrap();
    }
    dir
}

/// Without Go and git every provider fails in seconds, before any build, naming both with their fix.
#[rstest]
#[case::local("local")]
#[case::kind("kind")]
fn missing_prerequisites_fail_first_all_at_once(#[case] provider: &str) {
    let empty_path = tempfile::tempdir().unwrap();
    let child = start_in_child(&[
        ("HARNESS_PROVIDER", provider.as_ref()),
        ("PATH", empty_path.path().as_os_str()),
    ]);
    assert_eq!(
        child.text,
        "error: missing prerequisites: go (install Go >= 1.25: https://go.dev/doc/install); git (apt-get install git)"
    );
    assert!(!child.scratch.path().join("state").exists());
    no_process_refers_to(child.scratch.path());
}

#[test]
fn kind_without_the_docker_cli_fails_fast_in_one_line_and_creates_nothing() {
    let go_and_git = path_with_go_and_git();
    let child = start_in_child(&[
        ("HARNESS_PROVIDER", "kind".as_ref()),
        ("PATH", go_and_git.path().as_os_str()),
    ]);
    let e = child
        .text
        .strip_prefix("error: ")
        .unwrap_or_else(|| panic!("kind started without docker: {}", child.text));
    assert_eq!(
        e,
        "HARNESS_PROVIDER=kind needs a Docker engine, but `docker` is not on PATH: install Docker Engine (https://docs.docker.com/engine/install/) or use HARNESS_PROVIDER=local"
    );
    assert!(!child.scratch.path().join("state").exists());
    no_process_refers_to(child.scratch.path());
}

#[test]
fn an_unknown_provider_from_the_environment_fails_in_one_line() {
    let child = start_in_child(&[("HARNESS_PROVIDER", "bogus".as_ref())]);
    assert_eq!(
        child.text,
        "error: HARNESS_PROVIDER=bogus is unknown: use local, kind, k3s or existing"
    );
}

/// A Docker CLI whose engine answers but can neither build (when `STANDIN_BUILD_FAILS` is set) nor
/// start a privileged container (runc's message on hosts whose root lacks capabilities).
const DOCKER_NO_PRIVILEGES: &str = r#"#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls.log"
case "$1" in
  info) echo "20.10.24-stand-in"; exit 0;;
  image) echo "Error: No such image: $4" >&2; exit 1;;
  build)
    if [ -n "${STANDIN_BUILD_FAILS:-}" ]; then echo "Step 1/5 : FROM scratch"; echo "COPY failed: stand-in refuses to build"; exit 1; fi
    exit 0;;
  run) echo "docker: Error response from daemon: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: unable to apply caps: operation not permitted: unknown." >&2; exit 125;;
  *) echo "stand-in: refusing '$1'" >&2; exit 1;;
esac
"#;

/// An engine someone else runs (the harness never restarts it) that fails the image build, or
/// cannot start privileged containers: kind fails in one line naming the fix, before any cluster
/// or state directory exists, and asks Docker for nothing more than it needed to find out.
#[rstest]
#[case::image_build_fails(
    true,
    "building image k8s-ops.local/fixture-app:1 failed (",
    "; last line: COPY failed: stand-in refuses to build); full output in ",
    &["info", "image", "build"]
)]
#[case::no_privileged_containers(
    false,
    "the Docker engine cannot start privileged containers, which kind nodes are (docker: Error response from daemon: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: unable to apply caps: operation not permitted: unknown.)",
    ": run the harness where Docker may grant them (rootful Docker), or let it start its own engine (stop this one)",
    &["info", "image", "build", "run"]
)]
fn a_kind_engine_that_cannot_build_or_run_privileged_fails_in_one_line(
    #[case] build_fails: bool,
    #[case] starts: &str,
    #[case] contains: &str,
    #[case] calls: &[&str],
) {
    let scratch = tempfile::tempdir().unwrap();
    let path = path_with(&docker_dir(scratch.path(), DOCKER_NO_PRIVILEGES));
    let mut env: Vec<(&str, &std::ffi::OsStr)> = vec![
        ("HARNESS_PROVIDER", "kind".as_ref()),
        ("PATH", path.as_os_str()),
    ];
    if build_fails {
        env.push(("STANDIN_BUILD_FAILS", "1".as_ref()));
    }
    let child = start_in_child(&env);
    let e = child
        .text
        .strip_prefix("error: ")
        .unwrap_or_else(|| panic!("kind started on a stand-in engine: {}", child.text));
    assert!(!e.contains('\n'), "not one line: {e}");
    assert!(e.starts_with(starts), "{e}");
    assert!(e.contains(contains), "{e}");
    let made: Vec<String> = fs::read_to_string(scratch.path().join("bin").join("calls.log"))
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(made, calls, "Docker calls");
    assert!(
        !child.scratch.path().join("state").exists(),
        "the kind provider created its state dir before failing"
    );
    no_process_refers_to(child.scratch.path());
}
