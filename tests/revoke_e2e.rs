//! Revocation — the token dies when the job ends — through a real jobgate process: GitLab's job
//! webhook and the admin API revoke at once (cached tokens included), a wrong secret changes nothing,
//! and revocations survive a restart and a `kill -9` right after the acknowledgement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{admin_get, curl, echo_upstream, Gateway};

const POLICY: &str = "projects:\n  acme/app: { id: 42 }\n";
const EXTRA: &str =
    "admin: { token_file: admin-token, webhook_secret_file: webhook-secret }\nrevocations: { file: revocations.log }";

fn start(dir: &Path, upstream: u16) -> Gateway {
    std::fs::write(dir.join("admin-token"), "admin-s3cret\n").unwrap();
    std::fs::write(dir.join("webhook-secret"), "hook-s3cret\n").unwrap();
    Gateway::start_with(dir, &format!("url: 'http://127.0.0.1:{upstream}'"), POLICY, EXTRA)
}

/// A token of another job of acme/app (the policy's id 42: other ids would contradict it).
fn job(gw: &Gateway, job_id: u64) -> String {
    let claims = [("job_id", job_id.to_string()), ("jti", format!("jti-of-{job_id}"))];
    gw.token_with(
        "acme/app",
        42,
        false,
        claims.into_iter().map(|(k, v)| (k.to_owned(), serde_json::json!(v))).collect(),
    )
}

fn status(gw: &Gateway, token: &str) -> (u16, String) {
    curl(gw, &["-H", &format!("JOB-TOKEN: {token}"), &gw.url("/acme/app.git/info/refs?service=git-upload-pack")])
}

fn admin_post_json(gw: &Gateway, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-s", "-i", "-X", "POST", "--data-binary", body]);
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command.arg(format!("http://127.0.0.1:{}{path}", gw.admin_port)).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (code, text)
}

fn job_hook(gw: &Gateway, secret: &str, job: u64, state: &str) -> (u16, String) {
    let body = format!(r#"{{"object_kind":"build","build_id":{job},"build_status":"{state}","project_id":42}}"#);
    admin_post_json(gw, "/-/hooks/gitlab", &["X-Gitlab-Event: Job Hook", &format!("X-Gitlab-Token: {secret}")], &body)
}

#[test]
fn a_finished_job_loses_its_token_at_once_and_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = echo_upstream();
    let gw = start(dir.path(), upstream);
    let token = gw.token("acme/app", 42, false); // job id 1042
    assert_eq!(status(&gw, &token).0, 200);
    assert_eq!(status(&gw, &token).0, 200, "now cached");

    let (code, _) = job_hook(&gw, "wrong-secret", 1042, "success");
    assert_eq!(code, 401, "a wrong secret changes nothing");
    assert_eq!(status(&gw, &token).0, 200);
    let (code, text) = job_hook(&gw, "hook-s3cret", 1042, "running");
    assert_eq!(code, 200, "{text}");
    assert_eq!(status(&gw, &token).0, 200, "a running job keeps its token");

    let (code, text) = job_hook(&gw, "hook-s3cret", 1042, "success");
    assert_eq!(code, 200, "{text}");
    let (code, text) = status(&gw, &token);
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("token_revoked"), "{text}");

    // By jti, through the admin API; listing needs the admin token too.
    let other = job(&gw, 1077);
    assert_eq!(status(&gw, &other).0, 200);
    let payload = base64_payload(&other);
    let jti = payload["jti"].as_str().unwrap();
    let (code, _) = admin_post_json(&gw, "/-/revocations", &[], &format!(r#"{{"jti":"{jti}"}}"#));
    assert_eq!(code, 401);
    // A revocation that would already have expired is refused, not acknowledged.
    let past = format!(r#"{{"jti":"{jti}","expires_at":1}}"#);
    let (code, text) = admin_post_json(&gw, "/-/revocations", &["Authorization: Bearer admin-s3cret"], &past);
    assert!(code == 400 && text.contains("expires_at is in the past"), "{text}");
    assert_eq!(status(&gw, &other).0, 200);
    let (code, text) = admin_post_json(
        &gw,
        "/-/revocations",
        &["Authorization: Bearer admin-s3cret"],
        &format!(r#"{{"jti":"{jti}"}}"#),
    );
    assert_eq!(code, 200, "{text}");
    assert_eq!(status(&gw, &other).0, 401);
    let listed = curl_admin(&gw, "/-/revocations", "admin-s3cret");
    assert!(listed.contains(&format!("\"jti\": \"{jti}\"")) && listed.contains("\"job_id\": 1042"), "{listed}");
    assert!(admin_get(&gw, "/metrics").contains("jobgate_revocations 2"));

    // kill -9 right after the acknowledgement, then restart on the same files.
    let third = job(&gw, 1099);
    let (code, _) = job_hook(&gw, "hook-s3cret", 1099, "canceled");
    assert_eq!(code, 200);
    gw.kill();
    let gw = start(dir.path(), upstream);
    for revoked in [&token, &other, &third] {
        let (code, text) = status(&gw, revoked);
        assert_eq!(code, 401, "{text}");
        assert!(text.contains("token_revoked"), "{text}");
    }
    let (code, text) = status(&gw, &job(&gw, 1005));
    assert_eq!(code, 200, "other jobs are unaffected: {text}");
}

fn curl_admin(gw: &Gateway, path: &str, token: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://127.0.0.1:{}{path}", gw.admin_port))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn base64_payload(token: &str) -> serde_json::Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn a_second_jobgate_on_the_same_revocations_file_refuses_to_start_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = echo_upstream();
    let gw = start(dir.path(), upstream);
    let token = gw.token("acme/app", 42, false); // job id 1042
    assert_eq!(job_hook(&gw, "hook-s3cret", 1042, "failed").0, 200);
    assert_eq!(status(&gw, &token).0, 401);

    let second = Command::new(env!("CARGO_BIN_EXE_jobgate"))
        .args(["serve", "--config"])
        .arg(dir.path().join("jobgate.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success() && stderr.contains("in use by another jobgate process"), "{stderr}");

    // The first instance's revocation is still on disk: a restart keeps the token dead.
    gw.kill();
    let gw = start(dir.path(), upstream);
    assert_eq!(status(&gw, &token).0, 401);
}
