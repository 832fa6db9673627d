//! Connection caps: `max_connections` per listener and for the whole
//! process (HAProxy's frontend and global `maxconn`). A worker takes a slot
//! *before* it calls accept, so at the cap it stops accepting and new
//! connections wait in the kernel's accept queue (the listen backlog)
//! instead of being accepted and starved; when a connection closes, its
//! slot goes back and a paused accept loop resumes.
//!
//! The counts are atomics shared by every worker (each worker has its own
//! SO_REUSEPORT socket, but a cap is one number for all of them). They
//! live in a process-wide registry ([`caps`]) so `pocket status` and,
//! later, a metrics endpoint can read them.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::listener::ListenerKey;
use crate::config::Policy;

/// A cap, the connections it counts, and how often it was reached.
pub struct Gate {
    /// What the log calls it: `listener "web"` or `the process`.
    what: String,
    /// The cap; `usize::MAX` for none. A reload may change a listener's.
    max: AtomicUsize,
    open: AtomicUsize,
    /// How many times an accept loop found this cap full and paused.
    reached: AtomicU64,
    /// When the last warning was logged, in ms since [`epoch`] (+1, so 0
    /// means never).
    warned_at: AtomicU64,
    /// Wakes paused accept loops when a connection closes at the cap.
    closed: Notify,
}

/// Warnings about the same cap come at most this often; the count in the
/// next one says how many times it was reached in between.
const WARN_EVERY: Duration = Duration::from_secs(10);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Gate {
    fn new(what: String) -> Gate {
        Gate {
            what,
            max: AtomicUsize::new(usize::MAX),
            open: AtomicUsize::new(0),
            reached: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
            closed: Notify::new(),
        }
    }

    /// The cap (None: no cap of its own).
    pub fn max(&self) -> Option<usize> {
        Some(self.max.load(Ordering::Relaxed)).filter(|&m| m != usize::MAX)
    }

    pub fn set_max(&self, max: Option<usize>) {
        let max = max.unwrap_or(usize::MAX);
        if self.max.swap(max, Ordering::Relaxed) < max {
            // Raised by a reload: paused loops may go on.
            self.closed.notify_waiters();
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// How many times an accept loop found this cap full and paused.
    pub fn reached(&self) -> u64 {
        self.reached.load(Ordering::Relaxed)
    }

    fn try_take(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        let before = self.open.fetch_sub(1, Ordering::AcqRel);
        if before >= self.max.load(Ordering::Relaxed) {
            self.closed.notify_waiters();
        }
    }

    /// Waits until this gate may have room; counts and (rate-limited)
    /// logs the pause.
    async fn wait_for_room(&self) {
        let notified = self.closed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.open() < self.max.load(Ordering::Relaxed) {
            return;
        }
        let reached = self.reached.fetch_add(1, Ordering::Relaxed) + 1;
        self.warn(reached);
        notified.await;
    }

    fn warn(&self, reached: u64) {
        let now = epoch().elapsed().as_millis() as u64 + 1;
        let last = self.warned_at.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < WARN_EVERY.as_millis() as u64 {
            return;
        }
        if self
            .warned_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return; // another worker is saying it
        }
        tracing::warn!(
            "{}: max_connections {} reached; new connections wait in the kernel's accept queue (times reached so far: {reached})",
            self.what,
            self.max.load(Ordering::Relaxed),
        );
    }
}

/// What an accept loop's connections take their slots from: the
/// listener's cap, the process's, and the worker's ledger. Shared by its
/// slots through one `Rc` (a count without atomics per connection, not
/// three `Arc` clones and drops).
pub struct Gates {
    pub listener: Arc<Gate>,
    pub process: Arc<Gate>,
    pub ledger: Arc<Ledger>,
}

/// A connection's place under its listener's cap and the process's;
/// dropping it (the connection closed) gives both back, unless its
/// worker's ledger was forgiven meanwhile.
pub struct Slot(Rc<Gates>);

impl Drop for Slot {
    fn drop(&mut self) {
        let g = &*self.0;
        if g.ledger.release(&g.listener) {
            g.process.give_back();
            g.listener.give_back();
        }
    }
}

/// The slots one worker's connections hold. When the watchdog gives up on
/// a stuck worker, the connections it holds stay open but are no longer
/// served: their slots go back to the caps at once ([`Ledger::forgive`]),
/// so a listener whose cap they filled serves again through the new
/// worker, and their later closes give nothing back twice.
#[derive(Default)]
pub struct Ledger {
    state: Mutex<LedgerState>,
}

#[derive(Default)]
struct LedgerState {
    forgiven: bool,
    /// Slots held, by listener gate (the process gate: one per slot).
    held: Vec<(Arc<Gate>, usize)>,
    process: Option<Arc<Gate>>,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a slot taken; false when the ledger is forgiven already
    /// (the slot is then given back at once and counts for nothing).
    fn hold(&self, listener: &Arc<Gate>, process: &Arc<Gate>) -> bool {
        let mut state = self.lock();
        if state.forgiven {
            return false;
        }
        state.process.get_or_insert_with(|| process.clone());
        match state
            .held
            .iter_mut()
            .find(|(g, _)| Arc::ptr_eq(g, listener))
        {
            Some((_, n)) => *n += 1,
            None => state.held.push((listener.clone(), 1)),
        }
        true
    }

    /// A slot's connection closed: true when its gates are to be given
    /// back (false once forgiven: they were given back then).
    fn release(&self, listener: &Arc<Gate>) -> bool {
        let mut state = self.lock();
        if state.forgiven {
            return false;
        }
        if let Some((_, n)) = state
            .held
            .iter_mut()
            .find(|(g, _)| Arc::ptr_eq(g, listener))
        {
            *n = n.saturating_sub(1);
        }
        true
    }

    /// Gives back every slot held now; later closes give nothing back.
    /// Called by the watchdog when it abandons the worker.
    pub fn forgive(&self) -> usize {
        let mut state = self.lock();
        if state.forgiven {
            return 0;
        }
        state.forgiven = true;
        let process = state.process.take();
        let mut total = 0;
        for (gate, n) in state.held.drain(..) {
            for _ in 0..n {
                gate.give_back();
                if let Some(process) = &process {
                    process.give_back();
                }
            }
            total += n;
        }
        total
    }
}

/// Waits for a slot under both caps, for a connection of the worker whose
/// ledger is `ledger`. Called before accept: while it waits, the accept
/// loop does not accept.
pub async fn take_slot(gates: &Rc<Gates>) -> Slot {
    let Gates {
        listener,
        process,
        ledger,
    } = &**gates;
    loop {
        if !listener.try_take() {
            listener.wait_for_room().await;
            continue;
        }
        if process.try_take() {
            if !ledger.hold(listener, process) {
                process.give_back();
                listener.give_back();
            }
            return Slot(gates.clone());
        }
        listener.give_back();
        process.wait_for_room().await;
    }
}

/// Every cap in the process.
pub struct Caps {
    pub process: Arc<Gate>,
    listeners: Mutex<HashMap<ListenerKey, Arc<Gate>>>,
}

/// The process's caps (one set per process: the process cap is global by
/// definition, and a listener's count must survive reloads).
pub fn caps() -> &'static Caps {
    static CAPS: OnceLock<Caps> = OnceLock::new();
    CAPS.get_or_init(|| Caps {
        process: Arc::new(Gate::new("the process".into())),
        listeners: Mutex::new(HashMap::new()),
    })
}

impl Caps {
    /// The gate of a listener, made on first use.
    pub fn listener(&self, key: &ListenerKey) -> Arc<Gate> {
        let mut map = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.clone())
            .or_insert_with(|| Arc::new(Gate::new(format!("listener \"{}\"", key.name))))
            .clone()
    }

    /// The gate of the listener `spec` describes (its open connections,
    /// for `/metrics`).
    pub fn listener_gate(&self, spec: &crate::config::ListenerSpec) -> Arc<Gate> {
        self.listener(&ListenerKey::of(spec))
    }

    /// Sets each listener's cap from `policy` (at start and at each reload).
    pub fn configure(&self, policy: &Policy) {
        for l in &policy.listeners {
            self.listener(&ListenerKey::of(l))
                .set_max(l.max_connections);
        }
    }

    /// (listener name, open, cap, times reached) for the listeners of
    /// `policy`, for `pocket status`.
    pub fn listener_counts(&self, policy: &Policy) -> Vec<(String, usize, Option<usize>, u64)> {
        policy
            .listeners
            .iter()
            .map(|l| {
                let g = self.listener(&ListenerKey::of(l));
                (l.name.to_string(), g.open(), g.max(), g.reached())
            })
            .collect()
    }
}

/// File descriptors kept back from the process cap's share: listening
/// sockets, epoll and event fds (a worker's runtime, its keep-alive
/// sweep's, `server/idle.rs`), the log, the folder watch, health checks.
pub fn reserved_fds(workers: usize, listeners: usize) -> u64 {
    64 + (workers * (listeners + 4)) as u64
}

/// The default process cap for a file descriptor limit, as HAProxy
/// derives its global `maxconn` when none is set: each proxied connection
/// needs two descriptors (the client's and the server's).
pub fn default_max_connections(fd_limit: u64, reserved: u64) -> usize {
    (fd_limit.saturating_sub(reserved) / 2).max(1) as usize
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (HAProxy does the same
/// at start) and returns the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}
