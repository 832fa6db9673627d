//! HTTP right at the edges: framing, timeouts, hosts and paths, each input
//! sent as exact bytes by a raw client to a real Pocket, in front of a real
//! built-in origin or a raw origin that writes exactly the bytes under test.
//! Each test asserts what the client (or the origin) would notice.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------
// A raw client and a raw origin
// ---------------------------------------------------------------------------

/// A response as the raw client read it.
#[derive(Debug)]
struct Raw {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that writes exact bytes and reads whole responses.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    timed_out: bool,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to pocket");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            timed_out: false,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to pocket");
    }

    /// More bytes, or false at the end of the stream (or after DEADLINE
    /// of silence, which `closed` tells apart).
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Err(e) => {
                self.timed_out |= matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads one response (framed by Content-Length, chunked, or the
    /// close); None when the connection ends before a head.
    fn response(&mut self, head_request: bool) -> Option<Raw> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut raw = Raw {
            status_line,
            headers,
            body: Vec::new(),
        };
        let status = raw.status();
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return Some(raw);
        }
        if raw
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    if !self.fill() {
                        return Some(raw);
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                    .expect("chunk size");
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    if !self.fill() {
                        return Some(raw);
                    }
                }
                raw.body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
                if size == 0 {
                    return Some(raw);
                }
            }
        }
        if let Some(len) = raw.header("content-length").and_then(|v| v.parse().ok()) {
            while self.buf.len() < len {
                if !self.fill() {
                    break;
                }
            }
            let n = len.min(self.buf.len());
            raw.body = self.buf.drain(..n).collect();
            return Some(raw);
        }
        while self.fill() {}
        raw.body = std::mem::take(&mut self.buf);
        Some(raw)
    }

    /// True once the server has closed the connection; false if it was
    /// still open after DEADLINE of silence.
    fn closed(&mut self) -> bool {
        while self.fill() {}
        !self.timed_out
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One exchange on a fresh connection.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Raw {
    let mut c = Client::connect(addr);
    c.send(bytes);
    c.response(bytes.starts_with(b"HEAD "))
        .expect("a response from pocket")
}

fn get(addr: SocketAddr, path: &str) -> Raw {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

/// An origin that writes exactly what `answer(connection, request, head)`
/// returns for each request head it reads (None: close without a word; a
/// reply without a whole head: those bytes, then the close).
struct RawOrigin {
    addr: SocketAddr,
}

type Answer = dyn Fn(usize, usize, &str) -> Option<Vec<u8>> + Send + Sync;

fn raw_origin(
    answer: impl Fn(usize, usize, &str) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> RawOrigin {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answer: Arc<Answer> = Arc::new(answer);
    std::thread::spawn(move || {
        for (conn, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                for request in 0.. {
                    let end = loop {
                        if let Some(i) = find(&buf, b"\r\n\r\n") {
                            break i;
                        }
                        let mut chunk = [0u8; 8192];
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    match answer(conn, request, &head) {
                        // A reply cut before the end of its head is
                        // followed by the close that cut it.
                        Some(bytes) if find(&bytes, b"\r\n\r\n").is_none() => {
                            let _ = stream.write_all(&bytes);
                            return;
                        }
                        Some(bytes) => {
                            if stream.write_all(&bytes).is_err() {
                                return;
                            }
                        }
                        None => return,
                    }
                }
            });
        }
    });
    RawOrigin { addr }
}

fn policy_for(addr: SocketAddr, extra_pool: &str, extra: &str) -> String {
    format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{addr}" }} {extra_pool} }} }},
{extra}
}}"#
    )
}

/// `pocket check` on `src` as p.lua: it must fail; what it printed.
fn refused_by_check(src: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "p.lua", src);
    let (code, _, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    err
}

fn pocket_for(addr: SocketAddr) -> (Pocket, SocketAddr) {
    let p = Pocket::start(&policy_for(addr, "", ""), 1);
    let a = p.addr("web");
    (p, a)
}

// ---------------------------------------------------------------------------
// 1. Timeouts are per phase, and measure inactivity
// ---------------------------------------------------------------------------

#[test]
fn an_upload_slower_than_the_response_timeout_still_works() {
    let origin = origin("A");
    let p = Pocket::start(
        &policy_for(origin.addr, r#", timeouts = { response = "2s" }"#, ""),
        1,
    );
    let mut c = Client::connect(p.addr("web"));
    c.send(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 40960\r\n\r\n");
    // 40 KiB, 1 KiB every 100 ms: 4 s in all, twice the response timeout.
    for _ in 0..40 {
        c.send(&[b'x'; 1024]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = c.response(false).expect("a response");
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.text(), "A received 40960 bytes\n");
}

#[test]
fn a_client_that_stops_sending_its_body_gets_408() {
    let origin = origin("A");
    let p = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app", timeouts = {{ body = "1s" }} }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
}}"#,
            origin.addr
        ),
        1,
    );
    let mut c = Client::connect(p.addr("web"));
    c.send(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n0123456789");
    let r = c.response(false).expect("a response");
    assert_eq!(r.status(), 408, "{r:?}");
    assert!(r.text().contains("timeouts.body"), "{}", r.text());
    assert!(c.closed());
    // Not the server's fault: it stays up and serves.
    assert_eq!(get(p.addr("web"), "/").status(), 200);
}

#[test]
fn the_total_timeout_bounds_the_whole_exchange() {
    let origin = origin("A");
    let p = Pocket::start(
        &policy_for(origin.addr, r#", timeouts = { total = "2s" }"#, ""),
        1,
    );
    // A minute against 2 s (which a quick answer meets on a busy machine).
    let r = get(p.addr("web"), "/delay/60000");
    assert_eq!(r.status(), 504, "{r:?}");
    assert!(r.text().contains("timeouts.total"), "{}", r.text());
    assert_eq!(get(p.addr("web"), "/delay/10").status(), 200);
}

#[test]
fn a_bad_timeout_is_refused_with_its_line() {
    let err = refused_by_check("return {\n  listeners = { { name = \"web\", bind = \"127.0.0.1:0\", pool = \"app\",\n    timeouts = { body = \"soon\" } } },\n  pools = { app = { servers = { \"127.0.0.1:1\" }, timeouts = { total = 0 } } },\n}\n");
    assert!(
        err.contains("p.lua:3:") && err.contains("timeouts.body"),
        "{err}"
    );
    assert!(
        err.contains("p.lua:4:") && err.contains("timeouts.total"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// 2. Response framing is checked as strictly as requests
// ---------------------------------------------------------------------------

fn cl_and_chunked(cl: usize) -> RawOrigin {
    raw_origin(move |_, _, _| {
        Some(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n"
            )
            .into_bytes(),
        )
    })
}

#[test]
fn chunked_wins_over_content_length_in_a_response() {
    for cl in [5, 40] {
        let origin = cl_and_chunked(cl);
        let (_p, addr) = pocket_for(origin.addr);
        let mut c = Client::connect(addr);
        for _ in 0..2 {
            // The same connection stays in step: the second answer is whole too.
            c.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n");
            let r = c.response(false).expect("a response");
            assert_eq!(r.status(), 200, "CL {cl}: {r:?}");
            assert_eq!(r.text(), "hello world", "CL {cl}: {r:?}");
            assert_ne!(r.header("content-length"), Some(&*cl.to_string()));
        }
    }
}

#[tokio::test]
async fn chunked_wins_over_content_length_for_an_h2_client() {
    let origin = cl_and_chunked(5);
    let (_p, addr) = pocket_for(origin.addr);
    let r = h2_get(addr, "test", "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello world");
}

#[test]
fn an_unsolicited_101_is_a_502() {
    let origin = raw_origin(|_, _, _| {
        Some(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec())
    });
    let (p, addr) = pocket_for(origin.addr);
    let r = get(addr, "/");
    assert_eq!(r.status(), 502, "{r:?}");
    assert!(r.text().contains("101"), "{}", r.text());
    p.log.wait_for(&["cannot relay", "101"]);
}

#[tokio::test]
async fn an_unsolicited_101_is_a_502_for_an_h2_client() {
    let origin = raw_origin(|_, _, _| {
        Some(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
                .to_vec(),
        )
    });
    let (_p, addr) = pocket_for(origin.addr);
    assert_eq!(h2_get(addr, "test", "/").await.status, 502);
}

#[test]
fn informational_responses_before_the_final_one_are_passed_over() {
    let origin = raw_origin(|_, _, _| {
        Some(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    });
    let (_p, addr) = pocket_for(origin.addr);
    let mut c = Client::connect(addr);
    c.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(false).expect("a response");
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.text(), "ok");
}

#[test]
fn pocket_speaks_http_1_1_whatever_the_server_spoke() {
    let origin =
        raw_origin(|_, _, _| Some(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()));
    let (_p, addr) = pocket_for(origin.addr);
    let r = get(addr, "/");
    assert!(r.status_line.starts_with("HTTP/1.1 200"), "{r:?}");
    assert_eq!(r.text(), "ok");
}

#[test]
fn a_reused_connection_the_server_closes_costs_the_client_nothing() {
    // Every connection answers its first request and is closed by the
    // server, unannounced, when its second one arrives: the race of a
    // server's keep-alive timeout with a reuse, made certain.
    let origin = raw_origin(|_, request, _| {
        (request == 0).then(|| b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
    });
    let (p, addr) = pocket_for(origin.addr);
    for i in 0..6 {
        let r = get(addr, "/");
        assert_eq!(r.status(), 200, "request {i}: {r:?}");
        assert_eq!(r.text(), "ok");
    }
    assert!(!p.log.text().contains("WARN"), "{}", p.log.text());
}

#[test]
fn a_post_on_a_connection_the_server_closed_while_idle_is_sent_on_a_new_one() {
    // The race tests/websocket.rs `an_upgrade_request_with_a_body_goes_as_a_plain_request`
    // once lost (a 502 for a POST): the server closes (or resets) a
    // kept-alive connection, unannounced, just before Pocket reuses it, too late for
    // the connection's task to have seen it. Made certain here: the
    // client's pipelined requests keep the worker busy in Lua (15 ms
    // each, within the 25 ms budget) while the origin closes the idle
    // connection; the pipelined POST that follows is the first thing the
    // worker does after. None of it was written to the closed connection,
    // so it goes on a new one, whatever its method.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = listener.local_addr().unwrap();
    // What the origin read whole, one line per request, and "closed" or
    // "missed" (the POST had already come: the race was not run) per round.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
    let close_rx = Arc::new(std::sync::Mutex::new(close_rx));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (record, close_rx) = (record.clone(), close_rx.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = find(&buf, b"\r\n\r\n") {
                            break i;
                        }
                        let mut chunk = [0u8; 8192];
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        let mut chunk = [0u8; 8192];
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + len);
                    let line = head.lines().next().unwrap_or("").to_string();
                    let body = format!("{line} with {len} bytes");
                    record.lock().unwrap().push(body.clone());
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                    if !line.contains("/first") {
                        continue;
                    }
                    // Told when the worker is busy: close, unless the next
                    // request is already here.
                    let told = close_rx.lock().unwrap().recv_timeout(DEADLINE);
                    stream.set_nonblocking(true).unwrap();
                    let waiting = matches!(stream.peek(&mut [0u8; 1]), Ok(n) if n > 0);
                    stream.set_nonblocking(false).unwrap();
                    if told.is_ok() && !waiting && buf.is_empty() {
                        record.lock().unwrap().push("closed".into());
                        if line.contains("reset") {
                            // A reset (RST), not a FIN: as a server that
                            // closes with bytes unread does.
                            let _ =
                                socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                        }
                        return;
                    }
                    record.lock().unwrap().push("missed".into());
                }
            });
        }
    });
    let p = Pocket::start(
        &policy_for(
            origin,
            "",
            r#"on_request = function(req)
    if req.path:find("^/spin") then
      pocket.log.info("spinning")
      local t = pocket.now()
      while pocket.now() - t < 0.015 do end
      return pocket.respond(200, "spun")
    end
  end,"#,
        ),
        1,
    );
    let addr = p.addr("web");
    let rounds = 4;
    for i in 0..rounds {
        let mut c = Client::connect(addr);
        // Every other round, the origin resets the connection.
        let how = if i % 2 == 1 { "-reset" } else { "" };
        c.send(format!("GET /first{i}{how} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        let r = c.response(false).expect("an answer to /first");
        assert_eq!(r.status(), 200, "{r:?}");
        let from = p.log.lines().len();
        let mut batch = String::new();
        for k in 0..14 {
            batch += &format!("GET /spin{i}-{k} HTTP/1.1\r\nHost: test\r\n\r\n");
        }
        batch += &format!(
            "POST /second{i} HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        );
        c.send(batch.as_bytes());
        p.log.wait_for_after(from, &["spinning"]);
        close_tx.send(()).unwrap();
        for k in 0..14 {
            c.response(false)
                .unwrap_or_else(|| panic!("no answer to /spin{i}-{k}"));
        }
        let r = c.response(false).expect("an answer to the POST");
        assert_eq!(r.status(), 200, "round {i}: {r:?}");
        assert_eq!(r.text(), format!("POST /second{i} HTTP/1.1 with 5 bytes"));
    }
    // Each POST reached the origin once, whole; and the race was run.
    let seen = seen.lock().unwrap().clone();
    for i in 0..rounds {
        let n = seen
            .iter()
            .filter(|l| **l == format!("POST /second{i} HTTP/1.1 with 5 bytes"))
            .count();
        assert_eq!(n, 1, "/second{i}: {seen:?}");
    }
    let closed = seen.iter().filter(|l| *l == "closed").count();
    assert!(
        closed >= 1,
        "the origin never closed before the POST came: {seen:?}"
    );
}

// ---------------------------------------------------------------------------
// 3. Framing is Pocket's alone
// ---------------------------------------------------------------------------

/// A keep-alive connection asks `/bad` (the hook misbehaves there), then
/// `/next`; each gets its own whole answer.
fn stays_in_step(addr: SocketAddr, bad_status: u16) {
    let mut c = Client::connect(addr);
    c.send(b"GET /bad HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(false).expect("answer to /bad");
    assert_eq!(r.status(), bad_status, "{r:?}");
    c.send(b"GET /next HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(false).expect("answer to /next");
    assert_eq!(r.status(), 200, "{r:?}");
    assert!(r.text().contains("path /next"), "{}", r.text());
}

#[test]
fn scripts_cannot_set_framing_headers() {
    let origin = origin("A");
    let cases = [
        (
            "on_request",
            r#"on_request = function(req)
    if req.path == "/bad" then
      return pocket.respond(200, "a longer body than five", { ["content-length"] = "5" })
    end
  end,"#,
            "content-length",
        ),
        (
            "on_response",
            r#"on_response = function(req, res)
    if req.path == "/bad" then res:set_header("content-length", "500") end
  end,"#,
            "content-length",
        ),
        (
            "on_request",
            r#"on_request = function(req)
    if req.path == "/bad" then req:set_header("Content-Length", "40") end
  end,"#,
            "content-length",
        ),
        (
            "on_response",
            r#"on_response = function(req, res)
    if req.path == "/bad" then res:add_header("transfer-encoding", "chunked") end
  end,"#,
            "transfer-encoding",
        ),
        (
            "on_request",
            r#"on_request = function(req)
    if req.path == "/bad" then req:remove_header("connection") end
  end,"#,
            "connection",
        ),
    ];
    for (hook, src, header) in cases {
        let p = Pocket::start(&policy_for(origin.addr, "", src), 1);
        stays_in_step(p.addr("web"), 500);
        // The log names the hook, the line and the header.
        let line = p
            .log
            .wait_for(&["policy.lua:", "cannot be set by a script"]);
        assert!(line.contains(hook) && line.contains(header), "{line}");
    }
}

#[test]
fn a_local_response_computes_its_own_length() {
    let origin = origin("A");
    let p = Pocket::start(
        &policy_for(
            origin.addr,
            "",
            r#"on_request = function(req)
    if req.path == "/bad" then return pocket.respond(200, "twelve bytes", { ["x-a"] = "b" }) end
  end,"#,
        ),
        1,
    );
    let mut c = Client::connect(p.addr("web"));
    c.send(b"GET /bad HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(false).unwrap();
    assert_eq!(r.header("content-length"), Some("12"));
    assert_eq!(r.text(), "twelve bytes");
}

#[test]
fn a_framing_header_in_a_response_built_at_load_is_refused_with_its_line() {
    let err = refused_by_check("local busy = pocket.respond(503, \"busy\",\n  { [\"Transfer-Encoding\"] = \"chunked\" })\nreturn {\n  listeners = { { name = \"web\", bind = \"127.0.0.1:0\" } },\n  pools = {},\n  on_request = function() return busy end,\n}\n");
    assert!(
        err.contains("p.lua:1:") && err.contains("transfer-encoding"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// 4. Paths: what the policy routes on is what the server receives
// ---------------------------------------------------------------------------

#[test]
fn path_rules_cannot_be_walked_around() {
    let origin = origin("A");
    let p = Pocket::start(
        &policy_for(
            origin.addr,
            "",
            r#"on_request = (function()
    local match = require "pocket.match"
    local routes = match.routes {
      { prefix = "/admin/", respond = { 403, "no\n" } },
      default = "app",
    }
    return function(req)
      if req.path == "/target" then
        return pocket.respond(200, req.target .. " " .. req.path .. " " .. req.uri)
      end
      return routes:route(req)
    end
  end)(),"#,
        ),
        1,
    );
    let addr = p.addr("web");
    for path in [
        "/admin/users",
        "/static/../admin/users",
        "/%61dmin/users",
        "/./admin/users",
        "//admin/users",
        "/%2e%2e/admin/users",
        "/x/%2E%2E/admin/users",
    ] {
        let r = get(addr, path);
        assert_eq!(r.status(), 403, "{path}: {r:?}");
    }
    // What the server receives is the path the policy saw.
    let r = get(addr, "/static/../x/./%7euser//a?q=/../b");
    assert_eq!(r.status(), 200);
    assert!(r.text().contains("path /x/~user/a\n"), "{}", r.text());
    // An encoded slash stays encoded: never a path separator.
    let r = get(addr, "/admin%2Fusers");
    assert_eq!(r.status(), 200);
    assert!(r.text().contains("path /admin%2Fusers"), "{}", r.text());
    // The raw target stays readable.
    let r = get(addr, "/a/../target?x=%61");
    assert_eq!(r.text(), "/a/../target?x=%61 /target /target?x=%61");
    // A broken escape is a 400 and reaches nobody.
    let before = origin.request_count();
    assert_eq!(get(addr, "/a%zz").status(), 400);
    assert_eq!(origin.request_count(), before);
}

// ---------------------------------------------------------------------------
// 5. One host
// ---------------------------------------------------------------------------

#[test]
fn two_hosts_or_none_is_a_400() {
    let origin = origin("A");
    let (_p, addr) = pocket_for(origin.addr);
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        b"GET http://user@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
    ] {
        let r = exchange(addr, bytes);
        assert_eq!(r.status(), 400, "{}: {r:?}", String::from_utf8_lossy(bytes));
    }
    assert_eq!(origin.request_count(), 0, "none of them reached the origin");
    // HTTP/1.0 may leave the host out.
    let r = exchange(addr, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.status(), 200, "{r:?}");
}

#[test]
fn an_absolute_target_names_the_host_routed_on_and_received() {
    let origin = origin("A");
    let p = Pocket::start(
        &policy_for(
            origin.addr,
            "",
            r#"on_request = function(req) req:set_header("x-routed-host", req.host) end,"#,
        ),
        1,
    );
    let r = exchange(
        p.addr("web"),
        b"GET http://real.example/headers HTTP/1.1\r\nHost: other.example\r\n\r\n",
    );
    assert_eq!(r.status(), 200, "{r:?}");
    let text = r.text();
    assert!(text.contains("host: real.example\n"), "{text}");
    assert!(text.contains("x-routed-host: real.example\n"), "{text}");
    assert!(!text.contains("other.example"), "{text}");
}

#[tokio::test]
async fn an_h2_host_that_differs_from_the_authority_is_a_400() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let origin = origin("A");
    let (_p, addr) = pocket_for(origin.addr);
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("http://a.example/")
        .header("host", "b.example")
        .version(http::Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let _ = resp.into_body().collect().await;
    assert_eq!(h2_get(addr, "a.example", "/").await.status, 200);
    // The same host written another way is not a mismatch.
    for (authority, host) in [("a.example:80", "a.example"), ("a.example.", "A.example")] {
        let req = http::Request::builder()
            .uri(format!("http://{authority}/"))
            .header("host", host)
            .version(http::Version::HTTP_2)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{authority} / {host}");
        let _ = resp.into_body().collect().await;
    }
}

// ---------------------------------------------------------------------------
// 6. A header on several lines is one list
// ---------------------------------------------------------------------------

#[test]
fn x_forwarded_for_on_two_lines_is_one_list() {
    let origin = origin("A");
    let p = Pocket::start(
        &policy_for(
            origin.addr,
            "",
            r#"on_request = function(req) req:set_header("x-seen", req:header("x-forwarded-for")) end,"#,
        ),
        1,
    );
    let r = exchange(
        p.addr("web"),
        b"GET /headers HTTP/1.1\r\nHost: test\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 198.51.100.2\r\n\r\n",
    );
    let text = r.text();
    assert!(
        text.contains("x-forwarded-for: 192.0.2.1, 198.51.100.2, 127.0.0.1\n"),
        "{text}"
    );
    assert!(text.contains("x-seen: 192.0.2.1, 198.51.100.2\n"), "{text}");
}

// ---------------------------------------------------------------------------
// 7. One client address
// ---------------------------------------------------------------------------

#[test]
fn an_ipv4_client_on_an_ipv6_listener_is_seen_as_ipv4() {
    let origin = origin("A");
    let p = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{
    {{ name = "web", bind = "[::]:0", pool = "app" }},
    {{ name = "guarded", bind = "[::]:0", pool = "app" }},
  }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
  on_connect = function(conn)
    -- A blocklist written as the docs write it, with IPv4 text.
    if conn.listener == "guarded" and conn.peer_ip == "127.0.0.1" then
      return pocket.reject("blocked " .. conn.peer_ip)
    end
  end,
  on_request = function(req) return pocket.respond(200, req.peer_ip) end,
}}"#,
            origin.addr
        ),
        1,
    );
    let port = p.addr("web").port();
    let r = get(SocketAddr::from(([127, 0, 0, 1], port)), "/");
    assert_eq!(r.text(), "127.0.0.1");
    let guarded = SocketAddr::from(([127, 0, 0, 1], p.addr("guarded").port()));
    let mut c = Client::connect(guarded);
    let _ = c.stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    assert!(
        c.response(false).is_none(),
        "a blocked client got an answer"
    );
    p.log
        .wait_for(&["connection rejected: blocked 127.0.0.1", "peer=127.0.0.1:"]);
}

// ---------------------------------------------------------------------------
// More of the same kinds (found by trying variants of the inputs above)
// ---------------------------------------------------------------------------

#[test]
fn a_refused_request_ends_its_connection() {
    // What follows a request Pocket will not frame must not be read as the
    // next request: that is the smuggling the refusal is about.
    let origin = origin("A");
    let (_p, addr) = pocket_for(origin.addr);
    for first in [
        &b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nHost: y\r\nContent-Length: 0\r\n\r\n",
    ] {
        let mut c = Client::connect(addr);
        c.send(first);
        c.send(b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.response(false).expect("an answer");
        assert_eq!(r.status(), 400, "{r:?}");
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed(), "the connection stayed open");
    }
    assert_eq!(origin.request_count(), 0, "nothing reached the origin");
}

#[test]
fn a_request_transfer_coding_other_than_chunked_is_a_501() {
    let origin = origin("A");
    let (_p, addr) = pocket_for(origin.addr);
    for te in [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: identity, chunked\r\n",
    ] {
        let r = exchange(
            addr,
            format!("POST /a HTTP/1.1\r\nHost: x\r\n{te}\r\n5\r\nhello\r\n0\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status(), 501, "{te}: {r:?}");
    }
    assert_eq!(origin.request_count(), 0);
}

#[test]
fn a_host_with_a_trailing_dot_is_the_same_host() {
    let origin = origin("A");
    let p = Pocket::start(
        &policy_for(
            origin.addr,
            "",
            r#"on_request = (function()
    local routes = require("pocket.match").routes {
      { host = "admin.example.com", respond = { 403, "no\n" } },
      default = "app",
    }
    return function(req) return routes:route(req) end
  end)(),"#,
        ),
        1,
    );
    let addr = p.addr("web");
    for bytes in [
        &b"GET /headers HTTP/1.1\r\nHost: admin.example.com.\r\n\r\n"[..],
        b"GET /headers HTTP/1.1\r\nHost: ADMIN.example.com.:80\r\n\r\n",
        b"GET http://admin.example.com./headers HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let r = exchange(addr, bytes);
        assert_eq!(r.status(), 403, "{}: {r:?}", String::from_utf8_lossy(bytes));
    }
    let r = exchange(
        addr,
        b"GET /headers HTTP/1.1\r\nHost: www.example.com.:8080\r\n\r\n",
    );
    assert!(
        r.text().contains("host: www.example.com:8080\n"),
        "{}",
        r.text()
    );
}

#[test]
fn odd_targets_and_hosts_are_a_400() {
    let origin = origin("A");
    let (_p, addr) = pocket_for(origin.addr);
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost:\r\n\r\n"[..],
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET ftp://x/a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /admin%00/users HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let r = exchange(addr, bytes);
        assert_eq!(r.status(), 400, "{}: {r:?}", String::from_utf8_lossy(bytes));
    }
    assert_eq!(origin.request_count(), 0);
    // OPTIONS * is fine, and an absolute target with no path asks for "/".
    assert_eq!(
        exchange(addr, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").status(),
        200
    );
    let r = exchange(addr, b"GET http://x?a=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.text().contains("path /\n"), "{}", r.text());
}

#[test]
fn a_server_that_stops_reading_an_upload_gets_a_504() {
    // Reads the head, then nothing: the upload fills the buffers and stops.
    let origin = raw_origin(|_, _, _| {
        std::thread::sleep(Duration::from_secs(120));
        None
    });
    let p = Pocket::start(
        &policy_for(origin.addr, r#", timeouts = { idle = "2s" }"#, ""),
        1,
    );
    let mut c = Client::connect(p.addr("web"));
    c.send(b"POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n");
    // Longer than the idle timeout: a write that blocks this long means the
    // buffers are full, not that a busy machine was slow to drain them.
    c.stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let chunk = vec![b'x'; 65536];
    // Until the buffers are full (bounded: 50 MB at most).
    for _ in 0..760 {
        if c.stream.write_all(&chunk).is_err() {
            break;
        }
    }
    let r = c.response(false).expect("an answer");
    assert_eq!(r.status(), 504, "{r:?}");
    assert!(
        r.text().contains("took none of the request body"),
        "{}",
        r.text()
    );
}

#[test]
fn an_answer_cut_short_is_not_replayed() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    // The second request on each connection gets half a head, then a close.
    let origin = raw_origin(move |_, request, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        Some(if request == 0 {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_vec()
        })
    });
    let (_p, addr) = pocket_for(origin.addr);
    assert_eq!(get(addr, "/").status(), 200);
    // On the reused connection: half a head, then the close.
    let r = get(addr, "/");
    assert_eq!(r.status(), 502, "{r:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 2, "the GET was sent twice");
}

#[test]
fn a_response_head_larger_than_64_kib_is_a_502() {
    let origin = raw_origin(|_, _, _| {
        let big = "a".repeat(100 * 1024);
        Some(format!("HTTP/1.1 200 OK\r\nX-Big: {big}\r\nContent-Length: 2\r\n\r\nok").into_bytes())
    });
    let (_p, addr) = pocket_for(origin.addr);
    let r = get(addr, "/");
    assert_eq!(r.status(), 502, "{}", r.status_line);
}

#[test]
fn scripts_cannot_make_a_body_or_a_host_wrong() {
    let origin = origin("A");
    let p = Pocket::start(
        &policy_for(
            origin.addr,
            "",
            r#"on_request = function(req)
    if req.path == "/two-hosts" then req:add_header("Host", "evil.example") end
    if req.path == "/bad-host" then req:set_header("Host", "a b/c") end
    if req.path == "/head" then req:set_method("HEAD") end
    if req.path == "/connect" then req:set_method("CONNECT") end
  end,
  on_response = function(req, res)
    if req.path == "/no-content" then res:set_status(204) end
    if req.path == "/reset" then res:set_status(205) end
    if req.path == "/999" then res:set_status(999) end
  end,"#,
        ),
        1,
    );
    let addr = p.addr("web");
    for path in ["/two-hosts", "/bad-host", "/head", "/connect", "/999"] {
        let mut c = Client::connect(addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        assert_eq!(c.response(false).unwrap().status(), 500, "{path}");
        c.send(b"GET /next HTTP/1.1\r\nHost: test\r\n\r\n");
        assert!(
            c.response(false).unwrap().text().contains("path /next"),
            "{path}"
        );
    }
    for (path, status) in [("/no-content", 204), ("/reset", 205)] {
        let mut c = Client::connect(addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        let r = c.response(false).unwrap();
        assert_eq!(r.status(), status);
        assert_eq!(r.header("content-length").unwrap_or("0"), "0", "{r:?}");
        c.send(b"GET /next HTTP/1.1\r\nHost: test\r\n\r\n");
        let r = c.response(false).unwrap();
        assert!(r.text().contains("path /next"), "{path}: {r:?}");
    }
    let err = refused_by_check(
        "local gone = pocket.respond(205, \"a body\")\nreturn { listeners = {}, pools = {} }\n",
    );
    assert!(err.contains("p.lua:1:") && err.contains("205"), "{err}");
}
