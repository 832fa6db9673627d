//! `pocket.log.info/warn/error(...)`: script messages in Pocket's log.

use mlua::{Function, Lua, MultiValue, Table, Value};

/// Fails when a `__tostring` fails: swallowing that error would let a
/// `__tostring` that ran out of time go on with the script.
fn join(lua: &Lua, args: MultiValue) -> mlua::Result<String> {
    let mut out = String::new();
    for (i, v) in args.into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        // Like print: Lua's own tostring for tables, booleans and nil.
        let text = match &v {
            Value::String(s) => s.to_string_lossy(),
            _ => lua
                .globals()
                .get::<Function>("tostring")?
                .call::<String>(v)?,
        };
        out.push_str(&text);
    }
    Ok(out)
}

pub fn register(lua: &Lua, pocket: &Table) -> mlua::Result<()> {
    let log = lua.create_table()?;
    log.set(
        "info",
        lua.create_function(|lua, args: MultiValue| {
            tracing::info!(target: "script", "{}", join(lua, args)?);
            Ok(())
        })?,
    )?;
    log.set(
        "warn",
        lua.create_function(|lua, args: MultiValue| {
            tracing::warn!(target: "script", "{}", join(lua, args)?);
            Ok(())
        })?,
    )?;
    log.set(
        "error",
        lua.create_function(|lua, args: MultiValue| {
            tracing::error!(target: "script", "{}", join(lua, args)?);
            Ok(())
        })?,
    )?;
    pocket.set("log", log)?;
    Ok(())
}
