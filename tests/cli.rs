//! The command line as operators use it: `check` on good and broken files, `keys generate` and
//! `token mint` producing a token that `serve`'s verifier accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

mod common;

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

    std::fs::write(
        d.join("policies/q.yaml"),
        "projects:\n  acme/lib:\n    allow:\n      - from: acme/app\n        scopes: [write_everything]\n",
    )
    .unwrap();
    let (ok, text) = jobgate(&["check", "--config", "jobgate.yaml"], d);
    assert!(!ok);
    assert!(text.contains("q.yaml:5: ") && text.contains("write_everything"), "{text}");
    std::fs::remove_file(d.join("policies/q.yaml")).unwrap();

    std::fs::write(d.join("keys/jwks.json"), "{\"keys\": [{\"kty\": \"oct\", \"kid\": \"h\", \"k\": \"c2VjcmV0\"}]}")
        .unwrap();
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
        "token",
        "mint",
        "--key",
        "keys/signing-key.pem",
        "--iss",
        "jobgate-test",
        "--aud",
        "jobgate",
        "--project-path",
        "acme/app",
        "--project-id",
        "42",
        "--job-id",
        "7",
        "--ref-protected",
        "--scopes",
        "read_repository,write_repository",
        "--claim",
        "environment=production",
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
    std::fs::write(
        d.join("policies/p.yaml"),
        "projects:\n  acme/app:\n    allow:\n      - { from: acme/lib, scopes: [write_repository], refs: protected }\n",
    )
    .unwrap();
    std::fs::write(d.join("jobgate.yaml"), CONFIG).unwrap();
    let mint = [
        "token",
        "mint",
        "--key",
        "keys/signing-key.pem",
        "--iss",
        "jobgate-test",
        "--aud",
        "jobgate",
        "--project-path",
        "acme/lib",
        "--project-id",
        "43",
        "--job-id",
        "9",
    ];
    let (ok, token) = jobgate(&mint, d);
    assert!(ok, "{token}");
    let token = token.trim();
    let explain = |url: &str, method: &str| {
        jobgate(&["explain", "--config", "jobgate.yaml", "--token", token, "--method", method, "--url", url], d)
    };
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
    let mint = [
        "token",
        "mint",
        "--key",
        "keys/signing-key.pem",
        "--iss",
        "jobgate-test",
        "--aud",
        "jobgate",
        "--project-path",
        "acme/app",
        "--project-id",
        "42",
        "--job-id",
        "9",
    ];
    let (ok, token) = jobgate(&mint, d);
    assert!(ok, "{token}");
    let explain = || {
        jobgate(
            &[
                "explain",
                "--config",
                "jobgate.yaml",
                "--token",
                token.trim(),
                "--method",
                "GET",
                "--url",
                "/api/v4/version",
            ],
            d,
        )
        .1
    };
    let text = explain();
    assert!(text.contains("decision: allow (granted_via_own_project)"), "{text}");
    let (ok, out) = jobgate(
        &["explain", "--config", "jobgate.yaml", "--token", token.trim(), "--url", "/api/v4/version", "--json"],
        d,
    );
    assert!(ok, "an allow exits 0: {out}");
    let json: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    assert_eq!(
        (json["summary"]["decision"].as_str(), json["summary"]["reason"].as_str()),
        (Some("allow"), Some("granted_via_own_project")),
        "{json}"
    );
    assert!(json["lines"].as_array().is_some_and(|l| l.len() > 3), "{json}");

    // Without the route, serve would not match the request: explain and the policy test say so too.
    std::fs::write(d.join("jobgate.yaml"), CONFIG).unwrap();
    let (ok, text) = jobgate(&["check", "--config", "jobgate.yaml"], d);
    assert!(!ok && text.contains("expected Allow (granted_via_own_project), got Deny (unmatched_request)"), "{text}");
    assert!(explain().contains("decision: deny (unmatched_request)"));
}

/// Runs `jobgate serve` until it reports its listeners (then stops it) or exits; returns whether it
/// started and what it printed.
fn serve_starts(cwd: &Path) -> (bool, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobgate"))
        .args(["serve", "--config", "jobgate.yaml"])
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut text = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        text.push_str(&line);
        text.push('\n');
        if line.starts_with("jobgate listening") {
            let _ = child.kill();
            let _ = child.wait();
            return (true, text);
        }
    }
    let _ = child.wait();
    (false, text)
}

/// `check` passes exactly when `serve` starts: every file serve loads, every folder it writes in,
/// and a key set that cannot verify the issuer's algorithms. All problems are reported at once.
#[test]
fn check_reports_every_problem_serve_would_refuse_and_serve_refuses_them_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(jobgate(&["certs", "generate", "--out", "certs"], d).0);
    assert!(jobgate(&["keys", "generate", "--out", "keys", "--alg", "RS256"], d).0);
    std::fs::create_dir_all(d.join("policies")).unwrap();
    std::fs::create_dir_all(d.join("secrets")).unwrap();
    std::fs::write(d.join("policies/p.yaml"), "projects:\n  acme/app: {}\n").unwrap();
    std::fs::write(d.join("secrets/admin-token"), "  \n").unwrap();
    let broken = "listen: { public: 127.0.0.1:0, admin: 127.0.0.1:0 }
tls: { cert: certs/server.pem, key: certs/server-key.pem }
issuers:
  - { name: ci, iss: jobgate-test, audiences: [jobgate], jwks_file: keys/jwks.json, algorithms: [ES256] }
policy_dir: policies
upstreams:
  git: { url: 'http://127.0.0.1:8080', credentials: replace, replace: { header: PRIVATE-TOKEN, value_file: secrets/upstream-token } }
registry_auth: { signing_key: keys/registry-key.pem }
admin: { token_file: secrets/admin-token, webhook_secret_file: secrets/webhook-secret }
revocations: { file: state/revocations.log }
audit: { file: logs/audit.log }
";
    std::fs::write(d.join("jobgate.yaml"), broken).unwrap();
    let problems = [
        "registry-key.pem",
        "secrets/upstream-token",
        "admin.token_file",
        "empty secret",
        "admin.webhook_secret_file",
        "revocations.file",
        "audit.file",
        "can verify algorithms [ES256]",
    ];
    let (ok, checked) = jobgate(&["check", "--config", "jobgate.yaml"], d);
    assert!(!ok, "{checked}");
    assert!(checked.contains("7 problem(s); serve would not start"), "{checked}");
    let (started, served) = serve_starts(d);
    assert!(!started, "{served}");
    for problem in problems {
        assert!(checked.contains(problem), "check misses {problem:?}: {checked}");
        assert!(served.contains(problem), "serve misses {problem:?}: {served}");
    }
    assert!(
        checked.contains("state: No such file or directory") || checked.contains("the folder"),
        "the folder is named: {checked}"
    );

    // Fixed one by one, the same config is accepted by both.
    assert!(jobgate(&["keys", "generate", "--out", "keys", "--registry"], d).0);
    for (file, text) in
        [("secrets/admin-token", "admin"), ("secrets/webhook-secret", "hook"), ("secrets/upstream-token", "glpat-x")]
    {
        std::fs::write(d.join(file), text).unwrap();
    }
    std::fs::create_dir(d.join("state")).unwrap();
    std::fs::create_dir(d.join("logs")).unwrap();
    std::fs::write(d.join("jobgate.yaml"), broken.replace("algorithms: [ES256]", "algorithms: [RS256]")).unwrap();
    let (ok, checked) = jobgate(&["check", "--config", "jobgate.yaml"], d);
    assert!(ok, "{checked}");
    let (started, served) = serve_starts(d);
    assert!(started, "{served}");
}

/// A key set that cannot be fetched is a warning for both (serve starts, refuses the issuer's tokens
/// and retries), with the real cause: an untrusted certificate and a refused port read differently.
/// `--offline` fetches nothing.
#[test]
fn key_fetch_failures_name_their_cause_and_offline_fetches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(jobgate(&["certs", "generate", "--out", "certs"], d).0);
    std::fs::create_dir(d.join("policies")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(common::net::JwksServer::start(d, "{\"keys\": []}".into(), 60));
    let with_url = |url: &str| CONFIG.replace("jwks_file: keys/jwks.json", &format!("jwks_url: '{url}'"));

    std::fs::write(d.join("jobgate.yaml"), with_url(&server.url())).unwrap();
    let (ok, untrusted) = jobgate(&["check", "--config", "jobgate.yaml"], d);
    assert!(ok, "serve would start: {untrusted}");
    assert!(
        untrusted.contains("warning: issuer ci: key set not fetched") && untrusted.contains("UnknownIssuer"),
        "{untrusted}"
    );
    assert!(!untrusted.contains("keeping the last good one"), "there is no last good one: {untrusted}");

    std::fs::write(d.join("jobgate.yaml"), with_url("https://127.0.0.1:9/jwks")).unwrap();
    let (ok, refused) = jobgate(&["check", "--config", "jobgate.yaml"], d);
    assert!(ok && refused.contains("Connection refused"), "{refused}");

    let fetches = server.fetches();
    std::fs::write(d.join("jobgate.yaml"), with_url(&server.url())).unwrap();
    let (ok, offline) = jobgate(&["check", "--config", "jobgate.yaml", "--offline"], d);
    assert!(ok && offline.contains("key set not fetched (offline)"), "{offline}");
    assert_eq!(server.fetches(), fetches, "offline fetches nothing");

    // A key set file that is not JSON: its problem is said once.
    std::fs::write(d.join("jwks.json"), "{not json").unwrap();
    std::fs::write(d.join("jobgate.yaml"), CONFIG.replace("keys/jwks.json", "jwks.json")).unwrap();
    let (ok, garbage) = jobgate(&["check", "--config", "jobgate.yaml"], d);
    assert!(!ok && garbage.matches("not a JWKS document").count() == 1, "{garbage}");
}

/// Off a terminal, log lines are JSON objects by default and never carry ANSI colour; `--log-format
/// text` gives plain text.
#[test]
fn logs_off_a_terminal_are_json_or_plain_text_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(jobgate(&["certs", "generate", "--out", "certs"], d).0);
    std::fs::create_dir(d.join("policies")).unwrap();
    // An unreachable key set makes serve log an error before it listens.
    std::fs::write(
        d.join("jobgate.yaml"),
        CONFIG.replace("jwks_file: keys/jwks.json", "jwks_url: 'https://127.0.0.1:9/jwks'"),
    )
    .unwrap();
    let (started, text) = serve_starts(d);
    assert!(started, "{text}");
    let logs: Vec<&str> = text.lines().filter(|l| !l.starts_with("jobgate listening")).collect();
    assert!(!logs.is_empty() && !text.contains('\u{1b}'), "{text}");
    for line in &logs {
        let json: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(json["level"].is_string() && json["fields"]["message"].is_string(), "{line}");
    }
    assert!(logs.iter().any(|l| l.contains("no key set loaded yet") && l.contains("Connection refused")), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_jobgate"))
        .args(["--log-format", "text", "check", "--config", "jobgate.yaml"])
        .current_dir(d)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(" ERROR ") && !text.contains('\u{1b}') && !text.trim_start().starts_with('{'), "{text}");
}
