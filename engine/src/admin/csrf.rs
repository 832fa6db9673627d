//! What keeps a web page from acting through a browser on this machine
//! (cross-site request forgery). A listener without a token has nothing
//! else in the way: any page can `fetch("http://127.0.0.1:8404/api/reload",
//! {method: "POST", mode: "no-cors"})` or post a `text/plain` form whose
//! body reads as JSON. So every POST:
//!
//! - is refused when the browser says it comes from another site
//!   (`Sec-Fetch-Site: cross-site` or `same-site`, Fetch Metadata), or
//!   names an `Origin` whose `host:port` is not the request's `Host`;
//! - must say `Content-Type: application/json`. A page can send that to
//!   another origin only after a CORS preflight (`OPTIONS`), which this
//!   listener never answers with a yes, so the POST is never sent.
//!
//! The stats page sends both right; curl sends neither `Origin` nor
//! `Sec-Fetch-Site` and needs `-H 'Content-Type: application/json'`.

use http::header::{CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, Response, StatusCode};

use super::api::error;

type Answer = Response<http_body_util::Full<bytes::Bytes>>;

/// Ok when a POST with `headers` may proceed, else the answer: 403 for a
/// request from another site, 415 without the JSON content type.
#[allow(clippy::result_large_err)] // once per action, never on the proxy's path
pub fn check(headers: &HeaderMap) -> Result<(), Answer> {
    let site = headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or("?").to_ascii_lowercase());
    if let Some(site) = site.filter(|s| s != "same-origin" && s != "none") {
        return Err(error(
            StatusCode::FORBIDDEN,
            &format!("refused: the browser says this request comes from another site (Sec-Fetch-Site: {site}); use the stats page on this address, or curl"),
        ));
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("?");
        let host = headers.get(HOST).and_then(|h| h.to_str().ok());
        if host.is_none_or(|host| !same_host(origin, host)) {
            return Err(error(
                StatusCode::FORBIDDEN,
                &format!(
                    "refused: a page from {origin} may not act on the admin listener at {}",
                    host.unwrap_or("(no Host)")
                ),
            ));
        }
    }
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a POST must say Content-Type: application/json (curl: -H 'Content-Type: application/json')",
        ));
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`, or `null`) names `host`
/// (`host[:port]` as the `Host` header writes it), ignoring case.
fn same_host(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let with_port = |a: &str| {
        let has_port = match a.rsplit_once(':') {
            Some((_, port)) => !port.contains(']'),
            None => false,
        };
        if has_port {
            a.to_ascii_lowercase()
        } else {
            format!("{}{default}", a.to_ascii_lowercase())
        }
    };
    with_port(authority) == with_port(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn status(pairs: &[(&'static str, &str)]) -> u16 {
        match check(&headers(pairs)) {
            Ok(()) => 200,
            Err(a) => a.status().as_u16(),
        }
    }

    #[test]
    fn refuses_other_sites_and_other_content_types() {
        let json = ("content-type", "application/json; charset=utf-8");
        let host = ("host", "127.0.0.1:8404");
        assert_eq!(status(&[json, host]), 200, "curl");
        assert_eq!(status(&[host]), 415);
        assert_eq!(status(&[("content-type", "text/plain"), host]), 415);
        let page = [
            json,
            host,
            ("origin", "http://127.0.0.1:8404"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(status(&page), 200, "the stats page");
        assert_eq!(status(&[json, host, ("sec-fetch-site", "cross-site")]), 403);
        assert_eq!(status(&[json, host, ("sec-fetch-site", "same-site")]), 403);
        assert_eq!(
            status(&[json, host, ("origin", "http://evil.example")]),
            403
        );
        assert_eq!(
            status(&[json, host, ("origin", "http://127.0.0.1:8405")]),
            403
        );
        assert_eq!(status(&[json, host, ("origin", "null")]), 403);
        assert_eq!(status(&[json, ("origin", "http://127.0.0.1:8404")]), 403);
    }

    #[test]
    fn default_ports_and_case() {
        assert!(same_host("http://LOCALHOST", "localhost:80"));
        assert!(same_host("http://[::1]:8404", "[::1]:8404"));
        assert!(!same_host("http://[::1]", "[::1]:8404"));
        assert!(same_host("http://[::1]", "[::1]"));
    }
}
