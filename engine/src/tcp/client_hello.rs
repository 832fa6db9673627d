//! The client's TLS ClientHello on a `tcp` listener, read without
//! consuming it (`MSG_PEEK`) and never decrypted: its server name (SNI)
//! and its ALPN protocols, for `conn.sni` and `conn.alpn` in
//! `on_connect`. The bytes stay in the socket and reach the server
//! unchanged, as they do through nginx's `ssl_preread` and HAProxy's
//! `req.ssl_sni`.
//!
//! Formats: the record layer (RFC 8446 §5.1; a ClientHello may be split
//! over several handshake records, and each record over several TCP
//! segments), the ClientHello (RFC 8446 §4.1.2, the same shape since TLS
//! 1.0), `server_name` (RFC 6066 §3) and
//! `application_layer_protocol_negotiation` (RFC 7301 §3.1).
//!
//! Bounds: the ClientHello message may be at most [`MAX_HELLO`] bytes and
//! everything peeked at most [`MAX_PEEK`]; a bigger one counts as no
//! ClientHello (`sni` nil, as HAProxy's `req.ssl_sni` gives no sample once
//! its buffer is full). The first byte decides "not TLS" at once, so a
//! client speaking another protocol never waits for `timeouts.client_hello`.

use std::io;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// The longest ClientHello message read, its 4-byte handshake header
/// included: 16 KiB of body, four times what browsers with post-quantum
/// key shares send (about 1.8 KiB), the size of one full TLS record.
pub const MAX_HELLO: usize = 16 * 1024 + 4;

/// The most bytes peeked for one ClientHello: the message and the 5-byte
/// headers of the records it is split over, with room for a few.
pub const MAX_PEEK: usize = MAX_HELLO + 1024;

/// Record type of handshake records (RFC 8446 §5.1).
const HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello (RFC 8446 §4).
const CLIENT_HELLO: u8 = 1;
/// The largest record fragment (RFC 8446 §5.1: 2^14).
const MAX_FRAGMENT: usize = 1 << 14;
/// Extension types (RFC 6066 §3, RFC 7301 §3.1).
const SERVER_NAME: u16 = 0;
const ALPN: u16 = 16;
/// `NameType` of a DNS host name (RFC 6066 §3).
const HOST_NAME: u8 = 0;

/// What a ClientHello says that `on_connect` can read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The first `host_name` of `server_name`, in lower case (DNS names
    /// compare without case); None when absent or not a host name.
    pub sni: Option<String>,
    /// The ALPN protocols offered, in the client's order (byte strings,
    /// as RFC 7301 allows); None without the extension.
    pub alpn: Option<Vec<Vec<u8>>>,
}

/// What some bytes from the start of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole ClientHello.
    Hello(ClientHello),
    /// The start of a ClientHello: more bytes are needed.
    NeedMore,
    /// Not a TLS ClientHello (another protocol, SSLv2, or malformed).
    NotTls,
    /// A ClientHello longer than [`MAX_HELLO`] (or spread over more than
    /// [`MAX_PEEK`] bytes).
    TooBig,
}

/// Parses the bytes a connection starts with. Never panics, never reads
/// past `buf`: every length is checked against what is there.
pub fn parse(buf: &[u8]) -> Parsed {
    // The handshake message, reassembled from the records' fragments.
    let mut msg: Vec<u8> = Vec::new();
    let mut rest = buf;
    loop {
        if let Some(done) = message(&msg) {
            return done;
        }
        if rest.len() < 5 {
            // A record header's first bytes: what they say already counts.
            if rest.first().is_some_and(|&t| t != HANDSHAKE) || rest.get(1).is_some_and(|&v| v != 3)
            {
                return Parsed::NotTls;
            }
            return need_more(buf);
        }
        if rest[0] != HANDSHAKE || rest[1] != 3 {
            return Parsed::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        // Empty handshake fragments are forbidden (RFC 8446 §5.1).
        if len == 0 || len > MAX_FRAGMENT {
            return Parsed::NotTls;
        }
        match rest.get(5..5 + len) {
            Some(fragment) => {
                msg.extend_from_slice(fragment);
                rest = &rest[5 + len..];
            }
            None => {
                msg.extend_from_slice(&rest[5..]);
                return match message(&msg) {
                    Some(Parsed::Hello(_)) | None => need_more(buf),
                    Some(other) => other,
                };
            }
        }
    }
}

/// The reassembled handshake bytes so far: a verdict, or None for more.
fn message(msg: &[u8]) -> Option<Parsed> {
    let &first = msg.first()?;
    if first != CLIENT_HELLO {
        return Some(Parsed::NotTls);
    }
    let len = msg.get(1..4)?;
    let len = usize::from(len[0]) << 16 | usize::from(len[1]) << 8 | usize::from(len[2]);
    if 4 + len > MAX_HELLO {
        return Some(Parsed::TooBig);
    }
    let body = msg.get(4..4 + len)?;
    Some(match hello(body) {
        Some(h) => Parsed::Hello(h),
        None => Parsed::NotTls,
    })
}

fn need_more(buf: &[u8]) -> Parsed {
    if buf.len() >= MAX_PEEK {
        Parsed::TooBig
    } else {
        Parsed::NeedMore
    }
}

/// A cursor over bytes whose every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// `opaque x<..2^8-1>`: a length byte and that many bytes.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// `opaque x<..2^16-1>`.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// A ClientHello's body (RFC 8446 §4.1.2); None when malformed.
fn hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    let version = r.take(2)?;
    if version[0] != 3 {
        return None;
    }
    r.take(32)?; // random
    if r.vec8()?.len() > 32 {
        return None; // legacy_session_id<0..32>
    }
    let suites = r.vec16()?;
    if suites.len() < 2 || suites.len() % 2 != 0 {
        return None;
    }
    if r.vec8()?.is_empty() {
        return None; // legacy_compression_methods<1..2^8-1>
    }
    let mut out = ClientHello::default();
    if r.0.is_empty() {
        return Some(out); // no extensions (TLS 1.0 and older clients)
    }
    let mut exts = Reader(r.vec16()?);
    let (mut seen_sni, mut seen_alpn) = (false, false);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        // A repeated extension is an error for the server (RFC 8446
        // §4.2); the first one is what a lenient server would use.
        match kind {
            SERVER_NAME if !seen_sni => {
                seen_sni = true;
                out.sni = server_name(data);
            }
            ALPN if !seen_alpn => {
                seen_alpn = true;
                out.alpn = alpn(data);
            }
            // GREASE (RFC 8701) and every other extension: skipped.
            _ => {}
        }
    }
    Some(out)
}

/// The first `host_name` in a `ServerNameList` (RFC 6066 §3), lowercased;
/// None when malformed or not a plain DNS name (letters, digits, `-`,
/// `_`, `.`; at most 255 bytes).
fn server_name(data: &[u8]) -> Option<String> {
    let mut list = Reader(Reader(data).vec16()?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind != HOST_NAME {
            continue;
        }
        let plain = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        if name.is_empty() || name.len() > 255 || !name.iter().all(plain) {
            return None;
        }
        return Some(String::from_utf8_lossy(name).to_ascii_lowercase());
    }
    None
}

/// The protocols of a `ProtocolNameList` (RFC 7301 §3.1); None when
/// malformed or empty.
fn alpn(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut list = Reader(Reader(data).vec16()?);
    let mut out = Vec::new();
    while !list.0.is_empty() {
        let name = list.vec8()?;
        if name.is_empty() {
            return None;
        }
        out.push(name.to_vec());
    }
    (!out.is_empty()).then_some(out)
}

/// What waiting for a connection's ClientHello found.
#[derive(Debug)]
pub enum Peeked {
    /// A whole ClientHello.
    Hello(ClientHello),
    /// The client speaks something else (or a ClientHello past the
    /// bounds): `conn.sni` is nil, the connection goes on.
    NotTls,
    /// Nothing whole within the wait; `got` bytes had come.
    TimedOut { got: usize },
    /// The client closed (or reset) before a whole ClientHello.
    Closed { got: usize },
}

/// Waits at most `wait` for the ClientHello that `stream` starts with,
/// leaving every byte in the socket for the server. Returns at once when
/// the first bytes are not TLS.
pub async fn peek(stream: &TcpStream, wait: Duration) -> Peeked {
    let mut got = 0;
    match tokio::time::timeout(wait, peek_whole(stream, &mut got)).await {
        Ok(p) => p,
        Err(_) => Peeked::TimedOut { got },
    }
}

async fn peek_whole(stream: &TcpStream, got: &mut usize) -> Peeked {
    // Most ClientHellos fit in 2 KiB; grown to MAX_PEEK only when needed.
    let mut buf = vec![0u8; 2048];
    loop {
        let ready = match stream.ready(Interest::READABLE).await {
            Ok(r) => r,
            Err(_) => return Peeked::Closed { got: *got },
        };
        let seen = *got;
        // Through try_io: when the peek finds nothing new, the readiness
        // is cleared, and the next readable() waits for the next segment
        // (peeked bytes stay readable, so a plain wait would spin).
        let peeked = stream.try_io(Interest::READABLE, || {
            let n = peek_now(stream, &mut buf)?;
            if n == seen && n != 0 && n < buf.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        let n = match peeked {
            Ok(n) => n,
            // Nothing new after the client's FIN: peeked bytes never read
            // as EOF (they are still there), the closed readiness says it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && ready.is_read_closed() => {
                return Peeked::Closed { got: *got }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return Peeked::Closed { got: *got },
        };
        if n == 0 {
            return Peeked::Closed { got: *got };
        }
        *got = n;
        match parse(&buf[..n]) {
            Parsed::Hello(h) => return Peeked::Hello(h),
            Parsed::NotTls | Parsed::TooBig => return Peeked::NotTls,
            Parsed::NeedMore => {
                if n == buf.len() {
                    buf.resize(MAX_PEEK, 0);
                }
            }
        }
    }
}

/// One non-blocking `recv(MSG_PEEK)`: the bytes waiting, left in place.
pub(super) fn peek_now(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `buf` is valid for `buf.len()` writable bytes and the fd is
    // the stream's own, open for as long as `stream` is borrowed.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
#[path = "client_hello_tests.rs"]
mod tests;
