//! `require` for policies: the Lua modules shipped inside the binary
//! (`stdlib/pocket/*.lua`) and Lua text files inside the policy's own
//! folder. C modules, binary chunks and files elsewhere are never loaded.

use std::path::{Path, PathBuf};

use mlua::chunk::ChunkMode;
use mlua::{Lua, MultiValue, Table, Value};

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

/// The longest module name `require` accepts, in bytes.
const MAX_NAME: usize = 200;

/// Installs `require`'s searchers: `package.preload`, the embedded stdlib,
/// then Lua files inside the policy's folder, found by Rust (no
/// `package.path`: a script cannot point `require` anywhere else). Drops
/// `package.path`, `cpath`, `searchpath`, `loadlib` and `config`, and the
/// C searchers.
pub fn install_require(lua: &Lua, script_path: &Path) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    for key in ["path", "cpath", "searchpath", "loadlib", "config"] {
        package.raw_set(key, Value::Nil)?;
    }

    let embedded_searcher = lua.create_function(|lua, name: String| -> mlua::Result<Value> {
        match embedded(&name) {
            Some(source) => {
                let path = format!("@stdlib/{}.lua", name.replace('.', "/"));
                let loader = lua
                    .load(source)
                    .set_name(path)
                    .set_mode(ChunkMode::Text)
                    .into_function()?;
                Ok(Value::Function(loader))
            }
            None => Ok(Value::String(
                lua.create_string(format!("no module '{name}' in Pocket's stdlib"))?,
            )),
        }
    })?;
    let folder = PolicyFolder::of(script_path);
    lua.set_app_data(ModuleFiles::default());
    let folder_searcher = lua.create_function(move |lua, name: mlua::LuaString| {
        folder.search(lua, &name.to_string_lossy())
    })?;
    let searchers = lua.create_table()?;
    let old: Table = package.get("searchers")?;
    searchers.raw_push(old.raw_get::<Value>(1)?)?; // package.preload
    searchers.raw_push(embedded_searcher)?;
    searchers.raw_push(folder_searcher)?;
    package.set("searchers", searchers)?;
    Ok(())
}

/// The module files `require` loaded from the policy's folder: (the
/// path as chunks name it, the file it was read from). Errors are
/// placed by reading these again, and only these: a chunk name is the
/// script's to choose (`load(code, "@/dev/zero")`), a file is not.
#[derive(Default)]
struct ModuleFiles(std::cell::RefCell<Vec<(PathBuf, PathBuf)>>);

/// The module files `require` has loaded from the policy's folder so far
/// in `lua`: (the path chunks name, the real file).
pub fn module_files(lua: &Lua) -> Vec<(PathBuf, PathBuf)> {
    lua.app_data_ref::<ModuleFiles>()
        .map(|m| m.0.borrow().clone())
        .unwrap_or_default()
}

/// The policy's folder as `require` sees it.
struct PolicyFolder {
    /// As the policy's path gave it: names chunks (`lib/x.lua:3:`) the way
    /// the user wrote the path.
    shown: PathBuf,
    /// Canonical (symlinks resolved): every module file must be under it.
    /// `None` when the folder cannot be resolved; then only the stdlib is
    /// found.
    real: Option<PathBuf>,
}

impl PolicyFolder {
    fn of(script_path: &Path) -> PolicyFolder {
        let shown = script_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let real = std::fs::canonicalize(&shown).ok();
        PolicyFolder { shown, real }
    }

    /// A searcher's answer for `name`: the loader and the file's path, or a
    /// string saying why not. Messages name only the relative file the name
    /// maps to, never what lies outside the folder.
    fn search(&self, lua: &Lua, name: &str) -> mlua::Result<MultiValue> {
        let why = |text: String| -> mlua::Result<MultiValue> {
            Ok(MultiValue::from_vec(vec![Value::String(
                lua.create_string(text)?,
            )]))
        };
        let Some(relative) = module_file(name) else {
            return why(format!(
                "'{}' is not a module name (letters, digits, '_' and '-', parts separated by dots)",
                name.escape_debug()
            ));
        };
        let Some(real) = &self.real else {
            return why("no policy folder to look in".into());
        };
        let candidates = [relative.with_extension("lua"), relative.join("init.lua")];
        for candidate in &candidates {
            let Ok(file) = std::fs::canonicalize(real.join(candidate)) else {
                continue;
            };
            if !file.starts_with(real) {
                return why(format!(
                    "{} leads outside the policy's folder",
                    candidate.display()
                ));
            }
            if !file.is_file() {
                continue;
            }
            let shown = self.shown.join(candidate);
            if let Some(files) = lua.app_data_ref::<ModuleFiles>() {
                files.0.borrow_mut().push((shown.clone(), file.clone()));
            }
            let source = std::fs::read(&file).map_err(|e| {
                mlua::Error::RuntimeError(format!("cannot read {}: {e}", shown.display()))
            })?;
            let loader = lua
                .load(source)
                .set_name(format!("@{}", shown.display()))
                .set_mode(ChunkMode::Text)
                .into_function()
                .map_err(|e| match e {
                    // Lua names no file for a refused binary chunk.
                    mlua::Error::SyntaxError { message, .. }
                        if message.contains("binary chunk") =>
                    {
                        mlua::Error::RuntimeError(format!("{}: {message}", shown.display()))
                    }
                    other => other,
                })?;
            // `pocket.uses_pool` places a name a tail call hid in this file.
            super::api::pool_refs::module_found(lua, &shown.display().to_string());
            let shown = lua.create_string(shown.display().to_string())?;
            return Ok(MultiValue::from_vec(vec![
                Value::Function(loader),
                Value::String(shown),
            ]));
        }
        why(format!(
            "no file {} or {} in the policy's folder",
            candidates[0].display(),
            candidates[1].display()
        ))
    }
}

/// `a.b.c` -> `a/b/c` when every part is letters, digits, `_` or `-`; any
/// other name (empty parts, `..`, slashes, NUL) is not a module name.
fn module_file(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.len() > MAX_NAME {
        return None;
    }
    let mut path = PathBuf::new();
    for part in name.split('.') {
        let ok = !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return None;
        }
        path.push(part);
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::module_file;

    #[test]
    fn module_names_map_inside_the_folder() {
        assert_eq!(
            module_file("lib.routes").unwrap().to_str(),
            Some("lib/routes")
        );
        for bad in [
            "",
            "..",
            "a..b",
            ".a",
            "a.",
            "/etc/passwd",
            "a/b",
            "a\0b",
            "~x",
        ] {
            assert!(module_file(bad).is_none(), "{bad:?}");
        }
    }
}
