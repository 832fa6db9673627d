//! `write` against hyper's server: the same local responses, the same
//! bytes on the wire (but the Date value).

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{closes, write};
use crate::proxy::body::ResponseBody;
use crate::proxy::local;
use crate::script::api::local::LocalResponse;

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn script(status: u16, headers: &[(&str, &str)], body: &'static str) -> Response<ResponseBody> {
    local::from_script(LocalResponse {
        status: StatusCode::from_u16(status).expect("status"),
        body: Bytes::from_static(body.as_bytes()),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_bytes(n.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect(),
    })
}

/// Reads one response from `io`: its head, then the body its
/// `content-length` says (none for HEAD).
async fn read_response<R: tokio::io::AsyncRead + Unpin>(io: &mut R, head_only: bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = io.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "the head ended early: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().expect("length"));
    let want = if head_only { end } else { end + len };
    while got.len() < want {
        let n = io.read(&mut buf).await.expect("read");
        assert!(n > 0, "the body ended early");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// What hyper's server, configured as Pocket's (server/conn.rs), writes
/// for `make()`'s response to one request.
async fn by_hyper(make: fn() -> Response<ResponseBody>, head_only: bool, closing: bool) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new()).keep_alive(true);
    let conn = h1.serve_connection(
        TokioIo::new(server),
        service_fn(move |_req| async move { Ok::<_, Infallible>(make()) }),
    );
    let method = if head_only { "HEAD" } else { "GET" };
    let close = if closing { "connection: close\r\n" } else { "" };
    let request = format!("{method} / HTTP/1.1\r\nhost: example\r\n{close}\r\n");
    let talk = async move {
        client.write_all(request.as_bytes()).await.expect("request");
        read_response(&mut client, head_only).await
    };
    let (_, got) = tokio::join!(conn, talk);
    got
}

async fn by_write(make: fn() -> Response<ResponseBody>, head_only: bool, closing: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let n = write(&mut out, make(), head_only, closing)
        .await
        .expect("write");
    let mut cursor = &out[..];
    let one = read_response(&mut cursor, head_only).await;
    assert_eq!(one.len(), out.len(), "more than one response written");
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(n as usize, out.len() - head_end, "body bytes reported");
    out
}

/// The date's value blanked: it is the second's, on either side.
fn undated(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    text.split("\r\n")
        .map(|l| match l.strip_prefix("date: ") {
            Some(v) => {
                assert_eq!(v.len(), 29, "an IMF-fixdate: {v:?}");
                assert!(v.ends_with(" GMT"), "{v:?}");
                "date: -".to_string()
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn same_as_hyper(what: &str, make: fn() -> Response<ResponseBody>) {
    for head_only in [false, true] {
        for closing in [false, true] {
            let (hyper, ours) = run(async {
                (
                    by_hyper(make, head_only, closing).await,
                    by_write(make, head_only, closing).await,
                )
            });
            assert_eq!(
                undated(&ours),
                undated(&hyper),
                "{what}, head_only {head_only}, closing {closing}"
            );
        }
    }
}

#[test]
fn a_scripts_answer_as_hyper_writes_it() {
    same_as_hyper("respond with fields and a body", || {
        script(
            200,
            &[
                ("content-type", "text/html"),
                ("set-cookie", "a=1"),
                ("x-one", "1"),
                ("set-cookie", "b=2"),
            ],
            "<h1>hello</h1>\n",
        )
    });
    same_as_hyper("respond 404, no body", || script(404, &[], ""));
    same_as_hyper("respond 204 with a body", || script(204, &[], "ignored"));
    same_as_hyper("respond 304", || script(304, &[("etag", "\"x\"")], ""));
    same_as_hyper("a status without a reason", || script(299, &[], "odd"));
    same_as_hyper("the script's own date", || {
        script(200, &[("date", "Sun, 06 Nov 1994 08:49:37 GMT")], "dated")
    });
    same_as_hyper("a redirect", || {
        script(302, &[("location", "https://example.com/")], "")
    });
}

#[test]
fn refusals_and_errors_as_hyper_writes_them() {
    same_as_hyper("a refusal (400, closes)", || {
        local::refusal(StatusCode::BAD_REQUEST, "no route", "0-1")
    });
    same_as_hyper("a refusal (503, keeps)", || {
        local::refusal(StatusCode::SERVICE_UNAVAILABLE, "over the limit", "0-2")
    });
    same_as_hyper("an error", || {
        local::error(
            StatusCode::BAD_GATEWAY,
            "server 127.0.0.1:9 refused",
            "3-44",
        )
    });
    same_as_hyper("an error with a request id not a field value", || {
        local::error(StatusCode::GATEWAY_TIMEOUT, "slow", "bad\nid")
    });
}

#[test]
fn a_refusal_that_closes_says_so() {
    assert!(closes(
        local::refusal(StatusCode::BAD_REQUEST, "x", "1").headers()
    ));
    assert!(!closes(
        local::refusal(StatusCode::SERVICE_UNAVAILABLE, "x", "1").headers()
    ));
    assert!(!closes(script(200, &[], "").headers()));
}
