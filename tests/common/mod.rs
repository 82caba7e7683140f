//! Shared helpers for the end-to-end tests: a real jobgate process, a real git http-backend under
//! lighttpd, the real git client, and a dev issuer. Missing tools are failures, never skips: the
//! test script (`scripts/test.sh`) installs them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jobgate::token::mint::{JobClaims, Signer};
use jobgate::token::Alg;

pub mod browser;
pub mod gitlab;
pub mod net;

/// Polls `done` until it holds (every 20 ms), failing the test with `what` after `patience`: the one
/// way tests wait for something to happen (never a fixed sleep).
pub fn eventually(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {patience:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub const ISSUER: &str = "https://gitlab.test";
pub const AUDIENCE: &str = "jobgate";

/// Three projects: acme/app admits acme/lib, which may push to it from a protected ref; acme/secret
/// admits nobody.
pub const POLICY: &str = "
projects:
  acme/app:
    id: 42
    allow:
      - { from: acme/lib, scopes: [write_repository], refs: protected }
  acme/lib: { id: 43 }
  acme/secret: { id: 44 }
";

/// A child process in a process group of its own, the whole group killed when dropped: servers that
/// fork (nginx's workers, lighttpd's CGI children, gunicorn's workers) leave nothing behind.
pub struct Process {
    pub child: Child,
}

impl Process {
    /// Spawns `command` as the leader of a new process group.
    pub fn spawn(command: &mut Command) -> Process {
        use std::os::unix::process::CommandExt;
        let child = command.process_group(0).spawn();
        Process {
            child: child.unwrap_or_else(|e| {
                panic!("cannot start {:?}: {e} (run scripts/test.sh to install it)", command.get_program())
            }),
        }
    }
}

/// The processes in process group `group` (from `/proc/*/stat`, whose 5th field is the group).
pub fn group_members(group: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces, so split after its closing paren.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(group) && fields.first() != Some(&"Z") {
            members.push(pid);
        }
    }
    members
}

impl Drop for Process {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command's stdout and stderr, for assertion messages.
pub fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs a command and returns its output; panics with stderr when it cannot start.
pub fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e} (run scripts/test.sh to install tools)"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts a server on a fresh loopback port: `start(port)` writes its config and returns the command,
/// spawned in a process group of its own ([`Process`]). The port
/// from [`free_port`] is free only when it is read; if another process binds it first, the server
/// exits (or the port answers for someone else), so the server must still be running once the port
/// answers — else a new port is tried.
pub fn serve_on_free_port(mut start: impl FnMut(u16) -> Command) -> (u16, Process) {
    for _ in 0..5 {
        let port = free_port();
        let mut process = Process::spawn(&mut start(port));
        let deadline = Instant::now() + Duration::from_secs(20);
        let exited = |p: &mut Process| p.child.try_wait().ok().flatten().is_some();
        while !exited(&mut process) && std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nothing listens on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        // A server that lost the port exits at once; one that is still running a moment later owns it.
        std::thread::sleep(Duration::from_millis(100));
        if !exited(&mut process) {
            return (port, process);
        }
    }
    panic!("the server exited on five ports in a row (see its log)");
}

/// `git http-backend` under lighttpd (mod_cgi), serving bare repositories below `root`, on a TCP port
/// and on a Unix socket.
pub struct GitServer {
    pub port: u16,
    pub socket: PathBuf,
    pub root: PathBuf,
    log: PathBuf,
    _process: Process,
}

impl Drop for GitServer {
    /// A failing test shows what lighttpd logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("lighttpd error log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

impl GitServer {
    pub fn start(dir: &Path) -> GitServer {
        let root = dir.join("repos");
        std::fs::create_dir_all(&root).unwrap();
        let exec_path = String::from_utf8(run(Command::new("git").arg("--exec-path")).stdout).unwrap();
        let backend = Path::new(exec_path.trim()).join("git-http-backend");
        assert!(backend.exists(), "{} is missing", backend.display());
        let (port, process) = serve_on_free_port(|port| {
            let conf = dir.join("lighttpd.conf");
            std::fs::write(
                &conf,
                format!(
                    r#"server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.modules = ("mod_alias", "mod_cgi", "mod_setenv")
server.errorlog = "{dir}/lighttpd-error.log"
server.upload-dirs = ("{dir}")
server.max-request-size = 2097152
alias.url = ( "/" => "{backend}/" )
cgi.assign = ( "" => "" )
setenv.set-environment = ( "GIT_PROJECT_ROOT" => "{root}", "GIT_HTTP_EXPORT_ALL" => "1" )
$SERVER["socket"] == "{dir}/git.sock" {{ }}
"#,
                    root = root.display(),
                    dir = dir.display(),
                    backend = backend.display(),
                ),
            )
            .unwrap();
            let mut command = Command::new("lighttpd");
            command.arg("-D").arg("-f").arg(&conf).stdout(Stdio::null());
            command
        });
        GitServer { port, socket: dir.join("git.sock"), root, log: dir.join("lighttpd-error.log"), _process: process }
    }

    /// Creates a bare repository `project.git` with one commit on `main`; returns its path.
    pub fn create_repo(&self, project: &str) -> PathBuf {
        let bare = self.root.join(format!("{project}.git"));
        std::fs::create_dir_all(&bare).unwrap();
        git_ok(&bare, &["init", "--quiet", "--bare", "-b", "main"]);
        git_ok(&bare, &["config", "http.receivepack", "true"]);
        let work = self.root.join(".seed").join(project);
        std::fs::create_dir_all(&work).unwrap();
        git_ok(&work, &["init", "--quiet", "-b", "main"]);
        std::fs::write(work.join("README.md"), format!("# {project}\n")).unwrap();
        git_ok(&work, &["add", "README.md"]);
        git_ok(&work, &["commit", "--quiet", "-m", "initial"]);
        git_ok(&work, &["push", "--quiet", bare.to_str().unwrap(), "main"]);
        bare
    }
}

/// A git command with an isolated HOME and identity, trusting `ca` only when given.
pub fn git_command(cwd: &Path, ca: Option<&Path>) -> Command {
    let mut command = Command::new("git");
    let home = std::env::temp_dir().join("jobgate-test-home");
    std::fs::create_dir_all(&home).unwrap();
    command
        .current_dir(cwd)
        .env("HOME", &home)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "ci")
        .env("GIT_AUTHOR_EMAIL", "ci@example.com")
        .env("GIT_COMMITTER_NAME", "ci")
        .env("GIT_COMMITTER_EMAIL", "ci@example.com");
    if let Some(ca) = ca {
        command.env("GIT_SSL_CAINFO", ca);
    }
    command
}

pub fn git_ok(cwd: &Path, args: &[&str]) -> String {
    let out = run(git_command(cwd, None).args(args));
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A jobgate process with its own certificates, issuer key, policy and config.
pub struct Gateway {
    pub dir: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub ca: PathBuf,
    pub audit: PathBuf,
    pub signer: Signer,
    pub kid: String,
    process: Process,
}

impl Gateway {
    /// Starts jobgate in `dir` with `policy` in front of `upstream` (an `http://` URL).
    pub fn start(dir: &Path, upstream: &str, policy: &str) -> Gateway {
        Gateway::start_with(dir, &format!("url: '{upstream}'"), policy, "")
    }

    /// As [`Gateway::start`], with the git upstream's YAML fields given whole and more top-level config.
    pub fn start_with(dir: &Path, upstream_fields: &str, policy: &str, extra_config: &str) -> Gateway {
        let issuer = format!("name: ci, iss: '{ISSUER}', audiences: [{AUDIENCE}], jwks_file: keys/jwks.json");
        Gateway::start_full(dir, &format!("git: {{ {upstream_fields} }}"), &issuer, policy, extra_config)
    }

    /// The signing key a gateway in `dir` will use (generated once): lets a test publish its JWKS
    /// (for example on an HTTPS server) before the gateway starts.
    pub fn issuer_key(dir: &Path) -> (Signer, String) {
        let keys = dir.join("keys");
        if !keys.join("signing-key.pem").exists() {
            jobgate::tools::generate::keys(&keys, Alg::RS256).unwrap();
        }
        let signer = Signer::from_pem(&std::fs::read_to_string(keys.join("signing-key.pem")).unwrap()).unwrap();
        let kid = signer.thumbprint();
        (signer, kid)
    }

    /// As [`Gateway::start_upstreams`], also accepting GitLab's own job tokens by asking the GitLab API
    /// (`gitlab_fields`: the `gitlab:` block's fields; answers trusted `cache_secs`, `budget` lookups
    /// per second).
    pub fn start_with_gitlab(
        dir: &Path,
        upstreams: &str,
        policy: &str,
        gitlab_fields: &str,
        cache_secs: u64,
        budget: u32,
        extra_config: &str,
    ) -> Gateway {
        // The second issuer closes the first one's flow mapping and opens its own.
        let issuers = format!(
            "name: ci, iss: '{ISSUER}', audiences: [{AUDIENCE}], jwks_file: keys/jwks.json }}\n  - {{ name: gitlab-jobs, gitlab_job_tokens: {{ cache_secs: {cache_secs}, lookups_per_sec: {budget} }}"
        );
        let extra = format!("gitlab: {{ {gitlab_fields} }}\n{extra_config}");
        Gateway::start_full(dir, upstreams, &issuers, policy, &extra)
    }

    /// The default issuer, with the `upstreams:` entries given whole (one family per line).
    pub fn start_upstreams(dir: &Path, upstreams: &str, policy: &str, extra_config: &str) -> Gateway {
        let issuer = format!("name: ci, iss: '{ISSUER}', audiences: [{AUDIENCE}], jwks_file: keys/jwks.json");
        Gateway::start_full(dir, upstreams, &issuer, policy, extra_config)
    }

    /// Everything configurable: the `upstreams:` entries (one family per line), the issuer's fields,
    /// policy, extra config.
    pub fn start_full(dir: &Path, upstreams: &str, issuer_fields: &str, policy: &str, extra_config: &str) -> Gateway {
        let certs = jobgate::tools::generate::certs(&dir.join("certs")).unwrap();
        let (signer, kid) = Gateway::issuer_key(dir);
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        std::fs::write(dir.join("policies/policy.yaml"), policy).unwrap();
        let upstreams: String = upstreams.lines().map(|l| format!("  {l}\n")).collect();
        // A test may bring its own `tls:` (several certificates, say).
        let tls = if extra_config.lines().any(|l| l.starts_with("tls:")) {
            ""
        } else {
            "tls: { cert: certs/server.pem, key: certs/server-key.pem }\n"
        };
        let config = dir.join("jobgate.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: {{ public: 127.0.0.1:0, admin: 127.0.0.1:0 }}
{tls}issuers:
  - {{ {issuer_fields} }}
policy_dir: policies
upstreams:
{upstreams}
audit: {{ file: audit.log }}
{extra_config}
"
            ),
        )
        .unwrap();
        let mut process = Process::spawn(
            Command::new(env!("CARGO_BIN_EXE_jobgate"))
                .args(["serve", "--config"])
                .arg(&config)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let (tx, rx) = mpsc::channel();
        let stderr = process.child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[jobgate] {line}");
                let _ = tx.send(line);
            }
        });
        let line = loop {
            let line = rx.recv_timeout(Duration::from_secs(30)).expect("jobgate did not report its addresses");
            if line.starts_with("jobgate listening") {
                break line;
            }
        };
        let port_after = |key: &str| -> u16 {
            let addr = line.split(key).nth(1).unwrap().split_whitespace().next().unwrap();
            addr.rsplit(':').next().unwrap().parse().unwrap()
        };
        Gateway {
            dir: dir.to_owned(),
            port: port_after("public=https://"),
            admin_port: port_after("admin=http://"),
            ca: certs.ca,
            audit: dir.join("audit.log"),
            signer,
            kid,
            process,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// SIGTERM: graceful shutdown begins.
    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (after [`Gateway::sigterm`]), up to `limit`.
    pub fn wait_exit(mut self, limit: Duration) -> std::process::ExitStatus {
        let mut exited = None;
        eventually("jobgate exits", limit, || {
            exited = self.process.child.try_wait().unwrap();
            exited.is_some()
        });
        exited.unwrap()
    }

    /// SIGKILL, no shutdown: what survives this is what was durable.
    pub fn kill(mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }

    /// A job token for `project` (id `id`) on a protected or unprotected ref.
    pub fn token(&self, project: &str, id: u64, protected: bool) -> String {
        self.token_with(project, id, protected, Vec::new())
    }

    pub fn token_with(
        &self,
        project: &str,
        id: u64,
        protected: bool,
        extra: Vec<(String, serde_json::Value)>,
    ) -> String {
        let claims = JobClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            project_path: project.into(),
            project_id: id,
            user_id: 5,
            job_id: 1000 + id,
            pipeline_id: 7,
            git_ref: if protected { "main".into() } else { "feature".into() },
            ref_protected: protected,
            ttl_secs: 600,
            scopes: None,
            extra,
        };
        self.signer.sign(&self.kid, &claims.payload(jobgate::clock::unix_now())).unwrap()
    }

    /// `https://gitlab-ci-token:TOKEN@127.0.0.1:PORT/project.git`
    pub fn git_url(&self, token: &str, project: &str) -> String {
        format!("https://gitlab-ci-token:{token}@127.0.0.1:{}/{project}.git", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Audit lines, once `ready` holds for them (they are written off the request path), or after 5 s.
    pub fn audit_until(&self, ready: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines: Vec<serde_json::Value> = std::fs::read_to_string(&self.audit)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if ready(&lines) || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// GET on the admin listener: the body.
pub fn admin_get(gateway: &Gateway, path: &str) -> String {
    admin_request(gateway, path).1
}

/// GET on the admin listener: the status.
pub fn admin_status(gateway: &Gateway, path: &str) -> u16 {
    admin_request(gateway, path).0
}

fn admin_request(gateway: &Gateway, path: &str) -> (u16, String) {
    admin_send(gateway, "GET", path, "")
}

/// POST on the admin listener with a bearer token (empty: none); returns status and text.
pub fn admin_post(gateway: &Gateway, path: &str, token: &str) -> (u16, String) {
    let auth = if token.is_empty() { String::new() } else { format!("Authorization: Bearer {token}\r\n") };
    admin_send(gateway, "POST", path, &format!("{auth}Content-Length: 0\r\n"))
}

fn admin_send(gateway: &Gateway, method: &str, path: &str, headers: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", gateway.admin_port)).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// Runs `serve` on a loopback listener in a thread of its own (with its own runtime); returns the port.
fn serve_on_thread<F: std::future::Future<Output = ()> + 'static>(
    serve: impl FnOnce(tokio::net::TcpListener) -> F + Send + 'static,
) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            serve(tokio::net::TcpListener::from_std(listener).unwrap()).await;
        });
    });
    port
}

/// An upstream that reads the whole request body and answers with its length (`{"bytes": N}`).
pub fn sink_upstream() -> u16 {
    use http_body_util::BodyExt;
    serve_on_thread(|listener| async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                    let bytes = request.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(format!("{{\"bytes\": {bytes}}}")),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The demo's echo upstream (method, path, query and headers back as JSON), on its own thread.
pub fn echo_upstream() -> u16 {
    serve_on_thread(|listener| jobgate::tools::demo::upstream::serve(listener, None))
}

/// `curl` against the gateway with our CA; returns (status, headers+body text).
pub fn curl(gateway: &Gateway, args: &[&str]) -> (u16, String) {
    let out = run(Command::new("curl")
        .args(["-s", "-i", "--cacert"])
        .arg(&gateway.ca)
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .args(args));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .lines()
        .rev()
        .find(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("curl {args:?} got no response: {}", String::from_utf8_lossy(&out.stderr)));
    (status, text)
}
