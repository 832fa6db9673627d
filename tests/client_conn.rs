//! A client connection's limits, for HTTP/1 and h2 alike: the listener's
//! send timeout closes a connection whose client stopped reading.

mod common;
use common::*;

use std::time::Instant;

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
