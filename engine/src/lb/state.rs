//! Runtime state of a server: kept outside the policy, keyed by pool and
//! address, so a server that is in the old and the new policy keeps its
//! health and counters across a reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Shared by every worker; read on the request path without locks.
#[derive(Debug)]
pub struct ServerState {
    up: AtomicBool,
    /// Requests in flight on this server, across workers.
    pub active: AtomicUsize,
    /// Requests this server answered.
    pub requests: AtomicU64,
    /// Connections or requests that failed on this server.
    pub failures: AtomicU64,
}

impl Default for ServerState {
    fn default() -> Self {
        ServerState {
            up: AtomicBool::new(true),
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

impl ServerState {
    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }
}

/// Where server states live between policy generations.
#[derive(Debug, Default)]
pub struct StateRegistry {
    states: Mutex<HashMap<(String, SocketAddr), Arc<ServerState>>>,
}

impl StateRegistry {
    /// The state of `addr` in `pool`, created on first sight. Called at
    /// load time only.
    pub fn get_or_create(&self, pool: &str, addr: SocketAddr) -> Arc<ServerState> {
        let mut states = match self.states.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        states.entry((pool.to_string(), addr)).or_default().clone()
    }
}
