//! A strict look at request heads before hyper parses them. httparse (and
//! so hyper) accepts a bare LF as a line end; a front end that only knows
//! CRLF reads the same bytes differently, which is a request-smuggling
//! desync (`Dummy: x\nContent-Length: 23` is one header to it, two to us).
//! nginx and HAProxy answer 400; so does Pocket.
//!
//! The check sees the bytes of heads as they are read. While it scans a
//! head it also learns the request's body framing (`Content-Length`, or a
//! `Transfer-Encoding` ending in `chunked`, which wins), skips exactly
//! that body (N bytes, or the chunked framing as hyper reads it) and
//! takes what follows as the next head (pipelining). So several heads
//! arriving in one read, or while a request is in flight, or after a
//! body, each get a verdict, kept in order until hyper hands that request
//! on ([`HeadCheck::claim`]). Where the check cannot tell the framing as
//! hyper will (anything it does not understand, most of which hyper
//! refuses anyway), it stops looking until the connection parks: never a
//! false 400 on a valid stream.

/// Heads scanned ahead whose verdicts are kept one by one; past this many
/// they share one verdict (bad if any is), which only makes a refusal come
/// earlier, never a bad head pass.
const AHEAD: u8 = 64;

/// How much of a line split across reads is kept to learn the framing
/// from: enough for any `Content-Length` or common `Transfer-Encoding`;
/// a framing header longer than this turns the check off.
const LINE: usize = 48;

/// Where the scan is in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    /// In or before a head.
    Head,
    /// In a `Content-Length` body: bytes left.
    Length(u64),
    /// In a chunked body, and the size of the chunk (bytes left of its
    /// data, in `Data`).
    Chunked(Chunk, u64),
}

/// The chunked framing, step by step as hyper's decoder takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Start,
    Size,
    Lws,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

/// What the head being read says of its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Te {
    None,
    Chunked,
    /// Transfer-Encoding not ending in chunked: hyper refuses it.
    Other,
}

/// The heads read from a connection, checked as they arrive.
#[derive(Clone, Copy, Debug)]
pub struct HeadCheck {
    /// Scanning at all: HTTP/1, and every body so far understood.
    pub active: bool,
    /// Bytes of a new head (or a body) have arrived (counted even when not
    /// checking): a connection with a request on its way is not idle.
    started: bool,
    /// The head being read has a non-empty line: an empty line ends it
    /// (before that, empty lines are skipped, as httparse does).
    in_head: bool,
    /// The head being read has a line ending in a bare LF.
    bad: bool,
    /// The last byte seen (the line end may be split from its CR).
    prev: u8,
    /// The line being read so far is empty or CRs only.
    line_empty: bool,
    /// The start of a line split across reads (framing headers are read
    /// from it), its length, and whether it was longer.
    line: [u8; LINE],
    line_len: u8,
    line_over: bool,
    /// The framing the head being read declares so far.
    length: Option<u64>,
    te: Te,
    /// The head being read has something the scan does not follow.
    unknown: bool,
    /// Where the scan is: a head, or a body to skip.
    skip: Skip,
    /// Whole heads read ahead and not yet claimed (at most [`AHEAD`]).
    ahead: u8,
    /// Bit i: the i-th of the `ahead` heads had a bare LF.
    bad_ahead: u64,
    /// Bit i: the i-th of the `ahead` heads declared a body.
    body_ahead: u64,
    /// Whole heads read past the `ahead` ones, and whether any was bad.
    beyond: u32,
    beyond_bad: bool,
    /// The most bytes a head may take (the listener's `head_size`).
    limit: u32,
    /// Bytes of the head being read so far.
    head_len: u32,
    /// The head being read went over `limit`: the scan stops there.
    over: Option<Oversized>,
}

/// A request head over the size limit, and which part made it so: the
/// request line alone (414, as nginx answers a request line longer than
/// its `large_client_header_buffers`) or the whole head (431, RFC 6585
/// §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oversized {
    RequestLine,
    Head,
}

/// The head has a line ending in LF without CR.
#[derive(Debug, PartialEq, Eq)]
pub struct BareLf;

impl HeadCheck {
    pub const fn new() -> HeadCheck {
        HeadCheck {
            active: true,
            started: false,
            in_head: false,
            bad: false,
            prev: 0,
            line_empty: true,
            line: [0; LINE],
            line_len: 0,
            line_over: false,
            length: None,
            te: Te::None,
            unknown: false,
            skip: Skip::Head,
            ahead: 0,
            bad_ahead: 0,
            body_ahead: 0,
            beyond: 0,
            beyond_bad: false,
            limit: u32::MAX,
            head_len: 0,
            over: None,
        }
    }

    /// A check that also refuses heads of more than `limit` bytes.
    pub const fn with_limit(limit: u32) -> HeadCheck {
        HeadCheck {
            limit,
            ..HeadCheck::new()
        }
    }

    /// The next head to be handed on is over the size limit (so far).
    /// Only that one: a head queued behind others waits for its turn, and
    /// hyper (given the same limit) refuses it then.
    pub fn oversized(&self) -> Option<Oversized> {
        if self.ahead > 0 || self.beyond > 0 {
            return None;
        }
        self.over
    }

    /// No checking (HTTP/2 frames are not heads).
    pub const fn off() -> HeadCheck {
        HeadCheck {
            active: false,
            ..HeadCheck::new()
        }
    }

    /// Bytes of a request not yet handed on have arrived.
    pub fn started(&self) -> bool {
        self.started || self.ahead > 0 || self.beyond > 0
    }

    /// A new head begins (the previous request has been handed on); its
    /// verdict is dropped.
    #[cfg(test)]
    pub fn next_head(&mut self) {
        let _ = self.claim(false);
    }

    /// hyper has parsed the next request head, which has a body unless
    /// that is known to be empty (`body`): its verdict, taken off the
    /// queue. Heads are claimed in the order they were read. If hyper
    /// reads a body where the scan did not (or the other way), the scan
    /// was wrong about what follows: it forgets what it read ahead and
    /// stops.
    pub fn claim(&mut self, body: bool) -> Result<(), BareLf> {
        let bad = if self.ahead > 0 {
            let bad = self.bad_ahead & 1 != 0;
            let had_body = self.body_ahead & 1 != 0;
            self.bad_ahead >>= 1;
            self.body_ahead >>= 1;
            self.ahead -= 1;
            if had_body != body {
                *self = HeadCheck::off();
            }
            bad
        } else if self.beyond > 0 {
            self.beyond -= 1;
            let bad = self.beyond_bad;
            if self.beyond == 0 {
                self.beyond_bad = false;
            }
            bad
        } else {
            // hyper saw a head end that the scan has not (with the scan on,
            // it cannot): what was seen so far is the verdict, and the scan
            // is out of step, so it stops.
            let bad = self.active && self.skip == Skip::Head && self.bad;
            *self = HeadCheck::off();
            bad
        };
        if bad {
            Err(BareLf)
        } else {
            Ok(())
        }
    }

    /// The next head to be claimed has a bare LF (so far).
    fn next_is_bad(&self) -> bool {
        if self.ahead > 0 {
            self.bad_ahead & 1 != 0
        } else if self.beyond > 0 {
            self.beyond_bad
        } else {
            self.active && self.skip == Skip::Head && self.bad
        }
    }

    fn end_head(&mut self) {
        self.head_len = 0;
        self.in_head = false;
        self.bad = false;
        self.line_empty = true;
        self.prev = 0;
        self.line_len = 0;
        self.line_over = false;
        self.length = None;
        self.te = Te::None;
        self.unknown = false;
    }

    /// A whole head has been read: its verdict joins the queue, and the
    /// scan moves on to its body, or stops if it cannot tell the body.
    fn push(&mut self) {
        let skip = if self.unknown {
            None
        } else {
            match (self.te, self.length) {
                (Te::Chunked, _) => Some(Skip::Chunked(Chunk::Start, 0)),
                (Te::Other, _) => None,
                (Te::None, Some(n)) if n > 0 => Some(Skip::Length(n)),
                (Te::None, _) => Some(Skip::Head),
            }
        };
        let body = skip != Some(Skip::Head);
        if self.ahead < AHEAD && self.beyond == 0 {
            self.bad_ahead |= u64::from(self.bad) << self.ahead;
            self.body_ahead |= u64::from(body) << self.ahead;
            self.ahead += 1;
        } else {
            self.beyond = self.beyond.saturating_add(1);
            self.beyond_bad |= self.bad;
        }
        self.end_head();
        match skip {
            Some(skip) => self.skip = skip,
            None => self.active = false,
        }
    }

    /// Looks at bytes just read from the client. Heads jump from LF to LF
    /// (memchr): a browser's 500-byte head is a dozen steps, not 500;
    /// a body is skipped by its length (chunk data too).
    /// `Err`: the next head to be claimed has a bare LF (heads further on
    /// keep their verdicts for [`HeadCheck::claim`]).
    #[inline]
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), BareLf> {
        if bytes.is_empty() {
            return Ok(());
        }
        if !self.active || self.over.is_some() {
            self.started = true;
            return Ok(());
        }
        let mut at = 0;
        // Whether bytes of an unfinished head follow the last head end.
        let mut tail = false;
        while at < bytes.len() && self.active {
            at = match self.skip {
                Skip::Head => {
                    let (next, more) = self.scan_head(bytes, at);
                    tail = more;
                    next
                }
                Skip::Length(left) => {
                    let n = left.min((bytes.len() - at) as u64);
                    self.skip = if n == left {
                        Skip::Head
                    } else {
                        Skip::Length(left - n)
                    };
                    at + n as usize
                }
                Skip::Chunked(step, size) => self.scan_chunked(bytes, at, step, size),
            };
        }
        // Stopped: whatever follows the head it stopped at counts as begun.
        self.started = if self.active {
            tail || self.skip != Skip::Head
        } else {
            at < bytes.len()
        };
        if self.next_is_bad() {
            Err(BareLf)
        } else {
            Ok(())
        }
    }

    /// Scans head bytes from `from` up to the end of a head (then returns
    /// the position after it) or of `bytes`. Also: whether bytes of a head
    /// are left unfinished.
    fn scan_head(&mut self, bytes: &[u8], from: usize) -> (usize, bool) {
        let only_cr = |seg: &[u8]| seg.iter().all(|&b| b == b'\r');
        let mut line_start = from;
        let mut tail = false;
        // The head's length up to a position in `bytes`.
        let len_at = |head_len: u32, at: usize| u64::from(head_len) + (at - from) as u64;
        for lf in memchr::memchr_iter(b'\n', &bytes[from..]).map(|i| i + from) {
            let prev = if lf == from { self.prev } else { bytes[lf - 1] };
            if prev != b'\r' {
                self.bad = true;
            }
            // Empty: nothing but CRs since the previous LF.
            let seg = &bytes[line_start..lf];
            let empty = only_cr(seg) && (line_start > from || self.line_empty);
            let carried = line_start == from && (self.line_len > 0 || self.line_over);
            line_start = lf + 1;
            self.prev = b'\n';
            self.line_empty = true;
            let (have, over) = (usize::from(self.line_len), self.line_over);
            self.line_len = 0;
            self.line_over = false;
            if !empty {
                if carried {
                    let mut joined = self.line;
                    let n = seg.len().min(LINE - have);
                    joined[have..have + n].copy_from_slice(&seg[..n]);
                    self.framing(&joined[..have + n], over || n < seg.len());
                } else {
                    self.framing(seg, false);
                }
                // The request line alone over the limit: a 414.
                if !self.in_head && self.over_limit(len_at(self.head_len, line_start), true) {
                    return (bytes.len(), true);
                }
                self.in_head = true;
            } else if self.in_head {
                if self.over_limit(len_at(self.head_len, line_start), true) {
                    return (bytes.len(), true);
                }
                self.push();
                return (line_start, false);
            }
            tail = true;
        }
        let len = len_at(self.head_len, bytes.len());
        if self.over_limit(len, false) {
            return (bytes.len(), true);
        }
        self.head_len = len as u32;
        let rest = &bytes[line_start..];
        if !rest.is_empty() {
            tail = true;
            if !only_cr(rest) {
                self.line_empty = false;
            }
            self.prev = rest[rest.len() - 1];
            // Kept for the framing: the start of a line split across reads.
            let have = usize::from(self.line_len);
            let n = rest.len().min(LINE - have);
            self.line[have..have + n].copy_from_slice(&rest[..n]);
            self.line_len = (have + n) as u8;
            self.line_over |= n < rest.len();
        }
        (bytes.len(), tail)
    }

    /// Whether the head being read, `len` bytes long so far, is over the
    /// limit: a whole head (`done`) may be `limit` bytes; an unfinished one
    /// that already is cannot end within it (hyper's `max_header_size`
    /// rule). Over: noted (which part made it so), and the scan stops.
    fn over_limit(&mut self, len: u64, done: bool) -> bool {
        let limit = u64::from(self.limit);
        if len < limit || (done && len == limit) {
            return false;
        }
        self.over = Some(if self.in_head {
            Oversized::Head
        } else {
            Oversized::RequestLine
        });
        true
    }

    /// Learns the body framing from one line of a head (without its LF;
    /// `over`: only its start is here).
    fn framing(&mut self, line: &[u8], over: bool) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !self.in_head {
            // The request line: a CONNECT tunnel is not HTTP after it.
            if line.starts_with(b"CONNECT ") {
                self.unknown = true;
            }
            return;
        }
        let Some(&first) = line.first() else { return };
        // A quick no for most lines (Host, User-Agent, Accept...).
        if !matches!(first, b'c' | b'C' | b't' | b'T' | b' ' | b'\t') {
            return;
        }
        if first == b' ' || first == b'\t' {
            // A folded line: hyper refuses it; the scan does not follow.
            self.unknown = true;
            return;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            // No colon: a name longer than what was kept (not a framing
            // header), else a line hyper refuses.
            self.unknown |= !over;
            return;
        };
        let name = &line[..colon];
        let is_length = name.eq_ignore_ascii_case(b"content-length");
        let is_te = name.eq_ignore_ascii_case(b"transfer-encoding");
        if !is_length && !is_te {
            return;
        }
        let value = trim(&line[colon + 1..]);
        if over
            || !value
                .iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            self.unknown = true;
            return;
        }
        if is_te {
            // hyper: chunked if the last coding of the last line is.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or(value);
            self.te = if trim(last).eq_ignore_ascii_case(b"chunked") {
                Te::Chunked
            } else {
                Te::Other
            };
            return;
        }
        match digits(value) {
            Some(n) if self.length.is_none_or(|had| had == n) => self.length = Some(n),
            // Not digits, or two lengths: hyper refuses it (when no
            // Transfer-Encoding comes first); the scan does not follow.
            _ => self.unknown = true,
        }
    }

    /// Skips chunked framing from `at`, with hyper's rules: the end of the
    /// body (then the scan is back at heads) or of `bytes`.
    fn scan_chunked(
        &mut self,
        bytes: &[u8],
        mut at: usize,
        mut step: Chunk,
        mut size: u64,
    ) -> usize {
        while at < bytes.len() {
            if step == Chunk::Data {
                let n = size.min((bytes.len() - at) as u64);
                size -= n;
                at += n as usize;
                if size == 0 {
                    step = Chunk::DataCr;
                }
                continue;
            }
            if step == Chunk::Trailer {
                // A trailer line runs to its CR.
                match memchr::memchr(b'\r', &bytes[at..]) {
                    Some(i) => {
                        at += i + 1;
                        step = Chunk::TrailerLf;
                    }
                    None => at = bytes.len(),
                }
                continue;
            }
            let b = bytes[at];
            at += 1;
            let hex = match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                b'A'..=b'F' => Some(b - b'A' + 10),
                _ => None,
            };
            let next = match (step, b) {
                (Chunk::Start | Chunk::Size, _) if hex.is_some() => {
                    match size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(hex.unwrap_or(0))))
                    {
                        Some(s) => {
                            size = s;
                            Some(Chunk::Size)
                        }
                        None => None,
                    }
                }
                (Chunk::Size | Chunk::Lws, b' ' | b'\t') => Some(Chunk::Lws),
                (Chunk::Size | Chunk::Lws, b';') => Some(Chunk::Ext),
                (Chunk::Size | Chunk::Lws | Chunk::Ext, b'\r') => Some(Chunk::SizeLf),
                (Chunk::Ext, b'\n') => None,
                (Chunk::Ext, _) => Some(Chunk::Ext),
                (Chunk::SizeLf, b'\n') if size == 0 => Some(Chunk::EndCr),
                (Chunk::SizeLf, b'\n') => Some(Chunk::Data),
                (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
                (Chunk::DataLf, b'\n') => {
                    size = 0;
                    Some(Chunk::Start)
                }
                (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
                (Chunk::EndCr, _) => Some(Chunk::Trailer),
                (Chunk::TrailerLf, b'\n') => Some(Chunk::EndCr),
                (Chunk::EndLf, b'\n') => {
                    self.skip = Skip::Head;
                    return at;
                }
                _ => None,
            };
            match next {
                Some(s) => step = s,
                None => {
                    // hyper refuses this body and ends the connection.
                    self.active = false;
                    return bytes.len();
                }
            }
        }
        self.skip = Skip::Chunked(step, size);
        at
    }
}

/// Without leading and trailing spaces and tabs (as httparse gives values).
fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// A Content-Length as hyper reads it: digits only, no overflow.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The body of the 400 for a head with a bare LF.
pub const BAD_LF: &str = "bad request: a line of the request head ends in LF, not CRLF";

/// What a client that sent a bare LF gets before the connection closes.
pub fn bad_request() -> Vec<u8> {
    refusal("400 Bad Request", BAD_LF)
}

/// What a client whose request head is over the listener's `head_size`
/// (`limit` bytes) gets before the connection closes: 414 for a request
/// line that alone is over it, else 431 (nginx answers 414, and 400 for
/// headers; RFC 6585 §5 gives headers 431).
pub fn too_large(what: Oversized, limit: u32) -> Vec<u8> {
    match what {
        Oversized::RequestLine => refusal(
            "414 URI Too Long",
            &format!("the request line is over the limit of {limit} bytes for a request head"),
        ),
        Oversized::Head => refusal(
            "431 Request Header Fields Too Large",
            &format!("the request head is over the limit of {limit} bytes"),
        ),
    }
}

/// A refusal as Pocket's other answers look (proxy/local.rs), less the
/// request id (no request was made): the connection closes after it.
fn refusal(status: &str, reason: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}",
        reason.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(parts: &[&[u8]]) -> Result<(), BareLf> {
        let mut c = HeadCheck::new();
        for p in parts {
            c.feed(p)?;
        }
        Ok(())
    }

    #[test]
    fn crlf_heads_pass_in_any_pieces() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n";
        assert_eq!(check(&[head]), Ok(()));
        for a in 0..head.len() {
            for b in a..head.len() {
                assert_eq!(
                    check(&[&head[..a], &head[a..b], &head[b..]]),
                    Ok(()),
                    "cuts at {a}, {b}"
                );
            }
        }
        // The check ends with the head: a body after it is not looked at.
        let mut c = HeadCheck::new();
        assert_eq!(c.feed(b"GET / HTTP/1.1\r\n\r\n\n\n"), Ok(()));
    }

    #[test]
    fn a_bare_lf_anywhere_in_the_head_is_refused() {
        assert_eq!(check(&[b"GET / HTTP/1.1\nHost: a\r\n\r\n"]), Err(BareLf));
        assert_eq!(
            check(&[b"GET / HTTP/1.1\r\nDummy: x\nContent-Length: 23\r\n\r\n"]),
            Err(BareLf)
        );
        assert_eq!(check(&[b"GET / HTTP/1.1\r\nHost: a\r\n\n"]), Err(BareLf));
        assert_eq!(check(&[b"GET / HTTP/1.1\r", b"\r\nX: \n"]), Err(BareLf));
        let bad = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\n\r\n";
        for a in 0..bad.len() {
            for b in a..bad.len() {
                assert_eq!(
                    check(&[&bad[..a], &bad[a..b], &bad[b..]]),
                    Err(BareLf),
                    "cuts at {a}, {b}"
                );
            }
        }
    }

    #[test]
    fn the_body_is_not_looked_at() {
        assert_eq!(
            check(&[b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\na\nb"]),
            Ok(())
        );
        let mut c = HeadCheck::new();
        c.feed(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n")
            .unwrap();
        assert_eq!(c.feed(b"a\nb"), Ok(()));
        assert_eq!(c.claim(true), Ok(()));
        assert_eq!(c.feed(b"GET /\nX"), Err(BareLf));
        let mut c = HeadCheck::off();
        assert_eq!(c.feed(b"GET /\nX"), Ok(()), "inactive stays inactive");
        c.next_head();
        assert_eq!(c.feed(b"GET /\nX"), Ok(()));
    }

    /// Feeds `parts`, then claims `heads` heads: their verdicts.
    fn verdicts(parts: &[&[u8]], heads: usize) -> Vec<bool> {
        let mut c = HeadCheck::new();
        for p in parts {
            let _ = c.feed(p);
        }
        (0..heads).map(|_| c.claim(false).is_ok()).collect()
    }

    #[test]
    fn pipelined_heads_each_get_their_verdict_in_any_pieces() {
        let two: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nDummy: y\nContent-Length: 0\r\n\r\n";
        assert_eq!(verdicts(&[two], 2), [true, false]);
        for a in 0..two.len() {
            for b in a..two.len() {
                assert_eq!(
                    verdicts(&[&two[..a], &two[a..b], &two[b..]], 2),
                    [true, false],
                    "cuts at {a}, {b}"
                );
            }
        }
        // Good, bad, good: the third is not blamed for the second.
        let three = [
            &b"GET /1 HTTP/1.1\r\n\r\n"[..],
            b"GET /2 HTTP/1.1\nX: y\r\n\r\n",
            b"GET /3 HTTP/1.1\r\n\r\n",
        ]
        .concat();
        assert_eq!(verdicts(&[&three], 3), [true, false, true]);
    }

    #[test]
    fn only_the_next_head_is_refused_at_once() {
        let mut c = HeadCheck::new();
        // The first head is fine: a bad second one waits for its turn.
        assert_eq!(c.feed(b"GET /a HTTP/1.1\r\n\r\nGET /b\n"), Ok(()));
        assert!(c.started());
        assert_eq!(c.claim(false), Ok(()));
        assert_eq!(c.feed(b"X: y\r\n\r\n"), Err(BareLf), "now it is next");
        assert_eq!(c.claim(false), Err(BareLf));
        assert!(!c.started());
    }

    #[test]
    fn empty_lines_before_a_head_do_not_end_it() {
        // httparse skips them; a phantom head would shift the verdicts.
        let bytes =
            b"GET /a HTTP/1.1\r\n\r\n\r\n\r\nGET /b HTTP/1.1\nX: y\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
        assert_eq!(verdicts(&[bytes], 3), [true, false, true]);
    }

    /// Feeds `parts`, then claims heads as hyper would (with `bodies`
    /// telling which have one): their verdicts.
    fn claimed(parts: &[&[u8]], bodies: &[bool]) -> Vec<bool> {
        let mut c = HeadCheck::new();
        for p in parts {
            let _ = c.feed(p);
        }
        bodies.iter().map(|&b| c.claim(b).is_ok()).collect()
    }

    /// Every cut of `bytes` into three pieces gives `want`.
    fn every_cut(bytes: &[u8], bodies: &[bool], want: &[bool]) {
        assert_eq!(claimed(&[bytes], bodies), want, "in one piece");
        for a in 0..bytes.len() {
            for b in a..bytes.len() {
                assert_eq!(
                    claimed(&[&bytes[..a], &bytes[a..b], &bytes[b..]], bodies),
                    want,
                    "cuts at {a}, {b}"
                );
            }
        }
    }

    const BAD: &[u8] = b"GET /2bad HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n";
    const GOOD: &[u8] = b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn a_bad_head_after_a_content_length_body_is_caught_in_any_pieces() {
        let bytes = [
            &b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe\nlo"[..],
            BAD,
            GOOD,
        ]
        .concat();
        every_cut(&bytes, &[true, false, false], &[true, false, true]);
        // A GET with a body, and two bodies before the bad head.
        let bytes = [
            &b"GET /p HTTP/1.1\r\nHost: x\r\ncontent-length:  2 \r\n\r\n\n\n"[..],
            b"POST /q HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            BAD,
        ]
        .concat();
        every_cut(&bytes, &[true, true, false], &[true, true, false]);
        // Length 0: no body.
        let bytes = [
            &b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"[..],
            BAD,
        ]
        .concat();
        assert_eq!(claimed(&[&bytes], &[false, false]), [true, false]);
    }

    #[test]
    fn a_bad_head_after_a_chunked_body_is_caught_in_any_pieces() {
        let bytes = [
            &b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"5\r\nhe\nlo\r\nA;ext=\"v\"\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
            BAD,
            GOOD,
        ]
        .concat();
        every_cut(&bytes, &[true, false, false], &[true, false, true]);
        // Chunked wins over a Content-Length, in either order, and a list
        // ending in chunked is chunked.
        let bytes = [
            &b"POST /p HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
                [..],
            b"3 \r\nabc\r\n0\r\n\r\n",
            b"POST /q HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
            b"1\r\n\n\r\n0\r\n\r\n",
            BAD,
        ]
        .concat();
        every_cut(&bytes, &[true, true, false], &[true, true, false]);
    }

    #[test]
    fn framing_it_cannot_follow_turns_the_check_off() {
        let cases: [&[u8]; 6] = [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            b"POST / HTTP/1.1\r\nX: y\r\n z\r\n\r\n",
        ];
        for head in cases {
            // What follows may be a body: not looked at, never a 400.
            let bytes = [head, b"x\ny\r\n\r\n", BAD].concat();
            let mut c = HeadCheck::new();
            assert_eq!(c.feed(&bytes), Ok(()), "{head:?}");
            assert!(!c.active, "{head:?}");
            assert_eq!(c.claim(true), Ok(()));
            assert_eq!(c.claim(false), Ok(()));
        }
        // Chunked framing hyper refuses: the same.
        let mut c = HeadCheck::new();
        let bytes = [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello"[..],
            BAD,
        ]
        .concat();
        assert_eq!(c.feed(&bytes), Ok(()));
        assert!(!c.active);
        // The verdict of a head read before the check stopped still counts.
        let bytes = [
            &b"GET / HTTP/1.1\nX: y\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        ]
        .concat();
        assert_eq!(claimed(&[&bytes], &[false, true]), [false, true]);
    }

    #[test]
    fn a_framing_header_split_across_reads_is_read_whole() {
        let head = b"POST / HTTP/1.1\r\nX-Long-Header-Before: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nTransfer-Encoding: chunked\r\n\r\n";
        let bytes = [&head[..], b"0\r\n\r\n", BAD].concat();
        every_cut(&bytes, &[true, false], &[true, false]);
    }

    #[test]
    fn hyper_seeing_other_framing_stops_the_check() {
        let mut c = HeadCheck::new();
        assert_eq!(
            c.feed(b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\nx\ny\r\n\r\nzzzz"),
            Ok(())
        );
        // hyper says no body: the scan was wrong, and forgets what it read.
        assert_eq!(c.claim(false), Ok(()));
        assert!(!c.active);
        assert!(!c.started());
        assert_eq!(c.feed(b"GET /\nX"), Ok(()));
        assert_eq!(c.claim(false), Ok(()));
    }

    #[test]
    fn a_body_on_its_way_is_not_idle() {
        let mut c = HeadCheck::new();
        c.feed(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab")
            .unwrap();
        assert_eq!(c.claim(true), Ok(()));
        assert!(c.started(), "half the body");
        c.feed(b"cd").unwrap();
        assert!(!c.started(), "the body is whole");
    }

    #[test]
    fn heads_past_the_queue_share_a_verdict() {
        let good = b"GET / HTTP/1.1\r\n\r\n";
        let mut bytes = Vec::new();
        for _ in 0..AHEAD + 3 {
            bytes.extend_from_slice(good);
        }
        bytes.extend_from_slice(b"GET /\n\r\n");
        let v = verdicts(&[&bytes], usize::from(AHEAD) + 4);
        assert!(v[..usize::from(AHEAD)].iter().all(|&ok| ok));
        assert!(
            v[usize::from(AHEAD)..].iter().all(|&ok| !ok),
            "refused early, never passed"
        );
        // Claims past every head read: nothing is left over.
        let mut c = HeadCheck::new();
        c.feed(good).unwrap();
        assert_eq!(c.claim(false), Ok(()));
        assert!(!c.started());
    }

    fn over(limit: u32, parts: &[&[u8]]) -> Option<Oversized> {
        let mut c = HeadCheck::with_limit(limit);
        for p in parts {
            let _ = c.feed(p);
        }
        c.oversized()
    }

    #[test]
    fn a_head_over_the_limit_is_caught_in_any_pieces() {
        let head = b"GET /abc HTTP/1.1\r\nHost: t\r\nCookie: 0123456789\r\n\r\n";
        let n = head.len() as u32;
        for cut in 0..head.len() {
            let (a, b) = head.split_at(cut);
            // A whole head of exactly the limit passes; one byte less does not.
            assert_eq!(over(n, &[a, b]), None, "cut at {cut}");
            assert_eq!(over(n - 1, &[a, b]), Some(Oversized::Head), "cut at {cut}");
        }
        // An unfinished head that has reached the limit cannot end within it.
        assert_eq!(over(n, &[&head[..head.len() - 1]]), None);
        assert_eq!(
            over(n - 1, &[&head[..head.len() - 1]]),
            Some(Oversized::Head)
        );
        // The request line alone: 414, whole or unfinished.
        assert_eq!(over(10, &[head]), Some(Oversized::RequestLine));
        assert_eq!(over(10, &[&head[..12]]), Some(Oversized::RequestLine));
        assert_eq!(over(30, &[head]), Some(Oversized::Head));
    }

    #[test]
    fn each_head_has_its_own_size() {
        let head: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        let mut c = HeadCheck::with_limit(head.len() as u32);
        for _ in 0..100 {
            assert!(c.feed(head).is_ok());
            assert_eq!(c.oversized(), None);
            c.next_head();
        }
        // A head queued behind another is left to hyper.
        let mut c = HeadCheck::with_limit(head.len() as u32);
        let mut two = head.to_vec();
        two.extend_from_slice(b"GET /long HTTP/1.1\r\nX: 0123456789\r\n");
        assert!(c.feed(&two).is_ok());
        assert_eq!(c.oversized(), None);
        c.next_head();
        assert_eq!(c.oversized(), Some(Oversized::Head));
    }
}
