//! Pocket's own HTTP/1 path (server/h1.rs, proxy/h1/) as a client sees
//! it: one connection moves between it and hyper request by request (a
//! body goes to hyper, the next GET comes back), and a server's body that
//! ends at its close reaches the client chunked, the client's connection
//! kept, as hyper's server frames such a body.

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
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
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

/// A keep-alive server: `/304` answers 304 (with the length of what a
/// 200 would have), `/204` answers 204, `/c` a chunked "hello", anything
/// else a 200 "hello" with its length.
fn bodyless_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match c.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end + 4);
                    let answer: &[u8] = if head.contains(" /304") {
                        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\n"
                    } else if head.contains(" /204") {
                        b"HTTP/1.1 204 No Content\r\n\r\n"
                    } else if head.contains(" /c") {
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                    };
                    if c.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A status set by `on_response` decides whether a body follows (RFC 9112
/// §6.3): a 200 turned into 304 sends no body (its bytes would be read as
/// the next response), and a 204/304 turned into 200 says
/// `content-length: 0` (else a client reads to the close), as the hyper
/// path does.
#[tokio::test]
async fn a_status_set_by_on_response_frames_the_body_the_client_reads() {
    let server = bodyless_origin();
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{server}" }} }} }},
  on_response = function(req, res)
    if req.path == "/a304" or req.path == "/c304" then res:set_status(304)
    elseif req.path == "/304" or req.path == "/204" then res:set_status(200) end
  end,
}}"#
    );
    let pocket = Pocket::start(&policy, 1);
    let mut s = tokio::net::TcpStream::connect(pocket.addr("web"))
        .await
        .unwrap();
    let mut buf = Vec::new();
    for path in ["/a304", "/c304"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
        // A 304's head only: whatever follows it is the next response.
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
                .await
                .expect("a head within the deadline")
                .unwrap();
            assert!(n > 0, "closed before a head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        assert!(head.starts_with("http/1.1 304"), "{head}");
        buf.drain(..end + 4);
        s.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = response(&mut s, &mut buf).await;
        assert!(
            head.starts_with("http/1.1 200"),
            "after the 304 for {path}, the next response reads: {head:?}"
        );
        assert_eq!(body, b"hello");
    }
    for path in ["/304", "/204"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (head, body) = response(&mut s, &mut buf).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(
            head.contains("content-length: 0"),
            "a 200 made of a {path} must say its empty length: {head}"
        );
        assert!(body.is_empty());
    }
}

/// A drain that begins while a request waits for its server: the response
/// says `connection: close` and the connection ends after it, as hyper's
/// graceful shutdown does (else a client may send its next request on a
/// connection about to close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_begun_during_a_request_closes_its_connection_and_says_so() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = l.local_addr().unwrap();
    let (asked_tx, asked) = std::sync::mpsc::channel::<()>();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok((mut c, _)) = l.accept() else { return };
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match c.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&b[..n]),
            }
        }
        let _ = asked_tx.send(());
        let _ = go_rx.recv_timeout(DEADLINE);
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        std::thread::sleep(Duration::from_secs(2));
    });
    let mut pocket = Pocket::start_logging(&policy(server), 1, "info,pocket=debug");
    let mut s = tokio::net::TcpStream::connect(pocket.addr("web"))
        .await
        .unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::task::block_in_place(|| asked.recv_timeout(DEADLINE))
        .expect("the request reached the server");
    unsafe { libc::kill(pocket.pid() as i32, libc::SIGTERM) };
    pocket.log.wait_for(&["worker draining"]);
    go.send(()).unwrap();
    let mut buf = Vec::new();
    let (head, body) = response(&mut s, &mut buf).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, b"ok");
    let mut rest = [0u8; 16];
    let n = tokio::time::timeout(DEADLINE, s.read(&mut rest))
        .await
        .expect("closed within the deadline")
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection ends after the response");
    assert_eq!(pocket.child.wait().unwrap().code(), Some(0));
}
