//! The `pocket` module scripts see, one file per area, each with its own
//! `register`.

pub mod conn;
mod headers;
pub mod lent;
pub mod lent_call;
pub mod local;
mod log;
pub mod log_field;
pub mod names;
pub mod pool_refs;
mod regex;
pub mod request;
pub mod response;
pub mod server;
pub mod store;

use mlua::{Lua, Table};

pub use names::userdata_name;

/// Installs the global `pocket` table.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let pocket = lua.create_table()?;
    local::register(lua, &pocket)?;
    log::register(lua, &pocket)?;
    regex::register(lua, &pocket)?;
    store::register(lua, &pocket)?;
    server::register(lua, &pocket)?;
    pool_refs::register(lua, &pocket)?;
    pocket.set("version", env!("CARGO_PKG_VERSION"))?;
    // Seconds on a clock that never goes back (for rates and windows).
    pocket.set(
        "now",
        lua.create_function(|_, ()| Ok(crate::lb::now_ms() as f64 / 1000.0))?,
    )?;
    // A stable hash of a string (the same in every worker and run), for
    // bucketing clients: pocket.hash(id) % 100.
    pocket.set(
        "hash",
        lua.create_function(|lua, text: mlua::Value| {
            let text: mlua::LuaString = super::errors::arg(lua, "pocket.hash", 1, text)?;
            Ok((crate::lb::hash_bytes(&text.as_bytes()) >> 1) as i64)
        })?,
    )?;
    // Wall-clock seconds since 1970.
    pocket.set(
        "time",
        lua.create_function(|_, ()| {
            Ok(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0))
        })?,
    )?;
    // Known to `package.loaded`, Lua's tracebacks name its functions as
    // the docs do (`pocket.respond`), which errors.rs uses for a bad
    // argument's function.
    let package: Option<Table> = lua.globals().get("package").ok();
    if let Some(loaded) = package.and_then(|p| p.get::<Table>("loaded").ok()) {
        loaded.set("pocket", &pocket)?;
    }
    lua.globals().set("pocket", pocket)?;
    Ok(())
}
