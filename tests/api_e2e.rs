//! The REST API and package paths through a real jobgate process to a recording upstream (the one
//! place a test double is right: no GitLab runs here). Checks exactly what arrives: path bytes (`%2F`
//! kept), identity headers that clients cannot inject, no job credential in `replace` mode; and the
//! decisions: numeric and encoded ids agree, API writes need a protected ref, other API is denied.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{curl, echo_upstream, Gateway};
use serde_json::Value;

const POLICY: &str = "projects:\n  acme/app:\n    id: 42\n  acme/tools:\n    id: 43\n    allow:\n      - { from: acme/app, scopes: [api, write_package_registry] }\n";

fn gateway(dir: &std::path::Path) -> Gateway {
    std::fs::write(dir.join("upstream-token"), "glpat-upstream-secret\n").unwrap();
    let echo = echo_upstream();
    let replace = format!("url: 'http://127.0.0.1:{echo}', credentials: replace, replace: {{ header: PRIVATE-TOKEN, value_file: upstream-token }}");
    let upstreams = format!("git: {{ url: 'http://127.0.0.1:1' }}\napi: {{ {replace} }}\npackages: {{ {replace} }}");
    Gateway::start_upstreams(
        dir,
        &upstreams,
        POLICY,
        "api_routes: [{ method: GET, path: /api/v4/version, scope: read_api }]",
    )
}

/// (status, echoed request) for one request with the job token in `JOB-TOKEN`.
fn send(gw: &Gateway, token: &str, method: &str, path: &str, extra: &[&str]) -> (u16, Option<Value>) {
    let mut args = vec!["-X", method, "--path-as-is"];
    let header = format!("JOB-TOKEN: {token}");
    args.extend(["-H", &header]);
    for h in extra {
        args.extend(["-H", h]);
    }
    let url = gw.url(path);
    args.push(&url);
    let (status, text) = curl(gw, &args);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).ok())
}

#[test]
fn replace_mode_sends_identity_and_the_upstream_credential_only() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path());
    let token = gw.token("acme/app", 42, true);
    let spoofed = [
        "X-Jobgate-Job-Id: 1",
        "x_jobgate_project_path: acme/secret",
        "X-JOBGATE-SCOPES: api",
        "Connection: X-Jobgate-User-Id",
        "X-Jobgate-User-Id: 0",
    ];
    let (status, echo) = send(&gw, &token, "GET", "/api/v4/projects/acme%2Fapp/issues?state=opened", &spoofed);
    assert_eq!(status, 200);
    let echo = echo.unwrap();
    assert_eq!(echo["path"], "/api/v4/projects/acme%2Fapp/issues", "path bytes forwarded as sent");
    assert_eq!(echo["query"], "state=opened");
    let headers = echo["headers"].as_object().unwrap();
    assert_eq!(headers["private-token"], "glpat-upstream-secret");
    assert_eq!(headers["x-jobgate-job-id"], "1042");
    assert_eq!(headers["x-jobgate-project-path"], "acme/app");
    assert_eq!(headers["x-jobgate-user-id"], "5");
    assert!(headers["x-jobgate-scopes"].as_str().unwrap().contains("read_api"));
    assert!(
        headers.get("x_jobgate_project_path").is_none()
            && headers.get("job-token").is_none()
            && headers.get("authorization").is_none()
    );
    assert!(!echo.to_string().contains(&token[..40]), "the job token never reaches the upstream");
    let lines = gw.audit_until(|lines| !lines.is_empty());
    assert_eq!(
        lines[0]["upstream_credential"], "static",
        "the record says jobgate's own credential went: {:?}",
        lines[0]
    );
}

#[test]
fn api_and_package_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path());
    let protected = gw.token("acme/app", 42, true);
    let unprotected = gw.token("acme/app", 42, false);
    let other = gw.token("acme/other", 44, true);
    let cases: Vec<(&str, &str, &str, u16)> = vec![
        // numeric and encoded ids of the same project agree
        (&protected, "GET", "/api/v4/projects/42/issues", 200),
        (&protected, "GET", "/api/v4/projects/acme%2Fapp/issues", 200),
        (&other, "GET", "/api/v4/projects/42/issues", 403),
        (&other, "GET", "/api/v4/projects/acme%2fapp/issues", 403),
        // API writes are destructive: protected refs only, and only where granted
        (&protected, "POST", "/api/v4/projects/43/issues", 200),
        (&unprotected, "POST", "/api/v4/projects/43/issues", 403),
        (&protected, "POST", "/api/v4/projects/42/issues", 403),
        (&unprotected, "GET", "/api/v4/job", 200),
        // packages
        (&unprotected, "GET", "/api/v4/projects/42/packages/npm/lib", 200),
        (&unprotected, "PUT", "/api/v4/projects/43/packages/generic/tool/1.0/tool.bin", 200),
        (&unprotected, "PUT", "/api/v4/projects/42/packages/generic/tool/1.0/tool.bin", 403),
        // group and instance reads are not decided on their target: in `replace` mode jobgate's own
        // credential would answer for them, so they are refused (a passthrough upstream gets them)
        (&unprotected, "GET", "/api/v4/groups/acme/-/packages/npm/@acme/lib", 403),
        (&unprotected, "PUT", "/api/v4/packages/npm/@acme/lib", 403),
        // everything else under /api is closed to job tokens
        (&protected, "GET", "/api/v4/users", 403),
        // ...unless the config opens it (reads, decided on the job's own project; refused here, in
        // `replace` mode, for the same reason as group reads)
        (&protected, "GET", "/api/v4/version", 403),
        (&protected, "POST", "/api/v4/version", 403),
        (&protected, "POST", "/api/graphql", 403),
        (&protected, "GET", "/api/v4/projects/42/../43/issues", 403),
        (&protected, "GET", "/api/v4/projects/42/%2e%2e/43/issues", 403),
    ];
    for (token, method, path, want) in cases {
        let (status, _) = send(&gw, token, method, path, &[]);
        assert_eq!(status, want, "{method} {path}");
    }
    let reasons = gw.audit_until(|lines| lines.len() >= 19);
    let find =
        |path: &str| reasons.iter().find(|l| l["path"] == path).map(|l| l["reason"].as_str().unwrap_or("").to_owned());
    assert_eq!(find("/api/v4/groups/acme/-/packages/npm/@acme/lib").as_deref(), Some("unresolved_target"));
    assert_eq!(find("/api/v4/packages/npm/@acme/lib").as_deref(), Some("unresolved_target"));
    assert_eq!(find("/api/v4/users").as_deref(), Some("unmatched_request"));
    assert_eq!(find("/api/v4/version").as_deref(), Some("unresolved_target"));
}

#[test]
fn a_trigger_with_the_job_token_in_its_form_body_is_decided_by_that_token() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_upstream();
    let upstreams = format!("git: {{ url: 'http://127.0.0.1:1' }}\napi: {{ url: 'http://127.0.0.1:{echo}' }}");
    let gw = Gateway::start_upstreams(dir.path(), &upstreams, POLICY, "non_job: passthrough");
    let trigger = gw.url("/api/v4/projects/acme%2Ftools/trigger/pipeline");
    // curl --form: a multipart body, the job token in its `token` part, no credential header at all.
    let form = |token: &str| {
        let token = format!("token={token}");
        curl(&gw, &["-X", "POST", "--form", &token, "--form", "ref=main", &trigger])
    };
    let (status, text) = form(&gw.token("acme/app", 42, true));
    assert_eq!(status, 200, "acme/tools grants acme/app api: {text}");
    let (status, text) = form(&gw.token("acme/lib", 44, true));
    assert_eq!(status, 403, "acme/lib is not admitted, though its token is only in the body: {text}");
    assert!(text.contains("not_in_allowlist"), "{text}");
    let lines = gw.audit_until(|lines| {
        lines.iter().filter(|l| l["path"] == "/api/v4/projects/acme%2Ftools/trigger/pipeline").count() >= 2
    });
    let decided: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["path"] == "/api/v4/projects/acme%2Ftools/trigger/pipeline")
        .map(|l| (l["token_project"].as_str().unwrap_or(""), l["decision"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        decided,
        [("acme/app", "allow"), ("acme/lib", "deny")],
        "both decided as job requests, neither passed through"
    );
    let sent: Vec<&Value> = lines.iter().map(|l| &l["upstream_credential"]).collect();
    assert_eq!(
        sent,
        [&Value::from("job_credential"), &Value::Null],
        "the allowed one went with the job's own credential, the refused one nowhere"
    );
}

/// Whole-host routes through the real binary: the runner's own API passes untouched (runner tokens
/// are not job credentials), Composer's singular group routes and Terraform's module registry are
/// classified as package reads of their group, and a module download's wrapper token is decided by
/// the job token inside it.
#[test]
fn runner_composer_and_terraform_routes_through_jobgate() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_upstream();
    let upstreams = format!("git: {{ url: 'http://127.0.0.1:{echo}' }}");
    let gw = Gateway::start_upstreams(dir.path(), &upstreams, POLICY, "non_job: passthrough");
    for version in ["--http1.1", "--http2"] {
        let body = r#"{"token":"glrt-runner-token","info":{"name":"gitlab-runner"}}"#;
        let (status, text) = curl(
            &gw,
            &[
                version,
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data",
                body,
                &gw.url("/api/v4/jobs/request"),
            ],
        );
        assert!(status == 200 && text.contains("\"path\": \"/api/v4/jobs/request\""), "{version}: {text}");
    }
    let job = gw.token("acme/app", 42, false);
    let bearer = format!("Authorization: Bearer {job}");
    let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let wrapped = |token: &str| {
        format!(
            "{}.{}.c2ln",
            part(serde_json::json!({"alg": "HS256", "typ": "JWT"})),
            part(serde_json::json!({"token": token}))
        )
    };
    for (path, header, want) in [
        ("/api/v4/group/acme/-/packages/composer/packages.json", bearer.clone(), 200),
        ("/.well-known/terraform.json", bearer.clone(), 200),
        ("/api/v4/packages/terraform/modules/v1/acme/vpc/aws/versions", bearer.clone(), 200),
        (
            &*format!(
                "/api/v4/packages/terraform/modules/v1/acme/vpc/aws/1.0.0/file?token={}&archive=tgz",
                wrapped(&job)
            ),
            String::new(),
            200,
        ),
        (
            &*format!(
                "/api/v4/packages/terraform/modules/v1/acme/vpc/aws/1.0.0/file?token={}&archive=tgz",
                wrapped("glcbt-not-a-running-job")
            ),
            String::new(),
            401,
        ),
    ] {
        let mut args = vec![];
        if !header.is_empty() {
            args.extend(["-H", &header]);
        }
        let url = gw.url(path);
        args.push(&url);
        let (status, text) = curl(&gw, &args);
        assert_eq!(status, want, "{path}: {text}");
    }
    let lines = gw.audit_until(|lines| lines.len() >= 7);
    let line = |path: &str| {
        lines.iter().find(|l| l["path"] == path).unwrap_or_else(|| panic!("no line for {path}: {lines:?}"))
    };
    assert_eq!(line("/api/v4/jobs/request")["decision"], "passthrough");
    for path in [
        "/api/v4/group/acme/-/packages/composer/packages.json",
        "/api/v4/packages/terraform/modules/v1/acme/vpc/aws/versions",
        "/api/v4/packages/terraform/modules/v1/acme/vpc/aws/1.0.0/file",
    ] {
        let l = line(path);
        assert_eq!(
            (l["family"].as_str(), l["scope"].as_str(), l["target"].as_str(), l["decision"].as_str()),
            (Some("packages"), Some("read_package_registry"), Some("group acme"), Some("allow")),
            "{l}"
        );
    }
}
