use super::*;
use crate::wire::response::{parse, Parsed};

fn parsed(buf: &[u8], head_request: bool) -> ResponseHead {
    match parse(buf, head_request, 64 * 1024) {
        Parsed::Complete(h) => h,
        _ => panic!("{:?}", String::from_utf8_lossy(buf)),
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The head minus its `date:` line (which changes), and that line.
fn without_date(out: &[u8]) -> (String, Option<String>) {
    let t = text(out);
    let mut date = None;
    let kept: Vec<&str> = t
        .split("\r\n")
        .filter(|l| {
            if let Some(d) = l.strip_prefix("date: ") {
                date = Some(d.to_string());
                false
            } else {
                true
            }
        })
        .collect();
    (kept.join("\r\n"), date)
}

#[test]
fn a_relayed_head_keeps_the_servers_status_line_words_and_fields() {
    let buf = b"HTTP/1.0 200 Fine\r\nX-A: 1\r\nConnection: keep-alive\r\nContent-Length: 005\r\nx-b:two words\r\n\r\nhello";
    let h = parsed(buf, false);
    let mut out = b"prefix".to_vec();
    relayed_response_head(&mut out, &h, buf, false);
    let (head, date) = without_date(&out[6..]);
    assert_eq!(
        head,
        "HTTP/1.1 200 Fine\r\nX-A: 1\r\nx-b:two words\r\ncontent-length: 5\r\n\r\n"
    );
    assert_eq!(&out[..6], b"prefix");
    let date = date.expect("a date");
    assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
}

#[test]
fn framing_date_and_close_as_the_client_needs_them() {
    let buf = b"HTTP/1.1 404 Not Found\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nTransfer-Encoding: chunked\r\n\r\n";
    let h = parsed(buf, false);
    let mut out = Vec::new();
    relayed_response_head(&mut out, &h, buf, true);
    assert_eq!(
        text(&out),
        "HTTP/1.1 404 Not Found\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    // No reason, a body until the close, a HEAD's length.
    let buf = b"HTTP/1.1 299\r\nX: y\r\n\r\n";
    let mut out = Vec::new();
    relayed_response_head(&mut out, &parsed(buf, false), buf, true);
    assert_eq!(
        without_date(&out).0,
        "HTTP/1.1 299 \r\nX: y\r\nconnection: close\r\n\r\n"
    );
    let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 12, 12\r\n\r\n";
    let mut out = Vec::new();
    relayed_response_head(&mut out, &parsed(buf, true), buf, false);
    assert_eq!(
        without_date(&out).0,
        "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"
    );
}

#[test]
fn a_head_from_parts_has_the_canonical_reason_or_the_servers() {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = http::StatusCode::SERVICE_UNAVAILABLE;
    parts.headers.insert("x-request-id", "1-a".parse().unwrap());
    parts
        .headers
        .insert("content-length", "99".parse().unwrap());
    parts
        .headers
        .insert("transfer-encoding", "chunked".parse().unwrap());
    let mut out = Vec::new();
    response_head(&mut out, &parts, Framing::Length(7), true);
    let (head, date) = without_date(&out);
    assert_eq!(
        head,
        "HTTP/1.1 503 Service Unavailable\r\nx-request-id: 1-a\r\nconnection: close\r\ncontent-length: 7\r\n\r\n"
    );
    assert!(date.is_some());
    // A refusal already says close; a date of its own is kept.
    parts.headers.insert("connection", "close".parse().unwrap());
    parts
        .headers
        .insert("date", "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
    let mut out = Vec::new();
    response_head(&mut out, &parts, Framing::Chunked, true);
    assert_eq!(
        text(&out),
        "HTTP/1.1 503 Service Unavailable\r\nx-request-id: 1-a\r\nconnection: close\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    // The server's reason, through on_response.
    let buf = b"HTTP/1.1 200 Fine\r\nContent-Length: 3\r\n\r\n";
    let head = parsed(buf, true);
    let parts = head.to_parts(buf);
    let mut out = Vec::new();
    response_head(&mut out, &parts, Framing::Empty, false);
    assert_eq!(
        without_date(&out).0,
        "HTTP/1.1 200 Fine\r\ncontent-length: 3\r\n\r\n"
    );
    // 204: no length, whatever the parts say.
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = http::StatusCode::NO_CONTENT;
    parts.headers.insert("content-length", "0".parse().unwrap());
    let mut out = Vec::new();
    response_head(&mut out, &parts, Framing::Empty, false);
    assert_eq!(without_date(&out).0, "HTTP/1.1 204 No Content\r\n\r\n");
    parts.status = http::StatusCode::from_u16(299).unwrap();
    let mut out = Vec::new();
    response_head(&mut out, &parts, Framing::Length(0), false);
    assert_eq!(
        without_date(&out).0,
        "HTTP/1.1 299 <none>\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn the_date_is_an_imf_fixdate_of_now() {
    let mut out = Vec::new();
    date(&mut out);
    let mut again = Vec::new();
    date(&mut again);
    assert_eq!(out.len(), DATE_LEN);
    let when = httpdate::parse_http_date(std::str::from_utf8(&out).unwrap()).unwrap();
    let skew = SystemTime::now().duration_since(when).unwrap_or_default();
    assert!(skew.as_secs() < 5);
    let mut n = Vec::new();
    for v in [0, 7, 10, 12345, u64::MAX] {
        n.clear();
        decimal(&mut n, v);
        assert_eq!(text(&n), v.to_string());
    }
}

/// The relayed fields, copied by runs, are the lines one by one with a
/// CRLF each: on heads with fields left out between others, trailing
/// whitespace, empty values, a kept Content-Length cut to its number.
#[test]
fn fields_copied_by_runs_are_the_lines_one_by_one() {
    let heads: [(&[u8], bool); 6] = [
        (b"HTTP/1.1 200 OK\r\ncontent-type: t\r\nx-origin: A\r\ncontent-length: 32\r\ndate: D\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\nA: 1\r\nConnection: keep-alive\r\nB: 2 \r\nC:\r\nD: \t\r\nE: 5\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\nConnection: close, x-a\r\nX-A: 1\r\nX-B: 2\r\nKeep-Alive: 1\r\nX-C: 3\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 5, 5\r\nB: 2\r\n\r\n", true),
        (b"HTTP/1.1 204 No\r\nTransfer-Encoding: chunked\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\n\r\n", false),
    ];
    for (buf, head_request) in heads {
        let h = parsed(buf, head_request);
        let mut want = Vec::new();
        status_line(
            &mut want,
            h.status,
            &buf[h.reason.0 as usize..h.reason.1 as usize],
        );
        for &(from, to) in &h.fields {
            want.extend_from_slice(&buf[from as usize..to as usize]);
            want.extend_from_slice(b"\r\n");
        }
        finish(&mut want, h.framing, h.has_date, true);
        let mut got = Vec::new();
        relayed_response_head(&mut got, &h, buf, true);
        assert_eq!(without_date(&got), without_date(&want));
    }
}
