//! File watching: the certificate pair, JWKS files and the policy folder. Any creation, write,
//! rename or removal there (never a mere read) triggers one debounced reload, which keeps the last good
//! state of whatever fails to load. Writers should rename a temporary file into place.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::reload::Reloader;

/// Quiet time before reloading, so an editor's burst of writes causes one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Starts watching; the returned watcher must be kept alive.
///
/// # Errors
/// The platform watcher cannot be created or a folder cannot be watched.
pub fn start(config: &Config, reloader: Arc<Reloader>) -> notify::Result<RecommendedWatcher> {
    let files: Vec<PathBuf> = [config.tls.cert.clone(), config.tls.key.clone()]
        .into_iter()
        .chain(config.issuers.iter().filter_map(|i| i.jwks_file.clone()))
        .collect();
    let policy_dir = config.policy_dir.clone();
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let interesting = {
        let (files, policy_dir) = (files.clone(), policy_dir.clone());
        move |path: &Path| files.iter().any(|f| f == path) || path.parent() == Some(policy_dir.as_path())
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let mutating = matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any);
        if mutating && event.paths.iter().any(|p| interesting(p)) {
            let _ = tx.try_send(()); // a reload is already queued when full
        }
    })?;
    let mut folders: Vec<PathBuf> = files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
    folders.push(policy_dir);
    folders.sort();
    folders.dedup();
    for folder in &folders {
        watcher.watch(folder, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let _ = reloader.reload("watch");
        }
    });
    Ok(watcher)
}
