//! Counting one finished exchange. Runs on the worker thread for every
//! request, so it finds its counters without a hash or a lock: each worker
//! keeps a small cache from the `Arc<str>` names the record carries (the
//! policy's own pool name and server address text, so a pointer compare
//! finds them) to the counters; only a worker's first request for a name,
//! or the first after a reload made new names, looks in the live snapshot
//! under its lock.

use std::cell::RefCell;
use std::sync::Arc;

use super::counters::{
    cause_slot, class_of, shard, ListenerMetrics, REQUESTS, REQUEST_BYTES, RESPONSE_BYTES, RETRIES,
};
use super::live;
use crate::lb::ServerState;
use crate::observe::Exchange;

/// Entries kept per worker before the cache starts over (old generations'
/// names pile up across reloads otherwise).
const CACHE_MAX: usize = 256;

#[derive(Default)]
struct Cache {
    servers: Vec<(Arc<str>, Arc<str>, Arc<ServerState>)>,
    listeners: Vec<(Arc<str>, Arc<ListenerMetrics>)>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

impl Cache {
    /// The index of the entry for (pool, server); no reference count is
    /// touched on a hit (an `Arc` clone here would be a shared cache line
    /// every worker writes).
    #[inline]
    fn server(&mut self, pool: &Arc<str>, server: &Arc<str>) -> Option<usize> {
        // Same allocation: the usual case, a pointer compare per entry.
        if let Some(i) = self
            .servers
            .iter()
            .position(|(p, n, _)| Arc::ptr_eq(p, pool) && Arc::ptr_eq(n, server))
        {
            return Some(i);
        }
        if let Some(i) = self
            .servers
            .iter()
            .position(|(p, n, _)| **p == **pool && **n == **server)
        {
            return Some(i);
        }
        let found = resolve_server(pool, server)?;
        if self.servers.len() >= CACHE_MAX {
            self.servers.clear();
        }
        self.servers.push((pool.clone(), server.clone(), found));
        Some(self.servers.len() - 1)
    }

    #[inline]
    fn listener(&mut self, name: &Arc<str>) -> usize {
        if let Some(i) = self
            .listeners
            .iter()
            .position(|(n, _)| Arc::ptr_eq(n, name))
        {
            return i;
        }
        if let Some(i) = self.listeners.iter().position(|(n, _)| **n == **name) {
            return i;
        }
        if self.listeners.len() >= CACHE_MAX {
            self.listeners.clear();
        }
        self.listeners
            .push((name.clone(), live::listener_metrics(name)));
        self.listeners.len() - 1
    }
}

/// A server's state by pool and address text: the live policy's, else
/// (a request that began before a reload dropped it) what the state
/// registry still has.
fn resolve_server(pool: &str, server: &str) -> Option<Arc<ServerState>> {
    let live = live::current();
    if let Some(s) = live
        .servers
        .iter()
        .find(|s| &*s.pool == pool && &*s.name == server)
    {
        return Some(s.state.clone());
    }
    let addr = server.parse().ok()?;
    crate::lb::StateRegistry::lookup_global(pool, addr)
}

/// Counts one finished exchange: its listener's and its server's
/// requests by status class and bytes, the server's duration, and a retry
/// for each server that failed before.
pub fn exchange(ex: &Exchange) {
    let class = class_of(ex.status);
    let shard = shard();
    let _ = CACHE.try_with(|cache| {
        let mut cache = cache.borrow_mut();
        let l = cache.listener(&ex.listener);
        let l = &cache.listeners[l].1;
        l.counts.add(shard, REQUESTS + class, 1);
        if ex.bytes_in > 0 {
            l.counts.add(shard, REQUEST_BYTES, ex.bytes_in);
        }
        l.counts.add(shard, RESPONSE_BYTES, ex.bytes_out);
        let Some(pool) = &ex.pool else { return };
        if let Some(server) = &ex.server {
            if let Some(i) = cache.server(pool, server) {
                let m = &cache.servers[i].2.metrics;
                m.counts.add(shard, REQUESTS + class, 1);
                if ex.bytes_in > 0 {
                    m.counts.add(shard, REQUEST_BYTES, ex.bytes_in);
                }
                m.counts.add(shard, RESPONSE_BYTES, ex.bytes_out);
                m.duration.observe_us(shard, (ex.total_ms * 1000.0) as u64);
            }
        }
        for retry in &ex.retries {
            if let Some(i) = cache.server(pool, &retry.server) {
                let slot = cause_slot(retry.cause);
                cache.servers[i]
                    .2
                    .metrics
                    .counts
                    .add(shard, RETRIES + slot, 1);
            }
        }
    });
}
