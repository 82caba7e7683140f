//! Keeping the issuers' key sets current — the I/O half of verification, outside the decision core:
//! `source` is the freshness state machine (file reloads, polling, single-flight unknown-kid refetch,
//! cooldown, staleness) and `fetch` the HTTPS GET behind a trait. Both write into the pure
//! [`crate::token::keys::KeyState`] that `token::verify` reads.

pub mod fetch;
pub mod source;

use std::sync::Arc;

pub use fetch::FetchError;
pub use source::KeySource;

use crate::config::Config;
use crate::infra::metrics::Metrics;
use crate::token::verify::{secs, Issuer};

/// Builds every configured issuer and loads (or, with `fetch`, first fetches) its keys: the issuers
/// `verify` reads, and, in the same order, the sources that keep them fresh.
///
/// # Errors
/// Every JWKS file that does not load and every unreadable CA file, one line each.
pub async fn start(
    config: &Config,
    metrics: &Metrics,
    fetch: bool,
) -> Result<(Vec<Issuer>, Vec<Arc<KeySource>>), Vec<String>> {
    let mut issuers = Vec::with_capacity(config.issuers.len());
    let mut sources = Vec::with_capacity(config.issuers.len());
    let mut errors = Vec::new();
    for issuer in config.issuers.iter().filter(|i| i.gitlab_job_tokens.is_none()) {
        let source = match KeySource::start(issuer, metrics.issuer(&issuer.name), fetch).await {
            Ok(source) => source,
            Err(e) => {
                errors.push(format!("issuer {}: {}", issuer.name, crate::error::chain(&e)));
                continue;
            }
        };
        issuers.push(Issuer {
            name: issuer.name.clone(),
            iss: issuer.iss.as_str().into(),
            audiences: issuer.audiences.clone(),
            algorithms: issuer.algorithms.clone(),
            leeway: secs(issuer.leeway_secs),
            max_lifetime: secs(issuer.max_lifetime_secs),
            keys: source.state().clone(),
        });
        sources.push(source);
    }
    if errors.is_empty() {
        Ok((issuers, sources))
    } else {
        Err(errors)
    }
}
