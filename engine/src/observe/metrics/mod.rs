//! Prometheus metrics: `render()` writes every `pocket_*` series in the
//! text exposition format for the admin listener's `/metrics`.
//!
//! Where the numbers live (docs/observability.md, "Metrics", lists them):
//! - per request: `count::exchange`, called from
//!   `observe::exchange_ended`, adds to per-server counters kept in
//!   `lb::state::ServerState` (they survive reloads like health does) and
//!   per-listener counters kept by name: relaxed atomic adds, each worker
//!   thread in its own shard (`counters::Sharded`), summed at scrape;
//! - server state, requests in flight, checks and ejections: read from the
//!   same `ServerState` and its health at scrape time;
//! - reloads, generation, parked and pooled connections, Lua memory:
//!   process-wide atomics (`process.rs`) written where they change;
//! - hook times: the watchdog's guard around each hook call
//!   (`script::hooks`) reports them to `hooks::hook_ran`.
//!
//! Written by hand, not with `prometheus-client`: its label families are
//! maps looked up per observation unless every handle is cached, which is
//! what the per-server atomics already are; the writer here is small and
//! tested against `promtool check metrics` (tests/metrics.rs).

mod count;
mod counters;
mod dns;
mod hooks;
mod live;
mod process;
mod proxy_header;
mod stores;
mod text;
mod tls;

use std::sync::atomic::Ordering::Relaxed;

pub use count::exchange;
pub use counters::{ListenerMetrics, ServerMetrics, TcpCounts};
pub use dns::{dns_failing, dns_lookup, dns_names_live};
pub use hooks::{hook_ran, hook_ran_for, take_connect_hook_ns, take_request_hook_ns, Hook};
pub use live::{listener_counts, listener_tcp_counts, went_live};
pub use process::{generation_live, lua_memory, reload_ended, upstream_idle, Parked};
pub use proxy_header::proxy_header_refused;
pub use stores::{redis_store, RedisStore};
pub use tls::tls_handshake_failed;

use counters::{
    cause_names, slot_of, CLASSES, HOOK_BOUNDS, LATENCY_BOUNDS, REQUESTS, REQUEST_BYTES,
    RESPONSE_BYTES, RETRIES, SERVER_TERMINATIONS, TCP_CONNECTIONS, TERMINATIONS,
};
use text::{Kind, Text};

use crate::lb::AdminState;

/// Every metric, in the Prometheus text format (version 0.0.4; serve with
/// `Content-Type: text/plain; version=0.0.4; charset=utf-8`).
pub fn render() -> String {
    let live = live::current();
    let mut t = Text::new();

    // Listeners.
    t.family(
        "pocket_requests_total",
        Kind::Counter,
        "Requests answered, by listener and status class (none: the client left before a status was sent); http listeners only.",
    );
    for l in live.listeners.iter().filter(|l| !l.tcp) {
        for (i, class) in CLASSES.iter().enumerate() {
            let n = l.metrics.counts.get(REQUESTS + i);
            t.sample(
                "pocket_requests_total",
                &[("listener", &l.name), ("class", class)],
                n,
            );
        }
    }
    t.family(
        "pocket_tcp_connections_total",
        Kind::Counter,
        "TCP-mode connections ended, by listener and termination state (the access log's: -- normal, PR refused by Pocket, SC/sC no server could be connected to, CD/SD client/server broke, cD/sD idle timeout, KD/KC killed at shutdown, CR/cR client left/silent before on_connect decided).",
    );
    for l in live.listeners.iter().filter(|l| l.tcp) {
        for (i, termination) in TERMINATIONS.iter().enumerate() {
            let n = l.metrics.counts.get(TCP_CONNECTIONS + i);
            t.sample(
                "pocket_tcp_connections_total",
                &[("listener", &l.name), ("termination", termination)],
                n,
            );
        }
    }
    t.family(
        "pocket_request_bytes_total",
        Kind::Counter,
        "Request body bytes read from clients, by listener (tcp mode: every byte client to server).",
    );
    for l in &live.listeners {
        let n = l.metrics.counts.get(REQUEST_BYTES);
        t.sample("pocket_request_bytes_total", &[("listener", &l.name)], n);
    }
    t.family(
        "pocket_response_bytes_total",
        Kind::Counter,
        "Response body bytes sent to clients, by listener (tcp mode: every byte server to client).",
    );
    for l in &live.listeners {
        let n = l.metrics.counts.get(RESPONSE_BYTES);
        t.sample("pocket_response_bytes_total", &[("listener", &l.name)], n);
    }
    t.family(
        "pocket_client_connections",
        Kind::Gauge,
        "Client connections open, by listener (parked ones included).",
    );
    for l in &live.listeners {
        let n = l.gate.open() as u64;
        t.sample("pocket_client_connections", &[("listener", &l.name)], n);
    }
    t.family(
        "pocket_client_connections_parked",
        Kind::Gauge,
        "HTTP/1 client connections parked: idle between keep-alive requests.",
    );
    let parked = process::gauge(&process::PARKED);
    t.sample("pocket_client_connections_parked", &[], parked);
    t.family(
        "pocket_tls_handshake_failures_total",
        Kind::Counter,
        "TLS handshakes that failed, by listener and reason (bad_hello, timeout, plain_http, no_certificate, closed, client_alert, other).",
    );
    for (listener, reason, n) in tls::failures() {
        t.sample(
            "pocket_tls_handshake_failures_total",
            &[("listener", &listener), ("reason", reason)],
            n,
        );
    }

    t.family(
        "pocket_proxy_header_refused_total",
        Kind::Counter,
        "Connections to accept_proxy listeners closed for their PROXY header, by listener and reason (malformed, timeout, closed, reset, other).",
    );
    for (listener, reason, n) in proxy_header::refused() {
        t.sample(
            "pocket_proxy_header_refused_total",
            &[("listener", &listener), ("reason", reason)],
            n,
        );
    }

    // Servers.
    server_counters(&mut t, &live);

    let names = dns::names();
    t.family(
        "pocket_dns_lookups_total",
        Kind::Counter,
        "Lookups of the server names of pools with resolve, by pool, name (as the pool writes it) and result (ok, failed).",
    );
    for n in &names {
        for (result, count) in [("ok", n.ok), ("failed", n.failed)] {
            t.sample(
                "pocket_dns_lookups_total",
                &[("pool", &n.pool), ("name", &n.name), ("result", result)],
                count,
            );
        }
    }
    t.family(
        "pocket_dns_failing",
        Kind::Gauge,
        "1 while a server name's last lookup failed and it keeps its last addresses, by pool and name.",
    );
    for n in &names {
        t.sample(
            "pocket_dns_failing",
            &[("pool", &n.pool), ("name", &n.name)],
            u64::from(n.failing),
        );
    }

    t.family(
        "pocket_upstream_connections_idle",
        Kind::Gauge,
        "Upstream connections kept open for reuse (all workers, all servers).",
    );
    let idle = process::gauge(&process::UPSTREAM_IDLE);
    t.sample("pocket_upstream_connections_idle", &[], idle);

    t.family(
        "pocket_hook_duration_seconds",
        Kind::Histogram,
        "Time spent in each request-path Lua hook call.",
    );
    for (i, name) in hooks::HOOK_NAMES.iter().enumerate() {
        let (counts, sum) = hooks::HOOKS[i].snapshot();
        t.histogram(
            "pocket_hook_duration_seconds",
            &[("hook", name)],
            &HOOK_BOUNDS,
            &counts,
            sum,
        );
    }

    // The process.
    t.family(
        "pocket_reloads_total",
        Kind::Counter,
        "Policy reloads, by result: ok (went live) or refused (the running policy kept serving).",
    );
    let ok = process::RELOADS_OK.load(Relaxed);
    let refused = process::RELOADS_REFUSED.load(Relaxed);
    t.sample("pocket_reloads_total", &[("result", "ok")], ok);
    t.sample("pocket_reloads_total", &[("result", "refused")], refused);
    t.family(
        "pocket_policy_generation",
        Kind::Gauge,
        "The live policy's generation (1 at start, one more per reload that went live, per weight set through the admin API, and per change a DNS answer made to a pool).",
    );
    let generation = process::GENERATION.load(Relaxed);
    t.sample("pocket_policy_generation", &[], generation);
    t.family(
        "pocket_lua_memory_bytes",
        Kind::Gauge,
        "Lua heap of each worker's VM, sampled every 100 ms.",
    );
    for i in 0..process::WORKERS.load(Relaxed).min(process::MAX_WORKERS) {
        let worker = i.to_string();
        let bytes = process::LUA_BYTES[i].load(Relaxed);
        t.sample("pocket_lua_memory_bytes", &[("worker", &worker)], bytes);
    }
    t.family(
        "pocket_access_log_dropped_lines_total",
        Kind::Counter,
        "Access-log lines dropped because the writer could not keep up (slow or full disk).",
    );
    let dropped = crate::observe::access_log::dropped_lines();
    t.sample("pocket_access_log_dropped_lines_total", &[], dropped);
    redis_stores(&mut t);
    t.finish()
}

/// The Redis-backed stores' families (none without `stores`).
fn redis_stores(t: &mut Text) {
    let all: Vec<_> = stores::all()
        .into_iter()
        .filter(|s| s.declared.load(Relaxed))
        .collect();
    macro_rules! each {
        ($name:expr, $kind:expr, $help:expr, |$s:ident| $value:expr) => {
            t.family($name, $kind, $help);
            for $s in &all {
                t.sample($name, &[("store", &$s.store)], $value);
            }
        };
    }
    each!(
        "pocket_store_redis_up",
        Kind::Gauge,
        "1 while a Redis-backed store is on Redis, 0 while it serves from local state (Redis down, slow past the store's timeout, or not reached yet).",
        |s| u64::from(s.up.load(Relaxed))
    );
    each!(
        "pocket_store_redis_fallbacks_total",
        Kind::Counter,
        "Times a Redis-backed store fell back to local state (a call timed out, a connection was refused or broke).",
        |s| s.fallbacks.load(Relaxed)
    );
    each!(
        "pocket_store_redis_recoveries_total",
        Kind::Counter,
        "Times a Redis-backed store went back to Redis after Redis answered its probe (its writes made meanwhile replayed).",
        |s| s.recoveries.load(Relaxed)
    );
    each!(
        "pocket_store_redis_local_calls_total",
        Kind::Counter,
        "Calls a Redis-backed store served from local state while Redis was away.",
        |s| s.local_calls.load(Relaxed)
    );
    each!(
        "pocket_store_redis_pending_writes",
        Kind::Gauge,
        "Writes made locally while Redis was away, waiting to be replayed to Redis.",
        |s| s.pending.load(Relaxed)
    );
    each!(
        "pocket_store_redis_replayed_writes_total",
        Kind::Counter,
        "Writes made locally while Redis was away and replayed to Redis once it answered (increments as deltas).",
        |s| s.replayed.load(Relaxed)
    );
    each!(
        "pocket_store_redis_dropped_writes_total",
        Kind::Counter,
        "Writes made locally that a full replay journal dropped (oldest first) before Redis came back.",
        |s| s.dropped.load(Relaxed)
    );
}

/// The per pool and server families.
fn server_counters(t: &mut Text, live: &live::Live) {
    macro_rules! each {
        ($name:expr, $kind:expr, $help:expr, |$s:ident| $value:expr) => {
            t.family($name, $kind, $help);
            for $s in &live.servers {
                let value = $value;
                t.sample($name, &[("pool", &$s.pool), ("server", &$s.name)], value);
            }
        };
    }

    t.family(
        "pocket_server_requests_total",
        Kind::Counter,
        "Requests a server answered (sent a response head), by pool, server and status class; http pools only.",
    );
    for s in live.servers.iter().filter(|s| !s.tcp) {
        for (i, class) in CLASSES.iter().enumerate() {
            let n = s.state.metrics.counts.get(REQUESTS + i);
            t.sample(
                "pocket_server_requests_total",
                &[("pool", &s.pool), ("server", &s.name), ("class", class)],
                n,
            );
        }
    }
    t.family(
        "pocket_server_tcp_connections_total",
        Kind::Counter,
        "TCP-mode connections a server took that ended, by pool, server and termination state (-- normal, CD/SD client/server broke, cD/sD idle timeout, KD killed at shutdown); failed connects are in pocket_server_connect_failures_total.",
    );
    for s in live.servers.iter().filter(|s| s.tcp) {
        for termination in SERVER_TERMINATIONS {
            let n = s
                .state
                .metrics
                .counts
                .get(TCP_CONNECTIONS + slot_of(termination));
            t.sample(
                "pocket_server_tcp_connections_total",
                &[
                    ("pool", &s.pool),
                    ("server", &s.name),
                    ("termination", termination),
                ],
                n,
            );
        }
    }
    each!(
        "pocket_server_request_bytes_total",
        Kind::Counter,
        "Request body bytes sent on to a server, by pool and server (tcp mode: every byte client to server).",
        |s| s.state.metrics.counts.get(REQUEST_BYTES)
    );
    each!(
        "pocket_server_response_bytes_total",
        Kind::Counter,
        "Response body bytes a server sent that reached the client, by pool and server (tcp mode: every byte server to client).",
        |s| s.state.metrics.counts.get(RESPONSE_BYTES)
    );
    each!(
        "pocket_server_connect_failures_total",
        Kind::Counter,
        "Connects to a server that failed (refused, timed out, unreachable).",
        |s| s.state.metrics.connect_failures.load(Relaxed)
    );
    each!(
        "pocket_server_failures_total",
        Kind::Counter,
        "Failures on live traffic (connect, no response, timeout, broken body; 5xx when the pool counts them).",
        |s| s.state.failures.load(Relaxed)
    );
    t.family(
        "pocket_server_retries_total",
        Kind::Counter,
        "Failed attempts on a server after which the request was tried again (another server or a fallback pool), by cause.",
    );
    let causes = cause_names();
    for s in &live.servers {
        for (i, cause) in causes.iter().enumerate() {
            let n = s.state.metrics.counts.get(RETRIES + i);
            if n > 0 {
                t.sample(
                    "pocket_server_retries_total",
                    &[("pool", &s.pool), ("server", &s.name), ("cause", cause)],
                    n,
                );
            }
        }
    }
    each!(
        "pocket_server_requests_in_flight",
        Kind::Gauge,
        "Requests a server is answering now (from this pool, all workers; a tcp pool: connections open to it).",
        |s| s.state.active.load(Relaxed) as u64
    );
    t.family(
        "pocket_server_state",
        Kind::Gauge,
        "1 for the state a server is in, 0 for the others: up, down, drain or maint (maint shows over down, down over drain).",
    );
    for s in &live.servers {
        let now = state_name(&s.state);
        for state in ["up", "down", "drain", "maint"] {
            t.sample(
                "pocket_server_state",
                &[("pool", &s.pool), ("server", &s.name), ("state", state)],
                u64::from(now == state),
            );
        }
    }
    each!(
        "pocket_server_weight",
        Kind::Gauge,
        "A server's weight in its pool: the policy's, or the one the admin API set.",
        |s| u64::from(s.state.weight_or(s.weight))
    );
    t.family(
        "pocket_server_checks_total",
        Kind::Counter,
        "Active health check results, by result (ok or failed); a health shared by pools shows in each.",
    );
    for s in &live.servers {
        let (ok, failed) = s.state.health.checks();
        for (result, n) in [("ok", ok), ("failed", failed)] {
            t.sample(
                "pocket_server_checks_total",
                &[("pool", &s.pool), ("server", &s.name), ("result", result)],
                n,
            );
        }
    }
    each!(
        "pocket_server_ejections_total",
        Kind::Counter,
        "Times failures on this pool's live traffic took a server down (passive check).",
        |s| s.state.metrics.ejections.load(Relaxed)
    );
    t.family(
        "pocket_server_request_duration_seconds",
        Kind::Histogram,
        "Whole exchange time of requests a server answered, from request head to response end; http pools only.",
    );
    for s in live.servers.iter().filter(|s| !s.tcp) {
        let (counts, sum) = s.state.metrics.duration.snapshot();
        t.histogram(
            "pocket_server_request_duration_seconds",
            &[("pool", &s.pool), ("server", &s.name)],
            &LATENCY_BOUNDS,
            &counts,
            sum,
        );
    }
}

/// The one state `pocket_server_state` shows, as `/api/status` and the
/// stats page do: maintenance over down (HAProxy's MAINT), down over
/// drain, else up.
pub fn state_name(state: &crate::lb::ServerState) -> &'static str {
    match (state.admin(), state.is_up()) {
        (AdminState::Maint, _) => "maint",
        (_, false) => "down",
        (AdminState::Drain, true) => "drain",
        (AdminState::Ready, true) => "up",
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::context::RequestId;
    use crate::lb::StateRegistry;
    use crate::observe::exchange::{Exchange, Retry, Termination};

    fn exchange(
        pool: &Arc<str>,
        server: &Arc<str>,
        status: u16,
        retried: Option<Arc<str>>,
    ) -> Exchange {
        Exchange {
            id: RequestId { worker: 0, seq: 1 },
            started_unix_ms: 0,
            client: "127.0.0.1:5000".parse().unwrap(),
            listener: Arc::from("metrics_test_web"),
            generation: 1,
            method: http::Method::GET,
            bad_request: false,
            host: None,
            target: http::Uri::from_static("/"),
            version: http::Version::HTTP_11,
            status,
            bytes_in: 0,
            bytes_out: 120,
            pool: Some(pool.clone()),
            server: Some(server.clone()),
            retries: retried
                .map(|s| {
                    vec![Retry {
                        pool: pool.clone(),
                        server: s,
                        cause: "connect failed",
                        retried: true,
                    }]
                })
                .unwrap_or_default(),
            hooks_us: 0,
            connect_ms: Some(0.2),
            first_byte_ms: Some(1.0),
            total_ms: 3.0,
            termination: Termination::NORMAL,
            script_fields: Vec::new(),
            trace: None,
            log: None,
            tls: None,
            tcp: false,
        }
    }

    #[test]
    fn a_finished_exchange_moves_its_listener_and_server_series() {
        let registry = StateRegistry::default();
        let source = r#"return {
  listeners = { { name = "metrics_test_web", bind = "127.0.0.1:0", pool = "metrics_test_app" } },
  pools = { metrics_test_app = { servers = { "127.0.0.1:61001", "127.0.0.1:61002" } } },
}"#;
        let policy =
            crate::config::load_policy_source(Path::new("t.lua"), Arc::from(source), &registry)
                .expect("the test policy loads");
        registry.went_live(&policy);
        let pool = policy.pools[0].name.clone();
        let a = policy.pools[0].servers[0].addr_text.clone();
        let b = policy.pools[0].servers[1].addr_text.clone();
        count::exchange(&exchange(&pool, &a, 200, None));
        count::exchange(&exchange(&pool, &a, 503, Some(b.clone())));
        // Names made anew (not the policy's allocations) are found too.
        count::exchange(&exchange(&Arc::from(&*pool), &Arc::from(&*a), 204, None));
        // A 502 Pocket made after the only try failed: the listener's, not
        // a's; the failure that nothing followed is no retry.
        let mut made = exchange(&pool, &a, 502, Some(b.clone()));
        made.first_byte_ms = None;
        made.retries[0].retried = false;
        count::exchange(&made);
        let counted = &policy.pools[0].servers[0].state.metrics;
        assert_eq!((counted.requests(), counted.errors()), (3, 1));
        let text = render();
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        has(r#"pocket_requests_total{listener="metrics_test_web",class="2xx"} 2"#);
        has(r#"pocket_requests_total{listener="metrics_test_web",class="5xx"} 2"#);
        has(r#"pocket_response_bytes_total{listener="metrics_test_web"} 480"#);
        has(
            r#"pocket_server_requests_total{pool="metrics_test_app",server="127.0.0.1:61001",class="2xx"} 2"#,
        );
        has(
            r#"pocket_server_requests_total{pool="metrics_test_app",server="127.0.0.1:61001",class="5xx"} 1"#,
        );
        has(
            r#"pocket_server_retries_total{pool="metrics_test_app",server="127.0.0.1:61002",cause="connect failed"} 1"#,
        );
        has(
            r#"pocket_server_request_duration_seconds_bucket{pool="metrics_test_app",server="127.0.0.1:61001",le="0.005"} 3"#,
        );
        has(
            r#"pocket_server_request_duration_seconds_count{pool="metrics_test_app",server="127.0.0.1:61001"} 3"#,
        );
        has(
            r#"pocket_server_state{pool="metrics_test_app",server="127.0.0.1:61001",state="up"} 1"#,
        );
        has(
            r#"pocket_server_state{pool="metrics_test_app",server="127.0.0.1:61001",state="down"} 0"#,
        );

        // A tcp listener's series are connections by end, not requests.
        let tcp = r#"return {
  listeners = {
    { name = "metrics_test_web", bind = "127.0.0.1:0", pool = "metrics_test_app" },
    { name = "metrics_test_tcp", bind = "127.0.0.1:0", mode = "tcp", pool = "metrics_test_db" },
  },
  pools = {
    metrics_test_app = { servers = { "127.0.0.1:61001", "127.0.0.1:61002" } },
    metrics_test_db = { mode = "tcp", servers = { "127.0.0.1:61003" } },
  },
}"#;
        let policy =
            crate::config::load_policy_source(Path::new("t.lua"), Arc::from(tcp), &registry)
                .expect("the tcp test policy loads");
        registry.went_live(&policy);
        let db = policy.pools[1].name.clone();
        let c = policy.pools[1].servers[0].addr_text.clone();
        let mut conn = exchange(&db, &c, 0, None);
        conn.listener = Arc::from("metrics_test_tcp");
        conn.tcp = true;
        conn.bytes_in = 10;
        conn.bytes_out = 20;
        count::exchange(&conn);
        conn.termination = Termination::of(b'S', b'D');
        count::exchange(&conn);
        let mut refused = exchange(&db, &c, 0, None);
        refused.listener = Arc::from("metrics_test_tcp");
        refused.tcp = true;
        refused.server = None;
        refused.connect_ms = None;
        refused.bytes_out = 0;
        for t in [*b"PR", *b"SC", *b"SC"] {
            refused.termination = Termination::of(t[0], t[1]);
            count::exchange(&refused);
        }
        let text = render();
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        has(r#"pocket_tcp_connections_total{listener="metrics_test_tcp",termination="--"} 1"#);
        has(r#"pocket_tcp_connections_total{listener="metrics_test_tcp",termination="SD"} 1"#);
        has(r#"pocket_tcp_connections_total{listener="metrics_test_tcp",termination="PR"} 1"#);
        has(r#"pocket_tcp_connections_total{listener="metrics_test_tcp",termination="SC"} 2"#);
        has(r#"pocket_tcp_connections_total{listener="metrics_test_tcp",termination="KD"} 0"#);
        has(
            r#"pocket_server_tcp_connections_total{pool="metrics_test_db",server="127.0.0.1:61003",termination="SD"} 1"#,
        );
        has(r#"pocket_request_bytes_total{listener="metrics_test_tcp"} 20"#);
        has(
            r#"pocket_server_response_bytes_total{pool="metrics_test_db",server="127.0.0.1:61003"} 40"#,
        );
        let no = |start: &str| {
            assert!(
                !text.lines().any(|l| l.starts_with(start)),
                "{start} in\n{text}"
            )
        };
        no(r#"pocket_requests_total{listener="metrics_test_tcp""#);
        no(r#"pocket_tcp_connections_total{listener="metrics_test_web""#);
        no(r#"pocket_server_requests_total{pool="metrics_test_db""#);
        let counted = crate::observe::metrics::listener_tcp_counts("metrics_test_tcp");
        assert_eq!(
            counted,
            TcpCounts {
                connections: 5,
                rejected: 1,
                failed: 2,
                broken: 1
            }
        );
        assert_eq!(
            policy.pools[1].servers[0].state.metrics.tcp().connections,
            2
        );

        let addr: SocketAddr = "127.0.0.1:61002".parse().unwrap();
        let state = StateRegistry::default()
            .get_or_create("x", addr, false, true)
            .0;
        state.set_admin(AdminState::Drain);
        assert_eq!(state_name(&state), "drain");
        state.set_up(false, "test");
        assert_eq!(state_name(&state), "down", "down shows over drain");
        state.set_admin(AdminState::Maint);
        assert_eq!(state_name(&state), "maint", "maint shows over down");
    }
}
