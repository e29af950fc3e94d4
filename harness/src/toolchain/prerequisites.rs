//! What the harness needs from the machine besides Rust, checked in seconds before anything is
//! built: Go ≥ 1.25 (builds the pinned tools), git, and git's `git http-backend` (the fixtures' Git
//! server runs it as a CGI, `gitserver`). [`check`] reports every missing one at once, each with its
//! fix, so that a fresh machine learns everything it lacks from one failed run and not one per run
//! (or after a half-hour toolchain build).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::sys::path::find_in;
use crate::sys::poll::until;

/// The oldest Go that builds every pinned tool (`toolchain/versions.yaml`).
pub const MIN_GO: (u32, u32) = (1, 25);

/// Fails with one error listing every missing prerequisite and its fix (looked up on `PATH`).
pub fn check() -> Result<()> {
    check_path(&std::env::var_os("PATH").unwrap_or_default())
}

/// [`check`] with an explicit `PATH`: executables are looked up in it and run with it.
pub fn check_path(path: &OsStr) -> Result<()> {
    let missing = missing(path);
    if !missing.is_empty() {
        bail!("missing prerequisites: {}", missing.join("; "));
    }
    Ok(())
}

/// One `"<what> (<fix>)"` per missing prerequisite, in a fixed order (go, git, git http-backend).
pub fn missing(path: &OsStr) -> Vec<String> {
    let mut missing = Vec::new();
    let go_fix = format!(
        "install Go >= {}.{}: https://go.dev/doc/install",
        MIN_GO.0, MIN_GO.1
    );
    match find_in(path, "go") {
        None => missing.push(format!("go ({go_fix})")),
        Some(go) => match go_version(&go, path) {
            Ok(v) if v >= MIN_GO => {}
            Ok((major, minor)) => missing.push(format!(
                "go >= {}.{}, found go{major}.{minor} ({go_fix})",
                MIN_GO.0, MIN_GO.1
            )),
            Err(e) => missing.push(format!(
                "a working go, `go env GOVERSION` failed: {e:#} ({go_fix})"
            )),
        },
    }
    match find_in(path, "git") {
        None => missing.push("git (apt-get install git)".to_string()),
        Some(git) => {
            if let Err(e) = http_backend_with(&git, path) {
                missing.push(format!(
                    "git http-backend: {e:#} (install git's full package: apt-get install git)"
                ));
            }
        }
    }
    missing
}

/// `git-http-backend` in `git --exec-path`, with git from `PATH`.
pub fn git_http_backend() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let git = find_in(&path, "git").context("git is not on PATH (apt-get install git)")?;
    http_backend_with(&git, &path)
}

fn http_backend_with(git: &Path, path: &OsStr) -> Result<PathBuf> {
    let exec_path = output(git, &["--exec-path"], path)?;
    let backend = Path::new(&exec_path).join("git-http-backend");
    if !crate::sys::path::is_executable(&backend) {
        bail!("{} is missing", backend.display());
    }
    Ok(backend)
}

/// `(major, minor)` of `go env GOVERSION` (`go1.25.3` → `(1, 25)`).
fn go_version(go: &Path, path: &OsStr) -> Result<(u32, u32)> {
    let version = output(go, &["env", "GOVERSION"], path)?;
    parse_go_version(&version).with_context(|| format!("unexpected GOVERSION `{version}`"))
}

fn parse_go_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().strip_prefix("go")?.split('.');
    let major = parts.next()?.parse().ok()?;
    // `go1.26rc1`: the minor version ends where the digits do.
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// Trimmed stdout of `program args` run with `PATH=path`.
fn output(program: &Path, args: &[&str], path: &OsStr) -> Result<String> {
    let run = || Command::new(program).args(args).env("PATH", path).output();
    // ETXTBSY: a script just written is still open in a child forked meanwhile by another thread
    // (tests write stand-ins and run git at once); it passes as soon as that child execs.
    let busy = Duration::from_millis(200);
    let out = until(busy, Duration::from_millis(20), || match run() {
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32) => None,
        out => Some(out),
    })
    .unwrap_or_else(run);
    let out = out.with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "`{} {}` exited {}: {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// An executable shell script `name` in `dir`.
    fn stand_in(dir: &Path, name: &str, script: &str) {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn fake_git(bin: &Path, exec_path: &Path) {
        stand_in(
            bin,
            "git",
            &format!(
                "[ \"$1\" = --exec-path ] && echo {} && exit 0; exit 1",
                exec_path.display()
            ),
        );
    }

    #[test]
    fn an_empty_path_lacks_everything_and_says_how_to_fix_each() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_path(dir.path().as_os_str()).unwrap_err().to_string();
        assert_eq!(
            err,
            "missing prerequisites: go (install Go >= 1.25: https://go.dev/doc/install); git (apt-get install git)"
        );
    }

    #[test]
    fn a_complete_path_passes() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, exec) = (dir.path().join("bin"), dir.path().join("git-core"));
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&exec).unwrap();
        stand_in(&bin, "go", "echo go1.25.4");
        fake_git(&bin, &exec);
        stand_in(&exec, "git-http-backend", "exit 0");
        check_path(bin.as_os_str()).unwrap();
    }

    #[test]
    fn an_old_go_and_a_git_without_http_backend_are_both_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, exec) = (dir.path().join("bin"), dir.path().join("git-core"));
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&exec).unwrap();
        stand_in(&bin, "go", "echo go1.24.9");
        fake_git(&bin, &exec);
        // Not executable: does not count.
        fs::write(exec.join("git-http-backend"), "").unwrap();
        let missing = missing(bin.as_os_str());
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(
            missing[0].starts_with("go >= 1.25, found go1.24 ("),
            "{missing:?}"
        );
        assert!(
            missing[1].starts_with(&format!(
                "git http-backend: {} is missing (",
                exec.join("git-http-backend").display()
            )),
            "{missing:?}"
        );
    }

    #[test]
    fn only_go_missing_names_only_go() {
        let dir = tempfile::tempdir().unwrap();
        let exec = dir.path().join("git-core");
        fs::create_dir_all(&exec).unwrap();
        fake_git(dir.path(), &exec);
        stand_in(&exec, "git-http-backend", "exit 0");
        assert_eq!(
            missing(dir.path().as_os_str()),
            vec!["go (install Go >= 1.25: https://go.dev/doc/install)".to_string()]
        );
    }

    #[test]
    fn go_versions_parse() {
        assert_eq!(parse_go_version("go1.25.3"), Some((1, 25)));
        assert_eq!(parse_go_version("go1.26rc1\n"), Some((1, 26)));
        assert_eq!(parse_go_version("go2.0"), Some((2, 0)));
        assert_eq!(parse_go_version("devel"), None);
        assert!((1, 26) >= MIN_GO && (1, 24) < MIN_GO && (2, 0) >= MIN_GO);
    }
}
