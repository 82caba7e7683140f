//! THE pipeline's edges. `handle` loads one snapshot, picks the route — the registry token realm,
//! `/-/jwks`, or the proxy path (peek an LFS batch body → `enforce` → forward | refuse) — and always
//! ends in `record`. It is generic over the request body, so the whole pipeline runs in-process in
//! tests. The I/O lives here: the body peek, the unknown-kid refetch, impersonation, forwarding; the
//! realms and the passed-through hosts in `proxy_hosts.rs`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response};

use crate::audit::Audit;
use crate::body::{self, Body, BoxError};
use crate::body_credentials;
use crate::classify::{lfs, Family, FamilyMap, HostRole};
use crate::clock::unix_now;
use crate::enforce::{enforce, Core, Disposition, Enforced, Lookup, NoTrace, NonJobRules, Summary, Verdict};
use crate::forward::{ForwardContext, Upstream};
use crate::gitlab::GitLab;
use crate::keys::KeySource;
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::record::{Outcome, Recorder, RequestCx};
use crate::refusal::Refusal;
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
    /// The GitLab instance asked about its own job tokens, when configured.
    pub gitlab: Option<GitLab>,
    /// With `registry_auth.tokens: gitlab`: the registry's service name, whose tokens GitLab's own
    /// realm signs for the scopes jobgate allows.
    pub registry_at_gitlab: Option<String>,
    pub non_job: NonJobRules,
    /// Families without an upstream of their own share git's.
    pub upstreams: FamilyMap<Arc<Upstream>>,
    /// `hosts.passthrough`'s upstreams, in its order.
    pub passthrough: Vec<Arc<Upstream>>,
    pub audit: Audit,
    pub metrics: Arc<Metrics>,
    pub peek: BodyPeek,
}

/// How much of a request body jobgate reads before forwarding: LFS batch calls, and API bodies GitLab
/// reads credentials from.
pub struct BodyPeek {
    pub bytes_per_request: usize,
    pub credential_bytes: usize,
    /// All bodies being peeked at once, in KiB: beyond it, 503.
    pub budget: Arc<tokio::sync::Semaphore>,
    pub deadline: std::time::Duration,
}

impl BodyPeek {
    pub fn new(limits: &crate::config::Limits, timeouts: &crate::config::Timeouts) -> BodyPeek {
        let budget =
            tokio::sync::Semaphore::new((limits.peek_budget_bytes / 1024).min(tokio::sync::Semaphore::MAX_PERMITS));
        BodyPeek {
            bytes_per_request: limits.lfs_batch_bytes,
            credential_bytes: limits.body_credential_bytes,
            budget: Arc::new(budget),
            deadline: timeouts.body_peek(),
        }
    }
}

/// Everything the public listener's requests share.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    verifier: Verifier,
    key_sources: Vec<Arc<KeySource>>,
    revocations: Arc<Revocations>,
    registry: Option<RegistryTokens>,
    gitlab: Option<GitLab>,
    registry_at_gitlab: Option<String>,
    non_job: NonJobRules,
    upstreams: FamilyMap<Arc<Upstream>>,
    passthrough: Vec<Arc<Upstream>>,
    record: Recorder,
    metrics: Arc<Metrics>,
    peek: BodyPeek,
}

enum Route {
    /// Refused before anything else: an unknown host, or a path its host does not serve.
    Misdirected(Refusal),
    /// A `hosts.passthrough` host: to its upstream, undecided.
    Passthrough(usize),
    TokenRealm,
    /// The realm whose tokens GitLab's own realm signs.
    GitLabRealm,
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
            gitlab: parts.gitlab,
            registry_at_gitlab: parts.registry_at_gitlab,
            non_job: parts.non_job,
            upstreams: parts.upstreams,
            passthrough: parts.passthrough,
            record: Recorder::new(parts.audit, &parts.metrics),
            metrics: parts.metrics,
            peek: parts.peek,
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

    pub fn gitlab(&self) -> Option<&GitLab> {
        self.gitlab.as_ref()
    }

    pub fn audit(&self) -> &Audit {
        self.record.audit()
    }

    /// The decision inputs for one request, against `snapshot`.
    pub fn core<'a>(&'a self, snapshot: &'a Snapshot) -> Core<'a> {
        Core {
            snapshot,
            verifier: &self.verifier,
            revocations: self.revocations.set(),
            registry: self.registry.as_ref(),
            gitlab: self.gitlab.as_ref().map(GitLab::identities),
            non_job: &self.non_job,
        }
    }

    /// Serves one request end to end. Never fails: every problem becomes a response, and every
    /// response is recorded. Any body type will do (hyper's `Incoming`, or `Full` in tests).
    pub fn handle<B>(&self, request: Request<B>, peer: SocketAddr) -> impl Future<Output = Response<Body>> + Send + '_
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        // Boxed before the async part: the future then does not depend on `B`.
        self.serve(request.map(body::stream), peer)
    }

    async fn serve(&self, request: Request<Body>, peer: SocketAddr) -> Response<Body> {
        let snapshot = self.snapshot.load_full();
        let (parts, body) = request.into_parts();
        let head = parts.method == Method::HEAD;
        let cx = self.record.start(&parts, snapshot.generation);
        let role = snapshot.hosts.role(&parts);
        let (mut response, outcome) = match self.route(&parts, role) {
            Route::Misdirected(refusal) => {
                let response = reject::response(&refusal, &cx.id, None, &Challenge::GitLab);
                (response, Outcome::refused(&refusal, None, None))
            }
            Route::Passthrough(i) => self.pass(i, parts, body, peer, &cx).await,
            Route::TokenRealm => self.token_realm(&snapshot, &parts, &cx).await,
            Route::GitLabRealm => self.gitlab_realm(&snapshot, parts, body, peer, &cx).await,
            Route::Jwks => {
                let jwks = self.registry.as_ref().map(RegistryTokens::jwks).unwrap_or_default();
                (
                    reject::json(&jwks),
                    Outcome {
                        request: None,
                        claims: None,
                        summary: allowed(),
                        verified: None,
                        upstream_credential: None,
                    },
                )
            }
            Route::Proxy => self.proxy(&snapshot, parts, body, peer, &cx).await,
        };
        if head {
            // No DATA for a HEAD stream: over HTTP/2 a refusal's body would be a stream error.
            *response.body_mut() = body::empty();
        }
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

    /// Where a request goes: by its host (`hosts:`) first, then by its path.
    fn route(&self, parts: &Parts, role: Option<HostRole>) -> Route {
        let Some(role) = role else {
            return Route::Misdirected(Refusal::new(
                Reason::UnknownHost,
                "this host is not served here (hosts:), or is not the name this TLS connection was opened for",
            ));
        };
        if let HostRole::Passthrough(i) = role {
            return Route::Passthrough(i);
        }
        let path = parts.uri.path();
        if role == HostRole::Registry && !crate::classify::is_registry_path(path) {
            // Not even non-job traffic: nothing but the registry lives on its host.
            return Route::Misdirected(Refusal::new(
                Reason::UnmatchedRequest,
                "the registry host serves the container registry only",
            ));
        }
        match (&parts.method, path, &self.registry) {
            // GitLab's realm lives on GitLab's host.
            (&Method::GET, "/jwt/auth", _) if self.registry_at_gitlab.is_some() && role != HostRole::Registry => {
                Route::GitLabRealm
            }
            // On the GitLab host these are GitLab's own (the dependency proxy): the proxy path decides.
            _ if role == HostRole::GitLab => Route::Proxy,
            (&Method::GET, "/jwt/auth", Some(_)) => Route::TokenRealm,
            (&Method::GET, "/-/jwks", Some(_)) => Route::Jwks,
            _ => Route::Proxy,
        }
    }

    /// enforce (→ one refetch for an unknown kid) → for an LFS batch of a verified job: peek its body
    /// and enforce again → forward | refuse.
    async fn proxy(
        &self,
        snapshot: &Snapshot,
        parts: Parts,
        body: Body,
        peer: SocketAddr,
        cx: &RequestCx,
    ) -> (Response<Body>, Outcome) {
        let core = self.core(snapshot);
        // Credentials GitLab reads from an API body are decided like those of the query string.
        let (mut body, in_body) = match self.body_credentials(&parts, body).await {
            Ok(read) => read,
            Err(refusal) => {
                let response = reject::response(&refusal, &cx.id, None, &Challenge::GitLab);
                return (response, Outcome::refused(&refusal, None, None));
            }
        };
        let in_body_decided = in_body.as_ref().and_then(|b| b.decided_on.as_ref());
        // A Terraform module download's wrapper token is decided by the job token it carries.
        let unwrapped = match unwrapped_terraform_token(&parts) {
            Ok(unwrapped) => unwrapped,
            Err(refusal) => {
                let response = reject::response(&refusal, &cx.id, Some(Family::Packages), &Challenge::GitLab);
                return (response, Outcome::refused(&refusal, None, None));
            }
        };
        let decided_on = in_body_decided.or(unwrapped.as_ref());
        let mut enforced = self.enforce(&core, decided_on.unwrap_or(&parts), None).await;
        // The credential is checked before any body is read: only a verified job's batch is peeked.
        if lfs::is_batch(&parts.method, parts.uri.path()) && enforced.verdict.claims().is_some() {
            match self.peek_lfs_batch(body).await {
                Ok((peeked, operation)) => {
                    body = peeked;
                    enforced = self.enforce(&core, &parts, Some(operation)).await;
                }
                Err(refusal) => {
                    let response = reject::response(&refusal, &cx.id, Some(Family::Lfs), &Challenge::GitLab);
                    return (
                        response,
                        Outcome::refused(&refusal, enforced.request, enforced.verdict.claims().cloned()),
                    );
                }
            }
        }
        let summary = enforced.verdict.summary();
        let family = enforced.request.as_ref().map(|r| r.family);
        // Unmatched non-job traffic goes to git's upstream, the fallback for every family.
        let upstream = &self.upstreams[family.unwrap_or(Family::Git)];
        let refusal = match &enforced.verdict {
            Verdict::Refuse(refusal, _) => Some(refusal.clone()),
            Verdict::Allow(..) | Verdict::WouldDeny(..) if crate::forward::wants_upgrade(&parts.headers) => {
                Some(Refusal::new(Reason::UpgradeRefused, "a protocol upgrade with a job credential: what travels over it cannot be decided, so only non-job traffic is upgraded"))
            }
            _ if in_body_decided.is_some() && !upstream.passes_credentials() => {
                Some(Refusal::new(Reason::CredentialInBody, "a credential in the request body cannot be taken out before forwarding (credentials: strip or replace); send it in a header"))
            }
            // jobgate's own credential is presented only where the policy decided the actual target.
            Verdict::Allow(..) | Verdict::WouldDeny(..) if upstream.presents_own_credential() && !enforced.request.as_ref().is_some_and(|r| r.target.is_single()) => {
                Some(Refusal::new(Reason::UnresolvedTarget, "group and instance targets are not decided, so jobgate's own upstream credential is not presented for them"))
            }
            _ => None,
        };
        if let Some(refusal) = refusal {
            drain(body).await;
            let challenge = Challenge::for_request(&parts, enforced.request.as_ref(), self.registry.as_ref());
            let response = reject::response(&refusal, &cx.id, family, &challenge);
            let summary = Summary { disposition: Disposition::Deny, enforced: true, reason: refusal.reason() };
            return (response, Outcome::enforced(enforced, summary));
        }
        // Beyond the job token's rights, the job's user's impersonation token goes instead.
        let (credential, impersonated) = match self.impersonation(upstream, &enforced, &parts.headers).await {
            Ok(elevated) => elevated.unzip(),
            Err(refusal) => {
                drain(body).await;
                let response = reject::response(&refusal, &cx.id, family, &Challenge::GitLab);
                let summary = Summary { disposition: Disposition::Deny, enforced: true, reason: refusal.reason() };
                return (response, Outcome::enforced(enforced, summary));
            }
        };
        let identity = match &enforced.verdict {
            Verdict::Allow(claims, permit) => Some((claims.claims(), permit.scopes())),
            Verdict::WouldDeny(claims, _) => Some((claims.claims(), ScopeSet::EMPTY)),
            Verdict::Passthrough | Verdict::Refuse(..) => None,
        };
        let upgrade = matches!(enforced.verdict, Verdict::Passthrough);
        let upstream_credential = match impersonated {
            Some(id) => Some(format!("impersonation:{id}").into()),
            None => identity.is_some().then(|| upstream.credential_kind().into()),
        };
        let forwarded = upstream
            .forward(parts, body, &ForwardContext { peer, request_id: &cx.id, identity, upgrade, credential })
            .await;
        match forwarded {
            Ok(mut response) => {
                if impersonated.is_some() {
                    reject::mark_upstream_refusal(&mut response);
                }
                (response, Outcome { upstream_credential, ..Outcome::enforced(enforced, summary) })
            }
            Err(e) => {
                // 502, 504 or 500: no challenge applies; or the body was cut off at a credential.
                let refusal = match in_body.as_ref().and_then(|b| b.cut.as_ref()) {
                    Some(cut) if cut.load(std::sync::atomic::Ordering::Acquire) => {
                        Refusal::new(Reason::CredentialInBody, "a credential past the inspected bytes of the body: the body was cut off, the request not completed")
                    }
                    _ => Refusal::from(e),
                };
                let response = reject::response(&refusal, &cx.id, family, &Challenge::GitLab);
                (response, Outcome::enforced(enforced, Summary { reason: refusal.reason(), ..summary }))
            }
        }
    }

    /// For an allowed job request on an `impersonate` upstream that goes beyond GitLab's job-token
    /// rules: the user's impersonation token in the client's form, and its id.
    async fn impersonation(
        &self,
        upstream: &Upstream,
        enforced: &Enforced,
        headers: &http::HeaderMap,
    ) -> Result<Option<((http::HeaderName, http::HeaderValue), u64)>, Refusal> {
        let (Verdict::Allow(claims, _), Some(request), Some(kind)) =
            (&enforced.verdict, &enforced.request, enforced.credential)
        else {
            return Ok(None);
        };
        let Some(scope) = upstream
            .impersonates()
            .then(|| crate::enforce::elevate::elevation(request, claims.claims(), kind))
            .flatten()
        else {
            return Ok(None);
        };
        if !request.target.is_single() {
            return Err(Refusal::new(
                Reason::UnresolvedTarget,
                "group and instance targets are not decided, so no user's token is presented for them",
            ));
        }
        let (Some(gitlab), Some(impersonation)) = (&self.gitlab, self.gitlab.as_ref().and_then(GitLab::impersonation))
        else {
            return Err(Refusal::new(
                Reason::InternalError,
                "credentials: impersonate without gitlab.admin_token_file",
            ));
        };
        let held = impersonation.token(gitlab, claims.claims(), scope, unix_now()).await?;
        let presented = crate::enforce::elevate::presented(headers, claims.claims().user_login.as_deref(), &held.token);
        let presented = presented
            .ok_or_else(|| Refusal::new(Reason::InternalError, "GitLab's impersonation token is no header value"))?;
        Ok(Some((presented, held.id)))
    }

    /// `enforce` at the current time, and once more after a refetch when the token's `kid` was unknown
    /// (a rotated-in key is usable on the first request that needs it) or after asking GitLab about
    /// one of its own job tokens.
    async fn enforce(&self, core: &Core<'_>, parts: &Parts, batch: Option<lfs::BatchOperation>) -> Enforced {
        let mut enforced = enforce(core, parts, batch, unix_now(), &mut NoTrace);
        if let Some(source) = enforced.unknown_kid.and_then(|i| self.key_sources.get(i)) {
            if source.refetch_for_unknown_kid().await {
                return enforce(core, parts, batch, unix_now(), &mut NoTrace);
            }
        }
        // At most two questions: whose token it is, then the user's role in the target.
        for _ in 0..2 {
            let Some(lookup) = enforced.gitlab_lookup.take() else { break };
            match self.resolve(&lookup).await {
                Ok(()) => enforced = enforce(core, parts, batch, unix_now(), &mut NoTrace),
                Err(refusal) => {
                    enforced.verdict = Verdict::Refuse(refusal, None);
                    break;
                }
            }
        }
        if enforced.gitlab_lookup.is_some() {
            enforced.verdict =
                Verdict::Refuse(Refusal::new(Reason::GitlabUnavailable, "GitLab's answers did not settle"), None);
        }
        enforced
    }

    /// Asks GitLab what `enforce` needs to know (the answer lands where `enforce` reads it).
    async fn resolve(&self, lookup: &Lookup) -> Result<(), Refusal> {
        let gitlab =
            self.gitlab.as_ref().ok_or_else(|| Refusal::new(Reason::GitlabUnavailable, "no GitLab is configured"))?;
        match lookup {
            Lookup::Token(token) => gitlab.resolve(token, unix_now()).await,
            Lookup::Role(key) => gitlab.resolve_role(key, unix_now()).await,
        }
        .map_err(Refusal::from)
    }

    /// For an API request with a body GitLab reads parameters from: reads it (bounded like the LFS
    /// peek) for credential parameters. Returns the body to forward and, when it held credentials,
    /// the request to decide on (the credentials as query parameters) and, for a body larger than
    /// the bound, the flag its scanner sets when it cuts the rest off at a further credential.
    async fn body_credentials(&self, parts: &Parts, body: Body) -> Result<(Body, Option<InBody>), Refusal> {
        use hyper::body::Body as _;
        let kind = match body_credentials::kind(parts) {
            Ok(Some(kind)) if !body.is_end_stream() => kind,
            Ok(_) => return Ok((body, None)),
            Err(why) => return Err(Refusal::new(Reason::BadRequest, why)),
        };
        let limit = self.peek.credential_bytes;
        let mut body = body;
        let (bytes, ended) = self.read_prefix(&mut body, limit, "API request body").await?;
        let uninspected = |why: String| {
            Refusal::new(Reason::BodyNotInspected, format!("the body may hold a credential GitLab would read: {why}"))
        };
        let (body, found, cut) = if ended {
            let found = body_credentials::params(&kind, &bytes).map_err(|why| Refusal::new(Reason::BadRequest, why))?;
            (body::full(bytes), found, None)
        } else {
            let mut scanner = body_credentials::Streaming::new(&kind).ok_or_else(|| {
                uninspected(format!("a form body larger than {limit} bytes (limits.body_credential_bytes)"))
            })?;
            scanner.feed(&bytes).map_err(uninspected)?;
            let found = scanner.decided().map_err(uninspected)?;
            let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let scanned = body_credentials::Scanned { head: Some(bytes), rest: body, scanner, cut: cut.clone() };
            (http_body_util::BodyExt::boxed(scanned), found, Some(cut))
        };
        let decided_on = if found.is_empty() { None } else { Some(with_params(parts, &found)?) };
        Ok((body, Some(InBody { decided_on, cut })))
    }

    /// Reads `body` up to `limit` bytes (the frame that crosses it included), within the peek
    /// deadline and the process-wide budget: the bytes, and whether the body ended within them.
    async fn read_prefix(&self, body: &mut Body, limit: usize, what: &str) -> Result<(Bytes, bool), Refusal> {
        use http_body_util::BodyExt;
        use hyper::body::Body as _;
        // The budget holds what can arrive: the declared length when smaller than the bound.
        let expected = body.size_hint().upper().and_then(|n| usize::try_from(n).ok()).map_or(limit, |n| n.min(limit));
        let kib = u32::try_from(expected.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let _budget = self.peek.budget.clone().try_acquire_many_owned(kib).map_err(|_| {
            Refusal::new(Reason::OverCapacity, format!("too many bodies being read ({what}); retry later"))
        })?;
        let read = async {
            let mut bytes = bytes::BytesMut::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) =
                    frame.map_err(|_| Refusal::new(Reason::BadRequest, format!("{what} unreadable")))?.into_data()
                {
                    bytes.extend_from_slice(&data);
                    if bytes.len() > limit {
                        return Ok((bytes.freeze(), false));
                    }
                }
            }
            Ok((bytes.freeze(), true))
        };
        tokio::time::timeout(self.peek.deadline, read)
            .await
            .map_err(|_| Refusal::new(Reason::BadRequest, format!("{what} not received in time")))?
    }

    /// Reads an LFS batch body — at most `limits.lfs_batch_bytes`, within `timeouts.body_peek_secs`,
    /// and only while the process-wide peek budget lasts — and finds its operation. The bytes are
    /// replayed upstream unchanged.
    async fn peek_lfs_batch(&self, mut body: Body) -> Result<(Body, lfs::BatchOperation), Refusal> {
        let limit = self.peek.bytes_per_request;
        let (bytes, ended) = self.read_prefix(&mut body, limit, "LFS batch body").await?;
        if !ended {
            return Err(Refusal::new(Reason::BadRequest, format!("LFS batch body larger than {limit} bytes")));
        }
        let operation = lfs::batch_operation(&bytes).map_err(|why| Refusal::new(Reason::BadRequest, why))?;
        Ok((body::full(bytes), operation))
    }
}

/// What an API body held: the request to decide on (its credentials as query parameters), and the
/// flag set when the rest of a large body was cut off at a further credential.
struct InBody {
    decided_on: Option<Parts>,
    cut: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// `parts` with `params` (encoded `name=value` pairs) added to its query string: the request as
/// GitLab's `params` see it, for the decision only (the forwarded request is unchanged).
fn with_params(parts: &Parts, params: &[String]) -> Result<Parts, Refusal> {
    let added = params.join("&");
    with_query(parts, &parts.uri.query().map_or_else(|| added.clone(), |q| format!("{q}&{added}")))
}

/// For a Terraform module download: the request with its wrapper token replaced by the credential
/// the wrapper carries, for the decision only.
fn unwrapped_terraform_token(parts: &Parts) -> Result<Option<Parts>, Refusal> {
    let Some(query) = crate::token::wrapped::terraform_file_query(parts.uri.path(), parts.uri.query()) else {
        return Ok(None);
    };
    let query = query.map_err(|why| Refusal::new(Reason::MalformedToken, why))?;
    with_query(parts, &query).map(Some)
}

/// `parts` with another query string, for the decision only.
fn with_query(parts: &Parts, query: &str) -> Result<Parts, Refusal> {
    let unreadable = |_| Refusal::new(Reason::BadRequest, "a credential that cannot be read as a parameter");
    let mut uri = parts.uri.clone().into_parts();
    uri.path_and_query = Some(
        format!("{}?{query}", parts.uri.path())
            .parse()
            .map_err(|e: http::uri::InvalidUri| unreadable(e.to_string()))?,
    );
    let uri = http::Uri::from_parts(uri).map_err(|e| unreadable(e.to_string()))?;
    let mut request = Request::builder()
        .method(parts.method.clone())
        .version(parts.version)
        .uri(uri)
        .body(())
        .map_err(|e| unreadable(e.to_string()))?;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    Ok(request.into_parts().0)
}

fn allowed() -> Summary {
    Summary { disposition: Disposition::Allow, enforced: true, reason: Reason::Granted }
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

#[path = "proxy_hosts.rs"]
mod hosts;

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
