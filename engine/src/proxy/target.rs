//! What a request is for: one host and one path, settled before the script
//! or the balancer reads them, so that what Pocket routes on is what the
//! server receives.
//!
//! - Host (RFC 9112 §3.2): exactly one Host line; an HTTP/1.1 request
//!   without one, or with a value that is not `host[:port]`, gets a 400, as
//!   in nginx. An absolute-form target (`GET http://a/ HTTP/1.1`) names the
//!   host and replaces the Host line (RFC 9112 §3.2.2); an HTTP/2
//!   `:authority` and a Host line that disagree are a 400 (RFC 9113
//!   §8.3.1).
//! - Path (RFC 3986 §6.2.2): percent-encoded unreserved characters are
//!   decoded (`/%61dmin` is `/admin`), other escapes are kept with
//!   upper-case hex (`%2F` stays a `%2F`, never a `/`), runs of slashes
//!   become one (nginx's `merge_slashes`), and dot segments are removed
//!   (§5.2.4: `/static/../admin` is `/admin`). A `%` not followed by two hex
//!   digits is a 400. The query is left as it came. The target as the client
//!   sent it stays readable as `req.target`.

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Uri, Version};

use crate::wire::host::valid_host;

/// Why a request's host or path cannot be served: the client gets a 400.
pub type Refusal = &'static str;

/// The refusal of an authority-form target (`host:port`) in a request
/// other than CONNECT (RFC 9112 §3.2.3); `pocket explain` gives the same
/// words.
pub const AUTHORITY_FORM: Refusal =
    "a host:port request target (authority form) is only for CONNECT (RFC 9112 §3.2.3)";

/// Settles the host and the path of `head` in place. Returns the path and
/// query as the client sent them when normalising changed them.
pub fn settle(head: &mut http::request::Parts) -> Result<Option<PathAndQuery>, Refusal> {
    settle_host(head)?;
    if let Some(scheme) = head.uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err("a request target whose scheme is not http or https");
        }
    }
    let Some(pq) = head.uri.path_and_query() else {
        return Ok(None);
    };
    let path = pq.path();
    if path == "*" {
        // Asterisk form is for OPTIONS alone (RFC 9112 §3.2.4).
        if head.method != http::Method::OPTIONS {
            return Err("the * request target is only for OPTIONS (RFC 9112 §3.2.4)");
        }
        return Ok(None);
    }
    let normal = if !pq.as_str().starts_with('/') {
        // `http://a?x=1`: an absolute target with an empty path is `/`
        // (RFC 9112 §3.2.2: origin form needs one).
        Some("/".to_string())
    } else {
        normalize_path(path)?
    };
    let Some(path) = normal else {
        return Ok(None);
    };
    let raw = pq.clone();
    let text = match raw.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let normal = PathAndQuery::from_maybe_shared(bytes::Bytes::from(text))
        .map_err(|_| "the path is not valid once normalised")?;
    let mut parts = std::mem::take(&mut head.uri).into_parts();
    parts.path_and_query = Some(normal);
    head.uri = Uri::from_parts(parts).map_err(|_| "the path is not valid once normalised")?;
    Ok(Some(raw))
}

fn settle_host(head: &mut http::request::Parts) -> Result<(), Refusal> {
    let (host, more) = host_lines(&head.headers);
    if more {
        return Err("more than one Host header (RFC 9112 §3.2)");
    }
    if let Some(h) = host {
        if h.is_empty() || !valid_host(h.as_bytes()) {
            return Err("the Host header is not a valid host[:port] (RFC 9112 §3.2)");
        }
    }
    let named = match head.uri.authority() {
        None => {
            // Origin form: the Host line names the host. HTTP/1.0 may omit it.
            if host.is_none() && head.version != Version::HTTP_10 {
                return Err("no Host header (RFC 9112 §3.2)");
            }
            // Kept as it is unless it ends in a dot (below).
            host.filter(|h| ends_in_dot(h.as_bytes())).cloned()
        }
        Some(_) if head.uri.scheme().is_none() && head.method != http::Method::CONNECT => {
            // `GET b:80 HTTP/1.1`: a target that is neither a path nor a
            // URL. nginx and HAProxy answer 400; forwarding it as `GET /`
            // would hand the server a path the client never sent.
            return Err(AUTHORITY_FORM);
        }
        Some(authority) => {
            if authority.as_str().contains('@') {
                return Err("user information in the request target (RFC 9110 §4.2.4)");
            }
            if authority.as_str().is_empty() || !valid_host(authority.as_str().as_bytes()) {
                return Err("the request target's host is not a valid host[:port]");
            }
            match head.version {
                Version::HTTP_2 | Version::HTTP_3 => {
                    if let Some(h) = host {
                        if !same_host(h.as_bytes(), authority.as_str().as_bytes()) {
                            return Err(
                                "the Host header differs from :authority (RFC 9113 §8.3.1)",
                            );
                        }
                    }
                }
                _ => {
                    if host.is_none() && head.version == Version::HTTP_11 {
                        return Err("no Host header (RFC 9112 §3.2)");
                    }
                }
            }
            // Absolute form (or :authority): the target's host wins, and
            // is what the server receives (RFC 9112 §3.2.2).
            Some(
                HeaderValue::from_str(authority.as_str())
                    .map_err(|_| "the request target's host is not a valid host[:port]")?,
            )
        }
    };
    if let Some(value) = named {
        // `example.com.` and `example.com` are one host (the root's empty
        // label); nginx matches server names without the dot. Routing and
        // the server see it without.
        let value = match without_trailing_dot(value.as_bytes()) {
            Some(fixed) => HeaderValue::from_maybe_shared(bytes::Bytes::from(fixed))
                .map_err(|_| "the Host header is not a valid host[:port] (RFC 9112 §3.2)")?,
            None => value,
        };
        head.headers.insert(header::HOST, value);
    }
    Ok(())
}

/// The first Host line's value, and whether there is another. A look
/// at each name of a common head (a few names: cheaper than hashing
/// one), the map's own lookup for a large one.
fn host_lines(headers: &http::HeaderMap) -> (Option<&HeaderValue>, bool) {
    if headers.keys_len() > 12 {
        let mut lines = headers.get_all(header::HOST).iter();
        let first = lines.next();
        return (first, lines.next().is_some());
    }
    let mut first = None;
    for (name, value) in headers {
        if name == header::HOST {
            if first.is_some() {
                return (first, true);
            }
            first = Some(value);
        }
    }
    (first, false)
}

/// Two `host[:port]` that name the same server (RFC 3986 §6.2.3): case,
/// a trailing dot and a default port (80 or 443) aside.
fn same_host(a: &[u8], b: &[u8]) -> bool {
    fn canonical(h: &[u8]) -> Vec<u8> {
        let mut h = without_trailing_dot(h).unwrap_or_else(|| h.to_vec());
        for default in [&b":80"[..], b":443", b":"] {
            if h.ends_with(default) && h.first() != Some(&b':') {
                h.truncate(h.len() - default.len());
                break;
            }
        }
        h.make_ascii_lowercase();
        h
    }
    a.eq_ignore_ascii_case(b) || canonical(a) == canonical(b)
}

/// Whether [`without_trailing_dot`] would change `host`, without making
/// the changed copy (every request's Host is asked).
fn ends_in_dot(host: &[u8]) -> bool {
    if host.first() == Some(&b'[') {
        return false;
    }
    let colon = memchr::memchr(b':', host).unwrap_or(host.len());
    colon >= 2 && host[colon - 1] == b'.'
}

/// `a.example.:80` -> `a.example:80`; None when there is no trailing dot.
fn without_trailing_dot(host: &[u8]) -> Option<Vec<u8>> {
    if host.first() == Some(&b'[') {
        return None;
    }
    let colon = host.iter().position(|&b| b == b':').unwrap_or(host.len());
    let (name, port) = host.split_at(colon);
    let trimmed = name.strip_suffix(b".")?;
    if trimmed.is_empty() {
        return None;
    }
    let mut out = trimmed.to_vec();
    out.extend_from_slice(port);
    Some(out)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// True when the path may change: it has an escape, a dot segment or a
/// doubled slash. Most paths have none and cost one scan.
fn may_change(p: &[u8]) -> bool {
    p.contains(&b'%')
        || p.windows(2)
            .any(|w| w[0] == b'/' && matches!(w[1], b'.' | b'/'))
}

/// The normal form of an origin-form path (see the module doc), or None
/// when it is already normal. Paths that do not start with `/` (`*`) are
/// left alone.
pub fn normalize_path(path: &str) -> Result<Option<String>, Refusal> {
    let p = path.as_bytes();
    if p.first() != Some(&b'/') || !may_change(p) {
        return Ok(None);
    }
    // 1. Escapes: unreserved ones decoded, the rest kept in upper case.
    let mut decoded = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        if p[i] != b'%' {
            decoded.push(p[i]);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            p.get(i + 1).copied().and_then(hex),
            p.get(i + 2).copied().and_then(hex),
        ) else {
            return Err("a % in the path is not followed by two hex digits");
        };
        let byte = hi * 16 + lo;
        if byte == 0 {
            // nginx refuses a decoded NUL too: C servers end the path there.
            return Err("a %00 (NUL) in the path");
        }
        if unreserved(byte) {
            decoded.push(byte);
        } else {
            decoded.push(b'%');
            decoded.extend_from_slice(format!("{byte:02X}").as_bytes());
        }
        i += 3;
    }
    // 2. Segments: empty ones merged, "." dropped, ".." removes the one
    //    before it (never above the root).
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut ends_in_slash = false;
    for segment in decoded[1..].split(|&b| b == b'/') {
        ends_in_slash = matches!(segment, b"" | b"." | b"..");
        match segment {
            b"" | b"." => {}
            b".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for s in &kept {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() || ends_in_slash {
        out.push(b'/');
    }
    if out == p {
        return Ok(None);
    }
    // Only bytes of the input (valid UTF-8 already) and ASCII were added.
    String::from_utf8(out)
        .map(Some)
        .map_err(|_| "the path is not valid once normalised")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        normalize_path(p).unwrap().unwrap_or_else(|| p.to_string())
    }

    #[test]
    fn walks_around_a_prefix_are_undone() {
        assert_eq!(norm("/static/../admin/users"), "/admin/users");
        assert_eq!(norm("/%61dmin/users"), "/admin/users");
        assert_eq!(norm("/./admin/users"), "/admin/users");
        assert_eq!(norm("//admin/users"), "/admin/users");
        assert_eq!(norm("/%2e%2e/admin"), "/admin");
        assert_eq!(norm("/a/%2E/b"), "/a/b");
        assert_eq!(norm("/../../admin"), "/admin");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/."), "/a/");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("/a//b///"), "/a/b/");
    }

    #[test]
    fn other_escapes_stay_escaped() {
        assert_eq!(norm("/a%2fb"), "/a%2Fb");
        assert_eq!(norm("/a%2Fb/..%2F"), "/a%2Fb/..%2F");
        assert_eq!(norm("/%7e/x%20y"), "/~/x%20y");
    }

    #[test]
    fn normal_paths_are_untouched() {
        for p in [
            "/",
            "/a/b",
            "/a/b/",
            "/file.html",
            "/.well-known/x",
            "*",
            "/a.b/c",
        ] {
            assert_eq!(normalize_path(p).unwrap(), None, "{p}");
        }
    }

    #[test]
    fn broken_escapes_are_refused() {
        assert!(normalize_path("/a%").is_err());
        assert!(normalize_path("/a%2").is_err());
        assert!(normalize_path("/a%zz").is_err());
        assert!(normalize_path("/admin%00/users").is_err());
    }

    #[test]
    fn an_authority_and_a_host_may_differ_in_form_only() {
        assert!(same_host(b"example.com:80", b"example.com"));
        assert!(same_host(b"Example.com.", b"example.com"));
        assert!(same_host(b"example.com:443", b"EXAMPLE.com."));
        assert!(!same_host(b"example.com:8080", b"example.com"));
        assert!(!same_host(b"a.example", b"b.example"));
        assert!(same_host(b"[::1]:80", b"[::1]"));
    }

    #[test]
    fn host_lines_are_found_by_a_look_or_by_the_map_alike() {
        for extra in [0, 20] {
            for hosts in 0..3 {
                let mut map = http::HeaderMap::new();
                for i in 0..extra {
                    map.append(
                        http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                        HeaderValue::from_static("v"),
                    );
                }
                for h in 0..hosts {
                    map.append(header::HOST, HeaderValue::from(h));
                }
                map.append(header::ACCEPT, HeaderValue::from_static("*/*"));
                let (first, more) = host_lines(&map);
                let mut lines = map.get_all(header::HOST).iter();
                assert_eq!(first, lines.next(), "{extra} {hosts}");
                assert_eq!(more, lines.next().is_some(), "{extra} {hosts}");
            }
        }
    }

    #[test]
    fn a_trailing_dot_is_the_same_host() {
        assert_eq!(
            without_trailing_dot(b"a.example."),
            Some(b"a.example".to_vec())
        );
        assert_eq!(
            without_trailing_dot(b"a.example.:80"),
            Some(b"a.example:80".to_vec())
        );
        assert_eq!(without_trailing_dot(b"a.example"), None);
        assert_eq!(without_trailing_dot(b"[::1]:80"), None);
        for h in [
            &b"a.example."[..],
            b"a.example.:80",
            b"a.example",
            b"[::1]:80",
            b".",
            b".:80",
            b"",
            b":",
            b"a..",
            b"a:.",
            b"[a.]",
        ] {
            assert_eq!(
                ends_in_dot(h),
                without_trailing_dot(h).is_some(),
                "{:?}",
                String::from_utf8_lossy(h)
            );
        }
    }
}
