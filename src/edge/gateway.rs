//! The public listener's request edge: [`Gateway::handle`] loads one snapshot, picks the route by
//! host and path — the registry token realms and `/-/jwks` (`realms.rs`), a passed-through host, or
//! the proxy path (`proxy.rs`) — turns an early [`Exit`] into its answer (`exit.rs`), and always
//! ends in `record`. It is generic over the request body, so the whole pipeline runs in-process in
//! tests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response};

use super::body::{self, Body, BoxError};
use super::exit::Exit;
use super::record::{Outcome, Recorder};
use super::reject;
use super::upstream::Upstream;
use crate::classify::{FamilyMap, HostRole};
use crate::enforce::{Core, NonJobRules};
use crate::gitlab::GitLab;
use crate::infra::audit::Audit;
use crate::infra::metrics::Metrics;
use crate::keys::KeySource;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::revoke::store::Revocations;
use crate::snapshot::Snapshot;
use crate::token::registry::RegistryTokens;
use crate::token::verify::Verifier;

/// A route's answer and its record.
pub(super) type Answer = (Response<Body>, Outcome);

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

impl GatewayParts {
    /// The parts with nothing optional: one issuer set, the upstreams, no registry realm, no GitLab,
    /// non-job traffic refused, revocations in memory, default body limits. Tests and tools start here
    /// and set what they need (`GatewayParts { registry, ..GatewayParts::new(…) }`).
    pub fn new(
        snapshot: Snapshot,
        verifier: Verifier,
        upstreams: FamilyMap<Arc<Upstream>>,
        audit: Audit,
        metrics: Arc<Metrics>,
    ) -> GatewayParts {
        GatewayParts {
            snapshot,
            verifier,
            key_sources: Vec::new(),
            revocations: Arc::new(Revocations::in_memory()),
            registry: None,
            gitlab: None,
            registry_at_gitlab: None,
            non_job: NonJobRules::uniform(crate::config::NonJob::Reject),
            upstreams,
            passthrough: Vec::new(),
            audit,
            metrics,
            peek: BodyPeek::new(&Default::default(), &Default::default()),
        }
    }
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
    pub(super) snapshot: ArcSwap<Snapshot>,
    pub(super) verifier: Verifier,
    pub(super) key_sources: Vec<Arc<KeySource>>,
    pub(super) revocations: Arc<Revocations>,
    pub(super) registry: Option<RegistryTokens>,
    pub(super) gitlab: Option<GitLab>,
    pub(super) registry_at_gitlab: Option<String>,
    pub(super) non_job: NonJobRules,
    pub(super) upstreams: FamilyMap<Arc<Upstream>>,
    pub(super) passthrough: Vec<Arc<Upstream>>,
    pub(super) record: Recorder,
    pub(super) metrics: Arc<Metrics>,
    pub(super) peek: BodyPeek,
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
        let answered = match self.route(&parts, role) {
            Route::Misdirected(refusal) => Err(Exit::new(refusal)),
            Route::Passthrough(i) => self.pass(i, parts, body, peer, &cx).await,
            Route::TokenRealm => self.token_realm(&snapshot, &parts, peer).await,
            Route::GitLabRealm => self.gitlab_realm(&snapshot, parts, body, peer, &cx).await,
            Route::Jwks => {
                let jwks = self.registry.as_ref().map(RegistryTokens::jwks).unwrap_or_default();
                Ok((reject::json(&jwks), Outcome::answered(None, None)))
            }
            Route::Proxy => self.proxy(&snapshot, parts, body, peer, &cx).await,
        };
        let (mut response, outcome) = match answered {
            Ok(answer) => answer,
            Err(exit) => self.exit(&cx, exit).await,
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
        let response = reject::response(&refusal, &cx.id, None, &reject::Challenge::GitLab);
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
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
