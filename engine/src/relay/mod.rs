//! The bounded two-way copier both byte tunnels use: a WebSocket (or any
//! HTTP/1.1 Upgrade) tunnel once its 101 is out (proxy/tunnel.rs), and a
//! whole TCP-mode connection (tcp/). Bytes are copied both ways with at
//! most [`BUF`] held per direction (backpressure: a side that does not
//! take what is sent to it stops the other side being read), each side's
//! end is passed on as a shutdown of the other's write (a half-close:
//! the other side can still answer), and nothing moving either way for
//! `idle` ends it, blaming the side that went quiet.
//!
//! [`both_ways`] does not log: its caller turns the [`End`] into a
//! termination state. A caller dropped meanwhile (a worker stopping at
//! the end of a drain's grace period) closes both sockets; its record,
//! kept current through `progress`, then says `KD`.

mod buffers;
mod half;

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::observe::Termination;
use half::Half;

/// Bytes buffered per direction: a side that does not take what is sent
/// to it holds at most this much here (and its socket buffers in the
/// kernel), and the other side is not read meanwhile. HAProxy's
/// `tune.bufsize`.
pub const BUF: usize = 16 * 1024;

/// How a two-way copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed, each passed on to the other.
    Closed,
    /// A side broke (a reset, or a write that failed): `b'C'` (the
    /// client) or `b'S'` (the server).
    Broke(u8),
    /// Nothing moved either way for `idle`; true: the client's silence
    /// (it sent nothing for longer, or took nothing sent to it).
    Idle(bool),
}

impl End {
    /// HAProxy's termination state for it, in the data phase: `--`,
    /// `CD`/`SD` (broken), `cD`/`sD` (idle).
    pub fn termination(self) -> Termination {
        match self {
            End::Closed => Termination::NORMAL,
            End::Broke(who) => Termination::of(who, b'D'),
            End::Idle(true) => Termination::of(b'c', b'D'),
            End::Idle(false) => Termination::of(b's', b'D'),
        }
    }
}

/// Which sides are plain TCP sockets that the caller closes as soon as
/// [`both_ways`] returns. When the last way to end is towards such a
/// side, its EOF is passed on by that close (the same FIN) rather than by
/// a shutdown(2) first: one syscall less per connection, as HAProxy does.
/// Safe because that side has already sent its own EOF, so nothing can
/// be left unread in its socket (which would turn the close into a
/// reset). A TLS side needs its close_notify, so it is never plain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain {
    pub client: bool,
    pub server: bool,
}

/// Bytes copied so far: `up` client to server, `down` server to client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub up: u64,
    pub down: u64,
}

/// Copies bytes both ways between `client` (whose `client_early` bytes,
/// read before the copy began, go to the server first) and `server`
/// (likewise `server_early`), until both have closed, either breaks, or
/// nothing moves for `idle`. The sides `plain` names are to be closed by
/// the caller right after. `progress` is told the bytes moved after
/// each wake-up in which any moved, so a record kept by a caller that is
/// dropped meanwhile is current.
pub async fn both_ways<C, S>(
    client: &mut C,
    server: &mut S,
    client_early: Bytes,
    server_early: Bytes,
    idle: Duration,
    plain: Plain,
    mut progress: impl FnMut(Moved),
) -> (End, Moved)
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Half::new(client_early);
    let mut down = Half::new(server_early);
    let mut timer = Box::pin(tokio::time::sleep(idle));
    let mut told = Moved::default();
    let end = std::future::poll_fn(|cx| {
        let u = up.poll(cx, client, server, plain.server && down.done());
        let d = down.poll(cx, server, client, plain.client && up.done());
        let moved = Moved {
            up: up.bytes,
            down: down.bytes,
        };
        if moved != told {
            told = moved;
            progress(moved);
        }
        match (u, d) {
            (Poll::Ready(Err(e)), _) => return Poll::Ready(End::Broke(e.blame(b'C', b'S'))),
            (_, Poll::Ready(Err(e))) => return Poll::Ready(End::Broke(e.blame(b'S', b'C'))),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(End::Closed),
            _ => {}
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let last = up.last.max(down.last);
            if last + idle > Instant::now() {
                timer.as_mut().reset(last + idle);
                continue;
            }
            // Whose silence it is: a side that takes nothing sent to it,
            // else the side that has sent nothing for longer.
            let client_quiet = if down.write_blocked {
                true
            } else if up.write_blocked {
                false
            } else {
                up.last <= down.last
            };
            return Poll::Ready(End::Idle(client_quiet));
        }
    })
    .await;
    (
        end,
        Moved {
            up: up.bytes,
            down: down.bytes,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    type Copy = tokio::task::JoinHandle<(End, Moved)>;

    /// A copy between two in-memory pipes, on a task: the client's end,
    /// the server's end and the copy. `early`: bytes the client sent
    /// before the copy began; `idle`: `timeouts.idle`.
    fn copy_between(early: &'static [u8], idle: Duration) -> (DuplexStream, DuplexStream, Copy) {
        let (client, mut client_side) = tokio::io::duplex(64);
        let (mut server_side, server) = tokio::io::duplex(64);
        let copy = tokio::spawn(async move {
            both_ways(
                &mut client_side,
                &mut server_side,
                Bytes::from_static(early),
                Bytes::new(),
                idle,
                Plain::default(),
                |_| {},
            )
            .await
        });
        (client, server, copy)
    }

    #[test]
    fn each_end_is_passed_on_and_the_other_way_goes_on() {
        runtime().block_on(async {
            let (mut client, mut server, copy) = copy_between(b">", Duration::from_secs(60));
            // The client sends and shuts its write side...
            client.write_all(b"ask").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b">ask", "early bytes first, then the EOF");
            // ...and still reads the server's answer.
            server.write_all(b"answer").await.unwrap();
            server.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"answer");
            let (end, moved) = copy.await.unwrap();
            assert_eq!(end, End::Closed);
            assert_eq!(moved, Moved { up: 4, down: 6 });
            assert_eq!(end.termination(), Termination::NORMAL);
        });
    }

    #[test]
    fn a_copy_waiting_for_bytes_holds_no_buffer() {
        runtime().block_on(async {
            let (mut client, mut server, copy) = copy_between(b"", Duration::from_secs(60));
            client.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            server.read_exact(&mut got).await.unwrap();
            server.write_all(b"pong").await.unwrap();
            client.read_exact(&mut got).await.unwrap();
            // Both ways moved bytes and now wait (the copy runs on this
            // thread): their buffers are back with the worker.
            tokio::task::yield_now().await;
            assert_eq!(buffers::OUT.with(|n| n.get()), 0);
            drop((client, server));
            let (end, _) = copy.await.unwrap();
            assert_eq!(end, End::Closed);
            assert_eq!(buffers::OUT.with(|n| n.get()), 0);
        });
    }

    /// On paused time (tokio's `test-util`): the clock moves only by
    /// `advance` or when every task waits, so the outcome depends on the
    /// order of events, not on how busy the machine is.
    #[test]
    fn silence_ends_it_blaming_the_quiet_side() {
        runtime().block_on(async {
            tokio::time::pause();
            let (mut client, mut server, copy) = copy_between(b"", Duration::from_millis(200));
            client.write_all(b"hi").await.unwrap();
            let mut got = [0u8; 2];
            server.read_exact(&mut got).await.unwrap();
            // The server answers last (50 ms later, under the 200 ms
            // idle); then nothing moves.
            tokio::time::advance(Duration::from_millis(50)).await;
            server.write_all(b"yo").await.unwrap();
            client.read_exact(&mut got).await.unwrap();
            let (end, _) = copy.await.unwrap();
            assert_eq!(end, End::Idle(true));
            assert_eq!(end.termination().to_string(), "cD");
        });
    }
}
