//! THE pipeline's edges: load one snapshot → `enforce` (classify, extract, verify, decide; in
//! `enforce.rs`) → forward | reject → record. `handle` owns the I/O: peeking an LFS batch body, the
//! unknown-kid refetch, the registry token realm, forwarding, refusing and the audit line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::request::Parts;
use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::audit::{Audit, AuditRecord};
use crate::body::{self, Body};
use crate::classify::{lfs, Classified, Family, Target, Unmatched};
pub use crate::enforce::{enforce, Enforced, NonJobRules, Verdict};
use crate::forward::{ForwardContext, Upstream};
use crate::metrics::Metrics;
use crate::policy::scope::ScopeSet;
use crate::reason::Reason;
use crate::registry_auth;
use crate::reject::{self, Rejection};
use crate::snapshot::Snapshot;
use crate::token::verify::{VerifiedClaims, Verifier};

/// Process-unique request ids: a random per-process prefix and a counter.
pub struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        let mut bytes = [0u8; 4];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        RequestIds { prefix: u32::from_be_bytes(bytes), next: AtomicU64::new(1) }
    }

    pub fn next(&self) -> String {
        format!("{:08x}-{:x}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything the public listener's requests share.
pub struct Gateway {
    pub snapshot: ArcSwap<Snapshot>,
    pub verifier: Verifier,
    pub metrics: Arc<Metrics>,
    pub non_job: NonJobRules,
    pub git: Upstream,
    pub lfs: Option<Upstream>,
    pub registry: Option<Upstream>,
    pub packages: Option<Upstream>,
    pub api: Option<Upstream>,
    pub audit: Audit,
    pub request_ids: RequestIds,
    pub lfs_batch_bytes: usize,
}

/// Seconds since the epoch, as `verify` takes them.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Gateway {
    /// Serves one request end to end. Never fails: every problem becomes a response.
    pub async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let request_id = self.request_ids.next();
        let snapshot = self.snapshot.load_full();
        let (mut parts, incoming) = request.into_parts();
        if let Some(registry) = &self.verifier.registry {
            match (&parts.method, parts.uri.path()) {
                (&http::Method::GET, "/jwt/auth") => return self.token_realm(registry, &snapshot, &parts, started, request_id),
                (&http::Method::GET, "/-/jwks") => return json_response(http::StatusCode::OK, &registry.jwks(), &request_id),
                _ => {}
            }
        }
        let body = match peek_lfs_batch(&mut parts, incoming, self.lfs_batch_bytes).await {
            Ok(body) => body,
            Err(rejection) => {
                let response = reject::response(&rejection, &request_id, Some(Family::Lfs));
                let enforced = Enforced { classified: Err(Unmatched { why: "bad LFS batch" }), claims: None, verdict: Verdict::Reject(rejection), unknown_kid: None };
                let record = audit_record(&enforced, Reason::BadRequest, &response, started, request_id, parts.method.to_string(), parts.uri.path().to_owned(), snapshot.generation);
                self.audit.record(record);
                return response;
            }
        };
        let mut enforced = enforce(&snapshot, &self.verifier, self.non_job, &parts, unix_now());
        let registry_challenge = match (&enforced.classified, &self.verifier.registry) {
            (Ok(request), Some(registry)) if request.family == Family::Registry => Some(challenge(&parts, request, &registry.service)),
            _ => None,
        };
        if let Some(issuer) = enforced.unknown_kid.and_then(|i| self.verifier.issuers.get(i)) {
            // A rotated-in key is usable on the first request that needs it.
            if issuer.keys.refetch_for_unknown_kid().await {
                enforced = enforce(&snapshot, &self.verifier, self.non_job, &parts, unix_now());
            }
        }
        let (method, path) = (parts.method.to_string(), parts.uri.path().to_owned());

        let outcome = match &enforced.verdict {
            Verdict::Reject(rejection) => {
                drain(body).await;
                Err(rejection.clone())
            }
            Verdict::Allow(_) | Verdict::Passthrough | Verdict::WouldDeny(_) => {
                let upstream = match enforced.classified.as_ref().map(|c| c.family) {
                    Ok(Family::Lfs) => self.lfs.as_ref().unwrap_or(&self.git),
                    Ok(Family::Registry) => self.registry.as_ref().unwrap_or(&self.git),
                    Ok(Family::Packages) => self.packages.as_ref().unwrap_or(&self.git),
                    Ok(Family::Api) => self.api.as_ref().unwrap_or(&self.git),
                    // Git, and unmatched non-job traffic.
                    _ => &self.git,
                };
                let identity = match (&enforced.claims, &enforced.verdict) {
                    (Some(claims), Verdict::Allow(permit)) => Some((claims.claims(), permit.scopes())),
                    (Some(claims), _) => Some((claims.claims(), ScopeSet::EMPTY)),
                    _ => None,
                };
                upstream.forward(parts, body, &ForwardContext { peer, request_id: &request_id, identity }).await
            }
        };
        let (mut response, reason) = match (outcome, &enforced.verdict) {
            (Err(rejection), _) => {
                let family = enforced.classified.as_ref().ok().map(|c| c.family);
                let mut response = reject::response(&rejection, &request_id, family);
                if let (Some(challenge), http::StatusCode::UNAUTHORIZED) = (&registry_challenge, response.status()) {
                    if let Ok(value) = HeaderValue::from_str(challenge) {
                        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
                    }
                }
                (response, rejection.reason)
            }
            (Ok(response), Verdict::Passthrough) => (response, Reason::NonJobPassthrough),
            (Ok(response), Verdict::WouldDeny(rejection)) => (response, rejection.reason),
            (Ok(response), Verdict::Allow(permit)) => (response, permit.reason()),
            (Ok(response), Verdict::Reject(rejection)) => (response, rejection.reason),
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", value);
        }
        let record = audit_record(&enforced, reason, &response, started, request_id, method, path, snapshot.generation);
        self.metrics
            .requests
            .with_label_values(&[record.family.unwrap_or("none"), record.action.unwrap_or("none"), record.decision, record.reason])
            .inc();
        self.metrics.request_seconds.with_label_values(&[record.family.unwrap_or("none")]).observe(started.elapsed().as_secs_f64());
        self.audit.record(record);
        response
    }
}

/// The Bearer challenge that sends registry clients to jobgate's token realm.
fn challenge(parts: &Parts, request: &Classified, service: &str) -> String {
    let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).or(parts.uri.authority().map(|a| a.as_str())).unwrap_or("localhost");
    // Always offer pull and push: the realm grants only what the policy allows, and clients that
    // reuse their first token (oras) then hold every action they may use.
    let scope = match &request.target {
        Target::Image(name) => format!(",scope=\"repository:{name}:pull,push\""),
        _ => String::new(),
    };
    format!("Bearer realm=\"https://{host}/jwt/auth\",service=\"{service}\"{scope}")
}

fn json_response(status: http::StatusCode, value: &serde_json::Value, request_id: &str) -> Response<Body> {
    let mut response = Response::new(body::full(format!("{value}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

impl Gateway {
    /// Serves the registry token realm and records it like any other request.
    fn token_realm(&self, registry: &registry_auth::RegistryAuth, snapshot: &Snapshot, parts: &Parts, started: Instant, request_id: String) -> Response<Body> {
        let result = registry_auth::realm(registry, &self.verifier, &snapshot.policy, parts, unix_now());
        let (response, enforced, reason) = match result {
            Ok((body, claims)) => {
                let response = json_response(http::StatusCode::OK, &body, &request_id);
                let enforced = Enforced { classified: Err(Unmatched { why: "token realm" }), claims: Some(VerifiedClaims::from_arc(claims)), verdict: Verdict::Passthrough, unknown_kid: None };
                (response, enforced, Reason::Granted)
            }
            Err(rejection) => {
                let mut response = reject::response(&rejection, &request_id, Some(Family::Registry));
                if response.status() == http::StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"jobgate registry\""));
                }
                let reason = rejection.reason;
                let enforced = Enforced { classified: Err(Unmatched { why: "token realm" }), claims: None, verdict: Verdict::Reject(rejection), unknown_kid: None };
                (response, enforced, reason)
            }
        };
        let record = audit_record(&enforced, reason, &response, started, request_id, parts.method.to_string(), parts.uri.path().to_owned(), snapshot.generation);
        self.audit.record(record);
        response
    }
}

/// For an LFS batch call: reads the body (at most `limit` bytes), records its operation in the
/// request's extensions for `enforce`, and returns the body to replay upstream unchanged. Any other
/// request's body streams on untouched.
async fn peek_lfs_batch(parts: &mut Parts, incoming: Incoming, limit: usize) -> Result<Body, Rejection> {
    use http_body_util::BodyExt;
    if !lfs::is_batch(&parts.method, parts.uri.path()) {
        return Ok(body::stream(incoming));
    }
    let bytes = http_body_util::Limited::new(incoming, limit)
        .collect()
        .await
        .map_err(|_| Rejection::new(Reason::BadRequest, format!("LFS batch body unreadable or larger than {limit} bytes")))?
        .to_bytes();
    let operation = lfs::batch_operation(&bytes).map_err(|why| Rejection::new(Reason::BadRequest, why))?;
    parts.extensions.insert(operation);
    Ok(body::full(bytes))
}

/// Reads (and drops) a small request body before refusing, so a client still sending it gets the
/// refusal instead of a reset connection. Bounded in size and time; larger bodies are cut off.
async fn drain(mut body: Body) {
    use http_body_util::BodyExt;
    const LIMIT: usize = 1024 * 1024;
    let read = async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), read).await;
}

#[allow(clippy::too_many_arguments)]
fn audit_record(
    enforced: &Enforced,
    reason: Reason,
    response: &Response<Body>,
    started: Instant,
    request_id: String,
    method: String,
    path: String,
    generation: u64,
) -> AuditRecord {
    let classified = enforced.classified.as_ref().ok();
    let claims = enforced.claims.as_ref().map(VerifiedClaims::claims);
    AuditRecord {
        time: SystemTime::now(),
        request_id,
        method,
        path,
        family: classified.map(|c| c.family.id()),
        action: classified.map(|c| c.action.id()),
        scope: classified.map(|c| c.scope.name()),
        target: classified.map(|c| c.target.to_string()),
        job_id: claims.map(|c| c.job_id),
        token_project: claims.map(|c| c.project_path.to_string()),
        user_id: claims.and_then(|c| c.user_id),
        decision: match enforced.verdict {
            Verdict::Allow(_) => "allow",
            Verdict::Passthrough => "passthrough",
            Verdict::Reject(_) | Verdict::WouldDeny(_) => "deny",
        },
        enforced: !matches!(enforced.verdict, Verdict::WouldDeny(_)),
        reason: reason.id(),
        status: response.status().as_u16(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        generation,
    }
}

