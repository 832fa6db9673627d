//! The response heads Pocket writes to clients on its own path: one
//! buffer per head, written with one call (the request head for a server
//! is `wire::request::write`).
//!
//! What a client gets is what hyper's server wrote before this path
//! existed: `HTTP/1.1` whatever the server spoke (RFC 9112 §2.3), the
//! framing Pocket relays the body with, a `Date` when the response has
//! none (RFC 9110 §6.6.1: an origin with a clock sends one; hyper adds
//! it), `Connection: close` when the client connection ends after it.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

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
    let reason = buf
        .get(head.reason.0 as usize..head.reason.1 as usize)
        .unwrap_or_default();
    let fields_len: usize = head.fields.iter().map(|(a, b)| (b - a) as usize + 2).sum();
    out.reserve(16 + reason.len() + fields_len + 100);
    status_line(out, head.status, reason);
    // A field line that ends in CRLF right after its value is copied with
    // its CRLF, and lines that follow each other in `buf` go as one copy
    // (most heads relay every field: one copy for them all).
    let mut run = 0..0;
    for &(from, to) in &head.fields {
        let (from, to) = (from as usize, to as usize);
        let Some(line) = buf.get(from..to) else {
            continue;
        };
        if buf.get(to..to + 2) == Some(b"\r\n") {
            if run.end == from && !run.is_empty() {
                run.end = to + 2;
            } else {
                out.extend_from_slice(&buf[run]);
                run = from..to + 2;
            }
            continue;
        }
        out.extend_from_slice(&buf[run]);
        run = 0..0;
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&buf[run]);
    finish(out, head.framing, head.has_date, close);
}

/// The head for the client of a response made of `http` parts (one
/// `on_response` edited, or Pocket's own: local answers, errors). `framing`:
/// how its body goes ([`Framing::Empty`] writes no framing field: a
/// response to HEAD, 204, 304; an empty 200 is `Length(0)`). The reason
/// is the status's canonical one (`<none>` if it has none, as hyper
/// writes), or hyper's `ReasonPhrase` extension if
/// the parts carry one (a server's own reason, [`ResponseHead::to_parts`]).
/// Framing fields in `parts` are not written (Pocket's are), except a
/// `Content-Length` with `Framing::Empty` (a response to HEAD tells the
/// length it would have; not on 204/205). Adds a `Date` if it has none (as
/// hyper does). Appends to `out`.
pub fn response_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    framing: Framing,
    close: bool,
) {
    out.reserve(64 + parts.headers.len() * 32);
    let status = parts.status.as_u16();
    let reason = match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(r) => r.as_bytes(),
        // hyper's words for a status with no reason of its own.
        None => parts
            .status
            .canonical_reason()
            .unwrap_or("<none>")
            .as_bytes(),
    };
    status_line(out, status, reason);
    let keep_length = framing == Framing::Empty && !matches!(status, 204 | 205);
    let (mut has_date, mut has_close) = (false, false);
    for (name, value) in &parts.headers {
        if *name == http::header::TRANSFER_ENCODING
            || (*name == http::header::CONTENT_LENGTH && !keep_length)
        {
            continue;
        }
        if *name == http::header::DATE {
            has_date = true;
        } else if *name == http::header::CONNECTION {
            has_close |= super::says_close(value.as_bytes());
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    finish(out, framing, has_date, close && !has_close);
}

/// `HTTP/1.1 <status> <reason>` CRLF.
fn status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    let s = status.min(999);
    out.extend_from_slice(&[
        b'H',
        b'T',
        b'T',
        b'P',
        b'/',
        b'1',
        b'.',
        b'1',
        b' ',
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// Connection, framing, Date and the blank line, in the order hyper's
/// server writes them (its `connection: close` with the fields, then the
/// length it adds, then the date).
fn finish(out: &mut Vec<u8>, framing: Framing, has_date: bool, close: bool) {
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal.
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// An IMF-fixdate is 29 bytes (RFC 9110 §5.6.7).
const DATE_LEN: usize = 29;

thread_local! {
    /// The date of the current second, formatted once per second per
    /// thread (as hyper's server caches it).
    static DATE: RefCell<(u64, [u8; DATE_LEN])> = const { RefCell::new((u64::MAX, [0; DATE_LEN])) };
}

/// Appends the current time as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == DATE_LEN {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = second;
            } else {
                // Years past 9999: not cached, still written.
                out.extend_from_slice(text.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&cached.1);
    });
}

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
