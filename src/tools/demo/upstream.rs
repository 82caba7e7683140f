//! The demo's built-in upstream: Git smart HTTP through `git http-backend` (run as CGI, bodies
//! streamed both ways) when `git` is installed, GitLab's `GET /api/v4/job` for the demo's one opaque
//! job token ([`DEMO_JOB_TOKEN`], a running job of `demo/app`), and an echo (method, path, query and headers as JSON)
//! for every other request. For `jobgate demo` only; tests use real servers.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpListener;
use tokio::process::{ChildStdout, Command};

use crate::edge::body::{self, Body, BoxError};

/// Serves the demo upstream on `listener` until the process ends.
pub async fn serve(listener: TcpListener, git_root: Option<PathBuf>) {
    let git_root = Arc::new(git_root);
    let base = Arc::new(listener.local_addr().map(|a| format!("http://{a}")).unwrap_or_default());
    while let Ok((stream, _)) = listener.accept().await {
        let (git_root, base) = (git_root.clone(), base.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let (git_root, base) = (git_root.clone(), base.clone());
                async move {
                    let response = match git_root.as_deref() {
                        // GitLab's job lookup, as jobgate makes it (with `JOB-TOKEN`); anything else echoes.
                        _ if request.uri().path() == "/api/v4/job" && request.headers().contains_key("job-token") => {
                            job(&request, &base)
                        }
                        Some(root) if is_git(request.uri().path()) => git_cgi(root, request).await,
                        _ => echo(request),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// The demo's GitLab-style job token (`$CI_JOB_TOKEN` of an unmodified pipeline).
pub const DEMO_JOB_TOKEN: &str = "glcbt-64_demoAppJob_0123456789abcdef";

/// GitLab's `GET /api/v4/job` (`Entities::Ci::Job`, trimmed to what jobgate reads) for the demo token,
/// `401 {"message":"401 Unauthorized"}` for any other.
fn job(request: &Request<Incoming>, base: &str) -> Response<Body> {
    let known = request.headers().get("job-token").is_some_and(|t| t.as_bytes() == DEMO_JOB_TOKEN.as_bytes());
    let (status, json) = if known {
        let body = serde_json::json!({
            "id": 103, "status": "running", "stage": "build", "name": "build", "ref": "main", "tag": false,
            "user": {"id": 1, "username": "demo", "name": "Demo", "state": "active"},
            "pipeline": {"id": 1, "project_id": 1, "ref": "main", "status": "running", "source": "push"},
            "web_url": format!("{base}/demo/app/-/jobs/103"),
        });
        (http::StatusCode::OK, body)
    } else {
        (http::StatusCode::UNAUTHORIZED, serde_json::json!({"message": "401 Unauthorized"}))
    };
    let mut response = Response::new(body::full(json.to_string()));
    *response.status_mut() = status;
    response
}

fn is_git(path: &str) -> bool {
    path.ends_with("/info/refs") || path.ends_with("/git-upload-pack") || path.ends_with("/git-receive-pack")
}

fn echo(request: Request<Incoming>) -> Response<Body> {
    let headers: serde_json::Map<String, serde_json::Value> =
        request.headers().iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())).collect();
    let text = serde_json::json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query(),
        "headers": headers,
    });
    let mut response = Response::new(body::full(format!("{text:#}\n")));
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Runs `git http-backend` for one request (RFC 3875 CGI), streaming the request body to its stdin
/// and its stdout back as the response.
async fn git_cgi(root: &Path, request: Request<Incoming>) -> Response<Body> {
    let (parts, incoming) = request.into_parts();
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REMOTE_USER", "demo")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (header, variable) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-length", "CONTENT_LENGTH"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
    ] {
        if let Some(value) = parts.headers.get(header).and_then(|v| v.to_str().ok()) {
            command.env(variable, value);
        }
    }
    let Ok(mut child) = command.spawn() else {
        return failure("cannot start git http-backend");
    };
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return failure("git http-backend has no pipes");
    };
    tokio::spawn(async move {
        let mut incoming = incoming;
        while let Some(Ok(frame)) = incoming.frame().await {
            if let Ok(data) = frame.into_data() {
                if stdin.write_all(&data).await.is_err() {
                    break;
                }
            }
        }
        drop(stdin);
        let _ = child.wait().await;
    });
    let mut stdout = BufReader::new(stdout);
    let mut response = Response::new(body::full(""));
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line).await.unwrap_or(0) == 0 {
            return failure("git http-backend ended before its headers");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().and_then(|c| c.parse().ok());
            *response.status_mut() = code.and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_GATEWAY);
        } else if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name), HeaderValue::from_str(value)) {
            response.headers_mut().append(name, value);
        }
    }
    *response.body_mut() = ChildBody { stdout, buffer: vec![0; 64 * 1024] }.boxed();
    response
}

fn failure(message: &'static str) -> Response<Body> {
    let mut response = Response::new(body::full(message));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// The rest of the CGI's stdout as a streamed body.
struct ChildBody {
    stdout: BufReader<ChildStdout>,
    buffer: Vec<u8>,
}

impl hyper::body::Body for ChildBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut read = ReadBuf::new(&mut this.buffer);
        match Pin::new(&mut this.stdout).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(read.filled()))))),
        }
    }
}
