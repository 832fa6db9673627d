//! `pocket.uses_pool(name [, level])`: code that will route to a pool by
//! name (a `pocket.match` rule, a `pocket.canary` split, a policy's own
//! route table) says so while the policy loads, and the load refuses a
//! name the policy's `pools` do not define, at the line that wrote it.
//! Without it a mistyped pool in a route table passed `pocket check` and
//! failed only on the requests that reached the rule.

use std::cell::{Cell, RefCell};

use mlua::{Lua, Table};

/// One pool name a table compiled at load uses, and where it is written.
#[derive(Debug, Clone)]
pub struct PoolRef {
    pub name: String,
    /// The file of the calling chunk, as Lua names it.
    pub path: String,
    /// The line of the call `level` frames up.
    pub line: usize,
}

/// The references recorded by one VM while its main chunk runs; calls
/// from hooks afterwards record nothing (no growth per request).
#[derive(Default)]
pub struct PoolRefs {
    recording: Cell<bool>,
    refs: RefCell<Vec<PoolRef>>,
}

/// Installs `pocket.uses_pool`.
pub fn register(lua: &Lua, pocket: &Table) -> mlua::Result<()> {
    lua.set_app_data(PoolRefs {
        recording: Cell::new(true),
        refs: RefCell::new(Vec::new()),
    });
    pocket.set(
        "uses_pool",
        lua.create_function(|lua, (name, level): (mlua::Value, Option<i64>)| {
            let mlua::Value::String(name) = name else {
                return Err(mlua::Error::RuntimeError(format!(
                    "pocket.uses_pool: a pool name is a string, not a {}",
                    name.type_name()
                )));
            };
            let level = level.unwrap_or(1).clamp(1, 100) as usize;
            let Some(refs) = lua.app_data_ref::<PoolRefs>() else {
                return Ok(());
            };
            if !refs.recording.get() {
                return Ok(());
            }
            let place = lua.inspect_stack(level, |d| {
                let source = d.source().source.map(|s| s.into_owned());
                (source, d.current_line())
            });
            if let Some((Some(source), Some(line))) = place {
                if let Some(path) = source.strip_prefix('@') {
                    refs.refs.borrow_mut().push(PoolRef {
                        name: name.to_string_lossy(),
                        path: path.to_string(),
                        line,
                    });
                }
            }
            Ok(())
        })?,
    )
}

/// Ends recording (the main chunk has run).
pub fn stop(lua: &Lua) {
    if let Some(refs) = lua.app_data_ref::<PoolRefs>() {
        refs.recording.set(false);
    }
}

/// The references recorded so far, taken out.
pub fn take(lua: &Lua) -> Vec<PoolRef> {
    lua.app_data_ref::<PoolRefs>()
        .map(|r| std::mem::take(&mut *r.refs.borrow_mut()))
        .unwrap_or_default()
}
