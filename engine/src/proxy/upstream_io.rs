//! The server socket as hyper's client sees it. Each response head is
//! looked at before hyper parses it, as request heads are
//! (server/head_check.rs): httparse accepts a bare LF as a line end, and a
//! response whose lines end so is malformed by RFC 9112 §2.2 for a proxy
//! that holds requests to CRLF. Such a response is a 502, never relayed.
//!
//! The request path arms the check as it sends each request (a response
//! head can only follow a request); the check follows the head to its
//! empty line, again after a 1xx interim head, and never looks at a body.
//!
//! It also counts the interim heads: a server that answers with an endless
//! run of `100 Continue` would otherwise keep hyper parsing and dropping
//! them for as long as bytes come (never waiting, so never yielding the
//! worker). Past [`MAX_INTERIM`] the read fails and the request is a 502,
//! as HAProxy and nginx treat such a flood as a bad response.
//!
//! And it tells whether any byte of the request being sent has been
//! written: until one is, the server cannot have read any of it, so the
//! request may go again on another connection whatever its method (see
//! [`Watch::unwritten`]).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::upstream::READ_PIECE;

/// The most interim (1xx other than 101) responses accepted before a
/// final one: 16. RFC 9110 §15.2 sets no limit; real servers send one
/// `100 Continue` or a `103 Early Hints` or two.
pub const MAX_INTERIM: u8 = 16;

/// Where the connection is in reading a response head.
#[derive(Clone, Copy, Default)]
pub struct HeadScan {
    /// A head is expected or being read.
    armed: bool,
    /// Bytes of this head so far.
    pos: usize,
    /// Bytes of the current line so far, its CR included.
    line: usize,
    prev: u8,
    /// The status code's three digits, as they arrive.
    status: [u8; 3],
    /// A byte of the answer has come since the request was sent: a
    /// request that fails after this was answered, however badly, and is
    /// never replayed.
    answered: bool,
    /// The answer's head had a bare LF (the error the read returned).
    bare_lf: bool,
    /// Interim heads of this answer so far.
    interim: u8,
    /// The answer had more than [`MAX_INTERIM`] interim heads (the error
    /// the read returned).
    too_many_interim: bool,
}

/// Shared by the socket wrapper and the request path that arms it.
pub type HeadWatch = Rc<Watch>;

/// What the socket wrapper tells the request path: where the response
/// head is, and whether the server takes what is written to it.
#[derive(Default)]
pub struct Watch {
    head: Cell<HeadScan>,
    /// The last write to the server could not complete: it does not read.
    write_blocked: Cell<bool>,
    /// The request body that waits for the server to take what is queued
    /// (one request at a time on a connection).
    waiter: Cell<Option<Waker>>,
    /// The TCP socket's descriptor while the connection's socket lives
    /// (cleared as it is dropped): for [`Watch::closed_while_idle`].
    fd: Cell<Option<RawFd>>,
    /// Plain TCP: every byte hyper writes goes to the socket as it is, so
    /// a write that fails wrote nothing. (Under TLS a failed write may
    /// have sent records of it: never counted as unwritten.)
    plain: bool,
    /// No byte of the request being sent has been written yet
    /// ([`Watch::start_request`] sets it on a plain connection).
    unwritten: Cell<bool>,
    /// While `unwritten`: the request body's frames handed to hyper so
    /// far, and the client's body itself once hyper drops it, to be sent
    /// again on another connection.
    kept: RefCell<Vec<Frame<Bytes>>>,
    rest: RefCell<Option<Incoming>>,
}

impl Watch {
    pub fn get(&self) -> HeadScan {
        self.head.get()
    }

    pub fn set(&self, scan: HeadScan) {
        self.head.set(scan)
    }

    /// The server does not take what is queued for it: a request body
    /// reads no more from the client (then `task` is woken when it does).
    pub fn write_blocked(&self, task: &Waker) -> bool {
        if !self.write_blocked.get() {
            return false;
        }
        self.waiter.set(Some(task.clone()));
        true
    }

    /// A request is about to be sent on this connection: none of it is
    /// written yet.
    pub fn start_request(&self) {
        self.unwritten.set(self.counts_writes());
        self.kept.borrow_mut().clear();
        self.rest.borrow_mut().take();
    }

    /// Writes on this connection prove whether a request left: a plain
    /// HTTP/1 connection to a server whose socket is still open.
    pub fn counts_writes(&self) -> bool {
        self.plain && self.fd.get().is_some()
    }

    /// No byte of the request being sent has reached the socket: the
    /// server cannot have read any of it (as Go's `nothingWrittenError`,
    /// and as nginx retries a request whose connection failed before
    /// `request_sent`).
    pub fn unwritten(&self) -> bool {
        self.unwritten.get()
    }

    /// Keeps a copy of a body frame handed to hyper while none of the
    /// request is written (a refcount, not a copy of the bytes).
    pub fn keep_frame(&self, frame: &Frame<Bytes>) {
        if !self.unwritten.get() {
            return;
        }
        let copy = match (frame.data_ref(), frame.trailers_ref()) {
            (Some(d), _) => Frame::data(d.clone()),
            (None, Some(t)) => Frame::trailers(t.clone()),
            (None, None) => return,
        };
        self.kept.borrow_mut().push(copy);
    }

    /// The client's body as hyper drops it, with the frames of it hyper
    /// had taken but not yet handed out (`pending`), if none of the
    /// request is written; else both are dropped.
    pub fn give_back(&self, body: Incoming, pending: impl IntoIterator<Item = Frame<Bytes>>) {
        if self.unwritten.get() {
            self.kept.borrow_mut().extend(pending);
            *self.rest.borrow_mut() = Some(body);
        }
    }

    /// What of an unwritten request's body was read from the client (its
    /// frames in order) and the rest of it, to send again; None if hyper
    /// still holds the body or a byte was written.
    pub fn take_unwritten(&self) -> Option<(Vec<Frame<Bytes>>, Incoming)> {
        if !self.unwritten.get() {
            return None;
        }
        let rest = self.rest.borrow_mut().take()?;
        Some((std::mem::take(&mut *self.kept.borrow_mut()), rest))
    }

    /// The server closed this idle connection, reset it, or sent
    /// something unasked (see [`super::upstream::closed_while_idle`]).
    /// False once its socket is gone (then hyper says it is closed).
    pub fn closed_while_idle(&self) -> bool {
        match self.fd.get() {
            // SAFETY: `fd` is set only while the UpstreamIo that owns the
            // socket lives (its Drop clears it before the socket closes),
            // and both live on this worker's thread.
            Some(fd) => super::upstream::closed_while_idle(unsafe { BorrowedFd::borrow_raw(fd) }),
            None => false,
        }
    }

    /// A byte of the request was written: from now on it may have been
    /// read, and what was kept to send it again is dropped.
    #[inline]
    fn wrote_bytes(&self) {
        if self.unwritten.replace(false) {
            self.kept.borrow_mut().clear();
            self.rest.borrow_mut().take();
        }
    }

    /// Notes how a write went; progress after a blockage wakes the body.
    fn wrote(&self, pending: bool) {
        if self.write_blocked.replace(pending) && !pending {
            if let Some(w) = self.waiter.take() {
                w.wake();
            }
        }
    }
}

/// What is wrong with a response head.
#[derive(Debug)]
pub enum BadHead {
    /// A line ends in LF without CR.
    BareLf,
    /// More than [`MAX_INTERIM`] interim (1xx) heads.
    TooManyInterim,
}

impl BadHead {
    /// The read error's text (the request path words its own 502).
    pub fn message(&self) -> &'static str {
        match self {
            BadHead::BareLf => "a line of the response head ends in LF, not CRLF",
            BadHead::TooManyInterim => "the server sent too many interim (1xx) responses",
        }
    }
}

impl HeadScan {
    /// A request has been sent: its response head comes next.
    pub fn expect_head() -> HeadScan {
        HeadScan {
            armed: true,
            ..HeadScan::default()
        }
    }

    /// A byte of the answer has come since the request was sent.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// The answer was refused for a bare LF in its head.
    pub fn bare_lf(&self) -> bool {
        self.bare_lf
    }

    /// The answer was refused for more than [`MAX_INTERIM`] interim heads.
    pub fn too_many_interim(&self) -> bool {
        self.too_many_interim
    }

    /// Follows the head through `bytes`, jumping from LF to LF (memchr):
    /// a 300-byte head is a dozen steps.
    fn feed(&mut self, bytes: &[u8]) -> Result<(), BadHead> {
        let mut rest = bytes;
        self.answered |= !bytes.is_empty();
        while self.armed && !rest.is_empty() {
            // "HTTP/1.1 200": the status digits are bytes 9 to 11 of a head.
            if self.pos < 12 {
                let from = 9usize.saturating_sub(self.pos);
                let to = (12 - self.pos).min(rest.len());
                for (k, &b) in rest.iter().enumerate().take(to).skip(from) {
                    self.status[self.pos + k - 9] = b;
                }
            }
            let Some(lf) = memchr::memchr(b'\n', rest) else {
                self.pos += rest.len();
                self.line += rest.len();
                self.prev = rest[rest.len() - 1];
                return Ok(());
            };
            let prev = if lf == 0 { self.prev } else { rest[lf - 1] };
            if prev != b'\r' {
                self.bare_lf = true;
                return Err(BadHead::BareLf);
            }
            let line = self.line + lf + 1;
            self.pos += lf + 1;
            rest = &rest[lf + 1..];
            if line == 2 {
                // The empty line: the head ends. A 1xx other than 101 is
                // followed by another head.
                let interim = self.status[0] == b'1' && self.status != *b"101";
                let count = self.interim + u8::from(interim);
                *self = HeadScan {
                    armed: interim,
                    answered: true,
                    interim: count,
                    ..HeadScan::default()
                };
                if count > MAX_INTERIM {
                    self.armed = false;
                    self.too_many_interim = true;
                    return Err(BadHead::TooManyInterim);
                }
                continue;
            }
            self.line = 0;
            self.prev = b'\n';
        }
        Ok(())
    }
}

/// The server's socket, plain TCP or TLS (`S`), as hyper's HTTP/1 client
/// reads it. (HTTP/2 is binary: no head to scan.)
pub struct UpstreamIo<S = TcpStream> {
    stream: S,
    watch: HeadWatch,
}

impl<S> UpstreamIo<S> {
    pub fn new(stream: S) -> (UpstreamIo<S>, HeadWatch) {
        let watch: HeadWatch = Rc::new(Watch::default());
        (
            UpstreamIo {
                stream,
                watch: watch.clone(),
            },
            watch,
        )
    }
}

impl<S: super::tunnel::ServerStream> UpstreamIo<S> {
    /// A pool's connection: its watch can look at the idle socket
    /// ([`Watch::closed_while_idle`]) and, if `plain` (no TLS), tell a
    /// request none of which was written ([`Watch::unwritten`]).
    pub fn pooled(stream: S, plain: bool) -> (UpstreamIo<S>, HeadWatch) {
        let watch: HeadWatch = Rc::new(Watch {
            fd: Cell::new(Some(stream.tcp().as_raw_fd())),
            plain,
            ..Watch::default()
        });
        (
            UpstreamIo {
                stream,
                watch: watch.clone(),
            },
            watch,
        )
    }
}

impl<S> Drop for UpstreamIo<S> {
    /// The socket closes after this: the watch no longer names it.
    fn drop(&mut self) {
        self.watch.fd.set(None);
    }
}

/// A tunnel (tunnel.rs) keeps the wrapper: it sets options on the socket
/// beneath.
impl<S: super::tunnel::ServerStream> super::tunnel::ServerStream for UpstreamIo<S> {
    fn tcp(&self) -> &TcpStream {
        self.stream.tcp()
    }
}

/// Reads at most [`READ_PIECE`] bytes from `stream` into `buf`: how many.
/// Shared with the client side (server/conn.rs), which reads HTTP/1
/// request bodies the same way.
#[inline]
pub fn read_piece<S: AsyncRead + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<usize>> {
    let mut piece = buf.take(READ_PIECE);
    let filled = piece.filled().as_ptr();
    std::task::ready!(Pin::new(stream).poll_read(cx, &mut piece))?;
    // The stream must fill the buffer it was given, not swap it.
    debug_assert_eq!(piece.filled().as_ptr(), filled);
    let n = piece.filled().len();
    // SAFETY: `piece` is the start of `buf`'s unfilled part (ReadBuf::take),
    // and the stream (TCP, or rustls over TCP) initialized and filled its first `n` bytes. (The safe
    // way, initialize_unfilled_to, would memset every piece first: as much
    // memory traffic again as the read's own copy.)
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Poll::Ready(Ok(n))
}

impl<S: AsyncRead + Unpin> AsyncRead for UpstreamIo<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let mut scan = this.watch.get();
        if !scan.armed && buf.remaining() > READ_PIECE {
            // A body (or nothing expected): one piece at a time.
            let r = read_piece(&mut this.stream, cx, buf);
            if matches!(r, Poll::Ready(Ok(n)) if n > 0) && !scan.answered {
                scan.answered = true;
                this.watch.set(scan);
            }
            let r = r.map_ok(|_| ());
            return r;
        }
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if (scan.armed || !scan.answered) && buf.filled().len() > before {
            let checked = scan.feed(&buf.filled()[before..]);
            this.watch.set(scan);
            if let Err(bad) = checked {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    bad.message(),
                )));
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for UpstreamIo<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.watch.wrote_bytes();
        }
        this.watch.wrote(r.is_pending());
        r
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.watch.wrote_bytes();
        }
        this.watch.wrote(r.is_pending());
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair of loopback sockets: (Pocket's side, the server's).
    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (theirs, _) = l.accept().unwrap();
        (ours, theirs)
    }

    /// Waits (at most 10 s) for the server's doing to reach our socket.
    fn becomes_closed(s: &std::net::TcpStream) -> bool {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < end {
            if crate::proxy::upstream::closed_while_idle(s) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn an_idle_socket_is_closed_once_the_server_closes_resets_or_speaks() {
        use std::io::Write;
        let (ours, _theirs) = pair();
        assert!(!crate::proxy::upstream::closed_while_idle(&ours));
        // The peek takes nothing: still nothing to read.
        assert!(!crate::proxy::upstream::closed_while_idle(&ours));
        let (ours, theirs) = pair();
        drop(theirs); // FIN
        assert!(becomes_closed(&ours));
        let (ours, theirs) = pair();
        socket2::SockRef::from(&theirs)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(theirs); // RST
        assert!(becomes_closed(&ours));
        let (ours, mut theirs) = pair();
        theirs
            .write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            .unwrap();
        assert!(becomes_closed(&ours));
    }

    #[test]
    fn a_request_is_unwritten_until_a_byte_of_it_is_written() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::io::AsyncWriteExt;
            let (ours, theirs) = pair();
            ours.set_nonblocking(true).unwrap();
            let (mut io, watch) = UpstreamIo::pooled(TcpStream::from_std(ours).unwrap(), true);
            assert!(watch.counts_writes() && !watch.unwritten());
            watch.start_request();
            assert!(watch.unwritten());
            io.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            assert!(!watch.unwritten());
            // The server resets the connection: the next request's first
            // write fails, and none of it was written.
            socket2::SockRef::from(&theirs)
                .set_linger(Some(std::time::Duration::ZERO))
                .unwrap();
            drop(theirs);
            let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !watch.closed_while_idle() && std::time::Instant::now() < end {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(watch.closed_while_idle());
            watch.start_request();
            assert!(io.write_all(b"POST / HTTP/1.1\r\n").await.is_err());
            assert!(watch.unwritten());
            drop(io);
            // The socket is gone: the watch no longer names it.
            assert!(!watch.counts_writes() && !watch.closed_while_idle());
        });
    }

    fn scan(parts: &[&[u8]]) -> Result<HeadScan, BadHead> {
        let mut s = HeadScan::expect_head();
        for p in parts {
            s.feed(p)?;
        }
        Ok(s)
    }

    #[test]
    fn crlf_heads_pass_and_the_body_is_not_looked_at() {
        let s = scan(&[b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody\nwith\nLF"]).unwrap();
        assert!(!s.armed);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        for cut in 0..head.len() {
            assert!(!scan(&[&head[..cut], &head[cut..]]).unwrap().armed);
        }
    }

    #[test]
    fn a_bare_lf_is_caught_after_an_interim_head_too() {
        assert!(scan(&[b"HTTP/1.1 200 OK\nA: b\r\n\r\n"]).is_err());
        assert!(scan(&[b"HTTP/1.1 200 OK\r\nA: b\r\n\n"]).is_err());
        assert!(scan(&[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\nX: y\r\n\r\n"]).is_err());
        assert!(
            scan(&[b"HTTP/1.1 103 Early\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"])
                .is_ok_and(|s| !s.armed)
        );
        let bad = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nA: b\n\r\n";
        for cut in 0..bad.len() {
            assert!(scan(&[&bad[..cut], &bad[cut..]]).is_err(), "cut at {cut}");
        }
        // 101 ends the HTTP part: what follows is another protocol.
        assert!(scan(&[b"HTTP/1.1 101 Switching\r\n\r\n\n\n"]).is_ok());
    }

    #[test]
    fn interim_heads_are_counted_up_to_the_bound() {
        let one = b"HTTP/1.1 100 Continue\r\n\r\n";
        let run = |n: usize| one.repeat(n);
        let ok = [
            run(usize::from(MAX_INTERIM)),
            b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
        ]
        .concat();
        assert!(scan(&[&ok]).is_ok_and(|s| !s.armed && !s.too_many_interim()));
        let flood = run(usize::from(MAX_INTERIM) + 1);
        assert!(matches!(scan(&[&flood]), Err(BadHead::TooManyInterim)));
        // Cut anywhere, byte by byte: the same.
        let mut s = HeadScan::expect_head();
        let mut failed = false;
        for b in flood.iter() {
            if s.feed(std::slice::from_ref(b)).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed && s.too_many_interim());
        // A new request's head starts counting again.
        assert_eq!(HeadScan::expect_head().interim, 0);
    }
}
