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
/// and one sum add per observation; cumulated only at scrape.
#[derive(Debug)]
pub struct Histogram {
    /// Bounds in microseconds, ascending.
    bounds_us: [u64; BOUNDS],
    buckets: [AtomicU64; BOUNDS + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &[f64; BOUNDS]) -> Histogram {
        Histogram {
            bounds_us: bounds.map(|b| (b * 1e6).round() as u64),
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn observe_us(&self, us: u64) {
        let i = self
            .bounds_us
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BOUNDS);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Per-bucket counts (not cumulative) and the sum in seconds.
    pub fn snapshot(&self) -> ([u64; BOUNDS + 1], f64) {
        let counts = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        (counts, self.sum_us.load(Ordering::Relaxed) as f64 / 1e6)
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

/// A server's counters in one pool (kept in its `ServerState`, so they
/// survive reloads as its health does).
#[derive(Debug)]
pub struct ServerMetrics {
    /// Answers this server gave, by [`CLASSES`] index.
    pub requests: [AtomicU64; 6],
    /// Request body bytes read from clients for it.
    pub request_bytes: AtomicU64,
    /// Response body bytes sent to clients from it.
    pub response_bytes: AtomicU64,
    /// Connects to it that failed (refused, timed out, unreachable).
    pub connect_failures: AtomicU64,
    /// Times live traffic in this pool took it down (passive ejection).
    pub ejections: AtomicU64,
    /// Attempts on it that failed and were retried elsewhere, by cause slot.
    pub retries: [AtomicU64; CAUSE_SLOTS],
    /// Whole exchange durations (request head to response end).
    pub duration: Histogram,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            requests: Default::default(),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            retries: Default::default(),
            duration: Histogram::new(&LATENCY_BOUNDS),
        }
    }
}

/// A listener's counters, kept by name across reloads.
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    /// Requests answered, by [`CLASSES`] index (local answers and
    /// refusals too).
    pub requests: [AtomicU64; 6],
    pub request_bytes: AtomicU64,
    pub response_bytes: AtomicU64,
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
    fn a_histogram_puts_each_duration_in_the_first_bucket_that_holds_it() {
        let h = Histogram::new(&LATENCY_BOUNDS);
        h.observe_us(500); // 0.5 ms: the 1 ms bucket
        h.observe_us(1_000); // on the bound: still the 1 ms bucket
        h.observe_us(1_001);
        h.observe_us(60_000_000); // above every bound
        let (counts, sum) = h.snapshot();
        assert_eq!(counts[0], 2);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[BOUNDS], 1);
        assert!((sum - 60.002501).abs() < 1e-9, "{sum}");
    }
}
