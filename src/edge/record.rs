//! `record`: the last stage, run once for every request on the public listener whatever its exit
//! (proxied, refused, token realm, `/-/jwks`, a bad LFS batch, over capacity). It stamps
//! `X-Request-Id`, counts the request, times it and writes its audit line; nothing else does.
//! Metric handles are resolved once (each label combination on first use), never looked up by label
//! per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};
use prometheus::{Histogram, IntCounter, IntCounterVec};

use crate::classify::{Action, Classified, Family};
use crate::edge::body::Body;
use crate::enforce::{Disposition, Enforced, Summary, VerifyStats};
use crate::infra::audit::UpstreamCredential;
use crate::infra::audit::{Audit, AuditRecord};
use crate::infra::metrics::Metrics;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::token::verify::VerifiedClaims;

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

/// A request as it arrived: its id, when it started, what it asked (path without query) and the policy
/// generation it was decided with.
pub struct RequestCx {
    pub id: String,
    started: Instant,
    method: String,
    path: String,
    generation: u64,
}

/// What the request came to, for the audit line and the metrics.
pub struct Outcome {
    pub request: Option<Classified>,
    pub claims: Option<VerifiedClaims>,
    pub summary: Summary,
    pub verified: Option<Verification>,
    /// Which credential jobgate sent upstream for the job: never the secret, only its kind.
    pub upstream_credential: Option<UpstreamCredential>,
}

/// How a credential was verified, and how long the decision that verified it took.
#[derive(Debug, Clone, Copy)]
pub struct Verification {
    /// Some(true) for a cache hit, Some(false) for a miss, None for a registry token (never cached).
    pub cached: Option<bool>,
    pub seconds: f64,
}

impl Verification {
    /// `stats` from the core, timed by the driver (the core reads no clock).
    pub fn timed(stats: Option<VerifyStats>, seconds: f64) -> Option<Verification> {
        stats.map(|stats| Verification { cached: stats.cached, seconds })
    }
}

impl Outcome {
    /// A refusal before or outside `enforce` (a bad LFS batch, the realm, over capacity).
    pub fn refused(refusal: &Refusal, request: Option<Classified>, claims: Option<VerifiedClaims>) -> Outcome {
        Outcome { request, claims, summary: Summary::refused(refusal), verified: None, upstream_credential: None }
    }

    /// Answered by jobgate itself, allowed (`/-/jwks`, a registry token).
    pub fn answered(claims: Option<VerifiedClaims>, verified: Option<Verification>) -> Outcome {
        let summary = Summary { disposition: Disposition::Allow, enforced: true, reason: Reason::Granted };
        Outcome { request: None, claims, summary, verified, upstream_credential: None }
    }

    /// What `enforce` decided, with `summary` overriding its verdict's when forwarding failed.
    pub fn enforced(enforced: Enforced, verified: Option<Verification>, summary: Summary) -> Outcome {
        let claims = enforced.verdict.claims().cloned();
        Outcome { request: enforced.request, claims, summary, verified, upstream_credential: None }
    }
}

const FAMILIES: usize = Family::ALL.len() + 1;
const ACTIONS: usize = 3;
/// allow, passthrough, deny ([`Disposition`] order), challenge.
const DECISIONS: usize = 4;
/// 1xx to 5xx.
const CLASSES: usize = 5;
const CLASS_IDS: [&str; CLASSES] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `jobgate_requests_total` handles, one slot per (family, action, decision, reason, status class),
/// each resolved on first use.
struct RequestCounters {
    vec: IntCounterVec,
    slots: Box<[OnceLock<IntCounter>]>,
}

impl RequestCounters {
    fn new(vec: IntCounterVec) -> RequestCounters {
        let slots =
            (0..FAMILIES * ACTIONS * DECISIONS * Reason::ALL.len() * CLASSES).map(|_| OnceLock::new()).collect();
        RequestCounters { vec, slots }
    }

    fn inc(&self, family: Option<Family>, action: Option<Action>, summary: Summary, status: StatusCode) {
        let f = family.map_or(Family::ALL.len(), Family::index);
        let a = match action {
            None => 0,
            Some(Action::Read) => 1,
            Some(Action::Write) => 2,
        };
        let d = if summary.is_challenge() { DECISIONS - 1 } else { summary.disposition as usize };
        let c = usize::from(status.as_u16() / 100).clamp(1, CLASSES) - 1;
        let reason = summary.reason;
        let index = (((f * ACTIONS + a) * DECISIONS + d) * Reason::ALL.len() + reason as usize) * CLASSES + c;
        let Some(slot) = self.slots.get(index) else { return };
        slot.get_or_init(|| {
            let labels = [
                family.map_or("none", Family::id),
                action.map_or("none", Action::id),
                summary.decision(),
                reason.id(),
                CLASS_IDS[c],
            ];
            self.vec.with_label_values(&labels)
        })
        .inc();
    }
}

/// The record stage: the audit writer and the request metrics.
pub struct Recorder {
    audit: Audit,
    requests: RequestCounters,
    /// Per family, the last slot for requests that match none.
    seconds: [Histogram; FAMILIES],
    verify_seconds: Histogram,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    ids: RequestIds,
}

impl Recorder {
    pub fn new(audit: Audit, metrics: &Metrics) -> Recorder {
        let label = |i: usize| Family::ALL.get(i).map_or("none", |f| f.id());
        Recorder {
            audit,
            requests: RequestCounters::new(metrics.requests.clone()),
            seconds: std::array::from_fn(|i| metrics.request_seconds.with_label_values(&[label(i)])),
            verify_seconds: metrics.verify_seconds.clone(),
            cache_hits: metrics.token_cache.with_label_values(&["hit"]),
            cache_misses: metrics.token_cache.with_label_values(&["miss"]),
            ids: RequestIds::new(),
        }
    }

    /// Starts a request's record: a fresh id and the clock.
    pub fn start(&self, parts: &Parts, generation: u64) -> RequestCx {
        RequestCx {
            id: self.ids.next(),
            started: Instant::now(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            generation,
        }
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Ends a request: `X-Request-Id` on the response, the metrics, the audit line.
    pub fn finish(&self, cx: RequestCx, outcome: Outcome, mut response: Response<Body>) -> Response<Body> {
        if let Ok(value) = HeaderValue::from_str(&cx.id) {
            response.headers_mut().insert("x-request-id", value);
        }
        let request = outcome.request.as_ref();
        let (family, action) = (request.map(|r| r.family), request.map(|r| r.action));
        let summary = outcome.summary;
        self.requests.inc(family, action, summary, response.status());
        let elapsed = cx.started.elapsed().as_secs_f64();
        if let Some(histogram) = self.seconds.get(family.map_or(Family::ALL.len(), Family::index)) {
            histogram.observe(elapsed);
        }
        if let Some(verified) = outcome.verified {
            self.verify_seconds.observe(verified.seconds);
            match verified.cached {
                Some(true) => self.cache_hits.inc(),
                Some(false) => self.cache_misses.inc(),
                None => {}
            }
        }
        let claims = outcome.claims.as_ref().map(VerifiedClaims::claims);
        self.audit.record(AuditRecord {
            time: SystemTime::now(),
            request_id: cx.id,
            method: cx.method,
            path: cx.path,
            family: family.map(Family::id),
            action: action.map(Action::id),
            scope: request.map(|c| c.scope.name()),
            target: request.map(|c| c.target.to_string()),
            job_id: claims.map(|c| c.job_id),
            token_project: claims.map(|c| c.project_path.to_string()),
            user_id: claims.and_then(|c| c.user_id),
            git_ref: claims.and_then(|c| c.git_ref.as_deref().map(str::to_owned)),
            ref_protected: claims.map(|c| c.ref_protected),
            upstream_credential: outcome.upstream_credential,
            decision: summary.decision(),
            enforced: summary.enforced,
            reason: summary.reason.id(),
            status: response.status().as_u16(),
            duration_ms: elapsed * 1000.0,
            generation: cx.generation,
        });
        response
    }
}
