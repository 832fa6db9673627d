//! Script -> [`Policy`]: run the script once in a sandboxed VM, then check
//! every part of the table it returns. All errors are collected, each with
//! the file and (where it can be found) the line.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use mlua::{Table, Value};

use super::pool_settings::{duration, shown};
use super::{
    ClientTimeouts, ConfigError, ConfigErrors, HookSet, ListenerSpec, Mode, Policy,
    DEFAULT_HEAD_SIZE, HEAD_SIZE_RANGE,
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
    "admin",
    "log",
    "stores",
    "resolvers",
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
    "send_proxy",
    "tls",
    "protocol",
    "mode",
    "resolve",
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
    "accept_proxy",
    "tls",
];
const LISTENER_TIMEOUT_KEYS: &[&str] = &["head", "body", "send", "client_hello"];
const SERVER_KEYS: &[&str] = &["addr", "srv", "weight", "backup"];
/// How pools are written, for errors about their shape.
const POOLS_SHAPE: &str =
    "pools is a table of name = pool, like pools = { app = { servers = { \"127.0.0.1:9001\" } } }";
/// The largest `weight` a server may have (an SRV weight above it counts
/// as it).
pub const MAX_WEIGHT: i64 = 256;

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
        pools_unreadable: false,
        errors: Vec::new(),
        has_on_check: false,
        bad_mode_pools: HashSet::new(),
        fresh_health: HashSet::new(),
        modules: Vec::new(),
        warnings: Vec::new(),
        resolvers: Default::default(),
        resolvers_bad: false,
        names_skipped: 0,
        prefetched: HashMap::new(),
    };
    let vm = Vm::new(path, Limits::default()).map_err(|e| cx.fatal(&e))?;
    let ran = vm.run_main_chunk(path, &source);
    cx.modules = crate::script::stdlib::module_files(&vm.lua);
    let value = match ran {
        Ok(value) => value,
        Err(e) => {
            let refs = crate::script::api::pool_refs::take(&vm.lua);
            let mut errors = cx.fatal(&e);
            // The chunk failed, so there is no policy table: a pool named
            // before the failure (a `pocket.match` rule above a wrong
            // one) is checked against the pools the text writes.
            let written = cx.places.keys(&["pools"]);
            if !written.is_empty() {
                cx.pool_refs(refs, written);
                errors.0.append(&mut cx.errors);
            }
            errors.0.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            return Err(errors);
        }
    };
    let Value::Table(root) = value else {
        cx.error_near(
            &["return"],
            format!(
                "the script must return a policy table, it returned {}",
                shown(&value)
            ),
        );
        return Err(ConfigErrors(cx.errors));
    };
    let mut policy = cx.policy(&root, registry);
    if let Some(policy) = &mut policy {
        client_hello_reads(policy, &root, &cx.modules);
    }
    cx.errors
        .extend(super::global_hooks::global_hooks(&vm.lua, &root, path));
    if let Some(policy) = &policy {
        let known = policy.pools.iter().map(|p| p.name.to_string()).collect();
        cx.pool_refs(crate::script::api::pool_refs::take(&vm.lua), known);
    }
    // Top to bottom, as a user fixes them (errors with no line last).
    cx.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    match policy {
        Some(policy) if cx.errors.is_empty() => Ok(policy),
        _ => Err(ConfigErrors(cx.errors)),
    }
}

/// Whether `on_connect` names `conn.sni`/`conn.alpn` (its text or a
/// module's, as the worker VM decides it), and the warning for a policy
/// that reads them with no tcp listener, where they are always nil.
fn client_hello_reads(
    policy: &mut Policy,
    root: &Table,
    modules: &[(std::path::PathBuf, std::path::PathBuf)],
) {
    policy.reads_client_hello = policy.hooks.on_connect
        && (super::names_client_hello(&policy.source)
            || modules.iter().any(|(_, file)| {
                std::fs::read_to_string(file).is_ok_and(|t| super::names_client_hello(&t))
            }));
    if !policy.reads_client_hello || policy.listeners.iter().any(|l| l.mode == Mode::Tcp) {
        return;
    }
    let line = match root.get::<Value>("on_connect") {
        Ok(Value::Function(f)) => f.info().line_defined,
        _ => None,
    };
    let place = match line {
        Some(n) => format!("{}:{n}", policy.path.display()),
        None => policy.path.display().to_string(),
    };
    policy.warnings.push(format!(
        "{place}: on_connect reads conn.sni or conn.alpn, but no listener has mode = \"tcp\": they are always nil on http listeners (on_connect runs before Pocket's TLS handshake); read req.sni in on_request"
    ));
}

pub(super) struct Checker<'a> {
    pub(super) path: &'a Path,
    source: &'a str,
    /// Where each field of the policy's tables is written.
    places: super::locate::Places,
    /// Every pool the policy defines, valid or not: a name that refers to
    /// an invalid pool gets no second error (the pool has its own).
    pub(super) defined_pools: Vec<String>,
    /// `pools` is not written as name = pool: which names it meant to
    /// define is unknown, so no name is said to be undefined.
    pools_unreadable: bool,
    pub(super) errors: Vec<ConfigError>,
    /// The policy defines `on_check` (for `check = { script = true }`).
    pub(super) has_on_check: bool,
    /// Pools whose `mode` was wrong (said once): no listener gets a
    /// second error about its mode not matching theirs.
    pub(super) bad_mode_pools: HashSet<String>,
    /// Addresses whose shared health this load created (no running
    /// policy has seen them yet): a checking pool's `start` applies.
    fresh_health: HashSet<SocketAddr>,
    /// The module files `require` loaded while the policy ran: (the path
    /// chunks name, the real file). The only files besides the policy
    /// that errors are placed by reading.
    modules: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    /// What loads but is likely a slip (`path:line: ...`): shown by
    /// `pocket check` and logged at start and reload.
    pub(super) warnings: Vec<String>,
    /// The policy's `resolvers`, read before the pools: their names are
    /// resolved with them.
    pub(super) resolvers: crate::dns::Resolvers,
    /// `resolvers` has an error: no name is resolved at all (not with the
    /// system's resolvers either: the policy meant others, and a name sent
    /// to the wrong DNS server tells it what the pools are).
    pub(super) resolvers_bad: bool,
    /// Named entries left unresolved because `resolvers` is bad: their pool
    /// says no "has no servers" on top of the resolvers error.
    pub(super) names_skipped: usize,
    /// The answers to every name the pools write, asked at once before
    /// the pools are read (config/dns.rs).
    pub(super) prefetched: HashMap<crate::dns::Query, Result<Vec<crate::dns::Found>, String>>,
}

/// The most of a module file read again to place an error, in bytes.
const MAX_MODULE_TEXT: u64 = 1024 * 1024;

impl Checker<'_> {
    /// An error about the value at `at` (a path from the policy table:
    /// `["pools", "app", "balance"]`, `[2]` for a list's second item),
    /// placed on that value's line, or its table's when it is missing.
    /// A value the policy takes from one of its modules is placed in
    /// that module's file, when its text has it; else at the policy's
    /// line that uses it.
    pub(super) fn error(&mut self, at: &[&str], message: String) {
        if self.places.exact_line(at).is_none() {
            if let Some((path, line)) = self.module_place(at) {
                self.errors.push(ConfigError {
                    path,
                    line: Some(line),
                    message,
                });
                return;
            }
        }
        let line = self.places.line(at);
        self.errors.push(ConfigError {
            path: self.path.to_path_buf(),
            line,
            message,
        });
    }

    /// The module file and line of the value at `at`, when the policy
    /// takes it from a module `require`d from its own folder.
    fn module_place(&self, at: &[&str]) -> Option<(std::path::PathBuf, usize)> {
        let (module, inner) = self.places.from_module(at)?;
        let dir = self.path.parent().unwrap_or(Path::new(""));
        let rel = module.replace('.', "/");
        let file = [format!("{rel}.lua"), format!("{rel}/init.lua")]
            .into_iter()
            .map(|f| clean_path(&dir.join(f)))
            .find(|f| f.is_file())?;
        let text = self.text_of(&file)?;
        let inner: Vec<&str> = inner.iter().map(String::as_str).collect();
        let line = super::locate::Places::of(&text).line(&inner)?;
        Some((file, line))
    }

    /// The text of `file` when it is the policy or a module `require`
    /// loaded from the policy's folder (read again from the file it was
    /// loaded from, if it is still a regular file of at most
    /// [`MAX_MODULE_TEXT`] bytes); else none. `file` comes from a chunk
    /// name or an error message, which the script chooses: any other
    /// path (a device, a FIFO, a file outside the folder) is never opened.
    fn text_of(&self, file: &Path) -> Option<String> {
        use std::io::Read;
        let file = clean_path(file);
        if file == clean_path(self.path) {
            return Some(self.source.to_string());
        }
        // Pocket's own modules are named `stdlib/pocket/cdn.lua`.
        if let Some(text) = file
            .to_str()
            .and_then(|f| f.strip_prefix("stdlib/"))
            .and_then(|f| f.strip_suffix(".lua"))
            .and_then(|m| crate::script::stdlib::embedded(&m.replace('/', ".")))
        {
            return Some(text.to_string());
        }
        let (_, real) = self
            .modules
            .iter()
            .find(|(shown, _)| clean_path(shown) == file)?;
        if !real.is_file() {
            return None;
        }
        let mut text = String::new();
        std::fs::File::open(real)
            .ok()?
            .take(MAX_MODULE_TEXT + 1)
            .read_to_string(&mut text)
            .ok()?;
        (text.len() as u64 <= MAX_MODULE_TEXT).then_some(text)
    }

    /// The line the value at `at` is written on (its table's when absent).
    pub(super) fn places_line(&self, at: &[&str]) -> Option<usize> {
        self.places.line(at)
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

    /// The script could not run: its error as the user can act on it.
    /// An error in a module `require`d by the policy is said at the
    /// module's own `path:line` (written as the user can open it, no
    /// `./`), not prefixed by the policy's path; an error raised with a
    /// table says so instead of showing the table's address.
    fn fatal(&mut self, err: &mlua::Error) -> ConfigErrors {
        let mut message = describe_lua_error(err);
        let mut path = self.path.to_path_buf();
        let mut line = None;
        if let Some((file, n, rest)) = located(&message) {
            let file = clean_path(Path::new(file));
            let mut n = n;
            // A table checked by a library (`pocket.match` rules) is
            // refused at the call's line; an unknown key moves to its own.
            if let Some(key) = rest
                .split_once("unknown key \"")
                .and_then(|(_, k)| k.split_once('"'))
                .map(|(k, _)| k)
            {
                if let Some(at) = self
                    .text_of(&file)
                    .as_deref()
                    .and_then(|t| key_written_at(t, n, key))
                {
                    n = at;
                }
            }
            if file != clean_path(self.path) {
                path = file;
            }
            line = Some(n);
            message = rest.to_string();
        } else if matches!(err, mlua::Error::RuntimeError(_)) {
            if is_table_address(&message) {
                message = "error raised with a table value (no message)".into();
            }
            // An error raised with a table carries no place: find the
            // line of the `error` call.
            line = self.raise_line();
        }
        self.errors.push(ConfigError {
            path,
            line,
            message,
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
                        shown(&value)
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
        let found = t
            .get::<Value>("head_size")
            .map(|v| shown(&v))
            .unwrap_or_default();
        self.error(
            &at_key,
            format!("{prefix}head_size must be a whole number of bytes from {lo} to {hi} (the default is {DEFAULT_HEAD_SIZE}), not {found}"),
        );
        DEFAULT_HEAD_SIZE
    }

    /// Flags keys of `table` that are not in `known` (a typo like
    /// `on_reqest` must not be silently ignored), and values written
    /// with no key at all. Returns the known keys that were misspelt
    /// (`bnd` for a missing `bind`): the caller says nothing more about
    /// them being missing.
    pub(super) fn unknown_keys(
        &mut self,
        table: &Table,
        known: &[&str],
        what: &str,
        at: &[&str],
    ) -> Vec<String> {
        self.unknown_keys_in(table, known, known, what, at, |_| None)
    }

    /// As [`Checker::unknown_keys`], for a table whose valid keys depend
    /// on the mode: `accepted` keys are not flagged here (another check
    /// refuses those of the other mode), `shown` are the ones listed and
    /// suggested (this mode's), and `advice` may say where a key the user
    /// looked for here lives instead (`idle` on a tcp listener).
    pub(super) fn unknown_keys_in(
        &mut self,
        table: &Table,
        accepted: &[&str],
        shown_keys: &[&str],
        what: &str,
        at: &[&str],
        advice: impl Fn(&str) -> Option<String>,
    ) -> Vec<String> {
        let known = shown_keys;
        let mut misspelt = Vec::new();
        let mut keyless = false;
        let mut pairs: Vec<(Value, Value)> = table.pairs::<Value, Value>().flatten().collect();
        // Hash order is not the user's: list items first, by position.
        pairs.sort_by_key(|(k, _)| match k {
            Value::Integer(n) => (0, *n, String::new()),
            Value::String(s) => (1, 0, s.to_string_lossy()),
            _ => (2, 0, String::new()),
        });
        for (key, value) in pairs {
            match &key {
                Value::String(s) => {
                    let k = s.to_string_lossy();
                    if accepted.contains(&k.as_str()) {
                        continue;
                    }
                    let at_key = [at, &[k.as_str()]].concat();
                    if let Some(advice) = advice(&k) {
                        self.error(&at_key, format!("{what}: unknown key \"{k}\": {advice}"));
                        continue;
                    }
                    let near = known.iter().find(|w| {
                        near_miss(&k, w) && matches!(table.get::<Value>(**w), Ok(Value::Nil))
                    });
                    match near {
                        Some(w) => {
                            misspelt.push(w.to_string());
                            self.error(
                                &at_key,
                                format!("{what}: unknown key \"{k}\" (did you mean \"{w}\"?)"),
                            );
                        }
                        None => self.error(
                            &at_key,
                            format!("{what}: unknown key \"{k}\" (known: {})", known.join(", ")),
                        ),
                    }
                }
                Value::Integer(n) if !keyless => {
                    keyless = true;
                    self.error(
                        &[at, &[format!("[{n}]").as_str()]].concat(),
                        format!(
                            "{what}: {} has no key: every entry is key = value (known: {})",
                            shown(&value),
                            known.join(", ")
                        ),
                    );
                }
                Value::Integer(_) => {}
                other => self.error(
                    at,
                    format!(
                        "{what}: unknown key {} (known: {})",
                        shown(other),
                        known.join(", ")
                    ),
                ),
            }
        }
        misspelt
    }

    fn policy(&mut self, root: &Table, registry: &StateRegistry) -> Option<Policy> {
        let _ = self.unknown_keys(root, TOP_LEVEL_KEYS, "policy", &[]);
        match root.get::<Value>("on_check") {
            Ok(Value::Nil) => {}
            Ok(Value::Function(_)) => self.has_on_check = true,
            // Reported here; `script = true` gets no second error.
            Ok(other) => {
                self.has_on_check = true;
                self.error(
                    &["on_check"],
                    format!(
                        "on_check must be a function(server, http), not {}",
                        shown(&other)
                    ),
                );
            }
            Err(e) => {
                self.has_on_check = true;
                self.error(&["on_check"], describe_lua_error(&e));
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
                    format!("{name} must be a function, not {}", shown(&other)),
                ),
                Err(e) => self.error(&[name], describe_lua_error(&e)),
            }
        }

        self.resolvers = self.resolvers_setting(root);
        self.prefetch_names(root);
        let (pools, pool_index) = self.pools(root, registry);
        self.check_fallbacks(&pools, &pool_index);
        let modes: Vec<Mode> = pools.iter().map(|p| p.mode).collect();
        // Named at all: an on_connect that is not a function has its own
        // error above, and no second one about listeners without a pool.
        let names_on_connect = !matches!(root.get::<Value>("on_connect"), Ok(Value::Nil));
        let listeners = self.listeners(root, &pool_index, &modes, names_on_connect);
        let admin = self.admin(root, &listeners);
        let log = self.access_log(root);
        let stores = self.stores(root);
        Some(Policy {
            path: self.path.to_path_buf(),
            source: Arc::from(self.source),
            listeners,
            pools,
            pool_index,
            hooks,
            admin,
            log,
            reads_client_hello: false,
            warnings: std::mem::take(&mut self.warnings),
            stores,
            resolvers: self.resolvers.clone(),
        })
    }

    /// Every pool named by a table compiled at load (`pocket.uses_pool`:
    /// `pocket.match` routes, `pocket.canary` splits) is defined; one
    /// error per unknown name, at the line that writes it.
    fn pool_refs(&mut self, refs: Vec<PoolRef>, mut known: Vec<String>) {
        known.sort_unstable();
        let mut reported: Vec<&str> = Vec::new();
        for r in &refs {
            if known.contains(&r.name)
                || self.defined_pools.contains(&r.name)
                || self.pools_unreadable
                || reported.contains(&r.name.as_str())
            {
                continue;
            }
            reported.push(&r.name);
            let path = Path::new(&r.path);
            // The call's line is where the table starts; the name itself
            // is usually a few lines below, on its own entry.
            // Without a line (a tail call hid the caller), the first line
            // of the file that writes the name. A chunk that is neither
            // the policy nor one of its modules (`load(code, name)`) is
            // named as the script named it, with no line.
            let line = self
                .text_of(path)
                .and_then(|t| written_at(&t, r.line.unwrap_or(1), &r.name).or(r.line));
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

    /// Every fallback names a pool of its own pool's mode (a fallback
    /// carries the same traffic), and no chain of fallbacks loops.
    fn check_fallbacks(&mut self, pools: &[Arc<Pool>], index: &HashMap<String, usize>) {
        for pool in pools {
            if let Some(&i) = pool.fallback.as_deref().and_then(|f| index.get(f)) {
                pool.resolve_fallback(i);
                if pools[i].mode != pool.mode {
                    let (name, theirs) = (&pool.name, &pools[i].name);
                    let article = |m: Mode| if m == Mode::Http { "an" } else { "a" };
                    self.error(
                        &["pools", name, "fallback"],
                        format!(
                            "pool \"{name}\" is {} {} pool and its fallback \"{theirs}\" is {} {} pool: a fallback takes the same traffic, so it must be {} {} pool too",
                            article(pool.mode),
                            pool.mode.name(),
                            article(pools[i].mode),
                            pools[i].mode.name(),
                            article(pool.mode),
                            pool.mode.name(),
                        ),
                    );
                }
            }
            let mut seen = vec![pool.name.clone()];
            let mut next = pool.fallback.clone();
            while let Some(name) = next {
                let Some(&i) = index.get(&*name) else {
                    if self.pools_unreadable || self.defined_pools.iter().any(|p| **p == *name) {
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
                    // One loop, one error: said at the pool of the loop
                    // that comes first by name, naming the whole loop.
                    if *name == *pool.name {
                        let mut members: Vec<&str> = seen.iter().map(|s| &**s).collect();
                        let first = members.iter().min().copied().unwrap_or_default();
                        if first == &*pool.name {
                            members.push(&pool.name);
                            self.error(
                                &["pools", &pool.name, "fallback"],
                                format!(
                                    "pool \"{}\": fallbacks loop: {}",
                                    pool.name,
                                    members.join(" → ")
                                ),
                            );
                        }
                    }
                    break;
                }
                seen.push(name);
                next = pools[i].fallback.clone();
            }
        }
    }

    /// The listeners; `modes[i]`: the mode of pool `i` (a listener's
    /// `pool` must be of its own mode).
    fn listeners(
        &mut self,
        root: &Table,
        pools: &HashMap<String, usize>,
        modes: &[Mode],
        names_on_connect: bool,
    ) -> Vec<ListenerSpec> {
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
                        "listeners must be a list of listener tables, like listeners = {{ {{ bind = \"127.0.0.1:8080\", pool = \"app\" }} }}, not {}",
                        shown(&other)
                    ),
                );
                return Vec::new();
            }
            Err(e) => {
                self.error(&["listeners"], describe_lua_error(&e));
                return Vec::new();
            }
        };
        // One listener written without the outer list: `listeners = {
        // bind = ..., pool = ... }`.
        let keyed = list
            .pairs::<Value, Value>()
            .flatten()
            .any(|(k, _)| matches!(k, Value::String(_)));
        if keyed {
            self.error(
                &["listeners"],
                "listeners is a list of listener tables: write listeners = { { bind = ..., pool = ... } }".into(),
            );
            return Vec::new();
        }
        let mut out: Vec<ListenerSpec> = Vec::new();
        for (i, entry) in list.sequence_values::<Value>().enumerate() {
            let n = i + 1;
            let ns = format!("[{n}]");
            let t = match entry {
                Ok(Value::Table(t)) => t,
                Ok(other) => {
                    self.error(
                        &["listeners", &ns],
                        format!("listeners[{n}] must be a table like {{ bind = \"127.0.0.1:8080\" }}, not {}", shown(&other)),
                    );
                    continue;
                }
                Err(e) => {
                    self.error(&["listeners", &ns], describe_lua_error(&e));
                    continue;
                }
            };
            // A listener is named one way in every message: by its name
            // when it has one, else by its place in the list.
            let (name, label) = match t.get::<Value>("name") {
                Ok(Value::String(s)) => {
                    let name = s.to_string_lossy();
                    let label = format!("listener \"{name}\"");
                    (name, label)
                }
                Ok(Value::Nil) => (format!("listener{n}"), format!("listeners[{n}]")),
                Ok(other) => {
                    self.error(
                        &["listeners", &ns, "name"],
                        format!(
                            "listeners[{n}]: name must be a string, not {}",
                            shown(&other)
                        ),
                    );
                    (format!("listener{n}"), format!("listeners[{n}]"))
                }
                Err(e) => {
                    self.error(&["listeners", &ns, "name"], describe_lua_error(&e));
                    (format!("listener{n}"), format!("listeners[{n}]"))
                }
            };
            let misspelt = self.unknown_keys(&t, LISTENER_KEYS, &label, &["listeners", &ns]);
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
                            self.error(&["listeners", &ns, "bind"], format!("{label}: {msg}"));
                            None
                        }
                    }
                }
                Ok(Value::Nil) if misspelt.iter().any(|k| k == "bind") => None,
                Ok(Value::Nil) => {
                    self.error(
                        &["listeners", &ns],
                        format!("{label} has no bind address (bind = \"127.0.0.1:8080\")"),
                    );
                    None
                }
                Ok(other) => {
                    self.error(
                        &["listeners", &ns, "bind"],
                        format!(
                            "{label}: bind must be a string like \"127.0.0.1:8080\", not {}",
                            shown(&other)
                        ),
                    );
                    None
                }
                Err(e) => {
                    self.error(&["listeners", &ns, "bind"], describe_lua_error(&e));
                    None
                }
            };
            // None: a bad mode, said once; the checks that depend on the
            // mode are skipped rather than guessed at (no second error
            // caused by the first).
            let read_mode = match t.get::<Value>("mode") {
                Ok(v) => match super::mode_value::read_mode(&v) {
                    Ok(m) => Some(m),
                    Err(why) => {
                        self.error(&["listeners", &ns, "mode"], format!("{label}: {why}"));
                        None
                    }
                },
                Err(e) => {
                    self.error(&["listeners", &ns, "mode"], describe_lua_error(&e));
                    None
                }
            };
            let mode = read_mode.unwrap_or_default();
            let tls_refused = match read_mode {
                Some(Mode::Tcp) => self.http_only_on_tcp_listener(&t, &label, &ns),
                Some(Mode::Http) => {
                    self.tcp_only_on_http_listener(&t, &label, &ns);
                    false
                }
                None => false,
            };
            let default_pool = match t.get::<Value>("pool") {
                Ok(Value::Nil) => {
                    // A tcp listener has no other way to choose a pool
                    // (an http one has on_request).
                    if read_mode == Some(Mode::Tcp) && !names_on_connect {
                        self.error(
                            &["listeners", &ns],
                            format!("{label} is a tcp listener with no pool, and the policy has no on_connect to choose one: every connection would be closed; add pool = \"NAME\" (a pool with mode = \"tcp\")"),
                        );
                    }
                    None
                }
                Ok(Value::String(s)) => {
                    let pool = s.to_string_lossy();
                    match pools.get(&pool) {
                        Some(&idx)
                            if read_mode.is_some()
                                && !self.bad_mode_pools.contains(pool.as_str())
                                && modes.get(idx).is_some_and(|m| *m != mode) =>
                        {
                            let theirs = modes.get(idx).copied().unwrap_or_default();
                            self.error(
                                &["listeners", &ns, "pool"],
                                match mode {
                                    Mode::Tcp => format!("{label} is a tcp listener and its pool \"{pool}\" is an {} pool: name a pool with mode = \"tcp\", or add mode = \"tcp\" to pool \"{pool}\"", theirs.name()),
                                    Mode::Http => format!("{label} is an http listener and its pool \"{pool}\" is a {} pool: name an http pool, or add mode = \"tcp\" to the listener", theirs.name()),
                                },
                            );
                            None
                        }
                        Some(&idx) => Some(idx),
                        None if self.defined_pools.contains(&pool) || self.pools_unreadable => None,
                        None => {
                            self.error(
                                &["listeners", &ns, "pool"],
                                format!("{label}: default pool \"{pool}\" is not defined in pools"),
                            );
                            None
                        }
                    }
                }
                Ok(other) => {
                    self.error(
                        &["listeners", &ns, "pool"],
                        format!("{label}: pool must be a pool name, not {}", shown(&other)),
                    );
                    None
                }
                Err(e) => {
                    self.error(&["listeners", &ns, "pool"], describe_lua_error(&e));
                    None
                }
            };
            let mut timeouts = ClientTimeouts::default();
            let here = label.clone();
            let top = format!("{here}: ");
            if mode == Mode::Http {
                self.positive_duration(
                    &t,
                    "keepalive",
                    &top,
                    &["listeners", &ns],
                    &mut timeouts.keepalive,
                );
            }
            match t.get::<Value>("timeouts") {
                Ok(Value::Nil) => {}
                Ok(Value::Table(tt)) => {
                    let at = &["listeners", &ns, "timeouts"];
                    let shown_keys: &[&str] = match read_mode {
                        Some(Mode::Tcp) => &["client_hello"],
                        Some(Mode::Http) => &["head", "body", "send"],
                        None => LISTENER_TIMEOUT_KEYS,
                    };
                    let _ = self.unknown_keys_in(
                        &tt,
                        LISTENER_TIMEOUT_KEYS,
                        shown_keys,
                        &format!("{here} timeouts"),
                        at,
                        |k| super::tcp_rules::listener_timeout_advice(k, read_mode),
                    );
                    let here = format!("{here}: timeouts.");
                    self.positive_duration(&tt, "head", &here, at, &mut timeouts.head);
                    self.positive_duration(&tt, "body", &here, at, &mut timeouts.body);
                    self.positive_duration(&tt, "send", &here, at, &mut timeouts.send);
                    self.positive_duration(
                        &tt,
                        "client_hello",
                        &here,
                        at,
                        &mut timeouts.client_hello,
                    );
                }
                Ok(other) => self.error(
                    &["listeners", &ns, "timeouts"],
                    format!(
                        "{here}: timeouts must be a table like {{ head = \"10s\" }}, not {}",
                        shown(&other)
                    ),
                ),
                Err(e) => self.error(&["listeners", &ns, "timeouts"], describe_lua_error(&e)),
            }
            let max_connections = self.max_connections(&t, &top, &["listeners", &ns]);
            // Said refused above on a tcp listener: not judged again.
            let head_size = match mode {
                Mode::Tcp => DEFAULT_HEAD_SIZE,
                Mode::Http => self.head_size(&t, &top, &["listeners", &ns]),
            };
            let accept_proxy = self.accept_proxy(&t, &label, &ns);
            let tls = if tls_refused {
                None
            } else {
                self.listener_tls(&t, &label, &["listeners", &ns])
            };
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
                    accept_proxy,
                    tls,
                    mode,
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
                self.pools_unreadable = true;
                self.error(&["pools"], format!("{POOLS_SHAPE}, not {}", shown(&other)));
                return (pools, index);
            }
            Err(e) => {
                self.error(&["pools"], describe_lua_error(&e));
                return (pools, index);
            }
        };
        // Sorted, so pool indices (and messages) do not depend on hash order.
        let mut entries: Vec<(String, Value)> = Vec::new();
        let mut unnamed: Vec<(Value, Value)> = Vec::new();
        for pair in table.pairs::<Value, Value>() {
            match pair {
                Ok((Value::String(k), v)) => entries.push((k.to_string_lossy(), v)),
                Ok(pair) => unnamed.push(pair),
                Err(e) => self.error(&["pools"], describe_lua_error(&e)),
            }
        }
        // A pool with no name (`pools = { "127.0.0.1:9001" }`, `[1] =
        // { ... }`): one error, at the first such entry.
        unnamed.sort_by_key(|(k, _)| match k {
            Value::Integer(n) => *n,
            _ => i64::MAX,
        });
        if let Some((k, v)) = unnamed.first() {
            self.pools_unreadable = true;
            let at = match k {
                Value::Integer(n) => format!("[{n}]"),
                _ => String::new(),
            };
            self.error(
                &["pools", &at],
                format!(
                    "pools[{}] is {} with no name: {POOLS_SHAPE}",
                    match k {
                        Value::Integer(n) => n.to_string(),
                        other => shown(other),
                    },
                    shown(v)
                ),
            );
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
        self.one_transport_per_shared_health(&pools);
        (pools, index)
    }

    /// An address in several pools has one health (unless a pool keeps
    /// its own), so one check: the first pool by name that checks it owns
    /// the check, and another pool that checks it differently is an error
    /// (which check would decide?). A new shared health starts down if its
    /// check says `start = "down"`. See docs/health.md.
    fn one_health_per_address(&mut self, pools: &[Arc<Pool>]) {
        let mut owner: HashMap<SocketAddr, (&str, &CheckSpec, bool)> = HashMap::new();
        for pool in pools.iter().filter(|p| !p.own_health) {
            let Some(check) = &pool.check else { continue };
            for server in &pool.servers {
                if !check.start_up && self.fresh_health.contains(&server.addr) {
                    server.state.health.start_down();
                }
                let Some((first, theirs, first_named)) = owner.get(&server.addr) else {
                    owner.insert(server.addr, (&pool.name, check, server.from.is_some()));
                    continue;
                };
                let same = !check.pool_function
                    && !theirs.pool_function
                    && check.fingerprint() == theirs.fingerprint();
                // An address a DNS name gave is what DNS says today: it
                // does not refuse the policy (a refresh would not either);
                // the first pool's check decides, and a warning says so.
                if !same && (*first_named || server.from.is_some()) {
                    let name = &pool.name;
                    let place = match self.places_line(&["pools", name, "check"]) {
                        Some(n) => format!("{}:{n}", self.path.display()),
                        None => self.path.display().to_string(),
                    };
                    self.warnings.push(format!(
                        "{place}: pool \"{name}\": server {} is also in pool \"{first}\" (a DNS name gives it to one of them), which checks it differently; an address has one health, so pool \"{first}\"'s check decides for both: say own_health = true in the pool that wants its own verdict",
                        server.addr
                    ));
                } else if !same {
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

    /// Two pools that share an address's health must reach it the same
    /// way (`tls` with its `ca`, `sni` and `verify`, `protocol`,
    /// `send_proxy`): a failure that comes from one pool's settings (a
    /// certificate its `ca` does not trust, an `h2` the server does not
    /// speak) would otherwise mark the server down for the pool that
    /// reaches it correctly. The same rule as one check per address: one
    /// of them says `own_health = true`. See docs/health.md, docs/tls.md.
    fn one_transport_per_shared_health(&mut self, pools: &[Arc<Pool>]) {
        let mut owner: HashMap<SocketAddr, (&str, String, bool)> = HashMap::new();
        for pool in pools.iter().filter(|p| !p.own_health) {
            for server in &pool.servers {
                let how = transport_text(pool, server);
                let Some((first, theirs, first_named)) = owner.get(&server.addr) else {
                    owner.insert(server.addr, (&pool.name, how, server.from.is_some()));
                    continue;
                };
                // As with checks: what DNS says today does not refuse the
                // policy; a warning says what to do.
                if *theirs != how && (*first_named || server.from.is_some()) {
                    let name = &pool.name;
                    let place = match self.places_line(&["pools", name]) {
                        Some(n) => format!("{}:{n}", self.path.display()),
                        None => self.path.display().to_string(),
                    };
                    self.warnings.push(format!(
                        "{place}: pool \"{name}\": server {} is also in pool \"{first}\" (a DNS name gives it to one of them), which reaches it differently ({theirs}; here {how}); an address has one health, so a failure caused by one pool's settings marks it down for both: say own_health = true in one of them",
                        server.addr
                    ));
                } else if *theirs != how {
                    let name = &pool.name;
                    let at: &[&str] = if pool.tls.is_some() {
                        &["pools", name, "tls"]
                    } else if pool.send_proxy.is_some() {
                        &["pools", name, "send_proxy"]
                    } else {
                        &["pools", name, "protocol"]
                    };
                    self.error(
                        at,
                        format!(
                            "pool \"{name}\": server {} is also in pool \"{first}\", which reaches it differently ({theirs}; here {how}); an address has one health, so a failure caused by one pool's settings would mark it down for both: reach it the same way in both pools, or say own_health = true in one of them",
                            server.addr
                        ),
                    );
                }
            }
        }
    }

    fn pool(&mut self, name: &str, value: Value, registry: &StateRegistry) -> Option<Pool> {
        let here = ["pools", name];
        let t = match value {
            Value::Table(t) => t,
            Value::String(s) => {
                self.error(
                    &here,
                    format!(
                        "pool \"{name}\" must be a table with servers, like {name} = {{ servers = {{ \"{}\" }} }}, not {}",
                        s.to_string_lossy(),
                        shown(&Value::String(s.clone()))
                    ),
                );
                return None;
            }
            other => {
                self.error(
                    &here,
                    format!(
                        "pool \"{name}\" must be a table with servers, not {}",
                        shown(&other)
                    ),
                );
                return None;
            }
        };
        let errors_before = self.errors.len();
        let skipped_before = self.names_skipped;
        let misspelt = self.unknown_keys(&t, POOL_KEYS, &format!("pool \"{name}\""), &here);

        let mut settings = self.pool_settings(name, &t);
        let start_up = settings.check.as_ref().is_none_or(|c| c.start_up);
        settings.resolve = self.resolve_setting(name, &t);

        let mut servers: Vec<Server> = Vec::new();
        let mut named: Vec<crate::dns::Named> = Vec::new();
        match t.get::<Value>("servers") {
            // One server written without the list: `servers = { addr =
            // ... }`.
            Ok(Value::Table(list)) if matches!(list.get::<Value>("addr"), Ok(Value::String(_))) => {
                self.error(
                    &["pools", name, "servers"],
                    format!("pool \"{name}\": servers is a list of servers: write servers = {{ {{ addr = ... }} }}"),
                );
            }
            Ok(Value::Table(list)) => {
                // Servers written as addresses first, then those names
                // give (an address a name gives that is already there is
                // left out): the order a refresh builds too (crate::dns).
                let mut from_names: Vec<Server> = Vec::new();
                for (i, entry) in list.sequence_values::<Value>().enumerate() {
                    let Ok(entry) = entry else { continue };
                    let health = (settings.own_health, start_up);
                    let at = ["pools", name, "servers", &format!("[{}]", i + 1)];
                    match self.server(name, i + 1, entry, registry, health) {
                        Some(Entry::Address(server)) => {
                            if servers.iter().any(|s| s.addr == server.addr) {
                                self.error(
                                    &at,
                                    format!(
                                        "pool \"{name}\": server {} is listed twice",
                                        server.addr
                                    ),
                                );
                            }
                            servers.push(server);
                        }
                        Some(Entry::Named(n, got)) => {
                            if named.iter().any(|m: &crate::dns::Named| m.query == n.query) {
                                self.error(
                                    &at,
                                    format!("pool \"{name}\": \"{}\" is listed twice", n.text),
                                );
                            }
                            named.push(n);
                            from_names.extend(got);
                        }
                        None => {}
                    }
                }
                for server in from_names {
                    if !servers.iter().any(|s| s.addr == server.addr) {
                        servers.push(server);
                    }
                }
                if servers.is_empty()
                    && self.errors.len() == errors_before
                    && self.names_skipped == skipped_before
                {
                    self.error(
                        &["pools", name, "servers"],
                        format!("pool \"{name}\" has no servers"),
                    );
                }
            }
            Ok(Value::Nil) if misspelt.iter().any(|k| k == "servers") => {}
            Ok(Value::Nil) => self.error(
                &here,
                format!("pool \"{name}\" has no servers (servers = {{ \"127.0.0.1:9001\" }})"),
            ),
            Ok(Value::String(s)) => self.error(
                &["pools", name, "servers"],
                format!(
                    "pool \"{name}\": servers is a list: write servers = {{ \"{}\" }}",
                    s.to_string_lossy()
                ),
            ),
            Ok(other) => self.error(
                &["pools", name, "servers"],
                format!(
                    "pool \"{name}\": servers must be a list like {{ \"127.0.0.1:9001\" }}, not {}",
                    shown(&other)
                ),
            ),
            Err(e) => self.error(&["pools", name, "servers"], describe_lua_error(&e)),
        }
        if servers.iter().all(|s| s.backup) && !servers.is_empty() {
            self.error(
                &here,
                format!(
                    "pool \"{name}\": every server is a backup; at least one must be a primary"
                ),
            );
        }

        if settings.resolve.is_some()
            && named.is_empty()
            && self.errors.len() == errors_before
            && self.names_skipped == skipped_before
        {
            let place = match self.places_line(&["pools", name, "resolve"]) {
                Some(n) => format!("{}:{n}", self.path.display()),
                None => self.path.display().to_string(),
            };
            self.warnings.push(format!(
                "{place}: pool \"{name}\": resolve does nothing here: every server is written as an address (write a name, like \"app.internal:8080\", or {{ srv = \"_http._tcp.app.internal\" }})"
            ));
        }
        settings.named = named;

        if self.errors.len() > errors_before || self.names_skipped > skipped_before {
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
    ) -> Option<Entry> {
        let ns = format!("[{n}]");
        let (addr_text, weight, backup) = match entry {
            Value::String(s) => (s.to_string_lossy(), 1, false),
            Value::Table(t) => {
                let misspelt = self.unknown_keys(
                    &t,
                    SERVER_KEYS,
                    &format!("pool \"{pool}\" server {n}"),
                    &["pools", pool, "servers", &ns],
                );
                if !matches!(t.get::<Value>("srv"), Ok(Value::Nil)) {
                    return self.srv_entry(pool, n, &t, registry, (own_health, start_up));
                }
                let addr = match t.get::<Value>("addr") {
                    Ok(Value::String(s)) => s.to_string_lossy(),
                    // Misspelt, or written with no key (`{ "127.0.0.1:9001",
                    // weight = 2 }`): already said.
                    Ok(Value::Nil)
                        if misspelt.iter().any(|k| k == "addr")
                            || !matches!(t.get::<Value>(1), Ok(Value::Nil)) =>
                    {
                        return None
                    }
                    Ok(Value::Nil) => {
                        self.error(&["pools", pool, "servers", &ns, "addr"], format!("pool \"{pool}\" server {n}: addr is missing (addr = \"127.0.0.1:9001\")"));
                        return None;
                    }
                    Ok(other) => {
                        self.error(&["pools", pool, "servers", &ns, "addr"], format!("pool \"{pool}\" server {n}: addr must be a string like \"127.0.0.1:9001\", not {}", shown(&other)));
                        return None;
                    }
                    Err(e) => {
                        self.error(
                            &["pools", pool, "servers", &ns, "addr"],
                            describe_lua_error(&e),
                        );
                        return None;
                    }
                };
                let weight = match t.get::<Value>("weight") {
                    Ok(Value::Nil) => 1,
                    Ok(Value::Integer(w)) if (1..=MAX_WEIGHT).contains(&w) => w as u32,
                    Ok(other) => {
                        let shown = shown(&other);
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
                let backup = self
                    .flag(
                        &t,
                        &["pools", pool, "servers", &ns, "backup"],
                        &format!("pool \"{pool}\" server {addr}"),
                    )
                    .unwrap_or(false);
                (addr, weight, backup)
            }
            other => {
                self.error(
                    &["pools", pool, "servers", &ns],
                    format!(
                        "pool \"{pool}\" server {n} must be \"ip:port\" or a table, not {}",
                        shown(&other)
                    ),
                );
                return None;
            }
        };
        if let Some(query) = super::dns::host_query(&addr_text) {
            let named = super::dns::named(query, &addr_text, weight, backup);
            let at = ["pools", pool, "servers", &ns, "addr"];
            let found = self.resolve_named(pool, &named, &at)?;
            let servers =
                self.servers_named(pool, &named, &found, registry, (own_health, start_up));
            return Some(Entry::Named(named, servers));
        }
        match parse_addr(&addr_text) {
            Ok(addr) => {
                let (state, new) = registry.get_or_create(pool, addr, own_health, start_up);
                if new && !own_health {
                    self.fresh_health.insert(addr);
                }
                // A weight set through the admin API outlives reloads.
                let weight = state.weight_or(weight);
                Some(Entry::Address(Server {
                    addr,
                    addr_text: Arc::from(addr.to_string()),
                    weight,
                    backup,
                    state,
                    name: host_name(&addr_text),
                    from: None,
                    transport: 0,
                }))
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

    /// `{ srv = "_http._tcp.app.test", backup = true }`: the servers its
    /// SRV records give (ports and weights from the records).
    fn srv_entry(
        &mut self,
        pool: &str,
        n: usize,
        t: &Table,
        registry: &StateRegistry,
        health: (bool, bool),
    ) -> Option<Entry> {
        let ns = format!("[{n}]");
        let at = ["pools", pool, "servers", &ns, "srv"];
        let name = match t.get::<Value>("srv") {
            Ok(Value::String(s)) if super::dns::srv_name_ok(&s.to_string_lossy()) => {
                s.to_string_lossy()
            }
            Ok(other) => {
                self.error(
                    &at,
                    format!("pool \"{pool}\" server {n}: srv must be an SRV name like \"_http._tcp.app.internal\", not {}", shown(&other)),
                );
                return None;
            }
            Err(e) => {
                self.error(&at, describe_lua_error(&e));
                return None;
            }
        };
        let what = format!("pool \"{pool}\" server {name}");
        let mut ok = true;
        if !matches!(t.get::<Value>("addr"), Ok(Value::Nil)) {
            self.error(
                &["pools", pool, "servers", &ns, "addr"],
                format!("{what}: write addr or srv, not both (the SRV records give the addresses and ports)"),
            );
            ok = false;
        }
        if !matches!(t.get::<Value>("weight"), Ok(Value::Nil)) {
            self.error(
                &["pools", pool, "servers", &ns, "weight"],
                format!("{what}: the SRV records give the weights: leave weight out"),
            );
            ok = false;
        }
        let backup = self
            .flag(t, &["pools", pool, "servers", &ns, "backup"], &what)
            .unwrap_or(false);
        if !ok {
            return None;
        }
        let named = super::dns::named(crate::dns::Query::Srv(name.clone()), &name, 1, backup);
        let found = self.resolve_named(pool, &named, &at)?;
        let servers = self.servers_named(pool, &named, &found, registry, health);
        Some(Entry::Named(named, servers))
    }

    /// The servers a named entry gives, as DNS answered.
    fn servers_named(
        &mut self,
        pool: &str,
        named: &crate::dns::Named,
        found: &[crate::dns::Found],
        registry: &StateRegistry,
        (own_health, start_up): (bool, bool),
    ) -> Vec<Server> {
        named
            .targets(found, MAX_WEIGHT as u32)
            .iter()
            .map(|t| {
                let (server, fresh) =
                    crate::dns::server_for(pool, t, &named.text, registry, (own_health, start_up));
                if fresh && !own_health {
                    self.fresh_health.insert(t.addr);
                }
                server
            })
            .collect()
    }
}

/// A server entry of a pool, read.
enum Entry {
    /// Written as an address: one server.
    Address(Server),
    /// Written with a name: the servers it resolved to now.
    Named(crate::dns::Named, Vec<Server>),
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

/// The host name of a server address written with one (`app.internal:443`),
/// for TLS's SNI; None for an IP address.
fn host_name(text: &str) -> Option<Arc<str>> {
    if text.parse::<SocketAddr>().is_ok() {
        return None;
    }
    let (host, _) = text.rsplit_once(':')?;
    (!host.is_empty() && host != "*").then(|| Arc::from(host))
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

/// `typed` is a slip for `known`: a letter or two left out, added,
/// changed or swapped (`bnd`, `adr`, `balnce`), or another case.
pub fn near_miss(typed: &str, known: &str) -> bool {
    let a: Vec<char> = typed.to_lowercase().chars().collect();
    let b: Vec<char> = known.chars().collect();
    // Optimal string alignment distance.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    let limit = if b.len() <= 4 { 1 } else { 2 };
    d[a.len()][b.len()] <= limit
}

impl Checker<'_> {
    /// The line of the policy where its main chunk raised an error that
    /// carries no place (`error({})`): found by running the chunk once
    /// more, in a fresh VM, with a message handler that reads the stack.
    /// Only after the first run failed, so never on a good policy.
    fn raise_line(&self) -> Option<usize> {
        let vm = Vm::new(self.path, Limits::default()).ok()?;
        let lua = &vm.lua;
        let chunk = lua
            .load(self.source)
            .set_name(format!("@{}", self.path.display()))
            .into_function()
            .ok()?;
        let source = format!("@{}", self.path.display());
        let found = std::rc::Rc::new(std::cell::Cell::new(None));
        let slot = found.clone();
        let handler = lua
            .create_function(move |lua, e: Value| {
                for level in 1..64 {
                    let here = lua.inspect_stack(level, |d| {
                        let src = d.source().source.map(|s| s.to_string());
                        (src, d.current_line())
                    });
                    let Some((src, line)) = here else { break };
                    if src.as_deref() == Some(source.as_str()) && line.is_some() {
                        slot.set(line);
                        break;
                    }
                }
                Ok(e)
            })
            .ok()?;
        let xpcall: mlua::Function = lua.globals().get("xpcall").ok()?;
        let _ = vm.with_budget(Limits::default().load_budget, || {
            xpcall.call::<mlua::MultiValue>((chunk, handler))
        });
        found.get()
    }
}

/// `file.lua:12: rest` -> (file.lua, 12, rest).
fn located(message: &str) -> Option<(&str, usize, &str)> {
    let at = message.find(".lua:")? + 4;
    let (file, after) = (&message[..at], &message[at + 1..]);
    let (n, rest) = after.split_once(':')?;
    let n = n.parse().ok()?;
    (!file.contains(' ')).then_some((file, n, rest.trim_start()))
}

/// A path without its `.` steps: `./badmod.lua` -> `badmod.lua`.
fn clean_path(p: &Path) -> std::path::PathBuf {
    p.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// What Lua shows for a table raised as an error: `table: 0x55d0...`.
fn is_table_address(message: &str) -> bool {
    message
        .strip_prefix("table: 0x")
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The first line at or after `from` that writes `key =`, outside a
/// comment.
fn key_written_at(text: &str, from: usize, key: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, line)| {
            let code = line.split("--").next().unwrap_or("");
            code.match_indices(key).any(|(i, _)| {
                let before = code[..i].chars().next_back();
                let after = code[i + key.len()..].trim_start();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && after.starts_with('=')
                    && !after.starts_with("==")
            })
        })
        .map(|(i, _)| i + 1)
}

/// How a pool reaches one of its servers, in the policy's words: what
/// decides whether a connection works (the name a TLS pool verifies is the
/// server's own unless the pool sets `sni`).
fn transport_text(pool: &Pool, server: &crate::lb::Server) -> String {
    let mut parts = Vec::new();
    match &pool.tls {
        None => parts.push("plain TCP".to_string()),
        Some(tls) => {
            let name = tls.server_name(server.name.as_deref(), server.addr.ip());
            let name = match &name {
                rustls::pki_types::ServerName::DnsName(d) => d.as_ref().to_string(),
                rustls::pki_types::ServerName::IpAddress(_) => server.addr.ip().to_string(),
                _ => "?".to_string(),
            };
            let trust = match (&tls.ca, tls.verify) {
                (_, false) => "not verified".to_string(),
                (Some(ca), true) => format!("verified with ca {:?}", ca.display().to_string()),
                (None, true) => "verified with the system's CAs".to_string(),
            };
            parts.push(format!("tls for {name:?}, {trust}"));
        }
    }
    parts.push(format!("protocol {}", pool.protocol.name()));
    match pool.send_proxy {
        Some(crate::proxy::proxy_header::SendProxy::V1) => parts.push("send_proxy v1".into()),
        Some(crate::proxy::proxy_header::SendProxy::V2) => parts.push("send_proxy v2".into()),
        None => {}
    }
    parts.join(", ")
}
