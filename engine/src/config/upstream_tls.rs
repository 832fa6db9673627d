//! A pool's `tls` and `protocol`: how Pocket speaks to its servers. The
//! rustls client configuration is built here, once per load, never on the
//! request path; its trust is the pool's `ca` file, or else the system's
//! certificate store (read once per process, as curl and nginx's
//! `proxy_ssl_trusted_certificate` default to it).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use mlua::{Table, Value};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::load::Checker;
use super::pool_settings::shown;
use crate::lb::PoolSettings;

const TLS_KEYS: &[&str] = &["sni", "ca", "verify"];

/// What a pool speaks to its servers, over TCP or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1, a connection per request in flight (kept alive).
    #[default]
    Http1,
    /// HTTP/2: h2c with prior knowledge (RFC 9113 §3.3) over TCP, ALPN
    /// `h2` over TLS; streams multiplexed on a few connections.
    H2,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2 => "h2",
        }
    }
}

/// A pool's `tls`: the client configuration (built once) and the name to
/// send as SNI.
pub struct UpstreamTls {
    pub config: Arc<ClientConfig>,
    /// For a connection that must speak HTTP/1.1 whatever the pool's
    /// `protocol` (an upgrade, proxy/tunnel.rs): ALPN `http/1.1` only, so
    /// an h2 server does not pick `h2`. The same as `config` in an
    /// HTTP/1.1 pool.
    pub http1: Arc<ClientConfig>,
    /// `sni = "..."`: sent to every server of the pool. None: each
    /// server's own host name, or no SNI for a server given by IP.
    pub sni: Option<ServerName<'static>>,
    pub verify: bool,
    /// The `ca` file, as resolved (for messages and fingerprints).
    pub ca: Option<PathBuf>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Printed into check fingerprints: what changes the check's
        // connection, nothing else.
        write!(
            f,
            "tls(sni={:?}, verify={}, ca={:?})",
            self.sni.as_ref().map(|s| s.to_str()),
            self.verify,
            self.ca
        )
    }
}

impl UpstreamTls {
    /// The name a connection to a server sends and verifies: the pool's
    /// `sni`, else the server's host name (`name`), else its IP address
    /// (verified against the certificate's IP names; rustls sends no SNI
    /// for an IP, RFC 6066 §3).
    pub fn server_name(&self, name: Option<&str>, ip: std::net::IpAddr) -> ServerName<'static> {
        if let Some(s) = &self.sni {
            return s.clone();
        }
        name.and_then(|n| ServerName::try_from(n.to_string()).ok())
            .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
    }
}

/// The system's trusted CAs, read once per process (a few ms, and the
/// files do not change under a running process in any way worth a reload).
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("reading the system's CA certificates: {e}");
            }
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            tracing::debug!("{added} system CA certificates for TLS to servers");
            Arc::new(roots)
        })
        .clone()
}

/// `verify = false`: any certificate is taken (a test server, a server
/// on a trusted wire). Signatures are still checked, so the handshake is
/// still a real one.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The CA certificates of a PEM file: an error says what is wrong with it.
fn read_ca(path: &Path) -> Result<RootCertStore, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&text) {
        let cert = cert.map_err(|e| {
            format!(
                "{}: not a PEM certificate: {}",
                path.display(),
                super::tls::pem_words(&e)
            )
        })?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: certificate {}: {e}", path.display(), n + 1))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!(
            "{}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(roots)
}

fn client_config(
    roots: Option<Arc<RootCertStore>>,
    protocol: Protocol,
) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = match roots {
        Some(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = match protocol {
        Protocol::H2 => vec![b"h2".to_vec()],
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
    };
    Ok(config)
}

impl Checker<'_> {
    /// Reads a pool's `protocol` and `tls` into `s`.
    pub(super) fn upstream_transport(&mut self, name: &str, t: &Table, s: &mut PoolSettings) {
        match t.get::<Value>("protocol") {
            Ok(Value::Nil) => {}
            Ok(Value::String(p)) => match p.to_string_lossy().as_str() {
                "http1" | "http/1.1" => s.protocol = Protocol::Http1,
                "h2" | "http2" => s.protocol = Protocol::H2,
                other => self.error(
                    &["pools", name, "protocol"],
                    format!("pool \"{name}\": unknown protocol \"{other}\" (known: http1, h2)"),
                ),
            },
            Ok(other) => self.error(
                &["pools", name, "protocol"],
                format!(
                    "pool \"{name}\": protocol must be \"http1\" or \"h2\", not {}",
                    shown(&other)
                ),
            ),
            Err(e) => self.error(&["pools", name, "protocol"], e.to_string()),
        }
        let at = ["pools", name, "tls"];
        let (sni, ca, verify) = match t.get::<Value>("tls") {
            Ok(Value::Nil) | Ok(Value::Boolean(false)) => return,
            Ok(Value::Boolean(true)) => (None, None, true),
            Ok(Value::Table(tt)) => {
                let what = format!("pool \"{name}\" tls");
                let _ = self.unknown_keys(&tt, TLS_KEYS, &what, &at);
                let sni = match tt.get::<Value>("sni") {
                    Ok(Value::Nil) => None,
                    Ok(Value::String(v)) => {
                        let v = v.to_string_lossy();
                        match ServerName::try_from(v.clone()) {
                            Ok(n) => Some(n),
                            Err(_) => {
                                self.error(
                                    &["pools", name, "tls", "sni"],
                                    format!("pool \"{name}\": tls sni \"{v}\" is not a host name"),
                                );
                                return;
                            }
                        }
                    }
                    Ok(other) => {
                        self.error(
                            &["pools", name, "tls", "sni"],
                            format!(
                                "pool \"{name}\": tls sni must be a host name, not {}",
                                shown(&other)
                            ),
                        );
                        return;
                    }
                    Err(e) => {
                        self.error(&["pools", name, "tls", "sni"], e.to_string());
                        return;
                    }
                };
                let ca = match tt.get::<Value>("ca") {
                    Ok(Value::Nil) => None,
                    Ok(Value::String(v)) => {
                        let file = PathBuf::from(v.to_string_lossy());
                        let dir = self.path.parent().unwrap_or(Path::new("."));
                        Some(if file.is_absolute() {
                            file
                        } else {
                            dir.join(file)
                        })
                    }
                    Ok(other) => {
                        self.error(
                            &["pools", name, "tls", "ca"],
                            format!(
                                "pool \"{name}\": tls ca must be the path of a PEM file, not {}",
                                shown(&other)
                            ),
                        );
                        return;
                    }
                    Err(e) => {
                        self.error(&["pools", name, "tls", "ca"], e.to_string());
                        return;
                    }
                };
                let verify = self
                    .flag(&tt, &["pools", name, "tls", "verify"], &what)
                    .unwrap_or(true);
                (sni, ca, verify)
            }
            Ok(other) => {
                self.error(
                    &at,
                    format!(
                        "pool \"{name}\": tls must be true or a table like {{ ca = \"ca.pem\" }}, not {}",
                        shown(&other)
                    ),
                );
                return;
            }
            Err(e) => {
                self.error(&at, e.to_string());
                return;
            }
        };
        let roots = match (&ca, verify) {
            (_, false) => None,
            (Some(path), true) => match read_ca(path) {
                Ok(r) => Some(Arc::new(r)),
                Err(msg) => {
                    self.error(
                        &["pools", name, "tls", "ca"],
                        format!("pool \"{name}\": tls ca: {msg}"),
                    );
                    return;
                }
            },
            (None, true) => Some(system_roots()),
        };
        match client_config(roots, s.protocol) {
            Ok(mut config) => {
                if s.mode == super::Mode::Tcp {
                    // A tcp pool's TLS carries whatever the client speaks
                    // (HAProxy's `server ... ssl` in `mode tcp`): no ALPN
                    // is offered for it.
                    config.alpn_protocols.clear();
                }
                let config = Arc::new(config);
                let http1 = match s.protocol {
                    Protocol::Http1 => config.clone(),
                    Protocol::H2 => {
                        let mut c = ClientConfig::clone(&config);
                        c.alpn_protocols = vec![b"http/1.1".to_vec()];
                        Arc::new(c)
                    }
                };
                s.tls = Some(Arc::new(UpstreamTls {
                    config,
                    http1,
                    sni,
                    verify,
                    ca,
                }))
            }
            Err(e) => self.error(&at, format!("pool \"{name}\": tls: {e}")),
        }
    }
}

/// Why a server's certificate did not verify, in plain words for the log
/// line and the 502 (rustls's own text is its type names, e.g.
/// `Other(OtherError(CaUsedAsEndEntity))`). See docs/tls.md, "TLS to
/// servers".
pub fn certificate_problem(c: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match c {
        C::UnknownIssuer => "not signed by a trusted CA (set the pool's tls.ca)".into(),
        C::NotValidForName => "the certificate is not for the name Pocket asked for (the server's name, or the pool's tls.sni)".into(),
        C::NotValidForNameContext { expected, presented } => {
            let expected = match expected {
                ServerName::DnsName(d) => d.as_ref().to_string(),
                ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
                _ => "this server".to_string(),
            };
            let names: Vec<String> = presented
                .iter()
                .map(|p| {
                    // rustls writes `DnsName("x")` / `IpAddress(..)`.
                    p.trim_start_matches("DnsName(")
                        .trim_start_matches("IpAddress(")
                        .trim_end_matches(')')
                        .trim_matches('"')
                        .to_string()
                })
                .collect();
            if names.is_empty() {
                format!("the certificate is not for {expected} (it names no host)")
            } else {
                format!("the certificate is not for {expected} (it is for {})", names.join(", "))
            }
        }
        C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet (check the clocks)".into()
        }
        C::Revoked => "the server's certificate is revoked".into(),
        C::BadSignature => "the certificate's signature does not match its issuer".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "the certificate is not for a TLS server (its extended key usage)".into()
        }
        C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "the certificate is signed with an algorithm Pocket does not accept".into()
        }
        C::BadEncoding => "the server sent a certificate that is not valid DER".into(),
        other => {
            // webpki's reasons arrive as `Other(..)`: name the common ones.
            let text = format!("{other:?}");
            if text.contains("CaUsedAsEndEntity") {
                "the server's certificate is a CA certificate, not a server certificate (a `openssl req -x509` certificate is one: make a CA and a server certificate signed by it, docs/tls.md)".into()
            } else if text.contains("UnsupportedCertVersion") {
                "the server's certificate is an X.509 v1 certificate: make a v3 one with subjectAltName".into()
            } else if text.contains("UnknownIssuer") {
                "not signed by a trusted CA (set the pool's tls.ca)".into()
            } else {
                text
            }
        }
    }
}
