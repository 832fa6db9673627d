//! The request object `on_request` and `on_response` get. It borrows the
//! request's head for the duration of the hook call: fields are read from
//! it when the script asks, edits go straight into it.

use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Uri, Version};
use mlua::{UserData, UserDataFields, UserDataMethods, Value};

use super::headers::{add_header_methods, HasHeaders, MAX_HEAD_GROWTH};

/// The longest method a script may set, bytes (methods are short tokens;
/// a long one would be copied into every request it is set on).
const MAX_METHOD: usize = 64;
use crate::context::RequestId;

pub struct RequestView {
    pub head: Parts,
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    pub id: RequestId,
    /// The path and query as the client sent them, when normalising
    /// changed them (`req.target`; see proxy::target).
    pub raw_target: Option<PathAndQuery>,
    /// Net bytes the script's header edits added to `head` (headers.rs
    /// bounds it); 0 for a new view.
    pub growth: isize,
    /// The connection's TLS (`req.tls`, `req.sni`, `req.alpn`,
    /// `req.scheme`); None on a plain listener.
    pub tls: Option<Arc<crate::context::TlsInfo>>,
}

impl HasHeaders for RequestView {
    fn headers(&self) -> &http::HeaderMap {
        &self.head.headers
    }
    fn headers_mut(&mut self) -> &mut http::HeaderMap {
        &mut self.head.headers
    }
    fn growth_mut(&mut self) -> &mut isize {
        &mut self.growth
    }
}

impl RequestView {
    /// The host the client asked for, without the port: from `Host` (HTTP/1)
    /// or the `:authority` (HTTP/2), which proxy::target made agree. None
    /// when the request names none (HTTP/1.0, or an empty Host).
    pub fn host(&self) -> Option<&str> {
        let raw = match self.head.headers.get(http::header::HOST) {
            Some(h) => h.to_str().ok()?,
            None => self.head.uri.authority()?.as_str(),
        };
        Some(strip_port(raw)).filter(|h| !h.is_empty())
    }

    /// The path and query as the client sent them.
    pub fn target(&self) -> &str {
        match &self.raw_target {
            Some(raw) => raw.as_str(),
            None => self.head.uri.path_and_query().map_or("/", |p| p.as_str()),
        }
    }

    /// Replaces the path, keeping the query unless `path` brings its own.
    pub fn set_path(&mut self, path: &str) -> Result<(), String> {
        if !path.starts_with('/') {
            return Err(format!("path must start with '/': {path:?}"));
        }
        let pq = match (path.contains('?'), self.head.uri.query()) {
            (false, Some(q)) => format!("{path}?{q}"),
            _ => path.to_string(),
        };
        self.set_path_and_query(&pq)
    }

    pub fn set_query(&mut self, query: Option<&str>) -> Result<(), String> {
        let path = self.head.uri.path().to_string();
        let pq = match query {
            Some(q) if !q.is_empty() => format!("{path}?{q}"),
            _ => path,
        };
        self.set_path_and_query(&pq)
    }

    fn set_path_and_query(&mut self, pq: &str) -> Result<(), String> {
        if pq.len() > MAX_HEAD_GROWTH {
            return Err(format!(
                "a path and query of {} bytes (at most {} KiB)",
                pq.len(),
                MAX_HEAD_GROWTH / 1024
            ));
        }
        let pq: PathAndQuery = pq
            .parse()
            .map_err(|e| format!("invalid path {pq:?}: {e}"))?;
        let mut parts = std::mem::take(&mut self.head.uri).into_parts();
        parts.path_and_query = Some(pq);
        self.head.uri = Uri::from_parts(parts).map_err(|e| format!("invalid uri: {e}"))?;
        Ok(())
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    // By bytes from the end (a str search for ':' costs more than the
    // few bytes a host has): the last ':' and only digits after it.
    let b = host.as_bytes();
    match b.iter().rposition(|&c| c == b':') {
        Some(at) if b[at + 1..].iter().all(u8::is_ascii_digit) => &host[..at],
        _ => host,
    }
}

pub fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

fn runtime(msg: String) -> mlua::Error {
    mlua::Error::RuntimeError(msg)
}

/// The fields of `req`, each read through [`field`]: by mlua's userdata
/// (other hooks) and by `lent` (on_request), which numbers them by their
/// place in [`FIELDS`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Field {
    Method,
    Path,
    Query,
    Uri,
    Host,
    Target,
    Version,
    Scheme,
    Tls,
    Sni,
    Alpn,
    TlsVersion,
    PeerIp,
    PeerPort,
    Listener,
    Id,
}

/// Each field's name as scripts write it (docs/lua-api.md).
pub const FIELDS: &[(&str, Field)] = &[
    ("method", Field::Method),
    ("path", Field::Path),
    ("query", Field::Query),
    ("uri", Field::Uri),
    ("host", Field::Host),
    ("target", Field::Target),
    ("version", Field::Version),
    ("scheme", Field::Scheme),
    ("tls", Field::Tls),
    ("sni", Field::Sni),
    ("alpn", Field::Alpn),
    ("tls_version", Field::TlsVersion),
    ("peer_ip", Field::PeerIp),
    ("peer_port", Field::PeerPort),
    ("listener", Field::Listener),
    ("id", Field::Id),
];

/// The fields of `req` a script cannot assign, with the call that changes
/// each (`req.path is read-only; use req:set_path(...)`).
pub const SETTERS: &[(&str, &str)] = &[
    ("path", "req:set_path(...)"),
    ("query", "req:set_query(...)"),
    ("method", "req:set_method(...)"),
    ("host", "req:set_header(\"host\", ...)"),
];

/// The value of a field of `r` that is plain text (or nil): method,
/// path, query, uri, target, version, scheme. None: `f` is another kind
/// (host, numbers, booleans, TLS details). One place for what these
/// fields say, read by [`field`] and by the lent `req`'s fast path.
#[inline]
pub fn plain_text(r: &RequestView, f: Field) -> Option<Option<&str>> {
    Some(match f {
        Field::Method => Some(r.head.method.as_str()),
        Field::Path => Some(r.head.uri.path()),
        Field::Query => r.head.uri.query(),
        Field::Uri => Some(r.head.uri.path_and_query().map_or("/", |p| p.as_str())),
        Field::Target => Some(r.target()),
        Field::Version => Some(version_name(r.head.version)),
        Field::Scheme => Some(if r.tls.is_some() { "https" } else { "http" }),
        _ => return None,
    })
}

/// The value of field `f` of `r`, as a script reads it.
pub fn field(lua: &mlua::Lua, r: &RequestView, f: Field) -> mlua::Result<Value> {
    use mlua::IntoLua;
    let text = |s: &str| lua.create_string(s).map(Value::String);
    if let Some(plain) = plain_text(r, f) {
        return plain.map_or(Ok(Value::Nil), text);
    }
    match f {
        Field::Host => match r.host() {
            Some(h) if h.bytes().any(|b| b.is_ascii_uppercase()) => text(&h.to_ascii_lowercase()),
            Some(h) => text(h),
            None => Ok(Value::Nil),
        },
        Field::Tls => Ok(Value::Boolean(r.tls.is_some())),
        Field::Sni => r
            .tls
            .as_ref()
            .and_then(|t| t.sni.as_deref())
            .map_or(Ok(Value::Nil), text),
        Field::Alpn => r
            .tls
            .as_ref()
            .and_then(|t| t.alpn.as_deref())
            .map_or(Ok(Value::Nil), text),
        Field::TlsVersion => r.tls.as_ref().map(|t| t.version).into_lua(lua),
        Field::PeerIp => text(&r.peer.ip().to_string()),
        Field::PeerPort => r.peer.port().into_lua(lua),
        Field::Listener => text(&r.listener),
        Field::Id => text(&r.id.to_string()),
        // Read by plain_text above.
        Field::Method
        | Field::Path
        | Field::Query
        | Field::Uri
        | Field::Target
        | Field::Version
        | Field::Scheme => Ok(Value::Nil),
    }
}

/// What `tostring(req)` shows.
pub fn describe(r: &RequestView) -> String {
    format!("request {} {}", r.head.method, r.head.uri.path())
}

impl UserData for RequestView {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        super::names::named(fields, "request");
        for &(name, f) in FIELDS {
            fields.add_field_method_get(name, move |lua, r| field(lua, r, f));
        }
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        super::names::described(methods, "request", describe);
        add_header_methods(methods);
        super::names::read_only(methods, "req", SETTERS);
        methods.add_method("log_field", log_field);
        methods.add_method_mut("set_path", set_path);
        methods.add_method_mut("set_query", set_query);
        methods.add_method_mut("set_method", set_method);
    }
}

/// `req:log_field(name, value)`.
pub fn log_field(
    _: &mlua::Lua,
    r: &RequestView,
    (name, value): (String, Value),
) -> mlua::Result<()> {
    let value = match value {
        Value::String(s) => s.to_string_lossy(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => {
            return Err(runtime(format!(
                "log_field: the value of {name:?} must be a string, number or boolean, not {}",
                crate::script::hooks::returned(&other)
            )))
        }
    };
    super::log_field::add(r.id, &name, value).map_err(runtime)
}

/// `req:set_path(path)`.
pub fn set_path(_: &mlua::Lua, r: &mut RequestView, path: String) -> mlua::Result<()> {
    r.set_path(&path).map_err(runtime)
}

/// `req:set_query(query)`; nil or "" removes it.
pub fn set_query(_: &mlua::Lua, r: &mut RequestView, q: Option<String>) -> mlua::Result<()> {
    r.set_query(q.as_deref()).map_err(runtime)
}

/// `req:set_method(method)`.
pub fn set_method(_: &mlua::Lua, r: &mut RequestView, m: String) -> mlua::Result<()> {
    if m.len() > MAX_METHOD {
        return Err(runtime(format!(
            "set_method: a method of {} bytes (at most {MAX_METHOD})",
            m.len()
        )));
    }
    let method = http::Method::from_bytes(m.as_bytes())
        .map_err(|_| runtime(format!("invalid method {m:?}")))?;
    if method == http::Method::CONNECT {
        return Err(runtime("set_method: CONNECT is not forwarded".into()));
    }
    if method == http::Method::HEAD && r.head.method != http::Method::HEAD {
        // The answer to a HEAD has no body; the client, which asked for
        // one, would wait for it.
        return Err(runtime(format!(
            "set_method: a {} cannot become a HEAD (its answer would have no body)",
            r.head.method
        )));
    }
    r.head.method = method;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("example.com:"), "example.com");
        assert_eq!(strip_port("example.com:8a"), "example.com:8a");
        assert_eq!(strip_port("a:b:80"), "a:b");
        assert_eq!(strip_port(":80"), "");
    }
}
