//! A pool: its servers, how to pick among them, how to check them and how
//! long to wait on them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::balance::{Algorithm, Tier};
use super::ServerState;
use crate::config::upstream_tls::{Protocol, UpstreamTls};
use crate::explain::{NoTrace, Tracer};

/// How long each phase of talking to a server may take. Each watches one
/// phase and, but for `connect` and `total`, measures the server's
/// silence, not the length of the exchange: a slow upload or download that
/// keeps moving is never cut (as nginx's `proxy_read_timeout` and
/// HAProxy's `timeout server`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// From the request sent whole (its last body byte handed over) to the
    /// response head received: the server's thinking time. A 504.
    pub response: Duration,
    /// Longest silence from a server while its response body streams, or
    /// while it does not take the request body it is being sent (also its
    /// sockets' TCP_USER_TIMEOUT, so a pulled cable is noticed).
    pub idle: Duration,
    /// How long an unused upstream connection is kept for reuse.
    pub keepalive: Duration,
    /// Optional limit on the whole exchange, from the request being routed
    /// to the response's last byte (Envoy's route `timeout`): a 504 before
    /// the response head, the connection cut after it. None: no limit.
    pub total: Option<Duration>,
    /// Longest silence, both ways, of an upgraded connection (a WebSocket
    /// tunnel, proxy/tunnel.rs) before it is closed: HAProxy's `timeout
    /// tunnel`, which replaces the other timeouts once a tunnel is up.
    pub tunnel: Duration,
}

/// A tunnel's idle limit when the pool sets none: an hour, the value
/// HAProxy's documentation suggests for `timeout tunnel` with WebSockets
/// (HAProxy has no default; nginx's `proxy_read_timeout`, 60 s, would cut
/// a quiet WebSocket that pings less often than that).
pub const DEFAULT_TUNNEL_TIMEOUT: Duration = Duration::from_secs(3600);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            response: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            keepalive: Duration::from_secs(30),
            total: None,
            tunnel: DEFAULT_TUNNEL_TIMEOUT,
        }
    }
}

/// An active health check, run by the control thread, never on the
/// request path.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// The state a server starts in before its first verdict.
    pub start_up: bool,
    /// A function written in this pool (`check = function` or `run =`):
    /// another pool's check is never the same as this one, even with the
    /// same code (`script = true`, the policy's `on_check`, can be).
    pub pool_function: bool,
    /// The pool's `send_proxy`: each check starts with a PROXY header that
    /// names no client (HAProxy's `check-send-proxy`).
    pub send_proxy: Option<crate::proxy::proxy_header::SendProxy>,
}

impl CheckSpec {
    /// Two specs that print alike check alike: a reload keeps their tasks.
    pub fn fingerprint(&self) -> String {
        format!("{self:?}")
    }
}

#[derive(Debug, Clone)]
pub enum CheckKind {
    Tcp,
    /// A Lua function run on the control thread as a coroutine:
    /// `check = function(server, http)`, `check = { run = function ... }`
    /// or the policy's `on_check` with `check = { script = true }`.
    Script,
    /// `check = { send = "PING\r\n", expect = "+PONG" }` in a `tcp` pool
    /// (HAProxy's `tcp-check send` / `tcp-check expect`): connect, send
    /// `send` if given, and read until the first line `expect` names.
    Expect {
        send: Option<Vec<u8>>,
        expect: Expect,
    },
    Http {
        method: String,
        path: String,
        host: Option<String>,
        /// Inclusive range of good statuses.
        expect: (u16, u16),
        /// A substring the body must contain.
        body: Option<String>,
        /// A pattern the body must match.
        pattern: Option<regex::Regex>,
    },
}

/// What a `send`/`expect` check waits for in the server's first line.
#[derive(Debug, Clone)]
pub enum Expect {
    /// `expect = "220"`: the line contains this text.
    Text(String),
    /// `expect = { pattern = "^220 " }`: the line matches this regex.
    Pattern(regex::Regex),
}

/// Passive checking on live traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Passive {
    /// Failures in a row that take a server down (0: never).
    pub after: u32,
    /// Whether a 5xx answer counts as a failure.
    pub on_5xx: bool,
    /// Without an active check, how long an ejected server rests before
    /// it gets traffic again.
    pub cooldown: Duration,
}

impl Passive {
    /// Whether this pool counts failures at all (`after > 0`). Only such a
    /// pool's good answers end a streak shared with other pools: with
    /// `passive = false` a pool adds nothing (docs/health.md).
    #[inline]
    pub fn counts(&self) -> bool {
        self.after > 0
    }
}

impl Default for Passive {
    fn default() -> Self {
        Passive {
            after: 3,
            on_5xx: false,
            cooldown: Duration::from_secs(10),
        }
    }
}

/// What a `hash` pool hashes.
#[derive(Debug, Clone)]
pub enum HashKey {
    /// The client's address.
    Source,
    /// Path and query.
    Uri,
    Path,
    Host,
    Header(HeaderName),
    Cookie(String),
    /// `hash_key = function(req) ... end`, called in the worker's VM.
    Script,
}

#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    /// `addr` as text, made once for logs, headers and scripts.
    pub addr_text: Arc<str>,
    pub weight: u32,
    pub backup: bool,
    pub state: Arc<ServerState>,
    /// The host name the server was written with (None: an IP address):
    /// the SNI and the name verified by TLS to it.
    pub name: Option<Arc<str>>,
    /// The entry written with a name that gave this server
    /// (`app.test:8080`, an SRV name), as written; None: written as an
    /// address. Servers from a name come and go as it resolves
    /// (crate::dns).
    pub from: Option<Arc<str>>,
    /// How connections reach it, as a number (0: plain HTTP/1.1): its
    /// pool's `tls` and `protocol`, and for TLS its `name` (its own SNI).
    /// Idle connections are kept per address and this (proxy/upstream.rs
    /// ConnKey), so two pools that reach one address differently never
    /// share one; stable across reloads that keep the settings. Set by
    /// [`Pool::new`], so no request computes it.
    pub transport: u64,
}

impl Server {
    /// The same server, for another generation of its pool ([`Pool::new`]
    /// sets its transport again).
    pub fn again(&self) -> Server {
        Server {
            addr: self.addr,
            addr_text: self.addr_text.clone(),
            weight: self.weight,
            backup: self.backup,
            state: self.state.clone(),
            name: self.name.clone(),
            from: self.from.clone(),
            transport: 0,
        }
    }
}

#[derive(Debug)]
pub struct Pool {
    pub name: Arc<str>,
    pub servers: Vec<Server>,
    pub retries: u32,
    pub timeouts: Timeouts,
    pub algorithm: Algorithm,
    pub hash_key: Option<HashKey>,
    pub balance_factor: Option<u32>,
    pub check: Option<Arc<CheckSpec>>,
    pub passive: Passive,
    /// A server that comes back up ramps from a tenth of its share to all
    /// of it over this time.
    pub slow_start: Option<Duration>,
    /// Where requests go when no server of this pool can take them (and
    /// what a `bypass` function sends elsewhere).
    pub fallback: Option<Arc<str>>,
    /// `fallback` as an index into the policy's pools, resolved once at
    /// load (never a name lookup per request).
    fallback_index: std::sync::OnceLock<usize>,
    /// Hash pools: when the key's server is down, try the next one on the
    /// ring (true) or go to the fallback pool (false: a cache tier keeps
    /// each URL on one cache).
    pub rehash: bool,
    /// `own_health = true`: this pool's servers have a health of their
    /// own, not the one their address shares with other pools.
    pub own_health: bool,
    /// `send_proxy`: new connections to the servers start with a PROXY
    /// header naming the client (proxy/proxy_header.rs).
    pub send_proxy: Option<crate::proxy::proxy_header::SendProxy>,
    /// `tls`: how connections to the servers are secured (None: plain TCP).
    pub tls: Option<Arc<UpstreamTls>>,
    /// `protocol`: HTTP/1.1 or HTTP/2 to the servers.
    pub protocol: Protocol,
    /// `mode`: HTTP requests or whole TCP connections; served only by
    /// listeners of the same mode.
    pub mode: crate::config::Mode,
    /// `resolve`: how often the entries written with a name are resolved
    /// again (None: at load only).
    pub resolve: Option<Duration>,
    /// The entries written with a name (host names, SRV names), in the
    /// order written: what `resolve` asks again.
    pub named: Vec<crate::dns::Named>,
    primaries: Tier,
    backups: Tier,
}

/// Everything about a pool but its servers, as the policy says it.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub retries: u32,
    pub timeouts: Timeouts,
    pub algorithm: Algorithm,
    pub hash_key: Option<HashKey>,
    pub balance_factor: Option<u32>,
    pub check: Option<CheckSpec>,
    pub passive: Passive,
    pub slow_start: Option<Duration>,
    pub fallback: Option<Arc<str>>,
    pub rehash: bool,
    pub own_health: bool,
    pub send_proxy: Option<crate::proxy::proxy_header::SendProxy>,
    pub tls: Option<Arc<UpstreamTls>>,
    pub protocol: Protocol,
    pub mode: crate::config::Mode,
    pub resolve: Option<Duration>,
    pub named: Vec<crate::dns::Named>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            retries: 3,
            timeouts: Timeouts::default(),
            algorithm: Algorithm::RoundRobin,
            hash_key: None,
            balance_factor: None,
            check: None,
            passive: Passive::default(),
            slow_start: None,
            fallback: None,
            rehash: true,
            own_health: false,
            send_proxy: None,
            tls: None,
            protocol: Protocol::Http1,
            mode: crate::config::Mode::Http,
            resolve: None,
            named: Vec::new(),
        }
    }
}

/// FNV-1a of how a pool reaches its servers; 0 for plain HTTP/1.1.
fn transport_id(tls: Option<&UpstreamTls>, protocol: Protocol) -> u64 {
    if tls.is_none() && protocol == Protocol::Http1 {
        return 0;
    }
    fnv(
        0xcbf2_9ce4_8422_2325,
        format!("{tls:?}|{}", protocol.name()).as_bytes(),
    ) | 1
}

/// A server's transport: its pool's, and with TLS its name too (each name
/// its own SNI: its own connections).
fn server_transport(pool: u64, tls: bool, name: Option<&str>) -> u64 {
    match name {
        Some(name) if pool != 0 && tls => fnv(pool, name.as_bytes()),
        _ => pool,
    }
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Pool {
    pub fn new(name: &str, mut servers: Vec<Server>, settings: PoolSettings) -> Pool {
        let transport = transport_id(settings.tls.as_deref(), settings.protocol);
        for s in &mut servers {
            s.transport = server_transport(transport, settings.tls.is_some(), s.name.as_deref());
        }
        let tier = |backup: bool| -> Vec<usize> {
            servers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.backup == backup)
                .map(|(i, _)| i)
                .collect()
        };
        let primaries = Tier::new(&servers, tier(false), &settings.algorithm);
        let backups = Tier::new(&servers, tier(true), &settings.algorithm);
        Pool {
            name: Arc::from(name),
            servers,
            retries: settings.retries,
            timeouts: settings.timeouts,
            algorithm: settings.algorithm,
            hash_key: settings.hash_key,
            balance_factor: settings.balance_factor,
            check: settings.check.map(Arc::new),
            passive: settings.passive,
            slow_start: settings.slow_start,
            fallback: settings.fallback,
            fallback_index: std::sync::OnceLock::new(),
            rehash: settings.rehash,
            own_health: settings.own_health,
            send_proxy: settings.send_proxy,
            tls: settings.tls,
            protocol: settings.protocol,
            mode: settings.mode,
            resolve: settings.resolve,
            named: settings.named,
            primaries,
            backups,
        }
    }

    pub fn balance_name(&self) -> &'static str {
        self.algorithm.name()
    }

    /// Picks a server that is up, ready and not in `tried`; backups only
    /// when no primary qualifies. `preferred` (a script's choice) wins when
    /// it qualifies.
    #[inline]
    pub fn pick(
        &self,
        tried: &[usize],
        key: Option<u64>,
        preferred: Option<usize>,
    ) -> Option<usize> {
        self.pick_traced(tried, key, preferred, &mut NoTrace)
    }

    /// [`Pool::pick`], telling `t` every server and why it was or was not
    /// the one (`pocket explain`); with [`NoTrace`] it is `pick` itself.
    #[inline]
    pub fn pick_traced<T: Tracer>(
        &self,
        tried: &[usize],
        key: Option<u64>,
        preferred: Option<usize>,
        t: &mut T,
    ) -> Option<usize> {
        let chosen = self.pick_untraced(tried, key, preferred);
        if T::ON {
            let candidates = crate::explain::candidates(self, tried, key, chosen);
            t.pick(&self.name, candidates, chosen);
        }
        chosen
    }

    #[inline]
    fn pick_untraced(
        &self,
        tried: &[usize],
        key: Option<u64>,
        preferred: Option<usize>,
    ) -> Option<usize> {
        let usable = |i: usize| {
            let s = &self.servers[i].state;
            s.takes_traffic() && !tried.contains(&i) && self.ramped_up(s)
        };
        if let Some(p) = preferred.filter(|&p| p < self.servers.len() && usable(p)) {
            return Some(p);
        }
        self.pick_with(&usable, key).or_else(|| {
            // Slow start only shifts shares: a ramping server still serves
            // when nobody else can.
            self.slow_start?;
            let ready = |i: usize| self.servers[i].state.takes_traffic() && !tried.contains(&i);
            self.pick_with(&ready, key)
        })
    }

    fn pick_with(&self, usable: &dyn Fn(usize) -> bool, key: Option<u64>) -> Option<usize> {
        self.primaries
            .pick(
                &self.algorithm,
                &self.servers,
                usable,
                key,
                self.balance_factor,
                self.rehash,
            )
            .or_else(|| {
                if self.backups.is_empty() {
                    return None;
                }
                self.backups.pick(
                    &self.algorithm,
                    &self.servers,
                    usable,
                    key,
                    self.balance_factor,
                    self.rehash,
                )
            })
    }

    /// Slow start: a server back for `t` of a `slow_start` of `d` is
    /// skipped with probability 1 - max(t/d, 0.1).
    #[inline]
    fn ramped_up(&self, s: &ServerState) -> bool {
        let Some(ramp) = self.slow_start else {
            return true;
        };
        let since = s.up_at_ms();
        if since == 0 {
            return true;
        }
        let ramp_ms = ramp.as_millis() as u64;
        let elapsed = super::now_ms().saturating_sub(since);
        if elapsed >= ramp_ms {
            return true;
        }
        let share = elapsed.max(ramp_ms / 10);
        super::balance::random_below(ramp_ms as usize) < share as usize
    }

    /// The server that owns `key` on the hash ring of the primaries (or of
    /// the backups), up or not: what `pocket explain` calls the key's
    /// server. None for a pool that is not `hash`.
    pub fn key_owner(&self, key: u64, backups: bool) -> Option<usize> {
        self.ring_order(key, backups).first().copied()
    }

    /// The servers of the primaries' (or backups') hash ring in the order
    /// a pick for `key` walks them. Empty for a pool that is not `hash`.
    pub fn ring_order(&self, key: u64, backups: bool) -> Vec<usize> {
        if backups {
            self.backups.ring_order(key)
        } else {
            self.primaries.ring_order(key)
        }
    }

    /// Indices of the servers a script may choose from now.
    pub fn candidates(&self) -> Vec<usize> {
        let primaries: Vec<usize> = (0..self.servers.len())
            .filter(|&i| !self.servers[i].backup && self.servers[i].state.takes_traffic())
            .collect();
        if !primaries.is_empty() {
            return primaries;
        }
        (0..self.servers.len())
            .filter(|&i| self.servers[i].backup && self.servers[i].state.takes_traffic())
            .collect()
    }

    /// The same pool with each server's weight as its state now says
    /// ([`super::ServerState::weight_or`]): the admin API's weight action
    /// makes a new generation of the live policy from these.
    pub fn reweighted(&self) -> Pool {
        let servers = self
            .servers
            .iter()
            .map(|s| Server {
                weight: s.state.weight_or(s.weight),
                ..s.again()
            })
            .collect();
        self.with_servers(servers)
    }

    /// The same pool with other servers (what a name resolves to now:
    /// crate::dns), its fallback kept. A server in both keeps its state,
    /// as in a reload, since states live in the registry.
    pub fn with_servers(&self, servers: Vec<Server>) -> Pool {
        let settings = PoolSettings {
            retries: self.retries,
            timeouts: self.timeouts,
            algorithm: self.algorithm.clone(),
            hash_key: self.hash_key.clone(),
            balance_factor: self.balance_factor,
            check: self.check.as_deref().cloned(),
            passive: self.passive,
            slow_start: self.slow_start,
            fallback: self.fallback.clone(),
            rehash: self.rehash,
            own_health: self.own_health,
            send_proxy: self.send_proxy,
            tls: self.tls.clone(),
            protocol: self.protocol,
            mode: self.mode,
            resolve: self.resolve,
            named: self.named.clone(),
        };
        let pool = Pool::new(&self.name, servers, settings);
        if let Some(i) = self.fallback_pool() {
            pool.resolve_fallback(i);
        }
        pool
    }

    /// The pool requests go to when this one cannot take them.
    #[inline]
    pub fn fallback_pool(&self) -> Option<usize> {
        self.fallback_index.get().copied()
    }

    /// Called once by the loader, after every pool exists.
    pub fn resolve_fallback(&self, index: usize) {
        let _ = self.fallback_index.set(index);
    }

    /// How many servers can take traffic now.
    pub fn servers_up(&self) -> usize {
        self.servers
            .iter()
            .filter(|s| s.state.takes_traffic())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::StateRegistry;

    fn pool(settings: PoolSettings) -> Pool {
        let registry = StateRegistry::default();
        let servers = ["127.0.0.1:1", "127.0.0.1:2"]
            .iter()
            .map(|a| {
                let addr: SocketAddr = a.parse().unwrap();
                Server {
                    addr,
                    addr_text: Arc::from(*a),
                    weight: 1,
                    backup: false,
                    state: registry.get_or_create("p", addr, false, true).0,
                    name: None,
                    from: None,
                    transport: 0,
                }
            })
            .collect();
        Pool::new("p", servers, settings)
    }

    #[test]
    fn slow_start_gives_a_recovered_server_a_small_share_first() {
        let p = pool(PoolSettings {
            slow_start: Some(Duration::from_secs(60)),
            ..PoolSettings::default()
        });
        p.servers[1].state.set_up(false, "test");
        p.servers[1].state.set_up(true, "test");
        let picks = (0..1000)
            .filter(|_| p.pick(&[], None, None) == Some(1))
            .count();
        assert!(
            picks > 0 && picks < 250,
            "recovered server got {picks} of 1000"
        );
    }

    #[test]
    fn a_ramping_server_still_serves_when_it_is_the_only_one() {
        let p = pool(PoolSettings {
            slow_start: Some(Duration::from_secs(60)),
            ..PoolSettings::default()
        });
        p.servers[0].state.set_up(false, "test");
        p.servers[1].state.set_up(false, "test");
        p.servers[1].state.set_up(true, "test");
        assert!((0..50).all(|_| p.pick(&[], None, None) == Some(1)));
    }

    #[test]
    fn drain_and_down_servers_get_no_new_requests() {
        let p = pool(PoolSettings::default());
        p.servers[0].state.set_admin(crate::lb::AdminState::Drain);
        assert!((0..10).all(|_| p.pick(&[], None, None) == Some(1)));
        p.servers[1].state.set_up(false, "test");
        assert_eq!(p.pick(&[], None, None), None);
    }
}
