//! jobgate's registry tokens: short-lived RS256 JWTs signed by jobgate's own key in the format the
//! distribution registry accepts (`kid` = the libtrust key id of the signing key, `iss`, `aud` =
//! service, `access: [{type, name, actions}]`). A token also carries the job's identity, so requests
//! that present it are re-checked against revocations and the live policy. Pure: issuing and
//! verifying only; the realm that hands them out is `realm`.

use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::path::ProjectPath;
use crate::scope::ScopeSet;
use crate::token::claims::Claims;
use crate::token::jws::{Compact, Kind, REGISTRY_TOKEN_TYPE};
use crate::token::keys::KeySet;
use crate::token::mint::Signer;
use crate::token::verify::{verify_signature, VerifiedClaims, VerifyError};
use crate::token::Alg;

/// One `access` entry of a registry token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// The job identity a registry token carries: everything `decide` reads, every ceiling included, so
/// a registry token never holds more than the job token it was issued for.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    project_id: u64,
    project_path: String,
    job_id: u64,
    jti: Option<String>,
    user_id: Option<u64>,
    user_login: Option<String>,
    git_ref: Option<String>,
    ref_type: Option<String>,
    ref_protected: bool,
    environment: Option<String>,
    environment_protected: bool,
    scopes: Option<Vec<crate::scope::Scope>>,
    user_access_level: Option<crate::scope::Role>,
    iss: String,
    exp: i64,
}

#[derive(Deserialize)]
struct Payload {
    iss: String,
    aud: String,
    exp: i64,
    nbf: i64,
    /// The registry token's own id (revocable like the job token's).
    jti: String,
    access: Vec<Access>,
    job: Job,
}

/// A verified registry token: the job it was issued to, what it grants and its own `jti`.
pub struct RegistryGrant {
    pub claims: VerifiedClaims,
    pub access: Vec<Access>,
    pub jti: String,
}

/// Signs and verifies registry tokens.
pub struct RegistryTokens {
    signer: Signer,
    kid: String,
    keys: KeySet,
    pub issuer: String,
    pub service: String,
    /// The realm URL the registry challenge names (`registry_auth.realm`), when configured.
    pub realm: Option<String>,
    ttl: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("registry signing key {path}: {message}")]
pub struct RegistryKeyError {
    path: String,
    message: String,
}

impl RegistryTokens {
    /// Loads the RSA signing key (PKCS#8 PEM).
    ///
    /// # Errors
    /// The key cannot be read or is not an RSA private key.
    pub fn load(path: &Path, issuer: &str, service: &str, ttl_secs: u64) -> Result<RegistryTokens, RegistryKeyError> {
        let error = |message: String| RegistryKeyError { path: path.display().to_string(), message };
        let pem = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let signer = Signer::from_pem(&pem).map_err(|e| error(e.to_string()))?;
        if signer.alg() != Alg::RS256 {
            return Err(error("the registry expects an RSA key (RS256)".into()));
        }
        let kid = libtrust_key_id(&spki_der(&pem).map_err(error)?);
        let jwks = signer.jwks(&kid);
        let keys =
            KeySet::from_jwks("registry signing key", jwks.to_string().as_bytes()).map_err(|e| error(e.to_string()))?;
        Ok(RegistryTokens {
            signer,
            kid,
            keys,
            issuer: issuer.to_owned(),
            service: service.to_owned(),
            realm: None,
            ttl: i64::try_from(ttl_secs).unwrap_or(300),
        })
    }

    /// The same issuer, naming `realm` in its challenges.
    pub fn with_realm(self, realm: Option<String>) -> RegistryTokens {
        RegistryTokens { realm, ..self }
    }

    /// The public key as a JWKS document (served at `/-/jwks`).
    pub fn jwks(&self) -> Value {
        self.signer.jwks(&self.kid)
    }

    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// Issues a token granting `access` to the job behind `claims`; it never outlives the job token.
    ///
    /// # Errors
    /// Only if signing fails.
    pub fn issue(&self, claims: &Claims, access: &[Access], now: i64) -> Result<String, crate::token::mint::MintError> {
        let job = Job {
            project_id: claims.project_id,
            project_path: claims.project_path.to_string(),
            job_id: claims.job_id,
            jti: claims.jti.clone().map(Into::into),
            user_id: claims.user_id,
            user_login: claims.user_login.clone().map(Into::into),
            git_ref: claims.git_ref.clone().map(Into::into),
            ref_type: claims.ref_type.as_deref().map(str::to_owned),
            ref_protected: claims.ref_protected,
            environment: claims.environment.clone().map(Into::into),
            environment_protected: claims.environment_protected,
            scopes: claims.scopes.map(|s| s.iter().collect()),
            user_access_level: claims.user_access_level,
            iss: claims.iss.to_string(),
            exp: claims.exp,
        };
        let mut random = [0u8; 12];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
        let payload = json!({
            "iss": self.issuer,
            "sub": claims.project_path.to_string(),
            "aud": self.service,
            "iat": now,
            "nbf": now,
            "exp": (now + self.ttl).min(claims.exp),
            "jti": URL_SAFE_NO_PAD.encode(random),
            "access": access,
            "job": job,
        });
        let header = json!({"alg": "RS256", "typ": REGISTRY_TOKEN_TYPE, "kid": self.kid});
        self.signer.sign_raw(&header, &payload)
    }

    /// Verifies one of our tokens: its type, our key, RS256, issuer, audience, dates.
    ///
    /// # Errors
    /// As `verify` for job tokens.
    pub fn verify(&self, token: &str, now: i64) -> Result<RegistryGrant, VerifyError> {
        let jws = Compact::parse(token)?;
        if jws.header.kind() != Kind::Registry {
            return Err(VerifyError::NotAJobToken);
        }
        let kid = jws.header.kid.as_deref().ok_or(VerifyError::MissingKid)?;
        let key = self.keys.get(kid).ok_or(VerifyError::UnknownKid { issuer: None })?;
        if jws.header.alg != "RS256" {
            return Err(VerifyError::AlgNotAllowed);
        }
        verify_signature(Alg::RS256, key, jws.signing_input.as_bytes(), &jws.signature)?;
        let payload: Payload = jws.payload()?;
        if payload.iss != self.issuer {
            return Err(VerifyError::UnknownIssuer);
        }
        if payload.aud != self.service {
            return Err(VerifyError::WrongAudience);
        }
        if payload.exp < now {
            return Err(VerifyError::Expired);
        }
        if payload.nbf > now + 30 {
            return Err(VerifyError::NotYetValid);
        }
        let job = payload.job;
        let claims = Claims {
            iss: job.iss.into(),
            jti: job.jti.map(Into::into),
            exp: job.exp,
            iat: None,
            project_id: job.project_id,
            project_path: ProjectPath::parse(&job.project_path)
                .ok_or(crate::token::claims::ClaimError("project_path"))?,
            user_id: job.user_id,
            user_login: job.user_login.map(Into::into),
            user_access_level: job.user_access_level,
            pipeline_id: None,
            job_id: job.job_id,
            git_ref: job.git_ref.map(Into::into),
            ref_type: job.ref_type.map(crate::token::claims::ref_type),
            ref_protected: job.ref_protected,
            environment: job.environment.map(Into::into),
            environment_protected: job.environment_protected,
            scopes: job.scopes.map(|s| s.into_iter().collect::<ScopeSet>()),
        };
        Ok(RegistryGrant {
            claims: VerifiedClaims::from_arc(Arc::new(claims)),
            access: payload.access,
            jti: payload.jti,
        })
    }
}

/// DER of the SubjectPublicKeyInfo of an RSA private key given as PKCS#8 PEM.
pub fn spki_der(pem: &str) -> Result<Vec<u8>, String> {
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| e.to_string())?;
    Ok(key.to_public_key().to_public_key_der().map_err(|e| e.to_string())?.as_bytes().to_vec())
}

/// The docker/libtrust key id: SHA-256 of the SPKI DER, first 240 bits, base32, groups of four.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let encoded = data_encoding::BASE32_NOPAD.encode(&digest.as_ref()[..30]);
    encoded.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(":")
}

/// Whether `access` grants `action` on `name` (`*` grants every action).
pub fn grants(access: &[Access], name: &str, action: &str) -> bool {
    access.iter().any(|a| a.kind == "repository" && a.name == name && a.actions.iter().any(|x| x == action || x == "*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_format() {
        let id = libtrust_key_id(b"any spki");
        assert_eq!(id.len(), 12 * 4 + 11);
        assert!(id
            .split(':')
            .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))));
    }

    #[test]
    fn issued_tokens_verify_and_carry_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let (_, pem) = Signer::generate(Alg::RS256).unwrap();
        std::fs::write(dir.path().join("k.pem"), &pem).unwrap();
        let auth = RegistryTokens::load(&dir.path().join("k.pem"), "jobgate", "registry", 300).unwrap();
        let claims = sample();
        let access = vec![Access { kind: "repository".into(), name: "acme/app".into(), actions: vec!["pull".into()] }];
        let token = auth.issue(&claims, &access, 1_000).unwrap();
        assert_eq!(crate::token::jws::kind_of(&token), Some(Kind::Registry));
        let grant = auth.verify(&token, 1_100).unwrap();
        let back = grant.claims.claims();
        assert_eq!((back.job_id, back.project_path.as_str(), grant.access), (7, "acme/app", access));
        assert_eq!(back.user_access_level, Some(crate::scope::Role::Guest), "the user ceiling travels");
        assert!(matches!(auth.verify(&token, 10_000), Err(VerifyError::Expired)));
        let mut forged = token.clone();
        forged.push('x');
        assert!(auth.verify(&forged, 1_100).is_err());
    }

    fn sample() -> Claims {
        Claims {
            jti: Some("j".into()),
            user_id: Some(1),
            user_access_level: Some(crate::scope::Role::Guest),
            ref_protected: true,
            ..Claims::job("ci", ProjectPath::parse("acme/app").unwrap(), 42, 7, 5_000)
        }
    }
}
