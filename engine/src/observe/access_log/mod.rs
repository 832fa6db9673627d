//! The access log: one line per exchange (per request, per h2 stream),
//! turned on by the policy's top-level `log = { access = "-" | "PATH",
//! format = "text" | "json" }`.
//!
//! Writing never blocks a request: a worker formats the line into its own
//! buffer (reused, no allocation per line) and a writer thread per file
//! takes the buffers over in batches. When the writer cannot keep up (a
//! slow or full disk), a worker's buffer fills and new lines are dropped
//! and counted ([`dropped_lines`]); the writer says so in Pocket's log at
//! most once a second. SIGUSR1 reopens the files (logrotate's convention,
//! as nginx's USR1).

mod format;
mod time;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use format::Format;
use writer::Writer;

use crate::observe::Exchange;

/// Lines dropped since Pocket started, in all access logs: a worker's
/// buffer was full (the writer is behind) or the file refused them (disk
/// full, I/O error).
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Access-log lines dropped since start (the metrics' and the admin
/// page's figure).
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Where a policy's lines go, and in which format. A policy holds one;
/// policies naming the same file share its writer.
pub struct Sink {
    pub format: Format,
    writer: Arc<Writer>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "access log {} ({:?})", self.writer.path(), self.format)
    }
}

impl Sink {
    /// The sink for `path` (`-`: standard error): the file is opened now
    /// (created if missing, appended to), so a policy naming one that
    /// cannot be opened is refused at load. Errors: the OS's reason.
    pub fn open(path: &str, format: Format) -> Result<Arc<Sink>, String> {
        Ok(Arc::new(Sink {
            format,
            writer: writer::for_path(path)?,
        }))
    }

    /// A copy for one worker (the same file and format).
    pub fn for_worker(&self) -> Arc<Sink> {
        Arc::new(Sink {
            format: self.format,
            writer: self.writer.clone(),
        })
    }

    /// The file's path as the policy gave it (`-` for standard error).
    pub fn path(&self) -> &str {
        self.writer.path()
    }
}

/// Writes `ex`'s line, if its policy has an access log. Runs on the
/// worker's thread when the exchange ends; never blocks.
#[inline]
pub fn write(ex: &Exchange) {
    if let Some(sink) = &ex.log {
        sink.writer.push(|buf| format::line(buf, ex, sink.format));
    }
}

/// Reopens every access-log file at its path (after logrotate moved it),
/// on the writers' threads, within a tenth of a second. SIGUSR1.
pub fn reopen() {
    writer::reopen_all();
}

/// Writes out the lines still waiting, for up to a second: when Pocket
/// stops, after the workers have.
pub fn flush() {
    writer::flush_all(std::time::Duration::from_secs(1));
}
