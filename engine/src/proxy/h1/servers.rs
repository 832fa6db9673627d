//! The worker's own plain TCP connections to servers, for the direct
//! HTTP/1 path: opened with the pool's connect timeout and the socket
//! options of `proxy/upstream.rs` (one shared connect), kept idle after a
//! response that ended whole on a connection the server keeps, reused most
//! recently used first, and dropped when stale (the pool's keep-alive
//! timeout), when the server closed it while idle (checked before reuse),
//! or when a reload removes the server. Per worker, so no locks.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::lb::{Pool, Server};
use crate::observe::metrics::upstream_idle;
use crate::proxy::upstream::{connect_tcp, AddrHasher, ConnKey, ConnectError, MAX_IDLE_PER_SERVER};

/// One connection to a server, lent to one request at a time.
pub struct ServerConn {
    pub stream: TcpStream,
    pub key: ConnKey,
    /// None: opened for this request. Some: reused, after this long idle
    /// (a reused connection the server closed unanswered may be retried).
    pub idle_for: Option<Duration>,
    /// The pool's `timeouts.keepalive` when it was checked out: how long
    /// it may stay idle once back (a reload may change the pool; the
    /// next checkout judges with the pool of its day).
    keepalive: Duration,
}

struct Idle {
    stream: TcpStream,
    since: Instant,
    /// The pool's `timeouts.keepalive` when it went idle.
    keepalive: Duration,
}

/// A worker's idle connections, by server.
#[derive(Default)]
pub struct Servers {
    /// Per server, oldest first: checkout takes from the end (most
    /// recently used, the likeliest still open), checkin drops stale ones
    /// from the front.
    idle: RefCell<HashMap<ConnKey, Vec<Idle>, BuildHasherDefault<AddrHasher>>>,
}

impl Drop for Servers {
    /// A worker that ends takes its idle connections with it.
    fn drop(&mut self) {
        let kept: usize = self.idle.get_mut().values().map(Vec::len).sum();
        upstream_idle(-(kept as i64));
    }
}

/// Why an idle connection cannot take a request.
#[derive(Debug, PartialEq, Eq)]
enum Unusable {
    /// Idle longer than the pool's `timeouts.keepalive`.
    Stale,
    /// The server closed it (EOF), reset it (an error), or sent bytes no
    /// request asked for (a late or stray answer, which would be read as
    /// the next request's).
    Closed,
}

fn check(idle: &Idle, now: Instant, keepalive: Duration) -> Result<Duration, Unusable> {
    let idle_for = now.saturating_duration_since(idle.since);
    if idle_for > keepalive {
        return Err(Unusable::Stale);
    }
    // A peek only for a connection the runtime saw readable while it sat
    // idle (an end, a reset or stray bytes come as a read event), as the
    // sweep does and as nginx's keepalive module watches its idle
    // connections by their read events: no system call per reuse.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    if idle.stream.poll_read_ready(&mut cx).is_ready()
        && crate::proxy::upstream::closed_while_idle(&idle.stream)
    {
        return Err(Unusable::Closed);
    }
    Ok(idle_for)
}

impl Servers {
    pub fn new() -> Servers {
        Servers::default()
    }

    /// An idle connection to `server` that is still open (if `reuse`), or
    /// a new one. Errors: the connect failed or timed out (the request
    /// never left; the caller tries the next server).
    ///
    /// An idle connection is reused only if it has been idle no longer
    /// than the pool's `timeouts.keepalive` (as `proxy/upstream.rs`
    /// decides) and the server has not closed it meanwhile; the others
    /// are closed on the way.
    pub async fn checkout(
        &self,
        pool: &Pool,
        server: &Server,
        reuse: bool,
    ) -> Result<ServerConn, ConnectError> {
        self.checkout_at(pool, server, reuse, Instant::now()).await
    }

    /// [`Servers::checkout`], judging idle connections at `now` (a time
    /// the caller read in this same wake: no clock read of its own).
    pub async fn checkout_at(
        &self,
        pool: &Pool,
        server: &Server,
        reuse: bool,
        now: Instant,
    ) -> Result<ServerConn, ConnectError> {
        let key = ConnKey::of(server);
        let keepalive = pool.timeouts.keepalive;
        if reuse {
            if let Some(conn) = self.reuse(key, keepalive, now) {
                return Ok(conn);
            }
        }
        // Boxed: connecting is rare on a warm pool; inline, every
        // request's future would carry the connect's size.
        let deadline = tokio::time::Instant::now() + pool.timeouts.connect;
        let stream = Box::pin(connect_tcp(pool, server.addr, deadline)).await?;
        Ok(ServerConn {
            stream,
            key,
            idle_for: None,
            keepalive,
        })
    }

    /// The most recently used idle connection to `key` that can take a
    /// request; the unusable ones met on the way are closed.
    fn reuse(&self, key: ConnKey, keepalive: Duration, now: Instant) -> Option<ServerConn> {
        let mut all = self.idle.borrow_mut();
        let list = all.get_mut(&key)?;
        while let Some(idle) = list.pop() {
            upstream_idle(-1);
            match check(&idle, now, keepalive) {
                Ok(idle_for) => {
                    return Some(ServerConn {
                        stream: idle.stream,
                        key,
                        idle_for: Some(idle_for),
                        keepalive,
                    })
                }
                Err(Unusable::Stale) => {
                    // The ones before it are older still.
                    upstream_idle(-(list.len() as i64));
                    list.clear();
                    return None;
                }
                Err(Unusable::Closed) => continue,
            }
        }
        None
    }

    /// Back to idle, after a response whose body ended whole on a
    /// connection the server keeps open. Past [`MAX_IDLE_PER_SERVER`] idle
    /// connections to its server (as the hyper path keeps), it is closed.
    pub fn checkin(&self, conn: ServerConn) {
        self.checkin_at(conn, Instant::now());
    }

    /// [`Servers::checkin`] at `now`, a time the caller has just read.
    pub fn checkin_at(&self, conn: ServerConn, now: Instant) {
        let mut all = self.idle.borrow_mut();
        let list = all.entry(conn.key).or_default();
        // Idle connections not taken again within the keep-alive timeout
        // are closed here rather than held until a checkout meets them.
        let stale = list
            .iter()
            .take_while(|i| now.saturating_duration_since(i.since) > i.keepalive)
            .count();
        if stale > 0 {
            list.drain(..stale);
            upstream_idle(-(stale as i64));
        }
        if list.len() >= MAX_IDLE_PER_SERVER {
            return;
        }
        upstream_idle(1);
        list.push(Idle {
            stream: conn.stream,
            since: now,
            keepalive: conn.keepalive,
        });
    }

    /// After a reload: drops idle connections to servers not in `live`
    /// (`proxy::upstream::live_keys`).
    pub fn forget_except(&self, live: &[ConnKey]) {
        self.idle.borrow_mut().retain(|key, list| {
            let keep = live.contains(key);
            if !keep {
                upstream_idle(-(list.len() as i64));
            }
            keep
        });
    }

    /// Closes the idle connections past their keep-alive timeout and
    /// those the server has closed, as hyper's connection tasks close
    /// theirs and nginx's keepalive module watches its idle ones (a
    /// server with a shorter keep-alive than the pool's would otherwise
    /// leave them half-closed until a request tries them). Cheap enough
    /// for every second: a peek only for a connection the runtime saw
    /// readable (bytes or an end came while it sat idle).
    pub fn sweep(&self) {
        let now = Instant::now();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut closed = 0usize;
        self.idle.borrow_mut().retain(|_, list| {
            list.retain(|i| {
                let keep = now.saturating_duration_since(i.since) <= i.keepalive
                    && !(i.stream.poll_read_ready(&mut cx).is_ready()
                        && crate::proxy::upstream::closed_while_idle(&i.stream));
                closed += usize::from(!keep);
                keep
            });
            !list.is_empty()
        });
        if closed > 0 {
            upstream_idle(-(closed as i64));
        }
    }

    /// Idle connections kept to `key` now (for tests and stats).
    pub fn idle_count(&self, key: ConnKey) -> usize {
        self.idle.borrow().get(&key).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::{PoolSettings, Timeouts};
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn pool(addr: SocketAddr, keepalive: Duration) -> Pool {
        let settings = PoolSettings {
            timeouts: Timeouts {
                keepalive,
                ..Timeouts::default()
            },
            ..PoolSettings::default()
        };
        let registry = crate::lb::StateRegistry::default();
        let server = Server {
            addr,
            addr_text: addr.to_string().into(),
            weight: 1,
            backup: false,
            state: registry.get_or_create("p", addr, false, true).0,
            name: None,
            from: None,
            transport: 0,
        };
        Pool::new("p", vec![server], settings)
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// A server that accepts connections and keeps them, handing each
    /// accepted socket to the test.
    async fn server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<TcpStream>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                if tx.send(s).is_err() {
                    return;
                }
            }
        });
        (addr, rx)
    }

    /// Waits until the peer of `conn`'s server side sees it (the server
    /// closed it): the peek says so once the FIN is in, and the runtime's
    /// next wait for events takes it in.
    async fn until_closed(fd: std::os::fd::RawFd) {
        // SAFETY: the connection owning `fd` stays idle in the set (open)
        // for the whole wait.
        let stream = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        for _ in 0..2000 {
            if crate::proxy::upstream::closed_while_idle(stream) {
                // And the runtime has seen it (checkout peeks only then).
                tokio::time::sleep(Duration::from_millis(5)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the server's close never arrived");
    }

    #[test]
    fn reuses_the_most_recent_open_connection() {
        run(async {
            let (addr, mut accepted) = server().await;
            let p = pool(addr, Duration::from_secs(30));
            let s = &p.servers[0];
            let servers = Servers::new();
            let a = servers.checkout(&p, s, true).await.expect("a");
            let b = servers.checkout(&p, s, true).await.expect("b");
            assert!(a.idle_for.is_none() && b.idle_for.is_none());
            let (a_port, b_port) = (
                a.stream.local_addr().unwrap().port(),
                b.stream.local_addr().unwrap().port(),
            );
            let _sa = accepted.recv().await.expect("accepted a");
            let _sb = accepted.recv().await.expect("accepted b");
            servers.checkin(a);
            servers.checkin(b);
            assert_eq!(servers.idle_count(ConnKey::of(s)), 2);
            let again = servers.checkout(&p, s, true).await.expect("reused");
            assert!(again.idle_for.is_some());
            assert_eq!(again.stream.local_addr().unwrap().port(), b_port);
            let next = servers.checkout(&p, s, true).await.expect("reused");
            assert_eq!(next.stream.local_addr().unwrap().port(), a_port);
            // `reuse = false` opens a new one even with one idle.
            servers.checkin(next);
            let fresh = servers.checkout(&p, s, false).await.expect("fresh");
            assert!(fresh.idle_for.is_none());
            assert_eq!(servers.idle_count(ConnKey::of(s)), 1);
        });
    }

    #[test]
    fn a_connection_the_server_closed_is_not_reused() {
        run(async {
            let (addr, mut accepted) = server().await;
            let p = pool(addr, Duration::from_secs(30));
            let s = &p.servers[0];
            let servers = Servers::new();
            let kept = servers.checkout(&p, s, true).await.expect("kept");
            let kept_side = accepted.recv().await.expect("accepted");
            let closed = servers.checkout(&p, s, true).await.expect("closed");
            let mut closed_side = accepted.recv().await.expect("accepted");
            let chatty = servers.checkout(&p, s, true).await.expect("chatty");
            let mut chatty_side = accepted.recv().await.expect("accepted");
            let kept_port = kept.stream.local_addr().unwrap().port();
            // Most recent last: `chatty` is tried first, then `closed`.
            servers.checkin(kept);
            servers.checkin(closed);
            servers.checkin(chatty);
            closed_side.shutdown().await.expect("close");
            drop(closed_side);
            // A stray answer on an idle connection: it would be read as
            // the next request's.
            chatty_side.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
            // Their peers' view, by fd (the idle list is not borrowed
            // across the waits).
            let fds: Vec<_> = {
                let all = servers.idle.borrow();
                let list = &all[&ConnKey::of(s)];
                [1, 2].map(|i| list[i].stream.as_raw_fd()).into()
            };
            for fd in fds {
                until_closed(fd).await;
            }
            let got = servers.checkout(&p, s, true).await.expect("reused");
            assert_eq!(got.stream.local_addr().unwrap().port(), kept_port);
            assert_eq!(servers.idle_count(ConnKey::of(s)), 0);
            // The kept one still works both ways.
            let mut got = got;
            got.stream.write_all(b"ping").await.unwrap();
            let mut kept_side = kept_side;
            let mut buf = [0u8; 4];
            kept_side.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            // No idle one left: a new connection.
            let new = servers.checkout(&p, s, true).await.expect("new");
            assert!(new.idle_for.is_none());
            drop(chatty_side.shutdown().await);
        });
    }

    #[test]
    fn a_stale_connection_is_dropped() {
        run(async {
            let (addr, mut accepted) = server().await;
            let p = pool(addr, Duration::from_millis(50));
            let s = &p.servers[0];
            let servers = Servers::new();
            let old = servers.checkout(&p, s, true).await.expect("old");
            let mut old_side = accepted.recv().await.expect("accepted");
            servers.checkin(old);
            tokio::time::sleep(Duration::from_millis(120)).await;
            let got = servers.checkout(&p, s, true).await.expect("new");
            assert!(got.idle_for.is_none(), "a stale connection was reused");
            // It was closed: the server sees the end.
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(10), old_side.read(&mut buf))
                .await
                .expect("the stale connection was never closed")
                .unwrap_or(0);
            assert_eq!(n, 0);
            // Checkin drops the stale ones ahead of the one coming back.
            let second = servers.checkout(&p, s, false).await.expect("second");
            servers.checkin(got);
            tokio::time::sleep(Duration::from_millis(120)).await;
            servers.checkin(second);
            assert_eq!(servers.idle_count(ConnKey::of(s)), 1);
        });
    }

    #[test]
    fn the_sweep_closes_connections_the_server_closed_or_gone_stale() {
        run(async {
            let (addr, mut accepted) = server().await;
            let p = pool(addr, Duration::from_secs(30));
            let s = &p.servers[0];
            let key = ConnKey::of(s);
            let servers = Servers::new();
            let kept = servers.checkout(&p, s, true).await.expect("kept");
            let _kept_side = accepted.recv().await.expect("accepted");
            let closed = servers.checkout(&p, s, true).await.expect("closed");
            let closed_side = accepted.recv().await.expect("accepted");
            servers.checkin(kept);
            servers.checkin(closed);
            servers.sweep();
            assert_eq!(servers.idle_count(key), 2, "open ones are kept");
            drop(closed_side);
            // The runtime sees the end at its next turn; bounded wait.
            for _ in 0..2000 {
                servers.sweep();
                if servers.idle_count(key) < 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(servers.idle_count(key), 1, "the closed one is gone");
            // Stale: a pool whose keep-alive is over.
            let short = pool(addr, Duration::from_millis(20));
            let c = servers
                .checkout(&short, &short.servers[0], false)
                .await
                .unwrap();
            servers.checkin(c);
            tokio::time::sleep(Duration::from_millis(60)).await;
            servers.sweep();
            assert_eq!(servers.idle_count(key), 1, "the stale one is gone");
        });
    }

    #[test]
    fn a_reload_forgets_servers_gone() {
        run(async {
            let (a_addr, _a) = server().await;
            let (b_addr, _b) = server().await;
            let (pa, pb) = (
                pool(a_addr, Duration::from_secs(30)),
                pool(b_addr, Duration::from_secs(30)),
            );
            let servers = Servers::new();
            let a = servers.checkout(&pa, &pa.servers[0], true).await.unwrap();
            let b = servers.checkout(&pb, &pb.servers[0], true).await.unwrap();
            servers.checkin(a);
            servers.checkin(b);
            let (ka, kb) = (ConnKey::of(&pa.servers[0]), ConnKey::of(&pb.servers[0]));
            servers.forget_except(&[ka]);
            assert_eq!(servers.idle_count(ka), 1);
            assert_eq!(servers.idle_count(kb), 0);
        });
    }

    #[test]
    fn at_most_the_hyper_paths_idle_count_per_server() {
        run(async {
            let (addr, mut accepted) = server().await;
            tokio::spawn(async move { while accepted.recv().await.is_some() {} });
            let p = pool(addr, Duration::from_secs(30));
            let s = &p.servers[0];
            let servers = Servers::new();
            let mut open = Vec::new();
            for _ in 0..MAX_IDLE_PER_SERVER + 2 {
                open.push(servers.checkout(&p, s, false).await.expect("connect"));
            }
            for c in open {
                servers.checkin(c);
            }
            assert_eq!(servers.idle_count(ConnKey::of(s)), MAX_IDLE_PER_SERVER);
        });
    }

    #[test]
    fn a_refused_connect_is_an_error() {
        run(async {
            // A port nothing listens on: bound, then closed.
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            drop(l);
            let p = pool(addr, Duration::from_secs(30));
            let got = Servers::new().checkout(&p, &p.servers[0], true).await;
            assert!(matches!(got, Err(ConnectError::Refused(_))));
        });
    }
}
