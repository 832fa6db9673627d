//! Sub-requests from `on_request` (nginx's `auth_request`, OpenResty's
//! cosockets): the global `http` table with `http.get(url, opts)`,
//! `http.request{...}` and `http.tcp(addr, bytes, opts)`. Each call waits
//! without holding the worker: `on_request` of a policy that uses them
//! runs as a coroutine (see `hooks::WorkerScript::on_request_waiting`),
//! and the worker serves other requests meanwhile. A failure or a missed
//! deadline is a value the script acts on (`nil, "timed out after 1s"`);
//! only bad arguments raise. docs/lua-api.md "Sub-requests".
//!
//! Each HTTP sub-request carries `Pocket-Subrequest-Depth: N` (its
//! request's N + 1): a sub-request to Pocket itself, which would recurse
//! without end, is refused past [`MAX_DEPTH`] levels (nginx stops
//! subrequests at 50 levels: "subrequests cycle").

pub mod client;
mod waiting;

use std::cell::Cell;
use std::ffi::c_void;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, Table, Value};

use crate::config::Policy;
use crate::script::hooks::returned;
use client::Target;

pub use waiting::Metered;

/// A sub-request's deadline when the script gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// How deep sub-requests may nest: a request whose
/// `Pocket-Subrequest-Depth` is 10 (the 10th nested sub-request) makes
/// no further one. nginx allows 50 levels; Pocket's sub-requests are for
/// auth and lookups, a level or two deep, and each level holds a
/// connection and a waiting request.
pub const MAX_DEPTH: u32 = 10;

/// The header that carries a sub-request's depth (1 for a sub-request of
/// a client's request).
pub const DEPTH_HEADER: &str = "pocket-subrequest-depth";

/// A request's depth: its `Pocket-Subrequest-Depth` (0 when absent or not
/// a number; at most [`MAX_DEPTH`]).
pub fn depth_of(headers: &http::HeaderMap) -> u32 {
    headers
        .get(DEPTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(0, |d| d.min(MAX_DEPTH))
}

/// The request a waiting `on_request` runs for, as its sub-requests need
/// it: its client and the address that client connected to (named in a
/// `send_proxy` pool's PROXY header, as HAProxy's `send-proxy` does), its
/// depth, and its id (for the log).
#[derive(Clone, Copy, Default)]
pub struct Origin {
    pub client: Option<(SocketAddr, SocketAddr)>,
    pub depth: u32,
    pub request: Option<crate::context::RequestId>,
}

/// The longest deadline a script may give, in seconds: a request should
/// not hang on a lookup for longer than a client would wait.
pub const MAX_TIMEOUT_SECS: f64 = 60.0;

/// Which Lua thread may wait: the `on_request` coroutine being resumed
/// (none when no such hook runs). Only a call made by that thread itself
/// may wait; any other caller (another hook, `pocket test`, `pocket
/// explain`, a coroutine the script made) gets `nil, "not run: ..."`.
#[derive(Clone, Default)]
pub struct CanWait(pub Rc<WaitingThread>);

pub struct WaitingThread {
    /// The coroutine's thread (a pointer only compared, never followed);
    /// null between resumes.
    pub(crate) thread: Cell<*const c_void>,
    /// The first resume of a coroutine whose thread is not known yet: the
    /// hook's first step (`mark`, see [`marked`]) notes it.
    pub(crate) marking: Cell<bool>,
    /// The request the running coroutine serves (set at each resume).
    pub(crate) origin: Cell<Origin>,
    /// The running coroutine is `on_request`'s, which may make
    /// sub-requests; a `tcp` connection's hooks run as coroutines only to
    /// wait for the ClientHello (set at each resume).
    pub(crate) requests: Cell<bool>,
    /// The depth limit was met and logged (once per VM).
    loop_logged: Cell<bool>,
}

impl Default for WaitingThread {
    fn default() -> Self {
        WaitingThread {
            thread: Cell::new(std::ptr::null()),
            marking: Cell::new(false),
            origin: Cell::new(Origin::default()),
            requests: Cell::new(false),
            loop_logged: Cell::new(false),
        }
    }
}

impl CanWait {
    /// The running Lua thread may wait (one pointer comparison, and a
    /// reference to the running thread made only while a hook may wait).
    pub(crate) fn here(&self, lua: &Lua) -> bool {
        let waiting = self.0.thread.get();
        !waiting.is_null() && lua.current_thread().to_pointer() == waiting
    }
}

/// Where `register` keeps `mark`.
const MARK_KEY: &str = "pocket.subrequest.mark";

/// `f` with a first step that tells Pocket which Lua thread runs it: mlua
/// runs `call_async` in a thread of its own choosing (and recycles it,
/// which also drops a waiting sub-request at once when the call is given
/// up), so the thread is learnt at the first resume.
pub fn marked(lua: &Lua, f: &mlua::Function) -> mlua::Result<mlua::Function> {
    let mark: mlua::Function = lua.named_registry_value(MARK_KEY)?;
    lua.load("local mark, f = ... return function(...) mark() return f(...) end")
        .set_name("=pocket-subrequest")
        .set_mode(mlua::chunk::ChunkMode::Text)
        .call((mark, f))
}

/// The policy whose pools `opts.pool` names (set once the policy is
/// loaded in this VM).
pub struct PoolsOf(pub Arc<Policy>);

/// What a sub-request outside a waiting `on_request` gets.
const NOT_RUN: &str = "not run: sub-requests are made only by on_request in a running Pocket, \
in a policy that names `http` (not by other hooks or a coroutine of the script's, \
nor by pocket test or pocket explain)";

/// Where a call goes, as the script named it.
enum To {
    /// `http://host:port/path`.
    Url { host: String, port: u16 },
    /// `opts.pool`: a server of that pool.
    Pool(String),
}

/// What a call does.
enum Exchange {
    Http {
        method: http::Method,
        path: String,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: Vec<u8>,
    },
    Tcp {
        bytes: Vec<u8>,
        all: bool,
    },
}

struct Call {
    to: To,
    exchange: Exchange,
    timeout: Duration,
}

/// Installs the global `http` (also `require("pocket.http")`).
pub fn register(lua: &Lua) -> mlua::Result<()> {
    lua.set_app_data(CanWait::default());
    let mark = lua.create_function(|lua, ()| {
        if let Some(c) = lua.app_data_ref::<CanWait>() {
            if c.0.marking.replace(false) {
                c.0.thread.set(lua.current_thread().to_pointer());
            }
        }
        Ok(())
    })?;
    lua.set_named_registry_value(MARK_KEY, mark)?;
    let http = lua.create_table()?;
    http.set(
        "get",
        lua.create_async_function(|lua, (url, opts): (Value, Value)| {
            let call = get_call(&url, &opts);
            run(lua, call)
        })?,
    )?;
    http.set(
        "request",
        lua.create_async_function(|lua, spec: Value| {
            let call = request_call(&spec);
            run(lua, call)
        })?,
    )?;
    http.set(
        "tcp",
        lua.create_async_function(|lua, (addr, bytes, opts): (Value, Value, Value)| {
            let call = tcp_call(&addr, &bytes, &opts);
            run(lua, call)
        })?,
    )?;
    // Named in package.loaded, tracebacks name the functions as the docs
    // do (`http.get`), which errors.rs uses for a bad argument.
    let package: Option<Table> = lua.globals().get("package").ok();
    if let Some(loaded) = package.and_then(|p| p.get::<Table>("loaded").ok()) {
        loaded.set("http", &http)?;
        loaded.set("pocket.http", &http)?;
    }
    lua.globals().set("http", http)
}

/// The call's future: its arguments were checked when it was made (a bad
/// one raises); whether it may wait is decided then too.
fn run(
    lua: Lua,
    call: mlua::Result<Call>,
) -> impl std::future::Future<Output = mlua::Result<(Value, Value)>> {
    let (can_wait, origin) = lua
        .app_data_ref::<CanWait>()
        .map(|c| (c.0.requests.get() && c.here(&lua), c.0.origin.get()))
        .unwrap_or_default();
    let policy = lua.app_data_ref::<PoolsOf>().map(|p| p.0.clone());
    let too_deep = can_wait && origin.depth >= MAX_DEPTH;
    if too_deep && call.is_ok() {
        log_loop(&lua, origin);
    }
    async move {
        let call = call?;
        if !can_wait {
            return Ok((Value::Nil, Value::String(lua.create_string(NOT_RUN)?)));
        }
        if too_deep {
            let why = format!(
                "sub-request loop: depth {MAX_DEPTH} reached (a sub-request to Pocket itself?)"
            );
            return Ok((Value::Nil, Value::String(lua.create_string(why)?)));
        }
        let timeout = call.timeout;
        // The whole exchange (resolve, connect, PROXY header, TLS, the
        // answer) under one deadline.
        let out = tokio::time::timeout(timeout, exchange(call, policy, origin)).await;
        let out = match out {
            Ok(out) => out,
            Err(_) => Err(format!(
                "timed out after {}s",
                seconds(timeout.as_secs_f64())
            )),
        };
        match out {
            Ok(Reply::Http(a)) => {
                let t = lua.create_table_with_capacity(0, 3)?;
                t.set("status", a.status)?;
                let h = lua.create_table_with_capacity(0, a.headers.len())?;
                for (k, v) in a.headers {
                    h.set(k, lua.create_string(v)?)?;
                }
                t.set("headers", h)?;
                t.set("body", lua.create_string(&a.body)?)?;
                Ok((Value::Table(t), Value::Nil))
            }
            Ok(Reply::Tcp(bytes)) => Ok((Value::String(lua.create_string(bytes)?), Value::Nil)),
            Err(why) => Ok((Value::Nil, Value::String(lua.create_string(why)?))),
        }
    }
}

/// The first time in this VM a sub-request meets the depth limit: a
/// warning naming the script's line that made it.
fn log_loop(lua: &Lua, origin: Origin) {
    let Some(c) = lua.app_data_ref::<CanWait>() else {
        return;
    };
    if c.0.loop_logged.replace(true) {
        return;
    }
    let at = caller(lua).unwrap_or_else(|| "on_request".into());
    let request = origin.request.map(|r| r.to_string()).unwrap_or_default();
    tracing::warn!(
        request = %request,
        "{at}: sub-request loop: depth {MAX_DEPTH} reached (each sub-request carries {DEPTH_HEADER}; \
    a sub-request to Pocket itself?); such sub-requests get an error value (logged once)"
    );
}

/// The script's `path:line` that called the running function.
fn caller(lua: &Lua) -> Option<String> {
    for level in 0..16 {
        let found = lua.inspect_stack(level, |d| {
            let src = d.source().source.as_deref().unwrap_or("").to_string();
            (src, d.current_line())
        })?;
        if let (Some(path), Some(line)) = (found.0.strip_prefix('@'), found.1) {
            return Some(format!("{path}:{line}"));
        }
    }
    None
}

enum Reply {
    Http(client::Answer),
    Tcp(Vec<u8>),
}

async fn exchange(
    call: Call,
    policy: Option<Arc<Policy>>,
    origin: Origin,
) -> Result<Reply, String> {
    let target = match call.to {
        To::Url { host, port } => {
            let addr = client::resolve(&host, port).await?;
            let host = if port == 80 {
                host
            } else if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            Target {
                addr,
                host,
                proxy: None,
                tls: None,
            }
        }
        To::Pool(name) => client::pool_server(&policy, &name, origin.client)?,
    };
    match call.exchange {
        Exchange::Http {
            method,
            path,
            mut headers,
            body,
        } => {
            // Pocket's own count, never the script's.
            let name = http::HeaderName::from_static(DEPTH_HEADER);
            headers.retain(|(n, _)| *n != name);
            headers.push((name, http::HeaderValue::from(origin.depth + 1)));
            client::http(&target, method, &path, headers, body)
                .await
                .map(Reply::Http)
        }
        Exchange::Tcp { bytes, all } => client::tcp(&target, &bytes, all).await.map(Reply::Tcp),
    }
}

/// Seconds as a user wrote them: `1`, `0.5` (not Lua's `1.0`).
fn seconds(secs: f64) -> String {
    let text = crate::config::lua_float(secs);
    match text.strip_suffix(".0") {
        Some(whole) => whole.to_string(),
        None => text,
    }
}

fn bad(func: &str, n: u8, what: String) -> mlua::Error {
    mlua::Error::RuntimeError(format!("bad argument #{n} to '{func}': {what}"))
}

/// A string argument or option (bytes as they are).
fn bytes_of(func: &str, n: u8, what: &str, v: &Value) -> mlua::Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(_) | Value::Number(_) => Ok(v.to_string()?.into_bytes()),
        other => Err(bad(
            func,
            n,
            format!("expected {what}, got {}", returned(other)),
        )),
    }
}

fn text_of(func: &str, n: u8, what: &str, v: &Value) -> mlua::Result<String> {
    let b = bytes_of(func, n, what, v)?;
    String::from_utf8(b).map_err(|_| bad(func, n, format!("{what} is not UTF-8 text")))
}

/// The options table's fields, checked against `known` (a misspelt
/// option is an error, not silently ignored).
fn options(func: &str, n: u8, v: &Value, known: &[&str]) -> mlua::Result<Option<Table>> {
    let t = match v {
        Value::Nil => return Ok(None),
        Value::Table(t) => t.clone(),
        other => {
            return Err(bad(
                func,
                n,
                format!("expected a table of options, got {}", returned(other)),
            ))
        }
    };
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let name = match &k {
            Value::String(s) => s.to_string_lossy(),
            other => {
                return Err(bad(
                    func,
                    n,
                    format!("option names are strings, got {}", returned(other)),
                ))
            }
        };
        if !known.contains(&name.as_str()) {
            return Err(bad(
                func,
                n,
                format!("unknown option \"{name}\" (options: {})", known.join(", ")),
            ));
        }
    }
    Ok(Some(t))
}

fn timeout_of(func: &str, n: u8, t: &Option<Table>) -> mlua::Result<Duration> {
    let Some(t) = t else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let v: Value = t.raw_get("timeout")?;
    let secs = match v {
        Value::Nil => return Ok(DEFAULT_TIMEOUT),
        Value::Integer(i) => i as f64,
        Value::Number(x) => x,
        ref other => {
            return Err(bad(
                func,
                n,
                format!(
                    "timeout: expected a number of seconds, got {}",
                    returned(other)
                ),
            ))
        }
    };
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        return Err(bad(
            func,
            n,
            format!(
                "timeout: expected seconds above 0 and at most {}, got {}",
                MAX_TIMEOUT_SECS,
                seconds(secs)
            ),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Text for a message on one line: control characters escaped (`\r`,
/// `\n`, `\x00`), the rest as it is.
pub(crate) fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `opts.headers`, each name and value checked here: a bad one is the
/// script's mistake, raised at its line.
fn headers_of(
    func: &str,
    n: u8,
    t: &Option<Table>,
) -> mlua::Result<Vec<(http::HeaderName, http::HeaderValue)>> {
    let Some(t) = t else { return Ok(Vec::new()) };
    let v: Value = t.raw_get("headers")?;
    let h = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Table(h) => h,
        ref other => {
            return Err(bad(
                func,
                n,
                format!("headers: expected a table, got {}", returned(other)),
            ))
        }
    };
    let mut out = Vec::new();
    for pair in h.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let name = text_of(func, n, "a header name (a string)", &k)?;
        let value = bytes_of(func, n, "a header value (a string)", &v)?;
        let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            bad(
                func,
                n,
                format!(
                    "headers: bad header name \"{}\" (letters, digits and !#$%&'*+-.^_`|~ only)",
                    shown(&name)
                ),
            )
        })?;
        let value = http::HeaderValue::from_bytes(&value).map_err(|_| {
            bad(
                func,
                n,
                format!(
                    "headers: bad value for header \"{name}\" (\"{}\": no CR, LF or other control characters)",
                    shown(&String::from_utf8_lossy(&value))
                ),
            )
        })?;
        out.push((name, value));
    }
    Ok(out)
}

/// A URL, or with `opts.pool` a path.
fn to_of(func: &str, n: u8, url: &str, pool: Option<String>) -> mlua::Result<(To, String)> {
    let (to, path) = match pool {
        Some(pool) => {
            if !url.starts_with('/') {
                return Err(bad(
                    func,
                    n,
                    format!(
                        "with a pool, expected a path starting with \"/\", got \"{}\"",
                        shown(url)
                    ),
                ));
            }
            // As for a URL, a #fragment is not sent.
            let path = url.split('#').next().unwrap_or(url);
            (To::Pool(pool), path.to_string())
        }
        None => {
            let (host, port, path) = client::parse_url(url).map_err(|e| bad(func, n, e))?;
            (To::Url { host, port }, path)
        }
    };
    // What a request line may carry (RFC 9112 §3.2): a space or a
    // control character is the script's mistake, not the network's.
    if path.parse::<http::uri::PathAndQuery>().is_err() || path.contains(' ') {
        return Err(bad(
            func,
            n,
            format!(
                "the path \"{}\" has a character a URL cannot carry (a space or a control character: percent-encode it)",
                shown(&path)
            ),
        ));
    }
    Ok((to, path))
}

fn pool_of(func: &str, n: u8, t: &Option<Table>) -> mlua::Result<Option<String>> {
    let Some(t) = t else { return Ok(None) };
    match t.raw_get::<Value>("pool")? {
        Value::Nil => Ok(None),
        v => text_of(func, n, "pool: a pool name (a string)", &v).map(Some),
    }
}

fn get_call(url: &Value, opts: &Value) -> mlua::Result<Call> {
    const F: &str = "http.get";
    let url = text_of(F, 1, "a URL (a string)", url)?;
    let opts = options(F, 2, opts, &["timeout", "headers", "pool"])?;
    let (to, path) = to_of(F, 1, &url, pool_of(F, 2, &opts)?)?;
    Ok(Call {
        to,
        timeout: timeout_of(F, 2, &opts)?,
        exchange: Exchange::Http {
            method: http::Method::GET,
            path,
            headers: headers_of(F, 2, &opts)?,
            body: Vec::new(),
        },
    })
}

fn request_call(spec: &Value) -> mlua::Result<Call> {
    const F: &str = "http.request";
    let known = ["method", "url", "pool", "headers", "body", "timeout"];
    let Some(opts) = options(F, 1, spec, &known)? else {
        return Err(bad(
            F,
            1,
            "expected a table { method =, url =, headers =, body =, timeout = }, got nil".into(),
        ));
    };
    let method = match opts.raw_get::<Value>("method")? {
        Value::Nil => http::Method::GET,
        v => {
            let m = text_of(F, 1, "method: a string", &v)?;
            http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| bad(F, 1, format!("method: \"{m}\" is not an HTTP method")))?
        }
    };
    let url = match opts.raw_get::<Value>("url")? {
        Value::Nil => {
            return Err(bad(
                F,
                1,
                "url: missing (an http:// URL, or a path with pool)".into(),
            ))
        }
        v => text_of(F, 1, "url: a string", &v)?,
    };
    let body = match opts.raw_get::<Value>("body")? {
        Value::Nil => Vec::new(),
        v => bytes_of(F, 1, "body: a string", &v)?,
    };
    let opts = Some(opts);
    let (to, path) = to_of(F, 1, &url, pool_of(F, 1, &opts)?)?;
    Ok(Call {
        to,
        timeout: timeout_of(F, 1, &opts)?,
        exchange: Exchange::Http {
            method,
            path,
            headers: headers_of(F, 1, &opts)?,
            body,
        },
    })
}

fn tcp_call(addr: &Value, bytes: &Value, opts: &Value) -> mlua::Result<Call> {
    const F: &str = "http.tcp";
    let opts = options(F, 3, opts, &["timeout", "pool", "all"])?;
    let pool = pool_of(F, 3, &opts)?;
    let to = match (addr, pool) {
        (Value::Nil, Some(pool)) => To::Pool(pool),
        (Value::Nil, None) => {
            return Err(bad(
                F,
                1,
                "expected an address \"host:port\" (or nil with opts.pool), got nil".into(),
            ))
        }
        (_, Some(_)) => return Err(bad(F, 1, "give an address or opts.pool, not both".into())),
        (v, None) => {
            let text = text_of(F, 1, "an address \"host:port\"", v)?;
            let (host, port) = client::split_host_port(&text, 0)
                .and_then(|(h, p)| {
                    if p == 0 {
                        Err(format!("no port in \"{text}\""))
                    } else {
                        Ok((h, p))
                    }
                })
                .map_err(|e| bad(F, 1, e))?;
            To::Url { host, port }
        }
    };
    let bytes = match bytes {
        Value::Nil => Vec::new(),
        v => bytes_of(F, 2, "the bytes to send (a string)", v)?,
    };
    let all = match &opts {
        Some(t) => match t.raw_get::<Value>("all")? {
            Value::Nil | Value::Boolean(false) => false,
            Value::Boolean(true) => true,
            other => {
                return Err(bad(
                    F,
                    3,
                    format!("all: expected a boolean, got {}", returned(&other)),
                ))
            }
        },
        None => false,
    };
    Ok(Call {
        to,
        timeout: timeout_of(F, 3, &opts)?,
        exchange: Exchange::Tcp { bytes, all },
    })
}

#[cfg(test)]
mod tests {
    use super::client::parse_url;

    #[test]
    fn seconds_read_as_written() {
        assert_eq!(super::seconds(1.0), "1");
        assert_eq!(super::seconds(0.3), "0.3");
        assert_eq!(super::seconds(60.0), "60");
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/auth?x=1").unwrap(),
            ("127.0.0.1".into(), 8080, "/auth?x=1".into())
        );
        assert_eq!(
            parse_url("http://auth.local").unwrap(),
            ("auth.local".into(), 80, "/".into())
        );
        assert_eq!(
            parse_url("http://[::1]:81?q").unwrap(),
            ("::1".into(), 81, "/?q".into())
        );
        assert!(parse_url("https://x/")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(parse_url("/auth").is_err());
        assert!(parse_url("http://x:0/").is_err());
        assert!(parse_url("http:///p").is_err());
        // A fragment is never sent; userinfo is named as what is refused.
        assert_eq!(
            parse_url("http://127.0.0.1:19001#frag").unwrap(),
            ("127.0.0.1".into(), 19001, "/".into())
        );
        assert_eq!(parse_url("http://h/p?q#f").unwrap().2, "/p?q");
        assert!(parse_url("http://user:pw@127.0.0.1:19001/x")
            .unwrap_err()
            .starts_with("user:password@ in a URL is not supported"));
        // Control characters are escaped: a message stays one line.
        assert!(parse_url("http://a\r\nb/")
            .unwrap_err()
            .contains("bad host \"a\\r\\nb\""));
    }
}
