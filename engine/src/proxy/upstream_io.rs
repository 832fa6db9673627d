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

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

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
