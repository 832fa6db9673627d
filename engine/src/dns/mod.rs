//! Servers that move: pool servers written as DNS names.
//!
//! A server entry written with a host name (`"app.test:8080"`) gives one
//! server per address the name resolves to, as nginx does; one written
//! `{ srv = "_http._tcp.app.test" }` gives one per SRV record, with the
//! record's port and weight (nginx's `service=`, HAProxy's
//! `server-template` with an SRV name). Names are resolved at load, by the
//! policy's `resolvers` (nginx's `resolver`) or the system's
//! (/etc/resolv.conf), never on the request path. A pool with
//! `resolve = "10s"` has them resolved again every 10 s on the control
//! thread ([`Refresher`]); an answer that changes the pool's servers makes
//! a new generation of the live policy, as a reload does (the supervisor
//! applies it: reload/mod.rs): new addresses start (checked as the pool
//! checks), removed ones take no new requests while the ones in flight
//! finish on the generation they started on, unchanged ones keep their
//! health and counters (they are the same [`crate::lb::ServerState`]).
//!
//! A name that does not resolve any more keeps its last addresses (nginx
//! and HAProxy keep theirs too), said once in the log when it starts
//! failing and once when it answers again. See docs/operations.md,
//! "Servers that move".

mod lookup;
mod refresh;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use lookup::{find_all_blocking, find_blocking, Resolver};
pub use refresh::{Refresher, Resolved};

/// The DNS port when `resolvers` names an address without one.
pub const DNS_PORT: u16 = 53;
/// How long one query may wait for an answer, each of [`ATTEMPTS`]: a
/// resolver that stopped answering costs a load at most this twice per
/// name, and a refresh as much (never a request: they do not wait on DNS).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How many times a query is sent (the first and one more) before a name
/// is said to give no answer. A DNS server that refuses (nothing listens
/// on its port) is waited for like one that is silent: UDP says nothing.
pub const ATTEMPTS: usize = 2;

/// Which DNS servers names are asked of: the policy's `resolvers`, or,
/// when it has none, the system's (/etc/resolv.conf, and /etc/hosts
/// first, as the C library does).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Resolvers(pub Vec<SocketAddr>);

impl Resolvers {
    pub fn system(&self) -> bool {
        self.0.is_empty()
    }

    /// `127.0.0.1:5353, 127.0.0.1:5354` or `the system's (/etc/resolv.conf)`,
    /// for messages.
    pub fn describe(&self) -> String {
        if self.system() {
            return "the system's (/etc/resolv.conf)".into();
        }
        let all: Vec<String> = self.0.iter().map(|a| a.to_string()).collect();
        all.join(", ")
    }
}

/// What a server entry written with a name asks DNS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Query {
    /// `"app.test:8080"`: every address (A and AAAA) of `host`, on `port`.
    Host { host: String, port: u16 },
    /// `{ srv = "_http._tcp.app.test" }`: each SRV record's target's
    /// addresses, on the record's port, with its weight; records of the
    /// lowest priority are the primaries, the others backups (nginx's
    /// `service=`).
    Srv(String),
}

/// A server entry of a pool written with a name: what is resolved again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Named {
    pub query: Query,
    /// As written (`app.test:8080`, `_http._tcp.app.test`): in the log,
    /// the admin API and `pocket status`.
    pub text: Arc<str>,
    /// The entry's `weight` (a host name; SRV records bring their own).
    pub weight: u32,
    /// The entry's `backup`: every server it gives is a backup.
    pub backup: bool,
}

/// One address a name resolved to, as DNS said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub addr: SocketAddr,
    /// The host name the address belongs to (a host entry's own, an SRV
    /// record's target): the server's SNI and name verified by TLS.
    pub host: Arc<str>,
    /// An SRV record's priority and weight.
    pub srv: Option<(u16, u16)>,
}

/// One server a named entry gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    pub host: Arc<str>,
}

impl Named {
    /// The servers `found` gives this entry, in DNS's order, one per
    /// address. An SRV weight of 0 counts as 1 (RFC 2782: "a very small
    /// chance"), and one above `max_weight` as `max_weight`.
    pub fn targets(&self, found: &[Found], max_weight: u32) -> Vec<Target> {
        let primary = found.iter().filter_map(|f| f.srv.map(|(p, _)| p)).min();
        let mut out: Vec<Target> = Vec::new();
        for f in found {
            if out.iter().any(|t| t.addr == f.addr) {
                continue;
            }
            let (weight, backup) = match f.srv {
                None => (self.weight, self.backup),
                Some((priority, weight)) => (
                    u32::from(weight).clamp(1, max_weight),
                    self.backup || Some(priority) != primary,
                ),
            };
            out.push(Target {
                addr: f.addr,
                weight,
                backup,
                host: f.host.clone(),
            });
        }
        out
    }
}

/// The server `target` is in `pool`: its state from `registry` (the one a
/// server of that pool and address had before, or a new one, which starts
/// down when the pool's check says `start = "down"`: `start_up` false);
/// also whether its health is new. A weight set through the admin API
/// outlives the answers, as it outlives reloads.
pub fn server_for(
    pool: &str,
    target: &Target,
    from: &Arc<str>,
    registry: &crate::lb::StateRegistry,
    (own_health, start_up): (bool, bool),
) -> (crate::lb::Server, bool) {
    let (state, fresh) = registry.get_or_create(pool, target.addr, own_health, start_up);
    let server = crate::lb::Server {
        addr: target.addr,
        addr_text: Arc::from(target.addr.to_string()),
        weight: state.weight_or(target.weight),
        backup: target.backup,
        state,
        name: Some(target.host.clone()),
        from: Some(from.clone()),
        transport: 0,
    };
    (server, fresh)
}

/// The last answer each name gave, for each set of resolvers: a load
/// (start, reload) during a DNS outage keeps a name's last addresses
/// instead of refusing the policy, as the refresh does. Filled by every
/// good answer, at load or refresh.
type Answers = Mutex<HashMap<(Resolvers, Query), Vec<Found>>>;

fn last_good() -> &'static Answers {
    static LAST: OnceLock<Answers> = OnceLock::new();
    LAST.get_or_init(Default::default)
}

/// Keeps `found` as the last good answer to `query`.
pub fn remember(resolvers: &Resolvers, query: &Query, found: &[Found]) {
    last_good()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((resolvers.clone(), query.clone()), found.to_vec());
}

/// The last good answer to `query`, if this process ever had one.
pub fn remembered(resolvers: &Resolvers, query: &Query) -> Option<Vec<Found>> {
    last_good()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(resolvers.clone(), query.clone()))
        .cloned()
}

/// `127.0.0.2:8080, 127.0.0.3:8080`: addresses for the log.
pub fn list(addrs: &[SocketAddr]) -> String {
    if addrs.is_empty() {
        return "no address".into();
    }
    let all: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    all.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(addr: &str, srv: Option<(u16, u16)>) -> Found {
        Found {
            addr: addr.parse().unwrap(),
            host: Arc::from("h.test"),
            srv,
        }
    }

    #[test]
    fn srv_priorities_make_backups_and_weights_are_bounded() {
        let named = Named {
            query: Query::Srv("_http._tcp.app.test".into()),
            text: Arc::from("_http._tcp.app.test"),
            weight: 1,
            backup: false,
        };
        let t = named.targets(
            &[
                found("127.0.0.2:8081", Some((10, 5))),
                found("127.0.0.3:8082", Some((10, 0))),
                found("127.0.0.4:8083", Some((20, 9000))),
                found("127.0.0.2:8081", Some((10, 5))),
            ],
            256,
        );
        let got: Vec<(String, u32, bool)> = t
            .iter()
            .map(|t| (t.addr.to_string(), t.weight, t.backup))
            .collect();
        assert_eq!(
            got,
            [
                ("127.0.0.2:8081".to_string(), 5, false),
                ("127.0.0.3:8082".to_string(), 1, false),
                ("127.0.0.4:8083".to_string(), 256, true),
            ]
        );
    }

    #[test]
    fn a_host_entry_gives_its_weight_to_every_address() {
        let named = Named {
            query: Query::Host {
                host: "app.test".into(),
                port: 80,
            },
            text: Arc::from("app.test:80"),
            weight: 3,
            backup: true,
        };
        let t = named.targets(
            &[found("127.0.0.2:80", None), found("127.0.0.3:80", None)],
            256,
        );
        assert!(t.iter().all(|t| t.weight == 3 && t.backup));
        assert_eq!(t.len(), 2);
    }
}
