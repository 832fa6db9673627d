//! Servers that moved: a pool's names answered differently (crate::dns),
//! so the pool gets the servers they give now, in a new generation of the
//! live policy, as a reload would give them: a new address starts (its
//! checks start with the generation), a removed one takes no new request
//! while the ones in flight finish on the generation they began on, and
//! one in both keeps its state (health, drain, counters), which lives in
//! the registry, not in the policy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Supervisor;
use crate::dns::{list, Named, Resolved};
use crate::lb::{Pool, Server};

/// How long the state of an address a name no longer gives is kept: back
/// within this time (a DNS server that answers with a part of its records
/// each time), it is the same server, with its health and counters; after
/// it, forgotten, so that addresses that come and go (containers, pods) do
/// not pile up in the registry.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Servers DNS answers removed: (pool, address, `own_health`) and when.
pub type Gone = HashMap<(Arc<str>, SocketAddr, bool), Instant>;

impl Supervisor {
    /// Applies one round of a pool's answers, if they change its servers.
    pub(super) fn servers_moved(&mut self, answer: Resolved) {
        self.forget_gone();
        let live = self.running.policy().clone();
        let Some(index) = live.pool_by_name(&answer.pool) else {
            return;
        };
        let pool = &live.pools[index];
        // Asked for names a reload has changed since: the new task answers.
        if pool.named != answer.named || live.resolvers != answer.resolvers {
            return;
        }
        let servers = servers_now(pool, &answer, &self.registry);
        let key = |s: &Server| (s.addr, s.weight, s.backup, s.from.clone());
        let mut before: Vec<_> = pool.servers.iter().map(key).collect();
        let mut after: Vec<_> = servers.iter().map(key).collect();
        before.sort();
        after.sort();
        if before == after {
            return;
        }
        let changes: Vec<String> = answer
            .named
            .iter()
            .filter_map(|n| change_of(n, pool, &servers))
            .collect();
        let name = pool.name.clone();
        let policy = Arc::new(live.with_pool(index, pool.with_servers(servers)));
        let removed: Vec<SocketAddr> = pool
            .servers
            .iter()
            .filter(|s| !after.iter().any(|a| a.0 == s.addr))
            .map(|s| s.addr)
            .collect();
        let own = pool.own_health;
        match self.go_live(policy) {
            Ok(generation) => {
                for change in changes {
                    tracing::info!("pool {name}: {change}; generation {generation} is live");
                }
                let now = Instant::now();
                for addr in removed {
                    self.gone.insert((name.clone(), addr, own), now);
                }
            }
            Err(e) => {
                for change in changes {
                    tracing::error!("pool {name}: {change}, but the workers did not take it: {e}");
                }
            }
        }
    }
}

impl Supervisor {
    /// Forgets the states of the servers DNS removed more than
    /// [`FORGET_AFTER`] ago and that no answer has brought back into their
    /// pool.
    fn forget_gone(&mut self) {
        if self.gone.is_empty() {
            return;
        }
        let live = self.running.policy().clone();
        let listed = |pool: &str, addr: SocketAddr, own: bool| {
            live.pools.iter().any(|p| {
                &*p.name == pool && p.own_health == own && p.servers.iter().any(|s| s.addr == addr)
            })
        };
        let registry = self.registry.clone();
        self.gone.retain(|(pool, addr, own), since| {
            if listed(pool, *addr, *own) {
                return false;
            }
            if since.elapsed() < FORGET_AFTER {
                return true;
            }
            registry.forget(pool, *addr, *own);
            false
        });
    }
}

/// The servers `pool` has with `answer`: those written as addresses, then
/// each name's in the order written (an address already there is left
/// out). A name whose answer is empty keeps the servers it has.
fn servers_now(pool: &Pool, answer: &Resolved, registry: &crate::lb::StateRegistry) -> Vec<Server> {
    let start_up = pool.check.as_ref().is_none_or(|c| c.start_up);
    let mut servers: Vec<Server> = pool
        .servers
        .iter()
        .filter(|s| s.from.is_none())
        .map(Server::again)
        .collect();
    for (named, found) in answer.named.iter().zip(&answer.found) {
        if found.is_empty() {
            let kept = pool
                .servers
                .iter()
                .filter(|s| s.from.as_ref() == Some(&named.text))
                .filter(|s| !servers.iter().any(|k| k.addr == s.addr))
                .map(Server::again)
                .collect::<Vec<_>>();
            servers.extend(kept);
            continue;
        }
        for target in named.targets(found, crate::config::MAX_WEIGHT as u32) {
            if servers.iter().any(|s| s.addr == target.addr) {
                continue;
            }
            let (server, _) = crate::dns::server_for(
                &pool.name,
                &target,
                &named.text,
                registry,
                (pool.own_health, start_up),
            );
            servers.push(server);
        }
    }
    servers
}

/// `app.test:8080 now 127.0.0.2:8080, 127.0.0.3:8080 (added 127.0.0.3:8080)`,
/// or None when this name's servers did not change.
fn change_of(named: &Named, pool: &Pool, servers: &[Server]) -> Option<String> {
    let of = |list: &[Server]| -> Vec<(SocketAddr, u32, bool)> {
        list.iter()
            .filter(|s| s.from.as_ref() == Some(&named.text))
            .map(|s| (s.addr, s.weight, s.backup))
            .collect()
    };
    let (was, now) = (of(&pool.servers), of(servers));
    let mut what = Vec::new();
    let added: Vec<SocketAddr> = now
        .iter()
        .filter(|n| !was.iter().any(|w| w.0 == n.0))
        .map(|n| n.0)
        .collect();
    let removed: Vec<SocketAddr> = was
        .iter()
        .filter(|w| !now.iter().any(|n| n.0 == w.0))
        .map(|w| w.0)
        .collect();
    if !added.is_empty() {
        what.push(format!("added {}", list(&added)));
    }
    if !removed.is_empty() {
        what.push(format!("removed {}, which drains", list(&removed)));
    }
    for n in &now {
        if let Some(w) = was.iter().find(|w| w.0 == n.0) {
            if w.1 != n.1 {
                what.push(format!("{} weight {} -> {}", n.0, w.1, n.1));
            }
            if w.2 != n.2 {
                let role = |b: bool| if b { "backup" } else { "primary" };
                what.push(format!("{} {} -> {}", n.0, role(w.2), role(n.2)));
            }
        }
    }
    if what.is_empty() {
        return None;
    }
    let addrs: Vec<SocketAddr> = now.iter().map(|n| n.0).collect();
    Some(format!(
        "{} now {} ({})",
        named.text,
        list(&addrs),
        what.join("; ")
    ))
}
