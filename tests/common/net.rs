//! Async network helpers: an HTTPS client trusting one CA, and a real HTTPS JWKS server whose
//! document the test swaps and whose fetches it counts.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

type Inner = hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An HTTPS client (HTTP/1.1, pooled) trusting only `ca`.
#[derive(Clone)]
pub struct Client(Inner);

impl Client {
    pub fn new(ca: &Path) -> Client {
        Client::from_address(ca, None)
    }

    /// As [`Client::new`], connecting from `local` (any 127.x address works on loopback): another client.
    pub fn from_address(ca: &Path, local: Option<std::net::IpAddr>) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(ca).unwrap()).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(jobgate::infra::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_local_address(local);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Client(hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https))
    }

    /// GET with an `Authorization: Bearer` token; returns status and body.
    pub async fn get_bearer(&self, url: &str, token: &str) -> (u16, String) {
        self.get_with(url, "authorization", &format!("Bearer {token}")).await
    }

    /// GET with one extra header; returns status and body.
    pub async fn get_with(&self, url: &str, header: &str, value: &str) -> (u16, String) {
        let request = http::Request::get(url).header(header, value).body(Empty::new()).unwrap();
        let response = self.0.request(request).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// A real HTTPS server publishing a JWKS at `/jwks` (with `Cache-Control: max-age` and an `ETag`) and
/// an OpenID configuration at `/.well-known/openid-configuration`.
pub struct JwksServer {
    pub port: u16,
    pub ca: std::path::PathBuf,
    document: Arc<ArcSwap<String>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl JwksServer {
    pub async fn start(dir: &Path, document: String, max_age_secs: u64) -> JwksServer {
        let certs = jobgate::tools::generate::certs(&dir.join("jwks-certs")).unwrap();
        let files =
            jobgate::config::TlsFiles { cert: certs.cert.clone(), key: certs.key.clone(), certificates: Vec::new() };
        let certificates = jobgate::infra::tls::Certificates::load(&files).unwrap();
        let config =
            jobgate::infra::tls::server_config(Arc::new(jobgate::infra::tls::CertResolver::new(certificates))).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let document = Arc::new(ArcSwap::from_pointee(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (doc, count) = (document.clone(), fetches.clone());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, doc, count, mut stopped) =
                    (acceptor.clone(), doc.clone(), count.clone(), stopped.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let response = respond(&request, &doc, &count, port, max_age_secs);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let connection =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
                    // Stopping drops open keep-alive connections too: the issuer is really gone.
                    tokio::select! {
                        _ = connection => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        JwksServer { port, ca: certs.ca, document, fetches, task, stop }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}/jwks", self.port)
    }

    pub fn issuer_url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn publish(&self, document: String) {
        self.document.store(Arc::new(document));
    }

    /// JWKS fetches served so far (conditional ones included).
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

fn respond(
    request: &http::Request<hyper::body::Incoming>,
    document: &ArcSwap<String>,
    fetches: &AtomicUsize,
    port: u16,
    max_age: u64,
) -> http::Response<Full<Bytes>> {
    let builder = http::Response::builder();
    match request.uri().path() {
        "/.well-known/openid-configuration" => {
            let body = serde_json::json!({"issuer": format!("https://localhost:{port}"), "jwks_uri": format!("https://localhost:{port}/jwks")});
            builder.body(Full::new(Bytes::from(body.to_string()))).unwrap()
        }
        "/jwks" => {
            fetches.fetch_add(1, Ordering::SeqCst);
            let doc = document.load_full();
            let digest = ring::digest::digest(&ring::digest::SHA256, doc.as_bytes());
            let etag = format!("\"{}\"", digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>());
            let builder = builder.header("etag", &etag).header("cache-control", format!("max-age={max_age}"));
            if request.headers().get("if-none-match").is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
                return builder.status(304).body(Full::new(Bytes::new())).unwrap();
            }
            builder.header("content-type", "application/json").body(Full::new(Bytes::from((*doc).clone()))).unwrap()
        }
        _ => builder.status(404).body(Full::new(Bytes::new())).unwrap(),
    }
}
