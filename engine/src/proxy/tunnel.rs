//! WebSocket and other HTTP/1.1 Upgrade tunnels (RFC 9110 §7.8, RFC 6455
//! §4). An upgrade request is routed like any request (`on_request` sees
//! its `Upgrade` header); Pocket forwards `Upgrade` and `Connection:
//! upgrade` (the only hop-by-hop headers it forwards) on a new server
//! connection. If the server answers 101, the 101 goes to the client with
//! the server's headers and both connections stop being HTTP: bytes are
//! copied both ways ([`run`]) until both sides have closed, one side
//! breaks, or nothing moves either way for the pool's `timeouts.tunnel`.
//! Any other answer is relayed as usual and nothing is upgraded. An
//! upgrade to `h2c`, or one whose request has a body, is not tunneled
//! ([`asked`]): it goes to the server as a plain request.
//!
//! Where it hooks in: [`asked`] and [`Asked::restore`] in the request
//! path (proxy/mod.rs `forward`), the server connection from
//! `Upstreams::connect_for_upgrade`, [`switch`] on a 101, [`with_record`]
//! in `handle`, and server/conn.rs `serve_h1`, which takes the client's
//! socket back from hyper once the 101 is written and calls [`run`].
//!
//! HTTP/2 has no Upgrade (RFC 9113 §8.2.2: a request carrying it is
//! malformed; the h2 layer resets such a stream, as HAProxy does), and
//! HTTP/1.0 has none either: neither is ever tunneled.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::body::{InFlight, ResponseBody};
use super::{local, ConnCtx};
use crate::context::RequestId;
use crate::lb::{Pool, Server};
use crate::observe::exchange::{Open, Termination};
use crate::relay::End;

/// The server side of a tunnel: its connection's socket, plain or TLS.
pub trait ServerStream: AsyncRead + AsyncWrite + Unpin {
    /// The TCP socket (under TLS, the one TLS runs on): its options are
    /// set for the tunnel when it opens.
    fn tcp(&self) -> &TcpStream;
}

impl ServerStream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl ServerStream for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// The server connection's socket and what hyper read past the 101, sent
/// by the connection's task (proxy/upstream.rs) once the 101 is in.
pub struct Upgraded {
    pub io: Box<dyn ServerStream>,
    pub read_buf: Bytes,
}
pub type Handover = tokio::sync::oneshot::Receiver<Upgraded>;
pub type HandoverTx = tokio::sync::oneshot::Sender<Upgraded>;

/// The longest wait for the server connection's socket once its 101 is
/// in (it is handed over at once; this only bounds a bug).
const HANDOVER_WAIT: Duration = Duration::from_secs(5);

/// An upgrade the client asked for: its `Upgrade` header's value.
pub struct Asked(HeaderValue);

/// Whether `head` asks to switch protocols: HTTP/1.1, an `Upgrade`
/// header, and `Connection` listing `upgrade` (RFC 9110 §7.8: an Upgrade
/// not named by Connection is not one). Two kinds are never tunneled;
/// their `Upgrade` is then removed as any hop-by-hop header is, and the
/// request goes to the server as a plain one:
///
/// - an `Upgrade` that names `h2c`: behind a switch to HTTP/2 every later
///   request on the connection would be inside the tunnel, past
///   `on_request` ("h2c smuggling"). RFC 9113 §3.1 deprecates this
///   upgrade; HAProxy and Envoy do not pass it either.
/// - a request with a body (`body_follows`: a Content-Length above 0, or
///   chunked): a server that switches before the body is all sent would
///   leave the rest of it on a connection that is no longer HTTP.
///   WebSocket handshakes are GETs without a body (RFC 6455 §4.1).
pub fn asked(head: &http::request::Parts, body_follows: bool) -> Option<Asked> {
    if head.version != Version::HTTP_11 || body_follows {
        return None;
    }
    let named = head.headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    if !named {
        return None;
    }
    let value = crate::wire::fields::combined(&head.headers, &header::UPGRADE)?;
    if names_h2c(&value) {
        return None;
    }
    let value = HeaderValue::from_bytes(&value).ok()?;
    Some(Asked(value))
}

/// Whether an `Upgrade` value lists `h2c` (`h2c` or `h2c/VERSION`, any
/// case) among its protocols (RFC 9110 §7.8: `protocol-name["/"
/// protocol-version]`, comma-separated).
fn names_h2c(value: &[u8]) -> bool {
    value.split(|b| *b == b',').any(|p| {
        let p = p.trim_ascii();
        let name = p.split(|b| *b == b'/').next().unwrap_or(p);
        name.trim_ascii().eq_ignore_ascii_case(b"h2c")
    })
}

impl Asked {
    /// Puts back on the request for the server what the hop-by-hop rule
    /// took off: `Upgrade` and `Connection: upgrade`.
    pub fn restore(&self, headers: &mut HeaderMap) {
        headers.insert(header::UPGRADE, self.0.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// A tunnel agreed (the server's 101 is in) whose client side is not
/// free yet: hyper still has to write the 101 to the client. Kept in the
/// client connection's [`Slot`] until then.
pub struct Pending {
    server_io: Box<dyn ServerStream>,
    /// What the server sent past its 101 (the first frames, already).
    server_early: Bytes,
    in_flight: InFlight,
    idle: Duration,
    server: Arc<str>,
    id: RequestId,
    open: Option<Box<Open>>,
}

/// Where a connection's agreed tunnel waits for its 101 to be written.
pub type Slot = RefCell<Option<Box<Pending>>>;

/// The server answered the upgrade request `resp` with a 101: gets the
/// server's socket from its connection, keeps the tunnel in the client
/// connection's slot, and makes the 101 for the client from the server's
/// (its headers as sent, less the hop-by-hop ones other than `Upgrade`
/// and `Connection: upgrade`). `on_response` does not run on a 101.
#[allow(clippy::too_many_arguments)]
pub async fn switch(
    cx: &ConnCtx,
    pool: &Pool,
    server: &Server,
    resp: Response<Incoming>,
    in_flight: InFlight,
    handover: Handover,
    id: RequestId,
    open: &mut Open,
) -> Response<ResponseBody> {
    server
        .state
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Read off the clock even with no access log: the metrics take a
    // tunnel's time to its 101 as its duration (observe/metrics/count.rs).
    open.ex.first_byte_ms = Some(open.elapsed_ms());
    let parts = match tokio::time::timeout(HANDOVER_WAIT, handover).await {
        Ok(Ok(parts)) => parts,
        _ => {
            let why = format!(
                "server {} of pool \"{}\" agreed to switch protocols but its connection closed",
                server.addr, pool.name
            );
            tracing::warn!(request = %id, "{why}");
            open.set(b'S', b'H');
            return local::error(StatusCode::BAD_GATEWAY, &why, &id.to_string());
        }
    };
    let (mut head, _) = resp.into_parts();
    let upgrade = head.headers.get(header::UPGRADE).cloned();
    crate::wire::hop_by_hop::strip_hop_by_hop(&mut head.headers);
    head.headers.remove(header::CONTENT_LENGTH);
    if let Some(u) = upgrade {
        head.headers.insert(header::UPGRADE, u);
    }
    head.headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    head.version = Version::HTTP_11;
    // The connection was opened with TCP_USER_TIMEOUT = the pool's `idle`
    // (upstream.rs `connect`): left so, a server that takes nothing for
    // `idle` would be cut by the kernel, not after `timeouts.tunnel`.
    let sock = socket2::SockRef::from(parts.io.tcp());
    if let Err(e) = sock.set_tcp_user_timeout(Some(pool.timeouts.tunnel)) {
        tracing::debug!(request = %id, server = %server.addr, "TCP_USER_TIMEOUT not raised to timeouts.tunnel: {e}");
    }
    tracing::debug!(request = %id, server = %server.addr, "switching protocols: tunnel open");
    *cx.tunnel().borrow_mut() = Some(Box::new(Pending {
        server_io: parts.io,
        server_early: parts.read_buf,
        in_flight,
        idle: pool.timeouts.tunnel,
        server: server.addr_text.clone(),
        id,
        open: None,
    }));
    Response::from_parts(head, ResponseBody::full(Bytes::new()))
}

/// Hands the exchange's record to the response as
/// [`super::with_record`] does, or, for a 101 whose tunnel waits in the
/// connection's slot, to the tunnel: its log line is written when the
/// tunnel ends, with the bytes of both ways.
pub fn with_record(
    cx: &ConnCtx,
    resp: Response<ResponseBody>,
    mut open: Box<Open>,
    head_only: bool,
) -> Response<ResponseBody> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(pending) = cx.tunnel().borrow_mut().as_mut() {
            open.ex.status = 101;
            // Dropped before the 101 is out: the client went away.
            open.set(b'C', b'D');
            pending.open = Some(open);
            return resp;
        }
    }
    super::with_record(resp, open, head_only)
}

/// Copies bytes both ways between the `client` (whose `client_early`
/// bytes, read past its request, go first) and the server with the shared
/// copier ([`crate::relay::both_ways`]: half-closes passed on, bounded
/// buffers), until both have closed, either breaks, or nothing moves for
/// the pool's `timeouts.tunnel`. Ends the exchange's record then. A task
/// dropped meanwhile (the worker stops at the end of a drain's grace
/// period) closes both sockets and logs `KD`.
pub async fn run<C: AsyncRead + AsyncWrite + Unpin>(
    pending: Box<Pending>,
    mut client: C,
    client_early: Bytes,
) {
    let Pending {
        mut server_io,
        server_early,
        in_flight,
        idle,
        server,
        id,
        mut open,
    } = *pending;
    if let Some(o) = &mut open {
        // Killed with the worker (HAProxy's `K`) unless it ends below.
        o.set(b'K', b'D');
        // Bytes of the tunnel are counted here, not by a body's progress.
        o.progress = None;
    }
    let (end, moved) = crate::relay::both_ways(
        &mut client,
        &mut server_io,
        client_early,
        server_early,
        idle,
        // Each side's end is passed on by a shutdown (a TLS side's with
        // its close_notify).
        crate::relay::Plain::default(),
        |moved| {
            if let Some(o) = &mut open {
                // Kept current: a tunnel dropped with its worker logs them too.
                o.ex.bytes_in = moved.up;
                o.ex.bytes_out = moved.down;
            }
        },
    )
    .await;
    let termination = end.termination();
    match end {
        End::Idle(_) => {
            tracing::info!(request = %id, server = %server, "tunnel idle for {idle:?} (timeouts.tunnel); closed")
        }
        _ => tracing::debug!(request = %id, server = %server, "tunnel ended ({termination})"),
    }
    if termination == Termination::NORMAL {
        in_flight.finished_well();
    }
    if let Some(o) = &mut open {
        o.ex.bytes_in = moved.up;
        o.ex.bytes_out = moved.down;
        o.ex.termination = termination;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: Version, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().version(version).uri("/chat");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn an_upgrade_needs_http_1_1_and_connection_naming_it() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        let a = asked(&head(Version::HTTP_11, &ws), false).expect("asked");
        assert_eq!(a.0, "websocket");
        assert!(asked(&head(Version::HTTP_10, &ws), false).is_none());
        assert!(asked(&head(Version::HTTP_2, &ws), false).is_none());
        let alone = [("upgrade", "websocket")];
        assert!(asked(&head(Version::HTTP_11, &alone), false).is_none());
        let alone = [("connection", "upgrade")];
        assert!(asked(&head(Version::HTTP_11, &alone), false).is_none());
    }

    #[test]
    fn h2c_and_upgrades_with_a_body_are_not_tunneled() {
        for up in ["h2c", "H2C", "websocket, h2c", "h2c/1", " h2c ,foo"] {
            let h = [("connection", "Upgrade, HTTP2-Settings"), ("upgrade", up)];
            assert!(asked(&head(Version::HTTP_11, &h), false).is_none(), "{up}");
        }
        for up in ["h2", "h2cx", "websocket"] {
            let h = [("connection", "upgrade"), ("upgrade", up)];
            assert!(asked(&head(Version::HTTP_11, &h), false).is_some(), "{up}");
        }
        let ws = [("connection", "upgrade"), ("upgrade", "websocket")];
        assert!(asked(&head(Version::HTTP_11, &ws), true).is_none());
    }

    #[test]
    fn restore_puts_back_only_upgrade_and_connection() {
        let ws = [("connection", "upgrade"), ("upgrade", "websocket")];
        let mut h = head(Version::HTTP_11, &ws);
        let a = asked(&h, false).unwrap();
        h.headers
            .insert("keep-alive", HeaderValue::from_static("timeout=5"));
        crate::wire::hop_by_hop::strip_hop_by_hop(&mut h.headers);
        a.restore(&mut h.headers);
        assert_eq!(h.headers["upgrade"], "websocket");
        assert_eq!(h.headers["connection"], "upgrade");
        assert!(!h.headers.contains_key("keep-alive"));
    }
}
