//! A strict look at request heads before hyper parses them. httparse (and
//! so hyper) accepts a bare LF as a line end; a front end that only knows
//! CRLF reads the same bytes differently, which is a request-smuggling
//! desync (`Dummy: x\nContent-Length: 23` is one header to it, two to us).
//! nginx and HAProxy answer 400; so does Pocket.
//!
//! The check sees the bytes of a head as they are read, up to the empty
//! line that ends it. Bodies are never looked at: the check stops at the
//! end of each head and starts again only when the next request begins.

/// A head being read.
#[derive(Clone, Copy, Debug)]
pub struct HeadCheck {
    /// Checking at all: HTTP/1, and no request body may be in the stream.
    pub active: bool,
    /// Bytes of a new head have arrived (counted even when not checking):
    /// a connection with a head on its way is not idle.
    started: bool,
    /// The current head has ended; what follows may be a body.
    done: bool,
    prev: u8,
    line_empty: bool,
}

/// The head has a line ending in LF without CR.
#[derive(Debug, PartialEq, Eq)]
pub struct BareLf;

impl HeadCheck {
    pub const fn new() -> HeadCheck {
        HeadCheck {
            active: true,
            started: false,
            done: false,
            prev: 0,
            line_empty: false,
        }
    }

    /// No checking (HTTP/2 frames are not heads).
    pub const fn off() -> HeadCheck {
        HeadCheck {
            active: false,
            ..HeadCheck::new()
        }
    }

    pub fn started(&self) -> bool {
        self.started
    }

    /// A new head begins (the previous request has been handed on).
    pub fn next_head(&mut self) {
        let active = self.active;
        *self = HeadCheck::new();
        self.active = active;
    }

    /// Looks at bytes just read from the client. Jumps from LF to LF
    /// (memchr): a browser's 500-byte head is a dozen steps, not 500.
    #[inline]
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), BareLf> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.started = true;
        if !self.active || self.done {
            return Ok(());
        }
        let only_cr = |seg: &[u8]| seg.iter().all(|&b| b == b'\r');
        let mut line_start = 0;
        for lf in memchr::memchr_iter(b'\n', bytes) {
            let prev = if lf == 0 { self.prev } else { bytes[lf - 1] };
            if prev != b'\r' {
                return Err(BareLf);
            }
            // Empty: nothing but the CR since the previous LF.
            let seg = &bytes[line_start..lf];
            let empty = if line_start == 0 {
                self.line_empty && only_cr(seg)
            } else {
                only_cr(seg)
            };
            if empty {
                self.done = true;
                return Ok(());
            }
            self.line_empty = true;
            line_start = lf + 1;
        }
        let rest = &bytes[line_start..];
        if !only_cr(rest) {
            self.line_empty = false;
        }
        if let Some(&last) = bytes.last() {
            self.prev = last;
        }
        Ok(())
    }
}

/// What a client that sent a bare LF gets before the connection closes.
pub fn bad_request() -> Vec<u8> {
    const BODY: &str = "bad request: a line of the request head ends in LF, not CRLF";
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
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
}
