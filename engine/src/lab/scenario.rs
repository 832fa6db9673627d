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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mlua::{Table, Value};

use crate::config::{line_of, parse_duration};
use crate::script::{describe_lua_error, Limits, Vm};

#[derive(Debug, Clone)]
pub enum FaultKind {
    Kill,
    Restart,
    Refuse,
    Blackhole,
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
}

#[derive(Debug, Clone)]
pub struct Fault {
    /// When: a time, or (with `after_bytes`) Duration::MAX.
    pub at: Duration,
    /// Or when the clients have received this many body bytes.
    pub after_bytes: Option<u64>,
    /// None: the balancer.
    pub server: Option<String>,
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
}

#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub failed: Option<u64>,
    pub ok_min: Option<u64>,
    pub detected_within: Option<Duration>,
    pub recovered_within: Option<Duration>,
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
}

const KEYS: &[&str] = &[
    "name", "duration", "origins", "policy", "policies", "load", "faults", "expect", "workers",
    "mode",
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
];
const LOAD_KEYS: &[&str] = &[
    "concurrency",
    "rate",
    "paths",
    "keepalive",
    "timeout",
    "method",
    "body_bytes",
];
const EXPECT_KEYS: &[&str] = &["failed", "ok_min", "detected_within", "recovered_within"];
/// The longest scenario the lab runs: every load is bounded.
const MAX_DURATION: Duration = Duration::from_secs(600);

struct Errors<'a> {
    path: &'a Path,
    source: &'a str,
    list: Vec<String>,
}

impl Errors<'_> {
    fn add(&mut self, needles: &[&str], msg: String) {
        let at = match line_of(self.source, needles) {
            Some(l) => format!("{}:{}", self.path.display(), l),
            None => self.path.display().to_string(),
        };
        self.list.push(format!("{at}: {msg}"));
    }

    fn unknown(&mut self, t: &Table, known: &[&str], what: &str) {
        for (k, _) in t.pairs::<Value, Value>().flatten() {
            if let Value::String(s) = k {
                let k = s.to_string_lossy();
                if !known.contains(&k.as_str()) {
                    self.add(
                        &[&format!("{k} =")],
                        format!("{what}: unknown key \"{k}\" (known: {})", known.join(", ")),
                    );
                }
            }
        }
    }
}

fn duration_of(v: &Value) -> Result<Duration, String> {
    match v {
        Value::String(s) => parse_duration(&s.to_string_lossy()),
        Value::Integer(n) => {
            crate::config::seconds_to_duration(*n as f64).ok_or("out of range".into())
        }
        Value::Number(n) => crate::config::seconds_to_duration(*n).ok_or("out of range".into()),
        _ => Err("must be a duration like \"2s\"".into()),
    }
}

/// Loads and checks a scenario; Err holds every problem, each `path:line: ...`.
pub fn load(path: &Path) -> Result<Scenario, Vec<String>> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    let vm = Vm::new(path, Limits::default()).map_err(|e| vec![describe_lua_error(&e)])?;
    let root = match vm.run_main_chunk(path, &source) {
        Ok(Value::Table(t)) => t,
        Ok(_) => {
            return Err(vec![format!(
                "{}: a scenario must return a table",
                path.display()
            )])
        }
        Err(e) => return Err(vec![describe_lua_error(&e)]),
    };
    let mut errs = Errors {
        path,
        source: &source,
        list: Vec::new(),
    };
    errs.unknown(&root, KEYS, "scenario");
    let name = root
        .get::<Option<String>>("name")
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    let duration = match root.get::<Value>("duration").map(|v| duration_of(&v)) {
        Ok(Ok(d)) if !d.is_zero() && d <= MAX_DURATION => d,
        _ => {
            errs.add(
                &["duration"],
                "duration must be a time from 1s to 600s, like \"10s\"".into(),
            );
            Duration::from_secs(1)
        }
    };
    let mut real = false;
    if let Ok(Value::String(mode)) = root.get::<Value>("mode") {
        let mode = mode.to_string_lossy();
        real = mode == "real";
        if mode != "userspace" && mode != "real" {
            errs.add(
                &["mode"],
                format!("mode must be \"userspace\" or \"real\", not \"{mode}\""),
            );
        }
    }
    let origins: Vec<String> = match root.get::<Value>("origins") {
        Ok(Value::Table(t)) => t.sequence_values::<String>().flatten().collect(),
        _ => {
            errs.add(
                &["origins"],
                "origins must list origin names, like { \"A\", \"B\" }".into(),
            );
            Vec::new()
        }
    };
    let mut policy = String::new();
    match root.get::<Value>("policy") {
        Ok(Value::String(s)) => policy = s.to_string_lossy(),
        _ => errs.add(
            &["policy"],
            "policy must be the policy's text (placeholders {{listen}} and {{NAME}})".into(),
        ),
    }
    let mut policies = HashMap::new();
    if let Ok(Value::Table(t)) = root.get::<Value>("policies") {
        for (k, v) in t.pairs::<String, String>().flatten() {
            policies.insert(k, v);
        }
    }
    for text in std::iter::once(&policy).chain(policies.values()) {
        for part in text.split("{{").skip(1) {
            let Some((name, _)) = part.split_once("}}") else {
                continue;
            };
            if name != "listen" && !origins.iter().any(|o| o == name) {
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
    };
    if let Ok(Value::Table(t)) = root.get::<Value>("load") {
        errs.unknown(&t, LOAD_KEYS, "load");
        match t.get::<Value>("concurrency") {
            Ok(Value::Nil) => {}
            Ok(Value::Integer(n)) if (1..=256).contains(&n) => load.concurrency = n as usize,
            _ => errs.add(
                &["concurrency"],
                "load.concurrency must be from 1 to 256".into(),
            ),
        }
        match t.get::<Value>("rate") {
            Ok(Value::Nil) => {}
            Ok(Value::Integer(n)) if (1..=100_000).contains(&n) => load.rate = Some(n as u32),
            _ => errs.add(
                &["rate"],
                "load.rate must be requests per second from 1 to 100000".into(),
            ),
        }
        if let Ok(Value::Table(p)) = t.get::<Value>("paths") {
            load.paths = p.sequence_values::<String>().flatten().collect();
        }
        if let Ok(Value::String(m)) = t.get::<Value>("method") {
            load.method = m.to_string_lossy().to_ascii_uppercase();
        }
        match t.get::<Value>("body_bytes") {
            Ok(Value::Nil) => {}
            Ok(Value::Integer(n)) if (0..=1 << 30).contains(&n) => load.body_bytes = n as usize,
            _ => errs.add(
                &["body_bytes"],
                "load.body_bytes must be from 0 to 1 GiB".into(),
            ),
        }
        if let Ok(Value::Boolean(b)) = t.get::<Value>("keepalive") {
            load.keepalive = b;
        }
        if let Ok(v) = t.get::<Value>("timeout") {
            if !v.is_nil() {
                match duration_of(&v) {
                    Ok(d) => load.timeout = d,
                    Err(e) => errs.add(&["timeout"], format!("load.timeout: {e}")),
                }
            }
        }
    }

    let mut faults = Vec::new();
    if let Ok(Value::Table(list)) = root.get::<Value>("faults") {
        for (i, f) in list.sequence_values::<Table>().enumerate() {
            let Ok(f) = f else {
                errs.add(&["faults"], format!("faults[{}] must be a table", i + 1));
                continue;
            };
            errs.unknown(&f, FAULT_KEYS, &format!("faults[{}]", i + 1));
            let kind_name: String = f.get("fault").unwrap_or_default();
            let here = format!("\"{kind_name}\"");
            let after_bytes = f.get::<Option<u64>>("after_bytes").ok().flatten();
            let at = match f.get::<Value>("at").map(|v| duration_of(&v)) {
                Ok(Ok(d)) if d < duration => d,
                Ok(Ok(d)) => {
                    errs.add(&[&here], format!("fault \"{kind_name}\" at {d:?} is past the scenario's duration ({duration:?})"));
                    continue;
                }
                _ if after_bytes.is_some() => Duration::MAX,
                _ => {
                    errs.add(
                        &[&here],
                        format!("fault \"{kind_name}\" needs at = \"2s\" or after_bytes = N"),
                    );
                    continue;
                }
            };
            let server: Option<String> = f.get("server").ok();
            let balancer =
                matches!(f.get::<Option<String>>("target"), Ok(Some(t)) if t == "balancer");
            match &server {
                Some(s) if !origins.contains(s) => {
                    errs.add(&[&format!("\"{s}\"")], format!("fault \"{kind_name}\" names server \"{s}\", which the scenario does not declare"));
                    continue;
                }
                None if !balancer => {
                    errs.add(&[&here], format!("fault \"{kind_name}\" needs server = \"NAME\" or target = \"balancer\""));
                    continue;
                }
                _ => {}
            }
            let dur = |k: &str, default: Duration| -> Result<Duration, String> {
                match f.get::<Value>(k) {
                    Ok(Value::Nil) => Ok(default),
                    Ok(v) => duration_of(&v),
                    Err(e) => Err(e.to_string()),
                }
            };
            let kind = match (kind_name.as_str(), balancer) {
                ("kill", false) => FaultKind::Kill,
                ("restart", false) => FaultKind::Restart,
                ("restart", true) => FaultKind::RestartBalancer,
                ("refuse", false) => FaultKind::Refuse,
                ("blackhole", false) => FaultKind::Blackhole,
                ("cut", false) => FaultKind::Cut(f.get::<u64>("bytes").unwrap_or(1000)),
                ("reset_after_headers", false) => FaultKind::ResetAfterHeaders,
                ("slow", false) => match dur("latency", Duration::ZERO) {
                    Ok(latency) => FaultKind::Slow {
                        latency,
                        bandwidth: f.get::<Option<u64>>("bandwidth").ok().flatten(),
                    },
                    Err(e) => {
                        errs.add(&[&here], format!("fault \"slow\": latency: {e}"));
                        continue;
                    }
                },
                ("flap", false) => match dur("period", Duration::from_secs(1)) {
                    Ok(period) if period >= Duration::from_millis(50) => FaultKind::Flap { period },
                    _ => {
                        errs.add(
                            &[&here],
                            "fault \"flap\": period must be at least 50ms".into(),
                        );
                        continue;
                    }
                },
                ("lie", false) => FaultKind::Lie(f.get::<u16>("status").unwrap_or(500)),
                ("heal", false) => FaultKind::Heal,
                ("hang_worker", true) => FaultKind::HangWorker,
                ("reload", true) => {
                    let name: String = f.get("policy").unwrap_or_default();
                    if !policies.contains_key(&name) {
                        errs.add(&[&here], format!("fault \"reload\" needs policy = a name from the scenario's policies, not \"{name}\""));
                        continue;
                    }
                    FaultKind::Reload(name)
                }
                (other, _) => {
                    errs.add(
                        &[&here],
                        format!(
                            "unknown fault \"{other}\" for {} (servers: kill, restart, refuse, blackhole, cut, reset_after_headers, slow, flap, lie, heal; balancer: reload, restart, hang_worker)",
                            if balancer { "the balancer" } else { "a server" }
                        ),
                    );
                    continue;
                }
            };
            let text = match &server {
                Some(s) => format!("{kind_name} {s}"),
                None => format!("{kind_name} balancer"),
            };
            faults.push(Fault {
                at,
                after_bytes,
                server,
                kind,
                text,
            });
        }
    }
    faults.sort_by_key(|f| f.at);

    let mut expect = Expect::default();
    if let Ok(Value::Table(t)) = root.get::<Value>("expect") {
        errs.unknown(&t, EXPECT_KEYS, "expect");
        expect.failed = t.get::<Option<u64>>("failed").ok().flatten();
        expect.ok_min = t.get::<Option<u64>>("ok_min").ok().flatten();
        for (k, slot) in [
            ("detected_within", &mut expect.detected_within),
            ("recovered_within", &mut expect.recovered_within),
        ] {
            if let Ok(v) = t.get::<Value>(k) {
                if !v.is_nil() {
                    match duration_of(&v) {
                        Ok(d) => *slot = Some(d),
                        Err(e) => errs.add(&[k], format!("expect.{k}: {e}")),
                    }
                }
            }
        }
    }
    let workers = root
        .get::<Option<usize>>("workers")
        .ok()
        .flatten()
        .unwrap_or(1)
        .clamp(1, 16);
    if !errs.list.is_empty() {
        return Err(errs.list);
    }
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
    })
}
