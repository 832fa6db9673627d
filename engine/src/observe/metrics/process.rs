//! Numbers of the whole process that no policy object keeps: reload
//! results and the live generation (set by the supervisor), client
//! connections parked, upstream connections pooled, Lua memory per worker.
//! Each is an atomic (or one per thread), written where the number
//! changes, read at scrape.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::LazyLock;

use super::counters::{shard, Sharded};

pub(super) static RELOADS_OK: AtomicU64 = AtomicU64::new(0);
pub(super) static RELOADS_REFUSED: AtomicU64 = AtomicU64::new(0);
pub(super) static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Gauges moved on every keep-alive park and every upstream checkout and
/// return: each thread on its own line (see [`Sharded`]), as two's
/// complement sums (read them with [`gauge`]).
pub(super) static PARKED: LazyLock<Sharded<1>> = LazyLock::new(Sharded::default);
pub(super) static UPSTREAM_IDLE: LazyLock<Sharded<1>> = LazyLock::new(Sharded::default);

/// A gauge's value (never below 0).
pub(super) fn gauge(g: &Sharded<1>) -> i64 {
    (g.get(0) as i64).max(0)
}

/// Most workers whose Lua memory is shown (more share nothing: they are
/// simply not shown; `workers` is capped far below this in practice).
pub(super) const MAX_WORKERS: usize = 256;
pub(super) static LUA_BYTES: [AtomicU64; MAX_WORKERS] = [const { AtomicU64::new(0) }; MAX_WORKERS];
/// One more than the highest worker index that reported.
pub(super) static WORKERS: AtomicUsize = AtomicUsize::new(0);

/// A policy generation went live (at start: 1).
pub fn generation_live(generation: u64) {
    GENERATION.store(generation, Ordering::Relaxed);
}

/// A reload ended: `ok` (its generation is live) or refused.
pub fn reload_ended(ok: bool) {
    if ok {
        RELOADS_OK.fetch_add(1, Ordering::Relaxed);
    } else {
        RELOADS_REFUSED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Worker `index`'s Lua VM holds `bytes` (its heap); written by the
/// worker's heartbeat, not per request.
pub fn lua_memory(index: usize, bytes: usize) {
    if let Some(slot) = LUA_BYTES.get(index) {
        slot.store(bytes as u64, Ordering::Relaxed);
        WORKERS.fetch_max(index + 1, Ordering::Relaxed);
    }
}

/// Counts a client connection as parked (idle between keep-alive
/// requests) for as long as it lives.
pub struct Parked(());

impl Parked {
    #[inline]
    pub fn enter() -> Parked {
        PARKED.add(shard(), 0, 1);
        Parked(())
    }
}

impl Drop for Parked {
    #[inline]
    fn drop(&mut self) {
        PARKED.add(shard(), 0, u64::MAX);
    }
}

/// `n` upstream connections went into (positive) or out of (negative) the
/// idle pools of the workers.
#[inline]
pub fn upstream_idle(n: i64) {
    UPSTREAM_IDLE.add(shard(), 0, n as u64);
}
