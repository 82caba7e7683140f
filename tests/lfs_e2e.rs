//! Git LFS through jobgate with the real git and git-lfs clients to giftless (under gunicorn). The
//! batch call carries the job token and is decided by jobgate; giftless answers with transfer actions
//! carrying its own short-lived Bearer tokens, which jobgate passes through (`non_job: passthrough` on
//! the LFS upstream: a Bearer JWT from no configured issuer is not job traffic). A job
//! pushes a 20 MB LFS object to its own project, an admitted project clones it (smudge) intact, an
//! upload without `write_repository` is refused at the batch call with nothing stored, and a project
//! that is not admitted cannot fetch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::gitlab::Tokens;
use common::{git_command, git_ok, run, serve_on_free_port, GitServer, Process};

const POLICY: &str = "
projects:
  acme/app:
    id: 42
    allow:
      - { from: acme/app, scopes: [write_repository] }
      - { from: acme/lib }
  acme/lib: { id: 43 }
";

fn giftless(dir: &Path) -> (u16, PathBuf, Process) {
    let store = dir.join("lfs-store");
    std::fs::create_dir_all(&store).unwrap();
    let config = dir.join("giftless.yaml");
    std::fs::write(
        &config,
        format!(
            "AUTH_PROVIDERS:\n  - giftless.auth.allow_anon:read_write\nLEGACY_ENDPOINTS: false\nTRANSFER_ADAPTERS:\n  basic:\n    factory: giftless.transfer.basic_streaming:factory\n    options:\n      storage_class: giftless.storage.local_storage:LocalStorage\n      storage_options:\n        path: {}\nMIDDLEWARE:\n  - class: werkzeug.middleware.proxy_fix:ProxyFix\n    kwargs: {{ x_host: 1, x_proto: 1 }}\n",
            store.display()
        ),
    )
    .unwrap();
    let tools = std::env::var("GIFTLESS_TOOLS")
        .map_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/giftless/bin"), PathBuf::from);
    let (port, process) = serve_on_free_port(|port| {
        let mut command = Command::new(tools.join("gunicorn"));
        command
            .args([
                "-b",
                &format!("127.0.0.1:{port}"),
                "-b",
                &format!("unix:{}", dir.join("giftless.sock").display()),
                "-k",
                "gthread",
                "--threads",
                "8",
                "--timeout",
                "120",
                "giftless.wsgi_entrypoint:app",
            ])
            .env("GIFTLESS_CONFIG_FILE", &config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    });
    (port, store, process)
}

fn text(out: &Output) -> String {
    common::output_text(out)
}

fn stored_objects(store: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(store, &mut out);
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn lfs_objects_push_and_smudge_through_jobgate_to_giftless() {
    scenario(&Tokens::Jwt, false);
}

#[test]
fn lfs_with_an_unmodified_pipelines_ci_job_token() {
    scenario(&Tokens::gitlab(&[("acme/app", 42), ("acme/lib", 43), ("acme/other", 44)]), false);
}

/// The same through Unix-socket upstreams, as jobgate reaches GitLab Workhorse on an Omnibus host.
#[test]
fn git_and_lfs_through_unix_socket_upstreams() {
    scenario(&Tokens::Jwt, true);
}

fn scenario(tokens: &Tokens, sockets: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let git = GitServer::start(d);
    git.create_repo("acme/app");
    let (lfs_port, store, _giftless) = giftless(d);
    let (git_url, lfs_url) = if sockets {
        (format!("unix:{}", git.socket.display()), format!("unix:{}", d.join("giftless.sock").display()))
    } else {
        (format!("http://127.0.0.1:{}", git.port), format!("http://127.0.0.1:{lfs_port}"))
    };
    let upstreams = format!("git: {{ url: '{git_url}' }}\nlfs: {{ url: '{lfs_url}', non_job: passthrough }}");
    let gw = tokens.gateway(d, &upstreams, POLICY, "");
    let ca = gw.ca.clone();
    let git_in = |cwd: &Path, args: &[&str]| run(git_command(cwd, Some(&ca)).args(args));
    assert!(git_in(d, &["lfs", "install", "--skip-repo"]).status.success(), "git-lfs is installed");

    // Own project: push a 20 MB LFS object.
    let app_url = gw.git_url(&tokens.token(&gw, "acme/app", 42, true), "acme/app");
    let work = d.join("app");
    assert!(
        git_in(d, &["clone", "--quiet", &app_url]).status.success()
            || git_in(d, &["clone", "--quiet", &app_url, work.to_str().unwrap()]).status.success()
    );
    let work = if work.exists() { work } else { d.join("app") };
    let mut data = vec![0u8; 20 << 20];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut data).unwrap();
    let oid = sha256_hex(&data);
    std::fs::write(work.join("big.bin"), &data).unwrap();
    git_ok(&work, &["lfs", "track", "*.bin"]);
    git_ok(&work, &["add", ".gitattributes", "big.bin"]);
    git_ok(&work, &["commit", "--quiet", "-m", "big LFS object"]);
    let out = git_in(&work, &["push", "--quiet", &app_url, "HEAD:main"]);
    assert!(out.status.success(), "own project pushes its LFS object: {}", text(&out));
    assert!(stored_objects(&store).contains(&oid), "giftless stored {oid}: {:?}", stored_objects(&store));

    // An admitted project clones with smudge: the object arrives intact.
    let lib_url = gw.git_url(&tokens.token(&gw, "acme/lib", 43, false), "acme/app");
    let lib_work = d.join("lib-clone");
    let out = git_in(d, &["clone", "--quiet", &lib_url, lib_work.to_str().unwrap()]);
    assert!(out.status.success(), "admitted clone: {}", text(&out));
    assert_eq!(sha256_hex(&std::fs::read(lib_work.join("big.bin")).unwrap()), oid, "smudged content matches");

    // Without write_repository: refused at the batch call, nothing stored.
    std::fs::write(lib_work.join("other.bin"), b"a new object from acme/lib").unwrap();
    git_ok(&lib_work, &["add", "other.bin"]);
    git_ok(&lib_work, &["commit", "--quiet", "-m", "lib's object"]);
    let out = git_in(&lib_work, &["lfs", "push", &lib_url, "HEAD"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out)
            .contains("jobgate: jobs of acme/lib may not use write_repository on acme/app (reason: scope_not_granted"),
        "git-lfs shows why: {}",
        text(&out)
    );
    let new_oid = sha256_hex(b"a new object from acme/lib");
    assert!(!stored_objects(&store).contains(&new_oid), "nothing stored upstream");
    let refused = |l: &serde_json::Value| {
        l["family"] == "lfs" && l["job_id"] == 1043 && l["scope"] == "write_repository" && l["decision"] == "deny"
    };
    assert!(gw.audit_until(|lines| lines.iter().any(refused)).iter().any(refused), "refused at the batch call");

    // Batch bodies jobgate cannot read are refused before anything is forwarded.
    let token = tokens.token(&gw, "acme/app", 42, true);
    let batch = gw.url("/acme/app.git/info/lfs/objects/batch");
    for body in ["not json", r#"{"objects":[]}"#, r#"{"operation":"delete","objects":[]}"#] {
        let (status, text) =
            common::curl(&gw, &["-X", "POST", "-H", &format!("JOB-TOKEN: {token}"), "--data-binary", body, &batch]);
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains("operation"), "{text}");
    }

    // A project that is not admitted cannot fetch the object.
    let other_url = gw.git_url(&tokens.token(&gw, "acme/other", 44, false), "acme/app");
    let out = git_in(d, &["clone", "--quiet", &other_url, d.join("other-clone").to_str().unwrap()]);
    assert!(!out.status.success());
}
