//! The public listener: where it listens, the certificates it serves (one per host, by SNI) and the
//! host names it answers for.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub public: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first: served when no other certificate names the client's SNI.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// More certificates, one per host (the registry's, say): each is served to a client whose SNI
    /// one of its DNS names matches (`*.example.com` matches one label).
    #[serde(default)]
    pub certificates: Vec<CertPair>,
}

impl TlsFiles {
    /// Every certificate and key pair, the default first.
    pub fn pairs(&self) -> impl Iterator<Item = (&PathBuf, &PathBuf)> {
        std::iter::once((&self.cert, &self.key)).chain(self.certificates.iter().map(|p| (&p.cert, &p.key)))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Which host names are GitLab's and which the container registry's (jobgate standing in as both
/// external hosts). A request naming any other host is refused (421).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsConfig {
    /// GitLab's `external_url` host(s): Git, LFS, API and packages. `/v2/` and `/jwt/auth` here are
    /// GitLab's dependency proxy, not the registry.
    #[serde(default)]
    pub gitlab: Vec<String>,
    /// The registry's host(s) (`registry_external_url`): `/v2/`, `/jwt/auth` and `/-/jwks` only.
    #[serde(default)]
    pub registry: Vec<String>,
    /// Hosts jobgate only passes to their own upstream, undecided (GitLab Pages, a KAS of its own):
    /// no job traffic belongs there, so a job credential on them is refused.
    #[serde(default)]
    pub passthrough: Vec<PassthroughHost>,
}

impl HostsConfig {
    /// The host names by role, as classification matches them.
    pub fn rules(&self) -> crate::classify::HostRules {
        let passthrough = self.passthrough.iter().map(|p| p.names.clone()).collect();
        crate::classify::HostRules::new(self.gitlab.clone(), self.registry.clone(), passthrough)
    }
}

/// Host names (`*.pages.example.com` matches one label) and the upstream their traffic goes to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassthroughHost {
    pub names: Vec<String>,
    pub upstream: super::UpstreamConfig,
}

impl HostsConfig {
    /// What is wrong with the names: none at all, a port or upper case in one, one named twice.
    pub fn problems(&self) -> Vec<String> {
        let passed = self.passthrough.iter().flat_map(|p| &p.names);
        let all: Vec<&String> = self.gitlab.iter().chain(&self.registry).chain(passed).collect();
        let mut problems = Vec::new();
        if all.is_empty() {
            problems.push("hosts: name the GitLab host, the registry host, or both".into());
        }
        for (i, name) in all.iter().enumerate() {
            let plain = name
                .strip_prefix("*.")
                .filter(|_| self.passthrough.iter().any(|p| p.names.contains(name)))
                .unwrap_or(name);
            if plain.is_empty() || plain.contains([':', '/', ' ', '*']) || plain.to_ascii_lowercase() != plain {
                problems.push(format!("hosts: {name:?} is not a lower-case host name without a port (only passthrough names may start with `*.`)"));
            } else if all[..i].contains(name) {
                problems.push(format!("hosts: {name:?} is named twice"));
            }
        }
        for (i, host) in self.passthrough.iter().enumerate() {
            if host.names.is_empty() {
                problems.push(format!("hosts.passthrough[{i}]: no names"));
            }
            if let Err(e) = super::upstream::parse_upstream_url(&host.upstream.url) {
                problems.push(format!("hosts.passthrough[{i}].upstream.url: {e}"));
            }
        }
        problems
    }
}
