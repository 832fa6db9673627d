//! The request `pocket explain` is given on its command line:
//! `"GET http://host/path?q"` (or `"GET /path"` with a `Host` header) and
//! `-H "Name: value"` headers, read as an HTTP/1.1 client would send them
//! (RFC 9112 §3: method SP request-target [SP HTTP-version]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::proxy::RequestId;
use crate::script::api::request::RequestView;

/// The request's head, or a sentence saying what is wrong with the input
/// and what is accepted.
pub fn build(
    line: &str,
    headers: &[String],
    peer: IpAddr,
    listener: &str,
) -> Result<RequestView, String> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let (method, target, version) = match parts.as_slice() {
        [m, t] => (*m, *t, Version::HTTP_11),
        [m, t, "HTTP/1.0"] => (*m, *t, Version::HTTP_10),
        [m, t, "HTTP/1.1"] => (*m, *t, Version::HTTP_11),
        [m, t, "HTTP/2"] => (*m, *t, Version::HTTP_2),
        [_, _, v] => {
            return Err(format!(
                "malformed request line {line:?}: unknown version {v:?} (HTTP/1.0, HTTP/1.1 or HTTP/2)"
            ))
        }
        _ => {
            return Err(format!(
                "malformed request line {line:?}: expected METHOD URL, as \"GET http://example.com/path\" or \"GET /path\""
            ))
        }
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("malformed request line {line:?}: {method:?} is not a method"))?;
    let uri: Uri = target
        .parse()
        .map_err(|_| format!("malformed request line {line:?}: {target:?} is not a URL"))?;
    let host = match (uri.scheme_str(), uri.authority()) {
        (Some("http") | Some("https"), Some(a)) => Some(a.as_str().to_string()),
        (Some(s), _) => {
            return Err(format!(
                "malformed request line {line:?}: scheme {s:?} (http or https)"
            ))
        }
        (None, Some(_)) | (None, None) if !target.starts_with('/') => {
            return Err(format!(
                "malformed request line {line:?}: {target:?} is neither a URL (http://host/path) nor a path (/path)"
            ))
        }
        _ => None,
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = Request::builder().method(method).uri(path).version(version);
    let map = builder
        .headers_mut()
        .ok_or_else(|| format!("malformed request line {line:?}"))?;
    let mut has_host = false;
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("malformed header {h:?}: expected \"Name: value\""))?;
        let name = HeaderName::from_bytes(name.trim_end().as_bytes()).map_err(|_| {
            format!(
                "malformed header {h:?}: {:?} is not a header name",
                name.trim_end()
            )
        })?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| {
            format!("malformed header {h:?}: the value has a character headers cannot carry")
        })?;
        has_host |= name == http::header::HOST;
        map.append(name, value);
    }
    if !has_host {
        let host = host.ok_or_else(|| {
            format!("no host: give a URL (\"GET http://example.com{path}\") or -H \"Host: example.com\"")
        })?;
        let value = HeaderValue::from_str(&host)
            .map_err(|_| format!("malformed request line {line:?}: bad host {host:?}"))?;
        map.insert(http::header::HOST, value);
    }
    let head = builder
        .body(())
        .map_err(|e| format!("malformed request {line:?}: {e}"))?
        .into_parts()
        .0;
    Ok(RequestView {
        head,
        raw_target: None,
        peer: SocketAddr::new(peer, 40000),
        listener: Arc::from(listener),
        id: RequestId { worker: 0, seq: 1 },
        growth: 0,
    })
}
