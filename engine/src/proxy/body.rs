//! Bodies as they pass through: the client's request body streamed to the
//! server, the server's response body streamed to the client, and small
//! local bodies. Nothing is buffered.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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
pub struct InFlight(Arc<ServerState>);

impl InFlight {
    pub fn new(state: &Arc<ServerState>) -> InFlight {
        state
            .active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The body sent to the client.
pub enum ResponseBody {
    /// Streamed from a server; the connection goes back to the pool when
    /// the body has been read to its end.
    Upstream {
        body: Incoming,
        lease: Option<Lease>,
        in_flight: Option<InFlight>,
    },
    /// Made here: local responses and errors.
    Full(Option<Bytes>),
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let b = bytes.into();
        ResponseBody::Full(if b.is_empty() { None } else { Some(b) })
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Upstream {
                body,
                lease,
                in_flight,
            } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                let finished = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    Poll::Ready(Some(Err(_))) => {
                        // A broken upstream body: never reuse that connection.
                        lease.take();
                        in_flight.take();
                        false
                    }
                    Poll::Pending => false,
                };
                if finished {
                    if let Some(lease) = lease.take() {
                        lease.release();
                    }
                    in_flight.take();
                }
                polled
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
