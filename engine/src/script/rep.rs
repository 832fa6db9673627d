//! `string.rep` without its empty-string loop.
//!
//! Lua 5.4's `str_rep` copies the string `n` times even when the string
//! and the separator are both empty, so `string.rep("", math.maxinteger)`
//! spins for ever inside one C call, where the instruction hook never
//! fires. This is the same function (same results and errors) answering
//! "" at once in that case; otherwise the result has at least `n - 1`
//! bytes, so the memory limit bounds the work. It copies by doubling what
//! it has written (log n copies rather than n).

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::guarded::LARGE;
use super::patterns::{budget_at, raise, Failure};

/// Lua's `MAXSIZE` for strings built by the string library (`INT_MAX` on
/// 64-bit targets, lstrlib.c).
const MAX_SIZE: usize = i32::MAX as usize;

/// `string.rep(s, n [, sep])`; upvalue 1 is the budget (patterns.rs).
pub(crate) unsafe extern "C-unwind" fn str_rep(state: *mut lua_State) -> c_int {
    let mut l = 0;
    let s = ffi::luaL_checklstring(state, 1, &mut l);
    let n = ffi::luaL_checkinteger(state, 2);
    let mut lsep = 0;
    let sep = ffi::luaL_optlstring(state, 3, c"".as_ptr(), &mut lsep);
    if n <= 0 || l + lsep == 0 {
        ffi::lua_pushstring(state, c"".as_ptr());
        return 1;
    }
    let n = n as u64;
    if l.checked_add(lsep)
        .is_none_or(|both| both as u64 > MAX_SIZE as u64 / n)
    {
        return ffi::luaL_error(state, c"resulting string too large".as_ptr());
    }
    // fits: n * (l + lsep) <= MAX_SIZE
    let n = n as usize;
    let total = n * l + (n - 1) * lsep;
    // linear in the result, but a loop of big ones must see the clock
    if total >= LARGE && budget_at(state, 1).over() {
        raise(state, Failure::OutOfTime);
    }
    let mut buffer = std::mem::MaybeUninit::<ffi::luaL_Buffer>::uninit();
    let start = ffi::luaL_buffinitsize(state, buffer.as_mut_ptr(), total);
    // (s sep) n-1 times, then s: the first unit written, then the written
    // part copied onto what follows it, doubling (log n copies, not n).
    let unit = l + lsep;
    let repeated = (n - 1) * unit;
    if repeated > 0 {
        std::ptr::copy_nonoverlapping(s, start, l);
        std::ptr::copy_nonoverlapping(sep, start.add(l), lsep);
        let mut filled = unit;
        while filled < repeated {
            let more = filled.min(repeated - filled);
            std::ptr::copy_nonoverlapping(start, start.add(filled), more);
            filled += more;
        }
    }
    std::ptr::copy_nonoverlapping(s, start.add(repeated), l);
    ffi::luaL_pushresultsize(buffer.as_mut_ptr(), total);
    1
}
