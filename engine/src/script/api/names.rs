//! What the API's objects are called in errors: the docs' words (`a
//! request`, `a regex`), never the Rust type behind them. Lua builds its
//! own messages ("attempt to index a X value") from the metatable's
//! `__name`, which mlua sets to the Rust type (`RequestView`) unless told.
//! Assigning to a field of `req`, `res` or `conn` says what to use instead.

use mlua::{MetaMethod, UserDataFields, UserDataMethods, Value};

/// Sets the name Lua's own errors use for `T` (`"request"`: "attempt to
/// call a request value").
pub fn named<T, F: UserDataFields<T>>(fields: &mut F, name: &'static str) {
    fields.add_meta_field(MetaMethod::Type, name);
}

/// Refuses `var.key = value` on an object whose fields are read-only:
/// `req.path is read-only; use req:set_path(...)`. `setters` pairs a field
/// with the call that changes it.
pub fn read_only<T, M: UserDataMethods<T>>(
    methods: &mut M,
    var: &'static str,
    setters: &'static [(&'static str, &'static str)],
) {
    methods.add_meta_method(
        MetaMethod::NewIndex,
        move |_, _, (key, _value): (Value, Value)| -> mlua::Result<()> {
            Err(read_only_error(var, setters, &key))
        },
    );
}

/// The error of `var.key = value` on an object whose fields are
/// read-only (see [`read_only`]).
pub fn read_only_error(var: &str, setters: &[(&str, &str)], key: &Value) -> mlua::Error {
    let key = match key {
        Value::String(s) => s.to_string_lossy(),
        other => format!("[{}]", other.to_string().unwrap_or_default()),
    };
    let message = match setters.iter().find(|(field, _)| *field == key) {
        Some((_, setter)) => format!("{var}.{key} is read-only; use {setter}"),
        None => format!(
            "{var}.{key} cannot be set: the fields of {var} are read-only (keep your own values in a local table)"
        ),
    };
    mlua::Error::RuntimeError(message)
}

/// A userdata as a message names it (`a request (req)`), from its
/// `__name`; None for one without a name of ours.
pub fn userdata_name(ud: &mlua::AnyUserData) -> Option<String> {
    let name = super::lent::metatable_name(ud)?;
    let shown = match name.as_str() {
        "request" => "a request (req)",
        "response" => "a response (res)",
        "connection" => "a connection (conn)",
        "regex" => "a regex (pocket.regex)",
        "regex set" => "a regex set (pocket.regex_set)",
        "store" => "a store (pocket.store)",
        "server" => "a server (pocket.server)",
        "pocket.respond response" => "a response made by pocket.respond",
        "rejection" => "a rejection (pocket.reject)",
        _ => return None,
    };
    Some(shown.to_string())
}

/// What `tostring(obj)` and `print(obj)` show for an API object: the
/// docs' name and what tells it apart (`request GET /path`, `regex
/// "a+b"`), never a memory address; and a field the object does not have
/// is said in the docs' words (`connection has no field "foo"`), not as
/// mlua's "attempt to get an unknown field". `noun` is the docs' name.
pub fn described<T: 'static, M: UserDataMethods<T>>(
    methods: &mut M,
    noun: &'static str,
    text: fn(&T) -> String,
) {
    methods.add_meta_method(MetaMethod::ToString, move |_, this, ()| Ok(text(this)));
    methods.add_meta_method(
        MetaMethod::Index,
        move |_, _, key: Value| -> mlua::Result<Value> { Err(no_field(noun, &key)) },
    );
}

/// Reading `key`, which a `noun` (the docs' name) does not have.
pub fn no_field(noun: &str, key: &Value) -> mlua::Error {
    let key = match key {
        Value::String(s) => format!("{:?}", s.to_string_lossy()),
        other => crate::script::hooks::returned(other),
    };
    mlua::Error::RuntimeError(format!(
        "{noun} has no field {key} (see docs/lua-api.md for its fields and methods)"
    ))
}
