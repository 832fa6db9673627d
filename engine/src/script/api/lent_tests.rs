//! The lent `req` reads and refuses as mlua's userdata does (the same
//! values, the same messages), and a kept one is refused after its call.

use super::*;
use crate::context::RequestId;
use crate::script::api::lent_call::{PoolNames, Returned};
use mlua::FromLua;

fn view(uri: &str, host: &str) -> RequestView {
    let head = http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("host", host)
        .header("x-a", "1")
        .header("x-a", "2")
        .body(())
        .expect("a request")
        .into_parts()
        .0;
    RequestView {
        head,
        peer: "10.0.0.7:4711".parse().expect("an address"),
        listener: "web".into(),
        id: RequestId { worker: 1, seq: 42 },
        raw_target: None,
        growth: 0,
        tls: None,
    }
}

/// Every field and the methods' results, as one string, from `req`.
const READ_ALL: &str = r#"
  local req = ...
  local out = {}
  for _, k in ipairs({"method", "path", "query", "uri", "host", "target", "version",
      "scheme", "tls", "sni", "alpn", "tls_version", "peer_ip", "peer_port", "listener", "id"}) do
    out[#out + 1] = k .. "=" .. tostring(req[k])
  end
  out[#out + 1] = "x-a=" .. tostring(req:header("X-A"))
  out[#out + 1] = "all=" .. #req:header_all("x-a")
  local n = 0
  for _ in req:headers() do n = n + 1 end
  out[#out + 1] = "lines=" .. n
  out[#out + 1] = tostring(req)
  out[#out + 1] = type(req)
  return table.concat(out, " ")
"#;

fn mlua_reads(lua: &Lua, r: &mut RequestView, code: &str) -> mlua::Result<String> {
    let f = lua.load(code).set_name("@policy.lua").into_function()?;
    lua.scope(|scope| {
        let ud = scope.create_userdata_ref_mut(r)?;
        f.call(ud)
    })
}

fn lent_reads(lua: &Lua, lender: &Lender, r: &mut RequestView, code: &str) -> mlua::Result<String> {
    let f = lua.load(code).set_name("@policy.lua").into_function()?;
    let one = lender.lend(lua, r, |ud| f.call::<String>(ud));
    // And through the raw call on_request uses (`lent_call`).
    let pools = PoolNames::new(lua, std::iter::empty()).expect("names");
    let two = lender
        .call_hook(lua, &f, r, &pools, false)
        .and_then(|out| match out {
            Returned::Other(v) => String::from_lua(v, lua),
            Returned::Nil => String::from_lua(Value::Nil, lua),
            Returned::Pool(i) => Ok(format!("pool {i}")),
        });
    let shown =
        |r: &mlua::Result<String>| r.clone().map_err(|e| crate::script::describe_lua_error(&e));
    assert_eq!(shown(&one), shown(&two), "{code}");
    one
}

/// A returned pool name is told by its address (a short string is kept
/// once by Lua, however the script made it); a long one, or one that
/// names no pool, is handed back as it is, as is anything else.
#[test]
fn a_returned_pool_name_is_found_by_its_address() {
    let lua = Lua::new();
    let lender = Lender::new(&lua).expect("lender");
    let long = "a-pool-whose-name-is-longer-than-forty-bytes-so-not-kept-once";
    let pools =
        PoolNames::new(&lua, [(0, "app"), (3, "static"), (5, long)].into_iter()).expect("names");
    let run = |code: &str| {
        let f = lua
            .load(code)
            .set_name("@policy.lua")
            .into_function()
            .expect("f");
        lender.call_hook(&lua, &f, &mut view("/", "h"), &pools, false)
    };
    let pool = |code: &str| match run(code).expect(code) {
        Returned::Pool(i) => Some(i),
        _ => None,
    };
    assert_eq!(pool("return 'static'"), Some(3));
    assert_eq!(pool("local req = ... ; return ('st' .. 'atic')"), Some(3));
    assert_eq!(pool("return 'app', 'static'"), Some(0));
    assert_eq!(pool("return 'nope'"), None);
    assert_eq!(pool(&format!("return '{long}'")), None);
    assert!(matches!(run("return nil").expect("nil"), Returned::Nil));
    assert!(matches!(run("return").expect("nothing"), Returned::Nil));
    match run(&format!("return '{long}'")).expect("long") {
        Returned::Other(Value::String(s)) => assert_eq!(s.to_str().expect("utf-8"), long),
        _ => panic!("a long name comes back as a string"),
    }
    match run("return 7").expect("number") {
        Returned::Other(Value::Integer(7)) => {}
        _ => panic!("a number comes back as it is"),
    }
    // Errors as mlua's call gives them: the place, the traceback, and a
    // Rust function's error as the error it raised.
    let err = run("local x = nil\nreturn x.y").err().expect("an error");
    let mlua::Error::RuntimeError(text) = &err else {
        panic!("a runtime error: {err:?}")
    };
    assert!(
        text.starts_with("policy.lua:2: attempt to index a nil value"),
        "{text}"
    );
    assert!(text.contains("stack traceback:"), "{text}");
    let err = run("local req = ... ; return req:set_path(5)")
        .err()
        .expect("an error");
    assert!(
        matches!(err, mlua::Error::CallbackError { .. }),
        "a Rust function's error: {err:?}"
    );
    // The stack is left as it was found.
    let before = lua.exec_raw_lua(|raw| unsafe { mlua::ffi::lua_gettop(raw.state()) });
    for code in [
        "return 'static'",
        "return 'nope'",
        "error('x')",
        "return {}",
    ] {
        let _ = run(code);
    }
    let after = lua.exec_raw_lua(|raw| unsafe { mlua::ffi::lua_gettop(raw.state()) });
    assert_eq!(before, after);
}

#[test]
fn fields_and_methods_read_as_mlua_userdata_does() {
    let lua = Lua::new();
    let lender = Lender::new(&lua).expect("lender");
    for (uri, host) in [
        ("/a/b?x=1", "Example.COM:8080"),
        ("/", "plain.example"),
        ("/p", ""),
        // Again, and near: the kept strings (`push_kept`, the host's
        // bytes) must give each request its own values.
        ("/a/b?x=1", "Example.COM:8080"),
        ("/a/b?x=1", "example.com:8080"),
        ("/a/b?x=2", "example.com"),
        ("/", "plain.example"),
    ] {
        let want = mlua_reads(&lua, &mut view(uri, host), READ_ALL).expect("mlua");
        let got = lent_reads(&lua, &lender, &mut view(uri, host), READ_ALL).expect("lent");
        assert_eq!(got, want);
    }
}

#[test]
fn edits_reach_the_request() {
    let lua = Lua::new();
    let lender = Lender::new(&lua).expect("lender");
    let mut r = view("/old?q=1", "h");
    let code = r#"local req = ...
      req:set_path("/new"); req:set_header("x-b", "yes"); req:remove_header("x-a")
      req:set_method("PUT")
      return req.path .. " " .. req.uri .. " " .. req.method"#;
    let got = lent_reads(&lua, &lender, &mut r, code).expect("lent");
    assert_eq!(got, "/new /new?q=1 PUT");
    assert_eq!(r.head.uri, "/new?q=1");
    assert_eq!(r.head.headers["x-b"], "yes");
    assert!(r.head.headers.get("x-a").is_none());
}

/// The same error text from both, as `describe_lua_error` shows it.
#[test]
fn errors_read_as_mlua_userdata_gives_them() {
    let lua = Lua::new();
    let lender = Lender::new(&lua).expect("lender");
    for code in [
        "local req = ... ; return req.nosuch",
        "local req = ... ; return req[1]",
        "local req = ... ; req.path = '/x'",
        "local req = ... ; req.color = 1",
        "local req = ... ; return req.header('x-a')",
        "local req = ... ; return req:set_path(5)",
        "local req = ... ; return req:set_path({})",
        "local req = ... ; return req()",
        "local req = ... ; return #req",
        "local req = ... ; return getmetatable(req)",
    ] {
        let want = mlua_reads(&lua, &mut view("/", "h"), code)
            .map_err(|e| crate::script::describe_lua_error(&e));
        let got = lent_reads(&lua, &lender, &mut view("/", "h"), code)
            .map_err(|e| crate::script::describe_lua_error(&e));
        assert_eq!(
            got.map_err(|e| e.replace("[string \"local req = ... ; ", "")),
            want.map_err(|e| e.replace("[string \"local req = ... ; ", "")),
            "{code}"
        );
    }
}

/// A `req` kept past its call: every use is the documented error, also
/// while another request is lent.
#[test]
fn a_kept_req_is_refused_after_its_call() {
    let lua = Lua::new();
    let lender = Lender::new(&lua).expect("lender");
    let keep = "kept = ... ; return 'ok'";
    lent_reads(&lua, &lender, &mut view("/first", "h"), keep).expect("lent");
    for code in [
        "return kept.path",
        "return kept.peer_ip",
        "return kept:header('x-a')",
        "return tostring(kept)",
        "kept.path = 1",
    ] {
        for during in [false, true] {
            let err = if during {
                lent_reads(&lua, &lender, &mut view("/second", "h"), code)
            } else {
                lua.load(code).eval::<String>()
            }
            .expect_err(code);
            let shown = crate::script::describe_lua_error(&err);
            assert!(
                shown.contains("valid only during the call it was given to"),
                "{code}: {shown}"
            );
        }
    }
}

/// Messages that name a value call a lent `req` what they call mlua's.
#[test]
fn a_lent_req_is_named_as_a_request() {
    let lua = Lua::new();
    let lender = Lender::new(&lua).expect("lender");
    let ud = lender
        .lend(&lua, &mut view("/", "h"), |ud| Ok(ud.clone()))
        .expect("lent");
    assert_eq!(
        crate::script::hooks::returned(&Value::UserData(ud)),
        "a request (req)"
    );
}

/// Each call gets a `req` no earlier call had (the stock is refilled
/// past its size), and a kept one still reads the documented error.
#[test]
fn each_call_gets_a_fresh_req() {
    let lua = Lua::new();
    let lender = Lender::new(&lua).expect("lender");
    let pools = PoolNames::new(&lua, std::iter::empty()).expect("names");
    let f = lua
        .load(
            "local req = ... ; seen = seen or {} ; n = (n or 0) + (seen[req] and 0 or 1)
             seen[req] = true ; kept = req ; return req.path",
        )
        .set_name("@policy.lua")
        .into_function()
        .expect("f");
    for i in 0..100 {
        let path = format!("/{i}");
        match lender.call_hook(&lua, &f, &mut view(&path, "h"), &pools, false) {
            Ok(Returned::Other(Value::String(s))) => assert_eq!(s.to_str().expect("utf-8"), path),
            _ => panic!("call {i}"),
        }
    }
    assert_eq!(lua.globals().get::<i64>("n").expect("n"), 100);
    let err = lua
        .load("return kept.path")
        .eval::<String>()
        .expect_err("kept");
    assert!(crate::script::describe_lua_error(&err).contains("valid only during the call"));
}

/// `on_request` starts with the count hook off and the timer thread arms
/// it once the call runs long (`budget_timer`): a runaway is still
/// stopped at the budget with its `path:line`, whether it loops from its
/// first line, after a long stretch of ordinary work, or inside a
/// coroutine it made while the hook was off; and the next call runs.
#[test]
fn a_runaway_on_request_is_stopped_at_its_line() {
    use crate::script::vm::{Limits, Vm};
    use std::time::{Duration, Instant};
    let limits = Limits {
        hook_budget: Duration::from_millis(50),
        ..Limits::default()
    };
    let vm = Vm::new(std::path::Path::new("policy.lua"), limits).expect("vm");
    let lua = &vm.lua;
    let lender = Lender::new(lua).expect("lender");
    let pools = PoolNames::new(lua, [(0, "app")].into_iter()).expect("names");
    let call = |code: &str| {
        let f = lua
            .load(code)
            .set_name("@policy.lua")
            .into_function()
            .expect("f");
        let started = Instant::now();
        let out = vm.with_lent_budget(Instant::now(), || {
            lender.call_hook(lua, &f, &mut view("/", "h"), &pools, vm.notes_lines())
        });
        (
            out.map_err(|e| crate::script::describe_lua_error(&e)),
            started.elapsed(),
        )
    };
    let stopped = |out: Result<Returned, String>, lines: &[u32]| match out {
        Err(e) => assert!(
            lines.iter().any(|l| e.starts_with(&format!(
                "policy.lua:{l}: script stopped: it ran past its time budget"
            ))),
            "{e}"
        ),
        Ok(_) => panic!("the runaway returned"),
    };
    let (out, _) = call("local req = ...\nwhile true do end");
    stopped(out, &[2]);
    // Ordinary work first (far more than the timer's first look), then
    // a loop.
    let (out, _) = call(
        "local req = ...\nlocal x = 0\nfor i = 1, 2e5 do x = x + #req.path end\nwhile x > 0 do x = x + 1 end",
    );
    stopped(out, &[3, 4]);
    let (out, _) = call(
        "local req = ...\nlocal co = coroutine.create(function()\n  while true do end\nend)\nreturn coroutine.resume(co)",
    );
    stopped(out, &[3]);
    let (out, _) = call("local req = ...\nreturn 'app'");
    assert!(matches!(out, Ok(Returned::Pool(0))));
}

/// The count hook is off in a short `on_request` call, on once the call
/// has run past the timer's looks (a generous budget here: the timer
/// thread may wait for a CPU on a busy machine), and on again after the
/// call, for the other hooks.
#[test]
fn the_count_hook_is_armed_only_in_a_long_call() {
    use crate::script::vm::{Limits, Vm};
    use std::time::Duration;
    let limits = Limits {
        hook_budget: Duration::from_secs(20),
        ..Limits::default()
    };
    let vm = Vm::new(std::path::Path::new("policy.lua"), limits).expect("vm");
    let lua = &vm.lua;
    let lender = Lender::new(lua).expect("lender");
    let pools = PoolNames::new(lua, std::iter::empty()).expect("names");
    unsafe extern "C-unwind" fn mask(state: *mut ffi::lua_State) -> std::ffi::c_int {
        ffi::lua_pushinteger(state, ffi::lua_gethookmask(state) as ffi::lua_Integer);
        1
    }
    // SAFETY: `mask` pushes one integer.
    let mask = unsafe { lua.create_c_function(mask) }.expect("mask");
    lua.globals().set("mask", mask).expect("global");
    let clock = lua
        .create_function(|_, ()| Ok(START.elapsed().as_secs_f64()))
        .expect("clock");
    lua.globals().set("clock", clock).expect("global");
    let mask_in = |code: &str| {
        let f = lua
            .load(code)
            .set_name("@policy.lua")
            .into_function()
            .expect("f");
        let out = vm.with_lent_budget(std::time::Instant::now(), || {
            lender.call_hook(lua, &f, &mut view("/", "h"), &pools, vm.notes_lines())
        });
        match out {
            Ok(Returned::Other(Value::Integer(m))) => m,
            _ => panic!("{code}"),
        }
    };
    let count = ffi::LUA_MASKCOUNT as i64;
    assert_eq!(mask_in("return mask()"), 0);
    // Until the timer arms it, or 10 s.
    assert_eq!(
        mask_in("local t = clock() + 10\nwhile mask() == 0 and clock() < t do end\nreturn mask()"),
        count
    );
    let after: i64 = lua.load("return mask()").eval().expect("after");
    assert_eq!(after, count);
    assert_eq!(mask_in("return mask()"), 0);
}

static START: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

/// The lent `req` is a light userdata (no allocation per call), which Lua
/// names "userdata" in its own messages; they still say "request", as
/// they did when it was a full userdata, also when a `pcall` catches
/// them; and Pocket's messages name it `a request (req)`.
#[test]
fn lua_messages_still_call_the_lent_req_a_request() {
    use crate::script::vm::{Limits, Vm};
    let vm = Vm::new(std::path::Path::new("policy.lua"), Limits::default()).expect("vm");
    let lua = &vm.lua;
    let lender = Lender::new(lua).expect("lender");
    let pools = PoolNames::new(lua, std::iter::empty()).expect("names");
    let call = |code: &str| {
        let f = lua
            .load(code)
            .set_name("@policy.lua")
            .into_function()
            .expect("f");
        let out = vm.with_lent_budget(std::time::Instant::now(), || {
            lender.call_hook(lua, &f, &mut view("/", "h"), &pools, vm.notes_lines())
        });
        match out {
            Ok(Returned::Other(Value::String(s))) => s.to_string_lossy(),
            Ok(_) => "a value".into(),
            Err(e) => crate::script::describe_lua_error(&e),
        }
    };
    let has = |code: &str, want: &str| {
        let got = call(code);
        assert!(got.contains(want), "{code}: {got}");
    };
    has(
        "local req = ...\nreturn req()",
        "policy.lua:2: attempt to call a request value (local 'req')",
    );
    has(
        "local req = ...\nreturn req < 1",
        "policy.lua:2: attempt to compare request with number",
    );
    has(
        "local req = ...\nreturn 1 < req",
        "policy.lua:2: attempt to compare number with request",
    );
    has(
        "local req = ...\nreturn #req",
        "attempt to get length of a request value (local 'req')",
    );
    has(
        "local req = ...\nlocal ok, e = pcall(function() return req .. 'x' end)\nreturn e",
        "policy.lua:2: attempt to concatenate a request value (upvalue 'req')",
    );
    has("local req = ...\nreturn type(req)", "userdata");
    assert_eq!(
        crate::script::hooks::returned(&Value::LightUserData(mlua::LightUserData(
            std::ptr::null_mut()
        ))),
        "a request (req)"
    );
}
