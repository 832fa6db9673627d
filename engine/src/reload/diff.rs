//! What a reload changed, in one log line: pools, servers, listeners and
//! hooks added (+) and removed (-).

use crate::config::Policy;

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
