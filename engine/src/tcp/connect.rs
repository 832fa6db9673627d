//! Phase 4: pick a server of the connection's pool with the pool's
//! balance and connect to it within `timeouts.connect`. A server that
//! refuses, times out or fails its TLS handshake is marked (passive
//! health, `passive.after` in a row take it down) and the next one is
//! tried, `retries` times in all; when the pool has no server left, its
//! `fallback` pool takes over (HAProxy's `retries` and `option redispatch`
//! in `mode tcp`).

use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::context::RequestId;
use crate::lb::Pool;
use crate::observe::exchange::{Open, Retry};
use crate::proxy::body::InFlight;
use crate::proxy::proxy_header::{self, ProxyTo};
use crate::proxy::tunnel::ServerStream;
use crate::proxy::upstream::ConnectError;
use crate::script::api::conn::ConnView;
use crate::script::WorkerScript;

/// A server connection ready for bytes.
pub struct Connected {
    /// The pool that served (after any fallback), as an index into the
    /// policy's pools.
    pub pool: usize,
    /// The server's socket, plain or TLS.
    pub stream: Box<dyn ServerStream>,
    /// Counts the connection in flight on its server (`least_conn`) until
    /// dropped.
    pub in_flight: InFlight,
}

/// No server connection could be made: every server tried failed or
/// none was up. `timed_out`: the last try timed out (`sC`, else `SC`).
pub struct NoServer {
    pub timed_out: bool,
    /// A pool's `hash_key` or `balance` read `conn.sni`/`conn.alpn` and
    /// the client sent no ClientHello in time (`true`) or closed: why,
    /// for the log. No server connection was opened.
    pub no_hello: Option<(String, bool)>,
    /// The pool given up on (the last of a fallback chain).
    pub pool: usize,
    /// Connects tried, in every pool of the chain; 0: no server was up.
    pub tried: usize,
    /// The last connect's error, as its warning line said it.
    pub last_error: Option<String>,
}

/// The client connection a server connection is made for.
pub struct Client<'a> {
    pub id: RequestId,
    pub peer: SocketAddr,
    /// Where the client connected (the listener's address, or the
    /// destination its PROXY header named): `send_proxy`'s destination.
    pub local: SocketAddr,
    pub view: &'a mut ConnView,
    /// The client's socket, where a pool function's read of `conn.sni`
    /// peeks the ClientHello.
    pub stream: &'a TcpStream,
}

/// Connects the client to a server of pool `pool` (or of its fallbacks),
/// writing the pool, server, retries and connect time into `open`.
pub async fn connect(
    script: &WorkerScript,
    pool: usize,
    mut client: Client<'_>,
    open: &mut Open,
) -> Result<Connected, NoServer> {
    let policy = &script.policy;
    let mut index = pool;
    let mut pool: &Pool = &policy.pools[index];
    let (mut key, mut preferred) = choose_timed(script, index, &mut client, open).await?;
    let mut tried: Vec<usize> = Vec::new();
    let mut timed_out = false;
    let mut attempts = 0;
    let mut last_error = None;
    // A fallback chain is checked at load to end; this only bounds a bug.
    let mut hops = policy.pools.len();
    while tried.len() <= pool.retries as usize {
        let Some(si) = pool.pick(&tried, key, preferred) else {
            match pool.fallback_pool() {
                Some(next) if hops > 0 => {
                    hops -= 1;
                    tracing::debug!(connection = %client.id, "pool {} has no server to take the connection; falling back to {}", pool.name, policy.pools[next].name);
                    index = next;
                    pool = &policy.pools[index];
                    tried.clear();
                    (key, preferred) = choose_timed(script, index, &mut client, open).await?;
                    continue;
                }
                _ => break,
            }
        };
        let server = &pool.servers[si];
        if let Some(failed) = open.ex.retries.last_mut() {
            failed.retried = true;
        }
        open.ex.pool = Some(pool.name.clone());
        open.ex.server = Some(server.addr_text.clone());
        let proxy = pool.send_proxy.map(|version| ProxyTo {
            version,
            addresses: Some((client.peer, client.local)),
        });
        // Counted from the pick, as HAProxy does: picks made while this
        // connect is under way see it (`least_conn`). Dropped if it
        // fails, which counts no passive failure by itself.
        let in_flight = InFlight::new(&server.state, pool.passive.counts());
        match dial(pool, server, proxy).await {
            Ok(stream) => {
                if pool.passive.counts() {
                    server.state.traffic_ok();
                }
                server
                    .state
                    .requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(Connected {
                    pool: index,
                    stream,
                    in_flight,
                });
            }
            Err(e) => {
                drop(in_flight);
                timed_out = matches!(e, ConnectError::Timeout(_));
                server.state.traffic_failed(pool.passive.after, e.cause());
                // What happens next, in the words of the HTTP path.
                let next = crate::proxy::next_try::after_failure(policy, pool, &tried, si);
                tracing::warn!(
                    connection = %client.id,
                    listener = %client.view.listener,
                    peer = %client.peer,
                    pool = %pool.name,
                    server = %server.addr,
                    "{e}{next}"
                );
                open.ex.retries.push(Retry {
                    pool: pool.name.clone(),
                    server: server.addr_text.clone(),
                    cause: e.cause(),
                    retried: false,
                });
                tried.push(si);
                attempts += 1;
                last_error = Some(e.to_string());
            }
        }
    }
    Err(NoServer {
        timed_out,
        no_hello: None,
        pool: index,
        tried: attempts,
        last_error,
    })
}

/// [`choose`], its hooks' time added to the record's `hooks_us`. The
/// per-thread hook clock is read right around the call: between two
/// awaits no other task's hooks can run (a pool function that waits for
/// the ClientHello adds its Lua time when it resumes).
async fn choose_timed(
    script: &WorkerScript,
    index: usize,
    client: &mut Client<'_>,
    open: &mut Open,
) -> Result<(Option<u64>, Option<usize>), NoServer> {
    use crate::observe::metrics::take_request_hook_ns;
    let _ = take_request_hook_ns();
    let chosen = choose(script, index, client).await;
    open.ex.hooks_us += take_request_hook_ns() / 1000;
    chosen.map_err(|(why, timed_out)| NoServer {
        timed_out: false,
        no_hello: Some((why, timed_out)),
        pool: index,
        tried: 0,
        last_error: None,
    })
}

/// The hash key and the scripted choice for a connection in pool
/// `index`, decided as [`super::pool_choice::choose`] decides it, the
/// pool's functions run as coroutines that may wait for the ClientHello
/// on the client's socket; a failing one is a warning, then round robin.
/// Err: a function read `conn.sni` and the client sent no ClientHello in
/// time (why, timed out).
async fn choose(
    script: &WorkerScript,
    index: usize,
    client: &mut Client<'_>,
) -> Result<(Option<u64>, Option<usize>), (String, bool)> {
    let peer = client.peer;
    let pool = &script.policy.pools[index];
    super::pool_choice::choose(pool, index, peer, &mut Live { script, client }).await
}

/// A live connection's pool functions (see [`choose`]).
struct Live<'a, 'b> {
    script: &'a WorkerScript,
    client: &'a mut Client<'b>,
}

/// What a pool function's live call means: its answer; the connection
/// closed (it read `conn.sni` and no ClientHello came: why, timed out);
/// or, when it failed, a warning (`instead`: what happens without it) and
/// no answer.
fn answer<T>(
    c: &Client<'_>,
    out: Result<Result<Option<T>, crate::script::ConnectVerdict>, crate::script::hooks::HookError>,
    instead: &str,
) -> Result<Option<T>, (String, bool)> {
    use crate::script::ConnectVerdict;
    match out {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(ConnectVerdict::Closed { reason, timed_out })) => Err((reason, timed_out)),
        Ok(Err(_)) => Err(("no ClientHello".to_string(), false)),
        Err(e) => {
            tracing::warn!(connection = %c.id, listener = %c.view.listener, peer = %c.peer, hook = e.hook, "{}; {instead}", e.message);
            Ok(None)
        }
    }
}

impl super::pool_choice::PoolCalls for Live<'_, '_> {
    type Stop = (String, bool);

    async fn hash_key(&mut self, index: usize) -> Result<Option<Vec<u8>>, Self::Stop> {
        let c = &mut *self.client;
        let out = self
            .script
            .hash_key_conn_waiting(index, c.view, c.stream, c.id.seq)
            .await;
        answer(c, out, "balancing without a key")
    }

    async fn balance(&mut self, index: usize) -> Result<Option<usize>, Self::Stop> {
        let c = &mut *self.client;
        let out = self
            .script
            .choose_server_conn_waiting(index, c.view, c.stream, c.id.seq)
            .await;
        answer(c, out, "round robin decides")
    }
}

/// One connection to `server`: TCP within the pool's connect timeout
/// (shared with the TLS handshake), the PROXY header if the pool sends
/// one, then TLS if the pool has `tls`.
async fn dial(
    pool: &Pool,
    server: &crate::lb::Server,
    proxy: Option<ProxyTo>,
) -> Result<Box<dyn ServerStream>, ConnectError> {
    let timeout = pool.timeouts.connect;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = match tokio::time::timeout_at(deadline, TcpStream::connect(server.addr)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Refused(e)),
        Err(_) => return Err(ConnectError::Timeout(timeout)),
    };
    // Two setsockopt per server connection, as HAProxy's `mode tcp`.
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(&stream);
    // A pulled cable sends no RST: data unacknowledged for `idle`, and
    // the kernel gives up on the connection (the copy sees an error: SD).
    // No TCP keepalive (HAProxy's `option srvtcpka` is off by default):
    // a connection on which nothing moves ends at `timeouts.idle` anyway,
    // which is also when a keepalive probe left unanswered would give up
    // under this user timeout.
    let _ = sock.set_tcp_user_timeout(Some(pool.timeouts.idle));
    match tokio::time::timeout_at(deadline, proxy_header::send(&mut stream, proxy)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ConnectError::Refused(e)),
        Err(_) => return Err(ConnectError::Timeout(timeout)),
    }
    let Some(tls) = &pool.tls else {
        return Ok(Box::new(stream));
    };
    let name = tls.server_name(server.name.as_deref(), server.addr.ip());
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    match tokio::time::timeout_at(deadline, connector.connect(name, stream)).await {
        Ok(Ok(s)) => Ok(Box::new(s)),
        Ok(Err(e)) => Err(ConnectError::tls(e)),
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}
