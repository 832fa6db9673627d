//! `pocket test`'s connection cases: `{ conn = { listener = "tls", sni =
//! "a.example" }, pool = "site_a" }` runs `on_connect` for a connection on
//! a `tcp` listener with that ClientHello (no socket, no wait), then the
//! pool's `hash_key`/`balance` with `conn` and the pick, as
//! `pocket explain tcp://LISTENER` does ([`crate::explain::connection`]).
//! Expectations: `pool`, `server`, `rejected` (true, false, or text the
//! reject reason contains).

use std::net::SocketAddr;

use mlua::{Table, Value};

use crate::config::Mode;
use crate::explain::connection::{self, Asked, Outcome};
use crate::explain::Trace;
use crate::lb::AdminState;
use crate::policy_tests::{set_health, unknown_keys};
use crate::script::WorkerScript;
use crate::tcp::client_hello::ClientHello;

/// The case keys a request has and a connection does not.
const REQUEST_ONLY: &[&str] = &["req", "status", "header", "body"];

/// Runs one connection case (`wrong`: what the caller already found
/// wrong with it). Err: every error of the case, `; `-separated, or how
/// the policy's answer differs from it.
pub fn run_case(
    script: &WorkerScript,
    case: &Table,
    _n: usize,
    mut wrong: Vec<String>,
) -> Result<(), String> {
    for k in REQUEST_ONLY {
        if !matches!(case.get::<Value>(*k), Ok(Value::Nil)) {
            wrong.push(format!(
                "{k} is for a request case; a connection case (conn) expects pool, server or rejected"
            ));
        }
    }
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
    let asked = match case.get::<Value>("conn") {
        Ok(Value::Table(c)) => conn_of(script, &c),
        Ok(v) => Err(vec![format!(
            "conn must be a table {{ listener = ..., sni = ... }}, not {}",
            crate::config::shown_value(&v)
        )]),
        Err(_) => Err(vec!["conn must be a table".into()]),
    };
    let (listener, peer, hello) = match asked {
        Ok(a) if wrong.is_empty() => a,
        Ok(_) => return Err(wrong.join("; ")),
        Err(more) => {
            wrong.extend(more);
            return Err(wrong.join("; "));
        }
    };
    let Some(listener) = script.policy.listener(&listener) else {
        return Err("conn.listener names no listener".into());
    };
    let mut touched = Vec::new();
    let applied = set_health(script, case, &mut touched);
    let result = applied.and_then(|()| {
        let asked = Asked {
            listener,
            peer,
            hello,
            tried: &[],
        };
        let (outcome, _) = connection::decide(script, &asked, &mut Trace::default());
        judge(script, case, &outcome)
    });
    for s in touched {
        s.set_up(true, "pocket test");
        s.set_admin(AdminState::Ready);
    }
    result
}

/// The case's connection: its listener's name, the client's address and
/// the ClientHello. Err: every wrong field, each said once.
fn conn_of(
    script: &WorkerScript,
    conn: &Table,
) -> Result<(String, SocketAddr, Option<ClientHello>), Vec<String>> {
    let policy = &script.policy;
    let mut wrong = Vec::new();
    if let Err(e) = unknown_keys(conn, crate::policy_tests::CONN_KEYS, "conn") {
        wrong.push(e);
    }
    let text = |k: &str, wrong: &mut Vec<String>| match conn.get::<Value>(k) {
        Ok(Value::Nil) => None,
        Ok(Value::String(s)) => Some(s.to_string_lossy()),
        Ok(v) => {
            wrong.push(format!(
                "conn.{k} must be a string, not {}",
                crate::config::shown_value(&v)
            ));
            None
        }
        Err(_) => {
            wrong.push(format!("conn.{k} must be a string"));
            None
        }
    };
    let listener = text("listener", &mut wrong);
    let sni = text("sni", &mut wrong).map(|s| s.to_ascii_lowercase());
    let ip = text("peer_ip", &mut wrong).unwrap_or_else(|| "127.0.0.1".into());
    let port = match conn.get::<Value>("peer_port") {
        Ok(Value::Nil) => 40000,
        Ok(Value::Integer(p)) if (0..=65535).contains(&p) => p as u16,
        Ok(v) => {
            wrong.push(format!(
                "conn.peer_port must be a port number (0 to 65535), not {}",
                crate::config::shown_value(&v)
            ));
            40000
        }
        Err(_) => {
            wrong.push("conn.peer_port must be a port number".into());
            40000
        }
    };
    let alpn = match conn.get::<Value>("alpn") {
        Ok(Value::Nil) => None,
        Ok(Value::Table(t)) => {
            let list: Result<Vec<Vec<u8>>, ()> = t
                .sequence_values::<Value>()
                .map(|v| match v {
                    Ok(Value::String(s)) => Ok(s.as_bytes().to_vec()),
                    _ => Err(()),
                })
                .collect();
            match list {
                Ok(l) => Some(l),
                Err(()) => {
                    wrong.push(
                        "conn.alpn must be a list of strings, as { \"h2\", \"http/1.1\" }".into(),
                    );
                    None
                }
            }
        }
        Ok(v) => {
            wrong.push(format!(
                "conn.alpn must be a list of strings, as {{ \"h2\", \"http/1.1\" }}, not {}",
                crate::config::shown_value(&v)
            ));
            None
        }
        Err(_) => {
            wrong.push("conn.alpn must be a list of strings".into());
            None
        }
    };
    let peer: Option<SocketAddr> = format!("{ip}:{port}")
        .parse()
        .or_else(|_| format!("[{ip}]:{port}").parse())
        .ok();
    if peer.is_none() {
        wrong.push(format!("bad conn.peer_ip {ip:?}"));
    }
    let names = || {
        let names: Vec<&str> = policy.listeners.iter().map(|l| &*l.name).collect();
        names.join(", ")
    };
    let listener = match listener {
        Some(l) => match policy.listener(&l) {
            None => {
                wrong.push(format!(
                    "conn.listener \"{l}\" is not a listener of the policy (listeners: {})",
                    names()
                ));
                None
            }
            Some(spec) if spec.mode != Mode::Tcp => {
                wrong.push(format!(
                    "conn.listener \"{l}\" is an http listener: a connection case runs on a listener with mode = \"tcp\"; test its requests with req = {{ listener = \"{l}\", ... }}"
                ));
                None
            }
            Some(_) => Some(l),
        },
        // The first tcp listener, as `pocket explain tcp://` takes it.
        None => match policy.listeners.iter().find(|l| l.mode == Mode::Tcp) {
            Some(l) => Some(l.name.to_string()),
            None => {
                wrong.push(format!(
                    "the policy has no tcp listener (listeners: {}): a connection case needs one",
                    names()
                ));
                None
            }
        },
    };
    match (listener, peer) {
        (Some(l), Some(p)) if wrong.is_empty() => Ok((
            l,
            p,
            (sni.is_some() || alpn.is_some()).then_some(ClientHello { sni, alpn }),
        )),
        _ => Err(wrong),
    }
}

/// The case's expectations against what the connection got.
fn judge(script: &WorkerScript, case: &Table, outcome: &Outcome) -> Result<(), String> {
    let policy = &script.policy;
    let (pool, server) = match outcome {
        Outcome::Served { pool, server } => {
            let p = &policy.pools[*pool];
            (
                Some(p.name.to_string()),
                server.map(|s| p.servers[s].addr_text.to_string()),
            )
        }
        _ => (None, None),
    };
    let got = || match outcome {
        Outcome::Served { .. } => match (&pool, &server) {
            (Some(p), Some(s)) => format!("pool \"{p}\" server {s}"),
            (Some(p), None) => format!("pool \"{p}\" with no server up (the connection is closed)"),
            _ => "no pool".into(),
        },
        Outcome::Rejected(r) => format!("a rejected connection ({r:?})"),
        Outcome::Closed(why) => format!("a closed connection: {why}"),
    };
    if let Ok(Value::String(want)) = case.get::<Value>("pool") {
        let want = want.to_string_lossy();
        if pool.as_deref() != Some(want.as_str()) {
            return Err(format!("expected pool \"{want}\", got {}", got()));
        }
    }
    if let Ok(Value::String(want)) = case.get::<Value>("server") {
        let want = want.to_string_lossy();
        if server.as_deref() != Some(want.as_str()) {
            return Err(format!("expected server {want}, got {}", got()));
        }
    }
    let rejected = match outcome {
        Outcome::Rejected(r) => Some(r.as_str()),
        _ => None,
    };
    match case.get::<Value>("rejected") {
        Ok(Value::Nil) => {}
        Ok(Value::Boolean(true)) if rejected.is_none() => {
            return Err(format!("expected the connection rejected, got {}", got()))
        }
        Ok(Value::Boolean(false)) if rejected.is_some() => {
            return Err(format!(
                "expected the connection not rejected, got {}",
                got()
            ))
        }
        Ok(Value::Boolean(_)) => {}
        Ok(Value::String(want)) => {
            let want = want.to_string_lossy();
            if !rejected.is_some_and(|r| r.contains(want.as_str())) {
                return Err(format!(
                    "expected the connection rejected with a reason containing {want:?}, got {}",
                    got()
                ));
            }
        }
        Ok(v) => {
            return Err(format!(
                "rejected must be true, false or text the reason contains, not {}",
                crate::config::shown_value(&v)
            ))
        }
        Err(_) => return Err("rejected must be true, false or a string".into()),
    }
    Ok(())
}
