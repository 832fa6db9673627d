//! The sandbox around a policy's Lua code: what is removed (files, bytecode,
//! finalizers) and the wrappers that keep every way of running Lua, and
//! every native loop a script can size, inside the time budget. The Lua
//! side is `sandbox.lua`; docs/lua-api.md "The sandbox" lists the result.

use std::rc::Rc;

use mlua::{Function, Lua, Table, Value};

use super::vm::{Budget, BUDGET_MESSAGE};

/// The longest text `load` compiles, in bytes. Lua's parser runs natively
/// (no instruction hook), so the size of a chunk bounds how long one
/// `load` can take. Most text compiles at tens of MB/s, but some shapes
/// are quadratic for Lua's parser (a chain of 52,000 `or`s, 254 KiB, took
/// 4 s): 64 KiB keeps such a chunk to about a quarter of a second.
pub const LOAD_MAX_BYTES: usize = 64 * 1024;

/// How many elements a native table loop (`table.concat`, `table.unpack`)
/// or bytes a native string walk (`utf8.len`) handles before the budget is
/// looked at again. Small enough to take microseconds.
pub const NATIVE_STEP: usize = 4096;

/// Removes what a policy must not touch and installs the budget-keeping
/// wrappers (see `sandbox.lua`).
pub fn install(lua: &Lua, budget: &Rc<Budget>) -> mlua::Result<()> {
    let globals = lua.globals();
    globals.raw_set("dofile", Value::Nil)?;
    globals.raw_set("loadfile", Value::Nil)?;
    let string: Table = globals.get("string")?;
    // Its output could only be loaded as a binary chunk, which is refused.
    string.raw_set("dump", Value::Nil)?;

    let spent_budget = budget.clone();
    let spent = lua.create_function(move |_, ()| Ok(spent_budget.spent()))?;
    let over_budget = budget.clone();
    let over = lua.create_function(move |_, ()| Ok(over_budget.over()))?;
    // An mlua error object (a Pocket function's error caught by pcall) as
    // `path:line: message`; Lua's message about a `req` as it names it
    // (`errors::light_as_request`); any other value as it is.
    let describe = lua.create_function(|lua, e: Value| {
        Ok(match e {
            Value::Error(e) => {
                Value::String(lua.create_string(super::errors::describe_caught(&e))?)
            }
            Value::String(s) => {
                let text = s.to_string_lossy();
                let named = super::errors::light_as_request(text.clone());
                if named == text {
                    Value::String(s)
                } else {
                    Value::String(lua.create_string(named)?)
                }
            }
            other => other,
        })
    })?;
    // A value in the docs' words (`a request (req)`, `a number (5)`).
    let name_of = lua.create_function(|_, v: Value| Ok(super::hooks::returned(&v)))?;
    let limits = lua.create_table()?;
    limits.raw_set("budget_message", BUDGET_MESSAGE)?;
    limits.raw_set("load_max", LOAD_MAX_BYTES)?;
    limits.raw_set("step", NATIVE_STEP)?;
    // SAFETY: `hooked` is a C function of Lua's calling convention that
    // reads its one argument (see budget_hook.rs).
    let hooked = unsafe { lua.create_c_function(super::budget_hook::hooked) }?;
    let guard: Function = lua
        .load(include_str!("sandbox.lua"))
        .set_name("=pocket-sandbox")
        .set_mode(mlua::chunk::ChunkMode::Text)
        .call((spent, over, limits, describe, name_of, hooked))?;
    lua.set_named_registry_value(GUARD_KEY, guard)
}

/// Where `install` keeps the sandbox's `guard`.
const GUARD_KEY: &str = "pocket.sandbox.guard";

/// `f` under a pcall that re-raises, for a function Pocket runs as a
/// coroutine (`call_async`): a budget error then leaves Lua's hooks on in
/// that thread, which mlua reuses (see `guard` in `sandbox.lua`).
pub fn guard(lua: &Lua, f: &Function) -> mlua::Result<Function> {
    let guard: Function = lua.named_registry_value(GUARD_KEY)?;
    guard.call(f)
}
