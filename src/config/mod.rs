//! The static process configuration: one YAML file, unknown keys rejected, relative paths resolved
//! against the file's folder, validated once. It owns no runtime state and reads no other file.

use std::path::{Path, PathBuf};

use http::uri::Scheme;
use http::Uri;
use serde::Deserialize;

use crate::classify::Family;

mod limits;
mod listener;
mod registry;
mod revocations;
mod upstream;

use crate::token::Alg;
pub use limits::{AuditSink, Limits, Timeouts};
pub use listener::{CertPair, HostsConfig, Listen, TlsFiles};
pub use registry::{RegistryAuthConfig, RegistryTokenSource};
pub use revocations::{RedisConfig, RevocationsConfig};
pub use upstream::{
    parse_upstream_url, CredentialMode, ReplaceCredential, UpstreamAddr, UpstreamConfig, UpstreamTls, Upstreams,
};

/// An error in a configuration file; the message names the file and, where known, line and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Parse(#[from] crate::yaml::YamlError),
    /// Every problem found, each line naming the file.
    #[error("{}", problems.iter().map(|p| format!("{}: {p}", path.display())).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Listen,
    pub tls: TlsFiles,
    pub issuers: Vec<IssuerConfig>,
    /// The GitLab instance in front of which jobgate stands (for GitLab's own job tokens).
    pub gitlab: Option<GitLabConfig>,
    pub policy_dir: PathBuf,
    /// What to do with requests that carry no job credential.
    #[serde(default)]
    pub non_job: NonJob,
    pub upstreams: Upstreams,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub audit: AuditSink,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub revocations: RevocationsConfig,
    /// API endpoints opened to job tokens beyond the built-in ones (everything else under `/api/` is
    /// denied to them). Reads only; decided on the job's own project.
    #[serde(default)]
    pub api_routes: Vec<ApiRoute>,
    /// The registry token realm (`/jwt/auth`) and jobgate's own registry tokens.
    pub registry_auth: Option<RegistryAuthConfig>,
    /// The host names jobgate answers for, by role; without it every host is served alike.
    pub hosts: Option<HostsConfig>,
}

/// One extra API endpoint: an exact path, a read method, and the scope it needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiRoute {
    pub method: String,
    pub path: String,
    pub scope: crate::scope::Scope,
}

/// The admin listener's credential for state-changing routes (`POST /-/reload`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// A file holding the bearer token; without it, state-changing admin routes are refused.
    pub token_file: Option<PathBuf>,
    /// A file holding the secret GitLab sends in `X-Gitlab-Token` with job events; without it the
    /// webhook receiver is off.
    pub webhook_secret_file: Option<PathBuf>,
}

/// The GitLab instance jobgate fronts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitLabConfig {
    /// `https://gitlab.example.com`; plain `http://` only for a loopback address.
    pub url: String,
    /// PEM CA bundle trusted for `url` instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// jobgate's own read-only API token (`read_api`): with it, a GitLab job token's `ref_protected`
    /// comes from the project's protected branches and tags, and the user's role in the job's project
    /// from its members. Without it, every ref counts as unprotected and roles come from the policy.
    pub api_token_file: Option<PathBuf>,
    /// An administrator's token (`api` scope) for `credentials: impersonate`: jobgate mints
    /// impersonation tokens of jobs' users with it. It never leaves jobgate; keep the file 0600.
    pub admin_token_file: Option<PathBuf>,
}

/// How GitLab's job tokens are looked up (`GET /api/v4/job`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitLabJobTokens {
    /// How long GitLab's answer for a token is trusted (a finished job's token dies within it, or at
    /// once through the job-events webhook).
    #[serde(default = "default_gitlab_cache")]
    pub cache_secs: u64,
    /// Lookups of tokens not yet known, process-wide, per second; beyond it 503.
    #[serde(default = "default_gitlab_budget")]
    pub lookups_per_sec: u32,
}

fn default_gitlab_cache() -> u64 {
    60
}
fn default_gitlab_budget() -> u32 {
    50
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// A short name for logs and metrics.
    pub name: String,
    /// GitLab's own job tokens, verified by asking the `gitlab:` instance (then no JWT settings).
    pub gitlab_job_tokens: Option<GitLabJobTokens>,
    /// The exact `iss` claim value.
    #[serde(default)]
    pub iss: String,
    /// Accepted `aud` values; a token must name at least one.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// A JWKS file with the issuer's public keys, watched for changes.
    pub jwks_file: Option<PathBuf>,
    /// An HTTPS URL serving the issuer's JWKS (GitLab: `https://HOST/oauth/discovery/keys`), polled.
    pub jwks_url: Option<String>,
    /// Find `jwks_uri` through `ISS/.well-known/openid-configuration` (`iss` must be an HTTPS URL).
    #[serde(default)]
    pub discovery: bool,
    /// PEM CA bundle trusted for `jwks_url` / discovery instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Longest interval between fetches; a shorter `Cache-Control: max-age` wins (never under 1 s).
    #[serde(default = "default_refresh")]
    pub refresh_secs: u64,
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_secs: u64,
    /// After this long without a successful fetch the issuer fails closed.
    #[serde(default = "default_max_staleness")]
    pub max_staleness_secs: u64,
    /// After an unknown-`kid` refetch, further unknown `kid`s are refused without fetching for this long.
    #[serde(default = "default_cooldown")]
    pub unknown_kid_cooldown_secs: u64,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Alg>,
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Longest accepted `exp - iat`.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_secs: u64,
}

fn default_algorithms() -> Vec<Alg> {
    vec![Alg::RS256, Alg::ES256]
}
fn default_leeway() -> u64 {
    30
}
fn default_max_lifetime() -> u64 {
    24 * 3600
}
fn default_refresh() -> u64 {
    300
}
fn default_fetch_timeout() -> u64 {
    10
}
fn default_max_staleness() -> u64 {
    6 * 3600
}
fn default_cooldown() -> u64 {
    30
}

/// Treatment of traffic that is not job traffic (DESIGN.md §2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonJob {
    /// Fail closed: 401.
    #[default]
    Reject,
    /// Forward untouched; the upstream applies its own rules.
    Passthrough,
}

impl Config {
    /// Reads, parses and validates a config file.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, and the line for syntax, type and unknown-key errors.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config: Config = crate::yaml::parse(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { path: path.to_owned(), problems });
        }
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.tls.cert);
        resolve(&mut self.tls.key);
        for pair in &mut self.tls.certificates {
            resolve(&mut pair.cert);
            resolve(&mut pair.key);
        }
        resolve(&mut self.policy_dir);
        for issuer in &mut self.issuers {
            issuer.jwks_file.as_mut().map(resolve);
            issuer.ca_file.as_mut().map(resolve);
        }
        if let Some(gitlab) = self.gitlab.as_mut() {
            gitlab.ca_file.as_mut().map(resolve);
            gitlab.api_token_file.as_mut().map(resolve);
            gitlab.admin_token_file.as_mut().map(resolve);
        }
        if let Some(p) = &mut self.audit.file {
            resolve(p);
        }
        let registry_key = self.registry_auth.as_mut().and_then(|r| r.signing_key.as_mut());
        let (redis_password, answers_key) = match self.revocations.redis.as_mut() {
            Some(redis) => (redis.password_file.as_mut(), redis.answers_key_file.as_mut()),
            None => (None, None),
        };
        let files = [
            self.admin.token_file.as_mut(),
            self.admin.webhook_secret_file.as_mut(),
            self.revocations.file.as_mut(),
            registry_key,
            redis_password,
            answers_key,
        ];
        for p in files.into_iter().flatten() {
            resolve(p);
        }
        for family in Family::ALL {
            let Some(upstream) = self.upstreams.get_mut(family) else { continue };
            if let Some(replace) = upstream.replace.as_mut() {
                resolve(&mut replace.value_file);
            }
            if let Some(tls) = upstream.tls.as_mut() {
                for p in [tls.ca_file.as_mut(), tls.client_cert.as_mut(), tls.client_key.as_mut()].into_iter().flatten()
                {
                    resolve(p);
                }
            }
        }
    }

    /// The `gitlab:` block and the issuers that ask it.
    fn validate_gitlab(&self) -> Result<(), String> {
        let askers = self.issuers.iter().filter(|i| i.gitlab_job_tokens.is_some()).count();
        match (&self.gitlab, askers) {
            (None, 0) => return Ok(()),
            (None, _) => {
                return Err("issuers: gitlab_job_tokens needs the `gitlab:` block (url of the GitLab instance)".into())
            }
            (Some(_), n) if n > 1 => return Err("issuers: at most one gitlab_job_tokens issuer".into()),
            (Some(_), _) => {}
        }
        let Some(gitlab) = &self.gitlab else { return Ok(()) };
        let uri: Uri = gitlab.url.parse().map_err(|e| format!("gitlab.url {:?}: {e}", gitlab.url))?;
        if !https_or_loopback(&uri) {
            return Err(format!("gitlab.url {:?}: https:// (plain http:// only for a loopback address)", gitlab.url));
        }
        if uri.query().is_some() || uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(format!("gitlab.url {:?} must not carry user info or a query", gitlab.url));
        }
        Ok(())
    }

    /// Every problem of the file, not only the first.
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.issuers.is_empty() {
            problems.push("issuers: at least one issuer is required".into());
        }
        problems.extend(self.validate_gitlab().err());
        problems.extend(self.hosts.iter().flat_map(HostsConfig::problems));
        for (i, issuer) in self.issuers.iter().enumerate() {
            problems.extend(
                issuer.validate(&self.issuers[..i]).err().map(|e| format!("issuers[{i}] ({}): {e}", issuer.name)),
            );
        }
        for (family, upstream) in self.upstreams.all() {
            let name = family.id();
            match parse_upstream_url(&upstream.url) {
                Err(e) => problems.push(format!("upstreams.{name}.url: {e}")),
                Ok(addr) if upstream.tls.is_some() && addr.scheme != http::uri::Scheme::HTTPS => {
                    problems.push(format!("upstreams.{name}: `tls` goes with an https:// url"));
                }
                Ok(_) => {}
            }
            if let Some(tls) = &upstream.tls {
                if tls.client_cert.is_some() != tls.client_key.is_some() {
                    problems.push(format!("upstreams.{name}.tls: client_cert and client_key go together"));
                }
            }
            if upstream.credentials == CredentialMode::Impersonate
                && (family == Family::Registry || self.gitlab.as_ref().is_none_or(|g| g.admin_token_file.is_none()))
            {
                problems.push(format!("upstreams.{name}: `credentials: impersonate` needs gitlab.admin_token_file, and is not for the registry (its tokens come from the realm)"));
            }
            if (upstream.credentials == CredentialMode::Replace) != upstream.replace.is_some() {
                problems
                    .push(format!("upstreams.{name}: `replace` goes with `credentials: replace`, and only with it"));
            }
        }
        if let Some(auth) = &self.registry_auth {
            problems.extend(auth.problem(self));
        }
        if let Some(realm) = self.registry_auth.as_ref().and_then(|r| r.realm.as_ref()) {
            let ok = realm.parse::<Uri>().is_ok_and(|u| u.scheme() == Some(&Scheme::HTTPS) && u.authority().is_some())
                && !realm.contains('"');
            if !ok {
                problems.push(format!("registry_auth.realm: {realm:?} is not an https:// URL"));
            }
        }
        for (i, route) in self.api_routes.iter().enumerate() {
            if !matches!(route.method.as_str(), "GET" | "HEAD") || !route.path.starts_with("/api/") {
                problems.push(format!("api_routes[{i}]: only GET or HEAD of a path under /api/ can be opened"));
            }
        }
        if let Some(redis) = &self.revocations.redis {
            let scheme = redis.url.split_once("://").map(|(scheme, _)| scheme);
            if !matches!(scheme, Some("redis" | "redis+unix" | "unix")) {
                problems.push(format!("revocations.redis.url {:?}: redis://HOST:PORT/DB or redis+unix:///PATH (TLS to Redis is not supported yet)", redis.url));
            } else if redis
                .url
                .split_once("://")
                .is_some_and(|(_, rest)| rest.split('/').next().is_some_and(|a| a.contains('@')))
            {
                problems.push("revocations.redis.url: put the password in password_file, not in the URL".into());
            }
            if redis.key_prefix.is_empty() || redis.key_prefix.contains(char::is_whitespace) {
                problems.push("revocations.redis.key_prefix: a non-empty name without spaces".into());
            }
        }
        if self.limits.max_header_bytes < 8192 {
            problems.push("limits.max_header_bytes: must be at least 8192".into());
        }
        problems
    }
}

impl IssuerConfig {
    /// This issuer's own settings, against the issuers listed before it.
    fn validate(&self, before: &[IssuerConfig]) -> Result<(), String> {
        if before.iter().any(|other| other.name == self.name) {
            return Err(format!("the name {:?} is configured twice", self.name));
        }
        if self.gitlab_job_tokens.is_some() {
            let jwt = !self.iss.is_empty()
                || !self.audiences.is_empty()
                || self.jwks_file.is_some()
                || self.jwks_url.is_some()
                || self.discovery;
            if jwt {
                return Err(
                    "gitlab_job_tokens issuers ask GitLab; iss, audiences and key sources belong to JWT issuers".into(),
                );
            }
            return Ok(());
        }
        if self.iss.is_empty() {
            return Err("iss must not be empty".into());
        }
        if self.audiences.is_empty() {
            return Err("audiences must name at least one audience".into());
        }
        if self.algorithms.is_empty() {
            return Err("algorithms must name at least one algorithm".into());
        }
        if before.iter().any(|other| other.iss == self.iss) {
            return Err(format!("iss {:?} is configured twice", self.iss));
        }
        let sources = [self.jwks_file.is_some(), self.jwks_url.is_some(), self.discovery];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err("name exactly one key source: jwks_file, jwks_url or discovery: true".into());
        }
        if self.jwks_url.as_ref().is_some_and(|url| !url.parse::<Uri>().is_ok_and(|uri| https_or_loopback(&uri))) {
            return Err("jwks_url must be an https:// URL (plain http:// only for a loopback address)".into());
        }
        if self.discovery && !self.iss.starts_with("https://") {
            return Err("discovery needs an https:// iss".into());
        }
        Ok(())
    }
}

/// `https://`, or plain `http://` to a loopback address (GitLab's Puma on the same host, say).
pub fn https_or_loopback(uri: &Uri) -> bool {
    let loopback = uri.host().is_some_and(|h| {
        h == "localhost" || h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => loopback,
        _ => false,
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
