//! Nothing from the network or from an operator's file can make the decision core panic: classify,
//! extract, verify, the JWKS parser and the policy loader fed arbitrary and mutated input (proptest).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use jobgate::classify::classify;
use jobgate::policy::Policy;
use jobgate::token::extract::extract;
use jobgate::token::keys::{KeySet, KeyState};
use jobgate::token::mint::Signer;
use jobgate::token::verify::{Issuer, Verifier};
use jobgate::token::Alg;
use proptest::prelude::*;

fn verifier() -> &'static (Verifier, String) {
    static V: OnceLock<(Verifier, String)> = OnceLock::new();
    V.get_or_init(|| {
        let (signer, _) = Signer::generate(Alg::ES256).unwrap();
        let keys = KeySet::from_jwks("t", signer.jwks("k").to_string().as_bytes()).unwrap();
        let issuer = Issuer {
            name: "ci".into(),
            iss: "i".into(),
            audiences: vec!["a".into()],
            algorithms: vec![Alg::ES256, Alg::RS256],
            leeway: 30,
            max_lifetime: 3600,
            keys: KeyState::fixed(keys),
        };
        let payload = serde_json::json!({"iss": "i", "aud": "a", "exp": 2_000_000_000u64, "iat": 1_999_999_000u64, "project_id": "1", "project_path": "a/b", "job_id": "2"});
        let token = signer.sign("k", &payload).unwrap();
        (Verifier::new(vec![issuer], 8192, 100), token)
    })
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn classify_never_panics(m in method(), path in "/[a-zA-Z0-9_./%;:@!~*'()+,=&?\\\\-]{0,80}", query in proptest::option::of("[a-z_=&%0-9A-F.+-]{0,40}")) {
        let _ = classify(&m, &path, query.as_deref());
        for prefix in ["/api/v4/", "/v2/", "/acme/app.git/info/lfs/", "/acme/app/"] {
            let _ = classify(&m, &format!("{prefix}{}", &path[1..]), query.as_deref());
        }
    }

    #[test]
    fn extract_never_panics(values in prop::collection::vec(("[a-zA-Z_-]{1,12}", "[ -~]{0,60}"), 0..6), query in proptest::option::of("[ -~]{0,60}")) {
        let mut headers = HeaderMap::new();
        for (name, value) in &values {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                headers.append(n, v);
            }
        }
        for scheme in ["Basic ", "Bearer ", "basic ", ""] {
            if let Ok(v) = HeaderValue::from_str(&format!("{scheme}{}", values.first().map_or("", |v| v.1.as_str()))) {
                let mut with = headers.clone();
                with.insert(http::header::AUTHORIZATION, v);
                let _ = extract(&with, query.as_deref());
            }
        }
        let _ = extract(&headers, query.as_deref());
    }

    #[test]
    fn verify_never_panics_on_mutated_tokens(position in 0usize..2000, replacement in "[ -~]{0,8}", garbage in "[ -~]{0,300}", json in "[ -~]{0,200}") {
        let (verifier, token) = verifier();
        let mut mutated = token.clone();
        let at = position % mutated.len();
        if mutated.is_char_boundary(at) {
            mutated.replace_range(at..(at + 1).min(mutated.len()), &replacement);
        }
        let _ = verifier.verify(&mutated, 1_999_999_500);
        let _ = verifier.verify(&garbage, 1_999_999_500);
        // Well-formed base64 around arbitrary JSON in the header and the payload.
        let forged = format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(&json), URL_SAFE_NO_PAD.encode(&json), URL_SAFE_NO_PAD.encode(&garbage));
        let _ = verifier.verify(&forged, 1_999_999_500);
        let header_only = format!("{}.{}", URL_SAFE_NO_PAD.encode(format!("{{\"alg\":\"ES256\",\"kid\":\"k\"{json}")), token.split_once('.').unwrap().1);
        let _ = verifier.verify(&header_only, 1_999_999_500);
    }

    #[test]
    fn jwks_and_policy_parsers_never_panic(text in "[ -~\\n]{0,400}") {
        let _ = KeySet::from_jwks("fuzz", text.as_bytes());
        let _ = KeySet::from_jwks("fuzz", format!("{{\"keys\":[{text}]}}").as_bytes());
        let _ = Policy::from_yaml(Path::new("fuzz.yaml"), &text);
        let _ = Policy::from_yaml(Path::new("fuzz.yaml"), &format!("projects:\n  a/b:\n    {text}"));
    }
}
