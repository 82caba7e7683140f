//! Where an issuer's keys come from and how they stay fresh: a JWKS file (reloaded on change), an
//! HTTPS URL or OIDC discovery (polled, honouring `Cache-Control: max-age` and `ETag`). An unknown `kid`
//! triggers at most one refetch (single-flight), then a cooldown. A fetch that fails keeps the last
//! good set until the maximum staleness, then the issuer fails closed. Nothing here runs on the hot
//! path except [`KeySource::current`] (one `ArcSwap` load) and the staleness check.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::cache::sha256;
use super::keys::{KeySet, KeySetError, MAX_JWKS_BYTES};
use crate::config::IssuerConfig;
use crate::metrics::{FetchOutcome, IssuerStats};

/// Key-set generations are unique across issuers, so a cached token names exactly the set it was
/// verified with.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// One loaded key set.
pub struct LoadedKeys {
    pub set: KeySet,
    pub generation: u64,
    digest: [u8; 32],
}

enum Kind {
    /// Never changes (tests and benches).
    Fixed,
    File(PathBuf),
    Url(Uri),
    Discovery { issuer: String, jwks_uri: ArcSwapOption<Uri> },
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An issuer's keys and everything that keeps them current.
pub struct KeySource {
    name: String,
    kind: Kind,
    current: ArcSwap<LoadedKeys>,
    /// Monotonic time of the last successful load, fetch or 304, for staleness.
    confirmed: ArcSwap<Instant>,
    etag: ArcSwapOption<HeaderValue>,
    client: Option<HttpsClient>,
    refresh: Duration,
    fetch_timeout: Duration,
    max_staleness: Duration,
    cooldown: Duration,
    /// Held while an unknown-kid refetch runs (single flight); holds the time of the last one.
    refetch: tokio::sync::Mutex<Option<Instant>>,
    last_error: ArcSwapOption<String>,
    pub stats: IssuerStats,
}

/// Why a fetch failed (the last good set stays).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Keys(#[from] KeySetError),
    #[error("{url}: {message}")]
    Http { url: String, message: String },
}

impl KeySource {
    /// Builds the source and loads it once: a file must load; a URL that cannot be fetched yet starts
    /// empty (every token fails closed) and is retried by [`KeySource::poll`].
    ///
    /// # Errors
    /// An unreadable or unusable JWKS file, or an unreadable CA file.
    pub async fn start(config: &IssuerConfig, stats: IssuerStats) -> Result<Arc<KeySource>, FetchError> {
        let kind = match (&config.jwks_file, &config.jwks_url) {
            (Some(path), _) => Kind::File(path.clone()),
            (None, Some(url)) => Kind::Url(parse_https(url)?),
            (None, None) => Kind::Discovery { issuer: config.iss.trim_end_matches('/').to_owned(), jwks_uri: ArcSwapOption::empty() },
        };
        let client = match kind {
            Kind::Fixed | Kind::File(_) => None,
            _ => Some(https_client(config.ca_file.as_deref())?),
        };
        let source = Arc::new(KeySource {
            name: config.name.clone(),
            kind,
            current: ArcSwap::from_pointee(LoadedKeys { set: KeySet::default(), generation: 0, digest: [0; 32] }),
            confirmed: ArcSwap::from_pointee(Instant::now()),
            etag: ArcSwapOption::empty(),
            client,
            refresh: Duration::from_secs(config.refresh_secs.max(1)),
            fetch_timeout: Duration::from_secs(config.fetch_timeout_secs.max(1)),
            max_staleness: Duration::from_secs(config.max_staleness_secs),
            cooldown: Duration::from_secs(config.unknown_kid_cooldown_secs),
            refetch: tokio::sync::Mutex::new(None),
            last_error: ArcSwapOption::empty(),
            stats,
        });
        match &source.kind {
            Kind::Fixed => {}
            Kind::File(_) => {
                source.reload_file()?;
            }
            _ => {
                if let Err(e) = source.fetch().await {
                    tracing::error!(issuer = %source.name, "initial key-set fetch failed (retrying): {e}");
                }
            }
        }
        Ok(source)
    }

    /// A source holding `set` forever (tests and benches).
    pub fn fixed(set: KeySet, stats: IssuerStats) -> Arc<KeySource> {
        Arc::new(KeySource {
            name: "fixed".into(),
            kind: Kind::Fixed,
            current: ArcSwap::from_pointee(LoadedKeys { set, generation: GENERATIONS.fetch_add(1, Ordering::Relaxed), digest: [0; 32] }),
            confirmed: ArcSwap::from_pointee(Instant::now()),
            etag: ArcSwapOption::empty(),
            client: None,
            refresh: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(10),
            max_staleness: Duration::MAX,
            cooldown: Duration::from_secs(30),
            refetch: tokio::sync::Mutex::new(None),
            last_error: ArcSwapOption::empty(),
            stats,
        })
    }

    /// The current key set (hot path: one atomic load).
    pub fn current(&self) -> arc_swap::Guard<Arc<LoadedKeys>> {
        self.current.load()
    }

    /// True when a fetched set has not been confirmed for longer than the maximum staleness, or when
    /// nothing was ever loaded. File sets never go stale: the file is the truth.
    pub fn is_stale(&self) -> bool {
        match self.kind {
            Kind::Fixed | Kind::File(_) => false,
            _ => self.current.load().generation == 0 || self.confirmed.load().elapsed() > self.max_staleness,
        }
    }

    pub fn is_polled(&self) -> bool {
        matches!(self.kind, Kind::Url(_) | Kind::Discovery { .. })
    }

    pub fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
    }

    /// Re-reads a file source; unchanged content keeps the generation (and the token cache).
    ///
    /// # Errors
    /// The file does not load; the last good set stays.
    pub fn reload_file(&self) -> Result<FetchOutcome, KeySetError> {
        let Kind::File(path) = &self.kind else { return Ok(FetchOutcome::Unchanged) };
        let name = path.display().to_string();
        let loaded = std::fs::read(path)
            .map_err(|source| KeySetError::Read { path: name.clone(), source })
            .and_then(|bytes| self.install(&name, &bytes));
        self.record(loaded.as_ref().map(|o| *o).map_err(|e| (failure(e), e.to_string())));
        loaded
    }

    /// Fetches a URL or discovery source once.
    ///
    /// # Errors
    /// Network, HTTP or key-set errors; the last good set stays.
    pub async fn fetch(&self) -> Result<(FetchOutcome, Option<Duration>), FetchError> {
        let result = match tokio::time::timeout(self.fetch_timeout, self.fetch_inner()).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Http { url: self.name.clone(), message: "fetch timed out".into() }),
        };
        self.record(result.as_ref().map(|(o, _)| *o).map_err(|e| match e {
            FetchError::Keys(k) => (failure(k), e.to_string()),
            FetchError::Http { .. } => (FetchOutcome::Failed, e.to_string()),
        }));
        result
    }

    async fn fetch_inner(&self) -> Result<(FetchOutcome, Option<Duration>), FetchError> {
        let url = match &self.kind {
            Kind::Fixed | Kind::File(_) => return Ok((FetchOutcome::Unchanged, None)),
            Kind::Url(url) => url.clone(),
            Kind::Discovery { issuer, jwks_uri } => match jwks_uri.load_full() {
                Some(uri) => (*uri).clone(),
                None => {
                    let uri = self.discover(issuer).await?;
                    jwks_uri.store(Some(Arc::new(uri.clone())));
                    uri
                }
            },
        };
        let (status, headers, body) = self.get(&url, true).await?;
        let max_age = max_age(&headers);
        if status == StatusCode::NOT_MODIFIED {
            self.confirmed.store(Arc::new(Instant::now()));
            return Ok((FetchOutcome::NotModified, max_age));
        }
        if status != StatusCode::OK {
            return Err(http_error(&url, format!("status {status}")));
        }
        let outcome = self.install(&url.to_string(), &body)?;
        self.etag.store(headers.get(header::ETAG).cloned().map(Arc::new));
        Ok((outcome, max_age))
    }

    async fn discover(&self, issuer: &str) -> Result<Uri, FetchError> {
        let url = parse_https(&format!("{issuer}/.well-known/openid-configuration"))?;
        let (status, _, body) = self.get(&url, false).await?;
        if status != StatusCode::OK {
            return Err(http_error(&url, format!("status {status}")));
        }
        let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| http_error(&url, format!("not JSON: {e}")))?;
        let jwks_uri = doc.get("jwks_uri").and_then(|v| v.as_str()).ok_or_else(|| http_error(&url, "no jwks_uri".into()))?;
        parse_https(jwks_uri)
    }

    async fn get(&self, url: &Uri, conditional: bool) -> Result<(StatusCode, http::HeaderMap, Bytes), FetchError> {
        let Some(client) = &self.client else { return Err(http_error(url, "no HTTPS client".into())) };
        let mut request = Request::get(url.clone()).header(header::ACCEPT, "application/json");
        if let (true, Some(etag)) = (conditional, self.etag.load_full()) {
            request = request.header(header::IF_NONE_MATCH, (*etag).clone());
        }
        let request = request.body(Empty::new()).map_err(|e| http_error(url, e.to_string()))?;
        let response = client.request(request).await.map_err(|e| http_error(url, format!("{e}")))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| http_error(url, format!("reading the body: {e}")))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// Parses and swaps in a new document; identical content keeps the current generation.
    fn install(&self, origin: &str, bytes: &[u8]) -> Result<FetchOutcome, KeySetError> {
        let digest = sha256(bytes);
        if self.current.load().digest == digest {
            self.confirmed.store(Arc::new(Instant::now()));
            return Ok(FetchOutcome::Unchanged);
        }
        let set = KeySet::from_jwks(origin, bytes)?;
        self.confirmed.store(Arc::new(Instant::now()));
        for skipped in &set.skipped {
            tracing::warn!(issuer = %self.name, "key skipped: {skipped}");
        }
        let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        self.stats.keys_loaded.set(i64::try_from(set.len()).unwrap_or(i64::MAX));
        self.current.store(Arc::new(LoadedKeys { set, generation, digest }));
        Ok(FetchOutcome::Updated)
    }

    fn record(&self, result: Result<FetchOutcome, (FetchOutcome, String)>) {
        match result {
            Ok(outcome) => {
                self.stats.fetched(outcome);
                self.stats.key_set_fetched.set(unix_seconds());
                self.last_error.store(None);
            }
            Err((outcome, message)) => {
                self.stats.fetched(outcome);
                tracing::warn!(issuer = %self.name, "key set not updated, keeping the last good one: {message}");
                self.last_error.store(Some(Arc::new(message)));
            }
        }
    }

    /// Called when a token names a `kid` the current set lacks. Single flight: concurrent callers
    /// wait for the one fetch. Within the cooldown after a refetch, nothing is fetched.
    /// Returns true when the key set changed, so the caller should verify once more.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        if !self.is_polled() {
            return false;
        }
        let generation = self.current.load().generation;
        let mut last = self.refetch.lock().await;
        if self.current.load().generation != generation {
            return true; // another request's refetch brought a new set while we waited
        }
        if last.is_some_and(|at| at.elapsed() < self.cooldown) {
            self.stats.unknown_kid_suppressed.inc();
            return false;
        }
        *last = Some(Instant::now());
        self.stats.unknown_kid_refetches.inc();
        matches!(self.fetch().await, Ok((FetchOutcome::Updated, _)))
    }

    /// Polls a URL or discovery source forever: at `max-age` when the server gives one (within
    /// 1 s ..= `refresh_secs`), else every `refresh_secs`; after a failure, sooner.
    pub async fn poll(self: Arc<Self>) {
        if !self.is_polled() {
            return;
        }
        loop {
            let wait = match self.fetch().await {
                Ok((_, max_age)) => max_age.map_or(self.refresh, |age| age.clamp(Duration::from_secs(1), self.refresh)),
                Err(_) => self.refresh.min(Duration::from_secs(10)),
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A file that cannot be read failed; one that reads but does not parse is invalid.
fn failure(e: &KeySetError) -> FetchOutcome {
    if matches!(e, KeySetError::Read { .. }) {
        FetchOutcome::Failed
    } else {
        FetchOutcome::Invalid
    }
}

fn parse_https(url: &str) -> Result<Uri, FetchError> {
    let uri: Uri = url.parse().map_err(|e| http_error_str(url, format!("not a URL: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(http_error_str(url, "only https:// key sources are fetched".into()));
    }
    Ok(uri)
}

fn http_error(url: &Uri, message: String) -> FetchError {
    http_error_str(&url.to_string(), message)
}

fn http_error_str(url: &str, message: String) -> FetchError {
    FetchError::Http { url: url.to_owned(), message }
}

fn https_client(ca_file: Option<&std::path::Path>) -> Result<HttpsClient, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| http_error_str(&path.display().to_string(), format!("CA file: {e}")))?;
            roots.add_parsable_certificates(certs);
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| http_error_str("TLS", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
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

fn unix_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
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
}
