//! TLS to servers, against a real HTTPS origin (Python's http.server in
//! ssl, tests/clients/tls_origin.py) with certificates this test makes
//! (rcgen: a test CA and a server certificate): verification with the
//! pool's `ca`, a certificate that does not verify (a 502 whose log line
//! says why), `verify = false`, the SNI the origin sees, health checks
//! over TLS, and bad `tls`/`protocol` values refused at load.

mod common;
use common::*;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The HTTPS origin: its process (ended on drop), port and output.
struct TlsOrigin {
    child: Child,
    port: u16,
    out: Log,
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_origin(dir: &Path) -> TlsOrigin {
    tls_origin_with(dir, "server.pem", "server.key")
}

fn tls_origin_with(dir: &Path, cert: &str, key: &str) -> TlsOrigin {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/tls_origin.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(dir.join(cert))
        .arg(dir.join(key))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs tests/clients/tls_origin.py");
    let out = Log::default();
    out.follow(child.stdout.take().unwrap());
    let line = out.wait_for_any(&[&["listening "], &["<process ended>"]]);
    assert!(line.contains("listening "), "the TLS origin did not start");
    let port = line.rsplit(' ').next().unwrap().trim().parse().unwrap();
    TlsOrigin { child, port, out }
}

fn start(dir: tempfile::TempDir, policy: &str) -> Pocket {
    let path = write_policy(dir.path(), "policy.lua", policy);
    Pocket::start_file(dir, path, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_with_the_pools_ca_and_the_origin_sees_the_sni() {
    let dir = tempfile::tempdir().unwrap();
    common::make_test_certs(dir.path());
    let origin = tls_origin(dir.path());
    let port = origin.port;
    let pocket = start(
        dir,
        &format!(
            r#"return {{
  listeners = {{
    {{ name = "byname", bind = "127.0.0.1:0", pool = "byname" }},
    {{ name = "sni", bind = "127.0.0.1:0", pool = "sni" }},
    {{ name = "byip", bind = "127.0.0.1:0", pool = "byip" }},
  }},
  pools = {{
    byname = {{ servers = {{ "localhost:{port}" }}, tls = {{ ca = "ca.pem" }} }},
    sni = {{ servers = {{ "127.0.0.1:{port}" }}, tls = {{ ca = "ca.pem", sni = "origin.test" }}, own_health = true }},
    byip = {{ servers = {{ "127.0.0.1:{port}" }}, tls = {{ ca = "ca.pem", verify = true }}, own_health = true }},
  }},
}}
"#
        ),
    );
    // A server written by name: its name is the SNI, and verified.
    let r = get(pocket.addr("byname"), "/one").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "tls origin: /one sni=localhost\n");
    origin.out.wait_for(&["sni localhost"]);
    // The pool's `sni` wins.
    let r = get(pocket.addr("sni"), "/two").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "tls origin: /two sni=origin.test\n");
    // By IP: no SNI (RFC 6066), the certificate's IP name verified.
    let r = get(pocket.addr("byip"), "/three").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("tls origin: /three"), "{}", r.text());
    // Kept alive: a second request on the pool opens no new handshake.
    let before = origin.out.lines().len();
    for _ in 0..3 {
        assert_eq!(get(pocket.addr("byname"), "/again").await.status, 200);
    }
    let handshakes = origin.out.lines()[before..]
        .iter()
        .filter(|l| l.starts_with("sni "))
        .count();
    assert!(
        handshakes <= 1,
        "{handshakes} new handshakes for 3 requests"
    );
}

/// A sub-request through a pool with `tls` goes over TLS as the pool's
/// requests do (its CA, its SNI), and one whose certificate does not
/// verify gets an error value saying why (breaker 15 F2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_requests_through_a_tls_pool_use_its_tls() {
    let dir = tempfile::tempdir().unwrap();
    common::make_test_certs(dir.path());
    let origin = tls_origin(dir.path());
    let port = origin.port;
    let pocket = start(
        dir,
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0" }} }},
  pools = {{
    sni = {{ servers = {{ "127.0.0.1:{port}" }}, tls = {{ ca = "ca.pem", sni = "origin.test" }} }},
    system = {{ servers = {{ "127.0.0.1:{port}" }}, tls = true, own_health = true }},
  }},
  on_request = function(req)
    local res, err = http.get("/sub", {{ pool = req.path == "/bad" and "system" or "sni", timeout = 5 }})
    return pocket.respond(200, res and res.body or ("err: " .. err .. "\n"))
  end,
}}
"#
        ),
    );
    let r = get(pocket.addr("web"), "/").await;
    assert_eq!(r.text(), "tls origin: /sub sni=origin.test\n");
    let r = get(pocket.addr("web"), "/bad").await;
    assert!(
        r.text().starts_with("err: ") && r.text().contains("certificate"),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_does_not_verify_is_a_502_that_says_why_and_verify_false_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    common::make_test_certs(dir.path());
    let origin = tls_origin(dir.path());
    let port = origin.port;
    // A server whose own certificate is the CA (what `openssl req -x509`
    // makes): rustls refuses it as a server certificate.
    let ca_origin = tls_origin_with(dir.path(), "ca.pem", "ca.key");
    let ca_port = ca_origin.port;
    let pocket = start(
        dir,
        &format!(
            r#"return {{
  listeners = {{
    {{ name = "strict", bind = "127.0.0.1:0", pool = "strict" }},
    {{ name = "lax", bind = "127.0.0.1:0", pool = "lax" }},
    {{ name = "selfca", bind = "127.0.0.1:0", pool = "selfca" }},
  }},
  log = {{ access = "access.log", format = "json" }},
  pools = {{
    strict = {{ servers = {{ "localhost:{port}" }}, tls = true, retries = 0, own_health = true }},
    lax = {{ servers = {{ "localhost:{port}" }}, tls = {{ verify = false }} }},
    selfca = {{ servers = {{ "localhost:{ca_port}" }}, tls = {{ ca = "ca.pem" }}, retries = 0 }},
  }},
}}
"#
        ),
    );
    // The test CA is in no system store.
    let r = get(pocket.addr("strict"), "/").await;
    assert_eq!(r.status, 502, "{}", r.text());
    let line = pocket.log.wait_for(&[
        "TLS: certificate verify failed",
        "not signed by a trusted CA (set the pool's tls.ca)",
    ]);
    assert!(line.contains(&port.to_string()), "{line}");
    assert!(
        r.text().contains("not signed by a trusted CA"),
        "{}",
        r.text()
    );
    // The access log's retry cause says it too.
    let log_path = pocket.dir.path().join("access.log");
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("TLS: certificate verify failed: UnknownIssuer") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no TLS cause in the access log:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // verify = false: the same server is taken, even after the strict
    // pool's failures (it keeps its own health: a wrong `tls` in one pool
    // does not take the server down for another).
    for _ in 0..4 {
        // 502 until the streak takes the server down, then 503.
        let status = get(pocket.addr("strict"), "/").await.status;
        assert!(status == 502 || status == 503, "{status}");
    }
    pocket.log.wait_for(&["of pool strict", "DOWN"]);
    let r = get(pocket.addr("lax"), "/lax").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "tls origin: /lax sni=localhost\n");
    // The CA's own certificate served as the server's: said in words.
    let r = get(pocket.addr("selfca"), "/").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.text()
            .contains("the server's certificate is a CA certificate, not a server certificate"),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_over_tls_mark_a_plain_server_down() {
    let dir = tempfile::tempdir().unwrap();
    common::make_test_certs(dir.path());
    let origin = tls_origin(dir.path());
    let port = origin.port;
    let plain = common::origin("P");
    let plain_addr = plain.addr;
    let pocket = start(
        dir,
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{
      servers = {{ "127.0.0.1:{port}", "{plain_addr}" }},
      tls = {{ ca = "ca.pem", sni = "localhost" }},
      check = {{ http = "GET /health", interval = "300ms", fall = 1, rise = 1 }},
    }},
  }},
}}
"#
        ),
    );
    let line = pocket
        .log
        .wait_for(&[&format!("server {plain_addr}"), "DOWN"]);
    assert!(line.contains("TLS"), "{line}");
    // The TLS server passes its checks: every request reaches it.
    for _ in 0..6 {
        let r = get(pocket.addr("web"), "/x").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().starts_with("tls origin: /x"), "{}", r.text());
    }
    assert!(
        !pocket
            .log
            .text()
            .contains(&format!("server 127.0.0.1:{port} is DOWN"))
            && !pocket
                .log
                .text()
                .contains(&format!("server 127.0.0.1:{port} of pool app is DOWN")),
        "{}",
        pocket.log.text()
    );
}

/// `pocket check` on a policy next to a ca.pem: (exit code, stderr).
fn check_policy(policy: &str, ca: &[u8]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::File::create(dir.path().join("ca.pem"))
        .unwrap()
        .write_all(ca)
        .unwrap();
    let path = write_policy(dir.path(), "policy.lua", policy);
    let (code, out, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    (code, format!("{out}{err}"))
}

#[test]
fn bad_tls_and_protocol_values_are_refused_at_load_with_their_line() {
    let policy = |pool: &str| {
        format!(
            "return {{\n  listeners = {{ {{ bind = \"127.0.0.1:0\", pool = \"app\" }} }},\n  pools = {{\n    app = {{ servers = {{ \"127.0.0.1:9\" }},\n      {pool} }},\n  }},\n}}\n"
        )
    };
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "protocol = \"h3\"",
            b"",
            "unknown protocol \"h3\" (known: http1, h2)",
        ),
        (
            "protocol = 2",
            b"",
            "protocol must be \"http1\" or \"h2\", not a number (2)",
        ),
        (
            "tls = \"yes\"",
            b"",
            "tls must be true or a table like { ca = \"ca.pem\" }",
        ),
        ("tls = { ca = \"missing.pem\" }", b"", "missing.pem"),
        (
            "tls = { ca = \"ca.pem\" }",
            b"hello, not a certificate\n",
            "no PEM certificate in it",
        ),
        (
            "tls = { verify = \"no\" }",
            b"",
            "verify must be true or false",
        ),
        ("tls = { sni = 5 }", b"", "tls sni must be a host name"),
        ("tls = { cert = \"x\" }", b"", "cert"),
    ];
    for (pool, ca, want) in cases {
        let (code, text) = check_policy(&policy(pool), ca);
        assert_ne!(code, 0, "{pool}: accepted\n{text}");
        assert!(text.contains(want), "{pool}: {text}");
        assert!(text.contains("policy.lua:5"), "{pool}: no line 5 in {text}");
    }
    // Two pools that share an address's health but reach it differently
    // (the seen case: `tls = true` next to a pool with the right `ca`):
    // refused, with the pool's `tls` line, unless one keeps its own health.
    let two = |own: &str| {
        format!(
            "return {{\n  listeners = {{ {{ bind = \"127.0.0.1:0\", pool = \"api\" }} }},\n  pools = {{\n    api = {{ servers = {{ \"127.0.0.1:9\" }}, tls = true{own} }},\n    trusted = {{ servers = {{ \"127.0.0.1:9\" }}, tls = {{ ca = \"ca.pem\" }} }},\n  }},\n}}\n"
        )
    };
    let certs = tempfile::tempdir().unwrap();
    common::make_test_certs(certs.path());
    let ca = std::fs::read(certs.path().join("ca.pem")).unwrap();
    let (code, text) = check_policy(&two(""), &ca);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("policy.lua:5"), "{text}");
    assert!(
        text.contains("pool \"trusted\": server 127.0.0.1:9 is also in pool \"api\", which reaches it differently")
            && text.contains("own_health = true"),
        "{text}"
    );
    let (code, text) = check_policy(&two(", own_health = true"), &ca);
    assert_eq!(code, 0, "{text}");
    // verify = false needs no ca; a good ca loads.
    let (code, text) = check_policy(&policy("tls = { verify = false }, protocol = \"h2\""), b"");
    assert_eq!(code, 0, "{text}");
}

/// A pool's `ca` file is watched as a listener's certificates are:
/// replacing it reloads. It starts as another CA's (which did not sign
/// the server's certificate: a 502, and no connection kept), then the
/// right CA is put in its place and the pool trusts the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_ca_file_reloads() {
    let dir = tempfile::tempdir().unwrap();
    common::make_test_certs(dir.path());
    let origin = tls_origin(dir.path());
    let port = origin.port;
    let other = tempfile::tempdir().unwrap();
    common::make_test_certs(other.path());
    let folder = dir.path().to_path_buf();
    std::fs::copy(other.path().join("ca.pem"), folder.join("trust.pem")).unwrap();
    let pocket = start(
        dir,
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "localhost:{port}" }}, tls = {{ ca = "trust.pem" }}, retries = 0 }} }},
}}
"#
        ),
    );
    let r = get(pocket.addr("web"), "/before").await;
    assert_eq!(r.status, 502, "{}", r.text());
    // (The two test CAs have one name: the signature is what differs.)
    assert!(
        r.text().contains("certificate verify failed"),
        "{}",
        r.text()
    );
    // Replaced as tools do: a new file renamed over the old one.
    let tmp = folder.join(".trust.pem.tmp");
    std::fs::copy(folder.join("ca.pem"), &tmp).unwrap();
    std::fs::rename(&tmp, folder.join("trust.pem")).unwrap();
    pocket
        .log
        .wait_for(&["reload (file changed): generation 2 is live"]);
    let r = get(pocket.addr("web"), "/after").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("tls origin: /after"), "{}", r.text());
}
