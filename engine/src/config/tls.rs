//! A listener's `tls`: its certificates, read and checked at load, and the
//! rustls server configuration built from them once (the accept path only
//! clones an `Arc`).
//!
//! ```lua
//! tls = { cert = "site.pem", key = "site.key" }
//! tls = { certs = { { cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" } },
//!         strict_sni = true }
//! ```
//!
//! Paths are relative to the policy's folder. A certificate is chosen by
//! the client's SNI from its DNS names (subjectAltName; the subject's CN
//! when it has none; `*.example.com` covers one label), the first one
//! being the default for a name none has, or for a client that sends no
//! SNI. `strict_sni = true` refuses those handshakes instead (HAProxy's
//! `strict-sni`). TLS 1.2 and 1.3; ALPN `h2`, `http/1.1`, `http/1.0`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlua::{Table, Value};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::load::Checker;
use super::pool_settings::shown;

const TLS_KEYS: &[&str] = &["cert", "key", "certs", "strict_sni"];
const PAIR_KEYS: &[&str] = &["cert", "key"];

/// The most a certificate or key file may be, in bytes (a chain of a few
/// certificates is a few KiB; a larger file is not one).
const MAX_PEM: u64 = 1024 * 1024;

/// A listener's TLS, ready to serve: built once per load.
pub struct ListenerTls {
    /// Shared by every worker's handshakes.
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate and key files read (absolute), which the policy
    /// watcher follows.
    pub files: Vec<PathBuf>,
    /// Handshakes with no SNI, or one no certificate names, are refused.
    pub strict_sni: bool,
    /// Each certificate's DNS names, in the policy's order (for
    /// `pocket check`).
    pub names: Vec<Vec<String>>,
    /// A hash of the certificate chains served: a reload's summary says
    /// when they changed (a renewal keeps the policy's text as it was).
    pub fingerprint: u64,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("files", &self.files)
            .field("strict_sni", &self.strict_sni)
            .field("names", &self.names)
            .finish()
    }
}

/// One certificate (chain) with its key, and the names it answers for.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
}

/// Chooses a certificate by the ClientHello's SNI.
#[derive(Debug)]
struct BySni {
    /// The first certificate: for a name no certificate has, or no SNI.
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    strict: bool,
}

impl BySni {
    fn find(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k);
        }
        // One label only: `*.example.com` covers `a.example.com`, not
        // `a.b.example.com` (RFC 6125 §6.4.3).
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent)
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let found = hello.server_name().and_then(|sni| self.find(sni));
        match found {
            Some(k) => Some(k.clone()),
            None if self.strict => None,
            None => Some(self.default.clone()),
        }
    }
}

/// The reason rustls gives when [`BySni`] found no certificate (rustls'
/// own words), which the accept path counts as `no_certificate`.
pub const NO_CERTIFICATE: &str = "no server certificate chain resolved";

impl Checker<'_> {
    /// Reads a listener's `tls` value: `None` when absent or wrong (with
    /// an error, placed at the listener's `tls` line or the entry's).
    pub(super) fn listener_tls(
        &mut self,
        listener: &Table,
        label: &str,
        at: &[&str],
    ) -> Option<Arc<ListenerTls>> {
        let at_tls = [at, &["tls"]].concat();
        let t = match listener.get::<Value>("tls") {
            Ok(Value::Nil) => return None,
            Ok(Value::Table(t)) => t,
            Ok(other) => {
                self.error(
                    &at_tls,
                    format!(
                        "{label}: tls must be a table like {{ cert = \"site.pem\", key = \"site.key\" }}, not {}",
                        shown(&other)
                    ),
                );
                return None;
            }
            Err(e) => {
                self.error(&at_tls, crate::script::describe_lua_error(&e));
                return None;
            }
        };
        let what = format!("{label} tls");
        let errors_before = self.errors.len();
        let _ = self.unknown_keys(&t, TLS_KEYS, &what, &at_tls);
        let strict_sni = match t.get::<Value>("strict_sni") {
            Ok(Value::Nil) => false,
            Ok(Value::Boolean(b)) => b,
            Ok(other) => {
                self.error(
                    &[&at_tls[..], &["strict_sni"]].concat(),
                    format!(
                        "{what}: strict_sni must be true or false, not {}",
                        shown(&other)
                    ),
                );
                false
            }
            Err(e) => {
                self.error(&at_tls, crate::script::describe_lua_error(&e));
                false
            }
        };
        let single = !matches!(t.get::<Value>("cert"), Ok(Value::Nil))
            || !matches!(t.get::<Value>("key"), Ok(Value::Nil));
        let list = t.get::<Value>("certs").unwrap_or(Value::Nil);
        let mut loaded: Vec<Loaded> = Vec::new();
        let mut files = Vec::new();
        match (single, list) {
            (true, Value::Nil) => {
                if let Some(l) = self.cert_pair(&t, &what, &at_tls, &mut files) {
                    loaded.push(l);
                }
            }
            (false, Value::Table(list)) => {
                let at_list = [&at_tls[..], &["certs"]].concat();
                let mut n = 0;
                for entry in list.sequence_values::<Value>() {
                    n += 1;
                    let ns = format!("[{n}]");
                    let at_n = [&at_list[..], &[ns.as_str()]].concat();
                    let here = format!("{what} certs[{n}]");
                    match entry {
                        Ok(Value::Table(pair)) => {
                            let _ = self.unknown_keys(&pair, PAIR_KEYS, &here, &at_n);
                            if let Some(l) = self.cert_pair(&pair, &here, &at_n, &mut files) {
                                loaded.push(l);
                            }
                        }
                        Ok(other) => self.error(
                            &at_n,
                            format!(
                                "{here} must be a table like {{ cert = \"site.pem\", key = \"site.key\" }}, not {}",
                                shown(&other)
                            ),
                        ),
                        Err(e) => self.error(&at_n, crate::script::describe_lua_error(&e)),
                    }
                }
                if n == 0 {
                    self.error(&at_list, format!("{what}: certs is empty"));
                }
            }
            (false, Value::Nil) => {
                self.error(
                    &at_tls,
                    format!("{what} has no certificate: write tls = {{ cert = \"site.pem\", key = \"site.key\" }}"),
                );
            }
            (true, _) => {
                self.error(
                    &at_tls,
                    format!("{what}: write either cert and key, or certs = {{ ... }}, not both"),
                );
            }
            (false, other) => {
                self.error(
                    &[&at_tls[..], &["certs"]].concat(),
                    format!(
                        "{what}: certs must be a list like {{ {{ cert = \"a.pem\", key = \"a.key\" }} }}, not {}",
                        shown(&other)
                    ),
                );
            }
        }
        if self.errors.len() > errors_before || loaded.is_empty() {
            return None;
        }
        let names = loaded.iter().map(|l| l.names.clone()).collect();
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for l in &loaded {
                for c in &l.key.cert {
                    c.as_ref().hash(&mut h);
                }
            }
            h.finish()
        };
        match server_config(loaded, strict_sni, label) {
            Ok(config) => Some(Arc::new(ListenerTls {
                config,
                files,
                strict_sni,
                names,
                fingerprint,
            })),
            Err(e) => {
                self.error(&at_tls, format!("{what}: {e}"));
                None
            }
        }
    }

    /// One `cert` + `key` pair of `t`: read, parsed, matched.
    fn cert_pair(
        &mut self,
        t: &Table,
        what: &str,
        at: &[&str],
        files: &mut Vec<PathBuf>,
    ) -> Option<Loaded> {
        let cert = self.pem_path(t, "cert", what, at)?;
        let key = self.pem_path(t, "key", what, at)?;
        let at_cert = [at, &["cert"]].concat();
        let at_key = [at, &["key"]].concat();
        files.push(cert.1.clone());
        files.push(key.1.clone());
        let cert_pem = match read_pem(&cert.1) {
            Ok(b) => b,
            Err(e) => {
                self.error(&at_cert, format!("{what}: cert \"{}\": {e}", cert.0));
                return None;
            }
        };
        let key_pem = match read_pem(&key.1) {
            Ok(b) => b,
            Err(e) => {
                self.error(&at_key, format!("{what}: key \"{}\": {e}", key.0));
                return None;
            }
        };
        let chain: Result<Vec<CertificateDer<'static>>, _> =
            CertificateDer::pem_slice_iter(&cert_pem).collect();
        let chain = match chain {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => {
                self.error(
                    &at_cert,
                    format!(
                        "{what}: cert \"{}\" is not a PEM certificate (no -----BEGIN CERTIFICATE----- block)",
                        cert.0
                    ),
                );
                return None;
            }
            Err(e) => {
                self.error(
                    &at_cert,
                    format!(
                        "{what}: cert \"{}\" is not valid PEM: {}",
                        cert.0,
                        pem_words(&e)
                    ),
                );
                return None;
            }
        };
        if is_encrypted_key(&key_pem) {
            self.error(
                &at_key,
                format!(
                    "{what}: key \"{}\" is encrypted (a passphrase-protected key); Pocket needs it unencrypted (openssl pkey -in {} -out {}.plain)",
                    key.0, key.0, key.0
                ),
            );
            return None;
        }
        let private = match PrivateKeyDer::from_pem_slice(&key_pem) {
            Ok(k) => k,
            Err(rustls_pki_types::pem::Error::NoItemsFound) => {
                self.error(
                    &at_key,
                    format!(
                        "{what}: key \"{}\" is not a PEM private key (no -----BEGIN ... PRIVATE KEY----- block)",
                        key.0
                    ),
                );
                return None;
            }
            Err(e) => {
                self.error(
                    &at_key,
                    format!(
                        "{what}: key \"{}\" is not valid PEM: {}",
                        key.0,
                        pem_words(&e)
                    ),
                );
                return None;
            }
        };
        let (names, validity) = match describe(&chain[0]) {
            Ok(d) => d,
            Err(e) => {
                self.error(
                    &at_cert,
                    format!("{what}: cert \"{}\" cannot be read: {e}", cert.0),
                );
                return None;
            }
        };
        let provider = rustls::crypto::ring::default_provider();
        let certified = match CertifiedKey::from_der(chain, private, &provider) {
            Ok(c) => c,
            Err(rustls::Error::InconsistentKeys(_)) => {
                self.error(
                    &at_key,
                    format!(
                        "{what}: key \"{}\" does not match cert \"{}\" (their public keys differ)",
                        key.0, cert.0
                    ),
                );
                return None;
            }
            // The certificate is parsed here too (to match the keys): its
            // faults are the certificate's, not the key's.
            Err(rustls::Error::InvalidCertificate(c)) => {
                self.error(
                    &at_cert,
                    format!(
                        "{what}: cert \"{}\" cannot be used: {}",
                        cert.0,
                        own_certificate_problem(&c)
                    ),
                );
                return None;
            }
            Err(rustls::Error::General(m)) if m.contains("failed to parse private key") => {
                self.error(
                    &at_key,
                    format!(
                        "{what}: key \"{}\" cannot be used: not an RSA key of 2048 bits or more, an ECDSA P-256/P-384 key or an Ed25519 key",
                        key.0
                    ),
                );
                return None;
            }
            Err(e) => {
                self.error(
                    &at_key,
                    format!("{what}: key \"{}\" cannot be used: {e}", key.0),
                );
                return None;
            }
        };
        if let Some(problem) = validity {
            // Loads (a lab, a clock that is off), but the user must know.
            let line = self.places_line(&at_cert);
            let place = match line {
                Some(l) => format!("{}:{l}", self.path.display()),
                None => self.path.display().to_string(),
            };
            tracing::warn!("{place}: {what}: cert \"{}\" {problem}", cert.0);
        }
        if names.is_empty() {
            let line = self.places_line(&at_cert);
            let place = match line {
                Some(l) => format!("{}:{l}", self.path.display()),
                None => self.path.display().to_string(),
            };
            tracing::warn!(
                "{place}: {what}: cert \"{}\" names no DNS name: it serves only as the default",
                cert.0
            );
        }
        Some(Loaded {
            key: Arc::new(certified),
            names,
        })
    }

    /// `t[key]` as a path: (as written, resolved against the policy's
    /// folder).
    fn pem_path(
        &mut self,
        t: &Table,
        key: &str,
        what: &str,
        at: &[&str],
    ) -> Option<(String, PathBuf)> {
        let at_key = [at, &[key]].concat();
        match t.get::<Value>(key) {
            Ok(Value::String(s)) => {
                let written = s.to_string_lossy();
                let dir = self.path.parent().unwrap_or(Path::new(""));
                let full = dir.join(&written);
                let full = std::path::absolute(&full).unwrap_or(full);
                Some((written, full))
            }
            Ok(Value::Nil) => {
                let other = if key == "cert" { "key" } else { "cert" };
                self.error(
                    at,
                    format!("{what} has a {other} but no {key} (write {key} = \"...\")"),
                );
                None
            }
            Ok(other) => {
                self.error(
                    &at_key,
                    format!(
                        "{what}: {key} must be a file name (a string), not {}",
                        shown(&other)
                    ),
                );
                None
            }
            Err(e) => {
                self.error(&at_key, crate::script::describe_lua_error(&e));
                None
            }
        }
    }
}

/// The bytes of a PEM file, or why they cannot be had.
fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {}", path.display(), io_words(&e)))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {}", path.display(), io_words(&e)))?;
    if bytes.len() as u64 > MAX_PEM {
        return Err(format!(
            "{} is over {} KiB: not a certificate or key file",
            path.display(),
            MAX_PEM / 1024
        ));
    }
    Ok(bytes)
}

/// An I/O error as a user reads it (no `(os error 2)`).
fn io_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// A certificate's DNS names (lowercase) and, when it is not valid now,
/// what is wrong with its dates.
fn describe(der: &CertificateDer<'_>) -> Result<(Vec<String>, Option<String>), String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                names.push(n.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        // No subjectAltName: the subject's CN, as older clients read it.
        if let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
        {
            if cn.contains('.') && !cn.contains(' ') {
                names.push(cn.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    let v = cert.validity();
    let now = ASN1Time::now();
    let problem = if now > v.not_after {
        Some(format!(
            "has expired (valid from {} to {}); it is served anyway, and clients will refuse it",
            v.not_before, v.not_after
        ))
    } else if now < v.not_before {
        Some(format!(
            "is not valid yet (valid from {} to {}); it is served anyway, and clients will refuse it",
            v.not_before, v.not_after
        ))
    } else {
        None
    };
    Ok((names, problem))
}

/// The server configuration for `certs` (the first the default), with
/// the resumption state `label`'s listener had in the previous load.
fn server_config(
    certs: Vec<Loaded>,
    strict: bool,
    label: &str,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    for l in &certs {
        for n in &l.names {
            // The first certificate that names a host wins, as the list reads.
            match n.strip_prefix("*.") {
                Some(parent) => {
                    wildcard
                        .entry(parent.to_string())
                        .or_insert_with(|| l.key.clone());
                }
                None => {
                    exact.entry(n.clone()).or_insert_with(|| l.key.clone());
                }
            }
        }
    }
    let resolver = BySni {
        default: certs[0].key.clone(),
        exact,
        wildcard,
        strict,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    // http/1.0 too (as nginx): a client that offers only it (`curl
    // --http1.0`) would otherwise fail the handshake (no_application_protocol).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    // Resumption: TLS 1.3 tickets and a TLS 1.2 session cache, so a
    // returning client skips the full handshake.
    let kept = resumption(label)?;
    config.ticketer = kept.ticketer;
    config.session_storage = kept.sessions;
    Ok(Arc::new(config))
}

/// TLS 1.2 sessions kept for resumption per listener (rustls' default
/// is 256).
const SESSION_CACHE: usize = 4096;

/// A listener's ticket keys and TLS 1.2 session cache.
#[derive(Clone)]
struct Resumption {
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
}

/// Resumption state by listener (its label, `listener "web"`), kept for
/// the life of the process: a reload (a policy saved, a certificate
/// renewed) does not make every returning client do a full handshake.
/// HAProxy keeps its ticket keys across reloads likewise; nginx keeps its
/// shared session cache. The ticket keys still rotate (rustls: every 6
/// hours, the previous key accepted for as long again). A few listeners:
/// a list, searched at load only.
static RESUMPTION: std::sync::Mutex<Vec<(String, Resumption)>> = std::sync::Mutex::new(Vec::new());

/// The resumption state of `label`'s listener: the one it had, or a new one.
fn resumption(label: &str) -> Result<Resumption, String> {
    let mut kept = RESUMPTION.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = kept.iter().find(|(l, _)| l == label) {
        return Ok(r.clone());
    }
    let r = Resumption {
        ticketer: rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("cannot make TLS session ticket keys: {e}"))?,
        sessions: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE),
    };
    kept.push((label.to_string(), r.clone()));
    Ok(r)
}

/// A PEM parse error in words: rustls-pki-types prints the missing end
/// marker as a byte array (`[67, 69, 82, ...]`).
pub(crate) fn pem_words(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { end_marker } => format!(
            "the PEM file is cut short (no -----END {}----- line)",
            String::from_utf8_lossy(end_marker)
        ),
        E::IllegalSectionStart { line } => format!(
            "a -----BEGIN line is malformed: {:?}",
            String::from_utf8_lossy(line)
        ),
        E::Base64Decode(m) => format!("a line inside a PEM block is not base64 ({m})"),
        other => other.to_string(),
    }
}

/// A passphrase-protected key: PKCS#8 `ENCRYPTED PRIVATE KEY`, or the
/// traditional OpenSSL form (`Proc-Type: 4,ENCRYPTED`). rustls reads
/// neither, and would call it "no PEM key block".
fn is_encrypted_key(pem: &[u8]) -> bool {
    let has = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

/// Why a listener's own certificate cannot be served, in words.
fn own_certificate_problem(c: &rustls::CertificateError) -> String {
    let text = format!("{c:?}");
    if text.contains("UnsupportedCertVersion") {
        "an X.509 v1 certificate: make a v3 one with subjectAltName (openssl x509 -req ... -extfile with subjectAltName=DNS:your.name)".into()
    } else if text.contains("BadDer") || matches!(c, rustls::CertificateError::BadEncoding) {
        "its DER inside the PEM block is not a valid certificate".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        let key = |_: u8| {
            let k = rcgen::KeyPair::generate().unwrap();
            let c = rcgen::CertificateParams::new(vec!["x.test".into()])
                .unwrap()
                .self_signed(&k)
                .unwrap();
            let provider = rustls::crypto::ring::default_provider();
            Arc::new(
                CertifiedKey::from_der(
                    vec![c.der().clone()],
                    PrivateKeyDer::try_from(k.serialize_der()).unwrap(),
                    &provider,
                )
                .unwrap(),
            )
        };
        let (a, b) = (key(0), key(1));
        let r = BySni {
            default: a.clone(),
            exact: HashMap::from([("a.example.com".to_string(), a.clone())]),
            wildcard: HashMap::from([("example.com".to_string(), b.clone())]),
            strict: true,
        };
        assert!(Arc::ptr_eq(r.find("A.Example.com").unwrap(), &a));
        assert!(Arc::ptr_eq(r.find("b.example.com").unwrap(), &b));
        assert!(r.find("x.b.example.com").is_none());
        assert!(r.find("example.com").is_none());
    }
}
