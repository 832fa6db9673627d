//! The request `pocket explain` is given on its command line:
//! `"GET http://host/path?q"` (or `"GET /path"` with a `Host` header) and
//! `-H "Name: value"` headers, read as an HTTP/1.1 client would send them
//! (RFC 9112 §3: method SP request-target [SP HTTP-version]).
//!
//! The listener is not re-implemented here: the request is written out as
//! the bytes a client sends, those bytes go through the listener's own
//! head check (its `head_size`: 414 / 431) and then through hyper, set as
//! the listener sets it, over an in-memory pipe. What hyper hands on is
//! what the proxy gets (an absolute-form target stays absolute, a
//! lower-case method stays lower-case, a port stays in the host), and the
//! proxy's own `forward::refuse` and `target::settle` then run in
//! [`crate::proxy::decide::decide_traced`]. What hyper refuses is answered
//! as hyper answers it.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Method, Request, Response};
use http_body_util::Empty;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::context::RequestId;
use crate::script::api::request::RequestView;
use crate::server::head_check::HeadCheck;

/// What the listener makes of the request.
pub enum Heard {
    /// A request, handed to the proxy as hyper hands it.
    Request(Box<RequestView>),
    /// Answered by the listener before a request exists: no hook runs.
    /// `why` is the body the client gets, or what hyper found wrong.
    Refused { status: u16, why: String },
}

/// The request's head as the listener (`head_size` bytes at most) hears
/// it, or a sentence saying what is wrong with the input and what is
/// accepted (`pocket explain` exits 2).
pub fn build(
    line: &str,
    headers: &[String],
    peer: IpAddr,
    listener: &str,
    head_size: u32,
) -> Result<Heard, String> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let (method, target, version) = match parts.as_slice() {
        [m, t] => (*m, *t, "HTTP/1.1"),
        [m, t, v @ ("HTTP/1.0" | "HTTP/1.1" | "HTTP/2")] => (*m, *t, *v),
        [_, _, v] => {
            return Err(format!(
                "malformed request line {line:?}: unknown version {v:?} (HTTP/1.0, HTTP/1.1 or HTTP/2)"
            ))
        }
        _ => {
            return Err(format!(
                "malformed request line {line:?}: expected METHOD URL, as \"GET http://example.com/path\" or \"GET /path\""
            ))
        }
    };
    // A method is a token (RFC 9110 §9.1); case matters, and a method
    // Pocket does not know is passed on as it is, as the listener does.
    Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("malformed request line {line:?}: {method:?} is not a method"))?;
    let authority = match target.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            Some(&rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())])
        }
        _ if target.starts_with('/') || target == "*" => None,
        // Authority form is CONNECT's (RFC 9112 §3.2.3); the proxy
        // refuses CONNECT, as the listener does.
        _ if method == "CONNECT" => Some(target),
        _ => {
            // `b:80` is a target the listener parses and refuses (400):
            // say so in the listener's words.
            let listener = if target.contains('/') {
                String::new()
            } else {
                format!(
                    "; the listener answers 400: {}",
                    crate::proxy::target::AUTHORITY_FORM
                )
            };
            return Err(format!(
                "malformed request line {line:?}: {target:?} is neither a URL (http://host/path) nor a path (/path){listener}"
            ));
        }
    };

    let mut fields: Vec<(HeaderName, &[u8])> = Vec::new();
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("malformed header {h:?}: expected \"Name: value\""))?;
        let name = HeaderName::from_bytes(name.trim_end().as_bytes()).map_err(|_| {
            format!(
                "malformed header {h:?}: {:?} is not a header name",
                name.trim_end()
            )
        })?;
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!(
                "malformed header {h:?}: a value cannot carry CR, LF or NUL"
            ));
        }
        fields.push((name, value.as_bytes()));
    }
    let has_host = fields.iter().any(|(n, _)| n == http::header::HOST);
    // A client names the host of a URL in a Host line (curl, browsers);
    // with a path alone, the Host line must be given.
    let default_host = match (has_host, authority) {
        (true, _) => None,
        (false, Some(a)) => Some(a),
        (false, None) if version == "HTTP/1.0" => None,
        (false, None) => {
            return Err(format!(
            "no host: give a URL (\"GET http://example.com{target}\") or -H \"Host: example.com\""
        ))
        }
    };

    let heard = if version == "HTTP/2" {
        hear_h2(method, target, authority, &fields, head_size)?
    } else {
        let mut wire = format!("{method} {target} {version}\r\n").into_bytes();
        if let Some(host) = default_host {
            wire.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
        }
        for (name, value) in &fields {
            wire.extend_from_slice(name.as_str().as_bytes());
            wire.extend_from_slice(b": ");
            wire.extend_from_slice(value);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        hear_h1(&wire, head_size)?
    };
    let head = match heard {
        Ok(head) => head,
        Err((status, why)) => {
            return Ok(Heard::Refused {
                status,
                why: why_refused(why, target, &fields),
            })
        }
    };
    Ok(Heard::Request(Box::new(RequestView {
        head,
        raw_target: None,
        peer: SocketAddr::new(peer, 40000),
        listener: Arc::from(listener),
        id: RequestId { worker: 0, seq: 1 },
        growth: 0,
        tls: None,
    })))
}

/// hyper's refusals say little (`invalid URI`); a host that is not ASCII
/// is the common cause, and has a known remedy.
fn why_refused(why: String, target: &str, fields: &[(HeaderName, &[u8])]) -> String {
    let host_field = fields
        .iter()
        .find(|(n, _)| n == http::header::HOST)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    if !target.is_ascii() {
        return format!(
            "{why}: the request target {target:?} is not ASCII; a client sends an \
             internationalised host name in punycode (xn--...) and percent-encodes the path"
        );
    }
    match host_field {
        Some(h) if !h.is_ascii() => format!(
            "{why}: the Host {h:?} is not ASCII; a client sends an internationalised \
             host name in punycode (xn--...)"
        ),
        _ => why,
    }
}

/// Headers an HTTP/2 message cannot carry (RFC 9113 §8.2.2); hyper's
/// client refuses to send them.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// The request through hyper's HTTP/2 client and, over an in-memory pipe,
/// hyper's HTTP/2 server set as the listener sets it (its header list at
/// most `head_size` bytes): the head the server hands on, or the status
/// it answered with. As curl does, a path with a Host line is sent with
/// the Host as `:authority`; a URL's host is the `:authority`, and a Host
/// line given beside it stays a header (the proxy then compares them,
/// RFC 9113 §8.3.1).
fn hear_h2(
    method: &str,
    target: &str,
    authority: Option<&str>,
    fields: &[(HeaderName, &[u8])],
    head_size: u32,
) -> Result<Result<http::request::Parts, (u16, String)>, String> {
    let mut fields: Vec<(HeaderName, &[u8])> = fields.to_vec();
    let uri = match authority {
        Some(_) => target.to_string(),
        None => {
            let i = fields
                .iter()
                .position(|(n, _)| n == http::header::HOST)
                .ok_or_else(|| {
                    format!("no host: give a URL (\"{method} http://example.com{target} HTTP/2\")")
                })?;
            let host = String::from_utf8_lossy(fields.remove(i).1).into_owned();
            format!("http://{host}{target}")
        }
    };
    let mut builder = Request::builder().method(method).uri(uri.as_str());
    for (name, value) in &fields {
        if CONNECTION_SPECIFIC.contains(&name.as_str()) {
            return Err(format!(
                "malformed header {name}: HTTP/2 has no connection-specific headers (RFC 9113 §8.2.2)"
            ));
        }
        let value = http::HeaderValue::from_bytes(value)
            .map_err(|_| format!("malformed header {name}: the value cannot be sent"))?;
        builder = builder.header(name, value);
    }
    let req = builder.body(Empty::<Bytes>::new()).map_err(|_| {
        format!("malformed request: {uri:?} is not a URL an HTTP/2 client can send")
    })?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the parser's runtime: {e}"))?;
    rt.block_on(async {
        let got: Arc<std::sync::Mutex<Option<http::request::Parts>>> = Arc::default();
        let into = got.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            if let Ok(mut g) = into.lock() {
                *g = Some(req.into_parts().0);
            }
            async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
        });
        let (client, server) = tokio::io::duplex(1024 * 1024);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new()).max_header_list_size(head_size);
        let served = h2.serve_connection(TokioIo::new(server), service);
        let shake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Empty<Bytes>>(TokioIo::new(client));
        tokio::pin!(served, shake);
        let talk = async {
            let (mut sender, conn) = (&mut shake)
                .await
                .map_err(|e| format!("HTTP/2 handshake failed ({e})"))?;
            tokio::pin!(conn);
            let send = sender.send_request(req);
            tokio::pin!(send);
            loop {
                tokio::select! {
                    r = &mut send => return Ok::<_, String>(r),
                    _ = &mut conn => {}
                }
            }
        };
        tokio::pin!(talk);
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                tokio::select! {
                    r = &mut talk => return r,
                    _ = &mut served => {}
                }
            }
        })
        .await
        .map_err(|_| "the HTTP/2 request was not read whole".to_string())??;
        if let Some(head) = got.lock().ok().and_then(|mut g| g.take()) {
            return Ok(Ok(head));
        }
        Ok(Err(match answer {
            Ok(resp) => (
                resp.status().as_u16(),
                format!("hyper's HTTP/2 server refused the head (its header list is at most the listener's head_size, {head_size} bytes)"),
            ),
            Err(e) => (400, format!("hyper's HTTP/2 server refused the stream ({e})")),
        }))
    })
}

/// `wire` through the listener's head check and hyper's HTTP/1 parser
/// (set as `server::conn` sets them for a listener of `head_size` bytes):
/// the head hyper hands on, or the status the client is answered with
/// and why.
fn hear_h1(
    wire: &[u8],
    head_size: u32,
) -> Result<Result<http::request::Parts, (u16, String)>, String> {
    let mut check = HeadCheck::with_limit(head_size);
    if check.feed(wire).is_err() {
        // Never: the head is written here with CRLF line ends.
        return Ok(Err((400, crate::server::head_check::BAD_LF.into())));
    }
    if let Some(what) = check.oversized() {
        let answer = crate::server::head_check::too_large(what, head_size);
        let (status, why) = answered(&answer, "the head is over the limit");
        return Ok(Err((status, format!("{why} (the listener's head_size)"))));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the parser's runtime: {e}"))?;
    rt.block_on(async {
        let got: Rc<RefCell<Option<http::request::Parts>>> = Rc::default();
        let into = got.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            into.replace(Some(req.into_parts().0));
            async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
        });
        let (mut client, server) = tokio::io::duplex(wire.len() + 64 * 1024);
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .keep_alive(false)
            .max_header_size(head_size as usize)
            .max_buf_size(crate::server::H1_BUF.max(head_size as usize));
        let conn = h1.serve_connection(TokioIo::new(server), service);
        let talk = async {
            client.write_all(wire).await.ok();
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.ok();
            out
        };
        let both = async { tokio::join!(conn, talk) };
        let (served, answer) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .map_err(|_| "the request head was not read whole".to_string())?;
        if let Some(head) = got.take() {
            return Ok(Ok(head));
        }
        let why = match served {
            // hyper calls it "message head is too large" however small the
            // head: the head check above let its bytes through, so it is
            // the count.
            Err(e) if e.is_parse_too_large() && header_fields(wire) > MAX_HEADER_FIELDS => {
                format!("too many header fields (more than {MAX_HEADER_FIELDS})")
            }
            Err(e) => format!("hyper cannot parse the head ({e})"),
            Ok(()) => "hyper did not hand the request on".into(),
        };
        Ok(Err(answered(&answer, &why)))
    })
}

/// The most header fields an HTTP/1 request head may have: hyper's
/// HTTP/1 server refuses the 101st with a 431 (its default, which the
/// listener keeps), and Pocket's own parser hands such a head to hyper
/// ([`crate::wire::MAX_HEADERS`]). HTTP/2 has no count, only `head_size`.
const MAX_HEADER_FIELDS: usize = crate::wire::MAX_HEADERS;

/// The header fields of a head written by [`build`]: its lines less the
/// request line and the empty line that ends it.
fn header_fields(wire: &[u8]) -> usize {
    wire.windows(2)
        .filter(|w| w == b"\r\n")
        .count()
        .saturating_sub(2)
}

/// The status of a response written by the listener, and its body (or
/// `fallback` when it has none, as hyper's own 400 has none).
fn answered(response: &[u8], fallback: &str) -> (u16, String) {
    let text = String::from_utf8_lossy(response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim())
        .filter(|b| !b.is_empty())
        .unwrap_or(fallback);
    (status, body.to_string())
}
