//! Pocket's own HTTP/1 path (server/h1.rs, proxy/h1/) as a client sees
//! it: one connection moves between it and hyper request by request (a
//! body goes to hyper, the next GET comes back), and a server's body that
//! ends at its close reaches the client chunked, the client's connection
//! kept, as hyper's server frames such a body. And what the review of
//! issue 18 found: a HEAD made a GET by on_request, statuses set by
//! on_response, compared byte for byte with the hyper path.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn policy(server: SocketAddr) -> String {
    format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{server}" }} }} }},
}}"#
    )
}

/// Reads one response from `s` (Content-Length or chunked), with what
/// was read past it kept in `buf`: its head and its body.
async fn response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    async fn fill(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("bytes within the deadline")
            .unwrap();
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        fill(s, buf).await;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    buf.drain(..end + 4);
    let mut body = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        loop {
            let line = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                fill(s, buf).await;
            };
            let size = usize::from_str_radix(String::from_utf8_lossy(&buf[..line]).trim(), 16)
                .expect("chunk size");
            buf.drain(..line + 2);
            while buf.len() < size + 2 {
                fill(s, buf).await;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                return (head, body);
            }
        }
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < len {
        fill(s, buf).await;
    }
    body.extend(buf.drain(..len));
    (head, body)
}

#[tokio::test]
async fn one_connection_goes_between_the_direct_path_and_hyper() {
    let a = origin("A");
    let pocket = Pocket::start(&policy(a.addr), 1);
    let mut s = tokio::net::TcpStream::connect(pocket.addr("web"))
        .await
        .unwrap();
    let mut buf = Vec::new();
    // A GET (direct), a POST with a body (hyper's), a GET pipelined right
    // behind it (read by hyper with the POST, or direct again), a GET.
    s.write_all(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = response(&mut s, &mut buf).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("path /one"),
        "{body:?}"
    );
    s.write_all(
        b"POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /three HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await
    .unwrap();
    let (head, body) = response(&mut s, &mut buf).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains('5'),
        "the body went: {body:?}"
    );
    let (head, body) = response(&mut s, &mut buf).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("path /three"),
        "{body:?}"
    );
    // After hyper has let go of the connection (it parks when quiet).
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.write_all(b"GET /four HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = response(&mut s, &mut buf).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("path /four"),
        "{body:?}"
    );
    assert_eq!(a.request_count(), 4);
}

/// A server that answers each request with a body ended by its close.
fn closing_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                if read_request_head(&mut c).is_none() {
                    return;
                }
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                let _ = c.write_all(b"until ");
                let _ = c.flush();
                std::thread::sleep(Duration::from_millis(20));
                let _ = c.write_all(b"the close");
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_body_that_ends_at_the_close_reaches_the_client_chunked_on_a_kept_connection() {
    let pocket = Pocket::start(&policy(closing_origin()), 1);
    let mut s = tokio::net::TcpStream::connect(pocket.addr("web"))
        .await
        .unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = response(&mut s, &mut buf).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        assert_eq!(body, b"until the close");
    }
}

/// The same policy on the direct path, and kept on hyper's (an unused
/// `protocol = "h2"` pool: the gate hands the whole policy to hyper).
fn policies(server: SocketAddr, hooks: &str) -> [String; 2] {
    let one = |extra: &str| {
        format!(
            r#"{hooks}
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{server}" }} }}{extra} }},
  on_request = on_request, on_response = on_response,
}}"#
        )
    };
    [
        one(""),
        one(r#", unused = { servers = { "127.0.0.1:9" }, protocol = "h2" }"#),
    ]
}

/// What a server writes for one request: pieces, each after its pause.
type Pieces = Vec<(Duration, Vec<u8>)>;

/// A server that answers each request (one connection may carry many)
/// with what `answer(method, path)` gives: pieces written one after the
/// other, each after its pause.
fn raw_origin(answer: fn(&str, &str) -> Pieces) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).to_string();
                        pending.drain(..end + 4);
                        let mut line = head.split(' ');
                        let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                        for (pause, bytes) in answer(method, path) {
                            std::thread::sleep(pause);
                            if c.write_all(&bytes).is_err() {
                                return;
                            }
                        }
                    }
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&b[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// Sends `request` and a `GET /end` behind it on one connection and reads every
/// byte up to the end's answer (`the end`), date lines taken out: what
/// a client sees, byte for byte (names in lower case), whatever framing the first answer had.
async fn exchange(pocket: &Pocket, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(pocket.addr("web"))
        .await
        .unwrap();
    let mut both = request.to_vec();
    both.extend_from_slice(b"GET /end HTTP/1.1\r\nHost: t\r\n\r\n");
    s.write_all(&both).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(b"the end") {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("bytes within the deadline")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    // Field names in either case (the direct path relays the server's).
    String::from_utf8_lossy(&got)
        .to_lowercase()
        .split("\r\n")
        .filter(|l| !l.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// For a method-changing origin: a GET's body comes a moment after its
/// head, and is itself an HTTP response (what a next client would read
/// if the connection were lent with it unread).
fn late_body_origin(method: &str, path: &str) -> Pieces {
    let forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged".to_vec();
    match (method, path) {
        (_, "/end") => vec![(
            Duration::ZERO,
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nthe end".to_vec(),
        )],
        ("GET", "/file") => vec![
            (
                Duration::ZERO,
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    forged.len()
                )
                .into_bytes(),
            ),
            (Duration::from_millis(300), forged),
        ],
        ("GET", "/chunked") => vec![
            (
                Duration::ZERO,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            ),
            (
                Duration::from_millis(300),
                b"5\r\nfirst\r\n0\r\n\r\n".to_vec(),
            ),
        ],
        ("HEAD", _) => vec![(
            Duration::ZERO,
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n".to_vec(),
        )],
        _ => vec![(
            Duration::ZERO,
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal".to_vec(),
        )],
    }
}

/// Review 18 F0: a HEAD that on_request makes a GET is answered as a
/// HEAD is (the head, no body), as on the hyper path, and the server's
/// body, unread, never reaches another client (the connection goes).
#[tokio::test]
async fn a_head_made_a_get_gets_a_heads_answer_and_its_body_reaches_no_other_client() {
    let origin = raw_origin(late_body_origin);
    let hooks = r#"local function on_request(req)
  if req.method == "HEAD" then req:set_method("GET") end
end
local on_response = nil"#;
    let [direct, hyper] = policies(origin, hooks);
    let (direct, hyper) = (Pocket::start(&direct, 1), Pocket::start(&hyper, 1));
    for path in ["/file", "/chunked"] {
        let req = format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        let want = exchange(&hyper, req.as_bytes()).await;
        assert!(!want.contains("forged"), "{want}");
        assert_eq!(exchange(&direct, req.as_bytes()).await, want, "{path}");
        // Another client, after the server's body came: its own answer.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for pocket in [&direct, &hyper] {
            let got = exchange(pocket, b"GET /innocent HTTP/1.1\r\nHost: t\r\n\r\n").await;
            assert!(
                got.contains("real") && !got.contains("forged") && !got.contains("first"),
                "{got}"
            );
        }
    }
}

/// For status edits: each path's last part says what the server sends.
fn status_origin(method: &str, path: &str) -> Pieces {
    let head_only = method == "HEAD";
    let answer = |head: &str, body: &str| {
        let body = if head_only { "" } else { body };
        vec![(Duration::ZERO, format!("{head}\r\n\r\n{body}").into_bytes())]
    };
    match path.rsplit('/').next().unwrap_or("") {
        "end" => answer("HTTP/1.1 200 OK\r\nContent-Length: 7", "the end"),
        "body" => answer("HTTP/1.1 200 OK\r\nContent-Length: 5", "hello"),
        "chunked" => answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        "empty" => answer("HTTP/1.1 200 OK\r\nContent-Length: 0", ""),
        "304" => answer("HTTP/1.1 304 Not Modified\r\nETag: \"x\"", ""),
        "304cl" => answer("HTTP/1.1 304 Not Modified\r\nContent-Length: 5", ""),
        "204" => answer("HTTP/1.1 204 No Content", ""),
        _ => answer("HTTP/1.1 404 Not Found\r\nContent-Length: 0", ""),
    }
}

/// Review 18 F1: a status on_response sets is framed as hyper's server
/// frames it (no body on 204/304, nor a length on 204; `content-length:
/// 0` where the new status has a body the server did not send; the
/// server's body dropped with its connection), byte for byte as on the
/// hyper path, the client's connection kept in step.
#[tokio::test]
async fn a_status_set_by_on_response_is_framed_as_on_the_hyper_path() {
    let origin = raw_origin(status_origin);
    let hooks = r#"local on_request = nil
local function on_response(req, res)
  local to = req.path:match("^/as(%d+)/")
  if to then res:set_status(tonumber(to)) end
end"#;
    let [direct, hyper] = policies(origin, hooks);
    let (direct, hyper) = (Pocket::start(&direct, 1), Pocket::start(&hyper, 1));
    for to in ["200", "204", "205", "304", "404"] {
        for from in ["body", "chunked", "empty", "304", "304cl", "204"] {
            for method in ["GET", "HEAD"] {
                let req = format!("{method} /as{to}/{from} HTTP/1.1\r\nHost: t\r\n\r\n");
                let want = exchange(&hyper, req.as_bytes()).await;
                let got = exchange(&direct, req.as_bytes()).await;
                assert_eq!(got, want, "{method} {from} made {to}");
            }
        }
    }
}

fn slow_origin(_: &str, path: &str) -> Pieces {
    let pause = if path == "/slow" {
        Duration::from_millis(1500)
    } else {
        Duration::ZERO
    };
    vec![(
        pause,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
    )]
}

/// Review 18 F2: a drain that starts while a request is served puts
/// `connection: close` on its response (as hyper's graceful shutdown),
/// the same bytes as on the hyper path.
#[tokio::test]
async fn a_drain_that_starts_mid_request_closes_after_its_response_saying_so() {
    let origin = raw_origin(slow_origin);
    let [direct, hyper] = policies(origin, "local on_request, on_response = nil, nil");
    let mut got = Vec::new();
    for policy in [direct, hyper] {
        let pocket = Pocket::start(&policy, 1);
        let mut s = tokio::net::TcpStream::connect(pocket.addr("web"))
            .await
            .unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        // While the server takes its time (before or after Pocket read the
        // head, the answer must say close).
        tokio::time::sleep(Duration::from_millis(300)).await;
        unsafe { libc::kill(pocket.pid() as i32, libc::SIGTERM) };
        let mut all = Vec::new();
        tokio::time::timeout(DEADLINE, s.read_to_end(&mut all))
            .await
            .expect("closed within the deadline")
            .unwrap();
        let all = String::from_utf8_lossy(&all).to_lowercase();
        assert!(all.starts_with("http/1.1 200"), "{all}");
        assert!(all.contains("\r\nconnection: close\r\n"), "{all}");
        assert!(all.ends_with("\r\n\r\nok"), "{all}");
        // The same lines (their order differs: the direct path writes
        // `connection: close` before the relayed length, hyper after).
        let mut lines: Vec<String> = all
            .split("\r\n")
            .filter(|l| !l.starts_with("date: "))
            .map(String::from)
            .collect();
        lines.sort();
        got.push(lines);
        pocket.log.wait_for(&["stopped"]);
    }
    assert_eq!(got[0], got[1]);
}

/// Review 18 F2: a kept-alive connection whose next head is begun but
/// not whole closes once the drain starts (as hyper closes a kept-alive
/// connection not mid-request), rather than hold the drain until its
/// head timeout or the grace period.
#[tokio::test]
async fn a_partial_head_on_a_kept_connection_does_not_hold_the_drain() {
    let origin = raw_origin(slow_origin);
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app",
                  timeouts = {{ head = "120s" }} }} }},
  pools = {{ app = {{ servers = {{ "{origin}" }} }} }},
}}"#
    );
    let pocket = Pocket::start(&policy, 1);
    let mut s = tokio::net::TcpStream::connect(pocket.addr("web"))
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = response(&mut s, &mut buf).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"ok");
    s.write_all(b"GET /next HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    unsafe { libc::kill(pocket.pid() as i32, libc::SIGTERM) };
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest))
        .await
        .expect("closed within the deadline")
        .ok();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    pocket.log.wait_for(&["stopped"]);
    let log = pocket.log.text();
    assert!(!log.contains("grace period"), "{log}");
}
