//! The TLS handshake of a client connection on a `tls` listener, and what
//! a connection that does not speak TLS there gets.
//!
//! The handshake runs under the listener's `head` timeout. Whatever ends
//! it early (a ClientHello that is not one, a client that stalls or
//! leaves, no certificate for its SNI under `strict_sni`, plain HTTP)
//! closes the connection, is counted in
//! `pocket_tls_handshake_failures_total` by listener and reason, and is
//! logged at debug level: a scanner must not fill the log.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::config::tls::{ListenerTls, NO_CERTIFICATE};
use crate::context::TlsInfo;
use crate::proxy::ConnCtx;

/// The first byte of a TLS record carrying a handshake (RFC 8446 §5.1).
const HANDSHAKE_RECORD: u8 = 0x16;

/// The answer to plain HTTP on a TLS port, as nginx's 497 page says it
/// (with a 400 status: the client can read it).
const PLAIN_HTTP_BODY: &str = "This port speaks HTTPS; this request was plain HTTP.\n";

/// How long the answer to plain HTTP waits for the client's request to
/// arrive whole and, after the answer, for the client to close: reading
/// it first lets the kernel deliver the answer rather than a reset.
const LINGER: Duration = Duration::from_secs(1);

/// The most of a plain-HTTP request read before answering it, bytes.
const PLAIN_READ: usize = 16 * 1024;

/// Runs the server side of the handshake. None: it failed (counted and
/// logged here) or the client spoke plain HTTP (answered here); either
/// way the connection is over. The caller bounds it by the `head` timeout.
pub async fn handshake(
    stream: TcpStream,
    tls: &ListenerTls,
    cx: &ConnCtx,
) -> Option<(TlsStream<TcpStream>, TlsInfo)> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) | Err(_) => {
            failed(cx, "closed", "the client closed before a ClientHello");
            return None;
        }
        Ok(_) => {}
    }
    if first[0] != HANDSHAKE_RECORD && first[0].is_ascii_alphabetic() {
        failed(cx, "plain_http", "plain HTTP on a TLS port; answered 400");
        plain_http(stream, cx).await;
        return None;
    }
    match tokio_rustls::TlsAcceptor::from(tls.config.clone())
        .accept(stream)
        .await
    {
        Ok(s) => {
            let info = {
                let conn = s.get_ref().1;
                TlsInfo {
                    sni: conn.server_name().map(Arc::from),
                    alpn: conn
                        .alpn_protocol()
                        .map(|p| Arc::from(String::from_utf8_lossy(p).as_ref())),
                    version: match conn.protocol_version() {
                        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                        _ => "TLS",
                    },
                }
            };
            Some((s, info))
        }
        Err(e) => {
            let reason = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::General(m)) if m == NO_CERTIFICATE => "no_certificate",
                Some(
                    rustls::Error::InvalidMessage(_)
                    | rustls::Error::PeerIncompatible(_)
                    | rustls::Error::PeerMisbehaved(_)
                    | rustls::Error::NoApplicationProtocol,
                ) => "bad_hello",
                Some(rustls::Error::AlertReceived(_)) => "client_alert",
                Some(_) => "other",
                None if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ) =>
                {
                    "closed"
                }
                None => "other",
            };
            let why = match reason {
                "no_certificate" => {
                    "no certificate for the client's SNI (strict_sni); refused".to_string()
                }
                _ => e.to_string(),
            };
            failed(cx, reason, &why);
            None
        }
    }
}

/// A handshake that did not finish within the `head` timeout.
pub fn timed_out(cx: &ConnCtx, head: Duration) {
    failed(
        cx,
        "timeout",
        &format!("no TLS handshake within {head:?}; closed"),
    );
}

/// Counts and logs (debug) a failed handshake.
fn failed(cx: &ConnCtx, reason: &'static str, why: &str) {
    crate::observe::metrics::tls_handshake_failed(&cx.listener, reason);
    tracing::debug!(listener = %cx.listener, peer = %cx.peer, reason, "TLS handshake failed: {why}");
}

/// Answers plain HTTP on a TLS port with a readable 400, then closes:
/// reads the request head (what comes within [`LINGER`], up to
/// [`PLAIN_READ`] bytes) so that closing does not reset the answer away.
async fn plain_http(mut stream: TcpStream, cx: &ConnCtx) {
    let mut buf = vec![0u8; PLAIN_READ];
    let mut got = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while got < buf.len() {
            let n = match stream.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Only the new bytes, and the 3 before them an end could
            // straddle: a request sent a byte at a time costs O(n), not O(n²).
            let from = got.saturating_sub(3);
            got += n;
            if buf[from..got].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    );
    crate::proxy::bad_request_line(cx, 400);
    if stream.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    // Lingering close: what the client still sends is read and dropped
    // until it closes, for a moment.
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}
