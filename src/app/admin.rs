//! The admin listener (loopback by default, plain HTTP): liveness, readiness, metrics, reload,
//! revocations and the GitLab job-event webhook. Everything that changes or lists state needs
//! `Authorization: Bearer <token>` (token from `admin.token_file`; refused when none is configured);
//! the webhook needs GitLab's `X-Gitlab-Token` secret (from `admin.webhook_secret_file`). The
//! decision view (`/-/decisions`, [`crate::app::view`]) takes the admin token as a browser sends it too:
//! as the password of Basic authentication.

use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::app::reload::Reloader;
use crate::app::view;
use crate::classify::lfs::BatchOperation;
use crate::classify::Action;
use crate::clock::unix_now;
use crate::edge::body::{self, Body};
use crate::enforce::explain;
use crate::revoke::shared::Sharing;
use crate::revoke::{is_finished, Revocation, Revoked};

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// A secret read from a file, kept only as its SHA-256 and compared in constant time.
pub struct Secret(Option<[u8; 32]>);

impl Secret {
    /// Reads the file (surrounding whitespace ignored); `None` means the feature is off.
    ///
    /// # Errors
    /// The file cannot be read or is empty.
    pub fn load(file: Option<&std::path::Path>) -> Result<Secret, String> {
        let Some(file) = file else { return Ok(Secret(None)) };
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(format!("{}: empty secret", file.display()));
        }
        Ok(Secret(Some(digest(secret))))
    }

    fn matches(&self, presented: Option<&str>) -> bool {
        match (self.0, presented) {
            (Some(expected), Some(p)) => {
                digest(p.trim()).iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }
            _ => false,
        }
    }
}

fn digest(secret: &str) -> [u8; 32] {
    crate::token::cache::sha256(secret.as_bytes())
}

/// Everything the admin routes reach.
pub struct Admin {
    pub reloader: Arc<Reloader>,
    pub token: Secret,
    pub webhook_secret: Secret,
}

/// `POST /-/revocations` body: a `jti` or a `job_id`, and optionally when the entry may be forgotten.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    jti: Option<String>,
    job_id: Option<u64>,
    expires_at: Option<i64>,
}

/// The parts of GitLab's job event jobgate reads.
#[derive(Deserialize)]
struct JobEvent {
    object_kind: String,
    build_id: u64,
    build_status: String,
}

impl Admin {
    /// Routes one admin request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let (parts, incoming) = request.into_parts();
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let authorized = self.token.matches(header("authorization").and_then(|v| v.strip_prefix("Bearer ")));
        let gateway = self.reloader.gateway();
        match (&parts.method, parts.uri.path()) {
            (&Method::GET, "/-/decisions") | (&Method::POST, "/-/decisions/explain")
                if !(authorized || self.basic_authorized(header("authorization"))) =>
            {
                let mut response = text(StatusCode::UNAUTHORIZED, "admin token required (admin.token_file): as the password of Basic authentication, or a Bearer token\n");
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"jobgate admin\", charset=\"UTF-8\""),
                );
                response
            }
            (&Method::GET, "/-/decisions") => {
                self.decision_page(parts.uri.query(), &view::ExplainForm::default(), None)
            }
            (&Method::POST, "/-/decisions/explain") => {
                // The page's own form only: a browser holding Basic credentials for this listener
                // must not run explanations for another site's page.
                let host = header("host").unwrap_or_default();
                if header("origin").is_some_and(|origin| origin != format!("http://{host}")) {
                    return text(
                        StatusCode::FORBIDDEN,
                        "the explain form is only accepted from this page (Origin does not match Host)\n",
                    );
                }
                let body = match Limited::new(incoming, MAX_BODY).collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(e) => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            &serde_json::json!({"error": format!("reading the body: {e}")}),
                        )
                    }
                };
                let (token, form) = view::explain_form(&body);
                let batch = form
                    .lfs_operation
                    .as_deref()
                    .map(|op| BatchOperation(if op == "download" { Action::Read } else { Action::Write }));
                let snapshot = gateway.snapshot();
                let explained =
                    explain::explain(&gateway.core(&snapshot), &token, &form.method, &form.url, batch, unix_now());
                self.decision_page(None, &form, Some(&explained))
            }
            (&Method::GET, "/-/healthy") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/-/ready") => {
                let status = if self.reloader.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                json(status, &self.reloader.status())
            }
            (&Method::GET, "/metrics") => {
                let metrics = gateway.metrics();
                // Revocations arrive from other replicas too: the gauges are read off the state.
                metrics.revocations.set(i64::try_from(gateway.revocations().set().len()).unwrap_or(i64::MAX));
                if let Some(shared) = gateway.revocations().shared() {
                    metrics.revocations_shared_connected.set(i64::from(shared.connected()));
                    metrics.revocations_queued.set(i64::try_from(shared.queued()).unwrap_or(i64::MAX));
                    metrics
                        .revocations_received
                        .inc_by(shared.received().saturating_sub(metrics.revocations_received.get()));
                }
                let mut response = Response::new(body::full(metrics.render()));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
                response
            }
            (&Method::POST, "/-/hooks/gitlab") => {
                self.job_event(header("x-gitlab-event"), header("x-gitlab-token"), incoming).await
            }
            (_, "/-/reload" | "/-/revocations") if !authorized => {
                text(StatusCode::UNAUTHORIZED, "admin token required (admin.token_file)\n")
            }
            (&Method::POST, "/-/reload") => match self.reloader.reload("admin") {
                Ok(generation) => {
                    json(StatusCode::OK, &serde_json::json!({"reloaded": true, "generation": generation}))
                }
                Err(error) => {
                    json(StatusCode::UNPROCESSABLE_ENTITY, &serde_json::json!({"reloaded": false, "error": error}))
                }
            },
            (&Method::GET, "/-/revocations") => json(
                StatusCode::OK,
                &serde_json::json!({ "revocations": gateway.revocations().set().list(unix_now()) }),
            ),
            (&Method::POST, "/-/revocations") => self.revoke(incoming).await,
            (
                _,
                "/-/healthy"
                | "/-/ready"
                | "/metrics"
                | "/-/reload"
                | "/-/revocations"
                | "/-/hooks/gitlab"
                | "/-/decisions"
                | "/-/decisions/explain",
            ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Basic authentication whose password is the admin token (what a browser sends), any user name.
    fn basic_authorized(&self, authorization: Option<&str>) -> bool {
        let decoded = authorization.and_then(|v| v.strip_prefix("Basic ")).and_then(|b| STANDARD.decode(b.trim()).ok());
        let password = decoded
            .as_deref()
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.split_once(':'))
            .map(|(_, p)| p);
        self.token.matches(password)
    }

    /// The decision view, filtered by `query`, with an explanation when one was asked for.
    fn decision_page(
        &self,
        query: Option<&str>,
        form: &view::ExplainForm,
        explained: Option<&explain::Explained>,
    ) -> Response<Body> {
        let gateway = self.reloader.gateway();
        let filter = view::filter(query);
        let shown = gateway.audit().decisions().view(&filter, view::SHOWN);
        let mut response =
            Response::new(body::full(view::page(&shown, &filter, gateway.snapshot().generation, form, explained)));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(view::CONTENT_SECURITY_POLICY));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        response
    }

    async fn revoke(&self, incoming: Incoming) -> Response<Body> {
        let request: RevokeRequest = match read_json(incoming).await {
            Ok(request) => request,
            Err(message) => return json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": message})),
        };
        let what = match (request.jti, request.job_id) {
            (Some(jti), None) if !jti.is_empty() => Revoked::Jti { jti },
            (None, Some(job_id)) => Revoked::Job { job_id },
            _ => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": "name exactly one of jti or job_id"}),
                )
            }
        };
        if request.expires_at.is_some_and(|at| at < unix_now()) {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "expires_at is in the past: the revocation would hold nothing"}),
            );
        }
        self.persist(what, request.expires_at).await
    }

    /// GitLab's "Job Hook": a finished job's tokens are revoked.
    async fn job_event(&self, event: Option<&str>, secret: Option<&str>, incoming: Incoming) -> Response<Body> {
        if !self.webhook_secret.matches(secret) {
            return text(StatusCode::UNAUTHORIZED, "X-Gitlab-Token does not match (admin.webhook_secret_file)\n");
        }
        if event != Some("Job Hook") {
            return text(StatusCode::BAD_REQUEST, "only X-Gitlab-Event: Job Hook is handled\n");
        }
        let event: JobEvent = match read_json(incoming).await {
            Ok(event) => event,
            Err(message) => return json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": message})),
        };
        if event.object_kind != "build" || !is_finished(&event.build_status) {
            return json(StatusCode::OK, &serde_json::json!({"revoked": false, "status": event.build_status}));
        }
        self.persist(Revoked::Job { job_id: event.build_id }, None).await
    }

    /// Revokes now; answers only once the revocation is on disk.
    async fn persist(&self, what: Revoked, expires_at: Option<i64>) -> Response<Body> {
        let gateway = self.reloader.gateway();
        let now = unix_now();
        let revocation = Revocation { what, expires_at: expires_at.unwrap_or(now + gateway.verifier().max_lifetime()) };
        let ended_job = match &revocation.what {
            Revoked::Job { job_id } => Some(*job_id),
            Revoked::Jti { .. } => None,
        };
        let result = gateway.revocations().revoke(revocation.clone(), now).await;
        // The job's users' impersonation tokens die with it (at GitLab), whatever the record's fate.
        if let (Some(job_id), Some(gitlab)) = (ended_job, gateway.gitlab()) {
            gitlab.end_job(job_id).await;
        }
        match result {
            Ok(sharing) => {
                gateway.metrics().revocations.set(i64::try_from(gateway.revocations().set().len()).unwrap_or(i64::MAX));
                tracing::info!(?revocation.what, ?sharing, "revoked");
                // Redis unreachable: this replica holds it at once, the others once the link is back.
                let shared = sharing.map(|s| if s == Sharing::Stored { "stored" } else { "queued" });
                json(StatusCode::OK, &serde_json::json!({"revoked": true, "revocation": revocation, "shared": shared}))
            }
            Err(e) => {
                tracing::error!("revocation not persisted: {e}");
                json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"revoked": "in memory only", "error": e.to_string()}),
                )
            }
        }
    }
}

async fn read_json<T: for<'de> Deserialize<'de>>(incoming: Incoming) -> Result<T, String> {
    let bytes =
        Limited::new(incoming, MAX_BODY).collect().await.map_err(|e| format!("reading the body: {e}"))?.to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("body: {e}"))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(format!("{value:#}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
