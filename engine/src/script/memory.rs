//! Memory a script makes Pocket hold outside the Lua heap (the body and
//! headers of a `pocket.respond` answer, a compiled `pocket.regex`),
//! counted against the VM's memory limit as if it were Lua's own.
//!
//! Lua's allocator only sees its own heap: 40 answers with 8 MiB bodies
//! kept by a policy were 320 MiB of Rust memory behind 40 small userdata.
//! Each such object holds a [`Charge`] for its bytes; while charges are
//! held the VM's allocator (script::budget_alloc) refuses Lua as much
//! sooner, so Lua and Rust share one budget. A charge that does not fit
//! first runs a full collection (dead objects give their bytes back), then
//! fails with a memory error.

use std::cell::Cell;
use std::rc::Rc;

use mlua::Lua;

/// One VM's account of memory held outside its heap, in bytes.
pub struct ScriptMemory {
    /// The VM's whole limit (Lua heap plus outside), bytes.
    pub(crate) limit: usize,
    /// Bytes charged now.
    pub(crate) outside: Cell<usize>,
    /// The Lua heap's bytes, as the VM's allocator counts them
    /// (script::budget_alloc), so charges and the allocator agree.
    pub(crate) heap: Cell<usize>,
}

/// Bytes held outside the Lua heap for as long as the charge lives.
pub struct Charge {
    memory: Rc<ScriptMemory>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        let left = self.memory.outside.get().saturating_sub(self.bytes);
        self.memory.outside.set(left);
    }
}

/// Sets up the account of a new VM whose limit is `limit` bytes.
pub fn install(lua: &Lua, limit: usize) -> Rc<ScriptMemory> {
    let memory = Rc::new(ScriptMemory {
        limit,
        outside: Cell::new(0),
        heap: Cell::new(lua.used_memory()),
    });
    lua.set_app_data(memory.clone());
    memory
}

/// Charges `bytes` held outside the heap for `what` (named in the error).
/// Errors: a memory error when the heap and the charges would pass the
/// limit even after a full collection.
pub fn charge(lua: &Lua, bytes: usize, what: &str) -> mlua::Result<Charge> {
    let Some(memory) = lua.app_data_ref::<Rc<ScriptMemory>>().map(|m| m.clone()) else {
        return Err(mlua::Error::RuntimeError(
            "no memory account in this VM".into(),
        ));
    };
    let fits = |m: &ScriptMemory| {
        m.heap
            .get()
            .saturating_add(m.outside.get())
            .saturating_add(bytes)
            <= m.limit
    };
    if !fits(&memory) {
        // A full collection takes time linear in the heap: not in a loop
        // that is already past its budget (pcall around a charge).
        super::vm::check_budget(lua)?;
        // Unreachable answers and regexes give their charges back here.
        lua.gc_collect()?;
        if !fits(&memory) {
            return Err(mlua::Error::MemoryError(format!(
                "{what} of {bytes} bytes does not fit in the script's memory limit of {} bytes",
                memory.limit
            )));
        }
    }
    memory.outside.set(memory.outside.get() + bytes);
    Ok(Charge { memory, bytes })
}

/// Bytes the VM can still take (heap and charges), for native code that
/// builds a result outside the heap before handing it over.
pub fn room(lua: &Lua) -> usize {
    let Some(memory) = lua.app_data_ref::<Rc<ScriptMemory>>().map(|m| m.clone()) else {
        return 0;
    };
    memory
        .limit
        .saturating_sub(memory.heap.get())
        .saturating_sub(memory.outside.get())
}
