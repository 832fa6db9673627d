//! Malformed and edge-case HTTP/1 responses from a real corpus
//! (tests/corpus/README.md) plus RFC 9112 §6.3 cases written here, each
//! sent by a raw origin through one real Pocket process to a raw client.
//!
//! How a case runs: the client sends `GET /case/<n>` (or `HEAD` for a
//! response to HEAD) to Pocket; the lane's raw origin reads one request
//! head, writes exactly the case's bytes and closes (FIN). The client reads
//! until it has a complete response or Pocket closes, then sends a follow-up
//! `GET /fresh/<n>`: on the same connection if it is still open (a
//! keep-alive connection must stay usable), else on a new one. The origin
//! answers it with a fresh, well-framed `200 fresh <n>`, so bytes left over
//! from the case (a second pipelined response, a body after a 204) cannot
//! pass for that answer unnoticed.
//!
//! What a user must see:
//! - a malformed response (llhttp error): a 502, or a connection closed
//!   before a complete response; never a 2xx relayed as if it were fine;
//! - a valid response: the same status and exactly the body the origin
//!   framed (concatenated `span[body]` values of llhttp's log), framed
//!   consistently (no Content-Length that disagrees with the body), under
//!   Pocket's own `HTTP/1.1` status line (RFC 9112 §2.3);
//! - a response cut short by the origin's close: the client sees the cut
//!   (closed before a complete response) or a 502, never a complete answer;
//! - whatever the case, the follow-up is answered by the origin's fresh
//!   response and Pocket stays up.
//!
//! How an llhttp case gets its verdict from its ```log block: the response
//! under test is the first final one (1xx before it are skipped, as a
//! client does). An `error code=...` before that response completes, or a
//! lenient parsing mode, makes it malformed; an error or leniency about
//! bytes after it (data after `Connection: close`) does not, and those
//! bytes count like a pipelined response: they must not reach the
//! follow-up. A 101 answers a client that asked for no upgrade, so it is
//! malformed too. A response whose body llhttp saw end is valid; one whose
//! body is framed (Content-Length, chunked) but ends with the input is cut
//! by the close (llhttp's runner never signals the end of input, so a body
//! delimited by the close is whole). `skipBody` cases answer a HEAD.
//!
//! Cases run on lanes (a listener whose pool is a raw origin of its own),
//! one at a time per lane. Every wait is for an event with a deadline; a
//! case Pocket leaves hanging is reported as "hung", not a panic mid-run.
//!
//! Print every case: `HTTP_RESPONSES_VERBOSE=1 cargo test --test
//! http_responses -- --nocapture`.

mod common;
use common::corpus::*;
use common::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Pocket answers every case in milliseconds; this only bounds a case that
/// Pocket leaves hanging (which the summary then reports as "hung").
const CASE_DEADLINE: Duration = Duration::from_secs(30);

/// Cases run on this many lanes at once.
const LANES: usize = 8;

// ---------------------------------------------------------------------------
// Known gaps: cases Pocket does not handle as a user needs today, each with
// exactly how it fails. The test asserts they still fail exactly that way,
// so a fix (or a change for the worse) shows up as a failure asking to
// update this list.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Problem {
    /// A malformed or cut-short response reached the client as a complete
    /// answer (not a 502).
    Relayed,
    /// A valid response got a 502 or was cut before it was complete.
    Refused,
    /// Complete, with another status than the origin's (or, where a 502 was
    /// due, another 5xx).
    Status,
    /// Complete, with another body than the origin framed.
    Body,
    /// The status line is not Pocket's own `HTTP/1.1`.
    Version,
    /// The relayed head frames its body inconsistently (Content-Length and
    /// chunked together, or Content-Length values that disagree).
    Framing,
    /// More bytes followed the complete response on the client connection.
    Leftover,
    /// The follow-up request was not answered by the fresh origin response.
    FollowUp,
    /// Nothing conclusive within the deadline.
    Hung,
}

use Problem::*;

const KNOWN_GAPS: &[(&str, &[Problem])] = &[
    // None since Pocket's own HTTP/1 path reads chunk-size lines strictly
    // (wire/chunked.rs): spaces after the size, "2;" (an empty extension)
    // and an unbalanced quote, which hyper's decoder tolerated, now cut
    // the response before it is whole.
];

/// Responses llhttp parses but a strict proxy may refuse with a 502: both a
/// 502 and the faithful relay pass. (nginx answers 502 "upstream sent
/// unknown Transfer-Encoding" or "upstream sent no valid HTTP/1.0 header"
/// to these.)
const STRICT_REFUSALS: &[(&str, &str)] = &[
    (
        "llhttp/sample.md: RTSP response",
        "not HTTP: an RTSP status line",
    ),
    (
        "llhttp/sample.md: ICE response",
        "not HTTP: an ICE status line",
    ),
    (
        "llhttp/sample.md: HTTP version 0.9",
        "HTTP/0.9 has no status line; RFC 9112 §2.3 knows HTTP/1.x only",
    ),
    (
        "llhttp/transfer-encoding.md: `chunked` before other transfer-encoding",
        "unknown transfer coding (deflate) after chunked",
    ),
    (
        "llhttp/transfer-encoding.md: multiple transfer-encoding where chunked is not the last one",
        "unknown transfer coding (identity, removed by RFC 7230)",
    ),
    (
        "llhttp/transfer-encoding.md: `chunkedchunked` transfer-encoding does not enable chunked enconding",
        "unknown transfer coding (chunkedchunked)",
    ),
];

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verdict {
    /// Malformed: a 502 or a connection closed before a complete response.
    Refuse,
    /// Valid: relayed with this status and body.
    Relay(u16, &'static [u8]),
    /// Either a 502 or the faithful relay (status, body).
    RelayOr502(u16, &'static [u8]),
    /// Cut short by the origin's close: the client must see the cut (or a
    /// 502), never a complete response.
    Cut,
}

/// What the case expects, with the body owned (llhttp's comes from a log).
#[derive(Clone, Debug)]
enum Expect {
    Refuse,
    Relay {
        status: u16,
        body: Vec<u8>,
        or_502: bool,
    },
    Cut,
}

struct Case {
    /// "source/file: name", unique.
    id: String,
    /// Row of the summary table.
    group: &'static str,
    expect: Expect,
    /// Exactly what the origin writes before it closes.
    bytes: Vec<u8>,
    /// The client's method: HEAD for responses to HEAD, else GET.
    head: bool,
}

/// Cases the llhttp corpus lacks (RFC 9112 §6.3 message body length, 1xx,
/// version): (name, origin bytes, verdict, the client's method).
const EXTRA_CASES: &[(&str, &[u8], Verdict, &str)] = &[
    (
        "Content-Length 5 and chunked (chunked wins)",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
        Verdict::RelayOr502(200, b"hello world"),
        "GET",
    ),
    (
        "Content-Length 40 and chunked (chunked wins)",
        b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
        Verdict::RelayOr502(200, b"hello world"),
        "GET",
    ),
    (
        "chunked then Content-Length 5",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
        Verdict::RelayOr502(200, b"hello world"),
        "GET",
    ),
    (
        "two different Content-Length lines",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        Verdict::Refuse,
        "GET",
    ),
    (
        "two different Content-Length values in one line",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
        Verdict::Refuse,
        "GET",
    ),
    (
        "Content-Length 5, 5 in one line",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
        Verdict::RelayOr502(200, b"hello"),
        "GET",
    ),
    (
        "two equal Content-Length lines",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        Verdict::RelayOr502(200, b"hello"),
        "GET",
    ),
    (
        "Content-Length with a plus sign",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        Verdict::Refuse,
        "GET",
    ),
    (
        "Content-Length negative",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
        Verdict::Refuse,
        "GET",
    ),
    (
        "Content-Length in hex",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello",
        Verdict::Refuse,
        "GET",
    ),
    (
        "Content-Length with trailing letters",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5a\r\n\r\nhello",
        Verdict::Refuse,
        "GET",
    ),
    (
        "Content-Length empty",
        b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nhello",
        Verdict::Refuse,
        "GET",
    ),
    (
        "Content-Length with leading zeros",
        b"HTTP/1.1 200 OK\r\nContent-Length: 005\r\n\r\nhello",
        Verdict::RelayOr502(200, b"hello"),
        "GET",
    ),
    (
        "Transfer-Encoding gzip without chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot really gzip",
        Verdict::Refuse,
        "GET",
    ),
    (
        "Transfer-Encoding gzip, chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Verdict::Refuse,
        "GET",
    ),
    (
        "Transfer-Encoding chunked, chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Verdict::Refuse,
        "GET",
    ),
    (
        "chunked on an HTTP/1.0 response",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Verdict::RelayOr502(200, b"hello"),
        "GET",
    ),
    (
        "body shorter than its Content-Length, then close",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        Verdict::Cut,
        "GET",
    ),
    (
        "chunked body without its last chunk, then close",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        Verdict::Cut,
        "GET",
    ),
    (
        "head without its blank line, then close",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
        Verdict::Refuse,
        "GET",
    ),
    (
        "no Content-Length, no chunked: body until close",
        b"HTTP/1.1 200 OK\r\n\r\nhello world",
        Verdict::Relay(200, b"hello world"),
        "GET",
    ),
    (
        "101 Switching Protocols the client did not ask for",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nhello",
        Verdict::Refuse,
        "GET",
    ),
    (
        "100 Continue, then 200",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        Verdict::Relay(200, b"hello"),
        "GET",
    ),
    (
        "103 Early Hints, then 200",
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        Verdict::Relay(200, b"hello"),
        "GET",
    ),
    (
        "100 Continue and 103 Early Hints, then chunked 200",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Verdict::Relay(200, b"hello"),
        "GET",
    ),
    (
        "HTTP/1.0 response with Content-Length",
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        Verdict::Relay(200, b"hello"),
        "GET",
    ),
    (
        "HTTP/1.0 response, body until close",
        b"HTTP/1.0 200 OK\r\n\r\nhello",
        Verdict::Relay(200, b"hello"),
        "GET",
    ),
    (
        "HTTP/1.0 404",
        b"HTTP/1.0 404 Not Found\r\nContent-Length: 4\r\n\r\nnope",
        Verdict::Relay(404, b"nope"),
        "GET",
    ),
    (
        "204 with Content-Length",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        Verdict::RelayOr502(204, b""),
        "GET",
    ),
    (
        "204 with a body",
        b"HTTP/1.1 204 No Content\r\n\r\nhello",
        Verdict::Relay(204, b""),
        "GET",
    ),
    (
        "204 with Content-Length and a body",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
        Verdict::RelayOr502(204, b""),
        "GET",
    ),
    (
        "304 with Content-Length",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        Verdict::Relay(304, b""),
        "GET",
    ),
    (
        "304 with a body",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello",
        Verdict::Relay(304, b""),
        "GET",
    ),
    (
        "HEAD: Content-Length and no body",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        Verdict::Relay(200, b""),
        "HEAD",
    ),
    (
        "HEAD: chunked and no body",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        Verdict::Relay(200, b""),
        "HEAD",
    ),
    (
        "HEAD: Content-Length and a body it must not have",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        Verdict::Relay(200, b""),
        "HEAD",
    ),
];

fn extra_cases() -> Vec<Case> {
    EXTRA_CASES
        .iter()
        .map(|(name, bytes, verdict, method)| {
            let (group, expect) = match *verdict {
                Verdict::Refuse => ("RFC 9112 extra: refuse", Expect::Refuse),
                Verdict::Relay(status, body) => (
                    "RFC 9112 extra: relay",
                    Expect::Relay {
                        status,
                        body: body.to_vec(),
                        or_502: false,
                    },
                ),
                Verdict::RelayOr502(status, body) => (
                    "RFC 9112 extra: relay or 502",
                    Expect::Relay {
                        status,
                        body: body.to_vec(),
                        or_502: true,
                    },
                ),
                Verdict::Cut => ("RFC 9112 extra: cut by close", Expect::Cut),
            };
            Case {
                id: format!("extra: {name}"),
                group,
                expect,
                bytes: bytes.to_vec(),
                head: *method == "HEAD",
            }
        })
        .collect()
}

// --- llhttp ---------------------------------------------------------------

/// One `span[body]` value of llhttp's log: `lf`, `cr`, or the raw bytes
/// between quotes (llhttp's test logger does not escape them).
fn log_body_span(line: &str) -> Option<Vec<u8>> {
    let v = line.split_once("span[body]=")?.1;
    Some(match v {
        "lf" => b"\n".to_vec(),
        "cr" => b"\r".to_vec(),
        v => v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("unexpected body span {line:?}"))
            .as_bytes()
            .to_vec(),
    })
}

fn log_field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// llhttp's F_CHUNKED and F_CONTENT_LENGTH flags.
const F_CHUNKED: u32 = 0x8;
const F_CONTENT_LENGTH: u32 = 0x20;

fn llhttp_cases() -> Vec<Case> {
    let dir = corpus_dir().join("llhttp/response");
    let mut out = Vec::new();
    for path in sorted_files(&dir, "md") {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut seen = HashMap::new();
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
                    let bytes = input.take().expect("log block without http block");
                    let id = unique_id(&mut seen, format!("llhttp/{file}: {heading}"));
                    out.push(llhttp_case(id, &file, &heading, &meta, bytes, block));
                }
            }
            i += 1;
        }
    }
    out
}

fn llhttp_case(
    id: String,
    file: &str,
    name: &str,
    meta: &str,
    bytes: Vec<u8>,
    log: &[&str],
) -> Case {
    let ty = meta.split("\"type\"").nth(1).unwrap_or("");
    let ty = ty.split('"').nth(1).unwrap_or("");
    // A "skipBody" callback is what a client does for a response to HEAD.
    let head = meta.contains("\"skipBody\": true");
    // The response under test is the first final one (1xx come before).
    let mut target: Option<(u16, u32, u64)> = None;
    let (mut body, mut complete, mut error) = (Vec::new(), false, false);
    for l in log {
        if l.contains(" headers complete ") {
            if target.is_some() {
                break; // a second (pipelined) response: not ours
            }
            let status: u16 = log_field(l, "status=").parse().unwrap();
            if status >= 200 || status == 101 {
                let flags = u32::from_str_radix(log_field(l, "flags="), 16).unwrap();
                let length = log_field(l, "content_length=").parse().unwrap();
                target = Some((status, flags, length));
            }
        } else if l.contains(" message complete") {
            if target.is_some() {
                complete = true;
                break;
            }
        } else if l.contains(" error code=") {
            // Pauses on CONNECT/Upgrade (21-23) are not errors; the 101
            // they follow is judged below.
            let code: u32 = log_field(l, "code=").parse().unwrap();
            error = !(21..=23).contains(&code);
        } else if let Some(span) = log_body_span(l) {
            if target.is_some() {
                body.extend(span);
            }
        }
    }
    // Leniencies about bytes after a complete response (data after
    // `Connection: close`, keep-alive) do not make that response malformed.
    let lenient = ty.contains("lenient") || name.to_ascii_lowercase().contains("lenient");
    let lenient_after =
        ty == "response-lenient-data-after-close" || ty == "response-lenient-keep-alive";
    let malformed = (lenient && !lenient_after) || (error && !complete) || target.is_none();
    let (group, expect) = match target {
        _ if malformed => ("llhttp malformed", Expect::Refuse),
        Some((101, _, _)) => ("llhttp unsolicited 101", Expect::Refuse),
        Some((status, flags, length)) => {
            // llhttp's test runner never signals the end of input, so a
            // body delimited by the close has no "message complete".
            let until_close =
                flags & F_CHUNKED == 0 && !(flags & F_CONTENT_LENGTH != 0 && length > 0);
            if complete || until_close {
                let or_502 = STRICT_REFUSALS.iter().any(|(s, _)| *s == id);
                let group = if file == "pausing.md" {
                    "llhttp pausing (plain)"
                } else if or_502 {
                    "llhttp valid, strict 502 ok"
                } else {
                    "llhttp valid"
                };
                (
                    group,
                    Expect::Relay {
                        status,
                        body,
                        or_502,
                    },
                )
            } else {
                ("llhttp cut by close", Expect::Cut)
            }
        }
        None => unreachable!(),
    };
    let mut bytes = bytes;
    if matches!(expect, Expect::Refuse) && group == "llhttp malformed" {
        // llhttp stops at the first bad byte, so its inputs often end right
        // after it (a head without its blank line). End them with a blank
        // line so Pocket judges the bytes, not just the early close. Bytes
        // after llhttp's error cannot change llhttp's verdict.
        bytes.extend_from_slice(b"\r\n\r\n");
    }
    Case {
        id,
        group,
        expect,
        bytes,
        head,
    }
}

// ---------------------------------------------------------------------------
// The raw origin and the raw client
// ---------------------------------------------------------------------------

/// One lane's origin: for each request head, `/case/<n>` gets case n's
/// bytes and then the close; `/fresh/<tag>` gets `200 fresh <tag>` and the
/// connection stays open for the next head.
async fn serve_origin(listener: TcpListener, cases: Arc<Vec<Case>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(origin_conn(stream, cases.clone()));
    }
}

async fn origin_conn(mut stream: TcpStream, cases: Arc<Vec<Case>>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end + 4;
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let target = head.split(' ').nth(1).unwrap_or("");
        if let Some(n) = target.strip_prefix("/case/") {
            let case = &cases[n.parse::<usize>().unwrap()];
            let _ = stream.write_all(&case.bytes).await;
            let _ = stream.shutdown().await;
            // Wait for Pocket's close before dropping the socket, so that
            // nothing unread turns our FIN into a reset.
            let mut sink = [0u8; 1024];
            let until = Instant::now() + Duration::from_secs(30);
            while let Ok(Ok(n)) =
                tokio::time::timeout_at(until.into(), stream.read(&mut sink)).await
            {
                if n == 0 {
                    break;
                }
            }
            return;
        }
        let body = match target.strip_prefix("/fresh/") {
            Some(tag) => format!("fresh {tag}"),
            None => format!("unknown target {target}"),
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A response as the client got it.
#[derive(Debug, Default)]
struct Got {
    version: String,
    status: u16,
    /// Lowercased names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Bytes the response took in the buffer.
    used: usize,
}

impl Got {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A chunked body: (body, bytes used) once complete, with its trailers.
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let (mut body, mut pos) = (Vec::new(), 0);
    loop {
        let line_end = pos + find(&buf[pos..], b"\r\n")?;
        let line = std::str::from_utf8(&buf[pos..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            // Trailer fields, then the blank line.
            loop {
                let end = pos + find(&buf[pos..], b"\r\n")?;
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Some((body, pos));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

/// The first final response in `buf` (1xx skipped), if complete. `eof`:
/// the connection is closed, so a body delimited by the close is whole.
fn parse_response(buf: &[u8], eof: bool, head_request: bool) -> Option<Got> {
    let mut pos = 0;
    loop {
        let end = pos + find(&buf[pos..], b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[pos..end]).into_owned();
        let start = end + 4;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status: u16 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        if (100..200).contains(&status) && status != 101 {
            pos = start;
            continue;
        }
        let mut got = Got {
            version,
            status,
            headers,
            ..Default::default()
        };
        let rest = &buf[start..];
        let te = got.header_values("transfer-encoding").join(",");
        let last_coding = te
            .rsplit(',')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        // Lines or a list of one repeated value frame as that value (RFC
        // 9110 §8.6); the `Framing` check flags them anyway.
        let lengths: Vec<Option<usize>> = got
            .header_values("content-length")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().parse::<usize>().ok())
            .collect();
        let length = match lengths.first() {
            Some(Some(n)) if lengths.iter().all(|l| *l == Some(*n)) => Some(*n),
            _ => None,
        };
        let (body, used) = if head_request || status == 101 || status == 204 || status == 304 {
            (Vec::new(), 0)
        } else if !te.is_empty() && last_coding == "chunked" {
            dechunk(rest)?
        } else if let (Some(n), true) = (length, te.is_empty()) {
            if rest.len() < n {
                return None;
            }
            (rest[..n].to_vec(), n)
        } else if eof {
            (rest.to_vec(), rest.len())
        } else {
            return None;
        };
        got.body = body;
        got.used = start + used;
        return Some(got);
    }
}

/// What one request got back.
#[derive(Debug, Default)]
struct Fetched {
    got: Option<Got>,
    /// Pocket closed the connection.
    eof: bool,
    hung: bool,
    /// Bytes after the complete response.
    extra: usize,
    raw: Vec<u8>,
}

/// Sends `request` and reads until a complete response, the close or the
/// deadline.
async fn fetch(stream: &mut TcpStream, request: &[u8], head_request: bool) -> Fetched {
    let mut f = Fetched::default();
    if stream.write_all(request).await.is_err() {
        f.eof = true;
        return f;
    }
    let until = Instant::now() + CASE_DEADLINE;
    loop {
        if let Some(got) = parse_response(&f.raw, false, head_request) {
            f.extra = f.raw.len() - got.used;
            f.got = Some(got);
            break;
        }
        match tokio::time::timeout_at(until.into(), stream.read_buf(&mut f.raw)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                f.eof = true;
                f.got = parse_response(&f.raw, true, head_request);
                if let Some(g) = &f.got {
                    f.extra = f.raw.len() - g.used;
                }
                break;
            }
            Ok(Ok(_)) => {}
            Err(_) => {
                f.hung = true;
                break;
            }
        }
    }
    f
}

fn request(method: &str, target: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: pocket.test\r\n\r\n").into_bytes()
}

/// What happened to one case.
#[derive(Debug, Default)]
struct Outcome {
    first: Fetched,
    /// The follow-up went on the case's own connection.
    reused: bool,
    follow_up: Fetched,
}

async fn run_case(pocket: SocketAddr, n: usize, case: &Case) -> Outcome {
    let mut stream = TcpStream::connect(pocket).await.expect("connect to pocket");
    let method = if case.head { "HEAD" } else { "GET" };
    let first = fetch(
        &mut stream,
        &request(method, &format!("/case/{n}")),
        case.head,
    )
    .await;
    let announced_close = first.got.as_ref().is_some_and(|g| {
        g.header_values("connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("close"))
    });
    // After a 101 the connection speaks another protocol: no follow-up on it.
    let switched = first.got.as_ref().is_some_and(|g| g.status == 101);
    let reused = first.got.is_some() && !first.eof && !first.hung && !announced_close && !switched;
    if !reused {
        stream = TcpStream::connect(pocket).await.expect("connect to pocket");
    }
    let follow_up = fetch(&mut stream, &request("GET", &format!("/fresh/{n}")), false).await;
    Outcome {
        first,
        reused,
        follow_up,
    }
}

/// Runs cases from the shared queue, one at a time, through one lane.
async fn run_lane(
    cases: Arc<Vec<Case>>,
    next: Arc<AtomicUsize>,
    pocket: SocketAddr,
) -> Vec<(usize, Outcome)> {
    let mut done = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(case) = cases.get(i) else { break };
        done.push((i, run_case(pocket, i, case).await));
    }
    done
}

// ---------------------------------------------------------------------------
// Verdicts and the summary
// ---------------------------------------------------------------------------

/// What the user saw for the case's own request.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum Seen {
    /// A complete response other than a 502.
    Relayed,
    BadGateway,
    /// Closed before a complete response.
    Cut,
    Hung,
}

fn seen(f: &Fetched) -> Seen {
    match &f.got {
        Some(g) if g.status == 502 => Seen::BadGateway,
        Some(_) => Seen::Relayed,
        None if f.hung => Seen::Hung,
        None => Seen::Cut,
    }
}

/// Everything wrong with what the user saw, sorted.
fn problems(case: &Case, n: usize, out: &Outcome) -> Vec<Problem> {
    let mut p = Vec::new();
    let s = seen(&out.first);
    match (&case.expect, s) {
        (_, Seen::Hung) => p.push(Hung),
        (Expect::Refuse | Expect::Cut, Seen::BadGateway | Seen::Cut) => {}
        (Expect::Refuse | Expect::Cut, Seen::Relayed) => {
            let g = out.first.got.as_ref().unwrap();
            p.push(if g.status >= 500 { Status } else { Relayed });
        }
        (Expect::Relay { or_502: true, .. }, Seen::BadGateway) => {}
        (Expect::Relay { .. }, Seen::BadGateway | Seen::Cut) => p.push(Refused),
        (Expect::Relay { status, body, .. }, Seen::Relayed) => {
            let g = out.first.got.as_ref().unwrap();
            if g.status != *status {
                p.push(Status);
            }
            if g.body != *body {
                p.push(Body);
            }
        }
    }
    if let Some(g) = &out.first.got {
        if g.version != "HTTP/1.1" {
            p.push(Version);
        }
        let lengths = g.header_values("content-length");
        let chunked = !g.header_values("transfer-encoding").is_empty();
        let plain = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        if (chunked && !lengths.is_empty())
            || lengths.len() > 1
            || !lengths.iter().all(|v| plain(v))
        {
            p.push(Framing);
        }
        if out.first.extra > 0 {
            p.push(Leftover);
        }
    }
    let fresh = format!("fresh {n}");
    let answered =
        out.follow_up.got.as_ref().is_some_and(|g| {
            g.status == 200 && g.body == fresh.as_bytes() && out.follow_up.extra == 0
        });
    if !answered {
        p.push(if out.follow_up.hung && !out.first.hung {
            Hung
        } else {
            FollowUp
        });
    }
    p.sort();
    p.dedup();
    p
}

fn show(bytes: &[u8]) -> String {
    let s: String = bytes.escape_ascii().to_string();
    if s.len() > 200 {
        format!("{}...", &s[..200])
    } else {
        s
    }
}

fn expected(e: &Expect) -> String {
    match e {
        Expect::Refuse => "a 502 or a close before a complete response".into(),
        Expect::Cut => "a close before a complete response (or a 502)".into(),
        Expect::Relay {
            status,
            body,
            or_502,
        } => format!(
            "{status} body {:?}{}",
            show(body),
            if *or_502 { ", or a 502" } else { "" }
        ),
    }
}

fn describe(f: &Fetched) -> String {
    match &f.got {
        Some(g) => format!(
            "{} {} body {:?}{}",
            g.version,
            g.status,
            show(&g.body),
            if f.extra > 0 {
                format!(" + {} bytes more", f.extra)
            } else {
                String::new()
            }
        ),
        None if f.hung => format!("hung after {:?}", show(&f.raw)),
        None => format!("closed after {:?}", show(&f.raw)),
    }
}

#[derive(Default)]
struct Row {
    cases: usize,
    relayed: usize,
    bad_gateway: usize,
    cut: usize,
    hung: usize,
    ok: usize,
    known_gaps: usize,
}

fn policy(origins: &[SocketAddr]) -> String {
    let listeners: Vec<String> = (0..origins.len())
        .map(|i| format!(r#"{{ name = "l{i}", bind = "127.0.0.1:0", pool = "p{i}" }}"#))
        .collect();
    // passive = false: the lane's only server answers badly on purpose.
    let pools: Vec<String> = origins
        .iter()
        .enumerate()
        .map(|(i, o)| format!(r#"p{i} = {{ servers = {{ "{o}" }}, passive = false }}"#))
        .collect();
    format!(
        "return {{\n  listeners = {{ {} }},\n  pools = {{ {} }},\n}}\n",
        listeners.join(", "),
        pools.join(", ")
    )
}

#[tokio::test]
async fn corpus_responses_are_relayed_faithfully_or_refused() {
    let started = Instant::now();
    let ll = llhttp_cases();
    assert!(ll.len() >= 80, "llhttp response cases: {}", ll.len());
    let cases: Vec<Case> = ll.into_iter().chain(extra_cases()).collect();
    let ids: HashSet<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), cases.len(), "case ids must be unique");
    let listed = KNOWN_GAPS.iter().map(|(id, _)| id);
    for id in listed.chain(STRICT_REFUSALS.iter().map(|(id, _)| id)) {
        assert!(ids.contains(id), "listed case {id:?} is not in the corpus");
    }
    let cases = Arc::new(cases);

    let mut origins = Vec::new();
    for _ in 0..LANES {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        origins.push(l.local_addr().unwrap());
        tokio::spawn(serve_origin(l, cases.clone()));
    }
    let mut pocket = Pocket::start(&policy(&origins), 2);
    let listeners: Vec<SocketAddr> = (0..LANES).map(|i| pocket.addr(&format!("l{i}"))).collect();
    let baseline = |addr: SocketAddr, tag: &'static str| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let f = fetch(&mut s, &request("GET", &format!("/fresh/{tag}")), false).await;
        let body = f.got.as_ref().map(|g| g.body.clone()).unwrap_or_default();
        assert_eq!(
            body,
            format!("fresh {tag}").as_bytes(),
            "{tag} request through pocket: {}",
            describe(&f)
        );
    };
    for l in &listeners {
        baseline(*l, "before").await;
    }

    let next = Arc::new(AtomicUsize::new(0));
    let mut lanes = tokio::task::JoinSet::new();
    for l in &listeners {
        lanes.spawn(run_lane(cases.clone(), next.clone(), *l));
    }
    let outcomes: Vec<Outcome> = gather(lanes, cases.len()).await;

    // Pocket is still up and still proxies.
    assert!(
        pocket.child.try_wait().unwrap().is_none(),
        "pocket exited; log:\n{}",
        pocket.log.text()
    );
    for l in &listeners {
        baseline(*l, "after").await;
    }
    assert!(
        !pocket.log.text().contains("panicked"),
        "pocket panicked:\n{}",
        pocket.log.text()
    );

    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut gaps_seen = Vec::new();
    let mut strict = Vec::new();
    let verbose = std::env::var_os("HTTP_RESPONSES_VERBOSE").is_some();
    for (n, (case, out)) in cases.iter().zip(&outcomes).enumerate() {
        let s = seen(&out.first);
        let row = rows.entry(case.group).or_default();
        row.cases += 1;
        match s {
            Seen::Relayed => row.relayed += 1,
            Seen::BadGateway => row.bad_gateway += 1,
            Seen::Cut => row.cut += 1,
            Seen::Hung => row.hung += 1,
        }
        let found = problems(case, n, out);
        let detail = format!(
            "{}\n      origin sent: {}\n      expected: {}\n      client got: {}\n      follow-up ({}): {}",
            case.id,
            show(&case.bytes),
            expected(&case.expect),
            describe(&out.first),
            if out.reused { "same connection" } else { "new connection" },
            describe(&out.follow_up),
        );
        if verbose {
            println!("{found:?} {detail}");
        }
        if let Expect::Relay { or_502: true, .. } = case.expect {
            if case.id.starts_with("llhttp/") {
                strict.push(format!("{:?}: {}", s, case.id));
            }
        }
        let listed = KNOWN_GAPS
            .iter()
            .find(|(id, _)| *id == case.id)
            .map(|(_, p)| *p);
        match (listed, found.is_empty()) {
            (None, true) => row.ok += 1,
            (None, false) => failures.push(format!("{found:?}: {detail}")),
            (Some(_), true) => {
                failures.push(format!("now handled, remove it from KNOWN_GAPS: {detail}"))
            }
            (Some(l), false) => {
                row.known_gaps += 1;
                gaps_seen.push(format!("{found:?}: {detail}"));
                if l != found.as_slice() {
                    failures.push(format!(
                        "known gap changed from {l:?} to {found:?}, update KNOWN_GAPS: {detail}"
                    ));
                }
            }
        }
    }

    println!(
        "\nHTTP/1 responses through Pocket: {} cases in {:.1?}",
        cases.len(),
        started.elapsed()
    );
    println!(
        "{:<30} {:>6} {:>8} {:>5} {:>5} {:>5} {:>5} {:>11}",
        "group", "cases", "relayed", "502", "cut", "hung", "ok", "known gaps"
    );
    for (g, r) in &rows {
        println!(
            "{:<30} {:>6} {:>8} {:>5} {:>5} {:>5} {:>5} {:>11}",
            g, r.cases, r.relayed, r.bad_gateway, r.cut, r.hung, r.ok, r.known_gaps
        );
    }
    println!(
        "relayed = a complete answer other than 502; cut = closed before a complete answer; \
         ok = as expected, follow-up answered fresh"
    );
    println!("\nstrict refusals allowed ({}):", strict.len());
    for s in &strict {
        println!("  {s}");
    }
    println!(
        "\nnothing skipped: pausing.md runs as plain responses (its pauses test llhttp's \
         API, not the bytes); of pipelined responses only the first counts, and the rest \
         must not answer the follow-up"
    );
    println!("\nknown gaps seen ({}):", gaps_seen.len());
    for g in &gaps_seen {
        println!("  {g}");
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
