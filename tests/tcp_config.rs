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

/// A hook written as a global (`function on_connect(conn)` above the
/// `return`, as an old tcp.md example had it) is never called: refused
/// at the global's line, saying where hooks are read (newcomer16 #1). A
/// hook the table has, beside a global of the same name, loads.
#[test]
fn a_hook_written_as_a_global_function_is_refused_at_its_line() {
    let (code, _, err) = check_policy(
        r#"
function on_connect(conn)
  if conn.sni == "b.example" then return "b" end
end
return {
  listeners = { { name = "tls", bind = "127.0.0.1:8443", mode = "tcp", pool = "a" } },
  pools = {
    a = { mode = "tcp", servers = { "127.0.0.1:9443" } },
    b = { mode = "tcp", servers = { "127.0.0.1:9444" } },
  },
}"#,
    );
    assert_eq!(code, 1, "{err}");
    says(
        &err,
        2,
        "on_connect is a global function, but hooks are read from the table the policy returns: write on_connect = function(conn) ... end inside it",
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let (code, out, err) = check_policy(
        r#"function on_request(req) return nil end
return {
  listeners = { { name = "web", bind = "127.0.0.1:8080", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:9001" } } },
  on_request = on_request,
}"#,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");
}

/// `mode = "tpc"`, `"TCP"`, `"udp"`: one error each, naming the string
/// as written (never "not a string"), with a "did you mean" or the case
/// slip, and no follow-on error about the listener's or pool's mode
/// (newcomer16 #6, breaker16 F5).
#[test]
fn a_misspelt_mode_is_one_error_naming_what_was_written() {
    let (code, _, err) = check_policy(
        r#"return {
  listeners = {
    { name = "redis", bind = "127.0.0.1:6379", mode = "tpc", pool = "redis" },
    { name = "mail", bind = "127.0.0.1:2525", mode = "tcp", pool = "mail" },
    { name = "dns", bind = "127.0.0.1:5353", mode = "udp", pool = "dns" },
  },
  pools = {
    redis = { mode = "tcp", servers = { "127.0.0.1:6390" } },
    mail = { mode = "TCP", servers = { "127.0.0.1:2601" }, check = { expect = "220" } },
    dns = { mode = "udp", servers = { "127.0.0.1:53" } },
  },
}"#,
    );
    assert_eq!(code, 1, "{err}");
    says(
        &err,
        3,
        "listener \"redis\": mode must be \"http\" or \"tcp\", not \"tpc\" (did you mean \"tcp\"?)",
    );
    says(
        &err,
        5,
        "listener \"dns\": mode must be \"http\" or \"tcp\", not \"udp\"",
    );
    says(
        &err,
        9,
        "pool \"mail\": mode is written in lower case: \"tcp\", not \"TCP\"",
    );
    says(
        &err,
        10,
        "pool \"dns\": mode must be \"http\" or \"tcp\", not \"udp\"",
    );
    assert!(!err.contains("a string"), "{err}");
    assert_eq!(err.lines().count(), 4, "{err}");
}

/// HAProxy habits and empty values, each one error that says what to do
/// (newcomer16 #3, #12, breaker16 F5): `tcp = true` beside `expect`,
/// `send = ""`, `passive.on_5xx` of any value in a tcp pool, `balance =
/// "source"`.
#[test]
fn haproxy_habits_in_a_tcp_pool_get_one_error_each() {
    let (code, _, err) = check_policy(
        r#"return {
  listeners = { { name = "r", bind = "127.0.0.1:6379", mode = "tcp", pool = "redis" } },
  pools = {
    redis = { mode = "tcp", servers = { "127.0.0.1:6390" },
              check = { tcp = true, expect = "+PONG" } },
    empty = { mode = "tcp", servers = { "127.0.0.1:6391" },
              check = { send = "", expect = "+PONG" } },
    p = { mode = "tcp", servers = { "127.0.0.1:6392" },
          passive = { on_5xx = 3 } },
    s = { mode = "tcp", servers = { "127.0.0.1:6393" }, balance = "source" },
  },
}"#,
    );
    assert_eq!(code, 1, "{err}");
    says(
        &err,
        5,
        "pool \"redis\" check: tcp = true only connects; expect makes a line check: leave tcp = true out",
    );
    says(&err, 7, "pool \"empty\" check: send must not be empty");
    says(&err, 9, "passive.on_5xx counts HTTP 5xx answers");
    says(&err, 10, "balance = \"hash\", hash_key = \"source\"");
    assert!(!err.contains("a string"), "{err}");
    assert_eq!(err.lines().count(), 4, "{err}");
}

/// An unknown `timeouts` key lists only the keys of that mode, and a key
/// looked for in the wrong place says where it lives (newcomer16 #8,
/// breaker16 F5).
#[test]
fn unknown_timeout_keys_list_this_modes_keys_and_say_where_others_live() {
    let (code, _, err) = check_policy(
        r#"return {
  listeners = {
    { name = "r", bind = "127.0.0.1:6379", mode = "tcp", pool = "redis", timeouts = { idle = "5s" } },
    { name = "web", bind = "127.0.0.1:8080", pool = "app", timeouts = { wait = "5s" } },
  },
  pools = {
    redis = { mode = "tcp", servers = { "127.0.0.1:6390" },
              timeouts = { client_hello = "2s", wait = "1s" } },
    app = { servers = { "127.0.0.1:9001" } },
  },
}"#,
    );
    assert_eq!(code, 1, "{err}");
    says(
        &err,
        3,
        "listener \"r\" timeouts: unknown key \"idle\": the idle timeout of a tcp connection is its pool's timeouts.idle",
    );
    says(&err, 4, "unknown key \"wait\" (known: head, body, send)");
    says(
        &err,
        8,
        "pool \"redis\" timeouts: unknown key \"client_hello\": timeouts.client_hello is a listener key",
    );
    says(
        &err,
        8,
        "pool \"redis\" timeouts: unknown key \"wait\" (known: connect, idle)",
    );
    assert_eq!(err.lines().count(), 4, "{err}");
    // The last line ends: what follows in a terminal starts on its own.
    assert!(err.ends_with('\n'), "{err:?}");
}

/// `pocket check` shows each pool's check and which tcp listeners may
/// wait for a ClientHello; an on_connect that reads conn.sni with no tcp
/// listener gets a warning, at the hook's line (newcomer16 #4, #10, #12).
#[test]
fn pocket_check_shows_checks_client_hello_waits_and_warns_of_sni_on_http() {
    let (code, out, err) = check_policy(
        r#"return {
  listeners = { { name = "tls", bind = "127.0.0.1:8443", mode = "tcp", pool = "redis" } },
  pools = {
    redis = { mode = "tcp", servers = { "127.0.0.1:6390" },
              check = { send = "PING\r\n", expect = "+PONG", interval = "2s" } },
  },
  on_connect = function(conn)
    if conn.sni == "x" then return "redis" end
  end,
}"#,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("check: line send \"PING\\r\\n\" expect \"+PONG\", every 2s"),
        "{out}"
    );
    assert!(
        out.contains("tls on 127.0.0.1:8443 (default pool: redis, mode tcp, on_connect reads conn.sni/alpn: may wait 5s for a TLS ClientHello)"),
        "{out}"
    );
    assert!(!out.contains("warning"), "{out}");

    let (code, out, err) = check_policy(
        r#"return {
  listeners = { { name = "web", bind = "127.0.0.1:8080", pool = "a" } },
  pools = { a = { servers = { "127.0.0.1:9001" } }, b = { servers = { "127.0.0.1:9002" } } },
  on_connect = function(conn)
    if conn.sni == "b.example" then return "b" end
  end,
}"#,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("warning: ") && out.contains("policy.lua:4: on_connect reads conn.sni or conn.alpn, but no listener has mode = \"tcp\": they are always nil on http listeners"),
        "{out}"
    );
    assert!(out.contains("read req.sni in on_request"), "{out}");
}

/// `send = "PING"` (HAProxy's `tcp-check send PING` habit) loads, but a
/// line protocol waits for the line end: `pocket check` warns at its
/// line, before three checks time out.
#[test]
fn a_send_with_no_line_end_gets_a_warning_at_its_line() {
    let (code, out, err) = check_policy(
        r#"return {
  listeners = { { name = "r", bind = "127.0.0.1:6380", mode = "tcp", pool = "redis" } },
  pools = {
    redis = { mode = "tcp", servers = { "127.0.0.1:6390" },
              check = { send = "PING", expect = "+PONG" } },
  },
}"#,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("warning: ")
            && out.contains("policy.lua:5: pool \"redis\" check: send has no line end (4 bytes)"),
        "{out}"
    );
}
