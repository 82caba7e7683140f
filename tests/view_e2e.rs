//! The decision view in a real headless Chromium: the page needs the admin token, shows decisions
//! made a moment before by real git clients through jobgate, filters by project, job and reason, the
//! explain form answers against the live policy, and markup in what it shows stays text. The
//! screenshots land in `target/screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::browser::Browser;
use common::{git_command, run, Gateway, GitServer, POLICY};
use serde_json::json;

const ADMIN_TOKEN: &str = "view-admin-token";

fn screenshot(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots").join(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_decision_view_shows_filters_and_explains_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let git = GitServer::start(dir.path());
    for project in ["acme/app", "acme/lib", "acme/secret"] {
        git.create_repo(project);
    }
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    let gateway = Gateway::start_with(
        dir.path(),
        &format!("url: 'http://127.0.0.1:{}'", git.port),
        POLICY,
        "admin: { token_file: admin-token }",
    );
    // Decisions a moment before: acme/lib clones acme/app (admitted) and acme/secret (not).
    let lib = gateway.token("acme/lib", 43, false);
    for (target, ok) in [("acme/app", true), ("acme/secret", false)] {
        let out = run(git_command(dir.path(), Some(&gateway.ca)).args(["ls-remote", &gateway.git_url(&lib, target)]));
        assert_eq!(out.status.success(), ok, "{target}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // A request path with markup in it (the client percent-encodes nothing of it but what HTTP must).
    common::curl(&gateway, &[&gateway.url("/acme/%3Cscript%3Ealert(1)%3C%2Fscript%3E.git/info/refs")]);
    gateway.audit_until(|lines| lines.iter().any(|l| l["path"].as_str().is_some_and(|p| p.contains("script"))));
    let page = format!("http://127.0.0.1:{}/-/decisions", gateway.admin_port);

    let mut browser = Browser::start().await;
    assert_eq!(browser.open(&page).await, 401, "without the admin token");
    assert!(!browser.text().await.contains("Recent decisions"));

    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{ADMIN_TOKEN}"));
    browser.headers(json!({ "Authorization": format!("Basic {basic}") })).await;
    assert_eq!(browser.open(&page).await, 200, "with the admin token");
    let text = browser.text().await;
    assert!(text.contains("Recent decisions") && text.contains("Access matrix"), "{text}");
    assert!(
        text.contains("acme/lib → acme/secret") && text.contains("not_in_allowlist"),
        "the refused clone is listed: {text}"
    );
    assert!(text.contains("acme/lib → acme/app") && text.contains("granted"), "the allowed clone is listed: {text}");
    let cell = browser.eval("[...document.querySelectorAll('#matrix tbody tr')].find(r => r.querySelector('th').innerText == 'acme/lib').innerText").await;
    assert!(
        cell.as_str().unwrap().contains("read_repository") && cell.as_str().unwrap().contains("feature"),
        "the matrix has scopes and refs: {cell}"
    );
    browser.screenshot(&screenshot("decisions.png")).await;

    // Markup in a shown path is text: no element was made of it, the text is there as typed.
    assert_eq!(browser.eval("document.querySelectorAll('script').length").await, json!(0));
    assert!(text.contains("/acme/%3Cscript%3Ealert(1)%3C%2Fscript%3E.git/info/refs"), "{text}");

    // The filter form, submitted in the browser: by project, then by reason, then by job.
    browser.submit("document.querySelector('#filters [name=project]').value = 'acme/secret'; document.querySelector('#filters').submit()").await;
    let rows = browser.eval("[...document.querySelectorAll('#recent tbody tr')].map(r => r.innerText)").await;
    let rows: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(!rows.is_empty() && rows.iter().all(|r| r.contains("acme/secret")), "project filter: {rows:?}");
    browser.submit("document.querySelector('#filters [name=project]').value = ''; document.querySelector('#filters [name=reason]').value = 'granted'; document.querySelector('#filters').submit()").await;
    let rows = browser.eval("[...document.querySelectorAll('#recent tbody tr')].map(r => r.innerText)").await;
    let rows: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.contains("granted") && r.contains("acme/app")),
        "reason filter: {rows:?}"
    );
    browser.submit("document.querySelector('#filters [name=reason]').value = ''; document.querySelector('#filters [name=job]').value = '9999'; document.querySelector('#filters').submit()").await;
    assert!(browser.text().await.contains("no decision matches"), "a job that made no request");

    // The explain form: acme/lib's token against the live policy.
    let fill = |url: &str, token: &str| {
        format!("document.querySelector('#explain [name=token]').value = {}; document.querySelector('#explain [name=url]').value = {}; document.querySelector('#explain').submit()", json!(token), json!(url))
    };
    let status = browser.submit(&fill("/acme/secret.git/info/refs?service=git-upload-pack", &lib)).await;
    assert_eq!(status, 200, "{}", browser.text().await);
    let explained = browser.eval("document.querySelector('#explained').innerText").await;
    assert!(explained.as_str().unwrap().contains("decision: deny (not_in_allowlist)"), "{explained}");
    browser.screenshot(&screenshot("decisions-explain.png")).await;
    let html = browser.eval("document.documentElement.outerHTML").await;
    assert!(!html.as_str().unwrap().contains(&lib), "the pasted token is never on the page");
    browser.submit(&fill("/acme/app.git/info/refs?service=git-upload-pack", &lib)).await;
    let explained = browser.eval("document.querySelector('#explained').innerText").await;
    assert!(explained.as_str().unwrap().contains("decision: allow (granted)"), "{explained}");

    // Markup typed into the form comes back as text.
    browser.submit(&fill("/acme/<script>alert(1)</script>.git/info/refs", &lib)).await;
    assert_eq!(browser.eval("document.querySelectorAll('script').length").await, json!(0));
    let value = browser.eval("document.querySelector('#explain [name=url]').value").await;
    assert_eq!(value, json!("/acme/<script>alert(1)</script>.git/info/refs"));
}
