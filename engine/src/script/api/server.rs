//! `pocket.server(pool, addr)`: a server's live state, and drain or
//! maintenance set from a script. The state lives with the server, outside
//! the policy, so it survives reloads.
//!
//! ```lua
//! local s = pocket.server("app", "127.0.0.1:9001")
//! s:set_state("drain")     -- "ready" | "drain" | "maint"
//! s:state()                -- { up = true, admin = "drain", active = 0, requests = 12, failures = 0 }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mlua::{Lua, Table, UserData, UserDataMethods};

use crate::lb::{AdminState, ServerState, StateRegistry};

/// The longest pool name a handle keeps, bytes (a policy's pool names are
/// short; the handle lives in Rust, outside the VM's memory limit).
const MAX_NAME: usize = 256;

pub struct ServerHandle {
    pool: String,
    addr: SocketAddr,
}

impl ServerHandle {
    /// Looked up on each use: the server may join a pool after the handle
    /// was made (at load, before the pools exist).
    fn state(&self) -> mlua::Result<Arc<ServerState>> {
        StateRegistry::lookup_global(&self.pool, self.addr).ok_or_else(|| {
            mlua::Error::RuntimeError(format!("no server {} in pool \"{}\"", self.addr, self.pool))
        })
    }
}

impl UserData for ServerHandle {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        super::names::named(fields, "server");
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        super::names::described(methods, "server", |h| format!("server {}", h.addr));
        methods.add_method("set_state", |_, h, name: String| {
            let state = AdminState::parse(&name).ok_or_else(|| {
                mlua::Error::RuntimeError(format!(
                    "state must be \"ready\", \"drain\" or \"maint\", not {name:?}"
                ))
            })?;
            Ok(h.state()?.set_admin(state))
        });
        methods.add_method("state", |lua, h, ()| {
            let s = h.state()?;
            let t = lua.create_table()?;
            t.set("up", s.is_up())?;
            t.set("admin", s.admin().name())?;
            t.set("active", s.active.load(Ordering::Relaxed))?;
            t.set("requests", s.requests.load(Ordering::Relaxed))?;
            t.set("failures", s.failures.load(Ordering::Relaxed))?;
            Ok(t)
        });
    }
}

pub fn register(lua: &Lua, pocket: &Table) -> mlua::Result<()> {
    pocket.set(
        "server",
        lua.create_function(|_, (pool, addr): (String, String)| {
            if pool.len() > MAX_NAME {
                return Err(mlua::Error::RuntimeError(format!(
                    "pocket.server: a pool name of {} bytes (pool names are at most {MAX_NAME})",
                    pool.len()
                )));
            }
            let addr = crate::config::parse_addr(&addr).map_err(mlua::Error::RuntimeError)?;
            Ok(ServerHandle { pool, addr })
        })?,
    )?;
    Ok(())
}
