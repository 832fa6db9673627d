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
//! Why: httparse reads a head a byte at a time in most places (about 9
//! instructions per byte of a common head, with its per-field iterator);
//! here a value is looked at a word at a time and the names by a table.

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

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The bytes of the little-endian word `w` that are not SP or VCHAR
/// (below 0x20, or 0x7F and up), as their high bits. The lowest bit set
/// is exactly the first such byte: a borrow or a carry only ever starts
/// at one (bits above it may be set for bytes that are plain).
#[inline(always)]
fn not_plain(w: u64) -> u64 {
    let below = w.wrapping_sub(ONES * 0x20) & !w;
    let above = w.wrapping_add(ONES) | w;
    (below | above) & HIGHS
}

/// Every byte of `w` is SP or VCHAR.
#[cfg(test)]
fn plain_word(w: u64) -> bool {
    not_plain(w) == 0
}

/// Where the CRLF that ends the value starting at `line[from]` is (the
/// index of its CR), when every byte before it is a field value's
/// (HTAB, SP, VCHAR, obs-text); None for anything else (a bare LF, a
/// CR alone, another control, DEL, or no line end yet). A word at a
/// time while 8 bytes remain.
#[inline]
fn value_end(line: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(word) = line.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let odd = not_plain(u64::from_le_bytes(w));
        if odd == 0 {
            i += 8;
            continue;
        }
        i += (odd.trailing_zeros() / 8) as usize;
        match line[i] {
            b'\r' => return (line.get(i + 1) == Some(&b'\n')).then_some(i),
            b'\t' | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
    while let Some(&b) = line.get(i) {
        match b {
            b'\r' => return (line.get(i + 1) == Some(&b'\n')).then_some(i),
            b'\t' | 0x20..=0x7e | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
    None
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
        let line = buf.get(at..)?;
        if *line.first()? == b'\r' {
            return (*line.get(1)? == b'\n').then_some((at + 2, n));
        }
        // The name: token bytes up to the colon (no space before it).
        let colon = line.iter().position(|&b| !TOKEN[b as usize])?;
        if colon == 0 || line[colon] != b':' {
            return None;
        }
        // Spaces and tabs after the colon are not the value's.
        let mut from = colon + 1;
        while let Some(b' ' | b'\t') = line.get(from) {
            from += 1;
        }
        // The line ends at the first CR, which must be a CRLF's; every
        // byte before it must be a value byte (an LF is not: a bare LF is
        // for httparse and the callers' checks).
        let cr = value_end(line, from)?;
        let raw = &line[from..cr];
        // Trailing spaces and tabs trimmed; an empty value is the empty
        // slice where the line's CR is, as httparse gives it.
        let value = match raw.iter().rposition(|&b| b != b' ' && b != b'\t') {
            Some(last) => &raw[..=last],
            None => &line[cr..cr],
        };
        let slot = out.get_mut(n)?;
        // SAFETY: the name is token bytes only, all ASCII.
        let name = unsafe { std::str::from_utf8_unchecked(&line[..colon]) };
        *slot = MaybeUninit::new(Header { name, value });
        n += 1;
        at += cr + 2;
    }
}

/// A status line at `start` as httparse reads it, in the plain form:
/// `HTTP/1.0` or `HTTP/1.1`, SP, three digits, then SP and a reason of
/// HTAB, SP and VCHAR, or the CRLF at once. Returns the version (0 or 1),
/// the status and where the fields start.
pub(super) fn status_line(buf: &[u8], start: usize) -> Option<(u8, u16, usize)> {
    let line = buf.get(start..)?;
    let version = match line.get(..9)? {
        b"HTTP/1.1 " => 1,
        b"HTTP/1.0 " => 0,
        _ => return None,
    };
    let digit = |at: usize| {
        let b = *line.get(at)?;
        b.is_ascii_digit().then(|| u16::from(b - b'0'))
    };
    let status = digit(9)? * 100 + digit(10)? * 10 + digit(11)?;
    let cr = match *line.get(12)? {
        b' ' => {
            let cr = value_end(line, 13)?;
            // httparse reads a reason with obs-text as an empty one.
            if line[13..cr].iter().any(|&b| b >= 0x80) {
                return None;
            }
            cr
        }
        b'\r' if line.get(13) == Some(&b'\n') => 12,
        _ => return None,
    };
    Some((version, status, start + cr + 2))
}

/// A request line at the start of `buf` as httparse reads it, in the
/// plain form: a token, SP, a target of VCHAR (ASCII only), SP,
/// `HTTP/1.0` or `HTTP/1.1`, CRLF. Returns the method, the target, the
/// version and where the fields start.
pub(super) fn request_line(buf: &[u8]) -> Option<(&str, &str, u8, usize)> {
    let sp = buf.iter().position(|&b| !TOKEN[b as usize])?;
    if sp == 0 || buf[sp] != b' ' {
        return None;
    }
    let from = sp + 1;
    let to = from
        + buf
            .get(from..)?
            .iter()
            .position(|&b| !(0x21..0x7f).contains(&b))?;
    if to == from || buf[to] != b' ' {
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
            std::str::from_utf8_unchecked(&buf[..sp]),
            std::str::from_utf8_unchecked(&buf[from..to]),
        )
    };
    Some((method, target, version, to + 11))
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
