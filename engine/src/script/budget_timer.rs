//! The instruction-count hook armed only for an `on_request` call that
//! runs long (issue 18: the hook's cost). Lua's count hook, set for the
//! whole call, sends every instruction through `luaG_traceexec` and every
//! return through `rethook`: about 600 instructions of a call that runs
//! a few dozen. Here the call starts with the hook off, and a timer
//! thread arms it, the way `lua.c` stops a script on Ctrl-C: a signal to
//! the worker's thread, whose handler calls `lua_sethook` (which Lua
//! documents as safe in a signal handler: `ldebug.c`, "This function can
//! be called during a signal"; Lua re-reads its trap at every jump and
//! call, so even `while true do end` notices). From then on the budget
//! hook checks the deadline as before (the deadline is set when the call
//! starts), so a runaway is stopped at the same time with the same
//! `path:line` message.
//!
//! The timer thread looks every [`TICK`]; a call it sees running at two
//! looks in a row gets the signal, at most `2 × TICK` (10 ms) after it
//! started, well inside the 25 ms budget. It sleeps (parked) once no call
//! has run for a second, and the next call wakes it.
//!
//! Per call: one locked store and one load (the wake-up handshake), and a
//! `lua_sethook` off and on (see `lent_call`).

use std::cell::Cell;
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use mlua::ffi;

/// How often the timer thread looks at the calls running.
pub const TICK: Duration = Duration::from_millis(5);

/// Looks with no call running before the timer thread sleeps (1 s).
const QUIET_TICKS: u32 = 200;

/// One thread's `on_request` calls: odd while one runs (the count goes up
/// by one at each start and each end).
pub struct Watched {
    /// The kernel's id of the thread that runs the calls (`gettid`).
    tid: libc::pid_t,
    calls: AtomicU64,
    /// What the timer thread saw at its last look, and the call it has
    /// signalled (only the timer thread touches these).
    seen: AtomicU64,
    signalled: AtomicU64,
}

/// Every thread's [`Watched`]; an entry only the registry holds is gone.
static REGISTRY: Mutex<Vec<Arc<Watched>>> = Mutex::new(Vec::new());

/// The timer thread is parked (or about to): the next call wakes it.
static SLEEPING: AtomicBool = AtomicBool::new(false);

/// The timer thread, started with the first [`Watched`].
static TIMER: OnceLock<Thread> = OnceLock::new();

static SIGNAL: Once = Once::new();

thread_local! {
    /// The Lua state running an `on_request` call on this thread now
    /// (null between calls): what the signal handler arms.
    static ARMABLE: Cell<*mut ffi::lua_State> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal the timer sends: a real-time one nothing else in Pocket
/// uses (glibc keeps the first ones for itself; `SIGRTMIN()` is past
/// them).
fn signal() -> libc::c_int {
    libc::SIGRTMIN() + 6
}

impl Watched {
    /// The calling thread's entry (made once per VM that lends `req`,
    /// at its first call: the VM runs on one thread).
    pub fn this_thread() -> Arc<Watched> {
        install_handler();
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::pid_t;
        let w = Arc::new(Watched {
            tid,
            calls: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            signalled: AtomicU64::new(u64::MAX),
        });
        REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w.clone());
        TIMER.get_or_init(|| {
            std::thread::Builder::new()
                .name("pocket-budget".into())
                .spawn(run)
                .map(|h| h.thread().clone())
                .unwrap_or_else(|_| std::thread::current())
        });
        w
    }

    /// A call on `state` starts (its count hook already off): the timer
    /// may arm it from now until the returned guard drops.
    #[inline]
    pub fn start(&self, state: *mut ffi::lua_State) -> Running<'_> {
        let before = ARMABLE.with(|a| a.replace(state));
        compiler_fence(Ordering::SeqCst);
        let n = self.calls.load(Ordering::Relaxed);
        // A store the timer thread's `SLEEPING` store is ordered with
        // (both SeqCst): either it sees this call, or this sees it asleep.
        self.calls.store(n | 1, Ordering::SeqCst);
        if SLEEPING.load(Ordering::SeqCst) {
            wake();
        }
        Running {
            watched: self,
            before,
        }
    }
}

/// A call the timer may arm; dropping it (the call returned or unwound)
/// ends that.
pub struct Running<'a> {
    watched: &'a Watched,
    before: *mut ffi::lua_State,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let n = self.watched.calls.load(Ordering::Relaxed);
        self.watched
            .calls
            .store((n | 1).wrapping_add(1), Ordering::Release);
        compiler_fence(Ordering::SeqCst);
        ARMABLE.with(|a| a.set(self.before));
        compiler_fence(Ordering::SeqCst);
    }
}

/// Arms the count hook of the call running on this thread now, if any
/// (the allocator's way, once the heap grows past a quarter of its limit:
/// the hook then notes the lines for a memory error's place).
pub fn arm_running() {
    let state = ARMABLE.with(|a| a.get());
    if !state.is_null() {
        // SAFETY: the state is running a call on this thread (set by
        // `start`, cleared at its end); see the module's doc.
        unsafe { super::budget_hook::arm(state) }
    }
}

fn wake() {
    if SLEEPING.swap(false, Ordering::SeqCst) {
        if let Some(t) = TIMER.get() {
            t.unpark();
        }
    }
}

/// The signal handler: arms the running call's count hook. Touches only
/// this thread's `ARMABLE` (a plain thread-local, no lazy set-up) and
/// what `lua_sethook` writes.
extern "C" fn on_signal(_: libc::c_int) {
    arm_running();
}

fn install_handler() {
    SIGNAL.call_once(|| {
        // SAFETY: a plain sigaction for a signal nothing else uses, with
        // a handler that is async-signal-safe (see `on_signal`).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(signal(), &sa, std::ptr::null_mut());
        }
    });
}

/// The timer thread.
fn run() {
    let mut quiet = 0u32;
    loop {
        std::thread::sleep(TICK);
        let mut list = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| Arc::strong_count(w) > 1);
        let mut active = false;
        for w in list.iter() {
            let n = w.calls.load(Ordering::SeqCst);
            if n != w.seen.load(Ordering::Relaxed) {
                w.seen.store(n, Ordering::Relaxed);
                active = true;
                continue;
            }
            if n & 1 == 1 {
                active = true;
                if w.signalled.load(Ordering::Relaxed) != n {
                    w.signalled.store(n, Ordering::Relaxed);
                    // SAFETY: the thread is alive: its entry is held by
                    // its VM (we hold the lock, so it cannot go), and its
                    // call is running.
                    unsafe {
                        libc::syscall(libc::SYS_tgkill, libc::getpid(), w.tid, signal());
                    }
                }
            }
        }
        quiet = if active { 0 } else { quiet + 1 };
        if quiet < QUIET_TICKS {
            continue;
        }
        // Asleep from here unless a call started meanwhile (see `start`).
        SLEEPING.store(true, Ordering::SeqCst);
        let started = list
            .iter()
            .any(|w| w.calls.load(Ordering::SeqCst) != w.seen.load(Ordering::Relaxed));
        drop(list);
        quiet = 0;
        if started {
            SLEEPING.store(false, Ordering::SeqCst);
            continue;
        }
        while SLEEPING.load(Ordering::SeqCst) {
            std::thread::park();
        }
    }
}
