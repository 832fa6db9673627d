//! The time budget at large allocations. The instruction hook looks at the
//! clock every 4096 instructions, but one instruction or one `string` call
//! on a long string (`s .. t`, `s:upper()`) copies the whole string, so
//! 4096 of them on an 8 MB string took 22 s. Each of those allocates its
//! result: once the running call is past its deadline, Lua's allocator
//! refuses allocations of 64 KiB and more, the operation fails with a
//! memory error and `Vm::with_budget` reports it as the budget error, at
//! the line the allocator found on the stack when it refused.
//!
//! It also keeps the heap within the VM's limit less what the script holds
//! outside it (script::memory's charges), counting the heap's bytes itself
//! (mlua's own limit can no longer be changed once it is wrapped).
//!
//! The allocator wraps mlua's (which keeps the memory limit) and is put
//! back when the `Vm` is dropped.

use std::ffi::c_void;
use std::rc::Rc;

use mlua::ffi;
use mlua::Lua;

use super::memory::ScriptMemory;
use super::vm::Budget;

/// Allocations of at least this many bytes check the budget (a branch on
/// the size for every other allocation). An operation on a string just
/// under it takes tens of microseconds, so 4096 of them between two checks
/// of the instruction hook stay within a fraction of a second.
pub const LARGE_ALLOC: usize = 64 * 1024;

struct Wrapped {
    inner: ffi::lua_Alloc,
    inner_ud: *mut c_void,
    budget: Rc<Budget>,
    /// The VM's main thread, to find the script's line at a refusal.
    main: *mut ffi::lua_State,
    /// The charges of memory held outside the heap, the limit, and the
    /// heap's bytes as this allocator counts them.
    memory: Rc<ScriptMemory>,
}

/// The installed allocator; `uninstall` puts mlua's back.
pub struct BudgetAlloc(*mut Wrapped);

/// Puts the budget-checking allocator in front of the VM's (call after
/// `set_memory_limit`).
pub fn install(
    lua: &Lua,
    budget: &Rc<Budget>,
    memory: &Rc<ScriptMemory>,
) -> mlua::Result<BudgetAlloc> {
    let budget = budget.clone();
    let memory = memory.clone();
    // mlua's allocator is still in place: its count is exact.
    memory.heap.set(lua.used_memory());
    let mut installed: *mut Wrapped = std::ptr::null_mut();
    let slot = &mut installed;
    // SAFETY: reads and replaces the allocator of the state mlua hands us;
    // `Wrapped` lives until `uninstall` has put the old allocator back.
    unsafe {
        lua.exec_raw::<()>((), move |state| {
            let mut inner_ud = std::ptr::null_mut();
            let inner = ffi::lua_getallocf(state, &mut inner_ud);
            let wrapped = Box::into_raw(Box::new(Wrapped {
                inner,
                inner_ud,
                budget,
                main: state,
                memory,
            }));
            ffi::lua_setallocf(state, budget_alloc, wrapped as *mut c_void);
            *slot = wrapped;
        })?;
    }
    Ok(BudgetAlloc(installed))
}

impl BudgetAlloc {
    /// Puts mlua's allocator back and frees ours. If that cannot be done
    /// the wrapper is leaked (a few bytes), never freed while in use.
    pub fn uninstall(self, lua: &Lua) {
        if self.0.is_null() {
            return;
        }
        let wrapped = self.0;
        // SAFETY: `wrapped` came from `install` and is still the allocator.
        let restored = unsafe {
            lua.exec_raw::<()>((), move |state| {
                ffi::lua_setallocf(state, (*wrapped).inner, (*wrapped).inner_ud);
            })
        };
        if restored.is_ok() {
            // SAFETY: no longer referenced by the state.
            drop(unsafe { Box::from_raw(wrapped) });
        }
    }
}

/// Lua's allocator contract (lua_Alloc): `nsize == 0` frees; `ptr` null
/// allocates (then `osize` is a type tag). Must not unwind.
unsafe extern "C" fn budget_alloc(
    ud: *mut c_void,
    ptr: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    let wrapped = &*(ud as *const Wrapped);
    if nsize >= LARGE_ALLOC && (ptr.is_null() || nsize > osize) && wrapped.budget.refuses_large() {
        // Only for a new block: a block that grows may be a Lua stack,
        // and while Lua moves a stack (luaD_reallocstack) its frames hold
        // offsets, not pointers, so reading them would crash.
        if ptr.is_null() && !wrapped.budget.has_place() {
            wrapped.budget.set_place(script_line(wrapped.main));
        }
        return std::ptr::null_mut();
    }
    // `osize` is a size only for a block that exists.
    let old = if ptr.is_null() { 0 } else { osize };
    let heap = wrapped.memory.heap.get();
    let outside = wrapped.memory.outside.get();
    if outside > 0 && nsize > old && heap + (nsize - old) + outside > wrapped.memory.limit {
        note_memory_place(wrapped, ptr);
        return std::ptr::null_mut();
    }
    let out = (wrapped.inner)(wrapped.inner_ud, ptr, osize, nsize);
    if !out.is_null() || nsize == 0 {
        let now = (heap + nsize).saturating_sub(old);
        wrapped.memory.heap.set(now);
        let near = now + outside > wrapped.memory.limit / 4;
        if near && !wrapped.budget.near_limit.get() {
            // An `on_request` call running with the count hook off (see
            // `budget_timer`) gets it now, so the hook notes its lines.
            super::budget_timer::arm_running();
        }
        wrapped.budget.near_limit.set(near);
    } else {
        note_memory_place(wrapped, ptr);
    }
    out
}

/// A refusal for the memory limit: notes the script's line, so the error
/// says where the limit was met (Lua's own memory errors carry no line).
/// Only for a new block, as for the budget: a block that grows may be a
/// stack being moved. Growth refusals are placed by the hook's caller.
unsafe fn note_memory_place(wrapped: &Wrapped, ptr: *mut c_void) {
    if ptr.is_null() && !wrapped.budget.has_place() {
        wrapped.budget.set_place(script_line(wrapped.main));
    }
}

/// `path:line` of the innermost frame from a file on the main thread's
/// stack (in a coroutine: where the policy resumed it). Only reads the
/// stack (`lua_getstack`/`lua_getinfo` with "Sl" push nothing), so it is
/// safe inside an allocation.
unsafe fn script_line(state: *mut ffi::lua_State) -> Option<String> {
    let mut ar: ffi::lua_Debug = std::mem::zeroed();
    let mut level = 0;
    while level < 64 && ffi::lua_getstack(state, level, &mut ar) != 0 {
        if ffi::lua_getinfo(state, c"Sl".as_ptr(), &mut ar) != 0 && !ar.source.is_null() {
            let source = std::ffi::CStr::from_ptr(ar.source).to_string_lossy();
            if let Some(path) = source.strip_prefix('@') {
                return Some(format!("{path}:{}", ar.currentline));
            }
        }
        level += 1;
    }
    None
}
