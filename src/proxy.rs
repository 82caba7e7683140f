//! THE pipeline's edges. `handle` loads one snapshot, picks the route — the registry token realm,
//! `/-/jwks`, or the proxy path (peek an LFS batch body → `enforce` → forward | refuse) — and always
//! ends in `record`. It is generic over the request body, so the whole pipeline runs in-process in
//! tests. The I/O lives here: the body peek, the unknown-kid refetch, forwarding.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response};

use crate::audit::Audit;
use crate::body::{self, Body};
use crate::classify::{lfs, Family, FamilyMap};
use crate::clock::unix_now;
use crate::enforce::{classify_request, enforce, Core, Disposition, NoTrace, NonJobRules, Summary, Verdict};
use crate::forward::{ForwardContext, Upstream};
use crate::keys::KeySource;
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::record::{Outcome, Recorder, RequestCx};
use crate::refusal::Refusal;
use crate::registry::realm::realm;
use crate::registry::RegistryTokens;
use crate::reject::{self, Challenge};
use crate::revoke::store::Revocations;
use crate::scope::ScopeSet;
use crate::snapshot::Snapshot;
use crate::token::verify::Verifier;

/// What a [`Gateway`] is built from.
pub struct GatewayParts {
    pub snapshot: Snapshot,
    pub verifier: Verifier,
    /// The sources that keep `verifier`'s issuers fresh, in the same order.
    pub key_sources: Vec<Arc<KeySource>>,
    pub revocations: Arc<Revocations>,
    pub registry: Option<RegistryTokens>,
    pub non_job: NonJobRules,
    /// Families without an upstream of their own share git's.
    pub upstreams: FamilyMap<Arc<Upstream>>,
    pub audit: Audit,
    pub metrics: Arc<Metrics>,
    pub lfs_batch_bytes: usize,
}

/// Everything the public listener's requests share.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    verifier: Verifier,
    key_sources: Vec<Arc<KeySource>>,
    revocations: Arc<Revocations>,
    registry: Option<RegistryTokens>,
    non_job: NonJobRules,
    upstreams: FamilyMap<Arc<Upstream>>,
    record: Recorder,
    metrics: Arc<Metrics>,
    lfs_batch_bytes: usize,
}

enum Route {
    TokenRealm,
    Jwks,
    Proxy,
}

impl Gateway {
    pub fn new(parts: GatewayParts) -> Gateway {
        Gateway {
            snapshot: ArcSwap::from_pointee(parts.snapshot),
            verifier: parts.verifier,
            key_sources: parts.key_sources,
            revocations: parts.revocations,
            registry: parts.registry,
            non_job: parts.non_job,
            upstreams: parts.upstreams,
            record: Recorder::new(parts.audit, &parts.metrics),
            metrics: parts.metrics,
            lfs_batch_bytes: parts.lfs_batch_bytes,
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Swaps in a new policy snapshot; requests already running keep theirs.
    pub fn swap_policy(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    pub fn key_sources(&self) -> &[Arc<KeySource>] {
        &self.key_sources
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn audit(&self) -> &Audit {
        self.record.audit()
    }

    /// The decision inputs for one request, against `snapshot`.
    pub fn core<'a>(&'a self, snapshot: &'a Snapshot) -> Core<'a> {
        Core { snapshot, verifier: &self.verifier, revocations: self.revocations.set(), registry: self.registry.as_ref(), non_job: &self.non_job }
    }

    /// Serves one request end to end. Never fails: every problem becomes a response, and every
    /// response is recorded. Any body type will do (hyper's `Incoming`, or `Full` in tests).
    pub fn handle<B>(&self, request: Request<B>, peer: SocketAddr) -> impl Future<Output = Response<Body>> + Send + '_
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        // Boxed before the async part: the future then does not depend on `B`.
        self.serve(request.map(body::stream), peer)
    }

    async fn serve(&self, request: Request<Body>, peer: SocketAddr) -> Response<Body> {
        let snapshot = self.snapshot.load_full();
        let (parts, body) = request.into_parts();
        let cx = self.record.start(&parts, snapshot.generation);
        let (response, outcome) = match self.route(&parts) {
            Route::TokenRealm => self.token_realm(&snapshot, &parts, &cx),
            Route::Jwks => {
                let jwks = self.registry.as_ref().map(RegistryTokens::jwks).unwrap_or_default();
                (reject::json(&jwks), Outcome { request: None, claims: None, summary: allowed(), verified: None })
            }
            Route::Proxy => self.proxy(&snapshot, parts, body, peer, &cx).await,
        };
        self.record.finish(cx, outcome, response)
    }

    /// A request on a connection over `limits.max_connections`: refused, and recorded.
    pub fn refuse_over_capacity<B>(&self, request: Request<B>) -> Response<Body> {
        let (parts, _) = request.into_parts();
        let cx = self.record.start(&parts, self.snapshot.load().generation);
        let refusal = Refusal::new(Reason::OverCapacity, "too many connections; retry later");
        let response = reject::response(&refusal, &cx.id, None, &Challenge::GitLab);
        self.record.finish(cx, Outcome::refused(&refusal, None, None), response)
    }

    fn route(&self, parts: &Parts) -> Route {
        match (&parts.method, parts.uri.path(), &self.registry) {
            (&Method::GET, "/jwt/auth", Some(_)) => Route::TokenRealm,
            (&Method::GET, "/-/jwks", Some(_)) => Route::Jwks,
            _ => Route::Proxy,
        }
    }

    fn token_realm(&self, snapshot: &Snapshot, parts: &Parts, cx: &RequestCx) -> (Response<Body>, Outcome) {
        let mut verified = None;
        match realm(&self.core(snapshot), parts, unix_now(), &mut verified) {
            Ok(grant) => (reject::json(&grant.body), Outcome { request: None, claims: Some(grant.claims), summary: allowed(), verified }),
            Err(refusal) => {
                let response = reject::response(&refusal, &cx.id, Some(Family::Registry), &Challenge::Realm);
                (response, Outcome { verified, ..Outcome::refused(&refusal, None, None) })
            }
        }
    }

    /// peek → enforce (→ one refetch for an unknown kid → enforce) → forward | refuse.
    async fn proxy(&self, snapshot: &Snapshot, parts: Parts, body: Body, peer: SocketAddr, cx: &RequestCx) -> (Response<Body>, Outcome) {
        let (body, batch) = match peek_lfs_batch(&parts, body, self.lfs_batch_bytes).await {
            Ok(peeked) => peeked,
            Err(refusal) => {
                let response = reject::response(&refusal, &cx.id, Some(Family::Lfs), &Challenge::GitLab);
                let request = classify_request(snapshot, &parts, None).ok().map(|r| r.request);
                return (response, Outcome::refused(&refusal, request, None));
            }
        };
        let core = self.core(snapshot);
        let mut enforced = enforce(&core, &parts, batch, unix_now(), &mut NoTrace);
        if let Some(source) = enforced.unknown_kid.and_then(|i| self.key_sources.get(i)) {
            // A rotated-in key is usable on the first request that needs it.
            if source.refetch_for_unknown_kid().await {
                enforced = enforce(&core, &parts, batch, unix_now(), &mut NoTrace);
            }
        }
        let summary = enforced.verdict.summary();
        let family = enforced.request.as_ref().map(|r| r.family);
        let identity = match &enforced.verdict {
            Verdict::Refuse(refusal, _) => {
                drain(body).await;
                let challenge = Challenge::for_request(&parts, enforced.request.as_ref(), self.registry.as_ref().map(|r| r.service.as_str()));
                let response = reject::response(refusal, &cx.id, family, &challenge);
                return (response, Outcome::enforced(enforced, summary));
            }
            Verdict::Allow(claims, permit) => Some((claims.claims(), permit.scopes())),
            Verdict::WouldDeny(claims, _) => Some((claims.claims(), ScopeSet::EMPTY)),
            Verdict::Passthrough => None,
        };
        // Unmatched non-job traffic goes to git's upstream, the fallback for every family.
        let upstream = &self.upstreams[family.unwrap_or(Family::Git)];
        let forwarded = upstream.forward(parts, body, &ForwardContext { peer, request_id: &cx.id, identity }).await;
        match forwarded {
            Ok(response) => (response, Outcome::enforced(enforced, summary)),
            Err(e) => {
                // 502, 504 or 500: no challenge applies.
                let refusal = Refusal::from(e);
                let response = reject::response(&refusal, &cx.id, family, &Challenge::GitLab);
                (response, Outcome::enforced(enforced, Summary { reason: refusal.reason(), ..summary }))
            }
        }
    }
}

fn allowed() -> Summary {
    Summary { disposition: Disposition::Allow, enforced: true, reason: Reason::Granted }
}

/// For an LFS batch call: reads the body (at most `limit` bytes), finds its operation, and returns
/// the body to replay upstream unchanged. Any other request's body streams on untouched.
async fn peek_lfs_batch(parts: &Parts, mut body: Body, limit: usize) -> Result<(Body, Option<lfs::BatchOperation>), Refusal> {
    use http_body_util::BodyExt;
    if !lfs::is_batch(&parts.method, parts.uri.path()) {
        return Ok((body, None));
    }
    let unreadable = || Refusal::new(Reason::BadRequest, format!("LFS batch body unreadable or larger than {limit} bytes"));
    let mut bytes = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(|_| unreadable())?.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(unreadable());
            }
            bytes.extend_from_slice(&data);
        }
    }
    let operation = lfs::batch_operation(&bytes).map_err(|why| Refusal::new(Reason::BadRequest, why))?;
    Ok((body::full(bytes.freeze()), Some(operation)))
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

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
