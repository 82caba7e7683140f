//! File watching: the certificate pair, JWKS files, the policy folder and its tests. Any event in
//! one of their folders (a write, a rename, a Kubernetes `..data` symlink swap) makes the watcher
//! compare a digest of what the files now hold with the last one; a change triggers one debounced
//! reload, which keeps the last good state of whatever fails to load. A slow poll compares the digest
//! too, for events a platform never delivers (some network and overlay file systems).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::app::reload::Reloader;
use crate::config::Config;

/// Quiet time before reloading, so an editor's burst of writes causes one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// The backstop for missed events.
const POLL: Duration = Duration::from_secs(30);

/// What the reloadable files hold, read through symlinks.
struct Watched {
    files: Vec<PathBuf>,
    policy_dir: PathBuf,
}

impl Watched {
    fn new(config: &Config) -> Watched {
        let files = config
            .tls
            .pairs()
            .flat_map(|(cert, key)| [cert.clone(), key.clone()])
            .chain(config.issuers.iter().filter_map(|i| i.jwks_file.clone()))
            .collect();
        Watched { files, policy_dir: config.policy_dir.clone() }
    }

    /// The folders whose events matter: the files' own and the policy folder with its tests.
    fn folders(&self) -> Vec<PathBuf> {
        let mut folders: Vec<PathBuf> = self.files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        folders.push(self.policy_dir.clone());
        folders.push(self.policy_dir.join("tests"));
        folders.sort();
        folders.dedup();
        folders
    }

    /// SHA-256 over every file's name and content (a missing file counts as empty). Policy files are
    /// the `.yaml`/`.yml` entries of the policy folder and its `tests`, as the policy loader reads them.
    fn digest(&self) -> [u8; 32] {
        let mut paths = self.files.clone();
        for folder in [self.policy_dir.clone(), self.policy_dir.join("tests")] {
            let Ok(entries) = std::fs::read_dir(&folder) else { continue };
            let mut yaml: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            yaml.sort();
            paths.extend(yaml);
        }
        let mut all = Vec::new();
        for path in paths {
            all.extend_from_slice(path.as_os_str().as_encoded_bytes());
            let content = std::fs::read(&path).unwrap_or_default();
            all.extend_from_slice(&(content.len() as u64).to_le_bytes());
            all.extend_from_slice(&content);
        }
        crate::token::cache::sha256(&all)
    }
}

/// Starts watching; the returned watcher must be kept alive.
///
/// # Errors
/// The platform watcher cannot be created or a folder cannot be watched.
pub fn start(config: &Config, reloader: Arc<Reloader>) -> notify::Result<RecommendedWatcher> {
    let watched = Watched::new(config);
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any) {
            let _ = tx.try_send(()); // a check is already queued when full
        }
    })?;
    for folder in watched.folders().iter().filter(|f| f.is_dir()) {
        watcher.watch(folder, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        let mut last = watched.digest();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = rx.recv() => {
                    if event.is_none() {
                        return;
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = poll.tick() => {}
            }
            let now = watched.digest();
            if now != last {
                last = now;
                let _ = reloader.reload("watch");
            }
        }
    });
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout the kubelet gives a mounted Secret or ConfigMap: files are symlinks into `..data`,
    /// itself a symlink to a timestamped folder that an update replaces by one atomic rename.
    #[test]
    fn a_kubernetes_data_swap_changes_the_digest_and_a_touch_does_not() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        let write = |folder: &str, text: &str| {
            std::fs::create_dir_all(d.join(folder)).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(d.join(folder).join("tls.crt"), text).unwrap_or_else(|e| panic!("{e}"));
        };
        write("..2026_12_01_a", "first");
        std::os::unix::fs::symlink("..2026_12_01_a", d.join("..data")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("..data/tls.crt", d.join("tls.crt")).unwrap_or_else(|e| panic!("{e}"));
        let watched = Watched { files: vec![d.join("tls.crt")], policy_dir: d.join("policies") };
        let first = watched.digest();
        let modified =
            std::fs::File::open(d.join("tls.crt")).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        modified.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(watched.digest(), first, "same content, same digest");
        write("..2026_12_01_b", "second");
        std::os::unix::fs::symlink("..2026_12_01_b", d.join("..data_tmp")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(watched.digest(), first, "the swap is seen through the symlinks");
    }
}
