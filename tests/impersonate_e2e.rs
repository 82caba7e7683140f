//! `credentials: impersonate` end to end: the real `git` client through a real jobgate to `git
//! http-backend`, behind the GitLab stand-in's Git front, which authenticates every request as
//! GitLab does (job token → the job's user under job-token rules, which never push; impersonation
//! token → that user with that token's scopes) and enforces the user's role from the fixture. A
//! cross-project push the policy elevates arrives as the job's user with `write_repository` only;
//! the same push by a Reporter's job is refused by GitLab, never by more than the user could do; the
//! job's end revokes every token minted for it; a package publish (twine to pypiserver behind the
//! stand-in's package front) and an API write go with `api` tokens of the user.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::gitlab::{GitLab, Job, ADMIN_TOKEN};
use common::{git_command, git_ok, run, Gateway, GitServer};

const POLICY: &str = "
projects:
  acme/app: { id: 42 }
  acme/tools:
    id: 43
    allow:
      - { from: acme/app, scopes: [write_repository] }
";

/// acme/lib's job `token` (job `job_id`, ann's, a Developer of both projects), granted
/// `write_package_registry` on acme/app, publishing through an `impersonate` upstream: the stand-in's
/// package front in front of the package server on `port` (`strip`: one that lives at its root).
fn publishing_to_acme_app(d: &std::path::Path, token: &str, job_id: u64, port: u16, strip: bool) -> (GitLab, Gateway) {
    let gitlab = GitLab::start();
    gitlab.add(
        token,
        Job { id: job_id, project_path: "acme/lib", project_id: 43, git_ref: "main", tag: false, user: (5, "ann") },
    );
    gitlab.project(42, "acme/app");
    gitlab.member(42, 5, 30);
    gitlab.member(43, 5, 30);
    let front = gitlab.package_front(port, strip);
    std::fs::write(d.join("gitlab-admin-token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    let upstreams = format!("git: {{ url: 'http://127.0.0.1:1' }}\npackages: {{ url: 'http://127.0.0.1:{front}', credentials: impersonate }}");
    let policy = "projects:\n  acme/app:\n    id: 42\n    allow:\n      - { from: acme/lib, scopes: [write_package_registry] }\n  acme/lib: { id: 43 }\n";
    let gw = Gateway::start_with_gitlab(
        d,
        &upstreams,
        policy,
        &format!("url: '{}', admin_token_file: gitlab-admin-token", gitlab.url()),
        60,
        50,
        "",
    );
    (gitlab, gw)
}

/// The job ends, as jobgate hears it: `POST /-/revocations` with the admin token.
fn end_job(gw: &Gateway, job_id: u64) {
    let out = run(std::process::Command::new("curl")
        .args([
            "-s",
            "-f",
            "-X",
            "POST",
            "-H",
            "Authorization: Bearer jobgate-admin-secret",
            "--data-binary",
            &format!("{{\"job_id\": {job_id}}}"),
        ])
        .arg(format!("http://127.0.0.1:{}/-/revocations", gw.admin_port)));
    assert!(out.status.success(), "the revocation holds: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn an_elevated_push_goes_as_the_jobs_user_with_write_repository_only_and_dies_with_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let git = GitServer::start(d);
    for project in ["acme/app", "acme/tools"] {
        git.create_repo(project);
    }
    let gitlab = GitLab::start();
    let (ann_job, bob_job) = ("glcbt-64_AnnPushJob_111111111111", "glcbt-64_BobPushJob_222222222222");
    gitlab.add(
        ann_job,
        Job { id: 7100, project_path: "acme/app", project_id: 42, git_ref: "main", tag: false, user: (5, "ann") },
    );
    gitlab.add(
        bob_job,
        Job { id: 7200, project_path: "acme/app", project_id: 42, git_ref: "main", tag: false, user: (6, "bob") },
    );
    gitlab.project(43, "acme/tools");
    gitlab.member(42, 5, 30);
    gitlab.member(43, 5, 30); // ann: Developer of acme/tools
    gitlab.member(42, 6, 30);
    gitlab.member(43, 6, 20); // bob: only a Reporter there
    let front = gitlab.git_front(git.port);
    std::fs::write(d.join("gitlab-admin-token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    let upstreams = format!("git: {{ url: 'http://127.0.0.1:{front}', credentials: impersonate }}");
    let fields = format!("url: '{}', admin_token_file: gitlab-admin-token", gitlab.url());
    std::fs::write(d.join("admin-token"), "jobgate-admin-secret\n").unwrap();
    let gw = Gateway::start_with_gitlab(d, &upstreams, POLICY, &fields, 60, 50, "admin: { token_file: admin-token }");

    let work = |name: &str, token: &str| {
        let target = d.join("work").join(name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let out =
            run(git_command(d, Some(&gw.ca)).args(["clone", "--quiet", &gw.git_url(token, "acme/tools")]).arg(&target));
        assert!(
            out.status.success(),
            "a clone with the job's own token (a cross-project read GitLab's job-token rules cover): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(target.join(format!("{name}.txt")), name).unwrap();
        git_ok(&target, &["add", "."]);
        git_ok(&target, &["-c", "user.name=ci", "-c", "user.email=ci@example.com", "commit", "--quiet", "-m", name]);
        target
    };
    let push = |work: &std::path::Path, token: &str| {
        run(git_command(work, Some(&gw.ca)).args(["push", "--quiet", &gw.git_url(token, "acme/tools"), "HEAD:main"]))
    };

    // ann's job: the policy elevates it to write_repository on acme/tools, and ann may push there.
    let ann = work("ann", ann_job);
    assert!(gitlab.impersonation_tokens().is_empty(), "reads within the job token's rights carry the job's own token");
    let out = push(&ann, ann_job);
    assert!(out.status.success(), "the elevated push is accepted upstream: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(git_ok(&git.root.join("acme/tools.git"), &["rev-parse", "main"]), git_ok(&ann, &["rev-parse", "HEAD"]));
    let minted = gitlab.impersonation_tokens();
    assert_eq!(minted.len(), 1, "one token for the job and its scope, reused across the push's requests: {minted:?}");
    let (ann_token_id, token) = &minted[0];
    assert_eq!(
        (token.user, token.name.as_str(), token.scopes.as_slice(), token.revoked),
        (5, "jobgate-job-7100", &["write_repository".to_owned()][..], false)
    );

    // bob's job: the policy allows the same push, but bob is only a Reporter: GitLab refuses it.
    let bob = work("bob", bob_job);
    let out = push(&bob, bob_job);
    assert!(!out.status.success(), "never beyond the user");
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, text) = common::curl(
        &gw,
        &[
            "--http1.1",
            "-u",
            &format!("gitlab-ci-token:{bob_job}"),
            &gw.url("/acme/tools.git/info/refs?service=git-receive-pack"),
        ],
    );
    assert!(
        status == 403 && text.contains("GitLab refused the job's user; jobgate allowed"),
        "which side refused: {text}"
    );
    let lines = gw.audit_until(|lines| lines.iter().any(|l| l["job_id"] == 7200 && l["status"] == 403));
    let refused = lines.iter().find(|l| l["job_id"] == 7200 && l["status"] == 403).unwrap();
    assert_eq!(
        (refused["decision"].as_str(), refused["reason"].as_str()),
        (Some("allow"), Some("granted")),
        "jobgate allowed; the 403 is GitLab's: {refused}"
    );
    assert!(refused["upstream_credential"].as_str().unwrap().starts_with("impersonation:"), "{refused}");
    let pushed = lines
        .iter()
        .find(|l| l["job_id"] == 7100 && l["upstream_credential"] == format!("impersonation:{ann_token_id}"));
    assert!(pushed.is_some(), "the audit line names the token by its id: {lines:?}");
    assert!(
        !std::fs::read_to_string(&gw.audit).unwrap().contains("glpat-impersonation"),
        "a token never appears in the audit log"
    );

    // ann's job ends: every token minted for it is revoked at GitLab — this jobgate's, and one another
    // replica minted — and its requests fail.
    let other_replicas = gitlab.leftover_token(5, "jobgate-job-7100", &["api"]);
    end_job(&gw, 7100);
    let ann_token = gitlab.impersonation_tokens().into_iter().find(|(id, _)| id == ann_token_id).unwrap().1;
    assert!(ann_token.revoked, "revoked when the job ended");
    assert!(
        gitlab.impersonation_tokens().iter().any(|(id, t)| *id == other_replicas && t.revoked),
        "another replica's token of the job too"
    );
    assert!(!gitlab.impersonation_tokens().iter().any(|(_, t)| t.user == 6 && t.revoked), "bob's job is still running");
    let out = push(&ann, ann_job);
    assert!(!out.status.success(), "a finished job pushes nothing");
    let ready = common::admin_get(&gw, "/-/ready");
    let ready: serde_json::Value =
        serde_json::from_str(ready.split_once("\r\n\r\n").map_or(&ready[..], |(_, body)| body)).unwrap();
    assert_eq!(
        ready["sources"]["gitlab"]["impersonation"],
        serde_json::json!({"tokens_held": 1, "revokes_pending": []}),
        "bob's token is held, nothing waits to be revoked"
    );
}

#[test]
fn gitlab_refusing_to_mint_refuses_the_request_and_forwards_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let git = GitServer::start(d);
    git.create_repo("acme/tools");
    let gitlab = GitLab::start();
    let job = "glcbt-64_AnnPushJob_333333333333";
    gitlab.add(
        job,
        Job { id: 7300, project_path: "acme/app", project_id: 42, git_ref: "main", tag: false, user: (5, "ann") },
    );
    gitlab.project(43, "acme/tools");
    gitlab.member(43, 5, 30);
    let front = gitlab.git_front(git.port);
    // Not an administrator's token: GitLab answers 403 to the mint.
    std::fs::write(d.join("gitlab-admin-token"), "glpat-someone-else\n").unwrap();
    let upstreams = format!("git: {{ url: 'http://127.0.0.1:{front}', credentials: impersonate }}");
    let gw = Gateway::start_with_gitlab(
        d,
        &upstreams,
        POLICY,
        &format!("url: '{}', admin_token_file: gitlab-admin-token", gitlab.url()),
        60,
        50,
        "",
    );
    let (status, text) = common::curl(
        &gw,
        &["-u", &format!("gitlab-ci-token:{job}"), &gw.url("/acme/tools.git/info/refs?service=git-receive-pack")],
    );
    assert!(status == 403 && text.contains("impersonation_refused") && text.contains("admin_token_file"), "{text}");
    assert!(gitlab.impersonation_tokens().is_empty());
    let lines = gw.audit_until(|lines| !lines.is_empty());
    assert_eq!(
        (lines[0]["reason"].as_str(), lines[0]["upstream_credential"].as_str()),
        (Some("impersonation_refused"), None),
        "{:?}",
        lines[0]
    );
}

#[test]
fn a_restart_sweeps_the_tokens_of_jobs_that_ended_meanwhile_and_leaves_running_jobs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gitlab = GitLab::start();
    gitlab.member(43, 5, 30);
    std::fs::write(d.join("gitlab-admin-token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    std::fs::write(d.join("admin-token"), "jobgate-admin-secret\n").unwrap();
    let upstreams = format!("git: {{ url: 'http://127.0.0.1:{}', credentials: impersonate }}", common::echo_upstream());
    let fields = format!("url: '{}', admin_token_file: gitlab-admin-token", gitlab.url());
    let extra = "admin: { token_file: admin-token }\nrevocations: { file: revocations.log }";
    let first = Gateway::start_with_gitlab(d, &upstreams, POLICY, &fields, 60, 50, extra);
    end_job(&first, 7400);
    first.kill();
    // Minted by a replica that never heard the job end, and one of a job still running.
    let ended = gitlab.leftover_token(5, "jobgate-job-7400", &["write_repository"]);
    let running = gitlab.leftover_token(5, "jobgate-job-7500", &["write_repository"]);
    let _second = Gateway::start_with_gitlab(d, &upstreams, POLICY, &fields, 60, 50, extra);
    let revoked = |id: u64| gitlab.impersonation_tokens().iter().any(|(i, t)| *i == id && t.revoked);
    common::eventually("the ended job's token is swept", std::time::Duration::from_secs(10), || revoked(ended));
    assert!(!revoked(running), "a running job's token is left to the replica that holds it");
}

#[test]
fn an_api_write_granted_on_a_protected_ref_goes_with_an_api_token_of_the_user() {
    use common::gitlab::API_TOKEN;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gitlab = GitLab::start();
    let (main, feature) = ("glcbt-64_AnnApiJobMain_44444444444", "glcbt-64_AnnApiJobFeat_55555555555");
    gitlab.add(
        main,
        Job { id: 7600, project_path: "acme/app", project_id: 42, git_ref: "main", tag: false, user: (5, "ann") },
    );
    gitlab.add(
        feature,
        Job { id: 7700, project_path: "acme/app", project_id: 42, git_ref: "feature", tag: false, user: (5, "ann") },
    );
    gitlab.protect_branches(42, vec!["main"]);
    gitlab.project(43, "acme/tools");
    gitlab.member(42, 5, 30);
    gitlab.member(43, 5, 30);
    std::fs::write(d.join("gitlab-admin-token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    std::fs::write(d.join("gitlab-token"), format!("{API_TOKEN}\n")).unwrap();
    let upstreams = format!("git: {{ url: '{0}' }}\napi: {{ url: '{0}', credentials: impersonate }}", gitlab.url());
    let policy = "projects:\n  acme/app: { id: 42 }\n  acme/tools:\n    id: 43\n    allow:\n      - { from: acme/app, scopes: [api], refs: protected }\n";
    let fields = format!("url: '{}', api_token_file: gitlab-token, admin_token_file: gitlab-admin-token", gitlab.url());
    let gw = Gateway::start_with_gitlab(d, &upstreams, policy, &fields, 60, 50, "");
    let create = |token: &str| {
        common::curl(
            &gw,
            &[
                "-X",
                "POST",
                "-H",
                &format!("JOB-TOKEN: {token}"),
                "--data",
                "title=from+ci",
                &gw.url(&format!("/api/v4/projects/43/issues?job_token={token}")),
            ],
        )
    };
    let (status, text) = create(main);
    assert!(
        status == 201 && text.contains("\"title\":\"from ci\"") && text.contains("\"author\":{\"id\":5"),
        "the API write goes as ann: {text}"
    );
    let minted = gitlab.impersonation_tokens();
    assert_eq!(
        minted.iter().map(|(_, t)| (t.name.as_str(), t.scopes.clone())).collect::<Vec<_>>(),
        [("jobgate-job-7600", vec!["api".to_owned()])]
    );
    assert_eq!(
        gitlab.issue_credentials(1),
        ["private-token"],
        "the job's token, in its header and its parameter, never goes with the user's"
    );
    let (status, text) = create(feature);
    assert!(status == 403 && text.contains("ref_not_protected"), "an unprotected ref gets nothing minted: {text}");
    assert_eq!(gitlab.impersonation_tokens().len(), 1);
}

#[test]
fn a_package_publish_granted_to_another_project_goes_with_an_api_token_of_the_user() {
    use std::process::{Command, Stdio};
    let python = std::env::var("PYTHON_TOOLS").map_or_else(
        |_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin"),
        std::path::PathBuf::from,
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let packages = d.join("pypi-packages");
    std::fs::create_dir_all(&packages).unwrap();
    let (pypi, _server) = common::serve_on_free_port(|port| {
        let mut command = Command::new(python.join("python"));
        command
            .arg("tests/fixtures/pypi_mounted.py")
            .arg(&packages)
            .args([&port.to_string(), "/api/v4/projects/42/packages/pypi"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    });
    let lib = "glcbt-64_LibPublishJob_666666666666";
    let (gitlab, gw) = publishing_to_acme_app(d, lib, 7800, pypi, false);
    // A wheel, built offline.
    let src = d.join("src");
    std::fs::create_dir_all(src.join("jobgate_imp")).unwrap();
    std::fs::write(src.join("jobgate_imp/__init__.py"), "").unwrap();
    std::fs::write(
        src.join("setup.py"),
        "from setuptools import setup\nsetup(name='jobgate-imp', version='1.0.0', packages=['jobgate_imp'])\n",
    )
    .unwrap();
    let out = run(Command::new(python.join("python"))
        .args(["-m", "build", "--wheel", "--no-isolation", "--outdir"])
        .arg(d.join("dist"))
        .current_dir(&src));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = format!("https://127.0.0.1:{}/api/v4/projects/42/packages/pypi", gw.port);
    let out = run(Command::new(python.join("twine"))
        .env("REQUESTS_CA_BUNDLE", &gw.ca)
        .args([
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "--repository-url",
            &url,
            "-u",
            "gitlab-ci-token",
            "-p",
            lib,
        ])
        .arg(d.join("dist/jobgate_imp-1.0.0-py3-none-any.whl")));
    assert!(
        out.status.success(),
        "twine publishes to acme/app as ann: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(packages.join("jobgate_imp-1.0.0-py3-none-any.whl").exists());
    let minted = gitlab.impersonation_tokens();
    assert!(
        minted.iter().any(|(_, t)| t.name == "jobgate-job-7800" && t.scopes == ["api"]),
        "GitLab has no narrower scope for a package write: {minted:?}"
    );
}

#[test]
fn a_revoke_gitlab_does_not_confirm_is_retried_and_shown_on_ready() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let git = GitServer::start(d);
    git.create_repo("acme/tools");
    let gitlab = GitLab::start();
    let job = "glcbt-64_AnnRetryJob_777777777777";
    gitlab.add(
        job,
        Job { id: 7900, project_path: "acme/app", project_id: 42, git_ref: "main", tag: false, user: (5, "ann") },
    );
    gitlab.project(43, "acme/tools");
    gitlab.member(43, 5, 30);
    let front = gitlab.git_front(git.port);
    std::fs::write(d.join("gitlab-admin-token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    std::fs::write(d.join("admin-token"), "jobgate-admin-secret\n").unwrap();
    let upstreams = format!("git: {{ url: 'http://127.0.0.1:{front}', credentials: impersonate }}");
    let gw = Gateway::start_with_gitlab(
        d,
        &upstreams,
        POLICY,
        &format!("url: '{}', admin_token_file: gitlab-admin-token", gitlab.url()),
        60,
        50,
        "admin: { token_file: admin-token }",
    );
    let (status, text) = common::curl(
        &gw,
        &["-u", &format!("gitlab-ci-token:{job}"), &gw.url("/acme/tools.git/info/refs?service=git-receive-pack")],
    );
    assert_eq!(status, 200, "{text}");
    let (id, _) = gitlab.impersonation_tokens()[0].clone();
    gitlab.set_down(true);
    end_job(&gw, 7900);
    let ready = || {
        let text = common::admin_get(&gw, "/-/ready");
        let body: serde_json::Value =
            serde_json::from_str(text.split_once("\r\n\r\n").map_or(&text[..], |(_, b)| b)).unwrap();
        body["sources"]["gitlab"]["impersonation"]["revokes_pending"].clone()
    };
    assert_eq!(ready(), serde_json::json!([id]), "the unconfirmed revoke is listed");
    assert!(
        common::admin_get(&gw, "/metrics").contains("jobgate_impersonation_tokens_total{event=\"revoke_failed\"} 1")
    );
    gitlab.set_down(false);
    common::eventually("the revoke is retried", std::time::Duration::from_secs(25), || {
        gitlab.impersonation_tokens()[0].1.revoked
    });
    assert_eq!(ready(), serde_json::json!([]));
}

#[test]
fn an_npm_publish_granted_to_another_project_goes_as_a_bearer_of_the_users_token() {
    use std::process::{Command, Stdio};
    let verdaccio = std::env::var("VERDACCIO").map_or_else(
        |_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/npm/node_modules/.bin/verdaccio"),
        std::path::PathBuf::from,
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, _verdaccio) = common::serve_on_free_port(|port| {
        let config = format!(
            "storage: {}\nuplinks: {{}}\npackages:\n  '**': {{ access: $all, publish: $all, unpublish: $all }}\nlisten: 127.0.0.1:{port}\nurl_prefix: /api/v4/projects/42/packages/npm/\nlog: {{ type: stdout, format: pretty, level: warn }}\n",
            d.join("storage").display()
        );
        std::fs::write(d.join("verdaccio.yaml"), config).unwrap();
        let mut command = Command::new(&verdaccio);
        command.arg("--config").arg(d.join("verdaccio.yaml")).stdout(Stdio::null()).stderr(Stdio::null());
        command
    });
    let lib = "glcbt-64_LibNpmJob_888888888888";
    let (gitlab, gw) = publishing_to_acme_app(d, lib, 8100, port, true);
    let home = d.join("npm-home");
    std::fs::create_dir_all(&home).unwrap();
    let registry = format!("https://127.0.0.1:{}/api/v4/projects/42/packages/npm/", gw.port);
    std::fs::write(
        home.join(".npmrc"),
        format!(
            "registry={registry}\n{}:_authToken={lib}\ncafile={}\naudit=false\nfund=false\nupdate-notifier=false\n",
            registry.trim_start_matches("https:"),
            gw.ca.display()
        ),
    )
    .unwrap();
    let pkg = d.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("package.json"), r#"{"name":"jobgate-imp-pkg","version":"1.0.0","main":"index.js"}"#)
        .unwrap();
    std::fs::write(pkg.join("index.js"), "module.exports = 1;\n").unwrap();
    let out = run(Command::new("npm")
        .arg("publish")
        .current_dir(&pkg)
        .env("HOME", &home)
        .env("npm_config_userconfig", home.join(".npmrc"))
        .env("npm_config_cache", home.join("cache"))
        .env("NODE_EXTRA_CA_CERTS", &gw.ca));
    assert!(
        out.status.success(),
        "npm publishes to acme/app as ann: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.join("storage/jobgate-imp-pkg/package.json").exists());
    assert!(
        gitlab.impersonation_tokens().iter().any(|(_, t)| t.name == "jobgate-job-8100" && t.scopes == ["api"]),
        "{:?}",
        gitlab.impersonation_tokens()
    );
}
