//! The fixtures GitOps repository and the Git smart-HTTP server Flux clones it from.
//!
//! The server is the harness's own ([`http`]: hyper running git's `git http-backend` as a CGI per
//! request; smart HTTP, because go-git, which source-controller uses, cannot clone the dumb
//! protocol), on a thread of the process that starts the environment: it needs nothing installed
//! beyond git, and it stops with that process. It listens on 127.0.0.1 ([`GitServer::start`]); only
//! the kind provider binds it elsewhere ([`GitServer::start_on`], the `kind` Docker network's
//! gateway), because Flux there runs inside containers that cannot reach the host's loopback.
//! Every request is a line of `<root>/git-http.log`.

pub mod http;

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::sys::poll::wait_for;

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

    /// Commits and pushes every change of the working copy (nothing when there is none).
    pub fn commit_all(&self, message: &str) -> Result<()> {
        git(&self.work, &["add", "--all"])?;
        if git(&self.work, &["status", "--porcelain"])?.is_empty() {
            return Ok(());
        }
        git(&self.work, &["commit", "--quiet", "-m", message])?;
        git(&self.work, &["push", "--quiet", "origin", "main"])?;
        Ok(())
    }

    /// URL of another repository served next to this one (`<name>.git`).
    pub fn sibling_url(&self, name: &str) -> String {
        let base = self
            .url
            .rsplit_once('/')
            .map_or(self.url.as_str(), |(b, _)| b);
        format!("{base}/{name}.git")
    }

    /// Serves another repository next to this one: `<name>.git`, one commit on `main` with an
    /// empty kustomization in each of `paths` (a stand-in for a Git source that cannot be fetched).
    pub fn add_repository(
        &self,
        name: &str,
        paths: &std::collections::BTreeSet<String>,
    ) -> Result<String> {
        let root = self
            .work
            .parent()
            .context("the working copy has a parent")?;
        let work = root.join(format!("work-{name}"));
        fs::create_dir_all(&work)?;
        let mut dirs: Vec<&str> = paths
            .iter()
            .map(|p| p.trim_start_matches("./").trim_end_matches('/'))
            .collect();
        dirs.push("");
        for dir in dirs {
            let dir = work.join(dir);
            fs::create_dir_all(&dir)?;
            fs::write(
                dir.join("kustomization.yaml"),
                "# k8s-ops harness stand-in for a Git source that cannot be fetched here\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n",
            )?;
        }
        publish(
            &root.join("repos"),
            name,
            &work,
            "harness: stand-in repository",
        )?;
        Ok(self.sibling_url(name))
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

/// Publishes the working tree `work` as `<repos>/<name>.git`: a bare repository whose `main` holds
/// one commit of everything in `work`, which becomes `work`'s `origin`. Returns the bare path.
fn publish(repos: &Path, name: &str, work: &Path, message: &str) -> Result<PathBuf> {
    fs::create_dir_all(repos)?;
    let bare = repos.join(format!("{name}.git"));
    git(
        repos,
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            &format!("{name}.git"),
        ],
    )?;
    git(work, &["init", "--quiet", "--initial-branch=main"])?;
    git(work, &["add", "--all"])?;
    git(work, &["commit", "--quiet", "-m", message])?;
    git(work, &["remote", "add", "origin", &bare.to_string_lossy()])?;
    git(work, &["push", "--quiet", "origin", "main"])?;
    Ok(bare)
}

/// The harness's smart-HTTP server for `<root>/repos/*.git` (see the module docs), running on a
/// thread of this process until [`GitServer::stop`] or drop.
#[derive(Debug)]
pub struct GitServer {
    server: http::HttpServer,
}

impl GitServer {
    /// Creates `<root>/repos/fixtures.git` from `content` (its working tree copied as the first
    /// commit), starts the server on `127.0.0.1:port` and returns it with the checkout used for
    /// later commits.
    pub fn start(root: &Path, content: &Path, port: u16) -> Result<(Self, FixturesRepo)> {
        Self::start_on(Ipv4Addr::LOCALHOST, root, content, port)
    }

    /// [`GitServer::start`] listening on `bind_ip:port` instead of `127.0.0.1:port`; the repository
    /// URL then names `bind_ip`. Only the kind provider uses another address than 127.0.0.1.
    pub fn start_on(
        bind_ip: Ipv4Addr,
        root: &Path,
        content: &Path,
        port: u16,
    ) -> Result<(Self, FixturesRepo)> {
        let backend = crate::toolchain::prerequisites::git_http_backend()?;
        let repos = root.join("repos");
        let work = root.join("work");
        // The working tree (uncommitted edits included, its own `.git` left out; symlinks stay
        // symlinks, as git stores them).
        crate::sys::exec::copy_tree(content, &work, &[".git"])
            .with_context(|| format!("copying fixtures from {}", content.display()))?;
        let bare = publish(
            &repos,
            "fixtures",
            &work,
            "fixtures: initial k8s-ops layout",
        )?;
        git(&bare, &["config", "http.receivepack", "false"])?;

        let addr = SocketAddrV4::new(bind_ip, port);
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("the fixtures git server cannot listen on {addr}"))?;
        let log = root.join("git-http.log");
        let server = http::HttpServer::start(listener, &backend, &repos, &log)?;
        let url = format!("http://{addr}{}/fixtures.git", http::PREFIX);
        wait_for("the git server to answer", Duration::from_secs(20), || {
            if !server.is_running() {
                bail!("the git server stopped");
            }
            Ok(git(root, &["ls-remote", &url, "main"])
                .ok()
                .filter(|o| !o.is_empty()))
        })
        .with_context(|| format!("git server did not come up; see {}", log.display()))?;
        Ok((Self { server }, FixturesRepo { work, url }))
    }

    /// Fails naming its log when the server is no longer serving (its thread ended).
    pub fn ensure_running(&self) -> Result<()> {
        if !self.server.is_running() {
            bail!(
                "the fixtures git server ({}) stopped; see {}",
                self.server.addr(),
                self.server.log_path().display()
            );
        }
        Ok(())
    }

    /// Stops serving; the port is free when this returns.
    pub fn stop(&mut self) {
        self.server.stop();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_fixtures_over_smart_http_and_publishes_commits() {
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("content");
        fs::create_dir_all(content.join("kubernetes")).unwrap();
        fs::write(content.join("kubernetes/a.yaml"), "a: 1\n").unwrap();
        let block = crate::sys::process::PortBlock::first_free(30000, 1).unwrap();
        let port = block.base;
        let (mut server, repo) = GitServer::start(&dir.path().join("git"), &content, port).unwrap();
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
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Says who answers there: a port still answering after stop is otherwise a bare failure.
            let listening = duct::cmd!("ss", "-ltnp", format!("sport = :{port}"))
                .stderr_to_stdout()
                .unchecked()
                .read()
                .unwrap_or_else(|e| format!("(ss: {e})"));
            panic!("port {port} still bound after stop; listening there:\n{listening}");
        }
    }

    #[test]
    fn start_on_listens_on_the_given_address_only() {
        // 127.0.0.2 is loopback on Linux without configuration: stands in for the kind gateway.
        let bind_ip = Ipv4Addr::new(127, 0, 0, 2);
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("content");
        fs::create_dir_all(&content).unwrap();
        fs::write(content.join("a.yaml"), "a: 1\n").unwrap();
        let block = crate::sys::process::PortBlock::first_free(30000, 1).unwrap();
        let port = block.base;
        let (mut server, repo) =
            GitServer::start_on(bind_ip, &dir.path().join("git"), &content, port).unwrap();
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

    #[test]
    fn concurrent_clones_and_ls_remote_all_see_the_head_and_are_logged() {
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("content");
        fs::create_dir_all(content.join("kubernetes")).unwrap();
        for i in 0..50 {
            fs::write(
                content.join(format!("kubernetes/{i}.yaml")),
                format!("i: {i}\n"),
            )
            .unwrap();
        }
        let block = crate::sys::process::PortBlock::first_free(30000, 1).unwrap();
        let root = dir.path().join("git");
        let (mut server, repo) = GitServer::start(&root, &content, block.base).unwrap();
        let head = repo.head().unwrap();
        let (base, url) = (dir.path(), repo.url());
        let heads: Vec<String> = std::thread::scope(|s| {
            let mut threads: Vec<_> = (0..6)
                .map(|i| {
                    s.spawn(move || {
                        let clone = base.join(format!("clone-{i}"));
                        git(base, &["clone", "--quiet", url, &clone.to_string_lossy()])?;
                        git(&clone, &["rev-parse", "HEAD"])
                    })
                })
                .collect();
            threads.push(s.spawn(move || {
                let out = git(base, &["ls-remote", url, "main"])?;
                Ok(out
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string())
            }));
            threads
                .into_iter()
                .map(|t| t.join().unwrap().unwrap())
                .collect()
        });
        assert_eq!(heads, vec![head; 7]);
        server.stop();
        let log = fs::read_to_string(root.join("git-http.log")).unwrap();
        let fetches = log
            .lines()
            .filter(|l| l.contains(" POST /git/fixtures.git/git-upload-pack 200 "))
            .count();
        assert!(fetches >= 7, "{log}");
        assert!(!log.contains("error"), "{log}");
    }

    #[test]
    fn failed_requests_are_logged_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("content");
        fs::create_dir_all(&content).unwrap();
        fs::write(content.join("a.yaml"), "a: 1\n").unwrap();
        let block = crate::sys::process::PortBlock::first_free(30000, 1).unwrap();
        let root = dir.path().join("git");
        let (mut server, repo) = GitServer::start(&root, &content, block.base).unwrap();
        let missing = repo.url().replace("fixtures.git", "missing.git");
        assert!(git(dir.path(), &["ls-remote", &missing]).is_err());
        let outside = repo.url().replace("/git/fixtures.git", "/elsewhere");
        assert!(git(dir.path(), &["ls-remote", &outside]).is_err());
        // Pushing stays refused (`http.receivepack false`).
        git(repo.work_dir(), &["remote", "add", "served", repo.url()]).unwrap();
        assert!(git(repo.work_dir(), &["push", "--quiet", "served", "main"]).is_err());
        // Not HTTP at all: hyper answers 400 and the connection's failure is logged.
        {
            use std::io::{Read, Write};
            let mut raw = std::net::TcpStream::connect(("127.0.0.1", block.base)).unwrap();
            raw.write_all(b"NOT HTTP\r\n\r\n").unwrap();
            let mut answer = String::new();
            let _ = raw.read_to_string(&mut answer);
            assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        }
        server.stop();
        let log = fs::read_to_string(root.join("git-http.log")).unwrap();
        let line = |needle: &str| {
            log.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in {log}"))
                .to_string()
        };
        let not_found = line("GET /git/missing.git/info/refs?service=git-upload-pack ");
        assert!(
            not_found.contains(" 404 ") && not_found.contains("error: "),
            "{not_found}"
        );
        let outside = line("GET /elsewhere/info/refs");
        assert!(
            outside.contains(" 404 ") && outside.contains("is not under /git/"),
            "{outside}"
        );
        let push = line("/git/fixtures.git/info/refs?service=git-receive-pack ");
        assert!(push.contains(" 403 ") && push.contains("error: "), "{push}");
        line("connection error: ");
    }
}
