//! Bodies as they pass through: the client's request body streamed to the
//! server, the server's response body streamed to the client, and small
//! local bodies. Nothing is buffered: a side that does not take what is
//! queued for it holds the other back.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::upstream::Lease;
use super::upstream_io::HeadWatch;
use crate::lb::ServerState;
use crate::observe::exchange::{Open, Termination};

/// The body sent to a server.
pub enum RequestBody {
    /// The client's body, streamed as it arrives; `progress` tells the
    /// request path whose turn it is, for the timeouts.
    Client {
        /// None only once given back (Drop).
        body: Option<Incoming>,
        progress: Rc<Progress>,
        /// The server connection it is being sent on: while the server
        /// does not take what is queued, no more is read from the client,
        /// whose TCP (HTTP/1) or flow-control window (h2) then holds it.
        upstream: Option<HeadWatch>,
        /// Frames read from the client for a connection that was found
        /// closed before any byte of the request was written: handed out
        /// first, again (upstream_io.rs `Watch::unwritten`).
        again: VecDeque<Frame<Bytes>>,
    },
    Empty,
}

/// How far a request body has gone, for the timeouts: while the client is
/// still sending it, its silence counts against the client (listener
/// `timeouts.body`, a 408); while the server is not taking it, against the
/// server (pool `timeouts.idle`); once it is all handed over, the server's
/// answer is awaited (pool `timeouts.response`).
pub struct Progress {
    /// When the client last gave a piece of the body (or the request began).
    last_piece: Cell<Instant>,
    /// Waiting on the client: the last read of its body was pending.
    waiting_on_client: Cell<bool>,
    /// When the body's last piece was handed to the server connection.
    done_at: Cell<Option<Instant>>,
    /// The request was given up: the body fails, so the server connection
    /// it was being sent on closes rather than carrying half a request.
    aborted: Cell<bool>,
    /// Wakes the server connection's task, parked on the client's body,
    /// when the request is given up (it would wait for the client).
    waker: Cell<Option<std::task::Waker>>,
    /// Wakes the request's task when the turn changes hands, so that it
    /// sets its timer to the new phase's deadline.
    watcher: Cell<Option<std::task::Waker>>,
    /// Body bytes read from the client so far (the access log's
    /// `bytes_in`).
    received: Cell<u64>,
}

/// Whose turn it is in an exchange whose request body is streaming.
pub enum Turn {
    /// The client owes the next piece, since this instant.
    Client(Instant),
    /// The server has not taken the last piece, since this instant.
    ServerReading(Instant),
    /// The body is sent; the server owes the answer, since this instant.
    ServerAnswering(Instant),
}

impl Progress {
    pub fn new() -> Rc<Progress> {
        Rc::new(Progress {
            last_piece: Cell::new(Instant::now()),
            waiting_on_client: Cell::new(false),
            done_at: Cell::new(None),
            aborted: Cell::new(false),
            waker: Cell::new(None),
            watcher: Cell::new(None),
            received: Cell::new(0),
        })
    }

    /// Body bytes read from the client so far.
    pub fn received(&self) -> u64 {
        self.received.get()
    }

    pub fn turn(&self) -> Turn {
        match self.done_at.get() {
            Some(at) => Turn::ServerAnswering(at),
            None if self.waiting_on_client.get() => Turn::Client(self.last_piece.get()),
            None => Turn::ServerReading(self.last_piece.get()),
        }
    }

    /// The request's task wants to hear when the turn changes.
    pub fn watch(&self, waker: &std::task::Waker) {
        self.watcher.set(Some(waker.clone()));
    }

    fn turn_changed(&self) {
        if let Some(w) = self.watcher.take() {
            w.wake();
        }
    }

    pub fn abort(&self) {
        self.aborted.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The request was given up (a timeout): what the server connection's
/// body reader gets.
#[derive(Debug)]
struct Abandoned;

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request abandoned")
    }
}

impl std::error::Error for Abandoned {}

impl RequestBody {
    /// The client's body, streamed.
    pub fn client(body: Incoming, progress: Rc<Progress>) -> RequestBody {
        RequestBody::Client {
            body: Some(body),
            progress,
            upstream: None,
            again: VecDeque::new(),
        }
    }

    /// The body is about to be sent on the server connection `upstream`.
    pub fn send_on(&mut self, watch: &HeadWatch) {
        if let RequestBody::Client { upstream, .. } = self {
            *upstream = Some(watch.clone());
        }
    }

    /// The body of a request none of which was written on `watch`'s
    /// connection, whole again: what had been read of it, then the rest.
    /// None if it cannot be had whole (a byte was written, or hyper still
    /// holds it); a request without a client body (`progress` None) has
    /// an empty one.
    pub fn unwritten(watch: &HeadWatch, progress: Option<&Rc<Progress>>) -> Option<RequestBody> {
        let Some(progress) = progress else {
            return Some(RequestBody::Empty);
        };
        let (read, rest) = watch.take_unwritten()?;
        Some(RequestBody::Client {
            body: Some(rest),
            progress: progress.clone(),
            upstream: None,
            again: read.into(),
        })
    }
}

impl Drop for RequestBody {
    /// hyper drops the body with a connection that failed: if none of the
    /// request was written, the client's body goes back to the request
    /// path through the connection's watch, to be sent again.
    fn drop(&mut self) {
        if let RequestBody::Client {
            body,
            upstream: Some(watch),
            again,
            ..
        } = self
        {
            if let Some(body) = body.take().filter(|_| watch.unwritten()) {
                watch.give_back(body, std::mem::take(again));
            }
        }
    }
}

/// The number of data bytes in `frames`.
fn data_len(frames: &VecDeque<Frame<Bytes>>) -> u64 {
    frames
        .iter()
        .filter_map(|f| f.data_ref())
        .map(|d| d.len() as u64)
        .sum()
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Client {
                body,
                progress,
                upstream,
                again,
            } => {
                if progress.aborted.get() {
                    return Poll::Ready(Some(Err(Box::new(Abandoned))));
                }
                if let Some(frame) = again.pop_front() {
                    // Read from the client already (and counted).
                    if let Some(u) = upstream {
                        u.keep_frame(&frame);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                let Some(body) = body else {
                    return Poll::Ready(None);
                };
                if upstream
                    .as_ref()
                    .is_some_and(|u| u.write_blocked(cx.waker()))
                {
                    // The server's turn (its `timeouts.idle` runs).
                    if progress.waiting_on_client.replace(false) {
                        progress.turn_changed();
                    }
                    return Poll::Pending;
                }
                let polled = Pin::new(&mut *body).poll_frame(cx);
                let was_waiting = progress.waiting_on_client.get();
                match &polled {
                    Poll::Pending => {
                        progress.waiting_on_client.set(true);
                        progress.waker.set(Some(cx.waker().clone()));
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(u) = upstream {
                            u.keep_frame(frame);
                        }
                        if let Some(d) = frame.data_ref() {
                            progress
                                .received
                                .set(progress.received.get() + d.len() as u64);
                        }
                        let now = Instant::now();
                        progress.waiting_on_client.set(false);
                        progress.last_piece.set(now);
                        if body.is_end_stream() {
                            progress.done_at.set(Some(now));
                            progress.turn_changed();
                        }
                    }
                    Poll::Ready(None) => {
                        progress.waiting_on_client.set(false);
                        progress.done_at.set(Some(Instant::now()));
                        progress.turn_changed();
                    }
                    Poll::Ready(Some(Err(_))) => progress.waiting_on_client.set(false),
                }
                if was_waiting != progress.waiting_on_client.get() {
                    progress.turn_changed();
                }
                polled.map_err(|e| Box::new(e) as BoxError)
            }
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client { body, again, .. } => {
                again.is_empty() && body.as_ref().is_none_or(|b| b.is_end_stream())
            }
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client { body, again, .. } => {
                // The frames to hand out again count: a resent body keeps
                // the framing (length) it was first sent with.
                let rest = body
                    .as_ref()
                    .map_or(SizeHint::with_exact(0), |b| b.size_hint());
                let more = data_len(again);
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + more);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + more);
                }
                hint
            }
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Counts a request as in flight on a server until its response body is
/// done (or dropped). The flag: whether a whole answer ends the server's
/// (shared) failure streak.
pub struct InFlight(pub Arc<ServerState>, bool);

impl InFlight {
    /// `counts`: the pool counts failures (`Passive::counts`); a pool that
    /// counts none must not end a streak other pools count either.
    pub fn new(state: &Arc<ServerState>, counts: bool) -> InFlight {
        state
            .active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(state.clone(), counts)
    }

    /// This answer is no success (a 5xx, counted as a failure or not):
    /// finishing its body must not end the server's failure streak.
    pub fn not_a_success(&mut self) {
        self.1 = false;
    }

    /// A whole answer: the server's failure streak ends (unless this
    /// answer is no success, or the pool counts nothing).
    pub fn finished_well(self) {
        if self.1 {
            self.0.traffic_ok();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// When a streaming response must have moved again: `idle` from now, or
/// the exchange's deadline if that comes first.
#[inline]
fn next_wake(idle: Duration, deadline: Option<Instant>) -> Instant {
    let at = Instant::now() + idle;
    match deadline {
        Some(d) if d < at => d,
        _ => at,
    }
}

/// A server went silent in the middle of a response body (or the whole
/// exchange ran past the pool's `total`: the bool).
#[derive(Debug)]
struct Stalled(Arc<str>, Duration, bool);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.2 {
            write!(
                f,
                "the response of server {} ran past the pool's total timeout",
                self.0
            )
        } else {
            write!(
                f,
                "server {} sent nothing for {:?} mid-response",
                self.0, self.1
            )
        }
    }
}

impl std::error::Error for Stalled {}

/// The body sent to the client, with the exchange's record (if the
/// request went through the proxy): the record ends when this body ends or
/// is dropped, with the bytes sent and who ended it.
pub struct ResponseBody {
    inner: Inner,
    open: Option<Box<Open>>,
}

// Upstream is the common variant (Full: local answers); boxing it would
// cost an allocation per proxied response.
#[allow(clippy::large_enum_variant)]
enum Inner {
    /// Streamed from a server; the connection goes back to the pool when
    /// the body has been read to its end. A server silent for longer than
    /// `idle` ends the body with an error, which closes the client's
    /// connection at once rather than leaving it hanging.
    Upstream {
        body: Incoming,
        /// What was taken before the head went to the client (to see that
        /// the body did not break in what came with the head,
        /// `proxy::deliver`): sent first. Data, or (an empty body) its
        /// trailers, boxed as they are rare and large.
        first: Option<Bytes>,
        first_trailers: Option<Box<http::HeaderMap>>,
        lease: Option<Lease>,
        in_flight: Option<InFlight>,
        idle: Duration,
        /// The pool's total timeout, as an instant (None: no limit).
        deadline: Option<Instant>,
        timer: Pin<Box<tokio::time::Sleep>>,
        server: Arc<str>,
        /// The pool's passive limit: a broken body counts as a failure.
        passive_after: u32,
    },
    /// Made here: local responses and errors.
    Full(Option<Bytes>),
}

impl ResponseBody {
    #[allow(clippy::too_many_arguments)]
    pub fn upstream(
        body: Incoming,
        first: Option<Frame<Bytes>>,
        lease: Lease,
        in_flight: InFlight,
        idle: Duration,
        deadline: Option<Instant>,
        server: Arc<str>,
        passive_after: u32,
    ) -> ResponseBody {
        let (first_data, first_trailers) = match first.map(Frame::into_data) {
            None => (None, None),
            Some(Ok(data)) => (Some(data), None),
            Some(Err(frame)) => (None, frame.into_trailers().ok().map(Box::new)),
        };
        ResponseBody {
            inner: Inner::Upstream {
                body,
                first: first_data,
                first_trailers,
                lease: Some(lease),
                in_flight: Some(in_flight),
                idle,
                deadline,
                timer: Box::pin(tokio::time::sleep_until(next_wake(idle, deadline))),
                server,
                passive_after,
            },
            open: None,
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let b = bytes.into();
        ResponseBody {
            inner: Inner::Full(if b.is_empty() { None } else { Some(b) }),
            open: None,
        }
    }

    /// Gives the body the exchange's record, which ends with it. `status`:
    /// the status the client gets; `head_only`: the answer has no body
    /// whatever this one holds (a HEAD request), so it is not polled.
    /// A server's body still to come ends `CD` if dropped unfinished (the
    /// client went away); a body made here keeps the termination the
    /// request path set.
    pub fn attach(&mut self, mut open: Box<Open>, status: u16, head_only: bool) {
        open.ex.status = status;
        if head_only || self.is_end_stream() {
            if matches!(self.inner, Inner::Upstream { .. }) {
                open.ex.termination = Termination::NORMAL;
            }
        } else if matches!(self.inner, Inner::Upstream { .. }) {
            open.set(b'C', b'D');
        }
        self.open = Some(open);
    }
}

impl ResponseBody {
    /// The whole body of one made here (`proxy::local`: a script's
    /// answer, a refusal, an error), taken out as it is (no copy), for a
    /// writer that sends it in one piece (`proxy::h1::local::write`);
    /// the body is left empty. An attached record counts the bytes as
    /// sent, as handing them to hyper does. None: a server's body, which
    /// is streamed.
    pub fn take_full(&mut self) -> Option<Bytes> {
        let Inner::Full(bytes) = &mut self.inner else {
            return None;
        };
        let b = bytes.take().unwrap_or_default();
        sent(&mut self.open, b.len(), None);
        Some(b)
    }

    /// The length of a body made here (0 if empty); None for a server's.
    pub fn full_len(&self) -> Option<u64> {
        match &self.inner {
            Inner::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Upstream { .. } => None,
        }
    }

    /// The client's send timeout ended the connection or stream while
    /// this body was still going: what would be logged as the client
    /// going away (`C`) is its timeout (`c`).
    pub fn client_timed_out(&mut self) {
        if let Some(open) = &mut self.open {
            if open.ex.termination.cause == b'C' {
                open.set(b'c', b'D');
            }
        }
    }
}

/// A frame of `n` bytes went out; `end`: the body is over, ended so.
#[inline]
fn sent(open: &mut Option<Box<Open>>, n: usize, end: Option<Termination>) {
    if let Some(open) = open {
        open.ex.bytes_out += n as u64;
        if let Some(t) = end {
            open.ex.termination = t;
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Upstream {
                body,
                first,
                first_trailers,
                lease,
                in_flight,
                idle,
                deadline,
                timer,
                server,
                passive_after,
            } => {
                let polled = match (first.take(), first_trailers.take()) {
                    (Some(data), _) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    (None, Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(*t)))),
                    (None, None) => Pin::new(&mut *body).poll_frame(cx),
                };
                if polled.is_pending() {
                    if timer.as_mut().poll(cx).is_ready() {
                        lease.take();
                        let past_total = deadline.is_some_and(|d| d <= Instant::now());
                        if let Some(f) = in_flight.take() {
                            if !past_total {
                                f.0.traffic_failed(*passive_after, "stalled mid-response");
                            }
                        }
                        let err = Stalled(server.clone(), *idle, past_total);
                        match this.open.as_ref() {
                            Some(o) => {
                                tracing::warn!(request = %o.ex.id, "{err}; closing the client connection")
                            }
                            None => tracing::warn!("{err}; closing the client connection"),
                        }
                        sent(&mut this.open, 0, Some(Termination::of(b's', b'D')));
                        return Poll::Ready(Some(Err(Box::new(err))));
                    }
                    return Poll::Pending;
                }
                let mut broke = false;
                let finished = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    Poll::Ready(Some(Err(e))) => {
                        // A broken upstream body: never reuse that
                        // connection; the client's is closed by hyper.
                        match this.open.as_ref() {
                            Some(o) => {
                                tracing::warn!(request = %o.ex.id, "server {server} broke off its response: {e}")
                            }
                            None => tracing::warn!("server {server} broke off its response: {e}"),
                        }
                        lease.take();
                        if let Some(f) = in_flight.take() {
                            f.0.traffic_failed(*passive_after, "response broke off");
                        }
                        broke = true;
                        false
                    }
                    Poll::Pending => false,
                };
                if !finished {
                    if !broke && deadline.is_some_and(|d| d <= Instant::now()) {
                        // A body that never pauses still ends at `total`.
                        lease.take();
                        in_flight.take();
                        let err = Stalled(server.clone(), *idle, true);
                        match this.open.as_ref() {
                            Some(o) => {
                                tracing::warn!(request = %o.ex.id, "{err}; closing the client connection")
                            }
                            None => tracing::warn!("{err}; closing the client connection"),
                        }
                        sent(&mut this.open, 0, Some(Termination::of(b's', b'D')));
                        return Poll::Ready(Some(Err(Box::new(err))));
                    }
                    // Progress: the server's silence is counted from now.
                    // (Not after the last frame: nothing waits any more.)
                    timer.as_mut().reset(next_wake(*idle, *deadline));
                } else {
                    if let Some(lease) = lease.take() {
                        lease.release();
                    }
                    // A whole answer: the server's failure streak ends.
                    if let Some(f) = in_flight.take() {
                        f.finished_well();
                    }
                }
                let n = match &polled {
                    Poll::Ready(Some(Ok(f))) => f.data_ref().map_or(0, |d| d.len()),
                    _ => 0,
                };
                let end = if broke {
                    Some(Termination::of(b'S', b'D'))
                } else if finished {
                    Some(Termination::NORMAL)
                } else {
                    None
                };
                sent(&mut this.open, n, end);
                polled.map_err(|e| Box::new(e) as BoxError)
            }
            Inner::Full(bytes) => {
                let b = bytes.take();
                if let Some(b) = &b {
                    let n = b.len();
                    sent(&mut this.open, n, None);
                }
                Poll::Ready(b.map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream {
                body,
                first,
                first_trailers,
                ..
            } => first.is_none() && first_trailers.is_none() && body.is_end_stream(),
            Inner::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream { body, first, .. } => {
                // Incoming counts down what it has handed out.
                let n = first.as_ref().map_or(0, |d| d.len() as u64);
                let hint = body.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower() + n);
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper + n);
                }
                sum
            }
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
