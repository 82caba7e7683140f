//! `forward`: sends an allowed request upstream and streams both bodies (never buffered). It owns
//! header hygiene — hop-by-hop and client-sent identity headers removed, `X-Forwarded-*` set by us,
//! `Host` kept — and the credential mode. It decides nothing: by the time a request arrives here,
//! `enforce` has allowed it.

pub(crate) mod connect;
pub mod credential;
mod headers;

pub use headers::remove_hop_by_hop;
use headers::{is_identity_header, join_cookies, remove_matching, without_credentials};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use crate::classify::{Family, FamilyMap};
use crate::config::{parse_upstream_url, CredentialMode, ReplaceCredential, UpstreamAddr, UpstreamConfig, Upstreams};
use crate::edge::body::{self, Body};
use crate::edge::upstream::connect::{Holding, Transport};
use crate::infra::metrics::Metrics;
use crate::reason::Reason;
use crate::refusal::Refusal;
use crate::scope::ScopeSet;
use crate::token::claims::Claims;
use crate::token::extract::is_credential_header;

/// One upstream: where it is, how long to wait, what to do with credentials.
pub struct Upstream {
    /// The family it serves first (for messages; families without one share git's).
    family: &'static str,
    /// `max_connections`: one permit per request in flight, held until its response body ends.
    in_flight: Option<Arc<tokio::sync::Semaphore>>,
    scheme: Scheme,
    authority: Authority,
    prefix: String,
    client: Transport,
    response_timeout: Duration,
    credentials: CredentialMode,
    seconds: prometheus::Histogram,
    /// Upstream failures, by [`ForwardError::kind`].
    errors: [prometheus::IntCounter; 3],
    /// `replace` mode: the header and value sent instead of the job credential.
    replacement: Option<(HeaderName, HeaderValue)>,
    strip_prefix: Option<Vec<String>>,
}

/// Per-request facts `forward` writes into the upstream request.
pub struct ForwardContext<'a> {
    pub peer: SocketAddr,
    pub request_id: &'a str,
    /// The verified job and its effective scopes, for `replace` mode's identity headers.
    pub identity: Option<(&'a Claims, ScopeSet)>,
    /// The request may be upgraded (WebSocket): its `Upgrade` is forwarded and, when the upstream
    /// answers 101, both connections are joined. Only for non-job traffic.
    pub upgrade: bool,
    /// `impersonate` mode, beyond the job token's rights: the header that replaces every credential
    /// of the request (the user's impersonation token, in the client's form).
    pub credential: Option<(HeaderName, HeaderValue)>,
}

/// Whether the request asks to switch protocols (HTTP/1.1 `Connection: upgrade` with `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Why a request did not reach the upstream, and whose fault that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot connect to the {0} upstream")]
    Connect(&'static str),
    #[error("the {0} upstream did not answer in time")]
    Timeout(&'static str),
    #[error("the connection to the {0} upstream failed")]
    Failed(&'static str),
    /// The upstream's `max_connections` are all in use.
    #[error("the {0} upstream has its max_connections requests in flight; retry later")]
    Busy(&'static str),
    /// jobgate could not build the upstream request: ours, not the client's.
    #[error("request cannot be forwarded")]
    Internal,
}

impl ForwardError {
    /// Index into the per-kind counters, and the metric's `kind` label.
    const KINDS: [&'static str; 3] = ["connect", "timeout", "other"];

    fn kind(self) -> Option<usize> {
        match self {
            ForwardError::Connect(_) => Some(0),
            ForwardError::Timeout(_) => Some(1),
            ForwardError::Failed(_) => Some(2),
            ForwardError::Busy(_) | ForwardError::Internal => None,
        }
    }
}

impl From<ForwardError> for Refusal {
    fn from(e: ForwardError) -> Refusal {
        let reason = match e {
            ForwardError::Connect(_) | ForwardError::Failed(_) => Reason::UpstreamUnavailable,
            ForwardError::Timeout(_) => Reason::UpstreamTimeout,
            ForwardError::Busy(_) => Reason::OverCapacity,
            ForwardError::Internal => Reason::InternalError,
        };
        Refusal::new(reason, e.to_string())
    }
}

impl Upstream {
    /// Builds the pooled client for one upstream.
    ///
    /// # Errors
    /// An invalid URL (already refused by config validation).
    pub fn new(config: &UpstreamConfig, family: &'static str, metrics: &Metrics) -> Result<Upstream, String> {
        let UpstreamAddr { scheme, authority, prefix, socket } = parse_upstream_url(&config.url)?;
        let client = Transport::new(config, &scheme, socket)?;
        Ok(Upstream {
            family,
            in_flight: config
                .max_connections
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n.min(tokio::sync::Semaphore::MAX_PERMITS)))),
            scheme,
            authority,
            prefix,
            client,
            response_timeout: Duration::from_secs(config.response_timeout_secs),
            credentials: config.credentials,
            seconds: metrics.upstream_seconds.with_label_values(&[family]),
            errors: ForwardError::KINDS.map(|kind| metrics.upstream_errors.with_label_values(&[family, kind])),
            replacement: config.replace.as_ref().map(replacement).transpose()?,
            strip_prefix: config
                .strip_prefix
                .as_ref()
                .map(|p| p.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect()),
        })
    }

    /// Whether the client's credentials reach the upstream as sent (`credentials: passthrough`):
    /// otherwise they are taken out of headers and query, which a body's cannot be.
    pub fn passes_credentials(&self) -> bool {
        self.credentials == CredentialMode::Passthrough
    }

    /// One upstream per family: each configured one, git's for the others.
    ///
    /// # Errors
    /// An invalid URL or replacement credential, naming the family.
    pub fn for_families(config: &Upstreams, metrics: &Metrics) -> Result<FamilyMap<Arc<Upstream>>, String> {
        let built = config
            .all()
            .map(|(family, c)| {
                Upstream::new(c, family.id(), metrics)
                    .map(|u| (family, Arc::new(u)))
                    .map_err(|e| format!("upstreams.{}: {e}", family.id()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let find = |family: Family| built.iter().find(|(f, _)| *f == family).map(|(_, u)| u.clone());
        let git = find(Family::Git).ok_or("upstreams.git is required")?;
        Ok(FamilyMap::from_fn(|family| find(family).unwrap_or_else(|| git.clone())))
    }

    /// How this upstream treats credentials (`credentials:`).
    pub fn mode(&self) -> CredentialMode {
        self.credentials
    }

    /// The upstreams of `hosts.passthrough`, in its order.
    ///
    /// # Errors
    /// As [`Upstream::new`], naming the entry.
    pub fn for_passthrough_hosts(
        hosts: Option<&crate::config::HostsConfig>,
        metrics: &Metrics,
    ) -> Result<Vec<Arc<Upstream>>, String> {
        let hosts = hosts.map_or(&[][..], |h| &h.passthrough[..]);
        hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                Upstream::new(&host.upstream, "passthrough", metrics)
                    .map(Arc::new)
                    .map_err(|e| format!("hosts.passthrough[{i}]: {e}"))
            })
            .collect()
    }

    /// Forwards one request and returns the upstream's response with its body streaming.
    ///
    /// # Errors
    /// A [`ForwardError`]; each upstream failure is counted by kind.
    pub async fn forward(
        &self,
        mut parts: Parts,
        body: Body,
        ctx: &ForwardContext<'_>,
    ) -> Result<Response<Body>, ForwardError> {
        let permit = match &self.in_flight {
            Some(limit) => Some(limit.clone().try_acquire_owned().map_err(|_| ForwardError::Busy(self.family))?),
            None => None,
        };
        let upgrade = (ctx.upgrade && wants_upgrade(&parts.headers)).then(|| {
            (parts.extensions.remove::<hyper::upgrade::OnUpgrade>(), parts.headers.get(header::UPGRADE).cloned())
        });
        let mut request = self.upstream_request(parts, body, ctx)?;
        if let Some((_, Some(protocol))) = &upgrade {
            request.headers_mut().insert(header::UPGRADE, protocol.clone());
            request.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Err(_) => Err(ForwardError::Timeout(self.family)),
            Ok(Err(e)) => {
                tracing::warn!(request_id = ctx.request_id, upstream = self.family, error = %crate::error::chain(&e), "upstream request failed");
                Err(if e.is_connect() { ForwardError::Connect(self.family) } else { ForwardError::Failed(self.family) })
            }
            Ok(Ok(response)) => Ok(response),
        };
        let response = result.inspect_err(|e| {
            if let Some(counter) = e.kind().and_then(|k| self.errors.get(k)) {
                counter.inc();
            }
        })?;
        self.seconds.observe(started.elapsed().as_secs_f64());
        let mut response = response;
        if let (Some((Some(client), _)), StatusCode::SWITCHING_PROTOCOLS) = (upgrade, response.status()) {
            let upstream = hyper::upgrade::on(&mut response);
            let (family, request_id) = (self.family, ctx.request_id.to_owned());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::try_join!(client, upstream) {
                    Ok((client, upstream)) => {
                        let _ =
                            tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(upstream)).await;
                    }
                    Err(e) => tracing::warn!(request_id, upstream = family, error = %e, "upgrade failed"),
                }
            });
            // A 101 keeps its `Upgrade` and `Connection`: they are the answer.
            let (parts, _) = response.into_parts();
            return Ok(Response::from_parts(parts, body::empty()));
        }
        let (mut parts, incoming) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let body = match permit {
            Some(permit) => http_body_util::BodyExt::boxed(Holding { body: body::stream(incoming), _permit: permit }),
            None => body::stream(incoming),
        };
        Ok(Response::from_parts(parts, body))
    }

    fn upstream_request(
        &self,
        mut parts: Parts,
        body: Body,
        ctx: &ForwardContext<'_>,
    ) -> Result<Request<Body>, ForwardError> {
        let strips = match self.credentials {
            CredentialMode::Passthrough => false,
            CredentialMode::Strip | CredentialMode::Replace => true,
            CredentialMode::Impersonate => ctx.credential.is_some(),
        };
        let path = self.upstream_path(parts.uri.path());
        let target = match (strips, parts.uri.query()) {
            (true, Some(q)) => {
                let kept = without_credentials(q);
                if kept.is_empty() {
                    format!("{}{path}", self.prefix)
                } else {
                    format!("{}{path}?{kept}", self.prefix)
                }
            }
            (false, Some(q)) => format!("{}{path}?{q}", self.prefix),
            (_, None) => format!("{}{path}", self.prefix),
        };
        // HTTP/2 clients send `:authority` instead of `Host`; the upstream still needs the host name.
        let host = parts
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
        parts.uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(target)
            .build()
            .map_err(bad)?;
        parts.version = Version::HTTP_11;
        let headers = &mut parts.headers;
        remove_hop_by_hop(headers);
        remove_matching(headers, is_identity_header);
        join_cookies(headers);
        if strips {
            remove_matching(headers, is_credential_header);
        }
        if let Some((name, value)) = &ctx.credential {
            headers.insert(name.clone(), value.clone());
        }
        // jobgate's own credential goes only on job requests the policy decided.
        if let (Some((name, value)), Some((claims, scopes))) = (&self.replacement, ctx.identity) {
            headers.insert(name.clone(), value.clone());
            let identity = [
                ("x-jobgate-job-id", claims.job_id.to_string()),
                ("x-jobgate-project-path", claims.project_path.to_string()),
                ("x-jobgate-user-id", claims.user_id.map_or_else(String::new, |u| u.to_string())),
                ("x-jobgate-scopes", scopes.to_string()),
                ("x-jobgate-request-id", ctx.request_id.to_owned()),
            ];
            for (name, value) in identity {
                headers.insert(HeaderName::from_static(name), HeaderValue::from_str(&value).map_err(bad)?);
            }
        }
        let peer_ip: HeaderValue = ctx.peer.ip().to_string().parse().map_err(bad)?;
        headers.insert(HeaderName::from_static("x-forwarded-for"), peer_ip);
        headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("https"));
        if let Some(host) = host {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
            headers.insert(header::HOST, host);
        }
        headers.insert(HeaderName::from_static("x-request-id"), HeaderValue::from_str(ctx.request_id).map_err(bad)?);
        Ok(Request::from_parts(parts, body))
    }
}

impl Upstream {
    /// The request path with `strip_prefix`'s leading segments removed (when they all match).
    fn upstream_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        let Some(prefix) = &self.strip_prefix else { return path.into() };
        let mut rest = path;
        for want in prefix {
            let Some((segment, tail)) = rest.strip_prefix('/').map(|r| r.split_once('/').unwrap_or((r, ""))) else {
                return path.into();
            };
            if want != "*" && want != segment {
                return path.into();
            }
            rest = if tail.is_empty() { "" } else { &rest[segment.len() + 1..] };
        }
        if rest.is_empty() {
            "/".into()
        } else {
            rest.into()
        }
    }
}

/// Reads `replace`'s value file once, at start.
fn replacement(replace: &ReplaceCredential) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(replace.header.as_bytes())
        .map_err(|e| format!("replace.header {:?}: {e}", replace.header))?;
    let text =
        std::fs::read_to_string(&replace.value_file).map_err(|e| format!("{}: {e}", replace.value_file.display()))?;
    let mut value = HeaderValue::from_str(text.trim()).map_err(|e| format!("{}: {e}", replace.value_file.display()))?;
    value.set_sensitive(true);
    Ok((name, value))
}

fn bad<E>(_: E) -> ForwardError {
    ForwardError::Internal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_removes_matching_leading_segments_only() {
        let config: UpstreamConfig =
            serde_yaml::from_str("{url: 'http://127.0.0.1:1', strip_prefix: /api/v4/projects/*/packages/npm}").unwrap();
        let up = Upstream::new(&config, "packages", &Metrics::new()).unwrap();
        assert_eq!(up.upstream_path("/api/v4/projects/42/packages/npm/@acme%2flib"), "/@acme%2flib");
        assert_eq!(
            up.upstream_path("/api/v4/projects/acme%2Fapp/packages/npm/lib/-/lib-1.0.0.tgz"),
            "/lib/-/lib-1.0.0.tgz"
        );
        assert_eq!(up.upstream_path("/api/v4/projects/42/packages/npm"), "/");
        assert_eq!(
            up.upstream_path("/api/v4/projects/42/packages/pypi/simple"),
            "/api/v4/projects/42/packages/pypi/simple"
        );
    }
}
