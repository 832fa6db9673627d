//! `pocket explain POLICY.lua "GET http://host/path" [-H "Name: value"]...
//! [--peer IP] [--down SERVER]...`: one request through the proxy's own
//! decision code ([`crate::proxy::decide::decide_traced`] and
//! [`crate::lb::Pool::pick_traced`]), with no network, and the trace
//! printed. Servers are named by address (`127.0.0.1:9001`), as
//! `pocket test`'s `health` names them.
//!
//! `pocket explain POLICY.lua tcp://LISTENER [--sni NAME] [--alpn P,...]`
//! explains a connection on a `tcp` listener instead
//! ([`super::connection`]): there `on_connect` decides, not `on_request`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::{load_policy, ListenerSpec, Mode};
use crate::lb::{AdminState, StateRegistry};
use crate::proxy::decide::{decide_traced, Route};
use crate::script::{Limits, WorkerScript};
use crate::tcp::client_hello::ClientHello;

use super::request::Heard;
use super::{Trace, Tracer};

/// What the command line asked (`pocket explain`'s arguments).
#[derive(clap::Args)]
pub struct Args {
    /// The policy script.
    pub policy: PathBuf,
    /// The request: "METHOD URL" (or "METHOD /path" with -H "Host: ..."),
    /// or a connection on a tcp listener: "tcp://LISTENER".
    pub request: String,
    /// A request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The client's address, IP or IP:PORT (the port: a connection's
    /// conn.peer_port; 40000 when not given).
    #[arg(long, default_value = "127.0.0.1", value_parser = parse_peer, value_name = "IP[:PORT]")]
    pub peer: SocketAddr,
    /// A connection's TLS ClientHello server name (conn.sni), for
    /// tcp://LISTENER.
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// A connection's ClientHello ALPN list (conn.alpn), comma-separated,
    /// for tcp://LISTENER.
    #[arg(long, value_name = "P1,P2")]
    pub alpn: Option<String>,
    /// The listener it arrives on (default: the policy's first).
    #[arg(long)]
    pub listener: Option<String>,
    /// Mark a server down, by address as `pocket test` names it
    /// (127.0.0.1:9001), in every pool that has it (repeatable).
    #[arg(long, value_name = "SERVER")]
    pub down: Vec<String>,
    /// Set a server to drain (repeatable).
    #[arg(long, value_name = "SERVER")]
    pub drain: Vec<String>,
    /// Set a server to maint (repeatable).
    #[arg(long, value_name = "SERVER")]
    pub maint: Vec<String>,
    /// Requests in flight on a server, SERVER=N (bounded-load hashing).
    #[arg(long, value_name = "SERVER=N")]
    pub in_flight: Vec<String>,
    /// A server this request already tried, as a retry sees it (repeatable).
    #[arg(long, value_name = "SERVER")]
    pub tried: Vec<String>,
}

/// How `pocket explain` ended.
pub enum Failure {
    /// The input is wrong (exit 2): what and what is accepted.
    Input(String),
    /// The policy does not load (exit 1, as `pocket check`): its errors.
    Policy(String),
}

/// `--peer`: an IP (port 40000, as `pocket test` gives) or IP:PORT.
fn parse_peer(text: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 40000));
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!("{text:?} is not an address: write an IP (10.0.0.7) or IP:PORT (10.0.0.7:5000, [2001:db8::7]:5000)")
    })
}

/// The `tcp://LISTENER` of a connection, if the request is one.
fn connection_of(request: &str) -> Option<&str> {
    let r = request.trim();
    r.get(..6)
        .filter(|p| p.eq_ignore_ascii_case("tcp://"))
        .map(|_| r[6..].trim_end_matches('/'))
}

/// The ClientHello `--sni` and `--alpn` describe (None: neither given).
fn hello_of(args: &Args) -> Result<Option<ClientHello>, Failure> {
    let sni =
        match &args.sni {
            Some(s) if s.trim().is_empty() => return Err(Failure::Input(
                "--sni needs a name (a ClientHello without one: leave --sni out and give --alpn)"
                    .into(),
            )),
            // Matched in lower case, as the listener reads it.
            Some(s) => Some(s.trim().to_ascii_lowercase()),
            None => None,
        };
    let alpn = match &args.alpn {
        Some(a) => {
            let list: Vec<Vec<u8>> = a
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| p.as_bytes().to_vec())
                .collect();
            if list.is_empty() {
                return Err(Failure::Input(
                    "--alpn needs protocols, comma-separated: --alpn h2,http/1.1".into(),
                ));
            }
            Some(list)
        }
        None => None,
    };
    Ok((sni.is_some() || alpn.is_some()).then_some(ClientHello { sni, alpn }))
}

/// Runs the request and returns the printed trace.
pub fn run(args: &Args) -> Result<String, Failure> {
    let connection = connection_of(&args.request);
    let hello = hello_of(args)?;
    // Parsed before the policy loads: bad input is said even when the
    // policy is broken too.
    if connection.is_none() {
        if args.sni.is_some() || args.alpn.is_some() {
            return Err(Failure::Input(
                "--sni and --alpn describe a connection on a tcp listener: give \"tcp://LISTENER\" in place of the request (on a listener with tls, a request's SNI is its host)".into(),
            ));
        }
        let probe = super::request::build(
            &args.request,
            &args.headers,
            args.peer.ip(),
            "",
            crate::config::DEFAULT_HEAD_SIZE,
        )
        .map_err(Failure::Input)?;
        drop(probe);
    } else if !args.headers.is_empty() {
        return Err(Failure::Input(
            "-H adds a header to an HTTP request; a connection on a tcp listener has none (its ClientHello: --sni, --alpn)".into(),
        ));
    }

    super::routes::enable();
    let registry = Arc::new(StateRegistry::default());
    let (tx, _) = tokio::sync::mpsc::unbounded_channel();
    registry.set_events(tx);
    StateRegistry::install_global(registry.clone());
    let policy =
        Arc::new(load_policy(&args.policy, &registry).map_err(|e| Failure::Policy(e.to_string()))?);
    let script = WorkerScript::new(policy.clone(), Limits::default()).map_err(Failure::Policy)?;
    // Routes noted while the policy loaded are not this request's.
    super::routes::take();

    let names = || {
        let names: Vec<&str> = policy.listeners.iter().map(|l| &*l.name).collect();
        names.join(", ")
    };
    let is_tcp = |l: &ListenerSpec| l.mode == Mode::Tcp;
    // The first listener that speaks what is explained, when none is
    // named; a note says so when it is not the policy's first.
    let mut skipped_first = None;
    let listener = match (connection, &args.listener) {
        (Some(c), Some(l)) if !c.is_empty() && c != l => {
            return Err(Failure::Input(format!(
                "tcp://{c} and --listener {l:?} name two listeners: give one"
            )))
        }
        (Some(c), l) => {
            let named = if c.is_empty() { l.as_deref() } else { Some(c) };
            match named {
                Some(n) => n.to_string(),
                None => match policy.listeners.iter().find(|l| is_tcp(l)) {
                    Some(l) => l.name.to_string(),
                    None => {
                        return Err(Failure::Input(format!(
                            "the policy has no tcp listener (listeners: {}): explain an HTTP request, \"GET http://host/path\"",
                            names()
                        )))
                    }
                },
            }
        }
        (None, Some(l)) => l.clone(),
        (None, None) => match policy.listeners.iter().find(|l| !is_tcp(l)) {
            Some(l) => {
                if let Some(first) = policy.listeners.first().filter(|f| is_tcp(f)) {
                    skipped_first = Some(first.name.to_string());
                }
                l.name.to_string()
            }
            None => policy
                .listeners
                .first()
                .map(|l| l.name.to_string())
                .unwrap_or_default(),
        },
    };
    let Some(spec) = policy.listener(&listener) else {
        let flag = match connection {
            Some(c) if !c.is_empty() => format!("tcp://{c}: {c:?}"),
            _ => format!("--listener {listener:?}"),
        };
        return Err(Failure::Input(format!(
            "{flag} is not a listener of the policy (listeners: {})",
            names()
        )));
    };
    match (connection.is_some(), is_tcp(spec)) {
        (true, false) => {
            return Err(Failure::Input(format!(
                "listener \"{listener}\" is an http listener: tcp://LISTENER explains a connection on a listener with mode = \"tcp\"; explain a request on it instead: pocket explain {} \"GET http://host/path\" --listener {listener}",
                args.policy.display()
            )))
        }
        (false, true) => {
            // A request's host, as the name a TLS client would send.
            let sni = args
                .request
                .split_whitespace()
                .nth(1)
                .and_then(|t| t.split_once("://"))
                .map(|(_, rest)| rest.split(['/', ':', '?']).next().unwrap_or(""))
                .filter(|h| !h.is_empty() && crate::config::names_client_hello(&policy.source))
                .map(|h| format!(" --sni {h}"))
                .unwrap_or_default();
            return Err(Failure::Input(format!(
                "listener \"{listener}\" is a tcp listener (mode = \"tcp\"): it reads no HTTP request; on_connect decides where its connections go (see docs/tcp.md). Explain a connection instead: pocket explain {} tcp://{listener}{sni}",
                args.policy.display()
            )));
        }
        _ => {}
    }

    // Server states, as `pocket test`'s `health` sets them.
    let servers = |addr: &str, flag: &str| {
        let found: Vec<_> = policy
            .pools
            .iter()
            .flat_map(|p| p.servers.iter())
            .filter(|s| *s.addr_text == *addr)
            .collect();
        if found.is_empty() {
            let mut all: Vec<&str> = policy
                .pools
                .iter()
                .flat_map(|p| p.servers.iter().map(|s| &*s.addr_text))
                .collect();
            all.sort_unstable();
            all.dedup();
            return Err(Failure::Input(format!(
                "{flag} {addr}: no pool has this server (servers: {})",
                all.join(", ")
            )));
        }
        Ok(found)
    };
    for addr in &args.down {
        for s in servers(addr, "--down")? {
            s.state.set_up(false, "pocket explain --down");
        }
    }
    for (list, state, flag) in [
        (&args.drain, AdminState::Drain, "--drain"),
        (&args.maint, AdminState::Maint, "--maint"),
    ] {
        for addr in list {
            for s in servers(addr, flag)? {
                s.state.set_admin(state);
            }
        }
    }
    for spec in &args.in_flight {
        let bad = || {
            Failure::Input(format!(
                "--in-flight {spec:?}: expected ADDR=N, as 127.0.0.1:9001=5"
            ))
        };
        let (addr, n) = spec.rsplit_once('=').ok_or_else(bad)?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        for s in servers(addr, "--in-flight")? {
            s.state.active.store(n, Ordering::Relaxed);
        }
    }
    for addr in &args.tried {
        servers(addr, "--tried")?;
    }
    if connection.is_some() {
        let asked = super::connection::Asked {
            listener: spec,
            peer: args.peer,
            hello,
            tried: &args.tried,
        };
        return Ok(super::connection::story(&script, &asked));
    }

    let head_size = spec.head_size;
    let heard = super::request::build(
        &args.request,
        &args.headers,
        args.peer.ip(),
        &listener,
        head_size,
    )
    .map_err(Failure::Input)?;
    let mut view = match heard {
        Heard::Request(view) => view,
        Heard::Refused { status, why } => {
            // As the listener: answered before a request exists, so no
            // hook runs and nothing is routed.
            let mut trace = Trace::default();
            trace.answered(
                status,
                false,
                &format!("at listener \"{listener}\", before any hook runs: {why}"),
            );
            let line = args.request.trim();
            let shown = match line.char_indices().nth(100) {
                Some((cut, _)) => format!("{}... ({} bytes)", &line[..cut], line.len()),
                None => line.to_string(),
            };
            return Ok(format!(
                "request: {shown} from {} on listener \"{listener}\" (head_size {head_size} bytes)\n{trace}compact: {}\n",
                args.peer.ip(),
                trace.compact()
            ));
        }
    };
    let scheme = view.head.uri.scheme_str().map(str::to_ascii_lowercase);
    // A TLS listener: the request is explained as one that came over TLS
    // (req.scheme "https", its host as the SNI).
    let tls = policy.listener(&listener).is_some_and(|l| l.tls.is_some());
    if tls {
        view.tls = Some(std::sync::Arc::new(crate::context::TlsInfo {
            sni: view.host().map(std::sync::Arc::from),
            alpn: Some(std::sync::Arc::from("http/1.1")),
            version: "TLSv1.3",
        }));
    }
    let mut trace = Trace::default();
    let route = decide_traced(&script, &mut view, &mut trace);
    // Said after the proxy settled the host (an absolute-form target's
    // authority wins over a Host line, RFC 9112 §3.2.2) and the path:
    // what the script and the balancer read.
    let host = view
        .head
        .headers
        .get(http::header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .or_else(|| view.head.uri.authority().map(|a| a.to_string()))
        .filter(|h| !h.is_empty());
    let pq = view.head.uri.path_and_query().map_or("/", |p| p.as_str());
    let shown = match &host {
        _ if view.head.method == http::Method::CONNECT => format!("{}", view.head.uri),
        Some(h) if pq.starts_with('/') => {
            format!("{}://{h}{pq}", if tls { "https" } else { "http" })
        }
        Some(h) => format!("{pq} (host {h})"),
        None => format!("{pq} (no host)"),
    };
    let mut out = format!(
        "request: {} {shown} from {} on listener \"{listener}\"\n",
        view.head.method,
        args.peer.ip()
    );
    if let Some(first) = skipped_first {
        out.push_str(&format!(
            "note: listener \"{first}\", the policy's first, is a tcp listener (its connections: pocket explain {} tcp://{first}); the request is explained on \"{listener}\", the first http listener\n",
            args.policy.display()
        ));
    }
    if let Some(h) = host.filter(|h| !h.is_ascii()) {
        out.push_str(&format!(
            "note: the host {h:?} is not ASCII: a client sends an internationalised name in punycode (xn--...), so Pocket refuses it\n"
        ));
    }
    if let Some(s) = scheme.filter(|s| s == "https" && !tls) {
        out.push_str(&format!(
            "note: listener \"{listener}\" is plain HTTP; the target's scheme {s:?} is not part of the decision (req.scheme is \"http\")\n"
        ));
    }
    if let Route::Pool {
        pool,
        key,
        preferred,
    } = route
    {
        // As the proxy's forward loop: a pool that cannot serve hands the
        // request to its fallback (without the key or the script's pick).
        let (mut p, mut key, mut preferred) = (&policy.pools[pool], key, preferred);
        let mut seen = vec![pool];
        loop {
            let tried: Vec<usize> = (0..p.servers.len())
                .filter(|&i| args.tried.iter().any(|a| *a == *p.servers[i].addr_text))
                .collect();
            if p.pick_traced(&tried, key, preferred, &mut trace).is_some() {
                break;
            }
            match p.fallback_pool() {
                Some(next) if !seen.contains(&next) => {
                    seen.push(next);
                    let why = format!(
                        "fallback of pool \"{}\", which has no server to take it",
                        p.name
                    );
                    p = &policy.pools[next];
                    trace.pool(&p.name, p.balance_name(), &why);
                    (key, preferred) = (None, None);
                }
                _ => {
                    trace.answered(503, false, "no server can take the request");
                    break;
                }
            }
        }
    }
    out.push_str(&trace.to_string());
    out.push_str(&format!("compact: {}\n", trace.compact()));
    Ok(out)
}
