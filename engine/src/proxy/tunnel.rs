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
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::{InFlight, ResponseBody};
use super::{local, ConnCtx, RequestId};
use crate::lb::{Pool, Server};
use crate::observe::exchange::{Open, Termination};

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

/// Bytes buffered per direction: a side that does not take what is sent
/// to it holds at most this much here (and its socket buffers in the
/// kernel), and the other side is not read meanwhile. HAProxy's
/// `tune.bufsize`.
const TUNNEL_BUF: usize = 16 * 1024;

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
    let value = super::fields::combined(&head.headers, &header::UPGRADE)?;
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
    super::forward::strip_hop_by_hop(&mut head.headers);
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
    *cx.tunnel.borrow_mut() = Some(Box::new(Pending {
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
        if let Some(pending) = cx.tunnel.borrow_mut().as_mut() {
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
/// bytes, read past its request, go first) and the server, until both
/// have closed (each side's end is passed on as a shutdown of the other's
/// write: a half-close), either breaks, or nothing moves for the pool's
/// `timeouts.tunnel`. Ends the exchange's record then. A task dropped
/// meanwhile (the worker stops at the end of a drain's grace period)
/// closes both sockets and logs `KD`.
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
    let mut up = Half::new(client_early);
    let mut down = Half::new(server_early);
    let mut timer = Box::pin(tokio::time::sleep(idle));
    let end = std::future::poll_fn(|cx| {
        let u = up.poll(cx, &mut client, &mut server_io);
        let d = down.poll(cx, &mut server_io, &mut client);
        if let Some(o) = &mut open {
            // Kept current: a tunnel dropped with its worker logs them too.
            o.ex.bytes_in = up.bytes;
            o.ex.bytes_out = down.bytes;
        }
        match (u, d) {
            (Poll::Ready(Err(e)), _) => return Poll::Ready(End::Broke(e.blame(b'C', b'S'))),
            (_, Poll::Ready(Err(e))) => return Poll::Ready(End::Broke(e.blame(b'S', b'C'))),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(End::Closed),
            _ => {}
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let last = up.last.max(down.last);
            if last + idle > Instant::now() {
                timer.as_mut().reset(last + idle);
                continue;
            }
            // Whose silence it is: a side that takes nothing sent to it,
            // else the side that has sent nothing for longer.
            let client_quiet = if down.write_blocked {
                true
            } else if up.write_blocked {
                false
            } else {
                up.last <= down.last
            };
            return Poll::Ready(End::Idle(client_quiet));
        }
    })
    .await;
    let termination = match end {
        End::Closed => Termination::NORMAL,
        End::Broke(who) => Termination::of(who, b'D'),
        End::Idle(true) => Termination::of(b'c', b'D'),
        End::Idle(false) => Termination::of(b's', b'D'),
    };
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
        o.ex.termination = termination;
    }
}

/// How a tunnel ended.
enum End {
    /// Both sides closed, each passed on to the other.
    Closed,
    /// A side broke (a reset, or a write that failed): `C` or `S`.
    Broke(u8),
    /// Nothing moved for `timeouts.tunnel`; true: the client's silence.
    Idle(bool),
}

/// A failure in one direction: reading its source or writing its
/// destination.
enum Fault {
    Read,
    Write,
}

impl Fault {
    /// Who broke: `source` if reading failed, else `dest`.
    fn blame(&self, source: u8, dest: u8) -> u8 {
        match self {
            Fault::Read => source,
            Fault::Write => dest,
        }
    }
}

/// One direction of a tunnel: a bounded buffer read from one side and
/// written to the other. While the buffer is not empty nothing more is
/// read, so a side that stops reading pauses the other (backpressure).
struct Half {
    /// Bytes read ahead before the tunnel began, written first.
    early: Bytes,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The source has closed its side (EOF).
    eof: bool,
    /// The EOF has been passed on (the destination's write shut down).
    done: bool,
    /// Written to the destination and not flushed yet.
    unflushed: bool,
    /// The last write could not complete: the destination takes nothing.
    write_blocked: bool,
    /// When bytes last moved this way (read or written).
    last: Instant,
    /// Bytes copied this way.
    bytes: u64,
}

impl Half {
    fn new(early: Bytes) -> Half {
        Half {
            early,
            buf: vec![0; TUNNEL_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            done: false,
            unflushed: false,
            write_blocked: false,
            last: Instant::now(),
            bytes: 0,
        }
    }

    /// Moves what it can from `src` to `dst`. Ready(Ok): this direction
    /// is over (EOF passed on). Pending: waits for either side.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
    ) -> Poll<Result<(), Fault>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            // Write out what is held: the early bytes, then the buffer.
            while !self.early.is_empty() || self.start < self.end {
                let chunk = if self.early.is_empty() {
                    &self.buf[self.start..self.end]
                } else {
                    &self.early[..]
                };
                match Pin::new(&mut *dst).poll_write(cx, chunk) {
                    Poll::Pending => {
                        self.write_blocked = true;
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(Fault::Write))
                    }
                    Poll::Ready(Ok(n)) => {
                        self.write_blocked = false;
                        self.unflushed = true;
                        self.bytes += n as u64;
                        self.last = Instant::now();
                        if self.early.is_empty() {
                            self.start += n;
                        } else {
                            let _ = self.early.split_to(n);
                        }
                    }
                }
            }
            if self.eof {
                return self.finish(cx, dst);
            }
            let mut rb = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    if self.unflushed {
                        // A TLS stream holds what it was given until
                        // flushed; plain TCP has nothing to flush.
                        match Pin::new(&mut *dst).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.unflushed = false,
                            Poll::Ready(Err(_)) => return Poll::Ready(Err(Fault::Write)),
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Err(Fault::Read)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        self.eof = true;
                    } else {
                        self.start = 0;
                        self.end = n;
                        self.last = Instant::now();
                    }
                }
            }
        }
    }

    /// The source closed and all it sent is written: flush, then shut the
    /// destination's write (it reads EOF; its own way may go on).
    fn finish<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut W,
    ) -> Poll<Result<(), Fault>> {
        match Pin::new(&mut *dst).poll_shutdown(cx) {
            Poll::Pending => Poll::Pending,
            // The destination may be gone already: its own way says so.
            Poll::Ready(_) => {
                self.done = true;
                Poll::Ready(Ok(()))
            }
        }
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
        super::super::forward::strip_hop_by_hop(&mut h.headers);
        a.restore(&mut h.headers);
        assert_eq!(h.headers["upgrade"], "websocket");
        assert_eq!(h.headers["connection"], "upgrade");
        assert!(!h.headers.contains_key("keep-alive"));
    }
}
