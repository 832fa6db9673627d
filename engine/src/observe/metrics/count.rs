//! Counting one finished exchange. Runs on the worker thread for every
//! request, so it finds its counters without a hash or a lock: each worker
//! keeps a small cache from the `Arc<str>` names the record carries (the
//! policy's own pool name and server address text, so a pointer compare
//! finds them) to the counters; only a worker's first request for a name,
//! or the first after a reload made new names, looks in the live snapshot
//! under its lock.

use std::cell::RefCell;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::counters::{cause_slot, class_of, ListenerMetrics};
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
    #[inline]
    fn server(&mut self, pool: &Arc<str>, server: &Arc<str>) -> Option<Arc<ServerState>> {
        // Same allocation: the usual case, a pointer compare per entry.
        if let Some((_, _, s)) = self
            .servers
            .iter()
            .find(|(p, n, _)| Arc::ptr_eq(p, pool) && Arc::ptr_eq(n, server))
        {
            return Some(s.clone());
        }
        let found = self
            .servers
            .iter()
            .find(|(p, n, _)| **p == **pool && **n == **server)
            .map(|(_, _, s)| s.clone())
            .or_else(|| resolve_server(pool, server))?;
        if self.servers.len() >= CACHE_MAX {
            self.servers.clear();
        }
        self.servers
            .push((pool.clone(), server.clone(), found.clone()));
        Some(found)
    }

    #[inline]
    fn listener(&mut self, name: &Arc<str>) -> Arc<ListenerMetrics> {
        if let Some((_, m)) = self.listeners.iter().find(|(n, _)| Arc::ptr_eq(n, name)) {
            return m.clone();
        }
        let m = match self.listeners.iter().find(|(n, _)| **n == **name) {
            Some((_, m)) => m.clone(),
            None => live::listener_metrics(name),
        };
        if self.listeners.len() >= CACHE_MAX {
            self.listeners.clear();
        }
        self.listeners.push((name.clone(), m.clone()));
        m
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
    let _ = CACHE.try_with(|cache| {
        let mut cache = cache.borrow_mut();
        let l = cache.listener(&ex.listener);
        l.requests[class].fetch_add(1, Relaxed);
        if ex.bytes_in > 0 {
            l.request_bytes.fetch_add(ex.bytes_in, Relaxed);
        }
        l.response_bytes.fetch_add(ex.bytes_out, Relaxed);
        let Some(pool) = &ex.pool else { return };
        if let Some(server) = &ex.server {
            if let Some(s) = cache.server(pool, server) {
                let m = &s.metrics;
                m.requests[class].fetch_add(1, Relaxed);
                if ex.bytes_in > 0 {
                    m.request_bytes.fetch_add(ex.bytes_in, Relaxed);
                }
                m.response_bytes.fetch_add(ex.bytes_out, Relaxed);
                m.duration.observe_us((ex.total_ms * 1000.0) as u64);
            }
        }
        for retry in &ex.retries {
            if let Some(s) = cache.server(pool, &retry.server) {
                s.metrics.retries[cause_slot(retry.cause)].fetch_add(1, Relaxed);
            }
        }
    });
}
