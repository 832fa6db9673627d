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

/// The demo's ports: Pocket's listener, origins A and B and the admin
/// listener (stats page), all on 127.0.0.1 (`pocket demo --port`,
/// `--origin-ports`, `--admin-port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoPorts {
    pub web: u16,
    pub a: u16,
    pub b: u16,
    pub admin: u16,
}

impl Default for DemoPorts {
    /// The ports written in [`DEMO_SCRIPT`].
    fn default() -> Self {
        DemoPorts {
            web: 8080,
            a: 9001,
            b: 9002,
            admin: 8404,
        }
    }
}

impl DemoPorts {
    /// Refuses ports the demo cannot serve on, before anything is written
    /// or started: 0 (the OS would pick one nobody knows) and a port given
    /// twice (two listeners cannot share it).
    pub fn check(self) -> anyhow::Result<()> {
        let named = [
            ("--port", self.web),
            ("origin A (--origin-ports)", self.a),
            ("origin B (--origin-ports)", self.b),
            ("--admin-port", self.admin),
        ];
        for (what, port) in named {
            if port == 0 {
                anyhow::bail!("{what} is 0: give a port from 1 to 65535");
            }
        }
        for (i, (what, port)) in named.iter().enumerate() {
            for (other, port2) in &named[i + 1..] {
                if port == port2 {
                    anyhow::bail!(
                        "{what} and {other} are both {port}: the demo needs four different ports"
                    );
                }
            }
        }
        Ok(())
    }

    /// Fails when `127.0.0.1:web` or the admin port is taken, so a busy
    /// port is told before the demo writes its file or says it is running.
    pub fn check_web_free(self) -> anyhow::Result<()> {
        for (port, flag) in [(self.web, "--port"), (self.admin, "--admin-port")] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            std::net::TcpListener::bind(addr)
                .map(drop)
                .with_context(|| format!("cannot listen on {addr} (choose another with {flag})"))?;
        }
        Ok(())
    }
}

/// [`DEMO_SCRIPT`] with `ports` in place of the default ones (in the
/// listener, the servers, the tests and the comments).
pub fn demo_source(ports: DemoPorts) -> String {
    let default = DemoPorts::default();
    // Through placeholders, so a port given as another's default (say
    // `--port 9001`) is not replaced twice.
    let mut text = DEMO_SCRIPT.to_string();
    let defaults = [default.web, default.a, default.b, default.admin];
    for (i, port) in defaults.into_iter().enumerate() {
        text = text.replace(&format!("127.0.0.1:{port}"), &format!("\u{0}{i}\u{0}"));
    }
    for (i, port) in [ports.web, ports.a, ports.b, ports.admin]
        .into_iter()
        .enumerate()
    {
        text = text.replace(&format!("\u{0}{i}\u{0}"), &format!("127.0.0.1:{port}"));
    }
    text
}

/// Starts origins A and B on 127.0.0.1, on `ports.a` and `ports.b`.
pub fn start_origins(ports: DemoPorts) -> anyhow::Result<Vec<OriginHandle>> {
    let mut out = Vec::new();
    for (name, port) in [("A", ports.a), ("B", ports.b)] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        out.push(origin::spawn(name, addr).with_context(|| {
            format!("cannot start demo origin {name} on {addr} (choose others with --origin-ports)")
        })?);
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
/// file is kept as it is (with whatever ports it has); a missing one is
/// written from [`DEMO_SCRIPT`] with `ports` (`create_new`, so a file that
/// appears meanwhile is not overwritten).
pub fn demo_file(ports: DemoPorts) -> DemoFile {
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
        std::io::Write::write_all(&mut f, demo_source(ports).as_bytes())
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
pub fn demo_policy(
    file: &DemoFile,
    ports: DemoPorts,
    registry: &StateRegistry,
) -> anyhow::Result<Policy> {
    match file.path() {
        Some(path) => load_policy(path, registry).map_err(|e| {
            anyhow::anyhow!(
                "refusing to start:\n{e}\n{} is the demo's policy, with your edits: fix it, \
                 or delete it and `pocket demo` writes the original again",
                shown(path)
            )
        }),
        None => load_policy_source(
            Path::new("demo.lua"),
            Arc::from(demo_source(ports).as_str()),
            registry,
        )
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

/// What `pocket demo` prints once its listeners are bound: where to look (`web`, the
/// address the policy's listener listens on) and which file to edit.
/// `ports` are the origins the demo started: a kept file that sends
/// elsewhere is told so.
pub fn welcome(file: &DemoFile, policy: &Policy, ports: DemoPorts) -> String {
    let web = policy
        .listeners
        .first()
        .map(|l| l.bind.to_string())
        .unwrap_or_else(|| format!("127.0.0.1:{}", ports.web));
    // A kept file from before the demo had an admin key has no page.
    let stats = match &policy.admin {
        Some(a) => format!(
            "\n  Watch it happen: http://{}/ is the stats page (servers, states,\n  \
             requests per second; drain a server with its button).\n",
            a.bind
        ),
        None => String::new(),
    };
    let mut note = String::new();
    if let DemoFile::Kept(p) = file {
        let asked_web = SocketAddr::from(([127, 0, 0, 1], ports.web));
        let listens: Vec<SocketAddr> = policy.listeners.iter().map(|l| l.bind).collect();
        if !listens.contains(&asked_web) {
            note.push_str(&format!(
                "  Note: {} (kept as it is) listens on {web}, not on port {} (--port, 8080\n  \
                 unless you give it); open {web}, or delete the file to get one on port {}.\n\n",
                p.display(),
                ports.web,
                ports.web
            ));
        }
        let asked_admin = SocketAddr::from(([127, 0, 0, 1], ports.admin));
        match &policy.admin {
            Some(a) if a.bind != asked_admin => note.push_str(&format!(
                "  Note: {} (kept as it is) has its stats page on {}, not on port {}\n  \
                 (--admin-port, 8404 unless you give it); open {}, or delete the file to get\n  \
                 one on port {}.\n\n",
                p.display(),
                a.bind,
                ports.admin,
                a.bind,
                ports.admin
            )),
            Some(_) => {}
            None => note.push_str(&format!(
                "  Note: {} (kept as it is) has no admin key, so no stats page (--admin-port\n  \
                 is not used); delete the file to get one on port {}.\n\n",
                p.display(),
                ports.admin
            )),
        }
        let origins = [ports.a, ports.b].map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
        let sends_to: Vec<SocketAddr> = policy
            .pools
            .iter()
            .flat_map(|pool| pool.servers.iter().map(|s| s.addr))
            .collect();
        if origins.iter().any(|o| !sends_to.contains(o)) {
            note.push_str(&format!(
                "  Note: origins A and B run on {} and {} (--origin-ports, 9001,9002 unless\n  \
                 you give it), but {} (kept as it is) sends elsewhere, so its requests\n  \
                 fail with 502: start the demo with the ports the file was written for,\n  \
                 or delete the file to get one with these ports.\n\n",
                origins[0],
                origins[1],
                p.display()
            ));
        }
    }
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

  Open http://{web}/ in a browser and reload: A and B alternate.
  Or: for i in 1 2 3 4; do curl -s http://{web}/; done
      curl -i http://{web}/ping        (answered by the script itself)
{stats}
{note}{policy}
  Press Ctrl-C to stop.
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ports_asked_for_are_written_each_once() {
        assert_eq!(demo_source(DemoPorts::default()), DEMO_SCRIPT);
        // Ports given as each other's defaults are not replaced twice.
        let swapped = demo_source(DemoPorts {
            web: 9001,
            a: 8080,
            b: 9002,
            admin: 8405,
        });
        assert!(swapped.contains(r#"bind = "127.0.0.1:8405""#), "{swapped}");
        assert!(swapped.contains(r#"bind = "127.0.0.1:9001""#), "{swapped}");
        assert!(
            swapped.contains(r#"servers = { "127.0.0.1:8080", "127.0.0.1:9002" }"#),
            "{swapped}"
        );
        assert!(!swapped.contains('\0'));
    }
}
