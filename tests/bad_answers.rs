//! A server answer Pocket will not relay gets Pocket's own 502, logged
//! `PH` (observability.md: "a head it cannot relay faithfully"), on both
//! paths, and the client's connection stays usable, as HAProxy does
//! (`PH--`). `SH` is kept for a server that closed or broke the connection
//! before a head. A body found broken before any byte of the answer went
//! out is such an answer too (the direct path checks the bytes read with
//! the head); once the head is out, the client connection is cut and the
//! line keeps the status that was sent (`SD`).

mod common;
use common::*;

use std::io::{Read, Write};
use std::time::Duration;

/// What the origin sends for `/<case>` (then it closes the connection).
fn answer_for(case: &str) -> Vec<u8> {
    let chunked =
        |rest: &str| format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{rest}");
    let head = |h: &str| format!("{h}\r\n\r\n");
    match case {
        "ok" => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into(),
        // The first chunk line malformed (X1 of breaker18s3).
        "chunk-lf" => chunked("2\nok\n0\n\n"),
        "chunk-space" => chunked("2 \r\nok\r\n0\r\n\r\n"),
        "chunk-0x" => chunked("0x2\r\nok\r\n0\r\n\r\n"),
        "chunk-zz" => chunked("zz\r\nok\r\n0\r\n\r\n"),
        "chunk-minus" => chunked("-5\r\nhello\r\n0\r\n\r\n"),
        "chunk-huge" => chunked("1ffffffffffffffffffff\r\nok\r\n0\r\n\r\n"),
        "chunk-no-crlf" => chunked("2\r\nokX0\r\n\r\n"),
        // Heads hyper's client refuses (X2).
        "nul" => head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: a\0b"),
        "ctl" => head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: a\x01b"),
        "two-cl" => head("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3"),
        "plus-cl" => head("HTTP/1.1 200 OK\r\nContent-Length: +2"),
        "http2" => head("HTTP/2.0 200 OK\r\nContent-Length: 0"),
        "lower" => head("http/1.1 200 OK\r\nContent-Length: 0"),
        "status-099" => head("HTTP/1.1 099 Odd\r\nContent-Length: 0"),
        "space-colon" => head("HTTP/1.1 200 OK\r\nContent-Length : 0"),
        "huge-cl" => head("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999"),
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
    }
    .into_bytes()
}

/// A server answering each request with [`answer_for`] its path, then
/// closing. `/late-chunk` sends its head and a good chunk, waits, then a
/// bad chunk line: the head is out before the body breaks.
fn raw_origin() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let Some(head) = read_request_head(&mut c) else {
                    return;
                };
                let line = String::from_utf8_lossy(&head).into_owned();
                let path = line
                    .split(' ')
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/');
                if path == "late-chunk" {
                    let _ = c.write_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
                    );
                    std::thread::sleep(Duration::from_millis(300));
                    let _ = c.write_all(b"zz\r\n");
                } else {
                    let _ = c.write_all(&answer_for(path));
                }
                let _ = c.shutdown(std::net::Shutdown::Write);
                let mut sink = [0u8; 1024];
                while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

fn policy(origin: std::net::SocketAddr) -> String {
    format!(
        r#"return {{
  log = {{ access = "-" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "raw" }} }},
  pools = {{ raw = {{ servers = {{ "{origin}" }}, passive = false }} }},
}}"#
    )
}

/// Sends `bytes` on one connection and reads until Pocket closes it.
fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The request for `case` on the direct path (a GET without a body) or on
/// hyper's (a POST with one), followed by a `GET /ok` that closes.
fn pipelined(case: &str, hyper: bool) -> Vec<u8> {
    let first = if hyper {
        format!("POST /{case} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx")
    } else {
        format!("GET /{case} HTTP/1.1\r\nHost: t\r\n\r\n")
    };
    format!("{first}GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Each answer is a 502 saying why, the next request on the connection is
/// answered, and the line says `502 PH`.
fn refused_with_ph(pocket: &Pocket, cases: &[&str], hyper: bool) {
    let addr = pocket.addr("web");
    for case in cases {
        let answer = exchange(addr, &pipelined(case, hyper));
        assert!(
            answer.starts_with("HTTP/1.1 502"),
            "{case} (hyper path: {hyper}): {answer:?}"
        );
        assert!(
            answer.contains("sent a response Pocket cannot relay"),
            "{case} (hyper path: {hyper}): {answer:?}"
        );
        assert!(
            answer.contains("HTTP/1.1 200") && answer.ends_with("ok"),
            "{case} (hyper path: {hyper}): the next request is answered: {answer:?}"
        );
        let line = pocket.log.wait_for(&[&format!("/{case} HTTP/1.1\" 502 ")]);
        assert!(
            line.contains(" 502 PH "),
            "{case} (hyper path: {hyper}): {line}"
        );
    }
}

#[tokio::test]
async fn a_malformed_response_head_is_a_502_logged_ph_on_both_paths() {
    let pocket = Pocket::start(&policy(raw_origin()), 1);
    let cases = [
        "nul",
        "ctl",
        "two-cl",
        "plus-cl",
        "http2",
        "lower",
        "status-099",
        "space-colon",
        "huge-cl",
    ];
    refused_with_ph(&pocket, &cases, false);
    // hyper's reader takes `2 ` (whitespace before the CRLF) and hands on
    // the `ok` of `okX` before it finds the missing CRLF (then the client
    // connection is cut, `SD`); the others break at the first chunk line.
    refused_with_ph(
        &pocket,
        &[
            "chunk-lf",
            "chunk-0x",
            "chunk-zz",
            "chunk-minus",
            "chunk-huge",
        ],
        true,
    );
}

/// X1 of breaker18s3: the client got no byte at all and the line said
/// `200 SD`. The body's first bytes, read with the head, are checked
/// before the head is written: on the direct path by its own reader, on
/// hyper's by one look at the body hyper's client has decoded.
#[tokio::test]
async fn a_malformed_first_chunk_line_read_with_the_head_is_a_502_logged_ph() {
    let pocket = Pocket::start(&policy(raw_origin()), 1);
    let cases = [
        "chunk-lf",
        "chunk-space",
        "chunk-0x",
        "chunk-zz",
        "chunk-minus",
        "chunk-huge",
        "chunk-no-crlf",
    ];
    refused_with_ph(&pocket, &cases, false);
    // hyper's reader takes `2 ` (whitespace before the CRLF) and hands on
    // the `ok` of `okX` before it finds the missing CRLF (then the client
    // connection is cut, `SD`); the others break at the first chunk line.
    refused_with_ph(
        &pocket,
        &[
            "chunk-lf",
            "chunk-0x",
            "chunk-zz",
            "chunk-minus",
            "chunk-huge",
        ],
        true,
    );
    // Once the head is out, the client connection is cut and the line
    // keeps the status that was sent.
    for hyper in [false, true] {
        let answer = exchange(pocket.addr("web"), &pipelined("late-chunk", hyper));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.contains("\r\n\r\n2\r\nok\r\n"), "{answer:?}");
        assert!(!answer.contains("502"), "{answer:?}");
    }
    let lines = pocket.log.text();
    let late: Vec<&str> = lines
        .lines()
        .filter(|l| l.contains("/late-chunk HTTP/1.1\" "))
        .collect();
    assert!(late.iter().all(|l| l.contains(" 200 SD ")), "{late:?}");
    // The warning of each break names its request, so that it can be
    // matched with its access-log line (both paths).
    pocket.log.wait_for(&["broke off its response", "request="]);
    let text = pocket.log.text();
    let broke: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("broke off its response"))
        .collect();
    assert!(broke.iter().all(|l| l.contains("request=")), "{broke:?}");
}
