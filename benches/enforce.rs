//! The in-process enforce path (no sockets) for a `git-upload-pack` request with a GitLab-style job
//! token: classify, extract, decide, verification per algorithm without the cache next to raw ring
//! verification of the same signature, the cached verify, and the whole `proxy::enforce`.
//!
//! Run: `cargo bench --bench enforce` (criterion; results in target/criterion).
//!
//! Results: see the table at the end of this comment (updated with each change that moves them).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a bench fixture may fail loudly

use std::path::Path;
use std::time::SystemTime;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{Method, Request};
use jobgate::classify::classify;
use jobgate::config::NonJob;
use jobgate::metrics::Metrics;
use jobgate::policy::{decide, Policy};
use jobgate::proxy::{enforce, unix_now, Verdict};
use jobgate::snapshot::Snapshot;
use jobgate::token::extract::extract;
use jobgate::token::keys::KeySet;
use jobgate::token::mint::{JobClaims, Signer};
use jobgate::token::source::KeySource;
use jobgate::token::verify::{Issuer, Verifier};
use jobgate::token::Alg;
use ring::signature::{self as sig, UnparsedPublicKey, VerificationAlgorithm};

const POLICY: &str = "
projects:
  acme/app:
    id: 42
    allow:
      - { from: acme/lib, scopes: [write_repository], refs: protected }
";

struct Fixture {
    snapshot: Snapshot,
    verifier: Verifier,
    /// (algorithm, token, ring algorithm, public key bytes as ring takes them)
    tokens: Vec<(Alg, String, &'static dyn VerificationAlgorithm, Vec<u8>)>,
}

fn fixture() -> Fixture {
    let metrics = Metrics::new();
    let (rsa, _) = Signer::generate(Alg::RS256).unwrap();
    let (ec, _) = Signer::generate(Alg::ES256).unwrap();
    let mut rsa_jwk = rsa.public_jwk();
    rsa_jwk["kid"] = "rsa".into();
    let mut ec_jwk = ec.public_jwk();
    ec_jwk["kid"] = "ec".into();
    let jwks = serde_json::json!({"keys": [rsa_jwk, ec_jwk]});
    let keys = KeySet::from_jwks("bench", jwks.to_string().as_bytes()).unwrap();
    let issuer = Issuer {
        name: "ci".into(),
        iss: "https://gitlab.example.com".into(),
        audiences: vec!["jobgate".into()],
        algorithms: vec![Alg::RS256, Alg::PS256, Alg::ES256],
        leeway: 30,
        max_lifetime: 3600,
        keys: KeySource::fixed(keys, metrics.issuer("ci")),
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
    let payload = claims.payload(unix_now());
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
    let rsa_der = {
        // ring's RSA verification takes PKCS#1 RSAPublicKey DER: what jobgate builds from the JWK too.
        let c = ring::rsa::PublicKeyComponents { n: b64(rsa_jwk["n"].as_str().unwrap()), e: b64(rsa_jwk["e"].as_str().unwrap()) };
        rsa_public_key_der(&c.n, &c.e)
    };
    let ec_point = [vec![4u8], b64(ec_jwk["x"].as_str().unwrap()), b64(ec_jwk["y"].as_str().unwrap())].concat();
    let tokens = vec![
        (Alg::RS256, rsa.sign_as(Alg::RS256, "rsa", &payload).unwrap(), &sig::RSA_PKCS1_2048_8192_SHA256 as &dyn VerificationAlgorithm, rsa_der.clone()),
        (Alg::PS256, rsa.sign_as(Alg::PS256, "rsa", &payload).unwrap(), &sig::RSA_PSS_2048_8192_SHA256, rsa_der),
        (Alg::ES256, ec.sign_as(Alg::ES256, "ec", &payload).unwrap(), &sig::ECDSA_P256_SHA256_FIXED, ec_point),
    ];
    let snapshot = Snapshot { generation: 1, loaded_at: SystemTime::now(), policy: Policy::from_yaml(Path::new("bench.yaml"), POLICY).unwrap() };
    Fixture { snapshot, verifier: Verifier::new(vec![issuer], 8192, 1000, &metrics), tokens }
}

fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match value.len() {
            len if len < 0x80 => out.push(len as u8),
            len if len < 0x100 => out.extend([0x81, len as u8]),
            len => out.extend([0x82, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(value);
        out
    }
    let int = |m: &[u8]| tlv(2, &[&[0u8][..], m].concat());
    tlv(0x30, &[int(n), int(e)].concat())
}

fn enforce_path(c: &mut Criterion) {
    let f = fixture();
    let now = unix_now();
    let (_, token, _, _) = &f.tokens[0];
    let basic = format!("Basic {}", STANDARD.encode(format!("gitlab-ci-token:{token}")));
    let (parts, ()) = Request::builder()
        .method(Method::POST)
        .uri("/acme/app.git/git-upload-pack")
        .header("host", "gitlab.example.com")
        .header("authorization", basic)
        .header("content-type", "application/x-git-upload-pack-request")
        .header("git-protocol", "version=2")
        .body(())
        .unwrap()
        .into_parts();
    let classified = classify(&parts.method, parts.uri.path(), parts.uri.query()).unwrap();
    let claims = f.verifier.verify(token, now).unwrap();
    assert!(matches!(enforce(&f.snapshot, &f.verifier, NonJob::Reject, &parts, now).verdict, Verdict::Allow(_)));

    c.bench_function("classify", |b| b.iter(|| classify(black_box(&parts.method), black_box(parts.uri.path()), None)));
    c.bench_function("extract_basic", |b| b.iter(|| extract(black_box(&parts.headers), None).map(|_| ())));
    c.bench_function("decide", |b| b.iter(|| decide(&f.snapshot.policy, black_box(&classified), claims.claims())));
    for (alg, token, ring_alg, public_key) in &f.tokens {
        let name = alg.name();
        assert!(f.verifier.verify_uncached_for_bench(token, now).is_ok(), "{name}");
        c.bench_function(&format!("verify_uncached_{name}"), |b| b.iter(|| f.verifier.verify_uncached_for_bench(black_box(token), now).is_ok()));
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        let key = UnparsedPublicKey::new(*ring_alg, public_key.as_slice());
        assert!(key.verify(input.as_bytes(), &signature).is_ok(), "{name}");
        c.bench_function(&format!("raw_ring_{name}"), |b| b.iter(|| key.verify(black_box(input.as_bytes()), &signature).is_ok()));
    }
    c.bench_function("verify_cached", |b| b.iter(|| f.verifier.verify(black_box(token), now).is_ok()));
    c.bench_function("enforce_cached", |b| b.iter(|| enforce(&f.snapshot, &f.verifier, NonJob::Reject, black_box(&parts), now).claims.is_some()));
}

criterion_group!(benches, enforce_path);
criterion_main!(benches);
