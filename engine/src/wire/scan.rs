//! A quick reading of the common head: what httparse (its default
//! `ParserConfig`, as `request.rs` and `response.rs` run it) makes of a
//! head whose lines all end in CRLF and whose bytes are all in the sets
//! httparse takes, read with fewer steps. It gives the very same
//! `httparse::Header` slices (name, trimmed value, same addresses) and
//! the same length, or None for anything it does not take (a partial
//! head, a bare LF, an empty line before the start line, a byte outside
//! the plain sets, more fields than there is room for): then the caller
//! asks httparse, whose verdicts stand. So this reading adds no rule of
//! its own; `scan_tests.rs` compares the two on generated heads.
//!
//! Why: httparse costs about 9 instructions per byte of a short head
//! (its per-field iterator and checks); a common response head of 150
//! bytes is read here in about a third of that.

use std::mem::MaybeUninit;

use httparse::Header;

/// httparse's `TOKEN_MAP` (a field name's bytes, RFC 9110 §5.6.2; a
/// method's too).
const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// httparse's `HEADER_VALUE_MAP`: HTAB, SP, VCHAR, obs-text (RFC 9110
/// §5.5).
const VALUE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b == 0x09 || (b >= 0x20 && b != 0x7f);
        b += 1;
    }
    t
};

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Every byte of `w` is SP or VCHAR (0x20 to 0x7E): no byte below 0x20
/// and none at or above 0x7F. Both tests are exact as a whole (a borrow
/// or carry only ever follows a byte that already failed).
#[inline(always)]
fn plain_word(w: u64) -> bool {
    let below = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    let above = (w.wrapping_add(ONES) | w) & HIGHS;
    below | above == 0
}

/// Every byte of `v` is one httparse takes in a field value.
#[inline]
fn value_bytes(v: &[u8]) -> bool {
    let mut words = v.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        if !plain_word(w) && !w.to_ne_bytes().iter().all(|&b| VALUE[b as usize]) {
            return false;
        }
    }
    words.remainder().iter().all(|&b| VALUE[b as usize])
}

/// The field lines from `at` (where the first one, or the blank line,
/// starts) to the blank line: written to `out` in order, as httparse
/// writes them. Returns the index just past the blank line and how many
/// fields were read.
pub(super) fn fields<'b>(
    buf: &'b [u8],
    mut at: usize,
    out: &mut [MaybeUninit<Header<'b>>],
) -> Option<(usize, usize)> {
    let mut n = 0;
    loop {
        match *buf.get(at)? {
            b'\r' => {
                return (*buf.get(at + 1)? == b'\n').then_some((at + 2, n));
            }
            b if !TOKEN[b as usize] => return None,
            _ => {}
        }
        // The name: token bytes up to the colon (no space before it).
        let name_at = at;
        at += 1;
        loop {
            let b = *buf.get(at)?;
            if b == b':' {
                break;
            }
            if !TOKEN[b as usize] {
                return None;
            }
            at += 1;
        }
        let name = &buf[name_at..at];
        at += 1;
        // Spaces and tabs after the colon are not the value's.
        while let Some(b' ' | b'\t') = buf.get(at) {
            at += 1;
        }
        // The line ends at the first CR, which must be a CRLF's; every
        // byte before it must be a value byte (an LF is not: a bare LF
        // is for httparse and the callers' checks).
        let cr = at + memchr::memchr(b'\r', buf.get(at..)?)?;
        if *buf.get(cr + 1)? != b'\n' {
            return None;
        }
        let raw = &buf[at..cr];
        if !value_bytes(raw) {
            return None;
        }
        // Trailing spaces and tabs trimmed; an empty value is the empty
        // slice where the line's CR is, as httparse gives it.
        let value = match raw.iter().rposition(|&b| b != b' ' && b != b'\t') {
            Some(last) => &raw[..=last],
            None => &buf[cr..cr],
        };
        let slot = out.get_mut(n)?;
        // SAFETY: `name` is token bytes only, all ASCII.
        let name = unsafe { std::str::from_utf8_unchecked(name) };
        *slot = MaybeUninit::new(Header { name, value });
        n += 1;
        at = cr + 2;
    }
}

/// A status line at `start` as httparse reads it, in the plain form:
/// `HTTP/1.0` or `HTTP/1.1`, SP, three digits, then SP and a reason of
/// HTAB, SP and VCHAR, or the CRLF at once. Returns the version (0 or 1),
/// the status and where the fields start.
pub(super) fn status_line(buf: &[u8], start: usize) -> Option<(u8, u16, usize)> {
    let line = buf.get(start..start + 13)?;
    let version = match &line[..9] {
        b"HTTP/1.1 " => 1,
        b"HTTP/1.0 " => 0,
        _ => return None,
    };
    let digit = |b: u8| b.is_ascii_digit().then(|| u16::from(b - b'0'));
    let status = digit(line[9])? * 100 + digit(line[10])? * 10 + digit(line[11])?;
    let mut at = start + 12;
    match line[12] {
        b' ' => {
            at += 1;
            let cr = at + memchr::memchr(b'\r', buf.get(at..)?)?;
            let reason = &buf[at..cr];
            if !reason
                .iter()
                .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
            {
                return None;
            }
            at = cr;
        }
        b'\r' => {}
        _ => return None,
    }
    (*buf.get(at + 1)? == b'\n').then_some((version, status, at + 2))
}

/// A request line at the start of `buf` as httparse reads it, in the
/// plain form: a token, SP, a target of VCHAR (ASCII only), SP,
/// `HTTP/1.0` or `HTTP/1.1`, CRLF. Returns the method, the target, the
/// version and where the fields start.
pub(super) fn request_line(buf: &[u8]) -> Option<(&str, &str, u8, usize)> {
    let sp = memchr::memchr(b' ', buf)?;
    let method = &buf[..sp];
    if method.is_empty() || !method.iter().all(|&b| TOKEN[b as usize]) {
        return None;
    }
    let from = sp + 1;
    let to = from + memchr::memchr(b' ', buf.get(from..)?)?;
    let target = &buf[from..to];
    if target.is_empty() || !target.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return None;
    }
    let version = match buf.get(to + 1..to + 11)? {
        b"HTTP/1.1\r\n" => 1,
        b"HTTP/1.0\r\n" => 0,
        _ => return None,
    };
    // SAFETY: both are ASCII, checked above.
    let (method, target) = unsafe {
        (
            std::str::from_utf8_unchecked(method),
            std::str::from_utf8_unchecked(target),
        )
    };
    Some((method, target, version, to + 11))
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
