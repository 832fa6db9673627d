//! The client side of Pocket's own HTTP/1 path: one loop per connection
//! reads each request head into a buffer of the connection's own, has
//! `wire::request` parse it, and runs the request phases for it
//! (`proxy::h1::serve`), for as long as the requests are the path's to
//! take. The first that is not (a body, an upgrade, anything unusual,
//! an explained request, a policy reloaded onto pools the path does not
//! speak to) goes to hyper with every byte read so far; once hyper parks
//! the connection, the next request tries this path again.
//!
//! Between requests, with nothing read ahead, the buffer goes back to the
//! worker's pool and the connection waits holding only its socket (it is
//! "parked", as on the hyper path), until the client sends again, the
//! listener's `keepalive` ends it, or a drain closes it. A head begun must
//! be whole within the listener's `head` timeout from its first byte (the
//! first head of a run of this path: from the run's start, i.e. after the
//! sniff and any TLS handshake, or after hyper gave the connection back). Pipelined requests are
//! served in turn from the bytes read ahead.
//!
//! The bytes read here never pass through the head check of
//! `server/head_check.rs`: a head this path serves was parsed strictly by
//! `wire::request` (CRLF only, framing proven), and a head it does not
//! take reaches hyper, and so the check, as the connection's prefix, seen
//! once.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::conn::{ClientIo, H2_PREFACE};
use super::transport::Transport;
use crate::config::ClientTimeouts;
use crate::context::Drain;
use crate::proxy::h1::{self as direct, buf, Client, ClientConn, Clock, Done};
use crate::proxy::ConnCtx;
use crate::script::WorkerScript;
use crate::wire::request::{self, Parsed, RequestHead};
use crate::wire::Framing;

/// How the direct path left the connection.
pub(super) enum Left {
    /// Closed (or to be dropped): nothing more on it.
    Closed,
    /// For hyper, with the bytes read so far as its prefix.
    Hyper(ClientIo),
    /// Idle: nothing in flight, nothing read ahead, no buffer. The caller
    /// parks it (conn.rs) until the client sends again or the keep-alive
    /// ends at the `Instant`; then [`serve`] is called anew with it.
    Idle(ClientIo, Instant),
    /// A new connection that began with HTTP/2's preface, read as its
    /// prefix: for hyper's h2.
    H2(ClientIo),
}

/// How a run of this path begins.
pub(super) struct First {
    /// The connection was idle ([`Left::Idle`]) and its keep-alive ends
    /// then unless a head begins; None: a head is expected now (a new
    /// connection, or one hyper served).
    pub resume: Option<Instant>,
    /// A new connection whose first bytes may be HTTP/2's preface
    /// (`conn.rs` sniffed it before, with a peek: one syscall more).
    pub sniff: bool,
}

/// Whether the policy `script` runs on sends its requests this way
/// (decided at load, `proxy::h1::takes_policy`).
#[inline]
pub(super) fn takes(script: &WorkerScript) -> bool {
    script.direct_h1
}

/// Bytes read from the client and not yet served: `buf[start..]`. No
/// buffer while there are none.
#[derive(Default)]
struct Pending {
    buf: Option<Vec<u8>>,
    start: usize,
}

impl Pending {
    #[inline]
    fn bytes(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[self.start..],
            None => &[],
        }
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// The first `n` bytes are served.
    #[inline]
    fn consume(&mut self, n: usize) {
        self.start += n;
        if let Some(b) = &mut self.buf {
            if self.start >= b.len() {
                b.clear();
                self.start = 0;
            }
        }
    }

    /// Nothing left: the buffer goes back to the worker's pool.
    fn release(&mut self) {
        if self.is_empty() {
            if let Some(b) = self.buf.take() {
                buf::give(b);
            }
            self.start = 0;
        }
    }

    /// The buffer to read into, with room at its end (what was served is
    /// moved out of the way). None: it is full.
    fn room(&mut self) -> Option<&mut Vec<u8>> {
        let b = self.buf.get_or_insert_with(buf::take);
        if self.start > 0 && b.len() == b.capacity() {
            b.drain(..self.start);
            self.start = 0;
        }
        (b.len() < b.capacity()).then_some(b)
    }

    /// What is left, for hyper's prefix; the buffer goes back.
    fn into_prefix(mut self) -> Bytes {
        let rest = Bytes::copy_from_slice(self.bytes());
        self.start = 0;
        if let Some(mut b) = self.buf.take() {
            b.clear();
            buf::give(b);
        }
        rest
    }
}

/// Reads what the socket has into the spare room of `b`.
pub(super) fn poll_read_into(
    stream: &mut Transport,
    b: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut rb = ReadBuf::uninit(b.spare_capacity_mut());
    match Pin::new(stream).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {
            let n = rb.filled().len();
            let len = b.len() + n;
            // SAFETY: `poll_read` initialised the first `n` bytes of the
            // spare capacity it was given (ReadBuf's contract).
            unsafe { b.set_len(len) };
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// What waiting for a head gave. (Moved once per head: boxing the head
/// would cost an allocation per request.)
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(RequestHead),
    /// Not this path's (why).
    Hyper(&'static str),
    Closed,
    /// Nothing read ahead, the buffer given back: the caller parks it.
    Idle,
    /// HTTP/2's preface, read whole (a new connection only).
    H2,
}

/// Serves requests on the direct path until the connection closes, is
/// idle, or a request is hyper's (see [`First`]).
pub(super) async fn serve(
    mut io: ClientIo,
    cx: &Rc<ConnCtx>,
    drain: &Drain,
    timeouts: ClientTimeouts,
    first: First,
) -> Left {
    let First { resume, mut sniff } = first;
    let mut pending = Pending::default();
    if !io.prefix.is_empty() {
        let mut b = buf::take();
        b.extend_from_slice(&io.prefix);
        io.prefix = Bytes::new();
        pending.buf = Some(b);
    }
    // A head is expected from now (as hyper's header timer starts), or
    // the keep-alive runs on.
    let (mut idle_due, mut head_begun) = match resume {
        Some(due) => (due, false),
        None => (Instant::now() + timeouts.head, true),
    };
    let mut clock = Clock::new(idle_due);
    let mut woke = resume.is_some();
    // A response went out and the connection was kept (on this run, or
    // before it went idle): a drain then ends it even mid-head (next_head).
    let mut kept = resume.is_some();
    loop {
        let next = next_head(
            &mut io,
            &mut pending,
            cx,
            drain,
            &timeouts,
            &mut clock,
            head_begun,
            std::mem::take(&mut woke),
            kept,
            &mut sniff,
            idle_due,
        )
        .await;
        let head = match next {
            Next::Head(head) => head,
            Next::Hyper(why) => {
                tracing::trace!(peer = %cx.peer, "to hyper: {why}");
                io.prefix = pending.into_prefix();
                return Left::Hyper(io);
            }
            Next::Closed => {
                if let Some(b) = pending.buf.take() {
                    buf::give(b);
                }
                return Left::Closed;
            }
            Next::Idle => return Left::Idle(io, idle_due),
            Next::H2 => {
                io.prefix = pending.into_prefix();
                return Left::H2(io);
            }
        };
        pending.consume(head.len);
        let closing = !head.keep_alive || drain.is_draining();
        let done = {
            let mut side = Side {
                io: &mut io,
                pending: &mut pending,
            };
            // Boxed: the request's future (a few KiB with the script's
            // and the server's) is not kept in the connection's task while
            // it waits between requests.
            Box::pin(direct::serve(
                cx,
                head,
                Client {
                    io: &mut side,
                    clock: &mut clock,
                    closing,
                    drain,
                },
            ))
            .await
        };
        if done == Done::Close {
            if let Some(b) = pending.buf.take() {
                buf::give(b);
            }
            // Plain TCP: the socket is closed as the connection's task
            // ends, right after this, and close(2) sends the FIN that
            // shutdown(2) would: one syscall less per connection (nginx
            // closes the same way). TLS writes its close_notify first,
            // under the send timeout (a fresh blockage).
            if matches!(io.stream, Transport::Tls(_)) {
                io.activity.unblocked();
                let _ = io.shutdown().await;
            }
            return Left::Closed;
        }
        // The next head: read ahead already, or the keep-alive wait.
        head_begun = false;
        kept = true;
        idle_due = Instant::now() + timeouts.keepalive;
        clock.set(idle_due);
    }
}

/// Reads until a whole head is buffered (or the connection is not this
/// path's, or ends). `begun`: a head is expected now (its timeout runs);
/// else the connection is idle and the keep-alive (`idle_due`) runs until
/// a byte comes. An idle connection first waits here, holding its run
/// and no buffer, until the keep-alive sweep's next tick ([`hot_wait`]):
/// a client that sends its next request by then is served without
/// parking; else it is parked ([`Next::Idle`]). Just `woke` from that, it
/// reads first (the wake may have been spurious, or the client's close:
/// with nothing to read it waits idle again). `kept`: a response went out
/// before on this connection; once the worker drains, the connection then
/// closes, a head begun or not (hyper's graceful shutdown closes a
/// kept-alive connection whose next request is not under way, hyper
/// conn.rs `disable_keep_alive`); the first head is read to its end (its
/// answer says `Connection: close`). `sniff`: a new connection whose
/// first bytes are told apart from HTTP/2's preface here, under the
/// `head` timeout and the drain (as conn.rs's sniff before it was); once
/// they are not a preface, the head timeout starts again from then.
#[allow(clippy::too_many_arguments)]
async fn next_head(
    io: &mut ClientIo,
    pending: &mut Pending,
    cx: &ConnCtx,
    drain: &Drain,
    timeouts: &ClientTimeouts,
    clock: &mut Clock,
    mut begun: bool,
    mut woke: bool,
    kept: bool,
    sniff: &mut bool,
    idle_due: Instant,
) -> Next {
    let mut restart_head = *sniff;
    loop {
        if kept && drain.is_draining() {
            return Next::Closed;
        }
        if !pending.is_empty() {
            let bytes = pending.bytes();
            let preface = *sniff && {
                let n = bytes.len().min(H2_PREFACE.len());
                if bytes[..n] != H2_PREFACE[..n] {
                    *sniff = false;
                    false
                } else if n == H2_PREFACE.len() {
                    return Next::H2;
                } else {
                    true // a part of the preface: more to read
                }
            };
            if !preface {
                match request::parse(bytes, io.head_size as usize) {
                    Parsed::Complete(head) => {
                        if let Some(why) = not_here(cx, &head) {
                            return Next::Hyper(why);
                        }
                        return Next::Head(head);
                    }
                    Parsed::Hyper(why) => return Next::Hyper(why),
                    Parsed::Partial => {}
                }
            }
            // A head begun, not whole: its timeout runs from now (its
            // first bytes were just read; on a new connection, from when
            // they were told from h2's preface). A whole one needs no clock.
            if !begun || (!*sniff && std::mem::take(&mut restart_head)) {
                begun = true;
                clock.set(Instant::now() + timeouts.head);
            }
        } else if !begun {
            // Idle: nothing held but the socket (and the run).
            pending.release();
            if drain.is_draining() {
                return Next::Closed;
            }
            if !woke && !io.stream.has_buffered() {
                // Since the answer went out: due already.
                let since = idle_due
                    .checked_sub(timeouts.keepalive)
                    .unwrap_or_else(Instant::now);
                if !hot_wait(&io.stream, drain, since).await {
                    return Next::Idle;
                }
            }
            woke = false;
        }
        // A kept connection waiting for the rest of a head that came in
        // pieces is the one read a drain must cut short (an idle one is
        // woken by the sweep, a whole head needs no wait), and so is a new
        // one not yet told from h2: only they wait on the drain too.
        let watch_drain = (kept && !pending.is_empty()) || *sniff;
        let idle = !begun && pending.is_empty();
        // The drain wakes the sweep's tickets (server/idle.rs wake_all):
        // a place there is the cheapest watch (no Notify future, no box).
        // Due past any deadline of this read's clock: it never fires.
        let mut draining: Option<super::idle::Ticket> = None;
        let never = idle_due.checked_add(timeouts.head).unwrap_or(idle_due);
        let Some(b) = pending.room() else {
            // A head larger than the buffer: hyper reads it (or answers 431).
            return Next::Hyper("a head larger than the direct path's buffer");
        };
        let stream = &mut io.stream;
        let read = std::future::poll_fn(|task| {
            if let Poll::Ready(r) = poll_read_into(stream, b, task) {
                return Poll::Ready(Some(r));
            }
            if idle {
                // Woken with nothing to read: back to the idle wait.
                return Poll::Ready(Some(Err(io::ErrorKind::WouldBlock.into())));
            }
            if clock.poll_expired(task) {
                return Poll::Ready(None);
            }
            if watch_drain {
                if drain.is_draining() {
                    return Poll::Ready(Some(Err(io::ErrorKind::Interrupted.into())));
                }
                let ticket = draining.get_or_insert_with(|| super::idle::Ticket::new(never));
                // Registers the task's waker with the sweep.
                let _ = ticket.poll_expired(task);
            }
            Poll::Pending
        })
        .await;
        match read {
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock && idle => {}
            Some(Ok(0)) | Some(Err(_)) => return Next::Closed,
            Some(Ok(_)) => {}
            None if *sniff => {
                tracing::debug!(peer = %cx.peer, "no request within {:?}; closed", timeouts.head);
                return Next::Closed;
            }
            None => {
                tracing::debug!(peer = %cx.peer, "no whole request head within {:?}; closed", timeouts.head);
                return Next::Closed;
            }
        }
    }
}

/// An idle connection that just answered waits here for its next request
/// until the keep-alive sweep's next tick (0 to [`super::idle::TICK`]):
/// true, the client sent (or closed); false, the tick came or the worker
/// drains. `since`: when it went idle (past). What it costs is a place
/// in the sweep, where parking would drop the run and box a new one at the
/// wake (HAProxy and nginx likewise keep a connection's state for a while
/// before they release its buffers: `tune.idle-pool`, `lingering`).
async fn hot_wait(stream: &Transport, drain: &Drain, since: Instant) -> bool {
    // Due already: the sweep's next tick ends the wait.
    let ticket = super::idle::Ticket::new(since);
    std::future::poll_fn(|task| {
        if drain.is_draining() {
            return Poll::Ready(false);
        }
        if stream.tcp().poll_read_ready(task).is_ready() {
            return Poll::Ready(true);
        }
        if ticket.poll_expired(task) {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
    .await
}

/// Why a whole head is hyper's after all: what this path does not do yet
/// (a body; HTTP/1.0, whose responses hyper writes in its own way), a
/// request `pocket explain` asked to trace, or a policy (maybe reloaded
/// since the last request) whose pools this path does not speak to.
fn not_here(cx: &ConnCtx, head: &RequestHead) -> Option<&'static str> {
    if !matches!(head.framing, Framing::Empty | Framing::Length(0)) {
        return Some("a request body");
    }
    if head.parts.version != http::Version::HTTP_11 {
        return Some("not HTTP/1.1");
    }
    let script = cx.worker.script();
    if !takes(&script) {
        return Some("the policy's pools are not all plain HTTP/1.1");
    }
    let explained = script
        .policy
        .admin
        .as_ref()
        .is_some_and(|a| !a.explain_from.is_empty())
        && head
            .parts
            .headers
            .contains_key(crate::explain::live::HEADER);
    if explained {
        return Some("an explained request");
    }
    None
}

/// The client connection during one exchange: writes go through
/// [`ClientIo`] (its `send` timeout), and while the server is awaited a
/// read watches for the client leaving, keeping what it sends ahead.
struct Side<'a> {
    io: &'a mut ClientIo,
    pending: &'a mut Pending,
}

impl ClientConn for Side<'_> {
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // As hyper's server: a request read ahead stops the watch (its
        // bytes wait for their turn).
        if !self.pending.is_empty() {
            return Poll::Pending;
        }
        let Some(b) = self.pending.room() else {
            return Poll::Pending;
        };
        match poll_read_into(&mut self.io.stream, b, cx) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }
}

impl AsyncWrite for Side<'_> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}
