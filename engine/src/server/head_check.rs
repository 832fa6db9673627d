//! A strict look at request heads before hyper parses them. httparse (and
//! so hyper) accepts a bare LF as a line end; a front end that only knows
//! CRLF reads the same bytes differently, which is a request-smuggling
//! desync (`Dummy: x\nContent-Length: 23` is one header to it, two to us).
//! nginx and HAProxy answer 400; so does Pocket.
//!
//! The check sees the bytes of heads as they are read. What follows the
//! empty line that ends a head is taken as the next head (pipelining), so
//! several heads arriving in one read, or while a request is in flight,
//! each get a verdict, kept in order until hyper hands that request on
//! ([`HeadCheck::claim`]). A request with a body turns the check off (what
//! follows its head is body, not a head) until the connection parks.

/// Heads scanned ahead whose verdicts are kept one by one; past this many
/// they share one verdict (bad if any is), which only makes a refusal come
/// earlier, never a bad head pass.
const AHEAD: u8 = 64;

/// The heads read from a connection, checked as they arrive.
#[derive(Clone, Copy, Debug)]
pub struct HeadCheck {
    /// Checking at all: HTTP/1, and no request body may be in the stream.
    pub active: bool,
    /// Bytes of a new head have arrived (counted even when not checking):
    /// a connection with a head on its way is not idle.
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
    /// Whole heads read ahead and not yet claimed (at most [`AHEAD`]).
    ahead: u8,
    /// Bit i: the i-th of the `ahead` heads had a bare LF.
    bad_ahead: u64,
    /// Whole heads read past the `ahead` ones, and whether any was bad.
    beyond: u32,
    beyond_bad: bool,
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
            ahead: 0,
            bad_ahead: 0,
            beyond: 0,
            beyond_bad: false,
        }
    }

    /// No checking (HTTP/2 frames are not heads).
    pub const fn off() -> HeadCheck {
        HeadCheck {
            active: false,
            ..HeadCheck::new()
        }
    }

    /// Bytes of a head not yet handed on have arrived.
    pub fn started(&self) -> bool {
        self.started || self.ahead > 0 || self.beyond > 0
    }

    /// A new head begins (the previous request has been handed on); its
    /// verdict is dropped.
    #[cfg(test)]
    pub fn next_head(&mut self) {
        let _ = self.claim();
    }

    /// hyper has parsed the next request head: its verdict, taken off the
    /// queue. Heads are claimed in the order they were read.
    pub fn claim(&mut self) -> Result<(), BareLf> {
        if !self.active {
            *self = HeadCheck::off();
            return Ok(());
        }
        let bad = if self.ahead > 0 {
            let bad = self.bad_ahead & 1 != 0;
            self.bad_ahead >>= 1;
            self.ahead -= 1;
            bad
        } else if self.beyond > 0 {
            self.beyond -= 1;
            let bad = self.beyond_bad;
            if self.beyond == 0 {
                self.beyond_bad = false;
            }
            bad
        } else {
            // hyper saw a head end that the check has not (it cannot with
            // CRLF heads): the verdict is what was seen so far.
            let bad = self.bad;
            self.end_head();
            self.started = false;
            bad
        };
        if bad {
            Err(BareLf)
        } else {
            Ok(())
        }
    }

    /// What follows the head just claimed is a body: stop checking, and
    /// forget what was read past the head (it was body, not heads).
    pub fn body_follows(&mut self) {
        *self = HeadCheck::off();
    }

    /// The next head to be claimed has a bare LF (so far).
    fn next_is_bad(&self) -> bool {
        if self.ahead > 0 {
            self.bad_ahead & 1 != 0
        } else if self.beyond > 0 {
            self.beyond_bad
        } else {
            self.bad
        }
    }

    fn end_head(&mut self) {
        self.in_head = false;
        self.bad = false;
        self.line_empty = true;
        self.prev = 0;
    }

    /// A whole head has been read: its verdict joins the queue.
    fn push(&mut self) {
        if self.ahead < AHEAD && self.beyond == 0 {
            self.bad_ahead |= u64::from(self.bad) << self.ahead;
            self.ahead += 1;
        } else {
            self.beyond = self.beyond.saturating_add(1);
            self.beyond_bad |= self.bad;
        }
        self.end_head();
    }

    /// Looks at bytes just read from the client. Jumps from LF to LF
    /// (memchr): a browser's 500-byte head is a dozen steps, not 500.
    /// `Err`: the next head to be claimed has a bare LF (heads further on
    /// keep their verdicts for [`HeadCheck::claim`]).
    #[inline]
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), BareLf> {
        if bytes.is_empty() {
            return Ok(());
        }
        if !self.active {
            self.started = true;
            return Ok(());
        }
        let only_cr = |seg: &[u8]| seg.iter().all(|&b| b == b'\r');
        let mut line_start = 0;
        // Whether bytes of an unfinished head follow the last head end.
        let mut tail = true;
        for lf in memchr::memchr_iter(b'\n', bytes) {
            let prev = if lf == 0 { self.prev } else { bytes[lf - 1] };
            if prev != b'\r' {
                self.bad = true;
            }
            // Empty: nothing but CRs since the previous LF.
            let seg = &bytes[line_start..lf];
            let empty = only_cr(seg) && (line_start > 0 || self.line_empty);
            line_start = lf + 1;
            self.prev = b'\n';
            self.line_empty = true;
            if !empty {
                self.in_head = true;
            } else if self.in_head {
                self.push();
                tail = line_start < bytes.len();
                continue;
            }
            tail = true;
        }
        let rest = &bytes[line_start..];
        if !rest.is_empty() {
            tail = true;
            if !only_cr(rest) {
                self.line_empty = false;
            }
            self.prev = rest[rest.len() - 1];
        }
        self.started = tail;
        if self.next_is_bad() {
            Err(BareLf)
        } else {
            Ok(())
        }
    }
}

/// The body of the 400 for a head with a bare LF.
pub const BAD_LF: &str = "bad request: a line of the request head ends in LF, not CRLF";

/// What a client that sent a bare LF gets before the connection closes.
pub fn bad_request() -> Vec<u8> {
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BAD_LF}",
        BAD_LF.len()
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
        c.next_head();
        assert_eq!(c.feed(b"GET /\nX"), Err(BareLf));
        c.active = false;
        c.next_head();
        assert_eq!(c.feed(b"GET /\nX"), Ok(()), "inactive stays inactive");
    }

    /// Feeds `parts`, then claims `heads` heads: their verdicts.
    fn verdicts(parts: &[&[u8]], heads: usize) -> Vec<bool> {
        let mut c = HeadCheck::new();
        for p in parts {
            let _ = c.feed(p);
        }
        (0..heads).map(|_| c.claim().is_ok()).collect()
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
        assert_eq!(c.claim(), Ok(()));
        assert_eq!(c.feed(b"X: y\r\n\r\n"), Err(BareLf), "now it is next");
        assert_eq!(c.claim(), Err(BareLf));
        assert!(!c.started());
    }

    #[test]
    fn empty_lines_before_a_head_do_not_end_it() {
        // httparse skips them; a phantom head would shift the verdicts.
        let bytes =
            b"GET /a HTTP/1.1\r\n\r\n\r\n\r\nGET /b HTTP/1.1\nX: y\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
        assert_eq!(verdicts(&[bytes], 3), [true, false, true]);
    }

    #[test]
    fn a_body_turns_the_check_off_and_forgets_what_was_read_ahead() {
        let mut c = HeadCheck::new();
        assert_eq!(
            c.feed(b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\nx\ny\r\n\r\nzzzz"),
            Ok(())
        );
        assert_eq!(c.claim(), Ok(()));
        c.body_follows();
        assert!(!c.started());
        assert_eq!(c.feed(b"GET /\nX"), Ok(()));
        assert_eq!(c.claim(), Ok(()));
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
        assert_eq!(c.claim(), Ok(()));
        assert!(!c.started());
    }
}
