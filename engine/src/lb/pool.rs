//! A pool: its servers, how to pick among them, and how long to wait on
//! them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{RoundRobin, ServerState};

/// How long each phase of talking to a server may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// From the request sent to the response headers received.
    pub response: Duration,
    /// How long an unused upstream connection is kept for reuse.
    pub keepalive: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            response: Duration::from_secs(60),
            keepalive: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    /// `addr` as text, made once for logs, headers and scripts.
    pub addr_text: Arc<str>,
    pub weight: u32,
    pub backup: bool,
    pub state: Arc<ServerState>,
}

#[derive(Debug)]
pub struct Pool {
    pub name: Arc<str>,
    pub servers: Vec<Server>,
    pub retries: u32,
    pub timeouts: Timeouts,
    primaries: RoundRobin,
    backups: RoundRobin,
}

impl Pool {
    pub fn new(name: &str, servers: Vec<Server>, retries: u32, timeouts: Timeouts) -> Pool {
        let weighted = |backup: bool| -> Vec<(usize, u32)> {
            servers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.backup == backup)
                .map(|(i, s)| (i, s.weight))
                .collect()
        };
        let primaries = RoundRobin::new(&weighted(false));
        let backups = RoundRobin::new(&weighted(true));
        Pool {
            name: Arc::from(name),
            servers,
            retries,
            timeouts,
            primaries,
            backups,
        }
    }

    pub fn balance_name(&self) -> &'static str {
        "round_robin"
    }

    /// Picks a server that is up and not in `tried`; backups only when no
    /// primary qualifies.
    #[inline]
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let usable = |i: usize| self.servers[i].state.is_up() && !tried.contains(&i);
        self.primaries
            .pick(usable)
            .or_else(|| self.backups.pick(usable))
    }
}
