//! What a reload changed, in one log line: pools, servers, listeners and
//! hooks added (+) and removed (-), and the `admin`, `log` and `resolvers`
//! keys (and a pool's `resolve`).

use crate::config::AccessLog;
use crate::config::{AdminSpec, Policy};
use crate::observe::access_log::Format;

pub fn describe_changes(old: &Policy, new: &Policy) -> String {
    let mut parts: Vec<String> = Vec::new();
    let names = |p: &Policy| {
        p.pools
            .iter()
            .map(|p| p.name.to_string())
            .collect::<Vec<_>>()
    };
    let (old_pools, new_pools) = (names(old), names(new));
    let mut pools = Vec::new();
    pools.extend(
        new_pools
            .iter()
            .filter(|n| !old_pools.contains(n))
            .map(|n| format!("+{n}")),
    );
    pools.extend(
        old_pools
            .iter()
            .filter(|n| !new_pools.contains(n))
            .map(|n| format!("-{n}")),
    );
    if !pools.is_empty() {
        parts.push(format!("pools {}", pools.join(" ")));
    }
    for pool in &new.pools {
        let Some(before) = old.pools.iter().find(|p| p.name == pool.name) else {
            continue;
        };
        let mut servers = Vec::new();
        for s in &pool.servers {
            match before.servers.iter().find(|b| b.addr == s.addr) {
                None => servers.push(format!("+{}", s.addr)),
                Some(b) if b.weight != s.weight || b.backup != s.backup => {
                    servers.push(format!("~{}", s.addr))
                }
                Some(_) => {}
            }
        }
        for b in &before.servers {
            if !pool.servers.iter().any(|s| s.addr == b.addr) {
                servers.push(format!("-{}", b.addr));
            }
        }
        if !servers.is_empty() {
            parts.push(format!("pool {} servers {}", pool.name, servers.join(" ")));
        }
        // The Debug form is what changes a server connection (ca, sni,
        // verify): the check fingerprints use it too.
        match (&before.tls, &pool.tls) {
            (None, Some(_)) => parts.push(format!("pool {} +tls", pool.name)),
            (Some(_), None) => parts.push(format!("pool {} -tls", pool.name)),
            (Some(a), Some(b)) if format!("{a:?}") != format!("{b:?}") => {
                parts.push(format!("pool {} tls changed", pool.name))
            }
            _ => {}
        }
        if before.resolve != pool.resolve {
            let every =
                |d: Option<std::time::Duration>| d.map_or("off".to_string(), |d| format!("{d:?}"));
            parts.push(format!(
                "pool {} resolve {} -> {}",
                pool.name,
                every(before.resolve),
                every(pool.resolve)
            ));
        }
        if before.mode != pool.mode {
            parts.push(format!(
                "pool {} mode {} -> {}",
                pool.name,
                before.mode.name(),
                pool.mode.name()
            ));
        }
    }
    let mut listeners = Vec::new();
    for l in &new.listeners {
        if !old
            .listeners
            .iter()
            .any(|o| o.name == l.name && o.bind == l.bind)
        {
            listeners.push(format!("+{} ({})", l.name, l.bind));
        }
    }
    for o in &old.listeners {
        if !new
            .listeners
            .iter()
            .any(|l| o.name == l.name && o.bind == l.bind)
        {
            listeners.push(format!("-{} ({})", o.name, o.bind));
        }
    }
    if !listeners.is_empty() {
        parts.push(format!("listeners {}", listeners.join(" ")));
    }
    for l in &new.listeners {
        let Some(o) = old
            .listeners
            .iter()
            .find(|o| o.name == l.name && o.bind == l.bind)
        else {
            continue;
        };
        // New connections are served in the new mode; open ones finish
        // in the mode they began in (their generation's).
        if o.mode != l.mode {
            parts.push(format!(
                "listener {} mode {} -> {}",
                l.name,
                o.mode.name(),
                l.mode.name()
            ));
        }
        match (&o.tls, &l.tls) {
            (None, Some(_)) => parts.push(format!("listener {} +tls", l.name)),
            (Some(_), None) => parts.push(format!("listener {} -tls", l.name)),
            (Some(a), Some(b)) if a.fingerprint != b.fingerprint => {
                parts.push(format!("listener {} certificates changed", l.name))
            }
            _ => {}
        }
    }
    let hooks = |h: crate::config::HookSet| {
        [
            (h.on_connect, "on_connect"),
            (h.on_request, "on_request"),
            (h.on_response, "on_response"),
        ]
    };
    let mut hook_changes = Vec::new();
    for ((was, name), (is, _)) in hooks(old.hooks).into_iter().zip(hooks(new.hooks)) {
        match (was, is) {
            (false, true) => hook_changes.push(format!("+{name}")),
            (true, false) => hook_changes.push(format!("-{name}")),
            _ => {}
        }
    }
    if !hook_changes.is_empty() {
        parts.push(format!("hooks {}", hook_changes.join(" ")));
    }
    if old.resolvers != new.resolvers {
        parts.push(format!(
            "resolvers {} -> {}",
            old.resolvers.describe(),
            new.resolvers.describe()
        ));
    }
    parts.extend(admin_change(old.admin.as_ref(), new.admin.as_ref()));
    parts.extend(log_change(old.log.as_ref(), new.log.as_ref()));
    parts.extend(stores_change(&old.stores, &new.stores));
    if parts.is_empty() {
        if old.source == new.source {
            "no change".into()
        } else {
            "script changed".into()
        }
    } else {
        parts.join("; ")
    }
}

/// `admin +127.0.0.1:8404`, `admin -...`, `admin A -> B`, `admin token
/// set` / `changed` / `removed`, `admin explain_from changed` (the token
/// itself is never printed).
fn admin_change(old: Option<&AdminSpec>, new: Option<&AdminSpec>) -> Option<String> {
    let (o, n) = match (old, new) {
        (None, None) => return None,
        (None, Some(n)) => return Some(format!("admin +{}", n.bind)),
        (Some(o), None) => return Some(format!("admin -{}", o.bind)),
        (Some(o), Some(n)) => (o, n),
    };
    let mut what = Vec::new();
    if o.bind != n.bind {
        what.push(format!("{} -> {}", o.bind, n.bind));
    }
    match (&o.token, &n.token) {
        (None, Some(_)) => what.push("token set".into()),
        (Some(_), None) => what.push("token removed".into()),
        (Some(a), Some(b)) if a != b => what.push("token changed".into()),
        _ => {}
    }
    if o.explain_from != n.explain_from {
        what.push("explain_from changed".into());
    }
    (!what.is_empty()).then(|| format!("admin {}", what.join(", ")))
}

/// `stores +sessions -limits ~hits` (`~`: its Redis, prefix or timeout
/// changed: it connects again).
fn stores_change(
    old: &[crate::config::StoreSpec],
    new: &[crate::config::StoreSpec],
) -> Option<String> {
    let mut what = Vec::new();
    for n in new {
        match old.iter().find(|o| o.name == n.name) {
            None => what.push(format!("+{}", n.name)),
            Some(o) if o.redis != n.redis => what.push(format!("~{}", n.name)),
            Some(_) => {}
        }
    }
    for o in old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)) {
        what.push(format!("-{}", o.name));
    }
    (!what.is_empty()).then(|| format!("stores {}", what.join(" ")))
}

/// `log +access.log (json)`, `log -stderr`, `log a.log -> b.log`,
/// `log text -> json`.
fn log_change(old: Option<&AccessLog>, new: Option<&AccessLog>) -> Option<String> {
    let name = |f: Format| match f {
        Format::Text => "text",
        Format::Json => "json",
    };
    // `-` is standard error: said so.
    let path = |s: &AccessLog| match s.path.as_str() {
        "-" => "stderr".to_string(),
        p => p.to_string(),
    };
    let (o, n) = match (old, new) {
        (None, None) => return None,
        (None, Some(n)) => return Some(format!("log +{} ({})", path(n), name(n.format))),
        (Some(o), None) => return Some(format!("log -{}", path(o))),
        (Some(o), Some(n)) => (o, n),
    };
    let mut what = Vec::new();
    if o.path != n.path {
        what.push(format!("{} -> {}", path(o), path(n)));
    }
    if o.format != n.format {
        what.push(format!("{} -> {}", name(o.format), name(n.format)));
    }
    (!what.is_empty()).then(|| format!("log {}", what.join(", ")))
}
