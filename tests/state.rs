//! State a user can trust: `pocket status` and `pocket reload` see every
//! Pocket serving a policy, and a trace log kept in the policy's folder
//! does not feed itself through the folder watcher. Real Pocket processes.

mod common;
use common::*;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn policy_on(port: u16, origin: std::net::SocketAddr) -> String {
    format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:{port}", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{origin}" }} }} }},
}}"#
    )
}

/// `pocket run POLICY` (one worker, not watching), ready.
fn run(policy: &Path) -> (Child, Log) {
    let mut child = Command::new(pocket_bin())
        .arg("run")
        .arg(policy)
        .args(["--workers", "1", "--no-watch"])
        .env("POCKET_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Log::default();
    log.follow(child.stderr.take().unwrap());
    log.wait_for(&["pocket ready"]);
    (child, log)
}

fn pids_in(status: &str) -> Vec<u32> {
    status
        .lines()
        .filter_map(|l| l.strip_prefix("pid: "))
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Two `pocket run` of one policy on one port both serve (SO_REUSEPORT):
/// status lists both, reload reloads both, and when one stops (SIGTERM or
/// SIGKILL) the other is still listed; a draining one is shown as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_reload_see_every_pocket_serving_a_policy() {
    let a = origin("A");
    let port = dead_addr().port();
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", &policy_on(port, a.addr));
    let p = path.to_str().unwrap();
    let (mut first, first_log) = run(&path);
    let (mut second, second_log) = run(&path);
    let (one, two) = (first.id(), second.id());
    // The second says at start that it is not alone, naming the first.
    second_log.wait_for(&[
        "WARN",
        &format!("another Pocket (pid {one}) serves this policy; both take connections on the same ports (SO_REUSEPORT)"),
    ]);
    assert!(
        !first_log.text().contains("another Pocket"),
        "{}",
        first_log.text()
    );

    let (code, status, err) = pocket_cmd(&["status", p]);
    assert_eq!(code, 0, "{err}");
    let mut want = vec![one, two];
    want.sort();
    assert_eq!(pids_in(&status), want, "{status}");
    assert_eq!(status.matches("state: serving").count(), 2, "{status}");

    let (code, out, err) = pocket_cmd(&["reload", p]);
    assert_eq!(code, 0, "{out}{err}");
    for pid in [one, two] {
        assert!(
            out.contains(&format!("reloaded: generation 2 (pid {pid})")),
            "{out}"
        );
    }

    // The newest stops gracefully: the first one is still there.
    unsafe { libc::kill(two as i32, libc::SIGTERM) };
    assert!(second.wait().unwrap().success());
    let (code, status, err) = pocket_cmd(&["status", p]);
    assert_eq!(code, 0, "the first Pocket still serves: {err}");
    assert_eq!(pids_in(&status), vec![one], "{status}");
    assert_eq!(get(([127, 0, 0, 1], port).into(), "/").await.status, 200);

    // A third starts, and the first is killed outright (no chance to
    // remove its files): only the third is listed, the first's files go.
    let (mut third, third_log) = run(&path);
    let three = third.id();
    let _ = first.kill();
    let _ = first.wait();
    let (code, status, err) = pocket_cmd(&["status", p]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(pids_in(&status), vec![three], "{status}");
    let stem = pocket::reload::stem(&path);
    let stale = std::env::temp_dir().join(format!("{stem}-{one}.status"));
    assert!(!stale.exists(), "{} left behind", stale.display());

    // While it drains a slow request it is listed as draining, and takes
    // no reload.
    let slow = tokio::spawn(async move { get(([127, 0, 0, 1], port).into(), "/delay/3000").await });
    let deadline = Instant::now() + DEADLINE;
    while a.request_count() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    unsafe { libc::kill(three as i32, libc::SIGTERM) };
    third_log.wait_for(&["draining"]);
    let (code, status, _) = pocket_cmd(&["status", p]);
    assert_eq!(code, 0);
    assert!(status.contains("state: draining"), "{status}");
    let (code, out, err) = pocket_cmd(&["reload", p]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&format!("pid {three}: draining")), "{out}");
    // One started while the old one drains (a binary upgrade) is told
    // so, without a warning.
    let (mut fourth, fourth_log) = run(&path);
    let told = fourth_log.wait_for(&[&format!(
        "another Pocket (pid {three}) serves this policy and is draining"
    )]);
    assert!(told.contains("INFO"), "{told}");
    assert!(!fourth_log.text().contains("WARN"), "{}", fourth_log.text());
    assert_eq!(slow.await.unwrap().status, 200);
    assert!(third.wait().unwrap().success());
    unsafe { libc::kill(fourth.id() as i32, libc::SIGTERM) };
    assert!(fourth.wait().unwrap().success());

    let (code, _, err) = pocket_cmd(&["status", p]);
    assert_eq!(code, 1);
    assert!(err.contains("no Pocket is serving"), "{err}");
    let left: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&stem))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `pocket status POLICY` with any path, not only UTF-8 text.
fn status_of(policy: &Path) -> String {
    let out = Command::new(pocket_bin())
        .arg("status")
        .arg(policy)
        .env("POCKET_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A policy in a folder whose name holds a newline, or bytes that are not
/// UTF-8: two Pockets serve it, `pocket status` lists both (and any other
/// Pocket's look around removes neither's files), and the path is shown
/// on one line with the odd bytes escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_path_with_a_newline_or_bytes_not_utf8_keeps_its_pockets_listed() {
    use std::os::unix::ffi::OsStrExt;
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = write_policy(
        dir.path(),
        "other.lua",
        &policy_on(dead_addr().port(), a.addr),
    );
    for (folder, shown) in [
        (&b"new\nline"[..], "new\\x0aline"),
        (&b"not\xffutf8"[..], "not\\xffutf8"),
    ] {
        let folder = dir.path().join(std::ffi::OsStr::from_bytes(folder));
        std::fs::create_dir(&folder).unwrap();
        let port = dead_addr().port();
        let path = write_policy(&folder, "policy.lua", &policy_on(port, a.addr));
        let (mut first, _) = run(&path);
        let (mut second, _) = run(&path);
        let mut want = vec![first.id(), second.id()];
        want.sort();
        for _ in 0..2 {
            let status = status_of(&path);
            assert_eq!(pids_in(&status), want, "{status}");
            assert!(status.contains(shown), "{status}");
            // Another policy's status looks through every Pocket's files.
            let (code, _, err) = pocket_cmd(&["status", elsewhere.to_str().unwrap()]);
            assert_eq!(code, 1, "nobody serves it: {err}");
        }
        let files = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                want.iter()
                    .any(|pid| name.ends_with(&format!("-{pid}.status")))
            })
            .count();
        assert_eq!(files, 2, "both status files are still there");
        assert_eq!(get(([127, 0, 0, 1], port).into(), "/").await.status, 200);
        for child in [&mut first, &mut second] {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            assert!(child.wait().unwrap().success());
        }
    }
}

/// `POCKET_LOG=trace` with stderr going to a file in the watched policy
/// folder: each line written is a file-system event, and if any event
/// logged a line the log would feed itself (70 MB in 5 s was seen). The
/// log stays a few hundred lines, and the watcher still reloads on an edit.
#[test]
fn a_trace_log_in_the_policy_folder_does_not_feed_itself() {
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", &policy_on(0, a.addr));
    let log_path = dir.path().join("pocket.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(pocket_bin())
        .args(["run", path.to_str().unwrap(), "--workers", "1"])
        .env("POCKET_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let wait_in_file = |part: &str| {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains(part) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {part:?} in the log ({} bytes)",
                text.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_in_file("pocket ready");
    std::fs::write(&path, policy_on(0, a.addr) + "\n-- edited\n").unwrap();
    wait_in_file("generation 2 is live");
    // Two more seconds of a log that, looping, grew by ~50,000 lines a second.
    std::thread::sleep(Duration::from_secs(2));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines = text.lines().count();
    assert!(
        lines < 1000,
        "{lines} log lines; the last ones:\n{}",
        text.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
}

fn origin_of(r: &Resp) -> String {
    r.header("x-origin").unwrap_or_default()
}

/// One origin, S, in two pools (and in a third that keeps its own health).
/// Killed, it is DOWN once, in both sharing pools at once: clients of the
/// pool without a check (which alone, with no passive checking and no
/// retries, would answer 502 on each try of S) are served by the others.
/// Back, both pools send to it again. The pool with `own_health` is not
/// touched by the shared verdict.
#[tokio::test]
async fn one_address_has_one_health_in_every_pool() {
    let (a, b) = (origin("A"), origin("B"));
    let s = origin("S");
    let s_addr = s.addr;
    let policy = format!(
        r#"return {{
  listeners = {{
    {{ name = "a", bind = "127.0.0.1:0", pool = "checked" }},
    {{ name = "b", bind = "127.0.0.1:0", pool = "unchecked" }},
    {{ name = "c", bind = "127.0.0.1:0", pool = "apart" }},
  }},
  pools = {{
    checked = {{ servers = {{ "{a}", "{s}" }},
      check = {{ http = "GET /health", interval = "200ms", timeout = "150ms", rise = 2, fall = 2 }} }},
    unchecked = {{ servers = {{ "{b}", "{s}" }}, passive = false, retries = 0 }},
    apart = {{ servers = {{ "{s}" }}, own_health = true, passive = false, retries = 0 }},
  }},
  on_health = function(server, up, why)
    pocket.log.warn("on_health", server.pool, server.addr, up and "up" or "down")
  end,
}}"#,
        a = a.addr,
        b = b.addr,
        s = s_addr
    );
    let pocket = Pocket::start(&policy, 2);
    let (via_a, via_b, via_c) = (pocket.addr("a"), pocket.addr("b"), pocket.addr("c"));
    let served = |addr, n| async move {
        let mut seen = Vec::new();
        for _ in 0..n {
            let r = get(addr, "/").await;
            seen.push(format!("{} {}", r.status, origin_of(&r)));
        }
        seen
    };
    assert!(served(via_b, 4).await.contains(&"200 S".to_string()));

    drop(s);
    let down = pocket.log.wait_for(&[
        &format!("server {s_addr} of pools checked, unchecked is DOWN"),
        "2 checks failed",
    ]);
    eprintln!("{down}");
    for pool in ["checked", "unchecked"] {
        pocket
            .log
            .wait_for(&["on_health", pool, &s_addr.to_string(), "down"]);
    }
    let seen = served(via_b, 10).await;
    assert!(
        seen.iter().all(|r| r == "200 B"),
        "the unchecked pool still tried S: {seen:?}"
    );
    let seen = served(via_a, 10).await;
    assert!(seen.iter().all(|r| r == "200 A"), "{seen:?}");
    // The pool with its own health has no check and no passive checking:
    // it still believes S up and tries it (a 502 with retries = 0).
    let r = get(via_c, "/").await;
    assert_eq!(r.status, 502, "{}", r.text());

    let s = spawn_origin_at("S", s_addr).expect("restart S on its port");
    pocket.log.wait_for(&[
        &format!("server {s_addr} of pools checked, unchecked is UP"),
        "2 checks passed",
    ]);
    for via in [via_a, via_b] {
        let seen = served(via, 6).await;
        assert!(seen.contains(&"200 S".to_string()), "S is back: {seen:?}");
    }
    let downs = pocket
        .log
        .lines()
        .iter()
        .filter(|l| l.contains(&format!("server {s_addr} ")) && l.contains(" is DOWN"))
        .count();
    assert_eq!(
        downs,
        1,
        "one health, one DOWN line:\n{}",
        pocket.log.text()
    );
    drop(s);
}

/// Passive failures in one pool take the address down in every pool
/// sharing it (the other pool counts none, with `passive = false`).
#[tokio::test]
async fn passive_failures_in_one_pool_take_the_address_down_in_all() {
    let (a, b) = (origin("A"), origin("B"));
    let s = dead_addr();
    let policy = format!(
        r#"return {{
  listeners = {{
    {{ name = "a", bind = "127.0.0.1:0", pool = "watching" }},
    {{ name = "b", bind = "127.0.0.1:0", pool = "trusting" }},
  }},
  pools = {{
    watching = {{ servers = {{ "{a}", "{s}" }}, passive = {{ after = 2, cooldown = "1h" }} }},
    trusting = {{ servers = {{ "{b}", "{s}" }}, passive = false, retries = 0 }},
  }},
}}"#,
        a = a.addr,
        b = b.addr,
    );
    let pocket = Pocket::start(&policy, 1);
    let (via_a, via_b) = (pocket.addr("a"), pocket.addr("b"));
    for _ in 0..6 {
        assert_eq!(get(via_a, "/").await.status, 200);
    }
    pocket.log.wait_for(&[
        &format!("server {s} of pools trusting, watching is DOWN"),
        "2 failures in a row on live traffic",
    ]);
    for _ in 0..10 {
        let r = get(via_b, "/").await;
        assert_eq!(
            (r.status, origin_of(&r)),
            (200, "B".to_string()),
            "{}",
            r.text()
        );
    }
}

/// Only a pool that counts failures ends a streak: a pool with
/// `passive = false` answering in between (here with a 5xx, which it does
/// not count) does not keep the counting pool from taking S out.
#[tokio::test]
async fn a_pool_that_counts_nothing_does_not_end_another_pools_streak() {
    let s = origin("S");
    s.set_fail_status(Some(500));
    let policy = format!(
        r#"return {{
  listeners = {{
    {{ name = "a", bind = "127.0.0.1:0", pool = "a" }},
    {{ name = "b", bind = "127.0.0.1:0", pool = "b" }},
  }},
  pools = {{
    a = {{ servers = {{ "{s}" }}, passive = {{ after = 2, on_5xx = true, cooldown = "1h" }}, retries = 0 }},
    b = {{ servers = {{ "{s}" }}, passive = false, retries = 0 }},
  }},
}}"#,
        s = s.addr,
    );
    let pocket = Pocket::start(&policy, 1);
    let (via_a, via_b) = (pocket.addr("a"), pocket.addr("b"));
    assert_eq!(get(via_a, "/").await.status, 500);
    assert_eq!(get(via_b, "/").await.status, 500);
    assert_eq!(get(via_a, "/").await.status, 500);
    pocket.log.wait_for(&[
        &format!("server {} of pools a, b is DOWN", s.addr),
        "2 failures in a row on live traffic",
    ]);
    // Out in b too: no server left to answer.
    assert_eq!(get(via_b, "/").await.status, 503);
}

/// Two pools that check one address differently: which would decide? The
/// policy is refused, at the second pool, with what to do.
#[test]
fn two_different_checks_of_one_address_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(
        dir.path(),
        "policy.lua",
        r#"return {
  listeners = { { name = "web", bind = "127.0.0.1:0", pool = "one" } },
  pools = {
    one = { servers = { "127.0.0.1:9001" }, check = { tcp = true } },
    two = { servers = { "127.0.0.1:9001" }, check = { http = "GET /health" } },
    three = { servers = { "127.0.0.1:9001" }, check = { tcp = true } },
    four = { servers = { "127.0.0.1:9001" }, check = { http = "GET /health" }, own_health = true },
  },
}
"#,
    );
    let (code, out, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("policy.lua:5: pool \"two\": server 127.0.0.1:9001 is also in pool \"one\", which checks it differently")
            && err.contains("own_health = true"),
        "{err}"
    );
    assert_eq!(err.matches("checks it differently").count(), 1, "{err}");
}

/// Pools b (no check) and c (a check) share S. The check takes S down;
/// a reload removes the check (or the whole pool c): nothing will ever
/// check S again, so it is UP at once (HAProxy: a server without a check
/// is assumed up), in every pool listing it, with a line saying why; S
/// back, they send to it.
#[tokio::test]
async fn a_server_down_by_a_check_is_up_once_no_check_is_left() {
    for pool_goes in [false, true] {
        no_check_left(pool_goes).await;
    }
}

async fn no_check_left(pool_goes: bool) {
    let (b, c) = (origin("B"), origin("C"));
    let s = origin("S");
    let s_addr = s.addr;
    let policy = |check: &str, with_c: bool| {
        let (listener, pool) = if with_c {
            (
                r#"{ name = "c", bind = "127.0.0.1:0", pool = "c" },"#.to_string(),
                format!(
                    r#"c = {{ servers = {{ "{}", "{s_addr}" }}{check} }},"#,
                    c.addr
                ),
            )
        } else {
            (String::new(), String::new())
        };
        format!(
            r#"return {{
  listeners = {{
    {{ name = "b", bind = "127.0.0.1:0", pool = "b" }},
    {listener}
  }},
  pools = {{
    b = {{ servers = {{ "{b}", "{s_addr}" }} }},
    {pool}
  }},
}}"#,
            b = b.addr,
        )
    };
    let pocket = Pocket::start(
        &policy(
            r#", check = { tcp = true, interval = "300ms", fall = 1, rise = 1 }"#,
            true,
        ),
        1,
    );
    let (via_b, via_c) = (pocket.addr("b"), pocket.addr("c"));
    drop(s);
    pocket.log.wait_for(&[
        &format!("server {s_addr} of pools b, c is DOWN"),
        "1 check failed",
    ]);
    std::fs::write(&pocket.policy, policy("", !pool_goes)).unwrap();
    pocket.log.wait_for(&["generation 2 is live"]);
    let of = if pool_goes { "pool b" } else { "pools b, c" };
    pocket.log.wait_for(&[
        &format!("server {s_addr} of {of} is UP"),
        "no check any more",
    ]);
    let s = spawn_origin_at("S", s_addr).expect("restart S on its port");
    let vias = if pool_goes {
        vec![via_b]
    } else {
        vec![via_b, via_c]
    };
    for via in vias {
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(origin_of(&get(via, "/").await));
        }
        assert!(
            seen.contains(&"S".to_string()),
            "S is back (pool c gone: {pool_goes}): {seen:?}"
        );
    }
    drop(s);
}

/// The reverse: S down by live traffic (a cool-down of an hour); a
/// reload adds a check. The check decides from then on: while S is dead
/// it stays down, nothing says it is up; S back, the check brings it up.
#[tokio::test]
async fn a_check_added_to_a_server_down_by_traffic_decides_from_then_on() {
    let a = origin("A");
    let s = dead_addr();
    let policy = |check: &str| {
        format!(
            r#"return {{
  listeners = {{ {{ name = "a", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{ servers = {{ "{a}", "{s}" }}, passive = {{ after = 1, cooldown = "1h" }}{check} }},
  }},
}}"#,
            a = a.addr,
        )
    };
    let pocket = Pocket::start(&policy(""), 1);
    let via = pocket.addr("a");
    for _ in 0..4 {
        assert_eq!(get(via, "/").await.status, 200);
    }
    pocket.log.wait_for(&[
        &format!("server {s} of pool app is DOWN"),
        "on live traffic",
    ]);
    std::fs::write(
        &pocket.policy,
        policy(r#", check = { tcp = true, interval = "200ms", fall = 1, rise = 2 }"#),
    )
    .unwrap();
    let live = pocket.log.wait_for(&["generation 2 is live"]);
    let from = pocket.log.lines().iter().position(|l| *l == live).unwrap();
    // A few check rounds on the dead S: it stays down.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let ups: Vec<String> = pocket.log.lines()[from..]
        .iter()
        .filter(|l| l.contains(" is UP"))
        .cloned()
        .collect();
    assert!(ups.is_empty(), "up while dead: {ups:?}");
    let back = spawn_origin_at("S", s).expect("start S on its port");
    pocket.log.wait_for_after(
        from,
        &[&format!("server {s} of pool app is UP"), "2 checks passed"],
    );
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(origin_of(&get(via, "/").await));
    }
    assert!(seen.contains(&"S".to_string()), "S is back: {seen:?}");
    drop(back);
}

/// Without a check, S rests the longest `cooldown` of the pools that
/// count its failures: a pool with `passive = false` adds nothing to the
/// streak, so its cooldown (10 s by default) does not count either.
#[tokio::test]
async fn a_pool_that_does_not_count_failures_does_not_lengthen_the_cooldown() {
    let (a, b) = (origin("A"), origin("B"));
    let s = dead_addr();
    let policy = format!(
        r#"return {{
  listeners = {{
    {{ name = "a", bind = "127.0.0.1:0", pool = "a" }},
    {{ name = "b", bind = "127.0.0.1:0", pool = "b" }},
  }},
  pools = {{
    a = {{ servers = {{ "{a}", "{s}" }}, passive = {{ after = 1, cooldown = "1s" }} }},
    b = {{ servers = {{ "{b}", "{s}" }}, passive = false }},
  }},
}}"#,
        a = a.addr,
        b = b.addr,
    );
    let pocket = Pocket::start(&policy, 1);
    let via = pocket.addr("a");
    for _ in 0..4 {
        assert_eq!(get(via, "/").await.status, 200);
    }
    pocket.log.wait_for(&[
        &format!("server {s} of pools a, b is DOWN"),
        "on live traffic",
    ]);
    let up = pocket
        .log
        .wait_for(&[&format!("server {s} of pools a, b is UP"), "cool-down of"]);
    assert!(up.contains("cool-down of 1s over"), "{up}");
}

/// A mistyped policy path is said to be one, not only "nobody serves it";
/// `--max-connections 0` is refused in words, not as a range of u64.
#[test]
fn a_missing_policy_and_a_zero_connection_cap_are_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nosuch.lua");
    let m = missing.to_str().unwrap();
    for command in ["status", "reload"] {
        let (code, _, err) = pocket_cmd(&[command, m]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("{m} does not exist; no Pocket is serving it")),
            "{command}: {err}"
        );
    }
    let there = write_policy(
        dir.path(),
        "policy.lua",
        &policy_on(dead_addr().port(), dead_addr()),
    );
    let (code, _, err) = pocket_cmd(&["status", there.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no Pocket is serving"), "{err}");
    assert!(!err.contains("does not exist"), "{err}");

    let (code, _, err) = pocket_cmd(&["run", there.to_str().unwrap(), "--max-connections", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--max-connections must be at least 1"),
        "{err}"
    );
    assert!(!err.contains("18446744073709551615"), "{err}");
}

/// A refused reload changes no server's state: a server it added is still
/// new to the next load, so that load's check `start = "down"` holds (X
/// takes no traffic before its checks pass), as for a server never seen.
#[tokio::test]
async fn a_refused_reload_leaves_a_new_server_new() {
    let (a, x) = (origin("A"), origin("X"));
    let policy = |pool_n: String| {
        format!(
            r#"return {{
  listeners = {{ {{ name = "a", bind = "127.0.0.1:0", pool = "a" }},
                {{ name = "n", bind = "127.0.0.1:0", pool = "n" }} }},
  pools = {{
    a = {{ servers = {{ "{a}" }} }},
    {pool_n}
  }},
}}"#,
            a = a.addr
        )
    };
    let pocket = Pocket::start(
        &policy(format!(r#"n = {{ servers = {{ "{}" }} }},"#, a.addr)),
        1,
    );
    // Refused (retries out of range), but its load met X, with no check.
    std::fs::write(
        &pocket.policy,
        policy(format!(
            r#"n = {{ servers = {{ "{}" }}, retries = 99 }},"#,
            x.addr
        )),
    )
    .unwrap();
    pocket
        .log
        .wait_for(&["refused, generation 1 keeps serving"]);
    // X under a check that starts down and needs 100 passes a second.
    std::fs::write(
        &pocket.policy,
        policy(format!(
            r#"n = {{ servers = {{ "{}" }}, check = {{ tcp = true, interval = "1s", rise = 100, start = "down" }} }},"#,
            x.addr
        )),
    )
    .unwrap();
    pocket.log.wait_for(&["generation 2 is live"]);
    for _ in 0..5 {
        let r = get(pocket.addr("n"), "/").await;
        assert_eq!(r.status, 503, "X must wait for its checks: {}", r.text());
    }
}

/// A Pocket stopped with SIGSTOP still has its status file saying
/// `serving`; `pocket status` reads the process state and says it is
/// stopped, `pocket reload` reports it at once (not after 30 s) and still
/// reloads the other one; after SIGCONT it is serving again.
#[test]
fn a_stopped_pocket_is_shown_stopped_and_not_waited_for() {
    let a = origin("A");
    let port = dead_addr().port();
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", &policy_on(port, a.addr));
    let p = path.to_str().unwrap();
    let (mut first, _first_log) = run(&path);
    let (mut second, _second_log) = run(&path);
    let stopped = second.id() as i32;
    unsafe { libc::kill(stopped, libc::SIGSTOP) };
    // The kernel stops it asynchronously: wait for /proc to say so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pocket::reload::is_stopped(stopped) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, status, err) = pocket_cmd(&["status", p]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        status
            .matches("state: stopped (SIGSTOP: it takes no connections until SIGCONT)")
            .count(),
        1,
        "{status}"
    );
    assert_eq!(status.matches("state: serving").count(), 1, "{status}");

    let (code, out, err) = pocket_cmd(&["reload", p]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("pid {stopped} is stopped (SIGSTOP")),
        "{err}"
    );
    assert!(
        out.contains(&format!("reloaded: generation 2 (pid {})", first.id())),
        "{out}"
    );
    // Said at once: not the 30 s wait's "no answer".
    assert!(!err.contains("no answer"), "{err}");

    unsafe { libc::kill(stopped, libc::SIGCONT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while pocket::reload::is_stopped(stopped) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, status, err) = pocket_cmd(&["status", p]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status.matches("state: serving").count(), 2, "{status}");
    for child in [&mut first, &mut second] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
