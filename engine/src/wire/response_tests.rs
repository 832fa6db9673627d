use super::*;
use crate::wire::chunked::{Chunked, Step};

const MAX: usize = 64 * 1024;

fn head(bytes: &[u8]) -> ResponseHead {
    head_for(bytes, false)
}

fn head_for(bytes: &[u8], head_request: bool) -> ResponseHead {
    match parse(bytes, head_request, MAX) {
        Parsed::Complete(h) => h,
        Parsed::Bad(why) => panic!("refused ({why}): {:?}", String::from_utf8_lossy(bytes)),
        Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
        Parsed::Interim(n) => panic!("interim {n}: {:?}", String::from_utf8_lossy(bytes)),
    }
}

fn bad(bytes: &[u8]) -> &'static str {
    bad_for(bytes, false)
}

fn bad_for(bytes: &[u8], head_request: bool) -> &'static str {
    match parse(bytes, head_request, MAX) {
        Parsed::Bad(why) => why,
        Parsed::Complete(h) => panic!(
            "accepted as {} {:?}: {:?}",
            h.status,
            h.framing,
            String::from_utf8_lossy(bytes)
        ),
        Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
        Parsed::Interim(n) => panic!("interim {n}: {:?}", String::from_utf8_lossy(bytes)),
    }
}

/// The relayed field lines, as text.
fn fields(h: &ResponseHead, buf: &[u8]) -> Vec<String> {
    h.fields
        .iter()
        .map(|&(a, b)| String::from_utf8_lossy(&buf[a as usize..b as usize]).into_owned())
        .collect()
}

#[test]
fn a_plain_response_is_read_with_its_fields_in_place() {
    let buf = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Empty:\r\nX-Pad:  a b  \r\n\r\nhello";
    let h = head(buf);
    assert_eq!(h.status, 200);
    assert_eq!(h.framing, Framing::Length(5));
    assert!(h.keep_alive);
    assert_eq!(h.len, buf.len() - 5);
    assert_eq!(&buf[h.reason.0 as usize..h.reason.1 as usize], b"OK");
    assert_eq!(
        fields(&h, buf),
        ["Content-Type: text/plain", "X-Empty:", "X-Pad:  a b"]
    );
    let parts = h.to_parts(buf);
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers.len(), 3);
    assert_eq!(parts.headers["x-pad"], "a b");
    assert_eq!(parts.headers["x-empty"], "");
    assert!(parts.extensions.get::<hyper::ext::ReasonPhrase>().is_none());
}

#[test]
fn the_head_is_partial_until_its_blank_line_at_every_cut() {
    let buf = b"\r\nHTTP/1.1 404 Not Found\r\nA: b\r\nContent-Length: 0\r\n\r\n";
    for cut in 0..buf.len() {
        assert!(
            matches!(parse(&buf[..cut], false, MAX), Parsed::Partial),
            "cut at {cut}"
        );
    }
    let h = head(buf);
    assert_eq!((h.status, h.len), (404, buf.len()));
    assert_eq!(&buf[h.reason.0 as usize..h.reason.1 as usize], b"Not Found");
}

#[test]
fn a_bare_lf_anywhere_in_the_head_is_refused_even_before_it_ends() {
    for buf in [
        &b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nA: b\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\r\n\n",
        b"HTTP/1.1 200 OK\r\nA: b\nB: c\r\n",
        b"HTTP/1.1 200 OK\n",
        b"\nHTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\n\n",
    ] {
        assert_eq!(bad(buf), why::BARE_LF, "{:?}", String::from_utf8_lossy(buf));
    }
    // The body is not looked at.
    let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\na\nb\n");
    assert_eq!(h.framing, Framing::Length(4));
}

#[test]
fn heads_past_the_limit_are_refused() {
    let mut buf = b"HTTP/1.1 200 OK\r\n".to_vec();
    buf.extend_from_slice(format!("A: {}\r\n", "x".repeat(200)).as_bytes());
    assert!(matches!(
        parse(&buf, false, 100),
        Parsed::Bad(why::TOO_LARGE)
    ));
    buf.extend_from_slice(b"\r\n");
    assert!(matches!(
        parse(&buf, false, 100),
        Parsed::Bad(why::TOO_LARGE)
    ));
    assert!(matches!(parse(&buf, false, 1000), Parsed::Complete(_)));
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=crate::wire::MAX_HEADERS {
        many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(bad(&many), why::TOO_LARGE);
}

#[test]
fn interim_heads_are_skipped_and_101_refused() {
    let buf = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
    assert!(matches!(parse(buf, false, MAX), Parsed::Interim(25)));
    let hints =
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nContent-Length: x\r\n\r\n";
    assert!(matches!(parse(hints, false, MAX), Parsed::Interim(n) if n == hints.len()));
    assert_eq!(
        bad(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
        why::SWITCHING
    );
    assert_eq!(bad(b"HTTP/1.1 099 Low\r\n\r\n"), why::STATUS);
    assert_eq!(bad(b"HTTP/1.1 20 OK\r\n\r\n"), why::STATUS);
    assert_eq!(
        head(b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n").status,
        999
    );
}

#[test]
fn transfer_encoding_must_be_exactly_chunked_and_wins_over_content_length() {
    let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(h.framing, Framing::Chunked);
    assert!(h.fields.is_empty());
    assert_eq!(
        head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding:  Chunked \r\n\r\n").framing,
        Framing::Chunked
    );
    for te in [
        "gzip",
        "gzip, chunked",
        "chunked, gzip",
        "chunked, chunked",
        "chunked,",
        ", chunked",
        "identity",
        "chunkedchunked",
        "",
    ] {
        let buf = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_eq!(bad(buf.as_bytes()), why::TRANSFER_CODING, "{te:?}");
    }
    assert_eq!(
        bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
        why::TRANSFER_CODING
    );
    assert_eq!(
        bad(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        why::TE_ON_HTTP10
    );
    for buf in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\nX: y\r\n\r\n",
    ] {
        let h = head(buf);
        assert_eq!(h.framing, Framing::Chunked);
        assert_eq!(fields(&h, buf), ["X: y"]);
        // Both framings: the connection is not reused (review 18 F3).
        assert!(!h.keep_alive);
    }
}

#[test]
fn content_length_is_digits_and_one_number() {
    for (value, n) in [("5", 5), ("005", 5), ("5, 5", 5), (" 5 ,5", 5), ("0", 0)] {
        let buf = format!("HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n");
        let h = head(buf.as_bytes());
        assert_eq!(h.framing, Framing::Length(n), "{value:?}");
        assert!(h.fields.is_empty());
    }
    let two = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n";
    assert_eq!(head(two).framing, Framing::Length(5));
    for value in [
        "+5",
        "-5",
        "0x5",
        "5a",
        "",
        "5,",
        ",5",
        "5, 6",
        "5 5",
        "18446744073709551614",
        "99999999999999999999",
    ] {
        let buf = format!("HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n");
        assert_eq!(bad(buf.as_bytes()), why::CONTENT_LENGTH, "{value:?}");
    }
    assert_eq!(
        head(b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551613\r\n\r\n").framing,
        Framing::Length(u64::MAX - 2)
    );
    assert_eq!(
        bad(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        why::CONTENT_LENGTH
    );
    // Checked even where no body follows (llhttp does; hyper does not look).
    assert_eq!(
        bad_for(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", true),
        why::CONTENT_LENGTH
    );
    assert_eq!(
        bad(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1, 2\r\n\r\n"),
        why::CONTENT_LENGTH
    );
}

#[test]
fn no_body_after_204_304_and_head_and_the_length_a_head_keeps() {
    let r204 = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nA: b\r\n\r\n";
    let h = head(r204);
    assert_eq!(h.framing, Framing::Empty);
    assert_eq!(fields(&h, r204), ["A: b"]);
    let h = head_for(r204, true);
    assert_eq!(fields(&h, r204), ["A: b"]);
    let r304 = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\n";
    let h = head(r304);
    assert_eq!(h.framing, Framing::Empty);
    assert!(h.keep_alive);
    assert_eq!(fields(&h, r304), ["ETag: \"x\""]);
    // hyper's server writes a HEAD's Content-Length, one number.
    let h = head_for(r304, true);
    assert_eq!(fields(&h, r304), ["Content-Length: 5", "ETag: \"x\""]);
    let list = b"HTTP/1.1 200 OK\r\nContent-Length: 7 , 7\r\ncontent-length: 7\r\n\r\n";
    let h = head_for(list, true);
    assert_eq!(h.framing, Framing::Empty);
    assert_eq!(fields(&h, list), ["Content-Length: 7"]);
    let r205 = b"HTTP/1.1 205 Reset Content\r\nContent-Length: 0\r\n\r\n";
    assert!(head_for(r205, true).fields.is_empty());
    assert_eq!(head(r205).framing, Framing::Length(0));
    // Chunked to a HEAD: no body, no length.
    let te = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
    let h = head_for(te, true);
    assert_eq!(h.framing, Framing::Empty);
    assert!(h.fields.is_empty());
    let none = head_for(b"HTTP/1.1 200 OK\r\n\r\n", true);
    assert_eq!(none.framing, Framing::Empty);
    assert!(none.keep_alive);
}

#[test]
fn a_body_until_the_close_ends_the_connection() {
    let h = head(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n");
    assert_eq!(h.framing, Framing::UntilClose);
    assert!(!h.keep_alive);
    let h = head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(h.framing, Framing::UntilClose);
    assert!(!h.keep_alive);
}

#[test]
fn keep_alive_follows_version_and_connection() {
    let ka = |b: &[u8]| head(b).keep_alive;
    assert!(ka(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(!ka(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!ka(
        b"HTTP/1.1 200 OK\r\nConnection: x-a, CLOSE\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!ka(b"HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"));
    assert!(!ka(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(ka(
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!ka(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert_eq!(bad(b"HTTP/2.0 200 OK\r\n\r\n"), why::VERSION);
    assert_eq!(bad(b"HTTP/1.2 200 OK\r\n\r\n"), why::VERSION);
    assert_eq!(bad(b"RTSP/1.0 200 OK\r\n\r\n"), why::VERSION);
}

#[test]
fn hop_by_hop_fields_and_those_connection_names_are_not_relayed() {
    let buf = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: X-Sum\r\nUpgrade: h2c\r\nx-secret: 1\r\nX-Kept: 2\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\n\r\n";
    let h = head(buf);
    assert_eq!(
        fields(&h, buf),
        ["X-Kept: 2", "Date: Sun, 06 Nov 1994 08:49:37 GMT"]
    );
    let parts = h.to_parts(buf);
    assert_eq!(parts.headers.len(), 2);
}

#[test]
fn the_reason_is_the_servers_own() {
    let buf = b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n";
    let h = head(buf);
    assert_eq!(
        &buf[h.reason.0 as usize..h.reason.1 as usize],
        b"Fine Thanks"
    );
    let parts = h.to_parts(buf);
    let r = parts.extensions.get::<hyper::ext::ReasonPhrase>().unwrap();
    assert_eq!(r.as_bytes(), b"Fine Thanks");
    for (buf, reason) in [
        (&b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"[..], &b""[..]),
        (b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", b""),
        (
            b"HTTP/1.1 500 \xe9t\xe9\r\nContent-Length: 0\r\n\r\n",
            b"\xe9t\xe9",
        ),
    ] {
        let h = head(buf);
        assert_eq!(&buf[h.reason.0 as usize..h.reason.1 as usize], reason);
    }
}

#[test]
fn malformed_heads_are_refused_with_hypers_words() {
    for (buf, why) in [
        (&b"HTTP/1.1  200 OK\r\n\r\n"[..], why::STATUS),
        (b"HTTP/1.1 200  OK\r\nContent-Length: 0\r\n\r\n", ""),
        (b"HTTP/1.1\t200 OK\r\n\r\n", why::VERSION),
        (b"HTTP/1.1 200 OK\r\nA : b\r\n\r\n", why::HEADER),
        (b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", why::HEADER),
        (b"HTTP/1.1 200 OK\r\n A: b\r\n\r\n", why::HEADER),
        (b"HTTP/1.1 200 OK\r\nA\x01: b\r\n\r\n", why::HEADER),
        (b"HTTP/1.1 200 OK\r\nA: b\x01\r\n\r\n", why::HEADER),
        (b"HTTP/1.1 200 OK\r\nA: b\rC: d\r\n\r\n", why::HEADER),
        (b"HTTP/1.1 200 OK\rA: b\r\n\r\n", why::STATUS),
        (b"HTTP/01.1 200 OK\r\n\r\n", why::VERSION),
        (b"HTTP/1.1 2000 OK\r\n\r\n", why::STATUS),
        (b"HTTP/1.1 OK\r\n\r\n", why::STATUS),
        (b"ICE/1.0 200 OK\r\n\r\n", why::VERSION),
        (b"HTTP/0.9 200 OK\r\n\r\n", why::VERSION),
        (b"HTTP/1.1 200 OK\r\nA: b\r\n\r", ""),
    ] {
        match parse(buf, false, MAX) {
            Parsed::Bad(w) => assert_eq!(w, why, "{:?}", String::from_utf8_lossy(buf)),
            // Two spaces before the reason: the reason starts with a space
            // (httparse, hyper and llhttp read it so).
            Parsed::Complete(h) if why.is_empty() => {
                assert_eq!(&buf[h.reason.0 as usize..h.reason.1 as usize], b" OK")
            }
            Parsed::Partial if why.is_empty() => {}
            _ => panic!("{:?}", String::from_utf8_lossy(buf)),
        }
    }
}

// ---------------------------------------------------------------------------
// llhttp's response cases, at unit level: what tests/http_responses.rs
// asks of a real Pocket, asked of parse + Chunked.
// ---------------------------------------------------------------------------

/// What parse + Chunked make of a whole server output (then the close).
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Refused (a 502, or the client's response cut).
    Refused(&'static str),
    /// Relayed complete: status and body.
    Relayed(u16, Vec<u8>),
    /// The head was relayed but the body did not end before the close.
    Cut,
}

/// A chunked body's data, once `Chunked` has accepted it.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = b.iter().position(|&c| c == b';' || c == b'\r').unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap(), 16).unwrap();
        let line = b.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[line..line + size]);
        b = &b[line + size + 2..];
    }
}

fn run_wire(bytes: &[u8], head_request: bool) -> Outcome {
    let mut pos = 0;
    let mut interim = 0;
    loop {
        match parse(&bytes[pos..], head_request, MAX) {
            Parsed::Interim(n) => {
                interim += 1;
                if interim > 16 {
                    return Outcome::Refused("too many interim");
                }
                pos += n;
            }
            Parsed::Partial => return Outcome::Refused("closed before a complete head"),
            Parsed::Bad(why) => return Outcome::Refused(why),
            Parsed::Complete(h) => {
                let rest = &bytes[pos + h.len..];
                return match h.framing {
                    Framing::Empty => Outcome::Relayed(h.status, Vec::new()),
                    Framing::UntilClose => Outcome::Relayed(h.status, rest.to_vec()),
                    Framing::Length(n) => match rest.get(..n as usize) {
                        Some(body) => Outcome::Relayed(h.status, body.to_vec()),
                        None => Outcome::Cut,
                    },
                    Framing::Chunked => match Chunked::new().feed(rest) {
                        Step::Done(n) => Outcome::Relayed(h.status, dechunk(&rest[..n])),
                        Step::More => Outcome::Cut,
                        Step::Bad(why) => Outcome::Refused(why),
                    },
                };
            }
        }
    }
}

/// tests/common/corpus.rs's reading of an llhttp ```http block.
fn llhttp_input(block: &str) -> Vec<u8> {
    use regex::{Captures, Regex};
    let s = Regex::new(r"\\(\r\n|\r|\n)")
        .unwrap()
        .replace_all(block, "");
    let s = Regex::new(r"\r\n|\r|\n").unwrap().replace_all(&s, "\r\n");
    let s = s
        .replace("\\r", "\r")
        .replace("\\n", "\n")
        .replace("\\t", "\t")
        .replace("\\f", "\x0c");
    let code = |radix: u32| {
        move |c: &Captures| {
            let n = u32::from_str_radix(&c[1], radix).unwrap_or(0xfffd);
            char::from_u32(n).unwrap_or('\u{fffd}').to_string()
        }
    };
    let s = Regex::new(r"\\x([0-9a-fA-F]+)")
        .unwrap()
        .replace_all(&s, code(16));
    let s = Regex::new(r"\\([0-7]{1,3})")
        .unwrap()
        .replace_all(&s, code(8));
    s.into_owned().into_bytes()
}

/// llhttp's verdict on a case (tests/http_responses.rs's rules): None if
/// malformed, else (status, body, complete).
fn llhttp_verdict(meta: &str, name: &str, log: &[&str]) -> Option<(u16, Vec<u8>, bool)> {
    let field = |line: &str, key: &str| -> String {
        line.split(' ')
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_default()
            .to_string()
    };
    let mut target: Option<(u16, u32, u64)> = None;
    let (mut body, mut complete, mut error) = (Vec::new(), false, false);
    for l in log {
        if l.contains(" headers complete ") {
            if target.is_some() {
                break;
            }
            let status: u16 = field(l, "status=").parse().unwrap();
            if status >= 200 || status == 101 {
                let flags = u32::from_str_radix(&field(l, "flags="), 16).unwrap();
                let length = field(l, "content_length=").parse().unwrap();
                target = Some((status, flags, length));
            }
        } else if l.contains(" message complete") {
            if target.is_some() {
                complete = true;
                break;
            }
        } else if l.contains(" error code=") {
            let code: u32 = field(l, "code=").parse().unwrap();
            error = !(21..=23).contains(&code);
        } else if let Some(v) = l.split_once("span[body]=").map(|x| x.1) {
            if target.is_some() {
                match v {
                    "lf" => body.push(b'\n'),
                    "cr" => body.push(b'\r'),
                    v => body.extend_from_slice(&v.as_bytes()[1..v.len() - 1]),
                }
            }
        }
    }
    let ty = meta.split("\"type\"").nth(1).unwrap_or("");
    let ty = ty.split('"').nth(1).unwrap_or("");
    let lenient = ty.contains("lenient") || name.to_ascii_lowercase().contains("lenient");
    let lenient_after =
        ty == "response-lenient-data-after-close" || ty == "response-lenient-keep-alive";
    if (lenient && !lenient_after) || (error && !complete) {
        return None;
    }
    let (status, flags, length) = target?;
    if status == 101 {
        return None;
    }
    let until_close = flags & 0x8 == 0 && !(flags & 0x20 != 0 && length > 0);
    Some((status, body, complete || until_close))
}

#[test]
fn llhttp_response_cases_are_never_accepted_where_llhttp_errs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/llhttp/response");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    let (mut cases, mut refused_valid) = (0, Vec::new());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let (mut heading, mut meta, mut input) = (String::new(), String::new(), None);
        let mut i = 0;
        while i < lines.len() {
            let l = lines[i];
            if l.starts_with('#') {
                heading = l.trim_start_matches('#').trim().to_string();
                meta.clear();
            } else if let Some(m) = l.strip_prefix("<!-- meta=") {
                meta = m.to_string();
            } else if l == "```http" || l == "```log" {
                let start = i + 1;
                i = start;
                while lines[i] != "```" {
                    i += 1;
                }
                let block = &lines[start..i];
                if l == "```http" {
                    input = Some(llhttp_input(&block.join("\n")));
                } else {
                    let mut bytes = input.take().unwrap();
                    let head_request = meta.contains("\"skipBody\": true");
                    let name =
                        format!("{}: {heading}", path.file_name().unwrap().to_string_lossy());
                    cases += 1;
                    match llhttp_verdict(&meta, &heading, block) {
                        None => {
                            bytes.extend_from_slice(b"\r\n\r\n");
                            let got = run_wire(&bytes, head_request);
                            assert!(
                                !matches!(got, Outcome::Relayed(..)),
                                "{name}: llhttp refuses it, wire relayed {got:?}"
                            );
                        }
                        Some((_, _, false)) => {
                            let got = run_wire(&bytes, head_request);
                            assert!(
                                !matches!(got, Outcome::Relayed(..)),
                                "{name}: cut by the close, wire relayed {got:?}"
                            );
                        }
                        Some((status, body, true)) => match run_wire(&bytes, head_request) {
                            Outcome::Relayed(s, b) => {
                                assert_eq!(s, status, "{name}");
                                assert_eq!(
                                    String::from_utf8_lossy(&b),
                                    String::from_utf8_lossy(&body),
                                    "{name}"
                                );
                            }
                            other => refused_valid.push(format!("{name}: {other:?}")),
                        },
                    }
                }
            }
            i += 1;
        }
    }
    assert!(cases > 50, "{cases} cases");
    // Valid for llhttp, refused here: only those tests/http_responses.rs
    // lets a strict proxy refuse (STRICT_REFUSALS: RTSP, ICE, HTTP/0.9 and
    // transfer codings other than chunked).
    let allowed = [
        "sample.md: RTSP response",
        "sample.md: ICE response",
        "sample.md: HTTP version 0.9",
        "transfer-encoding.md: `chunked` before other transfer-encoding",
        "transfer-encoding.md: multiple transfer-encoding where chunked is not the last one",
        "transfer-encoding.md: `chunkedchunked` transfer-encoding does not enable chunked enconding",
    ];
    let unexpected: Vec<_> = refused_valid
        .iter()
        .filter(|r| !allowed.iter().any(|a| r.starts_with(&format!("{a}:"))))
        .collect();
    assert!(
        unexpected.is_empty(),
        "valid cases refused: {unexpected:#?}"
    );
}

/// A verdict as text, for comparing two readings of the same bytes.
fn verdict(p: Parsed, buf: &[u8]) -> String {
    match p {
        Parsed::Complete(h)
            if h.has_date
                != fields(&h, buf)
                    .iter()
                    .any(|f| f.to_ascii_lowercase().starts_with("date:")) =>
        {
            panic!("has_date {} for {:?}", h.has_date, fields(&h, buf))
        }
        Parsed::Complete(h) => format!(
            "complete {} {:?} keep={} len={} reason={:?} date={} fields={:?}",
            h.status,
            h.framing,
            h.keep_alive,
            h.len,
            h.reason,
            h.has_date,
            fields(&h, buf)
        ),
        Parsed::Interim(n) => format!("interim {n}"),
        Parsed::Partial => "partial".into(),
        Parsed::Bad(why) => format!("bad {why}"),
    }
}

/// The quick reading of a whole CRLF head (`parse_into`'s first try)
/// gives every verdict the checked reading gives: on heads of each
/// shape, every one-byte change to a byte that matters to HTTP/1
/// framing, and every cut, for GET and HEAD.
#[test]
fn the_quick_reading_agrees_with_the_checked_one() {
    let heads: [&[u8]; 10] = [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-origin: A\r\ncontent-length: 32\r\ndate: Mon, 30 Nov 2026 13:26:55 GMT\r\n\r\nbody",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"\r\n\r\nHTTP/1.0 204 No Content\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\nDate: x\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5, 5\r\nKeep-Alive: 5\r\nTE: x\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200\r\nConnection: close, date\r\nDate: y\r\nUpgrade: z\r\nProxy-Connection: q\r\nTrailer: t\r\n\r\n",
        b"HTTP/1.1 205 Reset\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 999 X\r\nA:\r\nB: \t\r\n\r\n",
        b"HTTP/1.1 101 Switching\r\nUpgrade: ws\r\n\r\n",
    ];
    let swaps = [
        b'\r', b'\n', b' ', b'\t', b':', b',', b'0', b'a', 0x7f, 0x80, 0,
    ];
    let mut compared = 0;
    for base in heads {
        for c in crate::wire::mutations::variants(base, &swaps) {
            for head_request in [false, true] {
                for max in [MAX, 40] {
                    let quick = verdict(parse_into(&c, head_request, max, Vec::new()), &c);
                    let checked = verdict(parse_checked(&c, head_request, max, Vec::new()), &c);
                    assert_eq!(quick, checked, "{:?}", String::from_utf8_lossy(&c));
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 10_000, "{compared}");
}
