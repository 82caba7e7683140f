//! The dev/test issuer: signing keys (generate, load), their public JWK, and job tokens in GitLab's
//! claim formats. Used by `jobgate keys generate`, `jobgate token mint`, the demo, tests and benches;
//! never on the request path.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde_json::{json, Map, Value};

use super::Alg;

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("signing key: {0}")]
    Key(String),
    #[error("signing failed")]
    Sign,
}

/// A private signing key: RSA (RS256) or ECDSA P-256 (ES256).
pub enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl Signer {
    /// Generates a new key for `alg` (RS256: 2048-bit RSA; ES256: P-256) and returns it with its
    /// PKCS#8 PEM.
    ///
    /// # Errors
    /// Only for an algorithm the generator does not offer, or a failing system RNG.
    pub fn generate(alg: Alg) -> Result<(Signer, String), MintError> {
        let pem = match alg {
            Alg::RS256 => {
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                    .map_err(|e| MintError::Key(e.to_string()))?;
                key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).map_err(|e| MintError::Key(e.to_string()))?.to_string()
            }
            Alg::ES256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| MintError::Key(e.to_string()))?
                .serialize_pem(),
            other => return Err(MintError::Key(format!("cannot generate {} keys (RS256, ES256)", other.name()))),
        };
        Ok((Signer::from_pem(&pem)?, pem))
    }

    /// Loads a PEM private key (PKCS#8 RSA or P-256, or PKCS#1 RSA).
    ///
    /// # Errors
    /// Not PEM, or a key type ring cannot sign with here.
    pub fn from_pem(pem: &str) -> Result<Signer, MintError> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| MintError::Key(e.to_string()))?;
        match &der {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()).map(Signer::Rsa).ok(),
            PrivateKeyDer::Pkcs8(k) => {
                RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).map(Signer::Rsa).ok().or_else(|| {
                    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
                    EcdsaKeyPair::from_pkcs8(alg, k.secret_pkcs8_der(), &SystemRandom::new()).map(Signer::Ec).ok()
                })
            }
            _ => None,
        }
        .ok_or_else(|| MintError::Key("not an RSA or P-256 private key".into()))
    }

    pub fn alg(&self) -> Alg {
        match self {
            Signer::Rsa(_) => Alg::RS256,
            Signer::Ec(_) => Alg::ES256,
        }
    }

    /// The public key as a JWK (RFC 7517) without `kid`.
    pub fn public_jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match self {
            Signer::Rsa(key) => {
                let c: ring::rsa::PublicKeyComponents<Vec<u8>> = key.public().into();
                json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Signer::Ec(key) => {
                let point = key.public_key().as_ref();
                let (x, y) = point.get(1..).unwrap_or_default().split_at(32);
                json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)})
            }
        }
    }

    /// RFC 7638 thumbprint of the public key: a stable default `kid`.
    pub fn thumbprint(&self) -> String {
        let jwk = self.public_jwk();
        let members: &[&str] = match self {
            Signer::Rsa(_) => &["e", "kty", "n"],
            Signer::Ec(_) => &["crv", "kty", "x", "y"],
        };
        let canonical: Map<String, Value> = members.iter().map(|m| ((*m).to_owned(), jwk[*m].clone())).collect();
        let digest = ring::digest::digest(&ring::digest::SHA256, Value::Object(canonical).to_string().as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }

    /// A JWKS document holding this key's public half under `kid`.
    pub fn jwks(&self, kid: &str) -> Value {
        let mut jwk = self.public_jwk();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(self.alg().name());
        json!({ "keys": [jwk] })
    }

    /// Signs as `alg`: RS256/384/512 and PS256/384/512 with an RSA key, ES256 with a P-256 key.
    ///
    /// # Errors
    /// An algorithm the key cannot sign with, or a ring failure.
    pub fn sign_as(&self, alg: Alg, kid: &str, payload: &Value) -> Result<String, MintError> {
        self.sign_with(alg, &json!({"alg": alg.name(), "typ": "JWT", "kid": kid}), payload)
    }

    /// Signs a payload with the standard header (`alg` of the key, `typ: JWT`, `kid`).
    ///
    /// # Errors
    /// Only if ring fails to sign.
    pub fn sign(&self, kid: &str, payload: &Value) -> Result<String, MintError> {
        self.sign_as(self.alg(), kid, payload)
    }

    /// Signs an arbitrary header and payload with the key's own algorithm, whatever the header says
    /// (tests forge headers with it).
    ///
    /// # Errors
    /// Only if ring fails to sign.
    pub fn sign_raw(&self, header: &Value, payload: &Value) -> Result<String, MintError> {
        self.sign_with(self.alg(), header, payload)
    }

    fn sign_with(&self, alg: Alg, header: &Value, payload: &Value) -> Result<String, MintError> {
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(payload.to_string()));
        let rng = SystemRandom::new();
        let signature = match (self, alg) {
            (Signer::Ec(key), Alg::ES256) => {
                key.sign(&rng, input.as_bytes()).map_err(|_| MintError::Sign)?.as_ref().to_vec()
            }
            (Signer::Rsa(key), _) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    Alg::RS256 => &signature::RSA_PKCS1_SHA256,
                    Alg::RS384 => &signature::RSA_PKCS1_SHA384,
                    Alg::RS512 => &signature::RSA_PKCS1_SHA512,
                    Alg::PS256 => &signature::RSA_PSS_SHA256,
                    Alg::PS384 => &signature::RSA_PSS_SHA384,
                    Alg::PS512 => &signature::RSA_PSS_SHA512,
                    _ => return Err(MintError::Key(format!("an RSA key cannot sign {}", alg.name()))),
                };
                let mut sig = vec![0; key.public().modulus_len()];
                key.sign(padding, &rng, input.as_bytes(), &mut sig).map_err(|_| MintError::Sign)?;
                sig
            }
            _ => return Err(MintError::Key(format!("this key cannot sign {}", alg.name()))),
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// What a job token says about its job, in the terms `jobgate token mint` takes.
#[derive(Debug, Clone)]
pub struct JobClaims {
    pub iss: String,
    pub aud: String,
    pub project_path: String,
    pub project_id: u64,
    pub user_id: u64,
    pub job_id: u64,
    pub pipeline_id: u64,
    pub git_ref: String,
    pub ref_protected: bool,
    pub ttl_secs: i64,
    pub scopes: Option<Vec<String>>,
    /// Extra or overriding claims, applied last.
    pub extra: Vec<(String, Value)>,
}

impl JobClaims {
    /// A GitLab-ID-token-shaped payload (string ids, string `ref_protected`) issued at `now`.
    pub fn payload(&self, now: i64) -> Value {
        let namespace = self.project_path.rsplit_once('/').map_or("", |(ns, _)| ns);
        let mut payload = json!({
            "iss": self.iss,
            "aud": self.aud,
            "sub": format!("project_path:{}:ref_type:branch:ref:{}", self.project_path, self.git_ref),
            "jti": format!("{}-{}", self.job_id, now),
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl_secs,
            "namespace_path": namespace,
            "project_id": self.project_id.to_string(),
            "project_path": self.project_path,
            "user_id": self.user_id.to_string(),
            "pipeline_id": self.pipeline_id.to_string(),
            "job_id": self.job_id.to_string(),
            "ref": self.git_ref,
            "ref_type": "branch",
            "ref_protected": self.ref_protected.to_string(),
        });
        if let Some(scopes) = &self.scopes {
            payload["scopes"] = json!(scopes);
        }
        for (key, value) in &self.extra {
            payload[key.as_str()] = value.clone();
        }
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_round_trip_through_jwk() {
        let (signer, pem) = Signer::generate(Alg::ES256).unwrap();
        assert!(pem.contains("BEGIN PRIVATE KEY"));
        let again = Signer::from_pem(&pem).unwrap();
        assert_eq!(signer.thumbprint(), again.thumbprint());
        assert_eq!(signer.public_jwk()["crv"], "P-256");
    }

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1: the thumbprint of the RFC 7517 appendix A.1 RSA key.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jwk = json!({"e": "AQAB", "kty": "RSA", "n": n});
        let digest = ring::digest::digest(&ring::digest::SHA256, jwk.to_string().as_bytes());
        assert_eq!(URL_SAFE_NO_PAD.encode(digest.as_ref()), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }
}
