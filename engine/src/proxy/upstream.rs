//! Each worker's connections to servers: opened with a connect timeout,
//! kept alive and reused (most recently used first), dropped when stale.
//! Per worker, so no locks: a worker never shares a connection.
//!
//! A pool with `tls` wraps each new connection in TLS after the TCP
//! connect; a pool with `protocol = "h2"` shares a few HTTP/2 connections
//! per server among all its requests (streams), where HTTP/1.1 lends a
//! connection to one request at a time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::{http2, TrySendError};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::body::RequestBody;
use super::proxy_header::{self, ProxyTo};
use super::upstream_io::{HeadWatch, UpstreamIo};
use crate::config::upstream_tls::Protocol;
use crate::lb::{Pool, Server};

/// The most a server's response head (or its trailers) may take, in
/// bytes: a larger one is a 502, as nginx's `proxy_buffer_size` and
/// HAProxy's `tune.bufsize` make it (hyper's default is its ~400 KiB
/// read buffer).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The most one read of a response body from a server takes, in bytes.
/// Each read becomes a piece of the body that is handed on to the client
/// as it is (no copy), so this is the size of what a slow client holds
/// queued, times a few (HAProxy's `tune.bufsize` is 16 KiB). Less than
/// 16 KiB: hyper sizes its next read buffer up to the next power of two
/// once a read fills the one before, so 16 KiB reads would make its
/// buffers 32 KiB; 12 KiB ones keep them at 16 KiB. A multiple of the h2
/// piece (4 KiB, server/conn.rs `H2_PIECE`): a client that opens its
/// window a piece at a time gets whole pieces, not a 4 KiB frame and a
/// 1-byte one.
pub const READ_PIECE: usize = 12 * 1024;

/// Most idle connections kept per server per worker.
pub(crate) const MAX_IDLE_PER_SERVER: usize = 128;

/// Most idle connections kept per server for one client connection, in a
/// `send_proxy` pool's private set (`ConnCtx::private_upstreams`): HAProxy's
/// `max-session-srv-conns` (default 5). An HTTP/2 client with many streams
/// at once opens a server connection per stream; past this many, the
/// extra ones are closed as their requests end instead of staying open,
/// unusable by anyone else, for as long as the client stays connected.
pub const MAX_PRIVATE_IDLE_PER_SERVER: usize = 5;

/// Streams one HTTP/2 connection to a server carries before another is
/// opened: RFC 9113 §6.5.2 asks servers to allow at least 100 (nginx
/// allows 128, Go 250). hyper does not say what the server announced, so
/// Pocket keeps below the floor every server is asked to allow; a server
/// that allows fewer has the excess streams queued on its connection.
pub const H2_STREAMS_PER_CONN: u32 = 100;

/// The windows Pocket gives an HTTP/2 server for response bodies: what it
/// may send ahead of what the client has taken, per stream and in all on
/// one connection (hyper's defaults are 2 MiB and 5 MiB). A slow client
/// holds at most a stream window of its server's answer in Pocket; the
/// connection window is shared by the streams, so it is large enough for
/// 64 stalled streams before it holds the others back.
const H2_STREAM_WINDOW: u32 = 128 * 1024;
const H2_CONN_WINDOW: u32 = 8 * 1024 * 1024;

/// Request body bytes hyper queues per stream beyond the server's window
/// (hyper's default is 1 MiB): as for HTTP/2 clients (server/conn.rs).
const H2_SEND_BUF: usize = 16 * 1024;

/// True if an idle connection to a server must not carry a request: the
/// server closed it (EOF), reset it (an error such as ECONNRESET), or
/// sent something unasked (an HTTP/1 server says nothing between
/// answers; what it sends is a `408` or a TLS close_notify before it
/// closes). False only when the socket has nothing to read
/// (`EWOULDBLOCK`): one non-blocking `recv(MSG_PEEK)` of 1 byte, as
/// nginx's keepalive module checks its cached connections
/// (`ngx_http_upstream_keepalive_close_handler`).
///
/// For use right before a reuse: a connection found so was closed by the
/// server before any byte of the next request was written, so that
/// request goes on another connection whatever its method. The peek
/// costs one system call per reuse; it closes the gap between the
/// server's close reaching the socket and the connection's task seeing
/// it (hyper's `is_closed`), which a request that comes first can fall in.
pub fn closed_while_idle(socket: impl AsFd) -> bool {
    let sock = socket2::SockRef::from(&socket);
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    match sock.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
        Ok(_) => true,
    }
}

/// Connections to one server are kept apart by how they reach it: the
/// address and the server's transport ([`Server::transport`], made at
/// load: the pool's TLS settings and protocol, and for TLS the server's
/// name).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConnKey {
    pub addr: SocketAddr,
    pub transport: u64,
}

impl ConnKey {
    #[inline]
    pub fn of(server: &Server) -> ConnKey {
        ConnKey {
            addr: server.addr,
            transport: server.transport,
        }
    }
}

/// The keys of every server of `pools`: what a worker keeps idle
/// connections to after a reload.
pub fn live_keys(pools: &[std::sync::Arc<Pool>]) -> Vec<ConnKey> {
    pools
        .iter()
        .flat_map(|p| p.servers.iter().map(ConnKey::of))
        .collect()
}

struct Idle {
    sender: SendRequest<RequestBody>,
    watch: HeadWatch,
    since: Instant,
}

/// A TCP connection to a server at `addr`, with the socket options every
/// server connection has (`TCP_NODELAY`; `TCP_USER_TIMEOUT` at the pool's
/// `idle` timeout, so a pulled cable is noticed; TCP keepalive probes
/// after 30 s of silence, every 10 s). Errors: refused (or any connect
/// error), or not connected by `deadline` (reported as the pool's
/// `connect` timeout). Shared by the hyper path (which may go on with
/// TLS within the same deadline) and the direct HTTP/1 path
/// (proxy/h1/servers.rs).
pub(crate) async fn connect_tcp(
    pool: &Pool,
    addr: SocketAddr,
    deadline: tokio::time::Instant,
) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Refused(e)),
        Err(_) => return Err(ConnectError::Timeout(pool.timeouts.connect)),
    };
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(&stream);
    // A pulled cable sends no RST: unacknowledged data for longer than
    // this, and the kernel gives up on the connection.
    let _ = sock.set_tcp_user_timeout(Some(pool.timeouts.idle));
    let _ = sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10)),
    );
    Ok(stream)
}

/// One shared HTTP/2 connection to a server.
struct H2Conn {
    sender: http2::SendRequest<RequestBody>,
    /// Requests on it now (streams open or about to be).
    streams: Cell<u32>,
    /// When the last stream ended (for `timeouts.keepalive`).
    last_used: Cell<Instant>,
    /// Never armed or blocked (HTTP/2 has its own flow control): the
    /// request path's checks read "no answer byte yet" from it.
    watch: HeadWatch,
}

pub struct Upstreams {
    idle: RefCell<HashMap<ConnKey, Vec<Idle>, BuildHasherDefault<AddrHasher>>>,
    h2: RefCell<HashMap<ConnKey, Vec<Rc<H2Conn>>, BuildHasherDefault<AddrHasher>>>,
    /// HTTP/2 connections being opened, by server: a request that finds
    /// no shared connection with room waits for the one under way instead
    /// of opening its own (else a burst of N requests to a cold server
    /// opens N connections, each carrying one stream).
    h2_opening: RefCell<HashMap<ConnKey, Rc<Notify>, BuildHasherDefault<AddrHasher>>>,
    /// Most idle connections kept per server: HTTP/1.1 ones waiting for a
    /// request, HTTP/2 ones with no stream open. Past it, a connection
    /// whose request ends is closed.
    max_idle: usize,
}

impl Default for Upstreams {
    /// A worker's shared set: [`MAX_IDLE_PER_SERVER`] per server.
    fn default() -> Upstreams {
        Upstreams::with_max_idle(MAX_IDLE_PER_SERVER)
    }
}

/// FNV-1a: the keys are a worker's own server addresses, not attacker
/// input, and SipHash cost more than the rest of a checkout.
#[derive(Default)]
pub(crate) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// One request's way to a server: an HTTP/1.1 connection of its own, or
/// a stream on a shared HTTP/2 connection.
pub enum Sender {
    H1(SendRequest<RequestBody>),
    H2(H2Stream),
}

/// A stream's claim on a shared HTTP/2 connection; its end (drop) frees
/// the place for another request.
pub struct H2Stream {
    sender: http2::SendRequest<RequestBody>,
    conn: Rc<H2Conn>,
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        self.conn
            .streams
            .set(self.conn.streams.get().saturating_sub(1));
        self.conn.last_used.set(Instant::now());
    }
}

pin_project_lite::pin_project! {
    /// The answer to a request sent on either kind of connection.
    #[project = SendProj]
    pub enum SendFuture<A, B> {
        H1 { #[pin] f: A },
        H2 { #[pin] f: B },
    }
}

type Sent = Result<Response<Incoming>, TrySendError<Request<RequestBody>>>;

impl<A: Future<Output = Sent>, B: Future<Output = Sent>> Future for SendFuture<A, B> {
    type Output = Sent;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Sent> {
        match self.project() {
            SendProj::H1 { f } => f.poll(cx),
            SendProj::H2 { f } => f.poll(cx),
        }
    }
}

impl Sender {
    /// Sends `req`; a request that provably never left comes back in the
    /// error (`TrySendError::take_message`).
    #[inline]
    pub fn try_send_request(
        &mut self,
        req: Request<RequestBody>,
    ) -> SendFuture<impl Future<Output = Sent>, impl Future<Output = Sent>> {
        match self {
            Sender::H1(s) => SendFuture::H1 {
                f: s.try_send_request(req),
            },
            Sender::H2(s) => SendFuture::H2 {
                f: s.sender.try_send_request(req),
            },
        }
    }
}

/// A connection ready for one request.
pub struct Conn {
    pub sender: Sender,
    /// Arms the response head check as each request is sent.
    pub watch: HeadWatch,
    /// How long it sat idle before this request (None: opened for it). A
    /// long-idle connection may have been closed by the server meanwhile.
    pub idle_for: Option<Duration>,
    pub key: ConnKey,
    /// Given back to the idle list after its exchange. Not so for the
    /// HTTP/1.1 connection of a refused upgrade in an h2 pool, which no
    /// request of that pool would take again.
    pub keep: bool,
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    Refused(io::Error),
    Timeout(Duration),
    Handshake(hyper::Error),
    /// The TLS handshake failed: what went wrong, and a short cause for
    /// the access log (a fixed text).
    Tls(String, &'static str),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused(e) => write!(f, "connect failed: {e}"),
            ConnectError::Timeout(d) => write!(f, "connect timed out after {d:?}"),
            ConnectError::Handshake(e) => write!(f, "connection setup failed: {e}"),
            ConnectError::Tls(why, _) => f.write_str(why),
        }
    }
}

impl ConnectError {
    /// The access log's retry cause.
    pub fn cause(&self) -> &'static str {
        match self {
            ConnectError::Tls(_, cause) => cause,
            _ => "connect failed",
        }
    }

    /// A failed TLS handshake, said readably: a certificate that did not
    /// verify says why in plain words (config/upstream_tls.rs), and the
    /// access log's cause names rustls's reason (`UnknownIssuer`,
    /// `NotValidForName`, `Expired`).
    pub(crate) fn tls(e: io::Error) -> ConnectError {
        use rustls::CertificateError as C;
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        match inner {
            Some(rustls::Error::InvalidCertificate(c)) => {
                let cause = match c {
                    C::UnknownIssuer => "TLS: certificate verify failed: UnknownIssuer",
                    C::NotValidForName | C::NotValidForNameContext { .. } => {
                        "TLS: certificate verify failed: NotValidForName"
                    }
                    C::Expired | C::ExpiredContext { .. } => {
                        "TLS: certificate verify failed: Expired"
                    }
                    _ => "TLS: certificate verify failed",
                };
                let why = crate::config::upstream_tls::certificate_problem(c);
                ConnectError::Tls(format!("TLS: certificate verify failed: {why}"), cause)
            }
            Some(other) => ConnectError::Tls(
                format!("TLS handshake failed: {other}"),
                "TLS handshake failed",
            ),
            None => ConnectError::Tls(format!("TLS handshake failed: {e}"), "TLS handshake failed"),
        }
    }
}

/// A connection lent to one request; given back when its response body
/// has been read to the end (HTTP/1.1), or its stream's place freed
/// (HTTP/2).
pub struct Lease {
    upstreams: Rc<Upstreams>,
    key: ConnKey,
    sender: Sender,
    watch: HeadWatch,
    keep: bool,
}

impl Lease {
    pub fn new(upstreams: Rc<Upstreams>, conn: Conn) -> Lease {
        Lease {
            upstreams,
            key: conn.key,
            sender: conn.sender,
            watch: conn.watch,
            keep: conn.keep,
        }
    }

    pub fn release(self) {
        let Lease {
            upstreams,
            key,
            sender,
            watch,
            keep,
        } = self;
        let sender = match sender {
            Sender::H1(sender) => sender,
            Sender::H2(stream) => {
                // The stream is over; dropping it frees its place. Its
                // connection may now be one idle too many.
                drop(stream);
                upstreams.trim_h2(key);
                return;
            }
        };
        if sender.is_closed() || !keep {
            return;
        }
        let mut idle = upstreams.idle.borrow_mut();
        let list = idle.entry(key).or_default();
        if list.len() < upstreams.max_idle {
            crate::observe::metrics::upstream_idle(1);
            list.push(Idle {
                sender,
                watch,
                since: Instant::now(),
            });
        }
    }
}

impl Drop for Upstreams {
    /// A worker that ends takes its idle connections with it.
    fn drop(&mut self) {
        let kept: usize = self.idle.get_mut().values().map(Vec::len).sum();
        crate::observe::metrics::upstream_idle(-(kept as i64));
    }
}

/// An HTTP/2 connection being opened; when that ends (up, failed, or the
/// request gone), the requests waiting for it are woken.
struct Opening<'a> {
    upstreams: &'a Upstreams,
    key: ConnKey,
    notify: Rc<Notify>,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut opening = self.upstreams.h2_opening.borrow_mut();
        if opening
            .get(&self.key)
            .is_some_and(|n| Rc::ptr_eq(n, &self.notify))
        {
            opening.remove(&self.key);
        }
        self.notify.notify_waiters();
    }
}

/// Keeps at most `max_idle` of the connections in `list` that have no
/// stream open (those with streams are all kept).
fn trim_idle_h2(list: &mut Vec<Rc<H2Conn>>, max_idle: usize) {
    let mut idle = 0;
    list.retain(|c| {
        if c.streams.get() > 0 {
            return true;
        }
        idle += 1;
        idle <= max_idle
    });
}

/// Runs upstream HTTP/2 connection tasks on the worker's thread (its
/// LocalSet): the request bodies they read hold the worker's state.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

impl Upstreams {
    /// A set that keeps at most `max_idle` idle connections per server
    /// (for a `send_proxy` pool's private set, [`MAX_PRIVATE_IDLE_PER_SERVER`]).
    pub fn with_max_idle(max_idle: usize) -> Upstreams {
        Upstreams {
            idle: RefCell::default(),
            h2: RefCell::default(),
            h2_opening: RefCell::default(),
            max_idle,
        }
    }

    /// Closes the HTTP/2 connections to `key` that have no stream open,
    /// beyond `max_idle` of them (the oldest are kept: they are tried
    /// first). A connection closes once its last sender is gone.
    fn trim_h2(&self, key: ConnKey) {
        let mut all = self.h2.borrow_mut();
        if let Some(list) = all.get_mut(&key) {
            trim_idle_h2(list, self.max_idle);
        }
    }

    /// Drops idle connections to servers that are in no pool any more
    /// (or that a pool now reaches another way).
    pub fn forget_except(&self, live: &[ConnKey]) {
        self.idle.borrow_mut().retain(|key, list| {
            let keep = live.contains(key);
            if !keep {
                crate::observe::metrics::upstream_idle(-(list.len() as i64));
            }
            keep
        });
        // Shared HTTP/2 connections: streams in flight finish, then the
        // connection closes with its last sender.
        self.h2.borrow_mut().retain(|key, _| live.contains(key));
    }

    /// A connection for one request to `server` of `pool`: a reusable
    /// one if there is one (and `reuse`), else a new one.
    ///
    /// `proxy`: the PROXY header a new one starts with (a pool's
    /// `send_proxy`, proxy_header.rs).
    pub async fn checkout(
        &self,
        pool: &Pool,
        server: &Server,
        reuse: bool,
        proxy: Option<ProxyTo>,
    ) -> Result<Conn, ConnectError> {
        let key = ConnKey::of(server);
        if pool.protocol == Protocol::H2 {
            if let Some(conn) = self.shared_h2(key, pool.timeouts.keepalive, reuse) {
                return Ok(conn);
            }
            return Box::pin(self.open_h2(key, pool, server, reuse, proxy)).await;
        }
        if reuse {
            loop {
                let candidate = {
                    let mut idle = self.idle.borrow_mut();
                    idle.get_mut(&key).and_then(|list| list.pop())
                };
                let Some(mut idle) = candidate else { break };
                crate::observe::metrics::upstream_idle(-1);
                let idle_for = idle.since.elapsed();
                if idle_for > pool.timeouts.keepalive
                    || idle.sender.is_closed()
                    || idle.watch.closed_while_idle()
                {
                    // Dropped: the request goes on another (no byte of it
                    // was written here).
                    continue;
                }
                if !idle.sender.is_ready() {
                    // Just released: the connection task may not have caught
                    // up yet. It becomes ready or fails at once.
                    match tokio::time::timeout(pool.timeouts.connect, idle.sender.ready()).await {
                        Ok(Ok(())) => {}
                        _ => continue,
                    }
                }
                return Ok(Conn {
                    sender: Sender::H1(idle.sender),
                    watch: idle.watch,
                    idle_for: Some(idle_for),
                    key,
                    keep: true,
                });
            }
        }
        // Boxed: connecting is rare on a warm pool, and its future is
        // large; inline, every request's future would carry its size.
        Box::pin(self.connect(key, pool, server, proxy, None)).await
    }

    /// A new HTTP/1.1 connection for a request that asks to switch
    /// protocols (proxy/tunnel.rs), whatever the pool's `protocol`: never a
    /// pooled one, whose socket could not be had back. Once the server's
    /// 101 is in, the connection's task hands its socket over through the
    /// [`super::tunnel::Handover`] instead of closing it.
    pub async fn connect_for_upgrade(
        &self,
        pool: &Pool,
        server: &Server,
        proxy: Option<ProxyTo>,
    ) -> Result<(Conn, super::tunnel::Handover), ConnectError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let key = ConnKey::of(server);
        let mut conn = Box::pin(self.connect(key, pool, server, proxy, Some(tx))).await?;
        conn.keep = pool.protocol == Protocol::Http1;
        Ok((conn, rx))
    }

    /// A stream on an HTTP/2 connection already open to `key` that has
    /// room for one more; closed connections and ones unused for longer
    /// than `keepalive` are dropped on the way.
    fn shared_h2(&self, key: ConnKey, keepalive: Duration, reuse: bool) -> Option<Conn> {
        let mut all = self.h2.borrow_mut();
        let list = all.get_mut(&key)?;
        list.retain(|c| {
            !c.sender.is_closed()
                && (c.streams.get() > 0 || c.last_used.get().elapsed() <= keepalive)
        });
        trim_idle_h2(list, self.max_idle);
        if !reuse {
            return None;
        }
        let conn = list
            .iter()
            .find(|c| c.streams.get() < H2_STREAMS_PER_CONN)?
            .clone();
        Some(Self::stream_on(conn, key, true))
    }

    /// A stream on a new HTTP/2 connection to `key`, or (`reuse`) on the
    /// one another request is opening, once it is up (waiting at most the
    /// pool's connect timeout).
    async fn open_h2(
        &self,
        key: ConnKey,
        pool: &Pool,
        server: &Server,
        reuse: bool,
        proxy: Option<ProxyTo>,
    ) -> Result<Conn, ConnectError> {
        if reuse {
            let opening = self.h2_opening.borrow().get(&key).cloned();
            if let Some(opening) = opening {
                // Registered at once: a wake-up before the first poll counts.
                let up = opening.notified();
                let _ = tokio::time::timeout(pool.timeouts.connect, up).await;
                if let Some(conn) = self.shared_h2(key, pool.timeouts.keepalive, true) {
                    return Ok(conn);
                }
            }
        }
        let notify = Rc::new(Notify::new());
        self.h2_opening.borrow_mut().insert(key, notify.clone());
        let _opening = Opening {
            upstreams: self,
            key,
            notify,
        };
        self.connect(key, pool, server, proxy, None).await
    }

    fn stream_on(conn: Rc<H2Conn>, key: ConnKey, reused: bool) -> Conn {
        conn.streams.set(conn.streams.get() + 1);
        let idle_for = reused.then(|| conn.last_used.get().elapsed());
        Conn {
            sender: Sender::H2(H2Stream {
                sender: conn.sender.clone(),
                conn: conn.clone(),
            }),
            watch: conn.watch.clone(),
            idle_for,
            key,
            keep: true,
        }
    }

    async fn connect(
        &self,
        key: ConnKey,
        pool: &Pool,
        server: &Server,
        proxy: Option<ProxyTo>,
        upgrade: Option<super::tunnel::HandoverTx>,
    ) -> Result<Conn, ConnectError> {
        let addr = server.addr;
        let timeout = pool.timeouts.connect;
        // The TCP connect and the TLS handshake share the connect timeout.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stream = connect_tcp(pool, addr, deadline).await?;
        // The PROXY header, if the pool sends one: on the bare TCP stream,
        // before TLS and HTTP.
        proxy_header::send(&mut stream, proxy)
            .await
            .map_err(ConnectError::Refused)?;
        // An upgrade (a tunnel) always goes over HTTP/1.1.
        let protocol = match upgrade {
            Some(_) => Protocol::Http1,
            None => pool.protocol,
        };
        let Some(tls) = &pool.tls else {
            return self.start(stream, true, key, protocol, addr, upgrade).await;
        };
        let name = tls.server_name(server.name.as_deref(), addr.ip());
        let config = match protocol {
            Protocol::H2 => &tls.config,
            Protocol::Http1 => &tls.http1,
        };
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let stream = match tokio::time::timeout_at(deadline, connector.connect(name, stream)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::tls(e)),
            Err(_) => return Err(ConnectError::Timeout(timeout)),
        };
        if protocol == Protocol::H2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ConnectError::Tls(
                "TLS: the server did not agree to HTTP/2 (ALPN h2)".into(),
                "TLS: no ALPN h2",
            ));
        }
        self.start(stream, false, key, protocol, addr, upgrade)
            .await
    }

    /// HTTP over a connected (and maybe TLS) stream; `plain`: no TLS.
    async fn start<S>(
        &self,
        stream: S,
        plain: bool,
        key: ConnKey,
        protocol: Protocol,
        addr: SocketAddr,
        upgrade: Option<super::tunnel::HandoverTx>,
    ) -> Result<Conn, ConnectError>
    where
        S: super::tunnel::ServerStream + 'static,
    {
        if protocol == Protocol::H2 {
            let (sender, conn) = http2::Builder::new(LocalExec)
                .max_header_list_size(MAX_RESPONSE_HEAD as u32)
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONN_WINDOW)
                .max_send_buf_size(H2_SEND_BUF)
                .handshake(TokioIo::new(stream))
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::task::spawn_local(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(server = %addr, "upstream HTTP/2 connection ended: {e}");
                }
            });
            let shared = Rc::new(H2Conn {
                sender,
                streams: Cell::new(0),
                last_used: Cell::new(Instant::now()),
                watch: HeadWatch::default(),
            });
            self.h2
                .borrow_mut()
                .entry(key)
                .or_default()
                .push(shared.clone());
            return Ok(Self::stream_on(shared, key, false));
        }
        let (io, watch) = UpstreamIo::pooled(stream, plain);
        let (sender, conn) = http1::Builder::new()
            .max_header_size(MAX_RESPONSE_HEAD)
            // A head must fit hyper's read buffer, which a body never
            // fills past READ_PIECE (upstream_io.rs).
            .max_buf_size(MAX_RESPONSE_HEAD)
            .handshake(TokioIo::new(io))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::task::spawn_local(async move {
            let Some(upgrade) = upgrade else {
                if let Err(e) = conn.await {
                    tracing::debug!(server = %addr, "upstream connection ended: {e}");
                }
                return;
            };
            // tunnel.rs: the socket, and what hyper read past the 101.
            match conn.without_shutdown().await {
                Ok(parts) => drop(upgrade.send(super::tunnel::Upgraded {
                    io: Box::new(parts.io.into_inner()),
                    read_buf: parts.read_buf,
                })),
                Err(e) => tracing::debug!(server = %addr, "upstream connection ended: {e}"),
            }
        });
        Ok(Conn {
            sender: Sender::H1(sender),
            watch,
            idle_for: None,
            key,
            keep: true,
        })
    }
}
