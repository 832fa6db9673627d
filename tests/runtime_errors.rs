//! Run-time hook errors and pool names in tables compiled at load, as a
//! real Pocket says them: every bad hook result, bad argument, budget or
//! memory stop names `path:line`, the hook and the request id; the API's
//! functions and values are named as the docs name them (`pocket.respond`,
//! `http.get`, `a request (req)`), never `'?'`, `userdata` or a Rust type.
//! Each input here was seen by a tester or a newcomer (issue 13).

mod common;
use common::*;

/// `pocket check` on `policy.lua` in `dir`, with the tests' deadline as a
/// hang guard only: (exit code, the policy's path, stderr lines).
fn check_in(dir: &std::path::Path, src: &str) -> (i32, String, Vec<String>) {
    let path = write_policy(dir, "policy.lua", src);
    let (code, err) = check_within(&path, DEADLINE);
    (
        code,
        path.display().to_string(),
        err.lines().map(str::to_string).collect(),
    )
}

/// A pool name is never dropped: a rule in a module that returns
/// `match.routes {...}` (a tail call hides the module's frame), a canary
/// split a module returns, a rule built through `pcall`, a rule inside a
/// function that tail-calls `match.routes`, a long-bracket name, and
/// `pocket.uses_pool` with a level above the main chunk. Each is refused
/// at the line that writes the name.
#[test]
fn every_pool_name_compiled_at_load_is_checked_where_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    std::fs::write(
        dir.path().join("lib/routes.lua"),
        "local match = require \"pocket.match\"\n\nreturn match.routes {\n  { prefix = \"/a\", pool = \"app\" }, { prefix = \"/b\", pool = \"bogus\" },\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("lib/split.lua"),
        "local canary = require \"pocket.canary\"\nreturn canary.split { stable = \"app\", canary = \"app_v2\", weight = 10 }\n",
    )
    .unwrap();
    let (code, path, lines) = check_in(
        dir.path(),
        r#"local routes = require "lib.routes"
local split = require "lib.split"
local match = require "pocket.match"
local ok, r = pcall(match.routes, { { prefix = "/b", pool = "bogus6" } })
local function mk() return match.routes { { prefix = "/c", pool = "bogus7" } } end
local r7 = mk()
local r8 = match.routes { { prefix = "/d", pool = [[long]] } }
pocket.uses_pool("nope", 2)
pocket.uses_pool("nope3", 3)
pocket.uses_pool("nope5", 5)
return {
  listeners = { { bind = "127.0.0.1:8080", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:9001" } } },
  on_request = function(req) return routes:route(req) or split(req) end,
}
"#,
    );
    assert_eq!(code, 1);
    let lib = dir.path().join("lib").display().to_string();
    let mut want = vec![
        format!("{lib}/split.lua:2: pool \"app_v2\" is not defined in pools (pools: app)"),
        format!("{path}:4: pool \"bogus6\" is not defined in pools (pools: app)"),
        format!("{lib}/routes.lua:4: pool \"bogus\" is not defined in pools (pools: app)"),
        format!("{path}:5: pool \"bogus7\" is not defined in pools (pools: app)"),
        format!("{path}:7: pool \"long\" is not defined in pools (pools: app)"),
        format!("{path}:8: pool \"nope\" is not defined in pools (pools: app)"),
        format!("{path}:9: pool \"nope3\" is not defined in pools (pools: app)"),
        format!("{path}:10: pool \"nope5\" is not defined in pools (pools: app)"),
    ];
    let mut got = lines.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "{lines:#?}");
}

/// `pocket.uses_pool`'s bad arguments, named as the docs name it.
#[test]
fn uses_pool_says_what_its_arguments_must_be() {
    let dir = tempfile::tempdir().unwrap();
    let (code, path, lines) = check_in(dir.path(), "pocket.uses_pool(\"nope\", 1.5)\nreturn {}\n");
    assert_eq!(code, 1);
    assert_eq!(lines, [format!("{path}:1: bad argument #2 to 'pocket.uses_pool': a level is a whole number from 1 to 200, got a number (1.5)")]);
    let (code, path, lines) = check_in(dir.path(), "\npocket.uses_pool(5)\nreturn {}\n");
    assert_eq!(code, 1);
    assert_eq!(lines, [format!("{path}:2: bad argument #1 to 'pocket.uses_pool': a pool name is a string, got a number (5)")]);
}

fn hooks_policy(app: &OriginHandle) -> String {
    format!(
        r#"local counters = pocket.store("counters")
local match = require "pocket.match"
local routes = match.routes {{ {{ prefix = "/r", pool = "app" }} }}
local big = string.rep("z", 20 * 1024)
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
  on_request = function(req)
    local p = req.path
    if p == "/computed" then local prefix = "app_" return prefix .. "x" end
    if p == "/respond-abc" then return pocket.respond("abc") end
    if p == "/respond-3" then return pocket.respond(200, nil, "text") end
    if p == "/hash" then return tostring(pocket.hash(req)) end
    if p == "/respond-table" then return pocket.respond(200, {{}}) end
    if p == "/store-set" then counters:set("k", req) end
    if p == "/set-header" then req:set_header("x", req) end
    if p == "/respond-headers" then return pocket.respond(200, "x", {{ a = req }}) end
    if p == "/setmetatable" then setmetatable(req, {{}}) end
    if p == "/dot" then return counters.get("k") end
    if p == "/table-error" then error({{ code = 1 }}) end
    if p == "/lines" then error("line1\nline2") end
    if p == "/big" then error(big) end
    if p == "/route-dot" then return routes.route(req) end
    if p == "/route-dot2" then local pool = routes.route(req) return pool end
    if p == "/wrap" then
      local f = coroutine.wrap(function() while true do end end)
      f()
    end
  end,
}}
"#,
        app.addr
    )
}

/// Each seen input: a 500 for that request and one log line with
/// `path:line`, the hook and the request id, in the docs' words.
#[tokio::test]
async fn hook_errors_use_the_docs_words_at_the_users_line() {
    let app = origin("app");
    let pocket = Pocket::start(&hooks_policy(&app), 1);
    let addr = pocket.addr("web");
    let p = pocket.policy.display().to_string();
    let cases = [
        // A computed unknown pool: at the hook's own place, as every bad result.
        ("/computed", format!("{p}:8: on_request returned pool \"app_x\", which is not defined (pools: app)")),
        ("/respond-abc", format!("{p}:11: bad argument #1 to 'pocket.respond': expected a whole number, got a string (\"abc\")")),
        ("/respond-3", format!("{p}:12: bad argument #3 to 'pocket.respond': expected a table, got a string (\"text\")")),
        ("/hash", format!("{p}:13: bad argument #1 to 'pocket.hash': expected a string, got a request (req)")),
        ("/respond-table", format!("{p}:14: bad argument #2 to 'pocket.respond': expected a string, got a table")),
        ("/store-set", format!("{p}:15: store counters: values are strings, numbers or booleans, not a request (req)")),
        ("/set-header", format!("{p}:16: header \"x\" must be set to a string, not a request (req)")),
        ("/respond-headers", format!("{p}:17: header \"a\" must be a string, not a request (req)")),
        ("/setmetatable", format!("{p}:18: bad argument #1 to 'setmetatable': expected a table, got a request (req)")),
        ("/dot", format!("{p}:19: store method get called with a dot: call it with a colon (yourstore:get(...))")),
        ("/table-error", format!("{p}:20: error raised with a table value (no message)")),
        ("/lines", format!("{p}:21: line1\\nline2")),
        // A tail call hides the user's line: the hook's, and the stdlib's.
        ("/route-dot", format!("{p}:8: on_request: route is a method of a route table: call it with a colon (routes:route(req)) (in stdlib/pocket/match.lua:{})", stdlib_line("match.lua", "is a method of a route table"))),
        ("/route-dot2", format!("{p}:24: route is a method of a route table: call it with a colon (routes:route(req))")),
        // `coroutine.wrap` re-raises with its own place: said once.
        ("/wrap", format!("{p}:26: script stopped: it ran past its time budget")),
    ];
    for (path, message) in cases {
        let r = get(addr, path).await;
        assert_eq!(r.status, 500, "{path}: {}", r.text());
        let id = r.header("x-request-id").expect("request id");
        let line = pocket.log.wait_for(&[&format!("request={id}")]);
        assert!(
            line.contains(&format!(
                " ERROR {message} request={id} hook=\"on_request\""
            )),
            "{path}: {line}"
        );
        for word in ["userdata", "'?'", "rawsetmetatable", "a integer", "0x"] {
            assert!(!line.contains(word), "{path}: {line}");
        }
    }
    // A 20 KiB message is cut at 8 KiB, saying how much was cut.
    let r = get(addr, "/big").await;
    let id = r.header("x-request-id").expect("request id");
    let line = pocket.log.wait_for(&[&format!("request={id}")]);
    let start = format!(" ERROR {p}:22: ");
    let at = line.find(&start).expect("the place") + start.len();
    let cut = 8 * 1024 - (p.len() + 5);
    assert!(
        line[at..].starts_with(&format!(
            "{}... (12319 more bytes cut) request={id}",
            "z".repeat(cut)
        )),
        "{}",
        &line[line.len() - 200..]
    );
}

/// A hook kept in a module that returns an unknown pool is placed at its
/// own definition in the module, not at a line of the policy that happens
/// to write the same name.
#[tokio::test]
async fn an_unknown_pool_from_a_module_hook_is_placed_in_the_module() {
    let app = origin("app");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    std::fs::write(
        dir.path().join("lib/h.lua"),
        "-- a hook kept in a module\n\n\n-- returns a pool the policy does not define\nreturn function(req)\n  return \"beta\"\nend\n",
    )
    .unwrap();
    let path = write_policy(
        dir.path(),
        "policy.lua",
        &format!(
            r#"local hook = require "lib.h"
-- the label
local label = "beta"
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
  on_request = hook,
}}
"#,
            app.addr
        ),
    );
    let lib = dir.path().join("lib/h.lua").display().to_string();
    let pocket = Pocket::start_file(dir, path, 1);
    let r = get(pocket.addr("web"), "/").await;
    assert_eq!(r.status, 500);
    let id = r.header("x-request-id").expect("request id");
    let line = pocket.log.wait_for(&[&format!("request={id}")]);
    assert!(
        line.contains(&format!(
            " ERROR {lib}:5: on_request returned pool \"beta\", which is not defined (pools: app) request={id} hook=\"on_request\""
        )),
        "{line}"
    );
}

/// Scripted checks: a bad argument to `http.get`, the memory limit and a
/// table raised as the error each fail the check with `path:line` and
/// the docs' words.
#[tokio::test]
async fn scripted_check_errors_name_their_place() {
    let (a, b, c) = (origin("a"), origin("b"), origin("c"));
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "a" }} }},
  pools = {{
    a = {{ servers = {{ "{}" }}, check = {{ interval = "100ms", fall = 1,
      run = function(server, http)
        return http.get({{}})
      end }} }},
    b = {{ servers = {{ "{}" }}, check = {{ interval = "100ms", fall = 1,
      run = function(server, http)
        local t = {{}}
        for i = 1, 1e9 do t[i] = i end
      end }} }},
    c = {{ servers = {{ "{}" }}, check = {{ interval = "100ms", fall = 1,
      run = function(server, http)
        error({{}})
      end }} }},
  }},
}}
"#,
            a.addr, b.addr, c.addr
        ),
        1,
    );
    let p = pocket.policy.display().to_string();
    for (pool, why) in [
        (
            "a",
            format!(
                "{p}:5: bad argument #1 to 'http.get': expected a string (a path), got a table"
            ),
        ),
        (
            "b",
            format!("{p}:11: script stopped: it used more memory than its limit"),
        ),
        (
            "c",
            format!("{p}:14: error raised with a table value (no message)"),
        ),
    ] {
        let line = pocket.log.wait_for(&[&format!("of pool {pool} is DOWN")]);
        assert!(
            line.contains(&format!("is DOWN: 1 check failed: {why}; 0/1 servers up")),
            "{line}"
        );
    }
}

/// The line of the embedded stdlib module `file` that holds `text` (so the
/// expected message follows edits to the module).
fn stdlib_line(file: &str, text: &str) -> usize {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("stdlib/pocket")
        .join(file);
    let source = std::fs::read_to_string(&path).unwrap();
    source
        .lines()
        .position(|l| l.contains(text))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{text:?} not in {}", path.display()))
}

/// A chunk name is the script's to choose: an unknown pool named in a
/// chunk called `@/dev/zero` or after a FIFO, or an error message naming
/// such a file, never makes `pocket check` open it (reading /dev/zero
/// ran out of memory, a FIFO hung). The error names the chunk as the
/// script wrote it, with no line.
#[test]
fn chunk_names_never_make_check_read_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.lua");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let pools = "return {\n  listeners = { { bind = \"127.0.0.1:8080\", pool = \"app\" } },\n  pools = { app = { servers = { \"127.0.0.1:9001\" } } },\n}\n";
    let src = format!(
        "load(\"pocket.uses_pool('nope')\", \"@/dev/zero\")()\nload(\"pocket.uses_pool('nope2')\", \"@{}\")()\n{pools}",
        fifo.display()
    );
    let (code, _, lines) = check_in(dir.path(), &src);
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(
        lines,
        [
            "/dev/zero: pool \"nope\" is not defined in pools (pools: app)".to_string(),
            format!(
                "{}: pool \"nope2\" is not defined in pools (pools: app)",
                fifo.display()
            ),
        ]
    );
    // An error message that names a file: its line is the message's own.
    let src = "error(\"/dev/zero.lua:3: unknown key \\\"x\\\"\", 0)\nreturn {}\n";
    let (code, _, lines) = check_in(dir.path(), src);
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines, ["/dev/zero.lua:3: unknown key \"x\""]);
}

/// Issue 13, run-time wording: an API object raised as an error or passed
/// to `tostring` is named, not shown as `0x...`; a wrong argument names
/// the object or echoes the number and says the range; a field an object
/// does not have is said in the docs' words; `incr` past
/// `math.maxinteger` is refused, not saturated.
#[tokio::test]
async fn api_objects_and_numbers_are_named_in_run_time_errors() {
    let app = origin("app");
    let policy = format!(
        r#"local st = pocket.store("t")
local re = pocket.regex "a+b"
return {{
  listeners = {{
    {{ name = "web", bind = "127.0.0.1:0", pool = "app" }},
    {{ name = "conn", bind = "127.0.0.1:0", pool = "app" }},
  }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
  on_connect = function(conn)
    if conn.listener == "conn" then conn:foo() end
  end,
  on_request = function(req)
    local p = req.path
    if p == "/tostring" then return pocket.respond(200, tostring(req) .. "|" .. tostring(re) .. "|" .. tostring(st)) end
    if p == "/pcall" then local ok, e = pcall(error, req); error(e) end
    if p == "/set-req" then st:set(req, 1) end
    if p == "/incr-frac" then st:incr("k", 1.5) end
    if p == "/incr-huge" then st:incr("f", 1e300) end
    if p == "/redirect" then return pocket.redirect(req) end
    if p == "/field" then req:foo() end
    if p == "/big" then st:set("big", math.maxinteger); st:incr("big", 1) end
  end,
}}
"#,
        app.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let addr = pocket.addr("web");
    let p = pocket.policy.display().to_string();
    let r = get(addr, "/tostring").await;
    assert_eq!(r.text(), "request GET /tostring|regex \"a+b\"|store \"t\"");
    let cases = [
        ("/pcall", format!("{p}:15: request GET /pcall")),
        ("/set-req", format!("{p}:16: bad argument #1 to 'set': expected a string, got a request (req)")),
        ("/incr-frac", format!("{p}:17: bad argument #2 to 'incr': expected a whole number from math.mininteger to math.maxinteger (-2^63 to 2^63-1), got a number (1.5)")),
        ("/incr-huge", format!("{p}:18: bad argument #2 to 'incr': expected a whole number from math.mininteger to math.maxinteger (-2^63 to 2^63-1), got a number (1e+300)")),
        ("/redirect", format!("{p}:19: use pocket.redirect(status, location) or pocket.redirect(location), with a location string; got a request (req)")),
        ("/field", format!("{p}:20: request has no field \"foo\"")),
        ("/big", format!("{p}:21: store t: key \"big\" holds 9223372036854775807; adding 1 would pass the whole-number range")),
    ];
    for (path, message) in cases {
        let r = get(addr, path).await;
        assert_eq!(r.status, 500, "{path}: {}", r.text());
        let id = r.header("x-request-id").expect("request id");
        let line = pocket.log.wait_for(&[&format!("request={id}")]);
        assert!(
            line.contains(&format!(" ERROR {message}")),
            "{path}: {line}"
        );
        for word in ["0x", "Pocket object", "unknown field"] {
            assert!(!line.contains(word), "{path}: {line}");
        }
    }
    // `conn:foo()` in on_connect: the connection's words, not mlua's.
    let _ = tokio::net::TcpStream::connect(pocket.addr("conn")).await;
    let line = pocket.log.wait_for(&["connection has no field \"foo\""]);
    assert!(line.contains(&format!("{p}:10:")), "{line}");
    assert!(!line.contains("unknown field"), "{line}");
}
