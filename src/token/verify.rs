//! Verification of job JWTs. Our own code decides everything biscuit could get wrong or panic on:
//! the size limit, header parsing, `kid` lookup, the algorithm (from the allow-list AND the key's type),
//! and every date; biscuit (ring) only checks the signature with a key and algorithm we chose.
//! Order: size → shape → header → issuer → key → alg → signature → dates → audience → GitLab claims.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use super::claims::{ClaimError, Claims, RawClaims};
use super::keys::KeySet;
use super::Alg;
use crate::reason::Reason;

/// Claims whose token passed every check. Only this module constructs it.
#[derive(Debug, Clone)]
pub struct VerifiedClaims(Claims);

impl VerifiedClaims {
    pub fn claims(&self) -> &Claims {
        &self.0
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
    #[error("token header has no kid")]
    MissingKid,
    #[error("no key with the token's kid in the issuer's key set")]
    UnknownKid,
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
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

impl VerifyError {
    pub fn reason(&self) -> Reason {
        match self {
            VerifyError::TooLarge(_) => Reason::TokenTooLarge,
            VerifyError::Malformed(_) => Reason::MalformedToken,
            VerifyError::UnknownIssuer => Reason::UnknownIssuer,
            VerifyError::MissingKid | VerifyError::UnknownKid => Reason::UnknownKid,
            VerifyError::AlgNotAllowed => Reason::AlgNotAllowed,
            VerifyError::BadSignature => Reason::BadSignature,
            VerifyError::Expired => Reason::TokenExpired,
            VerifyError::NotYetValid => Reason::TokenNotYetValid,
            VerifyError::WrongAudience => Reason::WrongAudience,
            VerifyError::LifetimeTooLong => Reason::LifetimeTooLong,
            VerifyError::Claim(_) => Reason::ClaimInvalid,
        }
    }
}

/// One configured issuer with its current key set.
pub struct Issuer {
    pub name: String,
    pub iss: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    pub leeway: i64,
    pub max_lifetime: i64,
    pub keys: Arc<KeySet>,
}

/// All issuers and the token size limit: everything `verify` needs, immutable per snapshot.
pub struct Verifier {
    pub issuers: Vec<Issuer>,
    pub max_token_bytes: usize,
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
    /// Verifies a JWT (without `glcbt-` prefix) at time `now` (seconds since the epoch).
    ///
    /// # Errors
    /// The first check that fails, as a [`VerifyError`].
    pub fn verify(&self, token: &str, now: i64) -> Result<VerifiedClaims, VerifyError> {
        if token.len() > self.max_token_bytes {
            return Err(VerifyError::TooLarge(self.max_token_bytes));
        }
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
        let issuer = self
            .issuers
            .iter()
            .find(|i| raw.iss.as_deref() == Some(i.iss.as_str()))
            .ok_or(VerifyError::UnknownIssuer)?;
        let kid = header.kid.as_deref().ok_or(VerifyError::MissingKid)?;
        let key = issuer.keys.get(kid).ok_or(VerifyError::UnknownKid)?;
        let alg = Alg::parse(&header.alg)
            .filter(|alg| issuer.algorithms.contains(alg) && key.fits(*alg))
            .ok_or(VerifyError::AlgNotAllowed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature_b64).map_err(|_| VerifyError::Malformed("signature"))?;
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        // Safe: `alg` fits `key` (checked above), the only combination biscuit would panic on.
        alg.to_biscuit()
            .verify(&signature, signing_input.as_bytes(), &key.secret)
            .map_err(|_| VerifyError::BadSignature)?;
        check(issuer, raw, now).map(VerifiedClaims)
    }
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
