//! A chunked body (RFC 9112 §7.1) checked as it passes: chunk sizes in
//! hex, extensions, CRLFs, the last chunk and the trailer section. The
//! bytes are relayed as they came; the scanner only says where the body
//! ends, or that it is malformed (the exchange then ends: a server's
//! broken body cuts the client's response, as hyper's decoder does).
//!
//! What it accepts is what hyper's chunked decoder accepts, less what
//! llhttp's strict mode refuses (`../shared/reliability-corpus/llhttp/`):
//! - a chunk line is `1*HEXDIG *( ";" token [ "=" ( token / quoted-string ) ] ) CRLF`
//!   with no whitespace at all (RFC 9112 allows BWS around `;` and `=`;
//!   llhttp strict refuses it, and a space after the size is how chunk
//!   sizes get read differently by two parsers); an empty extension
//!   (`5;`) and an unbalanced quote are refused too (llhttp);
//! - sizes up to `u64::MAX` (hyper and llhttp refuse an overflow);
//! - at most [`MAX_EXTENSION_BYTES`] bytes of extensions in a whole body
//!   (hyper refuses 16 KiB);
//! - trailer fields as header lines are (`token ":" value`, no obs-fold),
//!   at most [`MAX_TRAILER_LINES`] lines and [`MAX_TRAILER_BYTES`] bytes
//!   (hyper refuses more than 100 lines or 16 KiB);
//! - every line ends in CRLF (a bare LF or CR is refused).

/// Where a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// All of the input is body; more follows.
    More,
    /// The body ends after this many bytes of the input (the rest is the
    /// next message's).
    Done(usize),
    /// Malformed, and why.
    Bad(&'static str),
}

/// The most bytes of chunk extensions in one body: hyper's decoder
/// refuses 16 KiB (`CHUNKED_EXTENSIONS_LIMIT`); a little under it.
pub const MAX_EXTENSION_BYTES: u16 = 16 * 1024 - 64;

/// The most trailer lines after the last chunk (hyper refuses more than
/// 100, its header count).
pub const MAX_TRAILER_LINES: u8 = 64;

/// The most bytes of the trailer section (hyper refuses 16 KiB, its
/// `TRAILER_LIMIT`).
pub const MAX_TRAILER_BYTES: u16 = 8 * 1024;

/// Where in the grammar the next byte falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// The first hex digit of a chunk size.
    #[default]
    SizeStart,
    /// More hex digits, `;` or CR.
    Size,
    /// Just after `;`: the first byte of an extension's name.
    ExtNameStart,
    /// In an extension's name: more of it, `=`, `;` or CR.
    ExtName,
    /// Just after `=`: a token or a quoted string starts.
    ExtValueStart,
    /// In a token value: more of it, `;` or CR.
    ExtToken,
    /// Inside a quoted string.
    ExtQuoted,
    /// After a backslash inside a quoted string.
    ExtQuotedPair,
    /// After a quoted string's closing quote: `;` or CR.
    ExtAfterQuoted,
    /// After the chunk line's CR.
    SizeLf,
    /// In a chunk's data (`remaining` bytes to go).
    Data,
    /// After a chunk's data: its CR.
    DataCr,
    /// After a chunk's data: its LF.
    DataLf,
    /// At the start of a line of the trailer section: CR (the end) or a
    /// field name.
    TrailerStart,
    /// In a trailer field's name.
    TrailerName,
    /// In a trailer field's value.
    TrailerValue,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final CR.
    EndLf,
    /// The body has ended.
    Done,
}

/// The scanner's state between reads; a few bytes.
#[derive(Debug, Clone, Default)]
pub struct Chunked {
    state: State,
    /// Chunk size being read, then the bytes of data left.
    remaining: u64,
    /// Extension bytes so far in this body.
    ext_bytes: u16,
    /// Trailer bytes so far.
    trailer_bytes: u16,
    /// Trailer lines so far.
    trailer_lines: u8,
    /// Data bytes (chunk payload, not framing) seen so far.
    data: u64,
}

/// RFC 9110 §5.6.2 tchar.
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~'
        | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// RFC 9110 §5.6.4 qdtext (HTAB, SP, VCHAR but `"` and `\`, obs-text).
#[inline]
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// A field value's bytes (RFC 9110 §5.5: VCHAR, SP, HTAB, obs-text), as
/// httparse takes them.
#[inline]
fn is_field_vchar(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff)
}

#[inline]
fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

impl Chunked {
    pub fn new() -> Chunked {
        Chunked::default()
    }

    /// The body has ended (a [`Step::Done`] was returned).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes of the body seen so far (chunk payload, no framing): what
    /// a client receives of it once decoded (the access log's `bytes_out`,
    /// as hyper's decoder counts it).
    pub fn data_bytes(&self) -> u64 {
        self.data
    }

    /// Data bytes of the current chunk still to come (0 outside data):
    /// a relay may pass that many bytes on without looking at them.
    pub fn data_left(&self) -> u64 {
        if self.state == State::Data {
            self.remaining
        } else {
            0
        }
    }

    /// Counts a byte of extension; false past the limit.
    #[inline]
    fn ext_byte(&mut self) -> bool {
        self.ext_bytes += 1;
        self.ext_bytes <= MAX_EXTENSION_BYTES
    }

    /// Counts a byte of trailer; false past the limit.
    #[inline]
    fn trailer_byte(&mut self) -> bool {
        self.trailer_bytes += 1;
        self.trailer_bytes <= MAX_TRAILER_BYTES
    }

    /// Scans the next bytes of the body. After [`Step::Bad`] the scanner
    /// stays where it was (feeding it more is meaningless); after
    /// [`Step::Done`] it takes no more bytes (`Done(0)`).
    pub fn feed(&mut self, input: &[u8]) -> Step {
        use State::*;
        let mut i = 0;
        while i < input.len() {
            if self.state == Data {
                // The bulk of a body: skipped, not looked at.
                let n =
                    (input.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                i += n;
                self.remaining -= n as u64;
                self.data += n as u64;
                if self.remaining == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = match (self.state, b) {
                (SizeStart, b) => match hex(b) {
                    Some(d) => {
                        self.remaining = d;
                        Size
                    }
                    None => return Step::Bad("a chunk size line does not start with a hex digit"),
                },
                (Size, b';') => ExtNameStart,
                (Size, b'\r') => SizeLf,
                (Size, b) => match hex(b) {
                    Some(d) => match self.remaining.checked_mul(16) {
                        Some(v) => {
                            self.remaining = v | d;
                            Size
                        }
                        None => return Step::Bad("a chunk size overflows"),
                    },
                    None => return Step::Bad("invalid character in a chunk size line"),
                },
                (ExtNameStart, b) if is_tchar(b) => ExtName,
                (ExtName, b) if is_tchar(b) => ExtName,
                (ExtName, b'=') => ExtValueStart,
                (ExtName | ExtToken | ExtAfterQuoted, b';') => ExtNameStart,
                (ExtName | ExtToken | ExtAfterQuoted, b'\r') => SizeLf,
                (ExtValueStart, b'"') => ExtQuoted,
                (ExtValueStart | ExtToken, b) if is_tchar(b) => ExtToken,
                (ExtQuoted, b'"') => ExtAfterQuoted,
                (ExtQuoted, b'\\') => ExtQuotedPair,
                (ExtQuoted, b) if is_qdtext(b) => ExtQuoted,
                (ExtQuotedPair, b) if is_field_vchar(b) => ExtQuoted,
                (
                    ExtNameStart | ExtName | ExtValueStart | ExtToken | ExtQuoted | ExtQuotedPair
                    | ExtAfterQuoted,
                    _,
                ) => return Step::Bad("invalid character in a chunk extension"),
                (SizeLf, b'\n') => {
                    if self.remaining == 0 {
                        TrailerStart
                    } else {
                        Data
                    }
                }
                (DataCr, b'\r') => DataLf,
                (DataCr, _) => return Step::Bad("a chunk's data is not followed by CRLF"),
                (DataLf, b'\n') => SizeStart,
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart, b) if is_tchar(b) => {
                    if self.trailer_lines >= MAX_TRAILER_LINES {
                        return Step::Bad("too many trailer fields");
                    }
                    self.trailer_lines += 1;
                    if !self.trailer_byte() {
                        return Step::Bad("the trailer section is too large");
                    }
                    TrailerName
                }
                (TrailerStart, _) => return Step::Bad("invalid trailer field line"),
                (TrailerName, b) if is_tchar(b) || b == b':' => {
                    if !self.trailer_byte() {
                        return Step::Bad("the trailer section is too large");
                    }
                    if b == b':' {
                        TrailerValue
                    } else {
                        TrailerName
                    }
                }
                (TrailerName, _) => return Step::Bad("invalid character in a trailer field name"),
                (TrailerValue, b'\r') => TrailerLf,
                (TrailerValue, b) if is_field_vchar(b) => {
                    if !self.trailer_byte() {
                        return Step::Bad("the trailer section is too large");
                    }
                    TrailerValue
                }
                (TrailerValue, _) => {
                    return Step::Bad("invalid character in a trailer field value")
                }
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => {
                    self.state = Done;
                    return Step::Done(i);
                }
                (SizeLf | DataLf | TrailerLf | EndLf, _) => {
                    return Step::Bad("a line of a chunked body ends in CR without LF")
                }
                // Data is skipped above; never reached with a byte.
                (Data, _) => return Step::Bad("chunk data out of place"),
                (Done, _) => return Step::Done(i - 1),
            };
            if matches!(
                self.state,
                ExtNameStart
                    | ExtName
                    | ExtValueStart
                    | ExtToken
                    | ExtQuoted
                    | ExtQuotedPair
                    | ExtAfterQuoted
            ) && !self.ext_byte()
            {
                return Step::Bad("the chunk extensions are too large");
            }
        }
        if self.state == Done {
            return Step::Done(0);
        }
        Step::More
    }
}

#[cfg(test)]
#[path = "chunked_tests.rs"]
mod tests;
