//! JWS compact serialisation, taken apart by our own code before any crypto runs: exactly three
//! base64url parts, the header decoded by serde (duplicate keys refused; `jku`, `x5u`, `jwk` ignored
//! and never fetched; any `crit` refused), the signature decoded, the signing input sliced from the
//! original bytes. Both verifiers (job tokens, registry tokens) start here.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use super::verify::VerifyError;

/// The `typ` of jobgate's registry tokens (RFC 8725 §3.11: explicit typing, so no token of one kind
/// can pass for another).
pub const REGISTRY_TOKEN_TYPE: &str = "jobgate-registry+jwt";

/// The JOSE header members jobgate reads.
#[derive(Deserialize)]
pub struct Header {
    pub alg: String,
    pub kid: Option<String>,
    typ: Option<String>,
    crit: Option<serde_json::Value>,
}

/// What a token's `typ` says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No `typ`, or `JWT` (RFC 7519 §5.1, compared case-insensitively): a job token (GitLab ID tokens
    /// and seed-style job tokens say `JWT`).
    Job,
    /// One of jobgate's registry tokens.
    Registry,
    /// Anything else (an OAuth access token's `at+jwt`, ...): never a job credential.
    Other,
}

impl Header {
    pub fn kind(&self) -> Kind {
        match self.typ.as_deref() {
            None => Kind::Job,
            Some(t) if t.eq_ignore_ascii_case("JWT") => Kind::Job,
            Some(REGISTRY_TOKEN_TYPE) => Kind::Registry,
            Some(_) => Kind::Other,
        }
    }
}

/// The kind of a token from its header alone (`None`: not a JWS at all). Nothing is verified.
pub fn kind_of(token: &str) -> Option<Kind> {
    let header: Header = decode_json(token.split('.').next()?)?;
    Some(header.kind())
}

/// A token split into its parts; nothing verified yet.
pub struct Compact<'a> {
    pub header: Header,
    pub payload_b64: &'a str,
    /// `header.payload`, exactly as sent.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

impl<'a> Compact<'a> {
    /// # Errors
    /// [`VerifyError::Malformed`] naming the part that is wrong.
    pub fn parse(token: &'a str) -> Result<Compact<'a>, VerifyError> {
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
        let signature = URL_SAFE_NO_PAD.decode(signature_b64).map_err(|_| VerifyError::Malformed("signature"))?;
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        Ok(Compact { header, payload_b64, signing_input, signature })
    }

    /// The payload as `T`.
    ///
    /// # Errors
    /// [`VerifyError::Malformed`] when it is not base64url JSON of that shape.
    pub fn payload<T: for<'de> Deserialize<'de>>(&self) -> Result<T, VerifyError> {
        decode_json(self.payload_b64).ok_or(VerifyError::Malformed("payload"))
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Option<T> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}
