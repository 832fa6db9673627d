//! Failed TLS handshakes, by listener and reason. Rare next to requests
//! (a handshake that fails ends its connection), so a lock is fine.

use std::sync::Arc;
use std::sync::Mutex;

/// (listener, reason, count), in the order first seen.
static FAILURES: Mutex<Vec<(Arc<str>, &'static str, u64)>> = Mutex::new(Vec::new());

/// A TLS handshake on `listener` failed for `reason` (`bad_hello`,
/// `timeout`, `plain_http`, `no_certificate`, `closed`, `client_alert`,
/// `other`).
pub fn tls_handshake_failed(listener: &Arc<str>, reason: &'static str) {
    let mut all = FAILURES.lock().unwrap_or_else(|e| e.into_inner());
    match all
        .iter_mut()
        .find(|(l, r, _)| **l == **listener && *r == reason)
    {
        Some((_, _, n)) => *n += 1,
        None => all.push((listener.clone(), reason, 1)),
    }
}

/// Every count so far.
pub(super) fn failures() -> Vec<(Arc<str>, &'static str, u64)> {
    FAILURES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
