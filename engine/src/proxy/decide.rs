//! Phase 2, where a request goes: refused outright, answered by the
//! script, or a pool (with the hash key and the script's choice of server
//! if the pool has them). `pocket test` runs this same function, with no
//! network, so what a test shows is what the proxy does.

use http::StatusCode;

use super::{forward, target};
use crate::wire::fields;
use std::time::Instant;

use crate::explain::{NoTrace, Tracer};
use crate::lb::{hash_bytes, HashKey};
use crate::script::api::local::LocalResponse;
use crate::script::api::request::RequestView;
use crate::script::hooks::{Decision, HookError};
use crate::script::WorkerScript;

pub enum Route {
    /// Answer with this, made by the script.
    Local(LocalResponse),
    /// Answer with an error (already logged).
    Refuse(StatusCode, String),
    /// Answer with an error (already logged): the script met its time
    /// budget or memory limit.
    OverLimit(StatusCode, String),
    /// Forward to a pool.
    Pool {
        pool: usize,
        key: Option<u64>,
        preferred: Option<usize>,
    },
}

fn script_failed(view: &RequestView, e: HookError) -> Route {
    tracing::error!(request = %view.id, hook = e.hook, "{}", e.message);
    let why = "the policy script failed on this request (see the log for this request id)";
    if e.limit {
        return Route::OverLimit(StatusCode::INTERNAL_SERVER_ERROR, why.into());
    }
    Route::Refuse(StatusCode::INTERNAL_SERVER_ERROR, why.into())
}

pub fn decide(script: &WorkerScript, view: &mut RequestView) -> Route {
    decide_traced(script, view, &mut NoTrace)
}

/// [`decide`], telling `t` each step (`pocket explain`). With [`NoTrace`]
/// every `if T::ON` block is compiled out: this is `decide` itself.
#[inline]
pub fn decide_traced<T: Tracer>(script: &WorkerScript, view: &mut RequestView, t: &mut T) -> Route {
    if let Some(route) = screen(view, t) {
        return route;
    }
    let started = (T::ON && script.runs("on_request", 0)).then(Instant::now);
    let decision = script.on_request(view);
    after_on_request(script, view, decision, started, t, false)
}

/// [`decide`] for a policy whose `on_request` may wait on sub-requests
/// (`WorkerScript::waits`): the hook runs as a coroutine and the worker
/// serves other requests while it waits. Everything else is the same.
/// `local`: the address the client connected to, for the PROXY header of
/// a sub-request through a `send_proxy` pool.
pub async fn decide_waiting(
    script: &WorkerScript,
    view: &mut RequestView,
    local: std::net::SocketAddr,
) -> Route {
    let t = &mut NoTrace;
    if let Some(route) = screen(view, t) {
        return route;
    }
    let decision = script.on_request_waiting(view, local).await;
    let route = after_on_request(script, view, decision, None, t, true);
    // A `balance` function that may wait on a Redis store runs here, as
    // a coroutine (the rest of the decision is the same).
    match route {
        Route::Pool {
            pool,
            key,
            preferred: None,
        } if script.balance_waits(pool) => {
            let preferred = match script.choose_server_waiting(pool, view).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(request = %view.id, hook = e.hook, "{}; round robin decides", e.message);
                    None
                }
            };
            Route::Pool {
                pool,
                key,
                preferred,
            }
        }
        route => route,
    }
}

/// What is refused before the script sees the request, and the settled
/// host and path.
#[inline]
fn screen<T: Tracer>(view: &mut RequestView, t: &mut T) -> Option<Route> {
    if let Some((status, why)) = forward::refuse(&view.head) {
        tracing::info!(request = %view.id, peer = %view.peer, "refused: {why}");
        if T::ON {
            t.answered(status.as_u16(), false, why);
        }
        return Some(Route::Refuse(status, why.into()));
    }
    match target::settle(&mut view.head) {
        Ok(raw) => view.raw_target = raw,
        Err(why) => {
            tracing::info!(request = %view.id, peer = %view.peer, "refused: {why}");
            if T::ON {
                t.answered(400, false, why);
            }
            return Some(Route::Refuse(StatusCode::BAD_REQUEST, why.into()));
        }
    }
    None
}

/// The rest of the decision, from what `on_request` decided (`started`:
/// when it began, for the trace).
#[inline]
fn after_on_request<T: Tracer>(
    script: &WorkerScript,
    view: &mut RequestView,
    decision: Result<Decision, HookError>,
    started: Option<Instant>,
    t: &mut T,
    balance_later: bool,
) -> Route {
    if let Some(started) = started {
        let returned = match &decision {
            Ok(Decision::Pool(i)) => format!("pool \"{}\"", script.policy.pools[*i].name),
            Ok(Decision::Respond(r)) => format!("a {} response", r.status.as_u16()),
            Ok(Decision::Default) => "nil".into(),
            Err(e) => format!("an error: {}", e.message),
        };
        t.hook("on_request", None, started.elapsed(), returned);
    }
    let (pool, why) = match decision {
        Ok(Decision::Pool(i)) => (i, "on_request chose it"),
        Ok(Decision::Respond(r)) => {
            if T::ON {
                t.answered(r.status.as_u16(), true, "made by on_request");
            }
            return Route::Local(r);
        }
        Ok(Decision::Default) => match default_pool(script, &view.listener) {
            Some(i) => (i, "the listener's default pool"),
            None => {
                let why = format!(
                    "no pool for this request: on_request chose none and listener \"{}\" has no default pool",
                    view.listener
                );
                tracing::warn!(request = %view.id, "{why}");
                if T::ON {
                    t.answered(503, false, &why);
                }
                return Route::Refuse(StatusCode::SERVICE_UNAVAILABLE, why);
            }
        },
        Err(e) => {
            let route = script_failed(view, e);
            if T::ON {
                if let Route::Refuse(status, why) | Route::OverLimit(status, why) = &route {
                    t.answered(status.as_u16(), false, why);
                }
            }
            return route;
        }
    };
    let started = (T::ON && script.runs("bypass", pool)).then(Instant::now);
    let bypassed = script.bypass(pool, view);
    if let Some(started) = started {
        let returned = match &bypassed {
            Ok(Some(f)) => format!(
                "true: go to fallback pool \"{}\"",
                script.policy.pools[*f].name
            ),
            Ok(None) => "false".into(),
            Err(e) => format!("an error: {}", e.message),
        };
        let name = &script.policy.pools[pool].name;
        t.hook("bypass", Some(name), started.elapsed(), returned);
    }
    let (pool, why) = match bypassed {
        Ok(Some(fallback)) => (fallback, "the bypass of the pool chosen sent it here"),
        Ok(None) => (pool, why),
        Err(e) => {
            let route = script_failed(view, e);
            if T::ON {
                if let Route::Refuse(status, why) | Route::OverLimit(status, why) = &route {
                    t.answered(status.as_u16(), false, why);
                }
            }
            return route;
        }
    };
    if T::ON {
        let p = &script.policy.pools[pool];
        t.pool(&p.name, p.balance_name(), why);
    }
    let key = match hash_key(script, pool, view, t) {
        Ok(k) => k,
        Err(e) => {
            // A failing key function costs the request its stickiness, not
            // its answer: it is balanced by round robin instead.
            tracing::warn!(request = %view.id, hook = e.hook, "{}; balancing without a key", e.message);
            None
        }
    };
    let started = (T::ON && script.runs("balance", pool)).then(Instant::now);
    // `balance_later`: the caller runs a waiting `balance` itself.
    let chosen = if balance_later && script.balance_waits(pool) {
        Ok(None)
    } else {
        script.choose_server(pool, view)
    };
    if let Some(started) = started {
        let p = &script.policy.pools[pool];
        let returned = match &chosen {
            Ok(Some(i)) => format!("server {}", p.servers[*i].addr_text),
            Ok(None) => "nil (round robin decides)".into(),
            Err(e) => format!("an error: {}; round robin decides", e.message),
        };
        t.hook("balance", Some(&p.name), started.elapsed(), returned);
    }
    let preferred = match chosen {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(request = %view.id, hook = e.hook, "{}; round robin decides", e.message);
            None
        }
    };
    Route::Pool {
        pool,
        key,
        preferred,
    }
}

fn default_pool(script: &WorkerScript, listener: &str) -> Option<usize> {
    let policy = &script.policy;
    policy
        .listener(listener)
        .or_else(|| policy.listeners.first().filter(|_| listener.is_empty()))
        .and_then(|l| l.default_pool)
}

/// The hash of what a `hash` pool keys on, or None (round robin).
fn hash_key<T: Tracer>(
    script: &WorkerScript,
    pool: usize,
    view: &mut RequestView,
    t: &mut T,
) -> Result<Option<u64>, HookError> {
    let Some(kind) = &script.policy.pools[pool].hash_key else {
        return Ok(None);
    };
    if let HashKey::Script = kind {
        let started = T::ON.then(Instant::now);
        let key = script.hash_key(pool, view);
        if let Some(started) = started {
            let returned = match &key {
                Ok(Some(k)) => format!("{:?}", String::from_utf8_lossy(k)),
                Ok(None) => "nil".into(),
                Err(e) => format!("an error: {}", e.message),
            };
            let name = &script.policy.pools[pool].name;
            t.hook("hash_key", Some(name), started.elapsed(), returned);
            if let Ok(k) = &key {
                let value = k
                    .as_ref()
                    .map(|k| format!("{:?}", String::from_utf8_lossy(k)));
                t.hash_key("the pool's hash_key function".into(), value);
            }
        }
        return Ok(key?.map(|k| hash_bytes(&k)));
    }
    if T::ON {
        let (what, value) = describe_key(kind, view);
        t.hash_key(what, value);
    }
    let headers = &view.head.headers;
    let hashed = |b: &[u8]| Some(hash_bytes(b));
    Ok(match kind {
        HashKey::Source => {
            // The address as text (what keys have always been), written on
            // the stack: no allocation per request.
            let mut text = [0u8; 64];
            let mut rest = &mut text[..];
            let _ = std::io::Write::write_fmt(
                &mut rest,
                format_args!("{}", forward::canonical_ip(view.peer.ip())),
            );
            let n = 64 - rest.len();
            hashed(&text[..n])
        }
        HashKey::Uri => hashed(
            view.head
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes(),
        ),
        HashKey::Path => hashed(view.head.uri.path().as_bytes()),
        HashKey::Host => view
            .host()
            .and_then(|h| hashed(h.to_ascii_lowercase().as_bytes())),
        HashKey::Header(name) => fields::combined(headers, name).and_then(|v| hashed(&v)),
        HashKey::Cookie(name) => headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then(|| hash_bytes(v.as_bytes()))
            }),
        // Handled above, with its own trace.
        HashKey::Script => None,
    })
}

/// What a `hash` pool keys on and this request's value of it, in the
/// policy's words (`cookie "sid"`, `"42"`): for `pocket explain` only.
fn describe_key(kind: &HashKey, view: &RequestView) -> (String, Option<String>) {
    let headers = &view.head.headers;
    let shown = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(b));
    match kind {
        HashKey::Source => (
            "the client's address (source)".into(),
            Some(forward::canonical_ip(view.peer.ip()).to_string()),
        ),
        HashKey::Uri => (
            "path and query (uri)".into(),
            Some(shown(
                view.head
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .as_bytes(),
            )),
        ),
        HashKey::Path => ("path".into(), Some(shown(view.head.uri.path().as_bytes()))),
        HashKey::Host => (
            "host".into(),
            view.host()
                .map(|h| shown(h.to_ascii_lowercase().as_bytes())),
        ),
        HashKey::Header(name) => (
            format!("header {name}"),
            fields::combined(headers, name).map(|v| shown(&v)),
        ),
        HashKey::Cookie(name) => (
            format!("cookie {name}"),
            headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    (k == name).then(|| shown(v.as_bytes()))
                }),
        ),
        HashKey::Script => ("the pool's hash_key function".into(), None),
    }
}
