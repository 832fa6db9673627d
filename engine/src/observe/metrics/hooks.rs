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

thread_local! {
    /// Nanoseconds the request-path hooks of the request being decided
    /// on this thread have taken so far; [`take_request_hook_ns`] reads and
    /// clears it (hooks are synchronous calls, so no other request's time
    /// lands in between).
    static REQUEST_HOOK_NS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Nanoseconds the last `on_connect` call on this thread ran (its
    /// waits for a ClientHello left out): set, not added, when the call
    /// ends, so a TCP connection reads its own right after its
    /// `on_connect` returned ([`take_connect_hook_ns`]), whatever other
    /// connections' calls ran while it waited.
    static CONNECT_HOOK_NS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A call of `hook` that began at `start` has returned.
#[inline]
pub fn hook_ran(hook: Hook, start: Instant) {
    hook_ran_for(hook, start.elapsed().as_nanos() as u64);
}

/// A call of `hook` ran for `ns` nanoseconds in all: a hook that waited
/// on sub-requests counts only the time it ran, summed over its resumes
/// (the last one is in the same poll as the rest of the request's
/// decision, so its request's `hooks_ms` gets it).
#[inline]
pub fn hook_ran_for(hook: Hook, ns: u64) {
    HOOKS[hook as usize].observe_us(shard(), ns / 1000);
    if hook != Hook::OnConnect {
        let _ = REQUEST_HOOK_NS.try_with(|t| t.set(t.get() + ns));
    } else {
        let _ = CONNECT_HOOK_NS.try_with(|t| t.set(ns));
    }
}

/// The run time of the `on_connect` call that ended last on this thread,
/// in nanoseconds, and clears it: a TCP connection's access log line
/// counts it in `hooks_ms` (an HTTP request's does not: its connection's
/// `on_connect` is not the request's). Called once before `on_connect`
/// (0 then: a policy without one) and once right after it returned.
#[inline]
pub fn take_connect_hook_ns() -> u64 {
    CONNECT_HOOK_NS.try_with(|t| t.replace(0)).unwrap_or(0)
}

/// The time the hooks of the request being decided took, in nanoseconds,
/// since the last call (the access log's `hooks_ms`).
#[inline]
pub fn take_request_hook_ns() -> u64 {
    REQUEST_HOOK_NS.try_with(|t| t.replace(0)).unwrap_or(0)
}
