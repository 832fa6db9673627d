use super::*;
use std::sync::Arc;

/// A real ClientHello as rustls sends it (one record), for `name` (a DNS
/// name, or an IP address: then no SNI) offering `alpn`.
fn rustls_hello(name: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let server = rustls_pki_types::ServerName::try_from(name.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write");
    }
    out
}

/// The handshake message inside single-record `bytes`, re-split into
/// records of at most `size` bytes of fragment each.
fn refragment(bytes: &[u8], size: usize) -> Vec<u8> {
    let msg = &bytes[5..];
    let mut out = Vec::new();
    for chunk in msg.chunks(size) {
        out.extend_from_slice(&[HANDSHAKE, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fn hello_of(p: Parsed) -> ClientHello {
    match p {
        Parsed::Hello(h) => h,
        other => panic!("expected a ClientHello, got {other:?}"),
    }
}

#[test]
fn rustls_client_hello_gives_sni_and_alpn() {
    let bytes = rustls_hello("A.Example", &[b"h2", b"http/1.1"]);
    let h = hello_of(parse(&bytes));
    assert_eq!(h.sni.as_deref(), Some("a.example"));
    assert_eq!(h.alpn, Some(vec![b"h2".to_vec(), b"http/1.1".to_vec()]));
}

#[test]
fn no_sni_for_an_ip_address_and_no_alpn_without_the_extension() {
    let bytes = rustls_hello("127.0.0.1", &[]);
    let h = hello_of(parse(&bytes));
    assert_eq!(h, ClientHello::default());
}

#[test]
fn every_prefix_of_a_hello_needs_more() {
    let bytes = rustls_hello("b.example", &[b"h2"]);
    for cut in 0..bytes.len() {
        assert_eq!(parse(&bytes[..cut]), Parsed::NeedMore, "cut at {cut}");
    }
}

#[test]
fn a_hello_split_over_records_of_any_size() {
    let bytes = rustls_hello("b.example", &[b"h2"]);
    for size in [1, 2, 3, 4, 5, 7, 64, 300] {
        let split = refragment(&bytes, size);
        let h = hello_of(parse(&split));
        assert_eq!(h.sni.as_deref(), Some("b.example"), "records of {size}");
        // And every prefix of the split form waits for more.
        for cut in (0..split.len()).step_by(7) {
            assert_eq!(
                parse(&split[..cut]),
                Parsed::NeedMore,
                "size {size} cut {cut}"
            );
        }
    }
}

#[test]
fn bytes_after_the_hello_are_ignored() {
    let mut bytes = rustls_hello("c.example", &[]);
    bytes.extend_from_slice(&[23, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
    assert_eq!(hello_of(parse(&bytes)).sni.as_deref(), Some("c.example"));
}

#[test]
fn other_protocols_are_not_tls_from_their_first_byte() {
    for text in [
        &b"E"[..],
        b"EHLO mail.example\r\n",
        b"GET / HTTP/1.1\r\n",
        b"PING\r\n",
        b"\x80\x2e\x01\x03\x01", // SSLv2-compatible hello
        b"\x16\x02",             // not version 3
        b"\x17\x03\x03\x00\x05hello",
        b"\x16\x03\x01\x00\x00",                 // empty handshake record
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", // a ServerHello
    ] {
        assert_eq!(parse(text), Parsed::NotTls, "{text:?}");
    }
    assert_eq!(parse(b""), Parsed::NeedMore);
}

#[test]
fn a_record_longer_than_the_tls_limit_is_not_tls() {
    assert_eq!(parse(b"\x16\x03\x01\x40\x01\x01"), Parsed::NotTls);
}

#[test]
fn a_hello_over_the_cap_is_too_big() {
    // A ClientHello announcing 20 KiB.
    let mut bytes = vec![HANDSHAKE, 3, 1, 0x40, 0x00, CLIENT_HELLO, 0x00, 0x50, 0x00];
    bytes.resize(64, 0);
    assert_eq!(parse(&bytes), Parsed::TooBig);
}

/// A hand-made ClientHello with these extensions (type, data).
fn with_extensions(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]);
    body.extend_from_slice(&[1, 0]);
    let mut e = Vec::new();
    for (kind, data) in exts {
        e.extend_from_slice(&kind.to_be_bytes());
        e.extend_from_slice(&(data.len() as u16).to_be_bytes());
        e.extend_from_slice(data);
    }
    body.extend_from_slice(&(e.len() as u16).to_be_bytes());
    body.extend_from_slice(&e);
    let mut msg = vec![CLIENT_HELLO, 0, (body.len() >> 8) as u8, body.len() as u8];
    msg.extend_from_slice(&body);
    let mut rec = vec![HANDSHAKE, 3, 1];
    rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    rec.extend_from_slice(&msg);
    rec
}

fn sni_ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in entries {
        list.push(*kind);
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
    }
    let mut out = (list.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&list);
    out
}

#[test]
fn grease_extensions_are_skipped() {
    let bytes = with_extensions(&[
        (0x0a0a, vec![]),
        (0, sni_ext(&[(0, b"grease.example")])),
        (0x1a1a, vec![0]),
        (16, vec![0, 7, 6, 0x3a, 0x3a, b'x', b'y', b'z', b'w']),
    ]);
    let h = hello_of(parse(&bytes));
    assert_eq!(h.sni.as_deref(), Some("grease.example"));
    assert_eq!(h.alpn, Some(vec![vec![0x3a, 0x3a, b'x', b'y', b'z', b'w']]));
}

#[test]
fn the_first_host_name_counts_and_odd_names_are_nil() {
    let h = hello_of(parse(&with_extensions(&[(
        0,
        sni_ext(&[(7, b"other"), (0, b"first.example"), (0, b"second.example")]),
    )])));
    assert_eq!(h.sni.as_deref(), Some("first.example"));
    for bad in [&b""[..], b"a b", b"a\0b", b"caf\xc3\xa9"] {
        let h = hello_of(parse(&with_extensions(&[(0, sni_ext(&[(0, bad)]))])));
        assert_eq!(h.sni, None, "{bad:?}");
    }
}

#[test]
fn malformed_extensions_are_not_tls_but_a_bad_sni_list_is_only_no_sni() {
    // The extensions block claims more than there is.
    let mut bytes = with_extensions(&[(0, sni_ext(&[(0, b"a.example")]))]);
    let at = bytes.len() - 13 - 2 - 2 - 2;
    bytes[at] = 0xff;
    assert!(matches!(parse(&bytes), Parsed::NotTls | Parsed::NeedMore));
    // An SNI list whose inner length lies.
    let h = hello_of(parse(&with_extensions(&[(0, vec![0, 9, 0, 0, 3, b'a'])])));
    assert_eq!(h.sni, None);
}

#[test]
fn a_hello_without_extensions_has_neither() {
    let mut body = vec![3, 1];
    body.extend_from_slice(&[0; 32]);
    body.extend_from_slice(&[0, 0, 2, 0, 0x2f, 1, 0]);
    let mut bytes = vec![HANDSHAKE, 3, 1, 0, (body.len() + 4) as u8];
    bytes.extend_from_slice(&[CLIENT_HELLO, 0, 0, body.len() as u8]);
    bytes.extend_from_slice(&body);
    assert_eq!(hello_of(parse(&bytes)), ClientHello::default());
}

/// A small xorshift generator: the same "random" inputs on every run.
struct Rand(u64);
impl Rand {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn never_panics_on_garbage_or_mutated_hellos() {
    let mut r = Rand(0x9e37_79b9_7f4a_7c15);
    let base = rustls_hello("fuzz.example", &[b"h2", b"http/1.1"]);
    let split = refragment(&base, 50);
    for round in 0..20_000 {
        let mut bytes = if round % 2 == 0 {
            base.clone()
        } else {
            split.clone()
        };
        for _ in 0..(1 + r.next() % 8) {
            let at = (r.next() as usize) % bytes.len();
            bytes[at] = r.next() as u8;
        }
        let cut = (r.next() as usize) % (bytes.len() + 1);
        let _ = parse(&bytes[..cut]);
        let _ = parse(&bytes);
        // Pure noise, with a TLS-looking start half of the time.
        let len = (r.next() % 600) as usize;
        let mut noise: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
        if round % 2 == 0 && noise.len() > 6 {
            noise[..6].copy_from_slice(&[HANDSHAKE, 3, 1, 2, 0, CLIENT_HELLO]);
        }
        let _ = parse(&noise);
    }
}

/// Over a real socket: a hello written in pieces with pauses arrives
/// whole; the bytes stay for the reader; plain text is answered at once.
#[tokio::test]
async fn peek_waits_for_segments_and_leaves_the_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bytes = refragment(&rustls_hello("seg.example", &[b"h2"]), 100);
    let sent = bytes.clone();
    let client = tokio::spawn(async move {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.set_nodelay(true).unwrap();
        for piece in sent.chunks(37) {
            c.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c
    });
    let (mut s, _) = listener.accept().await.unwrap();
    match peek(&s, Duration::from_secs(10)).await {
        Peeked::Hello(h) => assert_eq!(h.sni.as_deref(), Some("seg.example")),
        other => panic!("{other:?}"),
    }
    let _c = client.await.unwrap();
    let mut read = vec![0; bytes.len()];
    s.read_exact(&mut read).await.unwrap();
    assert_eq!(read, bytes, "the ClientHello stays in the socket");

    // Plain text: NotTls without waiting for the timeout.
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (s, _) = listener.accept().await.unwrap();
    c.write_all(b"EHLO x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(
        peek(&s, Duration::from_secs(30)).await,
        Peeked::NotTls
    ));
    assert!(started.elapsed() < Duration::from_secs(20));

    // Silent, then half a hello: timed out; closed early: Closed.
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (s, _) = listener.accept().await.unwrap();
    assert!(matches!(
        peek(&s, Duration::from_millis(200)).await,
        Peeked::TimedOut { got: 0 }
    ));
    c.write_all(&bytes[..20]).await.unwrap();
    assert!(matches!(
        peek(&s, Duration::from_millis(300)).await,
        Peeked::TimedOut { got: 20 }
    ));
    drop(c);
    assert!(matches!(
        peek(&s, Duration::from_secs(10)).await,
        Peeked::Closed { got: 20 }
    ));
}
