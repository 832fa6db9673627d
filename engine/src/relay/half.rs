//! One direction of a two-way copy: a bounded buffer read from one side
//! and written to the other.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::buffers;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// A failure in one direction: reading its source or writing its
/// destination.
pub(super) enum Fault {
    Read,
    Write,
}

impl Fault {
    /// Who broke: `source` if reading failed, else `dest`.
    pub(super) fn blame(&self, source: u8, dest: u8) -> u8 {
        match self {
            Fault::Read => source,
            Fault::Write => dest,
        }
    }
}

/// While the buffer is not empty nothing more is read, so a side that
/// stops reading pauses the other (backpressure). The buffer is the
/// worker's (super::buffers), held only while a read is under way or
/// bytes wait in it.
pub(super) struct Half {
    /// Bytes read ahead before the copy began, written first.
    early: Bytes,
    /// Holds `buf[start..end]` not yet written; None while empty.
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    /// The source has closed its side (EOF).
    eof: bool,
    /// The EOF has been passed on (the destination's write shut down).
    done: bool,
    /// Written to the destination and not flushed yet.
    unflushed: bool,
    /// The last write could not complete: the destination takes nothing.
    pub(super) write_blocked: bool,
    /// When bytes last moved this way (read or written).
    pub(super) last: Instant,
    /// Bytes copied this way.
    pub(super) bytes: u64,
}

impl Half {
    pub(super) fn new(early: Bytes) -> Half {
        Half {
            early,
            buf: None,
            start: 0,
            end: 0,
            eof: false,
            done: false,
            unflushed: false,
            write_blocked: false,
            last: Instant::now(),
            bytes: 0,
        }
    }

    /// Moves what it can from `src` to `dst`. Ready(Ok): this direction
    /// is over (EOF passed on). Pending: waits for either side.
    /// `close_passes_eof`: `dst` is a plain socket closed as soon as this
    /// direction is over (the other one is), so its close(2) passes the
    /// EOF on and no shutdown(2) is needed.
    pub(super) fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
        close_passes_eof: bool,
    ) -> Poll<Result<(), Fault>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            // Write out what is held: the early bytes, then the buffer.
            while !self.early.is_empty() || self.start < self.end {
                let chunk = match &self.buf {
                    Some(buf) if self.early.is_empty() => &buf[self.start..self.end],
                    _ => &self.early[..],
                };
                match Pin::new(&mut *dst).poll_write(cx, chunk) {
                    Poll::Pending => {
                        self.write_blocked = true;
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(Fault::Write))
                    }
                    Poll::Ready(Ok(n)) => {
                        self.write_blocked = false;
                        self.unflushed = true;
                        self.bytes += n as u64;
                        self.last = Instant::now();
                        if self.early.is_empty() {
                            self.start += n;
                        } else {
                            let _ = self.early.split_to(n);
                        }
                    }
                }
            }
            if self.eof {
                self.release();
                if close_passes_eof {
                    self.done = true;
                    return Poll::Ready(Ok(()));
                }
                return self.finish(cx, dst);
            }
            let buf = self.buf.get_or_insert_with(buffers::take);
            let mut rb = ReadBuf::new(buf);
            match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    // Nothing waits in it: back to the worker until the
                    // source has bytes again.
                    self.release();
                    if self.unflushed {
                        // A TLS stream holds what it was given until
                        // flushed; plain TCP has nothing to flush.
                        match Pin::new(&mut *dst).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.unflushed = false,
                            Poll::Ready(Err(_)) => return Poll::Ready(Err(Fault::Write)),
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
                // A TLS peer that closed its TCP connection without a
                // close_notify (many servers do): its end, not a break.
                // The bytes are passed on as they came; framing them is
                // the application's business. Plain TCP never says this.
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.eof = true;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Err(Fault::Read)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        self.eof = true;
                    } else {
                        self.start = 0;
                        self.end = n;
                        self.last = Instant::now();
                    }
                }
            }
        }
    }

    /// This direction is over: its EOF has been passed on.
    pub(super) fn done(&self) -> bool {
        self.done
    }

    /// Gives the (empty) buffer back to the worker.
    fn release(&mut self) {
        if let Some(buf) = self.buf.take() {
            buffers::give(buf);
        }
    }

    /// The source closed and all it sent is written: flush, then shut the
    /// destination's write (it reads EOF; its own way may go on).
    fn finish<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut W,
    ) -> Poll<Result<(), Fault>> {
        match Pin::new(&mut *dst).poll_shutdown(cx) {
            Poll::Pending => Poll::Pending,
            // The destination may be gone already: its own way says so.
            Poll::Ready(_) => {
                self.done = true;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl Drop for Half {
    /// A copy that ends (or is dropped) with bytes unwritten: the buffer
    /// still goes back; its contents are never read again.
    fn drop(&mut self) {
        self.release();
    }
}
