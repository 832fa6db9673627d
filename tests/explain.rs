//! `pocket explain`: one request through the policy's decision, printed
//! (hooks, the pocket.match route and its line, the pool, the hash key,
//! every server with why it was skipped, the one chosen). Runs the real
//! binary; no network.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn policy(src: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", src);
    (dir, path)
}

/// `pocket explain` with these arguments after the policy: (exit code,
/// stdout, stderr).
fn explain(path: &Path, args: &[&str]) -> (i32, String, String) {
    let p = path.to_str().unwrap();
    let all: Vec<&str> = ["explain", p].iter().chain(args).copied().collect();
    pocket_cmd(&all)
}

/// The printed line about server `addr`.
fn server_line<'a>(out: &'a str, addr: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(addr))
        .unwrap_or_else(|| panic!("no line for {addr} in:\n{out}"))
}

/// 1-based line of the first line of `src` containing `needle`.
fn line_of(src: &str, needle: &str) -> usize {
    src.lines().position(|l| l.contains(needle)).unwrap() + 1
}

const POOLS: &str = r#"
return {
  listeners = { { name = "web", bind = "127.0.0.1:8080" } },
  pools = {
    app = { servers = { "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003",
                        "127.0.0.1:9004", "127.0.0.1:9005",
                        { addr = "127.0.0.1:9009", backup = true } } },
    api = { balance = "hash", hash_key = "cookie:sid", hash_balance_factor = 125,
            servers = { "127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103" } },
    by_header = { balance = "hash", hash_key = "header:x-user",
                  servers = { "127.0.0.1:9201", "127.0.0.1:9202" } },
  },
  on_request = function(req)
    if req.path == "/forbidden" then return pocket.respond(403, "not here\n") end
    if req.path:sub(1, 5) == "/api/" then return "api" end
    if req.path:sub(1, 5) == "/usr/" then return "by_header" end
    return "app"
  end,
}
"#;

#[test]
fn each_skip_reason_is_named_next_to_its_server() {
    let (_d, path) = policy(POOLS);
    let (code, out, err) = explain(
        &path,
        &[
            "GET http://example.com/page",
            "--down",
            "127.0.0.1:9001",
            "--drain",
            "127.0.0.1:9002",
            "--maint",
            "127.0.0.1:9003",
            "--tried",
            "127.0.0.1:9004",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("hook on_request: returned pool \"app\""),
        "{out}"
    );
    assert!(out.contains("pool \"app\""), "{out}");
    // Nothing on stderr that reads as if a running Pocket had been told
    // to drain a server (the proxy's own log is at "error" for explain).
    let quiet = std::process::Command::new(pocket_bin())
        .args([
            "explain",
            path.to_str().unwrap(),
            "GET http://example.com/page",
        ])
        .args(["--drain", "127.0.0.1:9002"])
        .env_remove("POCKET_LOG")
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert_eq!(
        String::from_utf8_lossy(&quiet.stderr),
        "",
        "explain's stderr"
    );
    assert!(
        server_line(&out, "127.0.0.1:9001").contains("skipped: down"),
        "{out}"
    );
    assert!(
        server_line(&out, "127.0.0.1:9002").contains("skipped: drain"),
        "{out}"
    );
    assert!(
        server_line(&out, "127.0.0.1:9003").contains("skipped: maint"),
        "{out}"
    );
    assert!(
        server_line(&out, "127.0.0.1:9004").contains("skipped: already tried"),
        "{out}"
    );
    assert!(
        server_line(&out, "127.0.0.1:9009").contains("skipped: backup"),
        "{out}"
    );
    // The only primary left is the one chosen.
    assert!(
        server_line(&out, "127.0.0.1:9005").ends_with("chosen"),
        "{out}"
    );
    assert!(out.contains("chosen: 127.0.0.1:9005"), "{out}");
    let compact = out.lines().find(|l| l.starts_with("compact: ")).unwrap();
    for part in [
        "on_request=pool:app(",
        "pool=app",
        "balance=round_robin",
        "127.0.0.1:9001:down",
        "127.0.0.1:9002:drain",
        "127.0.0.1:9003:maint",
        "127.0.0.1:9004:tried",
        "127.0.0.1:9009:backup",
        "chose=127.0.0.1:9005",
    ] {
        assert!(compact.contains(part), "{part} missing from {compact}");
    }
}

#[test]
fn with_every_primary_out_the_backup_is_chosen() {
    let (_d, path) = policy(POOLS);
    let mut args = vec!["GET http://example.com/"];
    for a in [
        "127.0.0.1:9001",
        "127.0.0.1:9002",
        "127.0.0.1:9003",
        "127.0.0.1:9004",
        "127.0.0.1:9005",
    ] {
        args.extend(["--down", a]);
    }
    let (code, out, err) = explain(&path, &args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chosen: 127.0.0.1:9009"), "{out}");
    // And with the backup down too: nobody, a 503.
    args.extend(["--down", "127.0.0.1:9009"]);
    let (_, out, _) = explain(&path, &args);
    assert!(out.contains("chosen: none"), "{out}");
    assert!(out.contains("503"), "{out}");
}

#[test]
fn a_hash_pool_shows_its_key_and_the_bounded_load() {
    let (_d, path) = policy(POOLS);
    // Which server owns sid=42: the one chosen with no load anywhere.
    let (code, out, err) = explain(
        &path,
        &["GET http://example.com/api/x", "-H", "Cookie: a=1; sid=42"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("balance hash"), "{out}");
    assert!(out.contains("hash key: cookie sid = \"42\""), "{out}");
    let owner = out
        .lines()
        .find_map(|l| l.strip_prefix("chosen: "))
        .unwrap()
        .to_string();
    // Loaded past the bound (factor 125% of the average), it is skipped.
    let load = format!("{owner}=5");
    let (code, out, err) = explain(
        &path,
        &[
            "GET http://example.com/api/x",
            "-H",
            "Cookie: sid=42",
            "--in-flight",
            &load,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        server_line(&out, &owner).contains("skipped: over the bounded load (5 in flight, bound 3)"),
        "{out}"
    );
    assert!(!out.contains(&format!("chosen: {owner}")), "{out}");
    assert!(
        server_line(&out, &owner).contains("(key's server)"),
        "{out}"
    );
    assert!(out.contains(&format!("owner={owner}")), "{out}");
    assert!(out.contains(&format!("{owner}:load5>=3")), "{out}");
    // A loaded server the ring walk never reached was not skipped for it.
    let chosen = out
        .lines()
        .find_map(|l| l.strip_prefix("chosen: "))
        .unwrap()
        .to_string();
    let third = ["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"]
        .into_iter()
        .find(|a| *a != owner && *a != chosen)
        .unwrap();
    let third_load = format!("{third}=5");
    let (_, out, _) = explain(
        &path,
        &[
            "GET http://example.com/api/x",
            "-H",
            "Cookie: sid=42",
            "--in-flight",
            &third_load,
        ],
    );
    assert!(out.contains(&format!("chosen: {owner}")), "{out}");
    assert!(!out.contains("over the bounded load"), "{out}");

    // A key the request does not carry: said, and round robin decides.
    let (_, out, _) = explain(&path, &["GET http://example.com/usr/1"]);
    assert!(
        out.contains("hash key: header x-user, which this request does not have"),
        "{out}"
    );
    let (_, out, _) = explain(
        &path,
        &["GET http://example.com/usr/1", "-H", "X-User: bob"],
    );
    assert!(out.contains("hash key: header x-user = \"bob\""), "{out}");
}

#[test]
fn the_matched_route_is_named_with_its_line_in_the_policy() {
    let src = r#"-- routes, with braces in strings and comments before them
local match = require "pocket.match"
local odd = { "{", "}" } -- { not a rule }

local routes = match.routes {
  -- { a comment that looks like a rule }
  { prefix = "/static/{v}/", pool = "static" },
  { regex = [[^/api/v\d{1,3}/]], pool = "api" },

  { path = "/ping",
    respond = { 200, "pong\n" } },
  { header = { "x-debug", "1" }, pool = "static" },
  default = "app",
}

return {
  listeners = { { name = "web", bind = "127.0.0.1:8080" } },
  pools = {
    app = { servers = { "127.0.0.1:9001" } },
    static = { servers = { "127.0.0.1:9002" } },
    api = { servers = { "127.0.0.1:9003" } },
  },
  on_request = function(req) return routes:route(req) end,
}
"#;
    let (_d, path) = policy(src);
    let p = path.display().to_string();
    for (url, headers, rule, needle, gave) in [
        ("/api/v2/items", None, 2, "^/api/v", "pool \"api\""),
        (
            "/static/{v}/a.css",
            None,
            1,
            "prefix = \"/static/",
            "pool \"static\"",
        ),
        (
            "/ping",
            None,
            3,
            "path = \"/ping\"",
            "a response made by the route",
        ),
        ("/x", Some("X-Debug: 1"), 4, "x-debug", "pool \"static\""),
    ] {
        let target = format!("GET http://example.com{url}");
        let mut args = vec![target.as_str()];
        if let Some(h) = headers {
            args.extend(["-H", h]);
        }
        let (code, out, err) = explain(&path, &args);
        assert_eq!(code, 0, "{url}: {out}{err}");
        let want = format!(
            "pocket.match: route {rule} at {p}:{} matched: {gave}",
            line_of(src, needle)
        );
        assert!(out.contains(&want), "{url}: want {want:?} in:\n{out}");
        assert!(
            out.contains(&format!("route={p}:{}", line_of(src, needle))),
            "{url}: compact form lacks the route:\n{out}"
        );
    }
    // Nothing matches: said, at the line of the match.routes call.
    let (_, out, _) = explain(&path, &["GET http://example.com/other"]);
    let want = format!(
        "pocket.match: no route matched at {p}:{}: pool \"app\"",
        line_of(src, "match.routes {")
    );
    assert!(out.contains(&want), "want {want:?} in:\n{out}");
    assert!(out.contains("route=default"), "{out}");
}

#[test]
fn a_response_made_by_the_script_is_shown_as_such() {
    let (_d, path) = policy(POOLS);
    let (code, out, err) = explain(&path, &["GET http://example.com/forbidden"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("hook on_request: returned a 403 response"),
        "{out}"
    );
    assert!(out.contains("answered by the script: 403"), "{out}");
    assert!(!out.contains("servers of pool"), "{out}");
    assert!(out.contains("answer=403/script"), "{out}");
}

#[test]
fn pool_functions_are_listed_with_what_they_returned() {
    let (_d, path) = policy(
        r#"
return {
  listeners = { { name = "web", bind = "127.0.0.1:8080", pool = "app" } },
  pools = {
    app = { fallback = "spare",
            bypass = function(req) return req:header("x-bypass") == "1" end,
            balance = "hash", hash_key = function(req) return req:header("x-tenant") end,
            servers = { "127.0.0.1:9001", "127.0.0.1:9002" } },
    spare = { balance = function(servers, req) return #servers end,
              servers = { "127.0.0.1:9003", "127.0.0.1:9004" } },
  },
}
"#,
    );
    let (code, out, err) = explain(&path, &["GET http://example.com/", "-H", "X-Tenant: acme"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("pool \"app\" (the listener's default pool)"),
        "{out}"
    );
    assert!(
        out.contains("hook bypass (pool \"app\"): returned false"),
        "{out}"
    );
    assert!(
        out.contains("hook hash_key (pool \"app\"): returned \"acme\""),
        "{out}"
    );
    let (code, out, err) = explain(&path, &["GET http://example.com/", "-H", "X-Bypass: 1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("hook bypass (pool \"app\"): returned true: go to fallback pool \"spare\""),
        "{out}"
    );
    assert!(
        out.contains("hook balance (pool \"spare\"): returned server 127.0.0.1:9004"),
        "{out}"
    );
    assert!(out.contains("chosen: 127.0.0.1:9004"), "{out}");
}

#[test]
fn malformed_input_exits_2_with_what_is_wrong() {
    let (_d, path) = policy(POOLS);
    for (args, says) in [
        (
            vec!["GET"],
            "malformed request line \"GET\": expected METHOD URL",
        ),
        (
            vec!["GET http://example.com/ HTTP/9"],
            "unknown version \"HTTP/9\"",
        ),
        (vec!["G(T http://example.com/"], "is not a method"),
        (vec!["GET /path"], "no host"),
        (vec!["GET example.com/path"], "neither a URL"),
        (
            vec!["GET http://e.com/", "-H", "X-A: 1\r\nX-B: 2"],
            "cannot carry CR, LF or NUL",
        ),
        (
            vec!["GET /", "-H", "Host example.com"],
            "malformed header \"Host example.com\": expected \"Name: value\"",
        ),
        (
            vec!["GET http://e.com/", "-H", "Bad Name: 1"],
            "is not a header name",
        ),
        (
            vec!["GET http://e.com/", "--down", "10.0.0.1:1"],
            "no pool has this server",
        ),
        (
            vec!["GET http://e.com/", "--in-flight", "127.0.0.1:9001"],
            "expected ADDR=N",
        ),
        (
            vec!["GET http://e.com/", "--peer", "not-an-ip"],
            "invalid value 'not-an-ip'",
        ),
    ] {
        let (code, out, err) = explain(&path, &args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: want {says:?} in {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    // A request with a Host header and an origin-form target is fine.
    let (code, out, err) = explain(&path, &["GET /", "-H", "Host: example.com"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_policy_that_does_not_load_is_refused_with_its_place_as_check_does() {
    let (_d, path) = policy(
        "return {\n  listeners = { { name = \"web\", bind = \"127.0.0.1:8080\" } },\n  pools = { app = { servers = { \"127.0.0.1:9001\" }, balanse = \"x\" } },\n}\n",
    );
    let (code, out, err) = explain(&path, &["GET http://example.com/"]);
    let (check_code, _, check_err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    assert_eq!(code, check_code, "{out}{err}");
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{}:3:", path.display())), "{err}");
    assert!(err.contains("balanse"), "{err}");
    assert_eq!(err.trim(), check_err.trim());
}

/// Splits a shell command line as the docs write it: words, and
/// "double-quoted" words.
fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// Hook times change from run to run: `0.350ms` becomes `Nms`.
fn without_times(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("ms") {
        let head = &rest[..at];
        let digits = head
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')
            .len();
        if digits < head.len() {
            out.push_str(&head[..digits]);
            out.push('N');
        } else {
            out.push_str(head);
        }
        out.push_str("ms");
        rest = &rest[at + 2..];
    }
    out.push_str(rest);
    out
}

#[test]
fn the_examples_in_the_docs_are_what_pocket_explain_prints() {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/observability.md"),
    )
    .unwrap();
    let section = &page[page.find("## `pocket explain`").unwrap()..];
    let lua_start = section.find("```lua\n").unwrap() + "```lua\n".len();
    let lua_len = section[lua_start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        "shop.lua",
        &section[lua_start..lua_start + lua_len],
    );
    let mut examples = 0;
    for block in section.split("```text\n").skip(1) {
        let block = &block[..block.find("```").unwrap()];
        let Some(command) = block
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("$ pocket "))
        else {
            continue;
        };
        let expected: String = block.lines().skip(1).map(|l| format!("{l}\n")).collect();
        let args = shell_words(command);
        let out = std::process::Command::new(pocket_bin())
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{command}");
        assert_eq!(without_times(&got), without_times(&expected), "{command}");
        examples += 1;
    }
    assert_eq!(examples, 3);
}

// The live forms: a real Pocket in front of real origins.

/// A policy with a JSON access log to `log`, pool `app` of `servers`
/// checked every 200 ms, and the admin key `admin` (may be empty).
fn live_policy(log: &Path, servers: &[std::net::SocketAddr], admin: &str) -> String {
    let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"return {{
  log = {{ access = "{}", format = "json" }},
  {admin}
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ {} }},
    check = {{ http = "GET /health", expect = 200, interval = "200ms", timeout = "2s", rise = 2, fall = 2 }} }} }},
}}"#,
        log.display(),
        list.join(", ")
    )
}

/// The first line of the log file at `path` containing `needle`.
fn log_line(path: &Path, needle: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no line with {needle:?} in {path:?}:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The value of the JSON line's field `name`, read by Python's json module
/// (as a log shipper would); "None" when it is absent.
fn json_field(line: &str, name: &str) -> String {
    require_command("python3", "python3");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2]))",
            line,
            name,
        ])
        .output()
        .expect("python3");
    assert!(out.status.success(), "not a JSON line: {line}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn explained(path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    request("GET", path, &[("x-pocket-explain", "1")], "")
}

#[tokio::test]
async fn a_listed_client_gets_the_trace_in_a_header_and_the_log_line() {
    let a = origin("A");
    let b = origin("B");
    let b_addr = b.addr;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let admin = r#"admin = { bind = "127.0.0.1:0", explain_from = { "127.0.0.1" } },"#;
    let pocket = Pocket::start(&live_policy(&log, &[a.addr, b.addr], admin), 1);
    let addr = pocket.addr("web");

    let r = send(addr, explained("/first")).await;
    assert_eq!(r.status, 200);
    let trace = r
        .header("x-pocket-explain")
        .expect("an X-Pocket-Explain header");
    let server = r.header("x-origin").unwrap();
    let chosen = if server == "A" { a.addr } else { b_addr };
    assert!(trace.contains("pool=app balance=round_robin"), "{trace}");
    assert!(trace.contains(&format!("chose={chosen}")), "{trace}");
    // The log line of that request carries the same trace.
    let line = log_line(&log, "/first");
    assert_eq!(json_field(&line, "trace"), trace, "{line}");
    // The header is Pocket's: the server never sees it.
    let r = send(addr, explained("/headers")).await;
    assert!(
        !r.text().to_ascii_lowercase().contains("x-pocket-explain"),
        "{}",
        r.text()
    );
    // Not asked: no header, no trace in the log.
    let r = get(addr, "/plain").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-pocket-explain"), None);
    assert_eq!(json_field(&log_line(&log, "/plain"), "trace"), "None");

    drop(b);
    pocket
        .log
        .wait_for(&[&format!("server {b_addr} of pool app is DOWN")]);
    let r = send(addr, explained("/after")).await;
    assert_eq!(r.status, 200);
    let trace = r.header("x-pocket-explain").unwrap();
    assert!(trace.contains(&format!("{b_addr}:down")), "{trace}");
    assert!(trace.contains(&format!("chose={}", a.addr)), "{trace}");
}

#[tokio::test]
async fn a_retry_after_a_refused_connect_shows_each_pick() {
    let a = origin("A");
    let dead = dead_addr();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let admin = r#"admin = { bind = "127.0.0.1:0", explain_from = { "::1", "127.0.0.1" } },"#;
    // No check: the dead server stays up until traffic says otherwise.
    let policy = live_policy(&log, &[dead, a.addr], admin).replace(
        r#",
    check = { http = "GET /health", expect = 200, interval = "200ms", timeout = "2s", rise = 2, fall = 2 }"#,
        "",
    );
    let pocket = Pocket::start(&policy, 1);
    let addr = pocket.addr("web");
    let mut seen = None;
    for _ in 0..4 {
        let r = send(addr, explained("/retry")).await;
        assert_eq!(r.status, 200);
        let trace = r.header("x-pocket-explain").unwrap();
        if trace.contains("failed=") {
            seen = Some(trace);
            break;
        }
    }
    let trace = seen.expect("one of 4 round-robin requests went to the dead server first");
    assert!(
        trace.contains(&format!("chose={dead} failed={dead}:connect_failed")),
        "{trace}"
    );
    assert!(
        trace.contains(&format!("{dead}:tried")) && trace.ends_with(&format!("chose={}", a.addr)),
        "{trace}"
    );
}

#[tokio::test]
async fn a_client_not_listed_or_a_policy_without_explain_from_gets_no_trace() {
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    for admin in [
        r#"admin = { bind = "127.0.0.1:0", explain_from = { "192.0.2.7" } },"#,
        r#"admin = { bind = "127.0.0.1:0" },"#,
        "",
    ] {
        let pocket = Pocket::start(&live_policy(&log, &[a.addr], admin), 1);
        let addr = pocket.addr("web");
        let r = send(addr, explained("/headers")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-pocket-explain"), None, "{admin}");
        let forwarded = r.text().to_ascii_lowercase().contains("x-pocket-explain");
        // With explain_from the header is Pocket's, asked by anyone:
        // removed. Without, it means nothing to Pocket: forwarded as is.
        assert_eq!(
            forwarded,
            !admin.contains("explain_from"),
            "{admin}: {}",
            r.text()
        );
    }
}

#[tokio::test]
async fn the_live_trace_names_the_matched_route_and_its_line() {
    let a = origin("A");
    let b = origin("B");
    let src = format!(
        r#"local match = require "pocket.match"
local routes = match.routes {{
  {{ prefix = "/api/", pool = "api" }},
  {{ path = "/ping", respond = {{ 200, "pong\n" }} }},
  default = "app",
}}
return {{
  admin = {{ bind = "127.0.0.1:0", explain_from = {{ "127.0.0.1" }} }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0" }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }}, api = {{ servers = {{ "{}" }} }} }},
  on_request = function(req) return routes:route(req) end,
}}"#,
        a.addr, b.addr
    );
    let pocket = Pocket::start(&src, 1);
    let addr = pocket.addr("web");
    let policy = pocket.policy.display().to_string();
    // Unexplained lookups first: they must not show up in a later trace.
    for _ in 0..3 {
        assert_eq!(get(addr, "/api/x").await.status, 200);
    }
    let r = send(addr, explained("/api/users")).await;
    let trace = r.header("x-pocket-explain").unwrap();
    let want = format!("route={policy}:{}", line_of(&src, "prefix = \"/api/\""));
    assert!(trace.contains(&want), "want {want:?} in {trace}");
    assert_eq!(trace.matches("route=").count(), 1, "{trace}");
    assert!(trace.contains(&format!("chose={}", b.addr)), "{trace}");

    let r = send(addr, explained("/ping")).await;
    assert_eq!(r.text(), "pong\n");
    let trace = r.header("x-pocket-explain").unwrap();
    let want = format!("route={policy}:{}", line_of(&src, "path = \"/ping\""));
    assert!(
        trace.contains(&want) && trace.contains("answer=200/script"),
        "{trace}"
    );

    let r = send(addr, explained("/other")).await;
    let trace = r.header("x-pocket-explain").unwrap();
    assert!(
        trace.contains("route=default") && trace.contains("pool=app"),
        "{trace}"
    );
}

// What the live listener does with the same bytes: each input a breaker
// found where `pocket explain` and a real Pocket disagreed, and its kind.

/// Routes by what the script reads, so that the pool named by `pocket
/// explain` and the origin that answers a real request say the same
/// thing: `lower` for a lower-case method, `peer` for the address
/// 10.1.2.3, `abs`/`other` by host, else `rest`.
fn routing_policy(a: &str, b: &str, c: &str, d: &str, e: &str) -> String {
    format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0" }} }},
  pools = {{
    abs = {{ servers = {{ "{a}" }} }},
    other = {{ servers = {{ "{b}" }} }},
    lower = {{ servers = {{ "{c}" }} }},
    peer = {{ servers = {{ "{d}" }} }},
    rest = {{ servers = {{ "{e}" }} }},
  }},
  on_request = function(req)
    if req.method == "get" then return "lower" end
    if req.peer_ip == "10.1.2.3" then return "peer" end
    if req.host == "abs.example" then return "abs" end
    if req.host == "other" then return "other" end
    return "rest"
  end,
}}"#
    )
}

/// What a user sees: the pool that served it, or the status of a refusal.
#[derive(Debug, PartialEq)]
enum Seen {
    Pool(String),
    Status(u16),
}

#[tokio::test]
async fn explain_says_what_the_live_listener_does_with_the_same_request() {
    let names = ["A", "B", "C", "D", "E"];
    let pools = ["abs", "other", "lower", "peer", "rest"];
    let origins: Vec<_> = names.iter().map(|n| origin(n)).collect();
    let addr = |i: usize| origins[i].addr.to_string();
    let src = routing_policy(&addr(0), &addr(1), &addr(2), &addr(3), &addr(4));
    let pocket = Pocket::start(&src, 1);
    let live_addr = pocket.addr("web");
    let (_d, path) = policy(&src);

    let big = "a".repeat(100 * 1024);
    let long = format!("/{}", "a".repeat(40 * 1024));
    // (request line, headers, what it is about, extra text explain must say)
    let cases: Vec<(String, Vec<String>, &str, Option<&str>)> = vec![
        // RFC 9112 §3.2.2: the absolute form's authority wins over Host.
        (
            "GET http://abs.example/p".into(),
            vec!["Host: other".into()],
            "absolute form and Host",
            Some("request: GET http://abs.example/p "),
        ),
        // The listener's head_size: 431 for the head, 414 for the line.
        (
            "GET /p".into(),
            vec!["Host: h".into(), format!("X-Big: {big}")],
            "a 100 KB header",
            Some("head_size"),
        ),
        (
            format!("GET {long}"),
            vec!["Host: h".into()],
            "a 40 KB request line",
            Some("head_size"),
        ),
        // At most 100 header fields on HTTP/1 (hyper's count): 431 at the
        // 101st, however small the head.
        (
            "GET /p".into(),
            std::iter::once("Host: h".to_string())
                .chain((1..=100).map(|i| format!("X-H{i}: v")))
                .collect(),
            "101 header fields",
            Some("431 at listener \"web\", before any hook runs: too many header fields (more than 100)"),
        ),
        // A port out of range is kept as the proxy keeps it.
        (
            "GET http://h:99999/p".into(),
            vec![],
            "port 99999",
            Some("request: GET http://h:99999/p "),
        ),
        // hyper passes a lower-case method on as an extension method.
        (
            "get http://h/p".into(),
            vec![],
            "lower-case get",
            Some("request: get "),
        ),
        // No TLS listener: the scheme is not part of the decision.
        (
            "GET https://h/p".into(),
            vec![],
            "https",
            Some("plain HTTP"),
        ),
        (
            "GET ftp://h/p".into(),
            vec![],
            "ftp",
            Some("scheme is not http"),
        ),
        // Non-ASCII hosts: refused, and why.
        (
            "GET http://bücher.example/p".into(),
            vec![],
            "IDN in the URL",
            Some("punycode"),
        ),
        (
            "GET /p".into(),
            vec!["Host: bücher.example".into()],
            "IDN in Host",
            Some("punycode"),
        ),
        // Refused by the proxy or hyper before the script, as live.
        (
            "CONNECT h:443".into(),
            vec![],
            "CONNECT",
            Some("request: CONNECT h:443 "),
        ),
        (
            "GET /p".into(),
            vec!["Host: h".into(), "Host: i".into()],
            "two Host lines",
            None,
        ),
        (
            "GET /p".into(),
            vec!["Host: h".into(), "Transfer-Encoding: gzip".into()],
            "a transfer coding hyper refuses",
            None,
        ),
        // req.peer_ip is the connection's address, never X-Forwarded-For.
        (
            "GET http://h/p".into(),
            vec!["X-Forwarded-For: 10.1.2.3".into()],
            "X-Forwarded-For",
            None,
        ),
    ];
    for (line, headers, what, says) in &cases {
        // The live listener, with the bytes a client sends.
        let (method, target) = line.split_once(' ').unwrap();
        let mut wire = format!("{method} {target} HTTP/1.1\r\n");
        if !headers.iter().any(|h| h.starts_with("Host:")) {
            let host = match target.split_once("://") {
                Some((_, rest)) => rest.split('/').next().unwrap(),
                None => target,
            };
            wire.push_str(&format!("Host: {host}\r\n"));
        }
        for h in headers {
            wire.push_str(&format!("{h}\r\n"));
        }
        wire.push_str("Connection: close\r\n\r\n");
        let answer = raw(live_addr, wire.as_bytes()).await;
        let status: u16 = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no answer: {answer:?}"));
        let live = match answer.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-origin: ")
                .map(str::to_string)
        }) {
            Some(o) if status == 200 => {
                let i = names
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(o.trim()))
                    .unwrap();
                Seen::Pool(pools[i].to_string())
            }
            _ => Seen::Status(status),
        };

        // pocket explain, with the same request.
        let mut args: Vec<&str> = vec![line];
        for h in headers {
            args.extend(["-H", h]);
        }
        let (code, out, err) = explain(&path, &args);
        assert_eq!(code, 0, "{what}: {out}{err}");
        let explained = match out
            .lines()
            .find_map(|l| l.strip_prefix("refused by Pocket: "))
        {
            Some(r) => Seen::Status(r[..3].parse().unwrap()),
            None => {
                let l = out
                    .lines()
                    .find(|l| l.starts_with("pool \""))
                    .unwrap_or_else(|| panic!("{what}: no pool in:\n{out}"));
                Seen::Pool(l.split('"').nth(1).unwrap().to_string())
            }
        };
        assert_eq!(
            explained, live,
            "{what}: explain says\n{out}\nthe live listener answered:\n{answer}"
        );
        if let Some(says) = says {
            assert!(out.contains(says), "{what}: want {says:?} in\n{out}");
        }
    }

    // 100 header fields pass (the URL's host is the 100th).
    let hundred: Vec<String> = (1..=99).map(|i| format!("X-H{i}: v")).collect();
    let mut args = vec!["GET http://h/p"];
    hundred.iter().for_each(|h| args.extend(["-H", h.as_str()]));
    let (code, out, err) = explain(&path, &args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("refused by Pocket"), "{out}");

    // HTTP/2: the URL's host is the :authority, as a real h2 client sends it.
    let r = h2_get(live_addr, "abs.example", "/p").await;
    assert_eq!(r.header("x-origin").as_deref(), Some("A"), "{}", r.text());
    let (code, out, err) = explain(&path, &["GET http://abs.example/p HTTP/2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pool \"abs\""), "{out}");
    let big = format!("X-Big: {}", "a".repeat(40 * 1024));
    let (code, out, err) = explain(&path, &["GET http://abs.example/p HTTP/2", "-H", &big]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("refused by Pocket: 431") && out.contains("head_size"),
        "{out}"
    );

    // --peer is the address the script reads; X-Forwarded-For is not.
    let (code, out, err) = explain(
        &path,
        &[
            "GET http://h/p",
            "-H",
            "X-Forwarded-For: 9.9.9.9",
            "--peer",
            "10.1.2.3",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pool \"peer\""), "{out}");
}

#[test]
fn a_server_that_was_usable_is_not_listed_as_skipped() {
    let (_d, path) = policy(
        r#"return {
  listeners = { { name = "web", bind = "127.0.0.1:8080", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003" } } },
}"#,
    );
    let (code, out, err) = explain(&path, &["GET http://e.com/", "--down", "127.0.0.1:9003"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        server_line(&out, "127.0.0.1:9002").ends_with("usable, balance chose another"),
        "{out}"
    );
    let compact = out.lines().find(|l| l.starts_with("compact: ")).unwrap();
    assert!(
        compact.contains("skip[127.0.0.1:9003:down] others[127.0.0.1:9002] chose=127.0.0.1:9001"),
        "{compact}"
    );
    assert!(!compact.contains("passed"), "{compact}");
}

// A connection on a tcp listener: on_connect decides, not on_request.

const SNI: &str = r#"
return {
  listeners = {
    { name = "tls", bind = "127.0.0.1:8443", mode = "tcp" },
    { name = "web", bind = "127.0.0.1:8080", pool = "web" },
  },
  pools = {
    site_a = { mode = "tcp", servers = { "127.0.0.1:9443", "127.0.0.1:9445" } },
    site_b = { mode = "tcp", servers = { "127.0.0.1:9444" }, balance = "hash", hash_key = "source" },
    web = { servers = { "127.0.0.1:9001" } },
  },
  on_connect = function(conn)
    if conn.listener ~= "tls" then return nil end
    if conn.sni == "a.example" then return "site_a" end
    if conn.sni == "b.example" then return "site_b" end
    return pocket.reject("unknown name " .. tostring(conn.sni))
  end,
}
"#;

#[test]
fn a_connection_on_a_tcp_listener_is_explained_by_its_sni() {
    let (_d, path) = policy(SNI);
    let (code, out, err) = explain(&path, &["tcp://tls", "--sni", "A.Example", "--alpn", "h2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("connection: from 127.0.0.1:40000 to 127.0.0.1:8443 on tcp listener \"tls\", TLS ClientHello with sni \"a.example\", alpn h2\n"),
        "{out}"
    );
    assert!(
        out.contains("hook on_connect: returned pool \"site_a\""),
        "{out}"
    );
    assert!(
        out.contains("pool \"site_a\" (on_connect chose it), balance round_robin"),
        "{out}"
    );
    assert!(out.contains("chosen: 127.0.0.1:9443"), "{out}");
    assert!(
        out.contains("a live connection waits up to timeouts.client_hello (5s)"),
        "{out}"
    );
    assert!(!out.contains("503") && !out.contains("on_request"), "{out}");

    // Hashed on the client's address; its only server down: closed (SC).
    let (code, out, _) = explain(
        &path,
        &[
            "tcp://tls",
            "--sni",
            "b.example",
            "--peer",
            "10.0.0.7:5555",
            "--down",
            "127.0.0.1:9444",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("from 10.0.0.7:5555"), "{out}");
    assert!(
        out.contains("hash key: the client's address (source) = 10.0.0.7"),
        "{out}"
    );
    assert!(
        server_line(&out, "127.0.0.1:9444").ends_with("skipped: down"),
        "{out}"
    );
    assert!(
        out.contains("closed by Pocket: no server of pool \"site_b\" can take the connection: it is closed (access log SC)"),
        "{out}"
    );

    // No ClientHello: conn.sni is nil, and the script rejects.
    let (code, out, _) = explain(&path, &["tcp://tls"]);
    assert_eq!(code, 0);
    assert!(out.contains("no TLS ClientHello"), "{out}");
    assert!(
        out.contains("closed by the script: pocket.reject(\"unknown name nil\"): the connection is closed, no server connection is opened (access log PR)"),
        "{out}"
    );
    assert!(
        out.contains("compact: on_connect=pocket.reject(unknown_name_nil)("),
        "{out}"
    );
    assert!(out.contains("closed=script"), "{out}");
}

// No on_connect: the listener's pool's functions read the ClientHello.
const SNI_IN_POOLS: &str = r#"
return {
  listeners = {
    { name = "keyed", bind = "127.0.0.1:8443", mode = "tcp", pool = "keyed" },
    { name = "chosen", bind = "127.0.0.1:8444", mode = "tcp", pool = "chosen" },
  },
  pools = {
    keyed = { mode = "tcp", servers = { "127.0.0.1:9443", "127.0.0.1:9445" },
              balance = "hash", hash_key = function(conn) return conn.sni end },
    chosen = { mode = "tcp", servers = { "127.0.0.1:9446", "127.0.0.1:9447" },
               balance = function(servers, conn)
                 if conn.sni == "b.example" then return 2 end
                 return 1
               end },
  },
}
"#;

/// `--sni` reaches a pool's `hash_key(conn)` and `balance(servers, conn)`
/// in a policy with no on_connect (they saw conn.sni = nil: the given
/// ClientHello was set only when on_connect ran), and the note says a
/// live connection waits for the ClientHello there.
#[test]
fn the_given_sni_reaches_the_pool_functions_without_on_connect() {
    let (_d, path) = policy(SNI_IN_POOLS);
    let (code, out, err) = explain(&path, &["tcp://keyed", "--sni", "a.example"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("hook hash_key (pool \"keyed\"): returned \"a.example\""),
        "{out}"
    );
    assert!(
        out.contains("hash key: the pool's hash_key function = \"a.example\""),
        "{out}"
    );
    assert!(
        out.contains("note: the pool's hash_key or balance read conn.sni or conn.alpn: a live connection waits up to timeouts.client_hello (5s)"),
        "{out}"
    );
    assert!(!out.contains("played no part"), "{out}");

    let (code, out, err) = explain(&path, &["tcp://chosen", "--sni", "b.example"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("hook balance (pool \"chosen\"): returned server 127.0.0.1:9447"),
        "{out}"
    );
    assert!(out.contains("chosen: 127.0.0.1:9447"), "{out}");

    // No --sni: nil, as for a client that does not speak TLS.
    let (code, out, _) = explain(&path, &["tcp://chosen"]);
    assert_eq!(code, 0);
    assert!(out.contains("chosen: 127.0.0.1:9446"), "{out}");
    assert!(
        out.contains("note: the pool's hash_key or balance read conn.sni or conn.alpn, and no --sni or --alpn was given"),
        "{out}"
    );
}

#[test]
fn an_http_request_aimed_at_a_tcp_listener_says_how_to_explain_a_connection() {
    let (_d, path) = policy(SNI);
    let p = path.to_str().unwrap();
    let (code, out, err) = explain(&path, &["GET https://a.example/", "--listener", "tls"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains(&format!("listener \"tls\" is a tcp listener (mode = \"tcp\"): it reads no HTTP request; on_connect decides where its connections go (see docs/tcp.md). Explain a connection instead: pocket explain {p} tcp://tls --sni a.example")),
        "{err}"
    );
    // Without --listener: the first http listener, and a note on the tcp one.
    let (code, out, _) = explain(&path, &["GET https://a.example/"]);
    assert_eq!(code, 0);
    assert!(out.contains("on listener \"web\""), "{out}");
    assert!(
        out.contains("note: listener \"tls\", the policy's first, is a tcp listener"),
        "{out}"
    );
    // Connection flags with a request, a connection on an http listener.
    let (code, _, err) = explain(&path, &["GET http://a.example/", "--sni", "a.example"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--sni and --alpn describe a connection on a tcp listener"),
        "{err}"
    );
    let (code, _, err) = explain(&path, &["tcp://web"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("listener \"web\" is an http listener"),
        "{err}"
    );
    let (code, _, err) = explain(&path, &["tcp://nope"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("tcp://nope: \"nope\" is not a listener of the policy (listeners: tls, web)"),
        "{err}"
    );
}

#[test]
fn the_connection_examples_in_tcp_md_are_what_pocket_explain_prints() {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tcp.md"),
    )
    .unwrap();
    let start = page.find("## Why did it go there?").unwrap();
    let end = start + page[start..].find("\n## ").unwrap_or(page.len() - start);
    let section = &page[start..end];
    let lua_start = section.find("```lua\n").unwrap() + "```lua\n".len();
    let lua_len = section[lua_start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        "sites.lua",
        &section[lua_start..lua_start + lua_len],
    );
    let mut examples = 0;
    for block in section.split("```text\n").skip(1) {
        let block = &block[..block.find("```").unwrap()];
        // One block may hold several commands, each with its output.
        let block = format!("\n{block}");
        for run in block.split("\n$ ").skip(1) {
            let Some(command) = run.lines().next().and_then(|l| l.strip_prefix("pocket ")) else {
                continue;
            };
            let expected: String = run
                .lines()
                .skip(1)
                .filter(|l| !l.is_empty())
                .map(|l| format!("{l}\n"))
                .collect();
            let out = std::process::Command::new(pocket_bin())
                .args(shell_words(command))
                .current_dir(dir.path())
                .output()
                .unwrap();
            let got = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "{command}");
            assert_eq!(without_times(&got), without_times(&expected), "{command}");
            examples += 1;
        }
    }
    // The two explained connections and the `pocket test` run.
    assert_eq!(examples, 3);
}
