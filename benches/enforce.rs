//! The in-process enforce path (no sockets): classify, extract, verify, decide, and the whole of
//! `proxy::enforce`, for a `git-upload-pack` request with an RS256 GitLab-style job token.
//! `raw_ring_rs256` verifies the same signature with ring directly, the floor for `verify`.
//!
//! Run: `cargo bench --bench enforce` (criterion; results in target/criterion).
//!
//! Results, 2026-11-22, 2-core shared x86_64 VM (rust 1.95, release), criterion medians:
//!   classify                  96 ns
//!   extract (Basic, ~1 KB)   1.50 µs   (base64 decode + copy of the password)
//!   decide                    65 ns
//!   verify RS256 (uncached)  41.2 µs
//!   raw ring RS256           40.4 µs   → verify / raw ring = 1.02 (same run)
//!   enforce (all four)       45.3 µs
//! No verified-token cache yet: verify is the whole cost (the cache is issue 3's).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a bench fixture may fail loudly

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{Method, Request};
use jobgate::classify::classify;
use jobgate::config::NonJob;
use jobgate::policy::{decide, Policy};
use jobgate::proxy::{enforce, unix_now, Verdict};
use jobgate::snapshot::Snapshot;
use jobgate::token::extract::extract;
use jobgate::token::keys::KeySet;
use jobgate::token::mint::{JobClaims, Signer};
use jobgate::token::verify::{Issuer, Verifier};
use jobgate::token::Alg;

const POLICY: &str = "
projects:
  acme/app:
    id: 42
    allow:
      - { from: acme/lib, scopes: [write_repository], refs: protected }
";

fn fixture() -> (Snapshot, String, ring::rsa::PublicKeyComponents<Vec<u8>>) {
    let (signer, _) = Signer::generate(Alg::RS256).expect("key");
    let keys = KeySet::from_jwks("bench", signer.jwks("k1").to_string().as_bytes()).expect("jwks");
    let issuer = Issuer {
        name: "ci".into(),
        iss: "https://gitlab.example.com".into(),
        audiences: vec!["jobgate".into()],
        algorithms: vec![Alg::RS256],
        leeway: 30,
        max_lifetime: 3600,
        keys: Arc::new(keys),
    };
    let claims = JobClaims {
        iss: "https://gitlab.example.com".into(),
        aud: "jobgate".into(),
        project_path: "acme/lib".into(),
        project_id: 43,
        user_id: 5,
        job_id: 1001,
        pipeline_id: 7,
        git_ref: "main".into(),
        ref_protected: true,
        ttl_secs: 3000,
        scopes: None,
        extra: vec![],
    };
    let token = signer.sign("k1", &claims.payload(unix_now())).expect("sign");
    let jwk = signer.public_jwk();
    let part = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().expect("jwk member")).expect("b64");
    let components = ring::rsa::PublicKeyComponents { n: part("n"), e: part("e") };
    let snapshot = Snapshot {
        generation: 1,
        loaded_at: SystemTime::now(),
        policy: Policy::from_yaml(Path::new("bench.yaml"), POLICY).expect("policy"),
        verifier: Verifier { issuers: vec![issuer], max_token_bytes: 8192 },
    };
    (snapshot, token, components)
}

fn enforce_path(c: &mut Criterion) {
    let (snapshot, token, rsa) = fixture();
    let basic = format!("Basic {}", STANDARD.encode(format!("gitlab-ci-token:{token}")));
    let request = Request::builder()
        .method(Method::POST)
        .uri("/acme/app.git/git-upload-pack")
        .header("host", "gitlab.example.com")
        .header("authorization", basic)
        .header("content-type", "application/x-git-upload-pack-request")
        .header("git-protocol", "version=2")
        .body(())
        .expect("request");
    let (parts, ()) = request.into_parts();
    let now = unix_now();
    let classified = classify(&parts.method, parts.uri.path(), parts.uri.query()).expect("classified");
    let claims = snapshot.verifier.verify(&token, now).expect("verifies");
    assert!(matches!(enforce(&snapshot, NonJob::Reject, &parts, now).verdict, Verdict::Allow(_)));

    c.bench_function("classify", |b| b.iter(|| classify(black_box(&parts.method), black_box(parts.uri.path()), None)));
    c.bench_function("extract_basic", |b| b.iter(|| extract(black_box(&parts.headers), None).map(|_| ())));
    c.bench_function("decide", |b| b.iter(|| decide(&snapshot.policy, black_box(&classified), claims.claims())));
    c.bench_function("verify_rs256_uncached", |b| b.iter(|| snapshot.verifier.verify(black_box(&token), now).is_ok()));
    let (signing_input, signature) = token.rsplit_once('.').expect("three parts");
    let signature = URL_SAFE_NO_PAD.decode(signature).expect("b64");
    c.bench_function("raw_ring_rs256", |b| {
        b.iter(|| rsa.verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, black_box(signing_input.as_bytes()), &signature).is_ok())
    });
    c.bench_function("enforce", |b| b.iter(|| enforce(&snapshot, NonJob::Reject, black_box(&parts), now).claims.is_some()));
}

criterion_group!(benches, enforce_path);
criterion_main!(benches);
