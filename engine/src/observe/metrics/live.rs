//! What the live policy has, taken when it goes live: its listeners and
//! every pool's servers with their state. A scrape walks this; the request
//! path reaches it only on a worker's first request for a server or a
//! listener (see `count.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::counters::{ListenerMetrics, TcpCounts};
use crate::config::{Mode, Policy};
use crate::lb::ServerState;
use crate::server::maxconn::{caps, Gate};

pub(super) struct LiveListener {
    pub name: Arc<str>,
    pub metrics: Arc<ListenerMetrics>,
    pub gate: Arc<Gate>,
    /// `mode = "tcp"`: its series are connections, not requests.
    pub tcp: bool,
}

pub(super) struct LiveServer {
    pub pool: Arc<str>,
    /// The server as logs and the API name it: its address.
    pub name: Arc<str>,
    pub weight: u32,
    pub state: Arc<ServerState>,
    /// In a `mode = "tcp"` pool.
    pub tcp: bool,
}

#[derive(Default)]
pub(super) struct Live {
    pub listeners: Vec<LiveListener>,
    pub servers: Vec<LiveServer>,
}

pub(super) static LIVE: Mutex<Option<Arc<Live>>> = Mutex::new(None);

/// Bumped each time a policy goes live: a name a worker could not find
/// is looked for again only after this moved (`count.rs`).
pub(super) static VERSION: AtomicU64 = AtomicU64::new(0);

/// Listener counters by name, kept across reloads (a listener that a
/// reload keeps keeps counting on).
static LISTENERS: Mutex<Vec<(Arc<str>, Arc<ListenerMetrics>)>> = Mutex::new(Vec::new());

/// Listener `name`'s requests and 5xx answers so far (0, 0 before its
/// first request), for the stats page and `/api/status`.
pub fn listener_counts(name: &str) -> (u64, u64) {
    let all = LISTENERS.lock().unwrap_or_else(|e| e.into_inner());
    all.iter()
        .find(|(n, _)| &**n == name)
        .map_or((0, 0), |(_, m)| (m.requests(), m.errors()))
}

/// Tcp listener `name`'s connections so far, and how many Pocket refused
/// or found no server for (all 0 before its first), for the stats page
/// and `/api/status`.
pub fn listener_tcp_counts(name: &str) -> TcpCounts {
    let all = LISTENERS.lock().unwrap_or_else(|e| e.into_inner());
    all.iter()
        .find(|(n, _)| &**n == name)
        .map_or(TcpCounts::default(), |(_, m)| m.tcp())
}

/// The counters of listener `name`, made on first sight.
pub(super) fn listener_metrics(name: &str) -> Arc<ListenerMetrics> {
    let mut all = LISTENERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, m)) = all.iter().find(|(n, _)| &**n == name) {
        return m.clone();
    }
    let m = Arc::new(ListenerMetrics::default());
    all.push((Arc::from(name), m.clone()));
    m
}

/// `policy` is live on every worker: its listeners and servers are what
/// `/metrics` shows from now on.
pub fn went_live(policy: &Policy) {
    let live = Live {
        listeners: policy
            .listeners
            .iter()
            .map(|l| LiveListener {
                name: l.name.clone(),
                metrics: listener_metrics(&l.name),
                gate: caps().listener_gate(l),
                tcp: l.mode == Mode::Tcp,
            })
            .collect(),
        servers: policy
            .pools
            .iter()
            .flat_map(|p| {
                p.servers.iter().map(|s| LiveServer {
                    pool: p.name.clone(),
                    name: s.addr_text.clone(),
                    weight: s.weight,
                    state: s.state.clone(),
                    tcp: p.mode == Mode::Tcp,
                })
            })
            .collect(),
    };
    *LIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(live));
    VERSION.fetch_add(1, Ordering::Release);
}

pub(super) fn current() -> Arc<Live> {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}
