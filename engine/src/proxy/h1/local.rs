//! Pocket's own answers on the direct path (a script's `pocket.respond`,
//! refusals, errors: `proxy::local`), written to the client as hyper's
//! server would write them (status line, fields, `Date`, framing).

use http::Response;
use tokio::io::AsyncWrite;

use crate::proxy::body::ResponseBody;

/// Writes a response whose body is whole in memory (what `proxy::local`
/// makes). `head_only`: the request was HEAD (no body bytes, framing
/// fields as for GET). `closing`: `Connection: close`. Returns the bytes
/// of body written (for the access log). Errors: the write failed or
/// timed out (the caller closes the connection).
pub async fn write<W: AsyncWrite + Unpin>(
    io: &mut W,
    resp: Response<ResponseBody>,
    head_only: bool,
    closing: bool,
) -> std::io::Result<u64> {
    let _ = (io, resp, head_only, closing);
    todo!("proxy::h1::local::write")
}
