//! Fast, cluster-free tests of the flux Taskfiles: the real `task` binary runs the repository's
//! Taskfiles with recording stand-ins for `flux` and `kubectl` first on PATH
//! (tests/data/standins/). They prove command construction, input rejection and `--list/--summary`
//! without a cluster; the proof on real Flux is in the cluster scenarios.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use harness::toolchain::{Tool, Toolchain};
use harness::{TaskOutput, TaskRunner};
use rstest::rstest;

/// Every public flux task (the story's list plus list-suspended).
const TASKS: &[&str] = &[
    "reconcile",
    "suspend",
    "resume",
    "logs",
    "events",
    "diff",
    "status",
    "check",
    "tree",
    "alerts",
    "trace",
    "suspend-all",
    "resume-all",
    "reconcile-source",
    "list-suspended",
];

fn data_dir() -> PathBuf {
    harness::repo_root().join("scenarios/tests/data")
}

fn task_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let tc = Toolchain::from_env().expect("toolchain");
        tc.ensure(&[Tool::Task])
            .expect("go-task binary (built once into the harness cache)");
        tc.binary(Tool::Task, "task")
    })
    .clone()
}

/// One sandbox: stand-ins first on PATH, a temp kubeconfig with contexts infra/apps, a log of every
/// flux/kubectl argv, and the stand-ins' cluster state (suspended / not-ready markers).
struct Sandbox {
    dir: tempfile::TempDir,
    runner: TaskRunner,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        let state = dir.path().join("state");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&state).unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        for tool in ["flux", "kubectl"] {
            let target = bin.join(tool);
            fs::copy(data_dir().join("standins").join(tool), &target).unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let kubeconfig = dir.path().join("kubeconfig");
        fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: infra\n  cluster: {server: https://127.0.0.1:1}\n\
             - name: apps\n  cluster: {server: https://127.0.0.1:2}\nusers:\n- name: u\n  user: {token: x}\n\
             contexts:\n- name: infra\n  context: {cluster: infra, user: u}\n- name: apps\n  context: {cluster: apps, user: u}\n\
             current-context: apps\n",
        )
        .unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let runner = TaskRunner::new(task_bin(), harness::repo_root())
            .timeout(Duration::from_secs(60))
            .env("PATH", path)
            .env("KUBECONFIG", &kubeconfig)
            .env("STANDIN_LOG", dir.path().join("calls.log"))
            .env("STANDIN_STATE", &state)
            // the script's tool-version cache, one per sandbox (its stand-ins are new binaries)
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            // the script's temporary files, to prove it removes them on every path
            .env("TMPDIR", dir.path().join("tmp"))
            .env("GITOPS_DIR", harness::repo_root().join("fixtures/gitops"));
        Sandbox { dir, runner }
    }

    fn env(mut self, k: &str, v: &str) -> Self {
        self.runner = self.runner.env(k, v);
        self
    }

    /// Marks an object in the stand-ins' state, e.g. `("apps", "HelmRelease", "business", "odoo", "notready")`.
    fn mark(&self, cluster: &str, kind: &str, ns: &str, name: &str, what: &str) {
        fs::write(
            self.dir
                .path()
                .join("state")
                .join(format!("{cluster}.{kind}.{ns}.{name}.{what}")),
            "",
        )
        .unwrap();
    }

    fn run(&self, args: &[&str]) -> TaskOutput {
        self.runner.run(args).expect("task ran")
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn marker(&self) -> PathBuf {
        self.dir.path().join("injected")
    }

    /// The script removed every temporary file it made (TMPDIR is the sandbox's).
    fn assert_no_temp_left(&self) {
        let left: Vec<_> = fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "temporary files left behind: {left:?}");
    }
}

/// Calls that change a cluster. (The suspend's `kubectl patch -f -` starts before the list it acts
/// on and reads its objects from stdin, logged after ` <<< `: handed none, it writes nothing.)
fn is_write(call: &str) -> bool {
    if call.ends_with(" <<< ") {
        return false;
    }
    let w: Vec<&str> = call.split_whitespace().collect();
    match w.first() {
        Some(&"flux") => matches!(w.get(1), Some(&"suspend" | &"resume" | &"reconcile")),
        Some(&"kubectl") => w.iter().any(|a| {
            matches!(
                *a,
                "annotate" | "patch" | "apply" | "delete" | "edit" | "label"
            )
        }),
        _ => false,
    }
}

/// Calls that legitimately need no cluster (tool versions, kubeconfig contexts).
fn is_local(call: &str) -> bool {
    call.ends_with("version --client") || call.starts_with("kubectl config get-contexts")
}

fn assert_every_call_has_context(out: &TaskOutput, calls: &[String]) {
    for call in calls.iter().filter(|c| !is_local(c)) {
        assert!(
            call.contains(" --context "),
            "call without --context: {call}\n{}",
            out.transcript()
        );
    }
}

/// `expected` fragments must each match a distinct call, in this order when `ordered`.
/// Whether `call` holds `want`, where each `…` in `want` stands for any text (a time, a user).
fn matches(call: &str, want: &str) -> bool {
    let mut rest = call;
    let mut parts = want.split('…');
    let Some(first) = parts.next() else {
        return true;
    };
    let Some(at) = rest.find(first) else {
        return false;
    };
    rest = &rest[at + first.len()..];
    for part in parts {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

fn assert_calls(out: &TaskOutput, calls: &[String], expected: &[String], ordered: bool) {
    let mut from = 0;
    for want in expected {
        let hit = if ordered {
            calls[from..]
                .iter()
                .position(|c| matches(c, want))
                .map(|i| i + from)
        } else {
            calls.iter().position(|c| matches(c, want))
        };
        let Some(i) = hit else {
            panic!(
                "expected call containing `{want}`{}\ncalls:\n{}\n{}",
                if ordered { " (in order)" } else { "" },
                calls.join("\n"),
                out.transcript()
            );
        };
        if ordered {
            from = i + 1;
        }
    }
}

/// The one-line contract: besides go-task's own "task: Failed to run task" trailer and our `→`
/// command echo, stderr holds exactly one line, starting with `error:`.
fn assert_one_line_error(out: &TaskOutput) -> String {
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| {
            !l.trim().is_empty()
                && !l.starts_with("task: Failed to run task")
                && !l.starts_with("→ ")
        })
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "want exactly one error line\n{}",
        out.transcript()
    );
    assert!(
        lines[0].starts_with("error: "),
        "error line must start with `error: `\n{}",
        out.transcript()
    );
    lines[0].to_string()
}

fn gitops() -> String {
    harness::repo_root()
        .join("fixtures/gitops")
        .display()
        .to_string()
}

#[rstest]
// Suspend (the story's criterion): Kustomization first, then the HelmRelease in its own namespace:
// one list (the cluster's first request, within the preflight's 5 s) and one merge patch of both, in
// that order (`<<<`: the objects kubectl reads from stdin), whose response is the read-back.
#[case::suspend_app(&["flux:suspend", "APP=odoo", "CLUSTER=apps"], &[
    "kubectl --context apps --request-timeout=5s get kustomizations.v1.kustomize.toolkit.fluxcd.io,helmreleases.v2.helm.toolkit.fluxcd.io -A --field-selector metadata.name=odoo -o jsonpath=",
    "kubectl --context apps patch --field-manager=flux --type=merge -p {\"metadata\":{\"annotations\":{\"k8s-ops.io/suspended-by\":\"…\",\"k8s-ops.io/suspended-at\":\"…\",\"k8s-ops.io/suspend-reason\":null,\"k8s-ops.io/suspend-batch\":null}},\"spec\":{\"suspend\":true}} -f - -o jsonpath={.kind}{\"|\"}{.metadata.namespace}{\"|\"}{.metadata.name}{\"|\"}{.spec.suspend}{\"\\n\"} <<< Kustomization flux-system/odoo, HelmRelease business/odoo",
], &["flux suspend", "config get-contexts", "/readyz", "jsonpath={.spec.suspend}"], true)]
#[case::suspend_default_cluster(&["flux:suspend", "APP=gatus"], &[
    "kubectl --context infra patch --field-manager=flux --type=merge -p {\"metadata\":{\"annotations\":{\"k8s-ops.io/suspended-by\":\"…\",\"k8s-ops.io/suspended-at\":\"…\",\"k8s-ops.io/suspend-reason\":null,\"k8s-ops.io/suspend-batch\":null}},\"spec\":{\"suspend\":true}} -f - -o jsonpath=",
    " <<< Kustomization flux-system/gatus, HelmRelease observability/gatus",
], &[], false)]
#[case::suspend_alias(&["f:suspend", "APP=gatus", "CLUSTER=infra"], &["kubectl --context infra patch --field-manager=flux --type=merge -p {\"metadata\":{\"annotations\":{\"k8s-ops.io/suspended-by\":\"…\",\"k8s-ops.io/suspended-at\":\"…\",\"k8s-ops.io/suspend-reason\":null,\"k8s-ops.io/suspend-batch\":null}},\"spec\":{\"suspend\":true}} -f - -o jsonpath="], &[], true)]
#[case::suspend_type_hr(&["flux:suspend", "APP=odoo", "TYPE=hr", "CLUSTER=apps"], &[
    "get helmreleases.v2.helm.toolkit.fluxcd.io -A --field-selector metadata.name=odoo",
    "patch --field-manager=flux --type=merge -p {\"metadata\":{\"annotations\":{\"k8s-ops.io/suspended-by\":\"…\",\"k8s-ops.io/suspended-at\":\"…\",\"k8s-ops.io/suspend-reason\":null,\"k8s-ops.io/suspend-batch\":null}},\"spec\":{\"suspend\":true}} -f - -o jsonpath={.kind}{\"|\"}{.metadata.namespace}{\"|\"}{.metadata.name}{\"|\"}{.spec.suspend}{\"\\n\"} <<< HelmRelease business/odoo",
], &["Kustomization flux-system/odoo"], true)]
#[case::suspend_namespace(&["flux:suspend", "NAMESPACE=business", "CLUSTER=apps"], &[
    "get kustomizations.v1.kustomize.toolkit.fluxcd.io,helmreleases.v2.helm.toolkit.fluxcd.io -n business -o jsonpath=",
    // A whole namespace is one batch: its id is recorded on every object.
    "\"k8s-ops.io/suspend-batch\":\"…\"}},\"spec\":{\"suspend\":true}} -f - …<<< HelmRelease business/odoo, HelmRelease business/whoami",
], &["Kustomization flux-system"], true)]
#[case::suspend_app_in_namespace(&["flux:suspend", "APP=dup", "NAMESPACE=team-b", "CLUSTER=apps"], &[
    "-n team-b --field-selector metadata.name=dup",
    " <<< HelmRelease team-b/dup",
], &["team-a"], true)]
// HelmRelease first; each resume is followed by one read of spec.suspend, Ready and its message.
#[case::resume_app(&["flux:resume", "APP=odoo", "CLUSTER=apps"], &[
    "flux resume helmrelease odoo -n business --context apps",
    "-n business get helmreleases.v2.helm.toolkit.fluxcd.io odoo -o jsonpath={.spec.suspend}{\"|\"}{.status.conditions[?(@.type==\"Ready\")].status}{\"|\"}{.status.conditions[?(@.type==\"Ready\")].message}",
    "flux resume kustomization odoo -n flux-system --context apps",
    "-n flux-system get kustomizations.v1.kustomize.toolkit.fluxcd.io odoo -o jsonpath={.spec.suspend}{\"|\"}{.status.conditions[?(@.type==\"Ready\")].status}",
], &[], true)]
// Without waiting, `flux resume --wait=false`'s own write (spec.suspend=false, a merge patch under
// flux's field manager) with the record removed, for both objects in one request: its read-back.
#[case::resume_nowait(&["flux:resume", "APP=gatus", "WAIT=false"], &[
    "kubectl --context infra patch --field-manager=flux --type=merge -p {\"metadata\":{\"annotations\":{\"k8s-ops.io/suspended-by\":null,\"k8s-ops.io/suspended-at\":null,\"k8s-ops.io/suspend-reason\":null,\"k8s-ops.io/suspend-batch\":null}},\"spec\":{\"suspend\":false}} -f - -o jsonpath={.kind}{\"|\"}{.metadata.namespace}{\"|\"}{.metadata.name}{\"|\"}{.spec.suspend}{\"\\n\"} <<< HelmRelease observability/gatus, Kustomization flux-system/gatus",
], &["flux resume", "jsonpath={.spec.suspend}{\"|\"}{.status.conditions"], true)]
#[case::reconcile_timeout(&["flux:reconcile", "APP=odoo", "CLUSTER=apps", "TIMEOUT=20s"], &[
    "flux reconcile kustomization odoo -n flux-system --with-source --context apps --timeout 20s",
    "flux reconcile helmrelease odoo -n business --with-source --context apps --timeout 20s",
], &[], true)]
// Reconcile (the story's criterion): reconcile now, with the source, and report the outcome.
// The Kustomization's spec.suspend comes from the resolver's list made just before; the
// HelmRelease's is read after the Kustomization's reconcile (which may have changed it).
#[case::reconcile_app(&["flux:reconcile", "APP=odoo", "CLUSTER=apps"], &[
    "kubectl --context apps --request-timeout=5s get kustomizations.v1.kustomize.toolkit.fluxcd.io,helmreleases.v2.helm.toolkit.fluxcd.io -A --field-selector metadata.name=odoo",
    "flux reconcile kustomization odoo -n flux-system --with-source --context apps",
    "-n flux-system get kustomizations.v1.kustomize.toolkit.fluxcd.io odoo -o jsonpath={.spec.suspend}{\"|\"}{.status.conditions[?(@.type==\"Ready\")].status}",
    "-n business get helmreleases.v2.helm.toolkit.fluxcd.io odoo -o jsonpath={.spec.suspend}",
    "flux reconcile helmrelease odoo -n business --with-source --context apps",
    "-n business get helmreleases.v2.helm.toolkit.fluxcd.io odoo -o jsonpath={.spec.suspend}{\"|\"}{.status.conditions[?(@.type==\"Ready\")].status}",
], &[], true)]
#[case::suspend_all(&["--yes", "flux:suspend-all", "CLUSTER=apps"], &[
    "kubectl --context apps patch --field-manager=flux --type=merge -p {\"metadata\":{\"annotations\":{\"k8s-ops.io/suspended-by\":\"…\",\"k8s-ops.io/suspended-at\":\"…\",\"k8s-ops.io/suspend-reason\":null,\"k8s-ops.io/suspend-batch\":\"…\"}},\"spec\":{\"suspend\":true}} -f - -o jsonpath=",
    " <<< Kustomization flux-system/odoo, Kustomization flux-system/whoami, HelmRelease business/odoo, HelmRelease business/whoami, HelmRelease team-a/dup, HelmRelease team-b/dup",
], &["--context infra"], false)]
#[case::logs_app(&["flux:logs", "APP=odoo", "CLUSTER=apps", "LEVEL=error", "SINCE=1h", "TAIL=20"], &[
    "flux logs --context apps --level error --since 1h --tail 20 -A --name odoo",
], &["--follow"], true)]
#[case::logs_follow_one(&["flux:logs", "APP=gatus", "TYPE=hr", "FOLLOW=true"], &[
    "flux logs --context infra --follow --timeout 8760h --kind HelmRelease -n observability --name gatus",
], &[], true)]
// Without a terminal (as here) and without FOLLOW, a snapshot.
#[case::logs_all(&["flux:logs", "CLUSTER=apps"], &["flux logs --context apps -A"], &["--name", "--follow"], true)]
// One controller: kubectl logs of its Deployment, short or full name.
#[case::logs_controller(&["flux:logs", "CONTROLLER=helm", "CLUSTER=apps", "SINCE=10m", "TAIL=5"], &[
    "kubectl --context apps -n flux-system logs deployment/helm-controller --since 10m --tail 5",
], &["flux logs", "--follow"], true)]
#[case::logs_controller_app_follow(&["flux:logs", "CONTROLLER=kustomize-controller", "APP=odoo", "CLUSTER=apps", "FOLLOW=true"], &[
    "kubectl --context apps -n flux-system logs deployment/kustomize-controller --follow",
], &["flux logs"], true)]
#[case::events_app(&["flux:events", "APP=odoo", "CLUSTER=apps"], &[
    "flux events -n flux-system --for Kustomization/odoo --context apps",
    "flux events -n business --for HelmRelease/odoo --context apps",
], &["get events"], true)]
#[case::events_chartref_fallback(&["flux:events", "APP=whoami", "CLUSTER=apps", "WATCH=true"], &[
    "flux events -n business --for HelmRelease/whoami --context apps --watch --timeout 8760h",
    "kubectl --context apps -n business get events --field-selector involvedObject.kind=HelmRelease,involvedObject.name=whoami --sort-by=.lastTimestamp --watch",
], &[], true)]
#[case::events_all_clusters(&["flux:events", "CLUSTER=all"], &["flux events -A --context infra", "flux events -A --context apps"], &[], false)]
#[case::diff_app(&["flux:diff", "APP=odoo", "CLUSTER=apps"], &[
    "-n flux-system get kustomizations.v1.kustomize.toolkit.fluxcd.io odoo -o jsonpath={.spec.path}",
    "flux diff kustomization odoo -n flux-system --path {gitops}/kubernetes/apps/business/odoo/app --progress-bar=false --context apps",
], &["flux diff kustomization odoo -n business"], true)]
// status' lists are each cluster's first request: within the preflight's 5 s, no other probe.
#[case::status_all(&["flux:status", "CLUSTER=all", "FAILED=true"], &[
    "kubectl --context infra --request-timeout=5s get kustomizations.v1.kustomize.toolkit.fluxcd.io,helmreleases.v2.helm.toolkit.fluxcd.io,gitrepositories",
    "kubectl --context apps --request-timeout=5s get kustomizations.v1.kustomize.toolkit.fluxcd.io,helmreleases.v2.helm.toolkit.fluxcd.io,gitrepositories",
], &["/readyz", "config get-contexts"], false)]
#[case::check_all(&["flux:check", "CLUSTER=all"], &["flux check --context infra", "flux check --context apps"], &[], false)]
#[case::tree_root(&["flux:tree"], &["flux tree kustomization flux-system -n flux-system --context infra"], &[], true)]
#[case::tree_app(&["flux:tree", "APP=odoo", "CLUSTER=apps"], &[
    "get kustomizations.v1.kustomize.toolkit.fluxcd.io -A --field-selector metadata.name=odoo",
    "flux tree kustomization odoo -n flux-system --context apps",
], &[], true)]
#[case::trace_resource(&["flux:trace", "RESOURCE=deploy/gatus", "NAMESPACE=observability"], &[
    "flux trace deploy/gatus -n observability --context infra",
], &[], true)]
#[case::trace_app(&["flux:trace", "APP=odoo", "CLUSTER=apps"], &[
    "flux trace helmrelease/odoo -n business --context apps",
    "flux trace kustomization/odoo -n flux-system --context apps",
], &[], true)]
#[case::alerts(&["flux:alerts"], &[
    "flux get alerts -A --context infra",
    "flux get alert-providers -A --context infra",
    "flux events -A --types Warning --context infra",
], &[], true)]
// CLUSTER=all fans out after one /readyz per cluster; the lists then take their 30 s.
#[case::list_suspended(&["flux:list-suspended", "CLUSTER=all"], &[
    "kubectl --context infra --request-timeout=5s get --raw=/readyz",
    "kubectl --context apps --request-timeout=5s get --raw=/readyz",
    "kubectl --context infra --request-timeout=30s get kustomizations.v1.kustomize.toolkit.fluxcd.io,helmreleases.v2.helm.toolkit.fluxcd.io -A -o jsonpath=",
    "kubectl --context apps --request-timeout=30s get kustomizations.v1.kustomize.toolkit.fluxcd.io,helmreleases.v2.helm.toolkit.fluxcd.io -A -o jsonpath=",
], &["flux suspend", "flux resume", " patch "], false)]
#[case::reconcile_source(&["flux:reconcile-source", "CLUSTER=apps"], &[
    "flux reconcile source git flux-system -n flux-system --context apps",
    "-n flux-system get gitrepositories.v1.source.toolkit.fluxcd.io flux-system -o jsonpath={.status.artifact.revision}",
], &[], true)]
// A command that starts with flux: one GET /readyz proves kubeconfig, context and API server.
#[case::preflight_probes(&["flux:check", "CLUSTER=apps"], &[
    "flux version --client",
    "kubectl version --client",
    "kubectl --context apps --request-timeout=5s get --raw=/readyz",
    "flux check --context apps",
], &["config get-contexts"], false)]
fn task_runs_exact_commands(
    #[case] args: &[&str],
    #[case] expected: &[&str],
    #[case] absent: &[&str],
    #[case] ordered: bool,
) {
    let sb = Sandbox::new();
    let out = sb.run(args);
    assert!(out.success(), "{}", out.transcript());
    let calls = sb.calls();
    let expected: Vec<String> = expected
        .iter()
        .map(|e| e.replace("{gitops}", &gitops()))
        .collect();
    assert_calls(&out, &calls, &expected, ordered);
    for a in absent {
        assert!(
            !calls.iter().any(|c| c.contains(a)),
            "unexpected call containing `{a}`\n{}",
            calls.join("\n")
        );
    }
    assert_every_call_has_context(&out, &calls);
}

/// The preflight comes before the task's own first command, and costs (almost) nothing when all is
/// well: the tool versions are asked once (at once, then cached), and each target cluster's first
/// request proves kubeconfig, context and API server: a GET /readyz for a command that starts with
/// flux, the command's own list otherwise. No other probe runs unless that request fails.
#[rstest]
#[case::one(&["flux:check", "CLUSTER=apps"], &["kubectl --context apps --request-timeout=5s get --raw=/readyz"], "flux check --context apps")]
#[case::all(&["flux:check", "CLUSTER=all"], &[
    "kubectl --context infra --request-timeout=5s get --raw=/readyz",
    "kubectl --context apps --request-timeout=5s get --raw=/readyz",
], "flux check --context ")]
#[case::list(&["flux:suspend", "APP=odoo", "CLUSTER=apps"], &[], "kubectl --context apps --request-timeout=5s get kustomizations.v1.kustomize.toolkit.fluxcd.io,helmreleases.v2.helm.toolkit.fluxcd.io -A --field-selector metadata.name=odoo")]
#[case::status_all(&["flux:status", "CLUSTER=all"], &[], "kubectl --context infra --request-timeout=5s get ")]
fn preflight_probes_come_before_the_command(
    #[case] args: &[&str],
    #[case] cluster_probes: &[&str],
    #[case] command: &str,
) {
    let sb = Sandbox::new();
    let out = sb.run(args);
    assert!(out.success(), "{}", out.transcript());
    let calls = sb.calls();
    let mut probes = vec![
        "flux version --client".to_string(),
        "kubectl version --client".to_string(),
    ];
    probes.extend(cluster_probes.iter().map(|p| p.to_string()));
    let first_command = calls
        .iter()
        .position(|c| c.starts_with(command))
        .unwrap_or_else(|| panic!("no `{command}` call:\n{}", calls.join("\n")));
    for probe in &probes {
        let at = calls
            .iter()
            .position(|c| c == probe)
            .unwrap_or_else(|| panic!("probe `{probe}` missing:\n{}", calls.join("\n")));
        assert!(
            at < first_command,
            "probe `{probe}` after `{command}`:\n{}",
            calls.join("\n")
        );
    }
    assert_eq!(
        calls.iter().filter(|c| probes.contains(c)).count(),
        probes.len(),
        "each probe runs once:\n{}",
        calls.join("\n")
    );
    assert!(
        !calls.iter().any(|c| c.contains("config get-contexts")
            || (cluster_probes.is_empty() && c.contains("/readyz"))),
        "a detailed probe ran although the cluster answered:\n{}",
        calls.join("\n")
    );
}

/// The tool versions are asked once per binary: a second run asks nothing, a binary newer than the
/// cache is asked again; without XDG_CACHE_HOME and HOME there is no cache and every run asks.
#[test]
fn tool_versions_are_asked_once_per_binary() {
    let versions = |sb: &Sandbox| {
        sb.calls()
            .into_iter()
            .filter(|c| c.ends_with("version --client"))
            .count()
    };
    let run = |sb: &Sandbox| {
        let _ = fs::remove_file(sb.dir.path().join("calls.log"));
        let out = sb.run(&["flux:suspend", "APP=odoo", "CLUSTER=apps"]);
        assert!(out.success(), "{}", out.transcript());
    };
    let sb = Sandbox::new();
    run(&sb);
    assert_eq!(versions(&sb), 2, "first run: {:?}", sb.calls());
    sb.assert_no_temp_left();
    run(&sb);
    assert_eq!(versions(&sb), 0, "cached: {:?}", sb.calls());
    // a new flux binary (newer than the cache) is asked again
    fs::File::options()
        .write(true)
        .open(sb.dir.path().join("bin/flux"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    run(&sb);
    assert_eq!(
        versions(&sb),
        2,
        "after the binary changed: {:?}",
        sb.calls()
    );

    let sb = Sandbox::new().env("XDG_CACHE_HOME", "").env("HOME", "");
    for _ in 0..2 {
        run(&sb);
        assert_eq!(versions(&sb), 2, "without a cache: {:?}", sb.calls());
    }
}

/// Bulk operations act only on what needs it: resume-all resumes the suspended ones of the newest
/// suspend-all batch, Kustomizations (in dependsOn order) before the HelmReleases they create
/// (whoami's release, suspended on its own, is left alone);
/// reconcile FAILED=true reconciles only the not-ready ones.
#[rstest]
#[case::resume_all(&["--yes", "flux:resume-all", "CLUSTER=apps"], "suspended", &[
    "flux resume kustomization odoo -n flux-system --context apps",
    "flux resume helmrelease odoo -n business --context apps",
], "flux resume helmrelease whoami")]
#[case::reconcile_failed(&["--yes", "flux:reconcile", "FAILED=true", "CLUSTER=apps"], "notready", &[
    "flux reconcile kustomization odoo -n flux-system --with-source --context apps",
    "flux reconcile helmrelease odoo -n business --with-source --context apps",
], "flux reconcile helmrelease whoami")]
fn bulk_acts_on_matching_objects_only(
    #[case] args: &[&str],
    #[case] mark: &str,
    #[case] expected: &[&str],
    #[case] not_touched: &str,
) {
    let sb = Sandbox::new();
    sb.mark("apps", "HelmRelease", "business", "odoo", mark);
    sb.mark("apps", "Kustomization", "flux-system", "odoo", mark);
    if mark == "suspended" {
        sb.mark("apps", "HelmRelease", "business", "odoo", "batch");
        sb.mark("apps", "Kustomization", "flux-system", "odoo", "batch");
        sb.mark("apps", "HelmRelease", "business", "whoami", "suspended");
    }
    let out = sb.run(args);
    let calls = sb.calls();
    if mark == "notready" {
        // the stand-in keeps them not Ready after reconcile: the task must say so and fail
        assert!(!out.success(), "{}", out.transcript());
        assert!(out.stderr.contains("is not Ready"), "{}", out.transcript());
    } else {
        assert!(out.success(), "{}", out.transcript());
    }
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_calls(&out, &calls, &expected, true);
    assert!(
        !calls.iter().any(|c| c.contains(not_touched)),
        "{}",
        calls.join("\n")
    );
    assert_every_call_has_context(&out, &calls);
}

/// Bulk writes without a TTY and without --yes: a clean refusal, nothing changed.
#[rstest]
#[case::suspend_all(&["flux:suspend-all", "CLUSTER=apps"])]
#[case::resume_all(&["flux:resume-all", "CLUSTER=infra"])]
#[case::reconcile_failed(&["flux:reconcile", "FAILED=true", "CLUSTER=apps"])]
fn bulk_without_tty_refuses(#[case] args: &[&str]) {
    let sb = Sandbox::new();
    for mark in ["suspended", "batch"] {
        sb.mark("infra", "HelmRelease", "observability", "gatus", mark);
    }
    sb.mark("apps", "HelmRelease", "business", "odoo", "notready");
    let out = sb.run(args);
    assert!(!out.success(), "{}", out.transcript());
    assert!(
        out.stderr.contains("environment is not a terminal") && out.stderr.contains("--yes"),
        "{}",
        out.transcript()
    );
    let calls = sb.calls();
    assert!(
        !calls.iter().any(|c| is_write(c)),
        "write without confirmation:\n{}",
        calls.join("\n")
    );
}

/// flux 2.7.5 exits 0 when a resumed release fails: the task checks the real state and fails. The
/// suspend patch's response is the stored object: a write that did not take (reverted) fails too.
#[rstest]
#[case::suspend_noop(&["flux:suspend", "APP=gatus"], "", "is NOT suspended")]
#[case::resume_not_ready(&["flux:resume", "APP=odoo", "CLUSTER=apps"], "notready", "is not Ready")]
#[case::reconcile_suspended(&["flux:reconcile", "APP=odoo", "CLUSTER=apps"], "suspended", "resume it first")]
fn exit_code_follows_real_state(#[case] args: &[&str], #[case] mark: &str, #[case] says: &str) {
    let mut sb = Sandbox::new();
    if mark.is_empty() {
        sb = sb.env("STANDIN_WRITE_NOOP", "1");
    } else {
        sb.mark("apps", "HelmRelease", "business", "odoo", mark);
    }
    let out = sb.run(args);
    assert!(!out.success(), "{}", out.transcript());
    assert!(
        out.combined().contains(says),
        "want `{says}`\n{}",
        out.transcript()
    );
    if mark == "suspended" {
        assert!(
            !sb.calls()
                .iter()
                .any(|c| c.starts_with("flux reconcile helmrelease")),
            "{}",
            sb.calls().join("\n")
        );
    }
}

/// An object deleted between the list and the patch: the one patch goes on with the others (as one
/// `flux suspend` per object did), and the task names the missing one and fails.
#[test]
fn suspend_of_a_vanished_object_fails_and_suspends_the_rest() {
    let sb = Sandbox::new().env("STANDIN_PATCH_GONE", "Kustomization flux-system gatus");
    let out = sb.run(&["flux:suspend", "APP=gatus"]);
    assert!(!out.success(), "{}", out.transcript());
    assert!(
        out.stderr.contains(
            "✗ Kustomization flux-system/gatus is NOT suspended on infra (spec.suspend='')"
        ),
        "{}",
        out.transcript()
    );
    assert!(
        out.stdout
            .contains("✓ HelmRelease observability/gatus suspended on infra"),
        "{}",
        out.transcript()
    );
    let patches = sb
        .calls()
        .into_iter()
        .filter(|c| c.contains(" patch "))
        .count();
    assert_eq!(patches, 1, "{:?}", sb.calls());
}

/// CLUSTER=all with one API server down: a warning names it, the other cluster is still reported,
/// the failing one is named, and the task fails at the end.
#[rstest]
#[case::status(&["flux:status", "CLUSTER=all"], "error: cluster apps: ", "infra    Kustomization")]
#[case::list_suspended(&["flux:list-suspended", "CLUSTER=all"], "", "[infra] no suspended")]
#[case::check(&["flux:check", "CLUSTER=all"], "", "[infra] → flux check --context infra")]
fn all_clusters_with_one_down_reports_the_others(
    #[case] args: &[&str],
    #[case] error: &str,
    #[case] reported: &str,
) {
    let sb = Sandbox::new().env("STANDIN_UNREACHABLE", "apps");
    let out = sb.run(args);
    assert!(
        out.stderr.contains(
            "warning: API server of cluster(s) apps did not answer within 5s — is the cluster up and reachable? try: kubectl --context apps cluster-info"
        ),
        "{}",
        out.transcript()
    );
    assert!(out.combined().contains(error), "{}", out.transcript());
    assert!(out.stdout.contains(reported), "{}", out.transcript());
    if args[0] != "flux:check" {
        // (the flux stand-in's `check` does not fail on an unreachable cluster)
        assert!(!out.success(), "{}", out.transcript());
    }
    sb.assert_no_temp_left();
}

#[rstest]
#[case::no_drift("0", true, "no drift")]
#[case::drift("1", true, "drift found")]
#[case::error("3", false, "failed (exit 3)")]
fn diff_exit_codes(#[case] rc: &str, #[case] ok: bool, #[case] says: &str) {
    let sb = Sandbox::new().env("STANDIN_DIFF_RC", rc);
    let out = sb.run(&["flux:diff", "APP=odoo", "CLUSTER=apps"]);
    assert_eq!(out.success(), ok, "{}", out.transcript());
    assert!(out.combined().contains(says), "{}", out.transcript());
    // the HelmRelease cannot be diffed: the task says what to do instead
    assert!(out.combined().contains("helm diff"), "{}", out.transcript());
}

/// Bad input: exit != 0, one line naming problem and fix, no write, no injected command ran.
#[rstest]
#[case::semicolon(&["flux:suspend", "APP=odoo;touch {marker}", "CLUSTER=apps"], "APP")]
#[case::subshell(&["flux:suspend", "APP=$(touch {marker})", "CLUSTER=apps"], "APP")]
#[case::backticks(&["flux:reconcile", "APP=`touch {marker}`", "CLUSTER=apps"], "APP")]
#[case::space(&["flux:suspend", "APP=odoo business", "CLUSTER=apps"], "APP")]
#[case::timeout_not_a_duration(&["flux:reconcile", "APP=odoo", "CLUSTER=apps", "TIMEOUT=5m;touch {marker}"], "TIMEOUT")]
#[case::newline(&["flux:suspend", "APP=odoo\ntouch {marker}", "CLUSTER=apps"], "APP")]
#[case::uppercase(&["flux:resume", "APP=Odoo", "CLUSTER=apps"], "APP")]
#[case::too_long_app(&["flux:suspend", "APP={long254}", "CLUSTER=apps"], "at most 253")]
#[case::too_long_namespace(&["flux:suspend", "NAMESPACE={long64}", "CLUSTER=apps"], "at most 63")]
#[case::namespace_injection(&["flux:suspend", "NAMESPACE=$(touch {marker})", "CLUSTER=apps"], "NAMESPACE")]
#[case::unknown_cluster(&["flux:suspend", "APP=odoo", "CLUSTER=prod"], "CLUSTER")]
#[case::cluster_injection(&["flux:reconcile", "APP=odoo", "CLUSTER=apps;touch {marker}"], "CLUSTER")]
#[case::cluster_all_for_write(&["flux:suspend", "APP=odoo", "CLUSTER=all"], "read-only")]
#[case::missing_app_suspend(&["flux:suspend", "CLUSTER=apps"], "APP or NAMESPACE is required")]
#[case::missing_app_reconcile(&["flux:reconcile", "CLUSTER=apps"], "APP or NAMESPACE is required")]
#[case::missing_app_diff(&["flux:diff", "CLUSTER=apps"], "APP is required")]
#[case::bad_type(&["flux:suspend", "APP=odoo", "TYPE=deploy", "CLUSTER=apps"], "TYPE")]
#[case::resource_injection(&["flux:trace", "RESOURCE=deploy/gatus;touch {marker}", "NAMESPACE=observability"], "RESOURCE")]
#[case::resource_without_namespace(&["flux:trace", "RESOURCE=deploy/gatus"], "NAMESPACE is required")]
#[case::bad_level(&["flux:logs", "LEVEL=$(touch {marker})"], "LEVEL")]
#[case::bad_since(&["flux:logs", "SINCE=yesterday"], "SINCE")]
#[case::bad_bool(&["flux:logs", "FOLLOW=yes"], "FOLLOW")]
#[case::bad_controller(&["flux:logs", "CONTROLLER=helmet"], "CONTROLLER='helmet' is not a Flux controller")]
#[case::controller_injection(&["flux:logs", "CONTROLLER=helm;touch {marker}"], "CONTROLLER")]
#[case::bad_source(&["flux:reconcile-source", "SOURCE=Flux System"], "SOURCE")]
#[case::not_found(&["flux:suspend", "APP=odo", "CLUSTER=apps"], "did you mean: odoo")]
#[case::ambiguous(&["flux:suspend", "APP=dup", "CLUSTER=apps"], "NAMESPACE=")]
#[case::not_found_other_cluster(&["flux:suspend", "APP=odoo", "CLUSTER=infra"], "no Kustomization or HelmRelease named 'odoo'")]
#[case::no_kubeconfig_file(&["flux:suspend", "APP=odoo", "CLUSTER=apps", "KUBECONFIG=/nonexistent"], "KUBECONFIG")]
#[case::flux_too_old(&["flux:suspend", "APP=odoo", "CLUSTER=apps", "STANDIN_FLUX_VERSION=v2.6.4"], "flux >= 2.7")]
#[case::api_down(&["flux:suspend", "APP=odoo", "CLUSTER=apps", "STANDIN_UNREACHABLE=apps"], "did not answer within 5s")]
#[case::api_down_status(&["flux:status", "CLUSTER=apps", "STANDIN_UNREACHABLE=apps"], "API server of cluster(s) apps did not answer within 5s")]
#[case::api_down_all(&["flux:status", "CLUSTER=all", "STANDIN_UNREACHABLE=infra apps"], "API server of cluster(s) infra apps did not answer")]
#[case::api_down_check(&["flux:check", "CLUSTER=apps", "STANDIN_UNREACHABLE=apps"], "did not answer within 5s")]
#[case::api_down_bulk(&["--yes", "flux:suspend-all", "CLUSTER=apps", "STANDIN_UNREACHABLE=apps"], "did not answer within 5s")]
#[case::context_missing(&["flux:suspend", "APP=odoo", "CLUSTER=apps", "STANDIN_CONTEXTS=infra"], "kube context 'apps' not found")]
#[case::context_missing_check(&["flux:check", "CLUSTER=apps", "STANDIN_CONTEXTS=infra"], "kube context 'apps' not found")]
fn bad_input_is_refused(#[case] args: &[&str], #[case] names: &str) {
    let mut sb = Sandbox::new();
    let marker = sb.marker().display().to_string();
    let mut task_args = Vec::new();
    for a in args {
        // environment overrides of the sandbox, not task arguments
        if let Some(v) = a.strip_prefix("KUBECONFIG=") {
            sb = sb.env("KUBECONFIG", v);
        } else if let Some(v) = a.strip_prefix("STANDIN_FLUX_VERSION=") {
            sb = sb.env("STANDIN_FLUX_VERSION", v);
        } else if let Some(v) = a.strip_prefix("STANDIN_UNREACHABLE=") {
            sb = sb.env("STANDIN_UNREACHABLE", v);
        } else if let Some(v) = a.strip_prefix("STANDIN_CONTEXTS=") {
            sb = sb.env("STANDIN_CONTEXTS", v);
        } else {
            task_args.push(
                a.replace("{marker}", &marker)
                    .replace("{long254}", &"a".repeat(254))
                    .replace("{long64}", &"n".repeat(64)),
            );
        }
    }
    let out = sb.runner.run(&task_args).expect("task ran");
    assert!(!out.success(), "{}", out.transcript());
    let line = assert_one_line_error(&out);
    assert!(
        line.contains(names),
        "error line must name `{names}`: {line}"
    );
    let calls = sb.calls();
    assert!(
        !calls.iter().any(|c| is_write(c)),
        "write command despite bad input:\n{}",
        calls.join("\n")
    );
    assert!(!Path::new(&marker).exists(), "injected command ran");
    assert_every_call_has_context(&out, &calls);
    sb.assert_no_temp_left();
}

/// `--list` and `--summary` need no cluster, no kubeconfig and no flux/kubectl call.
/// The run uses the go-task it was asked for (HARNESS_TASK_VERSION, else the oldest pinned one):
/// .ci/run runs this file under both ends of the range.
#[test]
fn runs_the_go_task_of_this_run() {
    let tc = Toolchain::from_env().expect("toolchain");
    let out = duct::cmd(task_bin(), ["--version"])
        .read()
        .expect("task --version");
    let want = tc.versions().get(Tool::Task).trim_start_matches('v');
    assert!(
        out.split_whitespace()
            .any(|w| w.trim_start_matches('v') == want),
        "task --version printed {out:?}, this run pins {want}"
    );
}

#[rstest]
fn list_needs_no_cluster() {
    let sb = Sandbox::new().env("KUBECONFIG", "/nonexistent");
    let out = sb.run(&["--list"]);
    assert!(out.success(), "{}", out.transcript());
    for t in TASKS {
        assert!(
            out.stdout.contains(&format!("* flux:{t}:")),
            "flux:{t} missing from --list\n{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(&format!("f:{t}")),
            "alias f:{t} missing\n{}",
            out.stdout
        );
    }
    assert!(sb.calls().is_empty(), "--list called: {:?}", sb.calls());
}

#[rstest]
fn summary_needs_no_cluster(
    #[values(
        "reconcile",
        "suspend",
        "resume",
        "logs",
        "events",
        "diff",
        "status",
        "check",
        "tree",
        "alerts",
        "trace",
        "suspend-all",
        "resume-all",
        "reconcile-source",
        "list-suspended"
    )]
    name: &str,
) {
    let sb = Sandbox::new().env("KUBECONFIG", "/nonexistent");
    let out = sb.run(&["--summary", &format!("flux:{name}")]);
    assert!(out.success(), "{}", out.transcript());
    for want in [
        "Variables:",
        "CLUSTER",
        "Examples:",
        &format!("task flux:{name}"),
    ] {
        assert!(
            out.stdout.contains(want),
            "summary of flux:{name} lacks `{want}`\n{}",
            out.stdout
        );
    }
    assert!(sb.calls().is_empty(), "--summary called: {:?}", sb.calls());
}

/// go-task ignores unknown keys silently: validate both Taskfiles against its JSON schema, and
/// check the conventions the schema cannot (desc + summary on every public task, .yaml only).
#[rstest]
#[case::root("Taskfile.yaml")]
#[case::flux(".taskfiles/flux/Taskfile.yaml")]
fn taskfile_matches_go_task_schema(#[case] file: &str) {
    let schema: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(data_dir().join("taskfile-schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let yaml: serde_norway::Value =
        serde_norway::from_str(&fs::read_to_string(harness::repo_root().join(file)).unwrap())
            .unwrap();
    let doc: serde_json::Value = serde_json::to_value(&yaml).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{file} does not match go-task's schema:\n{}",
        errors.join("\n")
    );
    for (name, task) in doc["tasks"].as_object().expect("tasks") {
        if task.get("internal").and_then(|v| v.as_bool()) == Some(true) {
            continue;
        }
        assert!(
            task.get("desc").is_some(),
            "{file}: task {name} has no desc"
        );
        if file.contains("flux") {
            assert!(
                task.get("summary").is_some(),
                "{file}: task {name} has no summary"
            );
        }
    }
    let yml: Vec<_> = walk(&harness::repo_root().join(".taskfiles"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    assert!(yml.is_empty(), ".yml files: {yml:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The bash guard at the top of flux-ops.sh, fed the versions an operator may have: macOS' 3.2 and
/// bash 4.0–4.3 are refused, 4.4 and later pass. (The whole script runs under this machine's real
/// bash in every other test here and in every scenario.)
#[rstest]
#[case::macos_bash_3_2(3, 2, false)]
#[case::bash_4_3(4, 3, false)]
#[case::bash_4_4(4, 4, true)]
#[case::bash_5_0(5, 0, true)]
#[case::bash_5_2(5, 2, true)]
fn the_bash_guard_refuses_what_the_script_cannot_run_on(
    #[case] major: u32,
    #[case] minor: u32,
    #[case] accepted: bool,
) {
    let script =
        fs::read_to_string(harness::repo_root().join(".taskfiles/flux/scripts/flux-ops.sh"))
            .expect("flux-ops.sh");
    let start = script
        .find("bash_is_new_enough() {")
        .expect("the guard function");
    let end = start + script[start..].find("\n}\n").expect("its end") + 3;
    let status = duct::cmd!(
        "bash",
        "-c",
        format!("{}bash_is_new_enough {major} {minor}", &script[start..end])
    )
    .unchecked()
    .run()
    .expect("bash")
    .status;
    assert_eq!(status.success(), accepted, "bash {major}.{minor}");
}
