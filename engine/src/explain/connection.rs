//! `pocket explain POLICY.lua tcp://LISTENER [--sni NAME] [--alpn P,...]
//! [--peer IP[:PORT]]`: one connection on a `tcp` listener through the
//! hooks and the pick a live connection goes through (`on_connect`, then
//! the pool's `hash_key` and `balance` with `conn`, then the pool's own
//! `pick`, its fallbacks as engine/src/tcp/connect.rs follows them), with
//! no network: the ClientHello is the one the flags describe.

use std::future::Future as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::ListenerSpec;
use crate::script::api::conn::ConnView;
use crate::script::{ConnectVerdict, WorkerScript};
use crate::tcp::client_hello::ClientHello;

use super::{Trace, Tracer};

/// The connection the command line describes.
pub struct Asked<'a> {
    pub listener: &'a ListenerSpec,
    pub peer: SocketAddr,
    /// The ClientHello (`--sni`, `--alpn`); None: the client sends none
    /// (plain text, or a protocol where the server speaks first).
    pub hello: Option<ClientHello>,
    /// Servers already tried (`--tried`), by address.
    pub tried: &'a [String],
}

/// What a connection's outcome is, for `pocket test` and the printed
/// story.
#[derive(Debug)]
pub enum Outcome {
    /// A server of `pool` (after fallbacks) takes it; None: no server can.
    Served { pool: usize, server: Option<usize> },
    /// `pocket.reject(reason)`.
    Rejected(String),
    /// Closed by Pocket before a pool: no pool, or `on_connect` failed.
    Closed(String),
}

/// Runs the connection: `trace` gets every step. Also returns which hook
/// first read `conn.sni`/`conn.alpn` (`on_connect`, else the pool's
/// `hash_key` or `balance`), if one did: a live connection waits for the
/// ClientHello there.
pub fn decide(
    script: &WorkerScript,
    asked: &Asked<'_>,
    trace: &mut Trace,
) -> (Outcome, Option<&'static str>) {
    let policy = &script.policy;
    let name: Arc<str> = Arc::from(&*asked.listener.name);
    let mut view = ConnView::new(asked.peer, asked.listener.bind, name.clone(), false);
    let started = Instant::now();
    let verdict = script.on_connect_given(&mut view, asked.hello.clone());
    let was_read = |v: &ConnView| v.hello.as_ref().is_some_and(|s| s.was_read());
    let read = was_read(&view).then_some("on_connect");
    if script.has_on_connect() {
        let returned = match &verdict {
            Ok(ConnectVerdict::Pool(i)) => format!("pool \"{}\"", policy.pools[*i].name),
            Ok(ConnectVerdict::Default) => "nil".into(),
            Ok(ConnectVerdict::Reject(r)) => format!("pocket.reject({r:?})"),
            Ok(ConnectVerdict::Closed { reason, .. }) => reason.clone(),
            Err(e) => format!("an error: {}", e.message),
        };
        trace.hook("on_connect", None, started.elapsed(), returned);
    }
    let (pool, why) = match verdict {
        Ok(ConnectVerdict::Pool(i)) => (i, "on_connect chose it"),
        Ok(ConnectVerdict::Default) => match asked.listener.default_pool {
            Some(i) => (i, "the listener's pool"),
            None => {
                let why = if script.has_on_connect() {
                    format!(
                        "on_connect chose no pool and listener \"{name}\" has no pool: the connection is closed, no server connection is opened (access log PR)"
                    )
                } else {
                    format!(
                        "listener \"{name}\" has no pool and the policy has no on_connect: the connection is closed, no server connection is opened (access log PR)"
                    )
                };
                trace.closed(false, &why);
                return (Outcome::Closed(why), read);
            }
        },
        Ok(ConnectVerdict::Reject(reason)) => {
            trace.closed(
                true,
                &format!("pocket.reject({reason:?}): the connection is closed, no server connection is opened (access log PR)"),
            );
            return (Outcome::Rejected(reason), read);
        }
        Ok(ConnectVerdict::Closed { reason, .. }) => {
            trace.closed(false, &reason);
            return (Outcome::Closed(reason), read);
        }
        Err(e) => {
            let why = "on_connect failed: the connection is closed, no server connection is opened (access log PR)";
            trace.closed(false, why);
            return (Outcome::Closed(format!("{why}: {}", e.message)), read);
        }
    };
    let mut index = pool;
    let mut p = &policy.pools[index];
    trace.pool(&p.name, p.balance_name(), why);
    let mut seen = vec![index];
    loop {
        let (key, preferred) = choose(script, index, &mut view, trace);
        let read = read.or(was_read(&view).then_some("the pool's hash_key or balance"));
        let tried: Vec<usize> = (0..p.servers.len())
            .filter(|&i| asked.tried.iter().any(|a| *a == *p.servers[i].addr_text))
            .collect();
        if let Some(s) = p.pick_traced(&tried, key, preferred, trace) {
            return (
                Outcome::Served {
                    pool: index,
                    server: Some(s),
                },
                read,
            );
        }
        match p.fallback_pool() {
            Some(next) if !seen.contains(&next) => {
                seen.push(next);
                let why = format!(
                    "fallback of pool \"{}\", which has no server to take the connection",
                    p.name
                );
                index = next;
                p = &policy.pools[index];
                trace.pool(&p.name, p.balance_name(), &why);
            }
            _ => {
                trace.closed(
                    false,
                    &format!("no server of pool \"{}\" can take the connection: it is closed (access log SC)", p.name),
                );
                return (
                    Outcome::Served {
                        pool: index,
                        server: None,
                    },
                    read,
                );
            }
        }
    }
}

/// The hash key and the scripted choice for the connection in pool
/// `index`, decided as a live connection's are
/// ([`crate::tcp::pool_choice::choose`]; `hash_key = "source"`: the
/// client's address as text; a function: `hash_key(conn)`; `balance =
/// function(servers, conn)`), each step traced. A failing function costs
/// the connection its key or its choice: round robin.
fn choose(
    script: &WorkerScript,
    index: usize,
    view: &mut ConnView,
    trace: &mut Trace,
) -> (Option<u64>, Option<usize>) {
    let pool = &script.policy.pools[index];
    let peer = view.peer;
    let mut calls = Given {
        script,
        view,
        trace,
    };
    let chosen = crate::tcp::pool_choice::choose(pool, index, peer, &mut calls);
    // The ClientHello is given: nothing here waits, the first poll ends it.
    let mut chosen = std::pin::pin!(chosen);
    match chosen
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(Ok(choice)) => choice,
        std::task::Poll::Ready(Err(never)) => match never {},
        std::task::Poll::Pending => (None, None),
    }
}

/// The pool functions of a connection whose ClientHello is given (plain
/// calls that never wait), each traced.
struct Given<'a> {
    script: &'a WorkerScript,
    view: &'a mut ConnView,
    trace: &'a mut Trace,
}

impl crate::tcp::pool_choice::PoolCalls for Given<'_> {
    type Stop = std::convert::Infallible;

    fn source(&mut self, peer: SocketAddr) {
        let ip = crate::proxy::forward::canonical_ip(peer.ip()).to_string();
        self.trace
            .hash_key("the client's address (source)".into(), Some(ip));
    }

    async fn hash_key(&mut self, index: usize) -> Result<Option<Vec<u8>>, Self::Stop> {
        let pool = &self.script.policy.pools[index];
        let started = Instant::now();
        let key = self.script.hash_key_conn(index, self.view, 1);
        let returned = match &key {
            Ok(Some(k)) => format!("{:?}", String::from_utf8_lossy(k)),
            Ok(None) => "nil".into(),
            Err(e) => format!("an error: {}; balancing without a key", e.message),
        };
        self.trace
            .hook("hash_key", Some(&pool.name), started.elapsed(), returned);
        let key = key.ok().flatten();
        self.trace.hash_key(
            "the pool's hash_key function".into(),
            key.as_ref()
                .map(|k| format!("{:?}", String::from_utf8_lossy(k))),
        );
        Ok(key)
    }

    async fn balance(&mut self, index: usize) -> Result<Option<usize>, Self::Stop> {
        if !self.script.runs("balance", index) {
            return Ok(None);
        }
        let pool = &self.script.policy.pools[index];
        let started = Instant::now();
        let chosen = self.script.choose_server_conn(index, self.view, 1);
        let returned = match &chosen {
            Ok(Some(i)) => format!("server {}", pool.servers[*i].addr_text),
            Ok(None) => "nil (round robin decides)".into(),
            Err(e) => format!("an error: {}; round robin decides", e.message),
        };
        self.trace
            .hook("balance", Some(&pool.name), started.elapsed(), returned);
        Ok(chosen.ok().flatten())
    }
}

/// The whole printed story of one connection.
pub fn story(script: &WorkerScript, asked: &Asked<'_>) -> String {
    let mut trace = Trace::default();
    let (_, read) = decide(script, asked, &mut trace);
    let l = asked.listener;
    let mut out = format!(
        "connection: from {} to {} on tcp listener \"{}\"",
        asked.peer, l.bind, l.name
    );
    match &asked.hello {
        Some(h) => {
            out.push_str(", TLS ClientHello with ");
            out.push_str(&match &h.sni {
                Some(s) => format!("sni {s:?}"),
                None => "no sni".into(),
            });
            out.push_str(&match &h.alpn {
                Some(a) => format!(
                    ", alpn {}",
                    a.iter()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => ", no alpn".into(),
            });
        }
        None => out.push_str(", no TLS ClientHello"),
    }
    out.push('\n');
    out.push_str(&trace.to_string());
    let wait = l.timeouts.client_hello.as_secs_f64();
    match (read, &asked.hello) {
        (Some(who), Some(_)) => out.push_str(&format!(
            "note: {who} read conn.sni or conn.alpn: a live connection waits up to timeouts.client_hello ({wait}s) for the client's ClientHello; a client that sends none in time is closed with no server connection (access log cR)\n"
        )),
        (Some(who), None) => out.push_str(&format!(
            "note: {who} read conn.sni or conn.alpn, and no --sni or --alpn was given: both were nil, as for a client that is not speaking TLS; a live connection waits up to timeouts.client_hello ({wait}s) for a ClientHello first\n"
        )),
        (None, Some(_)) if !script.has_on_connect() => out.push_str(
            "note: the policy has no on_connect: the ClientHello played no part, and a live connection does not wait for it\n",
        ),
        (None, Some(_)) => out.push_str(
            "note: on_connect did not read conn.sni or conn.alpn: the ClientHello played no part, and a live connection does not wait for it\n",
        ),
        (None, None) => {}
    }
    out.push_str(&format!("compact: {}\n", trace.compact()));
    out
}
