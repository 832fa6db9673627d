//! The network side of a sub-request: where it goes (an `http://` URL or
//! a server of a pool), one HTTP/1.1 exchange on a fresh connection, or
//! one TCP exchange. Every error is text the script gets as its `err`
//! value; the caller bounds the time of the whole exchange, connect
//! included (`tokio::time::timeout` in `super::run`).
//!
//! Through a pool, a connection starts as the pool's own do: with its
//! PROXY header naming the request's client (`send_proxy`), then TLS
//! (`tls`). A pool with `protocol = "h2"` is refused (sub-requests speak
//! HTTP/1.1).

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::upstream_tls::UpstreamTls;
use crate::config::Policy;
// Up from script/ into proxy/, kept on purpose: a sub-request through a pool
// opens its connection as the pool's own connections start (PROXY header,
// TLS, the same head scan and interim-response limit), so it uses the
// proxy's upstream connection code, not a copy. It does not use the
// proxy's pooled connections: each sub-request has a fresh one.
use crate::proxy::proxy_header::{self, ProxyTo};
use crate::proxy::upstream_io::{HeadScan, UpstreamIo, MAX_INTERIM};

/// The most bytes of a sub-request's answer (an HTTP body, or what
/// `http.tcp` reads) a script gets: 1 MiB. Past it, the call fails with
/// an error value rather than truncate silently.
pub const MAX_BODY: usize = 1024 * 1024;

/// Where a sub-request goes: the address to connect to and the Host
/// header the request carries.
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    /// A `send_proxy` pool's header, naming the request's client.
    pub proxy: Option<ProxyTo>,
    /// A `tls` pool's settings and the name its server is verified as.
    pub tls: Option<(Arc<UpstreamTls>, ServerName<'static>)>,
}

/// An HTTP answer as a script sees it.
pub struct Answer {
    pub status: u16,
    /// Names lowercased; repeated fields joined with ", " (RFC 9110 5.3).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

/// Splits `http://host[:port]/path?query[#fragment]` into (host, port,
/// path and query). A `#fragment` is dropped (it is never sent, RFC 9110
/// §4.2.4); `user:password@` is refused (Pocket does not turn it into an
/// Authorization header); `https://` is refused: no TLS client for URLs
/// (a pool with `tls` is).
pub fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let quoted = super::shown(url);
    if url.len() >= 8 && url.is_char_boundary(8) && url[..8].eq_ignore_ascii_case("https://") {
        return Err(format!(
            "https is not supported yet for sub-requests (\"{quoted}\"); use http:// or a pool with tls"
        ));
    }
    let rest = match url.get(..7) {
        Some(s) if s.eq_ignore_ascii_case("http://") => &url[7..],
        _ => {
            return Err(format!(
                "expected an absolute http:// URL (or a path with opts.pool), got \"{quoted}\""
            ))
        }
    };
    let rest = rest.split('#').next().unwrap_or(rest);
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err(format!(
            "user:password@ in a URL is not supported (\"{quoted}\"); send an authorization header in opts.headers"
        ));
    }
    if authority.is_empty() {
        return Err(format!("no host in URL \"{quoted}\""));
    }
    let (host, port) =
        split_host_port(authority, 80).map_err(|e| format!("{e} in \"{quoted}\""))?;
    Ok((host, port, path))
}

/// `host:port`, `[v6]:port` or `host` (with `default` port).
pub fn split_host_port(text: &str, default: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("bad address \"{}\"", super::shown(text))),
            },
            None => return Err(format!("bad address \"{}\"", super::shown(text))),
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
            .ok_or_else(|| format!("bad port \"{}\"", super::shown(p)))?,
    };
    if host.is_empty() {
        return Err(format!("no host in \"{}\"", super::shown(text)));
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '%');
    if !host.chars().all(name_char) {
        return Err(format!("bad host \"{}\"", super::shown(host)));
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
/// servers that take traffic (health checks, drain and backups apply),
/// reached as the pool's requests are: `client` is the request's client,
/// named in the PROXY header of a `send_proxy` pool.
pub fn pool_server(
    policy: &Option<Arc<Policy>>,
    name: &str,
    client: Option<(SocketAddr, SocketAddr)>,
) -> Result<Target, String> {
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
    if pool.protocol == crate::config::upstream_tls::Protocol::H2 {
        return Err(format!(
            "pool \"{name}\" speaks HTTP/2 (protocol = \"h2\"), and sub-requests speak HTTP/1.1 only"
        ));
    }
    let Some(s) = pool.pick(&[], None, None) else {
        return Err(format!("pool \"{name}\" has no server up"));
    };
    let server = &pool.servers[s];
    let proxy = pool.send_proxy.map(|version| ProxyTo {
        version,
        addresses: client,
    });
    let tls = pool.tls.as_ref().map(|tls| {
        let sni = tls.server_name(server.name.as_deref(), server.addr.ip());
        (tls.clone(), sni)
    });
    Ok(Target {
        addr: server.addr,
        host: server.addr_text.to_string(),
        proxy,
        tls,
    })
}

/// A connection to a sub-request's server, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

/// Connects to `to`: TCP, the pool's PROXY header, then the pool's TLS.
async fn connect(to: &Target) -> Result<Box<dyn Stream>, String> {
    let addr = to.addr;
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect failed: {e} (to {addr})"))?;
    let _ = stream.set_nodelay(true);
    proxy_header::send(&mut stream, to.proxy)
        .await
        .map_err(|e| format!("sending the PROXY header failed: {e} (to {addr})"))?;
    let Some((tls, name)) = &to.tls else {
        return Ok(Box::new(stream));
    };
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    match connector.connect(name.clone(), stream).await {
        Ok(s) => Ok(Box::new(s)),
        Err(e) => Err(format!(
            "{} (to {addr})",
            crate::proxy::upstream::ConnectError::tls(e)
        )),
    }
}

/// One HTTP/1.1 request on a new connection, its whole answer read (at
/// most [`MAX_BODY`] bytes of body, and at most [`MAX_INTERIM`] interim
/// 1xx heads before the final one: past that, an error, as a proxied
/// request gets a 502). `headers` were checked by the caller (a bad name
/// or value raised in the script).
pub async fn http(
    to: &Target,
    method: http::Method,
    path: &str,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
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
            h.append(name, value);
        }
        if !h.contains_key(http::header::HOST) {
            let host = http::HeaderValue::from_str(&to.host)
                .map_err(|_| format!("bad host \"{}\"", super::shown(&to.host)))?;
            h.insert(http::header::HOST, host);
        }
        h.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let stream = connect(to).await?;
    // The same watch on response heads as the pools' connections: bare
    // LFs refused, interim heads counted (proxy/upstream_io.rs).
    let (io, watch) = UpstreamIo::new(stream);
    let io = hyper_util::rt::TokioIo::new(io);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("connection failed: {e} (to {})", to.addr))?;
    // A head that broke the watch's rules, worded for the script.
    let bad_head = |e: &dyn std::fmt::Display| {
        let scan = watch.get();
        if scan.too_many_interim() {
            format!(
                "too many interim responses (more than {MAX_INTERIM} 1xx heads) from {}",
                to.addr
            )
        } else if scan.bare_lf() {
            format!(
                "bad response: a line of its head ends in LF, not CRLF (from {})",
                to.addr
            )
        } else {
            format!("request failed: {e} (to {})", to.addr)
        }
    };
    watch.set(HeadScan::expect_head());
    let exchange = async {
        let resp = sender.send_request(req).await.map_err(|e| bad_head(&e))?;
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
    // spawn, and dropping this future (the client went away, or the
    // deadline passed) closes it.
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
                    return Err(bad_head(&e));
                }
            }
        }
    }
}

/// Sends `bytes` to `to` and reads the answer: the first bytes that
/// arrive, or (with `all`) everything until the peer closes, at most
/// [`MAX_BODY`].
pub async fn tcp(to: &Target, bytes: &[u8], all: bool) -> Result<Vec<u8>, String> {
    let addr = to.addr;
    let mut stream = connect(to).await?;
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
