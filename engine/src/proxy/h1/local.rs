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
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
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
    response_head(&mut head, &parts, framing, false);
    let bytes = match framing {
        Framing::Length(_) if !head_only => body.take_full().unwrap_or_default(),
        _ => bytes::Bytes::new(),
    };
    write_both(io, &head, &bytes).await?;
    io.flush().await?;
    Ok(bytes.len() as u64)
}

fn closes_value(v: &HeaderValue) -> bool {
    v.as_bytes()
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
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

/// A private stand-in for `wire::write::response_head` until that lands
/// (wire-resp), written as hyper's server writes a head: the status line
/// (hyper's `<none>` for a status without a reason), the fields in the
/// map's order (`connection` values joined on one line), the framing
/// field, the date if there is none.
fn response_head(out: &mut Vec<u8>, parts: &http::response::Parts, framing: Framing, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("<none>")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    let (mut has_date, mut has_close) = (false, false);
    for name in parts.headers.keys() {
        if *name == header::CONTENT_LENGTH || *name == header::TRANSFER_ENCODING {
            continue;
        }
        let mut values = parts.headers.get_all(name).iter();
        if *name == header::CONNECTION {
            has_close |= closes(&parts.headers);
            out.extend_from_slice(b"connection: ");
            for (i, v) in values.enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(v.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            continue;
        }
        has_date |= *name == header::DATE;
        for v in values.by_ref() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    if let Framing::Length(n) = framing {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close && !has_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&http_date(std::time::SystemTime::now()));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// An IMF-fixdate (RFC 9110 §5.6.7), `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: std::time::SystemTime) -> Vec<u8> {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
    .into_bytes()
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
