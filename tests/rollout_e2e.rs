//! Rolling out: real git traffic through jobgate in `mode: audit`, `jobgate policy suggest` on its
//! audit file, then the same traffic through an enforcing jobgate with the suggestions — allowed — and
//! traffic outside them — still denied. And the suggestion for a fixed audit file, pinned as a golden
//! output (`UPDATE_GOLDEN=1` rewrites it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{git_command, output_text, run, Gateway, GitServer};

const INSTANCE: &str = "instance:
  own_project: [read_repository, read_registry, write_registry, read_package_registry, read_api]
  cross_project: [read_repository, read_registry, read_package_registry]
";

fn policy(mode: &str) -> String {
    format!("{INSTANCE}  mode: {mode}\nprojects:\n  acme/secret: {{ id: 44 }}\n")
}

fn jobgate(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_jobgate")).args(args).env("RUST_LOG", "warn"))
}

struct Jobs<'a> {
    dir: &'a Path,
    gateway: &'a Gateway,
}

impl Jobs<'_> {
    fn clone(&self, project: &str, protected: bool, target: &str) -> Output {
        let work = self.dir.join("work").join(format!("{project}-{target}-{}", rand_suffix()));
        let url = self.gateway.git_url(&self.gateway.token(project, id(project), protected), target);
        run(git_command(self.dir, Some(&self.gateway.ca)).args(["clone", "--quiet", &url]).arg(&work))
    }

    /// Clones `target` as its own job, commits, and pushes as a job of `project`.
    fn push(&self, project: &str, protected: bool, target: &str) -> Output {
        let work = self.dir.join("work").join(format!("push-{project}-{}", rand_suffix()));
        let own = self.gateway.git_url(&self.gateway.token(target, id(target), true), target);
        let out = run(git_command(self.dir, Some(&self.gateway.ca)).args(["clone", "--quiet", &own]).arg(&work));
        assert!(out.status.success(), "{}", output_text(&out));
        std::fs::write(work.join("change.txt"), rand_suffix()).unwrap();
        for args in [
            &["add", "."][..],
            &["-c", "user.name=ci", "-c", "user.email=ci@example.com", "commit", "--quiet", "-m", "change"],
        ] {
            assert!(run(git_command(&work, None).args(args)).status.success());
        }
        let url = self.gateway.git_url(&self.gateway.token(project, id(project), protected), target);
        run(git_command(&work, Some(&self.gateway.ca)).args(["push", "--quiet", &url, "HEAD:main"]))
    }
}

fn id(project: &str) -> u64 {
    ["acme/app", "acme/lib", "acme/docs", "acme/tools/a", "acme/tools/b", "acme/secret"]
        .iter()
        .position(|p| *p == project)
        .unwrap() as u64
        + 40
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

#[test]
fn audit_mode_traffic_becomes_a_policy_that_admits_it_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let git = GitServer::start(dir.path());
    for project in ["acme/app", "acme/lib", "acme/docs", "acme/tools/a", "acme/tools/b", "acme/secret"] {
        git.create_repo(project);
    }
    let upstream = format!("http://127.0.0.1:{}", git.port);

    // The pipelines as they run today, through jobgate in audit mode: everything passes.
    let gateway = Gateway::start(dir.path(), &upstream, &policy("audit"));
    let jobs = Jobs { dir: dir.path(), gateway: &gateway };
    let traffic = |jobs: &Jobs<'_>| {
        for (project, target) in [("acme/tools/a", "acme/app"), ("acme/tools/b", "acme/app"), ("acme/app", "acme/app")]
        {
            let out = jobs.clone(project, true, target);
            assert!(out.status.success(), "{project} cloning {target}: {}", output_text(&out));
        }
        let out = jobs.push("acme/lib", true, "acme/docs");
        assert!(out.status.success(), "acme/lib pushing to acme/docs: {}", output_text(&out));
    };
    traffic(&jobs);
    // A forged token: refused even in audit mode, and never a suggestion.
    let forged =
        run(git_command(dir.path(), Some(&gateway.ca))
            .args(["ls-remote", &gateway.git_url("not-a-token", "acme/secret")]));
    assert!(!forged.status.success());
    let lines = gateway.audit_until(|lines| lines.iter().any(|l| l["reason"] == "malformed_token"));
    let would_deny = lines.iter().filter(|l| l["decision"] == "deny" && l["enforced"] == false).count();
    assert!(would_deny >= 5, "audit mode records would-deny decisions: {lines:?}");
    gateway.kill();

    let config = dir.path().join("jobgate.yaml");
    let audit = dir.path().join("audit.log");
    let out = jobgate(&[
        "policy",
        "suggest",
        "--config",
        config.to_str().unwrap(),
        "--audit",
        audit.to_str().unwrap(),
        "--out",
        dir.path().join("policies").to_str().unwrap(),
    ]);
    let report = output_text(&out);
    assert!(out.status.success(), "{report}");
    let suggested = std::fs::read_to_string(dir.path().join("policies/suggested.yaml")).unwrap();
    // Both tool projects (all of acme/tools) clone acme/app: one group entry, reads only, from
    // protected refs; acme/lib pushes to acme/docs: write_repository, protected refs.
    for want in [
        "\"acme/app\":",
        "- from: \"acme/tools\"\n        scopes: []\n        refs: protected",
        "\"acme/docs\":",
        "- from: \"acme/lib\"\n        scopes: [write_repository]\n        refs: protected",
    ] {
        assert!(suggested.contains(want), "{want:?} missing from:\n{suggested}\n{report}");
    }
    assert!(!suggested.contains("acme/secret"), "the forged token's request is no suggestion:\n{suggested}");
    assert!(report.contains("left out 1 line(s): no verified job credential"), "{report}");

    // Enforce with the suggestions: `check` runs their pinned tests, the replay passes, the rest is denied.
    std::fs::write(dir.path().join("policies/policy.yaml"), policy("enforce")).unwrap();
    let checked = jobgate(&["check", "--offline", "--config", config.to_str().unwrap()]);
    assert!(checked.status.success(), "{}", output_text(&checked));
    assert!(output_text(&checked).contains("policy tests: 3 passed"), "{}", output_text(&checked));
    std::fs::remove_file(&audit).unwrap();
    let gateway = Gateway::start(dir.path(), &upstream, &policy("enforce"));
    let jobs = Jobs { dir: dir.path(), gateway: &gateway };
    traffic(&jobs);
    assert!(!jobs.clone("acme/lib", true, "acme/app").status.success(), "acme/lib was never seen reading acme/app");
    assert!(!jobs.clone("acme/tools/a", true, "acme/secret").status.success());
    assert!(!jobs.push("acme/tools/a", true, "acme/app").status.success(), "the tools only read acme/app");
    assert!(!jobs.push("acme/lib", false, "acme/docs").status.success(), "every push came from a protected ref");
    let lines = gateway.audit_until(|lines| lines.iter().filter(|l| l["decision"] == "deny").count() >= 4);
    let denied: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["decision"] == "deny")
        .map(|l| {
            (
                l["token_project"].as_str().unwrap_or_default().to_owned(),
                l["target"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for (project, target) in &denied {
        assert!(
            [
                ("acme/lib", "acme/app"),
                ("acme/tools/a", "acme/secret"),
                ("acme/tools/a", "acme/app"),
                ("acme/lib", "acme/docs")
            ]
            .contains(&(project.as_str(), target.as_str())),
            "only the requests outside the suggestions are denied, not {project} → {target}"
        );
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/suggest").join(name)
}

/// Compares `got` with the golden file, or rewrites it with `UPDATE_GOLDEN=1`.
fn golden(name: &str, got: &str) {
    let path = fixture(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(got, want, "{} differs (UPDATE_GOLDEN=1 rewrites it after review)", path.display());
}

#[test]
fn a_fixed_audit_file_gives_the_golden_suggestion_read_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::copy(fixture("policy.yaml"), dir.path().join("policies/policy.yaml")).unwrap();
    let config = dir.path().join("jobgate.yaml");
    std::fs::write(&config, "listen: { public: 127.0.0.1:0, admin: 127.0.0.1:0 }\ntls: { cert: c.pem, key: k.pem }\nissuers: [ { name: ci, iss: 'https://gitlab.test', audiences: [jobgate], jwks_file: jwks.json } ]\npolicy_dir: policies\nupstreams: { git: { url: 'http://127.0.0.1:1' } }\n").unwrap();
    // The same lines split over a rotated, gzipped file and the current one.
    let text = std::fs::read_to_string(fixture("audit.jsonl")).unwrap();
    let split = text[..text.len() / 2].rfind('\n').unwrap() + 1;
    let (older, rest) = text.split_at(split);
    let gz = dir.path().join("audit.log.1.gz");
    let mut encoder =
        flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    std::io::Write::write_all(&mut encoder, older.as_bytes()).unwrap();
    encoder.finish().unwrap();
    std::fs::write(dir.path().join("audit.log"), rest).unwrap();
    let out = jobgate(&[
        "policy",
        "suggest",
        "--config",
        config.to_str().unwrap(),
        "--audit",
        gz.to_str().unwrap(),
        dir.path().join("audit.log").to_str().unwrap(),
        "--out",
        dir.path().join("policies").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let report = String::from_utf8(out.stderr).unwrap().replace(dir.path().to_str().unwrap(), "DIR");
    golden("report.txt", &report);
    golden("suggested.yaml", &std::fs::read_to_string(dir.path().join("policies/suggested.yaml")).unwrap());
    golden("tests.yaml", &std::fs::read_to_string(dir.path().join("policies/tests/suggested.yaml")).unwrap());
}

#[test]
fn gitlab_allowlists_import_over_several_pages_as_policy_that_decides_alike_and_again_byte_for_byte() {
    use common::gitlab::{GitLab, API_TOKEN};
    let gitlab = GitLab::start();
    gitlab.page_cap(2);
    for (id, group) in [(1, "acme"), (2, "acme/tools"), (3, "other")] {
        gitlab.group(id, group);
    }
    for (id, project) in [
        (42, "acme/app"),
        (43, "acme/lib"),
        (44, "acme/tools/a"),
        (45, "acme/tools/b"),
        (46, "acme/open"),
        (47, "acme/locked"),
        (48, "acme/tools/c"),
        (50, "other/x"),
    ] {
        gitlab.project(id, project);
        gitlab.job_token_scope(id, true, false, vec![], vec![]);
    }
    gitlab.job_token_scope(42, true, false, vec![43, 44, 45], vec![2, 3]);
    gitlab.job_token_scope(46, false, true, vec![], vec![]);
    gitlab.forbid(47);

    let dir = tempfile::tempdir().unwrap();
    jobgate::tools::generate::certs(&dir.path().join("certs")).unwrap();
    jobgate::tools::generate::keys(&dir.path().join("keys"), jobgate::token::Alg::RS256).unwrap();
    std::fs::create_dir_all(dir.path().join("policies/tests")).unwrap();
    std::fs::write(dir.path().join("policies/instance.yaml"), INSTANCE).unwrap();
    // What GitLab's allowlists decide, as policy tests: the folder's tests must pass before the import
    // writes anything.
    std::fs::write(
        dir.path().join("policies/tests/allowlists.yaml"),
        "- { name: an allowlisted project, token: { project: acme/lib }, request: { method: GET, url: /acme/app.git/info/refs?service=git-upload-pack }, expect: allow }
- { name: a project of an allowlisted group, token: { project: acme/tools/c }, request: { method: GET, url: /acme/app.git/info/refs?service=git-upload-pack }, expect: allow }
- { name: another top-level group allowlisted, token: { project: other/x }, request: { method: GET, url: /acme/app.git/info/refs?service=git-upload-pack }, expect: allow }
- { name: not allowlisted, token: { project: acme/lib }, request: { method: GET, url: /acme/tools/a.git/info/refs?service=git-upload-pack }, expect: deny, reason: not_in_allowlist }
- { name: limit access off, token: { project: other/x }, request: { method: GET, url: /acme/open.git/info/refs?service=git-upload-pack }, expect: allow }
- { name: the allowlist admits reads only, token: { project: acme/lib }, request: { method: POST, url: /acme/app.git/git-receive-pack }, expect: deny, reason: scope_not_granted }
- { name: API paths by the imported id, token: { project: acme/lib }, request: { method: GET, url: /api/v4/projects/42/packages/generic/tool/1.0/tool.bin }, expect: allow }
",
    )
    .unwrap();
    std::fs::write(dir.path().join("api-token"), format!("{API_TOKEN}\n")).unwrap();
    let config = dir.path().join("jobgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{ public: 127.0.0.1:0, admin: 127.0.0.1:0 }}\ntls: {{ cert: certs/server.pem, key: certs/server-key.pem }}\n\
             issuers: [ {{ name: ci, iss: 'https://gitlab.test', audiences: [jobgate], jwks_file: keys/jwks.json }} ]\n\
             policy_dir: policies\nupstreams: {{ git: {{ url: 'http://127.0.0.1:1' }} }}\ngitlab: {{ url: '{}', api_token_file: api-token }}\n",
            gitlab.url()
        ),
    )
    .unwrap();
    let import = || jobgate(&["policy", "import", "--config", config.to_str().unwrap(), "--group", "acme"]);
    let out = import();
    let report = output_text(&out);
    assert!(out.status.success(), "{report}");
    let file = dir.path().join("policies/gitlab-acme.yaml");
    let first = std::fs::read_to_string(&file).unwrap();
    for want in [
        "\"acme/app\":\n    id: 42\n",
        "# GitLab allowlist: project acme/lib (id 43)\n      - from: \"acme/lib\"",
        "- from: \"acme/tools/b\"",
        "# GitLab groups allowlist: group acme/tools (id 2)\n      - from: \"acme/tools\"",
        "- from: \"other\"",
        "\"acme/open\":\n    id: 46\n    # GitLab: \"Limit access to this project\" is off: every project's jobs reach it\n    inbound: open",
    ] {
        assert!(first.contains(want), "{want:?} missing:\n{first}");
    }
    assert!(
        !first.contains("- from: \"acme/app\""),
        "the project's own entry is GitLab's, not an allowlist entry:\n{first}"
    );
    assert!(!first.contains("acme/locked") && !first.contains("other/x\":"), "{first}");
    assert!(
        report.contains("acme/locked: GET /api/v4/projects/47/job_token_scope: 403 Forbidden")
            && report.contains("not imported"),
        "{report}"
    );
    assert!(report.contains("acme/open: GitLab's outbound scope"), "{report}");
    assert!(report.contains("6 project(s) imported"), "{report}");

    let again = import();
    assert!(again.status.success(), "{}", output_text(&again));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first, "the same settings give the same bytes");
    let checked = jobgate(&["check", "--offline", "--config", config.to_str().unwrap()]);
    assert!(
        checked.status.success() && output_text(&checked).contains("policy tests: 7 passed"),
        "{}",
        output_text(&checked)
    );

    // A project another file already defines: the import refuses and writes nothing.
    std::fs::write(dir.path().join("policies/mine.yaml"), "projects:\n  acme/open: { id: 46 }\n").unwrap();
    std::fs::remove_file(&file).unwrap();
    let refused = import();
    assert!(!refused.status.success() && output_text(&refused).contains("acme/open"), "{}", output_text(&refused));
    assert!(!file.exists());
}
