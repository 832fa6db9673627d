//! The network side of a sub-request: where it goes (an `http://` URL or
//! a server of a pool), one HTTP/1.1 exchange on a fresh connection, or
//! one TCP exchange. Every error is text the script gets as its `err`
//! value; the caller bounds the time (see [`super::MAX_TIMEOUT`]).

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Policy;

/// The most bytes of a sub-request's answer (an HTTP body, or what
/// `http.tcp` reads) a script gets: 1 MiB. Past it, the call fails with
/// an error value rather than truncate silently.
pub const MAX_BODY: usize = 1024 * 1024;

/// Where a sub-request goes: the address to connect to and the Host
/// header the request carries.
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
}

/// An HTTP answer as a script sees it.
pub struct Answer {
    pub status: u16,
    /// Names lowercased; repeated fields joined with ", " (RFC 9110 5.3).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

/// Splits `http://host[:port]/path?query` into (host, port, path and
/// query). `https://` is refused: Pocket has no TLS client for scripts yet.
pub fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    if url.len() >= 8 && url[..8].eq_ignore_ascii_case("https://") {
        return Err(format!(
            "https is not supported yet for sub-requests (\"{url}\"); use http:// or a pool"
        ));
    }
    let rest = match url.get(..7) {
        Some(s) if s.eq_ignore_ascii_case("http://") => &url[7..],
        _ => {
            return Err(format!(
                "expected an absolute http:// URL (or a path with opts.pool), got \"{url}\""
            ))
        }
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("no host in URL \"{url}\""));
    }
    let (host, port) = split_host_port(authority, 80).map_err(|e| format!("{e} in \"{url}\""))?;
    Ok((host, port, path))
}

/// `host:port`, `[v6]:port` or `host` (with `default` port).
pub fn split_host_port(text: &str, default: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("bad address \"{text}\"")),
            },
            None => return Err(format!("bad address \"{text}\"")),
        }
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match port {
        None => default,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("bad port \"{p}\""))?,
    };
    if host.is_empty() {
        return Err(format!("no host in \"{text}\""));
    }
    Ok((host.to_string(), port))
}

/// The address of `host:port`: an IP as it is, a name resolved (by the
/// system's resolver, off the worker thread).
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut found = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("could not resolve \"{host}\": {e}"))?;
    found
        .next()
        .ok_or_else(|| format!("could not resolve \"{host}\": no address"))
}

/// A server of pool `name`, chosen by the pool's own balancing among the
/// servers that take traffic (health checks, drain and backups apply).
pub fn pool_server(policy: &Option<Arc<Policy>>, name: &str) -> Result<SocketAddr, String> {
    let Some(policy) = policy else {
        return Err(format!("no pool named \"{name}\""));
    };
    let Some(i) = policy.pool_by_name(name) else {
        let known: Vec<&str> = policy.pools.iter().map(|p| &*p.name).collect();
        return Err(format!(
            "no pool named \"{name}\" (pools: {})",
            known.join(", ")
        ));
    };
    let pool = &policy.pools[i];
    match pool.pick(&[], None, None) {
        Some(s) => Ok(pool.servers[s].addr),
        None => Err(format!("pool \"{name}\" has no server up")),
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect failed: {e} (to {addr})"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One HTTP/1.1 request on a new connection, its whole answer read (at
/// most [`MAX_BODY`] bytes of body).
pub async fn http(
    to: &Target,
    method: http::Method,
    path: &str,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
) -> Result<Answer, String> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request: {e}"))?;
    {
        let h = req.headers_mut();
        for (name, value) in headers {
            let name = http::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("bad header name \"{name}\""))?;
            let value = http::HeaderValue::from_bytes(&value)
                .map_err(|_| format!("bad value for header \"{name}\""))?;
            h.append(name, value);
        }
        if !h.contains_key(http::header::HOST) {
            let host = http::HeaderValue::from_str(&to.host)
                .map_err(|_| format!("bad host \"{}\"", to.host))?;
            h.insert(http::header::HOST, host);
        }
        h.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let stream = connect(to.addr).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("connection failed: {e} (to {})", to.addr))?;
    let exchange = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e} (to {})", to.addr))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("response body larger than {} MiB", MAX_BODY >> 20)
                } else {
                    format!("reading the response failed: {e} (from {})", to.addr)
                }
            })?
            .to_bytes();
        let mut headers: Vec<(String, Vec<u8>)> = Vec::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            match headers.iter_mut().find(|(n, _)| n == name.as_str()) {
                Some((_, v)) => {
                    v.extend_from_slice(b", ");
                    v.extend_from_slice(value.as_bytes());
                }
                None => headers.push((name.as_str().to_string(), value.as_bytes().to_vec())),
            }
        }
        Ok(Answer {
            status: parts.status.as_u16(),
            headers,
            body,
        })
    };
    // The connection is driven here, next to the exchange: no task to
    // spawn, and dropping this future (the client went away) closes it.
    let mut conn = std::pin::pin!(conn);
    let mut exchange = std::pin::pin!(exchange);
    let mut conn_done = false;
    loop {
        tokio::select! {
            biased;
            out = &mut exchange => return out,
            done = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = done {
                    return Err(format!("connection failed: {e} (to {})", to.addr));
                }
            }
        }
    }
}

/// Sends `bytes` to `addr` and reads the answer: the first bytes that
/// arrive, or (with `all`) everything until the peer closes, at most
/// [`MAX_BODY`].
pub async fn tcp(addr: SocketAddr, bytes: &[u8], all: bool) -> Result<Vec<u8>, String> {
    let mut stream = connect(addr).await?;
    if !bytes.is_empty() {
        stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("send failed: {e} (to {addr})"))?;
    }
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read failed: {e} (from {addr})"))?;
        if n == 0 {
            break;
        }
        if buf.len() + n > MAX_BODY {
            return Err(format!("answer larger than {} MiB", MAX_BODY >> 20));
        }
        buf.extend_from_slice(&chunk[..n]);
        if !all {
            break;
        }
    }
    Ok(buf)
}
