//! The two line formats. Both are written straight into the worker's
//! buffer: no intermediate strings.
//!
//! JSON (one object per line, field names stable; `null` for what did not
//! happen): `time`, `id`, `client`, `listener`, `generation`, `method`,
//! `host`, `path`, `proto`, `status`, `bytes_in`, `bytes_out`, `pool`,
//! `server`, `retries` (`[{"server","cause"}]`), `timings` (`hooks_ms`,
//! `connect_ms`, `first_byte_ms`, `total_ms`), `termination`, then
//! `fields` (the script's) and `trace` when there are any.
//!
//! Text: `TIME ID CLIENT LISTENER gGEN "METHOD HOST PATH PROTO" STATUS TERM
//! in=N out=N pool=P server=S retries=N ms=HOOKS/CONNECT/FIRST/TOTAL
//! [retried="S: cause, ..."] [name=value ...] [trace="..."]`; `-` for
//! what did not happen.
//!
//! A TCP-mode connection (tcp/) has the same fields: `"TCP"` in place of
//! the request (JSON: `proto` `"TCP"`, `method`, `host`, `path` and
//! `status` null), `in`/`out` the bytes client to server and server to
//! client, no first-byte time, and the connection's whole duration as
//! its total.

use std::io::Write;

use super::time::push_rfc3339;
use crate::observe::Exchange;

/// The line format (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// `text` or `json`; None for anything else.
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Appends `ex`'s line, newline included.
pub fn line(buf: &mut Vec<u8>, ex: &Exchange, format: Format) {
    match format {
        Format::Json => json(buf, ex),
        Format::Text => text(buf, ex),
    }
    buf.push(b'\n');
}

fn proto(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// The host the request was for, as Pocket and the script took it: the
/// target's authority when it has one (an absolute-form target, whose
/// authority a server uses over `Host`, RFC 9112 section 3.2.2; HTTP/2's
/// `:authority`, RFC 9113 section 8.3.1), else `Host`, else nothing.
fn host(ex: &Exchange) -> Option<&[u8]> {
    match ex.target.authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => ex.host.as_ref().map(|h| h.as_bytes()),
    }
}

fn path(ex: &Exchange) -> &str {
    ex.target.path_and_query().map_or("/", |p| p.as_str())
}

fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

fn push_hex(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// The request id as `RequestId`'s Display writes it (`worker-seq`, seq
/// in hex), without the formatting machinery.
fn push_id(buf: &mut Vec<u8>, ex: &Exchange) {
    push_u64(buf, ex.id.worker as u64);
    buf.push(b'-');
    push_hex(buf, ex.id.seq);
}

/// `ip:port` (IPv6: `[ip]:port`), as SocketAddr's Display writes it; IPv4
/// by hand, the common case.
fn push_addr(buf: &mut Vec<u8>, addr: &std::net::SocketAddr) {
    match addr {
        std::net::SocketAddr::V4(a) => {
            let [a0, a1, a2, a3] = a.ip().octets();
            for (i, o) in [a0, a1, a2, a3].into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                push_u64(buf, o as u64);
            }
            buf.push(b':');
            push_u64(buf, a.port() as u64);
        }
        other => {
            let _ = write!(buf, "{other}");
        }
    }
}

/// Milliseconds with three decimals (microseconds).
fn push_ms(buf: &mut Vec<u8>, ms: f64) {
    let us = (ms.max(0.0) * 1000.0).round() as u64;
    push_u64(buf, us / 1000);
    let frac = us % 1000;
    buf.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// A JSON string; bytes that are not UTF-8 are taken as Latin-1 (header
/// values may carry them), so every line is valid JSON.
fn json_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.push(b'"');
    // The usual case, printable ASCII with nothing to escape: one pass,
    // copied as is.
    if s.iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        buf.extend_from_slice(s);
        buf.push(b'"');
        return;
    }
    let text = std::str::from_utf8(s);
    let push_char = |buf: &mut Vec<u8>, c: char| match c {
        '"' => buf.extend_from_slice(b"\\\""),
        '\\' => buf.extend_from_slice(b"\\\\"),
        '\n' => buf.extend_from_slice(b"\\n"),
        '\r' => buf.extend_from_slice(b"\\r"),
        '\t' => buf.extend_from_slice(b"\\t"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            let _ = write!(buf, "\\u{:04x}", c as u32);
        }
        c => {
            let mut b = [0u8; 4];
            buf.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
    };
    match text {
        Ok(t)
            if !t
                .bytes()
                .any(|b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f) =>
        {
            buf.extend_from_slice(t.as_bytes())
        }
        Ok(t) => t.chars().for_each(|c| push_char(buf, c)),
        Err(_) => s.iter().for_each(|&b| push_char(buf, b as char)),
    }
    buf.push(b'"');
}

fn json_opt_str(buf: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => json_str(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
}

fn json_opt_ms(buf: &mut Vec<u8>, ms: Option<f64>) {
    match ms {
        Some(ms) => push_ms(buf, ms),
        None => buf.extend_from_slice(b"null"),
    }
}

fn json(buf: &mut Vec<u8>, ex: &Exchange) {
    buf.extend_from_slice(b"{\"time\":\"");
    push_rfc3339(buf, ex.started_unix_ms);
    buf.extend_from_slice(b"\",\"id\":\"");
    push_id(buf, ex);
    buf.extend_from_slice(b"\",\"client\":\"");
    push_addr(buf, &ex.client);
    buf.extend_from_slice(b"\",\"listener\":");
    json_str(buf, ex.listener.as_bytes());
    buf.extend_from_slice(b",\"generation\":");
    push_u64(buf, ex.generation);
    if ex.tcp {
        // A whole TCP connection: no request to say anything of.
        buf.extend_from_slice(
            b",\"method\":null,\"host\":null,\"path\":null,\"proto\":\"TCP\",\"status\":",
        );
    } else if ex.bad_request {
        // No request was read: nothing to say of it.
        buf.extend_from_slice(
            b",\"method\":\"<BADREQ>\",\"host\":null,\"path\":null,\"proto\":null,\"status\":",
        );
    } else {
        buf.extend_from_slice(b",\"method\":");
        json_str(buf, ex.method.as_str().as_bytes());
        buf.extend_from_slice(b",\"host\":");
        json_opt_str(buf, host(ex));
        buf.extend_from_slice(b",\"path\":");
        json_str(buf, path(ex).as_bytes());
        buf.extend_from_slice(b",\"proto\":\"");
        buf.extend_from_slice(proto(ex.version).as_bytes());
        buf.extend_from_slice(b"\",\"status\":");
    }
    if ex.status == 0 {
        buf.extend_from_slice(b"null");
    } else {
        push_u64(buf, ex.status as u64);
    }
    buf.extend_from_slice(b",\"bytes_in\":");
    push_u64(buf, ex.bytes_in);
    buf.extend_from_slice(b",\"bytes_out\":");
    push_u64(buf, ex.bytes_out);
    buf.extend_from_slice(b",\"pool\":");
    json_opt_str(buf, ex.pool.as_deref().map(str::as_bytes));
    buf.extend_from_slice(b",\"server\":");
    json_opt_str(buf, ex.server.as_deref().map(str::as_bytes));
    buf.extend_from_slice(b",\"retries\":[");
    for (i, r) in ex.retries.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"server\":");
        json_str(buf, r.server.as_bytes());
        buf.extend_from_slice(b",\"cause\":");
        json_str(buf, r.cause.as_bytes());
        buf.push(b'}');
    }
    buf.extend_from_slice(b"],\"timings\":{\"hooks_ms\":");
    push_ms(buf, ex.hooks_us as f64 / 1000.0);
    buf.extend_from_slice(b",\"connect_ms\":");
    json_opt_ms(buf, ex.connect_ms);
    buf.extend_from_slice(b",\"first_byte_ms\":");
    json_opt_ms(buf, ex.first_byte_ms);
    buf.extend_from_slice(b",\"total_ms\":");
    push_ms(buf, ex.total_ms);
    buf.extend_from_slice(b"},\"termination\":\"");
    buf.extend_from_slice(&ex.termination.letters());
    buf.push(b'"');
    if let Some(tls) = &ex.tls {
        // Only on TLS listeners: plain lines stay as they were.
        buf.extend_from_slice(b",\"tls_version\":\"");
        buf.extend_from_slice(tls.version.as_bytes());
        buf.extend_from_slice(b"\",\"sni\":");
        json_opt_str(buf, tls.sni.as_deref().map(str::as_bytes));
    }
    if !ex.script_fields.is_empty() {
        buf.extend_from_slice(b",\"fields\":{");
        for (i, (name, value)) in ex.script_fields.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            json_str(buf, name.as_bytes());
            buf.push(b':');
            json_str(buf, value.as_bytes());
        }
        buf.push(b'}');
    }
    if let Some(trace) = &ex.trace {
        buf.extend_from_slice(b",\"trace\":");
        json_str(buf, trace.as_bytes());
    }
    buf.push(b'}');
}

/// Text: printable ASCII as is; anything else (spaces, quotes, controls,
/// other bytes) as `\xHH`, so a field never splits the line.
fn text_token(buf: &mut Vec<u8>, s: &[u8]) {
    if s.is_empty() {
        buf.push(b'-');
        return;
    }
    for &b in s {
        if (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            buf.push(b);
        } else {
            let _ = write!(buf, "\\x{b:02x}");
        }
    }
}

/// A quoted value: printable ASCII and spaces as is (`"` and `\`
/// escaped), other bytes as `\xHH`.
fn text_quoted(buf: &mut Vec<u8>, s: &[u8]) {
    buf.push(b'"');
    for &b in s {
        match b {
            b'"' | b'\\' => buf.extend_from_slice(&[b'\\', b]),
            0x20..=0x7e => buf.push(b),
            _ => {
                let _ = write!(buf, "\\x{b:02x}");
            }
        }
    }
    buf.push(b'"');
}

fn text_opt_ms(buf: &mut Vec<u8>, ms: Option<f64>) {
    match ms {
        Some(ms) => push_ms(buf, ms),
        None => buf.push(b'-'),
    }
}

fn text(buf: &mut Vec<u8>, ex: &Exchange) {
    push_rfc3339(buf, ex.started_unix_ms);
    buf.push(b' ');
    push_id(buf, ex);
    buf.push(b' ');
    push_addr(buf, &ex.client);
    buf.push(b' ');
    text_token(buf, ex.listener.as_bytes());
    buf.extend_from_slice(b" g");
    push_u64(buf, ex.generation);
    if ex.tcp {
        buf.extend_from_slice(b" \"TCP\" ");
    } else if ex.bad_request {
        buf.extend_from_slice(b" \"<BADREQ>\" ");
    } else {
        buf.extend_from_slice(b" \"");
        buf.extend_from_slice(ex.method.as_str().as_bytes());
        buf.push(b' ');
        text_token(buf, host(ex).unwrap_or(b""));
        buf.push(b' ');
        text_token(buf, path(ex).as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(proto(ex.version).as_bytes());
        buf.extend_from_slice(b"\" ");
    }
    if ex.status == 0 {
        buf.push(b'-');
    } else {
        push_u64(buf, ex.status as u64);
    }
    buf.push(b' ');
    buf.extend_from_slice(&ex.termination.letters());
    buf.extend_from_slice(b" in=");
    push_u64(buf, ex.bytes_in);
    buf.extend_from_slice(b" out=");
    push_u64(buf, ex.bytes_out);
    buf.extend_from_slice(b" pool=");
    text_token(buf, ex.pool.as_deref().unwrap_or("").as_bytes());
    buf.extend_from_slice(b" server=");
    text_token(buf, ex.server.as_deref().unwrap_or("").as_bytes());
    buf.extend_from_slice(b" retries=");
    push_u64(buf, ex.retries.len() as u64);
    buf.extend_from_slice(b" ms=");
    push_ms(buf, ex.hooks_us as f64 / 1000.0);
    buf.push(b'/');
    text_opt_ms(buf, ex.connect_ms);
    buf.push(b'/');
    text_opt_ms(buf, ex.first_byte_ms);
    buf.push(b'/');
    push_ms(buf, ex.total_ms);
    if !ex.retries.is_empty() {
        buf.extend_from_slice(b" retried=\"");
        for (i, r) in ex.retries.iter().enumerate() {
            if i > 0 {
                buf.extend_from_slice(b", ");
            }
            let _ = write!(buf, "{}: {}", r.server, r.cause);
        }
        buf.push(b'"');
    }
    for (name, value) in &ex.script_fields {
        buf.push(b' ');
        buf.extend_from_slice(name.as_bytes());
        buf.push(b'=');
        text_quoted(buf, value.as_bytes());
    }
    if let Some(trace) = &ex.trace {
        buf.extend_from_slice(b" trace=");
        text_quoted(buf, trace.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_addresses_read_as_their_display() {
        let mut b = Vec::new();
        push_hex(&mut b, 0x1a2b);
        b.push(b' ');
        for a in ["10.0.0.255:8080", "[::1]:443"] {
            push_addr(&mut b, &a.parse().unwrap());
            b.push(b' ');
        }
        push_ms(&mut b, 1.23456);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "1a2b 10.0.0.255:8080 [::1]:443 1.235"
        );
    }

    #[test]
    fn json_strings_stay_valid() {
        let mut b = Vec::new();
        json_str(&mut b, b"a\"b\\c\n\x01\xe9");
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "\"a\\\"b\\\\c\\n\\u0001\u{e9}\""
        );
    }
}
