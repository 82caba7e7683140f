//! The credential stages: `extract` finds the job token in a request, `verify` proves it against the
//! issuer's key set (`keys`) and turns it into [`claims::Claims`]. `mint` is the dev/test issuer.

pub mod cache;
pub mod claims;
pub mod extract;
pub mod gitlab;
pub mod jws;
pub mod keys;
pub mod mint;
pub mod registry;
pub mod verify;
pub mod wrapped;

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

/// True for the shape of a JWS compact serialisation: three base64url parts. One pass over the
/// token (it runs on every request that carries one).
pub fn looks_like_jwt(token: &str) -> bool {
    /// 1 for a base64url byte, 2 for `.`, 0 for anything else.
    const CLASS: [u8; 256] = {
        let mut class = [0u8; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            class[b] = if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
                1
            } else if c == b'.' {
                2
            } else {
                0
            };
            b += 1;
        }
        class
    };
    let mut dots = 0u32;
    for b in strip_prefix(token).bytes() {
        match CLASS[usize::from(b)] {
            0 => return false,
            2 => dots += 1,
            _ => {}
        }
    }
    dots == 2
}

#[cfg(test)]
mod tests {
    use super::looks_like_jwt;

    #[test]
    fn the_shape_of_a_compact_jws() {
        for yes in ["a.b.c", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_x", "glcbt-aa.bb.cc", "..", "A-_.0.9"] {
            assert!(looks_like_jwt(yes), "{yes}");
        }
        for no in ["a.b", "a.b.c.d", "a.b.c=", "a.b.c ", "a+b.c.d", "glpat-abc", "", "a.b.\u{e9}"] {
            assert!(!looks_like_jwt(no), "{no}");
        }
    }
}
