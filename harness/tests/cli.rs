//! `harness up` refuses what it cannot serve in one line, before building or starting anything:
//! the real binary, run as an operator would.

use std::path::Path;
use std::process::Command;

use rstest::rstest;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// A GitOps checkout holding both known layouts' entry paths for `infra`, and `apps` in neither.
fn two_layouts() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for d in ["clusters/infra", "kubernetes/clusters/infra", "deploy/apps"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    dir
}

#[rstest]
#[case::wrong_cluster_path(
    &["--gitops", "{namespaced}", "--cluster-path", "apps=kubernetes/clusters/apps"],
    "harness: error: --cluster-path apps=kubernetes/clusters/apps: not a directory of {namespaced} — candidates: clusters/apps"
)]
#[case::unknown_cluster(
    &["--gitops", "{namespaced}", "--cluster-path", "prod=clusters/apps"],
    "harness: error: --cluster-path prod=…: no cluster prod — the clusters are infra, apps"
)]
#[case::not_cluster_eq_path(
    &["--cluster-path", "clusters/apps"],
    "`clusters/apps` is not CLUSTER=PATH, e.g. apps=kubernetes/clusters/apps"
)]
#[case::several_layouts(
    &["--gitops", "{two}", "--cluster-path", "apps=deploy/apps"],
    "harness: error: several entry paths for cluster infra in {two}: kubernetes/clusters/infra, clusters/infra — pick one with --cluster-path infra=kubernetes/clusters/infra"
)]
#[case::no_layout(
    &["--gitops", "{two}", "--cluster-path", "infra=clusters/infra"],
    "harness: error: no entry path for cluster apps in {two}: none of kubernetes/clusters/{cluster}, clusters/{cluster}, k8s/clusters/{cluster}, cluster/{cluster}, kubernetes/{cluster}/flux, kubernetes/flux/cluster exists — give it with --cluster-path apps=<dir>"
)]
#[case::missing_dir(
    &["--gitops", "/nonexistent/gitops"],
    "harness: error: --gitops /nonexistent/gitops: no such directory"
)]
fn up_refuses_what_it_cannot_serve_in_one_line(#[case] args: &[&str], #[case] says: &str) {
    let two = two_layouts();
    let two_dir = two.path().canonicalize().unwrap();
    let namespaced = repo_root()
        .join("fixtures/gitops-namespaced")
        .canonicalize()
        .unwrap();
    let fill = |s: &str| {
        s.replace("{namespaced}", &namespaced.display().to_string())
            .replace("{two}", &two_dir.display().to_string())
    };
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("state");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("up")
        .args(args.iter().map(|a| fill(a)))
        .env_remove("HARNESS_GITOPS_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "up accepted {args:?}: {stderr}");
    assert!(stderr.contains(&fill(says)), "{stderr}");
    if stderr.starts_with("harness: error:") {
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    }
    assert!(
        !state_dir.exists(),
        "the state dir was created: nothing may start"
    );
}
