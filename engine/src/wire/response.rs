//! A server's response head, read strictly. Pocket relays a response only
//! when it can prove where its body ends (RFC 9112 §6.3); anything else is
//! [`Parsed::Bad`], which the request path answers with a 502 and a
//! closed server connection (as nginx and HAProxy do), never relaying a
//! framing it cannot prove. The rules are the ones today's path applies
//! through hyper and `proxy::forward::prepare_response`, plus those of
//! llhttp's strict mode (`../shared/reliability-corpus/llhttp/response/`).

use super::Framing;

/// A response head to relay. The header lines stay in the read buffer;
/// `fields` says where, with the hop-by-hop and framing ones left out, so
/// relaying writes them as they came (no header map is built unless
/// `on_response` asks, [`ResponseHead::to_parts`]).
pub struct ResponseHead {
    pub status: u16,
    /// The body's framing, for this request (a HEAD's response has none).
    pub framing: Framing,
    /// The server keeps the connection open after this body.
    pub keep_alive: bool,
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
    /// The reason phrase, as a range of the buffer.
    pub reason: (u32, u32),
    /// Each relayed field line (name and value, without the CRLF), as a
    /// range of the buffer.
    pub fields: Vec<(u32, u32)>,
}

/// What a look at the bytes read so far found.
pub enum Parsed {
    Complete(ResponseHead),
    /// An interim response (1xx other than 101) of this many bytes: skip
    /// it and read the next head (as hyper does; at most
    /// `proxy::upstream_io::MAX_INTERIM` of them).
    Interim(usize),
    /// Read more.
    Partial,
    /// Not relayable, and why (words for the 502's body and the log).
    Bad(&'static str),
}

/// Reads a response head from the start of `buf`; `head_request`: the
/// request was HEAD (so no body follows whatever the head says);
/// `max`: the most a head may take, bytes (a longer one is `Bad`).
pub fn parse(buf: &[u8], head_request: bool, max: usize) -> Parsed {
    let _ = (buf, head_request, max);
    todo!("wire::response::parse")
}

impl ResponseHead {
    /// The head as `http` types, for `on_response` (which reads and edits
    /// it) or anything else that needs a map. `buf`: the buffer the head
    /// was parsed from. Framing and hop-by-hop fields are not in it (as
    /// `proxy::forward::prepare_response` leaves them out).
    pub fn to_parts(&self, buf: &[u8]) -> http::response::Parts {
        let _ = buf;
        todo!("wire::response::ResponseHead::to_parts")
    }
}
