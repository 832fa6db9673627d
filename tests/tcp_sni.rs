//! TLS passthrough switched by SNI (`conn.sni` in `on_connect` on a
//! `mode = "tcp"` listener), end to end: a real Pocket, two real TLS
//! origins (tests/clients/sni_origin.py, each with its own certificate,
//! which Pocket never holds), real clients (`openssl s_client
//! -servername`, plain sockets).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;

use common::tcp_servers::*;
use common::*;

/// The access log's lines once there are `n`.
fn access_lines(path: &Path, n: usize) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} of {n} access log lines: {text}",
            lines.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A plain TCP server: greets first (`greets`, like an SMTP server's
/// banner), or answers the first line it reads with `NAME got LINE`.
fn plain_server(name: &'static str, greets: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(DEADLINE));
                if greets {
                    let _ = s.write_all(format!("220 {name} ready\r\n").as_bytes());
                }
                let mut line = String::new();
                let _ = BufReader::new(s.try_clone().unwrap()).read_line(&mut line);
                let _ = s.write_all(format!("{name} got {line}").as_bytes());
            });
        }
    });
    addr
}

fn policy(a: u16, b: u16, plain: SocketAddr, smtp: SocketAddr, log: &Path) -> String {
    format!(
        r#"
return {{
  log = {{ access = "{log}", format = "json" }},
  listeners = {{
    {{ name = "tls", bind = "127.0.0.1:0", mode = "tcp", pool = "plain",
       timeouts = {{ client_hello = "1s" }} }},
    {{ name = "smtp", bind = "127.0.0.1:0", mode = "tcp", pool = "mail" }},
  }},
  pools = {{
    site_a = {{ mode = "tcp", servers = {{ "127.0.0.1:{a}" }} }},
    site_b = {{ mode = "tcp", servers = {{ "127.0.0.1:{b}" }} }},
    plain = {{ mode = "tcp", servers = {{ "{plain}" }} }},
    mail = {{ mode = "tcp", servers = {{ "{smtp}" }} }},
  }},
  on_connect = function(conn)
    if conn.listener ~= "tls" then return nil end
    local name = conn.sni
    if name == nil then return nil end
    if name == "a.example" then return "site_a" end
    if name == "b.example" then return "site_b" end
    return pocket.reject("unknown name " .. name)
  end,
}}
"#,
        log = log.display()
    )
}

struct Lab {
    log: std::path::PathBuf,
    a: TlsOrigin,
    b: TlsOrigin,
    pocket: Pocket,
    _certs: tempfile::TempDir,
}

fn lab() -> Lab {
    require_command("openssl", "openssl");
    require_command("python3", "python3");
    let certs = tempfile::tempdir().unwrap();
    let a = TlsOrigin::start(certs.path(), "A", "a.example");
    let b = TlsOrigin::start(certs.path(), "B", "b.example");
    let plain = plain_server("plain", false);
    let smtp = plain_server("mail", true);
    let log = certs.path().join("access.log");
    let pocket = Pocket::start(&policy(a.port, b.port, plain, smtp, &log), 1);
    Lab {
        log,
        a,
        b,
        pocket,
        _certs: certs,
    }
}

#[test]
fn two_tls_origins_switched_by_sni_keep_their_certificates() {
    let lab = lab();
    let addr = lab.pocket.addr("tls");
    for (name, origin) in [("a.example", "A"), ("b.example", "B"), ("A.EXAMPLE", "A")] {
        // Its exit status is left aside: it reports how the origin ended
        // the session, not what Pocket did.
        let (_, text) = s_client(addr, Some(name));
        let lower = name.to_ascii_lowercase();
        assert!(
            text.contains(&format!("origin {origin} sni={name} alpn=h2")),
            "{name} reaches origin {origin} with the ClientHello unchanged:\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("subject=") && l.contains(&lower)),
            "origin {origin}'s own certificate comes back:\n{text}"
        );
    }
    assert_eq!((lab.a.accepted(), lab.b.accepted()), (2, 1));
}

#[test]
fn an_unknown_name_is_rejected_and_reaches_no_origin() {
    let lab = lab();
    let addr = lab.pocket.addr("tls");
    let (ok, text) = s_client(addr, Some("c.example"));
    assert!(!ok, "the handshake must fail:\n{text}");
    assert!(!text.contains("origin "), "{text}");
    lab.pocket
        .log
        .wait_for(&["connection rejected: unknown name c.example"]);
    assert_eq!((lab.a.accepted(), lab.b.accepted()), (0, 0));
}

#[test]
fn a_silent_client_is_closed_after_client_hello_with_no_server_connection() {
    let lab = lab();
    let addr = lab.pocket.addr("tls");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = Vec::new();
    // Pocket closes it: the read ends (EOF or reset), well before DEADLINE.
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty());
    let line = lab.pocket.log.wait_for(&[
        "connection closed: no TLS ClientHello within timeouts.client_hello (1s; 0 bytes received)",
        "no server connection opened",
    ]);
    assert!(
        line.contains(&format!("peer={}", s.local_addr().unwrap())),
        "{line}"
    );
    assert!(line.contains("listener=tls"), "{line}");
    // A silent client may be one waiting for a server that speaks first
    // (newcomer16 #10): the line says what to change.
    assert!(
        line.contains("return before reading them on listeners whose server speaks first"),
        "{line}"
    );
    // Half a ClientHello, then silence: the same.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&[22, 3, 1, 0, 200, 1, 0]).unwrap();
    let _ = s.read_to_end(&mut got);
    lab.pocket.log.wait_for(&["(1s; 7 bytes received)"]);
    // And one that leaves halfway.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&[22, 3, 1, 0, 200, 1]).unwrap();
    drop(s);
    lab.pocket
        .log
        .wait_for(&["the client closed before its TLS ClientHello was whole (6 bytes received)"]);
    assert_eq!((lab.a.accepted(), lab.b.accepted()), (0, 0));
    // The access log: HAProxy's cR (the client's timeout while its
    // request was awaited) twice, CR once; no server in any.
    let lines = access_lines(&lab.log, 3);
    let ends: Vec<&str> = lines
        .iter()
        .map(|l| {
            assert!(l.contains("\"server\":null"), "{l}");
            l.split("\"termination\":\"")
                .nth(1)
                .and_then(|t| t.get(..2))
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(ends, ["cR", "cR", "CR"]);
}

#[test]
fn a_client_that_is_not_speaking_tls_gets_nil_and_the_listeners_pool() {
    let lab = lab();
    let addr = lab.pocket.addr("tls");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    // One line with no ClientHello in it: had Pocket waited for one, the
    // connection would be closed after timeouts.client_hello, unanswered.
    s.write_all(b"HELLO plain\n").unwrap();
    let mut got = String::new();
    BufReader::new(&s).read_line(&mut got).unwrap();
    assert_eq!(got, "plain got HELLO plain\n");
    assert_eq!((lab.a.accepted(), lab.b.accepted()), (0, 0));
}

#[test]
fn a_server_speaks_first_listener_in_the_same_policy_never_waits() {
    let lab = lab();
    let addr = lab.pocket.addr("smtp");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    // The client sends nothing until the banner: had on_connect waited
    // for a ClientHello, the connection would be closed after 5 s
    // (the default client_hello) with no banner.
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut banner = String::new();
    r.read_line(&mut banner).unwrap();
    assert_eq!(banner, "220 mail ready\r\n");
    s.write_all(b"EHLO client\r\n").unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    assert_eq!(answer, "mail got EHLO client\r\n");
}

/// No `on_connect` reads the name first: the pools' own functions do
/// (breaker16 F2), and a first read inside a coroutine of the script's is
/// refused in Pocket's words (breaker16 F3).
fn pool_policy(a: u16, b: u16) -> String {
    format!(
        r#"
return {{
  listeners = {{
    {{ name = "hashed", bind = "127.0.0.1:0", mode = "tcp", pool = "hashed",
       timeouts = {{ client_hello = "1s" }} }},
    {{ name = "balanced", bind = "127.0.0.1:0", mode = "tcp", pool = "balanced" }},
    {{ name = "coro", bind = "127.0.0.1:0", mode = "tcp", pool = "balanced" }},
  }},
  pools = {{
    hashed = {{ mode = "tcp", balance = "hash",
               hash_key = function(conn) return conn.sni end,
               servers = {{ "127.0.0.1:{a}", "127.0.0.1:{b}" }} }},
    balanced = {{ mode = "tcp",
                 balance = function(servers, conn)
                   if conn.sni == "b.example" then return "127.0.0.1:{b}" end
                   return "127.0.0.1:{a}"
                 end,
                 servers = {{ "127.0.0.1:{a}", "127.0.0.1:{b}" }} }},
  }},
  on_connect = function(conn)
    if conn.listener ~= "coro" then return nil end
    local read = coroutine.wrap(function() return conn.sni end)
    return pocket.reject("read " .. tostring(read()))
  end,
}}
"#
    )
}

/// The origin (`A` or `B`) a session reached, from what it wrote back.
fn reached(text: &str, name: &str) -> char {
    let said = format!(" sni={name} ");
    let line = text
        .lines()
        .find(|l| l.starts_with("origin ") && l.contains(&said))
        .unwrap_or_else(|| panic!("{name} reaches an origin:\n{text}"));
    line.chars().nth(7).unwrap_or('?')
}

#[test]
fn pool_functions_read_sni_a_hash_pins_each_name_and_balance_switches() {
    require_command("openssl", "openssl");
    require_command("python3", "python3");
    let certs = tempfile::tempdir().unwrap();
    let a = TlsOrigin::start(certs.path(), "A", "a.example");
    let b = TlsOrigin::start(certs.path(), "B", "b.example");
    let pocket = Pocket::start(&pool_policy(a.port, b.port), 1);

    // hash_key = conn.sni: each name keeps its server, connection after
    // connection.
    let hashed = pocket.addr("hashed");
    for name in [
        "one.example",
        "two.example",
        "three.example",
        "four.example",
    ] {
        let first = reached(&s_client(hashed, Some(name)).1, name);
        for _ in 0..2 {
            assert_eq!(
                reached(&s_client(hashed, Some(name)).1, name),
                first,
                "{name}"
            );
        }
    }
    assert_eq!(a.accepted() + b.accepted(), 12);
    // A silent client: hash_key's wait ends at client_hello, as
    // on_connect's does, and no server connection is opened.
    let mut s = TcpStream::connect(hashed).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = s.read_to_end(&mut Vec::new());
    pocket.log.wait_for(&[
        "connection closed: no TLS ClientHello within timeouts.client_hello (1s; 0 bytes received)",
        "no server connection opened",
    ]);
    assert_eq!(a.accepted() + b.accepted(), 12);

    // balance reads conn.sni: b.example to B, the rest to A.
    let balanced = pocket.addr("balanced");
    for (name, origin) in [("b.example", 'B'), ("a.example", 'A'), ("b.example", 'B')] {
        assert_eq!(reached(&s_client(balanced, Some(name)).1, name), origin);
    }
    assert!(
        !pocket.log.text().contains("yield"),
        "no Lua internals in the log:\n{}",
        pocket.log.text()
    );

    // A first read inside coroutine.wrap: the connection is closed, the
    // log says why and where, and no origin is reached.
    let before = a.accepted() + b.accepted();
    let (ok, text) = s_client(pocket.addr("coro"), Some("a.example"));
    assert!(!ok, "{text}");
    let line = pocket.log.wait_for(&[
        "conn.sni must be read in the hook itself",
        "read it into a local at the top",
    ]);
    assert!(line.contains(".lua:22:"), "the policy's line: {line}");
    assert!(!line.contains("userdata"), "{line}");
    assert_eq!(a.accepted() + b.accepted(), before);
}
