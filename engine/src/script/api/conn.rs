//! The connection object `on_connect` gets, before a byte is read.
//!
//! `conn.sni` and `conn.alpn` come from the client's TLS ClientHello on a
//! `tcp` listener (engine/src/tcp/client_hello.rs): the first read of
//! either waits for it, so a policy whose `on_connect` never reads them
//! never waits for client bytes (a server that speaks first, as SMTP's
//! does, answers at once). On an `http` listener they are nil: its
//! `on_connect` runs before its TLS handshake.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use mlua::{AnyUserData, MetaMethod, UserData, UserDataFields, UserDataMethods, Value};

use crate::tcp::client_hello::ClientHello;

#[derive(Clone)]
pub struct ConnView {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub listener: Arc<str>,
    /// The listener is a TLS one. on_connect runs before the handshake:
    /// `conn.sni` and `conn.alpn` are nil there.
    pub tls: bool,
    /// On a `tcp` listener whose policy reads `conn.sni` or `conn.alpn`:
    /// the ClientHello, once asked for and read. None elsewhere (both
    /// fields nil).
    pub hello: Option<Rc<HelloSlot>>,
}

impl ConnView {
    /// A connection as `on_connect` sees it, before a byte is read.
    pub fn new(peer: SocketAddr, local: SocketAddr, listener: Arc<str>, tls: bool) -> ConnView {
        ConnView {
            peer,
            local,
            listener,
            tls,
            hello: None,
        }
    }

    /// The server name the client's ClientHello asked for, once
    /// `on_connect` has read it (for the access log).
    pub fn sni(&self) -> Option<String> {
        match &*self.hello.as_ref()?.0.borrow() {
            HelloState::Known(Some(h)) => h.sni.clone(),
            _ => None,
        }
    }
}

/// Where the ClientHello of one connection is, between the script that
/// reads `conn.sni` and the Rust side that peeks the socket
/// (`WorkerScript::on_connect_tcp`).
#[derive(Default)]
pub struct HelloSlot(RefCell<HelloState>, std::cell::Cell<bool>);

#[derive(Default)]
enum HelloState {
    /// Nobody asked.
    #[default]
    Unread,
    /// The script asked and waits: the socket must be peeked.
    Wanted,
    /// Read: the ClientHello, or None when the client is not speaking TLS.
    Known(Option<Rc<ClientHello>>),
}

impl HelloSlot {
    /// The peek has answered (a ClientHello, or not TLS).
    pub fn known(&self) -> bool {
        matches!(*self.0.borrow(), HelloState::Known(_))
    }

    /// The script is waiting for the ClientHello.
    pub fn wanted(&self) -> bool {
        matches!(*self.0.borrow(), HelloState::Wanted)
    }

    /// What the peek found (None: not TLS); wakes the waiting read.
    pub fn set(&self, hello: Option<ClientHello>) {
        *self.0.borrow_mut() = HelloState::Known(hello.map(Rc::new));
    }

    /// The script read `conn.sni` or `conn.alpn` (`pocket explain` says
    /// whether a live connection would wait for the ClientHello).
    pub fn was_read(&self) -> bool {
        self.1.get()
    }

    /// The ClientHello when known, asking for it otherwise.
    fn poll(&self) -> std::task::Poll<Option<Rc<ClientHello>>> {
        self.1.set(true);
        let mut state = self.0.borrow_mut();
        match &*state {
            HelloState::Known(h) => std::task::Poll::Ready(h.clone()),
            _ => {
                *state = HelloState::Wanted;
                std::task::Poll::Pending
            }
        }
    }
}

/// Whether the running Lua code may wait for the ClientHello: it is the
/// hook's own coroutine (`subrequest::CanWait`, noted at its first
/// resume) at a point where Lua can yield (not inside a C function's
/// callback such as `string.gsub`'s or `table.sort`'s; `pcall` is fine).
fn can_wait_here(lua: &mlua::Lua) -> bool {
    let on_hook = lua
        .app_data_ref::<crate::script::subrequest::CanWait>()
        .is_some_and(|c| c.here(lua));
    // The running thread as mlua's callback sees it (not `exec_raw`,
    // whose protected call is itself a point that cannot yield).
    // SAFETY: `lua_isyieldable` only reads the running thread's state.
    on_hook && lua.exec_raw_lua(|raw| unsafe { mlua::ffi::lua_isyieldable(raw.state()) != 0 })
}

/// The error for a first read of `conn.sni`/`conn.alpn` where it cannot
/// wait for the ClientHello; the script's line is added by
/// `describe_lua_error` from the traceback.
fn not_here(field: FromHello) -> mlua::Error {
    let name = match field {
        FromHello::Sni => "conn.sni",
        FromHello::Alpn => "conn.alpn",
    };
    mlua::Error::RuntimeError(format!(
        "{name} must be read in the hook itself (on_connect, or a pool's hash_key or balance), \
not inside a coroutine or a callback (string.gsub, table.sort), the first time: it may wait for \
the client's TLS ClientHello; read it into a local at the top"
    ))
}

/// A field of `conn` read from the ClientHello.
#[derive(Clone, Copy)]
enum FromHello {
    Sni,
    Alpn,
}

impl UserData for ConnView {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        super::names::read_only(methods, "conn", &[]);
        methods.add_meta_method(MetaMethod::ToString, |_, c, ()| {
            Ok(format!("connection from {}", c.peer))
        });
        // `sni` and `alpn` are read here rather than as fields: an async
        // `__index` may wait (it yields the coroutine `on_connect` runs
        // in); when the answer is known it returns at once, without
        // yielding, as in a plain call. Other names are errors in the
        // docs' words, as `names::described` gives them.
        methods.add_async_meta_function(
            MetaMethod::Index,
            |lua, (ud, key): (AnyUserData, Value)| {
                let field = match &key {
                    Value::String(s) if s.as_bytes() == b"sni" => Ok(FromHello::Sni),
                    Value::String(s) if s.as_bytes() == b"alpn" => Ok(FromHello::Alpn),
                    _ => Err(super::names::no_field("connection", &key)),
                };
                let slot = ud.borrow_scoped::<ConnView, _>(|c| c.hello.clone());
                // Waiting yields the hook's own coroutine; from anywhere
                // else (a coroutine of the script's, a gsub or sort
                // callback, a plain call) mlua would hand its pending
                // marker to the script or fail in its own words.
                let stuck = match (&field, &slot) {
                    (Ok(f), Ok(Some(s))) if !s.known() && !can_wait_here(&lua) => {
                        Some(not_here(*f))
                    }
                    _ => None,
                };
                async move {
                    let field = field?;
                    if let Some(e) = stuck {
                        return Err(e);
                    }
                    let Some(slot) = slot? else {
                        return Ok(Value::Nil);
                    };
                    let hello = std::future::poll_fn(|_| slot.poll()).await;
                    let Some(hello) = hello else {
                        return Ok(Value::Nil);
                    };
                    match field {
                        FromHello::Sni => match &hello.sni {
                            Some(name) => Ok(Value::String(lua.create_string(name)?)),
                            None => Ok(Value::Nil),
                        },
                        FromHello::Alpn => match &hello.alpn {
                            Some(list) => Ok(Value::Table(
                                lua.create_sequence_from(
                                    list.iter()
                                        .map(|p| lua.create_string(p))
                                        .collect::<mlua::Result<Vec<_>>>()?,
                                )?,
                            )),
                            None => Ok(Value::Nil),
                        },
                    }
                }
            },
        );
    }

    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        super::names::named(fields, "connection");
        fields.add_field_method_get("peer_ip", |_, c| Ok(c.peer.ip().to_string()));
        fields.add_field_method_get("peer_port", |_, c| Ok(c.peer.port()));
        fields.add_field_method_get("local_ip", |_, c| Ok(c.local.ip().to_string()));
        fields.add_field_method_get("local_port", |_, c| Ok(c.local.port()));
        fields.add_field_method_get("listener", |_, c| Ok(c.listener.to_string()));
        fields.add_field_method_get("tls", |_, c| Ok(c.tls));
        // Known only after the handshake, which on_connect precedes.
        fields.add_field_method_get("tls_version", |_, _| Ok(mlua::Value::Nil));
    }
}
