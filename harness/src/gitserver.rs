//! The fixtures GitOps repository and the Git smart-HTTP server Flux clones it from.
//!
//! The server is lighttpd running git's own `git http-backend` CGI (smart HTTP: go-git, which
//! source-controller uses, cannot clone the dumb protocol). It listens on 127.0.0.1 ([`GitServer::start`]);
//! only the kind provider binds it elsewhere ([`GitServer::start_on`], the `kind` Docker network's
//! gateway), because Flux there runs inside containers that cannot reach the host's loopback.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{LogFiles, ManagedProcess, wait_for};

const HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

/// A git checkout the harness commits fixture changes into, pushed to the served bare repository.
#[derive(Debug, Clone)]
pub struct FixturesRepo {
    work: PathBuf,
    url: String,
}

impl FixturesRepo {
    /// URL Flux clones from (`http://<bind address>:<port>/git/fixtures.git`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The working copy (a clone of the served repository).
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// Current commit on `main`.
    pub fn head(&self) -> Result<String> {
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Writes `relative_path` (relative to the repository root), commits and pushes; returns the commit.
    pub fn commit_file(&self, relative_path: &str, content: &str, message: &str) -> Result<String> {
        let path = self.work.join(relative_path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, content)?;
        git(&self.work, &["add", "--all"])?;
        git(&self.work, &["commit", "--quiet", "-m", message])?;
        git(&self.work, &["push", "--quiet", "origin", "main"])?;
        self.head()
    }
}

/// lighttpd serving `<root>/repos/*.git` over smart HTTP.
#[derive(Debug)]
pub struct GitServer {
    process: ManagedProcess,
    port: u16,
}

impl GitServer {
    /// Creates `<root>/repos/fixtures.git` from `content` (a directory copied as the first commit),
    /// starts the server on `127.0.0.1:port` and returns it with the checkout used for later commits.
    pub fn start(
        root: &Path,
        content: &Path,
        port: u16,
        state_dir: &Path,
    ) -> Result<(Self, FixturesRepo)> {
        Self::start_on(Ipv4Addr::LOCALHOST, root, content, port, state_dir)
    }

    /// [`GitServer::start`] listening on `bind_ip:port` instead of `127.0.0.1:port`; the repository
    /// URL then names `bind_ip`. Only the kind provider uses another address than 127.0.0.1.
    pub fn start_on(
        bind_ip: Ipv4Addr,
        root: &Path,
        content: &Path,
        port: u16,
        state_dir: &Path,
    ) -> Result<(Self, FixturesRepo)> {
        let lighttpd = crate::toolchain::which("lighttpd").context("lighttpd is not installed: apt-get install -y lighttpd (the Git server for the fixtures repo)")?;
        if !Path::new(HTTP_BACKEND).is_file() {
            bail!("{HTTP_BACKEND} is missing: apt-get install -y git");
        }
        let repos = root.join("repos");
        let bare = repos.join("fixtures.git");
        let work = root.join("work");
        fs::create_dir_all(&repos)?;
        git(
            &repos,
            &[
                "init",
                "--quiet",
                "--bare",
                "--initial-branch=main",
                "fixtures.git",
            ],
        )?;
        git(&bare, &["config", "http.receivepack", "false"])?;
        copy_dir(content, &work)
            .with_context(|| format!("copying fixtures from {}", content.display()))?;
        git(&work, &["init", "--quiet", "--initial-branch=main"])?;
        git(&work, &["add", "--all"])?;
        git(
            &work,
            &[
                "commit",
                "--quiet",
                "-m",
                "fixtures: initial k8s-ops layout",
            ],
        )?;
        git(&work, &["remote", "add", "origin", &bare.to_string_lossy()])?;
        git(&work, &["push", "--quiet", "origin", "main"])?;

        let conf = root.join("lighttpd.conf");
        fs::write(&conf, lighttpd_conf(root, &repos, bind_ip, port))?;
        let mut cmd = Command::new(lighttpd);
        cmd.args(["-D", "-f"]).arg(&conf);
        let logs = LogFiles {
            raw: root.join("lighttpd.log"),
            cri: None,
        };
        let mut process = ManagedProcess::spawn("git-server", cmd, &logs, state_dir)?;
        let url = format!(
            "http://{}/git/fixtures.git",
            SocketAddrV4::new(bind_ip, port)
        );
        wait_for("the git server to answer", Duration::from_secs(20), || {
            process.ensure_running()?;
            Ok(git(root, &["ls-remote", &url, "main"])
                .ok()
                .filter(|o| !o.is_empty()))
        })
        .with_context(|| {
            format!(
                "git server did not come up; see {} and {}",
                logs.raw.display(),
                root.join("lighttpd-error.log").display()
            )
        })?;
        Ok((Self { process, port }, FixturesRepo { work, url }))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(5));
    }
}

fn lighttpd_conf(root: &Path, repos: &Path, bind_ip: Ipv4Addr, port: u16) -> String {
    let root = root.display();
    let repos = repos.display();
    format!(
        r#"server.modules = ("mod_alias", "mod_cgi", "mod_setenv")
server.bind = "{bind_ip}"
server.port = {port}
server.document-root = "{root}"
server.errorlog = "{root}/lighttpd-error.log"
alias.url = ("/git" => "{HTTP_BACKEND}")
$HTTP["url"] =~ "^/git" {{
  cgi.assign = ("" => "")
  setenv.add-environment = ("GIT_PROJECT_ROOT" => "{repos}", "GIT_HTTP_EXPORT_ALL" => "1")
}}
"#
    )
}

/// `git <args>` in `dir` with a fixed identity; returns trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = duct::cmd("git", args)
        .dir(dir)
        .env("GIT_AUTHOR_NAME", "k8s-ops harness")
        .env("GIT_AUTHOR_EMAIL", "harness@localhost")
        .env("GIT_COMMITTER_NAME", "k8s-ops harness")
        .env("GIT_COMMITTER_EMAIL", "harness@localhost")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        bail!("git {} failed in {}: {text}", args.join(" "), dir.display());
    }
    Ok(text)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_fixtures_over_smart_http_and_publishes_commits() {
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("content");
        fs::create_dir_all(content.join("kubernetes")).unwrap();
        fs::write(content.join("kubernetes/a.yaml"), "a: 1\n").unwrap();
        let block = crate::process::PortBlock::first_free(30000, 1).unwrap();
        let port = block.base;
        let (mut server, repo) =
            GitServer::start(&dir.path().join("git"), &content, port, dir.path()).unwrap();
        let clone = dir.path().join("clone");
        let first = repo.head().unwrap();
        git(
            dir.path(),
            &["clone", "--quiet", repo.url(), &clone.to_string_lossy()],
        )
        .unwrap();
        assert_eq!(git(&clone, &["rev-parse", "HEAD"]).unwrap(), first);
        let second = repo
            .commit_file("kubernetes/b.yaml", "b: 2\n", "add b")
            .unwrap();
        assert_ne!(first, second);
        let remote = git(dir.path(), &["ls-remote", repo.url(), "main"]).unwrap();
        assert!(remote.starts_with(&second), "{remote}");
        server.stop();
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port still bound after stop"
        );
    }

    #[test]
    fn start_on_listens_on_the_given_address_only() {
        // 127.0.0.2 is loopback on Linux without configuration: stands in for the kind gateway.
        let bind_ip = Ipv4Addr::new(127, 0, 0, 2);
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("content");
        fs::create_dir_all(&content).unwrap();
        fs::write(content.join("a.yaml"), "a: 1\n").unwrap();
        let block = crate::process::PortBlock::first_free(30000, 1).unwrap();
        let port = block.base;
        let (mut server, repo) =
            GitServer::start_on(bind_ip, &dir.path().join("git"), &content, port, dir.path())
                .unwrap();
        assert_eq!(
            repo.url(),
            format!("http://127.0.0.2:{port}/git/fixtures.git")
        );
        let remote = git(dir.path(), &["ls-remote", repo.url(), "main"]).unwrap();
        assert!(remote.starts_with(&repo.head().unwrap()), "{remote}");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "start_on(127.0.0.2) must not listen on 127.0.0.1"
        );
        server.stop();
    }
}
