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
use crate::relay::End;
use crate::script::api::conn::ConnView;
use crate::script::ConnectVerdict;
use crate::server::worker::Worker;

/// Serves one connection accepted on tcp listener `listener`: reads the
/// PROXY header first when `proxied` (an `accept_proxy` listener), asks
/// `on_connect` where it goes, connects to a server of that pool and
/// copies bytes both ways until both sides are done. The access log line
/// is written when this ends, or when its task is dropped (a worker
/// stopping at the end of its grace period: `KD`).
pub async fn serve(
    worker: Rc<Worker>,
    mut stream: TcpStream,
    socket: (SocketAddr, SocketAddr),
    listener: Arc<str>,
    timeouts: ClientTimeouts,
    proxied: bool,
) {
    // Counted open, so a drain waits for it (for its grace period: a TCP
    // connection has no request boundary at which to stop early).
    let Some(_open_conn) = worker.drain.enter() else {
        return;
    };
    let (peer, local) = if proxied {
        match crate::server::worker::read_proxied(&mut stream, socket, &listener, timeouts).await {
            Some(addrs) => addrs,
            None => return,
        }
    } else {
        socket
    };
    let script = worker.script();
    let id = worker.next_request_id();
    let mut open = record::open(&script, id, peer, listener.clone());
    let mut view = ConnView::new(peer, local, listener.clone(), false);
    let pool = match script.on_connect_tcp(&mut view, &stream).await {
        Ok(ConnectVerdict::Pool(i)) => Some(i),
        Ok(ConnectVerdict::Default) => {
            let default = script
                .policy
                .listener(&listener)
                .and_then(|l| l.default_pool);
            if default.is_none() {
                tracing::warn!(connection = %id, listener = %listener, peer = %peer, "on_connect chose no pool and the listener has no pool; connection closed");
            }
            default
        }
        Ok(ConnectVerdict::Reject(reason)) => {
            tracing::info!(connection = %id, listener = %listener, peer = %peer, "connection rejected: {reason}");
            None
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
    };
    // Named in the line even if no server of it can be had.
    open.ex.pool = Some(script.policy.pools[pool].name.clone());
    let connected = connect::connect(&script, pool, client, &mut open).await;
    let connected = match connected {
        Ok(c) => c,
        Err(NoServer { timed_out }) => {
            let name = &script.policy.pools[pool].name;
            tracing::warn!(connection = %id, listener = %listener, peer = %peer, pool = %name, "no server of pool \"{name}\" could be connected to; connection closed");
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
