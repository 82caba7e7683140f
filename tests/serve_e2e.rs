//! The public listener's connection limits, seen from a raw TLS client: a client that completes the
//! handshake and then sends nothing is disconnected after the header timeout, on HTTP/1.1 and HTTP/2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Gateway;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn silent_clients_are_disconnected_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(dir.path(), "url: 'http://127.0.0.1:1'", "{}", "timeouts: { request_header_secs: 1 }");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&gw.ca).unwrap()).unwrap();
    for alpn in ["http/1.1", "h2"] {
        let mut config = rustls::ClientConfig::builder_with_provider(jobgate::infra::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn.as_bytes()));
        let started = Instant::now();
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue, // h2 sends its SETTINGS first
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{alpn}: a silent client was still connected after 5 s");
        assert!(started.elapsed() >= Duration::from_millis(900), "{alpn}: closed too early");
    }
}
