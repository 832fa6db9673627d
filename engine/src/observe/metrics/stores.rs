//! Redis-backed stores (`stores = { ... }`): whether each one is on Redis
//! or serving from local state, and how often it fell back and came back.
//! Written by `script::api::store::redis`, read at scrape. A handful of
//! stores at most, registered once: a lock to find one is fine.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

/// One Redis-backed store's numbers (relaxed atomics).
#[derive(Default)]
pub struct RedisStore {
    pub store: String,
    /// Declared in the live policy's `stores`: only such stores are
    /// exported (one a reload removed is no longer "Redis down").
    pub declared: AtomicBool,
    /// On Redis now (false: serving from local state).
    pub up: AtomicBool,
    /// Times the store went from Redis to local state (a timeout, a
    /// refused or broken connection).
    pub fallbacks: AtomicU64,
    /// Times it came back to Redis after answering a probe.
    pub recoveries: AtomicU64,
    /// Calls served from local state while Redis was away.
    pub local_calls: AtomicU64,
    /// Writes made locally that wait to be replayed to Redis.
    pub pending: AtomicU64,
    /// Writes replayed to Redis once it answered again.
    pub replayed: AtomicU64,
    /// Writes dropped from a full replay journal (oldest first).
    pub dropped: AtomicU64,
}

static ALL: Mutex<Vec<Arc<RedisStore>>> = Mutex::new(Vec::new());

/// The numbers of the Redis-backed store `name` (made on first use; kept
/// for the process, like the store).
pub fn redis_store(name: &str) -> Arc<RedisStore> {
    let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = all.iter().find(|s| s.store == name) {
        return s.clone();
    }
    let s = Arc::new(RedisStore {
        store: name.to_string(),
        ..Default::default()
    });
    all.push(s.clone());
    s
}

pub(super) fn all() -> Vec<Arc<RedisStore>> {
    ALL.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
