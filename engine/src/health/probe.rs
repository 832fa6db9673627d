//! One check of one server: a TCP connect, or an HTTP request whose status
//! and body are judged.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::lb::CheckKind;

/// Most of a check response that is read.
const MAX_READ: usize = 64 * 1024;

/// `Ok(what passed)` or `Err(what failed)`. The caller bounds the time.
pub async fn probe(addr: SocketAddr, kind: &CheckKind) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let CheckKind::Http {
        method,
        path,
        host,
        expect,
        body,
        pattern,
    } = kind
    else {
        return Ok("connected".into());
    };
    let host = host.clone().unwrap_or_else(|| addr.to_string());
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pocket-check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
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
    }
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "not an HTTP response".to_string())?;
    if status < expect.0 || status > expect.1 {
        return Err(format!("{method} {path} answered {status}"));
    }
    let payload = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    if let Some(needle) = body {
        if !payload.contains(needle.as_str()) {
            return Err(format!("{method} {path}: body lacks {needle:?}"));
        }
    }
    if let Some(re) = pattern {
        if !re.is_match(payload) {
            return Err(format!(
                "{method} {path}: body does not match {:?}",
                re.as_str()
            ));
        }
    }
    Ok(format!("{method} {path} answered {status}"))
}
