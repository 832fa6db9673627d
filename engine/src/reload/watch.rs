//! Watching the policy's folder. Editors save by writing a new file and
//! renaming it over the old one, so the folder is watched, not the file;
//! any `.lua` file in it (the policy or a module it requires) counts.

use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Starts watching; each relevant change sends one `()`. Keep the watcher
/// alive as long as changes are wanted.
pub fn watch_folder_of(
    policy: &Path,
) -> anyhow::Result<(RecommendedWatcher, UnboundedReceiver<()>)> {
    let folder: PathBuf = match policy.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tx, rx) = unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event
            .paths
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "lua"))
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&folder, RecursiveMode::Recursive)?;
    Ok((watcher, rx))
}
