//! Where each family's requests go and what they carry: the `upstreams` section of the process
//! config, with the URL check `forward` relies on.

use std::path::PathBuf;

use http::uri::{Authority, Scheme};
use http::Uri;
use serde::Deserialize;

use super::NonJob;
use crate::classify::Family;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstreams {
    /// Git smart HTTP, and the fallback for families without an upstream of their own and for
    /// unmatched non-job traffic.
    pub git: UpstreamConfig,
    /// Git LFS (batch API, object transfers, locks).
    pub lfs: Option<UpstreamConfig>,
    /// The container registry (`/v2/...`).
    pub registry: Option<UpstreamConfig>,
    /// Package registries (`/api/v4/.../packages/...`).
    pub packages: Option<UpstreamConfig>,
    /// The REST API (`/api/v4/...`).
    pub api: Option<UpstreamConfig>,
}

impl Upstreams {
    /// The upstream configured for `family`, if any (families without one use git's).
    pub fn get(&self, family: Family) -> Option<&UpstreamConfig> {
        match family {
            Family::Git => Some(&self.git),
            Family::Lfs => self.lfs.as_ref(),
            Family::Registry => self.registry.as_ref(),
            Family::Packages => self.packages.as_ref(),
            Family::Api => self.api.as_ref(),
        }
    }

    pub(super) fn get_mut(&mut self, family: Family) -> Option<&mut UpstreamConfig> {
        match family {
            Family::Git => Some(&mut self.git),
            Family::Lfs => self.lfs.as_mut(),
            Family::Registry => self.registry.as_mut(),
            Family::Packages => self.packages.as_mut(),
            Family::Api => self.api.as_mut(),
        }
    }

    /// Every configured upstream with its family.
    pub fn all(&self) -> impl Iterator<Item = (Family, &UpstreamConfig)> {
        Family::ALL.into_iter().filter_map(|family| self.get(family).map(|c| (family, c)))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port[/prefix]`, `https://host[:port][/prefix]` (with `tls:` for a private CA or
    /// a client certificate), or `unix:/path/to/socket` (GitLab Workhorse's socket, say).
    pub url: String,
    #[serde(default)]
    pub credentials: CredentialMode,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// How long to wait for the upstream's response headers.
    #[serde(default = "default_response_timeout")]
    pub response_timeout_secs: u64,
    #[serde(default = "default_pool_idle")]
    pub pool_max_idle_per_host: usize,
    /// How long an idle pooled connection may be reused. Keep it below the upstream's own keep-alive
    /// timeout (lighttpd and Apache: 5 s, puma: 20 s, nginx: 75 s): a connection the upstream closes
    /// just as a request with a streamed body goes out cannot be retried.
    #[serde(default = "default_pool_idle_timeout")]
    pub pool_idle_timeout_secs: u64,
    /// Requests in flight to this upstream at most (each holds one connection until its response
    /// body ends); beyond it, 503 at once. Without it, no bound.
    pub max_connections: Option<usize>,
    /// With `credentials: replace`: the header to set and the file holding its value.
    pub replace: Option<ReplaceCredential>,
    /// For an `https://` upstream: its CA, a client certificate, the name to verify.
    pub tls: Option<UpstreamTls>,
    /// This family's treatment of non-job traffic, overriding the top-level `non_job` (e.g.
    /// `passthrough` for LFS transfers that carry the LFS server's own tokens).
    pub non_job: Option<NonJob>,
    /// Leading path segments to remove before forwarding (`*` matches one segment), for backends that
    /// do not live under GitLab's paths (e.g. `/api/v4/projects/*/packages/npm`). GitLab itself needs none.
    pub strip_prefix: Option<String>,
}

/// The upstream credential `replace` mode sends instead of the job's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceCredential {
    /// e.g. `PRIVATE-TOKEN` or `Authorization`.
    pub header: String,
    /// A file holding the header's value (never inline in the config).
    pub value_file: PathBuf,
}

fn default_connect_timeout() -> u64 {
    5
}
fn default_response_timeout() -> u64 {
    300
}
fn default_pool_idle_timeout() -> u64 {
    4
}
fn default_pool_idle() -> usize {
    64
}

/// What happens to the job credential on the way upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialMode {
    /// The upstream sees the job credential as the client sent it.
    #[default]
    Passthrough,
    /// Every job credential (headers and `job_token` query parameter) is removed.
    Strip,
    /// The job's own token where GitLab's job-token rules cover the request; beyond them, an
    /// impersonation token of the job's user holding only the GitLab scope the permit needs
    /// (`gitlab.admin_token_file` mints it), in the form the client used.
    Impersonate,
    /// As `strip`, then the configured upstream credential is set and identity headers
    /// (`X-Jobgate-Job-Id`, `-Project-Path`, `-User-Id`, `-Scopes`, `-Request-Id`) are added.
    Replace,
}

/// Checks an upstream URL: `http://host[:port][/prefix]`, no query, no user info.
///
/// # Errors
/// A message saying what is wrong with the URL.
pub fn parse_upstream_url(url: &str) -> Result<UpstreamAddr, String> {
    if let Some(socket) = url.strip_prefix("unix:") {
        let socket = PathBuf::from(socket.strip_prefix("//").unwrap_or(socket));
        if !socket.is_absolute() {
            return Err(format!("{url:?}: a unix: upstream names the socket by its absolute path (unix:/var/opt/gitlab/gitlab-workhorse/sockets/socket)"));
        }
        return Ok(UpstreamAddr {
            scheme: Scheme::HTTP,
            authority: Authority::from_static("localhost"),
            prefix: String::new(),
            socket: Some(socket),
        });
    }
    let uri: Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
        _ => return Err(format!("{url:?}: upstreams are http://, https:// or unix:/path")),
    };
    let authority = uri.authority().cloned().ok_or_else(|| format!("{url:?} has no host"))?;
    if authority.as_str().contains('@') || uri.query().is_some() {
        return Err(format!("{url:?} must not carry user info or a query"));
    }
    Ok(UpstreamAddr { scheme, authority, prefix: uri.path().trim_end_matches('/').to_owned(), socket: None })
}

/// Where an upstream is, from its `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    pub scheme: Scheme,
    /// The URL's host (`localhost` for a socket; the request keeps the client's `Host` either way).
    pub authority: Authority,
    /// A path prefix put before every request path.
    pub prefix: String,
    /// `unix:`: the socket's path.
    pub socket: Option<PathBuf>,
}

/// TLS to an `https://` upstream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM CA bundle trusted for the upstream instead of the system roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain and its key, for an upstream that asks for one (mutual TLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The name the upstream's certificate must carry (and SNI sends), when not the URL's host.
    pub server_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        assert_eq!(parse_upstream_url("http://127.0.0.1:8080/git/").unwrap().prefix, "/git");
        assert_eq!(parse_upstream_url("https://gitlab.internal").unwrap().scheme, Scheme::HTTPS);
        assert_eq!(
            parse_upstream_url("unix:/run/workhorse.sock").unwrap().socket,
            Some(PathBuf::from("/run/workhorse.sock"))
        );
        assert_eq!(
            parse_upstream_url("unix:///run/workhorse.sock").unwrap().socket,
            Some(PathBuf::from("/run/workhorse.sock"))
        );
        for bad in ["ftp://x", "http://u:p@x", "http://x/?q=1", "x", "unix:relative.sock"] {
            assert!(parse_upstream_url(bad).is_err(), "{bad}");
        }
    }
}
