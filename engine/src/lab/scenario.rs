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

use crate::config::{line_of, near_miss, parse_duration, Places};
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
    fn at(&mut self, at: &[&str], msg: String) {
        let line = self.places.line(at);
        self.list.push((line, msg));
    }

    /// Flags unknown keys, each at its own line; returns the known keys
    /// that were misspelt (`duraton`), whose absence is then not said.
    fn unknown(&mut self, t: &Table, known: &[&str], what: &str, at: &[&str]) -> Vec<String> {
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
        places: Places::of(&source),
        list: Vec::new(),
    };
    let misspelt = errs.unknown(&root, KEYS, "scenario", &[]);
    let name = root
        .get::<Option<String>>("name")
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    // None: not known (wrong or misspelt, and said so): no fault is
    // then said to be past it.
    let duration = match root.get::<Value>("duration") {
        Ok(Value::Nil) if misspelt.iter().any(|k| k == "duration") => None,
        v => match v.map(|v| duration_of(&v)) {
            Ok(Ok(d)) if !d.is_zero() && d <= MAX_DURATION => Some(d),
            _ => {
                errs.at(
                    &["duration"],
                    "duration must be a time from 1s to 600s, like \"10s\"".into(),
                );
                None
            }
        },
    };
    let mut real = false;
    if let Ok(Value::String(mode)) = root.get::<Value>("mode") {
        let mode = mode.to_string_lossy();
        real = mode == "real";
        if mode != "userspace" && mode != "real" {
            errs.at(
                &["mode"],
                format!("mode must be \"userspace\" or \"real\", not \"{mode}\""),
            );
        }
    }
    let origins: Vec<String> = match root.get::<Value>("origins") {
        Ok(Value::Table(t)) => t.sequence_values::<String>().flatten().collect(),
        _ => {
            errs.at(
                &["origins"],
                "origins must list origin names, like { \"A\", \"B\" }".into(),
            );
            Vec::new()
        }
    };
    let mut policy = String::new();
    match root.get::<Value>("policy") {
        Ok(Value::String(s)) => policy = s.to_string_lossy(),
        _ => errs.at(
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
        let _ = errs.unknown(&t, LOAD_KEYS, "load", &["load"]);
        match t.get::<Value>("concurrency") {
            Ok(Value::Nil) => {}
            Ok(Value::Integer(n)) if (1..=256).contains(&n) => load.concurrency = n as usize,
            _ => errs.at(
                &["load", "concurrency"],
                "load.concurrency must be from 1 to 256".into(),
            ),
        }
        match t.get::<Value>("rate") {
            Ok(Value::Nil) => {}
            Ok(Value::Integer(n)) if (1..=100_000).contains(&n) => load.rate = Some(n as u32),
            _ => errs.at(
                &["load", "rate"],
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
            _ => errs.at(
                &["load", "body_bytes"],
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
                    Err(e) => errs.at(&["load", "timeout"], format!("load.timeout: {e}")),
                }
            }
        }
    }

    let mut faults = Vec::new();
    if let Ok(Value::Table(list)) = root.get::<Value>("faults") {
        for (i, f) in list.sequence_values::<Table>().enumerate() {
            let ns = format!("[{}]", i + 1);
            let Ok(f) = f else {
                errs.at(
                    &["faults", &ns],
                    format!("faults[{}] must be a table", i + 1),
                );
                continue;
            };
            let _ = errs.unknown(
                &f,
                FAULT_KEYS,
                &format!("faults[{}]", i + 1),
                &["faults", &ns],
            );
            let kind_name: String = f.get("fault").unwrap_or_default();
            let after_bytes = f.get::<Option<u64>>("after_bytes").ok().flatten();
            // Every independent mistake of one fault is said, each at its
            // own line; the fault is then dropped.
            let before = errs.list.len();
            let at = match f.get::<Value>("at").map(|v| duration_of(&v)) {
                Ok(Ok(d)) if duration.is_none_or(|whole| d < whole) => d,
                Ok(Ok(d)) => {
                    let whole = duration.unwrap_or_default();
                    errs.at(&["faults", &ns, "at"], format!("fault \"{kind_name}\" at {d:?} is past the scenario's duration ({whole:?})"));
                    d
                }
                _ if after_bytes.is_some() => Duration::MAX,
                _ => {
                    errs.at(
                        &["faults", &ns],
                        format!("fault \"{kind_name}\" needs at = \"2s\" or after_bytes = N"),
                    );
                    Duration::ZERO
                }
            };
            let server: Option<String> = f.get("server").ok();
            let balancer =
                matches!(f.get::<Option<String>>("target"), Ok(Some(t)) if t == "balancer");
            match &server {
                Some(s) if !origins.contains(s) => {
                    errs.at(&["faults", &ns, "server"], format!("fault \"{kind_name}\" names server \"{s}\", which the scenario does not declare (origins: {})", origins.join(", ")));
                }
                None if !balancer => {
                    errs.at(&["faults", &ns], format!("fault \"{kind_name}\" needs server = \"NAME\" or target = \"balancer\""));
                }
                _ => {}
            }
            let here_at = ["faults", ns.as_str(), "fault"];
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
                        errs.at(&here_at, format!("fault \"slow\": latency: {e}"));
                        continue;
                    }
                },
                ("flap", false) => match dur("period", Duration::from_secs(1)) {
                    Ok(period) if period >= Duration::from_millis(50) => FaultKind::Flap { period },
                    _ => {
                        errs.at(
                            &here_at,
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
                        errs.at(&here_at, format!("fault \"reload\" needs policy = a name from the scenario's policies, not \"{name}\""));
                        continue;
                    }
                    FaultKind::Reload(name)
                }
                (other, _) => {
                    errs.at(
                        &here_at,
                        format!(
                            "unknown fault \"{other}\" for {} (faults for a server: kill, restart, refuse, blackhole, cut, reset_after_headers, slow, flap, lie, heal; for the balancer: reload, restart, hang_worker)",
                            if balancer { "the balancer" } else { "a server" }
                        ),
                    );
                    continue;
                }
            };
            if errs.list.len() > before {
                continue;
            }
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
        let _ = errs.unknown(&t, EXPECT_KEYS, "expect", &["expect"]);
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
                        Err(e) => errs.at(&["expect", k], format!("expect.{k}: {e}")),
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
    })
}
