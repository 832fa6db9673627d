//! The worker's own plain TCP connections to servers, for the direct
//! HTTP/1 path: opened with the pool's connect timeout and the socket
//! options of `proxy/upstream.rs` (one shared connect), kept idle after a
//! response that ended whole on a connection the server keeps, reused most
//! recently used first, and dropped when stale (the pool's keep-alive
//! timeout), when the server closed it while idle (checked before reuse),
//! or when a reload removes the server. Per worker, so no locks.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::lb::{Pool, Server};
use crate::proxy::upstream::{ConnKey, ConnectError};

/// One connection to a server, lent to one request at a time.
pub struct ServerConn {
    pub stream: TcpStream,
    pub key: ConnKey,
    /// None: opened for this request. Some: reused, after this long idle
    /// (a reused connection the server closed unanswered may be retried).
    pub idle_for: Option<Duration>,
}

/// A worker's idle connections, by server.
#[derive(Default)]
pub struct Servers {
    _idle: (),
}

impl Servers {
    pub fn new() -> Servers {
        Servers::default()
    }

    /// An idle connection to `server` that is still open (if `reuse`), or
    /// a new one. Errors: the connect failed or timed out (the request
    /// never left; the caller tries the next server).
    pub async fn checkout(
        &self,
        pool: &Pool,
        server: &Server,
        reuse: bool,
    ) -> Result<ServerConn, ConnectError> {
        let _ = (pool, server, reuse);
        todo!("proxy::h1::servers::checkout")
    }

    /// Back to idle, after a response whose body ended whole on a
    /// connection the server keeps open.
    pub fn checkin(&self, conn: ServerConn) {
        let _ = conn;
        todo!("proxy::h1::servers::checkin")
    }

    /// After a reload: drops idle connections to servers not in `live`.
    pub fn forget_except(&self, live: &[ConnKey]) {
        let _ = live;
    }
}
