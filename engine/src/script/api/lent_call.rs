//! `on_request` called straight through Lua's own `lua_pcall`, and what it
//! returned read off the stack (issue 18: the hook's cost).
//!
//! mlua's `Function::call` converts the result into a `Value` (a string
//! takes a slot in mlua's reference thread, given back when dropped), and
//! the pool was then found by comparing names: about 850 instructions a
//! call. Here the returned string is compared by address with the pool
//! names made at load: Lua keeps one copy of each short string (up to 40
//! bytes), so the name a script returns is the very string made at load.
//! Anything else (a long name, an unknown one, `pocket.respond(...)`, an
//! error) is taken as mlua takes it and decided as before.
//!
//! Errors are what mlua's call gives: the same message handler (a
//! traceback appended to a Lua error; mlua's wrapped Rust errors left as
//! they are) and the same conversion (a wrapped error gives back the
//! `mlua::Error` it holds, a panic is resumed, a memory error is
//! `MemoryError`), so `path:line`, the time budget's and the memory
//! limit's messages read as they did.

use std::ffi::{c_int, c_void};

use mlua::{ffi, Function, LightUserData, Lua, LuaString, Value};

use super::lent::{Lender, Lent};
use super::request::RequestView;

/// What a hook called by [`Lender::call_hook`] returned.
pub enum Returned {
    Nil,
    /// A pool by its index in the policy: one of the names given.
    Pool(usize),
    /// Anything else, as mlua reads it.
    Other(Value),
}

/// The names a hook may return, made once at load, with their addresses
/// (see the module's doc).
pub struct PoolNames {
    /// The strings, kept alive (so their addresses stay theirs).
    _kept: Vec<LuaString>,
    /// The address (`lua_topointer`) of each name, with its pool's index.
    names: Vec<(*const c_void, usize)>,
}

impl PoolNames {
    /// `pools`: each pool's index and name.
    pub fn new<'a>(
        lua: &Lua,
        pools: impl Iterator<Item = (usize, &'a str)>,
    ) -> mlua::Result<PoolNames> {
        let mut kept = Vec::new();
        let mut names = Vec::new();
        for (i, name) in pools {
            let s = lua.create_string(name)?;
            names.push((address(lua, &s)?, i));
            kept.push(s);
        }
        Ok(PoolNames { _kept: kept, names })
    }

    fn find(&self, at: *const c_void) -> Option<usize> {
        self.names.iter().find(|&&(a, _)| a == at).map(|&(_, i)| i)
    }
}

/// What `lua_topointer` says of `s` (its object, where mlua's
/// `LuaString::to_pointer` gives its bytes).
pub(super) fn address(lua: &Lua, s: &LuaString) -> mlua::Result<*const c_void> {
    // SAFETY: pushes the string and reads its address; mlua restores the
    // stack.
    lua.exec_raw_lua(|raw| unsafe {
        let state = raw.state();
        if ffi::lua_checkstack(state, 1) == 0 {
            return Err(mlua::Error::StackError);
        }
        raw.push(s)?;
        let at = ffi::lua_topointer(state, -1);
        ffi::lua_pop(state, 1);
        Ok(at)
    })
}

/// Makes the message handler (load time): a C function with the wrapped
/// errors' metatable as its upvalue; returns it and that metatable.
pub(super) fn handler(lua: &Lua) -> mlua::Result<(Function, *const c_void)> {
    // SAFETY: pushes one wrapped error (mlua protects the push) and reads
    // its metatable's address; the stack is mlua's to restore.
    let failure = lua.exec_raw_lua(|raw| unsafe {
        let state = raw.state();
        if ffi::lua_checkstack(state, 2) == 0 {
            return Err(mlua::Error::StackError);
        }
        raw.push_value(&Value::Error(Box::new(mlua::Error::runtime("probe"))))?;
        let at = metatable_of(state, -1);
        ffi::lua_pop(state, 1);
        Ok(at)
    })?;
    if failure.is_null() {
        return Err(mlua::Error::runtime("mlua's errors have no metatable"));
    }
    // SAFETY: `traceback` reads its one upvalue as pushed here.
    let f = unsafe {
        lua.exec_raw(LightUserData(failure as *mut c_void), |state| {
            ffi::lua_pushcclosure(state, traceback, 1)
        })
    }?;
    Ok((f, failure))
}

/// The address of the metatable of the value at `idx`, or null.
unsafe fn metatable_of(state: *mut ffi::lua_State, idx: c_int) -> *const c_void {
    if ffi::lua_getmetatable(state, idx) == 0 {
        return std::ptr::null();
    }
    let at = ffi::lua_topointer(state, -1);
    ffi::lua_pop(state, 1);
    at
}

/// The value at the top is one of mlua's wrapped Rust errors (or panics).
unsafe fn is_failure(state: *mut ffi::lua_State, failure: *const c_void) -> bool {
    !ffi::lua_touserdata(state, -1).is_null() && metatable_of(state, -1) == failure
}

/// The message handler: mlua's `error_traceback`, word for word. Upvalue
/// 1: the wrapped errors' metatable.
unsafe extern "C-unwind" fn traceback(state: *mut ffi::lua_State) -> c_int {
    if ffi::lua_checkstack(state, 2) == 0 {
        return 1;
    }
    let failure = ffi::lua_touserdata(state, ffi::lua_upvalueindex(1)) as *const c_void;
    if !is_failure(state, failure) {
        let s = ffi::luaL_tolstring(state, -1, std::ptr::null_mut());
        if ffi::lua_checkstack(state, ffi::LUA_TRACEBACK_STACK) != 0 {
            ffi::luaL_traceback(state, state, s, 0);
            ffi::lua_remove(state, -2);
        }
    }
    1
}

/// Makes every light userdata of the VM a `req`: gives the light
/// userdata type the `req` objects' metatable (load time). Each call's
/// `req` is a light userdata whose value is the call's number (see
/// [`Lender::call_hook`]): no allocation and nothing for the collector,
/// where a full userdata per call cost about 600 instructions (made,
/// swept, freed). No other light userdata reaches a script (Pocket makes
/// none for scripts; mlua's own stay inside its code).
pub(super) fn light_metatable(lua: &Lua, metatable: &mlua::Table) -> mlua::Result<()> {
    // SAFETY: pushes a light userdata, sets the one argument (the
    // metatable) as its type's metatable, and leaves the stack as mlua
    // handed it.
    unsafe {
        lua.exec_raw::<()>(metatable, |state| {
            ffi::lua_pushlightuserdata(state, std::ptr::null_mut());
            ffi::lua_rotate(state, -2, 1);
            ffi::lua_setmetatable(state, -2);
            ffi::lua_pop(state, 1);
        })
    }
}

/// Puts the stack back as it was (also when a panic is resumed).
struct Top(*mut ffi::lua_State, c_int);

impl Drop for Top {
    fn drop(&mut self) {
        // SAFETY: the state lives; the top was valid when taken.
        unsafe { ffi::lua_settop(self.0, self.1) }
    }
}

/// Turns the count hook back on when the call is over (also when a panic
/// is resumed).
struct Rearm(*mut ffi::lua_State);

impl Drop for Rearm {
    fn drop(&mut self) {
        // SAFETY: the state lives, on this thread (see `call_hook`).
        unsafe { crate::script::budget_hook::arm(self.0) }
    }
}

impl Lender {
    /// Calls `hook` with `req` lent as a fresh `req` object, in a
    /// protected call of its own, and reads its first result: one of
    /// `pools`' names is told by its address.
    ///
    /// The call starts with the budget's count hook off, unless
    /// `lines_noted` (the heap is past a quarter of its limit and the hook
    /// notes the running line for a memory error); `budget_timer` arms
    /// it once the call runs long, and it is on again after the call.
    pub fn call_hook(
        &self,
        lua: &Lua,
        hook: &Function,
        req: &mut RequestView,
        pools: &PoolNames,
        lines_noted: bool,
    ) -> mlua::Result<Returned> {
        let watched = self
            .watched
            .get_or_init(crate::script::budget_timer::Watched::this_thread);
        lua.exec_raw_lua(|raw| {
            let state = raw.state();
            // SAFETY: plain stack work on mlua's state, under its lock;
            // `Top` restores the stack however this ends. The request is
            // borrowed mutably for this whole function and the caller
            // does not touch it until it returns; it is named in
            // `Current` until the call returns.
            unsafe {
                let top = ffi::lua_gettop(state);
                let _top = Top(state, top);
                if ffi::lua_checkstack(state, 6) == 0 {
                    return Err(mlua::Error::StackError);
                }
                raw.push(&self.handler)?;
                // This call's `req`: a value no earlier call had, so a
                // kept one is told apart from it (never null: the first
                // call is 1).
                let number = self.calls.get().wrapping_add(1).max(1);
                self.calls.set(number);
                let obj = number as *mut c_void;
                raw.push(hook)?;
                ffi::lua_pushlightuserdata(state, obj);
                let lent = Lent {
                    current: &self.current,
                    before: (self.current.req.get(), self.current.obj.get()),
                };
                self.current.req.set(req as *mut RequestView);
                self.current.obj.set(obj);
                // Dropped in this order: the timer's arming ends, then
                // the hook is on again.
                let rearm = Rearm(state);
                if !lines_noted {
                    crate::script::budget_hook::disarm(state);
                }
                let running = watched.start(state);
                let rc = ffi::lua_pcall(state, 1, 1, top + 1);
                drop(running);
                drop(rearm);
                drop(lent);
                if rc != ffi::LUA_OK {
                    return Err(self.error(raw, rc));
                }
                if ffi::lua_type(state, -1) == ffi::LUA_TNIL {
                    return Ok(Returned::Nil);
                }
                // Any other value is another object than the names.
                if let Some(i) = pools.find(ffi::lua_topointer(state, -1)) {
                    return Ok(Returned::Pool(i));
                }
                Ok(Returned::Other(raw.pop_value()))
            }
        })
    }

    /// The error at the top of the stack after `lua_pcall` returned `rc`,
    /// as mlua's `pop_error` makes it.
    unsafe fn error(&self, raw: &mlua::state::RawLua, rc: c_int) -> mlua::Error {
        let state = raw.state();
        if is_failure(state, self.failure) {
            return match raw.pop_value() {
                Value::Error(e) => *e,
                _ => mlua::Error::PreviouslyResumedPanic,
            };
        }
        let mut len = 0;
        let at = ffi::lua_tolstring(state, -1, &mut len);
        let text = if at.is_null() {
            "<unprintable error>".to_string()
        } else {
            String::from_utf8_lossy(std::slice::from_raw_parts(at as *const u8, len)).into_owned()
        };
        ffi::lua_pop(state, 1);
        match rc {
            ffi::LUA_ERRMEM => mlua::Error::MemoryError(text),
            _ => mlua::Error::RuntimeError(crate::script::errors::light_as_request(text)),
        }
    }
}
