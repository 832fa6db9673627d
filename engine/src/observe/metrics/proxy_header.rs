//! Connections an `accept_proxy` listener closed because their PROXY
//! header was missing, bad, cut or late, by listener and reason. Rare next
//! to requests (each one ends its connection), so a lock is fine.

use std::sync::Arc;
use std::sync::Mutex;

/// (listener, reason, count), in the order first seen.
static REFUSED: Mutex<Vec<(Arc<str>, &'static str, u64)>> = Mutex::new(Vec::new());

/// A connection on `listener` was closed for its PROXY header: `reason`
/// is `malformed`, `timeout`, `closed` (the peer closed first), `reset`
/// (the peer reset the connection first) or `other` (a read error).
pub fn proxy_header_refused(listener: &Arc<str>, reason: &'static str) {
    let mut all = REFUSED.lock().unwrap_or_else(|e| e.into_inner());
    match all
        .iter_mut()
        .find(|(l, r, _)| **l == **listener && *r == reason)
    {
        Some((_, _, n)) => *n += 1,
        None => all.push((listener.clone(), reason, 1)),
    }
}

/// Every count so far.
pub(super) fn refused() -> Vec<(Arc<str>, &'static str, u64)> {
    REFUSED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
