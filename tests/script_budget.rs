//! Natives a script can make expensive stay inside the time budget: a
//! pattern that backtracks for seconds in Lua's own matcher is stopped at
//! the hook budget (a 500, the worker keeps serving) and at the load
//! budget (`pocket check` refuses the policy). A loop of calls each
//! linear in a big string stops too, and `string.rep` of an empty string
//! answers at once.

mod common;
use common::*;

/// `string.rep("a", 330):find(".-.-.-b")` ran 3 s in Lua's C matcher
/// (time grows as n^4), out of reach of the instruction hook.
const RUNAWAY: &str = r#"string.rep("a", 330):find(".-.-.-b")"#;

fn policy(api: &OriginHandle) -> String {
    format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "api" }} }},
  pools = {{ api = {{ servers = {{ "{}" }} }} }},
  on_request = function(req)
    if req.path == "/find" then
      local found = {RUNAWAY}
    elseif req.path == "/gsub" then
      local n = select(2, string.rep("a", 1e6):gsub("a-b", ""))
    elseif req.path == "/pcall" then
      local ok = pcall(string.find, string.rep("a", 1e6), "a-b")
      req:set_header("x-swallowed", tostring(ok))
    elseif req.path == "/upper" then
      local s = string.rep("x", 4e6); for i = 1, 1e6 do s:upper() end
    elseif req.path == "/rep" then
      local s = string.rep("", math.maxinteger)
    elseif req.path == "/stack" then
      -- grows the Lua stack by more than 64 KiB again and again: once past
      -- the deadline, that allocation is refused while Lua moves the stack
      local s = ("x"):rep(5000)
      while true do local t = {{s:byte(1, 5000)}} end
    end
  end,
}}"#,
        api.addr
    )
}

#[tokio::test]
async fn a_runaway_pattern_costs_one_request_and_the_workers_keep_serving() {
    let api = origin("api");
    let pocket = Pocket::start(&policy(&api), 2);
    let addr = pocket.addr("web");
    // The line is the one that called the pattern function; behind a
    // pcall the budget error may surface at the next instruction check
    // instead, wherever that lands (as for any runaway under pcall).
    for (path, line) in [
        ("/find", "policy.lua:6:"),
        ("/gsub", "policy.lua:8:"),
        ("/pcall", ""),
        ("/upper", "policy.lua:13:"),
        ("/stack", ""),
    ] {
        let from = pocket.log.lines().len();
        let started = std::time::Instant::now();
        let r = get(addr, path).await;
        assert_eq!(r.status, 500, "{path}: {}", r.text());
        eprintln!("{path}: stopped after {:?}", started.elapsed());
        pocket
            .log
            .wait_for_after(from, &[line, "script stopped: it ran past its time budget"]);
        // both workers (the connections land on either) still serve
        for _ in 0..4 {
            let ok = get(addr, "/fine").await;
            assert_eq!(ok.status, 200, "after {path}");
        }
    }
    // Lua's own string.rep loops n times even for an empty result
    let r = get(addr, "/rep").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.request_count(), 21, "only the fine requests went out");
}

#[test]
fn check_refuses_a_main_chunk_that_runs_a_runaway_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(
        dir.path(),
        "policy.lua",
        &format!(
            r#"local found = {RUNAWAY}
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:8080", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "127.0.0.1:9001" }} }} }},
}}"#
        ),
    );
    let (code, out, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("policy.lua:1:") && err.contains("ran past its time budget"),
        "{err}"
    );
}
