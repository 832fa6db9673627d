//! What the log says after a failed try of a server: only what the proxy
//! does next. A one-server pool used to log "trying another server" before
//! its 502.

use crate::config::Policy;
use crate::lb::Pool;

/// The end of the warning for a failed try of server `failed` (`tried`
/// does not hold it yet): `; trying another server` only when the retry
/// loop will find one (the lab counts those lines as retries).
pub(crate) fn after_failure(
    policy: &Policy,
    pool: &Pool,
    tried: &[usize],
    failed: usize,
) -> String {
    let retries = pool.retries as usize;
    if tried.len() >= retries {
        return match retries {
            0 => "; not retried (the pool has retries = 0)".into(),
            1 => "; not retried (its 1 retry is used)".into(),
            n => format!("; not retried (all {n} retries are used)"),
        };
    }
    let other = (0..pool.servers.len())
        .any(|i| i != failed && !tried.contains(&i) && pool.servers[i].state.takes_traffic());
    if other {
        return "; trying another server".into();
    }
    match pool.fallback_pool() {
        Some(next) => format!(
            "; no other server in pool \"{}\": trying its fallback pool \"{}\"",
            pool.name, policy.pools[next].name
        ),
        None if pool.servers.len() == 1 => {
            format!("; pool \"{}\" has no other server to try", pool.name)
        }
        None => format!("; no other server of pool \"{}\" is left to try", pool.name),
    }
}

/// The answer when no server of `pool` took the request: 503 if none was
/// tried (all down), else 502 with the last failure (`last_error`), and
/// the record's termination: HAProxy's `SC`, or `SH` if the last server
/// took the connection and closed it before a head. Both paths (hyper's,
/// `proxy/mod.rs`, and the direct one, `proxy/h1/forward.rs`) end so.
pub(crate) fn no_server_left(
    pool: &Pool,
    tried: usize,
    last_error: &str,
    id: crate::context::RequestId,
    open: &mut crate::observe::exchange::Open,
) -> (http::StatusCode, String) {
    let why = if tried == 0 && last_error.is_empty() {
        format!(
            "no server of pool \"{}\" is up ({}, all down)",
            pool.name,
            crate::words::count(pool.servers.len() as u64, "server"),
        )
    } else {
        format!(
            "no server of pool \"{}\" could be reached (tried {tried}; last: {last_error})",
            pool.name,
        )
    };
    tracing::warn!(request = %id, "{why}");
    let phase = match open.ex.retries.last() {
        Some(r) if r.cause == "no response" => b'H',
        _ => b'C',
    };
    open.set(b'S', phase);
    open.ex.pool.get_or_insert_with(|| pool.name.clone());
    let status = if tried == 0 {
        http::StatusCode::SERVICE_UNAVAILABLE
    } else {
        http::StatusCode::BAD_GATEWAY
    };
    (status, why)
}
