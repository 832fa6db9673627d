//! Bodies as they pass through: the client's request body streamed to the
//! server, the server's response body streamed to the client, and small
//! local bodies. Nothing is buffered.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::upstream::Lease;
use crate::lb::ServerState;

/// The body sent to a server.
pub enum RequestBody {
    Client(Incoming),
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Client(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(b) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Counts a request as in flight on a server until its response body is
/// done (or dropped).
pub struct InFlight(pub Arc<ServerState>, bool);

impl InFlight {
    pub fn new(state: &Arc<ServerState>) -> InFlight {
        state
            .active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(state.clone(), true)
    }

    /// This answer already counted as a failure (a 5xx): finishing its
    /// body must not end the server's failure streak.
    pub fn counted_as_failure(&mut self) {
        self.1 = false;
    }

    fn finished_well(self) {
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

/// A server went silent in the middle of a response body.
#[derive(Debug)]
struct Stalled(Arc<str>, Duration);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server {} sent nothing for {:?} mid-response",
            self.0, self.1
        )
    }
}

impl std::error::Error for Stalled {}

/// The body sent to the client.
pub enum ResponseBody {
    /// Streamed from a server; the connection goes back to the pool when
    /// the body has been read to its end. A server silent for longer than
    /// `idle` ends the body with an error, which closes the client's
    /// connection at once rather than leaving it hanging.
    Upstream {
        body: Incoming,
        lease: Option<Lease>,
        in_flight: Option<InFlight>,
        idle: Duration,
        timer: Pin<Box<tokio::time::Sleep>>,
        server: Arc<str>,
        /// The pool's passive limit: a broken body counts as a failure.
        passive_after: u32,
    },
    /// Made here: local responses and errors.
    Full(Option<Bytes>),
}

impl ResponseBody {
    pub fn upstream(
        body: Incoming,
        lease: Lease,
        in_flight: InFlight,
        idle: Duration,
        server: Arc<str>,
        passive_after: u32,
    ) -> ResponseBody {
        ResponseBody::Upstream {
            body,
            lease: Some(lease),
            in_flight: Some(in_flight),
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            server,
            passive_after,
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let b = bytes.into();
        ResponseBody::Full(if b.is_empty() { None } else { Some(b) })
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
        match self.get_mut() {
            ResponseBody::Upstream {
                body,
                lease,
                in_flight,
                idle,
                timer,
                server,
                passive_after,
            } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                if polled.is_pending() {
                    if timer.as_mut().poll(cx).is_ready() {
                        lease.take();
                        if let Some(f) = in_flight.take() {
                            f.0.traffic_failed(*passive_after, "stalled mid-response");
                        }
                        let err = Stalled(server.clone(), *idle);
                        tracing::warn!("{err}; closing the client connection");
                        return Poll::Ready(Some(Err(Box::new(err))));
                    }
                    return Poll::Pending;
                }
                let finished = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    Poll::Ready(Some(Err(e))) => {
                        // A broken upstream body: never reuse that
                        // connection; the client's is closed by hyper.
                        tracing::warn!("server {server} broke off its response: {e}");
                        lease.take();
                        if let Some(f) = in_flight.take() {
                            f.0.traffic_failed(*passive_after, "response broke off");
                        }
                        false
                    }
                    Poll::Pending => false,
                };
                if !finished {
                    // Progress: the server's silence is counted from now.
                    // (Not after the last frame: nothing waits any more.)
                    timer.as_mut().reset(tokio::time::Instant::now() + *idle);
                } else {
                    if let Some(lease) = lease.take() {
                        lease.release();
                    }
                    // A whole answer: the server's failure streak ends.
                    if let Some(f) = in_flight.take() {
                        f.finished_well();
                    }
                }
                polled.map_err(|e| Box::new(e) as BoxError)
            }
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
            ResponseBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body, .. } => body.size_hint(),
            ResponseBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
