//! Building a Lua VM for a policy: the sandbox (no io, os or debug), the
//! memory limit, the time budget enforced by an instruction hook, and
//! `require` limited to the embedded stdlib and the script's own folder.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Value, VmState};

use super::{api, stdlib};

/// How much a script may take. A hook that runs past `hook_budget` or a VM
/// that grows past `memory` gets an error instead of the worker.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub memory: usize,
    pub hook_budget: Duration,
    pub load_budget: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 32 * 1024 * 1024,
            hook_budget: Duration::from_millis(25),
            load_budget: Duration::from_secs(2),
        }
    }
}

/// How often (in VM instructions) the budget hook looks at the clock. At
/// ~1 ns an instruction this is a few microseconds: far below the budget,
/// and cheap enough not to show in a profile.
const HOOK_EVERY: u32 = 4096;

/// The running call's deadline; shared by the instruction hook and the code
/// that starts a hook call.
pub(crate) struct Budget {
    deadline: Cell<Instant>,
    spent: Cell<bool>,
}

impl Budget {
    /// True once the running call is past its deadline; marks the budget
    /// spent so that `pcall` re-raises. For natives that count their own
    /// steps (patterns.rs).
    pub(crate) fn exceeded(&self) -> bool {
        if self.spent.get() || Instant::now() > self.deadline.get() {
            self.spent.set(true);
        }
        self.spent.get()
    }

    #[cfg(test)]
    pub(crate) fn new(deadline: Instant) -> Budget {
        Budget {
            deadline: Cell::new(deadline),
            spent: Cell::new(false),
        }
    }
}

/// A Lua VM built for one policy, with its budget.
pub struct Vm {
    pub lua: Lua,
    budget: Rc<Budget>,
    pub limits: Limits,
    /// Hook calls since the last full collection.
    calls: Cell<u32>,
}

/// Every this many hook calls, a full garbage collection. Each call leaves
/// a request object with a finalizer behind; Lua's incremental collector
/// runs only a few finalizers per step and falls behind at tens of
/// thousands of requests a second (the heap grew to the memory limit in a
/// benchmark). A full collection of a small heap takes microseconds, so
/// this costs a few nanoseconds a request and keeps the heap flat.
const COLLECT_EVERY: u32 = 1024;

impl Vm {
    /// Builds the sandboxed VM. `script_path` names chunks and decides where
    /// `require` looks for the script's own modules.
    pub fn new(script_path: &Path, limits: Limits) -> mlua::Result<Vm> {
        let libs = StdLib::STRING
            | StdLib::TABLE
            | StdLib::MATH
            | StdLib::UTF8
            | StdLib::COROUTINE
            | StdLib::PACKAGE;
        let lua = Lua::new_with(libs, LuaOptions::default())?;
        let budget = Rc::new(Budget {
            deadline: Cell::new(Instant::now() + limits.load_budget),
            spent: Cell::new(false),
        });

        let hook_budget = budget.clone();
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_lua, debug| {
                if hook_budget.spent.get() || Instant::now() > hook_budget.deadline.get() {
                    hook_budget.spent.set(true);
                    let source = debug.source();
                    let place = match source.short_src.as_deref() {
                        Some(src) => format!("{}:{}: ", src, debug.current_line().unwrap_or(0)),
                        None => String::new(),
                    };
                    return Err(mlua::Error::RuntimeError(format!(
                        "{place}script stopped: it ran past its time budget"
                    )));
                }
                Ok(VmState::Continue)
            },
        )?;

        api::register(&lua)?;
        sandbox(&lua, &budget)?;
        super::patterns::install(&lua, budget.clone())?;
        stdlib::install_require(&lua, script_path)?;
        lua.set_memory_limit(limits.memory)?;
        Ok(Vm {
            lua,
            budget,
            limits,
            calls: Cell::new(0),
        })
    }

    /// Runs the policy's main chunk under the load budget and returns what it
    /// returned (a policy table, if the script is right).
    pub fn run_main_chunk(&self, script_path: &Path, source: &str) -> mlua::Result<Value> {
        let chunk = self
            .lua
            .load(source)
            .set_name(format!("@{}", script_path.display()));
        self.with_budget(self.limits.load_budget, || chunk.eval())
    }

    /// Calls `f` with the per-hook budget armed. Every hook call on the
    /// request path goes through here.
    #[inline]
    pub fn call<A: mlua::IntoLuaMulti, R: mlua::FromLuaMulti>(
        &self,
        f: &mlua::Function,
        args: A,
    ) -> mlua::Result<R> {
        self.with_budget(self.limits.hook_budget, || f.call(args))
    }

    /// Arms the budget for an async call (a scripted check): it must not
    /// run for longer than `budget` of Lua time at a stretch.
    pub fn arm(&self, budget: Duration) {
        self.budget.deadline.set(Instant::now() + budget);
        self.budget.spent.set(false);
    }

    /// Runs `body` with the budget armed for `budget` from now.
    #[inline]
    pub fn with_budget<R>(
        &self,
        budget: Duration,
        body: impl FnOnce() -> mlua::Result<R>,
    ) -> mlua::Result<R> {
        self.budget.deadline.set(Instant::now() + budget);
        self.budget.spent.set(false);
        let result = body();
        let calls = self.calls.get() + 1;
        if calls >= COLLECT_EVERY {
            self.calls.set(0);
            let _ = self.lua.gc_collect();
        } else {
            self.calls.set(calls);
        }
        if self.budget.spent.get() {
            // A script that ran away left garbage behind; reclaim it now
            // rather than on a later request.
            self.budget.spent.set(false);
            let _ = self.lua.gc_collect();
        }
        result
    }
}

/// Removes what a policy must not touch (files, bytecode) and keeps `pcall`
/// from swallowing the budget's error: once a call is out of time, every
/// `pcall` inside it re-raises.
fn sandbox(lua: &Lua, budget: &Rc<Budget>) -> mlua::Result<()> {
    let globals = lua.globals();
    globals.set("dofile", Value::Nil)?;
    globals.set("loadfile", Value::Nil)?;
    let spent_budget = budget.clone();
    let spent = lua.create_function(move |_, ()| Ok(spent_budget.spent.get()))?;
    lua.load(
        r##"
        local spent, rawpcall, rawxpcall, rawload, error = ...
        local function pass(ok, ...)
          if not ok and spent() then error((...), 0) end
          return ok, ...
        end
        pcall = function(f, ...) return pass(rawpcall(f, ...)) end
        xpcall = function(f, h, ...) return pass(rawxpcall(f, h, ...)) end
        -- text chunks only: binary chunks can crash the VM
        load = function(chunk, name, mode, ...)
          if select("#", ...) > 0 then return rawload(chunk, name, "t", ...) end
          return rawload(chunk, name, "t")
        end
        print = function(...)
          local parts = table.pack(...)
          for i = 1, parts.n do parts[i] = tostring(parts[i]) end
          pocket.log.info(table.concat(parts, "\t"))
        end
        "##,
    )
    .set_name("=pocket-sandbox")
    .call::<()>((
        spent,
        globals.get::<Value>("pcall")?,
        globals.get::<Value>("xpcall")?,
        globals.get::<Value>("load")?,
        globals.get::<Value>("error")?,
    ))
}
