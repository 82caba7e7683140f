//! The credential stages: `extract` finds the job token in a request, `verify` proves it against the
//! issuer's key set (`keys`) and turns it into [`claims::Claims`]. `mint` is the dev/test issuer.

pub mod cache;
pub mod claims;
pub mod extract;
pub mod gitlab;
pub mod jws;
pub mod keys;
pub mod mint;
pub mod verify;

use serde::{Deserialize, Serialize};

/// The JWS algorithms jobgate verifies (biscuit + ring). Anything else, `none`, HMAC and EdDSA
/// included, cannot even be named in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
}

/// The kind of public key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
}

impl Alg {
    const ALL: [Alg; 8] =
        [Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256, Alg::PS384, Alg::PS512, Alg::ES256, Alg::ES384];

    /// Exact, case-sensitive match of a JWS `alg` header value (RFC 7515: case-sensitive).
    pub fn parse(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
        }
    }

    pub fn key_kind(self) -> KeyKind {
        match self {
            Alg::ES256 => KeyKind::EcP256,
            Alg::ES384 => KeyKind::EcP384,
            _ => KeyKind::Rsa,
        }
    }

    pub(crate) fn to_biscuit(self) -> biscuit::jwa::SignatureAlgorithm {
        use biscuit::jwa::SignatureAlgorithm as B;
        match self {
            Alg::RS256 => B::RS256,
            Alg::RS384 => B::RS384,
            Alg::RS512 => B::RS512,
            Alg::PS256 => B::PS256,
            Alg::PS384 => B::PS384,
            Alg::PS512 => B::PS512,
            Alg::ES256 => B::ES256,
            Alg::ES384 => B::ES384,
        }
    }
}

/// GitLab prefixes JWT job tokens with `glcbt-`; the JWT starts after it.
pub fn strip_prefix(token: &str) -> &str {
    token.strip_prefix("glcbt-").unwrap_or(token)
}

/// True for the shape of a JWS compact serialisation: three base64url parts.
pub fn looks_like_jwt(token: &str) -> bool {
    let token = strip_prefix(token);
    token.bytes().filter(|b| *b == b'.').count() == 2
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
