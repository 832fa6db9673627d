//! `pocket demo`: two built-in origins and the proxy in front of them, so a
//! newcomer sees A and B alternate on the first reload. The policy is a
//! file the user can edit, `pocket-demo/demo.lua` in the folder the demo
//! starts in: written from the copy in the binary when absent, never
//! overwritten, and reloaded on save like any `pocket run` policy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::config::{load_policy, load_policy_source, Policy};
use crate::lb::StateRegistry;
use crate::origin::{self, OriginHandle};

/// The original demo policy, embedded so `pocket demo` works anywhere; it
/// is what the demo writes to [`DEMO_FILE`] on its first run.
pub const DEMO_SCRIPT: &str = include_str!("demo.lua");

/// Where the demo's policy lives, relative to the folder `pocket demo` runs
/// in. A folder of its own, because the reload watcher watches the policy's
/// folder and everything under it.
pub const DEMO_FILE: &str = "pocket-demo/demo.lua";

/// Starts origins A and B on 9001 and 9002.
pub fn start_origins() -> anyhow::Result<Vec<OriginHandle>> {
    let mut out = Vec::new();
    for (name, port) in [("A", 9001), ("B", 9002)] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        out.push(
            origin::spawn(name, addr)
                .with_context(|| format!("cannot start demo origin {name} on {addr}"))?,
        );
    }
    Ok(out)
}

/// Where the policy being served came from, for the welcome text.
pub enum DemoFile {
    /// Written just now from the embedded copy.
    Written(PathBuf),
    /// Already there (an earlier run's file, with the user's edits).
    Kept(PathBuf),
    /// The folder is not writable: the embedded copy, not editable. The
    /// text says why.
    BuiltIn(String),
}

impl DemoFile {
    /// The file to watch, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            DemoFile::Written(p) | DemoFile::Kept(p) => Some(p),
            DemoFile::BuiltIn(_) => None,
        }
    }
}

/// Makes sure [`DEMO_FILE`] exists under the current folder: an existing
/// file is kept as it is; a missing one is written from [`DEMO_SCRIPT`]
/// (`create_new`, so a file that appears meanwhile is not overwritten).
pub fn demo_file() -> DemoFile {
    let path = PathBuf::from(DEMO_FILE);
    if path.exists() {
        return DemoFile::Kept(path);
    }
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::io::Write::write_all(&mut f, DEMO_SCRIPT.as_bytes())
    };
    match write() {
        Ok(()) => DemoFile::Written(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => DemoFile::Kept(path),
        Err(e) => DemoFile::BuiltIn(format!("cannot write {}: {e}", shown(&path))),
    }
}

/// Loads the demo's policy from its file, or the embedded copy when there
/// is no file. A file that does not load is refused with its `path:line`
/// errors and the way back to the original.
pub fn demo_policy(file: &DemoFile, registry: &StateRegistry) -> anyhow::Result<Policy> {
    match file.path() {
        Some(path) => load_policy(path, registry).map_err(|e| {
            anyhow::anyhow!(
                "refusing to start:\n{e}\n{} is the demo's policy, with your edits: fix it, \
                 or delete it and `pocket demo` writes the original again",
                shown(path)
            )
        }),
        None => load_policy_source(Path::new("demo.lua"), Arc::from(DEMO_SCRIPT), registry)
            .map_err(|e| anyhow::anyhow!("{e}")),
    }
}

/// The path as the user can find it: absolute when the current folder is
/// known.
fn shown(path: &Path) -> String {
    std::env::current_dir()
        .map(|d| d.join(path))
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// What `pocket demo` prints once it serves: where to look and which file
/// to edit.
pub fn welcome(file: &DemoFile) -> String {
    let policy = match file {
        DemoFile::Written(p) => format!(
            "  The policy is {} (written just now).\n  \
             Edit it and save: the next request follows it, no restart.\n  \
             pocket test {} runs its tests.",
            shown(p),
            p.display()
        ),
        DemoFile::Kept(p) => format!(
            "  The policy is {} (yours, from an earlier run; delete it to get the original back).\n  \
             Edit it and save: the next request follows it, no restart.\n  \
             pocket test {} runs its tests.",
            shown(p),
            p.display()
        ),
        DemoFile::BuiltIn(why) => format!(
            "  The policy is the copy built into pocket ({why}),\n  \
             so it cannot be edited: run `pocket demo` in a folder you can write to."
        ),
    };
    format!(
        "\
Pocket demo is running.

  Open http://127.0.0.1:8080/ in a browser and reload: A and B alternate.
  Or: for i in 1 2 3 4; do curl -s http://127.0.0.1:8080/; done
      curl -i http://127.0.0.1:8080/ping        (answered by the script itself)

{policy}
  Press Ctrl-C to stop.
"
    )
}
