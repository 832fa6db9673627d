//! Answers a script gives instead of a pool: `pocket.respond`,
//! `pocket.redirect`, and `pocket.reject` for connections.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use mlua::{Lua, Table, UserData, Value};

use super::headers::MAX_HEAD_GROWTH;
use crate::script::memory::{self, Charge};

/// A response made by the script, sent without asking any server. Scripts
/// may build one at load time and return it on every request: it is never
/// consumed.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: StatusCode,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The object `pocket.respond` and `pocket.redirect` give the script: the
/// answer, and the charge that counts its bytes against the VM's memory
/// limit for as long as the script keeps it (script::memory).
pub struct ScriptResponse {
    pub response: LocalResponse,
    _charge: Charge,
}

impl UserData for ScriptResponse {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        super::names::named(fields, "pocket.respond response");
    }

    fn add_methods<M: mlua::UserDataMethods<Self>>(methods: &mut M) {
        super::names::described(methods, "response made by pocket.respond", |r| {
            format!("response {} (pocket.respond)", r.response.status.as_u16())
        });
    }
}

/// What one header of an answer costs in Rust beyond its name and value:
/// the pair's slot, the name's and value's headers (an estimate).
const HEADER_OVERHEAD: usize = 64;

impl ScriptResponse {
    fn new(lua: &Lua, response: LocalResponse) -> mlua::Result<ScriptResponse> {
        let head: usize = response
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        if head > MAX_HEAD_GROWTH {
            return Err(mlua::Error::RuntimeError(format!(
                "the answer's headers take {head} bytes, more than {} KiB",
                MAX_HEAD_GROWTH / 1024
            )));
        }
        let bytes = response.body.len() + head + response.headers.len() * HEADER_OVERHEAD;
        let charge = memory::charge(lua, bytes, "a response")?;
        Ok(ScriptResponse {
            response,
            _charge: charge,
        })
    }
}

/// The longest reason `pocket.reject` takes, bytes.
const MAX_REASON: usize = 1024;

/// `pocket.reject(reason)` from `on_connect`: close the connection.
#[derive(Debug, Clone)]
pub struct Reject(pub String);

impl UserData for Reject {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        super::names::named(fields, "rejection");
    }

    fn add_methods<M: mlua::UserDataMethods<Self>>(methods: &mut M) {
        super::names::described(methods, "rejection", |r| format!("rejection {:?}", r.0));
    }
}

fn status(code: i64) -> mlua::Result<StatusCode> {
    u16::try_from(code)
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| {
            mlua::Error::RuntimeError(format!("status {code} is not a status from 200 to 599"))
        })
}

fn header_pairs(headers: Option<Table>) -> mlua::Result<Vec<(HeaderName, HeaderValue)>> {
    let mut out = Vec::new();
    let Some(headers) = headers else {
        return Ok(out);
    };
    for pair in headers.pairs::<mlua::LuaString, Value>() {
        let (name, value) = pair?;
        // Pocket frames the body it sends: no Content-Length of the script's.
        let name = super::headers::writable_name(&name)?;
        let text = match value {
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Integer(n) => n.to_string().into_bytes(),
            Value::Number(n) => n.to_string().into_bytes(),
            other => {
                return Err(mlua::Error::RuntimeError(format!(
                    "header \"{name}\" must be a string, not {}",
                    crate::script::hooks::returned(&other)
                )))
            }
        };
        let value = HeaderValue::from_bytes(&text).map_err(|_| {
            mlua::Error::RuntimeError(format!("invalid value for header \"{name}\""))
        })?;
        out.push((name, value));
    }
    Ok(out)
}

pub fn register(lua: &Lua, pocket: &Table) -> mlua::Result<()> {
    pocket.set(
        "respond",
        lua.create_function(|lua, (code, body, headers): (Value, Value, Value)| {
            use crate::script::errors::arg;
            let code: i64 = arg(lua, "pocket.respond", 1, code)?;
            let body: Option<mlua::LuaString> = arg(lua, "pocket.respond", 2, body)?;
            let headers: Option<Table> = arg(lua, "pocket.respond", 3, headers)?;
            let status = status(code)?;
            if body.as_ref().is_some_and(|b| !b.as_bytes().is_empty())
                && matches!(status.as_u16(), 204 | 205 | 304)
            {
                // RFC 9110 §15.3.5, §15.3.6, §15.4.5: no content.
                return Err(mlua::Error::RuntimeError(format!(
                    "a {} response has no body",
                    status.as_u16()
                )));
            }
            let response = LocalResponse {
                status,
                body: body
                    .map(|b| Bytes::copy_from_slice(&b.as_bytes()))
                    .unwrap_or_default(),
                headers: header_pairs(headers)?,
            };
            ScriptResponse::new(lua, response)
        })?,
    )?;
    pocket.set(
        "redirect",
        lua.create_function(|lua, (a, b): (Value, Value)| {
            // pocket.redirect(location) or pocket.redirect(status, location)
            let (code, location) = match (&a, &b) {
                (Value::Integer(code), Value::String(loc)) => (*code, loc.to_string_lossy()),
                (Value::String(loc), Value::Nil) => (302, loc.to_string_lossy()),
                _ => {
                    // What it got, as well as how to call it.
                    let got = crate::script::hooks::returned;
                    let what = if b.is_nil() {
                        got(&a)
                    } else {
                        format!("{} and {}", got(&a), got(&b))
                    };
                    return Err(mlua::Error::RuntimeError(format!(
                        "use pocket.redirect(status, location) or pocket.redirect(location), \
                         with a location string; got {what}"
                    )));
                }
            };
            if !matches!(code, 301 | 302 | 303 | 307 | 308) {
                return Err(mlua::Error::RuntimeError(format!(
                    "redirect status must be 301, 302, 303, 307 or 308, not {code}"
                )));
            }
            let value = HeaderValue::from_str(&location).map_err(|_| {
                mlua::Error::RuntimeError(format!("invalid redirect location \"{location}\""))
            })?;
            let response = LocalResponse {
                status: status(code)?,
                body: Bytes::new(),
                headers: vec![(http::header::LOCATION, value)],
            };
            ScriptResponse::new(lua, response)
        })?,
    )?;
    pocket.set(
        "reject",
        lua.create_function(|_, reason: Option<String>| {
            let reason = reason.unwrap_or_else(|| "rejected".into());
            if reason.len() > MAX_REASON {
                return Err(mlua::Error::RuntimeError(format!(
                    "pocket.reject: a reason of {} bytes (at most {MAX_REASON}: it is a log line)",
                    reason.len()
                )));
            }
            Ok(Reject(reason))
        })?,
    )?;
    Ok(())
}
