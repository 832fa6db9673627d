//! The watchdog: notices a worker thread that has stopped coming back
//! (a script or native call that escaped its time budget, a bug), says in
//! the log what it was doing, takes its listening sockets out of their
//! SO_REUSEPORT groups so the kernel stops handing it connections, and
//! asks the control thread for a worker in its place.
//!
//! Each worker has a [`Pulse`]: a heartbeat its runtime bumps every
//! [`BEAT`], and a stamp of the hook call in progress (two relaxed atomic
//! stores around each call, no clock read). The watchdog thread looks at
//! every pulse each [`TICK`]; a heartbeat that has not moved for
//! [`STUCK_AFTER`] (while loading a policy's main chunk: its 2 s load
//! budget plus that) means the worker is stuck.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

/// How often a worker's runtime shows it is alive.
pub const BEAT: Duration = Duration::from_millis(100);
/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(100);
/// A worker whose heartbeat has not moved for this long is stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(1);
/// A watchdog tick this late means the watchdog was not running either
/// (suspend, CPU starvation): what it saw before proves nothing.
const MISSED: Duration = Duration::from_millis(500);

/// What a worker is doing, packed into one `u64` so the hot path writes
/// it with a single store: 4 bits of [`Doing`], 20 bits of place (an index
/// into [`Places`]), 40 bits of request sequence (or generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Doing {
    OnConnect = 1,
    OnRequest = 2,
    OnResponse = 3,
    HashKey = 4,
    Balance = 5,
    Bypass = 6,
    /// Running a policy's main chunk (start or reload); "seq" is the
    /// generation.
    Loading = 7,
    /// A tcp pool's `hash_key(conn)` / `balance(servers, conn)`: "seq"
    /// is a connection's, said so in the log.
    ConnHashKey = 8,
    ConnBalance = 9,
}

impl Doing {
    fn from_bits(bits: u64) -> Option<Doing> {
        Some(match bits {
            1 => Doing::OnConnect,
            2 => Doing::OnRequest,
            3 => Doing::OnResponse,
            4 => Doing::HashKey,
            5 => Doing::Balance,
            6 => Doing::Bypass,
            7 => Doing::Loading,
            8 => Doing::ConnHashKey,
            9 => Doing::ConnBalance,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Doing::OnConnect => "on_connect",
            Doing::OnRequest => "on_request",
            Doing::OnResponse => "on_response",
            Doing::HashKey | Doing::ConnHashKey => "hash_key",
            Doing::Balance | Doing::ConnBalance => "balance",
            Doing::Bypass => "bypass",
            Doing::Loading => "the main chunk",
        }
    }
}

const SEQ_BITS: u32 = 40;
const PLACE_BITS: u32 = 20;

/// The places (`path:line` where a hook function is defined) the stamps
/// name, shared by every worker; a place keeps its index across reloads.
#[derive(Default)]
pub struct Places {
    names: Mutex<(Vec<String>, HashMap<String, u32>)>,
}

impl Places {
    /// The index of `place` (made at load time, never on the hot path).
    pub fn index(&self, place: String) -> u32 {
        let mut guard = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let (list, map) = &mut *guard;
        if let Some(&i) = map.get(&place) {
            return i;
        }
        let i = (list.len() as u32).min((1 << PLACE_BITS) - 1);
        list.push(place.clone());
        map.insert(place, i);
        i
    }

    fn name(&self, index: u32) -> String {
        let guard = self.names.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.get(index as usize).cloned().unwrap_or_default()
    }
}

/// One worker's signs of life, shared with the watchdog thread.
pub struct Pulse {
    /// The worker's index (and the first part of its request ids).
    pub index: usize,
    beat: AtomicU64,
    what: AtomicU64,
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
    places: Arc<Places>,
    /// The connection slots this worker's connections hold (maxconn).
    pub ledger: Arc<super::maxconn::Ledger>,
}

/// Workers found stuck since the process started (for `pocket status`
/// and, later, metrics).
static STUCK_TOTAL: AtomicU64 = AtomicU64::new(0);

/// How many workers the watchdog has found stuck since start.
pub fn stuck_total() -> u64 {
    STUCK_TOTAL.load(Ordering::Relaxed)
}

/// Failure lab fault `hang_worker`: the next hook call on any worker
/// hangs until released or the process ends. Driven only by SIGUSR2
/// under `pocket run --lab-faults`.
static LAB_HANG: AtomicU8 = AtomicU8::new(LAB_IDLE);
const LAB_IDLE: u8 = 0;
const LAB_ARMED: u8 = 1;
const LAB_HANGING: u8 = 2;
/// The thread hanging in the fault, to wake when it is released.
static LAB_HUNG: Mutex<Option<std::thread::Thread>> = Mutex::new(None);

/// SIGUSR2 under `pocket run --lab-faults`: releases the worker hanging in
/// the `hang_worker` fault if there is one (it comes back), else arms
/// the fault for the next hook call. Returns what it did.
pub fn lab_hang_signal() -> &'static str {
    if LAB_HANG
        .compare_exchange(LAB_HANGING, LAB_IDLE, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        if let Some(t) = LAB_HUNG.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.unpark();
        }
        return "released: the hanging worker comes back";
    }
    LAB_HANG.store(LAB_ARMED, Ordering::Release);
    "armed: the next hook call hangs its worker"
}

impl Pulse {
    pub fn new(index: usize, places: Arc<Places>) -> Pulse {
        Pulse {
            index,
            beat: AtomicU64::new(0),
            what: AtomicU64::new(0),
            abandoned: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            sockets: Mutex::new(Vec::new()),
            places,
            ledger: Default::default(),
        }
    }

    pub fn places(&self) -> &Places {
        &self.places
    }

    /// The worker is alive (its runtime polled the heartbeat task).
    #[inline]
    pub fn beat(&self) {
        self.beat.fetch_add(1, Ordering::Relaxed);
    }

    /// A hook call (or a load) starts: one relaxed store.
    #[inline]
    pub fn enter(&self, doing: Doing, place: u32, seq: u64) {
        let packed = ((doing as u64) << (SEQ_BITS + PLACE_BITS))
            | ((place as u64 & ((1 << PLACE_BITS) - 1)) << SEQ_BITS)
            | (seq & ((1 << SEQ_BITS) - 1));
        self.what.store(packed, Ordering::Relaxed);
        if LAB_HANG.load(Ordering::Relaxed) == LAB_ARMED {
            self.lab_hang();
        }
    }

    /// The call has returned.
    #[inline]
    pub fn leave(&self) {
        self.what.store(0, Ordering::Relaxed);
    }

    #[cold]
    fn lab_hang(&self) {
        if LAB_HANG
            .compare_exchange(LAB_ARMED, LAB_HANGING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // another worker took it
        }
        let what = self.describe(self.what.load(Ordering::Relaxed));
        tracing::warn!(
            "lab fault hang_worker: worker {} hangs in {what}",
            self.index
        );
        // Known before the state is looked at, so a release in between
        // is not missed.
        *LAB_HUNG.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
        while LAB_HANG.load(Ordering::Acquire) == LAB_HANGING {
            std::thread::park();
        }
        tracing::warn!(
            "lab fault hang_worker: worker {} released from {what}",
            self.index
        );
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

    /// What the stamp says, for the log.
    fn describe(&self, what: u64) -> String {
        let Some(doing) = Doing::from_bits(what >> (SEQ_BITS + PLACE_BITS)) else {
            return "no script call (in Pocket itself or waiting on the system)".into();
        };
        let place = self
            .places
            .name(((what >> SEQ_BITS) & ((1 << PLACE_BITS) - 1)) as u32);
        let seq = what & ((1 << SEQ_BITS) - 1);
        match doing {
            Doing::Loading => format!("the main chunk of generation {seq} ({place})"),
            Doing::OnConnect => format!("{} ({place}) for a new connection", doing.name()),
            _ => format!(
                "{} ({place}) for {} {}",
                doing.name(),
                match doing {
                    Doing::ConnHashKey | Doing::ConnBalance => "connection",
                    _ => "request",
                },
                crate::proxy::RequestId {
                    worker: self.index as u32,
                    seq,
                }
            ),
        }
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
        // Per worker: the last heartbeat seen and since when.
        let mut seen: HashMap<usize, (u64, Instant)> = HashMap::new();
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
                let entry = seen.entry(p.index).or_insert((beat, now));
                if entry.0 != beat {
                    *entry = (beat, now);
                    continue;
                }
                let what = p.what.load(Ordering::Relaxed);
                let loading =
                    Doing::from_bits(what >> (SEQ_BITS + PLACE_BITS)) == Some(Doing::Loading);
                let bound = if loading {
                    self.load_bound
                } else {
                    STUCK_AFTER
                };
                let silent = now - entry.1;
                if silent >= bound {
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
            p.describe(p.what.load(Ordering::Relaxed)),
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
            "worker {} is stuck: {} has not returned for {:.1}s; its listening sockets leave the rotation ({closed} shut), {} against max_connections, and a new worker takes its place",
            p.index,
            p.describe(what),
            silent.as_secs_f64(),
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
        let said = pulse.describe(pulse.what.load(Ordering::Relaxed));
        assert_eq!(said, "balance (policy.lua:7) for request 0-5");
        pulse.enter(Doing::ConnBalance, at, 5);
        let said = pulse.describe(pulse.what.load(Ordering::Relaxed));
        assert_eq!(said, "balance (policy.lua:7) for connection 0-5");
        pulse.enter(Doing::ConnHashKey, at, 6);
        let said = pulse.describe(pulse.what.load(Ordering::Relaxed));
        assert_eq!(said, "hash_key (policy.lua:7) for connection 0-6");
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
