//! The classic JWT attacks, sent through a real jobgate process: each is refused with its reason id,
//! nothing named in a header is ever fetched, and the gateway keeps serving afterwards (no panic).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::ErrorKind;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::net::Client;
use common::{echo_upstream, Gateway, AUDIENCE, ISSUER};
use jobgate::token::mint::Signer;
use jobgate::token::Alg;
use serde_json::{json, Value};

fn b64(value: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(value)
}

fn hs256(secret: &[u8], input: &str) -> String {
    b64(ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), input.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = format!("http://127.0.0.1:{}", echo_upstream());
    let gw =
        tokio::task::block_in_place(|| Gateway::start(dir.path(), &upstream, "projects:\n  acme/app: { id: 42 }\n"));
    let client = Client::new(&gw.ca);
    let url = gw.url("/acme/app.git/info/refs?service=git-upload-pack");
    // A listener standing in for every URL an attacker names in a header: it must never be contacted.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_url = format!("https://127.0.0.1:{}/jwks", trap.local_addr().unwrap().port());

    let now = jobgate::clock::unix_now();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600,
        "project_id": "42", "project_path": "acme/app", "job_id": "1", "ref_protected": "false"
    });
    let with = |changes: Value| {
        let mut c = claims.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let kid = gw.kid.clone();
    let good = gw.signer.sign(&kid, &claims).unwrap();
    let body = b64(claims.to_string());
    let (attacker, _) = Signer::generate(Alg::ES256).unwrap();
    let public_pem = std::fs::read_to_string(dir.path().join("keys/jwks.json")).unwrap();
    let jwk = gw.signer.public_jwk();
    let n = jwk["n"].as_str().unwrap().to_owned();
    let der = URL_SAFE_NO_PAD.decode(&n).unwrap();

    let mut cases: Vec<(String, String, &str)> = Vec::new();
    for none in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": none, "kid": kid}).to_string());
        cases.push((format!("alg {none}"), format!("{header}.{body}."), "alg_not_allowed"));
    }
    let rs_header = b64(json!({"alg": "RS256", "kid": kid}).to_string());
    cases.push(("empty signature".into(), format!("{rs_header}.{body}."), "bad_signature"));
    let hs_header = b64(json!({"alg": "HS256", "kid": kid}).to_string());
    let hs_input = format!("{hs_header}.{body}");
    for (form, secret) in
        [("JWKS text", public_pem.as_bytes().to_vec()), ("modulus DER", der), ("JWK n", n.as_bytes().to_vec())]
    {
        cases.push((
            format!("HS256 keyed with the public key ({form})"),
            format!("{hs_input}.{}", hs256(&secret, &hs_input)),
            "alg_not_allowed",
        ));
    }
    for (name, extra) in [
        ("embedded jwk", json!({"jwk": attacker.public_jwk()})),
        ("jku", json!({"jku": trap_url})),
        ("x5u", json!({"x5u": trap_url})),
        ("x5c", json!({"x5c": [STANDARD.encode(b"not a certificate")]})),
    ] {
        let mut header = json!({"alg": "ES256", "kid": kid});
        header.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        cases.push((name.into(), attacker.sign_raw(&header, &claims).unwrap(), "alg_not_allowed"));
    }
    for bad_kid in ["../../../../etc/passwd", "' OR '1'='1", "kid\u{0}", ""] {
        cases.push((format!("kid {bad_kid:?}"), gw.signer.sign(bad_kid, &claims).unwrap(), "unknown_kid"));
    }
    cases.extend([
        (
            "crit header".to_owned(),
            gw.signer.sign_raw(&json!({"alg": "RS256", "kid": kid, "crit": ["exp"]}), &claims).unwrap(),
            "malformed_token",
        ),
        (
            "duplicate header keys".to_owned(),
            format!(
                "{}.{body}.{}",
                b64(format!(r#"{{"alg":"RS256","kid":"{kid}","alg":"none"}}"#)),
                good.rsplit('.').next().unwrap()
            ),
            "malformed_token",
        ),
        ("huge token".to_owned(), format!("{}.{}.{}", rs_header, "A".repeat(20_000), "AAAA"), "token_too_large"),
        ("huge numeric exp".to_owned(), gw.signer.sign(&kid, &with(json!({"exp": 1e20}))).unwrap(), "claim_invalid"),
        (
            "float exp".to_owned(),
            gw.signer.sign(&kid, &with(json!({"exp": (now + 600) as f64 + 0.5}))).unwrap(),
            "claim_invalid",
        ),
        ("missing exp".to_owned(), gw.signer.sign(&kid, &with(json!({"exp": null}))).unwrap(), "claim_invalid"),
        ("not a JWT at all".to_owned(), "glcbt-64_abcdefghijklmnop".to_owned(), "malformed_token"),
    ]);
    for (name, token, reason) in &cases {
        let (status, body) = client.get_with(&url, "job-token", token).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert!(body.contains(&format!("reason: {reason}")), "{name}: expected {reason}: {body}");
    }
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock),
        "a URL from a token header was fetched"
    );
    let (status, body) = client.get_with(&url, "job-token", &good).await;
    assert_eq!(status, 200, "still serving after {} attacks: {body}", cases.len());
}
