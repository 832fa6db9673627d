//! A file's writer thread and the workers' buffers it drains.
//!
//! Each worker thread appends lines to its own buffer (a mutex only the
//! writer ever contends for, a tenth of a second at a time); the writer
//! swaps each full buffer for an empty one and writes the batch. A buffer
//! at its cap takes no more lines: they are dropped and counted, so a slow
//! or full disk costs lines, never a request's time.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::DROPPED;

/// A worker's buffer takes at most this many bytes between two drains
/// (about 6000 JSON lines; the writer drains every [`TICK`]).
const CAP: usize = 2 << 20;
/// A buffer this full wakes the writer before its tick.
const WAKE_AT: usize = 256 << 10;
/// How often the writer drains the buffers, reopens if asked, and may
/// report drops.
const TICK: Duration = Duration::from_millis(100);
/// Drops are reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Bumped by SIGUSR1: each writer reopens its file when it sees a new
/// value.
static REOPEN: AtomicU64 = AtomicU64::new(0);
/// Every live writer (to wake them for a reopen), and the way two
/// policies naming one file share its writer.
static WRITERS: Mutex<Vec<Weak<Writer>>> = Mutex::new(Vec::new());
/// Drops already reported, and when (ms since [`epoch`]).
static REPORTED: AtomicU64 = AtomicU64::new(0);
static REPORTED_AT: Mutex<Option<Instant>> = Mutex::new(None);
/// Gives each writer an identity for the workers' caches.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One worker's lines waiting for the writer.
struct Slot(Mutex<Vec<u8>>);

/// What a writer's thread shares with the workers.
struct Shared {
    path: String,
    slots: Mutex<Vec<Arc<Slot>>>,
    /// The last policy using this file is gone: drain once more and stop.
    closed: AtomicBool,
    /// Drain rounds done (for [`flush_all`] to wait on).
    rounds: AtomicU64,
}

/// A file's writer: the handle policies hold ([`super::Sink`]).
pub struct Writer {
    id: u64,
    shared: Arc<Shared>,
    thread: Thread,
}

thread_local! {
    /// This thread's slot with each writer it writes to (usually one; two
    /// or more while a reload that changed `log.access` lets the old
    /// generation's exchanges end). Entries of closed writers are pruned
    /// when a new writer is first seen, so the list stays as long as the
    /// number of files in use.
    static LOCAL: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

/// One entry of [`LOCAL`]: a writer's id, whether it closed, and this
/// thread's slot with it.
struct Local {
    id: u64,
    shared: Weak<Shared>,
    slot: Arc<Slot>,
}

enum Out {
    Stderr,
    File(File),
}

/// Opens `path` for appending without ever waiting: a FIFO (a log
/// shipper's pipe) with no reader yet would block `open(2)` for good, and
/// with it the policy load or the reopen. It is opened non-blocking
/// (refused with ENXIO when nobody reads it, POSIX `open`), then put back
/// to blocking writes, which the writer thread may wait on.
fn open(path: &str) -> std::io::Result<Out> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    if path == "-" {
        return Ok(Out::Stderr);
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => std::io::Error::other("a FIFO that nobody reads yet"),
            _ => e,
        })?;
    // SAFETY: fcntl on a descriptor this function owns; F_GETFL/F_SETFL
    // only read and set its status flags.
    unsafe {
        let fd = file.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(Out::File(file))
}

impl Out {
    /// Writes `batch`; on an error, also says whether a part of a line
    /// went out (the next batch then starts on a line of its own).
    fn write_all(&mut self, batch: &[u8]) -> Result<(), (std::io::Error, bool)> {
        let mut rest = batch;
        while !rest.is_empty() {
            let n = match self {
                // Pocket's own log shares standard error, often a pipe: a
                // write of at most PIPE_BUF (4096) bytes, ending on a line's
                // end, is never split by another writer's line.
                Out::Stderr => {
                    let piece = match rest.get(..4096) {
                        None => rest,
                        Some(head) => memchr::memrchr(b'\n', head).map_or(head, |i| &rest[..=i]),
                    };
                    std::io::stderr().lock().write(piece)
                }
                Out::File(f) => f.write(rest),
            };
            match n {
                Ok(0) => {
                    let cut =
                        rest.len() != batch.len() && batch[batch.len() - rest.len() - 1] != b'\n';
                    return Err((std::io::ErrorKind::WriteZero.into(), cut));
                }
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let cut =
                        rest.len() != batch.len() && batch[batch.len() - rest.len() - 1] != b'\n';
                    return Err((e, cut));
                }
            }
        }
        Ok(())
    }
}

/// The writer for `path`: the running one if a policy already uses that
/// path, else a new one (the file opened now; errors: the OS's reason).
pub fn for_path(path: &str) -> Result<Arc<Writer>, String> {
    let mut writers = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    writers.retain(|w| w.strong_count() > 0);
    if let Some(w) = writers
        .iter()
        .filter_map(Weak::upgrade)
        .find(|w| w.shared.path == path)
    {
        return Ok(w);
    }
    let out = open(path).map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        path: path.to_string(),
        slots: Mutex::new(Vec::new()),
        closed: AtomicBool::new(false),
        rounds: AtomicU64::new(0),
    });
    let run = shared.clone();
    let thread = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || drain_loop(run, out))
        .map_err(|e| format!("cannot start its writer thread: {e}"))?
        .thread()
        .clone();
    let writer = Arc::new(Writer {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        shared,
        thread,
    });
    writers.push(Arc::downgrade(&writer));
    Ok(writer)
}

pub fn reopen_all() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
    let writers = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    for w in writers.iter().filter_map(Weak::upgrade) {
        w.thread.unpark();
    }
}

/// Writes out what the workers' buffers hold now, waiting up to `within`
/// (when Pocket stops: the last lines are not lost).
pub fn flush_all(within: Duration) {
    let writers: Vec<Arc<Writer>> = WRITERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    let deadline = Instant::now() + within;
    for w in writers {
        // A round that began before this call may have missed lines: wait
        // for the one after it to end.
        let goal = w.shared.rounds.load(Ordering::Acquire) + 2;
        while w.shared.rounds.load(Ordering::Acquire) < goal && Instant::now() < deadline {
            w.thread.unpark();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Writer {
    pub fn path(&self) -> &str {
        &self.shared.path
    }

    /// Appends one line (`format` writes it) to this thread's buffer, or
    /// counts it dropped if the buffer is full (or the thread is exiting
    /// and its buffers are gone).
    #[inline]
    pub fn push(&self, format: impl FnOnce(&mut Vec<u8>)) {
        let pushed = LOCAL.try_with(|local| {
            let mut local = local.borrow_mut();
            let i = match local.iter().position(|l| l.id == self.id) {
                Some(i) => i,
                None => {
                    // A writer this thread has not written to: forget the
                    // closed ones (their threads drained them already).
                    local.retain(|l| {
                        l.shared
                            .upgrade()
                            .is_some_and(|s| !s.closed.load(Ordering::Acquire))
                    });
                    let slot = Arc::new(Slot(Mutex::new(Vec::with_capacity(64 << 10))));
                    self.shared
                        .slots
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(slot.clone());
                    local.push(Local {
                        id: self.id,
                        shared: Arc::downgrade(&self.shared),
                        slot,
                    });
                    local.len() - 1
                }
            };
            let mut buf = local[i].slot.0.lock().unwrap_or_else(|e| e.into_inner());
            let before = buf.len();
            if before >= CAP {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            format(&mut buf);
            if before < WAKE_AT && buf.len() >= WAKE_AT {
                self.thread.unpark();
            }
        });
        if pushed.is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many workers' buffers this writer drains (for tests).
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.shared
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// The writer thread: every tick (or when woken), each worker's batch
/// goes to the file; a batch the file refuses is dropped and counted.
fn drain_loop(shared: Arc<Shared>, mut out: Out) {
    let mut seen_reopen = REOPEN.load(Ordering::Relaxed);
    let mut spare: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut slots: Vec<Arc<Slot>> = Vec::new();
    let mut failing = false;
    // A failed write left part of a line in the file.
    let mut cut = false;
    loop {
        let closing = shared.closed.load(Ordering::Acquire);
        let wanted = REOPEN.load(Ordering::Relaxed);
        if wanted != seen_reopen {
            seen_reopen = wanted;
            match open(&shared.path) {
                Ok(o) => {
                    out = o;
                    tracing::info!("access log {}: reopened", shared.path);
                }
                Err(e) => tracing::warn!(
                    "access log {}: cannot reopen ({e}); still writing to the file it had open",
                    shared.path
                ),
            }
        }
        slots.clear();
        {
            let mut all = shared.slots.lock().unwrap_or_else(|e| e.into_inner());
            // A slot no thread holds any more (its thread exited, or
            // pruned it) takes no new lines: drop it once drained.
            all.retain(|s| {
                Arc::strong_count(s) > 1
                    || !s.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
            });
            slots.extend(all.iter().cloned());
        }
        for slot in &slots {
            {
                let mut buf = slot.0.lock().unwrap_or_else(|e| e.into_inner());
                if buf.is_empty() {
                    continue;
                }
                std::mem::swap(&mut *buf, &mut spare);
            }
            if cut && out.write_all(b"\n").is_ok() {
                cut = false;
            }
            match out.write_all(&spare) {
                Ok(()) => {
                    if failing {
                        failing = false;
                        tracing::info!("access log {}: writing again", shared.path);
                    }
                }
                Err((e, partial)) => {
                    cut |= partial;
                    let lines = memchr::memchr_iter(b'\n', &spare).count() as u64;
                    DROPPED.fetch_add(lines, Ordering::Relaxed);
                    if !failing {
                        failing = true;
                        tracing::warn!("access log {}: cannot write ({e})", shared.path);
                    }
                }
            }
            spare.clear();
            if spare.capacity() > CAP + (CAP >> 1) {
                spare.shrink_to(64 << 10);
            }
        }
        report_drops();
        shared.rounds.fetch_add(1, Ordering::Release);
        if closing {
            return;
        }
        std::thread::park_timeout(TICK);
    }
}

/// Says in Pocket's log how many lines were dropped since the last time
/// it said so, at most once per [`REPORT_EVERY`] (all files together).
fn report_drops() {
    let total = DROPPED.load(Ordering::Relaxed);
    let said = REPORTED.load(Ordering::Relaxed);
    if total == said {
        return;
    }
    let mut at = REPORTED_AT.lock().unwrap_or_else(|e| e.into_inner());
    if at.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
        return;
    }
    if REPORTED
        .compare_exchange(said, total, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    *at = Some(Instant::now());
    tracing::warn!(
        "access log: {} dropped ({} since start): the disk is full or too slow",
        crate::words::count(total - said, "line"),
        total
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload that changes `log.access` while old exchanges still end:
    /// a worker alternates between two files. Each file's writer keeps one
    /// buffer for it, not one more per switch.
    #[test]
    fn alternating_files_reuse_one_buffer_each() {
        let dir = std::env::temp_dir().join(format!("pocket-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = for_path(&dir.join("a.log").display().to_string()).unwrap();
        let b = for_path(&dir.join("b.log").display().to_string()).unwrap();
        for _ in 0..1000 {
            a.push(|buf| buf.extend_from_slice(b"a\n"));
            b.push(|buf| buf.extend_from_slice(b"b\n"));
        }
        assert_eq!((a.slots(), b.slots()), (1, 1));
        // A closed writer's entry goes when the thread meets a new one.
        let closed_id = a.id;
        drop(a);
        let c = for_path(&dir.join("c.log").display().to_string()).unwrap();
        c.push(|buf| buf.extend_from_slice(b"c\n"));
        let held = LOCAL.with(|l| l.borrow().iter().map(|l| l.id).collect::<Vec<_>>());
        assert!(!held.contains(&closed_id), "{held:?}");
        assert_eq!(held.len(), 2);
        flush_all(Duration::from_secs(5));
        let lines = std::fs::read_to_string(dir.join("b.log")).unwrap();
        assert_eq!(lines.lines().count(), 1000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
