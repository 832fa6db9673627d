//! Phases 3 to 5 of the direct path, rule by rule those of the hyper
//! path (`proxy::forward` and `proxy::deliver`): pick a server, check out
//! a connection, write the head in one write, read the response head on
//! the pool's clock, retry what may be retried, count the answer, let
//! `on_response` edit it; then [`super::relay`] writes it to the client.

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use http::{header, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::servers::ServerConn;
use super::{answer, buf, relay, until_gone, Client, ClientConn, Clock, Done};
use crate::context::RequestId;
use crate::lb::{Pool, Server};
use crate::observe::exchange::{Open, Retry, Termination};
use crate::proxy::body::InFlight;
use crate::proxy::timeouts::{self, Late};
use crate::proxy::upstream_io::MAX_INTERIM;
use crate::proxy::{
    cannot_relay, clone_head, forward as prepare, is_idempotent, late_termination, local, next_try,
    ConnCtx,
};
use crate::script::api::request::RequestView;
use crate::script::api::response::ResponseView;
use crate::script::WorkerScript;
use crate::wire::response::{self, ResponseHead};
use crate::wire::{self, Framing};

/// The most a server's response head may take, in bytes: a larger one is
/// a 502 (as the hyper path's `MAX_RESPONSE_HEAD`, nginx's
/// `proxy_buffer_size`).
const MAX_HEAD: usize = 64 * 1024;

/// Where phase 2 sent the request, and what of it the later phases need.
pub(super) struct To {
    pub pool: usize,
    pub key: Option<u64>,
    pub preferred: Option<usize>,
    /// The request's framing (no body, or `Content-Length: 0`).
    pub framing: Framing,
    /// The client asked with HEAD: its answer has no body, whatever its
    /// head says.
    pub head_only: bool,
}

/// Phases 3 to 6 for a request routed to a pool. `view` stays the
/// caller's (no move of its head into this future); what the later
/// phases need of it is cloned or taken.
pub(super) async fn forward<W: ClientConn>(
    cx: &Rc<ConnCtx>,
    script: &Rc<WorkerScript>,
    view: &mut RequestView,
    to: To,
    mut open: Box<Open>,
    client: Client<'_, W>,
) -> Done {
    let id = view.id;
    // on_response sees the request as the client sent it (after on_request).
    let mut client_view = script.has_on_response().then(|| RequestView {
        head: clone_head(&view.head),
        raw_target: view.raw_target.take(),
        peer: view.peer,
        listener: view.listener.clone(),
        id,
        growth: 0,
        tls: view.tls.clone(),
    });
    let head = &mut view.head;
    let replayable = is_idempotent(&head.method);
    // The server's answer is read by the method sent (on_request may have
    // made a client's HEAD a GET), never by the client's.
    let sent_head = head.method == http::Method::HEAD;
    // Every pool of a policy on this path speaks HTTP/1.1 in plain: the
    // head is written once, whichever server takes it, with the
    // forwarding rules applied as it is written.
    let mut out = buf::take_head();
    prepare::write_prepared(
        &mut out,
        head,
        to.framing,
        &cx.peer_value,
        view.tls.is_some(),
    );
    // The head's fields are not needed past this point.
    drop(std::mem::take(&mut head.headers));
    // The whole exchange's limit, if the first pool sets one.
    let deadline = script.policy.pools[to.pool]
        .timeouts
        .total
        .map(|t| Instant::now() + t);
    // The answer is put here, not returned: it is not moved through the
    // futures' outputs on its way to `deliver`.
    let mut answered = None;
    let tried = {
        let trying = std::pin::pin!(tries(
            cx,
            script,
            &to,
            id,
            &out,
            replayable,
            deadline,
            &mut open,
            client.clock,
            sent_head,
            &mut answered,
        ));
        until_gone(client.io, trying).await
    };
    let answered = match (tried, answered) {
        (Some(Tried::Answered), Some(a)) => a,
        (Some(Tried::Local(resp)), _) => {
            buf::give_head(out);
            return answer(client, *resp, open, to.head_only).await;
        }
        _ => {
            // The client went away: its record says where (`CC`, `CH`).
            buf::give_head(out);
            return Done::Close;
        }
    };
    deliver(
        cx,
        script,
        answered,
        client_view.as_mut(),
        deadline,
        id,
        out,
        open,
        client,
        to.head_only,
        sent_head,
    )
    .await
}

/// A server's answer, its head in.
struct Answered<'p> {
    pool: &'p Pool,
    server: &'p Server,
    conn: ServerConn,
    head: ResponseHead,
    /// The head and whatever followed it in the same reads.
    rbuf: Vec<u8>,
    in_flight: InFlight,
}

/// How the tries ended.
enum Tried {
    /// A server answered: its answer is in the slot `tries` was given.
    Answered,
    /// Pocket's answer instead (logged, its termination set); boxed, as
    /// it is rare and this is moved through futures' outputs.
    Local(Box<http::Response<crate::proxy::body::ResponseBody>>),
}

/// Why a try got no response head.
enum Failure {
    /// The server's answer cannot be relayed (wire::response's words).
    Bad(&'static str),
    TooManyInterim,
    /// The connection closed or failed; `answered`: after a byte of an
    /// answer (never replayed then); `unwritten`: before any byte of the
    /// request was written (it provably never left: any method goes again).
    Io {
        why: String,
        timed_out: bool,
        answered: bool,
        unwritten: bool,
    },
}

/// Phases 3 and 4: servers tried in turn until one answers with a head,
/// with the retry rules of the hyper path (`proxy::forward`).
#[allow(clippy::too_many_arguments)]
async fn tries<'p>(
    cx: &ConnCtx,
    script: &'p WorkerScript,
    to: &To,
    id: RequestId,
    out: &[u8],
    replayable: bool,
    deadline: Option<Instant>,
    open: &mut Open,
    clock: &mut Clock,
    sent_head: bool,
    answer: &mut Option<Answered<'p>>,
) -> Tried {
    let mut pool = &script.policy.pools[to.pool];
    let (mut key, mut preferred) = (to.key, to.preferred);
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error = String::new();
    // Each unreachable server costs one retry; a connection found dead
    // before the request was answered costs an attempt but no retry.
    let mut attempts = 0;
    // After a reused connection failed, the next try opens a new one.
    let mut fresh_only = false;
    let max_attempts = pool.retries as usize + 4;
    let mut rbuf = buf::take();

    while tried.len() <= pool.retries as usize && attempts < max_attempts {
        attempts += 1;
        let Some(si) = pool.pick(&tried, key, preferred) else {
            // Nobody here can take it: the pool's fallback can.
            match pool.fallback_pool() {
                Some(next) => {
                    tracing::debug!(request = %id, "pool {} cannot serve; falling back to {}", pool.name, script.policy.pools[next].name);
                    pool = &script.policy.pools[next];
                    tried.clear();
                    (key, preferred) = (None, None);
                    continue;
                }
                None => break,
            }
        };
        let server = &pool.servers[si];
        open.trying(&pool.name, &server.addr_text);
        // The first try of a request that has not waited since its start
        // judges idle connections by the start's clock read.
        let now = if attempts == 1 && !script.waits() {
            open.started()
        } else {
            std::time::Instant::now()
        };
        let mut conn = match cx
            .worker
            .servers
            .checkout_at(pool, server, !fresh_only, now)
            .await
        {
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
                tried.push(si);
                continue;
            }
        };
        open.ex.connect_ms = open.reached();
        open.set(b'C', b'H');
        // Sent again if the server drops it unanswered: on a kept-alive
        // connection (the server may have closed it just as it was
        // reused), or when another server may still take it. Only
        // requests safe to repeat.
        let reused = conn.idle_for.is_some();
        let another = tried.len() < pool.retries as usize && pool.servers.len() > 1;
        let spare = replayable && (reused || another);
        let in_flight = InFlight::new(&server.state, pool.passive.counts());
        // One clock for the phase: the pool's `response`, or what is left
        // of its `total` if that comes first.
        let (at, late) = {
            let at = sent_at(script, open, reused && attempts == 1) + pool.timeouts.response;
            match (deadline, pool.timeouts.total) {
                (Some(d), Some(total)) if d < at => (d, Late::Total(total)),
                _ => (at, Late::ServerAnswering(pool.timeouts.response)),
            }
        };
        clock.set(at);
        let asked = {
            let mut ask = std::pin::pin!(ask(&mut conn.stream, out, &mut rbuf, sent_head));
            std::future::poll_fn(|task| {
                if let std::task::Poll::Ready(r) = ask.as_mut().poll(task) {
                    return std::task::Poll::Ready(Ok(r));
                }
                if clock.poll_expired(task) {
                    return std::task::Poll::Ready(Err(()));
                }
                std::task::Poll::Pending
            })
            .await
        };
        let failure = match asked {
            Ok(Ok(head)) => {
                open.ex.first_byte_ms = open.reached();
                *answer = Some(Answered {
                    pool,
                    server,
                    conn,
                    head,
                    rbuf,
                    in_flight,
                });
                return Tried::Answered;
            }
            Ok(Err(f)) => f,
            Err(_) => {
                buf::give(rbuf);
                late_termination(open, &late);
                return Tried::Local(Box::new(timeouts::answer_late(late, pool, server, id)));
            }
        };
        let (why, answered) = match failure {
            // A head Pocket refuses (what hyper's client could not parse,
            // in its words, or what Pocket will not relay): Pocket's 502,
            // `PH` (an answer, never replayed), as on the hyper path.
            Failure::Bad(why) => {
                buf::give(rbuf);
                open.set(b'P', b'H');
                return Tried::Local(Box::new(cannot_relay(pool, server, id, why)));
            }
            Failure::TooManyInterim => {
                buf::give(rbuf);
                open.set(b'P', b'H');
                let why =
                    format!("it sent too many interim (1xx) responses (more than {MAX_INTERIM})");
                return Tried::Local(Box::new(cannot_relay(pool, server, id, &why)));
            }
            Failure::Io {
                timed_out: true, ..
            } => {
                // TCP_USER_TIMEOUT (= timeouts.idle): the server took none
                // of what was sent for that long.
                buf::give(rbuf);
                let late = Late::ServerReading(pool.timeouts.idle);
                late_termination(open, &late);
                return Tried::Local(Box::new(timeouts::answer_late(late, pool, server, id)));
            }
            Failure::Io {
                why,
                answered,
                unwritten: true,
                ..
            } if reused && !answered => {
                // Nothing of it was written to a reused connection the
                // server had closed: it never left, whatever its method
                // (as the hyper path, proxy/upstream_io.rs `unwritten`).
                drop(conn);
                tracing::debug!(request = %id, server = %server.addr, "reused connection closed before the request was written ({why}); sending it on a new one");
                fresh_only = true;
                continue;
            }
            Failure::Io { why, answered, .. } => (why, answered),
        };
        drop(conn);
        if spare && reused && !answered {
            // A reused connection the server had just closed.
            tracing::debug!(request = %id, server = %server.addr, "reused connection closed ({why}); resending on a new one");
            fresh_only = true;
            continue;
        }
        if spare && !answered {
            // Dropped before any response byte: safe to repeat elsewhere.
            server
                .state
                .traffic_failed(pool.passive.after, "no response");
            let next = next_try::after_failure(&script.policy, pool, &tried, si);
            tracing::warn!(request = %id, pool = %pool.name, server = %server.addr, "{why}{next}");
            last_error = format!("{}: {why}", server.addr);
            open.ex.retries.push(Retry {
                pool: pool.name.clone(),
                server: server.addr_text.clone(),
                cause: "no response",
                retried: false,
            });
            tried.push(si);
            continue;
        }
        buf::give(rbuf);
        server
            .state
            .traffic_failed(pool.passive.after, "no response");
        let why = format!(
            "server {} of pool \"{}\" failed: {why}",
            server.addr, pool.name
        );
        tracing::warn!(request = %id, "{why}");
        open.set(b'S', b'H');
        return Tried::Local(Box::new(local::error(
            StatusCode::BAD_GATEWAY,
            &why,
            &id.to_string(),
        )));
    }
    buf::give(rbuf);

    let (status, why) = next_try::no_server_left(pool, tried.len(), &last_error, id, open);
    Tried::Local(Box::new(local::error(status, &why, &id.to_string())))
}

/// When the request was sent, for its `timeouts.response` clock. The
/// first try on a reused connection was sent with no wait since the
/// request's head came in (no connect, no sub-request): its time is the
/// exchange's start and the hooks' run time, without a clock read of its
/// own (microseconds off: the Rust steps in between).
fn sent_at(script: &WorkerScript, open: &Open, no_wait: bool) -> Instant {
    if no_wait && !script.waits() {
        Instant::from_std(open.started()) + std::time::Duration::from_micros(open.ex.hooks_us)
    } else {
        Instant::now()
    }
}

/// Writes the request head (one write) and reads the response head,
/// interim ones skipped (at most [`MAX_INTERIM`], as the hyper path).
/// `rbuf` ends holding the head and what followed it.
async fn ask(
    stream: &mut TcpStream,
    out: &[u8],
    rbuf: &mut Vec<u8>,
    head_only: bool,
) -> Result<ResponseHead, Failure> {
    rbuf.clear();
    let io = |e: std::io::Error, answered: bool, unwritten: bool| Failure::Io {
        timed_out: e.kind() == std::io::ErrorKind::TimedOut,
        why: format!("connection error: {e}"),
        answered,
        unwritten,
    };
    // One write for the whole head, as a rule; a socket that takes part
    // of it gets the rest.
    let mut written = 0;
    while written < out.len() {
        match stream.write(&out[written..]).await {
            Ok(0) => {
                let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                return Err(io(e, false, written == 0));
            }
            Ok(n) => written += n,
            Err(e) => return Err(io(e, false, written == 0)),
        }
    }
    let mut interim = 0u8;
    let mut answered = false;
    loop {
        if !rbuf.is_empty() {
            match response::parse_into(rbuf, head_only, MAX_HEAD, spare_fields::take()) {
                response::Parsed::Complete(head) => return Ok(head),
                response::Parsed::Interim(n) => {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(Failure::TooManyInterim);
                    }
                    rbuf.drain(..n.min(rbuf.len()));
                    continue;
                }
                response::Parsed::Partial => {}
                response::Parsed::Bad(why) => return Err(Failure::Bad(why)),
            }
        }
        if rbuf.capacity() - rbuf.len() < 512 {
            rbuf.reserve(buf::SIZE);
        }
        match stream.read_buf(rbuf).await {
            Ok(0) => {
                return Err(Failure::Io {
                    why: "connection closed before message completed".into(),
                    timed_out: false,
                    answered,
                    unwritten: false,
                })
            }
            Ok(_) => answered = true,
            Err(e) => return Err(io(e, answered, false)),
        }
    }
}

/// Phases 5 and 6, once the server has answered: count it, let
/// `on_response` edit the head, write it to the client and relay the body.
#[allow(clippy::too_many_arguments)]
async fn deliver<W: ClientConn>(
    cx: &ConnCtx,
    script: &WorkerScript,
    a: Answered<'_>,
    client_view: Option<&mut RequestView>,
    deadline: Option<Instant>,
    id: RequestId,
    mut out: Vec<u8>,
    mut open: Box<Open>,
    client: Client<'_, W>,
    head_only: bool,
    sent_head: bool,
) -> Done {
    let Answered {
        pool,
        server,
        mut conn,
        head: mut rhead,
        rbuf,
        mut in_flight,
    } = a;
    // The body the server sends after its head (read by the method sent).
    // When the client gets none of it, the connection goes: never back
    // to the idle ones with bytes unread.
    let server_framing = rhead.framing;
    let sent_body = !matches!(server_framing, Framing::Empty | Framing::Length(0));
    let mut dropped_body = false;
    if head_only && !sent_head {
        // A HEAD that on_request made a GET: the client (and on_response)
        // get the answer a HEAD gets (the same head read as a HEAD's
        // answer: its length kept), no body, as on the hyper path.
        if let response::Parsed::Complete(h) = response::parse(&rbuf, true, MAX_HEAD) {
            rhead = h;
        }
        rhead.framing = Framing::Empty;
        dropped_body = sent_body;
    }
    server.state.requests.fetch_add(1, Ordering::Relaxed);
    if rhead.status >= 500 {
        if pool.passive.on_5xx {
            server
                .state
                .traffic_failed(pool.passive.after, "5xx answer");
        }
        // Counted or not, a 5xx is no success: it ends no streak.
        in_flight.not_a_success();
    }
    // The head as `http` parts only for a script that reads it.
    let mut edited = None;
    if let Some(req_view) = client_view {
        let mut res_view = ResponseView {
            head: rhead.to_parts(&rbuf),
            pool: pool.name.clone(),
            server: server.addr_text.clone(),
            growth: 0,
        };
        let answered = script.on_response(req_view, &mut res_view);
        open.ex.hooks_us += crate::observe::metrics::take_request_hook_ns() / 1000;
        crate::script::api::log_field::take_into(&mut open.ex.script_fields);
        if let Err(e) = answered {
            // RH: the script met its time budget or memory limit. The
            // server connection goes, its body unread.
            open.set(if e.limit { b'R' } else { b'P' }, b'H');
            tracing::error!(request = %id, hook = e.hook, "{}", e.message);
            buf::give_head(out);
            buf::give(rbuf);
            let resp = local::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the policy script failed on this response (see the log for this request id)",
                &id.to_string(),
            );
            return answer(client, resp, open, head_only).await;
        }
        edited = Some(res_view.head);
    }
    let status = edited.as_ref().map_or(rhead.status, |p| p.status.as_u16());
    if matches!(status, 204 | 205 | 304) {
        // No content (RFC 9110 §15.3.5, §15.3.6), not modified (§15.4.5;
        // RFC 9112 §6.3), whether the server sent some anyway or a script
        // set the status: no body, as hyper's server forces (role.rs
        // can_have_body). A 304's own Content-Length stays, as hyper
        // writes it; a 204's or 205's goes (proxy::deliver).
        if let Some(p) = &mut edited {
            if status != 304 {
                p.headers.remove(header::CONTENT_LENGTH);
            } else if let (Framing::Length(n @ 1..), false) = (server_framing, head_only) {
                // hyper's client keeps the server's length (not a 0) in
                // the map, and its server writes it on a 304.
                p.headers
                    .entry(header::CONTENT_LENGTH)
                    .or_insert(http::HeaderValue::from(n));
            }
        }
        dropped_body = sent_body;
        rhead.framing = Framing::Empty;
    }
    // What the client's head says of the body: an empty body is
    // `content-length: 0` except on a response to HEAD, a 204 or a 304
    // (hyper's server, role.rs can_have_implicit_zero_content_length),
    // whatever status the server or the script set.
    let for_client =
        if rhead.framing == Framing::Empty && !head_only && !matches!(status, 204 | 304) {
            Framing::Length(0)
        } else {
            rhead.framing
        };
    let close = client.closes();
    // A body that ends at the server's close goes to the client chunked
    // (relay.rs), as hyper's server sends a body of unknown length.
    let framing = rhead.framing;
    rhead.framing = match for_client {
        Framing::UntilClose => Framing::Chunked,
        f => f,
    };
    out.clear();
    match &edited {
        None => wire::write::relayed_response_head(&mut out, &rhead, &rbuf, close),
        Some(parts) => wire::write::response_head(&mut out, parts, rhead.framing, close),
    }
    spare_fields::give(std::mem::take(&mut rhead.fields));
    rhead.framing = framing;
    open.ex.status = status;
    // Until the body is whole, the client going away is what ends it.
    if rhead.framing != Framing::Empty {
        open.set(b'C', b'D');
    }
    let body = relay::Body {
        framing: rhead.framing,
        at: rhead.len,
        idle: pool.timeouts.idle,
        deadline,
    };
    let ended = relay::relay(
        client.io,
        client.clock,
        &mut conn.stream,
        &out,
        rbuf,
        body,
        &mut open.ex.bytes_out,
    )
    .await;
    buf::give_head(out);
    let done = match ended {
        relay::Ended::Whole { rest } => {
            open.ex.termination = Termination::NORMAL;
            // A whole answer: the server's failure streak ends.
            in_flight.finished_well();
            let reuse =
                rhead.keep_alive && !dropped_body && !rest && rhead.framing != Framing::UntilClose;
            // One clock read for the record's end and the connection's
            // idle start.
            let now = std::time::Instant::now();
            open.end_at(now);
            if reuse {
                cx.worker.servers.checkin_at(conn, now);
            }
            if close {
                Done::Close
            } else {
                Done::KeepAlive
            }
        }
        relay::Ended::Refused(why) => {
            // No byte of the answer went out: a 502 of Pocket's instead
            // (HAProxy's `PH`), the client's connection kept; the server's
            // goes (dropped with `conn`).
            open.set(b'P', b'H');
            let resp = cannot_relay(pool, server, id, &why);
            return answer(client, resp, open, head_only).await;
        }
        relay::Ended::Broke(why) => {
            tracing::warn!(request = %id, pool = %pool.name, "server {} broke off its response: {why}", server.addr_text);
            server
                .state
                .traffic_failed(pool.passive.after, "response broke off");
            open.set(b'S', b'D');
            Done::Close
        }
        relay::Ended::Stalled { past_total } => {
            if past_total {
                tracing::warn!(
                    request = %id,
                    pool = %pool.name,
                    "the response of server {} ran past the pool's total timeout; closing the client connection",
                    server.addr_text
                );
            } else {
                server
                    .state
                    .traffic_failed(pool.passive.after, "stalled mid-response");
                tracing::warn!(
                    request = %id,
                    pool = %pool.name,
                    "server {} sent nothing for {:?} mid-response; closing the client connection",
                    server.addr_text,
                    pool.timeouts.idle
                );
            }
            open.set(b's', b'D');
            Done::Close
        }
        relay::Ended::Client { timed_out } => {
            open.set(if timed_out { b'c' } else { b'C' }, b'D');
            Done::Close
        }
    };
    done
}

/// One vector of relayed-field ranges per worker thread, lent to each
/// response head read (`wire::response::parse_into`) and given back once
/// the head is written: no allocation per response.
mod spare_fields {
    use std::cell::Cell;

    thread_local! {
        static SPARE: Cell<Vec<(u32, u32)>> = const { Cell::new(Vec::new()) };
    }

    /// The spare vector (empty, and without room the first time).
    pub(super) fn take() -> Vec<(u32, u32)> {
        SPARE.try_with(Cell::take).unwrap_or_default()
    }

    /// Keeps `fields` for the next head, unless it grew past what a
    /// common head needs (a head of 100 fields keeps no 800 B for good).
    pub(super) fn give(fields: Vec<(u32, u32)>) {
        if fields.capacity() <= 32 {
            let _ = SPARE.try_with(|s| s.set(fields));
        }
    }
}
