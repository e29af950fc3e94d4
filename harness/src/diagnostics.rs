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

/// Collects the state of every cluster plus the given log files/directories; returns the directory.
/// Never fails: whatever cannot be collected is noted in `errors.txt`.
pub fn collect(
    kubectl: &Path,
    kubeconfig: &Path,
    clusters: &[String],
    logs: &[PathBuf],
    label: &str,
) -> PathBuf {
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
    let mut errors = String::new();
    for cluster in clusters {
        let queries: [(&str, Vec<&str>); 4] = [
            (
                "flux-objects.yaml",
                vec![
                    "get",
                    "kustomizations,helmreleases,gitrepositories,helmcharts",
                    "-A",
                    "-o",
                    "yaml",
                ],
            ),
            (
                "events.txt",
                vec!["get", "events", "-A", "--sort-by=.lastTimestamp"],
            ),
            (
                "pods.txt",
                vec!["get", "pods,deployments", "-A", "-o", "wide"],
            ),
            (
                "flux-status.txt",
                vec!["get", "kustomizations,helmreleases,gitrepositories", "-A"],
            ),
        ];
        for (file, args) in queries {
            let out = duct::cmd(kubectl, &args)
                .env("KUBECONFIG", kubeconfig)
                .before_spawn({
                    let cluster = cluster.clone();
                    move |cmd| {
                        cmd.arg(format!("--context={cluster}"))
                            .arg("--request-timeout=10s");
                        Ok(())
                    }
                })
                .stderr_to_stdout()
                .stdout_capture()
                .unchecked()
                .run();
            match out {
                Ok(out) => {
                    let _ = fs::write(dir.join(format!("{cluster}-{file}")), out.stdout);
                }
                Err(e) => errors.push_str(&format!("{cluster} {file}: {e}\n")),
            }
        }
    }
    for log in logs {
        let dest = dir.join("logs").join(log.file_name().unwrap_or_default());
        let copied = if log.is_dir() {
            crate::exec::copy_tree(log, &dest, &[])
        } else {
            fs::create_dir_all(dest.parent().unwrap())
                .and_then(|_| fs::copy(log, &dest).map(|_| ()))
        };
        if let Err(e) = copied {
            errors.push_str(&format!("{}: {e}\n", log.display()));
        }
    }
    if !errors.is_empty() {
        let _ = fs::write(dir.join("errors.txt"), errors);
    }
    dir
}
