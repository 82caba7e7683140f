//! How one issuer's keys stay fresh: a JWKS file (re-read on change), an HTTPS URL or OIDC discovery
//! (polled, honouring `Cache-Control: max-age` and `ETag`). An unknown `kid` triggers at most one
//! refetch (single flight), then a cooldown. A fetch that fails keeps the last good set; the
//! [`KeyState`] it writes turns stale after the maximum staleness and the issuer then fails closed.
//! The request path only reads the [`KeyState`]; it awaits this module only for an unknown-kid refetch.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::{HeaderValue, StatusCode, Uri};
use tokio::time::Instant;

use super::fetch::{parse_configured, parse_https, Fetch, FetchError, HttpsFetch};
use crate::clock::unix_now;
use crate::config::IssuerConfig;
use crate::infra::metrics::{FetchOutcome, IssuerStats};
use crate::token::keys::{Installed, KeySetError, KeyState};

enum Kind {
    File(PathBuf),
    Url(Uri),
    Discovery { issuer: String, jwks_uri: ArcSwapOption<Uri> },
}

/// An issuer's key source and everything that keeps its [`KeyState`] current.
pub struct KeySource {
    name: String,
    kind: Kind,
    state: Arc<KeyState>,
    etag: ArcSwapOption<HeaderValue>,
    fetcher: Option<Box<dyn Fetch>>,
    refresh: Duration,
    fetch_timeout: Duration,
    cooldown: Duration,
    /// Held while an unknown-kid refetch runs (single flight); holds the time of the last one.
    refetch: tokio::sync::Mutex<Option<Instant>>,
    last_error: ArcSwap<Option<String>>,
    stats: IssuerStats,
}

impl KeySource {
    /// Builds the source and loads it once: a file must load; a URL is fetched when `fetch` says so,
    /// and one that cannot be fetched yet starts empty (every token fails closed) and is retried by
    /// [`KeySource::poll`].
    ///
    /// # Errors
    /// An unreadable or unusable JWKS file, or an unreadable CA file.
    pub async fn start(config: &IssuerConfig, stats: IssuerStats, fetch: bool) -> Result<Arc<KeySource>, FetchError> {
        let (kind, fetcher): (Kind, Option<Box<dyn Fetch>>) = match (&config.jwks_file, &config.jwks_url) {
            (Some(path), _) => (Kind::File(path.clone()), None),
            (None, Some(url)) => {
                (Kind::Url(parse_configured(url)?), Some(Box::new(HttpsFetch::new(config.ca_file.as_deref())?)))
            }
            (None, None) => {
                let issuer = config.iss.trim_end_matches('/').to_owned();
                (
                    Kind::Discovery { issuer, jwks_uri: ArcSwapOption::empty() },
                    Some(Box::new(HttpsFetch::new(config.ca_file.as_deref())?)),
                )
            }
        };
        let source = Arc::new(KeySource::new(config, kind, fetcher, stats));
        if source.is_polled() {
            if fetch {
                // A failure is logged by `record`; `poll` retries.
                let _ = source.fetch().await;
            }
        } else {
            source.reload_file()?;
        }
        Ok(source)
    }

    fn new(config: &IssuerConfig, kind: Kind, fetcher: Option<Box<dyn Fetch>>, stats: IssuerStats) -> KeySource {
        let polled = !matches!(kind, Kind::File(_));
        KeySource {
            name: config.name.clone(),
            kind,
            state: Arc::new(KeyState::empty(
                polled.then(|| i64::try_from(config.max_staleness_secs).unwrap_or(i64::MAX)),
            )),
            etag: ArcSwapOption::empty(),
            fetcher,
            refresh: Duration::from_secs(config.refresh_secs.max(1)),
            fetch_timeout: Duration::from_secs(config.fetch_timeout_secs.max(1)),
            cooldown: Duration::from_secs(config.unknown_kid_cooldown_secs),
            refetch: tokio::sync::Mutex::new(None),
            last_error: ArcSwap::from_pointee(None),
            stats,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What verification reads.
    pub fn state(&self) -> &Arc<KeyState> {
        &self.state
    }

    pub fn is_polled(&self) -> bool {
        !matches!(self.kind, Kind::File(_))
    }

    pub fn last_error(&self) -> Option<String> {
        (*self.last_error.load_full()).clone()
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

    /// Fetches a URL or discovery source once, within the fetch timeout.
    ///
    /// # Errors
    /// Network, HTTP or key-set errors; the last good set stays.
    pub async fn fetch(&self) -> Result<(FetchOutcome, Option<Duration>), FetchError> {
        let result = match tokio::time::timeout(self.fetch_timeout, self.fetch_once()).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::http(&self.name, "fetch timed out")),
        };
        self.record(result.as_ref().map(|(o, _)| *o).map_err(|e| match e {
            FetchError::Keys(k) => (failure(k), e.to_string()),
            FetchError::Http { .. } => (FetchOutcome::Failed, e.to_string()),
        }));
        result
    }

    async fn fetch_once(&self) -> Result<(FetchOutcome, Option<Duration>), FetchError> {
        let Some(fetcher) = &self.fetcher else { return Ok((FetchOutcome::Unchanged, None)) };
        let url = match &self.kind {
            Kind::File(_) => return Ok((FetchOutcome::Unchanged, None)),
            Kind::Url(url) => url.clone(),
            Kind::Discovery { issuer, jwks_uri } => match jwks_uri.load_full() {
                Some(uri) => (*uri).clone(),
                None => {
                    let uri = discover(fetcher.as_ref(), issuer).await?;
                    jwks_uri.store(Some(Arc::new(uri.clone())));
                    uri
                }
            },
        };
        let fetched = fetcher.get(&url, self.etag.load_full().map(|e| (*e).clone())).await?;
        if fetched.status == StatusCode::NOT_MODIFIED {
            self.state.confirm(unix_now());
            return Ok((FetchOutcome::NotModified, fetched.max_age));
        }
        if fetched.status != StatusCode::OK {
            return Err(FetchError::http(&url, format!("status {}", fetched.status)));
        }
        let outcome = self.install(&url.to_string(), &fetched.body)?;
        self.etag.store(fetched.etag.map(Arc::new));
        Ok((outcome, fetched.max_age))
    }

    fn install(&self, origin: &str, bytes: &[u8]) -> Result<FetchOutcome, KeySetError> {
        let installed = self.state.install(origin, bytes, unix_now())?;
        if installed == Installed::Unchanged {
            return Ok(FetchOutcome::Unchanged);
        }
        let current = self.state.current();
        for skipped in &current.set.skipped {
            tracing::warn!(issuer = %self.name, "key skipped: {skipped}");
        }
        self.stats.keys_loaded.set(i64::try_from(current.set.len()).unwrap_or(i64::MAX));
        Ok(FetchOutcome::Updated)
    }

    fn record(&self, result: Result<FetchOutcome, (FetchOutcome, String)>) {
        match result {
            Ok(outcome) => {
                self.stats.fetched(outcome);
                self.stats.key_set_fetched.set(unix_now() as f64);
                self.last_error.store(Arc::new(None));
            }
            Err((outcome, message)) => {
                self.stats.fetched(outcome);
                // A file's error goes to whoever reloads it (start, or the reload that reports it).
                let never_loaded = self.state.current().generation == 0;
                match (self.is_polled(), never_loaded) {
                    (false, _) => {}
                    (true, true) => {
                        tracing::error!(issuer = %self.name, "no key set loaded yet, every token of this issuer is refused until one loads: {message}")
                    }
                    (true, false) => {
                        tracing::warn!(issuer = %self.name, "key set not updated, keeping the last good one: {message}")
                    }
                }
                self.last_error.store(Arc::new(Some(message)));
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
        let generation = self.state.current().generation;
        let mut last = self.refetch.lock().await;
        if self.state.current().generation != generation {
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

/// OIDC discovery: the issuer's `jwks_uri`.
async fn discover(fetcher: &dyn Fetch, issuer: &str) -> Result<Uri, FetchError> {
    let url = parse_https(&format!("{issuer}/.well-known/openid-configuration"))?;
    let fetched = fetcher.get(&url, None).await?;
    if fetched.status != StatusCode::OK {
        return Err(FetchError::http(&url, format!("status {}", fetched.status)));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&fetched.body).map_err(|e| FetchError::http(&url, format!("not JSON: {e}")))?;
    let jwks_uri = doc.get("jwks_uri").and_then(|v| v.as_str()).ok_or_else(|| FetchError::http(&url, "no jwks_uri"))?;
    parse_https(jwks_uri)
}

/// A file that cannot be read failed; one that reads but does not parse is invalid.
fn failure(e: &KeySetError) -> FetchOutcome {
    if matches!(e, KeySetError::Read { .. }) {
        FetchOutcome::Failed
    } else {
        FetchOutcome::Invalid
    }
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
