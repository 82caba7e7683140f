//! The network half of key fetching: one conditional HTTPS GET (`If-None-Match`, `Cache-Control:
//! max-age`, a size limit) behind the [`Fetch`] trait, so the freshness state machine in `source`
//! can be tested against a fake. Only `https://` URLs are fetched.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::token::keys::{KeySetError, MAX_JWKS_BYTES};

/// Why a fetch failed (the last good set stays).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Keys(#[from] KeySetError),
    #[error("{url}: {message}")]
    Http { url: String, message: String },
}

impl FetchError {
    pub fn http(url: impl ToString, message: impl Into<String>) -> FetchError {
        FetchError::Http { url: url.to_string(), message: message.into() }
    }
}

/// One answer: status, validator, freshness and body (at most [`MAX_JWKS_BYTES`]).
pub struct Fetched {
    pub status: StatusCode,
    pub etag: Option<HeaderValue>,
    pub max_age: Option<Duration>,
    pub body: Bytes,
}

pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Fetched, FetchError>> + Send + 'a>>;

/// A GET of a key document, conditional on `etag` when given.
pub trait Fetch: Send + Sync {
    fn get<'a>(&'a self, url: &'a Uri, etag: Option<HeaderValue>) -> FetchFuture<'a>;
}

/// The real fetcher: rustls with the system roots or one CA file, HTTP/1.1, https only.
pub struct HttpsFetch {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl HttpsFetch {
    /// # Errors
    /// An unreadable CA file.
    pub fn new(ca_file: Option<&std::path::Path>) -> Result<HttpsFetch, FetchError> {
        let tls = crate::infra::tls::client_config(ca_file).map_err(|e| FetchError::http("key source", e))?;
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        Ok(HttpsFetch { client: Client::builder(TokioExecutor::new()).build(connector) })
    }
}

impl Fetch for HttpsFetch {
    fn get<'a>(&'a self, url: &'a Uri, etag: Option<HeaderValue>) -> FetchFuture<'a> {
        Box::pin(async move {
            let mut request = Request::get(url.clone()).header(header::ACCEPT, "application/json");
            if let Some(etag) = etag {
                request = request.header(header::IF_NONE_MATCH, etag);
            }
            let request = request.body(Empty::new()).map_err(|e| FetchError::http(url, e.to_string()))?;
            let response =
                self.client.request(request).await.map_err(|e| FetchError::http(url, crate::error::chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| FetchError::http(url, format!("reading the body: {}", crate::error::chain(&*e))))?
                .to_bytes();
            Ok(Fetched {
                status: parts.status,
                etag: parts.headers.get(header::ETAG).cloned(),
                max_age: max_age(&parts.headers),
                body,
            })
        })
    }
}

/// Parses an `https://` URL; anything else is refused.
///
/// # Errors
/// Not a URL, or not https.
pub fn parse_https(url: &str) -> Result<Uri, FetchError> {
    let uri: Uri = url.parse().map_err(|e| FetchError::http(url, format!("not a URL: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(FetchError::http(url, "only https:// key sources are fetched"));
    }
    Ok(uri)
}

/// Parses a configured `jwks_url`: `https://`, or plain `http://` to a loopback address (GitLab's
/// Puma on the same host). A URL a discovery document names is held to [`parse_https`].
///
/// # Errors
/// Not a URL, or neither.
pub fn parse_configured(url: &str) -> Result<Uri, FetchError> {
    let uri: Uri = url.parse().map_err(|e| FetchError::http(url, format!("not a URL: {e}")))?;
    if !crate::config::https_or_loopback(&uri) {
        return Err(FetchError::http(url, "only https:// key sources (or http:// on a loopback address) are fetched"));
    }
    Ok(uri)
}

/// `Cache-Control: max-age=N`, if any.
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|directive| directive.trim().strip_prefix("max-age=")?.parse().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        let mut h = http::HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=120, must-revalidate"));
        assert_eq!(max_age(&h), Some(Duration::from_secs(120)));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        assert_eq!(max_age(&h), None);
    }

    #[test]
    fn only_https_is_fetched() {
        assert!(parse_https("https://gitlab.example.com/oauth/discovery/keys").is_ok());
        for bad in ["http://gitlab.example.com/keys", "file:///etc/passwd", "not a url"] {
            assert!(parse_https(bad).is_err(), "{bad}");
        }
        assert!(parse_configured("http://127.0.0.1:8080/oauth/discovery/keys").is_ok());
        assert!(parse_configured("http://gitlab.example.com/oauth/discovery/keys").is_err());
    }
}
