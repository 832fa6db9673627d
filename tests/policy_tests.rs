//! `pocket test`: every policy shipped (the demo's engine/src/demo.lua,
//! examples/, tests/policies/) passes its own tests, with no network;
//! failures and malformed tests say which case and why; stdlib misuse is
//! refused at load with path:line.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn policies_under(dir: &str, out: &mut Vec<PathBuf>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            policies_under(
                p.strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap()
                    .to_str()
                    .unwrap(),
                out,
            );
        } else if p.extension().is_some_and(|x| x == "lua")
            && std::fs::read_to_string(&p)
                .unwrap_or_default()
                .contains("tests = {")
        {
            out.push(p);
        }
    }
}

#[test]
fn every_shipped_policy_passes_its_tests() {
    // The demo's policy, as `pocket demo` writes it out.
    let mut all = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/src/demo.lua")];
    for dir in ["examples", "tests/policies"] {
        policies_under(dir, &mut all);
    }
    assert!(all.len() >= 5, "policies with tests: {all:?}");
    let args: Vec<&str> = std::iter::once("test")
        .chain(all.iter().map(|p| p.to_str().unwrap()))
        .collect();
    let (code, out, err) = pocket_cmd(&args);
    eprintln!("{out}");
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("FAIL"), "{out}");
}

fn write(src: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", src);
    (dir, path)
}

#[test]
fn a_failing_case_names_the_case_the_line_expected_and_got() {
    let (_d, path) = write(
        r#"return {
  listeners = { { name = "web", bind = "127.0.0.1:8080", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:9001" } }, other = { servers = { "127.0.0.1:9002" } } },
  tests = {
    { name = "right", req = { path = "/" }, pool = "app" },
    { name = "wrong", req = { path = "/x" }, pool = "other" },
  },
}"#,
    );
    let (code, out, _) = pocket_cmd(&["test", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains("policy.lua:6: test 2 (wrong): expected pool \"other\", got pool \"app\""),
        "{out}"
    );
    assert!(out.contains("1 passed, 1 failed"), "{out}");
}

#[test]
fn malformed_tests_say_which_case_and_what_is_wrong() {
    let (_d, path) = write(
        r#"return {
  listeners = { { name = "web", bind = "127.0.0.1:8080", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:9001" } } },
  tests = {
    { name = "typo", req = { pth = "/" }, pool = "app" },
    "not a table",
    { name = "bad health", health = { ["10.9.9.9:1"] = "down" }, pool = "app" },
    { name = "expect typo", req = {}, pol = "app" },
  },
}"#,
    );
    let (code, out, _) = pocket_cmd(&["test", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    for expected in [
        "test 1 (typo): unknown key \"pth\" in req",
        "test 2: must be a table",
        "test 3 (bad health): health names 10.9.9.9:1, which is in no pool",
        "test 4 (expect typo): unknown key \"pol\" in the case",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn stdlib_misuse_is_refused_at_load_with_path_and_line() {
    for (src, expected) in [
        (
            "local canary = require 'pocket.canary'\n\nlocal s = canary.split { stable = 'a', canary = 'b', weight = 150 }\nreturn {}\n",
            "policy.lua:3: canary weight must be a whole number from 0 to 100, not a number (150)",
        ),
        (
            "local match = require 'pocket.match'\nlocal r = match.routes {\n  { regex = '(unclosed', pool = 'x' },\n}\nreturn {}\n",
            "policy.lua:2: route 1: bad regex \"(unclosed\"",
        ),
        ("local m = require 'pocket.nothing'\nreturn {}\n", "policy.lua:1: module 'pocket.nothing' not found"),
        (
            "local cdn = require 'pocket.cdn'\nlocal t = cdn.tier { servers = { '127.0.0.1:1' } }\nreturn {}\n",
            "policy.lua:2: cdn.tier: fallback must name the origin pool (it is missing)",
        ),
    ] {
        let (_d, path) = write(src);
        let (code, _, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{src}");
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

/// Failures say what the case said (`true`: present, `false`: absent), not
/// Rust's names for it; a path that does not start with "/" is malformed
/// (docs/testing-policies.md, "When a case fails" and "Malformed cases").
#[test]
fn header_and_path_failures_use_the_cases_words() {
    let (_d, path) = write(
        r#"return {
  listeners = { { name = "web", bind = "127.0.0.1:8080", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:9001" } } },
  on_request = function(req)
    return pocket.respond(200, "pong\n", { ["content-type"] = "text/plain" })
  end,
  tests = {
    { name = "present", header = { ["x-a"] = true } },
    { name = "absent", header = { ["content-type"] = false } },
    { name = "no slash", req = { path = "nope" } },
  },
}"#,
    );
    let (code, out, _) = pocket_cmd(&["test", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    for expected in [
        "test 1 (present): expected header x-a (any value), got none",
        "test 2 (absent): expected no header content-type, got \"text/plain\"",
        "test 3 (no slash): bad request: req.path must start with \"/\", not \"nope\"",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("Boolean"), "{out}");
}

/// A case that is not a table is reported at its own line; a case with
/// several errors reports every one; an unknown health state lists the
/// known ones.
#[test]
fn a_wrong_case_is_reported_whole_at_its_own_line() {
    let (_d, path) = write(
        r#"return {
  listeners = { { name = "web", bind = "127.0.0.1:8080", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:9001" } } },
  tests = {
    { name = "ok", req = { path = "/" }, pool = "app" },
    "five",
    { name = "many", req = { path = 5, method = {} }, pool = "nope" },
    { name = "sick", health = { ["127.0.0.1:9001"] = "sick" }, pool = "app" },
  },
}"#,
    );
    let (code, out, _) = pocket_cmd(&["test", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "policy.lua:6: test 2: must be a table { req = ..., ... }, not a string (\"five\")"
        ),
        "{out}"
    );
    let many = out
        .lines()
        .find(|l| l.contains("test 3 (many)"))
        .unwrap_or_else(|| panic!("{out}"));
    for part in [
        "policy.lua:7:",
        "req.path must be a string, not a number (5)",
        "req.method must be a string, not a table",
        "pool \"nope\" is not a pool of the policy (pools: app)",
    ] {
        assert!(many.contains(part), "missing {part:?} in {many}");
    }
    assert!(
        out.contains(
            "unknown health state \"sick\" for 127.0.0.1:9001 (known: up, down, drain, maint)"
        ),
        "{out}"
    );
    assert!(out.contains("1 passed, 3 failed"), "{out}");
}

#[test]
fn connection_cases_run_on_connect_and_say_what_the_connection_got() {
    let (_d, path) = write(
        r#"return {
  listeners = {
    { name = "tls", bind = "127.0.0.1:8443", mode = "tcp" },
    { name = "web", bind = "127.0.0.1:8080", pool = "web" },
  },
  pools = {
    site_a = { mode = "tcp", servers = { "127.0.0.1:9443" } },
    site_b = { mode = "tcp", servers = { "127.0.0.1:9444" } },
    web = { servers = { "127.0.0.1:9001" } },
  },
  on_connect = function(conn)
    if conn.sni == "a.example" then return "site_a" end
    if conn.sni == "b.example" then return "site_b" end
    return pocket.reject("unknown name " .. tostring(conn.sni))
  end,
  tests = {
    { name = "a by name", conn = { listener = "tls", sni = "a.example" }, pool = "site_a" },
    { name = "b by name", conn = { sni = "B.Example" }, server = "127.0.0.1:9444" },
    { name = "unknown name", conn = { listener = "tls", sni = "x.example" }, rejected = "unknown name" },
    { name = "wrong", conn = { listener = "tls", sni = "a.example" }, pool = "site_b" },
    { name = "b down", conn = { sni = "b.example" }, health = { ["127.0.0.1:9444"] = "down" }, rejected = true },
    { name = "bad", conn = { listener = "web", snii = "a" }, status = 200 },
    { name = "request on tcp", req = { listener = "tls" }, pool = "site_a" },
    { name = "no listener named", req = { path = "/" }, pool = "web" },
  },
}"#,
    );
    let (code, out, _) = pocket_cmd(&["test", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    for expected in [
        "policy.lua:20: test 4 (wrong): expected pool \"site_b\", got pool \"site_a\" server 127.0.0.1:9443",
        "policy.lua:21: test 5 (b down): expected the connection rejected, got pool \"site_b\" with no server up (the connection is closed)",
        "policy.lua:22: test 6 (bad): status is for a request case; a connection case (conn) expects pool, server or rejected; unknown key \"snii\" in conn (known: listener, sni, alpn, peer_ip, peer_port); conn.listener \"web\" is an http listener",
        "policy.lua:23: test 7 (request on tcp): listener \"tls\" is a tcp listener: it reads no HTTP request; on_connect decides there: test a connection with conn = { listener = \"tls\", sni = ... }",
        "policy.lua:24: test 8 (no listener named): the policy's first listener \"tls\" is a tcp listener: name this request's http listener (req = { listener = \"...\" }), or test a connection with conn = { listener = \"tls\", ... }",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(out.contains("3 passed, 5 failed"), "{out}");
}
