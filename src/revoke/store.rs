//! The persistent revocation store: JSON lines in an append-only file. Each revocation is applied in
//! memory at once, then appended and fsynced before it is acknowledged; the file is replayed at start
//! and compacted (expired entries dropped, written to a temporary file and renamed) at start and
//! whenever it grows to twice the live set. One process owns the file: it holds an exclusive lock on
//! `<file>.lock` from before the first read until it exits, so a second `jobgate serve` on the same
//! config refuses to start instead of rewriting the file under the first one. With `revocations.redis`
//! the set is also shared with every replica (`shared`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::shared::{Shared, Sharing};
use super::{Revocation, RevocationSet};
use crate::config::RedisConfig;

pub struct Revocations {
    set: Arc<RevocationSet>,
    file: Option<(PathBuf, tokio::sync::Mutex<tokio::fs::File>)>,
    /// Redis, when revocations are shared between replicas.
    shared: Option<Arc<Shared>>,
    lines_on_disk: AtomicUsize,
    /// The exclusive lock on `<file>.lock`, released when the process ends.
    _lock: Option<std::fs::File>,
}

impl Revocations {
    /// An in-memory set (no persistence).
    pub fn in_memory() -> Revocations {
        Revocations { set: Arc::default(), file: None, shared: None, lines_on_disk: AtomicUsize::new(0), _lock: None }
    }

    /// Replays `path` (if it exists), drops expired entries, rewrites it compacted, and keeps it open
    /// for appending.
    ///
    /// # Errors
    /// The file cannot be read, rewritten or opened.
    pub async fn open(path: &Path, now: i64) -> std::io::Result<Revocations> {
        let lock = lock(path)?;
        let set = replay(path, now).await?;
        let file = rewrite(path, &set.list(now)).await?;
        let lines_on_disk = AtomicUsize::new(set.len());
        let file = Some((path.to_owned(), tokio::sync::Mutex::new(file)));
        Ok(Revocations { set: Arc::new(set), file, shared: None, lines_on_disk, _lock: Some(lock) })
    }

    /// Shares this set with every replica following the same Redis (see [`Shared`]); the caller
    /// starts it with [`Shared::start`].
    ///
    /// # Errors
    /// A bad URL or an unreadable password file.
    pub fn share(mut self, config: &RedisConfig) -> Result<Revocations, String> {
        self.shared = Some(Shared::new(config, self.set.clone())?);
        Ok(self)
    }

    /// The set `enforce` checks.
    pub fn set(&self) -> &RevocationSet {
        &self.set
    }

    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// Revokes at once in memory, then appends and fsyncs, then shares it; returns only when the
    /// entry is durable in the file, and says whether Redis has it too (`None`: not shared).
    ///
    /// # Errors
    /// The append or the fsync failed (the revocation still holds in memory until restart).
    pub async fn revoke(&self, revocation: Revocation, now: i64) -> std::io::Result<Option<Sharing>> {
        self.set.insert(&revocation);
        self.persist(&revocation, now).await?;
        Ok(match &self.shared {
            Some(shared) => Some(shared.share(&revocation).await),
            None => None,
        })
    }

    async fn persist(&self, revocation: &Revocation, now: i64) -> std::io::Result<()> {
        let Some((path, file)) = &self.file else { return Ok(()) };
        let mut file = file.lock().await;
        let mut line = serde_json::to_vec(revocation).map_err(std::io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line).await?;
        file.sync_data().await?;
        let lines = self.lines_on_disk.fetch_add(1, Ordering::Relaxed) + 1;
        if lines > 2 * self.set.len() + 1000 {
            self.set.forget_expired(now);
            *file = rewrite(path, &self.set.list(now)).await?;
            self.lines_on_disk.store(self.set.len(), Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Takes the store's exclusive lock, or says who holds it.
fn lock(path: &Path) -> std::io::Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(std::io::Error::other(format!(
            "{} is in use by another jobgate process (lock {}): one process owns a revocations file",
            path.display(),
            lock_path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Reads the live revocations in `path` (none when it does not exist) without writing anything. Lines
/// that do not parse (a torn last write) are skipped with a warning.
///
/// # Errors
/// The file exists but cannot be read.
pub async fn replay(path: &Path, now: i64) -> std::io::Result<RevocationSet> {
    let set = RevocationSet::default();
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
    Ok(set)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revoke::Revoked;

    #[tokio::test]
    async fn a_second_owner_is_refused_and_the_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revocations.log");
        let first = Revocations::open(&path, 100).await.unwrap();
        first.revoke(Revocation { what: Revoked::Job { job_id: 7 }, expires_at: 1000 }, 100).await.unwrap();
        let before = std::fs::metadata(&path).unwrap();
        let err = Revocations::open(&path, 100).await.err().unwrap().to_string();
        assert!(err.contains("in use by another jobgate process"), "{err}");
        let after = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(before.ino(), after.ino(), "not rewritten by the refused opener");
        drop(first);
        assert_eq!(Revocations::open(&path, 100).await.unwrap().set().len(), 1, "the owner's revocations survive");
    }

    #[tokio::test]
    async fn persisted_replayed_and_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revocations.log");
        let set = Revocations::open(&path, 100).await.unwrap();
        set.revoke(Revocation { what: Revoked::Job { job_id: 7 }, expires_at: 1000 }, 100).await.unwrap();
        set.revoke(Revocation { what: Revoked::Jti { jti: "j-1".into() }, expires_at: 150 }, 100).await.unwrap();
        set.revoke(Revocation { what: Revoked::Job { job_id: 7 }, expires_at: 900 }, 100).await.unwrap();
        drop(set);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"job_id\": 8, \"exp"))
            .unwrap();

        let set = Revocations::open(&path, 200).await.unwrap();
        assert_eq!(set.set().list(200), vec![Revocation { what: Revoked::Job { job_id: 7 }, expires_at: 1000 }]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "compacted: {text}");
    }
}
