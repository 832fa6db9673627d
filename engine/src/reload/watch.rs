//! Watching the policy's folder, and the folders of the files it reads
//! (a TLS listener's certificates and keys, a pool's `tls.ca`). Editors save by writing a new
//! file and renaming it over the old one, and certificate tools replace
//! files the same way, so folders are watched, not files; any `.lua` file
//! in the policy's folder (the policy or a module it requires) counts, and
//! so does a change to a certificate, key or CA file the live policy names.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::config::Policy;

/// The watcher and what it follows. Keep it alive as long as changes are
/// wanted.
pub struct Watch {
    watcher: RecommendedWatcher,
    /// The policy's folder (absolute), watched with all below it.
    root: PathBuf,
    /// Other folders watched for the files in `files`.
    folders: HashSet<PathBuf>,
    /// The files besides `.lua` ones whose changes count (absolute).
    files: Arc<Mutex<HashSet<PathBuf>>>,
}

/// Starts watching; each relevant change sends one `()`.
pub fn watch_folder_of(policy: &Path) -> anyhow::Result<(Watch, UnboundedReceiver<()>)> {
    let folder: PathBuf = match policy.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Absolute, so that events name files as the policy's paths do.
    let folder = std::path::absolute(&folder).unwrap_or(folder);
    let files: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
    let followed = files.clone();
    let (tx, rx) = unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let files = followed.lock().unwrap_or_else(|e| e.into_inner());
        if event
            .paths
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "lua") || files.contains(p))
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&folder, RecursiveMode::Recursive)?;
    Ok((
        Watch {
            watcher,
            root: folder,
            folders: HashSet::new(),
            files,
        },
        rx,
    ))
}

impl Watch {
    /// Follows the files `policy` reads besides its scripts (its
    /// listeners' certificates and keys, its pools' `tls.ca` files), from
    /// now on: their folders are watched too when outside the policy's.
    /// Called with each policy that goes live.
    pub fn follow(&mut self, policy: &Policy) {
        let certificates = policy
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|t| t.files.iter().cloned());
        // A replaced CA (a rotated internal CA) must reach the pools that
        // trust it as a replaced listener certificate does.
        let cas = policy
            .pools
            .iter()
            .filter_map(|p| p.tls.as_ref()?.ca.clone())
            .map(|ca| std::path::absolute(&ca).unwrap_or(ca));
        let wanted: HashSet<PathBuf> = certificates.chain(cas).collect();
        for file in &wanted {
            let Some(dir) = file.parent() else { continue };
            if dir.starts_with(&self.root) || self.folders.contains(dir) {
                continue;
            }
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.folders.insert(dir.to_path_buf());
                }
                Err(e) => tracing::warn!(
                    "cannot watch {} for certificate changes: {e}; reload with SIGHUP after replacing them",
                    dir.display()
                ),
            }
        }
        *self.files.lock().unwrap_or_else(|e| e.into_inner()) = wanted;
    }
}
