//! What a failure leaves behind: Flux objects with their status, events, pods, and every log the
//! environment has, copied under `target/harness-diagnostics/<label>-<time>/`.

use std::fs;
use std::path::{Path, PathBuf};

/// Where diagnostics of this checkout go.
pub fn root() -> PathBuf {
    crate::repo_root()
        .join("target")
        .join("harness-diagnostics")
}

/// What is saved of each cluster: file name and kubectl arguments.
const QUERIES: [(&str, &[&str]); 4] = [
    (
        "flux-objects.yaml",
        &[
            "get",
            "kustomizations,helmreleases,gitrepositories,helmcharts",
            "-A",
            "-o",
            "yaml",
        ],
    ),
    (
        "events.txt",
        &["get", "events", "-A", "--sort-by=.lastTimestamp"],
    ),
    ("pods.txt", &["get", "pods,deployments", "-A", "-o", "wide"]),
    (
        "flux-status.txt",
        &["get", "kustomizations,helmreleases,gitrepositories", "-A"],
    ),
];

/// Saves what a failed start leaves (every cluster's state, `logs`) under `label` and returns
/// `error` saying where: how every provider's start failure reports its diagnostics.
pub fn attach(
    error: anyhow::Error,
    kubectl: &Path,
    kubeconfig: &Path,
    logs: &[PathBuf],
    label: &str,
) -> anyhow::Error {
    let clusters: Vec<String> = super::CLUSTERS.iter().map(|c| c.to_string()).collect();
    let dir = collect(kubectl, kubeconfig, &clusters, logs, label);
    error.context(format!("diagnostics saved in {}", dir.display()))
}

/// Collects the state of every cluster plus the given log files/directories; returns the directory.
/// Never fails: whatever cannot be collected is noted in `errors.txt`.
pub fn collect(
    kubectl: &Path,
    kubeconfig: &Path,
    clusters: &[String],
    logs: &[PathBuf],
    label: &str,
) -> PathBuf {
    let dir = new_dir(label);
    let mut errors = String::new();
    for cluster in clusters {
        save_cluster(kubectl, kubeconfig, cluster, &dir, &mut errors);
    }
    for log in logs {
        let dest = dir.join("logs").join(log.file_name().unwrap_or_default());
        let copied = fs::create_dir_all(dir.join("logs"))
            .and_then(|_| crate::sys::exec::copy_tree(log, &dest, &[]));
        if let Err(e) = copied {
            errors.push_str(&format!("{}: {e}\n", log.display()));
        }
    }
    if !errors.is_empty() {
        let _ = fs::write(dir.join("errors.txt"), errors);
    }
    dir
}

/// `<root>/<label>-<time>/`, created; the label reduced to letters, digits and '-'.
fn new_dir(label: &str) -> PathBuf {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S").to_string();
    let safe: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = root().join(format!("{safe}-{stamp}"));
    let _ = fs::create_dir_all(&dir);
    dir
}

/// Every [`QUERIES`] of `cluster` into `<dir>/<cluster>-<file>`, each bounded; failures go to `errors`.
fn save_cluster(kubectl: &Path, kubeconfig: &Path, cluster: &str, dir: &Path, errors: &mut String) {
    for (file, args) in QUERIES {
        let context = format!("--context={cluster}");
        let mut full = vec![context.as_str(), "--request-timeout=10s"];
        full.extend(args);
        let out = crate::sys::exec::bounded(
            duct::cmd(kubectl, &full)
                .env("KUBECONFIG", kubeconfig)
                .stderr_to_stdout()
                .stdout_capture()
                .stdin_null(),
            std::time::Duration::from_secs(30),
            |_| {},
        );
        match out {
            Ok(Some(out)) => {
                let _ = fs::write(dir.join(format!("{cluster}-{file}")), out.stdout);
            }
            Ok(None) => errors.push_str(&format!("{cluster} {file}: no answer within 30s\n")),
            Err(e) => errors.push_str(&format!("{cluster} {file}: {e}\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each cluster's queries land in `<cluster>-<file>` (run with its context), logs are copied,
    /// and what cannot be read is listed in errors.txt instead of failing.
    #[test]
    fn saves_every_query_per_cluster_and_notes_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let kubectl = dir.path().join("kubectl");
        fs::write(&kubectl, "#!/bin/sh\necho \"$*\"\n").unwrap();
        fs::set_permissions(
            &kubectl,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let logs = dir.path().join("flux");
        fs::create_dir_all(&logs).unwrap();
        fs::write(logs.join("helm-controller.log"), "a line").unwrap();
        let missing = dir.path().join("gone.log");
        let out = collect(
            &kubectl,
            &dir.path().join("kubeconfig"),
            &["apps".to_string()],
            &[logs, missing.clone()],
            "unit test/diagnostics",
        );
        assert!(out.starts_with(root()));
        assert!(
            out.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("unit_test_diagnostics-")
        );
        let events = fs::read_to_string(out.join("apps-events.txt")).unwrap();
        assert_eq!(
            events.trim(),
            "--context=apps --request-timeout=10s get events -A --sort-by=.lastTimestamp"
        );
        assert_eq!(QUERIES.len(), 4);
        for (file, _) in QUERIES {
            assert!(out.join(format!("apps-{file}")).is_file(), "{file}");
        }
        assert_eq!(
            fs::read_to_string(out.join("logs/flux/helm-controller.log")).unwrap(),
            "a line"
        );
        let errors = fs::read_to_string(out.join("errors.txt")).unwrap();
        assert!(
            errors.starts_with(&format!("{}: ", missing.display())),
            "{errors}"
        );
        let _ = fs::remove_dir_all(out);
    }
}
