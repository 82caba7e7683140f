//! Package registries through jobgate with the real clients: npm against verdaccio, twine and pip
//! against pypiserver, mvn against an nginx WebDAV repository. For each: the job's own project
//! publishes and installs, another project's write is denied with a message the client shows and
//! nothing is stored upstream, an admitted project reads, a project that is not admitted cannot.
//! Servers and clients are installed by scripts/test.sh; a missing one fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::gitlab::Tokens;
use common::{run, serve_on_free_port, Gateway, Process};

/// acme/app (id 42) publishes to its own registry; acme/lib (43) may read it; acme/other (44) nothing.
const POLICY: &str = "
projects:
  acme/app:
    id: 42
    allow:
      - { from: acme/app, scopes: [write_package_registry] }
      - { from: acme/lib }
  acme/lib: { id: 43 }
";

/// A tool installed by scripts/test.sh (absolute, since the tests change directories).
fn tool(env: &str, default: &str) -> PathBuf {
    std::env::var(env).map_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(default), PathBuf::from)
}

fn gateway(dir: &Path, packages: &str) -> Gateway {
    Gateway::start_upstreams(dir, &upstreams(packages), POLICY, "")
}

const PROJECTS: [(&str, u64); 3] = [("acme/app", 42), ("acme/lib", 43), ("acme/other", 44)];

/// The `upstreams:` of these tests: packages go to `packages`' fields.
fn upstreams(packages: &str) -> String {
    format!("git: {{ url: 'http://127.0.0.1:1' }}\npackages: {{ {packages} }}")
}

fn text(out: &Output) -> String {
    common::output_text(out)
}

// ---------------------------------------------------------------- npm + verdaccio

struct Npm<'a> {
    gw: &'a Gateway,
    home: PathBuf,
    registry: String,
}

impl Npm<'_> {
    fn new<'a>(gw: &'a Gateway, dir: &Path, token: &str) -> Npm<'a> {
        let home = dir.join(format!("npm-home-{}", &token[token.len() - 8..]));
        std::fs::create_dir_all(&home).unwrap();
        let registry = format!("https://127.0.0.1:{}/api/v4/projects/42/packages/npm/", gw.port);
        let auth = registry.trim_start_matches("https:");
        std::fs::write(home.join(".npmrc"), format!("registry={registry}\n{auth}:_authToken={token}\ncafile={}\naudit=false\nfund=false\nupdate-notifier=false\n", gw.ca.display())).unwrap();
        Npm { gw, home, registry }
    }

    fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        run(Command::new("npm")
            .args(args)
            .current_dir(cwd)
            .env("HOME", &self.home)
            .env("npm_config_userconfig", self.home.join(".npmrc"))
            .env("npm_config_cache", self.home.join("cache"))
            .env("NODE_EXTRA_CA_CERTS", &self.gw.ca))
    }
}

fn package(dir: &Path, name: &str, version: &str) -> PathBuf {
    let pkg = dir.join(format!("{name}-{version}"));
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("package.json"), format!(r#"{{"name":"{name}","version":"{version}","main":"index.js"}}"#))
        .unwrap();
    std::fs::write(pkg.join("index.js"), format!("module.exports = '{name}@{version}';\n")).unwrap();
    pkg
}

#[test]
fn npm_publish_and_install_through_jobgate_to_verdaccio() {
    npm_scenario(&Tokens::Jwt);
}

#[test]
fn npm_with_an_unmodified_pipelines_ci_job_token() {
    npm_scenario(&Tokens::gitlab(&PROJECTS));
}

fn npm_scenario(tokens: &Tokens) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let verdaccio = tool("VERDACCIO", "target/tools/npm/node_modules/.bin/verdaccio");
    let (port, _verdaccio) = serve_on_free_port(|port| {
        std::fs::write(
            d.join("verdaccio.yaml"),
            format!(
                "storage: {}\nuplinks: {{}}\npackages:\n  '**': {{ access: $all, publish: $all, unpublish: $all }}\nlisten: 127.0.0.1:{port}\nurl_prefix: /api/v4/projects/42/packages/npm/\nlog: {{ type: stdout, format: pretty, level: warn }}\n",
                d.join("storage").display()
            ),
        )
        .unwrap();
        let mut command = Command::new(&verdaccio);
        command.arg("--config").arg(d.join("verdaccio.yaml")).stdout(Stdio::null()).stderr(Stdio::null());
        command
    });
    let gw = tokens.gateway(
        d,
        &upstreams(&format!(
            "url: 'http://127.0.0.1:{port}', credentials: strip, strip_prefix: /api/v4/projects/*/packages/npm"
        )),
        POLICY,
        "",
    );

    let app = Npm::new(&gw, d, &tokens.token(&gw, "acme/app", 42, false));
    let out = app.run(&package(d, "jobgate-e2e-pkg", "1.0.0"), &["publish"]);
    assert!(out.status.success(), "own project publishes: {}", text(&out));

    let lib = Npm::new(&gw, d, &tokens.token(&gw, "acme/lib", 43, false));
    let out = lib.run(&package(d, "jobgate-e2e-pkg", "2.0.0"), &["publish"]);
    assert!(!out.status.success());
    let shown = text(&out);
    assert!(
        shown.contains("403") && shown.contains("write_package_registry") && shown.contains("scope_not_granted"),
        "npm shows why: {shown}"
    );
    let stored = std::fs::read_to_string(d.join("storage/jobgate-e2e-pkg/package.json")).unwrap();
    assert!(stored.contains("1.0.0") && !stored.contains("2.0.0"), "nothing stored upstream: {stored}");

    let consumer = d.join("consumer");
    std::fs::create_dir_all(&consumer).unwrap();
    std::fs::write(consumer.join("package.json"), r#"{"name":"consumer","version":"0.0.0","private":true}"#).unwrap();
    let out = lib.run(&consumer, &["install", "jobgate-e2e-pkg@1.0.0"]);
    assert!(out.status.success(), "an admitted project installs: {}", text(&out));
    let installed = std::fs::read_to_string(consumer.join("node_modules/jobgate-e2e-pkg/index.js")).unwrap();
    assert_eq!(installed, "module.exports = 'jobgate-e2e-pkg@1.0.0';\n");

    let other = Npm::new(&gw, d, &tokens.token(&gw, "acme/other", 44, false));
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("package.json"), r#"{"name":"elsewhere","version":"0.0.0","private":true}"#).unwrap();
    let out = other.run(&elsewhere, &["install", "jobgate-e2e-pkg@1.0.0"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not_in_allowlist"), "{}", text(&out));
    assert!(app.registry.contains("/packages/npm/"));
}

// ---------------------------------------------------------------- twine / pip + pypiserver

fn python_tools() -> PathBuf {
    tool("PYTHON_TOOLS", "target/tools/venv/bin")
}

/// A wheel of `name` `version`, built offline with the venv's setuptools.
fn wheel(dir: &Path, name: &str, version: &str) -> PathBuf {
    let src = dir.join(format!("{name}-{version}-src"));
    std::fs::create_dir_all(src.join(name.replace('-', "_"))).unwrap();
    std::fs::write(src.join(name.replace('-', "_")).join("__init__.py"), format!("VERSION = '{version}'\n")).unwrap();
    std::fs::write(
        src.join("setup.py"),
        format!(
            "from setuptools import setup\nsetup(name='{name}', version='{version}', packages=['{}'])\n",
            name.replace('-', "_")
        ),
    )
    .unwrap();
    let out = run(Command::new(python_tools().join("python"))
        .args(["-m", "build", "--wheel", "--no-isolation", "--outdir"])
        .arg(dir.join("dist"))
        .current_dir(&src));
    assert!(out.status.success(), "building the wheel: {}", text(&out));
    dir.join("dist").join(format!("{}-{version}-py3-none-any.whl", name.replace('-', "_")))
}

fn python_env<'a>(command: &'a mut Command, gw: &Gateway) -> &'a mut Command {
    command
        .env("REQUESTS_CA_BUNDLE", &gw.ca)
        .env("PIP_CERT", &gw.ca)
        .env("PIP_FIND_LINKS", "")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env_remove("PIP_INDEX_URL")
        .env_remove("PIP_EXTRA_INDEX_URL")
}

#[test]
fn twine_upload_and_pip_install_through_jobgate_to_pypiserver() {
    python_scenario(&Tokens::Jwt);
}

#[test]
fn twine_and_pip_with_an_unmodified_pipelines_ci_job_token() {
    python_scenario(&Tokens::gitlab(&PROJECTS));
}

fn python_scenario(tokens: &Tokens) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let packages = d.join("pypi-packages");
    std::fs::create_dir_all(&packages).unwrap();
    let (port, _pypi) = serve_on_free_port(|port| {
        let mut command = Command::new(python_tools().join("python"));
        command
            .arg("tests/fixtures/pypi_mounted.py")
            .arg(&packages)
            .args([&port.to_string(), "/api/v4/projects/42/packages/pypi"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    });
    let gw = tokens.gateway(d, &upstreams(&format!("url: 'http://127.0.0.1:{port}', credentials: strip")), POLICY, "");
    let upload_url = format!("https://127.0.0.1:{}/api/v4/projects/42/packages/pypi", gw.port);
    let twine = |token: &str, wheel: &Path| {
        run(python_env(&mut Command::new(python_tools().join("twine")), &gw)
            .args([
                "upload",
                "--non-interactive",
                "--disable-progress-bar",
                "--repository-url",
                &upload_url,
                "-u",
                "gitlab-ci-token",
                "-p",
                token,
            ])
            .arg(wheel))
    };

    let out = twine(&tokens.token(&gw, "acme/app", 42, false), &wheel(d, "jobgate-e2e", "1.0.0"));
    assert!(out.status.success(), "own project uploads: {}", text(&out));
    let out = twine(&tokens.token(&gw, "acme/lib", 43, false), &wheel(d, "jobgate-e2e", "2.0.0"));
    assert!(!out.status.success());
    let shown = text(&out);
    assert!(shown.contains("403") && shown.contains("scope_not_granted"), "twine shows why: {shown}");
    let stored: Vec<String> =
        std::fs::read_dir(&packages).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(stored, vec!["jobgate_e2e-1.0.0-py3-none-any.whl".to_owned()], "nothing else stored upstream");

    let pip = |token: &str, target: &Path| {
        let index =
            format!("https://gitlab-ci-token:{token}@127.0.0.1:{}/api/v4/projects/42/packages/pypi/simple", gw.port);
        run(python_env(&mut Command::new(python_tools().join("pip")), &gw)
            .args(["install", "--no-cache-dir", "--no-deps", "--index-url", &index, "--target"])
            .arg(target)
            .arg("jobgate-e2e==1.0.0"))
    };
    let out = pip(&tokens.token(&gw, "acme/lib", 43, false), &d.join("site-lib"));
    assert!(out.status.success(), "an admitted project installs: {}", text(&out));
    assert_eq!(std::fs::read_to_string(d.join("site-lib/jobgate_e2e/__init__.py")).unwrap(), "VERSION = '1.0.0'\n");
    // pip reports a refused index as "no matching distribution" (the 403 shows with -v); the audit
    // line says why.
    let out = pip(&tokens.token(&gw, "acme/other", 44, false), &d.join("site-other"));
    assert!(!out.status.success() && text(&out).contains("No matching distribution"), "{}", text(&out));
    let refused = |l: &serde_json::Value| l["job_id"] == 1044 && l["reason"] == "not_in_allowlist";
    assert!(gw.audit_until(|lines| lines.iter().any(refused)).iter().any(refused));
}

// ---------------------------------------------------------------- mvn + generic packages + nginx (WebDAV PUT)

/// nginx storing PUTs below `root`, so paths keep GitLab's layout (`/api/v4/projects/42/packages/...`).
fn nginx(dir: &Path) -> (u16, PathBuf, Process) {
    let root = dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(dir.join("nginx-tmp")).unwrap();
    let conf = dir.join("nginx.conf");
    let (port, process) = serve_on_free_port(|port| {
        std::fs::write(
            &conf,
            format!(
                "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/nginx-tmp;\n  server {{\n    listen 127.0.0.1:{port};\n    root {root};\n    location / {{ dav_methods PUT; create_full_put_path on; client_max_body_size 100m; }}\n  }}\n}}\n",
                d = dir.display(),
                root = root.display()
            ),
        )
        .unwrap();
        let mut command = Command::new("nginx");
        command.arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null());
        command
    });
    (port, root, process)
}

fn mvn_deploy(dir: &Path, gw: &Gateway, token: &str, version: &str) -> Output {
    let project = dir.join(format!("maven-{version}"));
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("pom.xml"),
        format!(
            "<project xmlns=\"http://maven.apache.org/POM/4.0.0\"><modelVersion>4.0.0</modelVersion><groupId>com.example.jobgate</groupId><artifactId>e2e</artifactId><version>{version}</version><packaging>pom</packaging><distributionManagement><repository><id>gitlab</id><url>https://127.0.0.1:{}/api/v4/projects/42/packages/maven</url></repository></distributionManagement></project>",
            gw.port
        ),
    )
    .unwrap();
    // GitLab's documented CI setup: the job token in a `Job-Token` header; Debian's plugins as the only repository.
    let settings = project.join("settings.xml");
    std::fs::write(
        &settings,
        format!(
            "<settings><localRepository>{}</localRepository><mirrors><mirror><id>debian</id><mirrorOf>*</mirrorOf><url>file:///usr/share/maven-repo</url></mirror></mirrors><servers><server><id>gitlab</id><configuration><httpHeaders><property><name>Job-Token</name><value>{token}</value></property></httpHeaders></configuration></server></servers></settings>",
            dir.join("m2").display()
        ),
    )
    .unwrap();
    let truststore = dir.join("trust.p12");
    if !truststore.exists() {
        let out = run(Command::new("keytool")
            .args([
                "-importcert",
                "-noprompt",
                "-alias",
                "jobgate-ca",
                "-storetype",
                "PKCS12",
                "-storepass",
                "changeit",
                "-file",
            ])
            .arg(&gw.ca)
            .arg("-keystore")
            .arg(&truststore));
        assert!(out.status.success(), "{}", text(&out));
    }
    run(Command::new("mvn")
        .args(["-B", "-s"])
        .arg(&settings)
        .arg("deploy")
        .current_dir(&project)
        .env("MAVEN_OPTS", format!("-Djavax.net.ssl.trustStore={} -Djavax.net.ssl.trustStorePassword=changeit -Djavax.net.ssl.trustStoreType=PKCS12", truststore.display())))
}

#[test]
fn mvn_deploy_and_generic_packages_through_jobgate_to_a_webdav_repository() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, root, _nginx) = nginx(d);
    let gw = gateway(d, &format!("url: 'http://127.0.0.1:{port}', credentials: strip"));
    let (app, lib, other) =
        (gw.token("acme/app", 42, false), gw.token("acme/lib", 43, false), gw.token("acme/other", 44, false));
    let maven = root.join("api/v4/projects/42/packages/maven/com/example/jobgate/e2e");

    let out = mvn_deploy(d, &gw, &app, "1.0.0");
    assert!(out.status.success(), "own project deploys: {}", text(&out));
    assert!(maven.join("1.0.0/e2e-1.0.0.pom").exists());
    let out = mvn_deploy(d, &gw, &lib, "2.0.0");
    assert!(!out.status.success());
    let shown = text(&out);
    assert!(shown.contains("403") && shown.contains("scope_not_granted"), "Maven's status line says why: {shown}");
    assert!(!maven.join("2.0.0").exists(), "nothing stored upstream");

    let pom_url = gw.url("/api/v4/projects/42/packages/maven/com/example/jobgate/e2e/1.0.0/e2e-1.0.0.pom");
    let (status, body) = common::curl(&gw, &["-H", &format!("Job-Token: {lib}"), &pom_url]);
    assert_eq!(status, 200, "an admitted project downloads: {body}");
    assert!(body.ends_with(&std::fs::read_to_string(maven.join("1.0.0/e2e-1.0.0.pom")).unwrap()));
    assert_eq!(common::curl(&gw, &["-H", &format!("Job-Token: {other}"), &pom_url]).0, 403);

    // Generic packages with curl: JOB-TOKEN header, PUT to publish.
    let file = d.join("tool.bin");
    std::fs::write(&file, b"generic package bytes").unwrap();
    let generic = gw.url("/api/v4/projects/42/packages/generic/tool/1.0.0/tool.bin");
    let put = |token: &str| {
        common::curl(&gw, &["-H", &format!("JOB-TOKEN: {token}"), "--upload-file", file.to_str().unwrap(), &generic])
    };
    assert!(matches!(put(&app).0, 200 | 201 | 204), "own project publishes");
    let (status, body) = put(&lib);
    assert_eq!(status, 403);
    assert!(body.contains("\"reason\":\"scope_not_granted\""), "{body}");
    let (status, body) = common::curl(&gw, &["-H", &format!("JOB-TOKEN: {lib}"), &generic]);
    assert_eq!(status, 200);
    assert!(body.ends_with("generic package bytes"));
}

/// A stopped server leaves no process behind: nginx's workers go with their master's process group.
#[test]
fn a_stopped_nginx_leaves_no_worker_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (_port, _root, process) = nginx(dir.path());
    let group = process.child.id();
    assert!(
        common::group_members(group).len() >= 2,
        "nginx runs a master and a worker: {:?}",
        common::group_members(group)
    );
    drop(process);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !common::group_members(group).is_empty() {
        assert!(std::time::Instant::now() < deadline, "left behind: {:?}", common::group_members(group));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
