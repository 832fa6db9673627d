//! A client connection's limits, for HTTP/1 and h2 alike: the listener's
//! send timeout closes a connection whose client stopped reading, and on
//! h2 resets a stream the client gives no window; h2 connections get the
//! head and keep-alive timeouts (GOAWAY), and a WINDOW_UPDATE, PRIORITY,
//! SETTINGS, PING or unknown-frame flood closes them; pipelined heads with
//! a bare LF, after bodies or not, get a 400 in their turn without
//! reaching a server.

mod common;
use common::*;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn policy(a: &OriginHandle, listener_extra: &str) -> String {
    format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app"{listener_extra} }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
}}"#,
        a.addr
    )
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One h2 frame header and its payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The (type, payload) of each whole frame in `bytes`.
fn frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 9 {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        if bytes.len() < at + 9 + len {
            break;
        }
        out.push((bytes[at + 3], bytes[at + 9..at + 9 + len].to_vec()));
        at += 9 + len;
    }
    out
}

/// Reads until the peer closes (EOF or reset) or the deadline: what came.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let t0 = Instant::now();
    loop {
        let left = DEADLINE
            .checked_sub(t0.elapsed())
            .expect("pocket closes the connection within the deadline");
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("pocket closes the connection within the deadline"),
        }
    }
}

/// An h2c connection by hyper's client: its sender and its connection
/// task, which ends when Pocket closes the connection.
async fn h2_connect(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    (sender, tokio::spawn(conn))
}

async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    path: &str,
) -> (u16, Bytes) {
    let req = http::Request::builder()
        .uri(format!("http://t{path}"))
        .version(http::Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.expect("h2 request");
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("h2 body")
        .to_bytes();
    (status, body)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    let a = origin("A");
    let pocket = Pocket::start(&policy(&a, r#", timeouts = { send = "1s" }"#), 1);
    let addr = pocket.addr("web");
    const BIG: u64 = 1 << 30;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /bytes/{BIG} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Not a byte read until Pocket gives up on the client.
    let line = pocket
        .log
        .wait_for(&["send timeout", "client stopped reading"]);
    assert!(line.contains("127.0.0.1"), "logged with the peer: {line}");
    let got = read_until_closed(&mut s).await;
    assert!(
        (got.len() as u64) < BIG,
        "closed before the whole body ({} bytes)",
        got.len()
    );
    // Other clients are served as ever.
    assert_eq!(get(addr, "/").await.status, 200);
}

/// On h2 the same, once the client's flow-control windows let Pocket
/// write more than the socket takes. (A client that keeps its windows shut
/// blocks no write: h2 just waits; that is flow control, not this.)
#[tokio::test]
async fn the_send_timeout_applies_to_h2_too() {
    let a = origin("A");
    let pocket = Pocket::start(&policy(&a, r#", timeouts = { send = "1s" }"#), 1);
    let addr = pocket.addr("web");
    let mut s = TcpStream::connect(addr).await.unwrap();
    const MAX_WINDOW: u32 = (1 << 31) - 1;
    // SETTINGS_INITIAL_WINDOW_SIZE: the largest; the connection's window
    // opened as far; then GET /bytes/1 GiB (HPACK: :method GET, :scheme
    // http, :path literal, :authority literal).
    let settings = [&[0u8, 4][..], &MAX_WINDOW.to_be_bytes()].concat();
    let path = b"/bytes/1073741824";
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x01, 1, b't']);
    let hello = [
        PREFACE,
        &frame(0x4, 0, 0, &settings),
        &frame(0x8, 0, 0, &(MAX_WINDOW - 65_535).to_be_bytes()),
        &frame(0x1, 0x5, 1, &block),
    ]
    .concat();
    s.write_all(&hello).await.unwrap();
    // Not a byte read until Pocket gives up on the client.
    pocket
        .log
        .wait_for(&["send timeout", "client stopped reading"]);
    let got = read_until_closed(&mut s).await;
    assert!(got.len() < 1 << 30, "closed before the whole body");
    assert_eq!(h2_get(addr, "t", "/").await.status, 200);
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_after_the_keepalive() {
    let a = origin("A");
    let pocket =
        Pocket::start_logging(&policy(&a, r#", keepalive = "2s""#), 1, "info,pocket=debug");
    let (mut sender, conn) = h2_connect(pocket.addr("web")).await;
    // Taken before the request: Pocket's idle clock starts after it sent
    // the answer, which a busy client may read late.
    let idle_from = Instant::now();
    assert_eq!(h2_send(&mut sender, "/").await.0, 200);
    let ended = tokio::time::timeout(DEADLINE, conn).await;
    assert!(ended.is_ok(), "pocket closes the idle h2 connection");
    assert!(
        idle_from.elapsed() >= Duration::from_millis(1800),
        "closed after the keep-alive timeout, not before ({:?})",
        idle_from.elapsed()
    );
    pocket.log.wait_for(&["h2 keep-alive timeout", "GOAWAY"]);
}

#[tokio::test]
async fn a_slow_h2_response_outlives_the_keepalive() {
    let a = origin("A");
    let pocket =
        Pocket::start_logging(&policy(&a, r#", keepalive = "1s""#), 1, "info,pocket=debug");
    let (mut sender, _conn) = h2_connect(pocket.addr("web")).await;
    // In flight for 3 s, three keep-alive timeouts: not idle, not closed.
    let (status, body) = h2_send(&mut sender, "/delay/3000").await;
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&body).contains("after 3000 ms"),
        "{body:?}"
    );
    let log = pocket.log.text();
    assert!(!log.contains("GOAWAY"), "no GOAWAY while busy: {log}");
}

#[tokio::test]
async fn an_h2_connection_without_a_request_is_closed_after_the_head_timeout() {
    let a = origin("A");
    let pocket = Pocket::start_logging(
        &policy(&a, r#", timeouts = { head = "2s" }"#),
        1,
        "info,pocket=debug",
    );
    let mut s = TcpStream::connect(pocket.addr("web")).await.unwrap();
    s.write_all(&[PREFACE, &frame(0x4, 0, 0, &[])].concat())
        .await
        .unwrap();
    // The client answers nothing, not even the GOAWAY's PING: Pocket
    // closes all the same.
    let got = read_until_closed(&mut s).await;
    assert!(
        frames(&got).iter().any(|(kind, _)| *kind == 0x7),
        "a GOAWAY before the close"
    );
    pocket.log.wait_for(&["no h2 request within 2s", "GOAWAY"]);
}

/// Sends `unit` (a frame) in a loop after the preface while reading what
/// comes back, until Pocket disconnects (`true`) or the loop's bound. The
/// bound is far beyond what the socket buffers on both sides hold (tens of
/// MiB), so the loop cannot end before Pocket has even read the first
/// frames. Returns what was read.
async fn flood(addr: std::net::SocketAddr, unit: &[u8]) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.split();
    let reader = async {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, rd.read_to_end(&mut got)).await;
        got
    };
    const FRAMES: usize = 10_000_000;
    let writer = async {
        wr.write_all(&[PREFACE, &frame(0x4, 0, 0, &[])].concat())
            .await
            .unwrap();
        let batch: Vec<u8> = (0..1000).flat_map(|_| unit.to_vec()).collect();
        let t0 = Instant::now();
        let mut sent = 0;
        while sent < FRAMES && t0.elapsed() < DEADLINE {
            if wr.write_all(&batch).await.is_err() {
                return (sent, true);
            }
            sent += 1000;
        }
        (sent, false)
    };
    let (got, (sent, cut)) = tokio::join!(reader, writer);
    assert!(
        cut,
        "disconnected before the loop ended ({sent} frames sent)"
    );
    let goaway = frames(&got).into_iter().find(|(kind, _)| *kind == 0x7);
    if let Some((_, payload)) = goaway {
        assert_eq!(payload[4..8], [0, 0, 0, 0xb], "ENHANCE_YOUR_CALM");
    }
    (got, cut)
}

#[tokio::test]
async fn a_window_update_flood_closes_the_h2_connection() {
    let a = origin("A");
    let pocket = Pocket::start(&policy(&a, ""), 1);
    let addr = pocket.addr("web");
    flood(addr, &frame(0x8, 0, 0, &1u32.to_be_bytes())).await;
    let line = pocket.log.wait_for(&["WINDOW_UPDATE flood"]);
    assert!(line.contains("127.0.0.1"), "logged with the peer: {line}");
    assert_eq!(h2_get(addr, "t", "/").await.status, 200);
}

/// SETTINGS and PING floods from a client that reads the ACKs, and frames
/// of an unknown type: each closes the connection.
#[tokio::test]
async fn settings_ping_and_unknown_frame_floods_close_the_h2_connection() {
    let a = origin("A");
    let pocket = Pocket::start(&policy(&a, ""), 1);
    let addr = pocket.addr("web");
    for unit in [
        frame(0x4, 0, 0, &[]),
        frame(0x6, 0, 0, b"12345678"),
        frame(0x42, 0, 0, b"abc"),
    ] {
        let from = pocket.log.lines().len();
        // The client reads all along, so the ACKs never pile up (h2 alone
        // would close only a client that lets them pile up).
        flood(addr, &unit).await;
        let line = pocket
            .log
            .wait_for_after(from, &["SETTINGS/PING/unknown frame flood"]);
        assert!(line.contains("127.0.0.1"), "logged with the peer: {line}");
    }
    assert_eq!(h2_get(addr, "t", "/").await.status, 200);
}

/// A client that pings now and then between its requests (150 PINGs over
/// 50 requests, more than the floor alone allows) is no flood.
#[tokio::test]
async fn an_h2_client_that_pings_is_not_taken_for_a_flood() {
    let a = origin("A");
    let pocket = Pocket::start(&policy(&a, ""), 1);
    let tcp = TcpStream::connect(pocket.addr("web")).await.unwrap();
    let (mut client, mut conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let mut pings = conn.ping_pong().expect("ping_pong");
    let conn = tokio::spawn(conn);
    for i in 0..50 {
        let req = http::Request::builder()
            .uri(format!("http://t/r{i}"))
            .body(())
            .unwrap();
        client = client.ready().await.expect("ready");
        let (resp, _) = client.send_request(req, true).expect("send");
        let resp = resp.await.expect("response");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("body");
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        for _ in 0..3 {
            pings
                .ping(h2::Ping::opaque())
                .await
                .expect("PING answered, connection open");
        }
    }
    assert!(!conn.is_finished(), "the connection is open");
    assert!(
        !pocket.log.text().contains("flood"),
        "{}",
        pocket.log.text()
    );
}

#[tokio::test]
async fn a_large_h2_download_is_not_taken_for_a_flood() {
    let a = origin("A");
    let pocket = Pocket::start(&policy(&a, ""), 1);
    let addr = pocket.addr("web");
    const SIZE: usize = 8 << 20;
    let resp = h2_get(addr, "t", &format!("/bytes/{SIZE}")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), SIZE);
    assert!(
        !pocket.log.text().contains("flood"),
        "{}",
        pocket.log.text()
    );
}

#[tokio::test]
async fn a_pipelined_head_with_a_bare_lf_gets_400_in_its_turn() {
    let a = origin("A");
    let pocket = Pocket::start(&policy(&a, ""), 1);
    let answer = raw(
        pocket.addr("web"),
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nDummy: y\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let first = answer.find("HTTP/1.1 200").expect(&answer);
    let second = answer.find("HTTP/1.1 400").expect(&answer);
    assert!(first < second, "{answer:?}");
    assert!(answer.contains("LF, not CRLF"), "{answer:?}");
    assert!(answer.contains("path /a"), "{answer:?}");
    assert_eq!(a.request_count(), 1, "/b never reached the server");
}

#[tokio::test]
async fn a_bad_head_sent_while_a_request_is_in_flight_gets_400() {
    let a = origin("A");
    let pocket = Pocket::start(&policy(&a, ""), 1);
    let mut s = TcpStream::connect(pocket.addr("web")).await.unwrap();
    s.write_all(b"GET /delay/3000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    while a.request_count() == 0 {
        assert!(
            t0.elapsed() < DEADLINE,
            "the first request reaches the server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The first is being answered (the server waits 3 s): the next head,
    // smuggling a Content-Length behind a bare LF, comes now.
    s.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\nDummy: y\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
    let first = answer.find("HTTP/1.1 200").expect(&answer);
    let second = answer.find("HTTP/1.1 400").expect(&answer);
    assert!(first < second, "{answer:?}");
    assert!(answer.contains("after 3000 ms"), "{answer:?}");
    assert_eq!(a.request_count(), 1, "/b never reached the server");
}

/// The tester's inputs: a bad head pipelined after requests with bodies
/// (a Content-Length, chunked, a GET with a body, two bodies, a body
/// split across reads) gets its 400; what came before is answered; the
/// server never sees the bad head nor what follows it.
#[tokio::test]
async fn a_bad_head_after_a_body_gets_400_in_its_turn() {
    let a = origin("A");
    let pocket = Pocket::start(&policy(&a, ""), 1);
    let addr = pocket.addr("web");
    const BAD: &str = "GET /2bad HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n";
    const NEXT: &str = "GET /3 HTTP/1.1\r\nHost: x\r\n\r\n";
    let cl = "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";
    let chunked =
        "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let get_body = "GET /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab";
    // (the pieces written, how many requests come before the bad head)
    let cases: [(Vec<String>, u64); 6] = [
        (vec![format!("{cl}hello{BAD}{NEXT}")], 1),
        (vec![format!("{cl}hel"), format!("lo{BAD}{NEXT}")], 1),
        (vec![format!("{chunked}{BAD}{NEXT}")], 1),
        (vec![format!("{get_body}{BAD}{NEXT}")], 1),
        (vec![format!("{cl}hello{chunked}{BAD}{NEXT}")], 2),
        (
            vec![format!(
                "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n{BAD}{NEXT}"
            )],
            1,
        ),
    ];
    for (pieces, before) in cases {
        let seen = a.request_count();
        let mut s = TcpStream::connect(addr).await.unwrap();
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                // Most likely a read of its own (the test holds either way).
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            s.write_all(piece.as_bytes()).await.unwrap();
        }
        let answer = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
        let oks = answer.matches("HTTP/1.1 200").count() as u64;
        assert_eq!(oks, before, "{pieces:?}: {answer:?}");
        let bad = answer.find("HTTP/1.1 400").expect(&answer);
        assert!(answer.rfind("HTTP/1.1 200") < Some(bad), "{answer:?}");
        assert!(answer.contains("LF, not CRLF"), "{answer:?}");
        assert!(!answer.contains("path /2bad"), "{answer:?}");
        assert!(!answer.contains("path /3"), "{answer:?}");
        assert_eq!(
            a.request_count() - seen,
            before,
            "{pieces:?}: the bad head never reached the server"
        );
    }
}

/// A raw HTTP/1 origin: each connection gets a response of `size` bytes
/// to its first request, then is read to its end. The count is of
/// connections Pocket has closed.
async fn counting_origin(
    size: usize,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = std::sync::Arc::new(AtomicUsize::new(0));
    let count = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let mut resp =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").into_bytes();
                resp.resize(resp.len() + size, b'x');
                let _ = s.write_all(&resp).await;
                while !matches!(s.read(&mut buf).await, Ok(0) | Err(_)) {}
                count.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, closed)
}

/// The tester's input scaled down: an h2 client that gives no window
/// (SETTINGS_INITIAL_WINDOW_SIZE 0) to 20 streams of large responses has
/// them reset after the send timeout, logged `cD`, and Pocket lets go of
/// the 20 origin connections they held.
#[tokio::test]
async fn h2_streams_stalled_on_the_clients_window_are_reset_after_the_send_timeout() {
    use std::sync::atomic::Ordering;
    const STREAMS: usize = 20;
    let (origin_addr, closed) = counting_origin(4 << 20).await;
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  log = {{ access = "-" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app", timeouts = {{ send = "1s" }} }} }},
  pools = {{ app = {{ servers = {{ "{origin_addr}" }} }} }},
}}"#
        ),
        1,
    );
    let tcp = TcpStream::connect(pocket.addr("web")).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let mut responses = Vec::new();
    for i in 0..STREAMS {
        let req = http::Request::builder()
            .uri(format!("http://t/big{i}"))
            .body(())
            .unwrap();
        let mut c = client.clone().ready().await.expect("ready");
        let (resp, _) = c.send_request(req, true).expect("send");
        responses.push(resp);
    }
    for resp in responses {
        let resp = tokio::time::timeout(DEADLINE, resp)
            .await
            .expect("the head comes within the deadline")
            .expect("a response head");
        assert_eq!(resp.status(), 200);
        // No window is ever given: the stream can only end by a reset.
        let mut body = resp.into_body();
        let end = tokio::time::timeout(DEADLINE, body.data())
            .await
            .expect("the stream ends within the deadline");
        assert!(matches!(end, Some(Err(_))), "reset, not finished: {end:?}");
    }
    let line = pocket.log.wait_for(&["send timeout", "gave no window"]);
    assert!(line.contains("127.0.0.1"), "logged with the peer: {line}");
    // The access log says the client's timeout ended them (cD), not the
    // client going away (CD).
    for i in 0..STREAMS {
        let line = pocket.log.wait_for(&[&format!(" /big{i} HTTP/2\" 200 ")]);
        assert!(line.contains(" 200 cD "), "{line}");
    }
    let t0 = Instant::now();
    while closed.load(Ordering::SeqCst) < STREAMS {
        assert!(
            t0.elapsed() < DEADLINE,
            "the origin connections are let go ({} of {STREAMS})",
            closed.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Downloads `size` bytes over h2 with a 16 KiB window (the connection's
/// too when `small_connection_window`), releasing what each chunk brought
/// only after `pause`; panics with Pocket's log if the stream is reset.
async fn slow_h2_download(
    pocket: &Pocket,
    size: usize,
    pause: Duration,
    small_connection_window: bool,
) -> usize {
    let tcp = TcpStream::connect(pocket.addr("web")).await.unwrap();
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(16 * 1024);
    if small_connection_window {
        builder.initial_connection_window_size(16 * 1024);
    }
    let (client, conn) = builder
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(format!("http://t/bytes/{size}"))
        .body(())
        .unwrap();
    let mut c = client.ready().await.expect("ready");
    let (resp, _) = c.send_request(req, true).expect("send");
    let resp = resp.await.expect("response");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0;
    while let Some(chunk) = body.data().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => panic!("reset after {got} bytes: {e}; log:\n{}", pocket.log.text()),
        };
        got += chunk.len();
        tokio::time::sleep(pause).await;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    got
}

/// A client with a small window that keeps reading, a little at a time,
/// is slow, not stalled: never cut.
#[tokio::test]
async fn a_slow_h2_reader_is_not_taken_for_a_stalled_one() {
    let a = origin("A");
    let pocket = Pocket::start(&policy(&a, r#", timeouts = { send = "5s" }"#), 1);
    // Well within the send timeout between two reads, also on a busy
    // machine.
    let got = slow_h2_download(&pocket, 200_000, Duration::from_millis(200), false).await;
    assert_eq!(got, 200_000);
    let log = pocket.log.text();
    assert!(!log.contains("gave no window"), "{log}");
}

/// A reader that opens its window a little at a time (about 8 KiB a
/// second: the h2 crate sends a WINDOW_UPDATE once half its 16 KiB window
/// is released, against a send timeout of 5 s, ten times the pause, so a
/// busy machine does not turn slow into stalled) is slow, not stalled: its
/// download ends whole, though each 64 KiB chunk of the origin's takes it
/// eight seconds, and a keep-alive shorter than the download does not cut
/// it (the stream is open on the wire until its last frame went out).
#[tokio::test]
async fn a_steady_h2_reader_with_a_small_window_is_served_whole() {
    let a = origin("A");
    let pocket = Pocket::start(
        &policy(&a, r#", keepalive = "2s", timeouts = { send = "5s" }"#),
        1,
    );
    let got = slow_h2_download(&pocket, 100_000, Duration::from_millis(500), true).await;
    assert_eq!(got, 100_000);
    let log = pocket.log.text();
    assert!(!log.contains("gave no window"), "{log}");
}

/// A new connection's first bytes are told from HTTP/2's preface by
/// reading them (no peek): a preface that comes in pieces is still h2 and
/// gets h2's SETTINGS, and a request whose first bytes look like the
/// preface's start, in pieces too, is still HTTP/1.1, whole.
#[tokio::test]
async fn the_preface_and_a_request_like_it_are_told_apart_in_any_pieces() {
    let a = origin("A");
    let pocket = Pocket::start(&policy(&a, ""), 1);
    let addr = pocket.addr("web");

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&PREFACE[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(&PREFACE[5..16]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(&[&PREFACE[16..], &frame(0x4, 0, 0, &[])[..]].concat())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while frames(&got).is_empty() {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("an answer to the preface within the deadline")
            .unwrap();
        assert!(n > 0, "closed before answering the preface: {got:?}");
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(frames(&got)[0].0, 0x4, "h2's SETTINGS first: {got:?}");

    // "P", then "PRI"'s rival: a PUT, on the direct path's first read.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"UT /put HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(a.request_count(), 1);
}
