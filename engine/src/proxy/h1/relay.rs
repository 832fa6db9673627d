//! Phase 6 of the direct path: the response head written to the client
//! together with the first body bytes read with it (one write), then the
//! body relayed by its framing, as it came: a `Content-Length` counted,
//! a chunked body checked as it passes (`wire::chunked`), a body that ends
//! at the server's close read to that close and chunked for the client
//! (as hyper's server frames a body of unknown length), so the client's
//! connection stays open. Nothing is buffered beyond
//! one read: while the client does not take a piece, the server is not
//! read (its TCP holds it back), as on the hyper path.
//!
//! The server's silence is bounded by the pool's `idle` and the exchange
//! by its `total`, on the connection's [`Clock`] (a read costs a clock
//! read, not a timer update).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{buf, ClientConn, Clock};
use crate::wire::chunked::{Chunked, Step};
use crate::wire::Framing;

/// The body to relay.
pub(super) struct Body {
    pub framing: Framing,
    /// Where the body's first bytes begin in the read buffer (the head's
    /// length).
    pub at: usize,
    /// The pool's `timeouts.idle`.
    pub idle: Duration,
    /// The pool's `timeouts.total`, as an instant.
    pub deadline: Option<Instant>,
}

/// How a relay ended.
pub(super) enum Ended {
    /// The body went out whole. `rest`: the server sent bytes past its
    /// end (its connection is not reused).
    Whole { rest: bool },
    /// The server closed or broke the framing before the end (why).
    Broke(String),
    /// The body's framing is broken in the bytes read with the head (why):
    /// nothing was written to the client, which can still get a 502.
    Refused(String),
    /// The server sent nothing for `idle`, or the exchange ran past its
    /// `total`.
    Stalled { past_total: bool },
    /// The client went away or a write to it failed (`timed_out`: its
    /// `send` timeout).
    Client { timed_out: bool },
}

/// Where the body stands.
enum Left {
    Length(u64),
    Chunked(Chunked),
    /// Read to the server's close, each piece sent as a chunk.
    UntilClose,
}

/// The last chunk of a body Pocket chunks itself.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes `head` and relays the body whose first bytes are in
/// `rbuf[body.at..]`, counting body bytes into `bytes_out`. Gives `rbuf`
/// back to the pool.
pub(super) async fn relay<W: ClientConn>(
    client: &mut W,
    clock: &mut Clock,
    server: &mut TcpStream,
    head: &[u8],
    mut rbuf: Vec<u8>,
    body: Body,
    bytes_out: &mut u64,
) -> Ended {
    let ended = relay_in(client, clock, server, head, &mut rbuf, body, bytes_out).await;
    buf::give(rbuf);
    ended
}

async fn relay_in<W: ClientConn>(
    client: &mut W,
    clock: &mut Clock,
    server: &mut TcpStream,
    head: &[u8],
    rbuf: &mut Vec<u8>,
    body: Body,
    bytes_out: &mut u64,
) -> Ended {
    let mut left = match body.framing {
        Framing::Empty | Framing::Length(0) => {
            let rest = rbuf.len() > body.at;
            if let Err(e) = write_two(client, head, &[]).await {
                return client_failed(&e);
            }
            return Ended::Whole { rest };
        }
        Framing::Length(n) => Left::Length(n),
        Framing::Chunked => Left::Chunked(Chunked::new()),
        Framing::UntilClose => Left::UntilClose,
    };
    let mut head = head;
    let mut from = body.at.min(rbuf.len());
    if let Left::Length(l) = &mut left {
        // The rest of a body a little larger than the buffer (a 16 KiB
        // response) is most often in the socket already.
        match with_rest(client, server, head, rbuf, from, *l).await {
            Ok(Gathered::No) => {}
            Ok(Gathered::Whole { rest }) => {
                *bytes_out += *l;
                return Ended::Whole { rest };
            }
            Ok(Gathered::Part(n)) => {
                *bytes_out += n;
                *l -= n;
                head = &[];
                rbuf.clear();
                from = 0;
            }
            Err(e) => return client_failed(&e),
        }
    }
    // Set before the first read from the server (a body whole in the
    // head's buffer needs no clock), then after each read.
    let mut armed = false;
    loop {
        // What of the buffer is body, and whether it ends there.
        let piece = &rbuf[from..];
        // Body bytes as the client's decoder counts them (chunk payload
        // only), for the access log's `bytes_out`, as on the hyper path.
        let data_before = match &left {
            Left::Chunked(c) => c.data_bytes(),
            _ => 0,
        };
        let (n, end, rest) = match &mut left {
            Left::Length(l) => {
                let n = (*l).min(piece.len() as u64) as usize;
                *l -= n as u64;
                (n, *l == 0, piece.len() > n)
            }
            Left::Chunked(c) => match c.feed(piece) {
                Step::More => (piece.len(), false, false),
                Step::Done(k) => (k, true, piece.len() > k),
                Step::Bad(why) => {
                    let why = format!("a malformed chunked body: {why}");
                    if !head.is_empty() {
                        // Read with the head (the first chunk line, say):
                        // nothing is out yet, so Pocket can still answer.
                        return Ended::Refused(why);
                    }
                    // What came before is out; the client's body is cut.
                    return Ended::Broke(why);
                }
            },
            Left::UntilClose => (piece.len(), false, false),
        };
        if matches!(left, Left::UntilClose) {
            if n > 0 || !head.is_empty() {
                if let Err(e) = write_chunk(client, head, &piece[..n]).await {
                    return client_failed(&e);
                }
                head = &[];
                *bytes_out += n as u64;
            }
        } else if !head.is_empty() || n > 0 {
            if let Err(e) = write_two(client, head, &piece[..n]).await {
                return client_failed(&e);
            }
            head = &[];
            *bytes_out += match &left {
                Left::Chunked(c) => c.data_bytes() - data_before,
                _ => n as u64,
            };
        }
        if end {
            return Ended::Whole { rest };
        }
        // The next piece from the server, within its `idle` and the
        // exchange's `total`; the client watched meanwhile.
        if !armed {
            armed = true;
            clock.set(next_wake(Instant::now(), body.idle, body.deadline));
        }
        rbuf.clear();
        from = 0;
        let read = std::future::poll_fn(|task| {
            let mut rb = ReadBuf::uninit(rbuf.spare_capacity_mut());
            if let Poll::Ready(r) = Pin::new(&mut *server).poll_read(task, &mut rb) {
                return Poll::Ready(Read::Got(r.map(|()| rb.filled().len())));
            }
            if client.poll_gone(task).is_ready() {
                return Poll::Ready(Read::Gone);
            }
            if clock.poll_expired(task) {
                let past_total = body.deadline.is_some_and(|d| d <= Instant::now());
                return Poll::Ready(Read::Late { past_total });
            }
            Poll::Pending
        })
        .await;
        match read {
            Read::Got(Ok(0)) => {
                return match left {
                    Left::UntilClose => match write_two(client, LAST_CHUNK, &[]).await {
                        Ok(()) => Ended::Whole { rest: false },
                        Err(e) => client_failed(&e),
                    },
                    _ => Ended::Broke("the connection closed before the body's end".into()),
                };
            }
            Read::Got(Ok(n)) => {
                // SAFETY: `poll_read` initialised the first `n` bytes of
                // the spare capacity it was given (ReadBuf's contract).
                unsafe { rbuf.set_len(n) };
                let now = Instant::now();
                clock.set(next_wake(now, body.idle, body.deadline));
                if body.deadline.is_some_and(|d| d <= now) {
                    // A body that never pauses still ends at `total`.
                    return Ended::Stalled { past_total: true };
                }
            }
            Read::Got(Err(e)) => return Ended::Broke(e.to_string()),
            Read::Gone => return Ended::Client { timed_out: false },
            Read::Late { past_total } => return Ended::Stalled { past_total },
        }
    }
}

/// What [`with_rest`] did.
enum Gathered {
    /// Nothing: the body is whole in the buffer, too large, or its rest
    /// not here yet.
    No,
    /// The head and the whole body went out (`rest`: the server sent
    /// more than its body).
    Whole { rest: bool },
    /// The head and this many body bytes went out; `rbuf` is all written.
    Part(u64),
}

/// For a `Content-Length` body (`left` bytes from `rbuf[from..]` on)
/// whose rest fits a second buffer: reads what of it the socket already
/// holds, without waiting, and writes the head, the first piece and that
/// rest in one vectored write: one write and no wait for the client
/// where a 16 KiB response took two and a wake.
async fn with_rest<W: AsyncWrite + Unpin>(
    client: &mut W,
    server: &mut TcpStream,
    head: &[u8],
    rbuf: &[u8],
    from: usize,
    left: u64,
) -> io::Result<Gathered> {
    let have = (rbuf.len() - from) as u64;
    if have >= left || left - have > buf::SIZE as u64 {
        return Ok(Gathered::No);
    }
    let want = (left - have) as usize;
    let mut more = buf::take();
    while more.len() < want {
        match server.try_read_buf(&mut more) {
            Ok(n) if n > 0 => {}
            // Not here yet, closed, or failed: the relay's own read says
            // which, in turn.
            _ => break,
        }
    }
    if more.is_empty() {
        buf::give(more);
        return Ok(Gathered::No);
    }
    let got = more.len().min(want);
    let wrote = write_all(client, [head, &rbuf[from..], &more[..got]]).await;
    let rest = more.len() > want;
    buf::give(more);
    wrote?;
    Ok(if got == want {
        Gathered::Whole { rest }
    } else {
        Gathered::Part(have + got as u64)
    })
}

/// Writes `parts` in turn to `w`, vectored (one call when the socket takes
/// them all), then flushes (TLS).
async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, mut parts: [&[u8]; 3]) -> io::Result<()> {
    loop {
        let n = std::future::poll_fn(|cx| {
            let slices = [
                IoSlice::new(parts[0]),
                IoSlice::new(parts[1]),
                IoSlice::new(parts[2]),
            ];
            Pin::new(&mut *w).poll_write_vectored(cx, &slices)
        })
        .await?;
        let mut n = n;
        if n == 0 && parts.iter().any(|p| !p.is_empty()) {
            return Err(io::ErrorKind::WriteZero.into());
        }
        for p in parts.iter_mut() {
            let k = n.min(p.len());
            *p = &p[k..];
            n -= k;
        }
        if parts.iter().all(|p| p.is_empty()) {
            break;
        }
    }
    std::future::poll_fn(|cx| Pin::new(&mut *w).poll_flush(cx)).await
}

enum Read {
    Got(io::Result<usize>),
    Gone,
    Late { past_total: bool },
}

/// When the server must have sent more: `idle` after its last piece, or
/// the exchange's deadline if that comes first.
#[inline]
fn next_wake(last: Instant, idle: Duration, deadline: Option<Instant>) -> Instant {
    let at = last + idle;
    match deadline {
        Some(d) if d < at => d,
        _ => at,
    }
}

fn client_failed(e: &io::Error) -> Ended {
    Ended::Client {
        timed_out: e.kind() == io::ErrorKind::TimedOut,
    }
}

/// Writes `head` (if any) and `data` as one chunk (none if it is empty).
async fn write_chunk<W: AsyncWrite + Unpin>(w: &mut W, head: &[u8], data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return write_two(w, head, &[]).await;
    }
    let mut line = Vec::with_capacity(head.len() + 20);
    line.extend_from_slice(head);
    line.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    write_two(w, &line, data).await?;
    write_two(w, b"\r\n", &[]).await
}

/// Writes `a` then `b` to `w`, vectored (one call when the socket takes
/// both), then flushes (TLS).
pub(super) async fn write_two<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut a: &[u8],
    mut b: &[u8],
) -> io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        let n = std::future::poll_fn(|cx| {
            Pin::new(&mut *w).poll_write_vectored(cx, &[IoSlice::new(a), IoSlice::new(b)])
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n >= a.len() {
            b = &b[n - a.len()..];
            a = &[];
        } else {
            a = &a[n..];
        }
    }
    std::future::poll_fn(|cx| Pin::new(&mut *w).poll_flush(cx)).await
}
