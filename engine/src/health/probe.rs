//! One check of one server: a TCP connect, the first line a tcp server
//! answers (banner or reply to `send`), or an HTTP request whose status
//! and body are judged. Also the exchanges scripted checks make.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::upstream_tls::{Protocol, UpstreamTls};
use crate::lb::{CheckKind, Expect};
use crate::proxy::proxy_header::SendProxy;

/// How a pool's checks reach a server: as its requests do (`tls`,
/// `protocol`), so a server that stopped speaking TLS fails its checks.
#[derive(Clone, Default)]
pub struct Transport {
    pub tls: Option<Arc<UpstreamTls>>,
    pub protocol: Protocol,
    /// The server's host name, for SNI (None: written as an IP).
    pub name: Option<Arc<str>>,
    /// The pool's `send_proxy`: each check's connection starts with a
    /// PROXY header naming no client (HAProxy's `check-send-proxy`).
    pub send_proxy: Option<SendProxy>,
}

/// Most of a check response that is read.
const MAX_READ: usize = 64 * 1024;

/// An HTTP answer as a check sees it.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Sends `request` (bytes) and reads until the server closes or
/// `MAX_READ` bytes came (or, with `first_only`, until the first bytes
/// arrive: a banner or a PONG). The caller bounds the time.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Result<Vec<u8>, String> {
    exchange_until(addr, request, false).await
}

pub async fn exchange_until(
    addr: SocketAddr,
    request: &[u8],
    first_only: bool,
) -> Result<Vec<u8>, String> {
    let stream = connect(addr, None).await?;
    exchange_on(stream, request, first_only).await
}

/// A check's connection: a PROXY header first when its pool sends them
/// (`send_proxy`; none from scripted checks' `http` functions).
async fn connect(addr: SocketAddr, proxy: Option<SendProxy>) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    crate::proxy::proxy_header::send_for_check(&mut stream, proxy)
        .await
        .map_err(|e| format!("send PROXY header: {e}"))?;
    Ok(stream)
}

/// [`exchange_until`] on a connected stream (TCP or TLS).
async fn exchange_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    first_only: bool,
) -> Result<Vec<u8>, String> {
    if !request.is_empty() {
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS server that closes without close_notify (many do
            // after `Connection: close`): the answer so far is whole.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => 0,
            Err(e) => return Err(format!("read: {e}")),
        };
        if n == 0 || buf.len() >= MAX_READ {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if first_only {
            break;
        }
    }
    Ok(buf)
}

/// One HTTP/1.1 request with `Connection: close`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: Option<&str>,
) -> Result<HttpAnswer, String> {
    http_via(addr, None, method, path, host).await
}

async fn http_via(
    addr: SocketAddr,
    proxy: Option<SendProxy>,
    method: &str,
    path: &str,
    host: Option<&str>,
) -> Result<HttpAnswer, String> {
    let host = host.map(str::to_string).unwrap_or_else(|| addr.to_string());
    let request = h1_request(method, path, &host);
    let stream = connect(addr, proxy).await?;
    let raw = exchange_on(stream, request.as_bytes(), false).await?;
    parse_answer(&raw)
}

/// A check's HTTP/1.1 request, plain or over TLS: one per connection.
fn h1_request(method: &str, path: &str, host: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pocket-check\r\nConnection: close\r\n\r\n"
    )
}

fn parse_answer(raw: &[u8]) -> Result<HttpAnswer, String> {
    let text = String::from_utf8_lossy(raw);
    let status: u16 = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "not an HTTP response".to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `Ok(what passed)` or `Err(what failed)`. The caller bounds the time.
/// Scripted checks are run by the control VM, not here.
/// `transport.send_proxy`: the pool's `send_proxy`, a header naming no
/// client first.
pub async fn probe(
    addr: SocketAddr,
    kind: &CheckKind,
    transport: &Transport,
) -> Result<String, String> {
    let CheckKind::Http {
        method,
        path,
        host,
        expect,
        body,
        pattern,
    } = kind
    else {
        if let CheckKind::Expect { send, expect } = kind {
            return line_check(addr, send.as_deref(), expect, transport).await;
        }
        let stream = connect(addr, transport.send_proxy).await?;
        if let Some(tls) = &transport.tls {
            handshake(stream, tls, transport, addr).await?;
            return Ok("connected (TLS)".into());
        }
        return Ok("connected".into());
    };
    let answer = if transport.tls.is_none() && transport.protocol == Protocol::Http1 {
        http_via(addr, transport.send_proxy, method, path, host.as_deref()).await?
    } else {
        http_over(addr, method, path, host.as_deref(), transport).await?
    };
    let status = answer.status;
    if status < expect.0 || status > expect.1 {
        return Err(format!("{method} {path} answered {status}"));
    }
    if let Some(needle) = body {
        if !answer.body.contains(needle.as_str()) {
            return Err(format!("{method} {path}: body lacks {needle:?}"));
        }
    }
    if let Some(re) = pattern {
        if !re.is_match(&answer.body) {
            return Err(format!(
                "{method} {path}: body does not match {:?}",
                re.as_str()
            ));
        }
    }
    Ok(format!("{method} {path} answered {status}"))
}

/// Most of a server's first line a line check reads, in bytes: a banner
/// or a reply is a line of tens of bytes; a server that sends more with
/// no newline is judged on what came.
const MAX_LINE: usize = 4 * 1024;

/// Most of a line a check's message quotes, in characters.
const MAX_SHOWN: usize = 120;

/// A tcp pool's `send`/`expect` check (HAProxy's `tcp-check`): connect
/// as the pool's connections do (PROXY header, TLS), write `send` if any,
/// read the first line (up to `\n`, [`MAX_LINE`] bytes or the server's
/// close; the caller bounds the time) and match it. The verdict quotes
/// the line, so `pocket` logs and the stats page show what came back.
async fn line_check(
    addr: SocketAddr,
    send: Option<&[u8]>,
    expect: &Expect,
    transport: &Transport,
) -> Result<String, String> {
    let stream = connect(addr, transport.send_proxy).await?;
    let line = match &transport.tls {
        Some(tls) => first_line(handshake(stream, tls, transport, addr).await?, send).await?,
        None => first_line(stream, send).await?,
    };
    judge(&line, expect)
}

/// Writes `send`, then reads until the first `\n` (or [`MAX_LINE`]
/// bytes, or the server's close): the line without its `\r\n`.
async fn first_line<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    send: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    if let Some(bytes) = send {
        stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => 0,
            Err(e) => return Err(format!("read: {e}")),
        };
        if n == 0 {
            if buf.is_empty() {
                return Err(match send {
                    Some(_) => "the server closed the connection without an answer".into(),
                    None => "the server closed the connection without a word".into(),
                });
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(end);
            break;
        }
        if buf.len() >= MAX_LINE {
            buf.truncate(MAX_LINE);
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(buf)
}

/// The verdict on a first line: `Ok("answered \"+PONG\"")` or
/// `Err("expected \"+PONG\", got \"-NOAUTH ...\"")`.
fn judge(line: &[u8], expect: &Expect) -> Result<String, String> {
    let text = String::from_utf8_lossy(line);
    let got = quoted(&text);
    match expect {
        Expect::Text(want) if text.contains(want.as_str()) => Ok(format!("answered {got}")),
        Expect::Text(want) => Err(format!("expected {want:?}, got {got}")),
        Expect::Pattern(re) if re.is_match(&text) => Ok(format!("answered {got}")),
        Expect::Pattern(re) => Err(format!(
            "expected a line matching {:?}, got {got}",
            re.as_str()
        )),
    }
}

/// A line as a message quotes it: escaped, cut at [`MAX_SHOWN`]
/// characters; an empty line is said so.
fn quoted(text: &str) -> String {
    if text.is_empty() {
        return "an empty line".into();
    }
    match text.char_indices().nth(MAX_SHOWN) {
        Some((at, _)) => format!("{:?}", format!("{}...", &text[..at])),
        None => format!("{text:?}"),
    }
}

/// A TLS handshake as the pool's requests make it.
async fn handshake(
    stream: TcpStream,
    tls: &UpstreamTls,
    transport: &Transport,
    addr: SocketAddr,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = tls.server_name(transport.name.as_deref(), addr.ip());
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    connector.connect(name, stream).await.map_err(|e| {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(c)) => {
                format!(
                    "TLS: certificate verify failed: {}",
                    crate::config::upstream_tls::certificate_problem(c)
                )
            }
            Some(other) => format!("TLS handshake failed: {other}"),
            None => format!("TLS handshake failed: {e}"),
        }
    })
}

/// One check request over TLS and/or HTTP/2, as the pool's requests go.
async fn http_over(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: Option<&str>,
    transport: &Transport,
) -> Result<HttpAnswer, String> {
    let host = host.map(str::to_string).unwrap_or_else(|| addr.to_string());
    let stream = connect(addr, transport.send_proxy).await?;
    match (&transport.tls, transport.protocol) {
        (Some(tls), Protocol::Http1) => {
            let stream = handshake(stream, tls, transport, addr).await?;
            let request = h1_request(method, path, &host);
            parse_answer(&exchange_on(stream, request.as_bytes(), false).await?)
        }
        (Some(tls), Protocol::H2) => {
            let stream = handshake(stream, tls, transport, addr).await?;
            h2_request(stream, method, path, &host, "https").await
        }
        (None, _) => h2_request(stream, method, path, &host, "http").await,
    }
}

/// One HTTP/2 request on its own connection, its body read up to
/// `MAX_READ`.
async fn h2_request<S: AsyncRead + AsyncWrite + Unpin + 'static>(
    stream: S,
    method: &str,
    path: &str,
    host: &str,
    scheme: &str,
) -> Result<HttpAnswer, String> {
    use http_body_util::{BodyExt, Empty};
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(LocalExec)
        .handshake::<_, Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/2 setup: {e}"))?;
    let task = tokio::task::spawn_local(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(format!("{scheme}://{host}{path}"))
        .header("user-agent", "pocket-check")
        .body(Empty::new())
        .map_err(|e| format!("check request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP/2: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while buf.len() < MAX_READ {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    buf.extend_from_slice(d);
                }
            }
            Some(Err(e)) => return Err(format!("HTTP/2 body: {e}")),
            None => break,
        }
    }
    drop(sender);
    task.abort();
    Ok(HttpAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&buf).into_owned(),
    })
}

/// Runs the check's HTTP/2 connection task on the control thread.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

#[cfg(test)]
mod line_tests {
    use super::*;

    #[test]
    fn a_line_is_judged_and_quoted() {
        let pong = Expect::Text("+PONG".into());
        assert_eq!(judge(b"+PONG", &pong).unwrap(), "answered \"+PONG\"");
        assert_eq!(
            judge(b"-NOAUTH Authentication required.", &pong).unwrap_err(),
            "expected \"+PONG\", got \"-NOAUTH Authentication required.\""
        );
        let banner = Expect::Pattern(regex::Regex::new("^220[ -]").unwrap());
        assert!(judge(b"220-mail.example ESMTP", &banner).is_ok());
        assert_eq!(
            judge(b"", &banner).unwrap_err(),
            "expected a line matching \"^220[ -]\", got an empty line"
        );
        let long = "x".repeat(500);
        assert!(judge(long.as_bytes(), &pong)
            .unwrap_err()
            .ends_with("...\""));
    }
}
