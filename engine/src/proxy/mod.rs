//! The request path, phase by phase. Open this file to see what happens to
//! a request, in the order it happens:
//!
//! 1. [`handle`]: pin the worker's current policy (one generation for the
//!    whole request) and give the request an id.
//! 2. [`decide`]: refuse what must not be forwarded (a 4xx/501 that ends
//!    the connection), settle the host and normalise the path
//!    ([`target`]), then `on_request` (Lua): a pool, a local response, or
//!    nothing (the listener's default pool). A policy that makes
//!    sub-requests (`http.get` ...) has `on_request` run as a coroutine
//!    that may wait ([`decide::decide_waiting`]); the others call it.
//! 3. [`forward`]: pick a server (Rust, lock-free), get a pooled or new
//!    connection (TLS and HTTP/2 as the pool says, [`upstream`]); a server
//!    that cannot be reached (or fails the TLS handshake) is skipped and
//!    the next one tried, since the request provably never left.
//! 4. Send, and wait for the response head on the clock of whichever
//!    phase has the turn ([`timeouts`]); the server socket checks the head
//!    for bare LF ([`upstream_io`]). A safe request the server dropped
//!    unanswered is sent again, and so is any request none of which was
//!    written (a reused connection the server had closed).
//! 5. Check the response's framing ([`forward::prepare_response`]), then
//!    `on_response` (Lua): header edits.
//! 6. Stream the body to the client; the connection returns to the pool
//!    when the body ends.

pub mod body;
mod body_error;
pub mod decide;
pub mod forward;
pub mod h1;
pub mod local;
pub(crate) mod next_try;
pub mod proxy_header;
pub mod target;
pub mod timeouts;
pub mod tunnel;
pub mod upstream;
pub mod upstream_io;
mod worker;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;

use body::{InFlight, Progress, RequestBody, ResponseBody};
use tokio::time::Instant;
use upstream::Lease;

use crate::config::upstream_tls::Protocol;
use crate::config::ClientTimeouts;
use crate::context::RequestId;
use crate::explain::{Trace, Tracer};
use crate::lb::{Pool, Server};
use crate::observe::exchange::{Exchange, Open, Retry, Termination};
use crate::script::api::request::RequestView;
use crate::script::api::response::ResponseView;
use crate::script::WorkerScript;
use decide::Route;
pub use worker::Worker;

/// What every request on one client connection shares.
pub struct ConnCtx {
    pub worker: Rc<Worker>,
    pub peer: SocketAddr,
    /// The address the client connected to: the listening socket's own
    /// (for a wildcard bind, the connection's), or on an `accept_proxy`
    /// listener the destination the PROXY header named. A `send_proxy`
    /// pool passes it on as its header's destination.
    pub local: SocketAddr,
    pub listener: Arc<str>,
    /// The peer as an X-Forwarded-For entry, made once and shared by the
    /// worker's connections from the same address ([`peer_value`]).
    pub peer_value: Rc<http::HeaderValue>,
    /// The listener's client timeouts, as they were when the connection
    /// was accepted: shared by the connections a listener accepted under
    /// one policy (8 bytes here, not 80).
    pub timeouts: Rc<ClientTimeouts>,
    /// What only some connections use (TLS, `send_proxy` pools, an
    /// upgrade), made at its first use: 8 bytes here, so that an idle
    /// connection's context fits jemalloc's 128-byte class (112 bytes
    /// and the `Rc`'s counts).
    rare: std::cell::OnceCell<Box<Rare>>,
}

/// The parts of a [`ConnCtx`] few connections use.
#[derive(Default)]
struct Rare {
    /// Server connections of `send_proxy` pools, which carry this client's
    /// address: kept for this connection only (made at first use).
    private_upstreams: std::cell::OnceCell<Rc<upstream::Upstreams>>,
    /// An agreed upgrade waiting for its 101 to be written (tunnel.rs).
    tunnel: tunnel::Slot,
    /// The connection's TLS, on a TLS listener once its handshake is done
    /// (an `Arc`: each request's script view shares it). Set once, by the
    /// connection's task, before it serves a request.
    tls: std::cell::OnceCell<Arc<crate::context::TlsInfo>>,
}

impl ConnCtx {
    pub fn new(
        worker: Rc<Worker>,
        peer: SocketAddr,
        local: SocketAddr,
        listener: Arc<str>,
        timeouts: Rc<ClientTimeouts>,
    ) -> ConnCtx {
        ConnCtx {
            worker,
            peer,
            local,
            listener,
            peer_value: peer_value(peer.ip()),
            timeouts,
            rare: std::cell::OnceCell::new(),
        }
    }

    fn rare(&self) -> &Rare {
        self.rare.get_or_init(Box::default)
    }

    /// The connection's TLS; None: plain (or its handshake is not done).
    #[inline]
    pub fn tls(&self) -> Option<&Arc<crate::context::TlsInfo>> {
        self.rare.get().and_then(|r| r.tls.get())
    }

    /// Sets the connection's TLS once its handshake is done; false: it
    /// was set already.
    pub fn set_tls(&self, info: Arc<crate::context::TlsInfo>) -> bool {
        self.rare().tls.set(info).is_ok()
    }

    /// The server connections of this client's `send_proxy` pools (empty
    /// until one is made).
    pub fn private_upstreams(&self) -> &std::cell::OnceCell<Rc<upstream::Upstreams>> {
        &self.rare().private_upstreams
    }

    /// The slot of an agreed upgrade (tunnel.rs).
    pub fn tunnel(&self) -> &tunnel::Slot {
        &self.rare().tunnel
    }

    /// The upgrade waiting in the slot, taken (None, and nothing made,
    /// when there is none).
    pub fn take_tunnel(&self) -> Option<Box<tunnel::Pending>> {
        self.rare.get().and_then(|r| r.tunnel.borrow_mut().take())
    }
}

/// The client's address as an X-Forwarded-For entry
/// ([`forward::peer_value`]): the worker keeps the last one made, so a run
/// of connections from one client (a balancer in front, a load
/// generator) shares one, counted without atomics, instead of each
/// cloning and dropping the text's shared bytes.
fn peer_value(peer: std::net::IpAddr) -> Rc<http::HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(std::net::IpAddr, Rc<http::HeaderValue>)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.try_with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((ip, v)) if *ip == peer => v.clone(),
            _ => {
                let v = Rc::new(forward::peer_value(peer));
                *last = Some((peer, v.clone()));
                v
            }
        }
    })
    .unwrap_or_else(|_| Rc::new(forward::peer_value(peer)))
}

/// Phase 1 and 2: pin the policy, ask the script.
///
/// Not an `async fn`: the request's record is opened here, when hyper
/// hands the request over (calls the service), not when the future is
/// first polled. hyper may drop the future unpolled (an HTTP/1 client
/// whose end of stream it reads right after the request: it gives the
/// connection up at once), and the request must still end with its one
/// access-log line and its count (`CC`: the client went away before any
/// answer).
pub fn handle(
    cx: Rc<ConnCtx>,
    req: Request<Incoming>,
) -> impl std::future::Future<Output = Result<Response<ResponseBody>, Infallible>> {
    let script = cx.worker.script();
    let id = cx.worker.next_request_id();
    let (mut head, body) = req.into_parts();
    // One test on load-time data unless the policy has `explain_from`.
    let explained = crate::explain::live::asked(&script.policy, cx.peer.ip(), &mut head.headers);
    let open = open_exchange(&cx, &script, id, &head);
    handle_opened(cx, script, id, head, body, explained, open)
}

/// [`handle`]'s phases once the record is open.
async fn handle_opened(
    cx: Rc<ConnCtx>,
    script: Rc<WorkerScript>,
    id: RequestId,
    head: http::request::Parts,
    body: Incoming,
    explained: bool,
    mut open: Box<Open>,
) -> Result<Response<ResponseBody>, Infallible> {
    let head_only = head.method == Method::HEAD;
    let mut view = RequestView {
        head,
        raw_target: None,
        peer: cx.peer,
        listener: cx.listener.clone(),
        id,
        growth: 0,
        tls: cx.tls().cloned(),
    };
    // Explained requests run the same code with a recording tracer; the
    // others the untraced one, compiled without a trace of tracing.
    let mut trace = explained.then(Trace::default);
    // A policy whose on_request may wait on sub-requests runs it as a
    // coroutine (decided at load); an explained request runs it as
    // `pocket explain` does, its sub-requests not run.
    let route = match &mut trace {
        Some(t) => crate::explain::live::decide(&script, &mut view, t),
        None if script.waits() => decide::decide_waiting(&script, &mut view, cx.local).await,
        None => decide::decide(&script, &mut view),
    };
    open.ex.hooks_us += crate::observe::metrics::take_request_hook_ns() / 1000;
    crate::script::api::log_field::take_into(&mut open.ex.script_fields);
    let resp = match route {
        Route::Local(r) => {
            open.set(b'L', b'R');
            local::from_script(r)
        }
        Route::Refuse(status, why) => {
            open.set(b'P', b'R');
            local::refusal(status, &why, &id.to_string())
        }
        Route::OverLimit(status, why) => {
            open.set(b'R', b'R');
            local::refusal(status, &why, &id.to_string())
        }
        Route::Pool {
            pool,
            key,
            preferred,
        } => {
            let t = trace.as_mut();
            forward(&cx, &script, pool, view, body, key, preferred, &mut open, t).await
        }
    };
    let mut resp = resp;
    if let Some(t) = trace {
        let compact = t.compact();
        resp.headers_mut().insert(
            crate::explain::live::HEADER,
            crate::explain::live::header_value(&compact),
        );
        open.ex.trace = Some(compact);
    }
    // tunnel.rs: a 101's record goes with its tunnel.
    Ok(tunnel::with_record(&cx, resp, open, head_only))
}

/// The exchange's record for a request whose head is in: what the
/// client sent, as it sent it. Cheap (reference-counted copies, no text
/// made): it is made for every request, log or no log; what only the log
/// shows (method, host, target, wall-clock time) is copied only if the
/// policy has one. Its termination starts as `CC`: until a phase moves it
/// on, only the client going away can end it, and its request is in
/// (HAProxy's `R` is a request not yet read whole), so it is the client
/// leaving before any server had it: before Pocket began on it (hyper
/// dropped it unpolled), while `on_request` waited on a sub-request, or
/// while a server was connected to (the phase the first try sets).
pub fn open_exchange(
    cx: &ConnCtx,
    script: &WorkerScript,
    id: RequestId,
    head: &http::request::Parts,
) -> Box<Open> {
    let logged = script.access_log.is_some();
    Open::build(|| Exchange {
        id,
        started_unix_ms: 0,
        client: cx.peer,
        listener: cx.listener.clone(),
        generation: script.generation,
        method: if logged {
            head.method.clone()
        } else {
            Method::GET
        },
        bad_request: false,
        host: logged
            .then(|| head.headers.get(http::header::HOST).cloned())
            .flatten(),
        target: if logged {
            head.uri.clone()
        } else {
            http::Uri::default()
        },
        version: head.version,
        status: 0,
        bytes_in: 0,
        bytes_out: 0,
        pool: None,
        server: None,
        retries: Vec::new(),
        hooks_us: 0,
        connect_ms: None,
        first_byte_ms: None,
        total_ms: 0.0,
        termination: Termination::of(b'C', b'C'),
        script_fields: Vec::new(),
        trace: None,
        log: script.access_log.clone(),
        tls: if logged { cx.tls().cloned() } else { None },
        tcp: false,
    })
}

/// The line of a request head that could not be read: answered `status`
/// (400, 414 or 431) by hyper or the head check before any request
/// existed; refused by Pocket in the request phase (`PR`), as HAProxy logs
/// its `<BADREQ>`.
pub fn bad_request_line(cx: &ConnCtx, status: u16) {
    let script = cx.worker.script();
    let (head, ()) = Request::new(()).into_parts();
    let mut open = open_exchange(cx, &script, cx.worker.next_request_id(), &head);
    open.ex.bad_request = true;
    open.ex.status = status;
    open.set(b'P', b'R');
    // Dropped: the record ends here.
}

/// Hands the record to the response body, which ends it.
pub fn with_record(
    mut resp: Response<ResponseBody>,
    open: Box<Open>,
    head_only: bool,
) -> Response<ResponseBody> {
    let status = resp.status().as_u16();
    resp.body_mut().attach(open, status, head_only);
    resp
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// A copy of a request head (http's `Parts` is not `Clone`).
fn clone_head(head: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers.clone();
    req.into_parts().0
}

/// Phases 3 to 6.
#[allow(clippy::too_many_arguments)]
async fn forward(
    cx: &ConnCtx,
    script: &Rc<WorkerScript>,
    pool_index: usize,
    view: RequestView,
    body: Incoming,
    key: Option<u64>,
    preferred: Option<usize>,
    open: &mut Open,
    mut trace: Option<&mut Trace>,
) -> Response<ResponseBody> {
    let mut pool = &script.policy.pools[pool_index];
    let (mut key, mut preferred) = (key, preferred);
    let RequestView {
        head,
        peer,
        listener,
        id,
        raw_target,
        tls,
        ..
    } = view;
    // on_response sees the request as the client sent it (after on_request).
    let client_head = script.has_on_response().then(|| clone_head(&head));
    let mut head = head;
    let trailers = pool.protocol == Protocol::H2 && forward::wants_trailers(&head.headers);
    // tunnel.rs: an upgrade keeps its Upgrade header, on a new connection.
    let upgrade = tunnel::asked(&head, !body.is_end_stream());
    forward::prepare_request(&mut head, &cx.peer_value, tls.is_some());
    if let Some(u) = &upgrade {
        u.restore(&mut head.headers);
    }
    let replayable = is_idempotent(&head.method) && body.is_end_stream();
    // The whole exchange's limit, if the pool sets one.
    let deadline = pool.timeouts.total.map(|t| Instant::now() + t);
    let progress = (!body.is_end_stream()).then(Progress::new);
    // The body's Content-Length, to say how much of it came if it breaks.
    let body_length = body.size_hint().exact();
    open.progress = progress.clone();
    let mut body = Some(match &progress {
        None => RequestBody::Empty,
        Some(progress) => RequestBody::client(body, progress.clone()),
    });
    let mut head = Some(head);
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error = String::new();
    // Each unreachable server costs one retry; a connection found dead
    // before the request left costs an attempt but no retry.
    let mut attempts = 0;
    // After a reused connection failed, the next try opens a new one (the
    // other idle connections to that server may be as dead).
    let mut fresh_only = false;
    let max_attempts = pool.retries as usize + 4;

    while tried.len() <= pool.retries as usize && attempts < max_attempts {
        attempts += 1;
        let picked = match &mut trace {
            Some(t) => pool.pick_traced(&tried, key, preferred, *t),
            None => pool.pick(&tried, key, preferred),
        };
        let Some(si) = picked else {
            // Nobody here can take it: the pool's fallback can.
            match pool.fallback_pool() {
                Some(next) => {
                    tracing::debug!(request = %id, "pool {} cannot serve; falling back to {}", pool.name, script.policy.pools[next].name);
                    let from = &pool.name;
                    pool = &script.policy.pools[next];
                    if let Some(t) = &mut trace {
                        let why =
                            format!("fallback of pool \"{from}\", which has no server to take it");
                        t.pool(&pool.name, pool.balance_name(), &why);
                    }
                    tried.clear();
                    (key, preferred) = (None, None);
                    continue;
                }
                None => break,
            }
        };
        let server = &pool.servers[si];
        open.trying(&pool.name, &server.addr_text);
        let mut handover = None;
        let upstreams = upstreams_for(pool, cx);
        let connected = match &upgrade {
            None => {
                upstreams
                    .checkout(pool, server, !fresh_only, proxy_to(pool, cx))
                    .await
            }
            Some(_) => upstreams
                .connect_for_upgrade(pool, server, proxy_to(pool, cx))
                .await
                .map(|(c, h)| {
                    handover = Some(h);
                    c
                }),
        };
        let mut conn = match connected {
            Ok(c) => c,
            Err(e) => {
                server.state.traffic_failed(pool.passive.after, e.cause());
                let next = next_try::after_failure(&script.policy, pool, &tried, si);
                tracing::warn!(request = %id, pool = %pool.name, server = %server.addr, "{e}{next}");
                last_error = format!("{}: {e}", server.addr);
                open.ex.retries.push(Retry {
                    pool: pool.name.clone(),
                    server: server.addr_text.clone(),
                    cause: e.cause(),
                    retried: false,
                });
                if let Some(t) = &mut trace {
                    t.failed(&server.addr_text, e.cause());
                }
                tried.push(si);
                continue;
            }
        };
        open.ex.connect_ms = open.reached();
        open.set(b'C', b'H');
        let Some(mut h) = head.take() else { break };
        let h2 = pool.protocol == Protocol::H2;
        forward::for_protocol(&mut h, h2, pool.tls.is_some(), trailers);
        // A copy to send again if the server drops the request unanswered:
        // on a kept-alive connection (the server may have closed it just as
        // it was reused: that must never cost the client an error), or when
        // another server may still take it. Only requests safe to repeat.
        // And, whatever the method, on a kept-alive connection found closed
        // before any byte of the request was written (plain HTTP/1: the
        // socket's writes tell, upstream_io.rs `Watch::unwritten`).
        let reused = conn.idle_for.is_some();
        let another = tried.len() < pool.retries as usize && pool.servers.len() > 1;
        let spare = (replayable && (reused || another)).then(|| clone_head(&h));
        let unwritten_again = reused && conn.watch.counts_writes();
        let unwritten_head = (unwritten_again && spare.is_none()).then(|| clone_head(&h));
        let mut b = body.take().unwrap_or(RequestBody::Empty);
        b.send_on(&conn.watch);
        let req = Request::from_parts(h, b);
        let in_flight = InFlight::new(&server.state, pool.passive.counts());
        conn.watch.start_request();
        conn.watch.set(upstream_io::HeadScan::expect_head());
        let sent = timeouts::wait_answer(
            conn.sender.try_send_request(req),
            progress.as_deref(),
            &pool.timeouts,
            cx.timeouts.body,
            deadline,
        )
        .await;
        let resp = match sent {
            Ok(Ok(resp)) => {
                open.ex.first_byte_ms = open.reached();
                resp
            }
            Ok(Err(mut e)) => {
                if let Some(req) = e.take_message() {
                    // The connection was not ready: nothing left; resend.
                    let (h, b) = req.into_parts();
                    head = Some(h);
                    body = Some(b);
                    continue;
                }
                if unwritten_again && conn.watch.unwritten() && !e.error().is_user() {
                    // The server closed the connection before any byte of
                    // the request was written: it never saw it. Sent
                    // again, whatever its method, on a new connection (as
                    // nginx resends one whose connection failed before
                    // `request_sent`; HAProxy's `retry-on conn-failure`).
                    let again = RequestBody::unwritten(&conn.watch, progress.as_ref());
                    if let (Some(h), Some(b)) = (spare.as_ref().or(unwritten_head.as_ref()), again)
                    {
                        tracing::debug!(request = %id, server = %server.addr, "reused connection closed before the request was written ({}); sending it on a new one", e.error());
                        head = Some(clone_head(h));
                        body = Some(b);
                        fresh_only = true;
                        continue;
                    }
                }
                // Any byte of an answer, even a malformed or cut one, is an
                // answer: never replayed (as nginx's default
                // proxy_next_upstream), a 502 below.
                let answer = conn.watch.get();
                let unanswered =
                    !e.error().is_parse() && !e.error().is_user() && !answer.answered();
                if let (Some(h), true) = (spare.as_ref(), reused && unanswered) {
                    // A reused connection the server had just closed.
                    tracing::debug!(request = %id, server = %server.addr, "reused connection closed ({}); resending on a new one", e.error());
                    head = Some(clone_head(h));
                    body = Some(RequestBody::Empty);
                    fresh_only = true;
                    continue;
                }
                if let (Some(h), true) = (spare, unanswered) {
                    // Dropped before any response byte: safe to repeat
                    // elsewhere.
                    server
                        .state
                        .traffic_failed(pool.passive.after, "no response");
                    let next = next_try::after_failure(&script.policy, pool, &tried, si);
                    tracing::warn!(request = %id, pool = %pool.name, server = %server.addr, "{}{next}", e.error());
                    last_error = format!("{}: {}", server.addr, e.error());
                    open.ex.retries.push(Retry {
                        pool: pool.name.clone(),
                        server: server.addr_text.clone(),
                        cause: "no response",
                        retried: false,
                    });
                    if let Some(t) = &mut trace {
                        t.failed(&server.addr_text, "no response");
                    }
                    tried.push(si);
                    head = Some(h);
                    body = Some(RequestBody::Empty);
                    continue;
                }
                if e.error().is_user() {
                    // The client's own body broke (malformed chunks, or the
                    // client went away): not the server's fault.
                    let received = progress.as_ref().map_or(0, |p| p.received());
                    let why = body_error::why_unreadable(e.error(), received, body_length);
                    tracing::info!(request = %id, "{why}");
                    open.set(b'C', b'D');
                    return local::error(StatusCode::BAD_REQUEST, &why, &id.to_string());
                }
                if timeouts::kernel_timed_out(e.error()) {
                    // TCP_USER_TIMEOUT (= timeouts.idle): the server took
                    // none of what was sent for that long. A timeout, so a
                    // 504, as the request body's own clock would say.
                    if let Some(p) = &progress {
                        p.abort();
                    }
                    let late = timeouts::Late::ServerReading(pool.timeouts.idle);
                    late_termination(open, &late);
                    return timeouts::answer_late(late, pool, server, id);
                }
                if answer.bare_lf() {
                    open.set(b'P', b'H');
                    return cannot_relay(
                        pool,
                        server,
                        id,
                        "a line of its head ends in LF, not CRLF",
                    );
                }
                if answer.too_many_interim() {
                    open.set(b'P', b'H');
                    let why = format!(
                        "it sent too many interim (1xx) responses (more than {})",
                        upstream_io::MAX_INTERIM
                    );
                    return cannot_relay(pool, server, id, &why);
                }
                if e.error().is_parse() {
                    // A head hyper's client refuses (a NUL or CTL in a value,
                    // two Content-Lengths, a status line not `HTTP/1.x ddd`):
                    // the server answered, wrongly: `PH`, not `SH`.
                    open.set(b'P', b'H');
                    return cannot_relay(pool, server, id, &e.error().to_string());
                }
                server
                    .state
                    .traffic_failed(pool.passive.after, "no response");
                let why = format!(
                    "server {} of pool \"{}\" failed: {}",
                    server.addr,
                    pool.name,
                    e.error()
                );
                tracing::warn!(request = %id, "{why}");
                open.set(b'S', b'H');
                return local::error(StatusCode::BAD_GATEWAY, &why, &id.to_string());
            }
            Err(late) => {
                if let Some(p) = &progress {
                    // Half a request must not stay on the server connection.
                    p.abort();
                }
                late_termination(open, &late);
                return timeouts::answer_late(late, pool, server, id);
            }
        };

        if let (Some(handover), true) = (handover, resp.status() == StatusCode::SWITCHING_PROTOCOLS)
        {
            // tunnel.rs: the upgrade was agreed.
            // Boxed: rare, and every request's future would carry its size.
            let switch = tunnel::switch(cx, pool, server, resp, in_flight, handover, id, open);
            return Box::pin(switch).await;
        }
        return deliver(
            cx,
            script,
            pool,
            server,
            resp,
            in_flight,
            id,
            deadline,
            client_head.map(|head| RequestView {
                head,
                raw_target,
                peer,
                listener,
                id,
                growth: 0,
                tls,
            }),
            conn,
            open,
        );
    }

    let (status, why) = next_try::no_server_left(pool, tried.len(), &last_error, id, open);
    if let Some(t) = trace {
        t.answered(status.as_u16(), false, &why);
    }
    local::error(status, &why, &id.to_string())
}

/// Who ended an exchange that ran out of time (HAProxy: `c` the client's
/// timeout, `s` the server's; `D` a body, `H` the response head).
fn late_termination(open: &mut Open, late: &timeouts::Late) {
    match late {
        timeouts::Late::Client(_) => open.set(b'c', b'D'),
        timeouts::Late::ServerReading(_) => open.set(b's', b'D'),
        timeouts::Late::ServerAnswering(_) | timeouts::Late::Total(_) => open.set(b's', b'H'),
    }
}

/// A 502 for a response that cannot be relayed faithfully (`why`); a
/// passive failure of the server that sent it.
fn cannot_relay(pool: &Pool, server: &Server, id: RequestId, why: &str) -> Response<ResponseBody> {
    server
        .state
        .traffic_failed(pool.passive.after, "bad response");
    let why = format!(
        "server {} of pool \"{}\" sent a response Pocket cannot relay: {why}",
        server.addr, pool.name
    );
    tracing::warn!(request = %id, "{why}");
    local::error(StatusCode::BAD_GATEWAY, &why, &id.to_string())
}

/// Phases 5 and 6, once the server has answered: count it, let
/// `on_response` edit the head, and hand the body over for streaming. Not
/// async, so none of this sits in every request's future.
#[allow(clippy::too_many_arguments)]
fn deliver(
    cx: &ConnCtx,
    script: &WorkerScript,
    pool: &Pool,
    server: &Server,
    resp: Response<Incoming>,
    mut in_flight: InFlight,
    id: RequestId,
    deadline: Option<Instant>,
    client_view: Option<RequestView>,
    conn: upstream::Conn,
    open: &mut Open,
) -> Response<ResponseBody> {
    server
        .state
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if resp.status().is_server_error() {
        if pool.passive.on_5xx {
            server
                .state
                .traffic_failed(pool.passive.after, "5xx answer");
        }
        // Counted or not, a 5xx is no success: it ends no streak.
        in_flight.not_a_success();
    }
    let (mut rhead, rbody) = resp.into_parts();
    if let Err(why) = forward::prepare_response(&mut rhead) {
        // The connection is dropped with the body: never reused.
        open.set(b'P', b'H');
        return cannot_relay(pool, server, id, why);
    }
    if let Some(mut req_view) = client_view {
        let mut res_view = ResponseView {
            head: rhead,
            pool: pool.name.clone(),
            server: server.addr_text.clone(),
            growth: 0,
        };
        let answered = script.on_response(&mut req_view, &mut res_view);
        open.ex.hooks_us += crate::observe::metrics::take_request_hook_ns() / 1000;
        crate::script::api::log_field::take_into(&mut open.ex.script_fields);
        if let Err(e) = answered {
            // RH: the script met its time budget or memory limit.
            open.set(if e.limit { b'R' } else { b'P' }, b'H');
            tracing::error!(request = %id, hook = e.hook, "{}", e.message);
            return local::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the policy script failed on this response (see the log for this request id)",
                &id.to_string(),
            );
        }
        rhead = res_view.head;
    }
    if matches!(rhead.status.as_u16(), 204 | 205) {
        // No content (RFC 9110 §15.3.5, §15.3.6), whether the server sent
        // some anyway or a script set the status: no length, no body.
        rhead.headers.remove(http::header::CONTENT_LENGTH);
        if !rbody.is_end_stream() {
            // The body is dropped unread, and with it the connection.
            open.ex.termination = Termination::NORMAL;
            in_flight.finished_well();
            return Response::from_parts(rhead, ResponseBody::full(bytes::Bytes::new()));
        }
    }
    // A body broken in what came with the head (a malformed first chunk
    // line): hyper's client has already read it, and nothing has gone to
    // the client, which gets a 502 (`PH`) rather than a closed connection
    // with no answer (hyper's server would find the error before writing
    // the head). One look, never a wait: a body still to come is streamed.
    let mut rbody = rbody;
    let mut first = None;
    if !rbody.is_end_stream() {
        let mut look = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(&mut rbody).poll_frame(&mut look) {
            std::task::Poll::Ready(Some(Err(e))) => {
                open.set(b'P', b'H');
                return cannot_relay(pool, server, id, &format!("a malformed body: {e}"));
            }
            std::task::Poll::Ready(Some(Ok(frame))) => first = Some(frame),
            std::task::Poll::Ready(None) | std::task::Poll::Pending => {}
        }
    }
    let lease = Lease::new(upstreams_for(pool, cx).clone(), conn);
    Response::from_parts(
        rhead,
        ResponseBody::upstream(
            rbody,
            first,
            lease,
            in_flight,
            pool.timeouts.idle,
            deadline,
            server.addr_text.clone(),
            pool.passive.after,
        ),
    )
}

/// Where a request's server connection comes from and goes back to: the
/// worker's idle connections, or, for a pool with `send_proxy`, the client
/// connection's own. Those carry this client's address in their PROXY
/// header, so they are never lent to another client, and they close when
/// the client connection has closed and its last response is done (as
/// HAProxy makes them private to the client connection). At most
/// [`upstream::MAX_PRIVATE_IDLE_PER_SERVER`] of them stay idle per server
/// (HAProxy's `max-session-srv-conns`); HTTP/2 ones (`protocol = "h2"`)
/// are in the same private set, so they too serve this client only.
fn upstreams_for<'a>(pool: &Pool, cx: &'a ConnCtx) -> &'a Rc<upstream::Upstreams> {
    match pool.send_proxy {
        None => &cx.worker.upstreams,
        Some(_) => cx.private_upstreams().get_or_init(|| {
            Rc::new(upstream::Upstreams::with_max_idle(
                upstream::MAX_PRIVATE_IDLE_PER_SERVER,
            ))
        }),
    }
}

/// The PROXY header a pool with `send_proxy` starts its connections with:
/// this connection's client and the address it connected to
/// (proxy_header.rs).
fn proxy_to(pool: &Pool, cx: &ConnCtx) -> Option<proxy_header::ProxyTo> {
    pool.send_proxy.map(|version| proxy_header::ProxyTo {
        version,
        addresses: Some((cx.peer, cx.local)),
    })
}
