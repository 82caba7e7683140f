//! Policy reload under concurrent load, through a real jobgate process: valid edits (file watch and
//! `POST /-/reload`) and broken ones while 16 clients send 1,600 requests — none fails, a broken file
//! changes nothing and is reported, and the admin route refuses callers without the token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::net::Client;
use common::{admin_get, admin_post, echo_upstream, Gateway};

fn policy(round: usize) -> String {
    format!("# round {round}\nprojects:\n  acme/app:\n    allow:\n      - from: acme/lib\n  filler/p{round}: {{}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_fail_no_request_and_broken_files_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), "s3cret-admin\n").unwrap();
    let upstream = format!("url: 'http://127.0.0.1:{}'", echo_upstream());
    let gw = Arc::new(tokio::task::block_in_place(|| {
        Gateway::start_with(dir.path(), &upstream, &policy(0), "admin: { token_file: admin-token }")
    }));
    let client = Client::new(&gw.ca);
    let token = gw.token("acme/lib", 43, false);
    let url = gw.url("/acme/app.git/info/refs?service=git-upload-pack");
    assert_eq!(client.get_bearer(&url, &token).await.0, 200);

    let (status, _) = admin_post(&gw, "/-/reload", "");
    assert_eq!(status, 401, "no token, no reload");
    let (status, _) = admin_post(&gw, "/-/reload", "wrong");
    assert_eq!(status, 401);

    let editor = {
        let (gw, policies) = (gw.clone(), dir.path().join("policies"));
        tokio::task::spawn_blocking(move || {
            let mut failed_reloads = 0;
            for round in 1..=20 {
                jobgate::tools::generate::write(&policies.join("policy.yaml"), &policy(round)).unwrap();
                if round % 5 == 0 {
                    jobgate::tools::generate::write(
                        &policies.join("broken.yaml"),
                        "projects:\n  acme/app: {allow: [{from: 'a/../b'}]}\n",
                    )
                    .unwrap();
                    let (status, body) = admin_post(&gw, "/-/reload", "s3cret-admin");
                    assert_eq!(status, 422, "{body}");
                    assert!(body.contains("broken.yaml:2"), "{body}");
                    failed_reloads += 1;
                    std::fs::remove_file(policies.join("broken.yaml")).unwrap();
                }
                if round % 2 == 0 {
                    let (status, body) = admin_post(&gw, "/-/reload", "s3cret-admin");
                    assert_eq!(status, 200, "{body}");
                }
                std::thread::sleep(Duration::from_millis(40));
            }
            failed_reloads
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..100 {
                let (status, body) = client.get_bearer(&url, &token).await;
                if status != 200 {
                    failures.push(body);
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    let failed_reloads = editor.await.unwrap();
    assert!(failures.is_empty(), "{} of 1600 requests failed: {:?}", failures.len(), failures.first());
    assert_eq!(failed_reloads, 4);

    let (status, body) = admin_post(&gw, "/-/reload", "s3cret-admin");
    assert_eq!(status, 200, "{body}");
    let ready = admin_get(&gw, "/-/ready");
    assert!(ready.contains("\"last_reload_error\": null"), "{ready}");
    assert!(ready.contains("filler/p20") || ready.contains("policy.yaml"), "{ready}");
    let metrics = admin_get(&gw, "/metrics");
    assert!(metrics.contains("jobgate_reloads_total{result=\"failed\",source=\"admin\"} 4"), "{metrics}");

    // An edit alone (no POST) is picked up by the file watcher.
    let generation = |text: &str| -> u64 {
        let json = &text[text.find('{').unwrap()..];
        serde_json::from_str::<serde_json::Value>(json).unwrap()["generation"].as_u64().unwrap()
    };
    let before = generation(&admin_get(&gw, "/-/ready"));
    jobgate::tools::generate::write(&dir.path().join("policies/policy.yaml"), &policy(99)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while generation(&admin_get(&gw, "/-/ready")) == before {
        assert!(std::time::Instant::now() < deadline, "the watcher did not reload the edited policy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_fails_its_own_tests_never_goes_live() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), "s3cret-admin\n").unwrap();
    let upstream = format!("url: 'http://127.0.0.1:{}'", echo_upstream());
    let gw = tokio::task::block_in_place(|| {
        Gateway::start_with(dir.path(), &upstream, &policy(0), "admin: { token_file: admin-token }")
    });
    let tests = dir.path().join("policies/tests");
    std::fs::create_dir_all(&tests).unwrap();
    let case = "- name: lib reads app\n  token: { project: acme/lib }\n  request: { method: GET, url: '/acme/app.git/info/refs?service=git-upload-pack' }\n  expect: allow\n";
    std::fs::write(tests.join("t.yaml"), case).unwrap();
    let (client, token) = (Client::new(&gw.ca), gw.token("acme/lib", 43, false));
    let url = gw.url("/acme/app.git/info/refs?service=git-upload-pack");
    assert_eq!(client.get_bearer(&url, &token).await.0, 200);

    // An edit that closes acme/app to acme/lib contradicts the test: refused, the old policy stays.
    let closed = "projects:\n  acme/app: {}\n";
    jobgate::tools::generate::write(&dir.path().join("policies/policy.yaml"), closed).unwrap();
    let (status, body) = admin_post(&gw, "/-/reload", "s3cret-admin");
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("1 policy test(s) failed")
            && body.contains("t.yaml: lib reads app: expected Allow, got Deny (not_in_allowlist)"),
        "{body}"
    );
    assert_eq!(client.get_bearer(&url, &token).await.0, 200, "the last good policy still decides");
    let ready = admin_get(&gw, "/-/ready");
    assert!(ready.contains("policy test(s) failed"), "{ready}");

    // Fixing the test lets the same policy go live.
    std::fs::write(tests.join("t.yaml"), case.replace("expect: allow", "expect: deny")).unwrap();
    let (status, body) = admin_post(&gw, "/-/reload", "s3cret-admin");
    assert_eq!(status, 200, "{body}");
    assert_eq!(client.get_bearer(&url, &token).await.0, 403);
}
