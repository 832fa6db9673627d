//! Time spent in each request-path hook, as histograms by hook name.
//! Timed by the watchdog's guard around each call in `script::hooks` (two
//! clock reads and two relaxed adds per hook call; a request with no hooks
//! pays nothing).

use std::time::Instant;

use super::counters::{shard, Histogram, HOOK_BOUNDS};

/// The hooks that run on the request path, in label order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    OnConnect = 0,
    OnRequest = 1,
    OnResponse = 2,
    HashKey = 3,
    Bypass = 4,
    Balance = 5,
}

pub(super) const HOOK_NAMES: [&str; 6] = [
    "on_connect",
    "on_request",
    "on_response",
    "hash_key",
    "bypass",
    "balance",
];

pub(super) static HOOKS: std::sync::LazyLock<[Histogram; 6]> =
    std::sync::LazyLock::new(|| std::array::from_fn(|_| Histogram::new(&HOOK_BOUNDS)));

/// A call of `hook` that began at `start` has returned.
#[inline]
pub fn hook_ran(hook: Hook, start: Instant) {
    HOOKS[hook as usize].observe_us(shard(), start.elapsed().as_micros() as u64);
}
