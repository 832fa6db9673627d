//! One TCP-mode client connection, from its accept to its end: the
//! connection's task (spawned by server/worker.rs with the connection's
//! slot, `max_connections`, held for its whole life).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;

use super::connect::{self, Client, NoServer};
use super::record;
use crate::config::ClientTimeouts;
use crate::proxy::Worker;
use crate::relay::End;
use crate::script::api::conn::ConnView;
use crate::script::{ConnectVerdict, WorkerScript};

/// What the accept loop knew of a tcp listener when it accepted a
/// connection, all of one generation (`script`'s): a reload in between
/// cannot pair one generation's pool index with another's pools.
pub struct Accepted {
    pub script: Rc<WorkerScript>,
    pub listener: Arc<str>,
    pub timeouts: ClientTimeouts,
    /// An `accept_proxy` listener.
    pub proxied: bool,
    /// The listener's `pool`.
    pub default_pool: Option<usize>,
}

/// Serves one connection accepted on a tcp listener: reads the PROXY
/// header first on an `accept_proxy` listener, asks `on_connect` where it
/// goes, connects to a server of that pool and copies bytes both ways
/// until both sides are done. The access log line is written when this
/// ends, or when its task is dropped (a worker stopping at the end of its
/// grace period: `KD`).
pub async fn serve(
    worker: Rc<Worker>,
    mut stream: TcpStream,
    socket: (SocketAddr, SocketAddr),
    accepted: Accepted,
) {
    let Accepted {
        script,
        listener,
        timeouts,
        proxied,
        default_pool,
    } = accepted;
    // Counted open, so a drain waits for it (for its grace period: a TCP
    // connection has no request boundary at which to stop early).
    let Some(_open_conn) = worker.drain.enter() else {
        return;
    };
    let (peer, local) = if proxied {
        // Within `timeouts.client_hello`, a tcp listener's wait for the
        // client's first bytes (`timeouts.head` is an http key).
        let wait = timeouts.client_hello;
        match crate::server::worker::read_proxied(&mut stream, socket, &listener, wait).await {
            Some(addrs) => addrs,
            None => return,
        }
    } else {
        socket
    };
    let id = worker.next_request_id();
    let mut open = record::open(&script, id, peer, listener.clone());
    let mut view = ConnView::new(peer, local, listener.clone(), false);
    // on_connect's run time (not its wait for a ClientHello) is the
    // line's hooks_ms, with the pool functions' added by connect.
    let _ = crate::observe::metrics::take_connect_hook_ns();
    let decided = script.on_connect_tcp(&mut view, &stream).await;
    open.ex.hooks_us += crate::observe::metrics::take_connect_hook_ns() / 1000;
    let pool = match decided {
        Ok(ConnectVerdict::Pool(i)) => Some(i),
        Ok(ConnectVerdict::Default) => {
            if default_pool.is_none() {
                // Refused at load without an on_connect; said by case.
                if script.has_on_connect() {
                    tracing::warn!(connection = %id, listener = %listener, peer = %peer, "on_connect returned nil and listener \"{listener}\" has no pool; connection closed");
                } else {
                    tracing::warn!(connection = %id, listener = %listener, peer = %peer, "listener \"{listener}\" has no pool and the policy has no on_connect; connection closed");
                }
            }
            default_pool
        }
        Ok(ConnectVerdict::Reject(reason)) => {
            tracing::info!(connection = %id, listener = %listener, peer = %peer, "connection rejected: {reason}");
            None
        }
        Ok(ConnectVerdict::Closed { reason, timed_out }) => {
            // Only on_connect reading conn.sni/alpn waits: on a listener
            // whose server speaks first (SMTP), a client waits too, and
            // nothing comes until the timeout.
            let hint = if timed_out {
                "; on_connect read conn.sni or conn.alpn here: return before reading them on listeners whose server speaks first (SMTP, FTP)"
            } else {
                ""
            };
            tracing::info!(connection = %id, listener = %listener, peer = %peer, "connection closed: {reason}; no server connection opened{hint}");
            // HAProxy's cR / CR: the client timed out / went away while
            // its request (here the ClientHello) was awaited.
            open.set(if timed_out { b'c' } else { b'C' }, b'R');
            return;
        }
        Err(e) => {
            tracing::error!(connection = %id, listener = %listener, peer = %peer, hook = e.hook, "{}; connection closed", e.message);
            None
        }
    };
    let Some(pool) = pool else {
        open.set(b'P', b'R');
        return;
    };
    // Dropped while connecting: only the worker ending does that.
    open.set(b'K', b'C');
    let client = Client {
        id,
        peer,
        local,
        view: &mut view,
        stream: &stream,
    };
    // Named in the line even if no server of it can be had.
    open.ex.pool = Some(script.policy.pools[pool].name.clone());
    let connected = {
        let connecting = connect::connect(&script, pool, client, &mut open);
        tokio::select! {
            c = connecting => Some(c),
            () = super::client_left::left(&stream) => None,
        }
    };
    let connected = match connected {
        Some(Ok(c)) => c,
        None => {
            let name = &script.policy.pools[pool].name;
            tracing::info!(connection = %id, listener = %listener, peer = %peer, pool = %name, "the client left while a server was being connected to; connection closed (CC)");
            open.set(b'C', b'C');
            return;
        }
        Some(Err(NoServer {
            no_hello: Some((reason, timed_out)),
            ..
        })) => {
            // As on_connect's own wait (cR / CR): a pool function waited.
            tracing::info!(connection = %id, listener = %listener, peer = %peer, "connection closed: {reason}; no server connection opened");
            open.set(if timed_out { b'c' } else { b'C' }, b'R');
            return;
        }
        Some(Err(no_server)) => {
            let timed_out = no_server.timed_out;
            let name = &script.policy.pools[pool].name;
            let why = no_server_words(&script.policy.pools[no_server.pool], &no_server);
            tracing::warn!(connection = %id, listener = %listener, peer = %peer, pool = %name, "{why}; connection closed");
            open.set(if timed_out { b's' } else { b'S' }, b'C');
            return;
        }
    };
    open.ex.connect_ms = open.reached();
    let idle = script.policy.pools[connected.pool].timeouts.idle;
    let plain = crate::relay::Plain {
        client: true,
        server: script.policy.pools[connected.pool].tls.is_none(),
    };
    // The connection no longer needs the script: an old generation's VM
    // is not kept alive by a connection that lasts hours.
    drop(view);
    drop(script);
    let connect::Connected {
        stream: mut server_stream,
        in_flight,
        ..
    } = connected;
    // Killed with the worker (HAProxy's `K`) unless it ends below.
    open.set(b'K', b'D');
    let (end, moved) = crate::relay::both_ways(
        &mut stream,
        &mut server_stream,
        Bytes::new(),
        Bytes::new(),
        idle,
        plain,
        |moved| {
            open.ex.bytes_in = moved.up;
            open.ex.bytes_out = moved.down;
        },
    )
    .await;
    // Closed now: for a plain side this close is what passes its EOF on.
    drop(stream);
    drop(server_stream);
    let termination = end.termination();
    let server = open.ex.server.clone().unwrap_or_default();
    match end {
        End::Idle(_) => {
            tracing::info!(connection = %id, listener = %listener, peer = %peer, server = %server, "nothing moved for {idle:?} (timeouts.idle); connection closed ({termination})")
        }
        // A server that breaks its connections is the operator's news
        // (and the lab's cut cause); a client that does is not.
        End::Broke(b'S') => {
            tracing::info!(connection = %id, listener = %listener, peer = %peer, server = %server, "the server broke the connection; connection closed ({termination})")
        }
        End::Broke(_) => {
            tracing::debug!(connection = %id, listener = %listener, peer = %peer, server = %server, "connection broke ({termination})")
        }
        End::Closed => {}
    }
    if end == End::Closed {
        in_flight.finished_well();
    }
    open.ex.bytes_in = moved.up;
    open.ex.bytes_out = moved.down;
    open.ex.termination = termination;
}

/// Why no server connection was made, in the HTTP path's words
/// (proxy/mod.rs): none up, or how many connects failed and the last
/// error.
fn no_server_words(pool: &crate::lb::Pool, failed: &NoServer) -> String {
    match (&failed.last_error, failed.tried) {
        (Some(last), tried) if tried > 0 => format!(
            "no server of pool \"{}\" could be reached (tried {tried}; last: {last})",
            pool.name,
        ),
        _ => format!(
            "no server of pool \"{}\" is up ({}, all down)",
            pool.name,
            crate::words::count(pool.servers.len() as u64, "server"),
        ),
    }
}
