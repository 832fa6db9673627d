//! Phase 2, where a request goes: refused outright, answered by the
//! script, or a pool (with the hash key and the script's choice of server
//! if the pool has them). `pocket test` runs this same function, with no
//! network, so what a test shows is what the proxy does.

use http::StatusCode;

use super::{fields, forward, target};
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
    /// Forward to a pool.
    Pool {
        pool: usize,
        key: Option<u64>,
        preferred: Option<usize>,
    },
}

fn script_failed(view: &RequestView, e: HookError) -> Route {
    tracing::error!(request = %view.id, hook = e.hook, "{}", e.message);
    Route::Refuse(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the policy script failed on this request (see the log for this request id)".into(),
    )
}

pub fn decide(script: &WorkerScript, view: &mut RequestView) -> Route {
    if let Some((status, why)) = forward::refuse(&view.head) {
        tracing::info!(request = %view.id, peer = %view.peer, "refused: {why}");
        return Route::Refuse(status, why.into());
    }
    match target::settle(&mut view.head) {
        Ok(raw) => view.raw_target = raw,
        Err(why) => {
            tracing::info!(request = %view.id, peer = %view.peer, "refused: {why}");
            return Route::Refuse(StatusCode::BAD_REQUEST, why.into());
        }
    }
    let pool = match script.on_request(view) {
        Ok(Decision::Pool(i)) => i,
        Ok(Decision::Respond(r)) => return Route::Local(r),
        Ok(Decision::Default) => match default_pool(script, &view.listener) {
            Some(i) => i,
            None => {
                let why = format!(
                    "no pool for this request: on_request chose none and listener \"{}\" has no default pool",
                    view.listener
                );
                tracing::warn!(request = %view.id, "{why}");
                return Route::Refuse(StatusCode::SERVICE_UNAVAILABLE, why);
            }
        },
        Err(e) => return script_failed(view, e),
    };
    let pool = match script.bypass(pool, view) {
        Ok(Some(fallback)) => fallback,
        Ok(None) => pool,
        Err(e) => return script_failed(view, e),
    };
    let key = match hash_key(script, pool, view) {
        Ok(k) => k,
        Err(e) => {
            // A failing key function costs the request its stickiness, not
            // its answer: it is balanced by round robin instead.
            tracing::warn!(request = %view.id, hook = e.hook, "{}; balancing without a key", e.message);
            None
        }
    };
    let preferred = match script.choose_server(pool, view) {
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
fn hash_key(
    script: &WorkerScript,
    pool: usize,
    view: &mut RequestView,
) -> Result<Option<u64>, HookError> {
    let Some(kind) = &script.policy.pools[pool].hash_key else {
        return Ok(None);
    };
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
        HashKey::Script => script.hash_key(pool, view)?.map(|k| hash_bytes(&k)),
    })
}
