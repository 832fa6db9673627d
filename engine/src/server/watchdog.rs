//! The watchdog: notices a worker thread that has stopped coming back
//! (a script or native call that escaped its time budget, a bug), says in
//! the log what it was doing, takes its listening sockets out of their
//! SO_REUSEPORT groups so the kernel stops handing it connections, and
//! asks the control thread for a worker in its place.
//!
//! Each worker has a [`Pulse`]: a progress count its thread bumps every
//! time it makes progress (a heartbeat task every [`BEAT`], and every
//! poll of a connection's task and every turn of an accept loop, through
//! [`progress`]), and a stamp of the hook call in progress (`context::stamp`,
//! written by the hooks; two relaxed
//! atomic stores around each call, no clock read). The watchdog thread
//! looks at every pulse each [`TICK`]; a count that has not moved for
//! [`STUCK_AFTER`] (while loading a policy's main chunk: its 2 s load
//! budget plus that) means the worker is stuck: it has made no progress
//! at all, as HAProxy's watchdog judges a thread. A worker busy with
//! thousands of runnable connections, whose heartbeat task waits its turn
//! longer than that, is not stuck: each connection it polls counts.

use std::cell::Cell;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::context::stamp::Stamp;
pub use crate::context::stamp::{Doing, Places};

/// How often a worker's runtime shows it is alive.
pub const BEAT: Duration = Duration::from_millis(100);
/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(100);
/// A worker whose progress count has not moved for this long is stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(1);
/// A watchdog tick this late means the watchdog was not running either
/// (suspend, CPU starvation): what it saw before proves nothing.
const MISSED: Duration = Duration::from_millis(500);

/// One worker's signs of life, shared with the watchdog thread.
pub struct Pulse {
    /// The worker's index (and the first part of its request ids).
    pub index: usize,
    beat: AtomicU64,
    /// The hook call in progress, written by the worker's hooks.
    pub stamp: Arc<Stamp>,
    /// Set by the watchdog: the worker is out of rotation; if it ever
    /// comes back it finishes its connections and ends.
    abandoned: AtomicBool,
    /// The worker thread has ended.
    ended: AtomicBool,
    /// The worker's listening sockets now, so the watchdog can take them
    /// out of their reuseport groups. A worker removes a socket here
    /// before closing it, under this lock, so the watchdog never touches a
    /// reused descriptor.
    sockets: Mutex<Vec<RawFd>>,
    /// The connection slots this worker's connections hold (maxconn).
    pub ledger: Arc<super::maxconn::Ledger>,
}

thread_local! {
    /// The pulse of the worker running on this thread (null on other
    /// threads): set by [`Pulse::watch_this_thread`], whose guard keeps
    /// the pulse alive while it is set.
    static PROGRESS: Cell<*const Pulse> = const { Cell::new(std::ptr::null()) };
}

/// The worker on this thread made progress (a connection's task was
/// polled, an accept loop turned): one thread-local read and a relaxed
/// load and store. Nothing on threads that are no worker's.
#[inline]
pub fn progress() {
    PROGRESS.with(|p| {
        let pulse = p.get();
        if !pulse.is_null() {
            // SAFETY: set only by `watch_this_thread`, whose guard holds
            // the `Arc` and clears the pointer on drop, on this thread.
            unsafe { (*pulse).beat() }
        }
    });
}

/// Holds the pulse [`progress`] bumps on a worker's thread; clears it on
/// drop.
pub struct ThisThread(#[allow(dead_code)] Arc<Pulse>);

impl Drop for ThisThread {
    fn drop(&mut self) {
        PROGRESS.with(|p| p.set(std::ptr::null()));
    }
}

/// Workers found stuck since the process started (for `pocket status`
/// and, later, metrics).
static STUCK_TOTAL: AtomicU64 = AtomicU64::new(0);

/// How many workers the watchdog has found stuck since start.
pub fn stuck_total() -> u64 {
    STUCK_TOTAL.load(Ordering::Relaxed)
}

impl Pulse {
    pub fn new(index: usize, places: Arc<Places>) -> Pulse {
        Pulse {
            index,
            beat: AtomicU64::new(0),
            stamp: Arc::new(Stamp::new(index, places)),
            abandoned: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            sockets: Mutex::new(Vec::new()),
            ledger: Default::default(),
        }
    }

    pub fn places(&self) -> &Places {
        self.stamp.places()
    }

    /// A load starts (the worker's own call; hooks stamp [`Stamp`]).
    #[inline]
    pub fn enter(&self, doing: Doing, place: u32, seq: u64) {
        self.stamp.enter(doing, place, seq);
    }

    /// The load has returned.
    #[inline]
    pub fn leave(&self) {
        self.stamp.leave();
    }

    fn describe(&self, what: u64) -> String {
        self.stamp.describe(what)
    }

    /// The worker is alive (its runtime polled the heartbeat task, or a
    /// connection's task). Only the worker's own thread writes the count,
    /// so a relaxed load and store (no locked instruction) do.
    #[inline]
    pub fn beat(&self) {
        let n = self.beat.load(Ordering::Relaxed);
        self.beat.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// Makes this pulse the one [`progress`] bumps on the calling thread
    /// (a worker's), until the returned guard drops.
    pub fn watch_this_thread(self: &Arc<Pulse>) -> ThisThread {
        let pulse = self.clone();
        PROGRESS.with(|p| p.set(Arc::as_ptr(&pulse)));
        ThisThread(pulse)
    }

    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    pub fn set_ended(&self) {
        self.ended.store(true, Ordering::Release);
    }

    pub fn add_socket(&self, fd: RawFd) {
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fd);
    }

    /// Call before the socket is closed.
    pub fn remove_socket(&self, fd: RawFd) {
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&s| s != fd);
    }

    /// What the worker is stuck in, for the log: the script call that has
    /// not returned, or, outside any, that it has made no progress.
    fn stuck_in(&self, what: u64, silent: Duration) -> String {
        let secs = silent.as_secs_f64();
        if !Stamp::in_call(what) {
            return format!(
                "it has made no progress for {secs:.1}s, outside any script call (in Pocket itself or waiting on the system)"
            );
        }
        format!("{} has not returned for {secs:.1}s", self.describe(what))
    }

    /// Takes every listening socket of this worker out of its reuseport
    /// group: `shutdown(2)` on a listening TCP socket stops it listening
    /// (the descriptor stays the worker's). Connections already waiting
    /// in its accept queue are reset, or moved to another worker's socket
    /// when `net.ipv4.tcp_migrate_req` is 1.
    fn close_sockets(&self) -> usize {
        let sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        for &fd in sockets.iter() {
            // SAFETY: the fd is open (a worker removes it from this list,
            // under this lock, before closing it); shutdown does not close.
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
        sockets.len()
    }
}

/// The watchdog's view of one worker: the progress count it last saw,
/// and when it first saw it.
#[derive(Debug, Clone, Copy)]
struct Watch {
    beat: u64,
    since: Instant,
}

impl Watch {
    /// The rule: a worker is stuck when its progress count (heartbeats,
    /// connection polls, accept-loop turns) has not moved for `bound`.
    /// Returns how long it has not moved, when that is stuck.
    fn look(&mut self, beat: u64, now: Instant, bound: Duration) -> Option<Duration> {
        if beat != self.beat {
            *self = Watch { beat, since: now };
            return None;
        }
        let silent = now.saturating_duration_since(self.since);
        (silent >= bound).then_some(silent)
    }
}

/// The watchdog thread's shared state.
pub struct Watchdog {
    pulses: Mutex<Vec<Arc<Pulse>>>,
    places: Arc<Places>,
    stop: AtomicBool,
    /// The index of each worker found stuck, for the control thread.
    stuck: UnboundedSender<usize>,
    /// How long a worker may take over a policy's main chunk before it
    /// counts as stuck: the load budget plus [`STUCK_AFTER`].
    load_bound: Duration,
}

impl Watchdog {
    /// Starts the watchdog thread; stuck workers are sent on `stuck`.
    /// `load_budget` is the scripts' budget for a main chunk.
    pub fn spawn(
        stuck: UnboundedSender<usize>,
        load_budget: Duration,
    ) -> std::io::Result<Arc<Watchdog>> {
        let dog = Arc::new(Watchdog {
            load_bound: load_budget + STUCK_AFTER,
            pulses: Mutex::new(Vec::new()),
            places: Arc::new(Places::default()),
            stop: AtomicBool::new(false),
            stuck,
        });
        let me = dog.clone();
        std::thread::Builder::new()
            .name("pocket-watchdog".into())
            .spawn(move || me.run())?;
        Ok(dog)
    }

    /// A new worker's pulse, watched from now on.
    pub fn pulse(&self, index: usize) -> Arc<Pulse> {
        let pulse = Arc::new(Pulse::new(index, self.places.clone()));
        self.pulses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pulse.clone());
        pulse
    }

    /// Stops watching (at shutdown: draining workers end on purpose).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    fn run(&self) {
        // Per worker: the last progress count seen and since when.
        let mut seen: HashMap<usize, Watch> = HashMap::new();
        let mut last_tick = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(TICK);
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let now = Instant::now();
            if now - last_tick > MISSED {
                // The watchdog itself did not run (the machine was
                // suspended or starved of CPU): it cannot tell a stuck
                // worker from one that was not scheduled either. Start
                // the count again.
                seen.clear();
            }
            last_tick = now;
            let pulses = self
                .pulses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for p in &pulses {
                if p.is_abandoned() {
                    continue;
                }
                if p.ended.load(Ordering::Acquire) {
                    // Ended without being told to (a panic): replace it,
                    // if it ever served (one that failed to start is the
                    // starter's to report).
                    if p.beat.load(Ordering::Relaxed) > 0 && !self.stop.load(Ordering::Acquire) {
                        self.died(p);
                    }
                    continue;
                }
                let beat = p.beat.load(Ordering::Relaxed);
                let what = p.stamp.now();
                let loading = Stamp::doing(what) == Some(Doing::Loading);
                let bound = if loading {
                    self.load_bound
                } else {
                    STUCK_AFTER
                };
                let watch = seen.entry(p.index).or_insert(Watch { beat, since: now });
                if let Some(silent) = watch.look(beat, now, bound) {
                    self.abandon(p, silent, what);
                }
            }
            self.pulses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|p| !p.ended.load(Ordering::Acquire) && !p.is_abandoned());
        }
    }

    /// A worker thread ended on its own. Its sockets closed with it (so
    /// they are not touched here: the descriptors may be reused already).
    fn died(&self, p: &Pulse) {
        p.abandoned.store(true, Ordering::Release);
        STUCK_TOTAL.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            worker = p.index,
            "worker {} ended unexpectedly (last: {}); a new worker takes its place",
            p.index,
            p.describe(p.stamp.now()),
        );
        let _ = self.stuck.send(p.index);
    }

    fn abandon(&self, p: &Pulse, silent: Duration, what: u64) {
        p.abandoned.store(true, Ordering::Release);
        STUCK_TOTAL.fetch_add(1, Ordering::Relaxed);
        let closed = p.close_sockets();
        // Its connections stay open, unserved: their slots go back to the
        // caps so the new worker can take their place.
        let forgiven = p.ledger.forgive();
        tracing::error!(
            worker = p.index,
            "worker {} is stuck: {}; its listening sockets leave the rotation ({closed} shut), {} against max_connections, and a new worker takes its place",
            p.index,
            p.stuck_in(what, silent),
            format!(
                "the {} it holds no longer {}",
                crate::words::count(forgiven as u64, "connection"),
                crate::words::verb(forgiven as u64, "counts", "count"),
            ),
        );
        let _ = self.stuck.send(p.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tcp pool's functions run for a connection, and the log says so.
    #[test]
    fn a_stamp_names_a_request_or_a_connection() {
        let places = Arc::new(Places::default());
        let at = places.index("policy.lua:7".into());
        let pulse = Pulse::new(0, places);
        pulse.enter(Doing::Balance, at, 5);
        let said = pulse.describe(pulse.stamp.now());
        assert_eq!(said, "balance (policy.lua:7) for request 0-5");
        pulse.enter(Doing::ConnBalance, at, 5);
        let said = pulse.describe(pulse.stamp.now());
        assert_eq!(said, "balance (policy.lua:7) for connection 0-5");
        pulse.enter(Doing::ConnHashKey, at, 6);
        let said = pulse.describe(pulse.stamp.now());
        assert_eq!(said, "hash_key (policy.lua:7) for connection 0-6");
    }

    /// The rule (breaker16 F1): only a count that stops moving is stuck;
    /// any progress starts the wait again, however long the heartbeat
    /// task itself has waited its turn. Instants made up, no clock waits.
    #[test]
    fn stuck_means_no_progress_for_the_bound() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Watch { beat: 5, since: t0 };
        assert_eq!(w.look(5, at(900), STUCK_AFTER), None);
        // One connection polled at 950 ms: not stuck at 1.2 s.
        assert_eq!(w.look(6, at(950), STUCK_AFTER), None);
        assert_eq!(w.look(6, at(1200), STUCK_AFTER), None);
        // Then nothing for a whole bound: stuck, for that long.
        assert_eq!(
            w.look(6, at(1950), STUCK_AFTER),
            Some(Duration::from_millis(1000))
        );
        // Loading gets its longer bound.
        let mut w = Watch { beat: 1, since: t0 };
        assert_eq!(w.look(1, at(2500), Duration::from_secs(3)), None);
    }

    /// Each poll of a connection's task counts on the worker's own pulse,
    /// on its own thread only, and only while the guard is held.
    #[test]
    fn progress_counts_on_the_workers_pulse() {
        let pulse = Arc::new(Pulse::new(0, Arc::new(Places::default())));
        progress(); // no worker on this thread yet: nothing happens
        assert_eq!(pulse.beat.load(Ordering::Relaxed), 0);
        let guard = pulse.watch_this_thread();
        for _ in 0..1000 {
            progress();
        }
        assert_eq!(pulse.beat.load(Ordering::Relaxed), 1000);
        // Another thread is no worker's: its progress is not this one's.
        std::thread::spawn(progress).join().unwrap();
        assert_eq!(pulse.beat.load(Ordering::Relaxed), 1000);
        drop(guard);
        progress();
        assert_eq!(pulse.beat.load(Ordering::Relaxed), 1000);
    }

    /// Outside any script call the line says the worker made no progress
    /// (not "no script call has not returned"); inside one, which call.
    #[test]
    fn the_stuck_line_reads_right_in_a_call_or_not() {
        let places = Arc::new(Places::default());
        let at = places.index("policy.lua:4".into());
        let pulse = Pulse::new(1, places);
        let second = Duration::from_secs(1);
        assert_eq!(
            pulse.stuck_in(0, second),
            "it has made no progress for 1.0s, outside any script call (in Pocket itself or waiting on the system)"
        );
        pulse.enter(Doing::OnRequest, at, 0x2a);
        assert_eq!(
            pulse.stuck_in(pulse.stamp.now(), second),
            "on_request (policy.lua:4) for request 1-2a has not returned for 1.0s"
        );
    }

    /// A worker thread that ends on its own (a panic) is replaced; one
    /// that never served (it failed to start) is not.
    #[test]
    fn a_worker_that_ended_on_its_own_is_replaced() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let dog = Watchdog::spawn(tx, Duration::from_secs(2)).unwrap();
        let never_served = dog.pulse(7);
        never_served.set_ended();
        let served = dog.pulse(3);
        served.beat();
        served.set_ended();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            got = rx.try_recv().ok();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(got, Some(3));
        std::thread::sleep(TICK * 3);
        assert!(
            rx.try_recv().is_err(),
            "told more than once, or about worker 7"
        );
        dog.stop();
    }
}
