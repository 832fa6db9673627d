//! The stamp of the hook call a worker is in: two relaxed stores around
//! each call (no clock read), read by the watchdog thread
//! (server/watchdog.rs) to say what a stuck worker was doing. Written by
//! the hooks (script/), so it lives below them; the watchdog's own
//! bookkeeping (progress count, sockets, maxconn ledger) stays in its
//! `Pulse`, which holds this stamp.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::RequestId;

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

/// One worker's stamp: what it is doing, packed (see [`Doing`]).
pub struct Stamp {
    /// The worker's index (and the first part of its request ids).
    index: usize,
    what: AtomicU64,
    places: Arc<Places>,
}

impl Stamp {
    pub fn new(index: usize, places: Arc<Places>) -> Stamp {
        Stamp {
            index,
            what: AtomicU64::new(0),
            places,
        }
    }

    pub fn places(&self) -> &Places {
        &self.places
    }

    /// The stamp now, packed (for [`Stamp::describe`]).
    pub fn now(&self) -> u64 {
        self.what.load(Ordering::Relaxed)
    }

    /// Whether a packed stamp names a call (or a load) in progress.
    pub fn in_call(what: u64) -> bool {
        Stamp::doing(what).is_some()
    }

    /// What a packed stamp says the worker is doing, if anything.
    pub fn doing(what: u64) -> Option<Doing> {
        Doing::from_bits(what >> (SEQ_BITS + PLACE_BITS))
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

    /// What the stamp says, for the log.
    pub fn describe(&self, what: u64) -> String {
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
                RequestId {
                    worker: self.index as u32,
                    seq,
                }
            ),
        }
    }
}
