//! The in-process enforce path (no sockets) for a `git-upload-pack` request with a GitLab-style job
//! token: classify, extract, decide, verification per algorithm without the cache next to raw ring
//! verification of the same signature, the cached verify, and the whole `enforce::enforce`.
//!
//! Run: `cargo bench --bench enforce` (criterion; results in target/criterion).
//!
//! Results, 2026-12-01, 2-core shared x86_64 VM (rust 1.95, release), criterion medians, two runs
//! alternating with the 2026-11-22 code (584b9b8) in one session (`--warm-up-time 1 --measurement-time 3`);
//! compare within a run, absolute numbers drift on this shared machine:
//!
//! | bench | 584b9b8 (two runs) | now (two runs) | ratio |
//! |---|---|---|---|
//! | classify | 141 / 158 ns | 128 / 127 ns | 0.85 |
//! | extract (Basic, ~1 KB token) | 848 / 954 ns | 852 / 856 ns | 0.94 |
//! | decide | 141 / 147 ns | 150 / 149 ns | 1.04 |
//! | verify cached (no metrics inside any more) | 854 / 828 ns | 677 / 683 ns | 0.81 |
//! | enforce, cached token (all four stages + revocations) | 2.20 / 2.38 µs | 2.19 / 2.19 µs | 0.96 |
//!
//! GitLab's own opaque job token whose identity is cached (`enforce_cached_gitlab_job_token`), same
//! run as `enforce_cached` with a JWT: 1.16 µs vs 2.18 µs (a shorter Basic header to decode; the JWT
//! verifier turns the opaque token away before any crypto, then one lookup in GitLab's answers).
//!
//! Uncached verification, same session (issue-10 state): RS256 31.6 / 30.9 µs → 30.5 / 31.2 µs (raw
//! ring 25 µs), PS256 32.9 / 33.3 → 32.2 / 32.7 µs, ES256 66.9 / 67.3 → 67.4 / 68.5 µs.
//!
//! 2026-12-08, after the needs driver and the layers (issue 24), against 613e562, same machine, six
//! alternating runs each (`--warm-up-time 1..2 --measurement-time 3..5`), medians of the medians:
//! `enforce_cached` 2.08 µs vs 2.08 µs (runs ranged 1.95–2.36 and 2.03–2.18: order and noise, the
//! perf profiles of the two loops match); `verify_uncached_RS256` 31.5 µs vs 31.0 µs (the same code);
//! `enforce_cached_gitlab_job_token` 0.90 µs vs 1.04 µs (the opaque token goes to GitLab's answers by
//! its shape, no failed JWT parse first).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a bench fixture may fail loudly

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{Method, Request};
use jobgate::classify::classify;
use jobgate::clock::unix_now;
use jobgate::config::NonJob;
use jobgate::enforce::{enforce, Core, Known, NoTrace, NonJobRules, Verdict};
use jobgate::policy::{decide, Policy};
use jobgate::revoke::RevocationSet;
use jobgate::snapshot::Snapshot;
use jobgate::token::extract::extract;
use jobgate::token::gitlab::{Identity, JobIdentities};
use jobgate::token::keys::{KeySet, KeyState};
use jobgate::token::mint::{JobClaims, Signer};
use jobgate::token::verify::{Issuer, Verifier};
use jobgate::token::Alg;
use ring::signature::{self as sig, UnparsedPublicKey};

const POLICY: &str = "
projects:
  acme/app:
    id: 42
    allow:
      - { from: acme/lib, scopes: [write_repository], refs: protected }
";

type RawVerify = Box<dyn Fn(&[u8], &[u8]) -> bool>;

struct Fixture {
    snapshot: Snapshot,
    verifier: Verifier,
    /// (algorithm, token, raw ring verification of (signing input, signature))
    tokens: Vec<(Alg, String, RawVerify)>,
}

fn fixture() -> Fixture {
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
        keys: KeyState::fixed(keys),
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
    let rsa_key = ring::rsa::PublicKeyComponents {
        n: b64(rsa_jwk["n"].as_str().unwrap()),
        e: b64(rsa_jwk["e"].as_str().unwrap()),
    };
    let rsa_raw = |alg: &'static sig::RsaParameters| -> RawVerify {
        let key = rsa_key.clone();
        Box::new(move |input, signature| key.verify(alg, input, signature).is_ok())
    };
    let ec_point = [vec![4u8], b64(ec_jwk["x"].as_str().unwrap()), b64(ec_jwk["y"].as_str().unwrap())].concat();
    let ec_raw: RawVerify = Box::new(move |input, signature| {
        UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, &ec_point).verify(input, signature).is_ok()
    });
    let tokens = vec![
        (Alg::RS256, rsa.sign_as(Alg::RS256, "rsa", &payload).unwrap(), rsa_raw(&sig::RSA_PKCS1_2048_8192_SHA256)),
        (Alg::PS256, rsa.sign_as(Alg::PS256, "rsa", &payload).unwrap(), rsa_raw(&sig::RSA_PSS_2048_8192_SHA256)),
        (Alg::ES256, ec.sign_as(Alg::ES256, "ec", &payload).unwrap(), ec_raw),
    ];
    let snapshot = Snapshot::new(Policy::from_yaml(Path::new("bench.yaml"), POLICY).unwrap(), Vec::new(), 1);
    Fixture { snapshot, verifier: Verifier::new(vec![issuer], 8192, 1000), tokens }
}

fn enforce_path(c: &mut Criterion) {
    let f = fixture();
    let now = unix_now();
    let (_, token, _) = &f.tokens[0];
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
    let claims = f.verifier.verify(token, now).unwrap().claims;
    let (revocations, non_job) = (RevocationSet::default(), NonJobRules::uniform(NonJob::Reject));
    let core = Core {
        snapshot: &f.snapshot,
        verifier: &f.verifier,
        revocations: &revocations,
        registry: None,
        gitlab: None,
        non_job: &non_job,
    };
    assert!(matches!(
        enforce(&core, &parts, &Known::default(), now, &mut NoTrace).decided().unwrap().verdict,
        Verdict::Allow(..)
    ));

    c.bench_function("classify", |b| b.iter(|| classify(black_box(&parts.method), black_box(parts.uri.path()), None)));
    c.bench_function("extract_basic", |b| b.iter(|| extract(black_box(&parts.headers), None).map(|_| ())));
    c.bench_function("decide", |b| b.iter(|| decide(&f.snapshot.policy, black_box(&classified), claims.claims())));
    for (alg, token, raw_verify) in &f.tokens {
        let name = alg.name();
        assert!(f.verifier.verify_uncached_for_bench(token, now).is_ok(), "{name}");
        c.bench_function(&format!("verify_uncached_{name}"), |b| {
            b.iter(|| f.verifier.verify_uncached_for_bench(black_box(token), now).is_ok())
        });
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        assert!(raw_verify(input.as_bytes(), &signature), "{name}");
        c.bench_function(&format!("raw_ring_{name}"), |b| {
            b.iter(|| raw_verify(black_box(input.as_bytes()), &signature))
        });
    }
    c.bench_function("verify_cached", |b| b.iter(|| f.verifier.verify(black_box(token), now).is_ok()));
    c.bench_function("enforce_cached", |b| {
        b.iter(|| {
            enforce(&core, black_box(&parts), &Known::default(), now, &mut NoTrace)
                .decided()
                .is_some_and(|e| e.verdict.claims().is_some())
        })
    });

    // The same request with GitLab's own opaque job token, whose identity GitLab answered earlier.
    let opaque = "glcbt-64_0123456789abcdefABCDEF_xyz";
    let identities = JobIdentities::new(1000, "https://gitlab.example.com", false);
    identities.insert(opaque, Identity::Job(std::sync::Arc::new(claims.claims().clone())), now + 60, now);
    let mut gitlab_parts = parts.clone();
    let basic = format!("Basic {}", STANDARD.encode(format!("gitlab-ci-token:{opaque}")));
    gitlab_parts.headers.insert("authorization", basic.parse().unwrap());
    let core = Core { gitlab: Some(&identities), ..core };
    assert!(matches!(
        enforce(&core, &gitlab_parts, &Known::default(), now, &mut NoTrace).decided().unwrap().verdict,
        Verdict::Allow(..)
    ));
    c.bench_function("enforce_cached_gitlab_job_token", |b| {
        b.iter(|| {
            enforce(&core, black_box(&gitlab_parts), &Known::default(), now, &mut NoTrace)
                .decided()
                .is_some_and(|e| e.verdict.claims().is_some())
        })
    });
}

criterion_group!(benches, enforce_path);
criterion_main!(benches);
