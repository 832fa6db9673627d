//! Every request Pocket reads leaves exactly one access-log line and one
//! count in `pocket_requests_total`, however its client ends it: half-closed
//! right after the request (`shutdown(SHUT_WR)`, `printf | nc -N`), gone
//! while the server thinks, gone in the middle of its request body or of
//! the response body, gone while `on_request` waits on a sub-request, an
//! HTTP/2 stream reset. The seen failure: a half-closed HTTP/1.0 GET or a
//! POST with its body (requests hyper serves, not Pocket's own HTTP/1
//! path) got no line at all, because hyper dropped the request's future
//! before its first poll, where the record was opened. A client gone
//! before the answer is `CC` (before a server had the request: connecting,
//! on_request waiting, or not yet begun) or `CH` (waiting for the server's
//! head), as HAProxy logs it, with no status; `CD` once the body moves.
//!
//! One worker, so a line written after another is in the file after it.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// The access log's lines that contain `tag`.
fn lines_with(path: &Path, tag: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(tag))
        .map(str::to_string)
        .collect()
}

/// Waits (up to [`DEADLINE`]) for a line with `tag`; panics with the file.
fn wait_line(path: &Path, tag: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(l) = lines_with(path, tag).into_iter().next() {
            return l;
        }
        if start.elapsed() > DEADLINE {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            panic!("no access log line with {tag:?} in {path:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A text line's status and termination (the two words after the quoted
/// request).
fn status_and_termination(line: &str) -> (String, String) {
    let after = line.rsplit_once("\" ").map(|(_, a)| a).unwrap_or("");
    let mut words = after.split(' ');
    let status = words.next().unwrap_or("").to_string();
    let termination = words.next().unwrap_or("").to_string();
    (status, termination)
}

/// Sends `bytes`, shuts down the sending side at once (a TCP FIN, as
/// `nc -N` does), and reads what comes back until Pocket closes.
fn half_closed(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A server that reads each request head, says so on `seen`, and then
/// holds the connection, answering nothing: a request waits for its
/// response head for as long as the test likes.
fn held_origin() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (seen, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                if let Some(head) = read_request_head(&mut c) {
                    let _ = seen.send(head);
                }
                // Held until Pocket closes it.
                let mut b = [0u8; 4096];
                while matches!(c.read(&mut b), Ok(n) if n > 0) {}
            });
        }
    });
    (addr, rx)
}

/// Waits for the held origin to have a request whose head has `tag`.
async fn held_request(seen: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>, tag: &str) {
    loop {
        let head = tokio::time::timeout(DEADLINE, seen.recv())
            .await
            .unwrap_or_else(|_| panic!("the held origin never got {tag}"))
            .expect("held origin");
        if String::from_utf8_lossy(&head).contains(tag) {
            return;
        }
    }
}

/// The admin listener's address, as its log line says.
fn admin_addr(pocket: &Pocket) -> SocketAddr {
    let line = pocket.log.wait_for(&["admin listening on "]);
    let text = line.rsplit("admin listening on ").next().unwrap().trim();
    text.parse()
        .unwrap_or_else(|_| panic!("bad address in {line:?}"))
}

/// `pocket_requests_total{listener="web",class=CLASS}` as scraped now.
async fn requests_total(admin: SocketAddr, class: &str) -> u64 {
    let host = admin.to_string();
    let r = send(admin, request("GET", "/metrics", &[("host", &host)], "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let series = format!("pocket_requests_total{{listener=\"web\",class=\"{class}\"}} ");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{}", r.text()))
}

// Multi-threaded: the h2 client's connection task runs while the test
// thread waits (blocking) for log lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_a_client_leaves_gets_one_line_and_one_count() {
    let a = origin("A");
    let (held, mut seen) = held_origin();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  log = {{ access = "{}", format = "text" }},
  admin = {{ bind = "127.0.0.1:0" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }}, held = {{ servers = {{ "{held}" }} }} }},
  on_request = function(req)
    if req.path == "/ping" then return pocket.respond(200, "pong\n") end
    if req.path:find("^/held") then return "held" end
  end,
}}"#,
            file.display(),
            a.addr
        ),
        1,
    );
    let addr = pocket.addr("web");
    let admin = admin_addr(&pocket);
    let unanswered_before = requests_total(admin, "none").await;

    // (tag, bytes): each sent and half-closed at once; none is answered,
    // each gets one line, the client gone before the answer. HTTP/1.0 and bodies are hyper's; the plain
    // HTTP/1.1 GET is Pocket's own path (the same line, for comparison); a
    // fast answer (`/`) and a slow one (`/delay/300`) alike.
    let cases: Vec<(&str, String)> = vec![
        ("hc-get10-fast", "GET /?hc-get10-fast HTTP/1.0\r\nHost: x\r\n\r\n".into()),
        ("hc-get10-slow", "GET /delay/300?hc-get10-slow HTTP/1.0\r\nHost: x\r\n\r\n".into()),
        (
            "hc-post-fast",
            "POST /?hc-post-fast HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".into(),
        ),
        (
            "hc-post-slow",
            "POST /delay/300?hc-post-slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                .into(),
        ),
        (
            "hc-chunked",
            "POST /?hc-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .into(),
        ),
        (
            "hc-upgrade",
            "GET /echo?hc-upgrade HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n"
                .into(),
        ),
        ("hc-get11-slow", "GET /delay/300?hc-get11-slow HTTP/1.1\r\nHost: x\r\n\r\n".into()),
    ];
    let mut unanswered = 0;
    for (tag, bytes) in &cases {
        let out = half_closed(addr, bytes.as_bytes());
        let line = wait_line(&file, tag);
        let (status, termination) = status_and_termination(&line);
        if out.is_empty() {
            // Where Pocket was when it saw the end depends on when the FIN
            // came: mostly before it began (`CC`), at times further on.
            assert_eq!(status, "-", "{tag}: {line}");
            assert!(termination == "CC" || termination == "CH", "{tag}: {line}");
            unanswered += 1;
        } else {
            // A client held up between its write and its shutdown (a busy
            // machine) may get a fast answer first: the line says so. Never
            // a slow one: the FIN comes long before it.
            assert!(!tag.ends_with("slow"), "{tag}: answered: {out:?}");
            let sent = String::from_utf8_lossy(out.get(9..12).unwrap_or(b"?")).into_owned();
            assert_eq!(status, sent, "{tag}: {line}");
        }
    }

    // An answer Pocket has at once (the script's) still goes back on its
    // own path, which runs on_request before it looks at the client.
    let out = half_closed(addr, b"GET /ping?hc-ping11 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with(b"HTTP/1.1 200"), "{out:?}");
    let line = wait_line(&file, "hc-ping11");
    assert_eq!(status_and_termination(&line).0, "200", "{line}");
    // On hyper's path it mostly does not (hyper reads the end first and
    // gives the request up): whichever happened, the line says it.
    let out = half_closed(addr, b"GET /ping?hc-ping10 HTTP/1.0\r\nHost: x\r\n\r\n");
    let line = wait_line(&file, "hc-ping10");
    if out.is_empty() {
        assert_eq!(
            status_and_termination(&line),
            ("-".to_string(), "CC".to_string()),
            "{line}"
        );
        unanswered += 1;
    } else {
        assert!(out.starts_with(b"HTTP/1.0 200"), "{out:?}");
        assert_eq!(status_and_termination(&line).0, "200", "{line}");
    }
    // A body cut short by the FIN: hyper's 400 goes back, `CD`.
    let out = half_closed(
        addr,
        b"POST /held?hc-cut HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello",
    );
    assert!(out.starts_with(b"HTTP/1.1 400"), "{out:?}");
    let line = wait_line(&file, "hc-cut");
    assert_eq!(
        status_and_termination(&line),
        ("400".to_string(), "CD".to_string()),
        "{line}"
    );

    // Gone while the server thinks, on hyper's path (HTTP/1.0): `CH`.
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /held?gone-10 HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        held_request(&mut seen, "gone-10").await;
    }
    let line = wait_line(&file, "gone-10");
    assert_eq!(
        status_and_termination(&line),
        ("-".to_string(), "CH".to_string()),
        "{line}"
    );
    unanswered += 1;

    // Gone while its body is being sent: the body broke off, `CD`.
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST /held?gone-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhello",
        )
        .unwrap();
        held_request(&mut seen, "gone-body").await;
    }
    let line = wait_line(&file, "gone-body");
    assert_eq!(status_and_termination(&line).1, "CD", "{line}");

    // Gone in the middle of the response body, on hyper's path: `CD`,
    // with the status sent and some bytes out.
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /bytes/200000000?gone-stream HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let (mut got, mut b) = (0, vec![0u8; 65536]);
        while got < 100_000 {
            let n = s.read(&mut b).expect("bytes from pocket");
            assert!(n > 0, "pocket closed early");
            got += n;
        }
    }
    let line = wait_line(&file, "gone-stream");
    assert_eq!(
        status_and_termination(&line),
        ("200".to_string(), "CD".to_string()),
        "{line}"
    );

    // An HTTP/2 stream the client resets (RST_STREAM, CANCEL) while the
    // server thinks, the connection staying: `CH`, the stream's own line.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.expect("h2 ready");
    let req = http::Request::builder()
        .uri("http://x/held?h2-reset")
        .body(())
        .unwrap();
    let (_resp, mut stream) = client.send_request(req, true).expect("h2 send");
    held_request(&mut seen, "h2-reset").await;
    stream.send_reset(h2::Reason::CANCEL);
    let line = wait_line(&file, "h2-reset");
    assert_eq!(
        status_and_termination(&line),
        ("-".to_string(), "CH".to_string()),
        "{line}"
    );
    assert!(line.contains("HTTP/2"), "{line}");
    unanswered += 1;
    assert!(!conn.is_finished(), "the connection stays open");
    drop(client);
    conn.abort();

    // An HTTP/2 connection the client closes while a stream waits: `CH`.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.expect("h2 ready");
    let req = http::Request::builder()
        .uri("http://x/held?h2-closed")
        .body(())
        .unwrap();
    let (resp, stream) = client.send_request(req, true).expect("h2 send");
    held_request(&mut seen, "h2-closed").await;
    // Aborting the connection's task drops the socket: a close.
    conn.abort();
    let _ = conn.await;
    drop((resp, stream, client));
    let line = wait_line(&file, "h2-closed");
    assert_eq!(
        status_and_termination(&line),
        ("-".to_string(), "CH".to_string()),
        "{line}"
    );
    unanswered += 1;

    // A last request: once its line is in, every line before it is.
    assert_eq!(get(addr, "/last").await.status, 200);
    wait_line(&file, "/last");
    for tag in cases.iter().map(|(t, _)| *t).chain([
        "hc-ping11",
        "hc-ping10",
        "hc-cut",
        "gone-10",
        "gone-body",
        "h2-reset",
    ]) {
        let lines = lines_with(&file, tag);
        assert_eq!(lines.len(), 1, "{tag}: {lines:#?}");
    }
    // Counted once each: the unanswered ones as `none`.
    assert_eq!(
        requests_total(admin, "none").await - unanswered_before,
        unanswered
    );
}

/// A client that leaves while `on_request` waits on a sub-request: the
/// request was read whole and no server had it yet, so `CC`, one line,
/// on Pocket's own path (HTTP/1.1) and on hyper's (HTTP/1.0) alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_on_request_waits_gets_one_cc_line() {
    let a = origin("A");
    let (held, mut seen) = held_origin();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  log = {{ access = "{}", format = "text" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
  on_request = function(req)
    if req.path == "/wait" then
      http.get("http://{held}/sub" .. req.target, {{ timeout = 60 }})
    end
  end,
}}"#,
            file.display(),
            a.addr
        ),
        1,
    );
    let addr = pocket.addr("web");
    for (tag, version) in [("wait-11", "HTTP/1.1"), ("wait-10", "HTTP/1.0")] {
        {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET /wait?{tag} {version}\r\nHost: x\r\n\r\n").unwrap();
            held_request(&mut seen, tag).await;
        }
        let line = wait_line(&file, tag);
        assert_eq!(
            status_and_termination(&line),
            ("-".to_string(), "CC".to_string()),
            "{line}"
        );
        assert!(line.contains("pool=- server=-"), "{line}");
    }
    assert_eq!(get(addr, "/last").await.status, 200);
    wait_line(&file, "/last");
    for tag in ["wait-11", "wait-10"] {
        let lines = lines_with(&file, tag);
        assert_eq!(lines.len(), 1, "{tag}: {lines:#?}");
    }
}

/// An HTTP/2 header list over the listener's `head_size` is answered 431
/// by the h2 library itself (RFC 9113 §6.5.2), before hyper or Pocket see
/// a request: it has no line (operations.md, Limits: "Request heads").
/// The stream's 431 and the connection staying usable are what a client
/// sees; the next request on it is logged as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_header_list_over_head_size_gets_h2s_431_and_no_line() {
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  log = {{ access = "{}", format = "text" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
}}"#,
            file.display(),
            a.addr
        ),
        1,
    );
    let tcp = tokio::net::TcpStream::connect(pocket.addr("web"))
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.expect("h2 ready");
    let big = "x".repeat(40_000);
    let req = http::Request::builder()
        .uri("http://x/h2-big")
        .header("x-big", big.as_str())
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).expect("h2 send");
    let resp = tokio::time::timeout(DEADLINE, resp)
        .await
        .expect("an answer")
        .expect("h2 response");
    assert_eq!(resp.status(), 431);
    let mut client = client.ready().await.expect("h2 ready");
    let req = http::Request::builder()
        .uri("http://x/h2-after")
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).expect("h2 send");
    let resp = tokio::time::timeout(DEADLINE, resp)
        .await
        .expect("an answer")
        .expect("h2 response");
    assert_eq!(resp.status(), 200);
    wait_line(&file, "h2-after");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    drop(client);
    conn.abort();
}
