//! Each worker's connections to servers: opened with a connect timeout,
//! kept alive and reused (most recently used first), dropped when stale.
//! Per worker, so no locks: a worker never shares a connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::RequestBody;
use super::proxy_header::{self, ProxyTo};
use super::upstream_io::{HeadWatch, UpstreamIo};
use crate::lb::Timeouts;

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
const MAX_IDLE_PER_SERVER: usize = 128;

struct Idle {
    sender: SendRequest<RequestBody>,
    watch: HeadWatch,
    since: Instant,
}

#[derive(Default)]
pub struct Upstreams {
    idle: RefCell<HashMap<SocketAddr, Vec<Idle>, BuildHasherDefault<AddrHasher>>>,
}

/// FNV-1a: the keys are a worker's own server addresses, not attacker
/// input, and SipHash cost more than the rest of a checkout.
#[derive(Default)]
struct AddrHasher(u64);

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

/// A connection ready for one request.
pub struct Conn {
    pub sender: SendRequest<RequestBody>,
    /// Arms the response head check as each request is sent.
    pub watch: HeadWatch,
    /// How long it sat idle before this request (None: opened for it). A
    /// long-idle connection may have been closed by the server meanwhile.
    pub idle_for: Option<Duration>,
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    Refused(io::Error),
    Timeout(Duration),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused(e) => write!(f, "connect failed: {e}"),
            ConnectError::Timeout(d) => write!(f, "connect timed out after {d:?}"),
            ConnectError::Handshake(e) => write!(f, "connection setup failed: {e}"),
        }
    }
}

/// A connection lent to one request; given back when its response body
/// has been read to the end.
pub struct Lease {
    upstreams: Rc<Upstreams>,
    addr: SocketAddr,
    sender: SendRequest<RequestBody>,
    watch: HeadWatch,
}

impl Lease {
    pub fn new(
        upstreams: Rc<Upstreams>,
        addr: SocketAddr,
        sender: SendRequest<RequestBody>,
        watch: HeadWatch,
    ) -> Lease {
        Lease {
            upstreams,
            addr,
            sender,
            watch,
        }
    }

    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = self.upstreams.idle.borrow_mut();
        let list = idle.entry(self.addr).or_default();
        if list.len() < MAX_IDLE_PER_SERVER {
            crate::observe::metrics::upstream_idle(1);
            list.push(Idle {
                sender: self.sender,
                watch: self.watch,
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

impl Upstreams {
    /// Drops idle connections to servers that are in no pool any more.
    pub fn forget_except(&self, live: &[SocketAddr]) {
        self.idle.borrow_mut().retain(|addr, list| {
            let keep = live.contains(addr);
            if !keep {
                crate::observe::metrics::upstream_idle(-(list.len() as i64));
            }
            keep
        });
    }

    /// A reusable connection to `addr` if one is idle (and `reuse`), else
    /// a new one; `proxy`: the PROXY header a new one starts with (a pool's
    /// `send_proxy`, proxy_header.rs).
    pub async fn checkout(
        &self,
        addr: SocketAddr,
        timeouts: &Timeouts,
        reuse: bool,
        proxy: Option<ProxyTo>,
    ) -> Result<Conn, ConnectError> {
        if reuse {
            loop {
                let candidate = {
                    let mut idle = self.idle.borrow_mut();
                    idle.get_mut(&addr).and_then(|list| list.pop())
                };
                let Some(mut idle) = candidate else { break };
                crate::observe::metrics::upstream_idle(-1);
                let idle_for = idle.since.elapsed();
                if idle_for > timeouts.keepalive || idle.sender.is_closed() {
                    continue;
                }
                if !idle.sender.is_ready() {
                    // Just released: the connection task may not have caught
                    // up yet. It becomes ready or fails at once.
                    match tokio::time::timeout(timeouts.connect, idle.sender.ready()).await {
                        Ok(Ok(())) => {}
                        _ => continue,
                    }
                }
                return Ok(Conn {
                    sender: idle.sender,
                    watch: idle.watch,
                    idle_for: Some(idle_for),
                });
            }
        }
        // Boxed: connecting is rare on a warm pool, and its future is
        // large; inline, every request's future would carry its size.
        Box::pin(self.connect(addr, timeouts.connect, timeouts.idle, proxy, None)).await
    }

    /// A new connection for a request that asks to switch protocols
    /// (proxy/tunnel.rs): never a pooled one, whose socket could not be
    /// had back. Once the server's 101 is in, the connection's task hands
    /// its socket over through the [`super::tunnel::Handover`] instead of
    /// closing it.
    pub async fn connect_for_upgrade(
        &self,
        addr: SocketAddr,
        timeouts: &Timeouts,
        proxy: Option<ProxyTo>,
    ) -> Result<(Conn, super::tunnel::Handover), ConnectError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let conn = Box::pin(self.connect(
            addr,
            timeouts.connect,
            timeouts.idle,
            proxy,
            Some(tx),
        ))
        .await?;
        Ok((conn, rx))
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        user_timeout: Duration,
        proxy: Option<ProxyTo>,
        upgrade: Option<super::tunnel::HandoverTx>,
    ) -> Result<Conn, ConnectError> {
        let mut stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Refused(e)),
            Err(_) => return Err(ConnectError::Timeout(timeout)),
        };
        let _ = stream.set_nodelay(true);
        let sock = socket2::SockRef::from(&stream);
        // A pulled cable sends no RST: unacknowledged data for longer than
        // this, and the kernel gives up on the connection.
        let _ = sock.set_tcp_user_timeout(Some(user_timeout));
        let _ = sock.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(30))
                .with_interval(Duration::from_secs(10)),
        );
        proxy_header::send(&mut stream, proxy)
            .await
            .map_err(ConnectError::Refused)?;
        let (io, watch) = UpstreamIo::new(stream);
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
                Ok(parts) => drop(upgrade.send(parts)),
                Err(e) => tracing::debug!(server = %addr, "upstream connection ended: {e}"),
            }
        });
        Ok(Conn {
            sender,
            watch,
            idle_for: None,
        })
    }
}
