//! The harness's own Git smart-HTTP server: hyper (HTTP/1.1) in front of git's `git http-backend`,
//! run as a CGI per request, so that a machine needs nothing beyond git to serve the fixtures.
//!
//! `GET|POST /git/<repo>.git/<rest>` runs `git http-backend` with `GIT_PROJECT_ROOT` the served
//! directory, `GIT_HTTP_EXPORT_ALL=1` and the CGI variables of the request (`REQUEST_METHOD`,
//! `PATH_INFO=/<repo>.git/<rest>`, `QUERY_STRING`, `CONTENT_TYPE`, `CONTENT_LENGTH`, `REMOTE_ADDR`,
//! every header as `HTTP_*`, `GIT_PROTOCOL` from `Git-Protocol`); the request body goes to its
//! stdin, its `Status:` and headers become the response's, and the rest of its stdout is streamed
//! back as the body. Whether pushing is allowed is the repository's `http.receivepack`.
//!
//! The server runs on a thread of its own with its own current-thread tokio runtime, so it needs
//! none from its caller and lives exactly as long as the process that started it (or until
//! [`HttpServer::stop`]). Every request is one line of the log file (time, client, method, path,
//! status, duration, and why when it failed: the CGI's exit status and stderr, a refused request).

use std::convert::Infallible;
use std::fs;
use std::io::{self};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::combinators::BoxBody;
use hyper::body::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::oneshot;

mod cgi;

use cgi::Cgi;

/// Where the repositories are served.
pub const PREFIX: &str = "/git";

/// Most a CGI may write before the blank line ending its headers.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most of a CGI's stderr kept for the log.
const MAX_STDERR_BYTES: u64 = 16 * 1024;

type Body = BoxBody<Bytes, io::Error>;

/// A running server; stopped by [`HttpServer::stop`] or when dropped.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    log: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `<project_root>/*.git` on `listener` (already bound: binding errors are the caller's)
    /// with the CGI `backend` (`git http-backend`), logging every request to `log`.
    pub fn start(
        listener: TcpListener,
        backend: &Path,
        project_root: &Path,
        log: &Path,
    ) -> Result<Self> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let cgi = Arc::new(Cgi {
            program: backend.to_path_buf(),
            project_root: project_root.to_path_buf(),
            server: addr,
            log: Mutex::new(file),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the git server's tokio runtime")?;
        let (shutdown, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("git-http-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, &cgi, stopped).await,
                        Err(e) => cgi.log_line(&format!("cannot serve on {addr}: {e}")),
                    }
                });
                // Drops the connections still open and kills their CGIs (`kill_on_drop`).
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .context("starting the git server's thread")?;
        Ok(Self {
            addr,
            log: log.to_path_buf(),
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// True until [`HttpServer::stop`], unless the server thread ended on its own (see the log).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Closes the listening socket and every connection; returns once the port is free.
    pub fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts connections until `stopped` fires (or its sender is gone), each served on a task.
async fn serve(
    listener: tokio::net::TcpListener,
    cgi: &Arc<Cgi>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(ok) => ok,
            Err(e) => {
                // E.g. out of file descriptors: log, breathe, go on.
                cgi.log_line(&format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let cgi = Arc::clone(cgi);
        tokio::spawn(async move {
            let service = {
                let cgi = Arc::clone(&cgi);
                hyper::service::service_fn(move |req| {
                    let cgi = Arc::clone(&cgi);
                    async move { Ok::<_, Infallible>(cgi.handle(req, remote).await) }
                })
            };
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                // A request hyper refused (malformed, headers too slow) or a client that left.
                cgi.log_line(&format!("{remote} connection error: {e}"));
            }
        });
    }
}
