//! Who may use the admin listener. With `admin.token` set, every request
//! carries it: `Authorization: Bearer TOKEN` (curl, scripts, Prometheus's
//! `authorization` setting), or the `pocket_admin` cookie a browser gets
//! by opening the page once as `/?token=TOKEN`. Without a token (allowed
//! on a loopback address only, see `config::admin`) everyone who reaches
//! the address may.

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;

/// The cookie that carries the token for the stats page.
pub const COOKIE_NAME: &str = "pocket_admin";

/// The outcome of [`check`].
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Allowed by `?token=`: answer with this `Set-Cookie` so the page's
    /// own requests carry it from now on.
    AllowedSetCookie(String),
    /// No token came.
    Missing,
    /// A token came (header, cookie or `?token=`) and is not the one.
    Mismatch,
    /// An `Authorization` header that is not `Bearer TOKEN`.
    NotBearer,
}

/// Whether a request with `headers` and `query` may proceed.
pub fn check(token: Option<&str>, headers: &HeaderMap, query: Option<&str>) -> Verdict {
    let Some(token) = token else {
        return Verdict::Allowed;
    };
    let mut sent = false;
    // An Authorization header without the Bearer scheme (the token alone,
    // or Basic): said as such, not as a wrong token.
    let mut other_scheme = false;
    let bearer = headers
        .get_all(AUTHORIZATION)
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .inspect(|_| sent = true)
        .filter_map(|v| {
            let t = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "));
            other_scheme |= t.is_none();
            t
        })
        .any(|t| same(t.trim(), token));
    if bearer {
        return Verdict::Allowed;
    }
    let cookie = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE_NAME)
        .inspect(|_| sent = true)
        .any(|(_, value)| same(value, token));
    if cookie {
        return Verdict::Allowed;
    }
    let in_query = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|p| p.split_once('='))
        .filter(|(name, _)| *name == "token")
        .inspect(|_| sent = true)
        .any(|(_, value)| same(&super::api::percent_decode(value), token));
    if in_query {
        // The loader let only cookie-safe characters into a token
        // (`config::admin`), so it goes into the cookie as it is.
        return Verdict::AllowedSetCookie(format!(
            "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Strict",
            cookie_value(token)
        ));
    }
    if other_scheme {
        Verdict::NotBearer
    } else if sent {
        Verdict::Mismatch
    } else {
        Verdict::Missing
    }
}

/// The `Host` names this machine by address or as `localhost`. Without a
/// token this is what keeps a web page from reaching the API through DNS
/// rebinding (a name of the page's that resolves to 127.0.0.1): the
/// browser sends the page's name. No `Host` (HTTP/1.0 tools) is local.
pub fn host_is_local(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(http::header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// The token as a cookie value: a token may hold `;`, `,`, `"` or `\`
/// (admin.token takes any printable ASCII), which a cookie value cannot
/// (RFC 6265 section 4.1.1, cookie-octet): the browser would keep only
/// what comes before a `;` and every later request would get a 401.
/// Those and `%` are sent as `%XX`, and read back decoded.
fn cookie_value(token: &str) -> String {
    let mut out = String::with_capacity(token.len());
    for b in token.bytes() {
        if matches!(b, b'"' | b',' | b';' | b'\\' | b'%') || !(0x21..0x7f).contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Compares in time that does not depend on where they differ.
fn same(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut diff = (a.len() != b.len()) as u8;
    for (i, t) in b.iter().enumerate() {
        diff |= a.get(i).copied().unwrap_or(0) ^ t;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_cookie_and_query() {
        let mut h = HeaderMap::new();
        assert_eq!(check(None, &h, None), Verdict::Allowed);
        assert_eq!(check(Some("s3"), &h, None), Verdict::Missing);
        h.insert(AUTHORIZATION, "Bearer s3".parse().unwrap());
        assert_eq!(check(Some("s3"), &h, None), Verdict::Allowed);
        assert_eq!(check(Some("s4"), &h, None), Verdict::Mismatch);
        let mut bare = HeaderMap::new();
        bare.insert(AUTHORIZATION, "s3".parse().unwrap());
        assert_eq!(check(Some("s3"), &bare, None), Verdict::NotBearer);
        let mut c = HeaderMap::new();
        c.insert(COOKIE, "a=b; pocket_admin=s3".parse().unwrap());
        assert_eq!(check(Some("s3"), &c, None), Verdict::Allowed);
        assert!(matches!(
            check(Some("s3"), &HeaderMap::new(), Some("x=1&token=s3")),
            Verdict::AllowedSetCookie(_)
        ));
        assert_eq!(
            check(Some("s3"), &HeaderMap::new(), Some("token=s")),
            Verdict::Mismatch
        );
        let mut other = HeaderMap::new();
        other.insert(COOKIE, "a=b".parse().unwrap());
        assert_eq!(check(Some("s3"), &other, None), Verdict::Missing);
    }

    #[test]
    fn local_hosts() {
        let host = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(http::header::HOST, h.parse().unwrap());
            host_is_local(&m)
        };
        assert!(host("127.0.0.1:8404") && host("localhost:8404") && host("[::1]:8404"));
        assert!(host("10.0.0.1") && host("LOCALHOST"));
        assert!(!host("evil.example:8404") && !host("example.com"));
        assert!(host_is_local(&HeaderMap::new()));
    }
}
