//! Operations through a real jobgate process: certificate rotation by atomic rename (served to new
//! connections, broken or mismatched files keep the old certificate and are reported), and SIGTERM
//! during a long streaming upload (it finishes, new connections are refused, exit 0).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{admin_get, sink_upstream, Gateway};

/// SHA-256 fingerprint of the certificate a fresh TLS connection is served.
fn served_fingerprint(port: u16) -> String {
    let shell = format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    );
    String::from_utf8(Command::new("sh").args(["-c", &shell]).output().unwrap().stdout).unwrap().trim().to_owned()
}

fn file_fingerprint(pem: &Path) -> String {
    let out =
        Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256", "-in"]).arg(pem).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn wait_until(what: &str, done: impl FnMut() -> bool) {
    common::eventually(what, Duration::from_secs(5), done);
}

#[test]
fn certificates_rotate_by_rename_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &format!("http://127.0.0.1:{}", sink_upstream()), "{}");
    let certs = dir.path().join("certs");
    let original = file_fingerprint(&certs.join("server.pem"));
    assert!(original.contains("Fingerprint"), "openssl works: {original}");
    assert_eq!(served_fingerprint(gw.port), original);

    // A broken PEM: refused, reported, the old certificate stays.
    jobgate::tools::generate::write(
        &certs.join("server.pem"),
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    wait_until("the broken certificate is reported", || admin_get(&gw, "/-/ready").contains("server.pem"));
    assert_eq!(served_fingerprint(gw.port), original);

    // A certificate whose key is elsewhere: refused the same way.
    let next = dir.path().join("next");
    jobgate::tools::generate::certs(&next).unwrap();
    std::fs::copy(next.join("server.pem"), certs.join("staged.pem")).unwrap();
    std::fs::rename(certs.join("staged.pem"), certs.join("server.pem")).unwrap();
    wait_until("the mismatched pair is reported", || admin_get(&gw, "/-/ready").contains("server-key.pem"));
    assert_eq!(served_fingerprint(gw.port), original);

    // The matching key arrives: new connections get the new certificate, no restart.
    std::fs::copy(next.join("server-key.pem"), certs.join("staged-key.pem")).unwrap();
    std::fs::rename(certs.join("staged-key.pem"), certs.join("server-key.pem")).unwrap();
    let rotated = file_fingerprint(&next.join("server.pem"));
    wait_until("the new certificate is served", || served_fingerprint(gw.port) == rotated);
    wait_until("the error is cleared", || admin_get(&gw, "/-/ready").contains("\"last_reload_error\": null"));
    assert!(admin_get(&gw, "/metrics").contains("jobgate_certificate_expiry_timestamp_seconds{listener=\"public\"}"));
}

#[test]
fn sigterm_lets_a_streaming_upload_finish_and_refuses_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &format!("http://127.0.0.1:{}", sink_upstream()), "{}");
    let token = gw.token("acme/app", 42, false);
    let upload = dir.path().join("upload.bin");
    std::fs::write(&upload, vec![7u8; 1 << 20]).unwrap();
    // 1 MiB at 256 KiB/s: about four seconds on the wire.
    let client = Command::new("curl")
        .args(["-s", "--http1.1", "--limit-rate", "256K", "--cacert"])
        .arg(&gw.ca)
        .env_remove("CURL_CA_BUNDLE")
        .args([
            "-H",
            &format!("JOB-TOKEN: {token}"),
            "-H",
            "Content-Type: application/x-git-upload-pack-request",
            "--data-binary",
        ])
        .arg(format!("@{}", upload.display()))
        .arg(gw.url("/acme/app.git/git-upload-pack"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let port = gw.port;
    gw.sigterm();
    wait_until("new connections are refused while draining", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    let out = client.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"bytes\": 1048576}", "the upload finished intact");
    let status = gw.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_client_does_not_hold_the_drain() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let gw = tokio::task::block_in_place(|| {
        Gateway::start(dir.path(), &format!("http://127.0.0.1:{}", sink_upstream()), "{}")
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_file(&gw.ca).unwrap()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(jobgate::infra::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (_sender, connection) = hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let held = tokio::spawn(connection);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    gw.sigterm();
    let status = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(10)));
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an idle h2 connection held the drain for {:?}",
        started.elapsed()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), held).await;
}

/// logrotate moves the audit file away and sends SIGHUP: the next lines go to a new file at the
/// configured path, none to the moved one.
#[test]
fn sighup_reopens_the_audit_log_after_logrotate() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &format!("http://127.0.0.1:{}", common::echo_upstream()), "projects: {}\n");
    let lines = |path: &Path| std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0);
    let (status, _) = common::curl(&gw, &[&gw.url("/acme/app.git/info/refs?service=git-upload-pack")]);
    assert_eq!(status, 401);
    wait_until("the first line is written", || lines(&gw.audit) == 1);
    let rotated = dir.path().join("audit.log.1");
    std::fs::rename(&gw.audit, &rotated).unwrap();
    let status = Command::new("kill").args(["-HUP", &gw.pid().to_string()]).status().unwrap();
    assert!(status.success());
    // The reopen happens before the next batch the writer takes; give the signal a moment to land.
    std::thread::sleep(Duration::from_millis(300));
    common::curl(&gw, &[&gw.url("/acme/app.git/info/refs?service=git-upload-pack")]);
    wait_until("a line lands in the new file", || lines(&gw.audit) == 1);
    assert_eq!(lines(&rotated), 1, "nothing more goes to the rotated file");
}

/// A certificate mounted from a Kubernetes Secret: the kubelet's files are symlinks into `..data`,
/// which an update swaps by one atomic rename; no event names the certificate file itself.
#[test]
fn a_kubernetes_secret_update_rotates_the_certificate() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &format!("http://127.0.0.1:{}", sink_upstream()), "{}");
    let certs = dir.path().join("certs");
    let original = file_fingerprint(&certs.join("server.pem"));
    // The kubelet's layout, holding the same pair.
    std::fs::create_dir(certs.join("..2026_12_01_a")).unwrap();
    for file in ["server.pem", "server-key.pem"] {
        std::fs::copy(certs.join(file), certs.join("..2026_12_01_a").join(file)).unwrap();
    }
    symlink("..2026_12_01_a", certs.join("..data")).unwrap();
    for file in ["server.pem", "server-key.pem"] {
        symlink(format!("..data/{file}"), certs.join(format!("{file}.link"))).unwrap();
        std::fs::rename(certs.join(format!("{file}.link")), certs.join(file)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(served_fingerprint(gw.port), original);

    // cert-manager renews; the kubelet writes the new pair and swaps `..data`.
    let next = dir.path().join("next");
    jobgate::tools::generate::certs(&next).unwrap();
    std::fs::create_dir(certs.join("..2026_12_01_b")).unwrap();
    for file in ["server.pem", "server-key.pem"] {
        std::fs::copy(next.join(file), certs.join("..2026_12_01_b").join(file)).unwrap();
    }
    symlink("..2026_12_01_b", certs.join("..data_tmp")).unwrap();
    std::fs::rename(certs.join("..data_tmp"), certs.join("..data")).unwrap();
    let rotated = file_fingerprint(&next.join("server.pem"));
    wait_until("the renewed certificate is served", || served_fingerprint(gw.port) == rotated);
}
