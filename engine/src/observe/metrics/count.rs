//! Counting one finished exchange. Runs on the worker thread for every
//! request, so it finds its counters without a hash or a lock: each worker
//! keeps a small cache from the `Arc<str>` names the record carries (the
//! policy's own pool name and server address text, so a pointer compare
//! finds them) to the counters; only a worker's first request for a name,
//! or the first after a reload made new names, looks in the live snapshot
//! under its lock. A name found nowhere (a server of a generation already
//! gone) is remembered as such until another policy goes live, so it costs
//! no lock per request either.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::counters::{
    cause_slot, class_of, shard, termination_slot, ListenerMetrics, REQUESTS, REQUEST_BYTES,
    RESPONSE_BYTES, RETRIES, TCP_CONNECTIONS,
};
use super::live;
use crate::lb::ServerState;
use crate::observe::Exchange;

/// Entries kept per worker before the cache starts over (old generations'
/// names pile up across reloads otherwise).
const CACHE_MAX: usize = 256;

/// A (pool, server) name pair and its state; None: not found when
/// [`live::VERSION`] was the number kept.
type ServerEntry = (Arc<str>, Arc<str>, Option<Arc<ServerState>>, u64);

#[derive(Default)]
struct Cache {
    servers: Vec<ServerEntry>,
    listeners: Vec<(Arc<str>, Arc<ListenerMetrics>)>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

impl Cache {
    /// The state for (pool, server), if any is known; no reference count
    /// is touched on a hit (an `Arc` clone here would be a shared cache
    /// line every worker writes).
    #[inline]
    fn server(&mut self, pool: &Arc<str>, server: &Arc<str>) -> Option<&ServerState> {
        // Same allocation: the usual case, a pointer compare per entry.
        let i = match self
            .servers
            .iter()
            .position(|(p, n, _, _)| Arc::ptr_eq(p, pool) && Arc::ptr_eq(n, server))
        {
            Some(i) => i,
            None => match self
                .servers
                .iter()
                .position(|(p, n, _, _)| **p == **pool && **n == **server)
            {
                Some(i) => i,
                None => {
                    if self.servers.len() >= CACHE_MAX {
                        self.servers.clear();
                    }
                    let version = live::VERSION.load(Ordering::Acquire);
                    let found = resolve_server(pool, server);
                    self.servers
                        .push((pool.clone(), server.clone(), found, version));
                    self.servers.len() - 1
                }
            },
        };
        let entry = &mut self.servers[i];
        if entry.2.is_none() {
            // Not found before: look again only if a policy went live since.
            let version = live::VERSION.load(Ordering::Acquire);
            if entry.3 != version {
                entry.2 = resolve_server(pool, server);
                entry.3 = version;
            }
        }
        entry.2.as_deref()
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

/// Counts one finished exchange: its listener's requests by status class
/// and bytes; its server's, if the server answered (a 502/503/504 Pocket
/// made, or a client gone while connecting, is the listener's only, as
/// HAProxy's per-server response counters count the server's responses);
/// and a retry for each failed attempt another attempt followed, under the
/// pool that attempt was in.
pub fn exchange(ex: &Exchange) {
    if ex.tcp {
        return connection(ex);
    }
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
        if let (Some(pool), Some(server), Some(_)) = (&ex.pool, &ex.server, ex.first_byte_ms) {
            if let Some(state) = cache.server(pool, server) {
                let m = &state.metrics;
                m.counts.add(shard, REQUESTS + class, 1);
                if ex.bytes_in > 0 {
                    m.counts.add(shard, REQUEST_BYTES, ex.bytes_in);
                }
                m.counts.add(shard, RESPONSE_BYTES, ex.bytes_out);
                // A tunnel (proxy/tunnel.rs) may stay open for hours:
                // its time is that of its 101, not of the tunnel.
                let ms = match (ex.status, ex.first_byte_ms) {
                    (101, Some(head)) => head,
                    _ => ex.total_ms,
                };
                m.duration.observe_us(shard, (ms * 1000.0) as u64);
            }
        }
        for retry in ex.retries.iter().filter(|r| r.retried) {
            if let Some(state) = cache.server(&retry.pool, &retry.server) {
                let slot = cause_slot(retry.cause);
                state.metrics.counts.add(shard, RETRIES + slot, 1);
            }
        }
    });
}

/// Counts one finished TCP-mode connection (tcp/): its listener's
/// connections by termination state and bytes both ways; its server's
/// (likewise), if one was connected to
/// (no duration: a connection may last hours, and the latency histogram
/// is of answers); and a retry for each failed connect another followed.
fn connection(ex: &Exchange) {
    let shard = shard();
    let ended = TCP_CONNECTIONS + termination_slot(ex.termination.letters());
    let _ = CACHE.try_with(|cache| {
        let mut cache = cache.borrow_mut();
        let l = cache.listener(&ex.listener);
        let l = &cache.listeners[l].1;
        l.counts.add(shard, ended, 1);
        l.counts.add(shard, REQUEST_BYTES, ex.bytes_in);
        l.counts.add(shard, RESPONSE_BYTES, ex.bytes_out);
        if let (Some(pool), Some(server), Some(_)) = (&ex.pool, &ex.server, ex.connect_ms) {
            if let Some(state) = cache.server(pool, server) {
                let m = &state.metrics;
                m.counts.add(shard, ended, 1);
                m.counts.add(shard, REQUEST_BYTES, ex.bytes_in);
                m.counts.add(shard, RESPONSE_BYTES, ex.bytes_out);
            }
        }
        for retry in ex.retries.iter().filter(|r| r.retried) {
            if let Some(state) = cache.server(&retry.pool, &retry.server) {
                let slot = cause_slot(retry.cause);
                state.metrics.counts.add(shard, RETRIES + slot, 1);
            }
        }
    });
}
