//! `registry_auth`: the token realm, and who signs the registry tokens it hands out.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Config, NonJob};
use crate::classify::Family;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuthConfig {
    /// Who signs the registry tokens the realm hands out.
    #[serde(default)]
    pub tokens: RegistryTokenSource,
    /// With `tokens: jobgate`: the RSA private key (PKCS#8 PEM) that signs them (`jobgate keys
    /// generate --registry`).
    pub signing_key: Option<PathBuf>,
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

/// Where the realm's registry tokens come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryTokenSource {
    /// jobgate signs its own (`signing_key`); the registry trusts jobgate's certificate.
    #[default]
    Jobgate,
    /// GitLab's own `/jwt/auth` (at `gitlab.url`) signs them, for the scopes jobgate narrowed the
    /// request to, with the job's own token: the registry keeps trusting GitLab's issuer.
    Gitlab,
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

impl RegistryAuthConfig {
    /// jobgate's own issuer as configured; `None` when there is no realm or when GitLab signs the
    /// tokens (`tokens: gitlab`).
    ///
    /// # Errors
    /// As [`RegistryTokens::load`].
    pub fn tokens(
        auth: Option<&RegistryAuthConfig>,
    ) -> Result<Option<crate::token::registry::RegistryTokens>, crate::token::registry::RegistryKeyError> {
        let Some((auth, key)) = auth.and_then(|a| Some((a, a.signing_key.as_deref()?))) else { return Ok(None) };
        if auth.tokens != RegistryTokenSource::Jobgate {
            return Ok(None);
        }
        let tokens =
            crate::token::registry::RegistryTokens::load(key, &auth.issuer, &auth.service, auth.token_ttl_secs)?;
        Ok(Some(tokens.with_realm(auth.realm.clone())))
    }

    /// Each token source has what it needs: a key of its own, or GitLab and its job tokens — and
    /// the registry then passes GitLab's tokens, which are no job credentials to jobgate.
    pub(super) fn problem(&self, config: &Config) -> Option<String> {
        let registry_non_job = config.upstreams.get(Family::Registry).and_then(|u| u.non_job).unwrap_or(config.non_job);
        match self.tokens {
            RegistryTokenSource::Jobgate if self.signing_key.is_none() => Some("registry_auth: `signing_key` is needed to sign jobgate's own registry tokens (or `tokens: gitlab`)".into()),
            RegistryTokenSource::Jobgate => None,
            RegistryTokenSource::Gitlab if self.signing_key.is_some() => Some("registry_auth: `signing_key` is not used with `tokens: gitlab` (GitLab signs the registry tokens)".into()),
            RegistryTokenSource::Gitlab if config.gitlab.is_none() || !config.issuers.iter().any(|i| i.gitlab_job_tokens.is_some()) => {
                Some("registry_auth.tokens: gitlab needs the `gitlab:` block and an issuer with `gitlab_job_tokens` (GitLab's realm takes the job's own CI_JOB_TOKEN)".into())
            }
            RegistryTokenSource::Gitlab if registry_non_job != NonJob::Passthrough => Some(
                "registry_auth.tokens: gitlab: registry requests then carry GitLab's registry tokens, which jobgate passes as non-job traffic (the realm decided their access); set `non_job: passthrough` for the registry".into(),
            ),
            RegistryTokenSource::Gitlab => None,
        }
    }
}
