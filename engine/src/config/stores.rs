//! The policy's top-level `stores = { NAME = { redis = "host:port",
//! prefix = "pocket:", timeout = "50ms", user = ..., password_env = ... } }`: stores kept in Redis, shared
//! by every Pocket that names the same Redis (docs/several-pockets.md,
//! "Shared state on Redis"). Checked here, at load, with `path:line`: a
//! malformed address, an unknown key, a bad timeout. Whether Redis
//! answers is not checked: a Redis that is down at load may come later
//! (the store serves from local state meanwhile, and the log says so).

use std::time::Duration;

use mlua::{Table, Value};

use super::load::Checker;
use super::pool_settings::{duration, shown};
use crate::script::describe_lua_error;

/// How long a request may wait on Redis for one store call when the
/// store names no `timeout`: past it the store serves from local state.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// The timeouts a store may give: a request path bound, not a batch job's.
const TIMEOUTS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(5);

const STORE_KEYS: &[&str] = &["redis", "prefix", "timeout", "user", "password_env"];

/// One store of `stores`, as the policy declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    pub name: String,
    pub redis: RedisSpec,
}

/// Where a store lives in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedisSpec {
    /// `host:port` as written (a name is resolved when connecting).
    pub host: String,
    pub port: u16,
    /// Put before every key in Redis (default `pocket:NAME:`).
    pub prefix: String,
    /// The longest a request waits on Redis for one call.
    pub timeout: Duration,
    /// Redis 6's ACL user (`AUTH user password`); `None`: `default`.
    pub user: Option<String>,
    /// The password (`requirepass`, or the ACL user's), read at load from
    /// the environment variable `password_env` names: never written in
    /// the policy, which people commit.
    pub password: Option<Secret>,
}

/// A password: compared, never shown (`{:?}` prints `***`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl RedisSpec {
    /// `host:port` (IPv6 in brackets).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `host:port`, `[v6]:port`: the host a name or an address, the port 1 to
/// 65535. Errors say what was expected.
pub fn parse_redis_addr(text: &str) -> Result<(String, u16), String> {
    let hint =
        || format!("bad Redis address \"{text}\" (expected host:port, like \"127.0.0.1:6379\")");
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        if addr.port() == 0 {
            return Err(hint());
        }
        return Ok((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(hint)?;
    let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(hint)?;
    let name_like = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !name_like {
        return Err(hint());
    }
    Ok((host.to_string(), port))
}

impl Checker<'_> {
    /// The stores the policy declares (none when it has no `stores`; a
    /// mistake is recorded as an error).
    pub(super) fn stores(&mut self, root: &Table) -> Vec<StoreSpec> {
        let t = match root.get::<Value>("stores") {
            Ok(Value::Nil) => return Vec::new(),
            Ok(Value::Table(t)) => t,
            Ok(other) => {
                self.error(
                    &["stores"],
                    format!(
                        "stores must be a table like stores = {{ sessions = {{ redis = \"127.0.0.1:6379\" }} }}, not {}",
                        shown(&other)
                    ),
                );
                return Vec::new();
            }
            Err(e) => {
                self.error(&["stores"], describe_lua_error(&e));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        let mut pairs: Vec<(Value, Value)> = t.pairs::<Value, Value>().flatten().collect();
        pairs.sort_by_key(|(k, _)| k.to_string().unwrap_or_default());
        for (k, v) in pairs {
            let Value::String(name) = &k else {
                self.error(
                    &["stores"],
                    format!(
                        "stores: each store is written name = {{ redis = ... }}, not {}",
                        shown(&k)
                    ),
                );
                continue;
            };
            let name = name.to_string_lossy();
            if name.is_empty() || name.len() > 256 {
                self.error(
                    &["stores"],
                    format!(
                        "stores: a store needs a name of 1 to 256 bytes, not {}",
                        name.len()
                    ),
                );
                continue;
            }
            if let Some(spec) = self.store(&name, &v) {
                out.push(spec);
            }
        }
        let max = crate::script::api::store::MAX_STORES;
        if out.len() > max {
            self.error(
                &["stores"],
                format!(
                    "stores declares {} stores; a Pocket keeps at most {max} (local ones included)",
                    out.len()
                ),
            );
        }
        out
    }

    fn store(&mut self, name: &str, v: &Value) -> Option<StoreSpec> {
        let at = ["stores", name];
        let what = format!("store \"{name}\"");
        let Value::Table(t) = v else {
            self.error(
                &at,
                format!(
                    "{what} must be a table like {{ redis = \"127.0.0.1:6379\", prefix = \"pocket:\" }}, not {}",
                    shown(v)
                ),
            );
            return None;
        };
        let misspelt = self.unknown_keys(t, STORE_KEYS, &what, &at);
        let at_key = |k: &'static str| [&at[..], &[k]].concat();
        let addr = match t.get::<Value>("redis") {
            Ok(Value::String(s)) => match parse_redis_addr(&s.to_string_lossy()) {
                Ok(a) => Some(a),
                Err(msg) => {
                    self.error(&at_key("redis"), format!("{what}: redis: {msg}"));
                    None
                }
            },
            Ok(Value::Nil) if misspelt.iter().any(|k| k == "redis") => None,
            Ok(Value::Nil) => {
                self.error(
                    &at,
                    format!("{what} has no redis address (redis = \"127.0.0.1:6379\")"),
                );
                None
            }
            Ok(other) => {
                self.error(
                    &at_key("redis"),
                    format!(
                        "{what}: redis must be a string like \"127.0.0.1:6379\", not {}",
                        shown(&other)
                    ),
                );
                None
            }
            Err(e) => {
                self.error(&at_key("redis"), describe_lua_error(&e));
                None
            }
        };
        let prefix = match t.get::<Value>("prefix") {
            Ok(Value::Nil) => Some(format!("pocket:{name}:")),
            Ok(Value::String(s)) if s.as_bytes().len() <= 256 => {
                Some(s.to_string_lossy().to_string())
            }
            Ok(other) => {
                self.error(
                    &at_key("prefix"),
                    format!(
                        "{what}: prefix must be a text of at most 256 bytes, like \"pocket:\", not {}",
                        shown(&other)
                    ),
                );
                None
            }
            Err(e) => {
                self.error(&at_key("prefix"), describe_lua_error(&e));
                None
            }
        };
        let timeout = match t.get::<Value>("timeout") {
            Ok(Value::Nil) => Some(DEFAULT_REDIS_TIMEOUT),
            Ok(v) => match duration(&v) {
                Ok(d) if TIMEOUTS.contains(&d) => Some(d),
                Ok(_) => {
                    self.error(
                        &at_key("timeout"),
                        format!("{what}: timeout must be from 1ms to 5s, not {}", shown(&v)),
                    );
                    None
                }
                Err(msg) => {
                    self.error(&at_key("timeout"), format!("{what}: timeout {msg}"));
                    None
                }
            },
            Err(e) => {
                self.error(&at_key("timeout"), describe_lua_error(&e));
                None
            }
        };
        let user = match t.get::<Value>("user") {
            Ok(Value::Nil) => Some(None),
            Ok(Value::String(s)) if !s.as_bytes().is_empty() && s.as_bytes().len() <= 256 => {
                Some(Some(s.to_string_lossy().to_string()))
            }
            Ok(other) => {
                self.error(
                    &at_key("user"),
                    format!(
                        "{what}: user must be a Redis ACL user name (text), not {}",
                        shown(&other)
                    ),
                );
                None
            }
            Err(e) => {
                self.error(&at_key("user"), describe_lua_error(&e));
                None
            }
        };
        let password = match t.get::<Value>("password_env") {
            Ok(Value::Nil) => Some(None),
            Ok(Value::String(s)) => {
                let var = s.to_string_lossy().to_string();
                match std::env::var(&var) {
                    Ok(p) if !p.is_empty() => Some(Some(Secret(p))),
                    _ => {
                        self.error(
                            &at_key("password_env"),
                            format!(
                                "{what}: password_env names the environment variable {var}, which is not set (or empty) for this Pocket: set it to Redis's password"
                            ),
                        );
                        None
                    }
                }
            }
            Ok(other) => {
                self.error(
                    &at_key("password_env"),
                    format!(
                        "{what}: password_env must name an environment variable, like \"REDIS_PASSWORD\", not {}",
                        shown(&other)
                    ),
                );
                None
            }
            Err(e) => {
                self.error(&at_key("password_env"), describe_lua_error(&e));
                None
            }
        };
        let ((host, port), prefix, timeout) = (addr?, prefix?, timeout?);
        Some(StoreSpec {
            name: name.to_string(),
            redis: RedisSpec {
                host,
                port,
                prefix,
                timeout,
                user: user?,
                password: password?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_redis_addr("127.0.0.1:6379"),
            Ok(("127.0.0.1".into(), 6379))
        );
        assert_eq!(parse_redis_addr("[::1]:6380"), Ok(("::1".into(), 6380)));
        assert_eq!(
            parse_redis_addr("redis.local:6379"),
            Ok(("redis.local".into(), 6379))
        );
        for bad in [
            "127.0.0.1",
            "127.0.0.1:",
            ":6379",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "redis://127.0.0.1:6379",
            "a b:6379",
        ] {
            assert!(parse_redis_addr(bad).is_err(), "{bad}");
        }
    }
}
