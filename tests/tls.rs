//! TLS termination on listeners, with real parts: certificates made here
//! by a test CA (rcgen, ECDSA P-256), a real Pocket, real origins, and
//! real clients (curl over https, `openssl s_client` for SNI and ALPN).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{origin, pocket_cmd, require_command, write_policy, Pocket, DEADLINE};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A test CA that signs server certificates into a folder.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

impl Ca {
    /// A new CA; its certificate is written to `dir/ca.pem`.
    fn new(dir: &Path) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Pocket test CA");
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
        }
    }

    /// Signs a certificate for `names` (its CN the first name, its O
    /// `org`), written as `file.pem` and `file.key`.
    fn issue(&self, file: &str, names: &[&str], org: &str) {
        self.issue_dated(file, names, org, None);
    }

    fn issue_dated(&self, file: &str, names: &[&str], org: &str, years: Option<(i32, i32)>) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        if let Some((from, to)) = years {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        // Replaced as tools do: a new file renamed over the old one.
        let put = |name: String, text: String| {
            let tmp = self.dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.dir.join(name)).unwrap();
        };
        put(format!("{file}.key"), key.serialize_pem());
        put(format!("{file}.pem"), cert.pem());
    }
}

fn policy(origin: SocketAddr, tls: &str, extra: &str) -> String {
    format!(
        r#"return {{
  listeners = {{
    {{ name = "web", bind = "127.0.0.1:0", pool = "app",
      timeouts = {{ head = "2s" }},
      tls = {tls} }},
  }},
  pools = {{ app = {{ servers = {{ "{origin}" }} }} }},
{extra}
}}
"#
    )
}

const TWO_CERTS: &str = r#"{ certs = {
        { cert = "a.pem", key = "a.key" },
        { cert = "b.pem", key = "b.key" },
      } }"#;

/// A folder with a CA, `a` (a.test) and `b` (b.test, *.w.test).
fn pki() -> (tempfile::TempDir, Ca) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    ca.issue("a", &["a.test"], "one");
    ca.issue("b", &["b.test", "*.w.test"], "one");
    (dir, ca)
}

fn start(dir: tempfile::TempDir, policy: &str) -> Pocket {
    let path = write_policy(dir.path(), "policy.lua", policy);
    Pocket::start_file(dir, path, 1)
}

/// `curl` over https to `name` (resolved to Pocket's port): (exit code,
/// `%{http_code} %{http_version}` then the body).
fn curl(dir: &Path, addr: SocketAddr, name: &str, path: &str, extra: &[&str]) -> (i32, String) {
    require_command("curl", "curl");
    let port = addr.port();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(dir.join("ca.pem"))
        .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(extra)
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `openssl s_client` with this SNI (none if empty) offering h2 and
/// http/1.1: its whole output.
fn s_client(addr: SocketAddr, sni: &str) -> String {
    require_command("openssl", "openssl");
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &addr.to_string(),
        "-alpn",
        "h2,http/1.1",
    ]);
    if sni.is_empty() {
        cmd.arg("-noservername");
    } else {
        cmd.args(["-servername", sni]);
    }
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The subject line of the certificate `s_client` was served.
fn subject(out: &str) -> String {
    out.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no certificate in:\n{out}"))
        .replace(' ', "")
}

#[test]
fn sni_chooses_the_certificate_and_alpn_h2_works() {
    let (dir, _ca) = pki();
    let o = origin("A");
    let folder = dir.path().to_path_buf();
    let log = folder.join("access.json");
    let extra = format!(
        r#"  log = {{ access = "{}", format = "json" }},"#,
        log.display()
    );
    let p = start(dir, &policy(o.addr, TWO_CERTS, &extra));
    let addr = p.addr("web");

    assert!(subject(&s_client(addr, "a.test")).contains("CN=a.test"));
    assert!(subject(&s_client(addr, "b.test")).contains("CN=b.test"));
    // A wildcard covers one label.
    assert!(subject(&s_client(addr, "x.w.test")).contains("CN=b.test"));
    // No certificate names it, or no SNI at all: the first one.
    assert!(subject(&s_client(addr, "other.test")).contains("CN=a.test"));
    assert!(subject(&s_client(addr, "")).contains("CN=a.test"));
    assert!(subject(&s_client(addr, "x.y.w.test")).contains("CN=a.test"));
    assert!(s_client(addr, "b.test").contains("ALPN protocol: h2"));

    // curl verifies the chain and the name against the test CA.
    let (code, out) = curl(&folder, addr, "b.test", "/headers", &["--http2"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("200 2"), "{out}");
    assert!(out.contains("x-forwarded-proto: https"), "{out}");
    let (code, out) = curl(&folder, addr, "a.test", "/headers", &["--http1.1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("200 1.1"), "{out}");
    assert!(out.contains("x-forwarded-proto: https"), "{out}");
    // Keep-alive: several requests on one connection, both protocols.
    for v in ["--http1.1", "--http2"] {
        let port = addr.port();
        let url = format!("https://a.test:{port}/headers");
        let (code, out) = curl(&folder, addr, "a.test", "/headers", &[v, &url, &url]);
        assert_eq!(code, 0, "{out}");
        assert_eq!(out.matches("x-forwarded-proto: https").count(), 3, "{out}");
    }
    // A request body over TLS (HTTP/1 reads it in pieces), both protocols.
    let body = folder.join("body.bin");
    std::fs::write(&body, vec![b'x'; 1_000_000]).unwrap();
    for v in ["--http1.1", "--http2"] {
        let data = format!("@{}", body.display());
        let (code, out) = curl(
            &folder,
            addr,
            "a.test",
            "/upload",
            &[v, "--data-binary", &data],
        );
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("A received 1000000 bytes"), "{out}");
    }
    // The JSON access log says which TLS and which name.
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(r#""proto":"HTTP/2""#)
            && text.contains(r#""termination":"--","tls_version":"TLSv1.3","sni":"b.test"}"#)
        {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "no TLS fields in:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn strict_sni_refuses_names_no_certificate_has() {
    let (dir, _ca) = pki();
    let o = origin("A");
    let folder = dir.path().to_path_buf();
    let tls = r#"{ certs = { { cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" } }, strict_sni = true }"#;
    let path = write_policy(&folder, "policy.lua", &policy(o.addr, tls, ""));
    let p = Pocket::spawn_for_tls(dir, path, "info,pocket::server::tls=debug");
    let addr = p.addr("web");
    let out = s_client(addr, "other.test");
    assert!(!out.contains("subject="), "served a certificate:\n{out}");
    p.log.wait_for(&["TLS handshake failed", "no_certificate"]);
    let out = s_client(addr, "");
    assert!(!out.contains("subject="), "served a certificate:\n{out}");
    let (code, out) = curl(&folder, addr, "b.test", "/", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("200 1.1") || out.ends_with("200 2"), "{out}");
}

#[test]
fn scripts_see_the_connection_tls() {
    let (dir, _ca) = pki();
    let o = origin("A");
    let folder = dir.path().to_path_buf();
    let extra = r#"
  on_connect = function(conn)
    -- Before the handshake: whether the listener is TLS, no SNI yet.
    if conn.tls ~= (conn.listener == "web") or conn.sni ~= nil or conn.alpn ~= nil then
      return pocket.reject("unexpected conn fields")
    end
  end,
  on_request = function(req)
    return pocket.respond(200, string.format("%s %s %s %s %s\n",
      req.scheme, tostring(req.tls), tostring(req.sni), tostring(req.alpn), tostring(req.tls_version)))
  end,"#;
    let text = policy(o.addr, TWO_CERTS, extra).replace(
        "  },\n  pools",
        "    { name = \"plain\", bind = \"127.0.0.1:0\", pool = \"app\" },\n  },\n  pools",
    );
    let path = write_policy(&folder, "policy.lua", &text);
    let p = Pocket::start_file(dir, path, 1);
    let addr = p.addr("web");
    let (code, out) = curl(&folder, addr, "b.test", "/", &["--http2"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("https true b.test h2 TLSv1.3\n"), "{out}");
    let (_, out) = curl(
        &folder,
        addr,
        "b.test",
        "/",
        &["--http1.1", "--tls-max", "1.2"],
    );
    assert!(
        out.starts_with("https true b.test http/1.1 TLSv1.2\n"),
        "{out}"
    );
    let plain = p.addr("plain");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .arg(format!("http://{plain}/"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "http false nil nil nil\n"
    );
    assert!(
        !p.log.text().contains("unexpected conn fields"),
        "{}",
        p.log.text()
    );
}

/// Reads what the server sends until it closes (or DEADLINE): the bytes,
/// and whether it closed.
fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

#[test]
fn plain_http_on_the_tls_port_gets_a_readable_400() {
    let (dir, _ca) = pki();
    let o = origin("A");
    let p = start(dir, &policy(o.addr, TWO_CERTS, ""));
    let addr = p.addr("web");
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    let (bytes, closed) = read_until_closed(&mut s);
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed, "not closed: {text}");
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.contains("This port speaks HTTPS"), "{text}");
}

#[test]
fn bad_handshakes_close_and_others_are_served() {
    let (dir, _ca) = pki();
    let o = origin("A");
    let folder = dir.path().to_path_buf();
    let admin = r#"  admin = { bind = "127.0.0.1:0" },"#;
    let path = write_policy(&folder, "policy.lua", &policy(o.addr, TWO_CERTS, admin));
    let p = Pocket::spawn_for_tls(dir, path, "info,pocket::server::tls=debug");
    let addr = p.addr("web");
    // A handshake record whose content is garbage.
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage
        .write_all(b"\x16\x03\x01\x00\x10this is no hello")
        .unwrap();
    // A handshake begun and never finished (head timeout: 2 s).
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(b"\x16\x03\x01\x02\x00\x01").unwrap();
    // Others are served meanwhile.
    let (code, out) = curl(&folder, addr, "a.test", "/", &[]);
    assert_eq!(code, 0, "{out}");
    let (_, closed) = read_until_closed(&mut garbage);
    assert!(closed, "a garbage ClientHello left the connection open");
    p.log.wait_for(&["TLS handshake failed", "bad_hello"]);
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stalled);
    assert!(closed, "a stalled handshake left the connection open");
    assert!(started.elapsed() < DEADLINE);
    p.log.wait_for(&["TLS handshake failed", "timeout"]);
    let (code, out) = curl(&folder, addr, "b.test", "/", &[]);
    assert_eq!(code, 0, "{out}");
    // Counted, by listener and reason.
    let line = p.log.wait_for(&["admin listening on "]);
    let admin = line.rsplit("admin listening on ").next().unwrap().trim();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .arg(format!("http://{admin}/metrics"))
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&out.stdout);
    for reason in ["bad_hello", "timeout"] {
        let want = format!(
            "pocket_tls_handshake_failures_total{{listener=\"web\",reason=\"{reason}\"}} 1"
        );
        assert!(metrics.contains(&want), "no {want} in:\n{metrics}");
    }
}

#[test]
fn a_replaced_certificate_is_served_after_the_watcher_reloads() {
    let (dir, ca) = pki();
    let o = origin("A");
    let folder = dir.path().to_path_buf();
    let p = start(dir, &policy(o.addr, TWO_CERTS, ""));
    let addr = p.addr("web");
    assert!(subject(&s_client(addr, "b.test")).contains("O=one"));
    ca.issue("b", &["b.test"], "two");
    // The reload says what changed: the policy's text did not.
    let line = p
        .log
        .wait_for(&["reload (file changed): generation 2 is live"]);
    assert!(line.contains("listener web certificates changed"), "{line}");
    assert!(subject(&s_client(addr, "b.test")).contains("O=two"));
    let (code, out) = curl(&folder, addr, "b.test", "/", &[]);
    assert_eq!(code, 0, "{out}");

    // A bad certificate on reload: refused, the old one keeps serving.
    std::fs::write(folder.join("b.pem"), "not a certificate\n").unwrap();
    let line = p.log.wait_for(&["refused", "b.pem"]);
    assert!(line.contains("policy.lua:"), "{line}");
    assert!(subject(&s_client(addr, "b.test")).contains("O=two"));
}

/// `pocket check` of a policy whose listener's tls is `tls`: (exit code,
/// stderr).
fn check(folder: &Path, tls: &str) -> (i32, String) {
    let text = policy("127.0.0.1:9".parse().unwrap(), tls, "");
    let path = write_policy(folder, "policy.lua", &text);
    let (code, _out, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    (code, err)
}

#[test]
fn bad_certificates_are_refused_at_load_with_their_line() {
    let (dir, ca) = pki();
    let folder = dir.path();
    // The policy writes tls = ... on line 5; the pair on that line too.
    let at = "policy.lua:5:";
    let cases: Vec<(String, &str)> = vec![
        (
            r#"{ cert = "missing.pem", key = "a.key" }"#.into(),
            "no such file",
        ),
        (
            r#"{ cert = "a.key", key = "a.key" }"#.into(),
            "not a PEM certificate",
        ),
        (
            r#"{ cert = "a.pem", key = "a.pem" }"#.into(),
            "not a PEM private key",
        ),
        (
            r#"{ cert = "a.pem", key = "b.key" }"#.into(),
            "does not match",
        ),
        (r#"{ cert = "a.pem" }"#.into(), "no key"),
        (
            r#"{ cert = 5, key = "a.key" }"#.into(),
            "must be a file name",
        ),
        (
            r#"{ cert = "a.pem", key = "a.key", strict = true }"#.into(),
            "unknown key \"strict\"",
        ),
        (r#"{ certs = {} }"#.into(), "certs is empty"),
        (r#""a.pem""#.into(), "tls must be a table"),
    ];
    for (tls, want) in cases {
        let (code, err) = check(folder, &tls);
        assert_ne!(code, 0, "{tls} was accepted");
        assert!(err.contains(at) && err.contains(want), "{tls}: {err}");
    }
    std::fs::write(
        folder.join("junk.pem"),
        "-----BEGIN CERTIFICATE-----\nzzz\n",
    )
    .unwrap();
    let (code, err) = check(folder, r#"{ cert = "junk.pem", key = "a.key" }"#);
    assert_ne!(code, 0);
    assert!(err.contains(at) && err.contains("junk.pem"), "{err}");
    // Made with openssl as users make them (newcomer 15): a passphrase-
    // protected key, a PEM file cut short, an X.509 v1 certificate (`x509
    // -req -signkey` without extensions). Each said in words, the fault
    // put on the right file.
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(folder)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    openssl(&[
        "pkey",
        "-in",
        "a.key",
        "-aes256",
        "-passout",
        "pass:secret",
        "-out",
        "enc.key",
    ]);
    openssl(&[
        "req", "-new", "-key", "a.key", "-subj", "/CN=old", "-out", "old.csr",
    ]);
    openssl(&[
        "x509", "-req", "-in", "old.csr", "-signkey", "a.key", "-days", "30", "-out", "old.pem",
    ]);
    let whole = std::fs::read(folder.join("a.pem")).unwrap();
    std::fs::write(folder.join("trunc.pem"), &whole[..300]).unwrap();
    let made: &[(&str, &str)] = &[
        (
            r#"{ cert = "a.pem", key = "enc.key" }"#,
            "key \"enc.key\" is encrypted (a passphrase-protected key); Pocket needs it unencrypted (openssl pkey",
        ),
        (
            r#"{ cert = "trunc.pem", key = "a.key" }"#,
            "cert \"trunc.pem\" is not valid PEM: the PEM file is cut short (no -----END CERTIFICATE----- line)",
        ),
        (
            r#"{ cert = "old.pem", key = "a.key" }"#,
            "cert \"old.pem\" cannot be used: an X.509 v1 certificate: make a v3 one with subjectAltName",
        ),
    ];
    for (tls, want) in made {
        let (code, err) = check(folder, tls);
        assert_ne!(code, 0, "{tls} was accepted");
        assert!(err.contains(at) && err.contains(want), "{tls}: {err}");
    }
    // And a good one passes, the summary saying it is https.
    let text = policy("127.0.0.1:9".parse().unwrap(), TWO_CERTS, "");
    let path = write_policy(folder, "policy.lua", &text);
    let (code, out, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("https: 2 certificates"), "{out}");
    drop(ca);
}

#[test]
fn an_expired_certificate_loads_with_a_warning() {
    let (dir, ca) = pki();
    ca.issue_dated("old", &["old.test"], "one", Some((2019, 2020)));
    let o = origin("A");
    let tls = r#"{ cert = "old.pem", key = "old.key" }"#;
    let p = start(dir, &policy(o.addr, tls, ""));
    let line = p.log.wait_for(&["old.pem", "has expired"]);
    assert!(line.contains("2020"), "{line}");
    assert!(line.contains("policy.lua:"), "{line}");
    assert!(subject(&s_client(p.addr("web"), "old.test")).contains("CN=old.test"));
}

/// The harness's [`Pocket::start_logging`] for a policy in a folder of
/// its own (the certificates beside it).
trait SpawnForTls {
    fn spawn_for_tls(dir: tempfile::TempDir, path: PathBuf, filter: &str) -> Pocket;
}

impl SpawnForTls for Pocket {
    fn spawn_for_tls(dir: tempfile::TempDir, path: PathBuf, filter: &str) -> Pocket {
        let mut child = Command::new(common::pocket_bin())
            .args(["run", path.to_str().unwrap(), "--workers", "1"])
            .env("POCKET_LOG", filter)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn pocket");
        let log = common::Log::default();
        log.follow(child.stderr.take().unwrap());
        let p = Pocket {
            child,
            log,
            dir,
            policy: path,
        };
        let line = p
            .log
            .wait_for_any(&[&["pocket ready"], &["<process ended>"]]);
        assert!(
            !line.contains("<process ended>"),
            "pocket did not start; log:\n{}",
            p.log.text()
        );
        p
    }
}

/// examples/https_redirect.lua, with certificates made here: its own tests
/// pass, plain HTTP gets its 301, https is served.
#[test]
fn the_https_redirect_example_works() {
    let (dir, ca) = pki();
    ca.issue("site", &["a.test"], "one");
    let o = origin("A");
    let folder = dir.path().to_path_buf();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/https_redirect.lua"),
    )
    .unwrap();
    // Its cases (not in the file: `pocket test` needs the certificates).
    let cases = r#"  tests = {
    { name = "plain http is redirected", req = { listener = "http", host = "example.com", path = "/a", query = "b=1" },
      status = 301, header = { location = "https://example.com:8443/a?b=1" } },
    { name = "https is served", req = { listener = "https", path = "/a" }, pool = "app" },
  },
  on_request = function(req)"#;
    let with_tests = example.replacen("  on_request = function(req)", cases, 1);
    assert_ne!(with_tests, example);
    let path = write_policy(&folder, "policy.lua", &with_tests);
    let (code, out, err) = pocket_cmd(&["test", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    let text = example
        .replace("127.0.0.1:8443", "127.0.0.1:0")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9001", &o.addr.to_string());
    let path = write_policy(&folder, "policy.lua", &text);
    let p = Pocket::start_file(dir, path, 1);
    let plain = p.addr("http");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .args(["-H", "Host: a.test"])
        .arg(format!("http://{plain}/x?y=1"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "301 https://a.test:8443/x?y=1"
    );
    let (code, out) = curl(&folder, p.addr("https"), "a.test", "/headers", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("x-forwarded-proto: https"), "{out}");
}

/// An idle keep-alive connection over TLS parks (gives hyper's buffers
/// back) and is served again when its client sends the next request.
#[test]
fn an_idle_tls_connection_parks_and_serves_again() {
    require_command("openssl", "openssl");
    let (dir, _ca) = pki();
    let o = origin("A");
    let folder = dir.path().to_path_buf();
    let path = write_policy(&folder, "policy.lua", &policy(o.addr, TWO_CERTS, ""));
    let p = Pocket::spawn_for_tls(dir, path, "info,pocket::server::conn=debug");
    let addr = p.addr("web");
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &addr.to_string()])
        .args(["-servername", "a.test", "-alpn", "http/1.1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let answers = common::Log::default();
    answers.follow(child.stdout.take().unwrap());
    let request = b"GET /headers HTTP/1.1\r\nHost: a.test\r\n\r\n";
    stdin.write_all(request).unwrap();
    answers.wait_for(&["x-forwarded-proto: https"]);
    p.log.wait_for(&["client connection parked (idle)"]);
    let before = answers.lines().len();
    stdin.write_all(request).unwrap();
    answers.wait_for_after(before, &["x-forwarded-proto: https"]);
    let _ = child.kill();
    let _ = child.wait();
}

/// `pocket explain` treats a request on a TLS listener as one over TLS.
#[test]
fn explain_sees_a_tls_listener_as_https() {
    let (dir, _ca) = pki();
    let extra = r#"  on_request = function(req)
    if req.scheme == "https" and req.sni == "a.test" then return "app" end
    return pocket.respond(403, "plain\n")
  end,"#;
    let text = policy("127.0.0.1:9".parse().unwrap(), TWO_CERTS, extra);
    let path = write_policy(dir.path(), "policy.lua", &text);
    let (code, out, err) = pocket_cmd(&["explain", path.to_str().unwrap(), "GET http://a.test/x"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("GET https://a.test/x"), "{out}");
    assert!(out.contains("returned pool \"app\""), "{out}");
}

/// Sends `bytes` over TLS (SNI a.test, http/1.1) and reads until Pocket
/// closes: what came back.
fn tls_raw(addr: SocketAddr, bytes: &[u8]) -> String {
    s_client_exchange(addr, &["-quiet"], bytes)
}

/// Runs `openssl s_client` to `addr` (SNI a.test, ALPN http/1.1, with
/// `args`), sends `bytes` and reads until the connection ends: its output.
fn s_client_exchange(addr: SocketAddr, args: &[&str], bytes: &[u8]) -> String {
    require_command("openssl", "openssl");
    let mut child = Command::new("openssl")
        .args(["s_client", "-ign_eof", "-connect", &addr.to_string()])
        .args(["-servername", "a.test", "-alpn", "http/1.1"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let answers = common::Log::default();
    answers.follow(child.stdout.take().unwrap());
    answers.wait_for(&["<process ended>"]);
    let _ = child.wait();
    answers.text()
}

/// The head check's answers (bare LF, a head over head_size) go out
/// through TLS, and the connection closes.
#[test]
fn bad_heads_over_tls_get_their_answers() {
    let (dir, _ca) = pki();
    let o = origin("A");
    let p = start(dir, &policy(o.addr, TWO_CERTS, ""));
    let addr = p.addr("web");
    let out = tls_raw(addr, b"GET / HTTP/1.1\nHost: a.test\n\n");
    assert!(out.contains("HTTP/1.1 400"), "{out}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: {}\r\n\r\n",
        "x".repeat(40_000)
    );
    let out = tls_raw(addr, big.as_bytes());
    assert!(out.contains("HTTP/1.1 431"), "{out}");
    let out = tls_raw(
        addr,
        b"GET /headers HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    );
    assert!(
        out.contains("HTTP/1.1 200") && out.contains("x-forwarded-proto: https"),
        "{out}"
    );
}

/// Certificates in a folder of their own, outside the policy's: the
/// watcher follows that folder too.
#[test]
fn certificates_outside_the_policy_folder_are_watched() {
    let (certs, ca) = pki();
    let o = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let c = certs.path().display();
    let tls = format!(r#"{{ cert = "{c}/b.pem", key = "{c}/b.key" }}"#);
    let p = start(dir, &policy(o.addr, &tls, ""));
    let addr = p.addr("web");
    assert!(subject(&s_client(addr, "b.test")).contains("O=one"));
    ca.issue("b", &["b.test"], "two");
    p.log
        .wait_for(&["reload (file changed): generation 2 is live"]);
    assert!(subject(&s_client(addr, "b.test")).contains("O=two"));
}

/// A rustls client for `a.test` trusting the test CA, offering `alpn`
/// (none if empty).
fn tls_client(dir: &Path, alpn: &[&str]) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    std::sync::Arc::new(config)
}

type TlsConn = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects over TLS with a small receive buffer (4 KiB asked: the
/// kernel's least), sends `request` and returns without reading a byte.
fn send_unread(
    config: &std::sync::Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    request: &[u8],
) -> TlsConn {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let name = rustls_pki_types::ServerName::try_from("a.test").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, TcpStream::from(socket));
    s.write_all(request).unwrap();
    s.flush().unwrap();
    s
}

/// A gauge or counter from the admin listener's /metrics (0 if absent).
fn metric(p: &Pocket, sample: &str) -> u64 {
    let line = p.log.wait_for(&["admin listening on "]);
    let admin = line.rsplit("admin listening on ").next().unwrap().trim();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .arg(format!("http://{admin}/metrics"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A TLS client that asks for a large body with `Connection: close` and
/// never reads: whatever the body's size, the connection ends within the
/// send timeout, also when the body fitted in the socket buffers and only
/// the close (TLS close_notify) found no room. The sizes are swept across
/// what the buffers hold (measured first), so that some connections end
/// exactly there (before the fix, about half the runs here left one open
/// for good: the window is a few bytes wide).
#[test]
fn a_tls_client_that_never_reads_is_closed_after_the_send_timeout() {
    let (dir, _ca) = pki();
    let o = origin("A");
    let folder = dir.path().to_path_buf();
    let admin = r#"  admin = { bind = "127.0.0.1:0" },"#;
    let text = policy(o.addr, TWO_CERTS, admin).replace(
        r#"timeouts = { head = "2s" }"#,
        r#"timeouts = { head = "2s", send = "1s" }"#,
    );
    let p = start(dir, &text);
    let addr = p.addr("web");
    let config = tls_client(&folder, &["http/1.1"]);
    let ask =
        |n: u64| format!("GET /bytes/{n} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    // How much of an unread response the buffers hold: what a client
    // gets after the send timeout has cut a body too large to fit.
    let mut probe = send_unread(&config, addr, ask(64 << 20).as_bytes());
    p.log.wait_for(&["send timeout", "client stopped reading"]);
    probe.sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut held = 0u64;
    let mut buf = [0u8; 16384];
    while let Ok(n) = probe.read(&mut buf) {
        if n == 0 {
            break;
        }
        held += n as u64;
    }
    drop(probe);
    assert!(held > 0, "nothing arrived before the send timeout");
    let started = Instant::now();
    let conns: Vec<TlsConn> = (0..160u64)
        .map(|i| held.saturating_sub(1000) + i * 127)
        .map(|n| send_unread(&config, addr, ask(n).as_bytes()))
        .collect();
    let gauge = r#"pocket_client_connections{listener="web"}"#;
    let mut open = metric(&p, gauge);
    while open > 0 && started.elapsed() < DEADLINE {
        std::thread::sleep(std::time::Duration::from_millis(200));
        open = metric(&p, gauge);
    }
    assert_eq!(
        open,
        0,
        "connections still open {:?} after the 1 s send timeout",
        started.elapsed()
    );
    drop(conns);
}

/// Clients that ask for HTTP/1.0 by ALPN (`curl --http1.0` offers only
/// `http/1.0`), and clients that offer no ALPN and speak HTTP/2 with
/// prior knowledge, are served.
#[test]
fn http1_0_by_alpn_and_h2_without_alpn_are_served() {
    let (dir, _ca) = pki();
    let o = origin("A");
    let folder = dir.path().to_path_buf();
    let p = start(dir, &policy(o.addr, TWO_CERTS, ""));
    let addr = p.addr("web");
    let (code, out) = curl(&folder, addr, "a.test", "/headers", &["--http1.0"]);
    assert_eq!(code, 0, "{out}");
    // curl writes HTTP/1.0 as "1".
    assert!(out.ends_with("200 1") || out.ends_with("200 1.0"), "{out}");
    assert!(out.contains("x-forwarded-proto: https"), "{out}");
    let h2 = ["--no-alpn", "--http2-prior-knowledge"];
    let (code, out) = curl(&folder, addr, "a.test", "/headers", &h2);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("200 2"), "{out}");
    assert!(out.contains("x-forwarded-proto: https"), "{out}");
    // And HTTP/1.1 with no ALPN, as before.
    let (code, out) = curl(
        &folder,
        addr,
        "a.test",
        "/headers",
        &["--no-alpn", "--http1.1"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("200 1.1"), "{out}");
}

/// One request by `openssl s_client`, saving its session to `sess_out`
/// or resuming the one in `sess_in`: its whole output.
fn s_client_session(addr: SocketAddr, sess: (&str, &Path)) -> String {
    let path = sess.1.to_string_lossy();
    s_client_exchange(
        addr,
        &[sess.0, &path],
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
}

/// A client's TLS session resumes after a reload (the ticket keys and
/// session cache are kept), and after a renewed certificate.
#[test]
fn tls_sessions_resume_across_reloads() {
    let (dir, ca) = pki();
    let o = origin("A");
    let folder = dir.path().to_path_buf();
    let p = start(dir, &policy(o.addr, TWO_CERTS, ""));
    let addr = p.addr("web");
    let sess = folder.join("session.pem");
    let out = s_client_session(addr, ("-sess_out", &sess));
    assert!(out.contains("New, TLSv1.3"), "{out}");
    let out = s_client_session(addr, ("-sess_in", &sess));
    assert!(
        out.contains("Reused, TLSv1.3"),
        "not resumed before a reload:\n{out}"
    );
    let (code, out, err) = pocket_cmd(&["reload", p.policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let out = s_client_session(addr, ("-sess_in", &sess));
    assert!(
        out.contains("Reused, TLSv1.3"),
        "not resumed after a reload:\n{out}"
    );
    // A renewed certificate: the watcher reloads; sessions still resume.
    ca.issue("a", &["a.test"], "two");
    p.log
        .wait_for(&["reload (file changed): generation 3 is live"]);
    let out = s_client_session(addr, ("-sess_in", &sess));
    assert!(
        out.contains("Reused, TLSv1.3"),
        "not resumed after a renewal:\n{out}"
    );
}
