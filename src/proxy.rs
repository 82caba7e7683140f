//! THE pipeline: load one snapshot → enforce (classify, extract, verify, decide) → forward | reject →
//! record. `enforce` is synchronous and pure so tests and benches call it directly; `handle` adds the
//! edges (upstream I/O, audit).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::request::Parts;
use http::{header, HeaderValue, Request, Response, Version};
use hyper::body::Incoming;

use crate::audit::{Audit, AuditRecord};
use crate::body::Body;
use crate::body;
use crate::classify::{self, classify, lfs, Action, Classified, Family, Target, Unmatched};
use crate::policy::scope::Scope;
use crate::registry_auth::{self, Access};
use crate::token::claims::Claims;
use crate::config::ApiRoute;
use crate::policy::scope::ScopeSet;
use crate::config::NonJob;
use crate::forward::{ForwardContext, Upstream};
use crate::policy::{decide, Decision, Permit};
use crate::reason::Reason;
use crate::reject::{self, Rejection};
use crate::snapshot::Snapshot;
use crate::token::extract::{extract, Credential, ExtractError};
use crate::metrics::Metrics;
use crate::token::verify::{VerifiedClaims, Verifier, VerifyError};

/// What `enforce` concluded.
#[derive(Debug)]
pub enum Verdict {
    /// A verified job token and a policy permit.
    Allow(Permit),
    /// Not job traffic, on a route that passes it to the upstream untouched.
    Passthrough,
    /// The policy denies, but in `mode: audit`: forwarded, and recorded as a would-deny.
    WouldDeny(Rejection),
    Reject(Rejection),
}

/// Everything `enforce` learned, for forwarding and for the audit line.
#[derive(Debug)]
pub struct Enforced {
    pub classified: Result<Classified, Unmatched>,
    pub claims: Option<VerifiedClaims>,
    pub verdict: Verdict,
    /// The issuer whose key set lacked the token's `kid`: worth one refetch and a second try.
    pub unknown_kid: Option<usize>,
}

/// Classifies, extracts, verifies and decides one request at time `now` (seconds since the epoch).
pub fn enforce(snapshot: &Snapshot, verifier: &Verifier, non_job: impl Into<NonJobRules>, parts: &Parts, now: i64) -> Enforced {
    let non_job = non_job.into();
    let mut classified = classify(&parts.method, parts.uri.path(), parts.uri.query())
        .or_else(|unmatched| opened_api_route(&snapshot.api_routes, parts).ok_or(unmatched));
    // An LFS batch's action is in its body, which `handle` peeked (a batch not peeked stays a write).
    if let (Ok(request), Some(lfs::BatchOperation(action))) = (&mut classified, parts.extensions.get::<lfs::BatchOperation>()) {
        if request.family == Family::Lfs {
            *request = lfs::lfs(match &request.target {
                Target::Project(project) => project.clone(),
                _ => return Enforced { classified, claims: None, verdict: Verdict::Reject(Rejection::new(Reason::BadRequest, "LFS batch without a project")), unknown_kid: None },
            }, *action);
        }
    }
    let mut unknown_kid = None;
    let non_job = non_job.for_family(classified.as_ref().ok().map(|c| c.family));
    let (claims, verdict) = judge(snapshot, verifier, non_job, parts, &classified, now, &mut unknown_kid);
    Enforced { classified, claims, verdict, unknown_kid }
}

fn judge(
    snapshot: &Snapshot,
    verifier: &Verifier,
    non_job: NonJob,
    parts: &Parts,
    classified: &Result<Classified, Unmatched>,
    now: i64,
    unknown_kid: &mut Option<usize>,
) -> (Option<VerifiedClaims>, Verdict) {
    let reject = |reason, message: &'static str| Verdict::Reject(Rejection::new(reason, message));
    if let Err(message) = check_request_target(parts) {
        return (None, reject(Reason::BadRequest, message));
    }
    let (token, bearer) = match extract(&parts.headers, parts.uri.query()) {
        Ok(Credential::Job(token)) => (token, false),
        Ok(Credential::BearerJwt(token)) => (token, true),
        Ok(_) if non_job == NonJob::Passthrough => return (None, Verdict::Passthrough),
        Ok(Credential::None) => return (None, reject(Reason::MissingCredential, "a CI job token is required")),
        Ok(Credential::NonJob) => return (None, reject(Reason::NonJobRejected, "only CI job tokens are accepted here")),
        Err(e @ ExtractError::Conflicting) => return (None, reject(Reason::ConflictingCredentials, e.to_static())),
        Err(e @ ExtractError::Malformed(_)) => return (None, reject(Reason::BadRequest, e.to_static())),
    };
    let registry_token = if bearer { verifier.verify_registry_token(&token, now) } else { None };
    let (claims, access) = match registry_token {
        Some(Ok((claims, access))) => (claims, Some(access)),
        Some(Err(e)) => return (None, Verdict::Reject(Rejection::new(e.reason(), e.to_string()))),
        None => match verify_job_token(verifier, &token, bearer, non_job, now, unknown_kid) {
            Ok(claims) => (claims, None),
            Err(verdict) => return (None, verdict),
        },
    };
    let verdict = match classified {
        Err(unmatched) => reject(Reason::UnmatchedRequest, unmatched.why),
        Ok(request) => decide_all(snapshot, request, claims.claims(), access.as_deref(), parts),
    };
    (Some(claims), verdict)
}

/// Verifies a job token; a Bearer JWT from no configured issuer is non-job traffic.
fn verify_job_token(
    verifier: &Verifier,
    token: &str,
    bearer: bool,
    non_job: NonJob,
    now: i64,
    unknown_kid: &mut Option<usize>,
) -> Result<VerifiedClaims, Verdict> {
    match verifier.verify(token, now) {
        Ok(claims) => Ok(claims),
        // A Bearer JWT no configured issuer signed is some other service's credential: non-job traffic.
        Err(VerifyError::UnknownIssuer) if bearer && non_job == NonJob::Passthrough => Err(Verdict::Passthrough),
        Err(VerifyError::UnknownIssuer) if bearer => {
            Err(Verdict::Reject(Rejection::new(Reason::NonJobRejected, "only CI job tokens are accepted here")))
        }
        Err(e) => {
            if let VerifyError::UnknownKid { issuer } = e {
                *unknown_kid = Some(issuer);
            }
            Err(Verdict::Reject(Rejection::new(e.reason(), e.to_string())))
        }
    }
}

/// The policy decision, plus what registry requests add: a registry token must grant the action, and
/// a cross-repository mount must also be allowed to pull from its source.
fn decide_all(snapshot: &Snapshot, request: &Classified, claims: &Claims, access: Option<&[Access]>, parts: &Parts) -> Verdict {
    let verdict = decide_one(snapshot, request, claims, access);
    if request.family != Family::Registry || !matches!(verdict, Verdict::Allow(_)) {
        return verdict;
    }
    let rest = parts.uri.path().strip_prefix("/v2/").unwrap_or("");
    match classify::registry::classify(&parts.method, rest, parts.uri.query()).map(|r| r.mount_from) {
        Ok(Some(from)) => {
            let pull = Classified { target: Target::Image(from), action: Action::Read, scope: Scope::ReadRegistry, destructive: false, ..request.clone() };
            match decide_one(snapshot, &pull, claims, access) {
                Verdict::Allow(_) => verdict,
                refused => refused,
            }
        }
        _ => verdict,
    }
}

fn decide_one(snapshot: &Snapshot, request: &Classified, claims: &Claims, access: Option<&[Access]>) -> Verdict {
    if let (Some(access), Target::Image(name)) = (access, &request.target) {
        let action = match (request.action, request.destructive) {
            (Action::Read, _) => "pull",
            (Action::Write, false) => "push",
            (Action::Write, true) => "delete",
        };
        if !registry_auth::grants(access, name.as_str(), action) {
            return Verdict::Reject(Rejection::new(Reason::RegistryScopeMissing, format!("the registry token does not grant {action} on {name}")));
        }
    }
    match decide(&snapshot.policy, request, claims) {
            Decision::Allow(permit) => Verdict::Allow(permit),
            Decision::Deny(denial) => {
                let rejection = Rejection::new(
                    denial.reason,
                    format!(
                        "jobs of {} may not use {} on {}",
                        claims.project_path,
                        denial.needed,
                        request.target
                    ),
                );
                if denial.enforced {
                    Verdict::Reject(rejection)
                } else {
                    Verdict::WouldDeny(rejection)
                }
            }
    }
}

/// An API endpoint the config opens to job tokens: an exact path match, decided on the job's own
/// project (the target is the instance).
fn opened_api_route(routes: &[ApiRoute], parts: &Parts) -> Option<Classified> {
    let route = routes.iter().find(|r| r.method == parts.method.as_str() && r.path == parts.uri.path())?;
    Some(Classified { family: Family::Api, target: Target::Instance, action: Action::Read, scope: route.scope, destructive: false })
}

/// The `non_job` setting per family: the process-wide default, overridden by an upstream's own.
#[derive(Debug, Clone, Copy)]
pub struct NonJobRules {
    pub default: NonJob,
    /// Overrides for git, lfs, registry, packages, api.
    pub families: [Option<NonJob>; 5],
}

impl NonJobRules {
    fn for_family(self, family: Option<Family>) -> NonJob {
        let index = match family {
            Some(Family::Git) => 0,
            Some(Family::Lfs) => 1,
            Some(Family::Registry) => 2,
            Some(Family::Packages) => 3,
            Some(Family::Api) => 4,
            None => return self.default,
        };
        self.families[index].unwrap_or(self.default)
    }
}

impl From<NonJob> for NonJobRules {
    fn from(default: NonJob) -> Self {
        NonJobRules { default, families: [None; 5] }
    }
}

/// Request-target shapes that would let jobgate and the upstream disagree about the request.
fn check_request_target(parts: &Parts) -> Result<(), &'static str> {
    if parts.version < Version::HTTP_2 && parts.uri.authority().is_some() {
        return Err("absolute-form request targets are not accepted");
    }
    if parts.headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err("more than one Host header");
    }
    if let (Some(authority), Some(host)) = (parts.uri.authority(), parts.headers.get(header::HOST)) {
        if authority.as_str().as_bytes() != host.as_bytes() {
            return Err(":authority and Host disagree");
        }
    }
    Ok(())
}

impl ExtractError {
    fn to_static(self) -> &'static str {
        match self {
            ExtractError::Conflicting => "two different credentials in one request",
            ExtractError::Malformed(_) => "malformed Authorization header",
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, version: Version, hosts: &[&str]) -> Parts {
        let mut builder = Request::builder().uri(uri).version(version);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).unwrap_or_default().into_parts().0
    }

    #[test]
    fn request_targets_that_could_be_read_two_ways_are_refused() {
        assert!(check_request_target(&parts("/a/b.git/info/refs", Version::HTTP_11, &["x"])).is_ok());
        assert!(check_request_target(&parts("https://x/a/b.git/info/refs", Version::HTTP_2, &[])).is_ok());
        assert!(check_request_target(&parts("https://x/a", Version::HTTP_2, &["x"])).is_ok());
        for (uri, version, hosts) in [
            ("https://evil/a/b.git/info/refs", Version::HTTP_11, &["x"][..]),
            ("/a", Version::HTTP_11, &["a", "b"][..]),
            ("https://x/a", Version::HTTP_2, &["y"][..]),
        ] {
            assert!(check_request_target(&parts(uri, version, hosts)).is_err(), "{uri} {hosts:?}");
        }
    }
}
