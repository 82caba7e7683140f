//! Verification of job JWTs. Our own code decides everything biscuit could get wrong or panic on:
//! the size limit, header parsing, `kid` lookup, the algorithm (from the allow-list AND the key's type),
//! and every date; biscuit (ring) only checks the signature with a key and algorithm we chose.
//! Order: size → shape → header → issuer → key → alg → signature → dates → audience → GitLab claims.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use prometheus::{Histogram, IntCounter};
use serde::Deserialize;

use super::cache::{self, Entry, TokenCache};
use super::claims::{ClaimError, Claims, RawClaims};
use super::keys::Key;
use super::source::KeySource;
use super::Alg;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::revoke::Revocations;

/// Claims whose token passed every check. Only this module constructs it.
#[derive(Debug, Clone)]
pub struct VerifiedClaims(Arc<Claims>);

impl VerifiedClaims {
    pub fn claims(&self) -> &Claims {
        &self.0
    }

    /// Claims that `verify` (or the registry token check built on it) already proved.
    pub(crate) fn from_arc(claims: Arc<Claims>) -> VerifiedClaims {
        VerifiedClaims(claims)
    }
}

/// Why a token failed. Never carries token bytes or attacker-chosen strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token is larger than {0} bytes")]
    TooLarge(usize),
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token issuer is not configured")]
    UnknownIssuer,
    #[error("the issuer's key set is stale; failing closed")]
    KeySetStale,
    #[error("token header has no kid")]
    MissingKid,
    #[error("no key with the token's kid in the issuer's key set")]
    UnknownKid {
        /// Index of the issuer in [`Verifier::issuers`], for the unknown-kid refetch.
        issuer: usize,
    },
    #[error("algorithm is not allowed for this issuer or key")]
    AlgNotAllowed,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token lifetime exceeds the issuer's maximum")]
    LifetimeTooLong,
    #[error("token revoked: its job has ended")]
    Revoked,
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

impl VerifyError {
    pub fn reason(&self) -> Reason {
        match self {
            VerifyError::TooLarge(_) => Reason::TokenTooLarge,
            VerifyError::Malformed(_) => Reason::MalformedToken,
            VerifyError::UnknownIssuer => Reason::UnknownIssuer,
            VerifyError::KeySetStale => Reason::KeySetStale,
            VerifyError::MissingKid | VerifyError::UnknownKid { .. } => Reason::UnknownKid,
            VerifyError::AlgNotAllowed => Reason::AlgNotAllowed,
            VerifyError::BadSignature => Reason::BadSignature,
            VerifyError::Expired => Reason::TokenExpired,
            VerifyError::NotYetValid => Reason::TokenNotYetValid,
            VerifyError::WrongAudience => Reason::WrongAudience,
            VerifyError::LifetimeTooLong => Reason::LifetimeTooLong,
            VerifyError::Revoked => Reason::TokenRevoked,
            VerifyError::Claim(_) => Reason::ClaimInvalid,
        }
    }
}

/// One configured issuer with its live key source.
pub struct Issuer {
    pub name: String,
    pub iss: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    pub leeway: i64,
    pub max_lifetime: i64,
    pub keys: Arc<KeySource>,
}

/// All issuers, the token size limit and the verified-token cache. Lives as long as the process;
/// key sets change inside it (per issuer), never the list of issuers.
pub struct Verifier {
    pub issuers: Vec<Issuer>,
    pub max_token_bytes: usize,
    cache: TokenCache,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    verify_seconds: Histogram,
    pub revocations: Arc<Revocations>,
    /// jobgate's own registry token issuer, when the registry family is configured.
    pub registry: Option<crate::registry_auth::RegistryAuth>,
}

/// The JOSE header. serde refuses duplicate keys; unknown members (`jku`, `x5u`, `jwk`, ...) are
/// ignored and never fetched.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

impl Verifier {
    pub fn new(issuers: Vec<Issuer>, max_token_bytes: usize, cache_entries: usize, metrics: &Metrics) -> Verifier {
        Verifier {
            issuers,
            max_token_bytes,
            cache: TokenCache::new(cache_entries),
            cache_hits: metrics.token_cache.with_label_values(&["hit"]),
            cache_misses: metrics.token_cache.with_label_values(&["miss"]),
            verify_seconds: metrics.verify_seconds.clone(),
            revocations: Arc::new(Revocations::in_memory()),
            registry: None,
        }
    }

    /// Verifies a registry token jobgate issued (`None` when `token` is not one of ours), revocations
    /// included: returns the job's claims and the access the token grants.
    pub fn verify_registry_token(
        &self,
        token: &str,
        now: i64,
    ) -> Option<Result<(VerifiedClaims, Vec<crate::registry_auth::Access>), VerifyError>> {
        let registry = self.registry.as_ref().filter(|r| r.is_ours(token))?;
        Some(registry.verify(token, now).and_then(|(claims, access)| {
            if self.revocations.is_revoked(&claims, now) {
                return Err(VerifyError::Revoked);
            }
            Ok((VerifiedClaims(claims), access))
        }))
    }

    /// Uses `revocations` (persisted, shared with the admin routes) instead of an empty in-memory set.
    pub fn with_revocations(self, revocations: Arc<Revocations>) -> Verifier {
        Verifier { revocations, ..self }
    }

    /// The longest token lifetime any issuer accepts: how long a revocation must be kept.
    pub fn max_lifetime(&self) -> i64 {
        self.issuers.iter().map(|i| i.max_lifetime.saturating_add(i.leeway)).max().unwrap_or(0)
    }

    /// Builds every configured issuer and loads (or first fetches) its keys.
    ///
    /// # Errors
    /// A JWKS file that does not load, or an unreadable CA file.
    pub async fn start(config: &Config, metrics: &Metrics) -> Result<Verifier, super::source::FetchError> {
        let mut issuers = Vec::with_capacity(config.issuers.len());
        for issuer in &config.issuers {
            issuers.push(Issuer {
                name: issuer.name.clone(),
                iss: issuer.iss.clone(),
                audiences: issuer.audiences.clone(),
                algorithms: issuer.algorithms.clone(),
                leeway: secs(issuer.leeway_secs),
                max_lifetime: secs(issuer.max_lifetime_secs),
                keys: KeySource::start(issuer, metrics.issuer(&issuer.name)).await?,
            });
        }
        Ok(Verifier::new(issuers, config.limits.max_token_bytes, config.limits.token_cache_entries, metrics))
    }

    /// Verifies a JWT (without `glcbt-` prefix) at time `now` (seconds since the epoch): from the
    /// cache when this exact token was verified before with the issuer's current key set.
    ///
    /// # Errors
    /// The first check that fails, as a [`VerifyError`].
    pub fn verify(&self, token: &str, now: i64) -> Result<VerifiedClaims, VerifyError> {
        let started = std::time::Instant::now();
        let result = self.verify_timed(token, now);
        self.verify_seconds.observe(started.elapsed().as_secs_f64());
        result
    }

    fn verify_timed(&self, token: &str, now: i64) -> Result<VerifiedClaims, VerifyError> {
        if token.len() > self.max_token_bytes {
            return Err(VerifyError::TooLarge(self.max_token_bytes));
        }
        let digest = cache::digest(token);
        let current = |issuer: usize, generation: u64| {
            self.issuers.get(issuer).is_some_and(|i| i.keys.current().generation == generation && !i.keys.is_stale())
        };
        let claims = match self.cache.get(&digest, now, current) {
            Some(entry) => {
                self.cache_hits.inc();
                entry.claims
            }
            None => {
                self.cache_misses.inc();
                let (issuer, generation, claims) = self.verify_uncached(token, now)?;
                let claims = Arc::new(claims);
                let dies_at = claims.exp.saturating_add(self.issuers[issuer].leeway);
                self.cache.insert(digest, Entry { claims: claims.clone(), issuer, generation, dies_at }, now);
                claims
            }
        };
        // Revocations apply to cached tokens too: the check is never skipped.
        if self.revocations.is_revoked(&claims, now) {
            return Err(VerifyError::Revoked);
        }
        Ok(VerifiedClaims(claims))
    }

    /// Every check, bypassing the cache (benches measure this path).
    ///
    /// # Errors
    /// As [`Verifier::verify`].
    pub fn verify_uncached_for_bench(&self, token: &str, now: i64) -> Result<VerifiedClaims, VerifyError> {
        if token.len() > self.max_token_bytes {
            return Err(VerifyError::TooLarge(self.max_token_bytes));
        }
        self.verify_uncached(token, now).map(|(_, _, claims)| VerifiedClaims(Arc::new(claims)))
    }

    /// Every check, no cache. Returns the issuer's index and the key-set generation used.
    fn verify_uncached(&self, token: &str, now: i64) -> Result<(usize, u64, Claims), VerifyError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed("not three dot-separated parts"));
        };
        let header: Header = decode_json(header_b64).ok_or(VerifyError::Malformed("header"))?;
        if header.crit.is_some() {
            return Err(VerifyError::Malformed("crit header: no extension is understood"));
        }
        let raw: RawClaims = decode_json(payload_b64).ok_or(VerifyError::Malformed("payload"))?;
        let index = self
            .issuers
            .iter()
            .position(|i| raw.iss.as_deref() == Some(i.iss.as_str()))
            .ok_or(VerifyError::UnknownIssuer)?;
        let issuer = &self.issuers[index];
        if issuer.keys.is_stale() {
            return Err(VerifyError::KeySetStale);
        }
        let keys = issuer.keys.current();
        let kid = header.kid.as_deref().ok_or(VerifyError::MissingKid)?;
        let key = keys.set.get(kid).ok_or(VerifyError::UnknownKid { issuer: index })?;
        let alg = Alg::parse(&header.alg).filter(|alg| issuer.algorithms.contains(alg)).ok_or(VerifyError::AlgNotAllowed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature_b64).map_err(|_| VerifyError::Malformed("signature"))?;
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        verify_signature(alg, key, signing_input.as_bytes(), &signature)?;
        Ok((index, keys.generation, check(issuer, raw, now)?))
    }
}

/// Checks one JWS signature exactly as `verify` does (Wycheproof and RFC vectors run through this).
///
/// # Errors
/// [`VerifyError::AlgNotAllowed`] when `alg` does not fit the key, [`VerifyError::BadSignature`].
pub fn verify_signature(alg: Alg, key: &Key, signing_input: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
    // `fits` is what keeps biscuit away from its `unreachable!` on a key/algorithm mismatch.
    if !key.fits(alg) {
        return Err(VerifyError::AlgNotAllowed);
    }
    alg.to_biscuit().verify(signature, signing_input, &key.secret).map_err(|_| VerifyError::BadSignature)
}

fn secs(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX / 4)
}

fn check(issuer: &Issuer, raw: RawClaims, now: i64) -> Result<Claims, VerifyError> {
    let nbf = raw.nbf()?;
    let aud_ok = raw.aud.as_ref().is_some_and(|aud| aud.iter().any(|a| issuer.audiences.iter().any(|x| x == a)));
    let claims = raw.into_claims()?;
    if claims.exp + issuer.leeway < now {
        return Err(VerifyError::Expired);
    }
    if nbf.into_iter().chain(claims.iat).any(|t| t > now + issuer.leeway) {
        return Err(VerifyError::NotYetValid);
    }
    if claims.exp - claims.iat.unwrap_or(now) > issuer.max_lifetime {
        return Err(VerifyError::LifetimeTooLong);
    }
    if !aud_ok {
        return Err(VerifyError::WrongAudience);
    }
    Ok(claims)
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
