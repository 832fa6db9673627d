//! `pocket.log.info/warn/error(...)`: script messages in Pocket's log.

use mlua::{Function, Lua, MultiValue, Table, Value};

/// The longest message a script logs, bytes; the rest is cut (nginx cuts
/// its error log lines at 2 KiB, HAProxy its log lines at 1 KiB). A line
/// of megabytes takes tens of ms to write, and a loop of them fills disks.
const MAX_LINE: usize = 8 * 1024;

/// Fails when a `__tostring` fails: swallowing that error would let a
/// `__tostring` that ran out of time go on with the script.
fn join(lua: &Lua, args: MultiValue) -> mlua::Result<String> {
    crate::script::vm::check_budget(lua)?;
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
        if out.len() > MAX_LINE {
            break;
        }
    }
    if out.len() > MAX_LINE {
        let total = out.len();
        let mut cut = MAX_LINE;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(&format!("... (cut: {total} bytes or more)"));
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
