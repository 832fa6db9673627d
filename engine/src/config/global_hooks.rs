//! A hook written as a global (`function on_connect(conn) ... end`) is
//! never called: Pocket reads hooks from the table the policy returns.
//! Copied from another proxy's docs or an old example, it loads without
//! a word and routes nothing, so it is refused at load.

use std::path::{Path, PathBuf};

use mlua::{Lua, Table, Value};

use super::ConfigError;

/// Every name Pocket reads as a hook from the returned table.
/// (name, its parameters as the docs write them).
const HOOK_NAMES: &[(&str, &str)] = &[
    ("on_connect", "conn"),
    ("on_request", "req"),
    ("on_response", "req, res"),
    ("on_health", "server, up, why"),
    ("on_check", "server, http"),
];

/// One error per global function named like a hook that the returned
/// table `root` lacks, placed at the global's `function` line (in the
/// file that defines it: the policy or one of its modules).
pub(super) fn global_hooks(lua: &Lua, root: &Table, policy: &Path) -> Vec<ConfigError> {
    let globals = lua.globals();
    let mut errors = Vec::new();
    for (name, params) in HOOK_NAMES {
        let Ok(Value::Function(f)) = globals.raw_get::<Value>(*name) else {
            continue;
        };
        if !matches!(root.get::<Value>(*name), Ok(Value::Nil)) {
            continue;
        }
        let info = f.info();
        let path = match info.source.as_deref().and_then(|s| s.strip_prefix('@')) {
            Some(file) => PathBuf::from(file),
            None => policy.to_path_buf(),
        };
        errors.push(ConfigError {
            path,
            line: info.line_defined,
            message: format!(
                "{name} is a global function, but hooks are read from the table the policy returns: write {name} = function({params}) ... end inside it"
            ),
        });
    }
    errors
}
