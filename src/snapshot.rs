//! The hot state a request needs, built in one piece and swapped in one piece: policy and key sets
//! (later: revocations) with a generation number. A request loads ONE snapshot at its start, so a
//! reload in the middle of a request never mixes generations.

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::Config;
use crate::policy::{Policy, PolicyError};
use crate::token::keys::{KeySet, KeySetError};
use crate::token::verify::{Issuer, Verifier};

pub struct Snapshot {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub policy: Policy,
    pub verifier: Verifier,
}

/// Why a snapshot could not be built; the message names the file (and line where known).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("issuer {issuer}: {source}")]
    Keys { issuer: String, source: KeySetError },
}

impl Snapshot {
    /// Reads the policy folder and every issuer's key set.
    ///
    /// # Errors
    /// The first file that does not load.
    pub fn build(config: &Config, generation: u64) -> Result<Snapshot, LoadError> {
        let policy = Policy::load_dir(&config.policy_dir)?;
        let mut issuers = Vec::with_capacity(config.issuers.len());
        for issuer in &config.issuers {
            let keys = KeySet::from_file(&issuer.jwks_file)
                .map_err(|source| LoadError::Keys { issuer: issuer.name.clone(), source })?;
            for skipped in &keys.skipped {
                tracing::warn!(issuer = %issuer.name, "key skipped: {skipped}");
            }
            issuers.push(Issuer {
                name: issuer.name.clone(),
                iss: issuer.iss.clone(),
                audiences: issuer.audiences.clone(),
                algorithms: issuer.algorithms.clone(),
                leeway: secs(issuer.leeway_secs),
                max_lifetime: secs(issuer.max_lifetime_secs),
                keys: Arc::new(keys),
            });
        }
        Ok(Snapshot {
            generation,
            loaded_at: SystemTime::now(),
            policy,
            verifier: Verifier { issuers, max_token_bytes: config.limits.max_token_bytes },
        })
    }
}

fn secs(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX / 4)
}
