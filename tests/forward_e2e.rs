//! Header hygiene and credential modes, observed at an echo upstream (jobgate's demo echo), through a
//! real jobgate process, over HTTP/1.1 and HTTP/2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{curl, echo_upstream, Gateway};
use serde_json::Value;

const POLICY: &str = "projects:\n  acme/app: { id: 42 }\n";

/// The echo's JSON and the response's request id.
fn echoed(gateway: &Gateway, args: &[&str]) -> (Value, String) {
    let (status, text) = curl(gateway, args);
    assert_eq!(status, 200, "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let request_id = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-request-id: ").map(str::to_owned))
        .expect("x-request-id on the response");
    (serde_json::from_str(body).unwrap(), request_id)
}

#[test]
fn identity_headers_are_ours_and_credentials_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = echo_upstream();
    let gw = Gateway::start(dir.path(), &format!("http://127.0.0.1:{upstream}"), POLICY);
    let token = gw.token("acme/app", 42, false);
    let basic = format!("gitlab-ci-token:{token}");
    let url = gw.url(&format!("/acme/app.git/info/refs?service=git-upload-pack&job_token={token}"));
    for version in ["--http1.1", "--http2"] {
        let mut args = vec![version, "-u", &basic, &url];
        let spoofed = [
            "X-Forwarded-For: 6.6.6.6",
            "X_Forwarded_Host: evil.example.com",
            "X-Forwarded-Proto: http",
            "Forwarded: for=6.6.6.6",
            "X-Real-IP: 6.6.6.6",
            "X-Jobgate-Job-Id: 1",
            "X_Jobgate_Scopes: api",
            "X-Request-Id: forged",
            "Git-Protocol: version=2",
        ];
        for header in &spoofed {
            args.extend(["-H", header]);
        }
        if version == "--http1.1" {
            args.extend(["-H", "Connection: keep-alive, X-Custom", "-H", "X-Custom: secret"]);
        }
        let (echo, request_id) = echoed(&gw, &args);
        let headers = echo["headers"].as_object().unwrap();
        let host = format!("127.0.0.1:{}", gw.port);
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "{version}");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], host.as_str());
        assert_eq!(headers["host"], host.as_str(), "{version}: Host is kept");
        assert_eq!(headers["x-request-id"], request_id.as_str());
        assert_eq!(headers["git-protocol"], "version=2");
        assert!(headers["authorization"].as_str().unwrap().starts_with("Basic "), "passthrough keeps credentials");
        for name in headers.keys() {
            let folded = name.replace('_', "-");
            assert!(
                !folded.starts_with("x-jobgate")
                    && !["forwarded", "x-real-ip", "x-custom", "connection"].contains(&folded.as_str()),
                "{version}: {name} must not reach the upstream"
            );
        }
        assert_eq!(echo["path"], "/acme/app.git/info/refs");
        assert!(echo["query"].as_str().unwrap().contains("job_token="), "passthrough keeps the query");
    }
}

#[test]
fn strip_mode_removes_every_job_credential() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = echo_upstream();
    let gw =
        Gateway::start_with(dir.path(), &format!("url: 'http://127.0.0.1:{upstream}', credentials: strip"), POLICY, "");
    let token = gw.token("acme/app", 42, false);
    let cases = [
        vec!["-u".to_owned(), format!("gitlab-ci-token:{token}")],
        vec!["-H".to_owned(), format!("JOB-TOKEN: {token}")],
        vec!["-H".to_owned(), format!("Job_Token: {token}")],
        vec!["-H".to_owned(), format!("Authorization: Bearer {token}")],
    ];
    for case in cases {
        let url = gw.url(&format!("/acme/app/info/refs?job%5Ftoken={token}&service=git-upload-pack"));
        let mut args: Vec<&str> = case.iter().map(String::as_str).collect();
        args.push(&url);
        let (echo, _) = echoed(&gw, &args);
        let text = echo.to_string();
        assert!(!text.contains(&token[..40]), "{case:?}: the token reached the upstream: {text}");
        assert_eq!(echo["query"], "service=git-upload-pack");
    }
}

#[test]
fn upstream_down_is_502_and_upstream_silence_is_504() {
    let dir = tempfile::tempdir().unwrap();
    let closed = common::free_port();
    let gw = Gateway::start(dir.path(), &format!("http://127.0.0.1:{closed}"), POLICY);
    let token = gw.token("acme/app", 42, false);
    let url = gw.url("/acme/app.git/info/refs?service=git-upload-pack");
    let basic = format!("gitlab-ci-token:{token}");
    let (status, text) = curl(&gw, &["-u", &basic, &url]);
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("cannot connect to the git upstream (reason: upstream_unavailable"), "{text}");
    // A Unix socket that is not there: the same, at once.
    let sockets = tempfile::tempdir().unwrap();
    let gw = Gateway::start(sockets.path(), &format!("unix:{}", sockets.path().join("missing.sock").display()), POLICY);
    let started = std::time::Instant::now();
    let (status, text) = curl(
        &gw,
        &[
            "-u",
            &format!("gitlab-ci-token:{}", gw.token("acme/app", 42, false)),
            &gw.url("/acme/app.git/info/refs?service=git-upload-pack"),
        ],
    );
    assert_eq!(status, 502, "{text}");
    assert!(
        text.contains("cannot connect to the git upstream") && started.elapsed() < std::time::Duration::from_secs(4),
        "{text}"
    );

    // An upstream that accepts connections and never answers.
    let port = silent_upstream();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(
        dir.path(),
        &format!("url: 'http://127.0.0.1:{port}', response_timeout_secs: 1"),
        POLICY,
        "",
    );
    let token = gw.token("acme/app", 42, false);
    let (status, text) = curl(
        &gw,
        &["-u", &format!("gitlab-ci-token:{token}"), &gw.url("/acme/app.git/info/refs?service=git-upload-pack")],
    );
    assert_eq!(status, 504, "{text}");
    assert!(text.contains("upstream_timeout"), "{text}");
    let timed_out = |l: &Value| l["status"] == 504 && l["reason"] == "upstream_timeout";
    let audit = gw.audit_until(|lines| lines.iter().any(timed_out));
    assert!(audit.iter().any(timed_out), "{audit:?}");
}

#[test]
fn audit_mode_forwards_and_records_the_would_deny() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = echo_upstream();
    let policy = "groups:\n  rollout: { mode: audit }\nprojects:\n  rollout/app: {}\n  strict/app: {}\n";
    let gw = Gateway::start(dir.path(), &format!("http://127.0.0.1:{upstream}"), policy);
    let token = gw.token("acme/lib", 43, false);
    let basic = format!("gitlab-ci-token:{token}");
    let (status, text) = curl(&gw, &["-u", &basic, &gw.url("/rollout/app.git/info/refs?service=git-upload-pack")]);
    assert_eq!(status, 200, "audit mode lets it through: {text}");
    let (status, text) = curl(&gw, &["-u", &basic, &gw.url("/strict/app.git/info/refs?service=git-upload-pack")]);
    assert_eq!(status, 403, "{text}");
    let would_deny = |l: &Value| l["target"] == "rollout/app" && l["decision"] == "deny" && l["enforced"] == false;
    let enforced = |l: &Value| l["target"] == "strict/app" && l["decision"] == "deny" && l["enforced"] == true;
    let lines = gw.audit_until(|lines| lines.iter().any(would_deny) && lines.iter().any(enforced));
    assert!(
        lines.iter().any(|l| would_deny(l) && l["reason"] == "not_in_allowlist" && l["status"] == 200),
        "{lines:?}"
    );
    assert!(lines.iter().any(enforced), "{lines:?}");
}

#[test]
fn audit_lines_never_carry_tokens_authorization_or_query_values() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &format!("http://127.0.0.1:{}", echo_upstream()), POLICY);
    let token = gw.token("acme/app", 42, false);
    let refused = gw.token("acme/other", 7, false);
    let url = |query: &str| gw.url(&format!("/acme/app.git/info/refs?service=git-upload-pack&{query}"));
    let requests: Vec<Vec<String>> = vec![
        vec!["-u".into(), format!("gitlab-ci-token:{token}"), url("marker=query-value-1")],
        vec!["-H".into(), format!("JOB-TOKEN: {refused}"), url("marker=query-value-2")],
        vec![url(&format!("job_token={token}"))],
        vec!["-H".into(), "Authorization: Basic YWxpY2U6aHVudGVyMg==".into(), url("private_token=glpat-query-secret")],
        vec!["-H".into(), format!("Authorization: Bearer {token}x"), url("marker=query-value-3")],
    ];
    for args in &requests {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&gw, &args);
    }
    let lines = gw.audit_until(|lines| lines.len() >= requests.len());
    assert_eq!(lines.len(), requests.len(), "one line per request");
    let text = std::fs::read_to_string(&gw.audit).unwrap();
    for secret in [
        &token[..],
        &refused[..],
        token.split('.').nth(2).unwrap(),
        "query-value",
        "glpat-query-secret",
        "YWxpY2U6aHVudGVyMg",
        "hunter2",
        "service=",
        "Authorization",
        "authorization",
    ] {
        assert!(!text.contains(secret), "the audit log contains {secret:?}:\n{text}");
    }
}

/// An upstream that, like lighttpd after `server.max-keep-alive-idle`, drops a keep-alive connection
/// idle for longer than `idle` when the next request arrives on it (without answering).
fn impatient_upstream(idle: std::time::Duration) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut last = std::time::Instant::now();
                let mut buffer = [0u8; 8192];
                let mut head = Vec::new();
                loop {
                    let Ok(n) = stream.read(&mut buffer) else { return };
                    if n == 0 {
                        return;
                    }
                    if last.elapsed() > idle {
                        return; // too late for this connection: closed, the request unanswered
                    }
                    head.extend_from_slice(&buffer[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        head.clear();
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                        last = std::time::Instant::now();
                    }
                }
            });
        }
    });
    port
}

#[test]
fn pooled_connections_are_not_reused_past_the_upstreams_keep_alive() {
    let upstream = impatient_upstream(std::time::Duration::from_millis(1500));
    let fetch_twice = |pool_idle_secs: u64| {
        let dir = tempfile::tempdir().unwrap();
        let gw = Gateway::start_with(
            dir.path(),
            &format!("url: 'http://127.0.0.1:{upstream}', pool_idle_timeout_secs: {pool_idle_secs}"),
            POLICY,
            "",
        );
        let token = gw.token("acme/app", 42, false);
        let url = gw.url("/acme/app.git/info/refs?service=git-upload-pack");
        let first = curl(&gw, &["--http1.1", "-H", &format!("JOB-TOKEN: {token}"), &url]).0;
        std::thread::sleep(std::time::Duration::from_millis(2200));
        let second = curl(&gw, &["--http1.1", "-H", &format!("JOB-TOKEN: {token}"), &url]).0;
        (first, second)
    };
    // Idle connections kept 1 s, under the upstream's 1.5 s: the second request gets a fresh one.
    assert_eq!(fetch_twice(1), (200, 200));
    // Kept longer than the upstream keeps them: the reused connection is dropped under the request.
    assert_eq!(fetch_twice(60), (200, 502), "the race the timeout avoids");
}

/// An upstream that accepts connections and never answers; returns its port.
fn silent_upstream() -> u16 {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    port
}

/// nginx terminating TLS with `cert`/`key` (and, with `client_ca`, asking for a client certificate
/// it signed) in front of `backend`.
fn nginx_tls(
    dir: &std::path::Path,
    backend: u16,
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> (u16, common::Process) {
    std::fs::create_dir_all(dir.join("nginx-tmp")).unwrap();
    let conf = dir.join("nginx.conf");
    let verify =
        client_ca.map_or(String::new(), |ca| format!("ssl_client_certificate {}; ssl_verify_client on;", ca.display()));
    common::serve_on_free_port(|port| {
        std::fs::write(
            &conf,
            format!(
                "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/nginx-tmp;\n  proxy_temp_path {d}/nginx-tmp;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    {verify}\n    location / {{ proxy_pass http://127.0.0.1:{backend}; proxy_set_header Host $host; proxy_request_buffering off; proxy_buffering off; client_max_body_size 100m; }}\n  }}\n}}\n",
                d = dir.display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .unwrap();
        let mut command = std::process::Command::new("nginx");
        command.arg("-c").arg(&conf).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        command
    })
}

#[test]
fn an_https_upstream_with_a_private_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let git = common::GitServer::start(dir.path());
    git.create_repo("acme/app");
    // The upstream's own private CA: its server certificate names localhost and 127.0.0.1, and the
    // same CA signs the client certificate nginx asks for.
    let pki = jobgate::tools::generate::certs(&dir.path().join("upstream-pki")).unwrap();
    let (port, _nginx) = nginx_tls(dir.path(), git.port, &pki.cert, &pki.key, Some(&pki.ca));
    let clone = |gw: &Gateway, name: &str| {
        let url = gw.git_url(&gw.token("acme/app", 42, false), "acme/app");
        common::run(
            common::git_command(dir.path(), Some(&gw.ca)).args(["clone", "--quiet", &url]).arg(dir.path().join(name)),
        )
    };
    let tls =
        |extra: &str| format!("url: 'https://127.0.0.1:{port}', tls: {{ ca_file: '{}'{extra} }}", pki.ca.display());
    let client = format!(", client_cert: '{}', client_key: '{}'", pki.cert.display(), pki.key.display());
    let trusted = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(trusted.path(), &tls(&client), POLICY, "");
    let out = clone(&gw, "over-tls");
    assert!(out.status.success(), "{}", common::output_text(&out));
    // The name to verify can differ from the URL's host: right name, then a wrong one.
    let named = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(named.path(), &tls(&format!("{client}, server_name: localhost")), POLICY, "");
    assert!(clone(&gw, "named").status.success());
    let wrong = tempfile::tempdir().unwrap();
    let gw =
        Gateway::start_with(wrong.path(), &tls(&format!("{client}, server_name: gitlab.other.example")), POLICY, "");
    let (status, text) = curl(
        &gw,
        &[
            "-u",
            &format!("gitlab-ci-token:{}", gw.token("acme/app", 42, false)),
            &gw.url("/acme/app.git/info/refs?service=git-upload-pack"),
        ],
    );
    assert_eq!(status, 502, "a certificate for another name: {text}");
    // Without the private CA the upstream is not trusted; without the client certificate nginx refuses.
    let untrusted = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(untrusted.path(), &format!("url: 'https://127.0.0.1:{port}'"), POLICY, "");
    let (status, text) = curl(
        &gw,
        &[
            "-u",
            &format!("gitlab-ci-token:{}", gw.token("acme/app", 42, false)),
            &gw.url("/acme/app.git/info/refs?service=git-upload-pack"),
        ],
    );
    assert_eq!(status, 502, "{text}");
    let anonymous = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(anonymous.path(), &tls(""), POLICY, "");
    let (status, text) = curl(
        &gw,
        &[
            "-u",
            &format!("gitlab-ci-token:{}", gw.token("acme/app", 42, false)),
            &gw.url("/acme/app.git/info/refs?service=git-upload-pack"),
        ],
    );
    assert_eq!(status, 400, "nginx wants the client certificate: {text}");
}

/// A WebSocket echo server (the role of GitLab's ActionCable or a web terminal upstream).
async fn websocket_echo() -> u16 {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A TLS connection to the gateway (no ALPN: HTTP/1.1, where upgrades live).
async fn tls_to(gw: &Gateway) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = jobgate::infra::tls::client_config(Some(&gw.ca)).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_round_trip_passes_as_non_job_traffic_and_a_job_credential_is_refused() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let echo = websocket_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let gw =
        Gateway::start_with(dir.path(), &format!("url: 'http://127.0.0.1:{echo}'"), POLICY, "non_job: passthrough");
    let url = format!("wss://localhost:{}/-/cable", gw.port);
    let (mut ws, response) = tokio_tungstenite::client_async(url.as_str(), tls_to(&gw).await).await.unwrap();
    assert_eq!(response.status(), 101);
    for text in ["hello", "jobgate"] {
        ws.send(Message::text(text)).await.unwrap();
        let back = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(back.to_text().unwrap(), text);
    }
    ws.close(None).await.unwrap();
    // An upgrade with a job token, on a request the policy allows: refused, the upstream never asked.
    let allowed = format!("wss://localhost:{}/acme/app.git/info/refs?service=git-upload-pack", gw.port);
    let mut request = allowed.as_str().into_client_request().unwrap();
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("gitlab-ci-token:{}", gw.token("acme/app", 42, false)),
    );
    request.headers_mut().insert("authorization", format!("Basic {basic}").parse().unwrap());
    match tokio_tungstenite::client_async(request, tls_to(&gw).await).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("upgrade_refused"), "{body}");
        }
        other => panic!("a job credential's upgrade went through: {:?}", other.map(|(_, r)| r.status())),
    }
}

#[test]
fn hosts_route_the_registry_by_name_and_refuse_unknown_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let (gitlab, registry) = (echo_upstream(), common::sink_upstream());
    let upstreams =
        format!("git: {{ url: 'http://127.0.0.1:{gitlab}' }}\nregistry: {{ url: 'http://127.0.0.1:{registry}' }}");
    // The GitLab host is 127.0.0.1, the registry host localhost (both on jobgate's certificate).
    let gw = Gateway::start_upstreams(
        dir.path(),
        &upstreams,
        POLICY,
        "non_job: passthrough\nhosts: { gitlab: ['127.0.0.1'], registry: [localhost] }",
    );
    let job = format!("gitlab-ci-token:{}", gw.token("acme/app", 42, false));
    let at = |host: &str, path: &str| format!("https://{host}:{}{path}", gw.port);
    for version in ["--http2", "--http1.1"] {
        // `/v2/` on the GitLab host is GitLab's (the dependency proxy): non-job traffic to git's upstream.
        let (status, text) = curl(&gw, &[version, &at("127.0.0.1", "/v2/")]);
        assert!(status == 200 && text.contains("\"path\": \"/v2/\""), "{version}: {text}");
        // On the registry host it is the registry.
        let (status, text) = curl(&gw, &[version, &at("localhost", "/v2/")]);
        assert!(status == 200 && text.contains("{\"bytes\": 0}"), "{version}: {text}");
        // The registry host serves nothing else, not even to non-job traffic.
        let (status, text) = curl(&gw, &[version, &at("localhost", "/acme/app.git/info/refs?service=git-upload-pack")]);
        assert!(status == 403 && text.contains("unmatched_request"), "{version}: {text}");
        // A job token on the GitLab host's `/v2/` is not decided by jobgate: refused, not guessed.
        let (status, text) = curl(&gw, &[version, "-u", &job, &at("127.0.0.1", "/v2/acme/app/tags/list")]);
        assert!(status == 403 && text.contains("unmatched_request"), "{version}: {text}");
        // A host no route serves.
        let (status, text) = curl(
            &gw,
            &[
                version,
                "-H",
                "Host: gitlab.evil.example",
                &at("127.0.0.1", "/acme/app.git/info/refs?service=git-upload-pack"),
            ],
        );
        assert!(status == 421 && text.contains("unknown_host"), "{version}: {text}");
    }
    // Git still works on the GitLab host.
    let (status, text) = curl(&gw, &["-u", &job, &at("127.0.0.1", "/acme/app.git/info/refs?service=git-upload-pack")]);
    assert_eq!(status, 200, "{text}");
}

#[test]
fn each_host_gets_its_own_certificate_by_sni_and_a_host_must_be_the_connections_name() {
    let dir = tempfile::tempdir().unwrap();
    let (gitlab, registry) = (echo_upstream(), common::sink_upstream());
    // The registry host's own certificate (self-signed: the client trusts just it).
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["registry.test".to_owned()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.path().join("registry.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("registry-key.pem"), key.serialize_pem()).unwrap();
    let upstreams =
        format!("git: {{ url: 'http://127.0.0.1:{gitlab}' }}\nregistry: {{ url: 'http://127.0.0.1:{registry}' }}");
    let extra = "tls: { cert: certs/server.pem, key: certs/server-key.pem, certificates: [ { cert: registry.pem, key: registry-key.pem } ] }\nhosts: { gitlab: [localhost], registry: [registry.test] }\nnon_job: passthrough";
    let gw = Gateway::start_upstreams(dir.path(), &upstreams, POLICY, extra);
    let resolve = format!("registry.test:{}:127.0.0.1", gw.port);
    let registry_ca = dir.path().join("registry.pem");
    let on_registry = |path: &str, extra: &[&str]| {
        let url = format!("https://registry.test:{}{path}", gw.port);
        let mut args = vec!["--resolve", &resolve, "--cacert", registry_ca.to_str().unwrap()];
        args.extend(extra);
        args.push(&url);
        curl(&gw, &args)
    };
    // Trusting only the registry's certificate, the registry host verifies: SNI picked it.
    let (status, text) = on_registry("/v2/", &[]);
    assert!(status == 200 && text.contains("{\"bytes\": 0}"), "{text}");
    // The GitLab host gets the default certificate (jobgate's CA verifies it) and its own `/v2/`.
    let (status, text) = curl(&gw, &[&format!("https://localhost:{}/v2/", gw.port)]);
    assert!(status == 200 && text.contains("\"path\": \"/v2/\""), "{text}");
    // A request whose Host is not the name its connection was opened for: 421, over either protocol.
    for version in ["--http1.1", "--http2"] {
        let (status, text) =
            on_registry("/acme/app.git/info/refs?service=git-upload-pack", &[version, "-H", "Host: localhost"]);
        assert!(status == 421 && text.contains("unknown_host"), "{version}: {text}");
    }
}

#[test]
fn an_upstreams_max_connections_bounds_requests_in_flight_and_frees_them() {
    // An upstream that accepts connections and never answers: each request holds its connection.
    let port = silent_upstream();
    let dir = tempfile::tempdir().unwrap();
    let gw = std::sync::Arc::new(Gateway::start_with(
        dir.path(),
        &format!("url: 'http://127.0.0.1:{port}', response_timeout_secs: 2, max_connections: 1"),
        POLICY,
        "",
    ));
    let url = gw.url("/acme/app.git/info/refs?service=git-upload-pack");
    let basic = format!("gitlab-ci-token:{}", gw.token("acme/app", 42, false));
    let first = {
        let (gw, url, basic) = (gw.clone(), url.clone(), basic.clone());
        std::thread::spawn(move || curl(&gw, &["-u", &basic, &url]).0)
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    let (status, text) = curl(&gw, &["-u", &basic, &url]);
    assert_eq!(status, 503, "the one connection is in use: {text}");
    assert!(
        text.contains("max_connections")
            && text.contains("over_capacity")
            && started.elapsed() < std::time::Duration::from_secs(1),
        "{text}"
    );
    assert_eq!(first.join().unwrap(), 504, "the first one waited for the silent upstream");
    let (status, text) = curl(&gw, &["-u", &basic, &url]);
    assert_eq!(status, 504, "its connection was given back: {text}");
}

#[test]
fn a_passthrough_host_goes_to_its_own_upstream_undecided_and_refuses_job_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (gitlab, pages) = (common::sink_upstream(), echo_upstream());
    // GitLab Pages: every project's site on its own name below the Pages domain, with its own certificate.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["*.pages.test".to_owned()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.path().join("pages.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("pages-key.pem"), key.serialize_pem()).unwrap();
    let upstreams = format!("git: {{ url: 'http://127.0.0.1:{gitlab}' }}");
    let extra = format!(
        "tls: {{ cert: certs/server.pem, key: certs/server-key.pem, certificates: [ {{ cert: pages.pem, key: pages-key.pem }} ] }}\nhosts: {{ gitlab: [localhost], passthrough: [ {{ names: ['*.pages.test'], upstream: {{ url: 'http://127.0.0.1:{pages}' }} }} ] }}"
    );
    let gw = Gateway::start_upstreams(dir.path(), &upstreams, POLICY, &extra);
    let resolve = format!("acme.pages.test:{}:127.0.0.1", gw.port);
    let pages_ca = dir.path().join("pages.pem");
    let on_pages = |path: &str, extra: &[&str]| {
        let url = format!("https://acme.pages.test:{}{path}", gw.port);
        let mut args = vec!["--resolve", &resolve, "--cacert", pages_ca.to_str().unwrap()];
        args.extend(extra);
        args.push(&url);
        curl(&gw, &args)
    };
    for version in ["--http1.1", "--http2"] {
        // Passed as it is, whatever the path (even one the GitLab host would refuse), and whatever `non_job` says.
        let (status, text) = on_pages("/app/index.html", &[version, "-H", "Cookie: gitlab-pages-auth=abc"]);
        assert!(status == 200 && text.contains("\"path\": \"/app/index.html\""), "{version}: {text}");
        let job = format!("gitlab-ci-token:{}", gw.token("acme/app", 42, false));
        let (status, text) = on_pages("/app/index.html", &[version, "-u", &job]);
        assert!(
            status == 403 && text.contains("unmatched_request") && text.contains("hosts.passthrough"),
            "{version}: {text}"
        );
    }
    let lines = gw.audit_until(|lines| lines.iter().filter(|l| l["decision"] == "passthrough").count() >= 2);
    assert!(lines.iter().any(|l| l["decision"] == "deny" && l["reason"] == "unmatched_request"), "{lines:?}");
}
