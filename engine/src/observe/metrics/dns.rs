//! Server names asked again (a pool's `resolve`): lookups by result, and
//! whether each name is failing now (keeping its last addresses). One
//! lookup per name per `resolve` interval, on the control thread: a lock
//! is fine.

use std::sync::{Arc, Mutex};

/// One name of one pool.
#[derive(Debug, Clone)]
pub(super) struct Name {
    pub pool: Arc<str>,
    pub name: Arc<str>,
    pub ok: u64,
    pub failed: u64,
    pub failing: bool,
}

/// The names of the live policy's pools with `resolve`, in the order first
/// seen.
static NAMES: Mutex<Vec<Name>> = Mutex::new(Vec::new());

/// A lookup of `name` (as `pool` writes it) ended: `ok`, or failed (the
/// name keeps its last addresses).
pub fn dns_lookup(pool: &Arc<str>, name: &Arc<str>, ok: bool) {
    let mut all = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let i = match all.iter().position(|n| n.pool == *pool && n.name == *name) {
        Some(i) => i,
        None => {
            all.push(Name {
                pool: pool.clone(),
                name: name.clone(),
                ok: 0,
                failed: 0,
                failing: false,
            });
            all.len() - 1
        }
    };
    let n = &mut all[i];
    if ok {
        n.ok += 1;
    } else {
        n.failed += 1;
    }
    n.failing = !ok;
}

/// Only these (pool, name) pairs are resolved again now: the others'
/// series go (a reload removed the name, or the pool's `resolve`).
pub fn dns_names_live(live: &[(Arc<str>, Arc<str>)]) {
    let mut all = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|n| live.iter().any(|(p, m)| *p == n.pool && *m == n.name));
}

/// Whether `name` of `pool` failed its last lookup (and keeps its last
/// addresses): for the admin API and the stats page.
pub fn dns_failing(pool: &str, name: &str) -> bool {
    NAMES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|n| &*n.pool == pool && &*n.name == name && n.failing)
}

/// Every name's counts now.
pub(super) fn names() -> Vec<Name> {
    NAMES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
