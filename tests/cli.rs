//! The command line as operators use it: `check` on good and broken files, `keys generate` and
//! `token mint` producing a token that `serve`'s verifier accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn jobgate(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jobgate")).args(args).current_dir(cwd).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

const CONFIG: &str = "listen: { public: 127.0.0.1:0, admin: 127.0.0.1:0 }
tls: { cert: certs/server.pem, key: certs/server-key.pem }
issuers:
  - { name: ci, iss: jobgate-test, audiences: [jobgate], jwks_file: keys/jwks.json }
policy_dir: policies
upstreams:
  git: { url: 'http://127.0.0.1:8080' }
";

#[test]
fn check_accepts_good_files_and_names_file_and_line_of_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(jobgate(&["certs", "generate", "--out", "certs"], d).0);
    let (ok, text) = jobgate(&["keys", "generate", "--out", "keys", "--alg", "ES256"], d);
    assert!(ok, "{text}");
    std::fs::create_dir(d.join("policies")).unwrap();
    std::fs::write(d.join("policies/p.yaml"), "projects:\n  acme/app:\n    allow:\n      - from: acme/lib\n").unwrap();
    std::fs::write(d.join("jobgate.yaml"), CONFIG).unwrap();
    let (ok, text) = jobgate(&["check", "--config", "jobgate.yaml"], d);
    assert!(ok, "{text}");
    assert!(text.contains("1 project(s)"), "{text}");

    std::fs::write(d.join("policies/q.yaml"), "projects:\n  acme/lib:\n    allow:\n      - from: acme/app\n        scopes: [write_everything]\n").unwrap();
    let (ok, text) = jobgate(&["check", "--config", "jobgate.yaml"], d);
    assert!(!ok);
    assert!(text.contains("q.yaml:5: ") && text.contains("write_everything"), "{text}");
    std::fs::remove_file(d.join("policies/q.yaml")).unwrap();

    std::fs::write(d.join("keys/jwks.json"), "{\"keys\": [{\"kty\": \"oct\", \"kid\": \"h\", \"k\": \"c2VjcmV0\"}]}").unwrap();
    let (ok, text) = jobgate(&["check", "--config", "jobgate.yaml"], d);
    assert!(!ok);
    assert!(text.contains("jwks.json: no usable key") && text.contains("unsupported kty"), "{text}");

    std::fs::write(d.join("jobgate.yaml"), CONFIG.replace("policy_dir", "policy_dri")).unwrap();
    let (ok, text) = jobgate(&["check", "--config", "jobgate.yaml"], d);
    assert!(!ok);
    assert!(text.contains("jobgate.yaml:5: unknown field `policy_dri`"), "{text}");
}

#[test]
fn minted_tokens_verify_against_the_generated_key_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, text) = jobgate(&["keys", "generate", "--out", "keys"], d);
    assert!(ok, "{text}");
    let args = [
        "token", "mint", "--key", "keys/signing-key.pem", "--iss", "jobgate-test", "--aud", "jobgate",
        "--project-path", "acme/app", "--project-id", "42", "--job-id", "7", "--ref-protected",
        "--scopes", "read_repository,write_repository", "--claim", "environment=production",
    ];
    let (ok, token) = jobgate(&args, d);
    assert!(ok, "{token}");
    let keys = jobgate::token::keys::KeySet::from_file(&d.join("keys/jwks.json")).unwrap();
    let verifier = jobgate::token::verify::Verifier::new(
        vec![jobgate::token::verify::Issuer {
            name: "ci".into(),
            iss: "jobgate-test".into(),
            audiences: vec!["jobgate".into()],
            algorithms: vec![jobgate::token::Alg::RS256],
            leeway: 30,
            max_lifetime: 86400,
            keys: jobgate::token::keys::KeyState::fixed(keys),
        }],
        8192,
        100,
    );
    let verified = verifier.verify(token.trim(), jobgate::clock::unix_now()).unwrap();
    let claims = verified.claims.claims();
    assert_eq!((claims.project_id, claims.job_id, claims.ref_protected), (42, 7, true));
    assert_eq!(claims.environment.as_deref(), Some("production"));
    assert_eq!(claims.scopes.unwrap().to_string(), "read_repository write_repository");
}

#[test]
fn explain_prints_the_derivation_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(jobgate(&["certs", "generate", "--out", "certs"], d).0);
    assert!(jobgate(&["keys", "generate", "--out", "keys", "--alg", "ES256"], d).0);
    std::fs::create_dir(d.join("policies")).unwrap();
    std::fs::write(d.join("policies/p.yaml"), "projects:\n  acme/app:\n    allow:\n      - { from: acme/lib, scopes: [write_repository], refs: protected }\n").unwrap();
    std::fs::write(d.join("jobgate.yaml"), CONFIG).unwrap();
    let mint = ["token", "mint", "--key", "keys/signing-key.pem", "--iss", "jobgate-test", "--aud", "jobgate", "--project-path", "acme/lib", "--project-id", "43", "--job-id", "9"];
    let (ok, token) = jobgate(&mint, d);
    assert!(ok, "{token}");
    let token = token.trim();
    let explain = |url: &str, method: &str| jobgate(&["explain", "--config", "jobgate.yaml", "--token", token, "--method", method, "--url", url], d);
    let (ok, text) = explain("https://gitlab.example.com/acme/app.git/git-receive-pack", "POST");
    assert!(text.contains("classified: family git action write scope write_repository target acme/app"), "{text}");
    assert!(text.contains("holds back [write_repository]: ref_not_protected"), "{text}");
    assert!(text.contains("decision: deny (ref_not_protected)"), "{text}");
    assert!(!ok, "a deny exits 1");
    assert!(text.contains("token: issuer jobgate-test, project acme/lib (id 43), job 9, user id"), "{text}");
    assert!(!text.contains("Some(") && !text.contains("None"), "no Rust debug text: {text}");
    assert!(!text.contains(token), "the token is never printed");
    let (_, text) = explain("/acme/other.git/info/refs?service=git-upload-pack", "GET");
    assert!(text.contains("decision: deny (not_in_allowlist)"), "{text}");
    let (_, text) = explain("/acme/app.git/HEAD", "GET");
    assert!(text.contains("decision: deny (unmatched_request)"), "{text}");
}

#[test]
fn explain_and_check_see_the_api_routes_serve_opens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(jobgate(&["certs", "generate", "--out", "certs"], d).0);
    assert!(jobgate(&["keys", "generate", "--out", "keys", "--alg", "ES256"], d).0);
    std::fs::create_dir_all(d.join("policies/tests")).unwrap();
    std::fs::write(d.join("policies/p.yaml"), "projects:\n  acme/app: { id: 42 }\n").unwrap();
    let case = "- name: the version route the config opens\n  token: { project: acme/app, project_id: 42 }\n  request: { method: GET, url: /api/v4/version }\n  expect: allow\n  reason: granted_via_own_project\n";
    std::fs::write(d.join("policies/tests/version.yaml"), case).unwrap();
    let opened = format!("{CONFIG}api_routes: [ {{ method: GET, path: /api/v4/version, scope: read_api }} ]\n");
    std::fs::write(d.join("jobgate.yaml"), &opened).unwrap();
    let (ok, text) = jobgate(&["check", "--config", "jobgate.yaml"], d);
    assert!(ok && text.contains("policy tests: 1 passed, 0 failed"), "{text}");
    let mint = ["token", "mint", "--key", "keys/signing-key.pem", "--iss", "jobgate-test", "--aud", "jobgate", "--project-path", "acme/app", "--project-id", "42", "--job-id", "9"];
    let (ok, token) = jobgate(&mint, d);
    assert!(ok, "{token}");
    let explain = || jobgate(&["explain", "--config", "jobgate.yaml", "--token", token.trim(), "--method", "GET", "--url", "/api/v4/version"], d).1;
    let text = explain();
    assert!(text.contains("decision: allow (granted_via_own_project)"), "{text}");
    let (ok, out) = jobgate(&["explain", "--config", "jobgate.yaml", "--token", token.trim(), "--url", "/api/v4/version", "--json"], d);
    assert!(ok, "an allow exits 0: {out}");
    let json: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    assert_eq!((json["summary"]["decision"].as_str(), json["summary"]["reason"].as_str()), (Some("allow"), Some("granted_via_own_project")), "{json}");
    assert!(json["lines"].as_array().is_some_and(|l| l.len() > 3), "{json}");

    // Without the route, serve would not match the request: explain and the policy test say so too.
    std::fs::write(d.join("jobgate.yaml"), CONFIG).unwrap();
    let (ok, text) = jobgate(&["check", "--config", "jobgate.yaml"], d);
    assert!(!ok && text.contains("expected Allow (granted_via_own_project), got Deny (unmatched_request)"), "{text}");
    assert!(explain().contains("decision: deny (unmatched_request)"));
}
