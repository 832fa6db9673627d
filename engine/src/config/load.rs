//! Script -> [`Policy`]: run the script once in a sandboxed VM, then check
//! every part of the table it returns. All errors are collected, each with
//! the file and (where it can be found) the line.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use mlua::{Table, Value};

use super::pool_settings::duration;
use super::{
    ClientTimeouts, ConfigError, ConfigErrors, HookSet, ListenerSpec, Policy, DEFAULT_HEAD_SIZE,
    HEAD_SIZE_RANGE,
};
use crate::lb::{CheckSpec, Pool, Server, StateRegistry};
use crate::script::api::pool_refs::PoolRef;
use crate::script::{describe_lua_error, Limits, Vm};

const TOP_LEVEL_KEYS: &[&str] = &[
    "on_health",
    "on_check",
    "listeners",
    "pools",
    "on_connect",
    "on_request",
    "on_response",
    "tests",
];
const POOL_KEYS: &[&str] = &[
    "servers",
    "balance",
    "retries",
    "timeouts",
    "check",
    "passive",
    "hash_key",
    "hash_balance_factor",
    "slow_start",
    "fallback",
    "rehash",
    "bypass",
    "own_health",
];
const LISTENER_KEYS: &[&str] = &[
    "name",
    "bind",
    "pool",
    "mode",
    "keepalive",
    "timeouts",
    "max_connections",
    "head_size",
];
const LISTENER_TIMEOUT_KEYS: &[&str] = &["head", "body", "send"];
const SERVER_KEYS: &[&str] = &["addr", "weight", "backup"];
const MAX_WEIGHT: i64 = 256;

/// Reads and loads the policy at `path`.
pub fn load_policy(path: &Path, registry: &StateRegistry) -> Result<Policy, ConfigErrors> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: path.to_path_buf(),
            line: None,
            message: format!("cannot read the policy: {e}"),
        }])
    })?;
    load_policy_source(path, Arc::from(source), registry)
}

/// Loads a policy from its text; `path` names it in errors and tells
/// `require` where the script's own modules are.
pub fn load_policy_source(
    path: &Path,
    source: Arc<str>,
    registry: &StateRegistry,
) -> Result<Policy, ConfigErrors> {
    let mut cx = Checker {
        path,
        source: &source,
        places: super::locate::Places::of(&source),
        defined_pools: Vec::new(),
        errors: Vec::new(),
        has_on_check: false,
        fresh_health: HashSet::new(),
    };
    let vm = Vm::new(path, Limits::default()).map_err(|e| cx.fatal(&e))?;
    let value = vm.run_main_chunk(path, &source).map_err(|e| cx.fatal(&e))?;
    let Value::Table(root) = value else {
        cx.error_near(
            &["return"],
            format!(
                "the script must return a policy table, it returned {}",
                value.type_name()
            ),
        );
        return Err(ConfigErrors(cx.errors));
    };
    let policy = cx.policy(&root, registry);
    if let Some(policy) = &policy {
        cx.pool_refs(crate::script::api::pool_refs::take(&vm.lua), policy);
    }
    // Top to bottom, as a user fixes them (errors with no line last).
    cx.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    match policy {
        Some(policy) if cx.errors.is_empty() => Ok(policy),
        _ => Err(ConfigErrors(cx.errors)),
    }
}

pub(super) struct Checker<'a> {
    pub(super) path: &'a Path,
    source: &'a str,
    /// Where each field of the policy's tables is written.
    places: super::locate::Places,
    /// Every pool the policy defines, valid or not: a name that refers to
    /// an invalid pool gets no second error (the pool has its own).
    pub(super) defined_pools: Vec<String>,
    pub(super) errors: Vec<ConfigError>,
    /// The policy defines `on_check` (for `check = { script = true }`).
    pub(super) has_on_check: bool,
    /// Addresses whose shared health this load created (no running
    /// policy has seen them yet): a checking pool's `start` applies.
    fresh_health: HashSet<SocketAddr>,
}

impl Checker<'_> {
    /// An error about the value at `at` (a path from the policy table:
    /// `["pools", "app", "balance"]`, `[2]` for a list's second item),
    /// placed on that value's line, or its table's when it is missing.
    pub(super) fn error(&mut self, at: &[&str], message: String) {
        let line = self.places.line(at);
        self.errors.push(ConfigError {
            path: self.path.to_path_buf(),
            line,
            message,
        });
    }

    /// An error placed on the first line that mentions one of `needles`.
    pub(super) fn error_near(&mut self, needles: &[&str], message: String) {
        let line = super::line_of(self.source, needles);
        self.errors.push(ConfigError {
            path: self.path.to_path_buf(),
            line,
            message,
        });
    }

    fn fatal(&mut self, err: &mlua::Error) -> ConfigErrors {
        self.errors.push(ConfigError {
            path: self.path.to_path_buf(),
            line: None,
            message: describe_lua_error(err),
        });
        ConfigErrors(std::mem::take(&mut self.errors))
    }

    /// Flags keys of `table` that are not in `known`: a typo like
    /// `on_reqest` must not be silently ignored.
    /// Reads `key` of `t` as a duration above zero into `slot` (left as it
    /// is when absent); errors say `{prefix}{key}`, e.g. `pool "app":
    /// timeouts.` + `connect`.
    pub(super) fn positive_duration(
        &mut self,
        t: &Table,
        key: &str,
        prefix: &str,
        at: &[&str],
        slot: &mut std::time::Duration,
    ) {
        let at_key = [at, &[key]].concat();
        let parsed = match t.get::<Value>(key) {
            Ok(Value::Nil) => return,
            Ok(v) => duration(&v),
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok(d) if d.is_zero() => {
                self.error(&at_key, format!("{prefix}{key} must be more than 0"))
            }
            Ok(d) => *slot = d,
            Err(msg) => self.error(&at_key, format!("{prefix}{key}: {msg}")),
        }
    }

    /// A listener's `max_connections`: a whole number of at least 1, or
    /// absent. Errors say `{prefix}max_connections ...`.
    fn max_connections(&mut self, t: &Table, prefix: &str, at: &[&str]) -> Option<usize> {
        let at_key = [at, &["max_connections"]].concat();
        let value = t.get::<Value>("max_connections").unwrap_or(Value::Nil);
        let n = match value {
            Value::Nil => return None,
            Value::Integer(n) => Some(n),
            Value::Number(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            _ => None,
        };
        match n {
            Some(n) if n >= 1 => Some(n as usize),
            _ => {
                self.error(
                    &at_key,
                    format!(
                        "{prefix}max_connections must be a whole number of at least 1, not {}",
                        match &value {
                            Value::Integer(n) => n.to_string(),
                            Value::Number(f) => f.to_string(),
                            Value::String(s) => format!("\"{}\"", s.to_string_lossy()),
                            other => format!("a {}", other.type_name()),
                        }
                    ),
                );
                None
            }
        }
    }

    /// A listener's `head_size`: a whole number of bytes within
    /// [`HEAD_SIZE_RANGE`], else [`DEFAULT_HEAD_SIZE`] (an error if given
    /// and wrong; errors say `{prefix}head_size`).
    fn head_size(&mut self, t: &Table, prefix: &str, at: &[&str]) -> u32 {
        let at_key = [at, &["head_size"]].concat();
        let (lo, hi) = (*HEAD_SIZE_RANGE.start(), *HEAD_SIZE_RANGE.end());
        match t.get::<Value>("head_size") {
            Ok(Value::Nil) => return DEFAULT_HEAD_SIZE,
            Ok(Value::Integer(n)) if (i64::from(lo)..=i64::from(hi)).contains(&n) => {
                return n as u32
            }
            Ok(Value::Number(f))
                if f.fract() == 0.0 && (f64::from(lo)..=f64::from(hi)).contains(&f) =>
            {
                return f as u32
            }
            _ => {}
        }
        self.error(
            &at_key,
            format!("{prefix}head_size must be a whole number of bytes from {lo} to {hi} (the default is {DEFAULT_HEAD_SIZE})"),
        );
        DEFAULT_HEAD_SIZE
    }

    pub(super) fn unknown_keys(&mut self, table: &Table, known: &[&str], what: &str, at: &[&str]) {
        for (key, _) in table.pairs::<Value, Value>().flatten() {
            if let Value::String(s) = &key {
                let k = s.to_string_lossy();
                if !known.contains(&k.as_str()) {
                    let at_key = [at, &[k.as_str()]].concat();
                    self.error(
                        &at_key,
                        format!("{what}: unknown key \"{k}\" (known: {})", known.join(", ")),
                    );
                }
            }
        }
    }

    fn policy(&mut self, root: &Table, registry: &StateRegistry) -> Option<Policy> {
        self.unknown_keys(root, TOP_LEVEL_KEYS, "policy", &[]);
        match root.get::<Value>("on_check") {
            Ok(Value::Nil) => {}
            Ok(Value::Function(_)) => self.has_on_check = true,
            // Reported here; `script = true` gets no second error.
            _ => {
                self.has_on_check = true;
                self.error(
                    &["on_check"],
                    "on_check must be a function(server, http)".into(),
                );
            }
        }

        let mut hooks = HookSet::default();
        for (name, flag) in [
            ("on_connect", &mut hooks.on_connect),
            ("on_request", &mut hooks.on_request),
            ("on_response", &mut hooks.on_response),
            ("on_health", &mut hooks.on_health),
        ] {
            match root.get::<Value>(name) {
                Ok(Value::Nil) => {}
                Ok(Value::Function(_)) => *flag = true,
                Ok(other) => self.error(
                    &[name],
                    format!("{name} must be a function, not a {}", other.type_name()),
                ),
                Err(e) => self.error(&[name], describe_lua_error(&e)),
            }
        }

        let (pools, pool_index) = self.pools(root, registry);
        self.check_fallbacks(&pools, &pool_index);
        let listeners = self.listeners(root, &pool_index);
        Some(Policy {
            path: self.path.to_path_buf(),
            source: Arc::from(self.source),
            listeners,
            pools,
            pool_index,
            hooks,
        })
    }

    /// Every pool named by a table compiled at load (`pocket.uses_pool`:
    /// `pocket.match` routes, `pocket.canary` splits) is defined; one
    /// error per unknown name, at the line that writes it.
    fn pool_refs(&mut self, refs: Vec<PoolRef>, policy: &Policy) {
        let mut reported: Vec<&str> = Vec::new();
        for r in &refs {
            if policy.pool_index.contains_key(&r.name)
                || self.defined_pools.contains(&r.name)
                || reported.contains(&r.name.as_str())
            {
                continue;
            }
            reported.push(&r.name);
            let path = Path::new(&r.path);
            let text = if path == self.path {
                Some(self.source.to_string())
            } else {
                std::fs::read_to_string(path).ok()
            };
            // The call's line is where the table starts; the name itself
            // is usually a few lines below, on its own entry.
            // Without a line (a tail call hid the caller), the first line
            // of the file that writes the name.
            let line = text
                .as_deref()
                .and_then(|t| written_at(t, r.line.unwrap_or(1), &r.name))
                .or(r.line);
            let mut known: Vec<&str> = policy.pools.iter().map(|p| &*p.name).collect();
            known.sort_unstable();
            self.errors.push(ConfigError {
                path: path.to_path_buf(),
                line,
                message: format!(
                    "pool \"{}\" is not defined in pools (pools: {})",
                    r.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
    }

    /// Every fallback names a pool, and no chain of fallbacks loops.
    fn check_fallbacks(&mut self, pools: &[Arc<Pool>], index: &HashMap<String, usize>) {
        for pool in pools {
            if let Some(&i) = pool.fallback.as_deref().and_then(|f| index.get(f)) {
                pool.resolve_fallback(i);
            }
            let mut seen = vec![pool.name.clone()];
            let mut next = pool.fallback.clone();
            while let Some(name) = next {
                let Some(&i) = index.get(&*name) else {
                    if self.defined_pools.iter().any(|p| **p == *name) {
                        break;
                    }
                    self.error(
                        &["pools", &pool.name, "fallback"],
                        format!(
                            "pool \"{}\": fallback pool \"{name}\" is not defined",
                            pool.name
                        ),
                    );
                    break;
                };
                if seen.contains(&name) {
                    self.error(
                        &["pools", &pool.name, "fallback"],
                        format!("pool \"{}\": fallbacks loop back to \"{name}\"", pool.name),
                    );
                    break;
                }
                seen.push(name);
                next = pools[i].fallback.clone();
            }
        }
    }

    fn listeners(&mut self, root: &Table, pools: &HashMap<String, usize>) -> Vec<ListenerSpec> {
        let list = match root.get::<Value>("listeners") {
            Ok(Value::Table(t)) => t,
            Ok(Value::Nil) => {
                self.error_near(
                    &["return"],
                    "no listeners: add listeners = { { bind = \"127.0.0.1:8080\", pool = \"...\" } }".into(),
                );
                return Vec::new();
            }
            Ok(other) => {
                self.error(
                    &["listeners"],
                    format!(
                        "listeners must be a list of tables, not a {}",
                        other.type_name()
                    ),
                );
                return Vec::new();
            }
            Err(e) => {
                self.error(&["listeners"], describe_lua_error(&e));
                return Vec::new();
            }
        };
        let mut out: Vec<ListenerSpec> = Vec::new();
        for (i, entry) in list.sequence_values::<Value>().enumerate() {
            let n = i + 1;
            let ns = format!("[{n}]");
            let Ok(Value::Table(t)) = entry else {
                self.error(
                    &["listeners", &ns],
                    format!("listeners[{n}] must be a table like {{ bind = \"127.0.0.1:8080\" }}"),
                );
                continue;
            };
            self.unknown_keys(
                &t,
                LISTENER_KEYS,
                &format!("listeners[{n}]"),
                &["listeners", &ns],
            );
            let name = match t.get::<Value>("name") {
                Ok(Value::String(s)) => s.to_string_lossy(),
                Ok(Value::Nil) => format!("listener{n}"),
                _ => {
                    self.error(
                        &["listeners", &ns, "name"],
                        format!("listeners[{n}].name must be a string"),
                    );
                    continue;
                }
            };
            if out.iter().any(|l| &*l.name == name.as_str()) {
                self.error(
                    &["listeners", &ns, "name"],
                    format!("two listeners are named \"{name}\""),
                );
            }
            let bind = match t.get::<Value>("bind") {
                Ok(Value::String(s)) => {
                    let text = s.to_string_lossy();
                    match parse_addr(&text) {
                        Ok(a) => Some(a),
                        Err(msg) => {
                            self.error(
                                &["listeners", &ns, "bind"],
                                format!("listener \"{name}\": {msg}"),
                            );
                            None
                        }
                    }
                }
                Ok(Value::Nil) => {
                    self.error(
                        &["listeners", &ns],
                        format!("listener \"{name}\" has no bind address"),
                    );
                    None
                }
                _ => {
                    self.error(
                        &["listeners", &ns, "bind"],
                        format!(
                            "listener \"{name}\": bind must be a string like \"127.0.0.1:8080\""
                        ),
                    );
                    None
                }
            };
            match t.get::<Value>("mode") {
                Ok(Value::Nil) => {}
                Ok(Value::String(s)) if s.to_string_lossy() == "http" => {}
                Ok(Value::String(s)) => {
                    let mode = s.to_string_lossy();
                    self.error(
                        &["listeners", &ns, "mode"],
                        format!("listener \"{name}\": mode \"{mode}\" is not supported (this version serves \"http\")"),
                    );
                }
                _ => self.error(
                    &["listeners", &ns, "mode"],
                    format!("listener \"{name}\": mode must be a string"),
                ),
            }
            let default_pool = match t.get::<Value>("pool") {
                Ok(Value::Nil) => None,
                Ok(Value::String(s)) => {
                    let pool = s.to_string_lossy();
                    match pools.get(&pool) {
                        Some(&idx) => Some(idx),
                        None if self.defined_pools.contains(&pool) => None,
                        None => {
                            self.error(
                                &["listeners", &ns, "pool"],
                                format!("listener \"{name}\": default pool \"{pool}\" is not defined in pools"),
                            );
                            None
                        }
                    }
                }
                _ => {
                    self.error(
                        &["listeners", &ns, "pool"],
                        format!("listener \"{name}\": pool must be a pool name"),
                    );
                    None
                }
            };
            let mut timeouts = ClientTimeouts::default();
            let here = format!("listener \"{name}\"");
            let top = format!("{here}: ");
            self.positive_duration(
                &t,
                "keepalive",
                &top,
                &["listeners", &ns],
                &mut timeouts.keepalive,
            );
            match t.get::<Value>("timeouts") {
                Ok(Value::Nil) => {}
                Ok(Value::Table(tt)) => {
                    let at = &["listeners", &ns, "timeouts"];
                    self.unknown_keys(&tt, LISTENER_TIMEOUT_KEYS, &format!("{here} timeouts"), at);
                    let here = format!("{here}: timeouts.");
                    self.positive_duration(&tt, "head", &here, at, &mut timeouts.head);
                    self.positive_duration(&tt, "body", &here, at, &mut timeouts.body);
                    self.positive_duration(&tt, "send", &here, at, &mut timeouts.send);
                }
                _ => self.error(
                    &["listeners", &ns, "timeouts"],
                    format!("{here}: timeouts must be a table like {{ head = \"10s\" }}"),
                ),
            }
            let max_connections = self.max_connections(&t, &top, &["listeners", &ns]);
            let head_size = self.head_size(&t, &top, &["listeners", &ns]);
            if let Some(bind) = bind {
                if let Some(other) = out.iter().find(|l| l.bind == bind && bind.port() != 0) {
                    self.error(
                        &["listeners", &ns, "bind"],
                        format!(
                            "listeners \"{}\" and \"{name}\" both bind {bind}",
                            other.name
                        ),
                    );
                }
                out.push(ListenerSpec {
                    name: Arc::from(name.as_str()),
                    bind,
                    default_pool,
                    timeouts,
                    max_connections,
                    head_size,
                });
            }
        }
        if out.is_empty() && self.errors.is_empty() {
            self.error(&["listeners"], "no listeners: the list is empty".into());
        }
        out
    }

    fn pools(
        &mut self,
        root: &Table,
        registry: &StateRegistry,
    ) -> (Vec<Arc<Pool>>, HashMap<String, usize>) {
        let mut pools = Vec::new();
        let mut index = HashMap::new();
        let table = match root.get::<Value>("pools") {
            Ok(Value::Table(t)) => t,
            Ok(Value::Nil) => return (pools, index),
            Ok(other) => {
                self.error(
                    &["pools"],
                    format!(
                        "pools must be a table of name = {{ ... }}, not a {}",
                        other.type_name()
                    ),
                );
                return (pools, index);
            }
            Err(e) => {
                self.error(&["pools"], describe_lua_error(&e));
                return (pools, index);
            }
        };
        // Sorted, so pool indices (and messages) do not depend on hash order.
        let mut entries: Vec<(String, Value)> = Vec::new();
        for pair in table.pairs::<Value, Value>() {
            match pair {
                Ok((Value::String(k), v)) => entries.push((k.to_string_lossy(), v)),
                Ok((k, _)) => self.error(
                    &["pools"],
                    format!("pool names must be strings, found a {}", k.type_name()),
                ),
                Err(e) => self.error(&["pools"], describe_lua_error(&e)),
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        self.defined_pools = entries.iter().map(|(name, _)| name.clone()).collect();
        for (name, value) in entries {
            if let Some(pool) = self.pool(&name, value, registry) {
                index.insert(name, pools.len());
                pools.push(Arc::new(pool));
            }
        }
        self.one_health_per_address(&pools);
        (pools, index)
    }

    /// An address in several pools has one health (unless a pool keeps
    /// its own), so one check: the first pool by name that checks it owns
    /// the check, and another pool that checks it differently is an error
    /// (which check would decide?). A new shared health starts down if its
    /// check says `start = "down"`. See docs/health.md.
    fn one_health_per_address(&mut self, pools: &[Arc<Pool>]) {
        let mut owner: HashMap<SocketAddr, (&str, &CheckSpec)> = HashMap::new();
        for pool in pools.iter().filter(|p| !p.own_health) {
            let Some(check) = &pool.check else { continue };
            for server in &pool.servers {
                if !check.start_up && self.fresh_health.contains(&server.addr) {
                    server.state.health.start_down();
                }
                let Some((first, theirs)) = owner.get(&server.addr) else {
                    owner.insert(server.addr, (&pool.name, check));
                    continue;
                };
                let same = !check.pool_function
                    && !theirs.pool_function
                    && check.fingerprint() == theirs.fingerprint();
                if !same {
                    let name = &pool.name;
                    self.error(
                        &["pools", name, "check"],
                        format!(
                            "pool \"{name}\": server {} is also in pool \"{first}\", which checks it differently; an address has one health, so one check: give both pools the same check (script = true to share a scripted one), drop this one, or say own_health = true in the pool that wants its own verdict",
                            server.addr
                        ),
                    );
                }
            }
        }
    }

    fn pool(&mut self, name: &str, value: Value, registry: &StateRegistry) -> Option<Pool> {
        let here = ["pools", name];
        let Value::Table(t) = value else {
            self.error(
                &here,
                format!("pool \"{name}\" must be a table with servers"),
            );
            return None;
        };
        self.unknown_keys(&t, POOL_KEYS, &format!("pool \"{name}\""), &here);
        let errors_before = self.errors.len();

        let settings = self.pool_settings(name, &t);
        let start_up = settings.check.as_ref().is_none_or(|c| c.start_up);

        let mut servers: Vec<Server> = Vec::new();
        match t.get::<Value>("servers") {
            Ok(Value::Table(list)) => {
                for (i, entry) in list.sequence_values::<Value>().enumerate() {
                    let Ok(entry) = entry else { continue };
                    let health = (settings.own_health, start_up);
                    if let Some(server) = self.server(name, i + 1, entry, registry, health) {
                        if servers.iter().any(|s| s.addr == server.addr) {
                            self.error(
                                &["pools", name, "servers", &format!("[{}]", i + 1)],
                                format!("pool \"{name}\": server {} is listed twice", server.addr),
                            );
                        }
                        servers.push(server);
                    }
                }
                if servers.is_empty() && self.errors.len() == errors_before {
                    self.error(
                        &["pools", name, "servers"],
                        format!("pool \"{name}\" has no servers"),
                    );
                }
            }
            Ok(Value::Nil) => self.error(
                &here,
                format!("pool \"{name}\" has no servers (servers = {{ \"127.0.0.1:9001\" }})"),
            ),
            _ => self.error(
                &["pools", name, "servers"],
                format!("pool \"{name}\": servers must be a list"),
            ),
        }
        if servers.iter().all(|s| s.backup) && !servers.is_empty() {
            self.error(
                &here,
                format!(
                    "pool \"{name}\": every server is a backup; at least one must be a primary"
                ),
            );
        }

        if self.errors.len() > errors_before {
            return None;
        }
        Some(Pool::new(name, servers, settings))
    }

    fn server(
        &mut self,
        pool: &str,
        n: usize,
        entry: Value,
        registry: &StateRegistry,
        (own_health, start_up): (bool, bool),
    ) -> Option<Server> {
        let ns = format!("[{n}]");
        let (addr_text, weight, backup) = match entry {
            Value::String(s) => (s.to_string_lossy(), 1, false),
            Value::Table(t) => {
                self.unknown_keys(
                    &t,
                    SERVER_KEYS,
                    &format!("pool \"{pool}\" server {n}"),
                    &["pools", pool, "servers", &ns],
                );
                let addr = match t.get::<Value>("addr") {
                    Ok(Value::String(s)) => s.to_string_lossy(),
                    _ => {
                        self.error(&["pools", pool, "servers", &ns, "addr"], format!("pool \"{pool}\" server {n}: addr must be a string like \"127.0.0.1:9001\""));
                        return None;
                    }
                };
                let weight = match t.get::<Value>("weight") {
                    Ok(Value::Nil) => 1,
                    Ok(Value::Integer(w)) if (1..=MAX_WEIGHT).contains(&w) => w as u32,
                    Ok(other) => {
                        let shown = match other {
                            Value::Integer(w) => w.to_string(),
                            Value::Number(w) => w.to_string(),
                            other => other.type_name().to_string(),
                        };
                        self.error(
                            &["pools", pool, "servers", &ns, "weight"],
                            format!("pool \"{pool}\" server {addr}: weight must be a whole number from 1 to {MAX_WEIGHT}, not {shown}"),
                        );
                        1
                    }
                    Err(e) => {
                        self.error(
                            &["pools", pool, "servers", &ns, "weight"],
                            describe_lua_error(&e),
                        );
                        1
                    }
                };
                let backup = match t.get::<Value>("backup") {
                    Ok(Value::Nil) => false,
                    Ok(Value::Boolean(b)) => b,
                    _ => {
                        self.error(
                            &["pools", pool, "servers", &ns, "backup"],
                            format!("pool \"{pool}\" server {addr}: backup must be true or false"),
                        );
                        false
                    }
                };
                (addr, weight, backup)
            }
            other => {
                self.error(
                    &["pools", pool, "servers", &ns],
                    format!(
                        "pool \"{pool}\" server {n} must be \"ip:port\" or a table, not a {}",
                        other.type_name()
                    ),
                );
                return None;
            }
        };
        match parse_addr(&addr_text) {
            Ok(addr) => {
                let (state, new) = registry.get_or_create(pool, addr, own_health, start_up);
                if new && !own_health {
                    self.fresh_health.insert(addr);
                }
                Some(Server {
                    addr,
                    addr_text: Arc::from(addr.to_string()),
                    weight,
                    backup,
                    state,
                })
            }
            Err(msg) => {
                self.error(
                    &["pools", pool, "servers", &ns, "addr"],
                    format!("pool \"{pool}\": {msg}"),
                );
                None
            }
        }
    }
}

/// The first line at or after `from` (1-based) that writes `name` as a
/// quoted string, outside a comment.
fn written_at(text: &str, from: usize, name: &str) -> Option<usize> {
    let quoted = [
        format!("\"{name}\""),
        format!("'{name}'"),
        format!("[[{name}]]"),
    ];
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, line)| {
            let code = line.split("--").next().unwrap_or("");
            quoted.iter().any(|q| code.contains(q.as_str()))
        })
        .map(|(i, _)| i + 1)
}

/// `ip:port`, `[v6]:port`, `localhost:port` or `*:port` / `:port` (all
/// IPv4 addresses).
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let hint = || format!("bad address \"{text}\" (expected ip:port, like \"127.0.0.1:9001\")");
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(hint)?;
    let port: u16 = port.parse().map_err(|_| hint())?;
    match host {
        "" | "*" => Ok(SocketAddr::from(([0, 0, 0, 0], port))),
        "localhost" => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        _ => {
            // Names are resolved once, at load; never on the request path.
            let mut addrs = (host, port).to_socket_addrs().map_err(|_| hint())?;
            addrs.next().ok_or_else(hint)
        }
    }
}
