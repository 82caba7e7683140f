//! End to end with the real `git` client through a real jobgate process to `git http-backend` under
//! lighttpd: clones, pushes, the allowlist, protected refs, a 200 MB streamed push, and refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{curl, git_command, git_ok, run, Gateway, GitServer};

const POLICY: &str = "
projects:
  acme/app:
    id: 42
    allow:
      - from: acme/lib
        scopes: [write_repository]
        refs: protected
  acme/lib: { id: 43 }
  acme/secret: { id: 44 }
";

struct Env {
    dir: tempfile::TempDir,
    git: GitServer,
    gateway: Gateway,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let git = GitServer::start(dir.path());
    for project in ["acme/app", "acme/lib", "acme/secret", "acme/platform/tools"] {
        git.create_repo(project);
    }
    let gateway = Gateway::start(dir.path(), &format!("http://127.0.0.1:{}", git.port), POLICY);
    Env { dir, git, gateway }
}

impl Env {
    fn clone(&self, url: &str, name: &str) -> (Output, PathBuf) {
        let target = self.dir.path().join("work").join(name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let out =
            run(git_command(self.dir.path(), Some(&self.gateway.ca)).args(["clone", "--quiet", url]).arg(&target));
        (out, target)
    }

    fn clone_ok(&self, url: &str, name: &str) -> PathBuf {
        let (out, target) = self.clone(url, name);
        assert!(out.status.success(), "clone failed: {}", String::from_utf8_lossy(&out.stderr));
        target
    }

    fn push(&self, work: &Path, url: &str) -> Output {
        run(git_command(work, Some(&self.gateway.ca)).args(["push", "--quiet", url, "HEAD:main"]))
    }

    fn upstream_main(&self, project: &str) -> String {
        git_ok(&self.git.root.join(format!("{project}.git")), &["rev-parse", "main"])
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn own_project_clone_is_allowed_and_audited() {
    let env = env();
    let token = env.gateway.token("acme/app", 42, false);
    let work = env.clone_ok(&env.gateway.git_url(&token, "acme/app"), "app");
    assert_eq!(std::fs::read_to_string(work.join("README.md")).unwrap(), "# acme/app\n");

    // Subgroups, and the path without `.git`.
    let token = env.gateway.token("acme/platform/tools", 50, false);
    let url = env.gateway.git_url(&token, "acme/platform/tools").trim_end_matches(".git").to_owned();
    env.clone_ok(&url, "tools");

    let allowed =
        |lines: &[serde_json::Value]| lines.iter().filter(|l| l["decision"] == "allow" && l["job_id"] == 1042).count();
    let lines = env.gateway.audit_until(|lines| allowed(lines) >= 2);
    assert!(allowed(&lines) >= 2, "info/refs and upload-pack are audited: {lines:?}");
    let text = std::fs::read_to_string(&env.gateway.audit).unwrap();
    assert!(!text.contains(&token) && !text.contains("service="), "audit lines never carry tokens or queries");
}

#[test]
fn push_without_write_repository_is_refused_and_changes_nothing() {
    let env = env();
    let token = env.gateway.token("acme/app", 42, true);
    let url = env.gateway.git_url(&token, "acme/app");
    let work = env.clone_ok(&url, "app");
    let before = env.upstream_main("acme/app");
    git_ok(&work, &["commit", "--quiet", "--allow-empty", "-m", "not allowed"]);
    let out = env.push(&work, &url);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains("403"), "{message}");
    assert!(message.contains("write_repository on acme/app") && message.contains("scope_not_granted"), "{message}");
    assert_eq!(env.upstream_main("acme/app"), before);
}

#[test]
fn push_needs_the_grant_and_a_protected_ref() {
    let env = env();
    let unprotected = env.gateway.token("acme/lib", 43, false);
    let work = env.clone_ok(&env.gateway.git_url(&unprotected, "acme/app"), "lib-on-app");
    let before = env.upstream_main("acme/app");
    git_ok(&work, &["commit", "--quiet", "--allow-empty", "-m", "from acme/lib"]);

    let out = env.push(&work, &env.gateway.git_url(&unprotected, "acme/app"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ref_not_protected"), "{}", stderr(&out));
    assert_eq!(env.upstream_main("acme/app"), before);

    let protected = env.gateway.token("acme/lib", 43, true);
    let out = env.push(&work, &env.gateway.git_url(&protected, "acme/app"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.upstream_main("acme/app"), git_ok(&work, &["rev-parse", "HEAD"]));
}

#[test]
fn cross_project_clone_follows_the_allowlist() {
    let env = env();
    let lib = env.gateway.token("acme/lib", 43, true);
    env.clone_ok(&env.gateway.git_url(&lib, "acme/app"), "lib-reads-app");

    let (out, target) = env.clone(&env.gateway.git_url(&lib, "acme/secret"), "lib-reads-secret");
    assert!(!out.status.success() && !target.join("README.md").exists());
    assert!(stderr(&out).contains("not_in_allowlist"), "{}", stderr(&out));

    // acme/lib has no allowlist: acme/app's job may not read it.
    let app = env.gateway.token("acme/app", 42, true);
    let (out, _) = env.clone(&env.gateway.git_url(&app, "acme/lib"), "app-reads-lib");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not_in_allowlist"), "{}", stderr(&out));
}

/// Peak resident memory of a process, from /proc.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_200_mb_push_streams_through_intact_with_bounded_memory() {
    let env = env();
    let token = env.gateway.token("acme/lib", 43, true);
    let url = env.gateway.git_url(&token, "acme/app");
    let work = env.clone_ok(&url, "big");
    let size_mb: usize = std::env::var("JOBGATE_BIG_PUSH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let mut data = vec![0u8; size_mb << 20];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut data).unwrap();
    std::fs::write(work.join("big.bin"), &data).unwrap();
    drop(data);
    git_ok(&work, &["add", "big.bin"]);
    git_ok(&work, &["commit", "--quiet", "-m", "big"]);
    let before_kib = vm_hwm_kib(env.gateway.pid());

    let out = env.push(&work, &url);
    assert!(out.status.success(), "{}", stderr(&out));
    let bare = env.git.root.join("acme/app.git");
    assert_eq!(git_ok(&bare, &["rev-parse", "main:big.bin"]), git_ok(&work, &["rev-parse", "HEAD:big.bin"]));
    assert_eq!(git_ok(&bare, &["cat-file", "-s", "main:big.bin"]), (size_mb << 20).to_string());

    let peak_kib = vm_hwm_kib(env.gateway.pid());
    eprintln!("jobgate peak RSS: {before_kib} KiB before, {peak_kib} KiB after a {size_mb} MB push");
    assert!(peak_kib < 64 * 1024, "jobgate peaked at {peak_kib} KiB while streaming {size_mb} MB");
}

#[test]
fn refusals_before_anything_reaches_git() {
    let env = env();
    let gw = &env.gateway;
    let info_refs = gw.url("/acme/app.git/info/refs?service=git-upload-pack");
    let token = gw.token("acme/app", 42, false);
    let basic = format!("gitlab-ci-token:{token}");

    let (status, text) = curl(gw, &[&info_refs]);
    assert_eq!(status, 401);
    assert!(text.to_ascii_lowercase().contains("www-authenticate: basic realm=\"gitlab\""), "{text}");
    assert!(text.contains("missing_credential") && text.to_ascii_lowercase().contains("x-request-id:"), "{text}");

    let (status, text) = curl(gw, &["-u", &basic, &info_refs]);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("application/x-git-upload-pack-advertisement"), "{text}");

    let (status, text) = curl(gw, &["--http2", "-u", &basic, &info_refs]);
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("HTTP/2 200"), "ALPN h2 is served: {text}");
    let (status, text) = curl(gw, &["--http1.1", "-u", &basic, &info_refs]);
    assert!(status == 200 && text.starts_with("HTTP/1.1 200"), "{text}");

    let tampered = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = token.split('.').collect();
        let payload = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap().replace("acme/app", "acme/secret");
        format!("{}.{}.{}", parts[0], b64.encode(payload), parts[2])
    };
    let expired = gw.token_with("acme/app", 42, false, vec![("exp".into(), serde_json::json!(1_000_000))]);
    let other_token = gw.token("acme/lib", 43, false);
    let cases: Vec<(Vec<String>, u16, &str)> = vec![
        (vec!["-u".into(), format!("gitlab-ci-token:{tampered}"), info_refs.clone()], 401, "bad_signature"),
        (vec!["-u".into(), format!("gitlab-ci-token:{expired}"), info_refs.clone()], 401, "token_expired"),
        (vec!["-u".into(), "alice:glpat-secret".into(), info_refs.clone()], 401, "non_job_rejected"),
        (
            vec!["-u".into(), basic.clone(), "-H".into(), format!("JOB-TOKEN: {other_token}"), info_refs.clone()],
            400,
            "conflicting_credentials",
        ),
        (
            vec![
                "-H".into(),
                format!("Job_Token: {token}"),
                "-H".into(),
                format!("JOB-TOKEN: {other_token}"),
                info_refs.clone(),
            ],
            400,
            "conflicting_credentials",
        ),
        (vec!["-u".into(), basic.clone(), gw.url("/acme/app.git/HEAD")], 403, "unmatched_request"),
        (vec!["-u".into(), basic.clone(), gw.url("/acme/app.git/info/refs")], 403, "unmatched_request"),
        (
            vec![
                "--path-as-is".into(),
                "-u".into(),
                basic.clone(),
                gw.url("/acme/app/../secret.git/info/refs?service=git-upload-pack"),
            ],
            403,
            "unmatched_request",
        ),
        (
            vec!["-u".into(), basic.clone(), gw.url("/acme/app/%2e%2e/secret.git/info/refs?service=git-upload-pack")],
            403,
            "unmatched_request",
        ),
        (
            vec!["-u".into(), basic.clone(), gw.url("/acme%2Fsecret.git/info/refs?service=git-upload-pack")],
            403,
            "unmatched_request",
        ),
        (vec![format!("{info_refs}&job_token={token}")], 200, "advertisement"),
        (vec!["-H".into(), format!("Authorization: Bearer glcbt-{token}"), info_refs.clone()], 200, "advertisement"),
    ];
    for (args, want_status, want_text) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, text) = curl(gw, &args);
        assert_eq!(status, want_status, "{args:?}: {text}");
        assert!(text.contains(want_text), "{args:?}: {text}");
        assert!(!text.contains(&token), "responses never echo the token");
    }
}
