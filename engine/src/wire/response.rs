//! A server's response head, read strictly. Pocket relays a response only
//! when it can prove where its body ends (RFC 9112 §6.3); anything else is
//! [`Parsed::Bad`], which the request path answers with a 502 and a
//! closed server connection (as nginx and HAProxy do), never relaying a
//! framing it cannot prove. The rules are the ones today's path applies
//! through hyper and `proxy::forward::prepare_response`, plus those of
//! llhttp's strict mode (`../shared/reliability-corpus/llhttp/response/`):
//!
//! - every line ends in CRLF (`proxy::upstream_io`: a bare LF is a 502);
//! - the head is what httparse reads with hyper's client settings (no
//!   obs-fold, no space before a colon, one space after the version and
//!   the status, at most [`super::MAX_HEADERS`] fields), HTTP/1.0 or 1.1,
//!   a status from 100 to 999;
//! - a 1xx other than 101 is [`Parsed::Interim`]; a 101 is refused (no
//!   client of this path asked for an upgrade);
//! - Transfer-Encoding must be exactly `chunked` (one coding, on an
//!   HTTP/1.1 response); it overrides Content-Length (RFC 9112 §6.3), which
//!   is then not relayed;
//! - Content-Length: digits only, every line and list element the same
//!   number (RFC 9110 §8.6), at most `u64::MAX - 2` (hyper's bound);
//!   checked on every final response, even where no body follows (hyper
//!   does not look at it there; llhttp does);
//! - no body for 204, 304 and a response to HEAD; a response with neither
//!   Content-Length nor chunked runs until the server closes.

use std::mem::MaybeUninit;

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
    /// One of them is `Date` (so the client gets it, not Pocket's).
    pub has_date: bool,
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

/// The words of today's 502s (proxy/mod.rs, proxy/forward.rs, hyper's
/// errors), so a client or a log reader sees the same either way.
pub mod why {
    /// proxy/mod.rs (upstream_io's bare-LF check).
    pub const BARE_LF: &str = "a line of its head ends in LF, not CRLF";
    /// forward::prepare_response.
    pub const SWITCHING: &str = "101 Switching Protocols for a request that asked for no upgrade";
    /// forward::prepare_response.
    pub const TRANSFER_CODING: &str = "a Transfer-Encoding other than chunked";
    /// hyper: Transfer-Encoding on an HTTP/1.0 response.
    pub const TE_ON_HTTP10: &str = "unexpected transfer-encoding parsed";
    /// hyper: Content-Length not digits, or values that disagree.
    pub const CONTENT_LENGTH: &str = "invalid content-length parsed";
    /// hyper: longer than the head limit, or too many fields.
    pub const TOO_LARGE: &str = "message head is too large";
    /// hyper's words for httparse's errors.
    pub const VERSION: &str = "invalid HTTP version parsed";
    pub const STATUS: &str = "invalid HTTP status-code parsed";
    pub const HEADER: &str = "invalid HTTP header parsed";
}

/// Reads a response head from the start of `buf`; `head_request`: the
/// request was HEAD (so no body follows whatever the head says);
/// `max`: the most a head may take, bytes (a longer one is `Bad`).
pub fn parse(buf: &[u8], head_request: bool, max: usize) -> Parsed {
    parse_into(buf, head_request, max, Vec::new())
}

/// [`parse`], with a `fields` vector to fill (cleared first), so that a
/// connection can reuse one allocation from head to head (take it back
/// from [`ResponseHead::fields`] when done).
pub fn parse_into(buf: &[u8], head_request: bool, max: usize, fields: Vec<(u32, u32)>) -> Parsed {
    // The common case first: a whole head whose lines all end in CRLF,
    // httparse run once over it and the lines' ends checked where
    // httparse says they are (no scan of every byte for a bare LF).
    // Anything else (a partial head, an error, a bare LF anywhere) is
    // read by [`parse_checked`], which gives every verdict as before.
    let start = skip_empty_lines(buf);
    // httparse skips bare-LF lines before the status line itself: only a
    // status line right there is for this path.
    if buf.get(start) == Some(&b'H') {
        let mut headers =
            [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; super::MAX_HEADERS];
        // The plain head, read by `scan` as httparse reads it (every line
        // a CRLF's, so no look at the line ends either).
        if let Some((version, code, at)) = super::scan::status_line(buf, start) {
            if let Some((len, n)) = super::scan::fields(buf, at, &mut headers) {
                // SAFETY: `scan::fields` wrote the first `n` slots.
                let read = unsafe {
                    &mut *(&mut headers[..n] as *mut [MaybeUninit<httparse::Header<'_>>]
                        as *mut [httparse::Header<'_>])
                };
                let res = httparse::Response {
                    version: Some(version),
                    code: Some(code),
                    reason: None,
                    headers: read,
                };
                return finish(buf, &res, start, len, head_request, max, fields);
            }
        }
        let mut res = httparse::Response::new(&mut []);
        if let Ok(httparse::Status::Complete(len)) = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, &mut headers)
        {
            if crlf_lines(buf, &res, len) {
                return finish(buf, &res, start, len, head_request, max, fields);
            }
        }
    }
    parse_checked(buf, head_request, max, fields)
}

/// Every line of the whole head `buf[..len]` that httparse read ends in
/// CRLF. httparse ends a line at its LF (CR LF or a bare LF) and takes a
/// CR nowhere else, and every line but the status line starts right
/// after an LF (a field's name, the blank line; obs-fold is refused): so
/// the byte before each of those starts is the LF, and a CR before it
/// makes every LF of the head part of a CRLF.
fn crlf_lines(buf: &[u8], res: &httparse::Response<'_, '_>, len: usize) -> bool {
    let base = buf.as_ptr() as usize;
    let ends_in_crlf = |line_start: usize| {
        line_start >= 2 && buf[line_start - 1] == b'\n' && buf[line_start - 2] == b'\r'
    };
    len <= buf.len()
        && len >= 2
        && ends_in_crlf(len - 2)
        && buf[len - 2] == b'\r'
        && res
            .headers
            .iter()
            .all(|h| ends_in_crlf(h.name.as_ptr() as usize - base))
}

/// Where the status line starts: past leading empty lines (CRLF only; a
/// bare LF there is for [`parse_checked`]).
fn skip_empty_lines(buf: &[u8]) -> usize {
    let mut start = 0;
    while buf.len() >= start + 2 && buf[start] == b'\r' && buf[start + 1] == b'\n' {
        start += 2;
    }
    start
}

/// [`parse_into`] for any bytes: lines first, so a bare LF anywhere in
/// the head is refused before anything else is said about it (as
/// upstream_io checks the bytes before hyper parses them). Leading empty
/// lines are skipped, as httparse does.
fn parse_checked(buf: &[u8], head_request: bool, max: usize, fields: Vec<(u32, u32)>) -> Parsed {
    let start = skip_empty_lines(buf);
    let mut end = None;
    let mut line_start = start;
    for lf in memchr::memchr_iter(b'\n', &buf[start..]) {
        let lf = start + lf;
        if lf == 0 || buf[lf - 1] != b'\r' {
            return Parsed::Bad(why::BARE_LF);
        }
        if lf == line_start + 1 {
            end = Some(lf + 1);
            break;
        }
        line_start = lf + 1;
    }
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; super::MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let scanned = match end {
        Some(e) => &buf[..e],
        None => buf,
    };
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        scanned,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if end.is_some() {
                // The blank line is there but httparse wants more: cannot
                // be, short of a bug; refuse rather than wait.
                return Parsed::Bad(why::HEADER);
            }
            if buf.len() >= max.min(u32::MAX as usize) {
                return Parsed::Bad(why::TOO_LARGE);
            }
            return Parsed::Partial;
        }
        Err(httparse::Error::Version) => return Parsed::Bad(why::VERSION),
        Err(httparse::Error::Status) => return Parsed::Bad(why::STATUS),
        Err(httparse::Error::TooManyHeaders) => return Parsed::Bad(why::TOO_LARGE),
        Err(_) => return Parsed::Bad(why::HEADER),
    };
    finish(buf, &res, start, len, head_request, max, fields)
}

/// The rules past httparse, for a whole head of `len` bytes whose status
/// line starts at `start`.
fn finish(
    buf: &[u8],
    res: &httparse::Response<'_, '_>,
    start: usize,
    len: usize,
    head_request: bool,
    max: usize,
    mut fields: Vec<(u32, u32)>,
) -> Parsed {
    // Ranges are u32: no head that long is taken anyway.
    if len > max.min(u32::MAX as usize) {
        return Parsed::Bad(why::TOO_LARGE);
    }
    let (Some(version), Some(status)) = (res.version, res.code) else {
        return Parsed::Bad(why::STATUS);
    };
    if !(100..=999).contains(&status) {
        return Parsed::Bad(why::STATUS);
    }
    if status == 101 {
        return Parsed::Bad(why::SWITCHING);
    }
    if status < 200 {
        return Parsed::Interim(len);
    }

    let base = buf.as_ptr() as usize;
    let offset = |p: *const u8| p as usize - base;
    // "HTTP/1.1 200" is 12 bytes from the status line's start; a reason
    // follows a space, up to the CR.
    let status_line = start;
    let reason = {
        let from = status_line + 12;
        if buf.get(from) == Some(&b' ') {
            let to = from + 1 + memchr::memchr(b'\r', &buf[from + 1..len]).unwrap_or(0);
            (from as u32 + 1, to as u32)
        } else {
            (from as u32, from as u32)
        }
    };

    // One pass: framing and connection fields read, the others kept as
    // relayed (hop-by-hop and framing fields left out).
    let mut te_lines = 0;
    let mut te_chunked = false;
    let mut length: Option<u64> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut conn_lists_names = false;
    let mut has_date = false;
    fields.clear();
    fields.reserve(res.headers.len());
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        match kind(name) {
            Kind::TransferEncoding => {
                // Exactly one coding in all, `chunked` (forward.rs refuses
                // the others; hyper reads `chunked,` or `gzip` as a body
                // until the close, which Pocket would have to re-frame).
                te_lines += 1;
                te_chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
            Kind::ContentLength => {
                for n in h.value.split(|b| *b == b',') {
                    let Some(n) = digits(n.trim_ascii()) else {
                        return Parsed::Bad(why::CONTENT_LENGTH);
                    };
                    if length.is_some_and(|l| l != n) {
                        return Parsed::Bad(why::CONTENT_LENGTH);
                    }
                    length = Some(n);
                }
            }
            Kind::Connection => {
                for token in list(h.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive_token = true;
                    } else {
                        conn_lists_names = true;
                    }
                }
            }
            Kind::HopByHop => {}
            kind => {
                has_date |= kind == Kind::Date;
                let from = offset(name.as_ptr());
                let value_end =
                    (offset(h.value.as_ptr()) + h.value.len()).max(from + name.len() + 1);
                fields.push((from as u32, value_end as u32));
            }
        }
    }
    let te_seen = te_lines > 0;
    if te_seen {
        if version == 0 {
            return Parsed::Bad(why::TE_ON_HTTP10);
        }
        if te_lines > 1 || !te_chunked {
            return Parsed::Bad(why::TRANSFER_CODING);
        }
    }
    let no_body = head_request || status == 204 || status == 304;
    let framing = if no_body {
        Framing::Empty
    } else if te_seen {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    // Chunked with a Content-Length too: read by its chunks (RFC 9112
    // §6.3 point 3), but a likely smuggling or splitting attempt there,
    // "ought to be handled as an error": the connection is not reused,
    // whatever a box between framed it by.
    let both = te_seen && length.is_some() && !no_body;
    let keep_alive =
        framing != Framing::UntilClose && !close && !both && (version == 1 || keep_alive_token);

    // A response to HEAD keeps its Content-Length (one line, one number),
    // as hyper's server passes it on; 204 and 205 never carry one
    // (proxy/mod.rs deliver), and a 304's is dropped (hyper's server
    // drops it for a body-less answer). Seen on today's path with a raw
    // origin: GET 304 + `Content-Length: 5` -> none; HEAD 304 ->
    // `content-length: 5`; HEAD `5, 5` -> `5`; HEAD 204 or 205 -> none;
    // HEAD chunked -> none.
    let keep_length = head_request && !te_seen && status != 204 && status != 205;
    if conn_lists_names || (keep_length && length.is_some()) {
        // Rare: the fields again, with those rules.
        has_date = relayed_again(res, base, keep_length, conn_lists_names, &mut fields);
    }
    Parsed::Complete(ResponseHead {
        status,
        framing,
        keep_alive,
        len,
        reason,
        fields,
        has_date,
    })
}

/// The relayed fields when a kept Content-Length or the names a
/// Connection line lists change them: a field at a time, in order.
/// Whether `Date` is among them.
fn relayed_again(
    res: &httparse::Response<'_, '_>,
    base: usize,
    keep_length: bool,
    conn_lists_names: bool,
    fields: &mut Vec<(u32, u32)>,
) -> bool {
    let offset = |p: *const u8| p as usize - base;
    let mut kept_length = false;
    let mut has_date = false;
    fields.clear();
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        let from = offset(name.as_ptr());
        let name_end = from + name.len();
        let value_end = (offset(h.value.as_ptr()) + h.value.len()).max(name_end + 1);
        if name.len() == 14 && name.eq_ignore_ascii_case(b"content-length") {
            if keep_length && !kept_length {
                kept_length = true;
                // Up to the end of its first number (a list's elements are
                // all the same).
                let v = offset(h.value.as_ptr());
                let first = h
                    .value
                    .iter()
                    .position(|b| *b == b',')
                    .unwrap_or(h.value.len());
                let end = v + h.value[..first].trim_ascii_end().len();
                fields.push((from as u32, end as u32));
            }
            continue;
        }
        if is_hop_by_hop(name) {
            continue;
        }
        if conn_lists_names && listed_in_connection(res.headers, name) {
            continue;
        }
        has_date |= kind(name) == Kind::Date;
        fields.push((from as u32, value_end as u32));
    }
    has_date
}

/// What a field's name says to this parser.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    TransferEncoding,
    ContentLength,
    Connection,
    /// Hop-by-hop, and not one of the above.
    HopByHop,
    Date,
    Other,
}

/// The field's kind, by its length first (most names fall through with
/// one comparison of a length).
fn kind(name: &[u8]) -> Kind {
    let is = |n: &'static [u8]| super::name_is(name, n);
    match name.len() {
        2 if is(b"te") => Kind::HopByHop,
        4 if is(b"date") => Kind::Date,
        7 if is(b"trailer") || is(b"upgrade") => Kind::HopByHop,
        10 if is(b"connection") => Kind::Connection,
        10 if is(b"keep-alive") => Kind::HopByHop,
        14 if is(b"content-length") => Kind::ContentLength,
        16 if is(b"proxy-connection") => Kind::HopByHop,
        17 if is(b"transfer-encoding") => Kind::TransferEncoding,
        _ => Kind::Other,
    }
}

/// The non-empty elements of a comma-separated list (RFC 9110 §5.6.1),
/// trimmed. Empty elements are skipped, as the list rule allows.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A Content-Length element: 1*DIGIT up to hyper's bound.
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (n <= u64::MAX - 2).then_some(n)
}

/// RFC 9110 §7.6.1 hop-by-hop fields (forward.rs's list).
fn is_hop_by_hop(name: &[u8]) -> bool {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        _ => false,
    }
}

/// `name` is listed in a Connection field (so it is hop-by-hop too).
fn listed_in_connection(headers: &[httparse::Header<'_>], name: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| list(h.value).any(|t| t.eq_ignore_ascii_case(name)))
}

impl ResponseHead {
    /// The head as `http` types, for `on_response` (which reads and edits
    /// it) or anything else that needs a map. `buf`: the buffer the head
    /// was parsed from. Framing and hop-by-hop fields are not in it (as
    /// `proxy::forward::prepare_response` leaves them out). A reason other
    /// than the status's canonical one rides along as hyper's
    /// `ReasonPhrase` extension, as hyper's client puts it there.
    pub fn to_parts(&self, buf: &[u8]) -> http::response::Parts {
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status =
            http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        parts.version = http::Version::HTTP_11;
        parts.headers.reserve(self.fields.len());
        for &(from, to) in &self.fields {
            let Some((name, value)) = field(buf, from, to) else {
                continue;
            };
            let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name),
                http::HeaderValue::from_bytes(value),
            ) else {
                continue;
            };
            parts.headers.append(name, value);
        }
        let reason = &buf[self.reason.0 as usize..self.reason.1 as usize];
        if Some(reason) != parts.status.canonical_reason().map(str::as_bytes) {
            if let Ok(r) = hyper::ext::ReasonPhrase::try_from(reason) {
                parts.extensions.insert(r);
            }
        }
        parts
    }
}

/// A relayed field line's name and value (trimmed) in `buf`.
pub(crate) fn field(buf: &[u8], from: u32, to: u32) -> Option<(&[u8], &[u8])> {
    let line = buf.get(from as usize..to as usize)?;
    let colon = memchr::memchr(b':', line)?;
    Some((&line[..colon], line[colon + 1..].trim_ascii()))
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
