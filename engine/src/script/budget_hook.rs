//! The time budget's instruction hook, set with Lua's own `lua_sethook`
//! rather than mlua's `set_global_hook`. mlua raises a hook's error after a
//! `lua_settop(L, 0)` on the hooked function's frame; in Lua 5.4 that runs
//! the frame's pending `__close` methods right there, inside the hook, where
//! Lua has every hook turned off, so `local x <close> = ...` could loop for
//! ever after the budget ran out. This hook raises with a plain
//! `lua_error`: the error unwinds to the catching `pcall` (Lua turns hooks
//! back on there) before any `__close` runs.
//!
//! Threads inherit the hook: `lua_newthread` copies it from the creating
//! thread, for coroutines and for mlua's own threads alike.

use std::ffi::{c_int, c_void};
use std::rc::Rc;

use mlua::ffi;
use mlua::Lua;

use super::vm::{Budget, HOOK_EVERY};

/// Registry key (its address) of the VM's `Budget`, as a light userdata.
static BUDGET_KEY: u8 = 0;

/// Installs the hook on the VM's main thread, every `every` instructions.
/// The VM keeps `budget` alive as long as the Lua state (app data).
pub fn install(lua: &Lua, budget: &Rc<Budget>, every: u32) -> mlua::Result<()> {
    lua.set_app_data(budget.clone());
    let ptr = Rc::as_ptr(budget) as *mut c_void;
    let count = c_int::try_from(every).unwrap_or(c_int::MAX);
    // SAFETY: plain stack operations on the state mlua hands us; the
    // pointer stays valid while the state lives (app data above).
    unsafe {
        lua.exec_raw::<()>((), move |state| {
            ffi::lua_pushlightuserdata(state, ptr);
            ffi::lua_rawsetp(state, ffi::LUA_REGISTRYINDEX, key());
            ffi::lua_sethook(state, Some(budget_hook), ffi::LUA_MASKCOUNT, count);
        })
    }
}

/// Turns the count hook on for `state`, every [`HOOK_EVERY`] instructions
/// (what `install` set). Safe in a signal handler on the thread running
/// `state` (see `budget_timer`).
///
/// # Safety
/// `state` is a live Lua state of a VM `install` set up, used on this
/// thread.
pub unsafe fn arm(state: *mut ffi::lua_State) {
    ffi::lua_sethook(
        state,
        Some(budget_hook),
        ffi::LUA_MASKCOUNT,
        HOOK_EVERY as c_int,
    );
}

/// Turns the count hook off for `state` (an `on_request` call starts;
/// `budget_timer` arms it again if the call runs long).
///
/// # Safety
/// As for [`arm`].
pub unsafe fn disarm(state: *mut ffi::lua_State) {
    ffi::lua_sethook(state, None, 0, 0);
}

/// `hooked(co)`: gives the coroutine `co` (a thread, or the function
/// `coroutine.wrap` made, whose first upvalue is its thread) the count
/// hook, and returns it. A thread takes its hook from the one that makes
/// it, and one made during an `on_request` call whose hook is off (see
/// `budget_timer`) would run unchecked. Anything else is returned as it
/// is.
pub unsafe extern "C-unwind" fn hooked(state: *mut ffi::lua_State) -> c_int {
    ffi::lua_settop(state, 1);
    match ffi::lua_type(state, 1) {
        ffi::LUA_TTHREAD => arm(ffi::lua_tothread(state, 1)),
        ffi::LUA_TFUNCTION if !ffi::lua_getupvalue(state, 1, 1).is_null() => {
            if ffi::lua_type(state, -1) == ffi::LUA_TTHREAD {
                arm(ffi::lua_tothread(state, -1));
            }
            ffi::lua_pop(state, 1);
        }
        _ => {}
    }
    1
}

fn key() -> *const c_void {
    &BUDGET_KEY as *const u8 as *const c_void
}

/// Every `count` instructions: past the deadline, raise
/// `path:line: script stopped: it ran past its time budget`, where
/// `path:line` is the innermost frame from a file (a loop inside one of
/// the sandbox's wrappers still names the policy's line). No Rust value
/// that needs dropping is alive when `lua_error` jumps.
unsafe extern "C-unwind" fn budget_hook(state: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, key());
    let budget = ffi::lua_touserdata(state, -1) as *const Budget;
    ffi::lua_pop(state, 1);
    // SAFETY: set by `install`, alive as long as the state.
    if budget.is_null() {
        return;
    }
    if (*budget).near_limit.get() {
        note_line(state, &(*budget).seen);
    }
    if !(*budget).over() {
        return;
    }
    let mut ar: ffi::lua_Debug = std::mem::zeroed();
    let mut level = 0;
    let mut placed = false;
    while level < 64 && ffi::lua_getstack(state, level, &mut ar) != 0 {
        if ffi::lua_getinfo(state, c"Sl".as_ptr(), &mut ar) != 0
            && !ar.source.is_null()
            && *ar.source == b'@' as std::ffi::c_char
        {
            ffi::lua_pushfstring(
                state,
                c"%s:%d: %s".as_ptr(),
                ar.source.add(1),
                ar.currentline as c_int,
                BUDGET_C.as_ptr(),
            );
            placed = true;
            break;
        }
        level += 1;
    }
    if !placed {
        ffi::lua_pushfstring(state, c"%s".as_ptr(), BUDGET_C.as_ptr());
    }
    ffi::lua_error(state)
}

/// Notes the chunk name and line of the innermost frame from a file in
/// `seen` (a memory error that the allocator cannot place uses it). No
/// formatting and no allocation once `seen` holds the frame's file.
unsafe fn note_line(state: *mut ffi::lua_State, seen: &super::vm::Seen) {
    let mut ar: ffi::lua_Debug = std::mem::zeroed();
    let mut level = 0;
    while level < 64 && ffi::lua_getstack(state, level, &mut ar) != 0 {
        if ffi::lua_getinfo(state, c"Sl".as_ptr(), &mut ar) != 0
            && !ar.source.is_null()
            && *ar.source == b'@' as std::ffi::c_char
        {
            let path = std::ffi::CStr::from_ptr(ar.source.add(1)).to_bytes();
            seen.note(path, ar.currentline as i32);
            return;
        }
        level += 1;
    }
}

/// [`BUDGET_MESSAGE`] as a C string.
const BUDGET_C: &std::ffi::CStr = c"script stopped: it ran past its time budget";

#[cfg(test)]
mod tests {
    #[test]
    fn c_message_matches() {
        assert_eq!(
            super::BUDGET_C.to_str(),
            Ok(crate::script::vm::BUDGET_MESSAGE)
        );
    }
}
