//! HTTP/1 on the wire, as Pocket's own path reads and writes it: heads
//! parsed once (httparse) into the form the request path uses, bodies
//! delimited by their framing (RFC 9112 §6) and relayed as they came.
//! No I/O here: these are functions of bytes, tested against hyper's
//! reading of the same messages (see `tests/wire_vs_hyper.rs`).
//!
//! - [`request`]: a client's request head, or "not for this path" (the
//!   connection then goes to hyper, which gives today's verdict on it).
//! - [`response`]: a server's response head, checked strictly; anything
//!   whose framing cannot be proven is refused (the client gets a 502).
//! - [`chunked`]: a chunked body, validated as it passes through.
//! - [`write`]: the response heads Pocket writes to a client
//!   ([`request::write`] writes a request head for a server).
//! - [`fields`], [`hop_by_hop`], [`host`]: header rules of HTTP itself
//!   that both the request path (`proxy/`) and the script API apply, here
//!   so the script API need not reach up into the proxy for them.

pub mod chunked;
pub mod fields;
pub mod hop_by_hop;
pub mod host;
pub mod request;
pub mod response;
pub mod write;

/// Whether a `Connection` field's value names `close` among its tokens
/// (RFC 9110 §7.6.1: a comma-separated list, case-insensitive), as hyper
/// reads it.
pub fn says_close(value: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a request without Content-Length or Transfer-Encoding; a
    /// response to HEAD, a 1xx, 204 or 304.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked (RFC 9112 §7.1): ends with the last chunk and trailers.
    Chunked,
    /// A response with neither: the body ends when the server closes.
    UntilClose,
}

/// The most header lines a head may have on this path (hyper's server
/// allows 100; a head with more goes to hyper, a response with more is
/// refused).
pub const MAX_HEADERS: usize = 100;
