//! The client's byte stream: plain TCP, or TLS over it. One enum, so that
//! the connection code (parking, the head check's answers, h2) is the same
//! for both; a plain listener pays a branch per read or write, no
//! allocation and no syscall.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::proxy::upstream_io::read_piece;

pub enum Transport {
    Plain(TcpStream),
    /// Boxed: rustls' connection state is large, and plain connections
    /// should not carry its size.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    /// The socket under it.
    #[inline]
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => s.get_ref().0,
        }
    }

    /// TLS only: rustls holds request bytes already decrypted that nobody
    /// has read (a client that sent its next request in the same records
    /// as the last). Such a connection must not wait on its socket, which
    /// may stay quiet. Plain: always false, at no cost.
    pub fn has_buffered(&mut self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(s) => s.get_mut().1.process_new_packets().map_or(true, |st| {
                st.plaintext_bytes_to_read() > 0 || st.peer_has_closed()
            }),
        }
    }

    /// Writes what it can of `buf` without waiting (best effort: for a
    /// short answer before the connection closes). On TLS the bytes are
    /// encrypted and as many records as the socket takes go out.
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.try_write(buf),
            Transport::Tls(s) => {
                let (tcp, conn) = s.get_mut();
                let n = conn.writer().write(buf)?;
                while conn.wants_write() {
                    if conn.write_tls(&mut TryWriter(tcp))? == 0 {
                        break;
                    }
                }
                Ok(n)
            }
        }
    }

    /// Reads at most [`READ_PIECE`] bytes (see [`read_piece`]).
    #[inline]
    pub fn read_piece(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        match self {
            Transport::Plain(s) => read_piece(s, cx, buf),
            // rustls' reader fills the buffer it is given in place
            // (tokio-rustls' `poll_read`), as read_piece needs.
            Transport::Tls(s) => read_piece(&mut **s, cx, buf),
        }
    }
}

/// A socket as `std::io::Write` that never waits (WouldBlock instead).
struct TryWriter<'a>(&'a TcpStream);

impl Write for TryWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for Transport {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
