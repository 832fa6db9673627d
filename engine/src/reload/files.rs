//! The pid file and the status file of a running Pocket, so `pocket reload`
//! and `pocket status` can find it from the policy's path alone.

use std::path::{Path, PathBuf};

/// What `pocket status` shows.
#[derive(Debug, Default, Clone)]
pub struct Status {
    pub pid: u32,
    pub policy: String,
    pub generation: u64,
    pub workers: usize,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_error: String,
    /// Workers the watchdog found stuck and replaced.
    pub workers_replaced: usize,
    /// Client connections open now over the whole process, the process
    /// cap, and how many times an accept loop paused at it.
    pub connections: usize,
    pub max_connections: usize,
    pub max_connections_reached: u64,
    /// Per listener: `NAME: open N, max_connections M|none, reached K`.
    pub listeners: Vec<String>,
}

impl Status {
    pub fn render(&self) -> String {
        let mut text = format!(
            "pid: {}\npolicy: {}\ngeneration: {}\nworkers: {}\nreloads_ok: {}\nreloads_failed: {}\nlast_error: {}\n",
            self.pid, self.policy, self.generation, self.workers, self.reloads_ok, self.reloads_failed, self.last_error
        );
        text.push_str(&format!(
            "workers_replaced: {}\nconnections: {}\nmax_connections: {}\nmax_connections_reached: {}\n",
            self.workers_replaced, self.connections, self.max_connections, self.max_connections_reached
        ));
        for l in &self.listeners {
            text.push_str(&format!("listener {l}\n"));
        }
        text
    }

    /// Reads one `key: value` field of a rendered status.
    pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
    }
}

/// Where a Pocket serving a given policy keeps its pid and status: in the
/// temp folder, named by a hash of the policy's absolute path.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub pid: PathBuf,
    pub status: PathBuf,
}

impl RunFiles {
    pub fn for_policy(policy: &Path) -> RunFiles {
        let absolute = std::fs::canonicalize(policy).unwrap_or_else(|_| policy.to_path_buf());
        // FNV-1a: stable across runs and builds, unlike std's hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in absolute.to_string_lossy().bytes() {
            hash ^= b as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let dir = std::env::temp_dir();
        RunFiles {
            pid: dir.join(format!("pocket-{hash:016x}.pid")),
            status: dir.join(format!("pocket-{hash:016x}.status")),
        }
    }

    pub fn write(&self, status: &Status) {
        let _ = std::fs::write(&self.pid, format!("{}\n", status.pid));
        self.write_status(status);
    }

    /// The periodic refresh of the counts: the status file only, and only
    /// while the pid file still names this process. After a binary
    /// upgrade the new Pocket owns both files; an old one still draining
    /// must not take them back.
    pub fn refresh(&self, status: &Status) {
        if self.read_pid() == i32::try_from(status.pid).ok() {
            self.write_status(status);
        }
    }

    fn write_status(&self, status: &Status) {
        // Write then rename, so a reader never sees half a status.
        let tmp = self.status.with_extension("status.tmp");
        if std::fs::write(&tmp, status.render()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.status);
        }
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.pid);
        let _ = std::fs::remove_file(&self.status);
    }

    pub fn read_pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid).ok()?.trim().parse().ok()
    }

    pub fn read_status(&self) -> Option<String> {
        std::fs::read_to_string(&self.status).ok()
    }
}
