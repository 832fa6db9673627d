//! `require` for policies: the Lua modules shipped inside the binary
//! (`stdlib/pocket/*.lua`) and Lua files in the policy's own folder. C
//! modules are never loaded.

use std::path::Path;

use mlua::{Lua, Table, Value};

/// Modules embedded in the binary, by the name scripts `require`.
pub static EMBEDDED: &[(&str, &str)] = &[
    (
        "pocket.util",
        include_str!("../../../stdlib/pocket/util.lua"),
    ),
    (
        "pocket.match",
        include_str!("../../../stdlib/pocket/match.lua"),
    ),
    ("pocket.cdn", include_str!("../../../stdlib/pocket/cdn.lua")),
    (
        "pocket.canary",
        include_str!("../../../stdlib/pocket/canary.lua"),
    ),
    (
        "pocket.sticky",
        include_str!("../../../stdlib/pocket/sticky.lua"),
    ),
    (
        "pocket.ratelimit",
        include_str!("../../../stdlib/pocket/ratelimit.lua"),
    ),
];

/// Looks an embedded module up by name.
pub fn embedded(name: &str) -> Option<&'static str> {
    EMBEDDED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, src)| *src)
}

/// Sets `package.path` to the script's folder and puts the embedded-module
/// searcher before it; drops the C searchers.
pub fn install_require(lua: &Lua, script_path: &Path) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let dir = script_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir.display().to_string().replace(';', "");
    package.set("path", format!("{dir}/?.lua;{dir}/?/init.lua"))?;
    package.set("cpath", "")?;

    let embedded_searcher = lua.create_function(|lua, name: String| -> mlua::Result<Value> {
        match embedded(&name) {
            Some(source) => {
                let path = format!("@stdlib/{}.lua", name.replace('.', "/"));
                let loader = lua.load(source).set_name(path).into_function()?;
                Ok(Value::Function(loader))
            }
            None => Ok(Value::String(
                lua.create_string(format!("no module '{name}' in Pocket's stdlib"))?,
            )),
        }
    })?;
    let searchers = lua.create_table()?;
    let old: Table = package.get("searchers")?;
    searchers.raw_push(old.raw_get::<Value>(1)?)?; // package.preload
    searchers.raw_push(embedded_searcher)?;
    searchers.raw_push(old.raw_get::<Value>(2)?)?; // Lua files on package.path
    package.set("searchers", searchers)?;
    Ok(())
}
