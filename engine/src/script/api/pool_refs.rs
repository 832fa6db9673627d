//! `pocket.uses_pool(name [, level])`: code that will route to a pool by
//! name (a `pocket.match` rule, a `pocket.canary` split, a policy's own
//! route table) says so while the policy loads, and the load refuses a
//! name the policy's `pools` do not define, at the line that wrote it.
//! Without it a mistyped pool in a route table passed `pocket check` and
//! failed only on the requests that reached the rule.
//!
//! A name is never dropped: when the frame `level` up is not a Lua
//! function (a `pcall` between) the nearest Lua frame above it places
//! it; when a tail call hid the caller (`return match.routes {...}` in a
//! module or a function) the file that wrote the call is searched for the
//! name (the module `require` is loading, else the nearest Lua frame's
//! file); with no Lua frame at all the policy's file is.

use std::cell::{Cell, RefCell};

use mlua::{Lua, Table, Value};

/// One pool name a table compiled at load uses, and where it is written.
#[derive(Debug, Clone)]
pub struct PoolRef {
    pub name: String,
    /// The file of the calling chunk, as Lua names it.
    pub path: String,
    /// The line of the call `level` frames up; None when no frame gives
    /// it (a tail call hid it): the first line of `path` that writes the
    /// name places it.
    pub line: Option<usize>,
}

/// The references recorded by one VM while its main chunk runs; calls
/// from hooks afterwards record nothing (no growth per request).
#[derive(Default)]
pub struct PoolRefs {
    recording: Cell<bool>,
    refs: RefCell<Vec<PoolRef>>,
    /// The module file each running `require` is loading, by the
    /// position of its frame counted from the bottom of the stack.
    loading: RefCell<Vec<Option<String>>>,
}

/// The deepest stack `uses_pool` walks (frames).
const MAX_DEPTH: usize = 200;

/// Installs `pocket.uses_pool`.
pub fn register(lua: &Lua, pocket: &Table) -> mlua::Result<()> {
    lua.set_app_data(PoolRefs {
        recording: Cell::new(true),
        ..Default::default()
    });
    pocket.set(
        "uses_pool",
        lua.create_function(|lua, (name, level): (Value, Value)| {
            let bad = |n: u8, what: &str, got: &Value| {
                mlua::Error::RuntimeError(format!(
                    "bad argument #{n} to 'pocket.uses_pool': {what}, got {}",
                    crate::script::hooks::returned(got)
                ))
            };
            let Value::String(name) = &name else {
                return Err(bad(1, "a pool name is a string", &name));
            };
            let level = match level {
                Value::Nil => 1,
                Value::Integer(n) if (1..=MAX_DEPTH as i64).contains(&n) => n as usize,
                Value::Number(n) if n.fract() == 0.0 && (1.0..=MAX_DEPTH as f64).contains(&n) => {
                    n as usize
                }
                ref other => {
                    return Err(bad(
                        2,
                        &format!("a level is a whole number from 1 to {MAX_DEPTH}"),
                        other,
                    ))
                }
            };
            let Some(refs) = lua.app_data_ref::<PoolRefs>() else {
                return Ok(());
            };
            if !refs.recording.get() {
                return Ok(());
            }
            let (path, line) = place(lua, &refs, level);
            refs.refs.borrow_mut().push(PoolRef {
                name: name.to_string_lossy(),
                path,
                line,
            });
            Ok(())
        })?,
    )
}

/// One frame as `place` needs it.
struct Frame {
    /// The chunk's file for a Lua function (`@` dropped); None for C.
    file: Option<String>,
    line: Option<usize>,
    tail: bool,
}

/// Where the call `level` frames up writes its pool name: (file, line).
fn place(lua: &Lua, refs: &PoolRefs, level: usize) -> (String, Option<usize>) {
    let mut frames = Vec::new();
    while frames.len() < MAX_DEPTH {
        let Some(f) = lua.inspect_stack(frames.len(), |d| {
            let source = d.source();
            let file = source
                .source
                .as_deref()
                .and_then(|s| s.strip_prefix('@'))
                .filter(|_| source.what != "C")
                .map(str::to_string);
            Frame {
                file,
                line: d.current_line(),
                tail: d.is_tail_call(),
            }
        }) else {
            break;
        };
        frames.push(f);
    }
    let depth = frames.len();
    // The policy's own file: the outermost Lua frame.
    let outermost = frames.iter().rev().find_map(|f| f.file.clone());
    let fallback = || (outermost.clone().unwrap_or_default(), None);
    // A tail call below `level` hid the real caller.
    if let Some(j) = frames.iter().take(level).position(|f| f.tail) {
        let caller = j + 1;
        if caller < depth && frames[caller].file.is_none() {
            let from_bottom = depth - 1 - caller;
            if let Some(Some(module)) = refs.loading.borrow().get(from_bottom) {
                return (module.clone(), None);
            }
        }
        return match frames.iter().skip(caller).find_map(|f| f.file.clone()) {
            Some(file) => (file, None),
            None => fallback(),
        };
    }
    match frames.iter().skip(level).find(|f| f.file.is_some()) {
        Some(Frame {
            file: Some(file),
            line,
            ..
        }) => (file.clone(), line.filter(|&l| l > 0)),
        _ => fallback(),
    }
}

/// Called by `require`'s folder searcher: the module file it found is
/// about to be loaded by the `require` frame just above the searcher.
pub fn module_found(lua: &Lua, file: &str) {
    let Some(refs) = lua.app_data_ref::<PoolRefs>() else {
        return;
    };
    if !refs.recording.get() {
        return;
    }
    let mut depth = 0;
    while depth < MAX_DEPTH && lua.inspect_stack(depth, |_| ()).is_some() {
        depth += 1;
    }
    // Level 0 is the searcher, level 1 the `require` calling it.
    let Some(from_bottom) = depth.checked_sub(2) else {
        return;
    };
    let mut loading = refs.loading.borrow_mut();
    if loading.len() <= from_bottom {
        loading.resize(from_bottom + 1, None);
    }
    loading[from_bottom] = Some(file.to_string());
}

/// Ends recording (the main chunk has run).
pub fn stop(lua: &Lua) {
    if let Some(refs) = lua.app_data_ref::<PoolRefs>() {
        refs.recording.set(false);
        refs.loading.borrow_mut().clear();
    }
}

/// The references recorded so far, taken out.
pub fn take(lua: &Lua) -> Vec<PoolRef> {
    lua.app_data_ref::<PoolRefs>()
        .map(|r| std::mem::take(&mut *r.refs.borrow_mut()))
        .unwrap_or_default()
}
