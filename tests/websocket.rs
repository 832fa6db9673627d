//! WebSocket tunnels through a real Pocket, with real WebSocket peers:
//! Python's `websockets` (PyPI, tests/setup/requirements.txt) as the
//! server (tests/clients/ws_server.py) and the client
//! (tests/clients/ws_client.py). Messages go both ways and come back
//! whole; upgrades are routed like requests; a tunnel crosses a reload,
//! is waited for on SIGTERM until the grace period ends, counts for
//! least_conn, is closed when idle for `timeouts.tunnel`; a server that
//! answers the upgrade with a 200 is relayed; a client that stops reading
//! pauses the server and Pocket's memory stays flat. Raw sockets on both
//! sides check what a library hides: bytes sent before the 101, each
//! side's close passed on alone (half-close), the headers the server
//! gets, and a server's reset logged `SD`.

mod common;
use common::*;

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn script(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Fails, saying how to get it, when python3 has no `websockets`.
fn require_websockets() {
    let ok = Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 cannot import websockets: run the suite with tests/run, which installs tests/setup/requirements.txt into a venv"
    );
}

/// A WebSocket origin (ws_server.py) named `name`; killed on drop.
struct WsServer {
    child: Child,
    out: Log,
    port: u16,
}

impl WsServer {
    fn start(name: &str) -> WsServer {
        Self::start_with(name, &[])
    }

    /// Over TLS, with the server.pem and server.key of [`make_certs`] in
    /// `dir`.
    fn start_tls(name: &str, dir: &std::path::Path) -> WsServer {
        let cert = dir.join("server.pem");
        let key = dir.join("server.key");
        Self::start_with(name, &["0", cert.to_str().unwrap(), key.to_str().unwrap()])
    }

    fn start_with(name: &str, more: &[&str]) -> WsServer {
        require_websockets();
        let mut child = Command::new("python3")
            .arg(script("ws_server.py"))
            .arg(name)
            .args(more)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3");
        let out = Log::default();
        out.follow(child.stdout.take().unwrap());
        let line = out.wait_for_any(&[&["listening "], &["<process ended>"]]);
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("ws_server.py {name} did not start: {}", out.text()));
        WsServer { child, out, port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebSocket client (ws_client.py) driven a command at a time.
struct WsClient {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Log,
    seen: usize,
}

impl WsClient {
    /// Connects to `url`; the first line it prints is returned with it
    /// (`open`, or `refused STATUS`).
    fn connect(url: &str) -> (WsClient, String) {
        require_websockets();
        let mut child = Command::new("python3")
            .args([&script("ws_client.py"), url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3");
        let out = Log::default();
        out.follow(child.stdout.take().unwrap());
        let stdin = child.stdin.take();
        let mut c = WsClient {
            child,
            stdin,
            out,
            seen: 0,
        };
        let first = c.next_line();
        (c, first)
    }

    fn open(url: &str) -> WsClient {
        let (c, first) = Self::connect(url);
        assert_eq!(first, "open", "{url}: {}", c.out.text());
        c
    }

    /// The next line the client prints (any line: `error: ...` too).
    fn next_line(&mut self) -> String {
        let line = self.out.wait_for_after(self.seen, &[""]);
        self.seen += 1;
        line
    }

    /// Sends `command`, returns the line it answers.
    fn ask(&mut self, command: &str) -> String {
        let stdin = self.stdin.as_mut().expect("client stdin");
        writeln!(stdin, "{command}").expect("write to ws_client.py");
        stdin.flush().unwrap();
        self.next_line()
    }

    fn whoami(&mut self) -> String {
        let line = self.ask("whoami");
        line.strip_prefix("server ")
            .unwrap_or_else(|| panic!("whoami: {line}"))
            .to_string()
    }

    fn echo(&mut self, n: usize) {
        assert_eq!(self.ask(&format!("echo {n}")), format!("echoed {n}"));
    }

    fn burst(&mut self, n: usize) {
        assert_eq!(self.ask(&format!("burst {n}")), format!("burst {n}"));
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn one_pool(server: &WsServer, extra: &str) -> String {
    format!(
        r#"return {{
  log = {{ access = "-" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }}{extra} }} }},
}}
"#,
        server.addr()
    )
}

#[test]
fn messages_go_both_ways_through_pocket_and_the_line_says_101() {
    let a = WsServer::start("A");
    let policy = one_pool(&a, "").replacen(
        "return {",
        "return {\n  admin = { bind = \"127.0.0.1:0\" },",
        1,
    );
    let pocket = Pocket::start(&policy, 1);
    let web = pocket.addr("web");
    let mut c = WsClient::open(&format!("ws://{web}/chat"));
    assert_eq!(c.whoami(), "A");
    c.echo(40);
    c.burst(40);
    assert_eq!(c.ask("close"), "closed");
    let line = pocket.log.wait_for(&["\"GET ", "/chat HTTP/1.1\" 101 -- "]);
    assert!(line.contains("pool=app"), "{line}");
    // Bytes both ways were counted (frames, compressed or not).
    for key in ["in=", "out="] {
        let n: u64 = line
            .split(key)
            .nth(1)
            .and_then(|v| v.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(n > 100, "{key} in {line}");
    }
    // A plain request to the same origin still works (no tunnel).
    let r = tokio_run(get(web, "/plain"));
    assert_eq!((r.status, r.text()), (200, "A\n".to_string()));
    // The metrics count the tunnel as a request, with a 1xx status.
    let line = pocket.log.wait_for(&["admin listening on "]);
    let admin: std::net::SocketAddr = line
        .rsplit("admin listening on ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let host = admin.to_string();
    let text = tokio_run(send(
        admin,
        request("GET", "/metrics", &[("host", &host)], ""),
    ))
    .text();
    let class_1xx = format!(
        "pocket_server_requests_total{{pool=\"app\",server=\"{}\",class=\"1xx\"}} 1",
        a.addr()
    );
    assert!(text.contains(&class_1xx), "no {class_1xx} in:\n{text}");
}

fn tokio_run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn upgrades_are_routed_by_path_and_the_script_sees_the_upgrade_header() {
    let (a, b) = (WsServer::start("A"), WsServer::start("B"));
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0" }} }},
  pools = {{ a = {{ servers = {{ "{}" }} }}, b = {{ servers = {{ "{}" }} }} }},
  on_request = function(req)
    if req:header("upgrade") ~= "websocket" then
      return pocket.respond(403, "websockets only\n")
    end
    if req.path:sub(1, 3) == "/b/" then return "b" end
    return "a"
  end,
}}
"#,
            a.addr(),
            b.addr()
        ),
        1,
    );
    let web = pocket.addr("web");
    let mut to_a = WsClient::open(&format!("ws://{web}/a/chat"));
    let mut to_b = WsClient::open(&format!("ws://{web}/b/chat"));
    assert_eq!(to_a.whoami(), "A");
    assert_eq!(to_b.whoami(), "B");
    to_a.echo(10);
    to_b.echo(10);
    assert_eq!(tokio_run(get(web, "/a/chat")).status, 403);
}

#[test]
fn a_tunnel_keeps_working_across_a_reload_on_its_generation() {
    let (a, b) = (WsServer::start("A"), WsServer::start("B"));
    let pocket = Pocket::start_with(&one_pool(&a, ""), 1, &["--no-watch"]);
    let web = pocket.addr("web");
    let mut old = WsClient::open(&format!("ws://{web}/old"));
    assert_eq!(old.whoami(), "A");
    old.echo(5);
    std::fs::write(&pocket.policy, one_pool(&b, "")).unwrap();
    let (code, out, err) = pocket_cmd(&["reload", pocket.policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let mut new = WsClient::open(&format!("ws://{web}/new"));
    assert_eq!(new.whoami(), "B");
    // The old tunnel still goes to A, and messages still come back.
    old.echo(20);
    old.burst(20);
    assert_eq!(old.whoami(), "A");
    assert_eq!(old.ask("close"), "closed");
    let line = pocket.log.wait_for(&["/old HTTP/1.1\" 101 -- "]);
    assert!(line.contains(" g1 "), "{line}");
}

#[test]
fn sigterm_waits_for_an_open_tunnel_then_closes_it_after_the_grace_period() {
    let a = WsServer::start("A");
    let pocket = Pocket::start_with(&one_pool(&a, ""), 1, &["--grace", "3s"]);
    let web = pocket.addr("web");
    let mut c = WsClient::open(&format!("ws://{web}/held"));
    c.echo(5);
    unsafe { libc::kill(pocket.pid() as i32, libc::SIGTERM) };
    pocket.log.wait_for(&["draining: no new connections"]);
    // Draining: the tunnel still carries messages.
    c.echo(5);
    // Then the grace period ends and Pocket closes it.
    assert_eq!(c.ask("wait_close"), "closed");
    pocket.log.wait_for(&["grace period of 3s over"]);
    let line = pocket.log.wait_for(&["/held HTTP/1.1\" 101 KD "]);
    assert!(
        line.contains("pool=app") && !line.contains(" out=0 "),
        "{line}"
    );
    pocket.log.wait_for(&["<process ended>"]);
}

#[test]
fn an_upgrade_the_server_answers_with_200_is_relayed_as_a_200() {
    let a = WsServer::start("A");
    let pocket = Pocket::start(&one_pool(&a, ""), 1);
    let web = pocket.addr("web");
    let (_c, first) = WsClient::connect(&format!("ws://{web}/refuse"));
    assert_eq!(first, "refused 200");
    pocket
        .log
        .wait_for(&["/refuse HTTP/1.1\" 200 -- ", "server=127.0.0.1"]);
    // The same with a raw client: a whole 200 with its body, not a 101.
    let answer = tokio_run(raw(
        web,
        b"GET /refuse HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    ));
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nA\n"), "{answer}");
    // Not upgraded, the connection stays HTTP: the next request on it
    // is answered.
    tokio_run(async {
        let mut c = H1::connect(web).await;
        let ws = [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let r = c.send(request("GET", "/refuse", &ws, "")).await.unwrap();
        assert_eq!((r.status, r.text()), (200, "A\n".to_string()));
        let r = c.get("/after").await;
        assert_eq!((r.status, r.text()), (200, "A\n".to_string()));
    });
}

#[test]
fn least_conn_counts_an_open_tunnel_in_flight() {
    let (a, b) = (WsServer::start("A"), WsServer::start("B"));
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}", "{}" }}, balance = "least_conn" }} }},
}}
"#,
            a.addr(),
            b.addr()
        ),
        1,
    );
    let web = pocket.addr("web");
    let mut c = WsClient::open(&format!("ws://{web}/held"));
    let held = c.whoami();
    let other = if held == "A" { "B" } else { "A" };
    // While the tunnel is open its server has one in flight: every plain
    // request (one at a time) goes to the other.
    for i in 0..6 {
        let r = tokio_run(get(web, "/plain"));
        assert_eq!(r.text().trim(), other, "request {i}");
    }
    c.echo(3);
}

#[test]
fn an_idle_tunnel_is_closed_after_timeouts_tunnel() {
    let a = WsServer::start("A");
    let pocket = Pocket::start(&one_pool(&a, r#", timeouts = { tunnel = "1s" }"#), 1);
    let web = pocket.addr("web");
    let mut c = WsClient::open(&format!("ws://{web}/quiet"));
    c.echo(3);
    assert_eq!(c.ask("wait_close"), "closed");
    pocket
        .log
        .wait_for(&["tunnel idle for 1s (timeouts.tunnel); closed"]);
    // The client spoke last and the server answered: the client's silence.
    pocket.log.wait_for(&["/quiet HTTP/1.1\" 101 cD "]);
}

/// Reads an HTTP head (to its empty line) from `s`.
async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut byte))
            .await
            .expect("a head within the deadline")
            .unwrap();
        assert!(n == 1, "closed before the end of the head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn a_client_that_stops_reading_pauses_the_server_and_memory_stays_flat() {
    let a = WsServer::start("A");
    let pocket = Pocket::start(&one_pool(&a, ""), 1);
    let web = pocket.addr("web");
    let (rss_before, _) = pocket.rss_kib();
    tokio_run(async {
        // A raw client: the handshake, then it reads nothing at all.
        let mut s = tokio::net::TcpStream::connect(web)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connect to {web}: {e}; pocket's log:\n{}",
                    pocket.log.text()
                )
            });
        s.write_all(
            b"GET /push HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        // The server pushes until what it sends is not taken: its count
        // stops moving (checked a second apart, within the deadline).
        let start = Instant::now();
        let mut last = 0;
        loop {
            assert!(start.elapsed() < DEADLINE, "the server never stopped");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let text = a.out.text();
            assert!(
                !text.contains("pushed all"),
                "the server sent all 256 MiB to a client that reads nothing"
            );
            let pushed = text.lines().filter(|l| l.starts_with("pushed ")).count();
            if pushed > 0 && pushed == last {
                break;
            }
            last = pushed;
        }
        let (rss_after, _) = pocket.rss_kib();
        let grew = rss_after.saturating_sub(rss_before);
        eprintln!("server pushed {last} MiB before it was paused; pocket's RSS grew by {grew} KiB");
        assert!(
            grew < 16 * 1024,
            "pocket's memory grew by {grew} KiB while the client read nothing"
        );
        drop(s);
    });
}

/// A raw upgrade origin: takes one connection, keeps the request head it
/// got, answers 101 with `early` in the same write, then echoes what comes
/// until the client's EOF, after which it sends `bye` and closes.
async fn raw_upgrade_origin(
    early: &'static [u8],
) -> (std::net::SocketAddr, tokio::task::JoinHandle<String>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let head = read_head(&mut s).await;
        let mut answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-test\r\n\
                           Connection: Upgrade\r\nX-Server: raw\r\n\r\n"
            .to_vec();
        answer.extend_from_slice(early);
        s.write_all(&answer).await.unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
        // The client's half is closed; this half still goes through.
        s.write_all(b"bye").await.unwrap();
        s.shutdown().await.unwrap();
        head
    });
    (addr, task)
}

#[test]
fn early_bytes_pass_both_ways_and_each_side_closes_on_its_own() {
    tokio_run(async {
        let (origin_addr, origin) = raw_upgrade_origin(b"server-first").await;
        let pocket = Pocket::start(
            &format!(
                r#"return {{
  log = {{ access = "-" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{origin_addr}" }} }} }},
}}
"#
            ),
            1,
        );
        let web = pocket.addr("web");
        let mut s = tokio::net::TcpStream::connect(web).await.unwrap();
        // The request and the first bytes of the new protocol in one write,
        // as a client that does not wait for the 101 sends them.
        s.write_all(
            b"GET /raw HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Upgrade\r\nUpgrade: x-test\r\n\
              Keep-Alive: timeout=5\r\nSec-WebSocket-Key: k\r\n\r\nclient-first",
        )
        .await
        .unwrap();
        let head = read_head(&mut s).await;
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{head}"
        );
        let lower = head.to_ascii_lowercase();
        for h in ["upgrade: x-test", "connection: upgrade", "x-server: raw"] {
            assert!(lower.contains(h), "{h} in {head}");
        }
        s.write_all(b"+more").await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest))
            .await
            .expect("the tunnel ends")
            .unwrap();
        // The server's early bytes, the echo of all the client sent, then
        // what the server sent after the client had closed its half.
        assert_eq!(
            String::from_utf8_lossy(&rest),
            "server-firstclient-first+morebye"
        );
        let got = origin.await.unwrap().to_ascii_lowercase();
        assert!(got.contains("upgrade: x-test\r\n"), "{got}");
        assert!(got.contains("connection: upgrade\r\n"), "{got}");
        assert!(got.contains("sec-websocket-key: k\r\n"), "{got}");
        assert!(!got.contains("keep-alive"), "{got}");
        pocket
            .log
            .wait_for(&["/raw HTTP/1.1\" 101 -- in=17 out=32 "]);
    });
}

#[test]
fn a_server_that_resets_the_tunnel_is_logged_sd_and_the_client_is_closed() {
    tokio_run(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = l.local_addr().unwrap();
        let origin = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            read_head(&mut s).await;
            s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            )
            .await
            .unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            // A reset, not a close: the server breaks the tunnel.
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
        });
        let pocket = Pocket::start(
            &format!(
                r#"return {{
  log = {{ access = "-" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{origin_addr}" }} }} }},
}}
"#
            ),
            1,
        );
        let mut s = tokio::net::TcpStream::connect(pocket.addr("web"))
            .await
            .unwrap();
        s.write_all(
            b"GET /reset HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        s.write_all(b"hello").await.unwrap();
        origin.await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest))
            .await
            .expect("pocket closes the client's side");
        pocket
            .log
            .wait_for(&["/reset HTTP/1.1\" 101 SD in=5 out=0 "]);
    });
}

/// One pool of the built-in origin, whose `/echo` agrees to any upgrade
/// (h2c included) and answers 400 to a request that asks for none; the
/// script refuses `/admin`.
fn echo_origin_policy(origin: &OriginHandle) -> String {
    format!(
        r#"return {{
  log = {{ access = "-" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
  on_request = function(req)
    if req.path == "/admin" then return pocket.respond(403, "no\n") end
  end,
}}
"#,
        origin.addr
    )
}

/// The statuses of the responses in `answer`, in order.
fn statuses(answer: &str) -> Vec<&str> {
    answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i + 9..i + 12])
        .collect()
}

#[test]
fn an_h2c_upgrade_is_not_tunneled_so_every_request_still_meets_on_request() {
    // h2c smuggling: were the switch to HTTP/2 tunneled, the requests after
    // it would reach the server unseen by on_request.
    let origin = origin("A");
    let pocket = Pocket::start(&echo_origin_policy(&origin), 1);
    let h2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
               HTTP2-Settings: AAMAAABkAAQAAP__\r\n";
    let answer = tokio_run(raw(
        pocket.addr("web"),
        format!(
            "GET /echo HTTP/1.1\r\nHost: t\r\n{h2c}\r\n\
             GET /headers HTTP/1.1\r\nHost: t\r\n{h2c}\r\n\
             GET /admin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    ));
    // /echo would have switched: the origin got no Upgrade, so it said 400.
    assert_eq!(statuses(&answer), ["400", "200", "403"], "{answer}");
    assert!(!answer.contains(" 101 "), "{answer}");
    assert!(answer.contains("/echo needs an upgrade"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    for h in ["upgrade:", "http2-settings:"] {
        assert!(
            !lower.contains(&format!("\n{h}")),
            "{h} reached the origin: {answer}"
        );
    }
    assert!(answer.ends_with("no\n"), "{answer}");
    // The same with other spellings of the token.
    for up in ["H2C", "websocket, h2c"] {
        let answer = tokio_run(raw(
            pocket.addr("web"),
            format!(
                "GET /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, close\r\nUpgrade: {up}\r\n\r\n"
            )
            .as_bytes(),
        ));
        assert_eq!(statuses(&answer), ["400"], "{up}: {answer}");
    }
}

#[test]
fn an_upgrade_request_with_a_body_goes_as_a_plain_request() {
    let origin = origin("A");
    let pocket = Pocket::start(&echo_origin_policy(&origin), 1);
    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let answer = tokio_run(raw(
        pocket.addr("web"),
        format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\n{ws}Content-Length: 5\r\n\r\nhello\
             POST /echo HTTP/1.1\r\nHost: t\r\n{ws}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
             POST /upload HTTP/1.1\r\nHost: t\r\n{ws}Content-Length: 5\r\n\r\nhello\
             GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    ));
    // The origin saw no Upgrade on either /echo, and got each body whole.
    assert_eq!(statuses(&answer), ["400", "400", "200", "200"], "{answer}");
    assert_eq!(
        answer.matches("/echo needs an upgrade").count(),
        2,
        "{answer}"
    );
    assert!(answer.contains("A received 5 bytes"), "{answer}");
    assert!(answer.ends_with("path /after\n"), "{answer}");
}

#[test]
fn a_server_that_stops_reading_for_longer_than_idle_keeps_its_tunnel() {
    // The pool's `idle` (1 s) is the TCP_USER_TIMEOUT of its connections;
    // a tunnel is bounded by `timeouts.tunnel` (30 s) instead. A server
    // that takes nothing for 6 s, then reads again, gets all that was sent.
    tokio_run(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // A small window: the client's bytes fill it soon.
        socket.set_recv_buffer_size(32 * 1024).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let origin_addr = socket.local_addr().unwrap();
        let l = socket.listen(1).unwrap();
        let (resume, resumed) = tokio::sync::oneshot::channel::<()>();
        let origin = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            read_head(&mut s).await;
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-test\r\nConnection: Upgrade\r\n\r\n")
                .await
                .unwrap();
            let _ = resumed.await;
            let mut got = Vec::new();
            let read = tokio::time::timeout(DEADLINE, s.read_to_end(&mut got)).await;
            let _ = s.shutdown().await;
            (got.len(), format!("{read:?}"))
        });
        let pocket = Pocket::start(
            &format!(
                r#"return {{
  log = {{ access = "-" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{origin_addr}" }}, timeouts = {{ idle = "1s", tunnel = "30s" }} }} }},
}}
"#
            ),
            1,
        );
        let mut s = tokio::net::TcpStream::connect(pocket.addr("web"))
            .await
            .unwrap();
        s.write_all(
            b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n",
        )
        .await
        .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        // Send until nothing more is taken for a second (at most 64 MiB).
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 64 << 20 {
            match tokio::time::timeout(Duration::from_secs(1), s.write(&chunk)).await {
                Ok(Ok(n)) => sent += n,
                Ok(Err(e)) => panic!("the tunnel broke after {sent} bytes: {e}"),
                Err(_) => break,
            }
        }
        assert!(
            sent < 64 << 20,
            "the server took everything without reading"
        );
        // The server's window has been closed for a second; five more.
        tokio::time::sleep(Duration::from_secs(5)).await;
        resume.send(()).unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest))
            .await
            .expect("the tunnel ends")
            .unwrap();
        let (got, how) = origin.await.unwrap();
        assert_eq!(got, sent, "the server got {got} of {sent} bytes ({how})");
        pocket
            .log
            .wait_for(&[&format!("/slow HTTP/1.1\" 101 -- in={sent} out=0 ")]);
    });
}

#[test]
fn an_upgrade_to_a_tls_pool_goes_over_tls_as_http_1_1_even_in_an_h2_pool() {
    let dir = tempfile::tempdir().unwrap();
    common::make_test_certs(dir.path());
    let a = WsServer::start_tls("A", dir.path());
    let ca = dir.path().join("ca.pem");
    for protocol in ["http1", "h2"] {
        let pocket = Pocket::start(
            &format!(
                r#"return {{
  log = {{ access = "-" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }}, protocol = "{protocol}", tls = {{ ca = "{}" }} }} }},
}}
"#,
                a.addr(),
                ca.display()
            ),
            1,
        );
        let web = pocket.addr("web");
        let mut c = WsClient::open(&format!("ws://{web}/secure"));
        assert_eq!(c.whoami(), "A");
        // The server offers h2 too: Pocket, about to speak HTTP/1.1 on
        // this connection, offered only http/1.1.
        assert_eq!(c.ask("alpn"), "alpn http/1.1", "protocol = {protocol}");
        c.echo(20);
        c.burst(20);
        assert_eq!(c.ask("close"), "closed");
        pocket.log.wait_for(&["/secure HTTP/1.1\" 101 -- "]);
    }
}
