//! Verification of job JWTs. Our own code decides everything biscuit could get wrong or panic on:
//! the size limit, header parsing, `kid` lookup, the algorithm (from the allow-list AND the key's type),
//! and every date; biscuit (ring) only checks the signature with a key and algorithm we chose.
//! Order: size → shape → header (its `typ` must be a job token's) → issuer → key → alg → signature →
//! dates → audience → GitLab claims.

use std::sync::Arc;

use super::cache::{self, Entry, TokenCache};
use super::claims::{ClaimError, Claims, RawClaims};
use super::jws::{Compact, Kind};
use super::keys::{Key, KeyState};
use super::Alg;
use crate::reason::Reason;

/// Claims whose token passed every check. Only this module and the registry token check construct it.
#[derive(Debug, Clone)]
pub struct VerifiedClaims(Arc<Claims>);

impl VerifiedClaims {
    pub fn claims(&self) -> &Claims {
        &self.0
    }

    /// Claims that the registry token check (built on [`verify_signature`]) proved.
    pub(crate) fn from_arc(claims: Arc<Claims>) -> VerifiedClaims {
        VerifiedClaims(claims)
    }
}

/// A verified token, and whether the cache answered (for the metrics the edge keeps).
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: VerifiedClaims,
    pub cached: bool,
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
        /// Index of the issuer in [`Verifier::issuers`], for the unknown-kid refetch (`None`: jobgate's
        /// own registry key, which is never refetched).
        issuer: Option<usize>,
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
    #[error("a registry token is valid on registry routes only")]
    RegistryToken,
    #[error("the token's type (typ) is not a job token's")]
    NotAJobToken,
    #[error("GitLab knows no running job with this token")]
    NotARunningJob,
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
            VerifyError::RegistryToken | VerifyError::NotAJobToken => Reason::TokenKindNotAllowed,
            VerifyError::NotARunningJob => Reason::JobTokenInvalid,
            VerifyError::Claim(_) => Reason::ClaimInvalid,
        }
    }
}

/// One configured issuer and its key set.
pub struct Issuer {
    pub name: String,
    pub iss: std::sync::Arc<str>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    pub leeway: i64,
    pub max_lifetime: i64,
    pub keys: Arc<KeyState>,
}

/// All issuers, the token size limit and the verified-token cache. Lives as long as the process;
/// key sets change inside it (per issuer), never the list of issuers.
pub struct Verifier {
    pub issuers: Vec<Issuer>,
    pub max_token_bytes: usize,
    cache: TokenCache,
}

impl Verifier {
    pub fn new(issuers: Vec<Issuer>, max_token_bytes: usize, cache_entries: usize) -> Verifier {
        Verifier { issuers, max_token_bytes, cache: TokenCache::new(cache_entries) }
    }

    /// The longest token lifetime any issuer accepts: how long a revocation must be kept.
    pub fn max_lifetime(&self) -> i64 {
        self.issuers.iter().map(|i| i.max_lifetime.saturating_add(i.leeway)).max().unwrap_or(0)
    }

    /// Verifies a JWT (without `glcbt-` prefix) at time `now` (seconds since the epoch): from the
    /// cache when this exact token was verified before with the issuer's current, fresh key set.
    /// Revocation is not checked here: `enforce` checks it for every kind of token.
    ///
    /// # Errors
    /// The first check that fails, as a [`VerifyError`].
    pub fn verify(&self, token: &str, now: i64) -> Result<Verified, VerifyError> {
        if token.len() > self.max_token_bytes {
            return Err(VerifyError::TooLarge(self.max_token_bytes));
        }
        let digest = cache::digest(token);
        let current = |issuer: usize, generation: u64| {
            self.issuers.get(issuer).is_some_and(|i| i.keys.current().generation == generation && !i.keys.is_stale(now))
        };
        if let Some(entry) = self.cache.get(&digest, now, current) {
            return Ok(Verified { claims: VerifiedClaims(entry.claims), cached: true });
        }
        let (issuer, generation, claims) = self.verify_uncached(token, now)?;
        let claims = Arc::new(claims);
        let dies_at = claims.exp.saturating_add(self.issuers[issuer].leeway);
        self.cache.insert(digest, Entry { claims: claims.clone(), issuer, generation, dies_at }, now);
        Ok(Verified { claims: VerifiedClaims(claims), cached: false })
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
        let jws = Compact::parse(token)?;
        match jws.header.kind() {
            Kind::Job => {}
            Kind::Registry => return Err(VerifyError::RegistryToken),
            Kind::Other => return Err(VerifyError::NotAJobToken),
        }
        let raw: RawClaims = jws.payload()?;
        let index =
            self.issuers.iter().position(|i| raw.iss.as_deref() == Some(&*i.iss)).ok_or(VerifyError::UnknownIssuer)?;
        let issuer = &self.issuers[index];
        if issuer.keys.is_stale(now) {
            return Err(VerifyError::KeySetStale);
        }
        let keys = issuer.keys.current();
        let kid = jws.header.kid.as_deref().ok_or(VerifyError::MissingKid)?;
        let key = keys.set.get(kid).ok_or(VerifyError::UnknownKid { issuer: Some(index) })?;
        let alg = Alg::parse(&jws.header.alg)
            .filter(|alg| issuer.algorithms.contains(alg))
            .ok_or(VerifyError::AlgNotAllowed)?;
        verify_signature(alg, key, jws.signing_input.as_bytes(), &jws.signature)?;
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

/// Config seconds as the signed seconds the checks compute with.
pub(crate) fn secs(value: u64) -> i64 {
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
    // The same text as the issuer's: share its allocation.
    Ok(Claims { iss: issuer.iss.clone(), ..claims })
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
