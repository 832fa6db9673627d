//! What a `mode = "tcp"` listener or pool may say. A tcp connection is
//! passed whole to one server (HAProxy's `mode tcp`, nginx's `stream`):
//! keys about HTTP requests mean nothing there, and a policy that writes
//! them expects something Pocket would silently not do, so they are
//! refused at load with the line and what to write instead. The other
//! way round, `timeouts.client_hello` (the wait for a TLS ClientHello
//! when `on_connect` reads `conn.sni`) means nothing on an http listener.
//! The list users read is in docs/tcp.md ("Listeners and pools").

use mlua::{Table, Value};

use super::load::Checker;
use super::Mode;

/// Pool timeouts that bound an HTTP exchange, and what to say instead.
const HTTP_POOL_TIMEOUTS: &[(&str, &str)] = &[
    ("response", "the wait for an HTTP response's head"),
    (
        "keepalive",
        "how long an idle HTTP connection is kept for reuse",
    ),
    ("total", "the whole of one HTTP request"),
    (
        "tunnel",
        "an upgraded (WebSocket or CONNECT) HTTP connection",
    ),
];

/// Listener timeouts that bound reading an HTTP request.
const HTTP_LISTENER_TIMEOUTS: &[(&str, &str)] = &[
    ("head", "the wait for an HTTP request's head"),
    ("body", "the wait for an HTTP request's body"),
    ("send", "sending an HTTP response to a slow client"),
];

/// What a tcp pool's timeouts are, for messages.
const TCP_POOL_TIMEOUTS: &str = "a tcp pool has timeouts.connect and timeouts.idle";

fn is_set(t: &Table, key: &str) -> bool {
    !matches!(t.get::<Value>(key), Ok(Value::Nil))
}

impl Checker<'_> {
    /// Refuses the HTTP-only keys of a tcp pool (`protocol`, `bypass`,
    /// `passive.on_5xx`, `timeouts.response/keepalive/total/tunnel`, a
    /// `hash_key` read from a request). Returns the top-level keys
    /// refused, whose own checks then say nothing more.
    pub(super) fn http_only_in_tcp_pool(&mut self, name: &str, t: &Table) -> Vec<&'static str> {
        let mut refused = Vec::new();
        let what = format!("pool \"{name}\" is a tcp pool");
        if is_set(t, "protocol") {
            refused.push("protocol");
            self.error(
                &["pools", name, "protocol"],
                format!("{what}: protocol (http1, h2) is how HTTP requests go to the servers; a tcp pool passes the bytes as they come: leave protocol out"),
            );
        }
        if is_set(t, "bypass") {
            refused.push("bypass");
            self.error(
                &["pools", name, "bypass"],
                format!("{what}: bypass is a function(req) of each HTTP request; choose a tcp connection's pool in on_connect instead"),
            );
        }
        if let Ok(Value::String(key)) = t.get::<Value>("hash_key") {
            let key = key.to_string_lossy();
            let http_key = ["uri", "path", "host"].contains(&key.as_str())
                || key.starts_with("header:")
                || key.starts_with("cookie:");
            if http_key {
                refused.push("hash_key");
                self.error(
                    &["pools", name, "hash_key"],
                    format!("{what}: hash_key \"{key}\" reads an HTTP request, which a tcp connection does not have; hash on \"source\" (the client's address) or a function(conn)"),
                );
            }
        }
        if let Ok(Value::Table(pt)) = t.get::<Value>("passive") {
            if is_set(&pt, "on_5xx") {
                self.error(
                    &["pools", name, "passive", "on_5xx"],
                    format!("{what}: passive.on_5xx counts HTTP 5xx answers, which a tcp pool never reads; leave it out (failed connects count already)"),
                );
            }
        }
        if let Ok(Value::Table(tt)) = t.get::<Value>("timeouts") {
            for (key, bounds) in HTTP_POOL_TIMEOUTS {
                if is_set(&tt, key) {
                    self.error(
                        &["pools", name, "timeouts", *key],
                        format!("{what}: timeouts.{key} bounds {bounds}; {TCP_POOL_TIMEOUTS}: leave it out"),
                    );
                }
            }
        }
        refused
    }

    /// Refuses the HTTP-only keys of a tcp listener (`keepalive`,
    /// `head_size`, `timeouts.head/body/send`, `tls`). Returns whether
    /// `tls` was refused (then its certificates are not read).
    pub(super) fn http_only_on_tcp_listener(&mut self, t: &Table, label: &str, ns: &str) -> bool {
        let what = format!("{label} is a tcp listener");
        if is_set(t, "keepalive") {
            self.error(
                &["listeners", ns, "keepalive"],
                format!("{what}: keepalive is the wait between HTTP requests; a tcp connection's idle time is its pool's timeouts.idle: leave keepalive out"),
            );
        }
        if is_set(t, "head_size") {
            self.error(
                &["listeners", ns, "head_size"],
                format!("{what}: head_size bounds an HTTP request's head, and a tcp listener reads none: leave it out"),
            );
        }
        if let Ok(Value::Table(tt)) = t.get::<Value>("timeouts") {
            for (key, bounds) in HTTP_LISTENER_TIMEOUTS {
                if is_set(&tt, key) {
                    self.error(
                        &["listeners", ns, "timeouts", *key],
                        format!("{what}: timeouts.{key} bounds {bounds}; a tcp listener has timeouts.client_hello, and its pool timeouts.connect and timeouts.idle"),
                    );
                }
            }
        }
        let tls = is_set(t, "tls");
        if tls {
            self.error(
                &["listeners", ns, "tls"],
                format!("{label}: a tcp listener passes TLS through: leave tls out and route on conn.sni"),
            );
        }
        tls
    }

    /// Refuses `timeouts.client_hello` on an http listener.
    pub(super) fn tcp_only_on_http_listener(&mut self, t: &Table, label: &str, ns: &str) {
        if let Ok(Value::Table(tt)) = t.get::<Value>("timeouts") {
            if is_set(&tt, "client_hello") {
                self.error(
                    &["listeners", ns, "timeouts", "client_hello"],
                    format!("{label}: timeouts.client_hello bounds the wait for a TLS ClientHello on a tcp listener (mode = \"tcp\"); an http listener waits for a request's head: write timeouts.head"),
                );
            }
        }
    }
}

/// Where a key looked for in a listener's `timeouts` lives instead, for
/// the unknown-key message: a tcp connection's idle time is its pool's
/// (HAProxy's `timeout client` and `timeout server` are one here).
pub(super) fn listener_timeout_advice(key: &str, mode: Option<Mode>) -> Option<String> {
    match (key, mode) {
        ("idle" | "client" | "server", Some(Mode::Tcp)) => Some(
            "the idle timeout of a tcp connection is its pool's timeouts.idle (HAProxy's timeout client/server); a tcp listener has timeouts.client_hello".into(),
        ),
        ("connect", _) => Some("timeouts.connect is a pool key: put it in the pool's timeouts".into()),
        _ => None,
    }
}

/// Where a key looked for in a pool's `timeouts` lives instead.
pub(super) fn pool_timeout_advice(key: &str) -> Option<String> {
    match key {
        "client_hello" => Some(
            "timeouts.client_hello is a listener key (the wait for a TLS ClientHello on a tcp listener): put it in the listener's timeouts".into(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::lb::{CheckKind, Expect, StateRegistry};

    fn load(src: &str) -> crate::config::Policy {
        crate::config::load_policy_source(
            Path::new("p.lua"),
            Arc::from(src),
            &StateRegistry::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_tcp_pool_idles_ten_minutes_unless_it_says() {
        let p = load(
            r#"return {
  listeners = { { bind = "127.0.0.1:0", mode = "tcp", pool = "mail" } },
  pools = {
    mail = { mode = "tcp", servers = { "127.0.0.1:2601" } },
    short = { mode = "tcp", servers = { "127.0.0.1:2602" }, timeouts = { idle = "30s" } },
    web = { servers = { "127.0.0.1:9001" } },
  },
}"#,
        );
        let idle = |name: &str| {
            let i = p.pool_index[name];
            p.pools[i].timeouts.idle
        };
        assert_eq!(idle("mail"), Duration::from_secs(600));
        assert_eq!(idle("short"), Duration::from_secs(30));
        assert_eq!(idle("web"), Duration::from_secs(60));
    }

    #[test]
    fn tcp_checks_are_read_as_lines_and_http_checks_as_statuses() {
        let p = load(
            r#"return {
  listeners = { { bind = "127.0.0.1:0", mode = "tcp", pool = "redis" } },
  pools = {
    redis = { mode = "tcp", servers = { "127.0.0.1:6390" }, check = { send = "PING\r\n", expect = "+PONG" } },
    mail = { mode = "tcp", servers = { "127.0.0.1:2601" }, check = { pattern = "^220[ -]" } },
    web = { mode = "tcp", servers = { "127.0.0.1:9001" }, check = { http = "GET /", expect = "2xx" } },
  },
}"#,
        );
        let kind = |name: &str| {
            let i = p.pool_index[name];
            p.pools[i].check.as_ref().map(|c| c.kind.clone())
        };
        match kind("redis") {
            Some(CheckKind::Expect {
                send: Some(s),
                expect: Expect::Text(t),
            }) => {
                assert_eq!(s, b"PING\r\n");
                assert_eq!(t, "+PONG");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            kind("mail"),
            Some(CheckKind::Expect {
                send: None,
                expect: Expect::Pattern(_)
            })
        ));
        assert!(matches!(
            kind("web"),
            Some(CheckKind::Http {
                expect: (200, 299),
                ..
            })
        ));
    }
}
