//! Header access shared by the request and response objects scripts see.
//! Nothing is copied into Lua until the script asks for it.

use http::{HeaderMap, HeaderName, HeaderValue};
use mlua::{Lua, UserDataMethods, Value};

pub trait HasHeaders {
    fn headers(&self) -> &HeaderMap;
    fn headers_mut(&mut self) -> &mut HeaderMap;
    /// The net bytes the script's header edits have added to this head.
    fn growth_mut(&mut self) -> &mut isize;
}

/// How much a script may grow one request or response head, net, in bytes
/// (a line counts its name, value and 4 bytes of `: ` and CRLF). The same
/// 64 KiB Pocket accepts as a server's response head; the copies live in
/// Rust, outside the VM's memory limit, so a loop of `add_header` must stop
/// somewhere (HAProxy fails a rewrite that overflows its buffer the same
/// way).
pub const MAX_HEAD_GROWTH: usize = 64 * 1024;

fn line_bytes(name: &HeaderName, value: &HeaderValue) -> isize {
    (name.as_str().len() + value.len() + 4) as isize
}

/// Records that an edit grows the head by `by` bytes (negative: shrinks),
/// refusing the edit that would pass [`MAX_HEAD_GROWTH`].
fn grow<T: HasHeaders>(this: &mut T, by: isize) -> mlua::Result<()> {
    let growth = this.growth_mut();
    let next = growth.saturating_add(by);
    if by > 0 && next > MAX_HEAD_GROWTH as isize {
        return Err(mlua::Error::RuntimeError(format!(
            "the script's header edits would add more than {} KiB to this head",
            MAX_HEAD_GROWTH / 1024
        )));
    }
    *growth = next;
    Ok(())
}

/// What the values of `name` now take in the head.
fn present_bytes<T: HasHeaders>(this: &T, name: &HeaderName) -> isize {
    this.headers()
        .get_all(name)
        .iter()
        .map(|v| line_bytes(name, v))
        .sum()
}

fn too_many(name: &HeaderName) -> mlua::Error {
    mlua::Error::RuntimeError(format!(
        "cannot add header \"{name}\": the head has too many header lines"
    ))
}

fn name(text: &mlua::LuaString) -> mlua::Result<HeaderName> {
    HeaderName::from_bytes(&text.as_bytes()).map_err(|_| {
        mlua::Error::RuntimeError(format!(
            "invalid header name \"{}\"",
            text.to_string_lossy()
        ))
    })
}

/// A Host a script sets must be one valid `host[:port]`: the server would
/// otherwise get two hosts, or one it cannot parse.
fn check_host(name: &HeaderName, value: &HeaderValue) -> mlua::Result<()> {
    if *name == http::header::HOST && !crate::wire::host::valid_host_value(value.as_bytes()) {
        return Err(mlua::Error::RuntimeError(format!(
            "invalid Host {:?}: must be host[:port]",
            String::from_utf8_lossy(value.as_bytes())
        )));
    }
    Ok(())
}

/// A header name a script may write: not a framing or hop-by-hop one.
pub fn writable_name(text: &mlua::LuaString) -> mlua::Result<HeaderName> {
    let n = name(text)?;
    if crate::wire::hop_by_hop::is_framing(&n) {
        return Err(mlua::Error::RuntimeError(format!(
            "header \"{n}\" cannot be set by a script: framing and connection headers (content-length, transfer-encoding, connection, keep-alive, proxy-connection, te, trailer, upgrade) are Pocket's to write"
        )));
    }
    Ok(n)
}

fn value(name: &HeaderName, v: Value) -> mlua::Result<HeaderValue> {
    let bytes = match v {
        Value::String(s) => HeaderValue::from_bytes(&s.as_bytes()),
        Value::Integer(n) => HeaderValue::from_str(&n.to_string()),
        Value::Number(n) => HeaderValue::from_str(&n.to_string()),
        other => {
            return Err(mlua::Error::RuntimeError(format!(
                "header \"{name}\" must be set to a string, not {}",
                crate::script::hooks::returned(&other)
            )))
        }
    };
    bytes.map_err(|_| {
        mlua::Error::RuntimeError(format!(
            "invalid value for header \"{name}\" (control characters?)"
        ))
    })
}

fn to_lua(lua: &Lua, v: &HeaderValue) -> mlua::Result<Value> {
    Ok(Value::String(lua.create_string(v.as_bytes())?))
}

pub fn add_header_methods<T: HasHeaders + 'static, M: UserDataMethods<T>>(methods: &mut M) {
    methods.add_method("header", |lua, this, n| header(lua, this, n));
    methods.add_method("header_all", |lua, this, n| header_all(lua, this, n));
    methods.add_method("headers", |lua, this, ()| headers(lua, this, ()));
    methods.add_method_mut("set_header", |lua, this, a| set_header(lua, this, a));
    methods.add_method_mut("add_header", |lua, this, a| add_header(lua, this, a));
    methods.add_method_mut("remove_header", |lua, this, n| remove_header(lua, this, n));
}

/// `obj:header(name)`: a header's value, or nil. Names are
/// case-insensitive. Sent on several lines, it is one list: the lines
/// joined with ", " ("; " for Cookie); Set-Cookie gives its first line
/// (use header_all).
pub fn header<T: HasHeaders>(lua: &Lua, this: &T, n: mlua::LuaString) -> mlua::Result<Value> {
    let Ok(name) = HeaderName::from_bytes(&n.as_bytes()) else {
        return Ok(Value::Nil);
    };
    match crate::wire::fields::combined(this.headers(), &name) {
        Some(v) => Ok(Value::String(lua.create_string(&*v)?)),
        None => Ok(Value::Nil),
    }
}

/// `obj:header_all(name)`: every value of a header, as a list (empty when
/// absent).
pub fn header_all<T: HasHeaders>(
    lua: &Lua,
    this: &T,
    n: mlua::LuaString,
) -> mlua::Result<mlua::Table> {
    let t = lua.create_table()?;
    if let Ok(s) = n.to_str() {
        for v in this.headers().get_all(s.as_ref() as &str) {
            t.raw_push(to_lua(lua, v)?)?;
        }
    }
    Ok(t)
}

/// `for name, value in obj:headers() do ... end`. The lines are copied
/// into Lua strings up front: Lua's heap (and its limit) holds them, not a
/// Rust vector behind a small closure.
pub fn headers<T: HasHeaders>(lua: &Lua, this: &T, _: ()) -> mlua::Result<mlua::Function> {
    let lines = lua.create_table_with_capacity(this.headers().len() * 2, 0)?;
    for (k, v) in this.headers() {
        lines.raw_push(lua.create_string(k.as_str())?)?;
        lines.raw_push(lua.create_string(v.as_bytes())?)?;
    }
    let mut next = 0usize;
    lua.create_function_mut(move |_, ()| {
        if next >= lines.raw_len() {
            return Ok((Value::Nil, Value::Nil));
        }
        next += 2;
        Ok((lines.raw_get(next - 1)?, lines.raw_get(next)?))
    })
}

/// `obj:set_header(name, value)`; a nil value removes the header.
pub fn set_header<T: HasHeaders>(
    _: &Lua,
    this: &mut T,
    (n, v): (mlua::LuaString, Value),
) -> mlua::Result<()> {
    let n = writable_name(&n)?;
    let before = present_bytes(this, &n);
    if v.is_nil() {
        this.headers_mut().remove(&n);
        return grow(this, -before);
    }
    let v = value(&n, v)?;
    check_host(&n, &v)?;
    grow(this, line_bytes(&n, &v) - before)?;
    this.headers_mut()
        .try_insert(n.clone(), v)
        .map_err(|_| too_many(&n))?;
    Ok(())
}

/// `obj:add_header(name, value)`: one more line.
pub fn add_header<T: HasHeaders>(
    _: &Lua,
    this: &mut T,
    (n, v): (mlua::LuaString, Value),
) -> mlua::Result<()> {
    let n = writable_name(&n)?;
    if n == http::header::HOST {
        return Err(mlua::Error::RuntimeError(
            "Host has one value: use set_header(\"host\", ...)".into(),
        ));
    }
    let v = value(&n, v)?;
    grow(this, line_bytes(&n, &v))?;
    this.headers_mut()
        .try_append(n.clone(), v)
        .map_err(|_| too_many(&n))?;
    Ok(())
}

/// `obj:remove_header(name)`: whether there was one.
pub fn remove_header<T: HasHeaders>(
    _: &Lua,
    this: &mut T,
    n: mlua::LuaString,
) -> mlua::Result<bool> {
    let n = writable_name(&n)?;
    let before = present_bytes(this, &n);
    let removed = this.headers_mut().remove(&n).is_some();
    grow(this, -before)?;
    Ok(removed)
}
