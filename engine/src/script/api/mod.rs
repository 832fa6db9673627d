//! The `pocket` module scripts see, one file per area, each with its own
//! `register`.

pub mod conn;
mod headers;
pub mod local;
mod log;
mod regex;
pub mod request;
pub mod response;
pub mod server;
pub mod store;

use mlua::Lua;

/// Installs the global `pocket` table.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let pocket = lua.create_table()?;
    local::register(lua, &pocket)?;
    log::register(lua, &pocket)?;
    regex::register(lua, &pocket)?;
    store::register(lua, &pocket)?;
    server::register(lua, &pocket)?;
    pocket.set("version", env!("CARGO_PKG_VERSION"))?;
    lua.globals().set("pocket", pocket)?;
    Ok(())
}
