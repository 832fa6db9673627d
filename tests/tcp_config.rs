//! What a tcp listener or pool may say, checked at load (`pocket check`):
//! HTTP-only keys refused with path:line and what to write instead, a
//! listener's pool and a pool's fallback of the same mode, tcp checks
//! (`send`/`expect`/`pattern`) refused when incomplete, and every error
//! of one policy reported together.

mod common;
use common::*;

fn check_policy(src: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", src);
    pocket_cmd(&["check", path.to_str().unwrap()])
}

/// Asserts `err` has a line `policy.lua:LINE: ...` containing `text`.
fn says(err: &str, line: usize, text: &str) {
    let prefix = format!("policy.lua:{line}: ");
    assert!(
        err.lines().any(|l| l.contains(&prefix) && l.contains(text)),
        "no error at line {line} saying {text:?}:\n{err}"
    );
}

#[test]
fn a_tcp_policy_as_the_docs_write_it_passes() {
    let (code, out, err) = check_policy(
        r#"return {
  listeners = {
    { name = "smtp", bind = "127.0.0.1:2525", mode = "tcp", pool = "mail" },
    { name = "tls",  bind = "127.0.0.1:8443", mode = "tcp", timeouts = { client_hello = "5s" } },
  },
  pools = {
    mail = { mode = "tcp", servers = { "127.0.0.1:2601", "127.0.0.1:2602" }, balance = "least_conn",
             timeouts = { connect = "2s", idle = "10m" },
             check = { expect = "220", interval = "2s" } },
    redis = { mode = "tcp", servers = { "127.0.0.1:6390" },
              check = { send = "PING\r\n", expect = "+PONG" } },
    smtp2 = { mode = "tcp", servers = { "127.0.0.1:2603" }, balance = "hash", hash_key = "source",
              check = { pattern = "^220[ -]", rise = 1, fall = 2, start = "down" } },
    web = { mode = "tcp", servers = { "127.0.0.1:9001" }, check = { http = "GET /health", expect = 200 } },
    site_a = { mode = "tcp", servers = { "127.0.0.1:9443" }, check = { tcp = true } },
  },
  on_connect = function(conn)
    if conn.listener ~= "tls" then return nil end
    return "site_a"
  end,
}"#,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");
}

#[test]
fn http_keys_on_tcp_listeners_and_pools_are_refused_together_with_their_lines() {
    let (code, _, err) = check_policy(
        r#"return {
  listeners = {
    { name = "smtp", bind = "127.0.0.1:2525", mode = "tcp", pool = "mail",
      keepalive = "5s",
      head_size = 65536,
      timeouts = { head = "5s", client_hello = "2s" },
      tls = { cert = "site.pem", key = "site.key" } },
    { name = "web", bind = "127.0.0.1:8080", pool = "app",
      timeouts = { client_hello = "2s" } },
  },
  pools = {
    app = { servers = { "127.0.0.1:9001" } },
    mail = { mode = "tcp", servers = { "127.0.0.1:2601" },
             protocol = "h2",
             timeouts = { connect = "1s",
                          response = "5s" },
             passive = { after = 3, on_5xx = true },
             balance = "hash", hash_key = "header:x-user" },
  },
}"#,
    );
    assert_eq!(code, 1, "{err}");
    says(
        &err,
        4,
        "listener \"smtp\" is a tcp listener: keepalive is the wait between HTTP requests",
    );
    says(
        &err,
        5,
        "head_size bounds an HTTP request's head, and a tcp listener reads none",
    );
    says(&err, 6, "timeouts.head bounds the wait for an HTTP request's head; a tcp listener has timeouts.client_hello");
    says(
        &err,
        7,
        "a tcp listener passes TLS through: leave tls out and route on conn.sni",
    );
    says(&err, 9, "listener \"web\": timeouts.client_hello bounds the wait for a TLS ClientHello on a tcp listener");
    says(
        &err,
        14,
        "pool \"mail\" is a tcp pool: protocol (http1, h2) is how HTTP requests go",
    );
    says(&err, 16, "timeouts.response bounds the wait for an HTTP response's head; a tcp pool has timeouts.connect and timeouts.idle");
    says(&err, 17, "passive.on_5xx counts HTTP 5xx answers");
    says(&err, 18, "hash_key \"header:x-user\" reads an HTTP request");
    // The certificate files were not read: one error about tls, not two.
    assert!(!err.contains("site.pem"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("policy.lua:")).count(),
        9,
        "{err}"
    );
}

#[test]
fn a_pool_of_the_other_mode_is_refused_for_a_listener_and_as_a_fallback() {
    let (code, _, err) = check_policy(
        r#"return {
  listeners = {
    { name = "smtp", bind = "127.0.0.1:2525", mode = "tcp", pool = "app" },
    { name = "web", bind = "127.0.0.1:8080", pool = "mail" },
  },
  pools = {
    app = { servers = { "127.0.0.1:9001" } },
    mail = { mode = "tcp", servers = { "127.0.0.1:2601" },
             fallback = "app" },
  },
}"#,
    );
    assert_eq!(code, 1, "{err}");
    says(&err, 3, "listener \"smtp\" is a tcp listener and its pool \"app\" is an http pool: name a pool with mode = \"tcp\", or add mode = \"tcp\" to pool \"app\"");
    says(
        &err,
        4,
        "listener \"web\" is an http listener and its pool \"mail\" is a tcp pool",
    );
    says(&err, 9, "pool \"mail\" is a tcp pool and its fallback \"app\" is an http pool: a fallback takes the same traffic, so it must be a tcp pool too");
}

#[test]
fn tcp_checks_without_an_answer_to_wait_for_or_with_wrong_keys_are_refused() {
    let (code, _, err) = check_policy(
        r#"return {
  listeners = { { name = "r", bind = "127.0.0.1:6379", mode = "tcp", pool = "a" } },
  pools = {
    a = { mode = "tcp", servers = { "127.0.0.1:7001" },
          check = { send = "PING\r\n" } },
    b = { mode = "tcp", servers = { "127.0.0.1:7002" },
          check = { send = "PING\r\n", expcet = "+PONG" } },
    c = { mode = "tcp", servers = { "127.0.0.1:7003" },
          check = { expect = "+PONG", pattern = "^\\+PONG" } },
    d = { mode = "tcp", servers = { "127.0.0.1:7004" },
          check = { expect = 220 } },
    e = { mode = "tcp", servers = { "127.0.0.1:7005" },
          check = { pattern = "^220[" } },
    f = { servers = { "127.0.0.1:7006" },
          check = { tcp = true, expect = "220" } },
    g = { servers = { "127.0.0.1:7007" },
          check = { http = "GET /", expect = "+PONG" } },
    h = { mode = "tcp", servers = { "127.0.0.1:7008" },
          check = { http = "GET /", send = "x" } },
    i = { mode = "tcp", servers = { "127.0.0.1:7009" },
          check = { interval = "1s" } },
    j = { mode = "tcp", servers = { "127.0.0.1:7010" },
          check = { expcet = "220" } },
  },
}"#,
    );
    assert_eq!(code, 1, "{err}");
    says(&err, 5, "pool \"a\" check: send needs expect = \"...\" (text the answer's first line contains) or pattern = \"...\" (a regex it matches)");
    says(
        &err,
        7,
        "pool \"b\" check: unknown key \"expcet\" (did you mean \"expect\"?)",
    );
    // The misspelt expect is said once: no "send needs expect" after it.
    assert!(
        !err.lines()
            .any(|l| l.contains(":7: pool \"b\" check: send needs")),
        "{err}"
    );
    says(
        &err,
        9,
        "say expect (text the line contains) or pattern (a regex it matches), not both",
    );
    says(&err, 11, "pool \"d\" check: expect must be the text the server's first line contains, like expect = \"220\", not a number (220)");
    says(&err, 13, "pool \"e\" check: bad pattern");
    says(&err, 15, "pool \"f\" check: expect without http checks the line a tcp server answers, and pool \"f\" is an http pool");
    // In an http check, expect is a status, as before.
    says(
        &err,
        17,
        "pool \"g\" check: expect must be a status (200), a class (\"2xx\") or a range {200, 399}",
    );
    says(
        &err,
        19,
        "pool \"h\" check: send goes with expect or pattern",
    );
    says(&err, 21, "pool \"i\" check: say tcp = true, expect = \"...\" (text the server's first line contains, after send = \"...\" if it waits to be spoken to) or http = \"GET /path\"");
    says(
        &err,
        23,
        "pool \"j\" check: unknown key \"expcet\" (did you mean \"expect\"?)",
    );
    assert!(!err.contains("pool \"j\" check: say"), "{err}");
}

/// A tcp listener has no on_request: without a `pool` and without an
/// `on_connect` to choose one, every connection would be closed. Said at
/// load, at the listener; with an on_connect it loads (it may choose).
/// A bad listener `mode` is said once, not again as a pool of the wrong mode.
#[test]
fn a_tcp_listener_with_no_pool_and_no_on_connect_is_refused_at_its_line() {
    let (code, _, err) = check_policy(
        r#"return {
  listeners = {
    { name = "smtp", bind = "127.0.0.1:2525", mode = "tcp" },
    { name = "odd", bind = "127.0.0.1:2526", mode = "tpc", pool = "mail" },
  },
  pools = { mail = { mode = "tcp", servers = { "127.0.0.1:2601" } } },
}"#,
    );
    assert_eq!(code, 1, "{err}");
    says(
        &err,
        3,
        "listener \"smtp\" is a tcp listener with no pool, and the policy has no on_connect to choose one: every connection would be closed; add pool = \"NAME\"",
    );
    says(
        &err,
        4,
        "listener \"odd\": mode must be \"http\" or \"tcp\"",
    );
    assert!(!err.contains("is an http listener"), "{err}");

    let (code, _, err) = check_policy(
        r#"return {
  listeners = { { name = "smtp", bind = "127.0.0.1:2525", mode = "tcp" } },
  pools = { mail = { mode = "tcp", servers = { "127.0.0.1:2601" } } },
  on_connect = function(conn) return "mail" end,
}"#,
    );
    assert_eq!(code, 0, "{err}");
}
