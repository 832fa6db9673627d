//! Nothing a script does can take a worker down (issue 12): binary chunks
//! are refused wherever code is loaded, no Lua code runs past its time
//! budget in any context (finalizers, message handlers, coroutines,
//! metamethods, comparators, load readers, native loops), and `require`
//! reaches nothing outside the policy's folder.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TAIL: &str = r#"
return {
  listeners = { { name = "web", bind = "127.0.0.1:0", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:9" } } },
}"#;

/// Lua bytecode, as `string.dump` makes it (`return 1 + 1` compiled).
fn bytecode() -> Vec<u8> {
    let lua = mlua::Lua::new();
    let dumped: mlua::LuaString = lua
        .load("return string.dump(function() return 1 + 1 end)")
        .eval()
        .unwrap();
    let bytes = dumped.as_bytes().to_vec();
    assert!(bytes.starts_with(b"\x1bLua"));
    bytes
}

/// Runs `pocket <cmd> <policy>` and kills it if it has not ended within
/// 60 s (then the test fails: something ran past its budget).
fn pocket_on(cmd: &str, policy: &Path) -> (i32, String) {
    let mut child = Command::new(pocket_bin())
        .args([cmd, policy.to_str().unwrap()])
        .env("POCKET_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pocket {cmd} {} still running after 60 s", policy.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `pocket check` on `head` followed by a valid policy table.
fn check(head: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", &format!("{head}\n{TAIL}"));
    pocket_on("check", &path)
}

#[test]
fn binary_chunks_are_refused_wherever_code_is_loaded() {
    let bc = bytecode();
    let dir = tempfile::tempdir().unwrap();
    // The issue's input: bytecode saved as a module next to the policy.
    std::fs::write(dir.path().join("evil_bc.lua"), &bc).unwrap();
    let path = write_policy(
        dir.path(),
        "policy.lua",
        &format!("local x = require \"evil_bc\"\n{TAIL}"),
    );
    for cmd in ["check", "test"] {
        let (code, out) = pocket_on(cmd, &path);
        assert_eq!(code, 1, "pocket {cmd}: {out}");
        assert!(out.contains("policy.lua:1:"), "pocket {cmd}: {out}");
        assert!(
            out.contains("evil_bc.lua: attempt to load a binary chunk"),
            "pocket {cmd}: {out}"
        );
    }

    // load, with a string and with a reader, whatever mode is asked for.
    for call in [
        "load(BC)",
        "load(BC, 'x', 'b')",
        "load(BC, 'x', 'bt', {})",
        "load(function() local s = BC; BC = nil; return s end, 'x', 'b')",
    ] {
        let escaped: String = bc.iter().map(|b| format!("\\{b}")).collect();
        let (code, out) = check(&format!(
            "local BC = \"{escaped}\"\nlocal f, err = {call}\nassert(f, err)"
        ));
        assert_eq!(code, 1, "{call}: {out}");
        assert!(out.contains("policy.lua:3:"), "{call}: {out}");
        assert!(out.contains("binary chunk"), "{call}: {out}");
    }

    // The policy itself as bytecode.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, &bc).unwrap();
    for cmd in ["check", "test"] {
        let (code, out) = pocket_on(cmd, &path);
        assert_eq!(code, 1, "pocket {cmd}: {out}");
        assert!(out.contains("policy.lua"), "pocket {cmd}: {out}");
    }

    // Nothing makes bytecode in the first place.
    let (code, out) = check("assert(string.dump == nil)");
    assert_eq!(code, 0, "{out}");
}

/// Each of these ran past its budget before (or hung the process for good);
/// each must now stop with `policy.lua:LINE: ... time budget` at load
/// (the ones in [`KEEPS_WHAT_IT_MAKES`] may meet the memory limit first).
const RUNAWAYS: &[(&str, &str)] = &[
    ("plain loop", "while true do end"),
    // Finalizers run with hooks off: refused outright.
    (
        "gc finalizer (issue input)",
        "setmetatable({}, { __gc = function() while true do end end }) collectgarbage()",
    ),
    (
        "gc finalizer set later",
        "local mt = { __gc = true }\nsetmetatable({}, mt)\nmt.__gc = function() while true do end end",
    ),
    (
        "__close after the budget error",
        "local x <close> = setmetatable({}, { __close = function() while true do end end })\nwhile true do end",
    ),
    (
        "xpcall message handler",
        "xpcall(error, function() while true do end end)",
    ),
    (
        "xpcall handler in a loop",
        "while true do xpcall(function() while true do end end, function() while true do end end) end",
    ),
    (
        "nested coroutines that swallow the error",
        "local function f(d)\n  if d == 0 then while true do end end\n  while true do coroutine.resume(coroutine.create(function() f(d - 1) end)) end\nend\nf(4)",
    ),
    (
        "coroutine.close running __close",
        "local co = coroutine.create(function()\n  local x <close> = setmetatable({}, { __close = function() while true do end end })\n  while true do end\nend)\ncoroutine.resume(co)\nwhile true do coroutine.close(co) end",
    ),
    (
        "coroutine.wrap with __close",
        "coroutine.wrap(function()\n  local x <close> = setmetatable({}, { __close = function() while true do end end })\n  while true do end\nend)()",
    ),
    (
        "coroutine.wrap in pcall in a loop",
        "while true do pcall(coroutine.wrap(function() while true do end end)) end",
    ),
    (
        "__index",
        "local t = setmetatable({}, { __index = function() while true do end end })\nlocal _ = t.x",
    ),
    (
        "__newindex",
        "local t = setmetatable({}, { __newindex = function() while true do end end })\nt.x = 1",
    ),
    (
        "__call",
        "local t = setmetatable({}, { __call = function() while true do end end })\nt()",
    ),
    (
        "__eq",
        "local mt = { __eq = function() while true do end end }\nlocal _ = setmetatable({}, mt) == setmetatable({}, mt)",
    ),
    (
        "__lt",
        "local mt = { __lt = function() while true do end end }\nlocal _ = setmetatable({}, mt) < setmetatable({}, mt)",
    ),
    (
        "__le",
        "local mt = { __le = function() while true do end end }\nlocal _ = setmetatable({}, mt) <= setmetatable({}, mt)",
    ),
    (
        "__concat",
        "local t = setmetatable({}, { __concat = function() while true do end end })\nlocal _ = t .. 'x'",
    ),
    (
        "__len",
        "local t = setmetatable({}, { __len = function() while true do end end })\nlocal _ = #t",
    ),
    (
        "__tostring through print, swallowed before",
        "local t = setmetatable({}, { __tostring = function() while true do end end })\nwhile true do print(t) end",
    ),
    (
        "__tostring through pocket.log.info, swallowed before",
        "local t = setmetatable({}, { __tostring = function() while true do end end })\nwhile true do pocket.log.info(t) end",
    ),
    (
        "__pairs",
        "local t = setmetatable({}, { __pairs = function() while true do end end })\nfor _ in pairs(t) do end",
    ),
    (
        "table.sort comparator",
        "table.sort({ 3, 1, 2 }, function() while true do end end)",
    ),
    (
        "table.sort of a huge table, no comparator",
        "table.sort(setmetatable({}, { __len = function() return 2^31 - 2 end, __index = rawlen, __newindex = rawlen }))",
    ),
    (
        "table.sort with a native comparator",
        "table.sort(setmetatable({}, { __len = function() return 2^31 - 2 end, __index = rawlen, __newindex = rawlen }), rawequal)",
    ),
    ("table.move over a huge range", "table.move({}, 1, 1e12, 1)"),
    (
        "table.insert into a huge table",
        "table.insert(setmetatable({}, { __len = function() return 1e15 end, __index = rawlen, __newindex = rawlen }), 1, 0)",
    ),
    (
        "table.remove from a huge table",
        "table.remove(setmetatable({}, { __len = function() return 1e15 end, __index = rawlen, __newindex = rawlen }), 1)",
    ),
    (
        "table.concat over a huge range",
        "table.concat(setmetatable({}, { __index = rawlen }), '', 1, 1e15)",
    ),
    (
        "table.unpack in a loop",
        "local t = setmetatable({}, { __index = rawlen })\nwhile true do table.unpack(t, 1, 900000) end",
    ),
    (
        "utf8.len in a loop",
        "local s = string.rep('\\u{e9}', 4e6)\nwhile true do utf8.len(s) end",
    ),
    (
        "string.rep in a loop",
        "while true do local _ = string.rep('x', 1e7) end",
    ),
    (
        "pocket.regex over a long text in a loop",
        "local re = pocket.regex('a+b')\nlocal s = string.rep('a', 4e6)\nwhile true do re:is_match(s) end",
    ),
    (
        "string.upper of a long string in a loop",
        "local s = string.rep('a', 8e6)\nwhile true do local _ = s:upper() end",
    ),
    (
        "concatenating a long string in a loop",
        "local s = string.rep('a', 8e6)\nwhile true do local _ = s .. 'x' end",
    ),
    (
        "load with a reader",
        "while true do load(function() while true do end end) end",
    ),
    (
        "string.gsub callback",
        "string.gsub('abc', '%w', function() while true do end end)",
    ),
];

/// Runaways that keep what they make (`table.concat` grows one buffer):
/// on a busy machine, where the budget stretches up to 20 times (see
/// docs/lua-api.md "Limits"), they can meet the 32 MiB memory limit before
/// the time budget, and either limit stopping them at their line is what
/// a user needs. One that makes nothing it keeps can only be stopped by
/// the time budget.
const KEEPS_WHAT_IT_MAKES: &[&str] = &["table.concat over a huge range"];

#[test]
fn no_lua_code_runs_past_the_load_budget() {
    for (what, head) in RUNAWAYS {
        let started = Instant::now();
        let (code, out) = check(head);
        let took = started.elapsed();
        eprintln!("{what}: stopped after {took:?}");
        assert_eq!(code, 1, "{what}: {out}");
        let line = head.lines().count();
        let located = (1..=line).any(|n| out.contains(&format!("policy.lua:{n}:")));
        assert!(located, "{what}: no policy.lua:LINE in {out}");
        let memory = KEEPS_WHAT_IT_MAKES.contains(what)
            && out.contains("script stopped: it used more memory than its limit");
        assert!(
            out.contains("script stopped: it ran past its time budget")
                || out.contains("__gc is not allowed")
                || memory,
            "{what}: {out}"
        );
    }
}

#[test]
fn require_finds_only_the_stdlib_and_the_policy_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("lib/util2")).unwrap();
    std::fs::write(dir.path().join("lib/routes.lua"), "return 'routes'").unwrap();
    std::fs::write(dir.path().join("lib/util2/init.lua"), "return 'init'").unwrap();
    // A link inside the folder that leads out of it.
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd.lua")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("mod.lua"), "return 'outside'").unwrap();
    let outside = outside.path().display().to_string();

    let head = format!(
        r#"
assert(require("lib.routes") == "routes")
assert(require("lib.util2") == "init")
assert(require("pocket.util").split)
assert(package.path == nil and package.cpath == nil)
assert(package.searchpath == nil and package.loadlib == nil)
assert(getmetatable("") == false, "string metatable locked")
assert(not pcall(setmetatable, "", {{}}))
assert(("x"):upper() == "X")
local function refused(name)
  local ok, err = pcall(require, name)
  assert(not ok, name)
  err = tostring(err)
  assert(not err:find("root:"), err)
  return err
end
refused("passwd")
refused("etc.passwd")
refused("etc.hostname")
refused("../../../../etc/passwd")
refused("/etc/passwd")
refused("..")
package.path = "/etc/?;{outside}/?.lua"
refused("passwd")
refused("mod")
"#
    );
    let path = write_policy(dir.path(), "policy.lua", &format!("{head}\n{TAIL}"));
    let (code, out) = pocket_on("check", &path);
    assert_eq!(code, 0, "{out}");

    // A refused link says only that it leads outside.
    let path = write_policy(
        dir.path(),
        "policy.lua",
        &format!("require 'passwd'\n{TAIL}"),
    );
    let (code, out) = pocket_on("check", &path);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("policy.lua:1:"), "{out}");
    assert!(out.contains("outside the policy's folder"), "{out}");
    assert!(!out.contains("root"), "{out}");
}

fn runaway_policy(api: &OriginHandle) -> String {
    format!(
        r#"
local spin = function() while true do end end
local big = string.rep("a", 8e6)
local routes = {{
  ["/upper"] = function()
    while true do local _ = big:upper() end
  end,
  ["/close"] = function()
    local x <close> = setmetatable({{}}, {{ __close = spin }})
    spin()
  end,
  ["/xpcall"] = function() xpcall(error, spin) end,
  ["/coroutines"] = function()
    local function f(d)
      if d == 0 then spin() end
      while true do coroutine.resume(coroutine.create(function() f(d - 1) end)) end
    end
    f(4)
  end,
  ["/wrap-close"] = function()
    coroutine.wrap(function()
      local x <close> = setmetatable({{}}, {{ __close = spin }})
      spin()
    end)()
  end,
  ["/move"] = function() table.move({{}}, 1, 1e12, 1) end,
  ["/sort"] = function()
    table.sort(setmetatable({{}}, {{ __len = function() return 2^31 - 2 end, __index = rawlen, __newindex = rawlen }}), rawequal)
  end,
  ["/load"] = function() while true do load(spin) end end,
  ["/tostring"] = function()
    local t = setmetatable({{}}, {{ __tostring = spin }})
    while true do print(t) end
  end,
  ["/gc"] = function()
    setmetatable({{}}, {{ __gc = spin }})
    collectgarbage()
  end,
}}
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
  on_request = function(req)
    local route = routes[req.path]
    if route then route() end
  end,
}}
"#,
        api.addr
    )
}

#[tokio::test]
async fn runaway_hooks_cost_one_request_and_the_process_still_stops() {
    let api = origin("api");
    let mut pocket = Pocket::start(&runaway_policy(&api), 2);
    let addr = pocket.addr("web");
    for path in [
        "/upper",
        "/close",
        "/xpcall",
        "/coroutines",
        "/wrap-close",
        "/move",
        "/sort",
        "/load",
        "/tostring",
        "/gc",
    ] {
        let started = Instant::now();
        let r = get(addr, path).await;
        eprintln!("{path}: {} after {:?}", r.status, started.elapsed());
        assert_eq!(r.status, 500, "{path}: {}", r.text());
        // Both workers still serve (a stuck one would leave some of these
        // unanswered).
        for _ in 0..6 {
            assert_eq!(get(addr, "/fine").await.status, 200, "after {path}");
        }
    }
    pocket
        .log
        .wait_for(&["policy.lua:2:", "ran past its time budget"]);
    pocket.log.wait_for(&["policy.lua:", "__gc is not allowed"]);
    // The loop of big:upper() stops at the guard of string.upper (or at
    // a large allocation), on its own line.
    pocket
        .log
        .wait_for(&["policy.lua:6:", "ran past its time budget"]);

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pocket.pid() as i32, libc::SIGTERM) };
    let started = Instant::now();
    loop {
        if let Some(status) = pocket.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "pocket did not stop after SIGTERM; log:\n{}",
            pocket.log.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A scripted check runs as a coroutine on the control thread, in a thread
/// mlua reuses: a runaway check (here with a pending `__close` that loops
/// too) must fail, again and again, and leave the other checks running.
#[tokio::test]
async fn a_runaway_scripted_check_leaves_the_control_thread_checking() {
    let a = origin("A");
    let policy = format!(
        r#"
local ticks = 0
local spin = function() while true do end end
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{ servers = {{ "{a}" }},
      check = {{ interval = "100ms", timeout = "5s", run = function()
        ticks = ticks + 1
        print("tick " .. ticks)
        return true
      end }} }},
    spin = {{ servers = {{ "{a}" }}, own_health = true,
      check = {{ interval = "100ms", timeout = "200ms", fall = 1, run = function()
        local x <close> = setmetatable({{}}, {{ __close = spin }})
        spin()
      end }} }},
  }},
}}"#,
        a = a.addr
    );
    let pocket = Pocket::start(&policy, 1);
    pocket
        .log
        .wait_for(&[&format!("server {} of pool spin is DOWN", a.addr)]);
    // More rounds of the good check, with runaways between them.
    let from = pocket.log.lines().len();
    pocket.log.wait_for_after(from, &["tick 12"]);
    assert_eq!(get(pocket.addr("web"), "/").await.status, 200);
}
