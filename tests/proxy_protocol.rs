//! The PROXY protocol, both ways, against a real HAProxy (Debian's
//! `haproxy`): HAProxy in front of Pocket sending v1/v2 headers to an
//! `accept_proxy` listener, and Pocket in front of an HAProxy
//! `accept-proxy` frontend with a pool's `send_proxy` (its connections and
//! its health checks). Clients connect from 127.0.0.2 (and 127.0.0.4), so
//! that the address that arrives is the client's, not the balancer's
//! 127.0.0.1 or the 127.0.0.3 HAProxy is made to connect from.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A connection from `source` (a loopback address other than 127.0.0.1).
fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((source, 0)).into())
        .expect("bind a loopback source address");
    s.connect(&to.into()).expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// What the other side sent back before it closed (a reset counts as a
/// close); panics if it neither answered nor closed within `DEADLINE`.
fn answer(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "no close within {DEADLINE:?}; got {:?}",
                    String::from_utf8_lossy(&out)
                )
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn send(mut s: TcpStream, bytes: &[u8]) -> String {
    s.write_all(bytes).unwrap();
    answer(s)
}

fn get_from(source: [u8; 4], to: SocketAddr, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    send(connect_from(source, to), req.as_bytes())
}

/// A real HAProxy in the foreground (`haproxy -db`), killed on drop.
struct HaProxy {
    child: Child,
    log: Log,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// Starts HAProxy on `config` and waits until it accepts on `port`.
    fn start(config: &str, port: u16) -> HaProxy {
        require_command("haproxy", "haproxy");
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new("haproxy")
            .args(["-db", "-f", path.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run haproxy");
        let log = Log::default();
        log.follow(child.stderr.take().unwrap());
        log.follow(child.stdout.take().unwrap());
        let h = HaProxy {
            child,
            log,
            _dir: dir,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > DEADLINE || h.log.text().contains("<process ended>") {
                panic!(
                    "haproxy did not listen on {port}; its log:\n{}",
                    h.log.text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        h
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HAPROXY_DEFAULTS: &str = "global
  maxconn 200
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
";

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    dead_addr().port()
}

// ---------------------------------------------------------------------------
// HAProxy in front of Pocket (accept_proxy)
// ---------------------------------------------------------------------------

fn haproxy_in_front(send_proxy: &str) {
    let origin = origin("A");
    let p = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "edge", bind = "127.0.0.1:0", pool = "app", accept_proxy = true }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
  -- on_connect sees the client the header names, not HAProxy (127.0.0.3),
  -- but for HAProxy's own checks (a LOCAL header).
  on_connect = function(conn)
    pocket.log.info("on_connect from " .. conn.peer_ip)
    if conn.peer_ip ~= "127.0.0.2" and conn.peer_ip ~= "127.0.0.3" then
      return pocket.reject("not the client: " .. conn.peer_ip)
    end
  end,
  on_request = function(req)
    if req.path == "/health" then pocket.log.info("checked by " .. req.peer_ip) end
    req:set_header("x-peer-ip", req.peer_ip)
  end,
}}"#,
            origin.addr
        ),
        1,
    );
    let pocket = p.addr("edge");
    let port = free_port();
    let _h = HaProxy::start(
        &format!(
            "{HAPROXY_DEFAULTS}frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  option httpchk GET /health
  server pocket {pocket} {send_proxy} source 127.0.0.3 check check-send-proxy inter 300ms
"
        ),
        port,
    );
    // HAProxy's checks reach Pocket with a header that names no client
    // (check-send-proxy): served, as from HAProxy's own address.
    p.log.wait_for(&["checked by 127.0.0.3"]);
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..3 {
        let r = get_from([127, 0, 0, 2], front, "/headers");
        assert!(r.starts_with("HTTP/1.1 200"), "{send_proxy}: {r}");
        assert!(
            r.contains("x-forwarded-for: 127.0.0.2\n"),
            "{send_proxy}: the origin did not see the client: {r}"
        );
        assert!(
            r.contains("x-peer-ip: 127.0.0.2\n"),
            "{send_proxy}: req.peer_ip is not the client: {r}"
        );
        assert!(
            !r.contains("127.0.0.3"),
            "{send_proxy}: HAProxy's address leaked: {r}"
        );
    }
    p.log.wait_for(&["on_connect from 127.0.0.2"]);
    assert!(
        !p.log.text().contains("connection rejected"),
        "on_connect saw another address:\n{}",
        p.log.text()
    );
}

#[test]
fn haproxy_in_front_with_send_proxy_v2_gives_pocket_the_real_client() {
    haproxy_in_front("send-proxy-v2");
}

#[test]
fn haproxy_in_front_with_send_proxy_v1_gives_pocket_the_real_client() {
    haproxy_in_front("send-proxy");
}

// ---------------------------------------------------------------------------
// Pocket in front of HAProxy (send_proxy), connections and checks
// ---------------------------------------------------------------------------

fn pocket_in_front(version: &str) {
    let port = free_port();
    // An accept-proxy frontend that answers every request with the client
    // its PROXY header named and the address that client connected to (and
    // refuses connections without one).
    let _h = HaProxy::start(
        &format!(
            "{HAPROXY_DEFAULTS}frontend fe
  bind 127.0.0.1:{port} accept-proxy
  http-request return status 200 content-type text/plain lf-string \"client %[src] dst %[dst]:%[dst_port]\"
"
        ),
        port,
    );
    let server = format!("127.0.0.1:{port}");
    let p = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{
    {{ name = "web", bind = "127.0.0.1:0", pool = "px" }},
    {{ name = "bare", bind = "127.0.0.1:0", pool = "bare" }},
  }},
  pools = {{
    -- Down until a check passes: it passes only with a PROXY header.
    px = {{ servers = {{ "{server}" }}, send_proxy = "{version}",
            check = {{ http = "GET /health", interval = "200ms", rise = 1, start = "down" }} }},
    -- The same server checked without a header: HAProxy refuses it.
    bare = {{ servers = {{ "{server}" }}, own_health = true,
              check = {{ http = "GET /health", interval = "200ms", fall = 1 }} }},
  }},
}}"#
        ),
        1,
    );
    p.log
        .wait_for(&[&format!("server {server} of pool px is UP")]);
    p.log
        .wait_for(&[&format!("server {server} of pool bare is DOWN")]);
    let web = p.addr("web");
    // Two clients one after the other: the second must not be sent on the
    // first one's kept-alive connection (which says 127.0.0.2).
    for (source, text) in [
        ([127, 0, 0, 2], "client 127.0.0.2 "),
        ([127, 0, 0, 4], "client 127.0.0.4 "),
        ([127, 0, 0, 2], "client 127.0.0.2 "),
    ] {
        let r = get_from(source, web, "/who");
        assert!(r.starts_with("HTTP/1.1 200"), "{version}: {r}");
        assert!(
            r.contains(text),
            "{version}: HAProxy saw another client: {r}"
        );
        // The destination is where the client connected (Pocket's
        // listener), as HAProxy's send-proxy says it, not the ephemeral
        // port Pocket reached HAProxy from.
        assert!(
            r.contains(&format!("dst {web}")),
            "{version}: not the listener's address {web}: {r}"
        );
    }
    assert!(
        !p.log
            .text()
            .contains(&format!("server {server} of pool px is DOWN")),
        "{version}: the checked server went down:\n{}",
        p.log.text()
    );
}

#[test]
fn send_proxy_v2_reaches_an_haproxy_accept_proxy_frontend_and_its_checks_pass() {
    pocket_in_front("v2");
}

#[test]
fn send_proxy_v1_reaches_an_haproxy_accept_proxy_frontend_and_its_checks_pass() {
    pocket_in_front("v1");
}

// ---------------------------------------------------------------------------
// What an accept_proxy listener does with connections without a header
// ---------------------------------------------------------------------------

#[test]
fn an_accept_proxy_listener_closes_connections_without_a_good_header() {
    let origin = origin("A");
    let p = Pocket::start_logging(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "edge", bind = "127.0.0.1:0", pool = "app", accept_proxy = true,
                    timeouts = {{ head = "2s" }} }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
  admin = {{ bind = "127.0.0.1:0" }},
  on_request = function(req) req:set_header("x-peer-ip", req.peer_ip) end,
}}"#,
            origin.addr
        ),
        1,
        "info,pocket=debug",
    );
    let edge = p.addr("edge");
    let request = b"GET /headers HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

    // A header cut short: held until the head timeout, then closed.
    let mut stalled = TcpStream::connect(edge).unwrap();
    stalled.set_read_timeout(Some(DEADLINE)).unwrap();
    stalled.write_all(b"PROXY TCP4 192.0.2.9 ").unwrap();

    // Meanwhile, clients with good headers are served, v1 and v2.
    let v1 = [&b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n"[..], request].concat();
    let r = send(TcpStream::connect(edge).unwrap(), &v1);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("x-forwarded-for: 192.0.2.7\n"), "{r}");
    assert!(r.contains("x-peer-ip: 192.0.2.7\n"), "{r}");

    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            "[2001:db8::8]:4000".parse::<SocketAddr>().unwrap(),
            "[::1]:80".parse::<SocketAddr>().unwrap(),
        ),
    )
    .build()
    .unwrap();
    let r = send(
        TcpStream::connect(edge).unwrap(),
        &[&v2[..], request].concat(),
    );
    assert!(r.contains("x-peer-ip: 2001:db8::8\n"), "{r}");

    // v2 LOCAL (a balancer's own check) and v1 UNKNOWN: the socket's peer.
    let local = ppp::v2::Builder::new(
        ppp::v2::Version::Two | ppp::v2::Command::Local,
        ppp::v2::AddressFamily::Unspecified | ppp::v2::Protocol::Unspecified,
    )
    .build()
    .unwrap();
    for header in [&local[..], b"PROXY UNKNOWN\r\n"] {
        let r = send(
            TcpStream::connect(edge).unwrap(),
            &[header, request].concat(),
        );
        assert!(r.contains("x-peer-ip: 127.0.0.1\n"), "{r}");
    }

    // No header, or a bad one: closed, no HTTP answer.
    for bad in [
        &request[..],
        b"PROXY TCP4 nonsense here\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PROXY TCP4 300.1.1.1 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x0c",
        &[b'P'; 200],
    ] {
        let r = send(TcpStream::connect(edge).unwrap(), bad);
        assert_eq!(r, "", "answered {:?}", String::from_utf8_lossy(bad));
    }

    assert_eq!(answer(stalled), "", "the cut header got an answer");
    p.log.wait_for(&["no whole PROXY header within 2s"]);
    p.log.wait_for(&["bad PROXY header", "peer=127.0.0.1:"]);

    // A balancer's plain TCP check: connect, then reset (HAProxy closes its
    // checks with a RST). Closed, and logged at debug, not info: it comes
    // every few seconds.
    let check = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    check.connect(&edge.into()).unwrap();
    check.set_linger(Some(Duration::ZERO)).unwrap();
    drop(check);
    let line = p.log.wait_for(&["reading the PROXY header failed"]);
    assert!(line.contains("DEBUG"), "not at debug: {line}");

    // Each refusal counted, by reason.
    let line = p.log.wait_for(&["admin listening on "]);
    let admin = line.rsplit("admin listening on ").next().unwrap().trim();
    // HTTP/1.0: the body arrives whole, not in chunks.
    let admin: SocketAddr = admin.parse().unwrap();
    let metrics = send(
        TcpStream::connect(admin).unwrap(),
        format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n").as_bytes(),
    );
    for (reason, n) in [("malformed", 5), ("timeout", 1), ("reset", 1)] {
        let want = format!(
            "pocket_proxy_header_refused_total{{listener=\"edge\",reason=\"{reason}\"}} {n}"
        );
        assert!(metrics.contains(&want), "no {want} in:\n{metrics}");
    }
    assert_eq!(
        origin.request_count(),
        4,
        "only the good headers' requests reached the origin"
    );
}

// ---------------------------------------------------------------------------
// Bad input at load
// ---------------------------------------------------------------------------

#[test]
fn accept_proxy_and_send_proxy_of_the_wrong_kind_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(
        dir.path(),
        "policy.lua",
        r#"return {
  listeners = {
    { name = "edge", bind = "127.0.0.1:0", pool = "app",
      accept_proxy = "yes" },
  },
  pools = {
    app = { servers = { "127.0.0.1:9" },
      send_proxy = "v3" },
  },
}
"#,
    );
    let (code, err) = check_within(&path, DEADLINE);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("policy.lua:4:")
            && err.contains(
                "listener \"edge\": accept_proxy must be true or false, not a string (\"yes\")"
            ),
        "{err}"
    );
    assert!(
        err.contains("policy.lua:8:")
            && err.contains(
                "pool \"app\": send_proxy must be \"v1\" or \"v2\" (the PROXY protocol version), not a string (\"v3\")"
            ),
        "{err}"
    );
}

/// `pocket check`'s summary shows both: each changes what goes on the
/// wire, and a listener that closes every client without a PROXY header
/// must not look like a plain one (newcomer 15).
#[test]
fn pocket_check_shows_accept_proxy_and_send_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(
        dir.path(),
        "policy.lua",
        r#"return {
  listeners = { { name = "edge", bind = "127.0.0.1:0", pool = "app", accept_proxy = true } },
  pools = { app = { servers = { "127.0.0.1:9" }, send_proxy = "v2" } },
}
"#,
    );
    let (code, out, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("edge on 127.0.0.1:0 (default pool: app, accept_proxy)"),
        "{out}"
    );
    assert!(out.contains("retries 3, send_proxy v2)"), "{out}");
}

// ---------------------------------------------------------------------------
// send_proxy connections belong to one client connection
// ---------------------------------------------------------------------------

/// What the server behind saw: each connection's first line (its PROXY
/// header), its request count, and that it was closed by Pocket.
enum Seen {
    Opened(String),
    Request,
    Closed,
}

/// A server that answers `ok` to each request head and reports what it
/// sees on `tx`.
fn recording_server(tx: std::sync::mpsc::Sender<Seen>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut first = true;
                loop {
                    let n = match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        if first {
                            let line = String::from_utf8_lossy(&head);
                            let line = line.lines().next().unwrap_or("").to_string();
                            let _ = tx.send(Seen::Opened(line));
                            first = false;
                        }
                        let _ = tx.send(Seen::Request);
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    }
                }
                let _ = tx.send(Seen::Closed);
            });
        }
    });
    addr
}

#[test]
fn a_send_proxy_connection_serves_one_client_connection_and_closes_with_it() {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = recording_server(tx);
    let p = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "px" }} }},
  pools = {{ px = {{ servers = {{ "{server}" }}, send_proxy = "v1",
                    timeouts = {{ keepalive = "10m" }} }} }},
}}"#
        ),
        1,
    );
    let web = p.addr("web");
    let mut client = connect_from([127, 0, 0, 2], web);
    let port = client.local_addr().unwrap().port();
    for _ in 0..3 {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !got.ends_with(b"ok") {
            let n = client.read(&mut chunk).expect("an answer");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
    }
    let next = || {
        rx.recv_timeout(DEADLINE)
            .expect("the server saw nothing more")
    };
    match next() {
        Seen::Opened(line) => assert_eq!(
            line,
            format!("PROXY TCP4 127.0.0.2 127.0.0.1 {port} {}", web.port())
        ),
        _ => panic!("no PROXY header first"),
    }
    // The three requests of the client connection on one server connection.
    for _ in 0..3 {
        assert!(
            matches!(next(), Seen::Request),
            "a second server connection"
        );
    }
    // The client goes: its server connection goes with it (the pool's
    // keep-alive is 10 minutes).
    drop(client);
    assert!(
        matches!(next(), Seen::Closed),
        "another connection was made"
    );
}

#[test]
fn http2_with_prior_knowledge_follows_a_header_sent_in_pieces() {
    let origin = origin("A");
    let p = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "edge", bind = "127.0.0.1:0", pool = "app", accept_proxy = true }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
  on_request = function(req) req:set_header("x-peer-ip", req.peer_ip) end,
}}"#,
            origin.addr
        ),
        1,
    );
    let edge = p.addr("edge");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body = rt.block_on(async {
        use http_body_util::BodyExt;
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(edge).await.unwrap();
        stream.set_nodelay(true).unwrap();
        // The header in three writes: Pocket reads it as it comes, and
        // takes nothing of the HTTP/2 preface that follows.
        for piece in [&b"PROX"[..], b"Y TCP6 2001:db8::5 ::1 4", b"000 80\r\n"] {
            stream.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("h2c handshake");
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("http://test/headers")
            .version(http::Version::HTTP_2)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.expect("h2 request");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    });
    assert!(body.contains("x-peer-ip: 2001:db8::5\n"), "{body}");
    assert!(body.contains("x-forwarded-for: 2001:db8::5\n"), "{body}");
}

#[test]
fn send_proxy_passes_on_the_destination_an_accept_proxy_header_named() {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = recording_server(tx);
    let p = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "edge", bind = "127.0.0.1:0", pool = "px", accept_proxy = true }} }},
  pools = {{ px = {{ servers = {{ "{server}" }}, send_proxy = "v1" }} }},
}}"#
        ),
        1,
    );
    let r = send(
        connect_from([127, 0, 0, 2], p.addr("edge")),
        b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 443\r\nGET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    match rx.recv_timeout(DEADLINE).expect("the server saw nothing") {
        Seen::Opened(line) => assert_eq!(line, "PROXY TCP4 192.0.2.7 192.0.2.1 40000 443"),
        _ => panic!("no PROXY header first"),
    }
}

// ---------------------------------------------------------------------------
// How many server connections one HTTP/2 client connection keeps open
// ---------------------------------------------------------------------------

/// Server connections open now, and opened in all.
#[derive(Default)]
struct Open {
    now: std::sync::atomic::AtomicUsize,
    all: std::sync::atomic::AtomicUsize,
}

impl Open {
    fn now(&self) -> usize {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn all(&self) -> usize {
        self.all.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Counts a connection while it is alive.
struct Counted(std::sync::Arc<Open>);

impl Counted {
    fn new(open: &std::sync::Arc<Open>) -> Counted {
        open.now.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        open.all.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Counted(open.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How long the test servers take over each answer: long enough that 50
/// requests sent at once are all in flight together.
const SLOW: Duration = Duration::from_millis(300);

/// Reads a v1 PROXY line (a byte at a time: nothing after it is taken).
async fn proxy_line(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    while !line.ends_with(b"\n") && line.len() < 108 {
        line.push(stream.read_u8().await.ok()?);
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

/// A server behind a `send_proxy = "v1"` pool that answers each request
/// `ok` after [`SLOW`], over HTTP/1.1 or (`h2`) HTTP/2 with prior
/// knowledge, and counts its open connections. Runs on `rt`.
fn slow_server(rt: &tokio::runtime::Runtime, h2: bool) -> (SocketAddr, std::sync::Arc<Open>) {
    let open = std::sync::Arc::new(Open::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = open.clone();
    rt.spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let counted = Counted::new(&counts);
            tokio::spawn(async move {
                let _counted = counted;
                let Some(line) = proxy_line(&mut stream).await else {
                    return;
                };
                assert!(line.starts_with("PROXY TCP4 127.0.0.2 "), "{line}");
                let service = hyper::service::service_fn(|_req| async {
                    tokio::time::sleep(SLOW).await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                    ))
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, service)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    (addr, open)
}

/// One HTTP/2 client connection (h2c, prior knowledge) from 127.0.0.2
/// sends 50 requests at once to a `send_proxy` pool whose server answers
/// slowly. Over HTTP/1.1 Pocket opens a server connection per request in
/// flight; once they are answered, at most 5 stay open for the client
/// connection (HAProxy's max-session-srv-conns), not one per request for
/// as long as the client stays connected. Over HTTP/2 (`protocol = "h2"`)
/// the 50 streams share one server connection, this client's own. When
/// the client goes, they all go.
fn an_http2_client_keeps_few_server_connections(protocol: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (server, open) = slow_server(&rt, protocol == "h2");
    let p = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "px" }} }},
  pools = {{ px = {{ servers = {{ "{server}" }}, send_proxy = "v1", protocol = "{protocol}",
                    timeouts = {{ keepalive = "10m" }} }} }},
}}"#
        ),
        1,
    );
    let web = p.addr("web");
    rt.block_on(async {
        use http_body_util::BodyExt;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
        let stream = socket.connect(web).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("h2c handshake");
        let conn = tokio::spawn(conn);
        let mut requests = Vec::new();
        for i in 0..50 {
            let mut sender = sender.clone();
            requests.push(tokio::spawn(async move {
                let req = http::Request::builder()
                    .uri(format!("http://test/{i}"))
                    .version(http::Version::HTTP_2)
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                let resp = sender.send_request(req).await.expect("h2 request");
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (status, body)
            }));
        }
        for r in requests {
            let (status, body) = tokio::time::timeout(DEADLINE, r)
                .await
                .expect("an answer within the deadline")
                .unwrap();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            assert_eq!(&body[..], b"ok");
        }
        let opened = open.all();
        eprintln!("{protocol}: {opened} server connection(s) opened for 50 requests");
        if protocol == "h2" {
            // The streams share the connection the first one opened.
            assert!(
                opened <= 2,
                "{protocol}: {opened} HTTP/2 server connections for 50 streams"
            );
        } else {
            assert!(
                opened > 5,
                "{protocol}: the requests were not in flight together ({opened} server connections)"
            );
        }
        // The client connection stays open: its extra server connections
        // close anyway.
        let start = Instant::now();
        while open.now() > 5 {
            assert!(
                start.elapsed() < DEADLINE,
                "{protocol}: {} of {opened} server connections still open for one idle client connection",
                open.now()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!conn.is_finished(), "the client connection closed");
        drop(sender);
        conn.abort();
        let start = Instant::now();
        while open.now() > 0 {
            assert!(
                start.elapsed() < DEADLINE,
                "{protocol}: {} server connections outlived their client connection",
                open.now()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn an_http2_client_with_50_requests_at_once_keeps_at_most_5_server_connections() {
    an_http2_client_keeps_few_server_connections("http1");
}

#[test]
fn fifty_streams_of_one_http2_client_share_one_http2_server_connection_of_a_send_proxy_pool() {
    an_http2_client_keeps_few_server_connections("h2");
}
