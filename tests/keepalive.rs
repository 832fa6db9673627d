//! Client keep-alive connections: an idle one gives its buffers back
//! (parks) and still serves its next request, pipelined or not; the
//! listener's keep-alive timeout closes it; draining closes parked ones at
//! once instead of waiting out the grace period.

mod common;
use common::*;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn policy(a: &OriginHandle, listener_extra: &str) -> String {
    format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app"{listener_extra} }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
}}"#,
        a.addr
    )
}

/// A client connection spoken to in raw bytes.
struct Raw {
    s: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr) -> Raw {
        Raw {
            s: tokio::net::TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// Reads one response (Content-Length framed) and asserts it is a 200.
    async fn expect_200(&mut self) {
        let head = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    self.buf.drain(..end + 4 + len);
                    break head;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(DEADLINE, self.s.read(&mut chunk))
                .await
                .expect("response within the deadline")
                .unwrap();
            assert!(n > 0, "connection closed before a whole response");
            self.buf.extend_from_slice(&chunk[..n]);
        };
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    /// Waits for Pocket to close the connection; asserts nothing else came.
    async fn expect_close(&mut self) {
        let mut rest = Vec::new();
        let n = tokio::time::timeout(DEADLINE, self.s.read_to_end(&mut rest))
            .await
            .expect("pocket closes the connection")
            .unwrap_or(0);
        assert_eq!(n, 0, "nothing but the close");
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

#[tokio::test]
async fn an_idle_connection_parks_and_serves_its_next_requests() {
    let a = origin("A");
    let pocket = Pocket::start_logging(&policy(&a, ""), 1, "info,pocket=debug");
    let mut c = Raw::connect(pocket.addr("web")).await;
    c.send(GET).await;
    c.expect_200().await;
    pocket.log.wait_for(&["client connection parked"]);

    // The same socket, after parking: two pipelined requests in one write,
    // then a head sent in two pieces.
    c.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    c.expect_200().await;
    c.expect_200().await;
    c.send(b"GET /c HTTP/1.1\r\nHo").await;
    // Two writes, two segments (the test holds either way).
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(b"st: t\r\n\r\n").await;
    c.expect_200().await;
    assert_eq!(a.request_count(), 4);
}

#[tokio::test]
async fn the_keepalive_timeout_closes_an_idle_connection() {
    let a = origin("A");
    let pocket = Pocket::start(&policy(&a, r#", keepalive = "1s""#), 1);
    let mut c = Raw::connect(pocket.addr("web")).await;
    // Taken before the request: Pocket's idle clock starts after it sent
    // the answer, which a busy client may read late.
    let idle_from = Instant::now();
    c.send(GET).await;
    c.expect_200().await;
    c.expect_close().await;
    assert!(
        idle_from.elapsed() >= Duration::from_millis(900),
        "closed after the keep-alive timeout, not before ({:?})",
        idle_from.elapsed()
    );
}

#[tokio::test]
async fn a_bad_keepalive_is_refused_with_its_line() {
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "p.lua", &policy(&a, r#", keepalive = "soon""#));
    let (code, _out, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("p.lua:2:") && err.contains("keepalive"),
        "{err}"
    );
}

#[tokio::test]
async fn draining_closes_parked_connections_at_once() {
    let a = origin("A");
    let mut pocket = Pocket::start_logging(&policy(&a, ""), 1, "info,pocket=debug");
    let mut c = Raw::connect(pocket.addr("web")).await;
    c.send(GET).await;
    c.expect_200().await;
    pocket.log.wait_for(&["client connection parked"]);
    let t0 = Instant::now();
    unsafe { libc::kill(pocket.pid() as i32, libc::SIGTERM) };
    pocket.log.wait_for(&["stopped"]);
    // The default grace is 30 s: a parked connection must not hold it up.
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert_eq!(pocket.child.wait().unwrap().code(), Some(0));
    c.expect_close().await;
}

/// A new connection that has sent nothing yet is closed by a drain too
/// (it has no request to finish), not held until the grace ends.
#[tokio::test]
async fn draining_closes_a_new_connection_that_sent_nothing() {
    let a = origin("A");
    let mut pocket = Pocket::start_logging(&policy(&a, ""), 1, "info,pocket=debug");
    let mut silent = Raw::connect(pocket.addr("web")).await;
    // A request on another connection: the first one has been accepted
    // by then (one worker, accepted in order).
    let mut c = Raw::connect(pocket.addr("web")).await;
    c.send(GET).await;
    c.expect_200().await;
    let t0 = Instant::now();
    unsafe { libc::kill(pocket.pid() as i32, libc::SIGTERM) };
    pocket.log.wait_for(&["stopped"]);
    // The default grace is 30 s.
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert_eq!(pocket.child.wait().unwrap().code(), Some(0));
    silent.expect_close().await;
    c.expect_close().await;
}

/// Clients that pause around the parking delay park and wake again and
/// again, including as a request arrives just when Pocket decides to park:
/// every request is answered, on the connection it was sent on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_park_and_wake_under_load_lose_nothing() {
    let a = origin("A");
    let pocket = Pocket::start_logging(&policy(&a, ""), 2, "info,pocket=debug");
    let addr = pocket.addr("web");
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..24u64 {
        clients.spawn(async move {
            let mut c = H1::connect(addr).await;
            let mut answered = 0;
            for j in 0..6u64 {
                // Pauses from 0.35 to 0.65 s: on both sides of PARK_AFTER.
                let pause = 350 + (i * 37 + j * 71) % 300;
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let r = c
                    .send(request("GET", &format!("/c{i}/r{j}"), &[], ""))
                    .await
                    .unwrap_or_else(|e| panic!("client {i} request {j}: {e}"));
                assert_eq!(r.status, 200, "client {i} request {j}");
                answered += 1;
            }
            answered
        });
    }
    let mut total = 0;
    while let Some(done) = clients.join_next().await {
        total += done.expect("client task");
    }
    assert_eq!(total, 24 * 6);
    assert_eq!(a.request_count(), 24 * 6);
    let parked = pocket
        .log
        .lines()
        .iter()
        .filter(|l| l.contains("client connection parked"))
        .count();
    assert!(parked > 0, "some connections parked");
}
