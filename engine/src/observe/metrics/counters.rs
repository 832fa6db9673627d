//! The counters a request moves: plain relaxed atomics, found without a
//! lookup by name (a server's live in its `lb::state::ServerState`, which
//! outlives reloads; a listener's in an `Arc` resolved once per worker, see
//! `count.rs`). Summed and written out only when `/metrics` is scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Status classes as labels: index 0 is "no status sent" (the client went
/// away first), 1..=5 are `1xx`..`5xx`.
pub const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// The class index of a status (0: none sent or out of range).
#[inline]
pub fn class_of(status: u16) -> usize {
    match status / 100 {
        c @ 1..=5 => c as usize,
        _ => 0,
    }
}

/// Counters are kept in this many shards, one per worker thread: a
/// worker adds to its own cache line, so two workers answering for one
/// server do not fight over it (measured: 350 ns per exchange with two
/// threads on shared counters, against 85 ns alone). Threads past that
/// share one more line.
pub const SHARDS: usize = 8;

/// This thread's shard: given out in turn to threads as they first count.
/// Below [`SHARDS`], the thread's own (no other thread writes it); the
/// others get [`SHARDS`], the shared line.
#[inline]
pub fn shard() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT.fetch_add(1, Ordering::Relaxed).min(SHARDS);
                s.set(i);
            }
            i
        })
        .unwrap_or(SHARDS)
}

/// `N` counters, one copy per shard, each shard on its own cache lines;
/// read by summing the shards.
#[derive(Debug)]
pub struct Sharded<const N: usize> {
    shards: Box<[Line<N>; SHARDS + 1]>,
}

#[derive(Debug)]
#[repr(align(128))]
struct Line<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Sharded<N> {
    fn default() -> Self {
        Sharded {
            shards: Box::new(std::array::from_fn(|_| {
                Line(std::array::from_fn(|_| AtomicU64::new(0)))
            })),
        }
    }
}

impl<const N: usize> Sharded<N> {
    /// Adds `n` to counter `i` in `shard` (from [`shard`]). A thread's own
    /// line takes a plain load and store (no other thread writes it; a
    /// scrape reads whole values, at worst one add late); the shared line
    /// a locked add.
    #[inline]
    pub fn add(&self, shard: usize, i: usize, n: u64) {
        if shard < SHARDS {
            let c = &self.shards[shard].0[i];
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        } else {
            self.shards[SHARDS].0[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The sum over shards of counter `i`.
    pub fn get(&self, i: usize) -> u64 {
        self.shards
            .iter()
            .map(|l| l.0[i].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// How many bounds a histogram has (one more bucket: above the last).
pub const BOUNDS: usize = 12;

/// Request durations, seconds: 1 ms to 10 s, the range between a cached
/// answer and a slow upstream (Prometheus client defaults, widened down).
pub const LATENCY_BOUNDS: [f64; BOUNDS] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Hook durations, seconds: 10 µs to 100 ms (a hook's default budget is
/// far above any good hook; most take microseconds).
pub const HOOK_BOUNDS: [f64; BOUNDS] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
];

/// A fixed-bucket histogram of durations in microseconds: one bucket add
/// and one sum add per observation, in the thread's shard; cumulated only
/// at scrape.
#[derive(Debug)]
pub struct Histogram {
    /// Bounds in microseconds, ascending.
    bounds_us: [u64; BOUNDS],
    /// The buckets, then the sum in microseconds.
    counts: Sharded<{ BOUNDS + 2 }>,
}

impl Histogram {
    pub fn new(bounds: &[f64; BOUNDS]) -> Histogram {
        Histogram {
            bounds_us: bounds.map(|b| (b * 1e6).round() as u64),
            counts: Sharded::default(),
        }
    }

    #[inline]
    pub fn observe_us(&self, shard: usize, us: u64) {
        let i = self
            .bounds_us
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BOUNDS);
        self.counts.add(shard, i, 1);
        self.counts.add(shard, BOUNDS + 1, us);
    }

    /// Per-bucket counts (not cumulative) and the sum in seconds.
    pub fn snapshot(&self) -> ([u64; BOUNDS + 1], f64) {
        let counts = std::array::from_fn(|i| self.counts.get(i));
        (counts, self.counts.get(BOUNDS + 1) as f64 / 1e6)
    }
}

/// Retry causes get a slot each the first time one is seen; more distinct
/// causes than this share the last slot, labelled `other`.
pub const CAUSE_SLOTS: usize = 8;

/// The causes seen so far, in slot order. Causes are `&'static str`s the
/// proxy names (`Retry::cause`): a handful, known when the binary is built.
static CAUSES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// The slot of a retry cause. A short uncontended lock, on a retry only
/// (a failed attempt), never on a request that went well.
pub fn cause_slot(cause: &'static str) -> usize {
    let mut causes = CAUSES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = causes.iter().position(|c| *c == cause) {
        return i;
    }
    if causes.len() < CAUSE_SLOTS - 1 {
        causes.push(cause);
        return causes.len() - 1;
    }
    CAUSE_SLOTS - 1
}

/// The label of each slot in use.
pub fn cause_names() -> Vec<&'static str> {
    let mut names = CAUSES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    names.resize(CAUSE_SLOTS, "other");
    names
}

/// A TCP-mode connection's end, as the access log writes it (HAProxy's
/// `%ts` in `mode tcp`, see tcp/record.rs): the label values of
/// `pocket_tcp_connections_total{termination}`. The last, `other`, takes
/// any state not listed (none is made today).
pub const TERMINATIONS: [&str; 13] = [
    "--", "PR", "SC", "sC", "CD", "SD", "cD", "sD", "KD", "KC", "CR", "cR", "other",
];

/// The ends a connection that reached a server can have: the server
/// families show these only (the others end before any server).
pub const SERVER_TERMINATIONS: [&str; 6] = ["--", "CD", "SD", "cD", "sD", "KD"];

/// The index in [`TERMINATIONS`] of a termination's two letters.
pub fn termination_slot(letters: [u8; 2]) -> usize {
    TERMINATIONS
        .iter()
        .position(|t| t.as_bytes() == letters)
        .unwrap_or(TERMINATIONS.len() - 1)
}

/// The slot of a termination state named in [`TERMINATIONS`].
pub fn slot_of(name: &str) -> usize {
    TERMINATIONS
        .iter()
        .position(|t| *t == name)
        .unwrap_or(TERMINATIONS.len() - 1)
}

/// Where each count sits in a [`ServerMetrics`]' or a
/// [`ListenerMetrics`]' shards: requests by class, then bytes (a TCP-mode
/// connection's: client to server, server to client), then TCP-mode
/// connections by [`TERMINATIONS`] index, then (a server's) retries by
/// cause slot.
pub const REQUESTS: usize = 0;
pub const REQUEST_BYTES: usize = 6;
pub const RESPONSE_BYTES: usize = 7;
pub const TCP_CONNECTIONS: usize = 8;
pub const RETRIES: usize = TCP_CONNECTIONS + TERMINATIONS.len();

/// TCP-mode connections by end, summed over `slots` (names in
/// [`TERMINATIONS`]).
fn tcp_sum(counts: &Sharded<{ RETRIES + CAUSE_SLOTS }>, slots: &[&str]) -> u64 {
    slots
        .iter()
        .map(|t| counts.get(TCP_CONNECTIONS + slot_of(t)))
        .sum()
}

/// What the stats page and `/api/status` show of a tcp listener or
/// server (docs/observability.md, "The stats page"): connections ended,
/// those Pocket refused (`PR`: `pocket.reject`, an `on_connect` error, no
/// pool; HAProxy's "denied"), those no server could be had for (`SC`,
/// `sC`; HAProxy's connection errors), and those a server broke (`SD`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounts {
    pub connections: u64,
    pub rejected: u64,
    pub failed: u64,
    pub broken: u64,
}

impl TcpCounts {
    fn of(counts: &Sharded<{ RETRIES + CAUSE_SLOTS }>) -> TcpCounts {
        TcpCounts {
            connections: tcp_sum(counts, &TERMINATIONS),
            rejected: tcp_sum(counts, &["PR"]),
            failed: tcp_sum(counts, &["SC", "sC"]),
            broken: tcp_sum(counts, &["SD"]),
        }
    }
}

/// A server's counters in one pool (kept in its `ServerState`, so they
/// survive reloads as its health does).
#[derive(Debug)]
pub struct ServerMetrics {
    /// Requests by [`CLASSES`] index, body bytes in and out, retries by
    /// cause slot (see [`REQUESTS`] and the rest).
    pub counts: Sharded<{ RETRIES + CAUSE_SLOTS }>,
    /// Connects to it that failed (refused, timed out, unreachable); on
    /// the failure path only, so not sharded.
    pub connect_failures: AtomicU64,
    /// Times live traffic in this pool took it down (passive ejection).
    pub ejections: AtomicU64,
    /// Whole exchange durations (request head to response end).
    pub duration: Histogram,
}

impl ServerMetrics {
    /// Requests it answered, every class (a tcp pool's server: 0, see
    /// [`ServerMetrics::tcp`]).
    pub fn requests(&self) -> u64 {
        (0..CLASSES.len())
            .map(|c| self.counts.get(REQUESTS + c))
            .sum::<u64>()
    }

    /// TCP-mode connections it took that ended, and how.
    pub fn tcp(&self) -> TcpCounts {
        TcpCounts::of(&self.counts)
    }

    /// Requests it answered with a 5xx.
    pub fn errors(&self) -> u64 {
        self.counts.get(REQUESTS + 5)
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            counts: Sharded::default(),
            connect_failures: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            duration: Histogram::new(&LATENCY_BOUNDS),
        }
    }
}

/// A listener's counters, kept by name across reloads: requests by
/// [`CLASSES`] index (local answers and refusals too), body bytes in and
/// out, TCP-mode connections by end (the same layout as a server's, so
/// [`TcpCounts`] reads both; the retry slots stay unused).
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    pub counts: Sharded<{ RETRIES + CAUSE_SLOTS }>,
}

impl ListenerMetrics {
    /// Every request it answered, whoever answered it (the stats page's
    /// and API's figure for an http listener).
    pub fn requests(&self) -> u64 {
        (0..CLASSES.len())
            .map(|c| self.counts.get(REQUESTS + c))
            .sum::<u64>()
    }

    /// TCP-mode connections it accepted that ended, and how.
    pub fn tcp(&self) -> TcpCounts {
        TcpCounts::of(&self.counts)
    }

    /// Those answered with a 5xx (a server's, or Pocket's own).
    pub fn errors(&self) -> u64 {
        self.counts.get(REQUESTS + 5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fall_in_their_class() {
        assert_eq!(CLASSES[class_of(200)], "2xx");
        assert_eq!(CLASSES[class_of(101)], "1xx");
        assert_eq!(CLASSES[class_of(503)], "5xx");
        assert_eq!(CLASSES[class_of(0)], "none");
        assert_eq!(CLASSES[class_of(999)], "none");
    }

    #[test]
    fn every_termination_has_its_slot_and_unknown_ones_share_other() {
        for (i, t) in TERMINATIONS.iter().enumerate().take(TERMINATIONS.len() - 1) {
            let b = t.as_bytes();
            assert_eq!(termination_slot([b[0], b[1]]), i);
        }
        assert_eq!(TERMINATIONS[termination_slot(*b"PH")], "other");
        for t in SERVER_TERMINATIONS {
            assert_ne!(TERMINATIONS[slot_of(t)], "other", "{t}");
        }
    }

    #[test]
    fn a_histogram_puts_each_duration_in_the_first_bucket_that_holds_it() {
        let h = Histogram::new(&LATENCY_BOUNDS);
        h.observe_us(0, 500); // 0.5 ms: the 1 ms bucket
        h.observe_us(1, 1_000); // on the bound: still the 1 ms bucket
        h.observe_us(2, 1_001);
        h.observe_us(SHARDS + 3, 60_000_000); // above every bound
        let (counts, sum) = h.snapshot();
        assert_eq!(counts[0], 2);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[BOUNDS], 1);
        assert!((sum - 60.002501).abs() < 1e-9, "{sum}");
    }
}
