//! The policy's DNS keys: `resolvers` (which DNS servers), a pool's
//! `resolve` (how often its names are resolved again) and server entries
//! written with a name (`"app.test:8080"`, `{ srv = "_http._tcp.app.test" }`),
//! resolved here, at load, as crate::dns says.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mlua::{Table, Value};

use super::load::Checker;
use super::pool_settings::{duration, shown};
use crate::dns::{Found, Named, Query, Resolvers, DNS_PORT};

/// The shortest `resolve`: more often than this is a load on the DNS
/// server for nothing (nginx's `valid=` has no floor; HAProxy's `hold
/// valid` defaults to 10 s).
pub const MIN_RESOLVE: Duration = Duration::from_secs(1);

/// How many DNS servers `resolvers` may name (the C library reads 3).
const MAX_RESOLVERS: usize = 8;

impl Checker<'_> {
    /// `resolvers = { "127.0.0.1:5353" }` (or one string): IP addresses,
    /// port 53 unless written; absent: the system's.
    /// Any error here sets `resolvers_bad`: then no name is resolved.
    pub(super) fn resolvers_setting(&mut self, root: &Table) -> Resolvers {
        let errors_before = self.errors.len();
        let read = self.resolvers_read(root);
        self.resolvers_bad = self.errors.len() > errors_before;
        read
    }

    fn resolvers_read(&mut self, root: &Table) -> Resolvers {
        let at = ["resolvers"];
        let shape =
            "resolvers is a list of DNS server addresses, like resolvers = { \"127.0.0.1:53\" }";
        let items: Vec<(usize, Value)> = match root.get::<Value>("resolvers") {
            Ok(Value::Nil) => return Resolvers::default(),
            Ok(v @ Value::String(_)) => vec![(0, v)],
            Ok(Value::Table(t)) => {
                let list: Vec<(usize, Value)> = t
                    .sequence_values::<Value>()
                    .filter_map(Result::ok)
                    .enumerate()
                    .map(|(i, v)| (i + 1, v))
                    .collect();
                if list.is_empty()
                    || t.raw_len() != list.len()
                    || t.pairs::<Value, Value>().count() != list.len()
                {
                    self.error(&at, format!("{shape}: a list with at least one address"));
                    return Resolvers::default();
                }
                list
            }
            Ok(other) => {
                self.error(&at, format!("{shape}, not {}", shown(&other)));
                return Resolvers::default();
            }
            Err(e) => {
                self.error(&at, e.to_string());
                return Resolvers::default();
            }
        };
        if items.len() > MAX_RESOLVERS {
            self.error(
                &at,
                format!(
                    "resolvers names {} DNS servers; at most {MAX_RESOLVERS}",
                    items.len()
                ),
            );
        }
        let mut out = Vec::new();
        for (n, v) in items {
            let place = if n == 0 {
                String::new()
            } else {
                format!("[{n}]")
            };
            let at_item: Vec<&str> = if n == 0 {
                vec!["resolvers"]
            } else {
                vec!["resolvers", &place]
            };
            let Value::String(s) = &v else {
                self.error(&at_item, format!("{shape}, not {}", shown(&v)));
                continue;
            };
            let text = s.to_string_lossy();
            match resolver_addr(&text) {
                Some(a) if out.contains(&a) => self.error(
                    &at_item,
                    format!("resolvers: {a} is listed twice"),
                ),
                Some(a) => out.push(a),
                None => self.error(
                    &at_item,
                    format!("resolvers: bad DNS server address \"{text}\" (expected an IP address with an optional port from 1 to 65535, like \"127.0.0.1:5353\" or \"10.0.0.2\"; a name cannot be resolved without a DNS server)"),
                ),
            }
        }
        Resolvers(out)
    }

    /// A pool's `resolve = "10s"`: None when absent.
    pub(super) fn resolve_setting(&mut self, pool: &str, t: &Table) -> Option<Duration> {
        let at = ["pools", pool, "resolve"];
        let v = match t.get::<Value>("resolve") {
            Ok(Value::Nil) => return None,
            Ok(v) => v,
            Err(e) => {
                self.error(&at, e.to_string());
                return None;
            }
        };
        match duration(&v) {
            Ok(d) if d < MIN_RESOLVE => {
                self.error(
                    &at,
                    format!("pool \"{pool}\": resolve must be at least {MIN_RESOLVE:?} (how often its server names are resolved again), not {}", shown(&v)),
                );
                None
            }
            Ok(d) => Some(d),
            Err(msg) => {
                self.error(&at, format!("pool \"{pool}\": resolve: {msg}"));
                None
            }
        }
    }

    /// Resolves a named entry now, with the policy's resolvers. When DNS
    /// fails and this process had an answer before (a reload during an
    /// outage), that answer, with a warning; else the error, at `at`.
    pub(super) fn resolve_named(
        &mut self,
        pool: &str,
        named: &Named,
        at: &[&str],
    ) -> Option<Vec<Found>> {
        if self.resolvers_bad {
            self.names_skipped += 1;
            return None;
        }
        let resolvers = self.resolvers.clone();
        let answer = match self.prefetched.get(&named.query) {
            Some(answer) => answer.clone(),
            None => crate::dns::find_blocking(&resolvers, &named.query),
        };
        match answer {
            Ok(found) => {
                crate::dns::remember(&resolvers, &named.query, &found);
                Some(found)
            }
            Err(why) => {
                let what = match named.query {
                    Query::Host { .. } => "server",
                    Query::Srv(_) => "SRV name",
                };
                if let Some(last) = crate::dns::remembered(&resolvers, &named.query) {
                    let place = match self.places_line(at) {
                        Some(n) => format!("{}:{n}", self.path.display()),
                        None => self.path.display().to_string(),
                    };
                    let addrs: Vec<SocketAddr> = last.iter().map(|f| f.addr).collect();
                    self.warnings.push(format!(
                        "{place}: pool \"{pool}\": {what} \"{}\" does not resolve now ({why}; resolvers: {}): keeping its last addresses {}",
                        named.text,
                        resolvers.describe(),
                        crate::dns::list(&addrs)
                    ));
                    return Some(last);
                }
                self.error(
                    at,
                    format!(
                        "pool \"{pool}\": {what} \"{}\" does not resolve: {why} (resolvers: {})",
                        named.text,
                        resolvers.describe()
                    ),
                );
                None
            }
        }
    }
}

impl Checker<'_> {
    /// Asks DNS, all at once, for every name the pools write (as far as
    /// their tables can be read: what cannot is checked, and said, by the
    /// pools' own reading), so that the load waits for the slowest answer,
    /// not for their sum.
    pub(super) fn prefetch_names(&mut self, root: &Table) {
        if self.resolvers_bad {
            return;
        }
        let mut queries: Vec<Query> = Vec::new();
        let Ok(Value::Table(pools)) = root.get::<Value>("pools") else {
            return;
        };
        for (_, pool) in pools.pairs::<Value, Value>().flatten() {
            let Value::Table(pool) = pool else { continue };
            let Ok(Value::Table(list)) = pool.get::<Value>("servers") else {
                continue;
            };
            for entry in list.sequence_values::<Value>().flatten() {
                let query = match &entry {
                    Value::String(s) => host_query(&s.to_string_lossy()),
                    Value::Table(t) => match (t.get::<Value>("srv"), t.get::<Value>("addr")) {
                        (Ok(Value::String(s)), _) if srv_name_ok(&s.to_string_lossy()) => {
                            Some(Query::Srv(s.to_string_lossy()))
                        }
                        (Ok(Value::Nil), Ok(Value::String(a))) => host_query(&a.to_string_lossy()),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(q) = query.filter(|q| !queries.contains(q)) {
                    queries.push(q);
                }
            }
        }
        if queries.is_empty() || self.resolvers_bad {
            return;
        }
        let answers = crate::dns::find_all_blocking(&self.resolvers, &queries);
        self.prefetched = queries.into_iter().zip(answers).collect();
    }
}

/// A DNS server's address: `IP`, `IP:PORT` or `[V6]:PORT`; port 0 is
/// none (nothing can be sent to it).
fn resolver_addr(text: &str) -> Option<SocketAddr> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return (a.port() != 0).then_some(a);
    }
    text.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
}

/// `host:port` written with a host name (not an IP address, not
/// `localhost`, `*` or empty, which [`super::parse_addr`] reads): the
/// [`Query`] that resolves it. None when the text is not a name with a
/// port.
pub(super) fn host_query(text: &str) -> Option<Query> {
    if text.parse::<SocketAddr>().is_ok() {
        return None;
    }
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if matches!(host, "" | "*" | "localhost") || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    let name_like = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    name_like.then(|| Query::Host {
        host: host.to_string(),
        port,
    })
}

/// An SRV name as written: labels of letters, digits, `-`, `_`, `.`.
pub(super) fn srv_name_ok(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// A named entry as the pool writes it.
pub(super) fn named(query: Query, text: &str, weight: u32, backup: bool) -> Named {
    Named {
        query,
        text: Arc::from(text),
        weight,
        backup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_told_from_addresses() {
        assert_eq!(host_query("127.0.0.1:80"), None);
        assert_eq!(host_query("localhost:80"), None);
        assert_eq!(host_query("*:80"), None);
        assert_eq!(host_query("app.test"), None, "a name needs a port");
        assert_eq!(
            host_query("app.test:8080"),
            Some(Query::Host {
                host: "app.test".into(),
                port: 8080
            })
        );
    }

    #[test]
    fn resolver_addresses_take_port_53_unless_written() {
        assert_eq!(
            resolver_addr("10.0.0.2"),
            Some("10.0.0.2:53".parse().unwrap())
        );
        assert_eq!(
            resolver_addr("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(resolver_addr("dns.test:53"), None);
        assert_eq!(resolver_addr("127.0.0.1:0"), None, "port 0 is none");
        assert_eq!(resolver_addr("127.0.0.1:70000"), None);
    }
}
