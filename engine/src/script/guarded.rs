//! Library functions whose one call is linear in a big string look at the
//! clock first.
//!
//! `s:upper()` on an 8 MiB string takes milliseconds, and the instruction
//! hook looks at the clock only every 4096 instructions: a loop of such
//! calls ran 33 s against a 2 s budget. Each function here is Lua's own C
//! function behind a thin C closure that checks the budget before calling
//! it when the call's string arguments add up to [`LARGE`] bytes or more.
//! One call still runs to its end (linear in a string the memory limit
//! bounds); a run of them stops at the first one past the deadline.

use std::ffi::{c_int, CStr};

use mlua::ffi::{self, lua_State};

use super::patterns::{budget_at, raise, Failure};

/// String arguments adding up to this many bytes make a call check the
/// clock (~25 ns) first: 64 KiB takes some tens of microseconds to
/// process, so the check costs under 0.1 % of such a call and nothing for
/// the small strings of the request path.
pub(crate) const LARGE: usize = 64 * 1024;

/// Function names by library table.
type Names = &'static [(&'static CStr, &'static [&'static CStr])];

/// The functions guarded, by library. Left out: those whose work does not
/// grow with a string (`len`, `char`, `utf8.codes` a step at a time), the
/// pattern functions and `rep` (patterns.rs, rep.rs) and `dump`.
const GUARDED: Names = &[(
    c"string",
    &[
        c"byte",
        c"format",
        c"lower",
        c"upper",
        c"reverse",
        c"sub",
        c"pack",
        c"packsize",
        c"unpack",
    ],
)];

/// The guard of [`GUARDED`]: upvalue 1 is the budget, upvalue 2 the
/// original function. Past the deadline it raises the budget error
/// instead of calling.
unsafe extern "C-unwind" fn guarded(state: *mut lua_State) -> c_int {
    let mut size = 0usize;
    for i in 1..=ffi::lua_gettop(state) {
        if ffi::lua_type(state, i) == ffi::LUA_TSTRING {
            size = size.saturating_add(ffi::lua_rawlen(state, i));
        }
    }
    if size >= LARGE && budget_at(state, 1).over() {
        raise(state, Failure::OutOfTime);
    }
    // SAFETY: install stored a lua_CFunction there as a light userdata.
    let original: ffi::lua_CFunction =
        std::mem::transmute(ffi::lua_touserdata(state, ffi::lua_upvalueindex(2)));
    // The same call frame: errors read exactly as the original's.
    original(state)
}

/// Wraps the functions of [`GUARDED`]; the budget userdata is at stack
/// index `budget`. (The `utf8` functions, `table.concat` and
/// `collectgarbage` are the sandbox's, sandbox.lua.)
pub(crate) unsafe fn install(state: *mut lua_State, budget: c_int) {
    for (library, names) in GUARDED {
        if ffi::lua_getglobal(state, library.as_ptr()) != ffi::LUA_TTABLE {
            ffi::lua_pop(state, 1);
            continue;
        }
        for name in *names {
            wrap(state, budget, name, guarded);
        }
        ffi::lua_pop(state, 1);
    }
}

/// Puts `guard` in front of field `name` of the table on top of the
/// stack. A field that is not a plain C function (no upvalues) is left as
/// it is: calling its C function from another closure would be wrong.
unsafe fn wrap(state: *mut lua_State, budget: c_int, name: &CStr, guard: ffi::lua_CFunction) {
    ffi::lua_getfield(state, -1, name.as_ptr());
    let original = ffi::lua_tocfunction(state, -1);
    let plain = ffi::lua_getupvalue(state, -1, 1).is_null();
    if !plain {
        ffi::lua_pop(state, 1); // the upvalue
    }
    ffi::lua_pop(state, 1); // the function
    let Some(original) = original.filter(|_| plain) else {
        return;
    };
    ffi::lua_pushvalue(state, budget);
    ffi::lua_pushlightuserdata(state, original as *mut std::ffi::c_void);
    ffi::lua_pushcclosure(state, guard, 2);
    ffi::lua_setfield(state, -2, name.as_ptr());
}
