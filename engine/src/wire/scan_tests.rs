//! `scan` against httparse: wherever the quick reading takes a head, it
//! must be httparse's reading exactly (same length, start line, and the
//! same name and value slices, at the same addresses), on heads of each
//! shape, every one-byte change to a byte that matters, every cut and
//! every inserted LF, and on random heads.

use std::mem::MaybeUninit;

use super::*;
use crate::wire::MAX_HEADERS;

type Fields<'b> = Vec<(usize, usize, usize, usize)>;

/// Each field as (name address, name length, value address, value length).
fn spans<'b>(h: &[Header<'b>]) -> Fields<'b> {
    h.iter()
        .map(|h| {
            (
                h.name.as_ptr() as usize,
                h.name.len(),
                h.value.as_ptr() as usize,
                h.value.len(),
            )
        })
        .collect()
}

/// The scan's reading of a response head, or None.
fn scan_response(buf: &[u8]) -> Option<(u8, u16, usize, Fields<'_>)> {
    let mut out = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS];
    let (version, code, at) = status_line(buf, 0)?;
    let (len, n) = fields(buf, at, &mut out)?;
    // SAFETY: the first `n` were written.
    let read: Vec<Header<'_>> = out[..n]
        .iter()
        .map(|h| unsafe { h.assume_init_read() })
        .collect();
    Some((version, code, len, spans(&read)))
}

/// httparse's reading of a response head, if whole.
fn httparse_response(buf: &[u8]) -> Option<(u8, u16, usize, Fields<'_>)> {
    let mut out = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut out)
    {
        Ok(httparse::Status::Complete(len)) => {
            Some((res.version?, res.code?, len, spans(res.headers)))
        }
        _ => None,
    }
}

type RequestReading<'b> = (String, String, u8, usize, Fields<'b>);

fn scan_request(buf: &[u8]) -> Option<RequestReading<'_>> {
    let mut out = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS];
    let (method, target, version, at) = request_line(buf)?;
    let (len, n) = fields(buf, at, &mut out)?;
    // SAFETY: the first `n` were written.
    let read: Vec<Header<'_>> = out[..n]
        .iter()
        .map(|h| unsafe { h.assume_init_read() })
        .collect();
    Some((method.into(), target.into(), version, len, spans(&read)))
}

fn httparse_request(buf: &[u8]) -> Option<RequestReading<'_>> {
    let mut out = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut out)
    {
        Ok(httparse::Status::Complete(len)) => Some((
            req.method?.into(),
            req.path?.into(),
            req.version?,
            len,
            spans(req.headers),
        )),
        _ => None,
    }
}

/// Every byte the variants put in place of another.
const SWAPS: [u8; 15] = [
    b'\r', b'\n', b' ', b'\t', b':', b',', b'0', b'a', b'A', b'/', b'.', 0x7f, 0x80, 0xff, 0,
];

/// How many random heads each comparison makes and from which seed:
/// `POCKET_WIRE_ITER` (default 20,000) and `POCKET_WIRE_SEED` (a u64 XORed
/// into each test's own seed; default 0), as the other wire comparisons
/// take them, for a longer run than CI's.
fn random_run() -> (u64, u64) {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    (
        var("POCKET_WIRE_ITER").unwrap_or(20_000),
        var("POCKET_WIRE_SEED").unwrap_or(0),
    )
}

/// A small xorshift: the same random heads on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, from: &[&'a [u8]]) -> &'a [u8] {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// A random head: a start line, then fields made of pieces that are
/// often right and sometimes not, then maybe a blank line and a body.
fn random_head(rng: &mut Rng, start: &[u8]) -> Vec<u8> {
    const NAMES: [&[u8]; 9] = [
        b"content-length",
        b"Date",
        b"x-a",
        b"Connection",
        b"a b",
        b"",
        b"x\xff",
        b"t~!#$%&'*+-.^_`|",
        b"Transfer-Encoding",
    ];
    const COLONS: [&[u8]; 5] = [b":", b": ", b":\t ", b" :", b""];
    const VALUES: [&[u8]; 12] = [
        b"5",
        b"text/plain; charset=utf-8",
        b"",
        b" \t",
        b"a \t b \t",
        b"\xc3\xa9\x80",
        b"a\x7fb",
        b"a\x01",
        b"close, x",
        b"a\rb",
        b"Mon, 30 Nov 2026 16:25:22 GMT",
        b"0123456789abcdefghijklmnopqrstuvwxyz \t~",
    ];
    const ENDS: [&[u8]; 4] = [b"\r\n", b"\r\n", b"\n", b"\r"];
    let mut h = start.to_vec();
    for _ in 0..rng.next() % 6 {
        h.extend_from_slice(rng.pick(&NAMES));
        h.extend_from_slice(rng.pick(&COLONS));
        h.extend_from_slice(rng.pick(&VALUES));
        h.extend_from_slice(rng.pick(&ENDS));
    }
    if !rng.next().is_multiple_of(4) {
        h.extend_from_slice(b"\r\n");
    }
    if rng.next().is_multiple_of(2) {
        h.extend_from_slice(b"body\r\n\r\n");
    }
    h
}

/// Runs `same` (which asserts that the scan, when it takes a head, reads
/// it as httparse does, and says whether it took it) on every variant of
/// each base and on random heads from `starts`; `seed` is the test's own,
/// XORed with `POCKET_WIRE_SEED`. Returns (taken, compared, iterations).
fn compare_with_httparse(
    what: &str,
    bases: &[&[u8]],
    starts: &[&[u8]],
    seed: u64,
    mut same: impl FnMut(&[u8]) -> bool,
) -> (u64, u64, u64) {
    let (mut taken, mut compared) = (0, 0);
    let mut check = |c: &[u8]| {
        compared += 1;
        taken += u64::from(same(c));
    };
    for base in bases {
        for c in crate::wire::mutations::variants(base, &SWAPS) {
            check(&c);
        }
    }
    let (iterations, run_seed) = random_run();
    let mut rng = Rng((seed ^ run_seed).max(1));
    for _ in 0..iterations {
        let start = rng.pick(starts);
        check(&random_head(&mut rng, start));
    }
    println!(
        "scan vs httparse, {what}: {taken} of {compared} taken and read alike (seed {run_seed:#x})"
    );
    (taken, compared, iterations)
}

#[test]
fn a_response_head_the_scan_takes_is_httparses_reading() {
    let bases: [&[u8]; 7] = [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\nx-origin: A\r\ncontent-length: 32\r\ndate: Mon, 30 Nov 2026 16:25:22 GMT\r\n\r\nhello",
        b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\nA:\r\nB: \t\r\nC: x \t\r\n\r\n",
        b"HTTP/1.1 304\r\nETag: \"x\"\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 \r\nX-Long: 0123456789abcdef0123456789abcdef\r\n\r\n",
        b"HTTP/1.1 999 Odd \t reason\r\nT~!#$%&'*+-.^_`|: \xc3\xa9 \r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ];
    let starts: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 404 Not Found\r\n",
        b"HTTP/1.1 200\r\n",
        b"HTTP/1.1 20 OK\r\n",
    ];
    let (taken, compared, iterations) =
        compare_with_httparse("responses", &bases, &starts, 0x9e37_79b9_7f4a_7c15, |c| {
            let quick = scan_response(c);
            if quick.is_some() {
                assert_eq!(
                    quick,
                    httparse_response(c),
                    "{:?}",
                    String::from_utf8_lossy(c)
                );
            }
            quick.is_some()
        });
    // Not a vacuous pass: the scan takes a share of them (a fifth with
    // the default seed, a tenth with some others).
    assert!(
        compared > iterations + 5_000 && taken > iterations / 20,
        "{taken} of {compared}"
    );
}

#[test]
fn a_request_head_the_scan_takes_is_httparses_reading() {
    let bases: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: bench.example\r\nAccept-Encoding: identity\r\n\r\n",
        b"POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"M-SEARCH * HTTP/1.0\r\nX:\r\nY: \t\r\n\r\n",
        b"GET /%7e/x?y=%20 HTTP/1.1\r\nUser-Agent: curl/8.0 \t\r\nCookie: a=b; c=d\r\n\r\n",
        b"OPTIONS http://a.example:80/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
    ];
    let starts: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\n",
        b"GET /a/b?c HTTP/1.0\r\n",
        b"DELETE /x HTTP/1.1\r\n",
        b"GET  / HTTP/1.1\r\n",
        b"GET /\xc3\xa9 HTTP/1.1\r\n",
    ];
    let (taken, compared, iterations) =
        compare_with_httparse("requests", &bases, &starts, 0x2545_f491_4f6c_dd1d, |c| {
            let quick = scan_request(c);
            if quick.is_some() {
                assert_eq!(
                    quick,
                    httparse_request(c),
                    "{:?}",
                    String::from_utf8_lossy(c)
                );
            }
            quick.is_some()
        });
    assert!(
        compared > iterations && taken > iterations / 20,
        "{taken} of {compared}"
    );
}

#[test]
fn more_fields_than_room_are_left_to_httparse() {
    let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
    for _ in 0..=MAX_HEADERS {
        h.extend_from_slice(b"a: b\r\n");
    }
    h.extend_from_slice(b"\r\n");
    assert!(scan_response(&h).is_none());
    assert!(httparse_response(&h).is_none());
}

#[test]
fn plain_words_are_exactly_sp_to_tilde() {
    for b in 0..=255u8 {
        for at in 0..8 {
            let mut w = *b"abcdefgh";
            w[at] = b;
            assert_eq!(
                plain_word(u64::from_ne_bytes(w)),
                (0x20..=0x7e).contains(&b),
                "{b:#x} at {at}"
            );
        }
    }
}

#[test]
fn the_first_byte_a_word_flags_is_the_first_that_is_not_plain() {
    let odd = [0u8, 0x09, 0x0a, 0x0d, 0x1f, 0x7f, 0x80, 0xff];
    let plain = [0x20u8, 0x41, 0x7e];
    for first in 0..8 {
        for &b in &odd {
            for &after in odd.iter().chain(&plain) {
                let mut w = [b'a'; 8];
                w[first] = b;
                for x in w.iter_mut().skip(first + 1) {
                    *x = after;
                }
                let flagged = not_plain(u64::from_le_bytes(w));
                assert_eq!(flagged.trailing_zeros() / 8, first as u32, "{w:?}");
            }
        }
    }
}

#[test]
fn a_value_ends_at_its_crlf_and_nowhere_else() {
    let cases: [(&[u8], Option<usize>); 9] = [
        (b"abc\r\n", Some(3)),
        (b"0123456789abcdef\r\nx", Some(16)),
        (b"a\tb\xc3\xa9 0123456789\r\n", Some(16)),
        (b"0123456789\nabc\r\n", None),
        (b"0123456789\rabc\r\n", None),
        (b"0123456789\x7fabc\r\n", None),
        (b"0123456789\x00\r\n", None),
        (b"0123456789abcdef", None),
        (b"abc\r", None),
    ];
    for (line, end) in cases {
        assert_eq!(
            value_end(line, 0),
            end,
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}
