//! Building a Lua VM for a policy: the sandbox (no io, os or debug; see
//! `sandbox.rs`), the memory limit, the time budget enforced by an
//! instruction hook, and `require` limited to the embedded stdlib and the
//! script's own folder.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use mlua::{Lua, LuaOptions, StdLib, Value};

use super::budget_alloc::{self, BudgetAlloc};
use super::memory;
use super::{api, budget_hook, sandbox, stdlib};

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
pub(crate) const HOOK_EVERY: u32 = 4096;

/// The running call's deadline; shared by the instruction hook and the code
/// that starts a hook call.
pub(crate) struct Budget {
    deadline: Cell<Instant>,
    spent: Cell<bool>,
    /// A call is running under the deadline (large allocations check it).
    armed: Cell<bool>,
    /// The allocator refused a large allocation for the budget in this
    /// call (so a memory error is the budget's, not the memory limit's).
    refused: Cell<bool>,
    /// `path:line` where the allocator refused, for the budget or the
    /// memory limit (see `budget_alloc`).
    place: Cell<Option<String>>,
    /// The running call's budget (the length of a grace window).
    window: Cell<Duration>,
    /// Past the deadline on a busy machine: when, and this thread's CPU
    /// time then (see [`Budget::starved`]).
    grace: Cell<Option<Grace>>,
    /// The running call may have the busy-machine allowance (grace
    /// windows); a scripted check may not (see [`Vm::arm_check`]).
    allowance: Cell<bool>,
    /// The heap is past a quarter of the VM's limit (set by the
    /// allocator): the instruction hook then notes the running line in
    /// `seen`, for a memory error the allocator could not place (a table
    /// or buffer that grew past the limit).
    pub(crate) near_limit: Cell<bool>,
    /// The line the instruction hook last saw while `near_limit`.
    pub(crate) seen: Seen,
}

/// The innermost line from a file the instruction hook last saw: the
/// chunk's name (without `@`) and the line, kept raw. The hook runs every
/// few thousand instructions, so it only compares the name with the one
/// it has (copying it when the frame's file changed, into a reused
/// buffer) and sets the line; `path:line` is written only when a memory
/// error is reported.
#[derive(Default)]
pub(crate) struct Seen {
    path: std::cell::RefCell<Vec<u8>>,
    line: Cell<i32>,
}

impl Seen {
    /// Notes `path` (a chunk name without `@`) at `line`.
    pub(crate) fn note(&self, path: &[u8], line: i32) {
        if let Ok(mut kept) = self.path.try_borrow_mut() {
            if kept.as_slice() != path {
                kept.clear();
                kept.extend_from_slice(path);
            }
            self.line.set(line);
        }
    }

    fn clear(&self) {
        if let Ok(mut kept) = self.path.try_borrow_mut() {
            kept.clear();
        }
    }

    /// `path:line`, when a line was noted.
    fn place(&self) -> Option<String> {
        let kept = self.path.try_borrow().ok()?;
        (!kept.is_empty())
            .then(|| format!("{}:{}", String::from_utf8_lossy(&kept), self.line.get()))
    }
}

/// A call found past its wall-clock deadline before it had the CPU for it.
#[derive(Clone, Copy)]
struct Grace {
    first: Instant,
    at: Instant,
    cpu: Duration,
}

/// A call starved of CPU gets grace windows only up to this many budgets
/// past its deadline; the watchdog bounds the rest.
const GRACE_BUDGETS: u32 = 20;

/// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`, a system call:
/// read only once a call is past its wall-clock deadline).
fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The error every budget check raises (after `path:line: `).
pub(crate) const BUDGET_MESSAGE: &str = "script stopped: it ran past its time budget";

/// Inputs longer than this, in bytes, make a native call whose time grows
/// with its input (a regex match) check the budget before it starts.
pub const NATIVE_LARGE: usize = 64 * 1024;

/// For Rust functions that work natively in time proportional to
/// `input_len`: once the running call is past its deadline, refuse to start
/// on a large input, so a loop of such calls ends within about one call.
pub fn before_native(lua: &Lua, input_len: usize) -> mlua::Result<()> {
    if input_len <= NATIVE_LARGE {
        return Ok(());
    }
    check_budget(lua)
}

/// For Rust functions whose every call may be costly whatever their input
/// (compiling a regex, writing a log line, a full collection): past the
/// running call's deadline, refuse (one clock read).
pub fn check_budget(lua: &Lua) -> mlua::Result<()> {
    match lua.app_data_ref::<Rc<Budget>>() {
        Some(budget) => budget.check(),
        None => Ok(()),
    }
}

/// The VM's budget, for native objects that check it on every call and
/// keep it rather than look it up each time (a compiled regex).
pub(crate) fn budget_of(lua: &Lua) -> Option<Rc<Budget>> {
    lua.app_data_ref::<Rc<Budget>>().map(|b| b.clone())
}

/// A large allocation refused by the budget (see `budget_alloc`) surfaces
/// as a memory error or a stack overflow; it is reported as the budget's
/// error, at the line the allocator saw (or naming the script when it saw
/// none).
fn over_budget<R>(budget: &Budget, script: &str, result: mlua::Result<R>) -> mlua::Result<R> {
    // Any error once the allocator has refused for the budget: a refused
    // stack growth surfaces as "stack overflow (...)", a refused string
    // as a memory error, and the call is past its deadline either way.
    let refused = result.is_err();
    let place = budget.place.take();
    if refused && budget.refused.get() {
        let place = place.unwrap_or_else(|| script.to_string());
        return Err(mlua::Error::RuntimeError(format!(
            "{place}: {BUDGET_MESSAGE} (at a large allocation)"
        )));
    }
    // The memory limit, met by Lua's own allocation: the allocator noted
    // the line (see `budget_alloc`), or, for a block that grew, the
    // instruction hook saw the line running shortly before.
    // Only a memory error looks at `seen` (formatting it costs a string).
    if let Err(e @ mlua::Error::MemoryError(_)) = &result {
        if let Some(place) = place.or_else(|| budget.seen.place()) {
            return Err(mlua::Error::RuntimeError(format!(
                "{place}: {}",
                super::describe_lua_error(e)
            )));
        }
    }
    result
}

impl Budget {
    /// The budget error once the running call is past its deadline.
    pub(crate) fn check(&self) -> mlua::Result<()> {
        if self.over() {
            return Err(mlua::Error::RuntimeError(BUDGET_MESSAGE.into()));
        }
        Ok(())
    }

    /// True once the running call is past its deadline; from then on it
    /// stays true until the next call is armed. Reads the clock.
    pub(crate) fn over(&self) -> bool {
        if self.spent.get() {
            return true;
        }
        let now = Instant::now();
        if now <= self.deadline.get() || self.starved(now) {
            return false;
        }
        self.spent.set(true);
        true
    }

    /// Arms the budget for a call of `budget` from now.
    pub(crate) fn start(&self, budget: Duration) {
        self.start_at(Instant::now(), budget);
    }

    /// Arms the budget for a call of `budget` from `now` (a clock read
    /// just before).
    pub(crate) fn start_at(&self, now: Instant, budget: Duration) {
        self.allowance.set(true);
        self.deadline.set(now + budget);
        self.window.set(budget);
        self.grace.set(None);
        self.spent.set(false);
        self.refused.set(false);
        self.seen.clear();
        self.armed.set(true);
    }

    /// Past the wall-clock deadline: was the call merely waiting for the
    /// CPU? On a busy machine the kernel can preempt a worker in the middle
    /// of a hook of microseconds for longer than the budget; stopping it
    /// then would turn a machine's load into a script's error. So the call
    /// gets a grace window of half a budget, and another after that, as
    /// long as this thread ran for less than half of the last one. A
    /// runaway (which runs whenever it is scheduled) ends one half-budget
    /// late; any call ends within [`GRACE_BUDGETS`] budgets.
    #[cold]
    fn starved(&self, now: Instant) -> bool {
        if !self.allowance.get() {
            return false;
        }
        let Some(cpu) = thread_cpu() else {
            return false;
        };
        let window = self.window.get();
        let half = window / 2;
        let grace = match self.grace.get() {
            None => Grace {
                first: now,
                at: now,
                cpu,
            },
            Some(g) => {
                let ran = cpu.saturating_sub(g.cpu);
                let waited = now.saturating_duration_since(g.at);
                if ran * 2 >= waited
                    || now.saturating_duration_since(g.first) > window * GRACE_BUDGETS
                {
                    return false;
                }
                Grace { at: now, cpu, ..g }
            }
        };
        self.grace.set(Some(grace));
        self.deadline.set(now + half.max(Duration::from_millis(1)));
        true
    }

    /// For the allocator: a call is running and is past its deadline.
    pub(crate) fn refuses_large(&self) -> bool {
        let refuse = self.armed.get() && self.over();
        if refuse {
            self.refused.set(true);
        }
        refuse
    }

    /// The allocator has already noted where it refused in this call.
    pub(crate) fn has_place(&self) -> bool {
        let place = self.place.take();
        let has = place.is_some();
        self.place.set(place);
        has
    }

    /// Notes `path:line` of a refused allocation.
    pub(crate) fn set_place(&self, place: Option<String>) {
        self.place.set(place);
    }

    /// True once the running call has been found past its deadline (no
    /// clock read: for the paths that catch errors).
    pub(crate) fn spent(&self) -> bool {
        self.spent.get()
    }
}

#[cfg(test)]
impl Budget {
    pub(crate) fn new(deadline: Instant) -> Budget {
        Budget {
            deadline: Cell::new(deadline),
            spent: Cell::new(false),
            armed: Cell::new(false),
            refused: Cell::new(false),
            place: Cell::new(None),
            window: Cell::new(deadline.saturating_duration_since(Instant::now())),
            grace: Cell::new(None),
            allowance: Cell::new(true),
            near_limit: Cell::new(false),
            seen: Seen::default(),
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
    /// The policy's path as chunks name it, for errors that lost their line.
    script: String,
    /// Taken out (and mlua's allocator put back) when the VM is dropped.
    alloc: Option<BudgetAlloc>,
}

/// See [`Vm::armed`].
pub struct Armed<'a>(&'a Budget);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.armed.set(false);
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(alloc) = self.alloc.take() {
            alloc.uninstall(&self.lua);
        }
    }
}

/// Every this many hook calls (but `on_request`'s lent ones, see
/// [`Vm::with_lent_budget`]), a full garbage collection. Each call leaves
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
            armed: Cell::new(false),
            refused: Cell::new(false),
            place: Cell::new(None),
            window: Cell::new(limits.load_budget),
            grace: Cell::new(None),
            allowance: Cell::new(true),
            near_limit: Cell::new(false),
            seen: Seen::default(),
        });

        budget_hook::install(&lua, &budget, HOOK_EVERY)?;

        api::register(&lua)?;
        super::subrequest::register(&lua)?;
        crate::explain::routes::install(&lua)?;
        sandbox::install(&lua, &budget)?;
        super::patterns::install(&lua, budget.clone())?;
        stdlib::install_require(&lua, script_path)?;
        lua.set_memory_limit(limits.memory)?;
        let memory = memory::install(&lua, limits.memory);
        let alloc = budget_alloc::install(&lua, &budget, &memory)?;
        Ok(Vm {
            lua,
            budget,
            limits,
            calls: Cell::new(0),
            script: script_path.display().to_string(),
            alloc: Some(alloc),
        })
    }

    /// Runs the policy's main chunk under the load budget and returns what it
    /// returned (a policy table, if the script is right).
    pub fn run_main_chunk(&self, script_path: &Path, source: &str) -> mlua::Result<Value> {
        let chunk = self
            .lua
            .load(source)
            .set_name(format!("@{}", script_path.display()))
            .set_mode(ChunkMode::Text);
        let out = self.with_budget(self.limits.load_budget, || chunk.eval());
        api::pool_refs::stop(&self.lua);
        out
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

    /// Arms the budget for one stretch of a scripted check (a poll of its
    /// async call; re-armed at each, since another check may have armed
    /// the shared budget while this one waited on the network) with what
    /// is `left` of its Lua time. No busy-machine allowance: every check
    /// runs on the control thread, and a runaway check granted up to 20
    /// budgets would hold that thread, and so every other check, for that
    /// long (a check's budget is its `timeout`, far above a preemption).
    pub fn arm_check(&self, left: Duration) {
        self.budget.start(left);
        self.budget.allowance.set(false);
    }

    /// The result of an async call started with `arm_check`, with a large
    /// allocation refused by the budget reported as the budget's error.
    pub fn settle<R>(&self, result: mlua::Result<R>) -> mlua::Result<R> {
        over_budget(&self.budget, &self.script, result)
    }

    /// Ends what `arm` started when the returned guard is dropped (the
    /// async call has returned or was given up).
    pub fn armed(&self) -> Armed<'_> {
        Armed(&self.budget)
    }

    /// Runs `body` with the budget armed for `budget` from now.
    #[inline]
    pub fn with_budget<R>(
        &self,
        budget: Duration,
        body: impl FnOnce() -> mlua::Result<R>,
    ) -> mlua::Result<R> {
        self.budget.start(budget);
        // Disarmed however the body ends (mlua re-raises a callback's
        // panic): a later unbudgeted allocation must not be refused.
        let armed = Armed(&self.budget);
        let result = over_budget(&self.budget, &self.script, body());
        drop(armed);
        self.tally();
        result
    }

    /// `on_request` through its lent `req` (see `api::lent_call`), the
    /// hook budget armed from `now` (the caller's clock read). The call is
    /// not counted towards [`COLLECT_EVERY`]: it leaves no object with a
    /// finalizer behind (the lent `req` has none), so Lua's incremental
    /// collector keeps up with what it leaves.
    #[inline]
    pub fn with_lent_budget<R>(
        &self,
        now: Instant,
        body: impl FnOnce() -> mlua::Result<R>,
    ) -> mlua::Result<R> {
        self.budget.start_at(now, self.limits.hook_budget);
        let armed = Armed(&self.budget);
        let result = over_budget(&self.budget, &self.script, body());
        drop(armed);
        self.after_runaway();
        result
    }

    /// The heap is past a quarter of its limit: the count hook notes the
    /// running line for a memory error, so an `on_request` call keeps it
    /// on from its start (see `api::lent_call`).
    #[inline]
    pub(crate) fn notes_lines(&self) -> bool {
        self.budget.near_limit.get()
    }

    /// Re-arms the budget for a resume of a coroutine hook that may still
    /// run for `left` (its budget minus what it ran before): each resume
    /// arms anew, since another request's hook may have armed the shared
    /// budget while this one waited.
    pub(crate) fn resume_budget(&self, left: Duration) {
        self.budget.start(left);
    }

    /// Disarms the budget between resumes (a waiting hook runs no Lua).
    pub(crate) fn pause_budget(&self) {
        self.budget.armed.set(false);
    }

    /// After a hook call: counts it towards the next full collection, and
    /// collects now after a runaway.
    pub(crate) fn tally(&self) {
        let calls = self.calls.get() + 1;
        if calls >= COLLECT_EVERY {
            self.calls.set(0);
            let _ = self.lua.gc_collect();
        } else {
            self.calls.set(calls);
        }
        self.after_runaway();
    }

    /// After a runaway (the budget was spent): a full collection now.
    #[inline]
    fn after_runaway(&self) {
        if self.budget.spent.get() {
            // A script that ran away left garbage behind; reclaim it now
            // rather than on a later request.
            self.budget.spent.set(false);
            let _ = self.lua.gc_collect();
        }
    }
}

#[cfg(test)]
mod seen_tests {
    use super::Seen;

    #[test]
    fn the_hook_notes_raw_and_the_place_is_written_on_demand() {
        let seen = Seen::default();
        assert_eq!(seen.place(), None);
        seen.note(b"policy.lua", 3);
        seen.note(b"policy.lua", 7);
        assert_eq!(seen.place().as_deref(), Some("policy.lua:7"));
        seen.note(b"lib/x.lua", 2);
        assert_eq!(seen.place().as_deref(), Some("lib/x.lua:2"));
        seen.clear();
        assert_eq!(seen.place(), None);
    }
}
