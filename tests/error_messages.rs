//! The messages a user reads when something is wrong, exactly as a real
//! `pocket check` or `pocket run` prints them: each load error at the line
//! of the offending value, once, with no false follow-on; each hook error
//! with `path:line`, the hook and the request id; the API's objects named
//! as the docs name them; counts with the right plural.

mod common;
use common::*;

/// `pocket check` on `src` written as `policy.lua`: (exit code, the
/// policy's path, stderr lines).
fn check(src: &str) -> (i32, String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", src);
    let (code, _, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    let lines = err.lines().map(str::to_string).collect();
    (code, path.display().to_string(), lines)
}

/// The issue's input: a pool with `balance = 5` in a file whose line 1
/// mentions `static =`. One error, at the `balance` line; the listener's
/// default pool is defined (only invalid), so nothing else is said.
#[test]
fn an_invalid_pool_is_reported_once_at_its_value() {
    let (code, path, lines) = check(
        r#"local static = pocket.regex [[^/static/]]
return {
  listeners = { { bind = "127.0.0.1:8080", pool = "static" } },
  pools = {
    static = {
      servers = { "127.0.0.1:9001" },
      balance = 5,
    },
  },
  on_request = function(req) if static:is_match(req.path) then return "static" end end,
}
"#,
    );
    assert_eq!(code, 1);
    assert_eq!(
        lines,
        [format!(
            "{path}:7: pool \"static\": balance must be an algorithm name (round_robin, least_conn, p2c, random, first, hash) or a function(servers, req), not a number (5)"
        )]
    );
}

/// Every kind of invalid pool value, each the default pool of a listener
/// or another pool's fallback: one error each, at its own line, in line
/// order, and no "not defined" follow-on.
#[test]
fn each_invalid_pool_value_is_reported_once_at_its_line() {
    let (code, path, lines) = check(
        r#"return {
  listeners = {
    { name = "a", bind = "127.0.0.1:8080", pool = "algo" },
    { name = "b", bind = "127.0.0.1:8081", pool = "unix" },
    { name = "c", bind = "127.0.0.1:8082", pool = "slow" },
  },
  pools = {
    algo = { servers = { "127.0.0.1:9001" }, balance = "fastest" },
    unix = {
      servers = { "127.0.0.1:9002", "unix:/run/app.sock" },
    },
    slow = {
      servers = { "127.0.0.1:9003" },
      fallback = "algo",
      timeouts = { connect = "2 s" },
      passive = { after = -1 },
      check = { tcp = true, interval = "1ms" },
    },
    empty = { },
  },
}
"#,
    );
    assert_eq!(code, 1);
    let want = [
        "8: pool \"algo\": unknown balance algorithm \"fastest\" (known: round_robin, least_conn, p2c, random, first, hash)",
        "10: pool \"unix\": bad address \"unix:/run/app.sock\" (expected ip:port, like \"127.0.0.1:9001\")",
        "15: pool \"slow\": timeouts.connect: \"2 s\" is not a duration: write the number and its unit together, like \"2s\"",
        "16: pool \"slow\" passive: after must be a whole number from 0 to 1000, not a number (-1)",
        "17: pool \"slow\" check: interval must be at least 10ms, not a string (\"1ms\")",
        "19: pool \"empty\" has no servers (servers = { \"127.0.0.1:9001\" })",
    ]
    .map(|l| format!("{path}:{l}"));
    assert_eq!(lines, want);
}

/// A listener's values, found by the listener's place in the list (not
/// by the first line that mentions a word).
#[test]
fn listener_errors_point_at_the_listener_value() {
    let (code, path, lines) = check(
        r#"-- bind = "nope" in a comment
local bind = "127.0.0.1:8080"
return {
  listeners = {
    { name = "a", bind = bind, pool = "app" },
    { name = "b", bind = "127.0.0.1:8081", pool = "app",
      timeouts = { head = "soon" }, max_connections = 0 },
    { name = "c", bind = "nope", pool = "ap" },
  },
  pools = { app = { servers = { "127.0.0.1:9001" } } },
}
"#,
    );
    assert_eq!(code, 1);
    let want = [
        "7: listener \"b\": timeouts.head: \"soon\" is not a duration (try \"250ms\", \"2s\", \"1m\")",
        "7: listener \"b\": max_connections must be a whole number of at least 1, not a number (0)",
        "8: listener \"c\": bad address \"nope\" (expected ip:port, like \"127.0.0.1:9001\")",
        "8: listener \"c\": default pool \"ap\" is not defined in pools",
    ]
    .map(|l| format!("{path}:{l}"));
    assert_eq!(lines, want);
}

/// The issue's input: the content-switching example with a new rule whose
/// pool is written `statc`. `pocket check` said ok; the load now refuses
/// it at the rule's line, and `pocket run` does not start.
#[test]
fn a_route_to_an_undefined_pool_is_refused_at_load() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::path::Path::new(root).join("examples/content-switching/policy.lua");
    let text = std::fs::read_to_string(&example).unwrap();
    let rule = "  { prefix = \"/static/\", pool = \"static\" },\n";
    assert!(text.contains(rule), "the example changed");
    let text = text.replacen(
        rule,
        &format!("{rule}  {{ prefix = \"/assets/\", pool = \"statc\" }},\n"),
        1,
    );
    let line = text.lines().position(|l| l.contains("\"statc\"")).unwrap() + 1;
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", &text);
    let p = path.to_str().unwrap();
    let want = format!(
        "{p}:{line}: pool \"statc\" is not defined in pools (pools: admin, api, static, web)"
    );
    let (code, _, err) = pocket_cmd(&["check", p]);
    assert_eq!(code, 1);
    assert_eq!(err.trim_end(), want);
    let (code, _, err) = pocket_cmd(&["run", p, "--workers", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains(&want), "{err}");
}

/// Every stdlib table that names pools is checked the same way: a
/// `match.routes` default and a `canary.split`, one error per name even
/// when the name is used twice.
#[test]
fn stdlib_tables_that_name_pools_are_checked_at_load() {
    let (code, path, lines) = check(
        r#"local match = require "pocket.match"
local canary = require "pocket.canary"
local routes = match.routes {
  { prefix = "/a/", pool = "app" },
  { prefix = "/b/", pool = "bta" },
  { prefix = "/c/", pool = "bta" },
  default = "ap",
}
local split = canary.split { stable = "app",
  canary = "app_v2", weight = 10 }
return {
  listeners = { { bind = "127.0.0.1:8080", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:9001" } } },
  on_request = function(req) return routes:route(req) or split(req) end,
}
"#,
    );
    assert_eq!(code, 1);
    let want = [
        "5: pool \"bta\" is not defined in pools (pools: app)",
        "7: pool \"ap\" is not defined in pools (pools: app)",
        "10: pool \"app_v2\" is not defined in pools (pools: app)",
    ]
    .map(|l| format!("{path}:{l}"));
    assert_eq!(lines, want);
}

/// A good policy's summary counts in the right plural.
#[test]
fn the_summary_counts_in_the_right_plural() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(
        dir.path(),
        "policy.lua",
        r#"return {
  listeners = { { bind = "127.0.0.1:8080", pool = "one" } },
  pools = { one = { servers = { "127.0.0.1:9001" } },
            two = { servers = { "127.0.0.1:9002", "127.0.0.1:9003" } } },
}
"#,
    );
    let (code, out, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("  one (round_robin, 1 server, retries 3)"),
        "{out}"
    );
    assert!(
        out.contains("  two (round_robin, 2 servers, retries 3)"),
        "{out}"
    );
}

/// A main chunk that meets the memory limit is refused at the line that
/// met it: a new string there, or a table that grew past the limit (Lua's
/// own error has no line; the loop's is the one running).
#[test]
fn the_memory_limit_at_load_names_the_line() {
    let (code, path, lines) = check("local t = {}\nfor i = 1, 1e9 do t[i] = i end\nreturn {}\n");
    assert_eq!(code, 1);
    assert_eq!(
        lines,
        [format!(
            "{path}:2: script stopped: it used more memory than its limit"
        )]
    );
    let (code, path, lines) = check(
        r#"local kept = {}
for i = 1, 1000 do
  kept[i] = string.rep("x", 1024 * 1024) .. i
end
return {}
"#,
    );
    assert_eq!(code, 1);
    assert_eq!(
        lines,
        [format!(
            "{path}:3: script stopped: it used more memory than its limit"
        )]
    );
}

fn hooks_policy(app: &OriginHandle) -> String {
    format!(
        r#"local half = string.rep("x", 12 * 1024 * 1024)
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
  on_request = function(req)
    if req.path == "/five" then return 5 end
    if req.path == "/assign" then req.path = "/x" end
    if req.path == "/call" then req() end
    if req.path == "/pcall" then
      local _, direct = pcall(pocket.respond, 999)
      local _, wrapped = pcall(function() return pocket.respond(999) end)
      local _, handled = xpcall(function() return pocket.respond(999) end, function(e) return "handled: " .. e end)
      return pocket.respond(200, direct .. "\n" .. wrapped .. "\n" .. handled)
    end
    if req.path == "/grow" then
      return half .. half .. "y"
    end
    if req.path == "/dot" then return req.header("x-user") end
  end,
  on_response = function(req, res)
    if req.path == "/status" then res.status = 201 end
  end,
}}
"#,
        app.addr
    )
}

/// A hook's bad return value, a read-only field, a call of the request
/// object and the memory limit: each a 500 for that one request, and one
/// log line with `path:line`, the hook and the request id, in the docs'
/// words.
#[tokio::test]
async fn hook_errors_name_the_place_the_hook_and_the_request() {
    let app = origin("app");
    let pocket = Pocket::start(&hooks_policy(&app), 1);
    let addr = pocket.addr("web");
    let p = pocket.policy.display().to_string();
    let cases = [
        ("/five", 500, "on_request", format!("{p}:5: on_request returned a number (5); expected a pool name (a string), pocket.respond(...) or nil")),
        ("/assign", 500, "on_request", format!("{p}:7: req.path is read-only; use req:set_path(...)")),
        ("/call", 500, "on_request", format!("{p}:8: attempt to call a request value (local 'req')")),
        ("/grow", 500, "on_request", format!("{p}:16: script stopped: it used more memory than its limit")),
        ("/dot", 500, "on_request", format!("{p}:18: request method header called with a dot: call it with a colon (req:header(...))")),
        ("/status", 500, "on_response", format!("{p}:21: res.status is read-only; use res:set_status(...)")),
    ];
    for (path, status, hook, message) in cases {
        let r = get(addr, path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        let id = r.header("x-request-id").expect("request id");
        let line = pocket.log.wait_for(&[&format!("request={id}")]);
        assert!(
            line.contains(&format!(" ERROR {message} request={id} hook=\"{hook}\"")),
            "{path}: {line}"
        );
    }
    // A Pocket function's error caught by pcall reads like Lua's own:
    // no line when pcall called it directly (as `pcall(string.rep)`),
    // else the line that called it; never mlua's traceback.
    let r = get(addr, "/pcall").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        format!(
            "status 999 is not a status from 200 to 599\n{p}:11: status 999 is not a status from 200 to 599\nhandled: {p}:12: status 999 is not a status from 200 to 599"
        )
    );
}

/// The issue's input: a one-server pool whose server is gone logs that
/// there is no other server to try, never "trying another server", and
/// the client gets its 502.
#[tokio::test]
async fn a_one_server_pool_says_there_is_no_other_server() {
    let dead = dead_addr();
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{dead}" }}, passive = false }} }},
}}
"#
        ),
        1,
    );
    let addr = pocket.addr("web");
    let r = get(addr, "/").await;
    assert_eq!(r.status, 502, "{}", r.text());
    let id = r.header("x-request-id").expect("request id");
    let line = pocket.log.wait_for(&[&format!("request={id}"), "connect"]);
    assert!(
        line.contains("; pool \"app\" has no other server to try"),
        "{line}"
    );
    assert!(!pocket.log.text().contains("trying another server"));
}

/// The other hooks' bad return values: a `hash_key` function that returns
/// a table costs the request its key, not its answer; a scripted check
/// whose reason is a table fails, saying so. Both at the function's line.
#[tokio::test]
async fn pool_functions_say_what_they_returned() {
    let app = origin("app");
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{ servers = {{ "{a}" }}, balance = "hash",
      hash_key = function(req) return {{}} end,
      check = {{ interval = "100ms", fall = 1,
        run = function(server, http)
          return true, {{}}
        end }},
    }},
  }},
}}
"#,
            a = app.addr
        ),
        1,
    );
    let p = pocket.policy.display().to_string();
    pocket.log.wait_for(&[&format!(
        "is DOWN: 1 check failed: {p}:7: the check returned a table as its reason; expected a string or nil"
    )]);
    let addr = pocket.addr("web");
    // The server is down now: the request gets its 503, after the key.
    let r = get(addr, "/").await;
    let id = r.header("x-request-id").expect("request id");
    let line = pocket.log.wait_for(&[&format!("request={id}"), "hash_key"]);
    assert!(
        line.contains(&format!(
            " WARN {p}:5: hash_key returned a table; expected a string, a number or nil; balancing without a key request={id} hook=\"hash_key\""
        )),
        "{line}"
    );
}

/// A value reported wrong brings no second error about what depends on
/// it: a mistyped `balance` and its `hash_key`, a fallback that is not a
/// name and its `bypass`, an `on_check` that is not a function and a
/// check with `script = true`.
#[test]
fn a_wrong_value_brings_no_false_error_about_what_depends_on_it() {
    let (code, path, lines) = check(
        r#"return {
  listeners = { { bind = "127.0.0.1:8080", pool = "app" } },
  pools = {
    app = { servers = { "127.0.0.1:9001" }, balance = "hsh", hash_key = "uri",
            hash_balance_factor = 150 },
    web = { servers = { "127.0.0.1:9002" }, fallback = 7,
            bypass = function(req) return true end,
            check = { script = true } },
  },
  on_check = "yes",
}
"#,
    );
    assert_eq!(code, 1);
    let want = [
        "4: pool \"app\": unknown balance algorithm \"hsh\" (known: round_robin, least_conn, p2c, random, first, hash)",
        "6: pool \"web\": fallback must be a pool name, not a number (7)",
        "10: on_check must be a function(server, http), not a string (\"yes\")",
    ]
    .map(|l| format!("{path}:{l}"));
    assert_eq!(lines, want);
}

/// `pocket check` on `src`, the errors with the policy's path taken off
/// (`3: message`), for the tests below.
fn errors(src: &str) -> Vec<String> {
    let (code, path, lines) = check(src);
    assert_eq!(code, 1, "{lines:?}");
    lines
        .iter()
        .map(|l| l.strip_prefix(&format!("{path}:")).unwrap_or(l).to_string())
        .collect()
}

const BAL: &str = "round_robin, least_conn, p2c, random, first, hash";

/// A value in a table kept in a local, or returned by a function, is
/// found in that table, not at the first field with the same key.
#[test]
fn values_kept_in_locals_and_functions_are_found_in_their_own_table() {
    assert_eq!(
        errors(
            r#"local first = { servers={"127.0.0.1:9001"}, retries = 1 }
local second = { servers={"127.0.0.1:9002"},
  retries = 99 }
return { listeners = { { bind = "127.0.0.1:8080", pool = "x" } }, pools = { x = first, y = second } }
"#
        ),
        ["3: pool \"y\": retries must be a whole number from 0 to 10, not a number (99)"]
    );
    assert_eq!(
        errors(
            r#"local function fast(addr)
  return { servers={addr}, balance = "least_conn", retries = 1 }
end
local slow = { servers={"127.0.0.1:9002"},
  balance = 5,
  retries = 20 }
return { listeners = { { bind = "127.0.0.1:8080", pool = "app" } },
  pools = { app = fast("127.0.0.1:9001"), static = slow } }
"#
        ),
        [
            format!("5: pool \"static\": balance must be an algorithm name ({BAL}) or a function(servers, req), not a number (5)"),
            "6: pool \"static\": retries must be a whole number from 0 to 10, not a number (20)".into(),
        ]
    );
    assert_eq!(
        errors(
            r#"local common = { tcp = true, interval = "1s" }
local bad = { tcp = true, interval = "1ms" }
local l = { bind = "localhost:notaport", pool = "a" }
return { listeners = { l },
  pools = { a = { servers = { "127.0.0.1:9001" }, check = common },
            b = { servers = { "127.0.0.1:9002" }, check = bad } } }
"#
        ),
        [
            "2: pool \"b\" check: interval must be at least 10ms, not a string (\"1ms\")",
            "3: listeners[1]: bad address \"localhost:notaport\" (expected ip:port, like \"127.0.0.1:9001\")",
        ]
    );
}

/// A key written twice in one table: Lua keeps the last, so the error is
/// there. A missing value is said at its table, and named as missing.
#[test]
fn a_key_written_twice_is_reported_at_the_last_and_a_missing_addr_at_its_table() {
    assert_eq!(
        errors(
            r#"return {
  listeners = { { bind = "127.0.0.1:8080", pool = "a" } },
  pools = {
    a = { servers = { "127.0.0.1:9001" }, retries = 1 },
    a = { servers = { "unix:/tmp/x" }, retries = 20 },
  },
}
"#
        ),
        [
            "5: pool \"a\": retries must be a whole number from 0 to 10, not a number (20)",
            "5: pool \"a\": bad address \"unix:/tmp/x\" (expected ip:port, like \"127.0.0.1:9001\")",
        ]
    );
    assert_eq!(
        errors(
            r#"return {
  listeners = { { bind = "127.0.0.1:8080", pool = "a" } },
  pools = { a = { servers = { { addr = "127.0.0.1:9001" } } },
    b = { servers = { "127.0.0.1:9002" } },
    c = { servers = { "127.0.0.1:9003" } },
    d = { servers = { { weight = 2 } } },
  },
}
"#
        ),
        ["6: pool \"d\" server 1: addr is missing (addr = \"127.0.0.1:9001\")"]
    );
}

/// Tables written in the wrong shape are named as such, at their line.
#[test]
fn a_list_written_as_a_map_or_a_map_as_a_list_is_named() {
    let shape = "pools is a table of name = pool, like pools = { app = { servers = { \"127.0.0.1:9001\" } } }";
    assert_eq!(
        errors(
            r#"return {
  listeners = { { bind = "127.0.0.1:8080", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:9001" } },
    [1] = { servers = { "127.0.0.1:9002" } } },
}
"#
        ),
        [format!("4: pools[1] is a table with no name: {shape}")]
    );
    assert_eq!(
        errors(
            r#"return {
  listeners = { { bind = "127.0.0.1:8080", pool = "app" } },
  pools = { "127.0.0.1:9001" },
}
"#
        ),
        [format!(
            "3: pools[1] is a string (\"127.0.0.1:9001\") with no name: {shape}"
        )]
    );
    assert_eq!(
        errors(
            r#"return {
  listeners = { bind = "127.0.0.1:8090", pool = "app" },
  pools = { app = { servers = "127.0.0.1:9001" } },
}
"#
        ),
        [
            "2: listeners is a list of listener tables: write listeners = { { bind = ..., pool = ... } }",
            "3: pool \"app\": servers is a list: write servers = { \"127.0.0.1:9001\" }",
        ]
    );
}

/// A misspelt key says what was meant, and its "missing" error is not
/// added; a listener is named one way in every message.
#[test]
fn a_misspelt_key_brings_no_false_missing_error() {
    assert_eq!(
        errors(
            r#"return {
  listeners = { { bind = "127.0.0.1:8080", pool = "app" },
    { name = "adm", bnd = "127.0.0.1:8091", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:9001", { adr = "127.0.0.1:9004" } } } },
}
"#
        ),
        [
            "3: listener \"adm\": unknown key \"bnd\" (did you mean \"bind\"?)",
            "4: pool \"app\" server 2: unknown key \"adr\" (did you mean \"addr\"?)",
        ]
    );
}

/// Every value error echoes the value and its type with the right
/// article, and the range allowed; every independent error of one table
/// is reported in one pass.
#[test]
fn value_errors_echo_the_value_its_type_and_the_range() {
    assert_eq!(
        errors(
            r#"return {
  listeners = { { bind = 8090, pool = "a" },
    { name = 5, bind = "127.0.0.1:8081", keepalive = "2 s" } },
  pools = {
    a = { servers = { { addr = "127.0.0.1:9001", weight = "3" } }, retries = "two" },
    b = { servers = { "127.0.0.1:9002" }, retries = -1, timeouts = { response = -1 } },
    c = { servers = { "127.0.0.1:9003" },
          check = { http = "health", interval = "5ms", timeout = "1ms", rise = 0 } },
  },
  on_response = 5,
  on_request = pocket.regex("x"),
}
"#
        ),
        [
            "2: listeners[1]: bind must be a string like \"127.0.0.1:8080\", not a number (8090)",
            "3: listeners[2]: name must be a string, not a number (5)",
            "3: listeners[2]: keepalive: \"2 s\" is not a duration: write the number and its unit together, like \"2s\"",
            "5: pool \"a\": retries must be a whole number from 0 to 10, not a string (\"two\")",
            "5: pool \"a\" server 127.0.0.1:9001: weight must be a whole number from 1 to 256, not a string (\"3\")",
            "6: pool \"b\": retries must be a whole number from 0 to 10, not a number (-1)",
            "6: pool \"b\": timeouts.response: must be a duration from 0s to 24h, not a number (-1)",
            "8: pool \"c\" check: http must be like \"GET /health\", not \"health\"",
            "8: pool \"c\" check: interval must be at least 10ms, not a string (\"5ms\")",
            "8: pool \"c\" check: timeout must be at least 10ms, not a string (\"1ms\")",
            "8: pool \"c\" check: rise must be a whole number from 1 to 100, not a number (0)",
            "10: on_response must be a function, not a number (5)",
            "11: on_request must be a function, not a regex (pocket.regex)",
        ]
    );
}

/// Values that were silently accepted are refused, at their line.
#[test]
fn wrong_values_once_accepted_are_refused() {
    assert_eq!(
        errors(
            r#"return {
  listeners = { { bind = "127.0.0.1:8080", pool = "a" } },
  "stray",
  pools = {
    a = { servers = { "127.0.0.1:9001" }, check = { tcp = true, run = 5 } },
    b = { servers = { "127.0.0.1:9002" }, check = { script = "yes", tcp = true } },
    c = { servers = { "127.0.0.1:9003" }, check = { run = "x" } },
    d = { servers = { "127.0.0.1:9004" }, check = { tcp = true, timeout = "1" } },
    e = { servers = { "127.0.0.1:9005" }, balance = "hash", hash_key = "cookie:" },
    f = { servers = { "127.0.0.1:9006" }, balance = "hash", hash_key = "cookie:a b" },
    g = { servers = { "127.0.0.1:9007" }, balance = "hash", hash_key = "cookie:a;b" },
  },
}
"#
        ),
        [
            "3: policy: a string (\"stray\") has no key: every entry is key = value (known: on_health, on_check, listeners, pools, on_connect, on_request, on_response, tests, admin, log, stores, resolvers)",
            "5: pool \"a\" check: run must be a function(server), not a number (5)",
            "5: pool \"a\" check: say one of tcp = true, http = \"GET /path\", run = function or script = true, not several",
            "6: pool \"b\" check: script must be true or false, not a string (\"yes\")",
            "6: pool \"b\" check: say one of tcp = true, http = \"GET /path\", run = function or script = true, not several",
            "7: pool \"c\" check: run must be a function(server), not a string (\"x\")",
            "8: pool \"d\" check: timeout: \"1\" has no unit: write \"1s\" (or ms, m, h)",
            "9: pool \"e\": bad cookie name in hash_key \"cookie:\" (a cookie name is one word, like \"cookie:session\")",
            "10: pool \"f\": bad cookie name in hash_key \"cookie:a b\" (a cookie name is one word, like \"cookie:session\")",
            "11: pool \"g\": bad cookie name in hash_key \"cookie:a;b\" (a cookie name is one word, like \"cookie:session\")",
        ]
    );
}

/// A loop of fallbacks is one mistake: one error naming the loop.
#[test]
fn a_fallback_loop_is_one_error_naming_the_loop() {
    assert_eq!(
        errors(
            r#"return {
  listeners = { { bind = "127.0.0.1:8080", pool = "a" } },
  pools = {
    b = { servers = { "127.0.0.1:9002" }, fallback = "a" },
    a = { servers = { "127.0.0.1:9001" }, fallback = "b" },
  },
}
"#
        ),
        ["5: pool \"a\": fallbacks loop: a → b → a"]
    );
}

/// A main chunk that raises a table is placed at the `error` call; a
/// syntax error in a module is said at the module's own line.
#[test]
fn errors_raised_with_tables_and_in_modules_are_placed() {
    let dir = tempfile::tempdir().unwrap();
    let t8 = write_policy(dir.path(), "t8.lua", "local x = 1\nerror({})\n");
    let t9 = write_policy(
        dir.path(),
        "t9.lua",
        "local x = 1\n\nerror(setmetatable({}, {__tostring=function() return \"boom\" end}))\n",
    );
    write_policy(
        dir.path(),
        "badmod.lua",
        "local M = {}\nfunction M.f()\n  if true then\n    return 1\n\nreturn M\n",
    );
    let t4 = write_policy(
        dir.path(),
        "t4.lua",
        "local m = require(\"badmod\")\nreturn {}\n",
    );
    let (_, _, err) = pocket_cmd(&["check", t8.to_str().unwrap()]);
    assert_eq!(
        err.trim(),
        format!(
            "{}:2: error raised with a table value (no message)",
            t8.display()
        )
    );
    let (_, _, err) = pocket_cmd(&["check", t9.to_str().unwrap()]);
    assert_eq!(err.trim(), format!("{}:3: boom", t9.display()));
    let (_, _, err) = pocket_cmd(&["check", t4.to_str().unwrap()]);
    assert_eq!(
        err.trim(),
        format!(
            "{}:6: 'end' expected (to close 'if' at line 3) near 'return'",
            dir.path().join("badmod.lua").display()
        )
    );
}

/// A misspelt key in a `pocket.match` rule is placed at its own line,
/// lists the rule keys, and does not hide a rule above that names a pool
/// the policy does not define.
#[test]
fn a_misspelt_route_key_is_at_its_line_and_hides_no_pool_error() {
    assert_eq!(
        errors(
            r#"local match = require "pocket.match"
local routes = match.routes {
  { prefix = "/static/", pool = "statc" },
  { prfix = "/api/", pool = "app" },
}
return {
  listeners = { { bind = "127.0.0.1:8080", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:9001" } }, static = { servers = { "127.0.0.1:9002" } } },
  on_request = function(req) return routes:route(req) end,
}
"#
        ),
        [
            "3: pool \"statc\" is not defined in pools (pools: app, static)",
            "4: route 2: unknown key \"prfix\" (known: prefix, path, regex, host, method, header, cookie, pool, respond, redirect)",
        ]
    );
}

/// A lab scenario's errors: each real mistake at its own line, a
/// misspelt `duration` with no false "past the duration" follow-ons, and
/// the fault names listed as fault names.
#[test]
fn a_lab_scenario_reports_each_real_mistake_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(
        dir.path(),
        "badlab.lua",
        r#"return {
  name = "bad",
  duraton = "6s",
  origins = { "A", "B" },
  policy = [[ return { listeners = { { bind = "{{listen}}", pool = "app" } }, pools = { app = { servers = { "{{A}}", "{{B}}" } } } } ]],
  faults = {
    { at = "2s", server = "B", fault = "kil" },
    { at = "4s", server = "C", fault = "restart" },
  },
}
"#,
    );
    let (code, _, err) = pocket_cmd(&["lab", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    let p = path.display();
    assert_eq!(
        err.trim().strip_prefix("pocket lab: ").unwrap_or(err.trim()),
        format!(
            "{p}:3: scenario: unknown key \"duraton\" (did you mean \"duration\"?)\n\
             {p}:7: unknown fault \"kil\" for a server (faults for a server: kill, restart, refuse, blackhole, drop, cut, reset_after_headers, slow, flap, lie, heal, announce; for the balancer: reload, restart, hang_worker, flush_arp)\n\
             {p}:8: fault \"restart\" names server \"C\", which the scenario does not declare (origins: A, B)"
        )
    );
}

/// A pool the policy takes from its own module is reported at the
/// module's line, whether the policy takes one pool or the whole table.
#[test]
fn a_value_from_a_module_is_reported_at_the_modules_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    write_policy(
        dir.path(),
        "lib/pools.lua",
        "return {\n  web = {\n    servers = { \"127.0.0.1:9001\" },\n    balance = \"maglev\",\n  },\n}\n",
    );
    let one = write_policy(
        dir.path(),
        "one.lua",
        "local p = require(\"lib.pools\")\nreturn {\n  listeners = { { bind = \"127.0.0.1:8080\", pool = \"web\" } },\n  pools = { web = p.web },\n}\n",
    );
    let all = write_policy(
        dir.path(),
        "all.lua",
        "local pools = require \"lib.pools\"\nreturn {\n  listeners = { { bind = \"127.0.0.1:8080\", pool = \"web\" } },\n  pools = pools,\n}\n",
    );
    let want = format!(
        "{}:4: pool \"web\": unknown balance algorithm \"maglev\" (known: {BAL})",
        dir.path().join("lib/pools.lua").display()
    );
    for policy in [one, all] {
        let (code, _, err) = pocket_cmd(&["check", policy.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert_eq!(err.trim(), want);
    }
}

/// A server table with its address written without `addr =`: one error
/// saying so, no second one about `addr` missing.
#[test]
fn a_server_address_without_its_key_is_one_error() {
    assert_eq!(
        errors(
            r#"return {
  listeners = { { bind = "127.0.0.1:8080", pool = "app" } },
  pools = { app = { servers = {
    { "127.0.0.1:9001", weight = 2 },
  } } },
}
"#
        ),
        ["4: pool \"app\" server 1: a string (\"127.0.0.1:9001\") has no key: every entry is key = value (known: addr, srv, weight, backup)"]
    );
}

/// Tables that name each other many times (`app.k0 = b` ... `b.k39 =
/// app`): finding the line of an error follows each name once, so
/// `pocket check` ends and the error is at its own line.
#[test]
fn tables_that_name_each_other_do_not_hang_the_error_line() {
    let keys = |v: &str| -> String {
        (0..40)
            .map(|i| format!("  k{i} = {v},\n"))
            .collect::<String>()
    };
    let src = format!(
        "local b = {{}}\nlocal app = {{\n  servers = {{ \"127.0.0.1:9001\" }},\n  balance = 5,\n{}}}\nb = {{\n{}}}\nreturn {{\n  listeners = {{ {{ bind = \"127.0.0.1:8080\", pool = \"app\" }} }},\n  pools = {{ app = app }},\n}}\n",
        keys("b"),
        keys("app")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", &src);
    let (code, err) = check_within(&path, std::time::Duration::from_secs(60));
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "{}:4: pool \"app\": balance must be an algorithm name ({BAL}) or a function(servers, req), not a number (5)",
            path.display()
        )
    );
    // Then the 40 keys a pool does not know, each at its own line.
    assert_eq!(lines.len(), 41, "{err}");
    assert!(lines[1].starts_with(&format!(
        "{}:5: pool \"app\": unknown key \"k0\"",
        path.display()
    )));
}

/// Echoed values are short: a float as Lua writes it (`1e+300`, not 301
/// digits), a long string cut with `...`; a reversed status range in a
/// check is called one, not "not a table".
#[test]
fn echoed_values_are_short_and_a_reversed_range_is_named() {
    let long = "9".repeat(300);
    let (code, path, lines) = check(&format!(
        r#"return {{
  listeners = {{ {{ bind = "127.0.0.1:8080", pool = "app" }} }},
  pools = {{
    app = {{
      servers = {{ "127.0.0.1:9001" }},
      slow_start = 1e300,
      check = {{ http = "/health", interval = "{long}", expect = {{ 299, 200 }} }},
    }},
  }},
}}
"#
    ));
    assert_eq!(code, 1);
    let text = lines.join("\n");
    assert!(text.contains("a number (1e+300)"), "{text}");
    assert!(!text.contains(&"0".repeat(30)), "{text}");
    assert!(
        text.contains(&format!("\"{}...\"", "9".repeat(80))),
        "{text}"
    );
    assert!(!text.contains(&"9".repeat(81)), "{text}");
    assert!(
        text.contains(&format!(
            "{path}:7: pool \"app\": check: expect = {{299, 200}} is a reversed range: write the lower status first, {{200, 299}}"
        )) || text.contains("is a reversed range: write the lower status first, {200, 299}"),
        "{text}"
    );
    assert!(!text.contains("not a table"), "{text}");
}
