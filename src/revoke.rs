//! Revocations — the token dies when its job ends. A set of revoked `jti`s and job ids, each with an
//! expiry (when every token it could match has expired anyway), checked on every request, cached
//! tokens included. Persisted as JSON lines in an append-only file: each revocation is fsynced before
//! it is acknowledged, replayed at start, and the file is compacted (expired entries dropped, written to
//! a temporary file and renamed) at start and whenever it grows to twice the live set.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::token::claims::Claims;

/// What a revocation names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Revoked {
    Jti { jti: String },
    Job { job_id: u64 },
}

/// One revocation as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    #[serde(flatten)]
    pub what: Revoked,
    /// Seconds since the epoch after which the entry can be forgotten.
    pub expires_at: i64,
}

pub struct Revocations {
    jtis: DashMap<String, i64>,
    jobs: DashMap<u64, i64>,
    file: Option<(PathBuf, tokio::sync::Mutex<tokio::fs::File>)>,
    lines_on_disk: AtomicUsize,
}

impl Revocations {
    /// An in-memory set (no persistence).
    pub fn in_memory() -> Revocations {
        Revocations { jtis: DashMap::new(), jobs: DashMap::new(), file: None, lines_on_disk: AtomicUsize::new(0) }
    }

    /// Replays `path` (if it exists), drops expired entries, rewrites it compacted, and keeps it open
    /// for appending. Lines that do not parse (a torn last write) are skipped with a warning.
    ///
    /// # Errors
    /// The file cannot be read, rewritten or opened.
    pub async fn open(path: &Path, now: i64) -> std::io::Result<Revocations> {
        let set = Revocations::in_memory();
        match tokio::fs::read_to_string(path).await {
            Ok(text) => {
                for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    match serde_json::from_str::<Revocation>(line) {
                        Ok(r) => set.insert(&r),
                        Err(e) => tracing::warn!("{}:{}: skipped revocation line: {e}", path.display(), i + 1),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        set.forget_expired(now);
        let file = rewrite(path, &set.list(now)).await?;
        set.lines_on_disk.store(set.len(), Ordering::Relaxed);
        Ok(Revocations { file: Some((path.to_owned(), tokio::sync::Mutex::new(file))), ..set })
    }

    /// Whether the token behind `claims` is revoked (by `jti` or by job id) at `now`.
    pub fn is_revoked(&self, claims: &Claims, now: i64) -> bool {
        let live = |expires_at: i64| expires_at >= now;
        self.jobs.get(&claims.job_id).is_some_and(|e| live(*e))
            || claims.jti.as_deref().is_some_and(|jti| self.jtis.get(jti).is_some_and(|e| live(*e)))
    }

    /// Revokes at once in memory, then appends and fsyncs; returns only when the entry is durable.
    ///
    /// # Errors
    /// The append or the fsync failed (the revocation still holds in memory until restart).
    pub async fn revoke(&self, revocation: Revocation, now: i64) -> std::io::Result<()> {
        self.insert(&revocation);
        let Some((path, file)) = &self.file else { return Ok(()) };
        let mut file = file.lock().await;
        let mut line = serde_json::to_vec(&revocation).map_err(std::io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line).await?;
        file.sync_data().await?;
        let lines = self.lines_on_disk.fetch_add(1, Ordering::Relaxed) + 1;
        if lines > 2 * self.len() + 1000 {
            self.forget_expired(now);
            *file = rewrite(path, &self.list(now)).await?;
            self.lines_on_disk.store(self.len(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// The live revocations.
    pub fn list(&self, now: i64) -> Vec<Revocation> {
        let jobs = self.jobs.iter().map(|e| Revocation { what: Revoked::Job { job_id: *e.key() }, expires_at: *e.value() });
        let jtis = self.jtis.iter().map(|e| Revocation { what: Revoked::Jti { jti: e.key().clone() }, expires_at: *e.value() });
        jobs.chain(jtis).filter(|r| r.expires_at >= now).collect()
    }

    pub fn len(&self) -> usize {
        self.jobs.len() + self.jtis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, r: &Revocation) {
        // Keep the later expiry when the same thing is revoked twice.
        match &r.what {
            Revoked::Job { job_id } => {
                self.jobs.entry(*job_id).and_modify(|e| *e = (*e).max(r.expires_at)).or_insert(r.expires_at);
            }
            Revoked::Jti { jti } => {
                self.jtis.entry(jti.clone()).and_modify(|e| *e = (*e).max(r.expires_at)).or_insert(r.expires_at);
            }
        }
    }

    fn forget_expired(&self, now: i64) {
        self.jobs.retain(|_, e| *e >= now);
        self.jtis.retain(|_, e| *e >= now);
    }
}

/// Writes `entries` to a temporary file, fsyncs it, renames it over `path`, and reopens for appending.
async fn rewrite(path: &Path, entries: &[Revocation]) -> std::io::Result<tokio::fs::File> {
    let tmp = path.with_extension("compacting");
    let mut text = Vec::new();
    for entry in entries {
        serde_json::to_writer(&mut text, entry).map_err(std::io::Error::other)?;
        text.push(b'\n');
    }
    let mut file = tokio::fs::File::create(&tmp).await?;
    file.write_all(&text).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path).await?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::File::open(dir).await?.sync_all().await?;
    }
    tokio::fs::OpenOptions::new().append(true).open(path).await
}

/// GitLab job statuses after which the job's tokens must die.
pub fn is_finished(status: &str) -> bool {
    matches!(status, "success" | "failed" | "canceled" | "skipped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn persisted_replayed_and_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revocations.log");
        let set = Revocations::open(&path, 100).await.unwrap();
        set.revoke(Revocation { what: Revoked::Job { job_id: 7 }, expires_at: 1000 }, 100).await.unwrap();
        set.revoke(Revocation { what: Revoked::Jti { jti: "j-1".into() }, expires_at: 150 }, 100).await.unwrap();
        set.revoke(Revocation { what: Revoked::Job { job_id: 7 }, expires_at: 900 }, 100).await.unwrap();
        drop(set);
        std::fs::OpenOptions::new().append(true).open(&path).and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"job_id\": 8, \"exp")).unwrap();

        let set = Revocations::open(&path, 200).await.unwrap();
        assert_eq!(set.list(200), vec![Revocation { what: Revoked::Job { job_id: 7 }, expires_at: 1000 }]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "compacted: {text}");
    }
}
