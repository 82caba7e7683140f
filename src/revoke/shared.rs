//! Revocations shared by every replica through Redis. The set lives in a sorted set
//! `<prefix>:revocations` (member `job:<id>` or `jti:<jti>`, score its expiry; `ZADD GT` keeps the
//! later one), and each new revocation is also published on the channel of the same name. A replica
//! subscribes first, then replays the set, so nothing published in between is missed, and applies
//! what it hears to its own [`RevocationSet`]: the request path never waits on Redis.
//!
//! Redis unreachable: the replica keeps enforcing what it has; what it revokes meanwhile holds
//! locally at once and is queued, written when the link is back; after `unready_after_secs` without
//! Redis it reports not ready. A lost link is found by the connection closing or by a ping that gets
//! no answer within [`crate::infra::redis_link::TIMEOUT`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use redis::RedisResult;

use super::{Revocation, RevocationSet, Revoked};
use crate::config::RedisConfig;
use crate::infra::redis_link::{within, RedisLink};

const PING_EVERY: Duration = Duration::from_secs(2);
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// The state of the link to Redis, for `/-/ready` and metrics.
#[derive(Clone)]
struct Link {
    /// When the link was lost (or, before the first replay, when the replica started).
    down_since: Option<Instant>,
    /// Whether the set was replayed at least once since start.
    replayed: bool,
    last_error: Option<String>,
}

pub struct Shared {
    redis: RedisLink,
    key: String,
    set: Arc<RevocationSet>,
    /// Revocations made while Redis was unreachable, oldest first (admin path only), and how many.
    queued: tokio::sync::Mutex<Vec<Revocation>>,
    queued_len: AtomicUsize,
    link: ArcSwap<Link>,
    unready_after: Duration,
    replayed: tokio::sync::Notify,
    /// Revocations applied from the channel (other replicas' and our own).
    received: AtomicU64,
}

/// Where a revocation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Written to Redis: every replica has it within moments, and a restarted one replays it.
    Stored,
    /// Redis is unreachable: this replica holds it, Redis gets it when the link is back.
    Queued,
}

impl Shared {
    /// # Errors
    /// A URL that is not Redis's, or an unreadable password file.
    pub fn new(config: &RedisConfig, set: Arc<RevocationSet>) -> Result<Arc<Shared>, String> {
        Ok(Arc::new(Shared {
            redis: RedisLink::open(config)?,
            key: format!("{}:revocations", config.key_prefix),
            set,
            queued: tokio::sync::Mutex::new(Vec::new()),
            queued_len: AtomicUsize::new(0),
            link: ArcSwap::from_pointee(Link { down_since: Some(Instant::now()), replayed: false, last_error: None }),
            unready_after: Duration::from_secs(config.unready_after_secs),
            replayed: tokio::sync::Notify::new(),
            received: AtomicU64::new(0),
        }))
    }

    /// Starts following Redis and waits up to `wait` for the first replay (serving starts either way:
    /// without Redis, with what the replica has).
    pub async fn start(self: &Arc<Self>, wait: Duration) {
        let replayed = self.replayed.notified();
        tokio::spawn(self.clone().follow());
        let _ = tokio::time::timeout(wait, replayed).await;
    }

    /// Stores `revocation` in Redis and tells every replica; queues it when Redis cannot be reached
    /// (at once while the link is known to be down: the answer does not wait for a timeout).
    pub async fn share(&self, revocation: &Revocation) -> Sharing {
        let written = if self.connected() { self.write(std::slice::from_ref(revocation)).await } else { Err(closed()) };
        match written {
            Ok(()) => Sharing::Stored,
            Err(e) => {
                self.lost(&e);
                let mut queued = self.queued.lock().await;
                queued.push(revocation.clone());
                self.queued_len.store(queued.len(), Ordering::Relaxed);
                Sharing::Queued
            }
        }
    }

    /// Ready once replayed, and not without Redis for longer than `unready_after_secs`.
    pub fn ready(&self) -> bool {
        let link = self.link.load();
        link.replayed && link.down_since.is_none_or(|since| since.elapsed() < self.unready_after)
    }

    pub fn queued(&self) -> usize {
        self.queued_len.load(Ordering::Relaxed)
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn connected(&self) -> bool {
        self.link.load().down_since.is_none()
    }

    pub fn status(&self) -> serde_json::Value {
        let link = self.link.load();
        serde_json::json!({
            "connected": link.down_since.is_none(),
            "down_for_secs": link.down_since.map(|since| since.elapsed().as_secs()),
            "replayed": link.replayed,
            "queued": self.queued(),
            "last_error": link.last_error,
            "ready": self.ready(),
        })
    }

    /// Subscribes, replays, flushes the queue, then applies what is published; again after any loss.
    async fn follow(self: Arc<Self>) {
        loop {
            if let Err(e) = self.session().await {
                self.lost(&e);
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }

    async fn session(&self) -> RedisResult<()> {
        let pubsub = self.redis.pubsub().await?;
        let (mut sink, mut messages) = pubsub.split();
        within(sink.subscribe(&self.key)).await?;
        let replay: Vec<(String, f64)> = self
            .redis
            .query(
                redis::cmd("ZRANGEBYSCORE").arg(&self.key).arg(crate::clock::unix_now()).arg("+inf").arg("WITHSCORES"),
            )
            .await?;
        for (member, expires_at) in replay {
            if let Some(revocation) = from_member(&member, expires_at as i64) {
                self.set.insert(&revocation);
            }
        }
        self.flush_and_mark_up().await?;
        self.replayed.notify_waiters();
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { return Err(closed()) };
                    let applied = message.get_payload::<String>().ok().and_then(|payload| serde_json::from_str::<Revocation>(&payload).ok());
                    match applied {
                        Some(revocation) => {
                            self.set.insert(&revocation);
                            self.received.fetch_add(1, Ordering::Relaxed);
                        }
                        None => tracing::warn!("revocations: ignored a message that is not a revocation"),
                    }
                }
                _ = ping.tick() => {
                    within(sink.ping::<redis::Value>()).await?;
                    // A write may have failed while the subscription held: its queue goes now.
                    if !self.connected() || self.queued() > 0 {
                        self.flush_and_mark_up().await?;
                    }
                }
            }
        }
    }

    /// Writes the queue (keeping it on failure), then records the link as up.
    async fn flush_and_mark_up(&self) -> RedisResult<()> {
        let mut queued = self.queued.lock().await;
        self.write(&queued).await?;
        if !queued.is_empty() {
            tracing::info!(count = queued.len(), "queued revocations written to Redis");
            queued.clear();
            self.queued_len.store(0, Ordering::Relaxed);
        }
        drop(queued);
        let was = self.link.load_full();
        if was.down_since.is_some() {
            tracing::info!("revocations: following Redis");
        }
        self.link.store(Arc::new(Link { down_since: None, replayed: true, last_error: was.last_error.clone() }));
        Ok(())
    }

    /// `ZADD GT` and `PUBLISH` for each, in one transaction; expired members are dropped on the way.
    async fn write(&self, revocations: &[Revocation]) -> RedisResult<()> {
        if revocations.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for revocation in revocations {
            pipe.cmd("ZADD").arg(&self.key).arg("GT").arg(revocation.expires_at).arg(member(&revocation.what)).ignore();
            let message = serde_json::to_string(revocation)
                .map_err(|e| redis::RedisError::from((redis::ErrorKind::TypeError, "revocation", e.to_string())))?;
            pipe.cmd("PUBLISH").arg(&self.key).arg(message).ignore();
        }
        pipe.cmd("ZREMRANGEBYSCORE").arg(&self.key).arg("-inf").arg(format!("({}", crate::clock::unix_now())).ignore();
        self.redis.pipe(&pipe).await
    }

    fn lost(&self, error: &redis::RedisError) {
        let was = self.link.load_full();
        if was.down_since.is_none() {
            tracing::error!(error = %crate::error::chain(error), "revocations: lost Redis; enforcing what this replica holds, queueing new ones");
        }
        let down_since = was.down_since.or_else(|| Some(Instant::now()));
        self.link.store(Arc::new(Link { down_since, replayed: was.replayed, last_error: Some(error.to_string()) }));
    }
}

fn closed() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::IoError, "the connection to Redis is closed"))
}

fn member(what: &Revoked) -> String {
    match what {
        Revoked::Job { job_id } => format!("job:{job_id}"),
        Revoked::Jti { jti } => format!("jti:{jti}"),
    }
}

fn from_member(member: &str, expires_at: i64) -> Option<Revocation> {
    let what = match member.split_once(':')? {
        ("job", id) => Revoked::Job { job_id: id.parse().ok()? },
        ("jti", jti) if !jti.is_empty() => Revoked::Jti { jti: jti.to_owned() },
        _ => return None,
    };
    Some(Revocation { what, expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip() {
        for what in [Revoked::Job { job_id: 7 }, Revoked::Jti { jti: "a:b".into() }] {
            assert_eq!(from_member(&member(&what), 9), Some(Revocation { what, expires_at: 9 }));
        }
        assert_eq!(from_member("job:x", 9), None);
        assert_eq!(from_member("other", 9), None);
    }
}
