use super::*;

/// Feeds `pieces` in turn: Ok(bytes of the body in all) once it ends,
/// Err(why) if refused, Err("more") if it has not ended.
fn run(pieces: &[&[u8]]) -> Result<usize, &'static str> {
    let mut c = Chunked::new();
    let mut used = 0;
    for p in pieces {
        match c.feed(p) {
            Step::More => used += p.len(),
            Step::Done(n) => return Ok(used + n),
            Step::Bad(why) => return Err(why),
        }
    }
    Err("more")
}

/// Every way of cutting `bytes` in two, and byte by byte: the same answer.
fn every_split(bytes: &[u8]) -> Result<usize, &'static str> {
    let whole = run(&[bytes]);
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        let got = run(&[a, b]);
        match (&whole, &got) {
            (Err(_), Err(_)) => {}
            _ => assert_eq!(
                got,
                whole,
                "cut at {cut} of {:?}",
                String::from_utf8_lossy(bytes)
            ),
        }
    }
    let bytes_one: Vec<&[u8]> = bytes.chunks(1).collect();
    let got = run(&bytes_one);
    match (&whole, &got) {
        (Err(_), Err(_)) => {}
        _ => assert_eq!(
            got,
            whole,
            "byte by byte: {:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
    // Three pieces, cut at every pair of points of a short body.
    if bytes.len() <= 64 {
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let got = run(&[&bytes[..i], &bytes[i..j], &bytes[j..]]);
                match (&whole, &got) {
                    (Err(_), Err(_)) => {}
                    _ => assert_eq!(got, whole, "cuts at {i}, {j}"),
                }
            }
        }
    }
    whole
}

const VALID: &[&[u8]] = &[
    b"0\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"000A\r\n0123456789\r\n00\r\n\r\n",
    b"a\r\n0123456789\r\nA\r\n0123456789\r\n0\r\n\r\n",
    b"5;name\r\nhello\r\n0\r\n\r\n",
    b"5;name=value;other=\"quoted; ;\\\"str\"\r\nhello\r\n0;last\r\n\r\n",
    b"5;ilovew3;somuchlove=aretheseparametersfor\r\nhello\r\n6;blahblah;blah\r\n world\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nExpires: never\r\nX-Sum:abc \t def\r\n\r\n",
    b"3\r\n\r\n\r\r\n0\r\nA:\r\n\r\n",
    b"1\r\n\n\r\n0\r\n\r\n",
    b"ffffffffffffffff\r\n",
];

#[test]
fn valid_bodies_end_where_they_end_however_cut() {
    for body in VALID {
        let mut with_next = body.to_vec();
        with_next.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        let got = every_split(&with_next);
        if body.starts_with(b"ffff") {
            // Huge chunk: the body goes on.
            assert_eq!(got, Err("more"));
        } else {
            assert_eq!(got, Ok(body.len()), "{:?}", String::from_utf8_lossy(body));
        }
    }
}

const INVALID: &[(&[u8], &str)] = &[
    (
        b"25  \r\nThis is the data in the first chunk\r\n0\r\n\r\n",
        "space after the size (llhttp)",
    ),
    (b"5 \r\nhello\r\n0\r\n\r\n", "space after the size"),
    (b"5\t\r\nhello\r\n0\r\n\r\n", "tab after the size"),
    (b" 5\r\nhello\r\n0\r\n\r\n", "space before the size"),
    (
        b"2 erfrferferf\r\naa\r\n0 rrrr\r\n\r\n",
        "no semicolon before an extension",
    ),
    (b"2;\r\naa\r\n0\r\n\r\n", "no extension after the semicolon"),
    (
        b"5;a=\"abc\";b=\"def; ghi\r\nhello\r\n0\r\n\r\n",
        "unbalanced quote",
    ),
    (b"5 ;a\r\nhello\r\n0\r\n\r\n", "space before the semicolon"),
    (b"5; a\r\nhello\r\n0\r\n\r\n", "space after the semicolon"),
    (b"5;a =b\r\nhello\r\n0\r\n\r\n", "space before ="),
    (b"5;a=\r\nhello\r\n0\r\n\r\n", "empty extension value"),
    (b"5;a=b c\r\nhello\r\n0\r\n\r\n", "space in a token value"),
    (
        b"5;a=\"b\"c\r\nhello\r\n0\r\n\r\n",
        "text after a quoted value",
    ),
    (b"5;a\nb\r\nhello\r\n0\r\n\r\n", "LF in an extension"),
    (b"5\nhello\r\n0\r\n\r\n", "bare LF after the size"),
    (b"5\r\nhello\n0\r\n\r\n", "bare LF after data"),
    (b"5\r\nhello\r\n0\n\r\n", "bare LF after the last chunk"),
    (b"5\r\nhello\r\n0\r\n\n", "bare LF at the end"),
    (b"5\r\nhello\r\n0\r\nA: b\n\r\n", "bare LF after a trailer"),
    (b"5\r\nhelloX\r\n0\r\n\r\n", "data longer than the size"),
    (b"5\r\nhello\rX0\r\n\r\n", "CR without LF after data"),
    (
        b"5\rX\r\nhello\r\n0\r\n\r\n",
        "CR without LF after the size",
    ),
    (b"\r\n0\r\n\r\n", "no size"),
    (b"x\r\n0\r\n\r\n", "not hex"),
    (b"-1\r\nh\r\n0\r\n\r\n", "negative"),
    (b"+1\r\nh\r\n0\r\n\r\n", "plus sign"),
    (b"0x5\r\nhello\r\n0\r\n\r\n", "0x"),
    (b"10000000000000000\r\n", "overflows 64 bits"),
    (b"f0000000000000003\r\n", "overflows 64 bits (hyper's test)"),
    (b"0\r\n\r\r\n", "CR CR at the end"),
    (b"0\r\n folded: x\r\n\r\n", "obs-fold in the trailers"),
    (b"0\r\nA b: c\r\n\r\n", "space in a trailer name"),
    (b"0\r\nA : c\r\n\r\n", "space before a trailer's colon"),
    (b"0\r\n: c\r\n\r\n", "empty trailer name"),
    (b"0\r\nA: c\x01\r\n\r\n", "control byte in a trailer value"),
    (b"0\r\nA: c\x7f\r\n\r\n", "DEL in a trailer value"),
    (b"0\r\nno colon\r\n\r\n", "trailer line without a colon"),
];

#[test]
fn malformed_bodies_are_refused_however_cut() {
    for (body, what) in INVALID {
        let got = every_split(body);
        assert!(
            matches!(got, Err(w) if w != "more"),
            "{what}: {:?} gave {got:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn limits_on_extensions_and_trailers_stay_under_hypers() {
    // Extensions: the whole body's, not each chunk's.
    let mut body = Vec::new();
    let ext = format!(";{}", "e".repeat(1000));
    for _ in 0..15 {
        body.extend_from_slice(format!("1{ext}\r\nx\r\n").as_bytes());
    }
    body.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(run(&[&body]), Ok(body.len()));
    let mut over = Vec::new();
    for _ in 0..17 {
        over.extend_from_slice(format!("1{ext}\r\nx\r\n").as_bytes());
    }
    assert_eq!(run(&[&over]), Err("the chunk extensions are too large"));

    let mut trailers = b"0\r\n".to_vec();
    for i in 0..MAX_TRAILER_LINES {
        trailers.extend_from_slice(format!("T{i}: v\r\n").as_bytes());
    }
    let mut ok = trailers.clone();
    ok.extend_from_slice(b"\r\n");
    assert_eq!(run(&[&ok]), Ok(ok.len()));
    trailers.extend_from_slice(b"One: more\r\n\r\n");
    assert_eq!(run(&[&trailers]), Err("too many trailer fields"));

    let big = format!(
        "0\r\nBig: {}\r\n\r\n",
        "v".repeat(usize::from(MAX_TRAILER_BYTES))
    );
    assert_eq!(
        run(&[big.as_bytes()]),
        Err("the trailer section is too large")
    );
}

#[test]
fn data_is_skipped_in_bulk_and_the_scanner_says_how_much_is_left() {
    let mut c = Chunked::new();
    assert_eq!(c.feed(b"400\r\n"), Step::More);
    assert_eq!(c.data_left(), 0x400);
    assert_eq!(c.feed(&[b'x'; 0x100]), Step::More);
    assert_eq!(c.data_left(), 0x300);
    assert_eq!(c.feed(&[b'x'; 0x300]), Step::More);
    assert_eq!(c.data_left(), 0);
    assert_eq!(c.feed(b"\r\n0\r\n\r\nrest"), Step::Done(7));
    assert!(c.is_done());
    assert_eq!(c.feed(b"more"), Step::Done(0));
}

#[test]
fn data_bytes_count_the_payload_not_the_framing() {
    let body = b"5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nT: v\r\n\r\n";
    let mut c = Chunked::new();
    // Fed a byte at a time, then in one piece: the same count.
    for b in body.iter() {
        let _ = c.feed(std::slice::from_ref(b));
    }
    assert!(c.is_done());
    assert_eq!(c.data_bytes(), 11);
    let mut c = Chunked::new();
    assert_eq!(c.feed(body), Step::Done(body.len()));
    assert_eq!(c.data_bytes(), 11);
}
