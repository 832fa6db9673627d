//! The lab over TLS (a scenario's `tls = true`): a throwaway certificate
//! made for the run and written next to the policy, and the load's way to
//! reach Pocket, plain or TLS. The certificate is ECDSA P-256 (the
//! issue's choice for TLS measurements), self-signed for `localhost` and
//! 127.0.0.1; the load's clients trust exactly it, send SNI `localhost` and offer ALPN
//! `http/1.1` (the load speaks HTTP/1.1, and the tunnels need it).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::load::{wire, Failure};

/// The certificate's file in the scenario's folder: the policy names it
/// relative to itself, `tls = { cert = "site.pem", key = "site.key" }`.
pub const CERT_FILE: &str = "site.pem";
/// Its private key (PKCS#8 PEM), written readable by the owner only.
pub const KEY_FILE: &str = "site.key";
/// The name the load sends as SNI and the certificate is made for.
const SNI: &str = "localhost";

/// A byte stream to Pocket, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Stream = Box<dyn Io>;

/// Makes the run's certificate and key in `dir` ([`CERT_FILE`],
/// [`KEY_FILE`]); returns a connector that trusts that certificate only.
pub fn make_cert(dir: &Path) -> Result<TlsConnector, String> {
    let made = rcgen::generate_simple_self_signed(vec![SNI.to_string(), "127.0.0.1".to_string()])
        .map_err(|e| format!("cannot make the run's TLS certificate: {e}"))?;
    let write = |name: &str, text: String, mode: u32| {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(KEY_FILE, made.signing_key.serialize_pem(), 0o600)?;
    write(CERT_FILE, made.cert.pem(), 0o644)?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(made.cert.der().clone())
        .map_err(|e| format!("cannot trust the run's TLS certificate: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// How the load reaches Pocket's listener.
#[derive(Clone)]
pub struct Dial {
    pub addr: SocketAddr,
    /// Some: TLS, trusting the run's certificate.
    tls: Option<TlsConnector>,
}

/// Why a connection to Pocket could not be made.
pub enum DialError {
    /// The TCP connect failed (each load words it its own way).
    Connect(std::io::Error),
    /// The TLS handshake failed: the whole story, ready for the report.
    Tls(Failure),
}

impl Dial {
    pub fn new(addr: SocketAddr, tls: Option<TlsConnector>) -> Dial {
        Dial { addr, tls }
    }

    /// A connection to Pocket, with TLS done when the scenario says `tls`.
    pub async fn connect(&self) -> Result<Stream, DialError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(DialError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = ServerName::try_from(SNI)
            .map_err(|e| DialError::Tls(wire("TLS handshake failed", format!("SNI {SNI}: {e}"))))?;
        match tls.connect(name, tcp).await {
            Ok(s) => Ok(Box::new(s)),
            Err(e) => Err(DialError::Tls(handshake_failure(&e))),
        }
    }
}

/// A failed TLS handshake in words: who ended it and why. A listener
/// without TLS answers the ClientHello with plain HTTP, which rustls
/// calls a corrupt message: that case says what the policy lacks.
fn handshake_failure(e: &std::io::Error) -> Failure {
    use std::io::ErrorKind;
    let tls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let detail = match (tls_error, e.kind()) {
        (Some(rustls::Error::InvalidMessage(_)), _) => format!(
            "the TLS handshake with Pocket failed: its answer is not TLS ({}); does the \
             policy's listener have tls = {{ cert = \"{CERT_FILE}\", key = \"{KEY_FILE}\" }}?",
            e
        ),
        (Some(t), _) => format!("the TLS handshake with Pocket failed: {t}"),
        (None, ErrorKind::UnexpectedEof) => {
            "Pocket closed the connection during the TLS handshake".to_string()
        }
        (None, ErrorKind::ConnectionReset) => {
            "Pocket reset the connection during the TLS handshake".to_string()
        }
        (None, _) => format!("the TLS handshake with Pocket failed: {e}"),
    };
    wire("TLS handshake failed", detail)
}
