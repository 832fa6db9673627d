//! What changes when a request or response crosses the proxy: hop-by-hop
//! headers go, Host stays (or is made from an HTTP/2 `:authority`),
//! X-Forwarded-For and X-Forwarded-Proto are added, and the request is
//! spoken to the server in the pool's protocol (HTTP/1.1 unless the pool
//! says `h2`) whatever the client spoke.

use std::net::IpAddr;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Uri, Version};

use crate::wire::fields;
use crate::wire::hop_by_hop::{is_hop_by_hop, strip_hop_by_hop};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The codings a message's Transfer-Encoding lines list, in order (the
/// lines are one list, RFC 9110 §5.3).
fn transfer_codings(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether `headers` has `name`: the names of a common head looked at in
/// turn (a few comparisons of an enum), a long head's hashed.
fn has(headers: &HeaderMap, name: &HeaderName) -> bool {
    if headers.keys_len() <= 12 {
        headers.keys().any(|k| k == name)
    } else {
        headers.contains_key(name)
    }
}

/// Request heads that parse but must not be forwarded, and why: framing a
/// server could read differently (request smuggling), or a CONNECT tunnel
/// a reverse proxy does not offer.
pub fn refuse(head: &http::request::Parts) -> Option<(http::StatusCode, &'static str)> {
    if head.method == http::Method::CONNECT {
        return Some((
            http::StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported by a reverse proxy",
        ));
    }
    if !has(&head.headers, &header::TRANSFER_ENCODING) {
        return None;
    }
    let (mut chunked, mut other) = (0, 0);
    for coding in transfer_codings(&head.headers) {
        if coding.eq_ignore_ascii_case(b"chunked") {
            chunked += 1;
        } else {
            other += 1;
        }
    }
    if chunked > 1 {
        return Some((
            http::StatusCode::BAD_REQUEST,
            "Transfer-Encoding applies chunked more than once",
        ));
    }
    if other > 0 {
        // The body is re-chunked for the server: another coding would
        // reach it undeclared (RFC 9112 §6.1: 501; nginx answers 501).
        return Some((
            http::StatusCode::NOT_IMPLEMENTED,
            "a Transfer-Encoding other than chunked",
        ));
    }
    None
}

/// Turns a client's request head into the one sent to a server.
/// `peer_ip`: the client's address as text ([`peer_value`], made once per
/// connection); `https`: the client came in over TLS (X-Forwarded-Proto).
pub fn prepare_request(head: &mut http::request::Parts, peer_ip: &HeaderValue, https: bool) {
    strip_hop_by_hop(&mut head.headers);
    if head.headers.contains_key(header::EXPECT) {
        head.headers.remove(header::EXPECT);
    }

    // HTTP/2 carries the host in :authority; HTTP/1 servers need Host.
    if !head.headers.contains_key(header::HOST) {
        if let Some(authority) = head.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                head.headers.insert(header::HOST, v);
            }
        }
    }
    // Origin form: servers get "/path?query", never an absolute URI.
    if head.uri.scheme().is_some() || head.uri.authority().is_some() {
        let pq = head.uri.path_and_query().cloned();
        let mut parts = http::uri::Parts::default();
        parts.path_and_query =
            Some(pq.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
        if let Ok(uri) = Uri::from_parts(parts) {
            head.uri = uri;
        }
    }
    head.version = Version::HTTP_11;

    add_forwarded_for(&mut head.headers, peer_ip);
    let proto = if https { "https" } else { "http" };
    head.headers
        .insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
}

/// [`prepare_request`] and `wire::request::write` in one pass, for an
/// HTTP/1.1 server: the head goes to `out` as the server gets it, and
/// `head` is left as it is (no field is removed, inserted or re-hashed).
/// The same rules (docs/lua-api.md, "What Pocket changes"): hop-by-hop
/// fields and those `Connection` names are skipped, so is `Expect`;
/// X-Forwarded-For gets the client appended (every line of it, one line
/// on, where its first line was), X-Forwarded-Proto is set (where the
/// client's was), each added at the end if absent, For before Proto.
/// Framing as `wire::request::write`: `framing` says what is written.
///
/// One difference in order, none in content: the fields keep the
/// client's order, where `prepare_request`'s removals move the map's last
/// field into a removed one's place (`HeaderMap::remove` swaps). A head
/// not in origin form or not HTTP/1.1 (a script's edit) goes through
/// [`prepare_request`] as before.
pub fn write_prepared(
    out: &mut Vec<u8>,
    head: &mut http::request::Parts,
    framing: crate::wire::Framing,
    peer_ip: &HeaderValue,
    https: bool,
) {
    if head.version != Version::HTTP_11
        || head.uri.scheme().is_some()
        || head.uri.authority().is_some()
    {
        prepare_request(head, peer_ip, https);
        crate::wire::request::write(out, head, framing);
        return;
    }
    let headers = &head.headers;
    // Which of the fields that change are there: one look at the names
    // (no hashing).
    let (mut connection, mut forwarded_for, mut forwarded_proto) = (false, false, false);
    for name in headers.keys() {
        if *name == header::CONNECTION {
            connection = true;
        } else if *name == X_FORWARDED_FOR {
            forwarded_for = true;
        } else if *name == X_FORWARDED_PROTO {
            forwarded_proto = true;
        }
    }
    // Names the Connection lines list go too (RFC 9110 §7.6.1), as
    // `strip_hop_by_hop` reads them.
    let listed = if connection {
        crate::wire::hop_by_hop::listed_in_connection(headers)
    } else {
        Vec::new()
    };
    let forwarded_for = forwarded_for && !listed.contains(&X_FORWARDED_FOR);
    let forwarded_proto = forwarded_proto && !listed.contains(&X_FORWARDED_PROTO);
    let proto: &[u8] = if https { b"https" } else { b"http" };

    crate::wire::request::request_line(out, head);
    // The field whose lines are being written, when it joins them.
    let mut in_forwarded_for = false;
    let mut proto_written = false;
    for (name, value) in headers {
        let is_xff = *name == X_FORWARDED_FOR;
        if in_forwarded_for && !is_xff {
            finish_forwarded_for(out, peer_ip);
            in_forwarded_for = false;
        }
        if is_xff {
            if !forwarded_for {
                continue;
            }
            // Its lines are one list (fields.rs): joined on one line.
            out.extend_from_slice(if in_forwarded_for {
                b", "
            } else {
                b"x-forwarded-for: "
            });
            out.extend_from_slice(value.as_bytes());
            in_forwarded_for = true;
            continue;
        }
        if *name == X_FORWARDED_PROTO {
            if forwarded_proto && !proto_written {
                // One line, where the client's first was.
                proto_written = true;
                field_line(out, b"x-forwarded-proto", proto);
            }
            continue;
        }
        if *name == header::CONTENT_LENGTH
            || *name == header::EXPECT
            || is_hop_by_hop(name)
            || (!listed.is_empty() && listed.contains(name))
        {
            continue;
        }
        field_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if in_forwarded_for {
        finish_forwarded_for(out, peer_ip);
    } else if !forwarded_for {
        field_line(out, b"x-forwarded-for", peer_ip.as_bytes());
    }
    if !proto_written {
        field_line(out, b"x-forwarded-proto", proto);
    }
    crate::wire::request::finish(out, framing);
}

/// Ends an X-Forwarded-For line with the client.
fn finish_forwarded_for(out: &mut Vec<u8>, peer_ip: &HeaderValue) {
    out.extend_from_slice(b", ");
    out.extend_from_slice(peer_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `name: value` CRLF.
fn field_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The client asked for trailers (`TE: trailers`, RFC 9110 §10.1.4), as
/// gRPC clients must: an HTTP/2 server is told so too (hop-by-hop, the
/// header is dropped with the others, then written again).
pub fn wants_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    })
}

/// Fits a prepared request head to the protocol of the pool it is about to
/// be sent to (a fallback can move it between pools): HTTP/1.1 takes the
/// origin form and Host; HTTP/2 takes the absolute form, from which
/// hyper writes `:scheme` and `:authority` (RFC 9113 §8.3.1; Host stays,
/// the same value), and `TE: trailers` if the client asked for them.
/// Cheap for HTTP/1.1: one test.
#[inline]
pub fn for_protocol(head: &mut http::request::Parts, h2: bool, tls: bool, trailers: bool) {
    if !h2 {
        if head.version != Version::HTTP_11 || head.uri.authority().is_some() {
            head.version = Version::HTTP_11;
            head.headers.remove(header::TE);
            let pq = head.uri.path_and_query().cloned();
            let mut parts = http::uri::Parts::default();
            parts.path_and_query =
                Some(pq.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
            if let Ok(uri) = Uri::from_parts(parts) {
                head.uri = uri;
            }
        }
        return;
    }
    head.version = Version::HTTP_2;
    if trailers {
        head.headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if head.uri.authority().is_some() {
        return;
    }
    let authority = head
        .headers
        .get(header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    parts.authority =
        Some(authority.unwrap_or_else(|| http::uri::Authority::from_static("localhost")));
    parts.path_and_query = Some(
        head.uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    if let Ok(uri) = Uri::from_parts(parts) {
        head.uri = uri;
    }
}

/// Appends the client to X-Forwarded-For, as HAProxy's `option forwardfor`
/// and nginx's `$proxy_add_x_forwarded_for` do.
fn add_forwarded_for(headers: &mut HeaderMap, peer_ip: &HeaderValue) {
    // Every line of it: a list sent on two lines is one list (fields.rs).
    let value = match fields::combined(headers, &X_FORWARDED_FOR) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + peer_ip.len());
            v.extend_from_slice(&prev);
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer_ip.as_bytes());
            match HeaderValue::from_maybe_shared(bytes::Bytes::from(v)) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
        None => peer_ip.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), value);
}

/// The client's address as an X-Forwarded-For entry. Made once per
/// connection; the worker keeps the last one made, so a run of
/// connections from one client (a balancer in front, a load generator)
/// shares its text instead of formatting it per accept.
pub fn peer_value(peer: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let made = || {
        // Copied at its exact length: a `Bytes` made from the formatted
        // `String` (capacity 16 for "127.0.0.1") would add a shared
        // header allocation, kept for the connection's life.
        HeaderValue::from_str(&canonical_ip(peer).to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    };
    LAST.try_with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((ip, v)) if *ip == peer => v.clone(),
            _ => {
                let v = made();
                *last = Some((peer, v.clone()));
                v
            }
        }
    })
    .unwrap_or_else(|_| made())
}

/// An IPv4 client seen through a dual-stack socket is reported as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The length a Content-Length sent as a list (`5, 5`, or on two lines)
/// stands for; None when it is absent or already one plain number.
fn plain_length(headers: &HeaderMap) -> Option<u64> {
    let mut lines = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = lines.next()?;
    if lines.next().is_none() && first.as_bytes().iter().all(u8::is_ascii_digit) {
        return None;
    }
    let token = first.as_bytes().split(|b| *b == b',').next()?;
    std::str::from_utf8(token.trim_ascii()).ok()?.parse().ok()
}

/// Turns a server's response head into the one sent to the client, or
/// says why it cannot be relayed (the client then gets a 502, as nginx and
/// HAProxy answer). Framing is Pocket's: the body is re-framed for the
/// client, so the server's framing headers never pass through as they came.
pub fn prepare_response(head: &mut http::response::Parts) -> Result<(), &'static str> {
    if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
        // Pocket never forwards an Upgrade (it is hop-by-hop), so no
        // client asked for this switch (RFC 9110 §15.2.2).
        return Err("101 Switching Protocols for a request that asked for no upgrade");
    }
    if head.headers.contains_key(header::TRANSFER_ENCODING) {
        // Only "chunked" is decoded (nginx refuses the rest too): another
        // coding would reach the client undeclared once the header goes.
        let only_chunked = {
            let mut codings = transfer_codings(&head.headers);
            codings
                .next()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
                && codings.next().is_none()
        };
        if !only_chunked {
            return Err("a Transfer-Encoding other than chunked");
        }
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and a
        // proxy must remove the Content-Length before forwarding.
        head.headers.remove(header::CONTENT_LENGTH);
    } else if let Some(n) = plain_length(&head.headers) {
        // `5, 5` or two equal lines (hyper checked they agree): the client
        // gets one plain number (RFC 9110 §8.6).
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    // Pocket speaks its own version whatever the server spoke (RFC 9112
    // §2.3); hyper writes HTTP/1.0 itself to an HTTP/1.0 client.
    head.version = Version::HTTP_11;
    strip_hop_by_hop(&mut head.headers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_fits_the_protocol_of_its_pool_both_ways() {
        let mut req = http::Request::builder()
            .uri("/p?q=1")
            .header("host", "site.test:8080")
            .header("te", "gzip, trailers")
            .body(())
            .unwrap();
        assert!(wants_trailers(req.headers()));
        let (mut head, ()) = {
            let (mut h, b) = std::mem::replace(&mut req, http::Request::new(())).into_parts();
            prepare_request(&mut h, &HeaderValue::from_static("10.0.0.1"), false);
            (h, b)
        };
        assert!(!head.headers.contains_key(header::TE));
        for_protocol(&mut head, true, true, true);
        assert_eq!(head.uri, "https://site.test:8080/p?q=1");
        assert_eq!(head.version, Version::HTTP_2);
        assert_eq!(head.headers[header::TE], "trailers");
        // A fallback to an HTTP/1.1 pool: origin form, no TE.
        for_protocol(&mut head, false, false, true);
        assert_eq!(head.uri, "/p?q=1");
        assert_eq!(head.version, Version::HTTP_11);
        assert!(!head.headers.contains_key(header::TE));
    }

    #[test]
    fn strips_hop_by_hop_and_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn h2_request_gets_host_and_origin_form() {
        let req = http::Request::builder()
            .version(Version::HTTP_2)
            .uri("http://example.com:8080/a?b=1")
            .body(())
            .unwrap();
        let (mut head, _) = req.into_parts();
        prepare_request(&mut head, &peer_value("127.0.0.1".parse().unwrap()), false);
        assert_eq!(head.uri.to_string(), "/a?b=1");
        assert_eq!(head.headers[header::HOST], "example.com:8080");
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers["x-forwarded-for"], "127.0.0.1");
    }

    #[test]
    fn forwarded_for_on_two_lines_is_one_list() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.2"));
        add_forwarded_for(&mut h, &peer_value("127.0.0.1".parse().unwrap()));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 198.51.100.2, 127.0.0.1");
    }

    /// The one-pass writer against `prepare_request` + `write`, on heads
    /// made of the fields whose rules differ: the same request line, the
    /// same lines (byte for byte, the same order when nothing was
    /// removed, which is when `HeaderMap::remove` reorders).
    #[test]
    fn write_prepared_writes_what_prepare_request_and_write_write() {
        let pool: [(&str, &str); 16] = [
            ("host", "a.example"),
            ("connection", "keep-alive"),
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-for", "198.51.100.2, 203.0.113.3"),
            ("x-forwarded-proto", "https"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("expect", "100-continue"),
            ("content-length", "0"),
            ("user-agent", "t/1"),
            ("cookie", "a=1"),
            ("connection", "x-forwarded-for"),
            ("connection", "X-Forwarded-Proto, upgrade"),
            ("upgrade", "h2c"),
        ];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let peer = peer_value("127.0.0.1".parse().unwrap());
        let mut same_order = 0;
        for case in 0..3000 {
            let mut h = HeaderMap::new();
            for _ in 0..next(8) {
                let (n, v) = pool[next(pool.len())];
                h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
            }
            let (mut parts, ()) = http::Request::new(()).into_parts();
            parts.uri = "/p?q=1".parse().unwrap();
            parts.headers = h;
            let https = case % 2 == 0;
            let framing = match case % 3 {
                0 => crate::wire::Framing::Empty,
                1 => crate::wire::Framing::Length(0),
                _ => crate::wire::Framing::Length(7),
            };
            let mut old = parts.clone();
            prepare_request(&mut old, &peer, https);
            let mut want = Vec::new();
            crate::wire::request::write(&mut want, &old, framing);
            let mut got = Vec::new();
            let mut new = parts.clone();
            write_prepared(&mut got, &mut new, framing, &peer, https);
            assert_eq!(new.headers, parts.headers, "the head is left as it was");
            let lines = |b: &[u8]| {
                let mut l: Vec<Vec<u8>> = b.split(|c| *c == b'\n').map(<[u8]>::to_vec).collect();
                l.sort();
                l
            };
            let removed = parts
                .headers
                .keys()
                .any(|n| is_hop_by_hop(n) || *n == header::EXPECT || n.as_str() == "x-secret");
            if removed {
                assert_eq!(
                    lines(&got),
                    lines(&want),
                    "{}\n---\n{}",
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want)
                );
            } else {
                same_order += 1;
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want)
                );
            }
        }
        assert!(same_order > 100, "{same_order}");
        // A script's absolute-form target: the old way, origin form.
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.uri = "http://b.example/x".parse().unwrap();
        let mut got = Vec::new();
        write_prepared(
            &mut got,
            &mut parts,
            crate::wire::Framing::Empty,
            &peer,
            false,
        );
        assert_eq!(
            String::from_utf8_lossy(&got),
            "GET /x HTTP/1.1\r\nhost: b.example\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded_for(&mut h, &peer_value("127.0.0.2".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
    }
}
