//! The container registry through jobgate with the real skopeo client and Debian's docker-registry
//! (distribution 2.8), in both modes: an open registry behind `credentials: strip`, and a token-auth
//! registry that checks jobgate's own registry tokens again (`passthrough`, `rootcertbundle` = jobgate's
//! certificate). skopeo runs the full challenge → realm → Bearer flow with `gitlab-ci-token:<JWT>`.
//! The image is built offline with umoci.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{curl, run, serve_on_free_port, Gateway, Process};

const POLICY: &str = "
projects:
  acme/app:
    id: 42
    allow:
      - { from: acme/lib }
  acme/lib: { id: 43 }
  acme/secret: { id: 44 }
";

fn text(out: &Output) -> String {
    common::output_text(out)
}

/// An OCI image layout with one small layer, built offline.
fn image(dir: &Path) -> PathBuf {
    let layout = dir.join("oci");
    let bundle = dir.join("bundle");
    for args in [
        vec!["init", "--layout", layout.to_str().unwrap()],
        vec!["new", "--image", &format!("{}:base", layout.display())],
        vec!["unpack", "--image", &format!("{}:base", layout.display()), bundle.to_str().unwrap()],
    ] {
        let out = run(Command::new("umoci").args(&args));
        assert!(out.status.success(), "umoci {args:?}: {}", text(&out));
    }
    std::fs::write(bundle.join("rootfs/hello.txt"), "hello through jobgate\n").unwrap();
    let out = run(Command::new("umoci").args([
        "repack",
        "--image",
        &format!("{}:base", layout.display()),
        bundle.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", text(&out));
    layout
}

fn registry(dir: &Path, auth: &str) -> (u16, PathBuf, Process) {
    let (port, process) = serve_on_free_port(|port| registry_command(dir, port, auth));
    (port, dir.join("registry-store"), process)
}

/// docker-registry on a port chosen before it starts (its token realm must name jobgate's port).
fn registry_on(dir: &Path, port: u16, auth: &str) -> (PathBuf, Process) {
    let process = Process::spawn(&mut registry_command(dir, port, auth));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "docker-registry does not listen on {port}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (dir.join("registry-store"), process)
}

fn registry_command(dir: &Path, port: u16, auth: &str) -> Command {
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{ level: error }}\nstorage:\n  filesystem: {{ rootdirectory: {} }}\n  delete: {{ enabled: true }}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: jobgate-test\n{auth}",
            dir.join("registry-store").display()
        ),
    )
    .unwrap();
    let mut command = Command::new("docker-registry");
    command.arg("serve").arg(&config).stdout(Stdio::null()).stderr(Stdio::null());
    command
}

struct Skopeo {
    certs: PathBuf,
    policy: PathBuf,
    home: PathBuf,
    /// The registry's host name as the client writes it.
    host: &'static str,
}

impl Skopeo {
    fn new(dir: &Path, gw: &Gateway) -> Skopeo {
        Skopeo::on(dir, gw, "127.0.0.1")
    }

    fn on(dir: &Path, gw: &Gateway, host: &'static str) -> Skopeo {
        let certs = dir.join("skopeo-certs");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::copy(&gw.ca, certs.join("ca.crt")).unwrap();
        let policy = dir.join("policy.json");
        std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        let home = dir.join("skopeo-home");
        std::fs::create_dir_all(&home).unwrap();
        Skopeo { certs, policy, home, host }
    }

    fn run(&self, args: &[&str]) -> Output {
        run(Command::new("skopeo")
            .arg("--policy")
            .arg(&self.policy)
            .args(args)
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.home))
    }

    fn push(&self, layout: &Path, gw: &Gateway, token: &str, name: &str) -> Output {
        let creds = format!("gitlab-ci-token:{token}");
        let dest = format!("docker://{}:{}/{name}", self.host, gw.port);
        self.run(&[
            "copy",
            "--dest-cert-dir",
            self.certs.to_str().unwrap(),
            "--dest-creds",
            &creds,
            &format!("oci:{}:base", layout.display()),
            &dest,
        ])
    }

    fn pull(&self, gw: &Gateway, token: &str, name: &str, into: &Path) -> Output {
        let creds = format!("gitlab-ci-token:{token}");
        let src = format!("docker://{}:{}/{name}", self.host, gw.port);
        self.run(&[
            "copy",
            "--src-cert-dir",
            self.certs.to_str().unwrap(),
            "--src-creds",
            &creds,
            &src,
            &format!("oci:{}:pulled", into.display()),
        ])
    }

    fn digest(&self, gw: &Gateway, token: &str, name: &str) -> String {
        let creds = format!("gitlab-ci-token:{token}");
        let out = self.run(&[
            "inspect",
            "--cert-dir",
            self.certs.to_str().unwrap(),
            "--creds",
            &creds,
            "--format",
            "{{.Digest}}",
            &format!("docker://{}:{}/{name}", self.host, gw.port),
        ]);
        assert!(out.status.success(), "inspect {name}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn gateway(dir: &Path, registry_port: u16, credentials: &str) -> Gateway {
    let keys = dir.join("keys");
    jobgate::tools::generate::registry_key(&keys).unwrap();
    let upstreams = format!("git: {{ url: 'http://127.0.0.1:1' }}\nregistry: {{ url: 'http://127.0.0.1:{registry_port}', credentials: {credentials} }}");
    Gateway::start_upstreams(
        dir,
        &upstreams,
        POLICY,
        "registry_auth: { signing_key: keys/registry-key.pem, issuer: jobgate, service: container_registry }",
    )
}

fn scenario(dir: &Path, gw: &Gateway, store: &Path) {
    scenario_on(dir, gw, store, "127.0.0.1");
}

/// Push, refused push, admitted pull with the same digest, refused pull, refused mount — with the
/// registry written as `host`.
fn scenario_on(dir: &Path, gw: &Gateway, store: &Path, host: &'static str) {
    let layout = image(dir);
    let skopeo = Skopeo::on(dir, gw, host);
    let (app, lib, other) =
        (gw.token("acme/app", 42, false), gw.token("acme/lib", 43, false), gw.token("acme/other", 45, false));

    let out = skopeo.push(&layout, gw, &app, "acme/app/img:1");
    assert!(out.status.success(), "own project pushes: {}", text(&out));
    let pushed = skopeo.digest(gw, &app, "acme/app/img:1");

    let out = skopeo.push(&layout, gw, &lib, "acme/app/img:2");
    assert!(!out.status.success(), "another project's push is denied");
    assert!(
        !store.join("docker/registry/v2/repositories/acme/app/img/_manifests/tags/2").exists(),
        "nothing appears in the registry"
    );

    let pulled_dir = dir.join("pulled");
    let out = skopeo.pull(gw, &lib, "acme/app/img:1", &pulled_dir);
    assert!(out.status.success(), "an admitted project pulls: {}", text(&out));
    assert_eq!(skopeo.digest(gw, &lib, "acme/app/img:1"), pushed, "the digest of the pushed-then-pulled image matches");

    let out = skopeo.pull(gw, &other, "acme/app/img:1", &dir.join("refused"));
    assert!(!out.status.success(), "a project that is not admitted cannot pull");

    // A cross-repository mount from a project acme/lib may not read: denied, not downgraded.
    let mount = format!("https://{host}:{}/v2/acme/lib/img/blobs/uploads/?mount=sha256:0000000000000000000000000000000000000000000000000000000000000000&from=acme/secret/img", gw.port);
    let (status, body) = curl(gw, &["-X", "POST", "-u", &format!("gitlab-ci-token:{lib}"), &mount]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("DENIED") && body.contains("not_in_allowlist"), "{body}");
}

#[test]
fn skopeo_through_jobgate_to_an_open_registry() {
    let dir = tempfile::tempdir().unwrap();
    let (port, store, _registry) = registry(dir.path(), "");
    let gw = gateway(dir.path(), port, "strip");
    scenario(dir.path(), &gw, &store);
    let (status, body) =
        curl(&gw, &["-u", &format!("gitlab-ci-token:{}", gw.token("acme/app", 42, false)), &gw.url("/v2/_catalog")]);
    assert_eq!(status, 403, "the catalog is denied to jobs: {body}");
    let (status, jwks) = curl(&gw, &[&gw.url("/-/jwks")]);
    assert!(status == 200 && jwks.contains("\"kty\":\"RSA\""), "{jwks}");
}

#[test]
fn skopeo_through_jobgate_to_a_token_auth_registry_that_checks_jobgates_tokens() {
    let dir = tempfile::tempdir().unwrap();
    // The registry trusts jobgate's registry key; the key is made before either starts.
    jobgate::tools::generate::registry_key(&dir.path().join("keys")).unwrap();
    let gw_port_hint = "https://127.0.0.1/jwt/auth";
    let auth = format!(
        "auth:\n  token:\n    realm: {gw_port_hint}\n    service: container_registry\n    issuer: jobgate\n    rootcertbundle: {}\n",
        dir.path().join("keys/registry-cert.pem").display()
    );
    let (port, store, _registry) = registry(dir.path(), &auth);
    let gw = gateway_keeping_key(dir.path(), port);
    scenario(dir.path(), &gw, &store);
}

#[test]
fn skopeo_on_the_registry_host_while_v2_on_the_gitlab_host_goes_to_gitlab() {
    let dir = tempfile::tempdir().unwrap();
    let (port, store, _registry) = registry(dir.path(), "");
    jobgate::tools::generate::registry_key(&dir.path().join("keys")).unwrap();
    let gitlab = common::echo_upstream();
    let upstreams = format!("git: {{ url: 'http://127.0.0.1:{gitlab}' }}\nregistry: {{ url: 'http://127.0.0.1:{port}', credentials: strip, non_job: reject }}");
    // The registry (open: it checks nothing itself) takes only decided job traffic; the rest of the
    // GitLab host passes. The registry host is localhost, the GitLab host 127.0.0.1 (both on jobgate's certificate).
    let extra = "registry_auth: { signing_key: keys/registry-key.pem, issuer: jobgate, service: container_registry }\nnon_job: passthrough\nhosts: { gitlab: ['127.0.0.1'], registry: [localhost] }";
    let gw = Gateway::start_upstreams(dir.path(), &upstreams, POLICY, extra);
    scenario_on(dir.path(), &gw, &store, "localhost");
    // `/v2/` on the GitLab host is GitLab's (the echo answers), not the registry.
    let (status, body) = curl(&gw, &[&gw.url("/v2/")]);
    assert!(status == 200 && body.contains("\"path\": \"/v2/\""), "{body}");
}

/// As `gateway`, reusing the registry key the registry already trusts.
fn gateway_keeping_key(dir: &Path, registry_port: u16) -> Gateway {
    let upstreams = format!("git: {{ url: 'http://127.0.0.1:1' }}\nregistry: {{ url: 'http://127.0.0.1:{registry_port}', credentials: passthrough }}");
    Gateway::start_upstreams(
        dir,
        &upstreams,
        POLICY,
        "registry_auth: { signing_key: keys/registry-key.pem, issuer: jobgate, service: container_registry }",
    )
}

#[test]
fn skopeo_with_an_unmodified_pipelines_ci_job_token() {
    use common::gitlab::{GitLab, Job};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, store, _registry) = registry(d, "");
    let gitlab = GitLab::start();
    let (app, lib) = ("glcbt-64_AppRegistryJob_111111111111", "glcbt-64_LibRegistryJob_222222222222");
    gitlab.add(
        app,
        Job { id: 5200, project_path: "acme/app", project_id: 42, git_ref: "main", tag: false, user: (5, "ann") },
    );
    gitlab.add(
        lib,
        Job { id: 5300, project_path: "acme/lib", project_id: 43, git_ref: "main", tag: false, user: (5, "ann") },
    );
    jobgate::tools::generate::registry_key(&d.join("keys")).unwrap();
    let upstreams = format!(
        "git: {{ url: 'http://127.0.0.1:1' }}\nregistry: {{ url: 'http://127.0.0.1:{port}', credentials: strip }}"
    );
    let registry_auth =
        "registry_auth: { signing_key: keys/registry-key.pem, issuer: jobgate, service: container_registry }";
    let gw =
        Gateway::start_with_gitlab(d, &upstreams, POLICY, &format!("url: '{}'", gitlab.url()), 60, 50, registry_auth);
    let (layout, skopeo) = (image(d), Skopeo::new(d, &gw));
    // `docker login -u gitlab-ci-token -p $CI_JOB_TOKEN`, as the documented pipelines do: the realm
    // asks GitLab who the token is and issues a registry token for what the policy allows.
    let out = skopeo.push(&layout, &gw, app, "acme/app/img:1");
    assert!(out.status.success(), "own project pushes with CI_JOB_TOKEN: {}", text(&out));
    assert!(store.join("docker/registry/v2/repositories/acme/app/img/_manifests/tags/1").exists());
    let out = skopeo.pull(&gw, lib, "acme/app/img:1", &d.join("pulled"));
    assert!(out.status.success(), "an admitted project pulls: {}", text(&out));
    let out = skopeo.push(&layout, &gw, lib, "acme/app/img:2");
    assert!(!out.status.success(), "another project's push is denied");
    assert!(!store.join("docker/registry/v2/repositories/acme/app/img/_manifests/tags/2").exists());
    assert!(
        gitlab.calls() <= 4,
        "GitLab is asked once per token (realm and registry share the answer): {}",
        gitlab.calls()
    );
}

/// The GitLab stand-in, signing registry tokens with a key of its own (`gitlab-registry/`).
fn gitlab_signing_registry_tokens(dir: &Path) -> common::gitlab::GitLab {
    let gitlab = common::gitlab::GitLab::start();
    jobgate::tools::generate::registry_key(&dir.join("gitlab-registry")).unwrap();
    gitlab.sign_registry_tokens(&dir.join("gitlab-registry/registry-key.pem"));
    gitlab
}

/// docker-registry on `port`, trusting only GitLab's registry tokens, its realm GitLab's `/jwt/auth`
/// on the GitLab host (127.0.0.1, which is jobgate).
fn registry_trusting_gitlab(dir: &Path, port: u16, gw: &Gateway) -> (PathBuf, Process) {
    let auth = format!(
        "auth:\n  token:\n    realm: https://127.0.0.1:{}/jwt/auth\n    service: container_registry\n    issuer: {}\n    rootcertbundle: {}\n",
        gw.port,
        common::gitlab::REGISTRY_ISSUER,
        dir.join("gitlab-registry/registry-cert.pem").display()
    );
    registry_on(dir, port, &auth)
}

/// In front of GitLab's registry, which trusts only GitLab's registry tokens: jobgate's realm asks
/// GitLab's `/jwt/auth` with the job's own CI_JOB_TOKEN and only the scopes the policy allows, and
/// people's logins reach GitLab's realm untouched.
#[test]
fn skopeo_through_gitlabs_own_realm_with_the_scopes_narrowed_by_the_policy() {
    use common::gitlab::Job;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gitlab = gitlab_signing_registry_tokens(d);
    let (app, lib) = ("glcbt-64_AppRealmJob_111111111111", "glcbt-64_LibRealmJob_222222222222");
    gitlab.add(
        app,
        Job { id: 6200, project_path: "acme/app", project_id: 42, git_ref: "main", tag: false, user: (5, "ann") },
    );
    gitlab.add(
        lib,
        Job { id: 6300, project_path: "acme/lib", project_id: 43, git_ref: "main", tag: false, user: (5, "ann") },
    );
    gitlab.project(44, "acme/secret");
    for project in [42, 43, 44] {
        gitlab.member(project, 5, 30);
    }
    // GitLab itself would let acme/lib's jobs pull from acme/secret; jobgate's policy does not.
    gitlab.job_token_scope(44, true, false, vec![43], vec![]);
    gitlab.personal_access_token("glpat-ann-personal", (5, "ann"));

    let registry_port = common::free_port();
    let upstreams =
        format!("git: {{ url: '{}' }}\nregistry: {{ url: 'http://127.0.0.1:{registry_port}' }}", gitlab.url());
    let extra = "registry_auth: { tokens: gitlab }\nnon_job: passthrough\nhosts: { gitlab: ['127.0.0.1'], registry: [localhost] }";
    let gw = Gateway::start_with_gitlab(d, &upstreams, POLICY, &format!("url: '{}'", gitlab.url()), 60, 50, extra);
    let (store, _registry) = registry_trusting_gitlab(d, registry_port, &gw);
    let (layout, skopeo) = (image(d), Skopeo::on(d, &gw, "localhost"));
    let tag = |path: &str| store.join(format!("docker/registry/v2/repositories/{path}"));

    let out = skopeo.push(&layout, &gw, app, "acme/app/img:1");
    assert!(out.status.success(), "own project pushes with CI_JOB_TOKEN, GitLab signing: {}", text(&out));
    assert!(tag("acme/app/img/_manifests/tags/1").exists());
    let asked = gitlab.realm_requests();
    assert!(
        asked.iter().any(|(login, scopes)| login == "gitlab-ci-token"
            && scopes.iter().any(|s| s == "repository:acme/app/img:pull,push")),
        "{asked:?}"
    );

    // A person's personal access token goes to GitLab's realm untouched (GitLab decides: Developer pushes).
    let creds = "ann:glpat-ann-personal";
    let dest = format!("docker://localhost:{}/acme/secret/img:1", gw.port);
    let out = skopeo.run(&[
        "copy",
        "--dest-cert-dir",
        skopeo.certs.to_str().unwrap(),
        "--dest-creds",
        creds,
        &format!("oci:{}:base", layout.display()),
        &dest,
    ]);
    assert!(out.status.success(), "a person's push passes through: {}", text(&out));
    assert!(tag("acme/secret/img/_manifests/tags/1").exists());
    assert!(gitlab.realm_requests().iter().any(|(login, _)| login == "ann"), "GitLab's realm saw the person's login");

    let before = gitlab.realm_requests().len();
    let out = skopeo.push(&layout, &gw, lib, "acme/app/img:2");
    assert!(!out.status.success(), "another project's push is denied");
    assert!(!tag("acme/app/img/_manifests/tags/2").exists());
    let out = skopeo.pull(&gw, lib, "acme/app/img:1", &d.join("pulled"));
    assert!(out.status.success(), "an admitted project pulls: {}", text(&out));
    let out = skopeo.pull(&gw, lib, "acme/secret/img:1", &d.join("refused"));
    assert!(!out.status.success(), "the policy does not admit acme/lib to acme/secret, though GitLab would");
    let asked: Vec<String> = gitlab.realm_requests().into_iter().skip(before).flat_map(|(_, scopes)| scopes).collect();
    assert!(asked.iter().any(|s| s == "repository:acme/app/img:pull"), "the pull GitLab was asked for: {asked:?}");
    assert!(
        !asked.iter().any(|s| s.contains("push") || s.contains("acme/secret")),
        "GitLab is asked only for what the policy allows: {asked:?}"
    );

    // The dependency proxy's login is GitLab's to decide: passed with the job's token and no scope.
    let (status, body) = curl(
        &gw,
        &[
            "-u",
            &format!("gitlab-ci-token:{lib}"),
            &gw.url("/jwt/auth?service=dependency_proxy&scope=repository:acme/secret/img:pull"),
        ],
    );
    assert!(status == 200 && body.contains("\"token\""), "{status} {body}");
    let last = gitlab.realm_requests().pop().unwrap();
    assert_eq!(last, ("gitlab-ci-token (dependency_proxy)".to_owned(), Vec::new()));
    // An ID token is no GitLab credential: refused at the realm, GitLab not asked.
    let jwt = gw.token("acme/app", 42, true);
    let (status, body) = curl(
        &gw,
        &[
            "-u",
            &format!("gitlab-ci-token:{jwt}"),
            &gw.url("/jwt/auth?service=container_registry&scope=repository:acme/app/img:pull"),
        ],
    );
    assert!(status == 403 && body.contains("no_gitlab_credential"), "{status} {body}");
    // GitLab refuses what jobgate still believes (its answer for the token is cached): GitLab's 401 is
    // passed on, and the record says GitLab refused.
    gitlab.finish(app);
    let (status, body) = curl(
        &gw,
        &[
            "-u",
            &format!("gitlab-ci-token:{app}"),
            &gw.url("/jwt/auth?service=container_registry&scope=repository:acme/app/img:pull"),
        ],
    );
    assert!(status == 401 && body.contains("UNAUTHORIZED"), "{status} {body}");
    let lines = gw.audit_until(|lines| lines.iter().any(|l| l["reason"] == "gitlab_refused"));
    assert!(lines.iter().any(|l| l["reason"] == "no_gitlab_credential"), "{lines:?}");
    let realm: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["path"] == "/jwt/auth" && l["token_project"] == "acme/app").collect();
    assert!(!realm.is_empty() && realm.iter().all(|l| l["upstream_credential"] == "job_token"), "{realm:?}");
}

/// With `gitlab.admin_token_file`, a registry push the policy grants beyond the job's own project
/// (GitLab's job token pushes only there) is asked of GitLab's realm as the job's user with a
/// `write_registry` impersonation token; a job that proved itself with an ID token pulls with a
/// `read_registry` one. GitLab still checks the user's role.
#[test]
fn gitlabs_realm_as_the_jobs_user_for_what_the_job_token_cannot_do() {
    use common::gitlab::{Job, ADMIN_TOKEN};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gitlab = gitlab_signing_registry_tokens(d);
    let lib = "glcbt-64_LibElevatedJob_333333333333";
    gitlab.add(
        lib,
        Job { id: 6400, project_path: "acme/lib", project_id: 43, git_ref: "main", tag: false, user: (5, "ann") },
    );
    gitlab.project(42, "acme/app");
    for project in [42, 43] {
        gitlab.member(project, 5, 30);
    }
    std::fs::write(d.join("gitlab-admin-token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    let policy = "projects:\n  acme/app:\n    id: 42\n    allow:\n      - { from: acme/lib, scopes: [write_registry] }\n  acme/lib: { id: 43 }\n";
    let registry_port = common::free_port();
    let upstreams =
        format!("git: {{ url: '{}' }}\nregistry: {{ url: 'http://127.0.0.1:{registry_port}' }}", gitlab.url());
    let extra = "registry_auth: { tokens: gitlab }\nnon_job: passthrough\nhosts: { gitlab: ['127.0.0.1'], registry: [localhost] }";
    let fields = format!("url: '{}', admin_token_file: gitlab-admin-token", gitlab.url());
    let gw = Gateway::start_with_gitlab(d, &upstreams, policy, &fields, 60, 50, extra);
    let (store, _registry) = registry_trusting_gitlab(d, registry_port, &gw);
    let (layout, skopeo) = (image(d), Skopeo::on(d, &gw, "localhost"));

    let out = skopeo.push(&layout, &gw, lib, "acme/app/img:1");
    assert!(out.status.success(), "the granted cross-project push goes as ann: {}", text(&out));
    assert!(store.join("docker/registry/v2/repositories/acme/app/img/_manifests/tags/1").exists());
    let minted = gitlab.impersonation_tokens();
    assert!(
        minted.iter().any(|(_, t)| t.user == 5 && t.name == "jobgate-job-6400" && t.scopes == ["write_registry"]),
        "{minted:?}"
    );
    assert!(gitlab.realm_requests().iter().any(|(login, _)| login == "ann"), "GitLab's realm was asked as the user");

    // An ID token is no GitLab credential: the job's user's read_registry token pulls for it.
    let jwt = gw.token_with("acme/lib", 43, true, vec![("user_login".into(), "ann".into())]);
    let out = skopeo.pull(&gw, &jwt, "acme/app/img:1", &d.join("pulled"));
    assert!(out.status.success(), "an ID token's pull through the user's token: {}", text(&out));
    assert!(
        gitlab.impersonation_tokens().iter().any(|(_, t)| t.scopes == ["read_registry"]),
        "{:?}",
        gitlab.impersonation_tokens()
    );
}

#[test]
fn oras_pushes_and_pulls_an_artifact_through_jobgate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, _store, _registry) = registry(d, "");
    let gw = gateway(d, port, "strip");
    let artifact = d.join("artifact.txt");
    std::fs::write(&artifact, "an artifact through jobgate\n").unwrap();
    let python = std::env::var("PYTHON_TOOLS")
        .map_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin"), PathBuf::from)
        .join("python");
    let roundtrip = |token: &str, target: &str, out: &Path| {
        run(Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oras_roundtrip.py"))
            .args([&format!("127.0.0.1:{}", gw.port), target])
            .arg(&artifact)
            .arg(out)
            .args([token, gw.ca.to_str().unwrap()])
            .env("REQUESTS_CA_BUNDLE", &gw.ca)
            .env("HOME", d))
    };
    let out = roundtrip(&gw.token("acme/app", 42, false), "acme/app/artifact:1", &d.join("pulled"));
    assert!(out.status.success(), "oras push + pull: {}", text(&out));
    assert_eq!(std::fs::read_to_string(d.join("pulled/artifact.txt")).unwrap(), "an artifact through jobgate\n");
    let out = roundtrip(&gw.token("acme/lib", 43, false), "acme/app/artifact:2", &d.join("refused"));
    assert!(!out.status.success(), "another project's push is denied: {}", text(&out));
}

/// jobgate's own image (`deploy/image/build.sh`, buildah from scratch): unpacked, it runs as its
/// non-root user with no shell beside it, `check` accepts a config inside it, and skopeo pushes it
/// through jobgate to the registry.
#[test]
fn the_jobgate_image_runs_from_its_unpacked_root_and_is_pushed_through_jobgate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let layout = d.join("image");
    let version = env!("CARGO_PKG_VERSION");
    let out = run(Command::new("deploy/image/build.sh")
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_jobgate"))
        .arg("--out")
        .arg(&layout));
    assert!(out.status.success(), "build.sh: {}", text(&out));
    let bundle = d.join("bundle");
    let out =
        run(Command::new("umoci").args(["unpack", "--image", &format!("{}:{version}", layout.display())]).arg(&bundle));
    assert!(out.status.success(), "umoci unpack: {}", text(&out));
    let rootfs = bundle.join("rootfs");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (config["process"]["user"]["uid"].as_u64(), config["process"]["user"]["gid"].as_u64()),
        (Some(10001), Some(10001)),
        "{config}"
    );
    assert_eq!(config["process"]["args"][0], "/usr/local/bin/jobgate", "{config}");
    for absent in ["bin/sh", "usr/bin", "bin"] {
        assert!(!rootfs.join(absent).exists(), "{absent} is in the image");
    }
    assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());

    let inside = |args: &[&str]| {
        run(Command::new("chroot").arg("--userspec=10001:10001").arg(&rootfs).arg("/usr/local/bin/jobgate").args(args))
    };
    let out = inside(&["--version"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("jobgate {version}"), "{}", text(&out));
    for args in [["certs", "generate", "--out", "/tmp/t/certs"], ["keys", "generate", "--out", "/tmp/t/keys"]] {
        let out = inside(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    std::fs::create_dir_all(rootfs.join("tmp/t/policies")).unwrap();
    std::fs::write(rootfs.join("tmp/t/policies/p.yaml"), POLICY).unwrap();
    let config = "listen: { public: 127.0.0.1:0, admin: 127.0.0.1:0 }
tls: { cert: certs/server.pem, key: certs/server-key.pem }
issuers:
  - { name: ci, iss: https://gitlab.example.com, audiences: [jobgate], jwks_file: keys/jwks.json }
policy_dir: policies
upstreams:
  git: { url: 'http://gitlab-webservice:8181' }
";
    std::fs::write(rootfs.join("tmp/t/jobgate.yaml"), config).unwrap();
    let out = inside(&["check", "--config", "/tmp/t/jobgate.yaml"]);
    assert!(out.status.success() && text(&out).contains("ok: /tmp/t/jobgate.yaml"), "{}", text(&out));

    let (port, store, _registry) = registry(d, "");
    let gw = gateway(d, port, "strip");
    let skopeo = Skopeo::new(d, &gw);
    let token = gw.token("acme/app", 42, false);
    let creds = format!("gitlab-ci-token:{token}");
    let dest = format!("docker://127.0.0.1:{}/acme/app/jobgate:{version}", gw.port);
    let out = skopeo.run(&[
        "copy",
        "--dest-cert-dir",
        skopeo.certs.to_str().unwrap(),
        "--dest-creds",
        &creds,
        &format!("oci:{}:{version}", layout.display()),
        &dest,
    ]);
    assert!(out.status.success(), "push: {}", text(&out));
    assert!(store.join(format!("docker/registry/v2/repositories/acme/app/jobgate/_manifests/tags/{version}")).exists());
    assert!(skopeo.digest(&gw, &token, &format!("acme/app/jobgate:{version}")).starts_with("sha256:"));
}
