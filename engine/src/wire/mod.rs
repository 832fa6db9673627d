//! HTTP/1 on the wire, as Pocket's own path reads and writes it: heads
//! parsed once (httparse) into the form the request path uses, bodies
//! delimited by their framing (RFC 9112 §6) and relayed as they came.
//! No I/O here: these are functions of bytes, tested against hyper's
//! reading of the same messages (see `tests/wire_vs_hyper.rs`).
//!
//! - [`request`]: a client's request head, or "not for this path" (the
//!   connection then goes to hyper, which gives today's verdict on it).
//! - [`response`]: a server's response head, checked strictly; anything
//!   whose framing cannot be proven is refused (the client gets a 502).
//! - [`chunked`]: a chunked body, validated as it passes through.
//! - [`write`]: the response heads Pocket writes to a client
//!   ([`request::write`] writes a request head for a server).
//! - [`fields`], [`hop_by_hop`], [`host`]: header rules of HTTP itself
//!   that both the request path (`proxy/`) and the script API apply, here
//!   so the script API need not reach up into the proxy for them.

pub mod chunked;
pub mod fields;
pub mod hop_by_hop;
pub mod host;
#[cfg(test)]
mod mutations;
pub mod request;
pub mod response;
mod scan;
pub mod write;

/// Whether a `Connection` field's value names `close` among its tokens
/// (RFC 9110 §7.6.1: a comma-separated list, case-insensitive), as hyper
/// reads it.
pub fn says_close(value: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// Whether a field name httparse took (token characters only, RFC 9110
/// §5.6.2) is `lower` in any case. `lower`: lowercase letters and `-`
/// only, as long as `name` (the caller matched the lengths). A word at a
/// time: for those characters `b | 0x20 == l` holds exactly when `b` is
/// `l` in either case (the other byte it lets through for `-` is CR,
/// never in a token).
#[inline]
pub(crate) fn name_is(name: &[u8], lower: &'static [u8]) -> bool {
    debug_assert!(lower.iter().all(|b| b.is_ascii_lowercase() || *b == b'-'));
    let n = lower.len();
    if name.len() != n {
        return false;
    }
    // One load a word (both slices are `n` long: the words are within).
    let word8 = |b: &[u8], at: usize| {
        b.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let word4 = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .and_then(|w| <[u8; 4]>::try_from(w).ok())
            .map_or(0, u32::from_le_bytes)
    };
    const LOW8: u64 = 0x2020_2020_2020_2020;
    const LOW4: u32 = 0x2020_2020;
    if n >= 8 {
        // Two words, overlapping when n < 16; longer names a word at a
        // time first.
        let mut at = 0;
        while at + 8 < n {
            if word8(name, at) | LOW8 != word8(lower, at) {
                return false;
            }
            at += 8;
        }
        word8(name, n - 8) | LOW8 == word8(lower, n - 8)
    } else if n >= 4 {
        word4(name, 0) | LOW4 == word4(lower, 0) && word4(name, n - 4) | LOW4 == word4(lower, n - 4)
    } else {
        name.iter().zip(lower).all(|(b, l)| b | 0x20 == *l)
    }
}

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a request without Content-Length or Transfer-Encoding; a
    /// response to HEAD, a 1xx, 204 or 304.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked (RFC 9112 §7.1): ends with the last chunk and trailers.
    Chunked,
    /// A response with neither: the body ends when the server closes.
    UntilClose,
}

/// The most header lines a head may have on this path (hyper's server
/// allows 100; a head with more goes to hyper, a response with more is
/// refused).
pub const MAX_HEADERS: usize = 100;

#[cfg(test)]
mod tests {
    /// `name_is` is `eq_ignore_ascii_case` on every token character, for
    /// each length it is asked about.
    #[test]
    fn name_is_matches_any_case_and_nothing_else() {
        let names: [&'static [u8]; 9] = [
            b"te",
            b"date",
            b"upgrade",
            b"connection",
            b"content-length",
            b"accept-encoding",
            b"proxy-connection",
            b"transfer-encoding",
            b"abcdefghijklmnopqrstuvwxyz-abc",
        ];
        let token: Vec<u8> = (0u8..=127)
            .filter(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
            .collect();
        for lower in names {
            assert!(super::name_is(lower, lower));
            assert!(super::name_is(&lower.to_ascii_uppercase(), lower));
            for at in 0..lower.len() {
                for &b in &token {
                    let mut n = lower.to_vec();
                    n[at] = b;
                    assert_eq!(
                        super::name_is(&n, lower),
                        n.eq_ignore_ascii_case(lower),
                        "{:?} {:?}",
                        String::from_utf8_lossy(&n),
                        String::from_utf8_lossy(lower)
                    );
                }
            }
            assert!(!super::name_is(&lower[1..], lower));
        }
    }
}
