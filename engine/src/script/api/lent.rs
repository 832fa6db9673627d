//! The `req` that `on_request` gets, lent for the call at a small cost
//! (issue 18: "request fields reach Lua without a protected call per
//! field").
//!
//! mlua's own path (`Lua::scope` + `create_userdata_ref_mut`, fields by
//! mlua's `__index`) cost about 3,700 instructions a call for the scope
//! and 2,900 a field read: a Lua `__index` closure, a table of getters,
//! then a protected Rust callback that type-checks and borrows the
//! userdata. Here, made once per VM at load:
//! - one metatable whose `__index` is a C function: one raw lookup of the
//!   key in a table (name -> field number, or the method function), then
//!   the common fields (`host`, `path`, `method`, `query`, `uri`,
//!   `target`, `version`, `scheme`, `tls`) are pushed straight from the
//!   request's bytes: no protected call, no Rust callback, no copy but
//!   Lua's own. Other fields, and every error, go to a Rust function.
//! - the methods, as Rust functions that find the request through
//!   [`Current`].
//!
//! Per call: a light userdata whose value is the call's number (light
//! userdata share one metatable, this one: see `lent_call`), so no
//! allocation; the request's address set in [`Current`] for the call and
//! cleared after (also on unwinding). An object kept past its call (in a
//! global, an upvalue) no longer matches `Current`: using it is the
//! documented error ("a conn, req or res is valid only during the call it
//! was given to"), as mlua's scope gave, never a read of a request that
//! is gone. Lua names a light userdata's type "userdata" in its own
//! messages (it reads `__name` only for tables and full userdata), so
//! `errors::light_as_request` says "request" there as before.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::rc::Rc;
use std::sync::Arc;

use mlua::{
    ffi, AnyUserData, FromLuaMulti, Function, IntoLuaMulti, LightUserData, Lua, MultiValue, Value,
};

use super::request::{self, Field, RequestView, FIELDS};

/// The request lent for the call now running, and the object (its
/// `lua_topointer`) it was lent as; both null between calls.
pub(super) struct Current {
    pub(super) req: Cell<*mut RequestView>,
    pub(super) obj: Cell<*const c_void>,
    /// The address (`lua_topointer`) of each field's name, by its place
    /// in [`FIELDS`]: Lua keeps one copy of a short string, and the names
    /// table (an upvalue of `index`) keeps these alive, so a script's
    /// `req.host` indexes with this very string.
    keys: Vec<*const c_void>,
    /// What `index` pushed last for each [`CACHED`] field, and the bytes
    /// the host was made from (see [`Kept`]).
    kept: [Kept; CACHED as usize + 1],
}

/// The bytes of a string `index` keeps (in its upvalue, for the
/// [`CACHED`] fields), so that a hit is a comparison of Rust bytes and
/// one push. `valid` is false while the two may disagree (a memory error
/// while a new string is made leaves it false).
#[derive(Default)]
pub(super) struct Kept {
    bytes: std::cell::UnsafeCell<Vec<u8>>,
    valid: Cell<bool>,
}

impl Kept {
    /// The kept bytes are `bytes`.
    fn holds(&self, bytes: &[u8]) -> bool {
        // SAFETY: only `index` (one thread, not re-entered while this
        // borrow lives: no Lua code runs here) touches the bytes.
        self.valid.get() && unsafe { (*self.bytes.get()).as_slice() } == bytes
    }

    /// Forgets the bytes, before a new string is made.
    fn forget(&self) {
        self.valid.set(false);
    }

    /// Keeps `bytes` (the string was made and kept).
    fn keep(&self, bytes: &[u8]) {
        // SAFETY: as in `holds`.
        let kept = unsafe { &mut *self.bytes.get() };
        kept.clear();
        kept.extend_from_slice(bytes);
        self.valid.set(true);
    }
}

impl Current {
    /// The request `this` stands for: Some only for the object of the
    /// call now running.
    fn of(&self, this: &Value) -> Option<*mut RequestView> {
        let req = self.req.get();
        (!req.is_null() && this.to_pointer() == self.obj.get()).then_some(req)
    }
}

/// A worker VM's maker of lent `req` objects (see the module's doc).
pub struct Lender {
    pub(super) current: Rc<Current>,
    /// The `req` objects' metatable, for [`Lender::lend`] (the stock's
    /// refill keeps its own reference).
    #[cfg(test)]
    metatable: mlua::Table,
    /// The message handler of [`Lender::call_hook`]'s protected call
    /// (see `lent_call`).
    pub(super) handler: Function,
    /// The metatable (its `lua_topointer`) of mlua's wrapped Rust errors
    /// in this VM: such an error is left as it is by the handler and
    /// taken back as the `mlua::Error` it carries.
    pub(super) failure: *const c_void,
    /// Calls lent so far: the last call's `req` (a light userdata, see
    /// `lent_call::light_metatable`) is this number.
    pub(super) calls: Cell<usize>,
    /// This VM's thread, for the timer that arms the count hook of a
    /// call that runs long (made at the first call, on the VM's thread).
    pub(super) watched: std::cell::OnceCell<Arc<crate::script::budget_timer::Watched>>,
}

/// Clears [`Current`] when the call returns or unwinds (restoring what
/// was lent before, should lending ever nest).
pub(super) struct Lent<'a> {
    pub(super) current: &'a Current,
    pub(super) before: (*mut RequestView, *const c_void),
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        self.current.req.set(self.before.0);
        self.current.obj.set(self.before.1);
    }
}

impl Lender {
    /// Builds the metatable and the methods in `lua` (load time).
    pub fn new(lua: &Lua) -> mlua::Result<Lender> {
        let names = lua.create_table()?;
        let mut keys = Vec::with_capacity(FIELDS.len());
        for (i, &(name, _)) in FIELDS.iter().enumerate() {
            let key = lua.create_string(name)?;
            keys.push(super::lent_call::address(lua, &key)?);
            names.raw_set(key, i as i64)?;
        }
        let current = Rc::new(Current {
            req: Cell::new(std::ptr::null_mut()),
            obj: Cell::new(std::ptr::null()),
            keys,
            kept: Default::default(),
        });
        let c = &current;
        names.raw_set(
            "header",
            method(lua, c, "header", |l, r, a| super::headers::header(l, r, a))?,
        )?;
        names.raw_set(
            "header_all",
            method(lua, c, "header_all", |l, r, a| {
                super::headers::header_all(l, r, a)
            })?,
        )?;
        names.raw_set(
            "headers",
            method(lua, c, "headers", |l, r, a| {
                super::headers::headers(l, r, a)
            })?,
        )?;
        names.raw_set(
            "set_header",
            method(lua, c, "set_header", super::headers::set_header)?,
        )?;
        names.raw_set(
            "add_header",
            method(lua, c, "add_header", super::headers::add_header)?,
        )?;
        names.raw_set(
            "remove_header",
            method(lua, c, "remove_header", super::headers::remove_header)?,
        )?;
        names.raw_set(
            "log_field",
            method(lua, c, "log_field", |l, r, a| request::log_field(l, r, a))?,
        )?;
        names.raw_set("set_path", method(lua, c, "set_path", request::set_path)?)?;
        names.raw_set(
            "set_query",
            method(lua, c, "set_query", request::set_query)?,
        )?;
        names.raw_set(
            "set_method",
            method(lua, c, "set_method", request::set_method)?,
        )?;

        // Fields the C function leaves to Rust, and every error.
        let cur = current.clone();
        let slow = lua.create_function(move |lua, (this, key): (Value, Value)| {
            let Some(req) = cur.of(&this) else {
                return Err(mlua::Error::UserDataDestructed);
            };
            let found = match &key {
                Value::String(s) => {
                    let s = s.as_bytes();
                    FIELDS.iter().find(|(name, _)| name.as_bytes() == &*s)
                }
                _ => None,
            };
            match found {
                // SAFETY: see `Lender::lend`; nothing else borrows it now.
                Some(&(_, f)) => request::field(lua, unsafe { &*req }, f),
                None => Err(super::names::no_field("request", &key)),
            }
        })?;
        let cur = current.clone();
        let newindex = lua.create_function(move |_, (this, key, _): (Value, Value, Value)| {
            if cur.of(&this).is_none() {
                return Err::<(), _>(mlua::Error::UserDataDestructed);
            }
            Err(super::names::read_only_error("req", request::SETTERS, &key))
        })?;
        let cur = current.clone();
        let tostring = lua.create_function(move |_, this: Value| match cur.of(&this) {
            // SAFETY: see `Lender::lend`.
            Some(req) => Ok(request::describe(unsafe { &*req })),
            None => Err(mlua::Error::UserDataDestructed),
        })?;
        // SAFETY: `index` reads its upvalues as pushed here (the last
        // [`CACHED`] start as empty strings); `Current` lives in an `Rc`
        // the slow path and the methods (its upvalues, so alive as long
        // as it is) hold.
        let index: Function = unsafe {
            lua.exec_raw(
                (
                    names,
                    slow,
                    LightUserData(Rc::as_ptr(&current) as *mut c_void),
                ),
                |state| {
                    for _ in 0..CACHED {
                        ffi::lua_pushlstring(state, c"".as_ptr(), 0);
                    }
                    ffi::lua_pushcclosure(state, index, 3 + CACHED)
                },
            )
        }?;
        let metatable = lua.create_table()?;
        metatable.raw_set("__index", index)?;
        metatable.raw_set("__newindex", newindex)?;
        metatable.raw_set("__tostring", tostring)?;
        // Lua's own messages ("attempt to call a request value") and
        // `names::userdata_name` read it.
        metatable.raw_set("__name", "request")?;
        metatable.raw_set("__metatable", false)?;
        let (handler, failure) = super::lent_call::handler(lua)?;
        super::lent_call::light_metatable(lua, &metatable)?;
        Ok(Lender {
            current,
            #[cfg(test)]
            metatable,
            handler,
            failure,
            calls: Cell::new(0),
            watched: std::cell::OnceCell::new(),
        })
    }

    /// Runs `body` with `req` lent as a fresh `req` object, valid until
    /// `body` returns (the tests' way in; `on_request` goes through
    /// [`Lender::call_hook`]).
    #[cfg(test)]
    pub fn lend<R>(
        &self,
        lua: &Lua,
        req: &mut RequestView,
        body: impl FnOnce(&AnyUserData) -> mlua::Result<R>,
    ) -> mlua::Result<R> {
        // SAFETY: pushes one userdata and sets the metatable given as the
        // one argument on it; Lua's errors (memory) are caught by exec_raw.
        let obj: AnyUserData = unsafe {
            lua.exec_raw(&self.metatable, |state| {
                ffi::lua_newuserdatauv(state, 0, 0);
                ffi::lua_rotate(state, -2, 1);
                ffi::lua_setmetatable(state, -2);
            })
        }?;
        let _lent = Lent {
            current: &self.current,
            before: (self.current.req.get(), self.current.obj.get()),
        };
        // The request is borrowed mutably for this whole function and the
        // caller does not touch it until `body` returns; `obj` is held
        // here, so no other object can take its address meanwhile.
        self.current.req.set(req as *mut RequestView);
        self.current.obj.set(obj.to_pointer());
        body(&obj)
    }
}

/// Method `name` of `req` as a function of (req, args...): the object
/// checked as mlua checks a method's `self`, arguments converted and
/// errors named as mlua names them (`RequestView.name`, which
/// `errors.rs` turns into the docs' `req:name`).
fn method<A, R>(
    lua: &Lua,
    current: &Rc<Current>,
    name: &'static str,
    f: impl Fn(&Lua, &mut RequestView, A) -> mlua::Result<R> + 'static,
) -> mlua::Result<Function>
where
    A: FromLuaMulti,
    R: IntoLuaMulti,
{
    let current = current.clone();
    let to = format!("RequestView.{name}");
    lua.create_function(move |lua, mut args: MultiValue| {
        let this = args.pop_front().unwrap_or(Value::Nil);
        let Some(req) = current.of(&this) else {
            return Err(bad_self(&to, &this));
        };
        let args = A::from_lua_args(args, 2, Some(&to), lua)?;
        // SAFETY: see `Lender::lend`; a method calls no script code, so
        // nothing else reads the request while this borrow lives.
        f(lua, unsafe { &mut *req }, args)
    })
}

/// A method called on something other than the `req` of the call now
/// running: a kept `req` is told so; anything else (`req.header(name)`)
/// gets mlua's "bad self", which errors.rs says as "called with a dot".
fn bad_self(to: &str, this: &Value) -> mlua::Error {
    // A light userdata is a lent `req` (see `lent_call::light_metatable`).
    let kept = matches!(this, Value::LightUserData(_))
        || matches!(this, Value::UserData(ud)
        if metatable_name(ud).as_deref() == Some("request"));
    if kept {
        return mlua::Error::UserDataDestructed;
    }
    // mlua's own error type holds its cause in an `Arc`; the VM is one
    // thread's.
    #[allow(clippy::arc_with_non_send_sync)]
    let cause = Arc::new(mlua::Error::UserDataTypeMismatch);
    mlua::Error::BadArgument {
        to: Some(to.to_string()),
        pos: 1,
        name: Some("self".into()),
        cause,
    }
}

/// The `__name` of a userdata's metatable, mlua's or not (mlua's
/// `type_name` knows only its own userdata, not a lent `req`).
pub fn metatable_name(ud: &AnyUserData) -> Option<String> {
    if let Ok(name) = ud.type_name() {
        return Some(name.to_string_lossy());
    }
    let lua = ud.weak_lua().upgrade();
    // SAFETY: reads one field of the metatable of the one argument and
    // leaves that field (or nil) as the one result.
    let name: Value = unsafe {
        lua.exec_raw(ud, |state| {
            if ffi::luaL_getmetafield(state, -1, c"__name".as_ptr()) == ffi::LUA_TNIL {
                ffi::lua_pushnil(state);
            }
            ffi::lua_remove(state, -2);
        })
    }
    .ok()?;
    match name {
        Value::String(s) => Some(s.to_string_lossy()),
        _ => None,
    }
}

/// `req[key]`. Upvalues: 1 the names table, 2 the slow path, 3 `Current`,
/// then the [`CACHED`] fields' last values.
/// Returns the field or method, or whatever the slow path returns (or
/// raises).
unsafe extern "C-unwind" fn index(state: *mut ffi::lua_State) -> c_int {
    let current = ffi::lua_touserdata(state, ffi::lua_upvalueindex(3)) as *const Current;
    let req = (*current).req.get();
    if !req.is_null() && ffi::lua_topointer(state, 1) == (*current).obj.get() {
        // Any other value (a number, a table) is another object.
        let key = ffi::lua_topointer(state, 2);
        if let Some(n) = (*current).keys.iter().position(|&k| k == key) {
            if push_field(state, &*current, &*req, FIELDS[n].1) {
                return 1;
            }
        }
        ffi::lua_pushvalue(state, 2);
        match ffi::lua_rawget(state, ffi::lua_upvalueindex(1)) {
            ffi::LUA_TNUMBER => {
                let n = ffi::lua_tointegerx(state, -1, std::ptr::null_mut());
                ffi::lua_pop(state, 1);
                if let Some(&(_, f)) = usize::try_from(n).ok().and_then(|n| FIELDS.get(n)) {
                    if push_field(state, &*current, &*req, f) {
                        return 1;
                    }
                }
            }
            ffi::LUA_TNIL => ffi::lua_pop(state, 1),
            // A method.
            _ => return 1,
        }
    }
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(2));
    ffi::lua_pushvalue(state, 1);
    ffi::lua_pushvalue(state, 2);
    ffi::lua_call(state, 2, 1);
    1
}

/// The longest host lowercased on the stack here; a longer one (rare)
/// takes the slow path.
const HOST_BUF: usize = 256;

/// Fields whose last value `index` keeps (in its upvalues 4 on, in this
/// order: path, host, method, uri, target; their bytes in
/// [`Current::kept`], then the bytes the host was made from): the same
/// host or path read request after request is pushed as the string
/// already made, not hashed and looked up in Lua's string table again.
const CACHED: i32 = 5;

/// The place in [`Current::kept`] of the bytes the kept host was made
/// from.
const HOST_RAW: usize = CACHED as usize;

/// The place of field `f` among the [`CACHED`] ones, if it is one.
fn cache_of(f: Field) -> Option<usize> {
    Some(match f {
        Field::Path => 0,
        Field::Host => 1,
        Field::Method => 2,
        Field::Uri => 3,
        Field::Target => 4,
        _ => return None,
    })
}

/// Pushes `bytes` as a string: the one kept in slot `n` (upvalue and
/// bytes) when it holds the same bytes, else a new one, which slot `n`
/// then keeps. Strings are values: the script cannot tell the two apart.
unsafe fn push_kept(state: *mut ffi::lua_State, current: &Current, n: usize, bytes: &[u8]) {
    let upvalue = ffi::lua_upvalueindex(4 + n as c_int);
    let kept = &current.kept[n];
    if kept.holds(bytes) {
        ffi::lua_pushvalue(state, upvalue);
        return;
    }
    kept.forget();
    ffi::lua_pushlstring(state, bytes.as_ptr() as *const c_char, bytes.len());
    ffi::lua_pushvalue(state, -1);
    ffi::lua_replace(state, upvalue);
    kept.keep(bytes);
}

/// Pushes field `f` of `r` if it is one of the common ones (false: the
/// slow path reads it). Nothing here owns memory: a Lua memory error
/// (longjmp) from `lua_pushlstring` leaves nothing behind. The values are
/// those of [`request::field`].
unsafe fn push_field(
    state: *mut ffi::lua_State,
    current: &Current,
    r: &RequestView,
    f: Field,
) -> bool {
    let kept = cache_of(f);
    let bytes = |s: &[u8]| match kept {
        Some(n) => push_kept(state, current, n, s),
        None => {
            ffi::lua_pushlstring(state, s.as_ptr() as *const c_char, s.len());
        }
    };
    if let Some(plain) = request::plain_text(r, f) {
        match plain {
            Some(s) => bytes(s.as_bytes()),
            None => ffi::lua_pushnil(state),
        }
        return true;
    }
    match f {
        Field::Host => return push_host(state, current, r),
        Field::Tls => ffi::lua_pushboolean(state, r.tls.is_some() as c_int),
        _ => return false,
    }
    true
}

/// Pushes `req.host` (see [`push_field`]): the kept one when it comes
/// from the same bytes (the host is a function of them alone), else made
/// and kept with those bytes.
unsafe fn push_host(state: *mut ffi::lua_State, current: &Current, r: &RequestView) -> bool {
    let host = cache_of(Field::Host).unwrap_or(1);
    let raw = host_raw(r);
    let from = &current.kept[HOST_RAW];
    if let Some(raw) = raw {
        if from.holds(raw) && current.kept[host].valid.get() {
            ffi::lua_pushvalue(state, ffi::lua_upvalueindex(4 + host as c_int));
            return true;
        }
    }
    from.forget();
    match r.host() {
        None => {
            ffi::lua_pushnil(state);
            return true;
        }
        Some(h) if !h.bytes().any(|b| b.is_ascii_uppercase()) => {
            push_kept(state, current, host, h.as_bytes())
        }
        Some(h) if h.len() <= HOST_BUF => {
            let mut buf = [0u8; HOST_BUF];
            let low = &mut buf[..h.len()];
            low.copy_from_slice(h.as_bytes());
            low.make_ascii_lowercase();
            push_kept(state, current, host, low);
        }
        Some(_) => return false,
    }
    if let Some(raw) = raw {
        from.keep(raw);
    }
    true
}

/// The bytes [`RequestView::host`] reads the host from.
fn host_raw(r: &RequestView) -> Option<&[u8]> {
    match r.head.headers.get(http::header::HOST) {
        Some(h) => Some(h.as_bytes()),
        None => r.head.uri.authority().map(|a| a.as_str().as_bytes()),
    }
}

#[cfg(test)]
#[path = "lent_tests.rs"]
mod tests;
