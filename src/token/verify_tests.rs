//! Table tests for `verify`: every check, and the classic JWT attacks.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::*;
use crate::token::keys::{KeySet, KeyState};
use crate::token::mint::Signer;

const NOW: i64 = 1_800_000_000;

struct Keys {
    rsa: Signer,
    ec: Signer,
    verifier: Verifier,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (rsa, _) = Signer::generate(Alg::RS256).unwrap();
        let (ec, _) = Signer::generate(Alg::ES256).unwrap();
        let mut jwks = rsa.jwks("rsa");
        let ec_jwk = ec.jwks("ec")["keys"][0].clone();
        let keys = jwks["keys"].as_array_mut().unwrap();
        keys.push(ec_jwk);
        keys.push(json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}));
        let set = KeySet::from_jwks("test", jwks.to_string().as_bytes()).unwrap();
        assert_eq!(set.skipped.len(), 1, "the oct key is skipped, the others load");
        let issuer = Issuer {
            name: "ci".into(),
            iss: "https://gitlab.example.com".into(),
            audiences: vec!["jobgate".into()],
            algorithms: vec![Alg::RS256, Alg::ES256],
            leeway: 30,
            max_lifetime: 3600,
            keys: KeyState::fixed(set),
        };
        Keys { rsa, ec, verifier: Verifier::new(vec![issuer], 8192, 1000) }
    })
}

fn payload() -> Value {
    json!({
        "iss": "https://gitlab.example.com", "aud": "jobgate", "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 600,
        "project_id": "42", "project_path": "acme/app", "job_id": "7", "ref_protected": "true", "user_id": "5"
    })
}

fn with(changes: Value) -> Value {
    let mut p = payload();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            p.as_object_mut().unwrap().remove(k);
        } else {
            p[k] = v.clone();
        }
    }
    p
}

fn verify(token: &str) -> Result<VerifiedClaims, VerifyError> {
    keys().verifier.verify(token, NOW).map(|v| v.claims)
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[test]
fn valid_tokens_of_both_key_types_verify() {
    let k = keys();
    let rs = k.rsa.sign("rsa", &payload()).unwrap();
    let claims = verify(&rs).unwrap();
    assert_eq!(claims.claims().project_id, 42);
    assert!(claims.claims().ref_protected);
    assert!(verify(&k.ec.sign("ec", &payload()).unwrap()).is_ok());
    let many_aud = k.rsa.sign("rsa", &with(json!({"aud": ["other", "jobgate"]}))).unwrap();
    assert!(verify(&many_aud).is_ok());
}

#[test]
fn claim_checks() {
    let k = keys();
    let cases = [
        (json!({"iss": "https://evil.example.com"}), VerifyError::UnknownIssuer),
        (json!({"iss": null}), VerifyError::UnknownIssuer),
        (json!({"aud": "someone-else"}), VerifyError::WrongAudience),
        (json!({"aud": null}), VerifyError::WrongAudience),
        (json!({"exp": NOW - 31}), VerifyError::Expired),
        (json!({"nbf": NOW + 31}), VerifyError::NotYetValid),
        (json!({"iat": NOW + 31}), VerifyError::NotYetValid),
        (json!({"iat": NOW - 60, "exp": NOW + 4000}), VerifyError::LifetimeTooLong),
        (json!({"exp": null}), VerifyError::Claim(ClaimError("exp"))),
        (json!({"exp": 1.8e9}), VerifyError::Claim(ClaimError("exp"))),
        (json!({"exp": 99_999_999_999_999_999u64}), VerifyError::Claim(ClaimError("exp"))),
        (json!({"project_path": null}), VerifyError::Claim(ClaimError("project_path"))),
        (json!({"job_id": "seven"}), VerifyError::Claim(ClaimError("job_id"))),
    ];
    for (changes, want) in cases {
        let token = k.rsa.sign("rsa", &with(changes.clone())).unwrap();
        assert_eq!(verify(&token).err(), Some(want), "{changes}");
    }
    // Inside the leeway is fine.
    assert!(verify(&k.rsa.sign("rsa", &with(json!({"exp": NOW - 29}))).unwrap()).is_ok());
}

#[test]
fn header_attacks() {
    let k = keys();
    let good = k.rsa.sign("rsa", &payload()).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let body = b64(&payload());
    let forge = |header: Value, signature: &str| format!("{}.{body}.{signature}", b64(&header));
    let mut cases = vec![];
    for none in ["none", "None", "NONE", "nOnE"] {
        cases.push((forge(json!({"alg": none, "kid": "rsa"}), ""), Reason::AlgNotAllowed));
        cases.push((forge(json!({"alg": none, "kid": "rsa"}), parts[2]), Reason::AlgNotAllowed));
    }
    // HS256 "signed" with the RSA public key, in the forms attackers use.
    let jwk = k.rsa.public_jwk();
    for secret in [jwk.to_string(), jwk["n"].as_str().unwrap().to_owned()] {
        let header = json!({"alg": "HS256", "kid": "rsa"});
        let input = format!("{}.{body}", b64(&header));
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()), input.as_bytes());
        cases.push((format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag)), Reason::AlgNotAllowed));
    }
    cases.extend([
        (forge(json!({"alg": "HS256", "kid": "hmac"}), "c2ln"), Reason::UnknownKid),
        (forge(json!({"alg": "ES256", "kid": "rsa"}), parts[2]), Reason::AlgNotAllowed),
        (forge(json!({"alg": "RS256"}), parts[2]), Reason::UnknownKid),
        (forge(json!({"alg": "RS256", "kid": "../../etc/passwd"}), parts[2]), Reason::UnknownKid),
        (forge(json!({"alg": "RS256", "kid": "' OR 1=1 --"}), parts[2]), Reason::UnknownKid),
        (forge(json!({"alg": "RS256", "kid": "rsa", "crit": ["exp"]}), parts[2]), Reason::MalformedToken),
        (
            forge(json!({"alg": "RS256", "kid": "rsa", "jku": "https://evil/jwks", "x5u": "https://evil/x"}), parts[2]),
            Reason::BadSignature,
        ),
        (forge(json!({"alg": "RS256", "kid": "rsa"}), ""), Reason::BadSignature),
        (
            format!("{}.{}.{}", parts[0], b64(&with(json!({"project_path": "acme/secret"}))), parts[2]),
            Reason::BadSignature,
        ),
        (
            format!(
                "{}.{}.{}{}",
                parts[0],
                parts[1],
                if parts[2].starts_with('A') { "B" } else { "A" },
                &parts[2][1..]
            ),
            Reason::BadSignature,
        ),
        (format!("{}.{}", parts[0], parts[1]), Reason::MalformedToken),
        (format!("{good}.x"), Reason::MalformedToken),
        (
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","alg":"none","kid":"rsa"}"#),
                parts[1],
                parts[2]
            ),
            Reason::MalformedToken,
        ),
        (format!("{}.{}.{}", parts[0], parts[1], "*bad*"), Reason::MalformedToken),
        ("not a token".to_owned(), Reason::MalformedToken),
        (format!("{}.{}.{}", parts[0], "x".repeat(9000), parts[2]), Reason::TokenTooLarge),
    ]);
    for (token, want) in cases {
        let got = verify(&token).err().map(|e| e.reason());
        assert_eq!(got, Some(want), "{}", &token[..token.len().min(120)]);
    }
}

#[test]
fn embedded_jwk_is_never_trusted() {
    let (attacker, _) = Signer::generate(Alg::ES256).unwrap();
    let header = json!({"alg": "ES256", "kid": "ec", "jwk": attacker.public_jwk()});
    let token = attacker.sign_raw(&header, &payload()).unwrap();
    assert_eq!(verify(&token).err(), Some(VerifyError::BadSignature));
}

#[test]
fn error_messages_never_echo_the_token() {
    let k = keys();
    let token = k.rsa.sign("rsa", &with(json!({"aud": "x"}))).unwrap();
    let message = verify(&token).unwrap_err().to_string();
    assert!(!message.contains(token.split('.').nth(1).unwrap()));
}
