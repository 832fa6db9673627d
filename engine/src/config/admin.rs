//! The policy's `admin` key: where the admin listener (stats page, API,
//! metrics) listens and who may use it. Checked at load like the rest;
//! the listener itself is in [`crate::admin`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mlua::{Table, Value};

use super::load::{parse_addr, Checker};
use super::pool_settings::shown;
use super::ListenerSpec;
use crate::script::describe_lua_error;

const ADMIN_KEYS: &[&str] = &["bind", "token", "explain_from"];

/// `admin = { bind = "127.0.0.1:8404", token = "...", explain_from = { "127.0.0.1" } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSpec {
    pub bind: SocketAddr,
    /// Every request must carry it (`Authorization: Bearer TOKEN`, or the
    /// cookie the page sets); None: anyone who reaches `bind` may, which
    /// the loader allows on a loopback address only.
    pub token: Option<Arc<str>>,
    /// Clients that may ask for a request's decision trace
    /// (`X-Pocket-Explain: 1`).
    pub explain_from: Vec<IpAddr>,
    /// Where `bind` is written, `path:line`, for an address that cannot
    /// be bound when the policy goes live.
    pub place: String,
}

impl Checker<'_> {
    /// The `admin` table, or None (absent, or wrong: then an error).
    pub(super) fn admin(&mut self, root: &Table, listeners: &[ListenerSpec]) -> Option<AdminSpec> {
        let t = match root.get::<Value>("admin") {
            Ok(Value::Nil) => return None,
            Ok(Value::Table(t)) => t,
            Ok(other) => {
                self.error(
                    &["admin"],
                    format!(
                        "admin must be a table like admin = {{ bind = \"127.0.0.1:8404\" }}, not {}",
                        shown(&other)
                    ),
                );
                return None;
            }
            Err(e) => {
                self.error(&["admin"], describe_lua_error(&e));
                return None;
            }
        };
        let misspelt = self.unknown_keys(&t, ADMIN_KEYS, "admin", &["admin"]);
        let bind = match t.get::<Value>("bind") {
            Ok(Value::String(s)) => match parse_addr(&s.to_string_lossy()) {
                Ok(a) => Some(a),
                Err(msg) => {
                    self.error(&["admin", "bind"], format!("admin.bind: {msg}"));
                    None
                }
            },
            Ok(Value::Nil) if misspelt.iter().any(|k| k == "bind") => None,
            Ok(Value::Nil) => {
                self.error(
                    &["admin"],
                    "admin has no bind address (bind = \"127.0.0.1:8404\")".into(),
                );
                None
            }
            Ok(other) => {
                self.error(
                    &["admin", "bind"],
                    format!(
                        "admin.bind must be a string like \"127.0.0.1:8404\", not {}",
                        shown(&other)
                    ),
                );
                None
            }
            Err(e) => {
                self.error(&["admin", "bind"], describe_lua_error(&e));
                None
            }
        };
        let mut token_ok = true;
        let token = match t.get::<Value>("token") {
            Ok(Value::Nil) => None,
            Ok(Value::String(s)) if !s.as_bytes().is_empty() => {
                let text = s.to_string_lossy();
                if text.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
                    token_ok = false;
                    self.error(
                        &["admin", "token"],
                        "admin.token must be printable ASCII without spaces (it travels in an Authorization header)".into(),
                    );
                    None
                } else {
                    Some(Arc::from(text.as_str()))
                }
            }
            Ok(other) => {
                token_ok = false;
                self.error(
                    &["admin", "token"],
                    format!(
                        "admin.token must be a non-empty string, not {}",
                        shown(&other)
                    ),
                );
                None
            }
            Err(e) => {
                token_ok = false;
                self.error(&["admin", "token"], describe_lua_error(&e));
                None
            }
        };
        let explain_from = self.explain_from(&t);
        let bind = bind?;
        if token.is_none() && token_ok && !bind.ip().is_loopback() {
            self.error(
                &["admin", "bind"],
                format!(
                    "admin.bind {bind} is not a loopback address: set admin.token too (the admin API changes server states and reloads the policy), or bind to 127.0.0.1"
                ),
            );
            return None;
        }
        // The same address as a proxy listener would fail only when the
        // policy goes live (`pocket check` said ok); the admin listener
        // never serves proxied traffic, so say so here.
        if let Some(l) = listeners.iter().find(|l| same_socket(l.bind, bind)) {
            self.error(
                &["admin", "bind"],
                format!(
                    "admin.bind {bind} is also listener \"{}\"'s bind ({}): the admin listener serves no proxied traffic; give it a port of its own",
                    l.name, l.bind
                ),
            );
            return None;
        }
        let line = self.places_line(&["admin", "bind"]);
        let place = match line {
            Some(n) => format!("{}:{n}", self.path.display()),
            None => self.path.display().to_string(),
        };
        Some(AdminSpec {
            bind,
            token,
            explain_from,
            place,
        })
    }

    fn explain_from(&mut self, t: &Table) -> Vec<IpAddr> {
        let at = ["admin", "explain_from"];
        let list = match t.get::<Value>("explain_from") {
            Ok(Value::Nil) => return Vec::new(),
            Ok(Value::Table(list)) => list,
            Ok(other) => {
                self.error(
                    &at,
                    format!(
                        "admin.explain_from must be a list of IP addresses like {{ \"127.0.0.1\" }}, not {}",
                        shown(&other)
                    ),
                );
                return Vec::new();
            }
            Err(e) => {
                self.error(&at, describe_lua_error(&e));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, v) in list.sequence_values::<Value>().enumerate() {
            let n = format!("[{}]", i + 1);
            let ip = match &v {
                Ok(Value::String(s)) => s.to_string_lossy().parse::<IpAddr>().ok(),
                _ => None,
            };
            match ip {
                Some(ip) => out.push(ip),
                None => {
                    let found = v.as_ref().map(shown).unwrap_or_default();
                    self.error(
                        &["admin", "explain_from", &n],
                        format!(
                            "admin.explain_from{n} must be an IP address like \"127.0.0.1\", not {found}"
                        ),
                    );
                }
            }
        }
        out
    }
}

/// Whether two binds would take the same socket: one port (not 0, which
/// the OS picks anew for each) on the same address, or on any address when
/// either is the wildcard (`0.0.0.0`, `[::]`).
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
