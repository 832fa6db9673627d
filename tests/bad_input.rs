//! Every bad input gets a clear error and loses nothing: broken policies
//! are refused with path:line, failing hooks cost one request a 500, a
//! runaway script is stopped, malformed HTTP gets a 400.

mod common;
use common::*;

fn check_policy(src: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", src);
    pocket_cmd(&["check", path.to_str().unwrap()])
}

fn run_policy(src: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", src);
    let (code, _, err) = pocket_cmd(&["run", path.to_str().unwrap(), "--workers", "1"]);
    (code, err)
}

#[test]
fn check_prints_a_summary_of_a_good_policy() {
    let (code, out, err) = check_policy(
        r#"return {
  listeners = { { name = "web", bind = "127.0.0.1:8080", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:9001", { addr = "127.0.0.1:9002", weight = 2, backup = true } } } },
  on_request = function(req) end,
}"#,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("web on 127.0.0.1:8080 (default pool: app)"),
        "{out}"
    );
    assert!(out.contains("127.0.0.1:9002 weight 2 backup"), "{out}");
    assert!(out.contains("hooks: on_request"), "{out}");
}

/// `pocket check` lists a pool's `passive` settings when they are not
/// the defaults, as it lists `check:`; the cool-down only where it applies
/// (a pool without a check).
#[test]
fn check_lists_passive_settings_that_are_not_the_defaults() {
    let (code, out, err) = check_policy(
        r#"return {
  listeners = { { name = "web", bind = "127.0.0.1:8080", pool = "app" } },
  pools = {
    app = { servers = { "127.0.0.1:9001" }, passive = { after = 5, on_5xx = true, cooldown = "30s" } },
    checked = { servers = { "127.0.0.1:9002" }, check = { tcp = true }, passive = { after = 1, cooldown = "30s" } },
    plain = { servers = { "127.0.0.1:9003" } },
    quiet = { servers = { "127.0.0.1:9004" }, passive = false },
  },
}"#,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("  app (round_robin, 1 server, retries 3)\n    passive: down after 5 failures in a row (a 5xx counts), cooldown 30s\n"),
        "{out}"
    );
    assert!(
        out.contains("    check: tcp connect, every 2s, timeout 1s, rise 2, fall 3\n    passive: down after 1 failure in a row\n"),
        "{out}"
    );
    assert!(
        out.contains("  plain (round_robin, 1 server, retries 3)\n    127.0.0.1:9003"),
        "{out}"
    );
    assert!(
        out.contains("    passive: off (live traffic never takes a server down)\n"),
        "{out}"
    );
}

#[test]
fn syntax_errors_are_refused_with_path_and_line() {
    let src = "return {\n  listeners = {},\n  pools = { app = { servers = { \"127.0.0.1:1\" } }\n  on_request = function() end,\n}\n";
    let (code, _, err) = check_policy(src);
    assert_eq!(code, 1);
    assert!(err.contains("policy.lua:4:"), "{err}");
    let (code, err) = run_policy(src);
    assert_eq!(code, 1);
    assert!(err.contains("policy.lua:4:"), "{err}");
}

#[test]
fn runtime_errors_while_loading_are_refused_with_path_and_line() {
    let (code, _, err) = check_policy("local x = nil\n\nreturn x.field\n");
    assert_eq!(code, 1);
    assert!(
        err.contains("policy.lua:3:") && err.contains("attempt to index"),
        "{err}"
    );
    let (code, _, err) = check_policy("local bad = pocket.regex('(unclosed')\nreturn {}\n");
    assert_eq!(code, 1);
    assert!(
        err.contains("policy.lua:1:") && err.contains("bad regex"),
        "{err}"
    );
    let (code, _, err) = check_policy("local m = require 'no.such.module'\nreturn {}\n");
    assert_eq!(code, 1);
    assert!(
        err.contains("policy.lua:1:") && err.contains("no.such.module"),
        "{err}"
    );
}

#[test]
fn every_table_error_is_reported_with_its_line() {
    let src = r#"return {
  listeners = {
    { name = "web", bind = "127.0.0.1:8080", pool = "nope" },
    { name = "api", bind = "not an address" },
  },
  pools = {
    app = { servers = { { addr = "127.0.0.1:9001", weight = 0 } } },
    other = { servers = { "127.0.0.1:9002" }, balance = "fastest" },
  },
  on_reqest = function(req) end,
}"#;
    let (code, _, err) = check_policy(src);
    assert_eq!(code, 1);
    for expected in [
        "policy.lua:3: listener \"web\": default pool \"nope\" is not defined",
        "policy.lua:4: listener \"api\": bad address \"not an address\"",
        "policy.lua:7: pool \"app\" server 127.0.0.1:9001: weight must be a whole number from 1 to 256, not a number (0)",
        "policy.lua:8: pool \"other\": unknown balance algorithm \"fastest\"",
        "policy.lua:10: policy: unknown key \"on_reqest\"",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn a_policy_without_listeners_or_not_a_table_is_refused() {
    let (code, _, err) = check_policy("return { pools = {} }\n");
    assert_eq!(code, 1);
    assert!(err.contains("policy.lua:1: no listeners"), "{err}");
    let (code, _, err) = check_policy("return 42\n");
    assert_eq!(code, 1);
    assert!(err.contains("must return a policy table"), "{err}");
    let (code, _, err) = check_policy("");
    assert_eq!(code, 1, "{err}");
}

#[test]
fn a_port_already_taken_is_refused_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (code, err) = run_policy(&format!(
        "return {{ listeners = {{ {{ name = \"web\", bind = \"{addr}\", pool = \"app\" }} }},\n pools = {{ app = {{ servers = {{ \"127.0.0.1:1\" }} }} }} }}\n"
    ));
    assert_eq!(code, 1);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

/// `pocket origin` on a taken port names it, as `pocket run` does (it
/// said only "Address already in use (os error 98)").
#[test]
fn an_origin_on_a_taken_port_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, _, err) = pocket_cmd(&["origin", "--name", "A", "--port", &port]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "pocket: cannot start origin A on 127.0.0.1:{port} (--port, --bind): Address already in use"
        )),
        "{err}"
    );
}

fn failing_hooks_policy(api: &OriginHandle) -> String {
    format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "api" }} }},
  pools = {{ api = {{ servers = {{ "{}" }} }} }},
  on_request = function(req)
    if req.path == "/raise" then
      local t = nil
      return t.missing
    elseif req.path == "/unknown" then
      return "nowhere"
    elseif req.path == "/number" then
      return 42
    elseif req.path == "/spin" then
      while true do end
    elseif req.path == "/spin-pcall" then
      while true do pcall(function() while true do end end) end
    elseif req.path == "/grow" then
      local t, mb = {{}}, string.rep("x", 1024 * 1024)
      while true do t[#t + 1] = mb .. #t end
    elseif req.path == "/bad-header" then
      req:set_header("x-bad", "line\nbreak")
    end
  end,
}}"#,
        api.addr
    )
}

#[tokio::test]
async fn a_failing_hook_costs_one_request_a_500_with_its_id() {
    let api = origin("api");
    let pocket = Pocket::start(&failing_hooks_policy(&api), 1);
    let addr = pocket.addr("web");

    let r = get(addr, "/raise").await;
    assert_eq!(r.status, 500);
    let id = r.header("x-request-id").expect("request id header");
    assert!(
        r.text().contains(&format!("request id: {id}")),
        "{}",
        r.text()
    );
    let line = pocket.log.wait_for(&[&format!("request={id}")]);
    assert!(
        line.contains("policy.lua:7:") && line.contains("on_request"),
        "{line}"
    );

    let r = get(addr, "/unknown").await;
    assert_eq!(r.status, 500);
    // At the hook's own place, as every bad hook result (never a search
    // of the text for the name).
    pocket
        .log
        .wait_for(&["policy.lua:4: on_request returned pool \"nowhere\", which is not defined"]);

    let r = get(addr, "/number").await;
    assert_eq!(r.status, 500);
    pocket.log.wait_for(&[
        "policy.lua:4: on_request returned a number (42); expected a pool name (a string), pocket.respond(...) or nil",
        "hook=\"on_request\"",
    ]);

    let r = get(addr, "/bad-header").await;
    assert_eq!(r.status, 500);
    pocket
        .log
        .wait_for(&["policy.lua:20:", "invalid value for header \"x-bad\""]);

    let r = get(addr, "/fine").await;
    assert_eq!(r.status, 200, "other requests are served normally");
}

#[tokio::test]
async fn runaway_scripts_are_stopped_and_the_worker_keeps_serving() {
    let api = origin("api");
    let pocket = Pocket::start(&failing_hooks_policy(&api), 1);
    let addr = pocket.addr("web");
    for path in ["/spin", "/spin-pcall", "/grow"] {
        let started = std::time::Instant::now();
        let r = get(addr, path).await;
        let took = started.elapsed();
        assert_eq!(r.status, 500, "{path}: {}", r.text());
        eprintln!("{path}: stopped after {took:?}");
        // The budget is 25 ms; the bound here only tells "stopped" from
        // "ran on" (a busy machine may be slow), the log line says what
        // stopped it.
        assert!(
            took < std::time::Duration::from_secs(30),
            "{path} took {took:?}"
        );
        let ok = get(addr, "/after").await;
        assert_eq!(ok.status, 200, "after {path}");
    }
    pocket
        .log
        .wait_for(&["policy.lua:13:", "ran past its time budget"]);
    // /grow fills the 32 MiB in 1 MiB strings: the memory limit stops it,
    // or, on a slow machine, the time budget first (large allocations check
    // it once the call is past its deadline).
    pocket.log.wait_for_any(&[
        &["more memory than its limit"],
        &[
            "policy.lua:",
            "ran past its time budget (at a large allocation)",
        ],
    ]);
}

#[tokio::test]
async fn malformed_http_gets_400_and_the_connection_closed() {
    let api = origin("api");
    let pocket = Pocket::start(&failing_hooks_policy(&api), 1);
    let addr = pocket.addr("web");
    let answer = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let answer = raw(addr, b"\x16\x03\x01garbage\r\n\r\n").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );
    assert_eq!(api.request_count(), 0);
    assert_eq!(get(addr, "/").await.status, 200);
}

/// A head line ending in a bare LF is a smuggling vector (a CRLF-only
/// front end sees one header where Pocket's parser would see two): 400,
/// as nginx and HAProxy answer, and nothing reaches a server. Bodies are
/// not heads: LF in a body, even between pipelined requests, is fine.
#[tokio::test]
async fn a_bare_lf_in_a_request_head_gets_400_but_not_in_a_body() {
    let api = origin("api");
    let pocket = Pocket::start(&failing_hooks_policy(&api), 1);
    let addr = pocket.addr("web");
    let answer = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nDummy: x\nContent-Length: 23\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(answer.contains("LF, not CRLF"), "{answer:?}");
    assert_eq!(api.request_count(), 0);

    let answer = raw(
        addr,
        b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\na\nb\n\nGET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        answer.matches("HTTP/1.1 200").count(),
        2,
        "both answered: {answer:?}"
    );
    assert_eq!(api.request_count(), 2);
}

/// An HTTP/1 head has at most 100 header fields (hyper's count, which the
/// listener keeps): the 101st gets a 431 however small the head, before
/// any hook runs (docs/operations.md "Limits"). The 100 here are Host,
/// Connection and 98 others, about 1 KB.
#[tokio::test]
async fn a_head_with_a_101st_header_field_gets_431() {
    let pocket = Pocket::start(
        r#"return {
  listeners = { { name = "web", bind = "127.0.0.1:0", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:1" } } },
  on_request = function(req) return pocket.respond(200, "fields ok\n") end,
}"#,
        1,
    );
    let addr = pocket.addr("web");
    let head = |fields: usize| {
        let mut h = String::from("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for i in 0..fields - 2 {
            h.push_str(&format!("X-H{i}: v\r\n"));
        }
        h + "\r\n"
    };
    let answer = raw(addr, head(100).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("fields ok\n"), "{answer:?}");
    let answer = raw(addr, head(101).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
}

/// A request body that breaks on its way to a server gets a 400 that
/// says how it broke (it said hyper's "error from user's Body stream"
/// for both): a malformed chunk size, or a body shorter than its
/// Content-Length (the client closed its sending side after 5 of 10
/// bytes, then waits for the answer).
#[tokio::test]
async fn a_broken_request_body_gets_400_saying_how_it_broke() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = origin("api");
    let pocket = Pocket::start(&failing_hooks_policy(&api), 1);
    let addr = pocket.addr("web");
    let send_then_close = |bytes: &'static [u8]| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let answer = send_then_close(
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(
        answer.contains("the request body could not be read: its chunked encoding is malformed (invalid chunk size line"),
        "{answer:?}"
    );
    let answer =
        send_then_close(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(
        answer.contains("the request body could not be read: the client closed its connection before the body ended (5 of 10 bytes)"),
        "{answer:?}"
    );
    assert!(!answer.contains("user's Body stream"), "{answer:?}");
    pocket.log.wait_for(&[
        "the client closed its connection before the body ended (5 of 10 bytes)",
        "request=",
    ]);
}

/// Sends `bytes` and reads until Pocket closes: the answer, or None if
/// the connection was still open after 20 s.
async fn until_closed(addr: std::net::SocketAddr, bytes: &[u8]) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    match tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

/// A target in authority form (`host:port`) is CONNECT's alone (RFC 9112
/// §3.2.3), as `*` is OPTIONS' (§3.2.4): any other method with one gets a
/// 400 and the connection closes, as nginx and HAProxy answer, on the
/// direct path (HTTP/1.1, no body) and on hyper's (a body, HTTP/1.0);
/// no server sees it (it was sent on as `GET /` with `Host: b:80`).
/// `pocket explain` refuses it in the same words.
#[tokio::test]
async fn a_host_port_target_is_only_for_connect_and_gets_400() {
    let api = origin("api");
    let pocket = Pocket::start(&failing_hooks_policy(&api), 1);
    let addr = pocket.addr("web");
    for req in [
        &b"GET b:80 HTTP/1.1\r\nHost: c\r\n\r\n"[..],
        b"GET b:80 HTTP/1.1\r\nHost: b\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n",
        b"GET b HTTP/1.1\r\nHost: b\r\n\r\n",
        b"GET b:80 HTTP/1.0\r\n\r\n",
        b"POST b:80 HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\nhi",
        b"GET * HTTP/1.1\r\nHost: b\r\n\r\n",
    ] {
        let shown = String::from_utf8_lossy(req);
        let answer = until_closed(addr, req)
            .await
            .unwrap_or_else(|| panic!("{shown:?}: connection left open"));
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.0 400"),
            "{shown:?}: {answer:?}"
        );
        assert_eq!(
            answer.matches("HTTP/1.").count(),
            1,
            "{shown:?}: {answer:?}"
        );
        assert!(answer.contains("RFC 9112 §3.2."), "{shown:?}: {answer:?}");
    }
    pocket
        .log
        .wait_for(&["refused: a host:port request target (authority form) is only for CONNECT"]);
    assert_eq!(api.request_count(), 0);
    // A URL (absolute form) names the host the same way, and is fine.
    let answer = until_closed(
        addr,
        b"GET http://b:80/x HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", &failing_hooks_policy(&api));
    let (code, _, err) = pocket_cmd(&["explain", path.to_str().unwrap(), "GET b:80"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("a host:port request target (authority form) is only for CONNECT"),
        "{err}"
    );
}
