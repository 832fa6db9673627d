//! A lab scenario: a Lua file that returns what to start, what load to
//! send, which faults to inject when, and what must hold. Checked whole
//! before anything starts; every mistake is refused with path:line.
//!
//! ```lua
//! return {
//!   name = "a server dies",
//!   duration = "6s",
//!   origins = { "A", "B" },
//!   policy = [[
//!     return {
//!       listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
//!       pools = { app = { servers = { "{{A}}", "{{B}}" },
//!                         check = { http = "GET /health", interval = "250ms", fall = 2 } } },
//!     }
//!   ]],
//!   load = { concurrency = 8, paths = { "/" } },
//!   faults = { { at = "2s", server = "B", fault = "kill" }, { at = "4s", server = "B", fault = "restart" } },
//!   expect = { failed = 0, detected_within = "1s" },
//! }
//! ```
//!
//! A `load` with `streams` or `connections` is a TCP load (see
//! `tcp_load.rs`): the origins are echo servers, the policy's listener is
//! `mode = "tcp"`, and `expect` counts connections and bytes
//! (`failed_connections`, `cut_connections`, `cut_connections_min`, `connections_to_down`,
//! `bytes_after_fault`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mlua::{Table, Value};

use crate::config::{line_of, near_miss, parse_duration, shown, Places};
use crate::script::{describe_lua_error, Limits, Vm};

#[derive(Debug, Clone)]
pub enum FaultKind {
    Kill,
    Restart,
    Refuse,
    Blackhole,
    /// A firewall that drops packets: new connects time out (no SYN-ACK),
    /// open connections go silent as with `Blackhole`.
    Drop,
    Cut(u64),
    ResetAfterHeaders,
    Slow {
        latency: Duration,
        bandwidth: Option<u64>,
    },
    Flap {
        period: Duration,
    },
    Lie(u16),
    Heal,
    /// Balancer: switch to another of the scenario's `policies`.
    Reload(String),
    /// Balancer: stop Pocket and start it again on the same port.
    RestartBalancer,
    /// Balancer: the next hook call hangs its worker for good (Pocket runs
    /// with `--lab-faults`; the lab sends SIGUSR2). What a script or
    /// native call that escaped its time budget would do; the watchdog
    /// must notice and replace the worker.
    HangWorker,
    /// A `same_ip` origin sends a gratuitous ARP for the shared address
    /// (see `same_ip.rs`).
    Announce,
    /// Balancer: forget the segment's ARP entry (`ip neigh flush`).
    FlushArp,
    /// A named balancer (`balancer = "L1"`): its keepalived stops
    /// (SIGTERM: it gives the address up as it goes).
    StopKeepalived,
    /// A named balancer: its keepalived starts again.
    StartKeepalived,
    /// A named balancer: firewall rules in its namespace drop the VRRP
    /// advertisements (IP protocol 112) in and out; `heal` removes them.
    DropVrrp,
}

#[derive(Debug, Clone)]
pub struct Fault {
    /// When: a time, or (with `after_bytes`) Duration::MAX.
    pub at: Duration,
    /// Or when the clients have received this many body bytes.
    pub after_bytes: Option<u64>,
    /// None: the balancer.
    pub server: Option<String>,
    /// One of the scenario's `balancers`, by name (see `balancers.rs`).
    pub balancer: Option<String>,
    pub kind: FaultKind,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct Load {
    pub concurrency: usize,
    /// Requests per second over all clients (None: as fast as they go).
    pub rate: Option<u32>,
    pub paths: Vec<String>,
    pub keepalive: bool,
    pub timeout: Duration,
    pub method: String,
    /// Size of the request body each request uploads.
    pub body_bytes: usize,
    /// Each client opens an upgrade tunnel (the origins' `/echo`) on its
    /// path and sends a message a request, checking its echo.
    pub websocket: bool,
    /// A TCP load (`streams` or `connections` given): the origins are
    /// echo servers and the policy's listener is `mode = "tcp"`.
    pub tcp: Option<TcpLoad>,
    /// (address, name) of each balancer, set by the lab: an answer whose
    /// `x-origin-peer` is one of them is counted as `A via L1`.
    pub via: Vec<(String, String)>,
}

/// A TCP load: long streams and/or short connections to Pocket's
/// listener, each through to an echo origin (see `tcp_load.rs`).
#[derive(Debug, Clone)]
pub struct TcpLoad {
    /// Long streams: each sends `chunk` bytes and reads their echo, again
    /// and again, for the whole run; a stream cut is opened again.
    pub streams: usize,
    /// Clients of short connections: each connects, sends `bytes`, reads
    /// their echo, closes, and again (`load.rate`: connections per second
    /// over all of them).
    pub connections: usize,
    /// Bytes each way per short connection.
    pub bytes: usize,
    /// Bytes per round trip of a long stream.
    pub chunk: usize,
    /// The scenario's listener is known to have `mode = "tcp"` (set by
    /// the lab from the loaded policy): a client timeout then gets no
    /// "is the listener mode = tcp?" hint.
    pub listener_tcp: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub failed: Option<u64>,
    pub ok_min: Option<u64>,
    /// TCP: at most this many connections failed (no echo banner came:
    /// refused, reset or timed out before the server answered).
    pub failed_connections: Option<u64>,
    /// TCP: at most this many connections were cut after the server
    /// answered (reset, closed or silent mid-stream).
    pub cut_connections: Option<u64>,
    /// TCP: at least this many connections were cut (a scenario whose
    /// point is that they are).
    pub cut_connections_min: Option<u64>,
    /// TCP: at most this many connections reached a server while Pocket
    /// had it marked down (usually 0).
    pub connections_to_down: Option<u64>,
    /// TCP: at least this many bytes echoed after the first fault.
    pub bytes_after_fault: Option<u64>,
    pub detected_within: Option<Duration>,
    pub recovered_within: Option<Duration>,
    /// Each of these origins answered at least once (`same_ip.rs`).
    pub answered_by: Vec<String>,
    /// Pocket's access log names exactly this many servers (`same_ip.rs`).
    pub access_log_servers: Option<u64>,
    /// Balancers: the first answer through another balancer came at
    /// most this long after the first fault on a balancer.
    pub failover_within: Option<Duration>,
    /// Balancers: whether two of them held the virtual address at once.
    pub two_masters: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    pub name: String,
    pub duration: Duration,
    pub origins: Vec<String>,
    pub policy: String,
    pub policies: HashMap<String, String>,
    pub load: Load,
    pub faults: Vec<Fault>,
    pub expect: Expect,
    pub workers: usize,
    /// `mode = "real"` asks for the kernel fault layer (see `real.rs`).
    pub real: bool,
    /// `tls = true`: the lab makes a certificate for the run (`site.pem`,
    /// `site.key` next to the policy) and the load speaks TLS to Pocket
    /// (see `tls.rs`).
    pub tls: bool,
    /// Origins that share one address on one segment (`same_ip.rs`).
    pub same_ip: Vec<String>,
    /// `path:line` of `same_ip`, for refusing it outside real mode.
    pub same_ip_at: String,
    /// `balancers = { "L1", "L2" }`: Pockets sharing a virtual address
    /// by VRRP, each in its own namespace (see `balancers.rs`).
    pub balancers: Vec<String>,
    /// `path:line` of `balancers`, for refusing them outside real mode.
    pub balancers_at: String,
    /// `vrrp = { ... }`: how keepalived runs for the balancers.
    pub vrrp: super::balancers::Vrrp,
}

const KEYS: &[&str] = &[
    "name",
    "duration",
    "origins",
    "policy",
    "policies",
    "load",
    "faults",
    "expect",
    "workers",
    "mode",
    "tls",
    "same_ip",
    "balancers",
    "vrrp",
];
const FAULT_KEYS: &[&str] = &[
    "after_bytes",
    "at",
    "server",
    "target",
    "fault",
    "bytes",
    "latency",
    "bandwidth",
    "period",
    "status",
    "policy",
    "balancer",
];
const LOAD_KEYS: &[&str] = &[
    "concurrency",
    "rate",
    "paths",
    "keepalive",
    "timeout",
    "method",
    "body_bytes",
    "websocket",
    "streams",
    "connections",
    "bytes",
    "chunk",
];
/// Keys of an HTTP load, refused in a TCP one.
const HTTP_LOAD_KEYS: &[&str] = &[
    "concurrency",
    "paths",
    "keepalive",
    "method",
    "body_bytes",
    "websocket",
];
const EXPECT_KEYS: &[&str] = &[
    "failed",
    "ok_min",
    "detected_within",
    "recovered_within",
    "failed_connections",
    "cut_connections",
    "cut_connections_min",
    "connections_to_down",
    "bytes_after_fault",
    "answered_by",
    "access_log_servers",
    "failover_within",
    "two_masters",
];
/// Expectations about requests, refused for a TCP load, and the reverse.
const HTTP_EXPECT_KEYS: &[&str] = &["failed", "ok_min"];
const TCP_EXPECT_KEYS: &[&str] = &[
    "failed_connections",
    "cut_connections",
    "cut_connections_min",
    "connections_to_down",
    "bytes_after_fault",
];
/// The longest scenario the lab runs: every load is bounded.
const MAX_DURATION: Duration = Duration::from_secs(600);

pub(super) struct Errors<'a> {
    path: &'a Path,
    source: &'a str,
    places: Places,
    /// (line, message), sorted by line at the end.
    list: Vec<(Option<usize>, String)>,
}

impl Errors<'_> {
    /// An error placed at the first line that mentions one of `needles`.
    fn add(&mut self, needles: &[&str], msg: String) {
        let line = line_of(self.source, needles);
        self.list.push((line, msg));
    }

    /// An error at the value at `at` (`["faults", "[2]", "server"]`), or
    /// its table's line when it is missing.
    pub(super) fn at(&mut self, at: &[&str], msg: String) {
        let line = self.places.line(at);
        self.list.push((line, msg));
    }

    /// Flags unknown keys, each at its own line; returns the known keys
    /// that were misspelt (`duraton`), whose absence is then not said.
    pub(super) fn unknown(
        &mut self,
        t: &Table,
        known: &[&str],
        what: &str,
        at: &[&str],
    ) -> Vec<String> {
        let mut misspelt = Vec::new();
        let mut keys: Vec<String> = t
            .pairs::<Value, Value>()
            .flatten()
            .filter_map(|(k, _)| match k {
                Value::String(s) => Some(s.to_string_lossy()),
                _ => None,
            })
            .collect();
        keys.sort();
        for k in keys {
            if known.contains(&k.as_str()) {
                continue;
            }
            let path = [at, &[k.as_str()]].concat();
            let near = known
                .iter()
                .find(|w| near_miss(&k, w) && matches!(t.get::<Value>(**w), Ok(Value::Nil)));
            match near {
                Some(w) => {
                    misspelt.push(w.to_string());
                    self.at(
                        &path,
                        format!("{what}: unknown key \"{k}\" (did you mean \"{w}\"?)"),
                    );
                }
                None => self.at(
                    &path,
                    format!("{what}: unknown key \"{k}\" (known: {})", known.join(", ")),
                ),
            }
        }
        misspelt
    }

    /// Every error as `path:line: message`, in line order.
    fn lines(mut self) -> Vec<String> {
        self.list.sort_by_key(|(l, _)| l.unwrap_or(usize::MAX));
        self.list
            .into_iter()
            .map(|(line, msg)| match line {
                Some(l) => format!("{}:{l}: {msg}", self.path.display()),
                None => format!("{}: {msg}", self.path.display()),
            })
            .collect()
    }
}

fn duration_of(v: &Value) -> Result<Duration, String> {
    match v {
        Value::String(s) => parse_duration(&s.to_string_lossy()),
        // A bare number is refused: the README says a time carries its unit.
        _ => Err("must be a duration like \"2s\"".into()),
    }
}

/// A time value, checked: `Err` names the key and echoes the value with
/// its type (`expect.detected_within must be a time like "1s", not a
/// string ("1")`).
pub(super) fn time_in(
    v: &Value,
    what: &str,
    lo: Duration,
    hi: Duration,
) -> Result<Option<Duration>, String> {
    if v.is_nil() {
        return Ok(None);
    }
    // A bare number in a string ("1") is refused: say the unit.
    let unitless =
        matches!(v, Value::String(s) if s.to_string_lossy().trim().parse::<f64>().is_ok());
    match duration_of(v) {
        Ok(d) if d >= lo && d <= hi && !unitless => Ok(Some(d)),
        _ => Err(format!(
            "{what} must be a time{}, like \"2s\", not {}",
            if hi == Duration::MAX {
                String::new()
            } else if lo.is_zero() {
                format!(" up to {hi:?}")
            } else {
                format!(" from {lo:?} to {hi:?}")
            },
            shown(v)
        )),
    }
}

/// A whole number from `lo` to `hi`, checked the same way.
pub(super) fn int_in(v: &Value, what: &str, lo: i64, hi: i64) -> Result<Option<i64>, String> {
    let n = match v {
        Value::Nil => return Ok(None),
        Value::Integer(n) => Some(*n),
        Value::Number(f) if f.fract() == 0.0 && f.abs() < 9e15 => Some(*f as i64),
        _ => None,
    };
    match n {
        Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
        _ if hi == i64::MAX => Err(format!(
            "{what} must be a whole number, {lo} or more, not {}",
            shown(v)
        )),
        _ => Err(format!(
            "{what} must be a whole number from {lo} to {hi}, not {}",
            shown(v)
        )),
    }
}

/// A string, checked the same way.
pub(super) fn string_of(v: &Value, what: &str, like: &str) -> Result<Option<String>, String> {
    match v {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(s.to_string_lossy())),
        _ => Err(format!("{what} must be {like}, not {}", shown(v))),
    }
}

/// The value at `key` of `t` (nil when absent or unreadable).
pub(super) fn field(t: &Table, key: &str) -> Value {
    t.get::<Value>(key).unwrap_or(Value::Nil)
}

/// Loads and checks a scenario; Err holds every problem, each `path:line: ...`.
pub fn load(path: &Path) -> Result<Scenario, Vec<String>> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    let vm = Vm::new(path, Limits::default()).map_err(|e| vec![describe_lua_error(&e)])?;
    let root = match vm.run_main_chunk(path, &source) {
        Ok(Value::Table(t)) => t,
        Ok(v) => {
            return Err(vec![format!(
                "{}: a scenario must return a table, not {}",
                path.display(),
                shown(&v)
            )])
        }
        Err(e) => return Err(vec![describe_lua_error(&e)]),
    };
    let mut errs = Errors {
        path,
        source: &source,
        places: Places::of(&source),
        list: Vec::new(),
    };
    let misspelt = errs.unknown(&root, KEYS, "scenario", &[]);
    let stem = || {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let name = match string_of(&field(&root, "name"), "name", "a string") {
        Ok(Some(n)) => n,
        Ok(None) => stem(),
        Err(e) => {
            errs.at(&["name"], e);
            stem()
        }
    };
    // None: not known (wrong or misspelt, and said so): no fault is
    // then said to be past it.
    let duration = match field(&root, "duration") {
        Value::Nil if misspelt.iter().any(|k| k == "duration") => None,
        v => match duration_of(&v) {
            Ok(d) if !d.is_zero() && d <= MAX_DURATION => Some(d),
            _ => {
                let was = if v.is_nil() {
                    "it is missing".to_string()
                } else {
                    format!("not {}", shown(&v))
                };
                errs.at(
                    &["duration"],
                    format!("duration must be a time from 1s to 600s, like \"10s\", {was}"),
                );
                None
            }
        },
    };
    let mut real = false;
    match string_of(&field(&root, "mode"), "mode", "\"userspace\" or \"real\"") {
        Ok(None) => {}
        Ok(Some(mode)) => {
            real = mode == "real";
            if mode != "userspace" && mode != "real" {
                errs.at(
                    &["mode"],
                    format!("mode must be \"userspace\" or \"real\", not \"{mode}\""),
                );
            }
        }
        Err(e) => errs.at(&["mode"], e),
    }
    // Only the valid, distinct names: what other messages list.
    let mut origins: Vec<String> = Vec::new();
    // Names already said to be wrong (`7`, or every name when `origins`
    // itself is): a fault or placeholder naming one brings no second error.
    let mut refused: Vec<String> = Vec::new();
    let mut origins_read = true;
    match field(&root, "origins") {
        Value::Table(t) => {
            let n = t.raw_len();
            for (k, v) in t.pairs::<Value, Value>().flatten() {
                if !matches!(k, Value::Integer(i) if i >= 1 && (i as usize) <= n) {
                    errs.at(
                        &["origins"],
                        format!(
                            "origins must be a list of names, like {{ \"A\", \"B\" }}; it has the key {}",
                            shown(&k)
                        ),
                    );
                    let _ = v;
                }
            }
            for i in 1..=n {
                let at = format!("[{i}]");
                match t.raw_get::<Value>(i) {
                    Ok(Value::String(s)) => {
                        let s = s.to_string_lossy();
                        let ok = !s.is_empty()
                            && s.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                        if !ok {
                            refused.push(s.clone());
                            errs.at(&["origins", &at], format!("origins[{i}] must be a name of letters, digits, _ or -, not \"{s}\""));
                        } else if origins.contains(&s) {
                            errs.at(
                                &["origins", &at],
                                format!("origins[{i}]: \"{s}\" is declared twice"),
                            );
                        } else {
                            origins.push(s);
                        }
                    }
                    Ok(v) => {
                        if let Value::Integer(n) = v {
                            refused.push(n.to_string());
                        } else if let Value::Number(n) = v {
                            refused.push(n.to_string());
                        }
                        errs.at(
                            &["origins", &at],
                            format!("origins[{i}] must be a name (a string), not {}", shown(&v)),
                        )
                    }
                    Err(_) => {}
                }
            }
            if n == 0 && t.pairs::<Value, Value>().next().is_none() {
                errs.at(
                    &["origins"],
                    "origins must name at least one origin, like { \"A\" }".into(),
                );
            }
        }
        v => {
            origins_read = false;
            let was = if v.is_nil() {
                "it is missing".to_string()
            } else {
                format!("not {}", shown(&v))
            };
            errs.at(
                &["origins"],
                format!("origins must list origin names, like {{ \"A\", \"B\" }}, {was}"),
            );
        }
    }
    let mut policy = String::new();
    match field(&root, "policy") {
        Value::String(s) => policy = s.to_string_lossy(),
        v => {
            let was = if v.is_nil() {
                "it is missing".to_string()
            } else {
                format!("not {}", shown(&v))
            };
            errs.at(
                &["policy"],
                format!("policy must be the policy's text (placeholders {{{{listen}}}} and {{{{NAME}}}}), {was}"),
            );
        }
    }
    let mut policies = HashMap::new();
    match field(&root, "policies") {
        Value::Nil => {}
        Value::Table(t) => {
            let mut pairs: Vec<(Value, Value)> = t.pairs::<Value, Value>().flatten().collect();
            pairs.sort_by_key(|(k, _)| k.to_string().unwrap_or_default());
            for (k, v) in pairs {
                match (&k, &v) {
                    (Value::String(k), Value::String(v)) => {
                        policies.insert(k.to_string_lossy(), v.to_string_lossy());
                    }
                    (Value::String(k), v) => {
                        let k = k.to_string_lossy();
                        errs.at(
                            &["policies", &k],
                            format!("policies.{k} must be a policy's text (a string), not {}", shown(v)),
                        );
                    }
                    (k, _) => errs.at(
                        &["policies"],
                        format!("policies must be named policy texts, like {{ other = [[ ... ]] }}; it has the key {}", shown(k)),
                    ),
                }
            }
        }
        v => errs.at(
            &["policies"],
            format!(
                "policies must be named policy texts, like {{ other = [[ ... ]] }}, not {}",
                shown(&v)
            ),
        ),
    }
    let said = |name: &str| !origins_read || refused.iter().any(|r| r == name);
    for text in std::iter::once(&policy).chain(policies.values()) {
        for part in text.split("{{").skip(1) {
            let Some((name, _)) = part.split_once("}}") else {
                continue;
            };
            if name != "listen" && !origins.iter().any(|o| o == name) && !said(name) {
                errs.add(
                    &[&format!("{{{{{name}}}}}")],
                    format!(
                        "the policy names origin \"{name}\", which the scenario does not declare"
                    ),
                );
            }
        }
    }

    let mut load = Load {
        concurrency: 4,
        rate: None,
        paths: vec!["/".into()],
        keepalive: true,
        timeout: Duration::from_secs(5),
        method: "GET".into(),
        body_bytes: 0,
        websocket: false,
        tcp: None,
        via: Vec::new(),
    };
    match field(&root, "load") {
        Value::Nil => {}
        Value::Table(t) => {
            let _ = errs.unknown(&t, LOAD_KEYS, "load", &["load"]);
            match int_in(&field(&t, "concurrency"), "load.concurrency", 1, 256) {
                Ok(n) => load.concurrency = n.map_or(load.concurrency, |n| n as usize),
                Err(e) => errs.at(&["load", "concurrency"], e),
            }
            let tcp = !field(&t, "streams").is_nil() || !field(&t, "connections").is_nil();
            let rate = if tcp {
                "load.rate (new connections per second)"
            } else {
                "load.rate (requests per second)"
            };
            match int_in(&field(&t, "rate"), rate, 1, 100_000) {
                Ok(n) => load.rate = n.map(|n| n as u32),
                Err(e) => errs.at(&["load", "rate"], e),
            }
            match field(&t, "paths") {
                Value::Nil => {}
                Value::Table(p) => {
                    let mut paths = Vec::new();
                    let n = p.raw_len();
                    let extra = p.pairs::<Value, Value>().flatten().count() > n;
                    for i in 1..=n {
                        match p.raw_get::<Value>(i) {
                            Ok(Value::String(s)) if s.to_string_lossy().starts_with('/') => {
                                paths.push(s.to_string_lossy())
                            }
                            Ok(v) => errs.at(
                                &["load", "paths", &format!("[{i}]")],
                                format!(
                                    "load.paths[{i}] must be a path starting with \"/\", not {}",
                                    shown(&v)
                                ),
                            ),
                            Err(_) => {}
                        }
                    }
                    if n == 0 || extra {
                        errs.at(
                            &["load", "paths"],
                            "load.paths must be a list of paths, like { \"/\", \"/big\" }".into(),
                        );
                    }
                    load.paths = paths;
                }
                v => errs.at(
                    &["load", "paths"],
                    format!(
                        "load.paths must be a list of paths, like {{ \"/\" }}, not {}",
                        shown(&v)
                    ),
                ),
            }
            match field(&t, "keepalive") {
                Value::Nil => {}
                Value::Boolean(b) => load.keepalive = b,
                v => errs.at(
                    &["load", "keepalive"],
                    format!("load.keepalive must be true or false, not {}", shown(&v)),
                ),
            }
            match field(&t, "websocket") {
                Value::Nil => {}
                Value::Boolean(b) => load.websocket = b,
                v => errs.at(
                    &["load", "websocket"],
                    format!("load.websocket must be true or false, not {}", shown(&v)),
                ),
            }
            match string_of(
                &field(&t, "method"),
                "load.method",
                "an HTTP method like \"GET\"",
            ) {
                Ok(None) => {}
                Ok(Some(m)) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    load.method = m.to_ascii_uppercase()
                }
                Ok(Some(m)) => errs.at(
                    &["load", "method"],
                    format!("load.method must be an HTTP method like \"GET\", not \"{m}\""),
                ),
                Err(e) => errs.at(&["load", "method"], e),
            }
            match int_in(&field(&t, "body_bytes"), "load.body_bytes", 0, 1 << 30) {
                Ok(n) => load.body_bytes = n.map_or(0, |n| n as usize),
                Err(e) => errs.at(&["load", "body_bytes"], e),
            }
            match time_in(
                &field(&t, "timeout"),
                "load.timeout",
                Duration::from_millis(1),
                MAX_DURATION,
            ) {
                Ok(d) => load.timeout = d.unwrap_or(load.timeout),
                Err(e) => errs.at(&["load", "timeout"], e),
            }
            load.tcp = tcp_load(&mut errs, &t);
            if let Some(tcp) = &load.tcp {
                load.concurrency = tcp.streams + tcp.connections;
            }
        }
        v => errs.at(
            &["load"],
            format!(
                "load must be a table like {{ concurrency = 4 }}, not {}",
                shown(&v)
            ),
        ),
    }

    let (balancers, vrrp) = super::balancers::parse(&mut errs, &root, &origins);
    let mut faults = Vec::new();
    match field(&root, "faults") {
        Value::Nil => {}
        Value::Table(list) => {
            let n = list.raw_len();
            if list.pairs::<Value, Value>().flatten().count() > n {
                errs.at(
                    &["faults"],
                    "faults must be a list, like { { at = \"2s\", server = \"B\", fault = \"kill\" } }".into(),
                );
            }
            for i in 1..=n {
                let ns = format!("[{i}]");
                let f = match list.raw_get::<Value>(i) {
                    Ok(Value::Table(f)) => f,
                    Ok(v) => {
                        errs.at(
                            &["faults", &ns],
                            format!("faults[{i}] must be a table, not {}", shown(&v)),
                        );
                        continue;
                    }
                    Err(_) => continue,
                };
                fault(
                    &mut errs,
                    &f,
                    i,
                    &ns,
                    duration,
                    &origins,
                    &said,
                    &policies,
                    &balancers,
                    &mut faults,
                );
            }
        }
        v => errs.at(
            &["faults"],
            format!("faults must be a list of faults, not {}", shown(&v)),
        ),
    }
    faults.sort_by_key(|f| f.at);

    let mut expect = Expect::default();
    match field(&root, "expect") {
        Value::Nil => {}
        Value::Table(t) => {
            let _ = errs.unknown(&t, EXPECT_KEYS, "expect", &["expect"]);
            for (k, slot) in [
                ("failed", &mut expect.failed),
                ("ok_min", &mut expect.ok_min),
                ("failed_connections", &mut expect.failed_connections),
                ("cut_connections", &mut expect.cut_connections),
                ("cut_connections_min", &mut expect.cut_connections_min),
                ("connections_to_down", &mut expect.connections_to_down),
                ("bytes_after_fault", &mut expect.bytes_after_fault),
                ("access_log_servers", &mut expect.access_log_servers),
            ] {
                match int_in(&field(&t, k), &format!("expect.{k}"), 0, i64::MAX) {
                    Ok(n) => *slot = n.map(|n| n as u64),
                    Err(e) => errs.at(&["expect", k], e),
                }
            }
            let (wrong, what) = if load.tcp.is_some() {
                (HTTP_EXPECT_KEYS, "requests; a TCP load counts connections (failed_connections, cut_connections, cut_connections_min, connections_to_down, bytes_after_fault)")
            } else {
                (
                    TCP_EXPECT_KEYS,
                    "a TCP load (load.streams or load.connections)",
                )
            };
            for k in wrong {
                if !field(&t, k).is_nil() {
                    errs.at(&["expect", *k], format!("expect.{k} is about {what}"));
                }
            }
            for (k, slot) in [
                ("detected_within", &mut expect.detected_within),
                ("recovered_within", &mut expect.recovered_within),
                ("failover_within", &mut expect.failover_within),
            ] {
                match time_in(
                    &field(&t, k),
                    &format!("expect.{k}"),
                    Duration::ZERO,
                    MAX_DURATION,
                ) {
                    Ok(d) => *slot = d,
                    Err(e) => errs.at(&["expect", k], e),
                }
            }
            expect.answered_by = names_list(&mut errs, &t, "answered_by", "expect", &origins);
        }
        v => errs.at(
            &["expect"],
            format!(
                "expect must be a table like {{ failed = 0 }}, not {}",
                shown(&v)
            ),
        ),
    }
    if let Value::Table(t) = field(&root, "expect") {
        expect.two_masters = super::balancers::expect_keys(&mut errs, &t, &balancers);
    }
    // failover_within is judged per fault that takes a balancer out:
    // without one it could only be NOT MET, after the whole run.
    let takes_out = |f: &Fault| {
        f.balancer.is_some()
            && matches!(
                f.kind,
                FaultKind::Kill | FaultKind::Blackhole | FaultKind::StopKeepalived
            )
    };
    if expect.failover_within.is_some() && !balancers.is_empty() && !faults.iter().any(takes_out) {
        errs.at(
            &["expect", "failover_within"],
            "expect.failover_within needs a fault that takes a balancer out (kill, blackhole or stop_keepalived with balancer = \"L1\"); the scenario has none".into(),
        );
    }
    let workers = match int_in(&field(&root, "workers"), "workers", 1, 16) {
        Ok(n) => n.unwrap_or(1) as usize,
        Err(e) => {
            errs.at(&["workers"], e);
            1
        }
    };
    let tls = match field(&root, "tls") {
        Value::Nil => false,
        Value::Boolean(b) => b,
        v => {
            errs.at(
                &["tls"],
                format!("tls must be true or false, not {}", shown(&v)),
            );
            false
        }
    };
    if tls && load.tcp.is_some() {
        errs.at(
            &["tls"],
            "tls = true is for an HTTP load: a TCP listener passes bytes through, and the echo origins do not speak TLS".into(),
        );
    }
    let same_ip = names_list(&mut errs, &root, "same_ip", "", &origins);
    let same_ip_at = match errs.places.line(&["same_ip"]) {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    };
    let balancers_at = match errs.places.line(&["balancers"]) {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    };
    if !field(&root, "same_ip").is_nil() && errs.list.is_empty() {
        for e in super::same_ip::check_names(&same_ip, &origins) {
            errs.at(&["same_ip"], e);
        }
    }
    if errs.list.is_empty() {
        for e in super::same_ip::misplaced(&faults, &same_ip) {
            errs.at(&["faults"], e);
        }
    }
    if !errs.list.is_empty() {
        return Err(errs.lines());
    }
    let duration = duration.unwrap_or(Duration::from_secs(1));
    Ok(Scenario {
        path: path.to_path_buf(),
        name,
        duration,
        origins,
        policy,
        policies,
        load,
        faults,
        expect,
        workers,
        real,
        tls,
        same_ip,
        same_ip_at,
        balancers,
        balancers_at,
        vrrp,
    })
}

/// A list of origin names at `key` of `t` (`same_ip`, `expect.answered_by`),
/// each a declared origin; `within` is the table's own key ("" for the
/// scenario). Wrong entries are refused at their line.
fn names_list(
    errs: &mut Errors,
    t: &Table,
    key: &str,
    within: &str,
    origins: &[String],
) -> Vec<String> {
    let what = if within.is_empty() {
        key.to_string()
    } else {
        format!("{within}.{key}")
    };
    let at: Vec<&str> = [within, key]
        .into_iter()
        .filter(|k| !k.is_empty())
        .collect();
    let mut out = Vec::new();
    match field(t, key) {
        Value::Nil => {}
        Value::Table(list) => {
            let n = list.raw_len();
            if n == 0 || list.pairs::<Value, Value>().flatten().count() > n {
                errs.at(
                    &at,
                    format!("{what} must be a list of origin names, like {{ \"A\", \"B\" }}"),
                );
            }
            for i in 1..=n {
                match list.raw_get::<Value>(i) {
                    Ok(Value::String(s)) if origins.contains(&s.to_string_lossy()) => {
                        out.push(s.to_string_lossy())
                    }
                    Ok(v) => errs.at(
                        &at,
                        format!(
                            "{what}[{i}] must be one of the origins ({}), not {}",
                            origins.join(", "),
                            shown(&v)
                        ),
                    ),
                    Err(_) => {}
                }
            }
        }
        v => errs.at(
            &at,
            format!(
                "{what} must be a list of origin names, like {{ \"A\", \"B\" }}, not {}",
                shown(&v)
            ),
        ),
    }
    out
}

/// Checks one entry of `faults` (`i` from 1, `ns` = `[i]`); pushes it to
/// `out` when every key of it is right. Each mistake is said once, at its
/// own line; a value already said to be wrong brings no second error.
#[allow(clippy::too_many_arguments)]
fn fault(
    errs: &mut Errors,
    f: &Table,
    i: usize,
    ns: &str,
    duration: Option<Duration>,
    origins: &[String],
    said: &dyn Fn(&str) -> bool,
    policies: &HashMap<String, String>,
    balancers: &[String],
    out: &mut Vec<Fault>,
) {
    let what = format!("faults[{i}]");
    let _ = errs.unknown(f, FAULT_KEYS, &what, &["faults", ns]);
    let before = errs.list.len();
    let here = |k: &'static str| -> [String; 3] { ["faults".into(), ns.into(), k.into()] };
    let at_of = |errs: &mut Errors, k: &'static str, msg: String| {
        let p = here(k);
        let p: Vec<&str> = p.iter().map(String::as_str).collect();
        errs.at(&p, msg);
    };
    let kind_name = match string_of(
        &field(f, "fault"),
        &format!("{what}.fault"),
        "a fault's name like \"kill\"",
    ) {
        Ok(Some(k)) => k,
        Ok(None) => {
            errs.at(
                &["faults", ns],
                format!("{what} needs fault = \"NAME\" (kill, restart, ...)"),
            );
            String::new()
        }
        Err(e) => {
            at_of(errs, "fault", e);
            String::new()
        }
    };
    let label = if kind_name.is_empty() {
        what.clone()
    } else {
        format!("fault \"{kind_name}\"")
    };
    let after_v = field(f, "after_bytes");
    let after_bytes = match int_in(&after_v, &format!("{label}: after_bytes"), 0, i64::MAX) {
        Ok(n) => n.map(|n| n as u64),
        Err(e) => {
            at_of(errs, "after_bytes", e);
            None
        }
    };
    let at_v = field(f, "at");
    let at = match time_in(
        &at_v,
        &format!("{label}: at"),
        Duration::ZERO,
        Duration::MAX,
    ) {
        Ok(Some(d)) => {
            if let Some(whole) = duration.filter(|w| d >= *w) {
                at_of(
                    errs,
                    "at",
                    format!("{label} at {d:?} is past the scenario's duration ({whole:?})"),
                );
            }
            d
        }
        Ok(None) if after_bytes.is_some() => Duration::MAX,
        Ok(None) => {
            if after_v.is_nil() {
                errs.at(
                    &["faults", ns],
                    format!("{label} needs at = \"2s\" or after_bytes = N"),
                );
            }
            Duration::ZERO
        }
        Err(e) => {
            at_of(errs, "at", e);
            Duration::ZERO
        }
    };
    let server = match string_of(
        &field(f, "server"),
        &format!("{label}: server"),
        "an origin's name",
    ) {
        Ok(s) => s,
        Err(e) => {
            at_of(errs, "server", e);
            Some(String::new())
        }
    };
    let balancer = match field(f, "target") {
        Value::Nil => false,
        Value::String(s) if s.to_string_lossy() == "balancer" => true,
        v => {
            at_of(
                errs,
                "target",
                format!("{label}: target must be \"balancer\", not {}", shown(&v)),
            );
            true
        }
    };
    let named = super::balancers::fault_target(errs, f, &label, ns, balancers);
    if named.is_some() && (server.is_some() || balancer) {
        errs.at(
            &["faults", ns],
            format!("{label}: give one of server, target or balancer, not two"),
        );
    }
    match &server {
        Some(s) if s.is_empty() => {}
        Some(_) if balancer => errs.at(
            &["faults", ns],
            format!("{label}: give server = \"NAME\" or target = \"balancer\", not both"),
        ),
        Some(s) if !origins.contains(s) && !said(s) => {
            at_of(errs, "server", format!("{label} names server \"{s}\", which the scenario does not declare (origins: {})", origins.join(", ")));
        }
        None if !balancer && named.is_none() => {
            errs.at(
                &["faults", ns],
                format!("{label} needs server = \"NAME\" or target = \"balancer\""),
            );
        }
        _ => {}
    }
    let time = |errs: &mut Errors, k: &'static str, default: Duration, lo: Duration| -> Duration {
        match time_in(&field(f, k), &format!("{label}: {k}"), lo, MAX_DURATION) {
            Ok(d) => d.unwrap_or(default),
            Err(e) => {
                at_of(errs, k, e);
                default
            }
        }
    };
    let int = |errs: &mut Errors, k: &'static str, lo: i64, hi: i64| -> Option<i64> {
        match int_in(&field(f, k), &format!("{label}: {k}"), lo, hi) {
            Ok(n) => n,
            Err(e) => {
                at_of(errs, k, e);
                None
            }
        }
    };
    let kind = match (kind_name.as_str(), balancer) {
        ("", _) => return,
        (k, _) if named.is_some() => match super::balancers::fault_kind(k) {
            Ok(kind) => kind,
            Err(e) => {
                at_of(errs, "fault", e);
                return;
            }
        },
        ("kill", false) => FaultKind::Kill,
        ("restart", false) => FaultKind::Restart,
        ("restart", true) => FaultKind::RestartBalancer,
        ("refuse", false) => FaultKind::Refuse,
        ("blackhole", false) => FaultKind::Blackhole,
        ("drop", false) => FaultKind::Drop,
        ("cut", false) => FaultKind::Cut(int(errs, "bytes", 0, i64::MAX).unwrap_or(1000) as u64),
        ("reset_after_headers", false) => FaultKind::ResetAfterHeaders,
        ("slow", false) => FaultKind::Slow {
            latency: time(errs, "latency", Duration::ZERO, Duration::ZERO),
            bandwidth: int(errs, "bandwidth", 1, i64::MAX).map(|n| n as u64),
        },
        ("flap", false) => FaultKind::Flap {
            period: time(
                errs,
                "period",
                Duration::from_secs(1),
                Duration::from_millis(50),
            ),
        },
        ("lie", false) => FaultKind::Lie(int(errs, "status", 100, 599).unwrap_or(500) as u16),
        ("heal", false) => FaultKind::Heal,
        ("hang_worker", true) => FaultKind::HangWorker,
        ("announce", false) => FaultKind::Announce,
        ("flush_arp", true) => FaultKind::FlushArp,
        ("reload", true) => match field(f, "policy") {
            Value::String(s) if policies.contains_key(&*s.to_string_lossy()) => {
                FaultKind::Reload(s.to_string_lossy())
            }
            v => {
                let names: Vec<&str> = {
                    let mut n: Vec<&str> = policies.keys().map(String::as_str).collect();
                    n.sort();
                    n
                };
                at_of(errs, if v.is_nil() { "fault" } else { "policy" }, format!(
                    "fault \"reload\" needs policy = a name from the scenario's policies ({}), not {}",
                    if names.is_empty() { "none".to_string() } else { names.join(", ") },
                    shown(&v)
                ));
                return;
            }
        },
        (other, _) => {
            at_of(errs, "fault", format!(
                "unknown fault \"{other}\" for {} (faults for a server: kill, restart, refuse, blackhole, drop, cut, reset_after_headers, slow, flap, lie, heal, announce; for the balancer: reload, restart, hang_worker, flush_arp)",
                if balancer { "the balancer" } else { "a server" }
            ));
            return;
        }
    };
    if errs.list.len() > before {
        return;
    }
    let text = match (&server, &named) {
        (Some(s), _) => format!("{kind_name} {s}"),
        (None, Some(b)) => format!("{kind_name} {b}"),
        (None, None) => format!("{kind_name} balancer"),
    };
    out.push(Fault {
        at,
        after_bytes,
        server,
        balancer: named,
        kind,
        text,
    });
}

/// The TCP part of `load` (`t`): Some when `streams` or `connections` is
/// given; an HTTP load key next to them is refused.
fn tcp_load(errs: &mut Errors, t: &Table) -> Option<TcpLoad> {
    let tcp_keys = ["streams", "connections", "bytes", "chunk"];
    if tcp_keys.iter().all(|k| field(t, k).is_nil()) {
        return None;
    }
    for k in HTTP_LOAD_KEYS {
        if !field(t, k).is_nil() {
            errs.at(
                &["load", *k],
                format!("load.{k} is for an HTTP load; a TCP load (streams, connections) sends bytes to echo servers"),
            );
        }
    }
    let before = errs.list.len();
    let mut n = |k: &str, lo: i64, hi: i64, default: usize| -> usize {
        match int_in(&field(t, k), &format!("load.{k}"), lo, hi) {
            Ok(v) => v.map_or(default, |v| v as usize),
            Err(e) => {
                errs.at(&["load", k], e);
                default
            }
        }
    };
    let tcp = TcpLoad {
        streams: n("streams", 0, 256, 0),
        connections: n("connections", 0, 256, 0),
        bytes: n("bytes", 1, 1 << 20, 100),
        chunk: n("chunk", 1, 1 << 20, 16 * 1024),
        listener_tcp: false,
    };
    // A count already refused (out of range) is not said again as 0.
    if tcp.streams + tcp.connections == 0 && errs.list.len() == before {
        errs.at(
            &["load"],
            "a TCP load needs load.streams or load.connections above 0".into(),
        );
    }
    Some(tcp)
}
