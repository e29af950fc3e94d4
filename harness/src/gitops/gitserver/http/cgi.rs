//! One request through `git http-backend` as a CGI: the request's CGI variables and body in, the
//! CGI's `Status:` and headers parsed, its stdout streamed back, one log line out.

use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::{Body, MAX_HEADER_BYTES, MAX_STDERR_BYTES, PREFIX};

/// How `git http-backend` is run, and the log.
pub(super) struct Cgi {
    pub(super) program: PathBuf,
    pub(super) project_root: PathBuf,
    pub(super) server: SocketAddr,
    pub(super) log: Mutex<fs::File>,
}

/// One request, for its log line.
#[derive(Clone)]
pub(super) struct Entry {
    started: Instant,
    remote: SocketAddr,
    method: Method,
    target: String,
}

impl Cgi {
    pub(super) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Body> {
        let entry = Entry {
            started: Instant::now(),
            remote,
            method: req.method().clone(),
            target: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().to_string(), |p| p.to_string()),
        };
        match Arc::clone(&self).run(req, &entry).await {
            Ok(response) => response,
            Err((status, reason)) => {
                self.log_request(&entry, status, Some(&reason));
                let mut response = Response::new(full(format!("{reason}\n")));
                *response.status_mut() = status;
                response
            }
        }
    }

    /// Runs the CGI for `req`: the response once its headers are read, the body streamed (and
    /// the request logged) by a task. Errors are a status and the reason.
    async fn run(
        self: Arc<Self>,
        req: Request<Incoming>,
        entry: &Entry,
    ) -> Result<Response<Body>, (StatusCode, String)> {
        let path_info = path_info(req.uri().path())?;
        if !matches!(*req.method(), Method::GET | Method::POST) {
            return Err((
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {} not allowed (GET and POST only)", req.method()),
            ));
        }
        let mut command = self.command(&req, path_info, entry.remote);
        let mut child = command.spawn().map_err(|e| {
            let reason = format!("starting {}: {e}", self.program.display());
            (StatusCode::INTERNAL_SERVER_ERROR, reason)
        })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = tokio::spawn(read_capped(
            child.stderr.take().expect("piped"),
            MAX_STDERR_BYTES,
        ));
        let feeder = tokio::spawn(feed(req.into_body(), stdin));

        let mut stdout = BufReader::new(stdout);
        let head = match read_head(&mut stdout).await {
            Ok(head) => head,
            Err(e) => {
                let _ = child.start_kill();
                let (_, why) = outcome(&mut child, stderr, feeder).await;
                return Err((
                    StatusCode::BAD_GATEWAY,
                    format!("bad CGI response: {e}; {why}"),
                ));
            }
        };
        let status = head.status();
        let (sender, body) = Channel::<Bytes, io::Error>::new(4);
        let mut response = Response::new(body.boxed());
        *response.status_mut() = status;
        *response.headers_mut() = head.headers;

        let cgi = Backend {
            child,
            stderr,
            feeder,
        };
        tokio::spawn(self.stream(stdout, sender, cgi, entry.clone(), status));
        Ok(response)
    }

    /// Streams the CGI's body to the client, then logs the request. A body cut off by a failing
    /// CGI is aborted, so that the client does not take it for a whole one.
    async fn stream(
        self: Arc<Self>,
        mut stdout: BufReader<tokio::process::ChildStdout>,
        mut sender: http_body_util::channel::Sender<Bytes, io::Error>,
        mut cgi: Backend,
        entry: Entry,
        status: StatusCode,
    ) {
        let mut problem = None;
        let mut buf = vec![0; 64 * 1024];
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if sender
                        .send_data(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        problem = Some("the client went away".to_string());
                        let _ = cgi.child.start_kill();
                        break;
                    }
                }
                Err(e) => {
                    problem = Some(format!("reading the CGI's output: {e}"));
                    let _ = cgi.child.start_kill();
                    break;
                }
            }
        }
        let (exited_ok, why) = outcome(&mut cgi.child, cgi.stderr, cgi.feeder).await;
        if problem.is_some() || (!exited_ok && status.is_success()) {
            sender.abort(io::Error::other("the git http-backend CGI failed"));
        } else {
            drop(sender);
        }
        let reason = match problem {
            Some(p) => Some(format!("{p}; {why}")),
            None if !exited_ok || status.as_u16() >= 400 => Some(why),
            None => None,
        };
        self.log_request(&entry, status, reason.as_deref());
    }

    /// `git http-backend` with the CGI environment of `req` (nothing inherited but PATH and HOME).
    fn command(&self, req: &Request<Incoming>, path_info: &str, remote: SocketAddr) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.env_clear();
        for inherited in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(inherited) {
                cmd.env(inherited, value);
            }
        }
        let headers = req.headers();
        let header = |name: &HeaderName| {
            let values: Vec<String> = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        };
        for name in headers.keys() {
            // CONTENT_* have their own variables; HTTP_PROXY would be taken for a proxy setting.
            if name == hyper::header::CONTENT_TYPE
                || name == hyper::header::CONTENT_LENGTH
                || name.as_str() == "proxy"
            {
                continue;
            }
            if let Some(value) = header(name) {
                cmd.env(
                    format!(
                        "HTTP_{}",
                        name.as_str().to_ascii_uppercase().replace('-', "_")
                    ),
                    value,
                );
            }
        }
        if let Some(v) = header(&hyper::header::CONTENT_TYPE) {
            cmd.env("CONTENT_TYPE", v);
        }
        if let Some(v) = header(&hyper::header::CONTENT_LENGTH) {
            cmd.env("CONTENT_LENGTH", v);
        }
        if let Some(v) = header(&HeaderName::from_static("git-protocol")) {
            cmd.env("GIT_PROTOCOL", v);
        }
        cmd.env("GIT_PROJECT_ROOT", &self.project_root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("SERVER_SOFTWARE", "k8s-ops-harness")
            .env("SERVER_PROTOCOL", format!("{:?}", req.version()))
            .env("SERVER_NAME", self.server.ip().to_string())
            .env("SERVER_PORT", self.server.port().to_string())
            .env("REQUEST_METHOD", req.method().as_str())
            .env("SCRIPT_NAME", PREFIX)
            .env("PATH_INFO", path_info)
            .env("QUERY_STRING", req.uri().query().unwrap_or(""))
            .env("REMOTE_ADDR", remote.ip().to_string())
            .env("REMOTE_PORT", remote.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    fn log_request(&self, entry: &Entry, status: StatusCode, reason: Option<&str>) {
        let took = entry.started.elapsed().as_millis();
        let mut line = format!(
            "{} {} {} {} {took}ms",
            entry.remote,
            entry.method,
            entry.target,
            status.as_u16()
        );
        if let Some(reason) = reason {
            line.push_str(" error: ");
            line.push_str(&one_line(reason));
        }
        self.log_line(&line);
    }

    pub(super) fn log_line(&self, line: &str) {
        if let Ok(mut log) = self.log.lock() {
            let _ = writeln!(log, "{} {line}", jiff::Timestamp::now());
        }
    }
}

/// `/git/<repo>.git/...` → `/<repo>.git/...`; refuses other paths and `..` segments.
pub(super) fn path_info(path: &str) -> Result<&str, (StatusCode, String)> {
    let rest = path
        .strip_prefix(PREFIX)
        .filter(|rest| rest.starts_with('/'))
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("{path} is not under {PREFIX}/"),
            )
        })?;
    if rest.split('/').any(|segment| segment == "..") {
        return Err((StatusCode::BAD_REQUEST, format!("{path} contains `..`")));
    }
    Ok(rest)
}

/// The CGI's response head: `Status:` and the other header lines up to the blank line.
pub(super) struct Head {
    status: Option<StatusCode>,
    headers: hyper::HeaderMap,
}

impl Head {
    /// `Status:` if given, else 302 with a `Location`, else 200 (RFC 3875 6.3).
    fn status(&self) -> StatusCode {
        self.status
            .unwrap_or(if self.headers.contains_key(hyper::header::LOCATION) {
                StatusCode::FOUND
            } else {
                StatusCode::OK
            })
    }
}

pub(super) async fn read_head(out: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> Result<Head> {
    let mut head = Head {
        status: None,
        headers: hyper::HeaderMap::new(),
    };
    let mut total = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = out.read_until(b'\n', &mut line).await?;
        if n == 0 {
            anyhow::bail!("output ended before the blank line after the headers");
        }
        total += n;
        if total > MAX_HEADER_BYTES {
            anyhow::bail!("headers longer than {MAX_HEADER_BYTES} bytes");
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            return Ok(head);
        }
        let (name, value) = text
            .split_once(':')
            .with_context(|| format!("header line without a colon: {text:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or_default();
            head.status = Some(
                StatusCode::from_bytes(code.as_bytes())
                    .with_context(|| format!("bad Status line: {text:?}"))?,
            );
        } else {
            head.headers.append(
                HeaderName::from_bytes(name.trim().as_bytes())
                    .with_context(|| format!("bad header name: {text:?}"))?,
                HeaderValue::from_str(value)
                    .with_context(|| format!("bad header value: {text:?}"))?,
            );
        }
    }
}

/// Copies the request body into the CGI's stdin, then closes it.
pub(super) async fn feed(
    mut body: Incoming,
    mut stdin: tokio::process::ChildStdin,
) -> io::Result<()> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(io::Error::other)?;
        if let Ok(data) = frame.into_data() {
            stdin.write_all(&data).await?;
        }
    }
    stdin.shutdown().await
}

/// Up to `cap` bytes of `from`, reading it to its end.
pub(super) async fn read_capped(mut from: impl AsyncRead + Unpin, cap: u64) -> Vec<u8> {
    let mut kept = Vec::new();
    let _ = (&mut from).take(cap).read_to_end(&mut kept).await;
    let _ = tokio::io::copy(&mut from, &mut tokio::io::sink()).await;
    kept
}

/// A running `git http-backend`: the process, its stderr being read, its stdin being fed.
pub(super) struct Backend {
    child: Child,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
    feeder: tokio::task::JoinHandle<io::Result<()>>,
}

/// Waits for the CGI; `(exited 0 and the request body went in, what happened)`.
pub(super) async fn outcome(
    child: &mut Child,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
    feeder: tokio::task::JoinHandle<io::Result<()>>,
) -> (bool, String) {
    let status = child.wait().await;
    let stderr = stderr.await.unwrap_or_default();
    let fed = feeder.await.unwrap_or_else(|e| Err(io::Error::other(e)));
    let mut why = match &status {
        Ok(s) => format!("git http-backend {s}"),
        Err(e) => format!("waiting for git http-backend: {e}"),
    };
    let stderr = String::from_utf8_lossy(&stderr);
    if !stderr.trim().is_empty() {
        why.push_str(": ");
        why.push_str(stderr.trim());
    }
    // A CGI that answers without reading the whole request (an error) breaks the pipe: that is
    // its answer, not another failure.
    let fed_ok = match &fed {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => true,
        Err(e) => {
            why.push_str(&format!("; reading the request body: {e}"));
            false
        }
    };
    (status.is_ok_and(|s| s.success()) && fed_ok, why)
}

pub(super) fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

pub(super) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_under_the_prefix_without_dot_dot_are_served() {
        assert_eq!(
            path_info("/git/fixtures.git/info/refs"),
            Ok("/fixtures.git/info/refs")
        );
        assert_eq!(path_info("/gitx/a").unwrap_err().0, StatusCode::NOT_FOUND);
        assert_eq!(path_info("/other").unwrap_err().0, StatusCode::NOT_FOUND);
        assert_eq!(
            path_info("/git/../etc/passwd").unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn cgi_heads_give_status_and_headers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let parse = |text: &'static str| rt.block_on(read_head(&mut text.as_bytes()));
        let head = parse(
            "Status: 404 Not Found\r\nContent-Type: text/plain\r\nExpires: Fri, 01 Jan 1980 00:00:00 GMT\r\n\r\nbody",
        )
        .unwrap();
        assert_eq!(head.status(), StatusCode::NOT_FOUND);
        assert_eq!(head.headers["content-type"], "text/plain");
        let head = parse("Content-Type: application/x-git-upload-pack-advertisement\n\n").unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert!(parse("Content-Type: text/plain\r\n").is_err());
        assert!(parse("no colon\r\n\r\n").is_err());
    }
}
