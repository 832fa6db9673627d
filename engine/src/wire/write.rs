//! The response heads Pocket writes to clients on its own path: one
//! buffer per head, written with one call (the request head for a server
//! is `wire::request::write`).

use super::response::ResponseHead;
use super::Framing;

/// The head for the client of a relayed response: `HTTP/1.1`, the status
/// and reason as the server sent them, its relayed fields as they came
/// (from `buf`, the buffer `head` was parsed from), the framing for the
/// client (`Content-Length`, `Transfer-Encoding: chunked`, or none for a
/// body that ends at the close), a `Date` if the server sent none (as
/// hyper's server adds one) and `Connection: close` if `close`. Appends
/// to `out`.
pub fn relayed_response_head(out: &mut Vec<u8>, head: &ResponseHead, buf: &[u8], close: bool) {
    let _ = (out, head, buf, close);
    todo!("wire::write::relayed_response_head")
}

/// The head for the client of a response made of `http` parts (one
/// `on_response` edited, or Pocket's own: local answers, errors). `framing`:
/// how its body goes. Adds a `Date` if it has none (as hyper does). Appends
/// to `out`.
pub fn response_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    framing: Framing,
    close: bool,
) {
    let _ = (out, parts, framing, close);
    todo!("wire::write::response_head")
}
