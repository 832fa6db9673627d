//! A client's request head, read for Pocket's own path.
//!
//! The path takes the common case only: HTTP/1.1 (or 1.0), a method that
//! is not CONNECT, no Transfer-Encoding, at most one plain Content-Length,
//! no Upgrade, no Expect, CRLF line ends, no obs-fold, within the
//! listener's head size. Anything else is [`Parsed::Hyper`]: the
//! connection is handed to hyper (with the bytes read so far), which
//! answers it exactly as it did before this path existed, 4xx included.
//! So this parser never refuses a request itself.

use super::Framing;

/// A request head that is this path's to serve.
pub struct RequestHead {
    /// Method, target (origin form, or absolute form as sent), version
    /// and header fields in the order sent.
    pub parts: http::request::Parts,
    /// [`Framing::Empty`] or [`Framing::Length`]: chunked requests go to
    /// hyper.
    pub framing: Framing,
    /// The client lets the connection stay open after this exchange:
    /// HTTP/1.1 without `Connection: close`, HTTP/1.0 with
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
}

/// What a look at the bytes read so far found.
pub enum Parsed {
    Complete(RequestHead),
    /// A head has begun and is not whole yet: read more.
    Partial,
    /// Not this path's (why, for the debug log): hand the connection to
    /// hyper with the bytes read so far.
    Hyper(&'static str),
}

/// Reads a request head from the start of `buf`. `head_size`: the
/// listener's limit in bytes (a head still partial past it goes to hyper,
/// which answers 431).
pub fn parse(buf: &[u8], head_size: usize) -> Parsed {
    let _ = (buf, head_size);
    todo!("wire::request::parse")
}

/// The request head for an HTTP/1.1 server: request line (origin form),
/// the fields of `parts` in order, then `Content-Length` if `framing` is
/// a length. `parts` has been through `proxy::forward::prepare_request`
/// (hop-by-hop gone, X-Forwarded-* added). Appends to `out`.
pub fn write(out: &mut Vec<u8>, parts: &http::request::Parts, framing: Framing) {
    let _ = (out, parts, framing);
    todo!("wire::request::write")
}

