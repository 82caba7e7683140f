//! How `forward` reaches an upstream: pooled HTTP/1.1 over TCP (plain, or TLS with the upstream's
//! own CA, client certificate and name) or over a Unix socket (GitLab Workhorse's), and the response
//! body that holds a `max_connections` permit until it ends.

use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::config::UpstreamConfig;
use crate::edge::body::Body;

/// How requests reach an upstream: TCP (plain or TLS), or a Unix socket.
pub(crate) enum Transport {
    Tcp(Client<HttpsConnector<HttpConnector>, Body>),
    Unix(Client<UnixConnector, Body>),
}

impl Transport {
    pub fn request(&self, request: Request<Body>) -> hyper_util::client::legacy::ResponseFuture {
        match self {
            Transport::Tcp(client) => client.request(request),
            Transport::Unix(client) => client.request(request),
        }
    }
}

/// Connects to one Unix socket whatever the request's URI names.
#[derive(Clone)]
pub(crate) struct UnixConnector {
    path: Arc<std::path::PathBuf>,
    timeout: Duration,
}

impl tower_service::Service<Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (path, timeout) = (self.path.clone(), self.timeout);
        Box::pin(async move {
            let connect = tokio::net::UnixStream::connect(&*path);
            let stream = tokio::time::timeout(timeout, connect).await.map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{}: connect timed out", path.display()))
            })??;
            Ok(TokioIo::new(stream))
        })
    }
}

impl Transport {
    /// The pooled client for an upstream at `scheme` (TLS for `https`, with `config.tls`), or at the
    /// Unix socket `socket`.
    ///
    /// # Errors
    /// A TLS file that does not load, a `server_name` that is no name.
    pub fn new(
        config: &UpstreamConfig,
        scheme: &Scheme,
        socket: Option<std::path::PathBuf>,
    ) -> Result<Transport, String> {
        let connect_timeout = Duration::from_secs(config.connect_timeout_secs);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(config.pool_idle_timeout_secs))
            .pool_timer(TokioTimer::new());
        Ok(match socket {
            Some(path) => {
                Transport::Unix(builder.build(UnixConnector { path: Arc::new(path), timeout: connect_timeout }))
            }
            None => {
                let mut http = HttpConnector::new();
                http.set_connect_timeout(Some(connect_timeout));
                http.set_nodelay(true);
                http.enforce_http(false);
                let tls = config.tls.clone().unwrap_or_default();
                let client_auth = tls.client_cert.as_deref().zip(tls.client_key.as_deref());
                // A plain http:// upstream never uses it: no trust store is loaded for one.
                let rustls = if *scheme == Scheme::HTTPS {
                    crate::infra::tls::client_config_with(tls.ca_file.as_deref(), client_auth)?
                } else {
                    crate::infra::tls::unused_client_config()?
                };
                let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(rustls).https_or_http();
                let https = match &tls.server_name {
                    Some(name) => {
                        let name = rustls_pki_types::ServerName::try_from(name.clone())
                            .map_err(|e| format!("tls.server_name {name:?}: {e}"))?;
                        https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
                    }
                    None => https,
                };
                Transport::Tcp(builder.build(https.enable_http1().wrap_connector(http)))
            }
        })
    }
}

/// A response body that holds its upstream's connection permit until it ends or is dropped.
pub(crate) struct Holding {
    pub body: Body,
    /// Held, never read: dropping it frees the connection.
    pub _permit: tokio::sync::OwnedSemaphorePermit,
}

impl hyper::body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = crate::edge::body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
