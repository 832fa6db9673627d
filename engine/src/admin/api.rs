//! Routing and the JSON API of the admin listener.
//!
//! - `GET /`: the stats page; `GET /metrics`: Prometheus text.
//! - `GET /api/status`: the generation, the last reload, listeners,
//!   pools and servers with their states and counters.
//! - `POST /api/pools/{pool}/servers/{server}/state` `{"state":"drain"}`
//!   (`ready`, `drain`, `maint`): as `pocket.server():set_state`, kept
//!   across reloads.
//! - `POST /api/pools/{pool}/servers/{server}/weight` `{"weight":N}`.
//! - `POST /api/reload`: `{"generation":N}` or `{"error":"path:line: ..."}`.
//!
//! A POST must come from no web page but the listener's own (see
//! `csrf`) and say `Content-Type: application/json`.
//!
//! Errors are `{"error": "..."}`: 401 without the token, 404 for an
//! unknown pool or server (naming the ones that exist), 400 for a body
//! that is not what the action takes (saying what it takes).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::auth::{self, Verdict};
use super::{csrf, json};
use super::{Command, Shared, View};
use crate::config::{AdminSpec, Mode};
use crate::lb::{AdminState, Pool, Server};

/// The largest action body read, bytes.
const MAX_BODY: usize = 16 * 1024;
/// The most a weight may be (as the policy's `weight`).
const MAX_WEIGHT: u32 = 256;

type Answer = Response<Full<Bytes>>;

pub async fn answer(
    req: hyper::Request<Incoming>,
    spec: &AdminSpec,
    shared: &Shared,
    _peer: SocketAddr,
) -> Answer {
    let verdict = auth::check(spec.token.as_deref(), req.headers(), req.uri().query());
    if matches!(
        verdict,
        Verdict::Missing | Verdict::Mismatch | Verdict::NotBearer
    ) {
        let why = match verdict {
            Verdict::Mismatch => "the token does not match admin.token: send Authorization: Bearer TOKEN with the policy's token",
            Verdict::NotBearer => "the Authorization header must be \"Bearer TOKEN\" (the word Bearer, a space, then admin.token)",
            _ => "the admin listener wants its token: send Authorization: Bearer TOKEN (a browser: open /?token=TOKEN once)",
        };
        let mut a = error(StatusCode::UNAUTHORIZED, why);
        a.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"pocket admin\""),
        );
        return a;
    }
    if spec.token.is_none() && !auth::host_is_local(req.headers()) {
        return error(
            StatusCode::FORBIDDEN,
            "without admin.token the admin listener answers requests for localhost or an IP address only (a web page cannot reach it through a name of its own)",
        );
    }
    if req.method() == Method::POST {
        if let Err(a) = csrf::check(req.headers()) {
            return a;
        }
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let mut answer = match (&method, segments.as_slice()) {
        (&Method::GET | &Method::HEAD, [""]) => page(),
        (&Method::GET | &Method::HEAD, ["metrics"]) => ok(
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics::text(),
        ),
        (&Method::GET | &Method::HEAD, ["api", "status"]) => {
            ok("application/json", status_json(&shared.view()))
        }
        (&Method::POST, ["api", "reload"]) => reload(shared).await,
        (&Method::POST, ["api", "pools", pool, "servers", server, action]) => {
            let action = action.to_string();
            let (pool, server) = (pool.to_string(), server.to_string());
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(a) => return a,
            };
            server_action(shared, &pool, &server, &action, &body).await
        }
        (_, [""] | ["metrics"] | ["api", "status"] | ["api", "reload"])
        | (_, ["api", "pools", _, "servers", _, _]) => {
            let mut a = error(StatusCode::METHOD_NOT_ALLOWED, &format!("{method} is not allowed on {path}"));
            let allow = if path.starts_with("/api/pools") || path == "/api/reload" { "POST" } else { "GET, HEAD" };
            a.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
            a
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no {path} here: the admin listener serves /, /metrics, GET /api/status, POST /api/reload, POST /api/pools/POOL/servers/SERVER/state and .../weight"),
        ),
    };
    if let Verdict::AllowedSetCookie(cookie) = verdict {
        if let Ok(v) = header::HeaderValue::from_str(&cookie) {
            answer.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    answer
}

fn ok(content_type: &'static str, body: String) -> Answer {
    let mut a = Response::new(Full::new(Bytes::from(body)));
    a.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    a.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    a.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    // The page has buttons: no other site may frame it (clickjacking).
    a.headers_mut().insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    a
}

pub(super) fn error(status: StatusCode, message: &str) -> Answer {
    let mut a = ok(
        "application/json",
        format!("{{\"error\":{}}}\n", json::string(message)),
    );
    *a.status_mut() = status;
    a
}

fn page() -> Answer {
    let mut a = ok("text/html; charset=utf-8", super::page::HTML.to_string());
    // The page loads nothing from anywhere else.
    a.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'",
        ),
    );
    a
}

/// How long an action's body may take to arrive: a client that sends
/// it slowly holds one of the listener's few connection slots, and
/// enough of them would leave none for `/metrics` and the page.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[allow(clippy::result_large_err)]
async fn read_body(req: hyper::Request<Incoming>) -> Result<String, Answer> {
    let collected = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    .map_err(|_| {
        let mut a = error(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        );
        // The rest of the body may still come: not on this connection.
        a.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        a
    })?
    .map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("the body could not be read whole (at most {MAX_BODY} bytes)"),
        )
    })?;
    String::from_utf8(collected.to_bytes().to_vec())
        .map_err(|_| error(StatusCode::BAD_REQUEST, "the body is not UTF-8 JSON"))
}

/// `%XX` sequences decoded (a server's `127.0.0.1:9001` may come as
/// `127.0.0.1%3A9001`); anything else as it is.
pub fn percent_decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Two hex digits, no sign (`u8::from_str_radix` takes "+1").
        if b[i] == b'%' && i + 2 < b.len() && b[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit) {
            if let Some(n) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(n);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pool and server an action names, or a 404 naming those that exist.
#[allow(clippy::result_large_err)] // once per action, never on the proxy's path
fn find<'a>(view: &'a View, pool: &str, server: &str) -> Result<(&'a Pool, &'a Server), Answer> {
    let Some(p) = view.policy.pools.iter().find(|p| &*p.name == pool) else {
        let names: Vec<&str> = view.policy.pools.iter().map(|p| &*p.name).collect();
        return Err(error(
            StatusCode::NOT_FOUND,
            &format!("no pool \"{pool}\" (pools: {})", list(&names)),
        ));
    };
    let Some(s) = p.servers.iter().find(|s| &*s.addr_text == server) else {
        let names: Vec<&str> = p.servers.iter().map(|s| &*s.addr_text).collect();
        return Err(error(
            StatusCode::NOT_FOUND,
            &format!(
                "no server \"{server}\" in pool \"{pool}\" (servers: {})",
                list(&names)
            ),
        ));
    };
    Ok((p, s))
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

async fn server_action(
    shared: &Shared,
    pool: &str,
    server: &str,
    action: &str,
    body: &str,
) -> Answer {
    let view = shared.view();
    let (_, s) = match find(&view, pool, server) {
        Ok(found) => found,
        Err(a) => return a,
    };
    let fields = match json::flat_object(body) {
        Ok(f) => f,
        Err(why) => {
            let shape = match action {
                "weight" => "{\"weight\": N} (N from 1 to 256)",
                _ => "{\"state\": \"drain\"} (ready, drain or maint)",
            };
            return error(
                StatusCode::BAD_REQUEST,
                &format!("bad JSON ({why}): send {shape}"),
            );
        }
    };
    // A key the action does not take (`{"state":"drain","weight":5}`), or
    // one given twice, would be ignored without a word: refused instead.
    let takes = if action == "weight" {
        "weight"
    } else {
        "state"
    };
    for (i, (k, _)) in fields.iter().enumerate() {
        if fields[..i].iter().any(|(seen, _)| seen == k) {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("\"{k}\" is given twice: send it once"),
            );
        }
        if (action == "state" || action == "weight") && k != takes {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("{action} takes only \"{takes}\", not \"{k}\""),
            );
        }
    }
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    match action {
        "state" => {
            let state = match field("state") {
                Some(json::Value::Str(name)) => AdminState::parse(name),
                _ => None,
            };
            let Some(state) = state else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "send {\"state\": \"ready\"}, {\"state\": \"drain\"} or {\"state\": \"maint\"}",
                );
            };
            s.state.set_admin(state);
            ok(
                "application/json",
                format!(
                    "{{\"pool\":{},\"server\":{},\"admin\":{},\"state\":{}}}\n",
                    json::string(pool),
                    json::string(server),
                    json::string(state.name()),
                    json::string(state_of(s))
                ),
            )
        }
        "weight" => {
            let weight = match field("weight") {
                Some(json::Value::Num(n))
                    if n.fract() == 0.0 && *n >= 1.0 && *n <= MAX_WEIGHT as f64 =>
                {
                    *n as u32
                }
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("send {{\"weight\": N}}, N a whole number from 1 to {MAX_WEIGHT}"),
                    )
                }
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let sent = shared.send(Command::Weight {
                pool: pool.to_string(),
                server: server.to_string(),
                weight,
                reply: tx,
            });
            match (sent, rx.await) {
                (true, Ok(Ok(generation))) => ok(
                    "application/json",
                    format!(
                        "{{\"pool\":{},\"server\":{},\"weight\":{weight},\"generation\":{generation}}}\n",
                        json::string(pool),
                        json::string(server)
                    ),
                ),
                (true, Ok(Err(e))) => error(StatusCode::CONFLICT, &e),
                _ => error(StatusCode::SERVICE_UNAVAILABLE, "Pocket is stopping"),
            }
        }
        other => error(
            StatusCode::NOT_FOUND,
            &format!("no action \"{other}\" on a server: state or weight"),
        ),
    }
}

async fn reload(shared: &Shared) -> Answer {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if !shared.send(Command::Reload(tx)) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "Pocket is stopping");
    }
    match rx.await {
        Ok(Ok(generation)) => ok(
            "application/json",
            format!("{{\"generation\":{generation}}}\n"),
        ),
        // The policy is wrong: the caller's to fix.
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "Pocket is stopping"),
    }
}

/// `up`, `down`, `drain` or `maint`: what a server is to new requests.
/// Maintenance shows over down (HAProxy's MAINT), down over drain.
pub fn state_of(s: &Server) -> &'static str {
    match (s.state.admin(), s.state.is_up()) {
        (AdminState::Maint, _) => "maint",
        (_, false) => "down",
        (AdminState::Drain, true) => "drain",
        (AdminState::Ready, true) => "up",
    }
}

/// `GET /api/status`.
pub fn status_json(view: &View) -> String {
    let p = &view.policy;
    let mut out = format!(
        "{{\"generation\":{},\"policy\":{},\"last_reload\":{{\"ok\":{},\"at\":{},\"error\":{},\"what\":\"{}\"}},\"listeners\":[",
        view.generation,
        json::string(&p.path.display().to_string()),
        view.last_reload.ok,
        json::string(&json::rfc3339(view.last_reload.at_unix_ms)),
        view.last_reload.error.as_deref().map_or("null".into(), json::string),
        if view.last_reload.reloaded { "reload" } else { "start" },
    );
    for (i, l) in p.listeners.iter().enumerate() {
        let bind = view
            .listeners
            .iter()
            .find(|(n, _)| *n == l.name)
            .map_or(l.bind, |(_, a)| *a);
        let pool = l
            .default_pool
            .and_then(|i| p.pools.get(i))
            .map_or("null".into(), |p| json::string(&p.name));
        // An http listener: `pocket_requests_total`'s figures (every
        // answer, and the 5xx). A tcp one: `pocket_tcp_connections_total`'s
        // (every connection, those Pocket refused, those no server took).
        let figures = if l.mode == Mode::Tcp {
            let c = crate::observe::metrics::listener_tcp_counts(&l.name);
            format!(
                "\"connections\":{},\"rejected\":{},\"failed\":{}",
                c.connections, c.rejected, c.failed
            )
        } else {
            let (requests, errors) = crate::observe::metrics::listener_counts(&l.name);
            format!("\"requests\":{requests},\"errors\":{errors}")
        };
        out.push_str(&format!(
            "{}{{\"name\":{},\"mode\":\"{}\",\"bind\":{},\"pool\":{pool},{figures}}}",
            if i > 0 { "," } else { "" },
            json::string(&l.name),
            l.mode.name(),
            json::string(&bind.to_string()),
        ));
    }
    out.push_str("],\"pools\":[");
    for (i, pool) in p.pools.iter().enumerate() {
        out.push_str(&format!(
            "{}{{\"name\":{},\"mode\":\"{}\",\"balance\":{},\"resolve_ms\":{},\"names\":[{}],\"servers\":[",
            if i > 0 { "," } else { "" },
            json::string(&pool.name),
            pool.mode.name(),
            json::string(pool.balance_name()),
            pool.resolve
                .map_or("null".into(), |d| d.as_millis().to_string()),
            // The entries written with a name, and whether each keeps its
            // last addresses because DNS fails it now.
            pool.named
                .iter()
                .map(|n| format!(
                    "{{\"name\":{},\"failing\":{}}}",
                    json::string(&n.text),
                    crate::observe::metrics::dns_failing(&pool.name, &n.text)
                ))
                .collect::<Vec<_>>()
                .join(","),
        ));
        for (j, s) in pool.servers.iter().enumerate() {
            let (last, history) = s.state.health.checks.snapshot();
            let last = last.map_or("null".into(), |c| {
                format!(
                    "{{\"ok\":{},\"at\":{},\"reason\":{}}}",
                    c.ok,
                    json::string(&json::rfc3339(c.at_unix_ms)),
                    json::string(&c.reason)
                )
            });
            // An http pool's server: the figures of
            // `pocket_server_requests_total` (every class, and the 5xx
            // class: what the server answered). A tcp pool's: of
            // `pocket_server_tcp_connections_total` (every connection it
            // took, and those it broke, SD). Both: of
            // `pocket_server_failures_total` (what it failed to serve);
            // see docs/observability.md.
            let figures = if pool.mode == Mode::Tcp {
                let c = s.state.metrics.tcp();
                format!("\"connections\":{},\"broken\":{}", c.connections, c.broken)
            } else {
                format!(
                    "\"requests\":{},\"errors\":{}",
                    s.state.metrics.requests(),
                    s.state.metrics.errors()
                )
            };
            out.push_str(&format!(
                "{}{{\"name\":{},\"addr\":{},\"state\":\"{}\",\"health\":\"{}\",\"admin\":\"{}\",\"backup\":{},\"weight\":{},\"in_flight\":{},{figures},\"failures\":{},\"last_check\":{last},\"history\":{},\"from\":{}}}",
                if j > 0 { "," } else { "" },
                json::string(&s.addr_text),
                json::string(&s.addr.to_string()),
                state_of(s),
                if s.state.is_up() { "up" } else { "down" },
                s.state.admin().name(),
                s.backup,
                s.weight,
                s.state.active.load(Ordering::Relaxed),
                s.state.failures.load(Ordering::Relaxed),
                json::string(&history),
                s.from.as_deref().map_or("null".into(), json::string),
            ));
        }
        out.push_str("]}");
    }
    out.push_str("]}\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding_takes_two_hex_digits_only() {
        assert_eq!(super::percent_decode("127.0.0.1%3A9001"), "127.0.0.1:9001");
        assert_eq!(super::percent_decode("a%2Fb%+1%-1%4"), "a/b%+1%-1%4");
    }
}
