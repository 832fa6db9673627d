//! Tests of `wire::request`: what it takes, what it hands to hyper, and a
//! comparison with hyper's own server on generated heads.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Body;

use super::*;

const SIZE: usize = 16 * 1024;

fn complete(bytes: &[u8]) -> RequestHead {
    match parse(bytes, SIZE) {
        Parsed::Complete(head) => head,
        Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
        Parsed::Hyper(why) => panic!("hyper ({why}): {:?}", String::from_utf8_lossy(bytes)),
    }
}

fn hyper_why(bytes: &[u8]) -> &'static str {
    match parse(bytes, SIZE) {
        Parsed::Hyper(why) => why,
        Parsed::Complete(_) => panic!("complete: {:?}", String::from_utf8_lossy(bytes)),
        Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
    }
}

fn fields(parts: &http::request::Parts) -> Vec<(String, Vec<u8>)> {
    parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

#[test]
fn a_common_get_is_complete() {
    let bytes = b"GET /a/b?c=d&e HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next";
    let head = complete(bytes);
    assert_eq!(head.len, bytes.len() - b"GET /next".len());
    assert_eq!(head.parts.method, http::Method::GET);
    assert_eq!(head.parts.uri, "/a/b?c=d&e");
    assert_eq!(head.parts.version, http::Version::HTTP_11);
    assert_eq!(head.framing, Framing::Empty);
    assert!(head.keep_alive);
    let want: Vec<(String, Vec<u8>)> = [
        ("host", "example.com"),
        ("user-agent", "curl/8"),
        ("accept", "*/*"),
        ("x-two", "1"),
        ("x-two", "2"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
    .collect();
    assert_eq!(fields(&head.parts), want);
}

#[test]
fn lengths_methods_and_connection_tokens() {
    let head = complete(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n");
    assert_eq!(head.framing, Framing::Length(12));
    let head = complete(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length:0\r\n\r\n");
    assert_eq!(head.framing, Framing::Length(0));
    let head = complete(b"PURGE-ALL-THE-CACHES /p HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(head.parts.method.as_str(), "PURGE-ALL-THE-CACHES");
    for (connection, keep_alive) in [
        (&b"Connection: close\r\n"[..], false),
        (b"Connection: keep-alive, CLOSE\r\n", false),
        (
            b"Connection: keep-alive\r\nConnection: foo ,Close \r\n",
            false,
        ),
        (b"Connection: keep-alive\r\n", true),
        (b"Connection: closed, x-close\r\n", true),
        (b"", true),
    ] {
        let bytes = [&b"GET / HTTP/1.1\r\nHost: a\r\n"[..], connection, b"\r\n"].concat();
        assert_eq!(complete(&bytes).keep_alive, keep_alive, "{connection:?}");
    }
}

#[test]
fn pipelined_heads_are_read_one_after_the_other() {
    let bytes = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\nHost: a\r\n\r\n";
    let first = complete(bytes);
    assert_eq!(first.parts.uri, "/1");
    let rest = &bytes[first.len..];
    let second = complete(rest);
    assert_eq!(second.parts.uri, "/2");
    assert_eq!(second.framing, Framing::Length(2));
    // The third (after the body) has a bare LF: hyper's, though the two
    // before were taken.
    hyper_why(&rest[second.len + 2..]);
}

#[test]
fn what_the_request_phases_refuse_later_is_still_complete() {
    // An empty or odd Host, dot segments: proxy/target.rs answers 400.
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost:\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a b@c\r\n\r\n",
        b"GET /../%zz HTTP/1.1\r\nHost: a\r\n\r\n",
        // http takes bytes over 0x7f in a path (as hyper does).
        "GET /\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n".as_bytes(),
    ] {
        complete(bytes);
    }
}

#[test]
fn everything_else_goes_to_hyper() {
    let cases: &[&[u8]] = &[
        // httparse errors.
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        // obs-fold.
        b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n",
        // Bare LF, anywhere.
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\nContent-Length: 5\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        // Empty lines before the head.
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        // Versions and methods.
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        // A target http refuses.
        b"GET /a<b> HTTP/1.1\r\nHost: a\r\n\r\n",
        // Targets not in origin form.
        b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n",
        // Framing.
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551614\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
        // Upgrades and expectations.
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, upgrade\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\x80\r\n\r\n",
        // Host.
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ];
    for bytes in cases {
        let why = hyper_why(bytes);
        assert!(!why.is_empty());
    }
    // The largest length hyper takes is complete.
    let head =
        complete(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551613\r\n\r\n");
    assert_eq!(head.framing, Framing::Length(u64::MAX - 2));
}

#[test]
fn too_many_fields_go_to_hyper() {
    let mut bytes = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..MAX_HEADERS - 1 {
        bytes.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
    }
    let mut full = bytes.clone();
    full.extend_from_slice(b"\r\n");
    assert_eq!(complete(&full).parts.headers.len(), MAX_HEADERS);
    bytes.extend_from_slice(b"X-One-More: 1\r\n\r\n");
    hyper_why(&bytes);
}

#[test]
fn a_head_cut_anywhere_is_partial_until_it_is_over_the_size() {
    let bytes = b"GET /abc HTTP/1.1\r\nHost: a\r\nCookie: 0123456789\r\n\r\n";
    for cut in 0..bytes.len() {
        assert!(
            matches!(parse(&bytes[..cut], SIZE), Parsed::Partial),
            "cut at {cut}"
        );
        // Partial and already at the size: it cannot end within it.
        assert!(
            matches!(parse(&bytes[..cut], cut), Parsed::Hyper(_)),
            "cut at {cut}"
        );
    }
    // A whole head may be exactly the size, not one byte more.
    assert!(matches!(parse(bytes, bytes.len()), Parsed::Complete(_)));
    assert!(matches!(parse(bytes, bytes.len() - 1), Parsed::Hyper(_)));
    // A target too long for hyper (its 414), within a large head size.
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "a".repeat(MAX_URI_LEN)
    );
    assert!(matches!(parse(long.as_bytes(), 1 << 20), Parsed::Hyper(_)));
}

#[test]
fn write_gives_the_head_back_with_the_writers_framing() {
    let bytes = b"POST /p/q?x=1&y HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\nAccept:  text/html \r\n\r\n";
    let head = complete(bytes);
    let mut out = b"junk".to_vec();
    write(&mut out, &head.parts, head.framing);
    assert_eq!(
        &out[4..],
        &b"POST /p/q?x=1&y HTTP/1.1\r\nhost: a\r\nx-a: 1\r\nx-a: 2\r\naccept: text/html\r\ncontent-length: 3\r\n\r\n"[..]
    );
    // Parsed back: the same request.
    let again = complete(&out[4..]);
    assert_eq!(again.parts.method, head.parts.method);
    assert_eq!(again.parts.uri, head.parts.uri);
    assert_eq!(fields(&again.parts).len(), fields(&head.parts).len());
    assert_eq!(again.framing, head.framing);

    // Framing: Empty writes none, Length(0) a zero (as hyper's client
    // keeps a client's `Content-Length: 0`), Chunked its coding; a stray
    // Transfer-Encoding in the parts never passes.
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.uri = http::Uri::from_static("/?");
    parts
        .headers
        .insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
    for (framing, want) in [
        (Framing::Empty, &b"GET /? HTTP/1.1\r\n\r\n"[..]),
        (
            Framing::Length(0),
            b"GET /? HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
        ),
        (
            Framing::Length(u64::MAX),
            b"GET /? HTTP/1.1\r\ncontent-length: 18446744073709551615\r\n\r\n",
        ),
        (
            Framing::Chunked,
            b"GET /? HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
        ),
    ] {
        let mut out = Vec::new();
        write(&mut out, &parts, framing);
        assert_eq!(out, want, "{framing:?}");
    }
    // An absolute form (a script's URI) is written in origin form.
    parts.uri = http::Uri::from_static("http://b.example");
    let mut out = Vec::new();
    write(&mut out, &parts, Framing::Empty);
    assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
}

/// A small seeded PRNG (xorshift64*): the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, from: &[&'a [u8]]) -> &'a [u8] {
        from[self.below(from.len())]
    }
    /// Mostly the first, sometimes any.
    fn mostly<'a>(&mut self, from: &[&'a [u8]]) -> &'a [u8] {
        if self.below(25) == 0 {
            self.pick(from)
        } else {
            from[0]
        }
    }
}

/// A request head, mostly well formed, with one or two odd parts now and
/// then (each kind the parser sends to hyper, and near misses).
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.below(40) == 0 {
        out.extend_from_slice(rng.pick(&[b"\r\n", b"\n", b"\r\n\r\n"]));
    }
    let eol: &[&[u8]] = &[b"\r\n", b"\n", b"\r", b"\r\r\n", b" \r\n"];
    let end = |rng: &mut Rng| -> &'static [u8] {
        if rng.below(30) == 0 {
            rng.pick(eol)
        } else {
            b"\r\n"
        }
    };
    out.extend_from_slice(rng.mostly(&[
        b"GET",
        b"POST",
        b"HEAD",
        b"PUT",
        b"DELETE",
        b"OPTIONS",
        b"PATCH",
        b"CONNECT",
        b"TRACE",
        b"get",
        b"M-SEARCH",
        b"G@T",
        b"",
        b"VERY-LONG-EXTENSION-METHOD",
        b"G\x80T",
    ]));
    out.extend_from_slice(rng.mostly(&[b" ", b"  ", b"\t", b""]));
    let target = rng.mostly(&[
        b"/",
        b"/a/b?c=d&e",
        b"/%41%zz",
        b"*",
        b"http://h/x?y",
        b"h:443",
        b"/a b",
        b"/\x7f",
        "/\u{e9}".as_bytes(),
        b"//x//y",
        b"/?",
        b"/#frag",
        b"/a|b{}^`\"<>",
        b"/a?b=c?d/e",
        b"",
        b"/\\",
        b"/a\tb",
        b"/[::1]",
        b"HTTP://H",
        b"/~!$&'()*+,;=:@",
    ]);
    out.extend_from_slice(target);
    if rng.below(20) == 0 {
        let n = rng.below(3000);
        out.extend(std::iter::repeat_n(b'x', n));
    }
    out.extend_from_slice(rng.mostly(&[b" ", b"  ", b"\t"]));
    out.extend_from_slice(rng.mostly(&[
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"HTTP/2.0",
        b"http/1.1",
        b"HTTP/1.10",
        b"HTTP/1.",
        b"HTTP/0.9",
    ]));
    out.extend_from_slice(end(rng));
    let names: &[&[u8]] = &[
        b"Host",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Connection",
        b"Upgrade",
        b"Expect",
        b"X-Thing",
        b"ACCEPT",
        b"user-agent",
        b"X_Under",
        b"Cookie",
        b"Te",
        b"Keep-Alive",
        b"X-Very-Long-Name-That-Is-Not-Standard-At-All-0123456789",
        b"host",
        b"Content-Type",
        b"x-!#$%&'*+.^`|~",
    ];
    let odd_names: &[&[u8]] = &[b"X Space", b"X@At", b"", b"x-\x80", b"X\"Q", b"X(Y)"];
    let values: &[&[u8]] = &[
        b"a",
        b"example.com:8080",
        b"0",
        b"5",
        b" 5 ",
        b"+5",
        b"5, 5",
        b"05",
        b"18446744073709551613",
        b"18446744073709551615",
        b"99999999999999999999",
        b"",
        b"chunked",
        b"close",
        b"keep-alive",
        b"Upgrade",
        b"foo, CLOSE",
        b"close\x80",
        b"100-continue",
        b"websocket",
        b"caf\xc3\xa9",
        b"a\tb",
        b"   spaced   ",
        b"\t",
        b"a,b ,, c",
        b"trailers",
    ];
    let count = match rng.below(50) {
        0 => 95 + rng.below(10),
        _ => rng.below(8),
    };
    let with_host = rng.below(10) != 0;
    if with_host {
        out.extend_from_slice(b"Host: a.example\r\n");
    }
    for _ in 0..count {
        let name = if rng.below(25) == 0 {
            rng.pick(odd_names)
        } else {
            rng.pick(names)
        };
        out.extend_from_slice(name);
        out.extend_from_slice(rng.mostly(&[b":", b" :", b"::", b""]));
        out.extend_from_slice(rng.mostly(&[b" ", b"", b"  ", b"\t"]));
        let value = if name.eq_ignore_ascii_case(b"content-length") && rng.below(2) == 0 {
            rng.pick(&[b"0", b"3", b"12"])
        } else if rng.below(40) == 0 {
            rng.pick(&[b"x\x01y", b"x\x00", b"\x1b[0m", b"x\ry", b"x\x7fy"])
        } else {
            rng.pick(values)
        };
        out.extend_from_slice(value);
        out.extend_from_slice(end(rng));
        if rng.below(120) == 0 {
            out.extend_from_slice(rng.pick(&[b" folded\r\n", b"\tfolded\r\n", b" \r\n"]));
        }
    }
    out.extend_from_slice(end(rng));
    out
}

/// What hyper's server made of a request.
#[derive(Debug, PartialEq)]
struct Seen {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    fields: Vec<(String, Vec<u8>)>,
    length: Option<u64>,
}

/// Feeds `bytes` to hyper's HTTP/1 server (as Pocket configures it, with
/// a head size of `head_size`) and returns the requests it handed on.
async fn hyper_reads(bytes: &[u8], head_size: usize) -> Vec<Seen> {
    use tokio::io::AsyncWriteExt;
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let record = seen.clone();
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (parts, body) = req.into_parts();
        record.borrow_mut().push(Seen {
            fields: fields(&parts),
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            length: body.size_hint().exact(),
        });
        async { Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new())) }
    });
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.keep_alive(true)
        .max_header_size(head_size)
        .max_buf_size(crate::server::H1_BUF.max(head_size));
    let conn = h1.serve_connection(hyper_util::rt::TokioIo::new(server), service);
    let feed = async {
        let _ = client.write_all(bytes).await;
        let _ = client.shutdown().await;
        // Kept open (for hyper's answer) until the connection ends.
        client
    };
    let (_, _client) = tokio::join!(
        tokio::time::timeout(std::time::Duration::from_secs(10), conn),
        feed
    );
    seen.take()
}

/// Runs heads through `parse` and hyper's server and checks that every
/// head `parse` takes, hyper takes the same way (see [`Compare::one`]).
struct Compare {
    rt: tokio::runtime::Runtime,
    runs: usize,
    taken: usize,
    to_hyper: usize,
    partial: usize,
    hyper_took_too: usize,
    reasons: std::collections::BTreeMap<&'static str, usize>,
    show: Option<String>,
}

impl Compare {
    fn new() -> Compare {
        Compare {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
            runs: 0,
            taken: 0,
            to_hyper: 0,
            partial: 0,
            hyper_took_too: 0,
            reasons: Default::default(),
            show: std::env::var("POCKET_WIRE_SHOW").ok(),
        }
    }

    /// One head: when `parse` takes it, hyper's server takes the same
    /// request (method, target, version, fields in order, body length),
    /// the head check in front of hyper passes it, a cut of it (at
    /// `cut % len`) is partial, and written and parsed again it is the
    /// same request.
    fn one(&mut self, case: &str, head_bytes: &[u8], head_size: usize, cut: usize) {
        self.runs += 1;
        let mut bytes = head_bytes.to_vec();
        let parsed = parse(&bytes, head_size);
        if let Parsed::Complete(head) = &parsed {
            // A body of the declared length, so hyper reads the whole message.
            if let Framing::Length(n) = head.framing {
                bytes.extend(std::iter::repeat_n(b'b', n.min(64) as usize));
            }
        }
        let seen = self.rt.block_on(hyper_reads(&bytes, head_size));
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(400)]).into_owned();
        match parsed {
            Parsed::Complete(head) => {
                self.taken += 1;
                let Some(first) = seen.first() else {
                    panic!("{case}: complete here, hyper refused: {shown:?}");
                };
                let want = Seen {
                    method: head.parts.method.clone(),
                    uri: head.parts.uri.clone(),
                    version: head.parts.version,
                    fields: fields(&head.parts),
                    length: Some(match head.framing {
                        Framing::Length(n) => n,
                        _ => 0,
                    }),
                };
                assert_eq!(first, &want, "{case}: {shown:?}");
                // The head check in front of hyper passes it too (it
                // refuses a bare LF and a head over the size).
                let mut check = crate::server::head_check::HeadCheck::with_limit(head_size as u32);
                assert!(check.feed(&bytes[..head.len]).is_ok(), "{case}: {shown:?}");
                assert_eq!(check.oversized(), None, "{case}: {shown:?}");
                // A cut of a taken head is partial.
                let cut = cut % head.len;
                assert!(
                    matches!(parse(&bytes[..cut], head_size), Parsed::Partial),
                    "{case}, cut at {cut}: {shown:?}"
                );
                // Written and parsed again: the same request.
                let mut out = Vec::new();
                write(&mut out, &head.parts, head.framing);
                let again = complete(&out);
                assert_eq!(again.parts.uri, head.parts.uri, "{case}");
                // The length moves to the end: the writer's.
                let unframed = |parts: &http::request::Parts| {
                    let mut fields = fields(parts);
                    fields.retain(|(n, _)| n != "content-length");
                    fields
                };
                assert_eq!(unframed(&again.parts), unframed(&head.parts), "{case}");
                assert_eq!(again.framing, head.framing, "{case}");
            }
            Parsed::Hyper(why) => {
                if self.show.as_deref() == Some(why) {
                    eprintln!("{why}: {shown:?}");
                }
                self.to_hyper += 1;
                *self.reasons.entry(why).or_default() += 1;
                if !seen.is_empty() {
                    self.hyper_took_too += 1;
                }
            }
            // Heads end with a line end: partial only when that end is
            // not one httparse reads as the blank line.
            Parsed::Partial => self.partial += 1,
        }
    }

    fn report(&self, what: &str) {
        eprintln!(
            "{what}: {} heads: {} taken (hyper read each the same), {} partial, {} to hyper \
             ({} of which hyper took), reasons {:?}",
            self.runs, self.taken, self.partial, self.to_hyper, self.hyper_took_too, self.reasons
        );
    }
}

/// For generated heads: whenever `parse` takes one, hyper's server takes
/// the same request (method, target, version, fields in order, body
/// length), and the head check in front of it passes it. Cases:
/// POCKET_WIRE_ITER (default 500), from POCKET_WIRE_SEED (a u64, default
/// fixed); POCKET_WIRE_SHOW=<reason> prints the
/// heads sent to hyper for that reason.
#[test]
fn complete_heads_are_read_as_hyper_reads_them() {
    let iterations: usize = std::env::var("POCKET_WIRE_ITER")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let mut compare = Compare::new();
    let seed = std::env::var("POCKET_WIRE_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x5eed_0f90_c4e7_u64);
    // xorshift never leaves 0.
    let mut rng = Rng(seed.max(1));
    for case in 0..iterations {
        let bytes = generate(&mut rng);
        let head_size = if rng.below(10) == 0 { 256 } else { SIZE };
        let cut = rng.below(usize::MAX);
        compare.one(&format!("case {case}"), &bytes, head_size, cut);
    }
    compare.report(&format!("generated (seed {seed})"));
    assert!(
        compare.taken > iterations / 10,
        "too few heads taken: {}",
        compare.taken
    );
}

/// Every byte of a few common heads replaced by each of the bytes that
/// matter to a parser, deleted, or doubled: hyper agrees on each head
/// `parse` takes.
#[test]
fn heads_changed_by_one_byte_are_read_as_hyper_reads_them() {
    let bases: [&[u8]; 3] = [
        b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nX-Y: v\r\n\r\n",
        b"PUT / HTTP/1.1\r\nhost:h\r\ncontent-length:0\r\n\r\n",
    ];
    let interesting = [
        0u8, b'\t', b'\n', b'\r', b' ', b'"', b',', b':', b'/', b'?', b'#', b'<', b'%', b'*', b'@',
        b'0', b'9', b'A', b'z', b'-', b'_', 0x7f, 0x80, 0xff,
    ];
    let mut compare = Compare::new();
    for (b, base) in bases.iter().enumerate() {
        for at in 0..base.len() {
            for &byte in &interesting {
                let mut bytes = base.to_vec();
                bytes[at] = byte;
                compare.one(
                    &format!("base {b}, byte {at} = {byte:#x}"),
                    &bytes,
                    SIZE,
                    at,
                );
            }
            let mut bytes = base.to_vec();
            bytes.remove(at);
            compare.one(&format!("base {b}, byte {at} deleted"), &bytes, SIZE, at);
            let mut bytes = base.to_vec();
            bytes.insert(at, base[at]);
            compare.one(&format!("base {b}, byte {at} doubled"), &bytes, SIZE, at);
        }
    }
    compare.report("changed by one byte");
    assert!(
        compare.taken > 100,
        "too few heads taken: {}",
        compare.taken
    );
}

/// The quick names are the ones `HeaderName::from_bytes` gives, in any
/// case, and nothing else is taken for them.
#[test]
fn common_names_are_http_s_own() {
    for name in [
        "host",
        "accept",
        "cookie",
        "origin",
        "referer",
        "user-agent",
        "connection",
        "content-type",
        "cache-control",
        "authorization",
        "content-length",
        "accept-encoding",
        "accept-language",
    ] {
        for spelled in [name.to_string(), name.to_ascii_uppercase(), {
            let mut c = name.as_bytes().to_vec();
            c[0] = c[0].to_ascii_uppercase();
            String::from_utf8(c).unwrap()
        }] {
            let quick = super::common_name(spelled.as_bytes()).expect(&spelled);
            assert_eq!(quick, HeaderName::from_bytes(spelled.as_bytes()).unwrap());
            assert_eq!(quick.as_str(), name);
        }
    }
    for other in ["hosts", "hos", "x-host", "accept-charset", "Cookie2", ""] {
        assert!(super::common_name(other.as_bytes()).is_none(), "{other}");
    }
}

/// Where the look at the lines' ends says "all CRLF", there is no bare LF
/// in the head: on common heads with every byte changed to a byte that
/// matters to line ends, or an LF put in anywhere.
#[test]
fn the_look_at_line_ends_never_misses_a_bare_lf() {
    let heads: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: bench.example\r\nAccept-Encoding: identity\r\n\r\n",
        b"GET /a?b HTTP/1.1\r\nhost: a\r\nx:\r\ny: \t1 \r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ];
    let mut looked = 0;
    for base in heads {
        for c in crate::wire::mutations::variants(base, b"\r\n \t:a") {
            let mut fields = [httparse::EMPTY_HEADER; 8];
            let mut req = httparse::Request::new(&mut fields);
            let Ok(httparse::Status::Complete(len)) = req.parse(&c) else {
                continue;
            };
            let head = &c[..len];
            let bare = memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r');
            if super::crlf_lines(head, req.headers) {
                looked += 1;
                assert!(!bare, "{:?}", String::from_utf8_lossy(head));
            }
        }
    }
    assert!(looked > 50, "{looked}");
}
