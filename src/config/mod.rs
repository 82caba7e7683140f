//! The static process configuration: one YAML file, unknown keys rejected, relative paths resolved
//! against the file's folder, validated once. It owns no runtime state and reads no other file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::uri::Scheme;
use http::Uri;
use serde::Deserialize;

use crate::classify::Family;

mod limits;
mod upstream;

pub use limits::{AuditSink, Limits, Timeouts};
pub use upstream::{parse_upstream_url, CredentialMode, ReplaceCredential, UpstreamConfig, Upstreams};
use crate::token::Alg;

/// An error in a configuration file; the message names the file and, where known, line and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Parse(#[from] crate::yaml::YamlError),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuthConfig {
    /// RSA private key (PKCS#8 PEM) that signs registry tokens (`jobgate keys generate --registry`).
    pub signing_key: PathBuf,
    #[serde(default = "default_registry_issuer")]
    pub issuer: String,
    #[serde(default = "default_registry_service")]
    pub service: String,
    #[serde(default = "default_registry_ttl")]
    pub token_ttl_secs: u64,
    /// The token realm's URL as clients must reach it (`https://registry.example.com/jwt/auth`);
    /// without it the realm is built from the request's `Host`, when that is a plain host name.
    pub realm: Option<String>,
}

fn default_registry_issuer() -> String {
    "jobgate".into()
}
fn default_registry_service() -> String {
    "container_registry".into()
}
fn default_registry_ttl() -> u64 {
    300
}

/// One extra API endpoint: an exact path, a read method, and the scope it needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiRoute {
    pub method: String,
    pub path: String,
    pub scope: crate::scope::Scope,
}

/// Where revocations are persisted; without a file they live in memory only (lost on restart).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationsConfig {
    pub file: Option<PathBuf>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub public: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
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
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config: Config = crate::yaml::parse(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate().map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })?;
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
        resolve(&mut self.policy_dir);
        for issuer in &mut self.issuers {
            issuer.jwks_file.as_mut().map(resolve);
            issuer.ca_file.as_mut().map(resolve);
        }
        if let Some(gitlab) = self.gitlab.as_mut() {
            gitlab.ca_file.as_mut().map(resolve);
            gitlab.api_token_file.as_mut().map(resolve);
        }
        if let Some(p) = &mut self.audit.file {
            resolve(p);
        }
        let registry_key = self.registry_auth.as_mut().map(|r| &mut r.signing_key);
        for p in [self.admin.token_file.as_mut(), self.admin.webhook_secret_file.as_mut(), self.revocations.file.as_mut(), registry_key].into_iter().flatten() {
            resolve(p);
        }
        for family in Family::ALL {
            if let Some(replace) = self.upstreams.get_mut(family).and_then(|u| u.replace.as_mut()) {
                resolve(&mut replace.value_file);
            }
        }
    }

    /// The `gitlab:` block and the issuers that ask it.
    fn validate_gitlab(&self) -> Result<(), String> {
        let askers = self.issuers.iter().filter(|i| i.gitlab_job_tokens.is_some()).count();
        match (&self.gitlab, askers) {
            (None, 0) => return Ok(()),
            (None, _) => return Err("issuers: gitlab_job_tokens needs the `gitlab:` block (url of the GitLab instance)".into()),
            (Some(_), n) if n > 1 => return Err("issuers: at most one gitlab_job_tokens issuer".into()),
            (Some(_), _) => {}
        }
        let Some(gitlab) = &self.gitlab else { return Ok(()) };
        let uri: Uri = gitlab.url.parse().map_err(|e| format!("gitlab.url {:?}: {e}", gitlab.url))?;
        let loopback = uri.host().is_some_and(|h| h == "localhost" || h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()));
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback => {}
            _ => return Err(format!("gitlab.url {:?}: https:// (plain http:// only for a loopback address)", gitlab.url)),
        }
        if uri.query().is_some() || uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(format!("gitlab.url {:?} must not carry user info or a query", gitlab.url));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), String> {
        if self.issuers.is_empty() {
            return Err("issuers: at least one issuer is required".into());
        }
        self.validate_gitlab()?;
        for (i, issuer) in self.issuers.iter().enumerate() {
            let at = format!("issuers[{i}] ({})", issuer.name);
            if self.issuers[..i].iter().any(|other| other.name == issuer.name) {
                return Err(format!("{at}: the name {:?} is configured twice", issuer.name));
            }
            if issuer.gitlab_job_tokens.is_some() {
                let jwt = !issuer.iss.is_empty() || !issuer.audiences.is_empty() || issuer.jwks_file.is_some() || issuer.jwks_url.is_some() || issuer.discovery;
                if jwt {
                    return Err(format!("{at}: gitlab_job_tokens issuers ask GitLab; iss, audiences and key sources belong to JWT issuers"));
                }
                continue;
            }
            if issuer.iss.is_empty() {
                return Err(format!("{at}: iss must not be empty"));
            }
            if issuer.audiences.is_empty() {
                return Err(format!("{at}: audiences must name at least one audience"));
            }
            if issuer.algorithms.is_empty() {
                return Err(format!("{at}: algorithms must name at least one algorithm"));
            }
            if self.issuers[..i].iter().any(|other| other.iss == issuer.iss) {
                return Err(format!("{at}: iss {:?} is configured twice", issuer.iss));
            }
            let sources = [issuer.jwks_file.is_some(), issuer.jwks_url.is_some(), issuer.discovery];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Err(format!("{at}: name exactly one key source: jwks_file, jwks_url or discovery: true"));
            }
            if let Some(url) = &issuer.jwks_url {
                if !url.starts_with("https://") {
                    return Err(format!("{at}: jwks_url must be an https:// URL"));
                }
            }
            if issuer.discovery && !issuer.iss.starts_with("https://") {
                return Err(format!("{at}: discovery needs an https:// iss"));
            }
        }
        for (family, upstream) in self.upstreams.all() {
            let name = family.id();
            parse_upstream_url(&upstream.url).map_err(|e| format!("upstreams.{name}.url: {e}"))?;
            if (upstream.credentials == CredentialMode::Replace) != upstream.replace.is_some() {
                return Err(format!("upstreams.{name}: `replace` goes with `credentials: replace`, and only with it"));
            }
        }
        if let Some(realm) = self.registry_auth.as_ref().and_then(|r| r.realm.as_ref()) {
            let ok = realm.parse::<Uri>().is_ok_and(|u| u.scheme() == Some(&Scheme::HTTPS) && u.authority().is_some()) && !realm.contains('"');
            if !ok {
                return Err(format!("registry_auth.realm: {realm:?} is not an https:// URL"));
            }
        }
        for (i, route) in self.api_routes.iter().enumerate() {
            if !matches!(route.method.as_str(), "GET" | "HEAD") || !route.path.starts_with("/api/") {
                return Err(format!("api_routes[{i}]: only GET or HEAD of a path under /api/ can be opened"));
            }
        }
        if self.limits.max_header_bytes < 8192 {
            return Err("limits.max_header_bytes: must be at least 8192".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "\
listen: { public: 127.0.0.1:0, admin: 127.0.0.1:0 }
tls: { cert: certs/server.pem, key: certs/server-key.pem }
issuers:
  - name: ci
    iss: https://gitlab.example.com
    audiences: [jobgate]
    jwks_file: keys/jwks.json
policy_dir: policies
upstreams:
  git: { url: 'http://127.0.0.1:8080' }
";

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobgate.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn minimal_config_loads_with_defaults_and_resolved_paths() {
        let (dir, path) = write(MINIMAL);
        let c = Config::load(&path).unwrap();
        assert_eq!(c.policy_dir, dir.path().join("policies"));
        assert_eq!(c.issuers[0].algorithms, vec![Alg::RS256, Alg::ES256]);
        assert_eq!(c.non_job, NonJob::Reject);
        assert_eq!(c.upstreams.git.credentials, CredentialMode::Passthrough);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let (_dir, path) = write(&MINIMAL.replace("policy_dir:", "polcy_dir: x\npolicy_dir:"));
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("jobgate.yaml:8:"), "{err}");
        assert!(err.contains("unknown field `polcy_dir`"), "{err}");
    }

    #[test]
    fn unsupported_algorithm_is_refused() {
        let (_dir, path) = write(&MINIMAL.replace("jwks_file:", "algorithms: [EdDSA]\n    jwks_file:"));
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("EdDSA"), "{err}");
    }

    #[test]
    fn exactly_one_key_source() {
        let two = MINIMAL.replace("jwks_file: keys/jwks.json", "jwks_file: k.json\n    jwks_url: https://x/keys");
        let none = MINIMAL.replace("    jwks_file: keys/jwks.json\n", "");
        let http = MINIMAL.replace("jwks_file: keys/jwks.json", "jwks_url: http://x/keys");
        for text in [two, none, http] {
            let (_dir, path) = write(&text);
            let err = Config::load(&path).unwrap_err().to_string();
            assert!(err.contains("issuers[0] (ci)"), "{err}");
        }
        let (_dir, path) = write(&MINIMAL.replace("jwks_file: keys/jwks.json", "discovery: true"));
        assert!(Config::load(&path).is_ok());
    }

    #[test]
    fn bad_upstream_url_is_refused() {
        let (_dir, path) = write(&MINIMAL.replace("http://127.0.0.1:8080", "ftp://x"));
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("upstreams.git.url"), "{err}");
    }
}
