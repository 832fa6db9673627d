//! Header access shared by the request and response objects scripts see.
//! Nothing is copied into Lua until the script asks for it.

use http::{HeaderMap, HeaderName, HeaderValue};
use mlua::{Lua, UserDataMethods, Value};

pub trait HasHeaders {
    fn headers(&self) -> &HeaderMap;
    fn headers_mut(&mut self) -> &mut HeaderMap;
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
    if *name == http::header::HOST && !crate::proxy::target::valid_host_value(value.as_bytes()) {
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
    if crate::proxy::forward::is_framing(&n) {
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
                "header \"{name}\" must be set to a string, not a {}",
                other.type_name()
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
    // A header's value, or nil. Names are case-insensitive. Sent on
    // several lines, it is one list: the lines joined with ", " ("; " for
    // Cookie); Set-Cookie gives its first line (use header_all).
    methods.add_method("header", |lua, this, n: mlua::LuaString| {
        let Ok(name) = HeaderName::from_bytes(&n.as_bytes()) else {
            return Ok(Value::Nil);
        };
        match crate::proxy::fields::combined(this.headers(), &name) {
            Some(v) => Ok(Value::String(lua.create_string(&*v)?)),
            None => Ok(Value::Nil),
        }
    });
    // Every value of a header, as a list (empty when absent).
    methods.add_method("header_all", |lua, this, n: mlua::LuaString| {
        let t = lua.create_table()?;
        if let Ok(s) = n.to_str() {
            for v in this.headers().get_all(s.as_ref() as &str) {
                t.raw_push(to_lua(lua, v)?)?;
            }
        }
        Ok(t)
    });
    // for name, value in req:headers() do ... end
    methods.add_method("headers", |lua, this, ()| {
        let items: Vec<(String, Vec<u8>)> = this
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        let mut next = 0usize;
        lua.create_function_mut(move |lua, ()| {
            let Some((k, v)) = items.get(next) else {
                return Ok((Value::Nil, Value::Nil));
            };
            next += 1;
            Ok((
                Value::String(lua.create_string(k)?),
                Value::String(lua.create_string(v)?),
            ))
        })
    });
    methods.add_method_mut("set_header", |_, this, (n, v): (mlua::LuaString, Value)| {
        let n = writable_name(&n)?;
        if v.is_nil() {
            this.headers_mut().remove(&n);
            return Ok(());
        }
        let v = value(&n, v)?;
        check_host(&n, &v)?;
        this.headers_mut().insert(n, v);
        Ok(())
    });
    methods.add_method_mut("add_header", |_, this, (n, v): (mlua::LuaString, Value)| {
        let n = writable_name(&n)?;
        if n == http::header::HOST {
            return Err(mlua::Error::RuntimeError(
                "Host has one value: use set_header(\"host\", ...)".into(),
            ));
        }
        let v = value(&n, v)?;
        this.headers_mut().append(n, v);
        Ok(())
    });
    methods.add_method_mut("remove_header", |_, this, n: mlua::LuaString| {
        let n = writable_name(&n)?;
        Ok(this.headers_mut().remove(&n).is_some())
    });
}
