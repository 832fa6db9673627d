//! A client's request head, read for Pocket's own path.
//!
//! The path takes the common case only: HTTP/1.1, a method that is not
//! CONNECT, an origin-form target, exactly one Host, no
//! Transfer-Encoding, at most one plain Content-Length, no Upgrade, no
//! Expect, CRLF line ends (so no obs-fold), within the listener's head
//! size. Anything else is [`Parsed::Hyper`]: the connection is handed to
//! hyper (with the bytes read so far), which answers it exactly as it did
//! before this path existed, 4xx included (the head check's 400 for a
//! bare LF, its 414/431 for a head over the size). So this parser never
//! refuses a request itself. HTTP/1.0 goes to hyper too for now.
//!
//! What hyper's server would make of a head this parser takes is made
//! here the same way (httparse, `Method::from_bytes`,
//! `Uri::from_maybe_shared`, `HeaderName::from_bytes`): the tests compare
//! the two on generated heads (`request_tests.rs`).

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::{Framing, MAX_HEADERS};

/// The longest target hyper takes (its `MAX_URI_LEN`; longer is its 414).
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

/// The largest Content-Length hyper takes (its `DecodedLength::MAX_LEN`;
/// larger is its 400).
const MAX_LENGTH: u64 = u64::MAX - 2;

/// A request head that is this path's to serve.
pub struct RequestHead {
    /// Method, target (origin form), version (HTTP/1.1) and header fields
    /// in the order sent, names lowercased: as hyper's server makes them.
    pub parts: http::request::Parts,
    /// [`Framing::Empty`] (no Content-Length) or [`Framing::Length`] (also
    /// `Length(0)` for a `Content-Length: 0` sent): chunked requests go to
    /// hyper.
    pub framing: Framing,
    /// The client lets the connection stay open after this exchange:
    /// HTTP/1.1 without a `close` token in any Connection line (RFC 9112
    /// §9.3; hyper's reading).
    pub keep_alive: bool,
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
}

/// What a look at the bytes read so far found.
// Returned once per head and moved into the request: a Box would be one
// more allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    Complete(RequestHead),
    /// A head has begun and is not whole yet: read more.
    Partial,
    /// Not this path's (why, for the debug log): hand the connection to
    /// hyper with the bytes read so far.
    Hyper(&'static str),
}

/// Reads a request head from the start of `buf`. `head_size`: the
/// listener's limit in bytes (a whole head may be that long; one still
/// partial at or past it goes to hyper, which answers 414 or 431, as the
/// head check in server/head_check.rs decides).
pub fn parse(buf: &[u8], head_size: usize) -> Parsed {
    // Empty lines before the request line (httparse skips them): rare,
    // and counted differently by the head check; hyper's.
    if let Some(b'\r' | b'\n') = buf.first() {
        return Parsed::Hyper("empty lines before the request line");
    }
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    // The plain head, read by `scan` as httparse reads it: every line of
    // it ends in CRLF (no look at the line ends needed). Anything else
    // is httparse's to read.
    let scanned = super::scan::request_line(buf).and_then(|(method, path, version, at)| {
        let (len, n) = super::scan::fields(buf, at, &mut fields)?;
        Some((method, path, version, len, n))
    });
    let len = if let Some((method, path, version, len, n)) = scanned {
        req.method = Some(method);
        req.path = Some(path);
        req.version = Some(version);
        // SAFETY: `scan::fields` wrote the first `n` slots.
        req.headers = unsafe {
            &mut *(&mut fields[..n] as *mut [MaybeUninit<httparse::Header<'_>>]
                as *mut [httparse::Header<'_>])
        };
        if len > head_size {
            return Parsed::Hyper("the head is over head_size");
        }
        len
    } else {
        let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            buf,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() < head_size => return Parsed::Partial,
            Ok(httparse::Status::Partial) => return Parsed::Hyper("the head is over head_size"),
            Err(_) => return Parsed::Hyper("httparse refuses the head"),
        };
        if len > head_size {
            return Parsed::Hyper("the head is over head_size");
        }
        let head = &buf[..len];
        // httparse takes a bare LF as a line end; the head check answers
        // 400 (request smuggling). Every LF must follow a CR (buf[0] is
        // not one): checked where httparse says the lines end, then, if
        // that is not plainly so, byte by byte.
        if !crlf_lines(head, req.headers)
            && memchr::memchr_iter(b'\n', head).any(|i| head[i - 1] != b'\r')
        {
            return Parsed::Hyper("a line ends in a bare LF");
        }
        len
    };
    let head = &buf[..len];
    if req.version != Some(1) {
        return Parsed::Hyper("not HTTP/1.1");
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Parsed::Hyper("httparse gave no method or target");
    };
    if method == "CONNECT" {
        return Parsed::Hyper("CONNECT");
    }
    if !target.starts_with('/') {
        return Parsed::Hyper("the target is not in origin form");
    }
    if target.len() > MAX_URI_LEN {
        return Parsed::Hyper("the target is too long");
    }
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return Parsed::Hyper("a method http refuses");
    };

    // One copy of the head: the target and the values are slices of it,
    // as hyper makes them (no allocation per value).
    let shared = Bytes::copy_from_slice(head);
    let Some(target) = within(&shared, head, target.as_bytes()) else {
        return Parsed::Hyper("httparse gave a target outside the head");
    };
    let Ok(uri) = http::Uri::from_maybe_shared(target) else {
        return Parsed::Hyper("a target http refuses");
    };

    // The fields Pocket adds (X-Forwarded-*) are written with the head
    // (`proxy::forward::write_prepared`), never put in this map.
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut hosts = 0u32;
    let mut length = None;
    let mut close = false;
    for field in req.headers.iter() {
        let name = match common_name(field.name.as_bytes()) {
            Some(name) => name,
            None => match HeaderName::from_bytes(field.name.as_bytes()) {
                Ok(name) => name,
                Err(_) => return Parsed::Hyper("a field name http refuses"),
            },
        };
        let raw = field.value;
        if name == header::HOST {
            hosts += 1;
        } else if name == header::CONTENT_LENGTH {
            if length.is_some() {
                return Parsed::Hyper("more than one Content-Length");
            }
            match digits(raw) {
                Some(n) if n <= MAX_LENGTH => length = Some(n),
                _ => return Parsed::Hyper("a Content-Length that is not plain digits"),
            }
        } else if name == header::CONNECTION {
            // hyper reads the tokens of a value that is visible ASCII only.
            if !raw
                .iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
            {
                return Parsed::Hyper("a Connection value that is not ASCII");
            }
            for token in raw.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Hyper("Connection: upgrade");
                }
            }
        } else if name == header::TRANSFER_ENCODING {
            return Parsed::Hyper("Transfer-Encoding");
        } else if name == header::UPGRADE {
            return Parsed::Hyper("Upgrade");
        } else if name == header::EXPECT {
            return Parsed::Hyper("Expect");
        }
        let Some(raw) = within(&shared, head, raw) else {
            return Parsed::Hyper("httparse gave a value outside the head");
        };
        // SAFETY (not memory safety: the `http` crate's promise that a
        // value holds only its bytes): httparse took the value, so it is
        // HTAB, SP, VCHAR or obs-text only (RFC 9110 §5.5), all of which
        // `HeaderValue` allows (it refuses only other controls and DEL);
        // a debug build checks it again.
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(raw) };
        headers.append(name, value);
    }
    if hosts != 1 {
        return Parsed::Hyper("no Host, or more than one");
    }

    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    parts.headers = headers;
    Parsed::Complete(RequestHead {
        parts,
        framing: length.map_or(Framing::Empty, Framing::Length),
        keep_alive: !close,
        len,
    })
}

/// Every line of the whole head `head` that httparse read ends in CRLF,
/// as far as a look at the ends of its lines shows (false: look at every
/// byte). httparse ends a line at its LF (CR LF or a bare LF) and takes a
/// CR nowhere else, and past the request line each field's name and the
/// blank line start right after an LF: a CR before each of those LFs makes every LF a CRLF's.
fn crlf_lines(head: &[u8], fields: &[httparse::Header<'_>]) -> bool {
    let base = head.as_ptr() as usize;
    let after_crlf = |line_start: usize| {
        line_start >= 2 && head[line_start - 1] == b'\n' && head[line_start - 2] == b'\r'
    };
    let len = head.len();
    // Empty lines before the request line, which httparse skips, are not
    // looked at below.
    len >= 2
        && !matches!(head[0], b'\r' | b'\n')
        && head[len - 2] == b'\r'
        && after_crlf(len - 2)
        && fields
            .iter()
            .all(|f| after_crlf((f.name.as_ptr() as usize).wrapping_sub(base)))
}

/// The names most requests carry, matched without `HeaderName::from_bytes`
/// (which lowercases into a buffer, then looks the name up): the same
/// standard names it gives, for any case. None: ask it.
fn common_name(name: &[u8]) -> Option<HeaderName> {
    let is = |n: &'static [u8]| super::name_is(name, n);
    Some(match name.len() {
        4 if is(b"host") => header::HOST,
        6 if is(b"accept") => header::ACCEPT,
        6 if is(b"cookie") => header::COOKIE,
        6 if is(b"origin") => header::ORIGIN,
        7 if is(b"referer") => header::REFERER,
        10 if is(b"user-agent") => header::USER_AGENT,
        10 if is(b"connection") => header::CONNECTION,
        12 if is(b"content-type") => header::CONTENT_TYPE,
        13 if is(b"cache-control") => header::CACHE_CONTROL,
        13 if is(b"authorization") => header::AUTHORIZATION,
        14 if is(b"content-length") => header::CONTENT_LENGTH,
        15 if is(b"accept-encoding") => header::ACCEPT_ENCODING,
        15 if is(b"accept-language") => header::ACCEPT_LANGUAGE,
        _ => return None,
    })
}

/// The bytes of `copy` where `part` (a slice of `head`) is in `head`.
fn within(copy: &Bytes, head: &[u8], part: &[u8]) -> Option<Bytes> {
    if part.is_empty() {
        return Some(Bytes::new());
    }
    let at = (part.as_ptr() as usize).checked_sub(head.as_ptr() as usize)?;
    let end = at.checked_add(part.len())?;
    (end <= copy.len()).then(|| copy.slice(at..end))
}

/// A Content-Length as hyper reads it (its `from_digits`): ASCII digits
/// only (no sign, no spaces, no list), no overflow.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The request head for an HTTP/1.1 server: request line (origin form),
/// the fields of `parts` in order, then `Content-Length` if `framing` is
/// a length. `parts` has been through `proxy::forward::prepare_request`
/// (hop-by-hop gone, X-Forwarded-* added). Appends to `out`.
///
/// Framing is the writer's: Content-Length and Transfer-Encoding in
/// `parts` are left out, and `framing` says what is written. As hyper's
/// client does: `Length(n)` writes `content-length: n`, `Length(0)` too
/// (a client's `Content-Length: 0` is kept), `Empty` writes nothing;
/// `Chunked` writes `transfer-encoding: chunked`; `UntilClose` (no
/// request is framed so) writes nothing.
pub fn write(out: &mut Vec<u8>, parts: &http::request::Parts, framing: Framing) {
    request_line(out, parts);
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    finish(out, framing);
}

/// The request line of [`write`]: method, the target in origin form,
/// `HTTP/1.1`.
pub(crate) fn request_line(out: &mut Vec<u8>, parts: &http::request::Parts) {
    let method = parts.method.as_str().as_bytes();
    // `path()` is "/" for an absolute form without one.
    let path = parts.uri.path().as_bytes();
    let query = parts.uri.query().map(str::as_bytes);
    out.reserve(method.len() + path.len() + query.map_or(0, |q| q.len() + 1) + 12);
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(path);
    if let Some(query) = query {
        out.push(b'?');
        out.extend_from_slice(query);
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// The framing field of [`write`] and the blank line.
pub(crate) fn finish(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            write_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, without a String.
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
