//! `pocket.log.info/warn/error(...)`: script messages in Pocket's log.

use mlua::{Lua, MultiValue, Table};

fn join(lua: &Lua, args: MultiValue) -> String {
    let mut out = String::new();
    for (i, v) in args.into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match lua.coerce_string(v.clone()) {
            Ok(Some(s)) => out.push_str(&s.to_string_lossy()),
            _ => out.push_str(&format!("{v:?}")),
        }
    }
    out
}

pub fn register(lua: &Lua, pocket: &Table) -> mlua::Result<()> {
    let log = lua.create_table()?;
    log.set(
        "info",
        lua.create_function(|lua, args: MultiValue| {
            tracing::info!(target: "script", "{}", join(lua, args));
            Ok(())
        })?,
    )?;
    log.set(
        "warn",
        lua.create_function(|lua, args: MultiValue| {
            tracing::warn!(target: "script", "{}", join(lua, args));
            Ok(())
        })?,
    )?;
    log.set(
        "error",
        lua.create_function(|lua, args: MultiValue| {
            tracing::error!(target: "script", "{}", join(lua, args));
            Ok(())
        })?,
    )?;
    pocket.set("log", log)?;
    Ok(())
}
