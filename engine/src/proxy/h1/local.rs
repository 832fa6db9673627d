//! Pocket's own answers on the direct path (a script's `pocket.respond`,
//! refusals, errors: `proxy::local`), written to the client as hyper's
//! server would write them (status line, fields, `Date`, framing).

use std::io::IoSlice;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::proxy::body::ResponseBody;
use crate::wire::Framing;

/// Whether a response says `Connection: close` itself (a refusal of a
/// request Pocket will not frame, `proxy::local::refusal`): the client
/// connection ends after it, as hyper ends it (its server reads the
/// field as it writes the head).
pub fn closes(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(closes_value)
}

/// How hyper's server frames a body of `len` bytes known in advance
/// (hyper 1, `proto/h1/role.rs`, `Server::encode_headers`): no field and
/// no body for 204 and 304; for HEAD the length the body has, but no
/// `content-length: 0` for an empty one; else the length.
fn framing(status: StatusCode, len: u64, head_only: bool) -> Framing {
    if matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
        || (head_only && len == 0)
    {
        Framing::Empty
    } else {
        Framing::Length(len)
    }
}

/// Writes a response whose body is whole in memory (what `proxy::local`
/// makes). `head_only`: the request was HEAD (no body bytes, framing
/// fields as for GET). `closing`: `Connection: close`. Returns the bytes
/// of body written (for the access log). Errors: the write failed or
/// timed out (the caller closes the connection).
///
/// The bytes are those hyper's HTTP/1.1 server writes for the same
/// response (`tests` compare them): the fields in the map's order, with
/// `connection: close` added in the map as hyper adds it, then
/// `content-length`, then `date` if the response has none. One write
/// (vectored: head and body as they are). The caller also closes after a
/// response that says `Connection: close` itself ([`closes`]).
pub async fn write<W: AsyncWrite + Unpin>(
    io: &mut W,
    resp: Response<ResponseBody>,
    head_only: bool,
    closing: bool,
) -> std::io::Result<u64> {
    let (mut parts, mut body) = resp.into_parts();
    if closing {
        // As hyper's `enforce_version` does on a connection that will not
        // be kept: `close` appended to the field, or the field added.
        match parts.headers.entry(header::CONNECTION) {
            header::Entry::Occupied(mut e) => {
                if !e.iter().any(closes_value) {
                    e.append(HeaderValue::from_static("close"));
                }
            }
            header::Entry::Vacant(e) => {
                e.insert(HeaderValue::from_static("close"));
            }
        }
    }
    let len = body.full_len().unwrap_or(0);
    let framing = framing(parts.status, len, head_only);
    let mut head = Vec::with_capacity(128 + parts.headers.len() * 32);
    crate::wire::write::response_head(&mut head, &parts, framing, false);
    let bytes = match framing {
        Framing::Length(_) if !head_only => body.take_full().unwrap_or_default(),
        _ => bytes::Bytes::new(),
    };
    write_both(io, &head, &bytes).await?;
    io.flush().await?;
    Ok(bytes.len() as u64)
}

fn closes_value(v: &HeaderValue) -> bool {
    crate::wire::says_close(v.as_bytes())
}

/// `head` then `body`, with as few writes as the socket takes (one,
/// unless it is full).
async fn write_both<W: AsyncWrite + Unpin>(
    io: &mut W,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<()> {
    let (mut h, mut b) = (head, body);
    while !h.is_empty() {
        let n = if b.is_empty() {
            io.write(h).await?
        } else {
            io.write_vectored(&[IoSlice::new(h), IoSlice::new(b)])
                .await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        if n >= h.len() {
            b = &b[n - h.len()..];
            h = &[];
        } else {
            h = &h[n..];
        }
    }
    io.write_all(b).await
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
