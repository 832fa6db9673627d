//! No client can make Pocket's memory grow without bound (issue 12): a
//! client that stops reading pauses its server's response, h2 buffers are
//! sized by Pocket rather than by the window a peer advertises, and a
//! request head has a size limit. Each input is held for a few seconds
//! against a real Pocket; its peak RSS (VmHWM) may rise at most
//! [`BUDGET_KIB`] over the idle one.

mod common;
use common::*;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;
/// What any of these inputs may add to Pocket's peak memory.
const BUDGET_KIB: u64 = 64 * 1024;
/// How long each input is held before its clients close.
const HOLD: Duration = Duration::from_secs(8);
/// Far more than any buffer: the response never ends while it is held.
const LARGE: u64 = 1024 * MIB;

/// The pool's settings: the origin shares this process's CPU with
/// hundreds of test clients, and a slow accept must not get it ejected
/// (not what these tests are about).
const PATIENT: &str = r#"passive = false, timeouts = { connect = "30s" }"#;

fn start() -> (Pocket, OriginHandle) {
    let o = origin("O");
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "o" }} }},
  pools = {{ o = {{ servers = {{ "{}" }}, {PATIENT} }} }},
}}"#,
        o.addr
    );
    (Pocket::start(&policy, 1), o)
}

/// Pocket's peak RSS once it has served a request (KiB): the idle figure.
async fn idle_peak(pocket: &Pocket) -> u64 {
    let addr = pocket.addr("web");
    assert_eq!(get(addr, "/warm").await.status, 200);
    assert_eq!(h2_get(addr, "t", "/warm").await.status, 200);
    pocket.rss_kib().1
}

/// Holds the clients `tasks` for [`HOLD`], asserts that the peak RSS rose
/// at most [`BUDGET_KIB`] over `idle`, then ends the clients.
async fn hold_within_budget(
    pocket: &Pocket,
    idle: u64,
    what: &str,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) {
    tokio::time::sleep(HOLD).await;
    assert_within_budget(pocket, idle, what);
    for t in tasks {
        t.abort();
    }
}

/// Asserts that the peak RSS rose at most [`BUDGET_KIB`] over `idle`.
fn assert_within_budget(pocket: &Pocket, idle: u64, what: &str) {
    let (now, peak) = pocket.rss_kib();
    let over = peak.saturating_sub(idle);
    eprintln!(
        "{what}: idle peak {idle} KiB, peak {peak} KiB (+{} MiB), now {now} KiB",
        over / 1024
    );
    assert!(
        over <= BUDGET_KIB,
        "{what}: peak RSS {peak} KiB is {over} KiB over the idle {idle} KiB"
    );
}

/// A client socket with a small receive buffer, so that the kernel holds
/// little of what Pocket sends and Pocket's own buffers are what fill.
async fn small_socket(addr: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    sock.connect(addr).await.expect("connect to pocket")
}

/// Pocket still serves after the input is gone.
async fn still_serves(addr: SocketAddr) {
    let r = get(addr, "/bytes/1048576").await;
    assert_eq!(
        r.status,
        200,
        "{}",
        String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
    );
    assert_eq!(r.body.len() as u64, MIB);
}

/// Polls an h2 connection only while `reading` is set: a client that
/// stops reading its socket, yet keeps it open.
struct Gated<F> {
    conn: F,
    reading: Arc<AtomicBool>,
}

impl<F: std::future::Future + Unpin> std::future::Future for Gated<F> {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if !self.reading.load(Ordering::Relaxed) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.conn).poll(cx).map(|_| ())
    }
}

/// One h2c connection that opens the largest windows HTTP/2 allows, asks
/// for `streams` endless downloads and then never reads again. Returns
/// how many streams Pocket took, and the connection (closed on drop).
async fn h2_greedy(addr: SocketAddr, streams: usize) -> (usize, tokio::task::JoinHandle<()>) {
    let tcp = small_socket(addr).await;
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(i32::MAX as u32)
        .initial_connection_window_size(i32::MAX as u32)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2 handshake");
    let reading = Arc::new(AtomicBool::new(true));
    let task = tokio::spawn(Gated {
        conn: Box::pin(conn),
        reading: reading.clone(),
    });
    let mut sent = 0;
    let mut responses = Vec::new();
    for i in 0..streams {
        let req = http::Request::builder()
            .uri(format!("http://t/bytes/{LARGE}?s={i}"))
            .body(())
            .unwrap();
        // Pocket's stream limit: no more are taken until one ends.
        let Ok(Ok(mut c)) =
            tokio::time::timeout(Duration::from_secs(2), client.clone().ready()).await
        else {
            break;
        };
        let (resp, _) = c.send_request(req, true).expect("send");
        responses.push(resp);
        sent += 1;
    }
    // The heads go out and the first answers come; then silence.
    for resp in responses.iter_mut().take(1) {
        let _ = tokio::time::timeout(Duration::from_secs(10), resp).await;
    }
    reading.store(false, Ordering::Relaxed);
    std::mem::forget(responses);
    (sent, task)
}

#[tokio::test]
async fn h2_client_with_huge_windows_that_never_reads() {
    let (pocket, _o) = start();
    let addr = pocket.addr("web");
    let idle = idle_peak(&pocket).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let (streams, task) = h2_greedy(addr, 256).await;
        eprintln!("h2 connection: {streams} streams taken");
        assert!(streams > 0, "pocket took no stream");
        held.push(task);
    }
    hold_within_budget(
        &pocket,
        idle,
        "4 h2c connections x 256 streams, never read",
        held,
    )
    .await;
    still_serves(addr).await;
}

/// `n` HTTP/1.1 clients each ask for an endless download and read
/// `per_tick` bytes every 100 ms (0: never).
async fn h1_readers(
    addr: SocketAddr,
    n: usize,
    per_tick: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut s = small_socket(addr).await;
        let req = format!("GET /bytes/{LARGE}?c={i} HTTP/1.1\r\nHost: t\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; per_tick.max(1)];
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if per_tick > 0 && matches!(s.read(&mut buf).await, Ok(0) | Err(_)) {
                    return;
                }
            }
        }));
    }
    tasks
}

#[tokio::test]
async fn h1_clients_that_never_read_a_large_response() {
    let (pocket, _o) = start();
    let addr = pocket.addr("web");
    let idle = idle_peak(&pocket).await;
    let tasks = h1_readers(addr, 100, 0).await;
    hold_within_budget(&pocket, idle, "100 HTTP/1.1 clients that never read", tasks).await;
    still_serves(addr).await;
}

#[tokio::test]
async fn h1_slow_readers() {
    let (pocket, _o) = start();
    let addr = pocket.addr("web");
    let idle = idle_peak(&pocket).await;
    // slowhttptest -X reads 32 bytes at a time; 1 KiB every 100 ms here.
    let tasks = h1_readers(addr, 500, 1024).await;
    hold_within_budget(&pocket, idle, "500 slow HTTP/1.1 readers", tasks).await;
    still_serves(addr).await;
}

/// The start of a request whose head is `size` bytes and never ends.
fn endless_head(size: usize) -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
    while head.len() < size {
        head.extend_from_slice(b"X-Filler: ");
        head.extend(std::iter::repeat_n(b'a', 1000));
        head.extend_from_slice(b"\r\n");
    }
    head
}

#[tokio::test]
async fn unfinished_large_heads() {
    let (pocket, _o) = start();
    let addr = pocket.addr("web");
    let idle = idle_peak(&pocket).await;
    let head = Arc::new(endless_head(296 * 1024));
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let head = head.clone();
        let mut s = TcpStream::connect(addr).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            // Pocket may answer and close before it all went out.
            let _ = s.write_all(&head).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(HOLD, s.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).into_owned()
        }));
    }
    let mut refused = 0;
    for t in tasks {
        if t.await.unwrap().starts_with("HTTP/1.1 431") {
            refused += 1;
        }
    }
    assert_within_budget(&pocket, idle, "500 unfinished 296 KiB heads");
    assert!(refused > 0, "no 431 answer");
    still_serves(addr).await;
}

#[tokio::test]
async fn oversized_heads_are_refused_and_large_ones_pass() {
    let (pocket, _o) = start();
    let addr = pocket.addr("web");
    // 16 KiB of cookies, as a large real-world head has: served.
    let cookies: String = (0..16)
        .map(|i| format!("c{i}={}", "v".repeat(1000)))
        .collect::<Vec<_>>()
        .join("; ");
    let r = send(
        addr,
        request("GET", "/headers", &[("cookie", &cookies)], ""),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains(&cookies[..2000]));
    // A head over the limit: 431, and the connection closes.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nCookie: {}\r\n\r\n",
        "v".repeat(40 * 1024)
    );
    let answer = raw(addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.contains("request head"), "{answer}");
    // A request line over the limit: 414.
    let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "p".repeat(40 * 1024));
    let answer = raw(addr, long.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 414 "), "{answer}");
    // HTTP/2: the same limit on the header list (h2 answers 431 itself).
    assert_eq!(h2_with_cookie(addr, &cookies).await, 200);
    assert_eq!(h2_with_cookie(addr, &"v".repeat(40 * 1024)).await, 431);
    still_serves(addr).await;
}

/// The status of an h2c GET with this Cookie header.
async fn h2_with_cookie(addr: SocketAddr, cookie: &str) -> u16 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("http://t/headers")
        .header("cookie", cookie)
        .body(())
        .unwrap();
    let mut c = client.ready().await.expect("ready");
    let (resp, _) = c.send_request(req, true).expect("send");
    let resp = tokio::time::timeout(DEADLINE, resp)
        .await
        .expect("an answer within the deadline")
        .expect("a response head");
    resp.status().as_u16()
}

#[tokio::test]
async fn head_size_is_a_listener_setting() {
    let o = origin("O");
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "o", head_size = 65536 }} }},
  pools = {{ o = {{ servers = {{ "{}" }} }} }},
}}"#,
        o.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let addr = pocket.addr("web");
    let cookie = "v".repeat(40 * 1024);
    let r = send(addr, request("GET", "/headers", &[("cookie", &cookie)], "")).await;
    assert_eq!(r.status, 200);
    let big = format!("GET / HTTP/1.1\r\nHost: t\r\nCookie: {cookie}{cookie}\r\n\r\n");
    let answer = raw(addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(answer.contains("over the limit of 65536 bytes"), "{answer}");
    // A wrong value is a load error that names the listener.
    let dir = tempfile::tempdir().unwrap();
    let bad = policy.replace("head_size = 65536", "head_size = 100");
    let path = write_policy(dir.path(), "policy.lua", &bad);
    let (code, _, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "listener \"web\": head_size must be a whole number of bytes from 1024 to 1048576"
        ),
        "{err}"
    );
}

/// A server that accepts connections and never reads from them.
async fn silent_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

/// An endless h2 upload on `streams` streams of one connection.
async fn h2_uploads(addr: SocketAddr, streams: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let mut tasks = vec![tokio::spawn(async move {
        let _ = conn.await;
    })];
    for i in 0..streams {
        let req = http::Request::post(format!("http://t/up{i}"))
            .body(())
            .unwrap();
        let Ok(Ok(mut c)) =
            tokio::time::timeout(Duration::from_secs(2), client.clone().ready()).await
        else {
            break;
        };
        let Ok((_resp, mut body)) = c.send_request(req, false) else {
            break;
        };
        tasks.push(tokio::spawn(async move {
            let piece = Bytes::from(vec![b'u'; 16 * 1024]);
            loop {
                body.reserve_capacity(piece.len());
                match std::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                    Some(Ok(n)) if n > 0 => {
                        if body.send_data(piece.slice(..n), false).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        }));
    }
    tasks
}

/// Pocket in front of a server that takes nothing, and its idle peak.
async fn start_silent() -> (Pocket, u64, tokio::task::JoinHandle<()>) {
    let (silent, server) = silent_server().await;
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "o" }} }},
  pools = {{ o = {{ servers = {{ "{silent}" }}, retries = 0, {PATIENT} }} }},
}}"#
    );
    let pocket = Pocket::start(&policy, 1);
    // The listener's first use (no server answers, so no warm-up request).
    let _ = TcpStream::connect(pocket.addr("web")).await;
    let idle = pocket.rss_kib().1;
    (pocket, idle, server)
}

/// HTTP/1.1 uploads to a server that takes nothing: the clients are held
/// back, not buffered for.
#[tokio::test]
async fn h1_uploads_to_a_server_that_never_reads() {
    let (pocket, idle, _server) = start_silent().await;
    let addr = pocket.addr("web");
    let mut tasks = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            let head =
                format!("POST /up{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {LARGE}\r\n\r\n");
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let piece = vec![b'u'; 64 * 1024];
            while s.write_all(&piece).await.is_ok() {}
        }));
    }
    hold_within_budget(
        &pocket,
        idle,
        "100 HTTP/1.1 uploads to a server that never reads",
        tasks,
    )
    .await;
}

/// The same over h2: 4 connections with 100 uploading streams each.
#[tokio::test]
async fn h2_uploads_to_a_server_that_never_reads() {
    let (pocket, idle, _server) = start_silent().await;
    let addr = pocket.addr("web");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.extend(h2_uploads(addr, 100).await);
    }
    hold_within_budget(
        &pocket,
        idle,
        "4 x 100 h2 uploads to a server that never reads",
        tasks,
    )
    .await;
}
