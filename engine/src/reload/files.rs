//! The pid file and the status file of each running Pocket, so `pocket
//! reload` and `pocket status` can find every Pocket serving a policy from
//! the policy's path alone.
//!
//! Each process has its own pair, named by a hash of the policy's path and
//! its pid: two Pockets on one policy (a binary upgrade, or a second
//! `pocket run` on the same port, which SO_REUSEPORT allows) never share a
//! file, so neither can hide or remove the other's.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What `pocket status` shows.
#[derive(Debug, Default, Clone)]
pub struct Status {
    pub pid: u32,
    /// SIGTERM or SIGINT came: it accepts nothing more and is draining.
    pub draining: bool,
    /// The policy's path as given on the command line, in the form of
    /// [`escape_path`]: one line, readable, read back byte for byte.
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
    /// Per pool: `NAME: BALANCE, U/N servers up`, then its servers:
    /// `POOL ADDR: up|down|drain|maint, weight W[, backup]`.
    pub pools: Vec<String>,
    pub servers: Vec<String>,
    /// Where the admin listener listens, if the policy has one.
    pub admin: Option<String>,
}

impl Status {
    pub fn render(&self) -> String {
        let state = if self.draining { "draining" } else { "serving" };
        let mut text = format!(
            "pid: {}\nstate: {state}\npolicy: {}\ngeneration: {}\nworkers: {}\nreloads_ok: {}\nreloads_failed: {}\nlast_error: {}\n",
            self.pid, self.policy, self.generation, self.workers, self.reloads_ok, self.reloads_failed, self.last_error
        );
        text.push_str(&format!(
            "workers_replaced: {}\nconnections: {}\nmax_connections: {}\nmax_connections_reached: {}\n",
            self.workers_replaced, self.connections, self.max_connections, self.max_connections_reached
        ));
        for l in &self.listeners {
            text.push_str(&format!("listener {l}\n"));
        }
        if let Some(admin) = &self.admin {
            text.push_str(&format!("admin: {admin}\n"));
        }
        for p in &self.pools {
            text.push_str(&format!("pool {p}\n"));
        }
        for s in &self.servers {
            text.push_str(&format!("server {s}\n"));
        }
        text
    }

    /// Reads one `key: value` field of a rendered status.
    pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
    }
}

/// A path as one line of text that reads back to the same bytes
/// ([`unescape_path`]): printable text as is (UTF-8 too), `\` doubled,
/// and each byte of a control character or of invalid UTF-8 as `\xNN`.
/// A path may hold any byte but NUL, a newline and invalid UTF-8
/// included; the status file is lines of text.
pub fn escape_path(path: &Path) -> String {
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The bytes of a path [`escape_path`] wrote; None for text it cannot
/// have written.
pub fn unescape_path(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next()? {
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = [bytes.next()?, bytes.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Where one Pocket serving a given policy keeps its pid and status: in
/// the temp folder, `pocket-<hash>-<pid>.pid` and `.status`, `<hash>` an
/// FNV-1a hash of the policy's absolute path.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub pid: PathBuf,
    pub status: PathBuf,
    /// Set once removed, under its lock: a write after [`RunFiles::remove`]
    /// (the main thread writing "draining" as the forced-exit thread
    /// cleans up) does nothing, so no clone leaves stale files behind.
    removed: std::sync::Arc<std::sync::Mutex<bool>>,
}

/// A Pocket found serving a policy: its pid and its status file's text.
#[derive(Debug, Clone)]
pub struct Serving {
    pub pid: i32,
    pub status: String,
    pub files: RunFiles,
}

impl Serving {
    /// It got SIGTERM or SIGINT and drains: it takes no reload.
    pub fn draining(&self) -> bool {
        Status::field(&self.status, "state") == Some("draining")
    }
}

/// `pocket-<16 hex digits>`, the part of the file names that comes from
/// the policy's path (every Pocket on that policy has files named
/// `<stem>-<pid>.pid` and `.status`).
pub fn stem(policy: &Path) -> String {
    let absolute = std::fs::canonicalize(policy).unwrap_or_else(|_| policy.to_path_buf());
    // FNV-1a: stable across runs and builds, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in absolute.to_string_lossy().bytes() {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("pocket-{hash:016x}")
}

impl RunFiles {
    /// The files of process `pid` serving `policy`.
    pub fn for_process(policy: &Path, pid: u32) -> RunFiles {
        let dir = std::env::temp_dir();
        let stem = stem(policy);
        RunFiles {
            pid: dir.join(format!("{stem}-{pid}.pid")),
            status: dir.join(format!("{stem}-{pid}.status")),
            removed: Default::default(),
        }
    }

    /// Writes both files (at startup, after a reload or a worker
    /// replacement); the status file is written whole, then renamed, so
    /// a reader never sees half of it.
    pub fn write(&self, status: &Status) {
        let removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        if *removed {
            return;
        }
        let _ = std::fs::write(&self.pid, format!("{}\n", status.pid));
        self.write_status(status);
    }

    /// The periodic refresh of the counts: the status file only.
    pub fn refresh(&self, status: &Status) {
        let removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        if !*removed {
            self.write_status(status);
        }
    }

    fn write_status(&self, status: &Status) {
        let tmp = self.status.with_extension("status.tmp");
        if std::fs::write(&tmp, status.render()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.status);
        }
    }

    /// Removes both files (and a status half written when the process
    /// was killed); writes through any clone do nothing from then on.
    pub fn remove(&self) {
        let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        *removed = true;
        let _ = std::fs::remove_file(&self.pid);
        let _ = std::fs::remove_file(&self.status);
        let _ = std::fs::remove_file(self.status.with_extension("status.tmp"));
    }

    pub fn read_status(&self) -> Option<String> {
        std::fs::read_to_string(&self.status).ok()
    }
}

/// Every Pocket that serves `policy` now, by pid. Files of processes
/// that are gone (killed with SIGKILL, crashed) are removed on the way, for
/// every policy (see [`alive`]).
pub fn serving(policy: &Path) -> Vec<Serving> {
    let stem = stem(policy);
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let dir = std::env::temp_dir();
        let (file_stem, files, pid) = match parse_name(name) {
            Some((file_stem, Some(pid))) => {
                let files = RunFiles {
                    pid: dir.join(format!("{file_stem}-{pid}.pid")),
                    status: dir.join(format!("{file_stem}-{pid}.status")),
                    removed: Default::default(),
                };
                (file_stem, files, pid)
            }
            // The one pair of a Pocket built before files were per
            // process: listed while it runs, removed once it is gone.
            Some((file_stem, None)) => {
                let files = RunFiles {
                    pid: dir.join(format!("{file_stem}.pid")),
                    status: dir.join(format!("{file_stem}.status")),
                    removed: Default::default(),
                };
                let written = std::fs::read_to_string(&files.pid)
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                    .or_else(|| {
                        let status = files.read_status()?;
                        Status::field(&status, "pid")?.parse().ok()
                    });
                match written {
                    Some(pid) if pid > 0 => (file_stem, files, pid),
                    _ => continue,
                }
            }
            None => continue,
        };
        let status = files.read_status();
        if !alive(pid, status.as_deref()) {
            files.remove();
            continue;
        }
        // Each live process once, by its status file (a pid file alone
        // is a Pocket still starting).
        if file_stem == stem && name.ends_with(".status") {
            if let Some(status) = status {
                found.push(Serving { pid, status, files });
            }
        }
    }
    found.sort_by_key(|s| s.pid);
    found
}

/// `pocket-<16 hex>-<pid>.pid`, `.status` or `.status.tmp`: the stem and
/// the pid; the older `pocket-<16 hex>.pid` or `.status`: the stem alone.
fn parse_name(name: &str) -> Option<(&str, Option<i32>)> {
    let base = name
        .strip_suffix(".pid")
        .or_else(|| name.strip_suffix(".status"))
        .or_else(|| name.strip_suffix(".status.tmp"))?;
    let is_stem = |s: &str| {
        s.strip_prefix("pocket-")
            .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    if is_stem(base) {
        return Some((base, None));
    }
    let (file_stem, pid) = base.rsplit_once('-')?;
    let pid: i32 = pid.parse().ok()?;
    (is_stem(file_stem) && pid > 0).then_some((file_stem, Some(pid)))
}

/// Whether `pid` is the Pocket `status` describes: kill(pid, 0) finds
/// it and, where /proc tells, its command line names the status's policy
/// (or is `pocket demo`). A pid that a crashed Pocket left and another
/// program got since is not taken for a Pocket, nor signalled.
fn alive(pid: i32, status: Option<&str>) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return true;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    // Bytes against bytes: a lossy rendering of a path that is not UTF-8
    // would match no argument, and the live Pocket's files would go.
    let policy = status
        .and_then(|s| Status::field(s, "policy"))
        .and_then(unescape_path);
    match policy {
        Some(policy) => args.contains(&policy.as_slice()) || args.get(1) == Some(&&b"demo"[..]),
        // Only a pid file: the Pocket is starting (or its status is lost).
        None => args.iter().any(|a| *a == b"run" || *a == b"demo"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn names_of_other_programs_are_not_ours() {
        assert_eq!(
            parse_name("pocket-0123456789abcdef-42.status"),
            Some(("pocket-0123456789abcdef", Some(42)))
        );
        assert_eq!(
            parse_name("pocket-0123456789abcdef.pid"),
            Some(("pocket-0123456789abcdef", None))
        );
        assert_eq!(parse_name("pocket-lab-42.pid"), None);
        assert_eq!(parse_name("pocket-xyz-42.pid"), None);
        assert_eq!(
            parse_name("pocket-0123456789abcdef-42.status.tmp"),
            Some(("pocket-0123456789abcdef", Some(42)))
        );
        assert_eq!(parse_name("pocket-0123456789abcdef-42.pid.tmp"), None);
    }

    #[test]
    fn a_pid_that_is_not_a_pocket_on_that_policy_is_not_alive() {
        let me = std::process::id();
        let status = |policy: &str| {
            Status {
                pid: me,
                policy: policy.into(),
                ..Status::default()
            }
            .render()
        };
        // This test binary's command line names no policy.
        assert!(!alive(me as i32, Some(&status("/no/such/policy.lua"))));
        assert!(!alive(i32::MAX, Some(&status("x"))), "no such process");
        let arg = std::env::args().next().unwrap_or_default();
        assert!(alive(me as i32, Some(&status(&arg))));
    }

    #[test]
    fn any_path_reads_back_byte_for_byte() {
        for raw in [
            &b"/tmp/plain/policy.lua"[..],
            b"/tmp/new\nline/policy.lua",
            b"/tmp/back\\slash\\x41/p.lua",
            b"/tmp/\xff\xfe latin\xe9/p.lua",
            "/tmp/caf\u{e9}/p.lua".as_bytes(),
        ] {
            let text = escape_path(Path::new(OsStr::from_bytes(raw)));
            assert!(!text.contains('\n'), "{text}");
            assert_eq!(unescape_path(&text).as_deref(), Some(raw), "{text}");
        }
        assert_eq!(
            escape_path(Path::new(OsStr::from_bytes(b"/a\nb/\xff"))),
            "/a\\x0ab/\\xff"
        );
        assert_eq!(escape_path(Path::new("/caf\u{e9}")), "/caf\u{e9}");
    }
}
