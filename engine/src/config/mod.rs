//! The policy as a value: a script is loaded once, centrally, into a
//! [`Policy`] that has been checked from top to bottom. Workers and the
//! request path only ever see a policy that passed.

mod admin;
mod dns;
mod duration;
mod global_hooks;
mod load;
mod locate;
mod log_key;
mod mode_value;
pub use log_key::AccessLog;
mod pool_settings;
mod proxy_protocol;
mod stores;
pub use stores::{RedisSpec, StoreSpec, DEFAULT_REDIS_TIMEOUT};
mod tcp_rules;
pub mod tls;
pub mod upstream_tls;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use admin::AdminSpec;
pub use dns::MIN_RESOLVE;
pub use duration::{parse_duration, seconds_to_duration};
pub use load::{load_policy, load_policy_source, near_miss, parse_addr, MAX_WEIGHT};
pub use locate::{line_of, names_client_hello, names_http, Places};
pub use pool_settings::lua_float;

/// A value as messages echo it: its type and, for a plain value, the value
/// (`a number (5)`, `a string ("five")`), cut when long.
pub fn shown_value(v: &mlua::Value) -> String {
    pool_settings::shown(v)
}
pub(crate) use pool_settings::shown;

use crate::lb::Pool;

/// A loaded, validated policy. Cheap to share across threads; the Lua
/// functions themselves live in each worker's own VM (see
/// [`crate::script::WorkerScript`]).
#[derive(Debug)]
pub struct Policy {
    pub path: PathBuf,
    pub source: Arc<str>,
    pub listeners: Vec<ListenerSpec>,
    pub pools: Vec<Arc<Pool>>,
    pub pool_index: HashMap<String, usize>,
    pub hooks: HookSet,
    /// The admin listener (stats page, API, metrics), if the policy has one.
    pub admin: Option<AdminSpec>,
    /// The access log (`log = { access = ..., format = ... }`); its file
    /// is opened by what serves ([`Policy::open_log`]); None: no access
    /// log.
    pub log: Option<AccessLog>,
    /// `on_connect` names `conn.sni` or `conn.alpn` (in the policy's text
    /// or a module's, decided at load): a tcp listener's connections may
    /// wait for a TLS ClientHello.
    pub reads_client_hello: bool,
    /// What loads but is almost surely a mistake, each `path:line:
    /// message`: logged at WARN by `pocket run` and a reload, printed by
    /// `pocket check`.
    pub warnings: Vec<String>,
    /// The stores kept in Redis (`stores = { ... }`), by name.
    pub stores: Vec<StoreSpec>,
    /// `resolvers`: the DNS servers server names are asked of (empty: the
    /// system's).
    pub resolvers: crate::dns::Resolvers,
}

impl Policy {
    /// Opens the access log's file, if the policy has one: before serving
    /// (`pocket run`, `pocket demo`, a reload). Errors: `path:line: ...`.
    pub fn open_log(&self) -> Result<(), String> {
        self.log.as_ref().map_or(Ok(()), AccessLog::open)
    }

    /// A listener by name (what a connection knows of where it came in).
    #[inline]
    pub fn listener(&self, name: &str) -> Option<&ListenerSpec> {
        self.listeners.iter().find(|l| &*l.name == name)
    }

    /// The pool a hook named, if it exists.
    #[inline]
    pub fn pool_by_name(&self, name: &str) -> Option<usize> {
        // A few pools: comparing names beats hashing one.
        if self.pools.len() <= 8 {
            return self.pools.iter().position(|p| &*p.name == name);
        }
        self.pool_index.get(name).copied()
    }

    /// The same policy with every server's weight as its state now says
    /// (weights set through the admin API); see [`Pool::reweighted`].
    pub fn reweighted(&self) -> Policy {
        self.with_pools(
            self.pools
                .iter()
                .map(|p| Arc::new(p.reweighted()))
                .collect(),
        )
    }

    /// The same policy with pool `index` replaced by `pool` (what its
    /// names resolve to now: crate::dns).
    pub fn with_pool(&self, index: usize, pool: Pool) -> Policy {
        let mut pools = self.pools.clone();
        pools[index] = Arc::new(pool);
        self.with_pools(pools)
    }

    fn with_pools(&self, pools: Vec<Arc<Pool>>) -> Policy {
        Policy {
            path: self.path.clone(),
            source: self.source.clone(),
            listeners: self.listeners.clone(),
            pools,
            pool_index: self.pool_index.clone(),
            hooks: self.hooks,
            admin: self.admin.clone(),
            log: self.log.clone(),
            reads_client_hello: self.reads_client_hello,
            warnings: self.warnings.clone(),
            stores: self.stores.clone(),
            resolvers: self.resolvers.clone(),
        }
    }

    /// A short human summary, as `pocket check` prints it.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("policy {}\n", self.path.display()));
        out.push_str(&format!("listeners: {}\n", self.listeners.len()));
        for l in &self.listeners {
            let pool = l
                .default_pool
                .map(|p| &*self.pools[p].name)
                .unwrap_or("(none)");
            let tls = match &l.tls {
                Some(t) => format!(
                    ", https: {}{}",
                    crate::words::count(t.names.len() as u64, "certificate"),
                    if t.strict_sni { ", strict SNI" } else { "" }
                ),
                None => String::new(),
            };
            // It changes what the listener accepts on the wire (a client
            // without a PROXY header is closed): never hidden.
            let proxy = if l.accept_proxy { ", accept_proxy" } else { "" };
            // Whole TCP connections, not HTTP: said on every tcp listener,
            // with whether on_connect may hold its connections for a
            // ClientHello (a server-speaks-first protocol would hang).
            let mode = match l.mode {
                Mode::Tcp if self.reads_client_hello => format!(
                    ", mode tcp, on_connect reads conn.sni/alpn: may wait {}s for a TLS ClientHello",
                    l.timeouts.client_hello.as_secs_f64()
                ),
                Mode::Tcp => ", mode tcp".to_string(),
                Mode::Http => String::new(),
            };
            out.push_str(&format!(
                "  {} on {} (default pool: {}{tls}{proxy}{mode})\n",
                l.name, l.bind, pool
            ));
        }
        out.push_str(&format!("pools: {}\n", self.pools.len()));
        for p in &self.pools {
            // How the servers are spoken to, when it is not plain HTTP/1.1.
            let tls = match &p.tls {
                Some(t) if t.verify => ", tls",
                Some(_) => ", tls (not verified)",
                None => "",
            };
            let h2 = if p.protocol == upstream_tls::Protocol::H2 {
                ", h2"
            } else {
                ""
            };
            let proxy = match p.send_proxy {
                Some(crate::proxy::proxy_header::SendProxy::V1) => ", send_proxy v1",
                Some(crate::proxy::proxy_header::SendProxy::V2) => ", send_proxy v2",
                None => "",
            };
            let mode = if p.mode == Mode::Tcp {
                ", mode tcp"
            } else {
                ""
            };
            out.push_str(&format!(
                "  {} ({}, {}, retries {}{tls}{h2}{proxy}{mode})\n",
                p.name,
                p.balance_name(),
                crate::words::count(p.servers.len() as u64, "server"),
                p.retries
            ));
            if let Some(check) = &p.check {
                out.push_str(&format!("    check: {}\n", check_summary(check)));
            }
            if let Some(every) = p.resolve {
                out.push_str(&format!("    resolve: every {every:?}\n"));
            }
            if let Some(passive) = passive_summary(&p.passive, p.check.is_some()) {
                out.push_str(&format!("    passive: {passive}\n"));
            }
            for s in p.servers.iter() {
                out.push_str(&format!(
                    "    {} weight {}{}{}\n",
                    s.addr,
                    s.weight,
                    if s.backup { " backup" } else { "" },
                    s.from
                        .as_ref()
                        .map_or(String::new(), |f| format!(" (from {f})"))
                ));
            }
        }
        out.push_str(&format!("hooks: {}\n", self.hooks));
        for st in &self.stores {
            out.push_str(&format!(
                "store {}: Redis {} (prefix \"{}\", timeout {}ms{}{}; not contacted by check)\n",
                st.name,
                st.redis.addr(),
                st.redis.prefix,
                st.redis.timeout.as_millis(),
                st.redis
                    .user
                    .as_ref()
                    .map_or(String::new(), |u| format!(", user \"{u}\"")),
                if st.redis.password.is_some() {
                    ", with a password"
                } else {
                    ""
                }
            ));
        }
        if let Some(admin) = &self.admin {
            out.push_str(&format!(
                "admin: http://{}/ ({})\n",
                admin.bind,
                if admin.token.is_some() {
                    "token required"
                } else {
                    "no token: local only"
                }
            ));
        }
        if let Some(log) = &self.log {
            let format = match log.format {
                crate::observe::access_log::Format::Text => "text",
                crate::observe::access_log::Format::Json => "json",
            };
            let path = if log.path == "-" { "stderr" } else { &log.path };
            out.push_str(&format!("access log: {path} ({format})\n"));
        }
        out
    }
}

/// One listening address and what it does with a request no hook decides.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub name: Arc<str>,
    pub bind: SocketAddr,
    pub default_pool: Option<usize>,
    /// The client side's timeouts, one per phase of a connection.
    pub timeouts: ClientTimeouts,
    /// At most this many client connections open at once on this listener,
    /// over all workers (HAProxy's frontend `maxconn`); None: only the
    /// process's cap (`pocket run --max-connections`) applies. At the cap
    /// Pocket stops accepting and new connections wait in the kernel's
    /// accept queue.
    pub max_connections: Option<usize>,
    /// The most bytes an HTTP/1 request head may take, request line
    /// through the empty line (HTTP/2: the header list as RFC 9113 §6.5.2
    /// counts it). Over it: 414 if the request line alone is, else 431,
    /// and the connection closes. Also what Pocket's buffer for reading a
    /// client may grow to (HAProxy's `tune.bufsize`, nginx's
    /// `large_client_header_buffers`).
    pub head_size: u32,
    /// `accept_proxy = true`: every connection starts with a PROXY
    /// protocol header (v1 or v2) naming the real client (HAProxy's
    /// `accept-proxy`; server/proxy_protocol.rs).
    pub accept_proxy: bool,
    /// TLS on this listener (`tls = { ... }`): its certificates, built
    /// into rustls' configuration at load. None: plain HTTP.
    pub tls: Option<Arc<tls::ListenerTls>>,
    /// `mode`: what the listener speaks. `http` (the default) parses
    /// requests; `tcp` hands each connection whole to one server, chosen
    /// by `on_connect` (engine/src/tcp/, HAProxy's `mode tcp`).
    pub mode: Mode,
}

/// What a listener or a pool carries: HTTP requests, or whole TCP
/// connections (HAProxy's `mode http` / `mode tcp`). A pool serves
/// listeners of its own mode only: checked at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Http,
    Tcp,
}

impl Mode {
    /// The word the policy writes (`mode = "tcp"`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        }
    }
}

/// A pool's check as `pocket check` shows it: its kind and what it sends
/// and waits for, then how often (`line send "PING\r\n" expect "+PONG",
/// every 1s, timeout 1s, rise 2, fall 3`).
fn check_summary(c: &crate::lb::CheckSpec) -> String {
    use crate::lb::{CheckKind, Expect};
    let quoted = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(b));
    let kind = match &c.kind {
        CheckKind::Tcp => "tcp connect".to_string(),
        CheckKind::Script => "scripted".to_string(),
        CheckKind::Expect { send, expect } => {
            let send = send
                .as_ref()
                .map(|b| format!(" send {}", quoted(b)))
                .unwrap_or_default();
            let expect = match expect {
                Expect::Text(t) => format!(" expect {}", quoted(t.as_bytes())),
                Expect::Pattern(r) => format!(" pattern {}", quoted(r.as_str().as_bytes())),
            };
            format!("line{send}{expect}")
        }
        CheckKind::Http {
            method,
            path,
            expect,
            ..
        } => format!("http {method} {path} expect {}-{}", expect.0, expect.1),
    };
    format!(
        "{kind}, every {}s, timeout {}s, rise {}, fall {}",
        c.interval.as_secs_f64(),
        c.timeout.as_secs_f64(),
        c.rise,
        c.fall
    )
}

/// A pool's `passive` settings for `pocket check`, when they are not the
/// defaults (3 failures, 5xx not counted, 10 s cool-down: lua-api.md
/// "passive"). The cool-down is shown only for a pool without a `check`,
/// the only one it applies to.
fn passive_summary(p: &crate::lb::Passive, checked: bool) -> Option<String> {
    let default = crate::lb::Passive::default();
    let cooldown_matters = !checked && p.cooldown != default.cooldown;
    if p.after == default.after && p.on_5xx == default.on_5xx && !cooldown_matters {
        return None;
    }
    if p.after == 0 {
        return Some("off (live traffic never takes a server down)".into());
    }
    let mut text = format!(
        "down after {} in a row",
        crate::words::count(p.after, "failure")
    );
    if p.on_5xx {
        text.push_str(" (a 5xx counts)");
    }
    if !checked {
        text.push_str(&format!(", cooldown {}s", p.cooldown.as_secs_f64()));
    }
    Some(text)
}

/// A listener's `head_size` when the policy gives none: nginx's
/// `large_client_header_buffers 4 8k`, 32 KiB in all.
pub const DEFAULT_HEAD_SIZE: u32 = 32 * 1024;

/// What a listener's `head_size` may be, in bytes.
pub const HEAD_SIZE_RANGE: std::ops::RangeInclusive<u32> = 1024..=1024 * 1024;

/// The client side's timeouts. Each one watches one phase of a connection
/// and, but for `head`, measures inactivity, not the whole exchange: a slow
/// upload or download that keeps moving is never cut (nginx's
/// `client_header_timeout`, `client_body_timeout`, `send_timeout` and
/// `keepalive_timeout`; HAProxy's `timeout http-request` and `timeout
/// client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// A request head must arrive whole within this once its first byte
    /// has (a new connection: from the accept). Then the connection closes.
    pub head: std::time::Duration,
    /// Longest silence between two pieces of a request body: the client
    /// gets a 408 and the connection closes.
    pub body: std::time::Duration,
    /// Longest a write to the client may stay blocked (it stopped reading):
    /// the connection closes.
    pub send: std::time::Duration,
    /// How long an idle keep-alive connection (HTTP/1 or h2) stays open.
    pub keepalive: std::time::Duration,
    /// A `tcp` listener whose `on_connect` reads `conn.sni` or `conn.alpn`
    /// waits at most this for the client's TLS ClientHello (nginx's
    /// `ssl_preread` with `preread_timeout`, HAProxy's `tcp-request
    /// inspect-delay`); a client that sends nothing by then is closed
    /// with no server connection opened.
    pub client_hello: std::time::Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            head: std::time::Duration::from_secs(30),
            body: std::time::Duration::from_secs(60),
            send: std::time::Duration::from_secs(60),
            keepalive: DEFAULT_CLIENT_KEEPALIVE,
            client_hello: DEFAULT_CLIENT_HELLO,
        }
    }
}

/// A `tcp` listener's `timeouts.client_hello` when the policy gives none:
/// HAProxy's usual `tcp-request inspect-delay 5s`.
pub const DEFAULT_CLIENT_HELLO: std::time::Duration = std::time::Duration::from_secs(5);

/// A listener's keep-alive timeout when the policy gives none (nginx's
/// `keepalive_timeout` default).
pub const DEFAULT_CLIENT_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(75);

/// Which hooks the script defines (the functions are per worker VM).
#[derive(Debug, Clone, Copy, Default)]
pub struct HookSet {
    pub on_connect: bool,
    pub on_request: bool,
    pub on_response: bool,
    pub on_health: bool,
}

impl fmt::Display for HookSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.on_connect, "on_connect"),
            (self.on_request, "on_request"),
            (self.on_response, "on_response"),
            (self.on_health, "on_health"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
        if names.is_empty() {
            f.write_str("(none)")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

/// One thing wrong with a policy, located in its file when we can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lua's own messages already start with `path:line:`.
        if self
            .message
            .starts_with(&format!("{}:", self.path.display()))
        {
            return f.write_str(&self.message);
        }
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Every error found in one load: a user fixes them all in one go.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
