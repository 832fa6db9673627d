//! One check of one server: a TCP connect, or an HTTP request whose status
//! and body are judged. Also the exchanges scripted checks make.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::lb::CheckKind;
use crate::proxy::proxy_header::SendProxy;

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
    exchange_via(addr, None, request, first_only).await
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

async fn exchange_via(
    addr: SocketAddr,
    proxy: Option<SendProxy>,
    request: &[u8],
    first_only: bool,
) -> Result<Vec<u8>, String> {
    let mut stream = connect(addr, proxy).await?;
    if !request.is_empty() {
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
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
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pocket-check\r\nConnection: close\r\n\r\n"
    );
    let raw = exchange_via(addr, proxy, request.as_bytes(), false).await?;
    let text = String::from_utf8_lossy(&raw);
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
/// `proxy`: the pool's `send_proxy`, a header naming no client first.
pub async fn probe(
    addr: SocketAddr,
    kind: &CheckKind,
    proxy: Option<SendProxy>,
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
        connect(addr, proxy).await?;
        return Ok("connected".into());
    };
    let answer = http_via(addr, proxy, method, path, host.as_deref()).await?;
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
