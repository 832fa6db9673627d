//! One client connection, from the first byte to the close.
//!
//! HTTP/1 is served by hyper while requests flow. A keep-alive connection
//! that has been quiet for [`PARK_AFTER`] hands hyper's per-connection
//! state back (its 8 KiB read and 8 KiB write buffers, the dispatcher, about
//! 18 KiB in all) and waits holding only its socket, like HAProxy and nginx
//! do, until the client sends again (hyper takes over anew) or the
//! keep-alive timeout closes it. That is what lets 10,000 idle connections
//! fit in a few MiB. HTTP/2 with prior knowledge goes to hyper's h2,
//! which gets the same head and keep-alive timeouts (a GOAWAY ends an idle
//! connection) and a watch for frame floods the h2 crate lets through.
//!
//! On a TLS listener the handshake comes first (under the `head`
//! timeout, see [`super::tls`]), ALPN says h2 or HTTP/1.1, and all of the
//! above works the same over [`Transport`]'s TLS stream.
//!
//! Writes to the client that stay blocked longer than the listener's
//! `send` timeout end the connection, whatever the protocol. On h2, a
//! stream whose response has data ready that the client gives no window
//! for as long is reset (nginx applies `send_timeout` to such streams):
//! else a client could hold an origin connection per stream forever.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::h2_flood::FloodWatch;
use super::head_check::{self, HeadCheck};
use super::transport::Transport;
use crate::config::{ClientTimeouts, DEFAULT_HEAD_SIZE};
use crate::context::Drain;
use crate::context::Open;
use crate::proxy::body::ResponseBody;
use crate::proxy::upstream::READ_PIECE;
use crate::proxy::{self, ConnCtx};

/// How long a connection with nothing in flight keeps hyper's buffers
/// before it parks. Long enough that a busy keep-alive client never pays
/// for the round trip through parking; short enough that idle ones give
/// their memory back quickly.
pub const PARK_AFTER: Duration = Duration::from_millis(500);

/// How long an h2 client that was sent a GOAWAY for idleness has to
/// answer its PING before the connection is dropped (a client that never
/// answers would otherwise hold it open).
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP settings every connection of a worker shares (the header
/// timeout, which is per listener, is set on a copy per connection).
pub struct Http {
    h1: http1::Builder,
    h2: http2::Builder<LocalExec>,
}

/// The most hyper's HTTP/1 buffers for a client may hold, in bytes: its
/// read buffer (a request head, or a piece of a body) and the response
/// bytes it queues for a client that is slow to read (hyper's default is
/// ~400 KiB each). A listener whose `head_size` is larger gets that.
pub const H1_BUF: usize = 64 * 1024;

/// HTTP/2 streams a client may have open at once (HAProxy's
/// `tune.h2.max-concurrent-streams` default; nginx allows 128).
pub const H2_STREAMS: u32 = 100;

/// Response bytes h2 holds per stream beyond what the client's window lets
/// out (hyper's default is 400 KiB): a client that advertises a huge
/// window and then stops reading gets no more than this queued per stream,
/// and its streams' servers are paused (see [`Tracked`]).
pub const H2_SEND_BUF: usize = 16 * 1024;

/// The windows Pocket gives an HTTP/2 client for request bodies: what it
/// may send ahead of what the server has taken, per stream and in all
/// (hyper's default is 1 MiB each).
pub const H2_STREAM_WINDOW: u32 = 256 * 1024;
pub const H2_CONN_WINDOW: u32 = 512 * 1024;

impl Http {
    pub fn new() -> Http {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .keep_alive(true)
            .max_buf_size(H1_BUF);
        let mut h2 = http2::Builder::new(LocalExec);
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(H2_STREAMS)
            .max_send_buf_size(H2_SEND_BUF)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONN_WINDOW)
            .keep_alive_interval(None);
        Http { h1, h2 }
    }
}

/// Runs HTTP/2 stream tasks on this worker's thread: the service holds the
/// worker's Lua VM, which must never leave the thread. Each task is
/// [`Watched`], so that a stream stalled on the client's window can be
/// ended from outside.
#[derive(Clone, Copy)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(Watched {
            fut,
            watch: Rc::new(StreamWatch::default()),
        });
    }
}

thread_local! {
    /// The h2 stream task being polled: its response body ([`Tracked`])
    /// finds its watch here. None outside stream tasks (all of HTTP/1).
    static STREAM: RefCell<Option<Rc<StreamWatch>>> = const { RefCell::new(None) };
}

/// One h2 stream's response body, as the connection's tick sees it.
#[derive(Default)]
struct StreamWatch {
    /// Polls of the body so far (wrapping): a count, not a clock read per
    /// chunk.
    polls: Cell<u32>,
    /// The last poll gave hyper data, which it sends when the client's
    /// window allows; until then it does not poll again.
    waiting: Cell<bool>,
    /// The poll count the tick last saw, and since when (the first tick
    /// that saw it waiting).
    seen: Cell<(u32, Option<Instant>)>,
    /// Found stalled: the stream's task ends.
    expired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

pin_project_lite::pin_project! {
    /// An h2 stream's task, which ends early (dropping the stream: h2 sends
    /// RST_STREAM, and the response body with its origin connection goes)
    /// when its watch expires.
    struct Watched<F> {
        #[pin]
        fut: F,
        watch: Rc<StreamWatch>,
    }
}

/// Puts back the stream being polled before.
struct Restore(Option<Rc<StreamWatch>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let prev = self.0.take();
        STREAM.with(|s| *s.borrow_mut() = prev);
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // An h2 stream's poll is the worker's progress too (watchdog).
        super::watchdog::progress();
        let this = self.project();
        if this.watch.expired.get() {
            return Poll::Ready(());
        }
        {
            let mut waker = this.watch.waker.borrow_mut();
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        let _restore = Restore(STREAM.with(|s| s.replace(Some(this.watch.clone()))));
        this.fut.poll(cx).map(|_| ())
    }
}

/// Serves one accepted client connection until it closes, within the
/// listener's client timeouts (`cx.timeouts`): the connection's task.
///
/// What it holds for an idle keep-alive connection is [`Conn`] in its
/// [`State::Parked`]: the socket, its place in the keep-alive sweep, and
/// the context, about 100 bytes (a task of tokio's 256-byte class). The
/// handshake, the first request and each run of requests between two idle
/// waits run in a boxed future made for the run and dropped after it (one
/// allocation per wake; HAProxy and nginx likewise keep only the
/// connection and its timer entry while it is idle). A connection that
/// just answered waits for its next request inside its run until the
/// sweep's next tick ([`super::h1`]): a busy keep-alive client never pays
/// for the wake.
pub fn serve(stream: TcpStream, cx: Rc<ConnCtx>, http: Rc<Http>, listener: Listener) -> Conn {
    Conn {
        cx,
        http,
        _open: None,
        state: State::New(stream, listener),
    }
}

/// What a new connection takes from its listener's settings, read by the
/// accept loop as it accepts (once, not again at the first poll).
pub struct Listener {
    /// The listener's `head_size`, in bytes.
    pub head_size: u32,
    /// Its TLS; None: plain.
    pub tls: Option<Arc<crate::config::tls::ListenerTls>>,
}

impl Listener {
    /// The settings of `spec` (None: the listener left the policy: the
    /// defaults, plain).
    pub fn of(spec: Option<&crate::config::ListenerSpec>) -> Listener {
        spec.map_or(
            Listener {
                head_size: DEFAULT_HEAD_SIZE,
                tls: None,
            },
            |l| Listener {
                head_size: l.head_size,
                tls: l.tls.clone(),
            },
        )
    }
}

/// A client connection's task (see [`serve`]). A state machine of its
/// own rather than an async fn: rustc keeps an async fn's arguments and
/// every local live across an await in its state, which made each idle
/// connection's task 336 bytes (tokio's 512-byte class).
pub struct Conn {
    cx: Rc<ConnCtx>,
    http: Rc<Http>,
    /// Counted open in the worker's drain, from the first poll.
    _open: Option<Open>,
    state: State,
}

enum State {
    /// Accepted, not polled yet.
    New(TcpStream, Listener),
    /// The start (handshake, sniff, first requests) or a run of requests.
    Run(Pin<Box<dyn Future<Output = Option<Idle>>>>),
    /// Idle: waits for the client, the keep-alive's end or a drain.
    Parked(Parked),
    Done,
}

/// A parked connection: its place in the keep-alive sweep (first: it
/// stops watching the socket before the socket closes), its socket, and
/// its count in the parked metric.
struct Parked {
    ticket: super::idle::Ticket,
    socket: Socket,
    /// The listener's `head_size`, in bytes.
    head_size: u32,
    /// The keep-alive's end.
    due: Instant,
    /// The direct path parked it (else hyper did).
    direct: bool,
    _metric: crate::observe::metrics::Parked,
}

/// A parked connection's socket.
enum Socket {
    /// Registered with tokio, which wakes the task (TLS).
    Tokio(Transport),
    /// Plain TCP out of tokio's registry, watched by the keep-alive
    /// sweep's epoll (no `ScheduledIo`, 256 bytes, while parked).
    Swept(std::net::TcpStream),
}

impl Parked {
    /// Parks `idle`; None: its socket failed on the way (closed).
    fn new(idle: Idle, cx: &ConnCtx) -> Option<Parked> {
        let (socket, ticket) = match idle.stream {
            Transport::Plain(tcp) => {
                let std = match tcp.into_std() {
                    Ok(std) => std,
                    Err(e) => {
                        tracing::debug!(peer = %cx.peer, "client connection ended: {e}");
                        return None;
                    }
                };
                match super::idle::Ticket::watch(idle.due, std.as_raw_fd()) {
                    Some(ticket) => (Socket::Swept(std), ticket),
                    None => match TcpStream::from_std(std) {
                        Ok(tcp) => (
                            Socket::Tokio(Transport::Plain(tcp)),
                            super::idle::Ticket::new(idle.due),
                        ),
                        Err(e) => {
                            tracing::debug!(peer = %cx.peer, "client connection ended: {e}");
                            return None;
                        }
                    },
                }
            }
            tls => (Socket::Tokio(tls), super::idle::Ticket::new(idle.due)),
        };
        Some(Parked {
            ticket,
            socket,
            head_size: idle.head_size,
            due: idle.due,
            direct: idle.direct,
            _metric: crate::observe::metrics::Parked::enter(),
        })
    }

    /// The client sent (or closed): Ready(true); the keep-alive ended:
    /// Ready(false).
    fn poll_woken(&self, task: &mut Context<'_>) -> Poll<bool> {
        match &self.socket {
            Socket::Tokio(stream) => {
                if stream.tcp().poll_read_ready(task).is_ready() {
                    return Poll::Ready(true);
                }
                if self.ticket.poll_expired(task) {
                    return Poll::Ready(false);
                }
            }
            // The ticket fires for both; the clock tells which.
            Socket::Swept(_) => {
                if self.ticket.poll_expired(task) {
                    return Poll::Ready(Instant::now() < self.due);
                }
            }
        }
        Poll::Pending
    }

    /// The socket, back with tokio.
    fn into_stream(self) -> io::Result<(Transport, u32, Option<Instant>)> {
        let Parked {
            ticket,
            socket,
            head_size,
            due,
            direct,
            ..
        } = self;
        drop(ticket);
        let stream = match socket {
            Socket::Tokio(stream) => stream,
            Socket::Swept(std) => Transport::Plain(TcpStream::from_std(std)?),
        };
        Ok((stream, head_size, direct.then_some(due)))
    }
}

impl Future for Conn {
    type Output = ();

    fn poll(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::New(..) => {
                    let State::New(stream, listener) =
                        std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("matched above")
                    };
                    let Some(open) = this.cx.worker.drain.enter() else {
                        return Poll::Ready(());
                    };
                    this._open = Some(open);
                    this.state = State::Run(begin(stream, listener, &this.cx, &this.http));
                }
                State::Run(run) => {
                    let Poll::Ready(next) = run.as_mut().poll(task) else {
                        return Poll::Pending;
                    };
                    let Some(idle) = next else {
                        this.state = State::Done;
                        return Poll::Ready(());
                    };
                    if idle.due <= Instant::now() {
                        // The keep-alive ended while the run waited for the
                        // sweep's tick (a keep-alive shorter than it).
                        this.state = State::Done;
                        tracing::debug!(peer = %this.cx.peer, "keep-alive timeout ({:?}); closing", this.cx.timeouts.keepalive);
                        return Poll::Ready(());
                    }
                    if idle.direct {
                        // (hyper's own parking logs it as hyper lets go: serve_h1)
                        tracing::debug!(peer = %this.cx.peer, "client connection parked (idle)");
                    }
                    let Some(parked) = Parked::new(idle, &this.cx) else {
                        this.state = State::Done;
                        return Poll::Ready(());
                    };
                    this.state = State::Parked(parked);
                }
                State::Parked(p) => {
                    let drain = &this.cx.worker.drain;
                    // A drain wakes every parked connection (Drain::drain).
                    let woke = if drain.is_draining() {
                        false
                    } else {
                        match p.poll_woken(task) {
                            Poll::Ready(woke) => woke,
                            Poll::Pending => return Poll::Pending,
                        }
                    };
                    let State::Parked(p) = std::mem::replace(&mut this.state, State::Done) else {
                        unreachable!("matched above")
                    };
                    if !woke {
                        if !drain.is_draining() {
                            tracing::debug!(peer = %this.cx.peer, "keep-alive timeout ({:?}); closing", this.cx.timeouts.keepalive);
                        }
                        return Poll::Ready(());
                    }
                    let (stream, head_size, resume) = match p.into_stream() {
                        Ok(back) => back,
                        Err(e) => {
                            tracing::debug!(peer = %this.cx.peer, "client connection ended: {e}");
                            return Poll::Ready(());
                        }
                    };
                    let io = ClientIo::new(stream, head_size, &this.cx);
                    let (cx, http) = (this.cx.clone(), this.http.clone());
                    this.state = State::Run(Box::pin(run(io, cx, http, Begin::Resume(resume))));
                }
                State::Done => return Poll::Ready(()),
            }
        }
    }
}

/// A connection between two runs of requests: nothing in flight, nothing
/// read ahead, no buffer (the direct path's went back to the worker's
/// pool, hyper's were dropped as it parked), and no [`ClientIo`] either:
/// what it watches ([`Activity`], a send timer) is about a run, and is
/// made anew at the wake.
struct Idle {
    stream: Transport,
    /// The listener's `head_size`, in bytes.
    head_size: u32,
    /// The keep-alive's end.
    due: Instant,
    /// The direct path parked it (else hyper did).
    direct: bool,
}

impl Idle {
    /// `io` has nothing in flight and nothing read ahead.
    fn of(io: ClientIo, due: Instant, direct: bool) -> Idle {
        Idle {
            stream: io.stream,
            head_size: io.head_size,
            due,
            direct,
        }
    }
}

/// How a run of requests begins.
#[derive(Clone, Copy)]
enum Begin {
    /// A new connection whose first bytes may be HTTP/2's preface (plain
    /// TCP, or TLS whose client offered no ALPN): read, not peeked, and
    /// told apart from HTTP/1 before anything else.
    Sniff,
    /// A head is expected now (a TLS connection ALPN said is HTTP/1.1).
    Head,
    /// Woken from parked: `Some`, the direct path parked it and its
    /// keep-alive ends then unless a head begins (the wake may be a
    /// spurious one, or the client's close).
    Resume(Option<Instant>),
}

/// The first poll: a plain connection goes straight to its first run
/// (its sniff is the run's first read); TLS shakes hands first.
fn begin(
    stream: TcpStream,
    listener: Listener,
    cx: &Rc<ConnCtx>,
    http: &Rc<Http>,
) -> Pin<Box<dyn Future<Output = Option<Idle>>>> {
    // Per connection, as the timeouts are (once per accept, not per request).
    let Listener { head_size, tls } = listener;
    let (cx, http) = (cx.clone(), http.clone());
    match tls {
        None => {
            let io = ClientIo::new(Transport::Plain(stream), head_size, &cx);
            Box::pin(run(io, cx, http, Begin::Sniff))
        }
        Some(tls) => Box::pin(start_tls(stream, tls, head_size, cx, http)),
    }
}

/// A TLS connection from the accept to its first idle wait (None:
/// closed): the handshake, under the `head` timeout; the protocol comes
/// from ALPN, not from sniffing, unless the client offered none.
async fn start_tls(
    stream: TcpStream,
    tls: Arc<crate::config::tls::ListenerTls>,
    head_size: u32,
    cx: Rc<ConnCtx>,
    http: Rc<Http>,
) -> Option<Idle> {
    let head = cx.timeouts.head;
    let drain = &cx.worker.drain;
    // Boxed, with its timer: rustls' state is large; the runs that follow
    // should not be sized for it.
    let shaken = Box::pin(async {
        tokio::select! {
            biased;
            _ = drain.started() => None,
            r = tokio::time::timeout(head, super::tls::handshake(stream, &tls, &cx)) => Some(r),
        }
    })
    .await;
    let shaken = shaken?;
    let Ok(Some((stream, info))) = shaken else {
        if shaken.is_err() {
            super::tls::timed_out(&cx, head);
        }
        return None;
    };
    // No ALPN (a client with prior knowledge of h2 may send its preface
    // straight away): sniffed as on plain connections.
    let h2 = info.alpn.as_deref().map(|p| p == "h2");
    if !cx.set_tls(Arc::new(info)) {
        tracing::error!(peer = %cx.peer, "connection context's TLS set twice");
    }
    let io = ClientIo::new(Transport::Tls(Box::new(stream)), head_size, &cx);
    match h2 {
        // Boxed: an h2 connection is large and rare; h1 runs stay small.
        Some(true) => {
            let timeouts = *cx.timeouts;
            Box::pin(serve_h2(io, &cx, &http, drain, timeouts)).await;
            None
        }
        Some(false) => run(io, cx, http, Begin::Head).await,
        None => run(io, cx, http, Begin::Sniff).await,
    }
}

/// One run of requests, from a wake (or the start) to the next idle wait
/// (None: the connection closed).
async fn run(mut io: ClientIo, cx: Rc<ConnCtx>, http: Rc<Http>, begin: Begin) -> Option<Idle> {
    let timeouts = *cx.timeouts;
    let drain = &*cx.worker.drain;
    let (mut resume, mut sniff) = match begin {
        Begin::Sniff => (None, true),
        Begin::Head => (None, false),
        Begin::Resume(at) => (at, false),
    };
    // A new connection told HTTP/1 by ALPN: its first head is due `head`
    // after now (the direct path keeps that clock itself; hyper's would
    // start at the first byte).
    let mut fresh_due = matches!(begin, Begin::Head).then(|| Instant::now() + timeouts.head);
    loop {
        // A head begun elsewhere (the direct path, the sniff) must be whole
        // by then: hyper's own header timer would start afresh.
        let head_due;
        // Pocket's own path while the policy takes it (h1.rs); a request
        // it does not take comes back with the bytes read, for hyper.
        if super::h1::takes(&cx.worker.script()) {
            fresh_due = None;
            let first = super::h1::First {
                resume: resume.take(),
                sniff: std::mem::take(&mut sniff),
            };
            io = match super::h1::serve(io, &cx, drain, timeouts, first).await {
                super::h1::Left::Hyper(io, due) => {
                    head_due = due;
                    io
                }
                super::h1::Left::H2(io) => {
                    Box::pin(serve_h2(io, &cx, &http, drain, timeouts)).await;
                    return None;
                }
                super::h1::Left::Idle(io, due) => return Some(Idle::of(io, due, true)),
                super::h1::Left::Closed => return None,
            };
        } else if std::mem::take(&mut sniff) {
            // Boxed, once per connection: the sniff and its timer are not
            // kept in the run's state.
            let head = timeouts.head;
            head_due = Some(Instant::now() + head);
            let sniffed = Box::pin(async {
                tokio::select! {
                    biased;
                    _ = drain.started() => None,
                    r = tokio::time::timeout(head, sniff_hyper(io)) => Some(r),
                }
            })
            .await;
            io = match sniffed? {
                Ok(Ok(Some((io, false)))) => io,
                // Boxed: an h2 connection is large and rare.
                Ok(Ok(Some((io, true)))) => {
                    Box::pin(serve_h2(io, &cx, &http, drain, timeouts)).await;
                    return None;
                }
                Ok(Ok(None)) | Ok(Err(_)) => return None,
                Err(_) => {
                    tracing::debug!(peer = %cx.peer, "no request within {head:?}; closed");
                    return None;
                }
            };
        } else {
            head_due = fresh_due.take();
        }
        // Boxed for as long as it runs: hyper's futures and timers are
        // large, and the direct path's runs should not be sized for them.
        io = Box::pin(serve_h1(io, &cx, &http, drain, timeouts.head, head_due)).await?;
        // TLS parks too (hyper's buffers go; rustls' state stays), but
        // not while rustls holds decrypted bytes no one has read: the
        // socket may stay quiet though the next request is here.
        if !io.prefix.is_empty() || io.stream.has_buffered() {
            continue; // the next request has already begun
        }
        // hyper kept it PARK_AFTER already.
        let due = Instant::now() + timeouts.keepalive.saturating_sub(PARK_AFTER);
        return Some(Idle::of(io, due, false));
    }
}

/// Tells HTTP/2's preface from HTTP/1 on a new connection hyper is to
/// serve (the direct path tells them apart in its own first read,
/// [`super::h1`]). The first bytes are read, not peeked (one syscall, not
/// two), and kept as the connection's prefix; a preface arriving in
/// pieces is read until it is whole or is not one. `None`: closed before
/// a byte.
async fn sniff_hyper(mut io: ClientIo) -> io::Result<Option<(ClientIo, bool)>> {
    let mut got = crate::proxy::h1::buf::take();
    let decided = loop {
        let n =
            std::future::poll_fn(|task| super::h1::poll_read_into(&mut io.stream, &mut got, task))
                .await;
        match n {
            Ok(0) => break Ok(None),
            Ok(_) => {}
            Err(e) => break Err(e),
        }
        let n = got.len().min(H2_PREFACE.len());
        if got[..n] != H2_PREFACE[..n] {
            break Ok(Some(false));
        }
        if n == H2_PREFACE.len() {
            break Ok(Some(true));
        }
    };
    io.prefix = Bytes::copy_from_slice(&got);
    got.clear();
    crate::proxy::h1::buf::give(got);
    Ok(decided?.map(|h2| (io, h2)))
}

/// Why hyper was asked to let go of the connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    Park,
    Drain,
}

/// Serves HTTP/1 requests until the connection closes (`None`) or has been
/// quiet long enough to park (the socket back, with any bytes hyper had
/// read ahead as its prefix).
async fn serve_h1(
    mut io: ClientIo,
    cx: &Rc<ConnCtx>,
    http: &Http,
    drain: &Drain,
    head: Duration,
    mut head_due: Option<Instant>,
) -> Option<ClientIo> {
    let activity = io.activity.get().clone();
    activity.quiet_since.set(Instant::now());
    if head_due.is_some() {
        // Set again by the first request hyper hands on (Busy::new): until
        // then the begun head is bound by `head_due`. (`served` says
        // nothing else on an HTTP/1 connection.)
        activity.served.set(false);
    }
    activity.heads.set(HeadCheck::with_limit(io.head_size));
    // The listener's header timeout and head size on a copy of the
    // worker's settings: a few words and a reference count, once per wake,
    // not per request. hyper refuses a head over the size too (431) where
    // the check cannot: one queued behind another, or after a body the
    // check did not follow.
    let mut h1 = http.h1.clone();
    h1.header_read_timeout(head)
        .max_header_size(io.head_size as usize)
        .max_buf_size(H1_BUF.max(io.head_size as usize));
    // Boxed: while parked, the connection's task holds none of hyper's state.
    let mut conn =
        Box::new(h1.serve_connection(TokioIo::new(io), service(cx.clone(), activity.clone())));
    let draining = drain.started();
    tokio::pin!(draining);
    let first_tick = Instant::now() + PARK_AFTER;
    let tick = tokio::time::sleep_until(head_due.map_or(first_tick, |d| d.min(first_tick)));
    tokio::pin!(tick);
    let mut ending = None;
    let mut listening = false;
    let done = std::future::poll_fn(|task| {
        // Polled once to leave the task's waker with the drain; after that
        // only when draining has begun (a flag, cheaper than a poll).
        let check = !listening || drain.is_draining();
        listening = true;
        if ending.is_none() && check && draining.as_mut().poll(task).is_ready() {
            // Idle: closes now; busy: closes after the current response.
            Pin::new(&mut *conn).graceful_shutdown();
            ending = Some(Ending::Drain);
        }
        loop {
            if let Poll::Ready(r) = conn.poll_without_shutdown(task) {
                return Poll::Ready(r);
            }
            if ending.is_some() {
                return Poll::Pending;
            }
            // The tick wakes us now and then to see if the connection has
            // gone quiet; nothing happens per request.
            loop {
                if tick.as_mut().poll(task).is_pending() {
                    return Poll::Pending;
                }
                let now = Instant::now();
                if let Some(due) = head_due {
                    if activity.served.get() {
                        head_due = None;
                    } else if due <= now {
                        // The head begun before hyper had it is still not
                        // whole: closed, as the direct path closes it.
                        tracing::debug!(peer = %cx.peer, "no whole request head within {head:?}; closed");
                        return Poll::Ready(Ok(()));
                    }
                }
                let at = match activity.quiet_until() {
                    Some(at) if at <= now => break,
                    Some(at) => at,
                    None => now + PARK_AFTER,
                };
                tick.as_mut().reset(head_due.map_or(at, |d| d.min(at)));
            }
            // Idle hyper closes at once and gives the socket back.
            Pin::new(&mut *conn).graceful_shutdown();
            ending = Some(Ending::Park);
        }
    })
    .await;
    // hyper takes the head check's read error on an idle connection for
    // an end of stream (Ok): what the check answered is asked either way.
    let refused = match &done {
        Ok(()) => Some(activity.refused.get()).filter(|&s| s != 0),
        Err(e) => refused_status(e, activity.refused.get()),
    };
    if let Some(status) = refused {
        proxy::bad_request_line(cx, status);
    }
    if let Err(e) = done {
        tracing::debug!(peer = %cx.peer, "client connection ended: {e}");
        return None;
    }
    let parts = conn.into_parts();
    let mut io = parts.io.into_inner();
    let tunnel = cx.take_tunnel();
    if let Some(tunnel) = tunnel {
        // The 101 is out: the socket is the tunnel's (proxy/tunnel.rs),
        // with what hyper read past the request, then any prefix left.
        let mut early = parts.read_buf.to_vec();
        early.extend_from_slice(&io.prefix);
        Box::pin(proxy::tunnel::run(tunnel, io.stream, Bytes::from(early))).await;
        return None;
    }
    if ending == Some(Ending::Park) {
        // A copy: hyper's read-ahead is a view into its 8 KiB buffer,
        // which would stay alive with it.
        io.prefix = Bytes::copy_from_slice(&parts.read_buf);
        tracing::debug!(peer = %cx.peer, "client connection parked (idle)");
        return Some(io);
    }
    // hyper is done with it (the client closed, `Connection: close`, or
    // draining): end our side as hyper would have. Through ClientIo, so the
    // send timeout bounds it: on TLS this writes close_notify, which waits
    // for room a client that stopped reading never makes. The timer
    // starts afresh: hyper's last flush went out whole.
    io.activity.unblocked();
    let _ = io.shutdown().await;
    None
}

/// Serves HTTP/2 until the connection closes. Like HTTP/1, a connection
/// that opens no stream within the `head` timeout, or has had none open
/// for `keepalive`, is closed, here with a GOAWAY (hyper's graceful
/// shutdown); one timer per connection, checked against [`Activity`].
async fn serve_h2(
    mut io: ClientIo,
    cx: &Rc<ConnCtx>,
    http: &Http,
    drain: &Drain,
    timeouts: ClientTimeouts,
) {
    let activity = io.activity.get().clone();
    activity.heads.set(HeadCheck::off());
    io.flood = Some(Box::new(FloodWatch::new()));
    let mut h2 = http.h2.clone();
    h2.max_header_list_size(io.head_size);
    let conn = h2.serve_connection(TokioIo::new(io), service(cx.clone(), activity.clone()));
    tokio::pin!(conn);
    let draining = drain.started();
    tokio::pin!(draining);
    let mut drained = false;
    // The timer never sleeps past a deadline: a request may come at any
    // time and move it to `keepalive` after its end, so it wakes at least
    // once per `keepalive` until the first request (from when h2 began,
    // its preface read within the `head` timeout: the activity's
    // quiet_since, made then); and at least every `send / 2`, so that a
    // stream stalled on the client's window is seen within two looks past
    // `send` however it began.
    let look = timeouts.head.min(timeouts.keepalive).min(timeouts.send / 2);
    let tick = tokio::time::sleep_until(activity.quiet_since.get() + look);
    tokio::pin!(tick);
    let mut goaway_at: Option<Instant> = None;
    let result = std::future::poll_fn(|task| {
        if !drained && draining.as_mut().poll(task).is_ready() {
            // GOAWAY: streams in flight finish, no new ones.
            conn.as_mut().graceful_shutdown();
            drained = true;
        }
        loop {
            if let Poll::Ready(r) = conn.as_mut().poll(task) {
                return Poll::Ready(r);
            }
            if tick.as_mut().poll(task).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let Some(at) = activity.h2_idle_until(timeouts) else {
                let reset = activity.reset_stalled(now, timeouts.send);
                if reset > 0 {
                    tracing::info!(peer = %cx.peer, "send timeout ({:?}): h2 client gave no window for {reset} stream(s); reset", timeouts.send);
                }
                // Streams open: look again in a while (the deadline, once
                // they are done, is at least this far off).
                tick.as_mut().reset(now + look);
                continue;
            };
            if let Some(sent) = goaway_at {
                if now >= sent + GOAWAY_GRACE && now >= at {
                    tracing::debug!(peer = %cx.peer, "h2 client did not close after GOAWAY; dropped");
                    return Poll::Ready(Ok(()));
                }
                tick.as_mut().reset(at.max(sent + GOAWAY_GRACE));
                continue;
            }
            if at > now {
                tick.as_mut().reset(at.min(now + look));
                continue;
            }
            if activity.served.get() {
                tracing::debug!(peer = %cx.peer, "h2 keep-alive timeout ({:?}); GOAWAY", timeouts.keepalive);
            } else {
                tracing::debug!(peer = %cx.peer, "no h2 request within {:?}; GOAWAY", timeouts.head);
            }
            conn.as_mut().graceful_shutdown();
            goaway_at = Some(now);
            tick.as_mut().reset(now + GOAWAY_GRACE);
        }
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(peer = %cx.peer, "client connection ended: {e}");
    }
}

/// The status a client was answered with when its connection ended on
/// `e` before a request existed: the head check's own (`checked`, 0 if
/// none), or hyper's automatic answer to a head it cannot parse (400;
/// 414 for a URI too long, 431 for a head too large: hyper's `on_error`).
/// `None`: nothing was answered (the client left, a timeout, ...).
fn refused_status(e: &hyper::Error, checked: u16) -> Option<u16> {
    if checked != 0 {
        return Some(checked);
    }
    if !e.is_parse() || e.is_parse_version_h2() {
        return None;
    }
    if e.is_parse_too_large() {
        // hyper says "URI too long" for its 414.
        return Some(if e.to_string().contains("URI") {
            414
        } else {
            431
        });
    }
    Some(400)
}

/// The 400 for a pipelined head with a bare LF, as hyper sends it; the
/// connection closes after it.
fn bad_head_response() -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(head_check::BAD_LF));
    *resp.status_mut() = http::StatusCode::BAD_REQUEST;
    let h = resp.headers_mut();
    // As Pocket's other answers (proxy/local.rs), less the request id.
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<Response<Tracked<ResponseBody>>, Infallible>>>>;

/// The request path (proxy::handle), with each request counted busy until
/// its response body is done. Boxed: hyper wants an `Unpin` future to give
/// the socket back, and a parked connection should not keep its space.
/// Each request's record is opened in this call, before hyper polls the
/// future (it may drop it unpolled: an HTTP/1 client's end of stream read
/// right after its request ends the connection at once), so every request
/// hyper hands over has its access-log line and its count.
fn service(
    cx: Rc<ConnCtx>,
    activity: Rc<Activity>,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = Response<Tracked<ResponseBody>>,
    Error = Infallible,
    Future = ServiceFuture,
> {
    service_fn(move |req: http::Request<Incoming>| {
        let mut heads = activity.heads.get();
        // The check skipped this request's body as it read: it goes on
        // with the heads after it (and stops if hyper saw other framing).
        let verdict = heads.claim(!req.body().is_end_stream());
        activity.heads.set(heads);
        if verdict.is_err() {
            // A head read ahead (pipelined) had a bare LF: refused here,
            // before the proxy, and the connection closes after the answer.
            tracing::debug!(peer = %cx.peer, "request head with a bare LF; 400");
            // Its access log line: refused by Pocket, in the request phase.
            let (head, _) = req.into_parts();
            let script = cx.worker.script();
            let mut open = proxy::open_exchange(&cx, &script, cx.worker.next_request_id(), &head);
            open.set(b'P', b'R');
            let resp = proxy::with_record(bad_head_response(), open, false)
                .map(|body| Tracked::new(body, Busy::new(activity.clone())));
            return Box::pin(std::future::ready(Ok(resp))) as ServiceFuture;
        }
        Box::pin(Serving {
            handle: proxy::handle(cx.clone(), req),
            busy: Some(Busy::new(activity.clone())),
        }) as ServiceFuture
    })
}

pin_project_lite::pin_project! {
    /// A request being handled; its busy mark moves into the response body.
    /// (A struct rather than an async block: the request's future, a few
    /// KiB, is then copied once into its box rather than twice.)
    struct Serving<F> {
        #[pin]
        handle: F,
        busy: Option<Busy>,
    }
}

impl<F> Future for Serving<F>
where
    F: Future<Output = Result<Response<ResponseBody>, Infallible>>,
{
    type Output = Result<Response<Tracked<ResponseBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(resp)) = this.handle.poll(cx) else {
            return Poll::Pending;
        };
        let Some(busy) = this.busy.take() else {
            // Polled after it was ready: hyper does not.
            return Poll::Pending;
        };
        Poll::Ready(Ok(resp.map(|body| Tracked::new(body, busy))))
    }
}

/// What a connection has been doing, for the decision to park it.
pub(super) struct Activity {
    /// Requests whose responses are not finished.
    busy: std::cell::Cell<u32>,
    /// When the last response finished (or serving began).
    quiet_since: std::cell::Cell<Instant>,
    /// The last write to the client could not complete: hyper still has
    /// bytes to flush.
    pub(super) write_blocked: std::cell::Cell<bool>,
    /// Response bodies that wait for the client to read what is queued
    /// (see [`Tracked`]): woken when a write goes out again.
    write_waiters: RefCell<Vec<Waker>>,
    /// The heads being read: checked for bare LF, each verdict kept until
    /// hyper hands its request on; a head begun makes the connection not
    /// idle (hyper's header timeout watches it; parking would restart that).
    heads: std::cell::Cell<HeadCheck>,
    /// A request has been seen (h2: the head timeout is over).
    served: std::cell::Cell<bool>,
    /// h2: streams open by the frames on the wire (a stream whose body
    /// hyper has handed over may still be sending what h2 buffered).
    h2_open: std::cell::Cell<usize>,
    /// h2: the response bodies being sent, for the stall check.
    streams: RefCell<Vec<Rc<StreamWatch>>>,
    /// The status the head check answered a bad or oversized head with
    /// (0: none), for its access-log line.
    refused: std::cell::Cell<u16>,
    /// A write was blocked past the `send` timeout: the connection ends,
    /// and the bodies still being sent end as a client timeout (`cD`).
    send_timed_out: std::cell::Cell<bool>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            busy: Default::default(),
            quiet_since: std::cell::Cell::new(Instant::now()),
            write_blocked: Default::default(),
            write_waiters: Default::default(),
            refused: Default::default(),
            heads: std::cell::Cell::new(HeadCheck::new()),
            served: Default::default(),
            h2_open: Default::default(),
            send_timed_out: Default::default(),
            streams: Default::default(),
        }
    }

    /// Ends the h2 streams whose response has waited with data ready for
    /// the client's window for `send` or longer (seen by two ticks at
    /// least `send` apart with no poll between): how many.
    fn reset_stalled(&self, now: Instant, send: Duration) -> usize {
        let mut reset = 0;
        self.streams.borrow_mut().retain(|w| {
            if Rc::strong_count(w) == 1 {
                return false; // the stream is done
            }
            let polls = w.polls.get();
            match w.seen.get() {
                _ if !w.waiting.get() => w.seen.set((polls, None)),
                (seen, Some(since)) if seen == polls => {
                    if now.saturating_duration_since(since) >= send {
                        w.expired.set(true);
                        if let Some(waker) = w.waker.borrow_mut().take() {
                            waker.wake();
                        }
                        reset += 1;
                        return false;
                    }
                }
                _ => w.seen.set((polls, Some(now))),
            }
            true
        });
        reset
    }

    /// When an h2 connection is to be closed if nothing happens before:
    /// `head` after the accept until a first request, then `keepalive`
    /// after the last stream is done. `None`: streams are open.
    fn h2_idle_until(&self, t: ClientTimeouts) -> Option<Instant> {
        if self.busy.get() > 0 || self.h2_open.get() > 0 || self.write_blocked.get() {
            return None;
        }
        let after = if self.served.get() {
            t.keepalive
        } else {
            t.head
        };
        Some(self.quiet_since.get() + after)
    }

    /// When the connection may park, if nothing happens before then.
    fn quiet_until(&self) -> Option<Instant> {
        if self.busy.get() > 0 || self.write_blocked.get() || self.heads.get().started() {
            return None;
        }
        Some(self.quiet_since.get() + PARK_AFTER)
    }
}

/// One request in flight on the connection.
/// A run's [`Activity`], made at its first use: hyper's paths make it
/// as they begin; the direct path needs one only when a write to the
/// client blocks (its send timeout), so most of its runs make none (an
/// allocation and a clock read less per connection).
#[derive(Default)]
pub(super) struct Lazy(Option<Rc<Activity>>);

impl Lazy {
    /// The activity, made now if it was not yet.
    #[inline]
    pub(super) fn get(&mut self) -> &Rc<Activity> {
        self.0.get_or_insert_with(|| Rc::new(Activity::new()))
    }

    /// The activity if it was made.
    #[inline]
    fn made(&self) -> Option<&Rc<Activity>> {
        self.0.as_ref()
    }

    /// A blockage is over (or was given up on): the next blocked write
    /// starts the send timer afresh. Nothing to do when none was made.
    #[inline]
    pub(super) fn unblocked(&self) {
        if let Some(a) = &self.0 {
            a.write_blocked.set(false);
        }
    }
}

struct Busy(Rc<Activity>);

impl Busy {
    fn new(activity: Rc<Activity>) -> Busy {
        activity.busy.set(activity.busy.get() + 1);
        activity.served.set(true);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.busy.set(a.busy.get() - 1);
        a.quiet_since.set(Instant::now());
    }
}

/// A response body that keeps its request counted busy until hyper has
/// taken all of it. On h2 it also notes, for the stall check, whether
/// hyper holds data of it that waits for the client's window.
///
/// While a write to the client is blocked (it does not read what is
/// queued), the body is not polled for more: its server's connection
/// stops being read (hyper's client reads a response only as its body is
/// taken) and TCP holds the server back. So a client that stops reading
/// costs what was queued when it stopped, at most a few of the server's
/// read pieces ([`crate::proxy::upstream::READ_PIECE`]) on HTTP/1 and per
/// h2 connection, not the whole response.
pub struct Tracked<B: SendTimeout> {
    body: B,
    _busy: Busy,
    watch: Option<Rc<StreamWatch>>,
    /// h2: the rest of a data frame handed over in pieces (see
    /// [`H2_PIECE`]).
    rest: Bytes,
}

/// On h2, response data is handed to hyper at most this much at a time.
/// hyper polls the body again as soon as the client's window has room past
/// what h2 holds, so a poll means the client opened about this much window
/// more, and the stall check (no poll for `send`) holds only a stream whose
/// client opened less than 4 KiB of window for it in that time (68 bytes/s
/// at the 60 s default): a slow but steady reader is never taken for a
/// stalled one. Whole 64 KiB chunks would need a client to open 64 KiB per
/// `send`. The cost: DATA frames of 4 KiB (9 bytes of frame head each).
const H2_PIECE: usize = 4 * 1024;

/// A response body told that the client's send timeout ended it (the
/// access log's `cD`, HAProxy's client-side timeout in the data phase).
pub trait SendTimeout {
    fn send_timed_out(&mut self);
}

impl SendTimeout for ResponseBody {
    fn send_timed_out(&mut self) {
        self.client_timed_out();
    }
}

impl<B: SendTimeout> Drop for Tracked<B> {
    fn drop(&mut self) {
        let stalled = self.watch.as_ref().is_some_and(|w| w.expired.get());
        if stalled || self._busy.0.send_timed_out.get() {
            self.body.send_timed_out();
        }
    }
}

impl<B: SendTimeout> Tracked<B> {
    fn new(body: B, busy: Busy) -> Tracked<B> {
        let watch = STREAM.with(|s| s.borrow().clone());
        if let Some(w) = &watch {
            let mut streams = busy.0.streams.borrow_mut();
            // Done streams go before the list grows (the tick may be far
            // off on a busy connection): it stays about as long as the
            // streams open at once.
            if streams.len() == streams.capacity() {
                streams.retain(|w| Rc::strong_count(w) > 1);
            }
            streams.push(w.clone());
        }
        Tracked {
            body,
            _busy: busy,
            watch,
            rest: Bytes::new(),
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin + SendTimeout> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if this.rest.is_empty() && this._busy.0.write_blocked.get() {
            // Held until the client reads (see above).
            let mut waiters = this._busy.0.write_waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            if let Some(w) = &this.watch {
                // Not waiting for the client's window: for its socket,
                // which the send timeout watches.
                w.waiting.set(false);
            }
            return Poll::Pending;
        }
        let Some(w) = &this.watch else {
            // HTTP/1: straight through.
            return Pin::new(&mut this.body).poll_frame(cx);
        };
        let r = if !this.rest.is_empty() {
            let n = this.rest.len().min(H2_PIECE);
            Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(n)))))
        } else {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) if data.len() > H2_PIECE => {
                        this.rest = data.split_off(H2_PIECE);
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    Err(trailers) => Poll::Ready(Some(Ok(trailers))),
                },
                other => other,
            }
        };
        w.polls.set(w.polls.get().wrapping_add(1));
        w.waiting.set(matches!(r, Poll::Ready(Some(Ok(_)))));
        r
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.body.size_hint();
        if !self.rest.is_empty() {
            let n = self.rest.len() as u64;
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + n);
            }
            hint.set_lower(hint.lower() + n);
        }
        hint
    }
}

/// The client socket as hyper sees it: bytes read ahead by an earlier
/// hyper come first, request heads are checked as they are read, and
/// writes are watched (a connection with unflushed bytes is not idle; one
/// blocked longer than the `send` timeout ends). On h2, frames are
/// counted for the flood rule.
pub(super) struct ClientIo {
    pub(super) stream: Transport,
    /// The listener's `head_size`, in bytes.
    pub(super) head_size: u32,
    pub(super) prefix: Bytes,
    /// Made at its first use ([`Lazy`]).
    pub(super) activity: Lazy,
    pub(super) peer: SocketAddr,
    /// The listener's send timeout.
    pub(super) send: Duration,
    /// Made the first time a write blocks, then reused: a connection
    /// whose writes never block has no timer.
    pub(super) send_timer: Option<Pin<Box<Sleep>>>,
    /// h2 only: the frame counts of the flood rule.
    pub(super) flood: Option<Box<FloodWatch>>,
    /// Ended for a flood: nothing more is written.
    pub(super) ended: bool,
}

impl ClientIo {
    /// The connection's socket at the start of a run of requests.
    fn new(stream: Transport, head_size: u32, cx: &ConnCtx) -> ClientIo {
        ClientIo {
            head_size,
            stream,
            prefix: Bytes::new(),
            activity: Lazy::default(),
            peer: cx.peer,
            send: cx.timeouts.send,
            send_timer: None,
            flood: None,
            ended: false,
        }
    }

    /// Notes how a write went: progress clears the send timer; a blocked
    /// write arms it (once per blockage), and one blocked for longer than
    /// `send` fails, which makes hyper drop the connection.
    #[inline]
    fn wrote<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        // Blocked already: the timer runs for this blockage (the
        // connection's write_blocked is that state, kept once).
        let was_blocked = match self.activity.made() {
            Some(a) => a.write_blocked.replace(r.is_pending()),
            // No activity yet: nothing was blocked, and a write that
            // goes out whole needs none.
            None if !r.is_pending() => false,
            None => self.activity.get().write_blocked.replace(true),
        };
        if !r.is_pending() {
            if was_blocked {
                // The client reads again: the paused bodies go on.
                for w in self.activity.get().write_waiters.borrow_mut().drain(..) {
                    w.wake();
                }
            }
            return r;
        }
        let timer = match &mut self.send_timer {
            Some(t) => {
                if !was_blocked {
                    t.as_mut().reset(Instant::now() + self.send);
                }
                t
            }
            None => self
                .send_timer
                .insert(Box::pin(tokio::time::sleep(self.send))),
        };
        if timer.as_mut().poll(cx).is_ready() {
            self.activity.get().send_timed_out.set(true);
            tracing::info!(peer = %self.peer, "send timeout ({:?}): the client stopped reading, or reads too slowly for the kernel to take more; closing", self.send);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "send timeout: the client stopped reading",
            )));
        }
        Poll::Pending
    }

    /// Counts the DATA frames of an h2 write that went out.
    #[inline]
    fn count_written(&mut self, bufs: &[io::IoSlice<'_>], mut n: usize) {
        let Some(flood) = &mut self.flood else { return };
        for b in bufs {
            if n == 0 {
                break;
            }
            let take = n.min(b.len());
            flood.wrote(&b[..take]);
            n -= take;
        }
        let open = flood.open_streams();
        let activity = self.activity.get();
        if open == 0 && activity.h2_open.get() > 0 {
            // The last stream's end went out: the keep-alive counts from now.
            activity.quiet_since.set(Instant::now());
        }
        activity.h2_open.set(open);
    }

    /// An h2 client went over the flood rule: a GOAWAY
    /// (ENHANCE_YOUR_CALM) if hyper is between frames, then the end.
    fn flooded(&mut self, what: super::h2_flood::Flood) -> io::Error {
        tracing::info!(peer = %self.peer, "h2 {what}; connection closed");
        if let Some(goaway) = self.flood.as_ref().and_then(|f| f.goaway()) {
            // Best effort: a short frame on a socket about to close.
            let _ = self.stream.try_write(&goaway);
        }
        // Nothing of hyper's may follow the GOAWAY (or a cut frame).
        self.ended = true;
        io::Error::new(io::ErrorKind::InvalidData, what.to_string())
    }
}

impl AsyncRead for ClientIo {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = if this.prefix.is_empty() {
            if this.flood.is_none()
                && this.activity.get().busy.get() > 0
                && buf.remaining() > READ_PIECE
            {
                // HTTP/1 with a request in flight: its body, read a piece
                // at a time as a server's is (proxy/upstream.rs), so that
                // an upload to a server that does not take it holds a few
                // small pieces, not hyper's 64 KiB buffers.
                this.stream.read_piece(cx, buf).map_ok(|_| ())
            } else {
                Pin::new(&mut this.stream).poll_read(cx, buf)
            }
        } else {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            Poll::Ready(Ok(()))
        };
        if buf.filled().len() == before {
            return r;
        }
        if let Some(flood) = &mut this.flood {
            if let Err(what) = flood.read(&buf.filled()[before..]) {
                return Poll::Ready(Err(this.flooded(what)));
            }
            this.activity.get().h2_open.set(flood.open_streams());
            return r;
        }
        let mut heads = this.activity.get().heads.get();
        let idle = this.activity.get().busy.get() == 0;
        // While a request is in flight, bytes are looked at only while the
        // check follows the stream's framing: otherwise they may be body,
        // which must not count as a head begun once the request is done.
        if !heads.active && !idle {
            return r;
        }
        let checked = heads.feed(&buf.filled()[before..]);
        this.activity.get().heads.set(heads);
        if !idle || this.activity.get().write_blocked.get() {
            return r;
        }
        // The next head, read while nothing is in flight, is bad or too
        // large: answer as nginx and HAProxy do, then end the connection
        // (best effort: the answer is small and the socket idle). A bad
        // head further on waits for its turn (see `service`).
        if checked.is_err() {
            this.activity.get().refused.set(400);
            let _ = this.stream.try_write(&head_check::bad_request());
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a line of the request head ends in LF, not CRLF",
            )));
        }
        if let Some(what) = heads.oversized() {
            tracing::info!(peer = %this.peer, "request head over {} bytes ({what:?}); refused", this.head_size);
            this.activity.get().refused.set(match what {
                head_check::Oversized::RequestLine => 414,
                head_check::Oversized::Head => 431,
            });
            let _ = this
                .stream
                .try_write(&head_check::too_large(what, this.head_size));
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the request head is over the listener's head_size",
            )));
        }
        r
    }
}

impl AsyncWrite for ClientIo {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.count_written(&[io::IoSlice::new(buf)], n);
        }
        this.wrote(cx, r)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.count_written(bufs, n);
        }
        this.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_flush(cx);
        // A flush that is done wrote nothing: only bytes going out end a
        // blockage (else a flush between two blocked writes would restart
        // the send timer).
        if r.is_pending() {
            return this.wrote(cx, r);
        }
        r
    }

    /// Under the send timeout like a write: on TLS, shutting down writes
    /// close_notify (and any TLS bytes still buffered), which a client that
    /// stopped reading would hold up forever.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.wrote(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;

    /// What an idle connection holds (see [`serve`]): its task (tokio's
    /// header and trailer, about 100 bytes, around [`Conn`] and the
    /// connection slot) stays in jemalloc's 256-byte class, and its
    /// context, with the `Rc`'s two counts, in the 128-byte one. These
    /// are what keep 10,000 idle connections under 20 MiB.
    #[test]
    fn an_idle_connection_is_small() {
        let task = size_of::<Conn>() + size_of::<Option<super::super::maxconn::Slot>>();
        assert!(task <= 128, "the connection's task future is {task} bytes");
        let cx = size_of::<ConnCtx>() + 16;
        assert!(cx <= 128, "the connection's context is {cx} bytes");
    }
}
