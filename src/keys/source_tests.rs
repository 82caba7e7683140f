//! The key-source state machine against a fake fetcher and a paused clock: single flight, cooldown,
//! staleness, conditional fetches.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test fixtures may fail loudly

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use super::*;
use crate::infra::metrics::Metrics;
use crate::keys::fetch::{FetchFuture, Fetched};
use crate::token::mint::Signer;
use crate::token::Alg;

/// Answers every GET with the current document (or an error), after `delay`; counts calls and
/// remembers the last `If-None-Match` it saw.
struct FakeFetch {
    calls: AtomicUsize,
    body: ArcSwapOption<Bytes>,
    etag_seen: ArcSwapOption<HeaderValue>,
    /// The document's version, its ETag `"v<version>"`.
    version: AtomicUsize,
    delay: Duration,
}

impl FakeFetch {
    fn publish(&self, body: Option<Bytes>) {
        self.version.fetch_add(1, Ordering::SeqCst);
        self.body.store(body.map(Arc::new));
    }
}

impl Fetch for Arc<FakeFetch> {
    fn get<'a>(&'a self, url: &'a Uri, etag: Option<HeaderValue>) -> FetchFuture<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.etag_seen.store(etag.clone().map(Arc::new));
            let body = self
                .body
                .load_full()
                .map(|b| (*b).clone())
                .ok_or_else(|| FetchError::http(url, "connection refused"))?;
            let current = HeaderValue::from_str(&format!("\"v{}\"", self.version.load(Ordering::SeqCst))).unwrap();
            let status = if etag.as_ref() == Some(&current) { StatusCode::NOT_MODIFIED } else { StatusCode::OK };
            Ok(Fetched { status, etag: Some(current), max_age: None, body })
        })
    }
}

fn jwks() -> Bytes {
    let (signer, _) = Signer::generate(Alg::ES256).unwrap();
    Bytes::from(signer.jwks(&signer.thumbprint()).to_string())
}

fn source(delay: Duration) -> (Arc<KeySource>, Arc<FakeFetch>) {
    let config: IssuerConfig = serde_yaml::from_str(
        "{name: t, iss: 'https://t', audiences: [a], jwks_url: 'https://t/keys', unknown_kid_cooldown_secs: 30, max_staleness_secs: 60}",
    )
    .unwrap();
    let fake = Arc::new(FakeFetch {
        calls: AtomicUsize::new(0),
        body: ArcSwapOption::from_pointee(jwks()),
        etag_seen: ArcSwapOption::empty(),
        version: AtomicUsize::new(1),
        delay,
    });
    let kind = Kind::Url("https://t/keys".parse().unwrap());
    let source = KeySource::new(&config, kind, Some(Box::new(fake.clone())), Metrics::new().issuer("t"));
    (Arc::new(source), fake)
}

#[tokio::test(start_paused = true)]
async fn concurrent_unknown_kids_share_one_fetch() {
    let (source, fake) = source(Duration::from_millis(200));
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn({
                let source = source.clone();
                async move { source.refetch_for_unknown_kid().await }
            })
        })
        .collect();
    let mut changed = 0;
    for waiter in waiters {
        changed += usize::from(waiter.await.unwrap());
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "single flight");
    assert_eq!(changed, 20, "every waiter learns the set changed and verifies again");
}

#[tokio::test(start_paused = true)]
async fn unknown_kids_within_the_cooldown_fetch_nothing() {
    let (source, fake) = source(Duration::ZERO);
    assert!(source.refetch_for_unknown_kid().await);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(!source.refetch_for_unknown_kid().await);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "suppressed inside the cooldown");
    tokio::time::advance(Duration::from_secs(2)).await;
    fake.publish(Some(jwks()));
    assert!(source.refetch_for_unknown_kid().await, "a rotated set after the cooldown");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_fetch_keeps_the_last_good_set_until_it_is_stale() {
    let (source, fake) = source(Duration::ZERO);
    let now = unix_now();
    assert!(source.state().is_stale(now), "nothing loaded yet: fail closed");
    source.fetch().await.unwrap();
    let generation = source.state().current().generation;
    fake.publish(None);
    assert!(source.fetch().await.is_err());
    assert_eq!(source.state().current().generation, generation, "last good set kept");
    assert!(source.last_error().is_some_and(|e| e.contains("connection refused")));
    assert!(!source.state().is_stale(now + 60));
    assert!(source.state().is_stale(now + 62), "stale after max_staleness_secs without a confirmation");
}

#[tokio::test(start_paused = true)]
async fn the_etag_is_sent_back_and_not_modified_confirms_the_set() {
    let (source, fake) = source(Duration::ZERO);
    assert_eq!(source.fetch().await.unwrap().0, FetchOutcome::Updated);
    let generation = source.state().current().generation;
    assert_eq!(source.fetch().await.unwrap().0, FetchOutcome::NotModified);
    assert_eq!(fake.etag_seen.load_full().map(|e| e.to_str().unwrap().to_owned()), Some("\"v1\"".into()));
    assert_eq!(source.state().current().generation, generation);
}
