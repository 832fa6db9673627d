//! What a connection's TLS handshake agreed: made once by the handshake
//! (server/tls.rs), read by `req.tls` in scripts and by the access log.

use std::sync::Arc;

/// What a script and the log know of a connection's TLS.
#[derive(Debug)]
pub struct TlsInfo {
    /// The name the client asked for (SNI), lowercase; None if it sent none.
    pub sni: Option<Arc<str>>,
    /// The protocol agreed by ALPN (`h2`, `http/1.1`); None if the client
    /// offered none.
    pub alpn: Option<Arc<str>>,
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
}
