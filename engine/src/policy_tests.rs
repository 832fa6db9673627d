//! `pocket test POLICY.lua`: runs the policy's `tests` table with no
//! network, through the same decision code the proxy runs
//! ([`crate::proxy::decide`]) and the same server pick.
//!
//! ```lua
//! tests = {
//!   { name = "static files", req = { path = "/static/a.css" }, pool = "static" },
//!   { req = { path = "/ping" }, status = 200, body = "pong" },
//!   { req = { host = "x", headers = { cookie = "sid=1" } },
//!     health = { ["127.0.0.1:9001"] = "down" }, server = "127.0.0.1:9002" },
//!   { req = { path = "/old" }, status = 301, header = { location = "/new" } },
//!   -- a connection on a tcp listener: on_connect decides
//!   { conn = { listener = "tls", sni = "a.example" }, pool = "site_a" },
//!   { conn = { listener = "tls", sni = "x.example" }, rejected = true },
//! }
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Request};
use mlua::{Table, Value};

use crate::config::{line_of, load_policy, Places};
use crate::context::RequestId;
use crate::lb::{AdminState, StateRegistry};
use crate::proxy::decide::{decide, Route};
use crate::script::api::request::RequestView;
use crate::script::{Limits, WorkerScript};

const CASE_KEYS: &[&str] = &[
    "name", "req", "conn", "health", "pool", "server", "status", "header", "body", "rejected",
];
/// A connection case's `conn`: the fields `on_connect` reads.
pub(crate) const CONN_KEYS: &[&str] = &["listener", "sni", "alpn", "peer_ip", "peer_port"];
const REQ_KEYS: &[&str] = &[
    "method", "path", "query", "host", "headers", "peer_ip", "listener",
];

/// What a run found: passed count and one line per failure.
pub struct Outcome {
    pub passed: usize,
    pub failures: Vec<String>,
}

/// Loads the policy and runs its cases. Err: the policy itself is broken.
pub fn run(path: &Path) -> Result<Outcome, String> {
    let registry = Arc::new(StateRegistry::default());
    // Health changes made by cases go nowhere (no log lines).
    let (tx, _) = tokio::sync::mpsc::unbounded_channel();
    registry.set_events(tx);
    // pocket.server(...) works in cases (the first policy's registry).
    StateRegistry::install_global(registry.clone());
    // Each policy file starts with empty stores.
    crate::script::api::store::clear_all();
    let policy = Arc::new(load_policy(path, &registry).map_err(|e| e.to_string())?);
    let script = WorkerScript::new(policy.clone(), Limits::default())?;
    let source = policy.source.clone();
    let places = Places::of(&source);
    let place = |needles: &[&str]| match line_of(&source, needles) {
        Some(l) => format!("{}:{}", path.display(), l),
        None => path.display().to_string(),
    };
    let cases: Table = match script.root().get::<Value>("tests") {
        Ok(Value::Table(t)) => t,
        Ok(Value::Nil) => return Err(format!("{}: the policy has no tests table", path.display())),
        _ => {
            return Err(format!(
                "{}: tests must be a list of cases",
                place(&["tests"])
            ))
        }
    };
    let mut out = Outcome {
        passed: 0,
        failures: Vec::new(),
    };
    for (i, case) in cases.sequence_values::<Value>().enumerate() {
        let n = i + 1;
        let Ok(Value::Table(case)) = case else {
            // At the case's own line (`"five"`), not at `tests = {`.
            let at = match places.exact_line(&["tests", &format!("[{n}]")]) {
                Some(l) => format!("{}:{l}", path.display()),
                None => place(&["tests"]),
            };
            let what = match &case {
                Ok(v) => crate::config::shown_value(v),
                Err(_) => "not readable".into(),
            };
            out.failures.push(format!(
                "{at}: test {n}: must be a table {{ req = ..., ... }}, not {what}"
            ));
            continue;
        };
        let name: Option<String> = case.get("name").ok();
        let label = match &name {
            Some(s) => format!("test {n} ({s})"),
            None => format!("test {n}"),
        };
        let req: Option<Table> = case.get("req").ok();
        let req_path: Option<String> = req.as_ref().and_then(|r| r.get("path").ok());
        let conn: Option<Table> = case.get("conn").ok();
        let conn_sni: Option<String> = conn.as_ref().and_then(|c| c.get("sni").ok());
        let needles: Vec<String> = [
            name.clone().map(|s| format!("\"{s}\"")),
            req_path.map(|p| format!("\"{p}\"")),
            conn_sni.map(|p| format!("\"{p}\"")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let needles: Vec<&str> = needles
            .iter()
            .map(String::as_str)
            .chain(["tests"])
            .collect();
        // The case's own line (its place in the list), else the first
        // line that mentions its name or path.
        let at = match places.exact_line(&["tests", &format!("[{n}]")]) {
            Some(l) => format!("{}:{l}", path.display()),
            _ => place(&needles),
        };
        match run_case(&script, &case, n) {
            Ok(()) => out.passed += 1,
            Err(why) => out.failures.push(format!("{at}: {label}: {why}")),
        }
    }
    Ok(out)
}

pub(crate) fn unknown_keys(t: &Table, known: &[&str], what: &str) -> Result<(), String> {
    for (k, _) in t.pairs::<Value, Value>().flatten() {
        if let Value::String(s) = k {
            let k = s.to_string_lossy();
            if !known.contains(&k.as_str()) {
                return Err(format!(
                    "unknown key \"{k}\" in {what} (known: {})",
                    known.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// The case's request. Err: every wrong field of it, each said once
/// (`req.path must be a string, not a number (5); req.method ...`).
fn build_request(req: &Table, n: usize) -> Result<RequestView, Vec<String>> {
    let mut wrong = Vec::new();
    if let Err(e) = unknown_keys(req, REQ_KEYS, "req") {
        wrong.push(e);
    }
    for k in ["method", "path", "query", "host", "peer_ip", "listener"] {
        match req.get::<Value>(k) {
            Ok(Value::Nil) | Ok(Value::String(_)) => {}
            Ok(v) => wrong.push(format!(
                "req.{k} must be a string, not {}",
                crate::config::shown_value(&v)
            )),
            Err(_) => wrong.push(format!("req.{k} must be a string")),
        }
    }
    if !matches!(
        req.get::<Value>("headers"),
        Ok(Value::Nil) | Ok(Value::Table(_))
    ) {
        wrong.push("req.headers must be a table".into());
    }
    if !wrong.is_empty() {
        return Err(wrong);
    }
    build_checked(req, n).map_err(|e| vec![e])
}

fn build_checked(req: &Table, n: usize) -> Result<RequestView, String> {
    let get = |k: &str| -> Result<Option<String>, String> {
        match req.get::<Value>(k) {
            Ok(Value::Nil) => Ok(None),
            Ok(Value::String(s)) => Ok(Some(s.to_string_lossy())),
            _ => Err(format!("req.{k} must be a string")),
        }
    };
    let method = get("method")?.unwrap_or_else(|| "GET".into());
    let mut path = get("path")?.unwrap_or_else(|| "/".into());
    // An origin-form target (RFC 9112 §3.2.1), as a client sends it.
    if !path.starts_with('/') {
        return Err(format!(
            "bad request: req.path must start with \"/\", not {path:?}"
        ));
    }
    if let Some(q) = get("query")? {
        path = format!("{path}?{q}");
    }
    let host = get("host")?.unwrap_or_else(|| "example.com".into());
    let mut builder = Request::builder()
        .method(method.as_str())
        .uri(path.as_str());
    let headers = builder.headers_mut().ok_or("bad request")?;
    headers.insert(
        http::header::HOST,
        HeaderValue::from_str(&host).map_err(|_| "bad req.host")?,
    );
    match req.get::<Value>("headers") {
        Ok(Value::Nil) => {}
        Ok(Value::Table(h)) => {
            for pair in h.pairs::<String, String>() {
                let (k, v) =
                    pair.map_err(|_| "req.headers must map names to strings".to_string())?;
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("bad header name {k:?}"))?;
                let value =
                    HeaderValue::from_str(&v).map_err(|_| format!("bad value for header {k:?}"))?;
                headers.append(name, value);
            }
        }
        _ => return Err("req.headers must be a table".into()),
    }
    let head = builder
        .body(())
        .map_err(|e| format!("bad request: {e}"))?
        .into_parts()
        .0;
    let ip = get("peer_ip")?.unwrap_or_else(|| "127.0.0.1".into());
    let peer: SocketAddr = format!("{ip}:40000")
        .parse()
        .or_else(|_| format!("[{ip}]:40000").parse())
        .map_err(|_| format!("bad req.peer_ip {ip:?}"))?;
    Ok(RequestView {
        head,
        raw_target: None,
        peer,
        listener: Arc::from(get("listener")?.unwrap_or_default().as_str()),
        id: RequestId {
            worker: 0,
            seq: n as u64,
        },
        growth: 0,
        tls: None,
    })
}

/// Runs one case. Err: what is wrong with the case (every error of it,
/// `; `-separated) or how the policy's answer differs from it.
fn run_case(script: &WorkerScript, case: &Table, n: usize) -> Result<(), String> {
    let mut wrong = Vec::new();
    if let Err(e) = unknown_keys(case, CASE_KEYS, "the case") {
        wrong.push(e);
    }
    if !matches!(case.get::<Value>("conn"), Ok(Value::Nil)) {
        return crate::policy_tests_conn::run_case(script, case, n, wrong);
    }
    if !matches!(case.get::<Value>("rejected"), Ok(Value::Nil)) {
        wrong.push(
            "rejected is for a connection case (conn = { listener = ..., sni = ... }); a request gets a status".into(),
        );
    }
    let req: Table = match case.get::<Value>("req") {
        Ok(Value::Table(t)) => t,
        Ok(Value::Nil) => script.vm.lua.create_table().map_err(|e| e.to_string())?,
        Ok(v) => {
            wrong.push(format!(
                "req must be a table, not {}",
                crate::config::shown_value(&v)
            ));
            script.vm.lua.create_table().map_err(|e| e.to_string())?
        }
        Err(_) => {
            wrong.push("req must be a table".into());
            script.vm.lua.create_table().map_err(|e| e.to_string())?
        }
    };
    // A pool the policy does not have can never be the answer.
    if let Ok(Value::String(want)) = case.get::<Value>("pool") {
        let want = want.to_string_lossy();
        if !script.policy.pools.iter().any(|p| *p.name == *want) {
            let names: Vec<&str> = script.policy.pools.iter().map(|p| &*p.name).collect();
            wrong.push(format!(
                "pool \"{want}\" is not a pool of the policy (pools: {})",
                names.join(", ")
            ));
        }
    }
    let view = build_request(&req, n);
    let mut view = match view {
        Ok(v) if wrong.is_empty() => v,
        Ok(_) => return Err(wrong.join("; ")),
        Err(more) => {
            wrong.extend(more);
            return Err(wrong.join("; "));
        }
    };
    // `listener = ""` takes the first listener's pool: not a tcp one's.
    if view.listener.is_empty() {
        if let Some(first) = script
            .policy
            .listeners
            .first()
            .filter(|l| l.mode == crate::config::Mode::Tcp)
        {
            return Err(format!(
                "the policy's first listener \"{}\" is a tcp listener: name this request's http listener (req = {{ listener = \"...\" }}), or test a connection with conn = {{ listener = \"{}\", ... }}",
                first.name, first.name
            ));
        }
    }
    if let Some(l) = script
        .policy
        .listener(&view.listener)
        .filter(|l| l.mode == crate::config::Mode::Tcp)
    {
        return Err(format!(
            "listener \"{}\" is a tcp listener: it reads no HTTP request; on_connect decides there: test a connection with conn = {{ listener = \"{}\", sni = ... }}",
            l.name, l.name
        ));
    }
    // A case on a TLS listener: the request came over TLS, with the
    // case's host as its SNI (req.scheme "https", as when served).
    if script
        .policy
        .listener(&view.listener)
        .is_some_and(|l| l.tls.is_some())
    {
        view.tls = Some(Arc::new(crate::context::TlsInfo {
            sni: view.host().map(Arc::from),
            alpn: Some(Arc::from("http/1.1")),
            version: "TLSv1.3",
        }));
    }

    // Server states for this case; every server is put back after it.
    let mut touched = Vec::new();
    let applied = set_health(script, case, &mut touched);
    let result = applied.and_then(|()| judge(script, case, &mut view));
    for s in touched {
        s.set_up(true, "pocket test");
        s.set_admin(AdminState::Ready);
    }
    result
}

pub(crate) fn set_health(
    script: &WorkerScript,
    case: &Table,
    touched: &mut Vec<Arc<crate::lb::ServerState>>,
) -> Result<(), String> {
    let policy = &script.policy;
    if let Ok(Value::Table(h)) = case.get::<Value>("health") {
        for pair in h.pairs::<String, String>() {
            let (addr, state) = pair.map_err(|_| {
                "health maps \"ip:port\" to \"up\", \"down\", \"drain\" or \"maint\""
            })?;
            let servers: Vec<_> = policy
                .pools
                .iter()
                .flat_map(|p| p.servers.iter())
                .filter(|s| *s.addr_text == addr)
                .collect();
            if servers.is_empty() {
                return Err(format!("health names {addr}, which is in no pool"));
            }
            for s in servers {
                match state.as_str() {
                    "up" | "down" => {
                        s.state.set_up(state == "up", "pocket test");
                    }
                    other => match AdminState::parse(other) {
                        Some(a) => {
                            s.state.set_admin(a);
                        }
                        None => {
                            return Err(format!(
                                "unknown health state {other:?} for {addr} (known: up, down, drain, maint)"
                            ))
                        }
                    },
                }
                touched.push(s.state.clone());
            }
        }
    }
    Ok(())
}

fn judge(script: &WorkerScript, case: &Table, view: &mut RequestView) -> Result<(), String> {
    let policy = &script.policy;
    let want_pool: Option<String> = case.get("pool").ok();
    let want_server: Option<String> = case.get("server").ok();
    let want_status: Option<u16> = case.get("status").ok();
    let want_body: Option<String> = case.get("body").ok();
    let want_headers: Option<Table> = case.get("header").ok();

    let route = decide(script, view);
    let (status, headers, body, pool, server) = match route {
        Route::Local(r) => {
            let mut h = http::HeaderMap::new();
            for (k, v) in &r.headers {
                h.append(k.clone(), v.clone());
            }
            (
                r.status.as_u16(),
                h,
                String::from_utf8_lossy(&r.body).into_owned(),
                None,
                None,
            )
        }
        Route::Refuse(status, why) | Route::OverLimit(status, why) => {
            (status.as_u16(), http::HeaderMap::new(), why, None, None)
        }
        Route::Pool {
            pool,
            key,
            preferred,
        } => {
            // The pool that would serve it: its fallbacks when it cannot.
            let mut p = &policy.pools[pool];
            let mut pick = p.pick(&[], key, preferred);
            while pick.is_none() {
                match p.fallback_pool() {
                    Some(next) => {
                        p = &policy.pools[next];
                        pick = p.pick(&[], None, None);
                    }
                    None => break,
                }
            }
            let server = pick.map(|i| p.servers[i].addr_text.to_string());
            let status = if server.is_some() { 200 } else { 503 };
            (
                status,
                view.head.headers.clone(),
                String::new(),
                Some(p.name.to_string()),
                server,
            )
        }
    };
    let got = || match (&pool, &server) {
        (Some(p), Some(s)) => format!("pool \"{p}\" server {s}"),
        (Some(p), None) => format!("pool \"{p}\" with no server up (503)"),
        _ => format!("a {status} response"),
    };
    if let Some(want) = &want_pool {
        if pool.as_deref() != Some(want.as_str()) {
            return Err(format!("expected pool \"{want}\", got {}", got()));
        }
    }
    if let Some(want) = &want_server {
        if server.as_deref() != Some(want.as_str()) {
            return Err(format!("expected server {want}, got {}", got()));
        }
    }
    if let Some(want) = want_status {
        if status != want {
            return Err(format!("expected status {want}, got {}", got()));
        }
    }
    if let Some(want) = &want_body {
        if !body.contains(want.as_str()) {
            return Err(format!("expected a body containing {want:?}, got {body:?}"));
        }
    }
    if let Some(want) = want_headers {
        for pair in want.pairs::<String, Value>() {
            let (name, value) = pair.map_err(|_| "header maps names to values".to_string())?;
            let have = headers
                .get(name.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let ok = match &value {
                Value::Boolean(false) => have.is_none(),
                Value::Boolean(true) => have.is_some(),
                Value::String(s) => have.as_deref() == Some(s.to_string_lossy().as_str()),
                _ => return Err(format!("header {name}: expect a string, true or false")),
            };
            if !ok {
                // In the words of the case: a value, `true` (present) or
                // `false` (absent).
                let got = have
                    .map(|h| format!("{h:?}"))
                    .unwrap_or_else(|| "none".into());
                return Err(match &value {
                    Value::String(s) => {
                        format!(
                            "expected header {name} = {:?}, got {got}",
                            s.to_string_lossy()
                        )
                    }
                    Value::Boolean(true) => format!("expected header {name} (any value), got none"),
                    _ => format!("expected no header {name}, got {got}"),
                });
            }
        }
    }
    Ok(())
}
