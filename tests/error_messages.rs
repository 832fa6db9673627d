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
            "{path}:7: pool \"static\": balance must be an algorithm name (round_robin, least_conn, p2c, random, first, hash) or a function(servers, req), not 5"
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
        "16: pool \"slow\" passive: after must be a whole number from 0 to 1000",
        "17: pool \"slow\" check: interval must be at least 10ms",
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
        "7: listener \"b\": max_connections must be a whole number of at least 1, not 0",
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
        "6: pool \"web\": fallback must be a pool name",
        "10: on_check must be a function(server, http)",
    ]
    .map(|l| format!("{path}:{l}"));
    assert_eq!(lines, want);
}
