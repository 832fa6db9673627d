//! Hot reload as a user lives it: edit the policy while traffic flows, and
//! the next requests follow the new policy; nothing is dropped, broken
//! versions are refused while the old one keeps serving.

mod common;
use common::*;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A policy that routes everything to `origin` and stamps `version` on
/// every response (from its own VM, so a response says which generation's
/// hooks ran).
fn versioned(version: &str, origin: &OriginHandle, extra: &str) -> String {
    format!(
        r#"local counter = pocket.store("hits")
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }}{extra} }},
  pools = {{ app = {{ servers = {{ "{addr}" }} }} }},
  on_request = function(req)
    if req.path == "/count" then
      return pocket.respond(200, tostring(counter:incr("n")) .. " {version}\n")
    end
  end,
  on_response = function(req, res) res:set_header("x-policy", "{version}") end,
}}
"#,
        addr = origin.addr
    )
}

/// Saves like an editor that writes a new file and renames it over.
fn save_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("lua.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Saves in place, like `echo > file`.
fn save_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn count_lines(log: &Log, part: &str) -> usize {
    log.lines().iter().filter(|l| l.contains(part)).count()
}

/// Waits until the log has more than `before` lines containing `part`.
fn wait_for_count(log: &Log, part: &str, before: usize) {
    let start = std::time::Instant::now();
    while count_lines(log, part) <= before {
        assert!(
            start.elapsed() < DEADLINE,
            "no new {part:?} in log:\n{}",
            log.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Default)]
struct LoadResult {
    ok: AtomicU64,
    /// Requests resent on a fresh connection after a kept-alive one closed.
    resent: AtomicU64,
    failed: Mutex<Vec<String>>,
    bodies: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// Waits until `n` requests of the load have succeeded.
async fn wait_served(result: &LoadResult, n: u64, what: &str) {
    let start = std::time::Instant::now();
    while result.ok.load(Ordering::Relaxed) < n {
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: {} of {n} requests served; failures: {:?}",
            result.ok.load(Ordering::Relaxed),
            &result.failed.lock().unwrap()[..]
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lets `more` requests succeed, stops the load, asserts none failed and
/// returns what answered how often.
async fn finish_load(
    result: &LoadResult,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    more: u64,
    what: &str,
) -> std::collections::BTreeMap<String, u64> {
    let served = result.ok.load(Ordering::Relaxed);
    wait_served(result, served + more, what).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let failed = result.failed.lock().unwrap().clone();
    let bodies = result.bodies.lock().unwrap().clone();
    eprintln!(
        "{what}: ok {} resent {} failed {} {:?}",
        result.ok.load(Ordering::Relaxed),
        result.resent.load(Ordering::Relaxed),
        failed.len(),
        bodies
    );
    assert!(
        failed.is_empty(),
        "failed requests: {:?}",
        &failed[..failed.len().min(10)]
    );
    bodies
}

/// `clients` keep-alive clients sending GETs until `stop`. A request that
/// fails on a reused connection before any response is retried once on a
/// fresh one, as browsers do; everything else that is not a 200 counts as
/// a failure.
fn spawn_load(
    addr: std::net::SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<LoadResult>, Vec<tokio::task::JoinHandle<()>>) {
    let result = Arc::new(LoadResult::default());
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let result = result.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = H1::connect(addr).await;
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                let resp = match client.send(request("GET", "/", &[], "")).await {
                    Ok(r) => Ok(r),
                    Err(_) => {
                        result.resent.fetch_add(1, Ordering::Relaxed);
                        client = H1::connect(addr).await;
                        client.send(request("GET", "/", &[], "")).await
                    }
                };
                match resp {
                    Ok(r) if r.status == 200 => {
                        result.ok.fetch_add(1, Ordering::Relaxed);
                        let key = format!(
                            "{} {}",
                            r.header("x-policy").unwrap_or_default(),
                            r.text().split(" (").next().unwrap_or("")
                        );
                        *result.bodies.lock().unwrap().entry(key).or_default() += 1;
                    }
                    Ok(r) => {
                        result
                            .failed
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", r.status, r.text()))
                    }
                    Err(e) => {
                        result.failed.lock().unwrap().push(e.to_string());
                        client = H1::connect(addr).await;
                    }
                }
            }
        }));
    }
    (result, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_nothing_and_refuse_broken_versions() {
    let (a, b) = (origin("A"), origin("B"));
    let v1 = versioned("v1", &a, "");
    let v2 = versioned("v2", &b, "");
    let broken = [
        "return {\n  listeners = {\n", // half-written
        "local x = nil\nreturn x.y\n", // runtime error
        "return { listeners = { { bind = \"127.0.0.1:0\", pool = \"nope\" } } }\n", // invalid
        "",                            // emptied
    ];
    let pocket = Pocket::start(&v1, 2);
    let addr = pocket.addr("web");
    let path = pocket.policy.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (result, tasks) = spawn_load(addr, 8, stop.clone());

    let log = pocket.log.clone();
    let path2 = path.clone();
    tokio::task::spawn_blocking(move || {
        for round in 0..24 {
            // A broken save first: refused, the running policy stays.
            let refused = count_lines(&log, "refused");
            let bad = broken[round % broken.len()];
            if round % 2 == 0 {
                save_in_place(&path2, bad)
            } else {
                save_by_rename(&path2, bad)
            }
            wait_for_count(&log, "refused", refused);
            // Then a good one: live within the debounce.
            let live = count_lines(&log, "is live");
            let good = if round % 2 == 0 { &v2 } else { &v1 };
            if round % 2 == 0 {
                save_by_rename(&path2, good)
            } else {
                save_in_place(&path2, good)
            }
            wait_for_count(&log, "is live", live);
        }
    })
    .await
    .unwrap();
    // Let the final generation serve a little, then stop the load.
    let bodies = finish_load(&result, stop, tasks, 200, "reloads").await;
    assert_eq!(
        result.resent.load(Ordering::Relaxed),
        0,
        "a reload must not close client connections"
    );
    for key in bodies.keys() {
        assert!(
            key == "v1 hello from A" || key == "v2 hello from B",
            "a response from neither policy: {key}"
        );
    }
    assert!(bodies.len() == 2, "both policies served: {bodies:?}");
    // The last save was v1 (round 23 is odd).
    let r = get(addr, "/").await;
    assert_eq!(r.header("x-policy").as_deref(), Some("v1"));
    assert_eq!(r.header("x-origin").as_deref(), Some("A"));
    // Each save was one reload or more: a busy machine can spread a
    // save's events past the debounce, so that Pocket reads it half
    // written (refused) and then whole.
    let status = pocket_cmd(&["status", path.to_str().unwrap()]).1;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
    };
    let (ok, failed) = (field("reloads_ok:"), field("reloads_failed:"));
    assert!(ok >= 24 && failed >= 24, "{status}");
    assert_eq!(field("generation:"), ok + 1, "{status}");
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_policy_it_started_with() {
    let (a, b) = (origin("A"), origin("B"));
    let pocket = Pocket::start(&versioned("v1", &a, ""), 1);
    let addr = pocket.addr("web");
    let slow = tokio::spawn(async move { get(addr, "/delay/1500").await });
    // The slow request has reached the origin: it is in flight.
    while a.request_count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    save_by_rename(&pocket.policy, &versioned("v2", &b, ""));
    pocket.log.wait_for(&["generation 2 is live"]);
    let fresh = get(addr, "/").await;
    assert_eq!(fresh.header("x-policy").as_deref(), Some("v2"));
    let old = slow.await.unwrap();
    assert_eq!(old.status, 200);
    assert_eq!(
        old.header("x-policy").as_deref(),
        Some("v1"),
        "old hooks finish the old request"
    );
    assert_eq!(old.header("x-origin").as_deref(), Some("A"));
}

#[tokio::test]
async fn the_store_keeps_its_data_across_reloads() {
    let a = origin("A");
    let pocket = Pocket::start(&versioned("v1", &a, ""), 2);
    let addr = pocket.addr("web");
    for i in 1..=3 {
        assert_eq!(get(addr, "/count").await.text(), format!("{i} v1\n"));
    }
    save_by_rename(&pocket.policy, &versioned("v2", &a, ""));
    pocket.log.wait_for(&["generation 2 is live"]);
    assert_eq!(get(addr, "/count").await.text(), "4 v2\n");
}

#[tokio::test]
async fn listeners_added_start_and_listeners_removed_stop() {
    let a = origin("A");
    let extra = r#", { name = "extra", bind = "127.0.0.1:0", pool = "app" }"#;
    let pocket = Pocket::start(&versioned("v1", &a, ""), 2);
    save_by_rename(&pocket.policy, &versioned("v2", &a, extra));
    pocket
        .log
        .wait_for(&["generation 2 is live", "listeners +extra"]);
    let extra_addr = pocket.addr("extra");
    assert_eq!(
        get(extra_addr, "/").await.header("x-policy").as_deref(),
        Some("v2")
    );
    save_by_rename(&pocket.policy, &versioned("v3", &a, ""));
    pocket
        .log
        .wait_for(&["generation 3 is live", "listeners -extra"]);
    assert!(
        tokio::net::TcpStream::connect(extra_addr).await.is_err(),
        "removed listener must stop accepting"
    );
    assert_eq!(
        get(pocket.addr("web"), "/")
            .await
            .header("x-policy")
            .as_deref(),
        Some("v3")
    );
}

#[tokio::test]
async fn sighup_and_pocket_reload_reload_on_demand() {
    let (a, b) = (origin("A"), origin("B"));
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", &versioned("v1", &a, ""));
    let mut child = std::process::Command::new(pocket_bin())
        .args([
            "run",
            path.to_str().unwrap(),
            "--workers",
            "1",
            "--no-watch",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = Log::default();
    log.follow(child.stderr.take().unwrap());
    log.wait_for(&["pocket ready"]);
    let addr = log_addr(&log, "web");

    // Not watching: an edit alone changes nothing...
    std::fs::write(&path, versioned("v2", &b, "")).unwrap();
    // ...until `pocket reload` (which sends SIGHUP and waits for the result).
    let (code, out, err) = pocket_cmd(&["reload", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("generation 2"), "{out}");
    assert_eq!(
        get(addr, "/").await.header("x-policy").as_deref(),
        Some("v2")
    );

    std::fs::write(&path, "return {\n  oops\n").unwrap();
    let (code, _, err) = pocket_cmd(&["reload", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("policy.lua:3:"), "{err}");
    let (_, status, _) = pocket_cmd(&["status", path.to_str().unwrap()]);
    assert!(
        status.contains("reloads_failed: 1") && status.contains("policy.lua:3:"),
        "{status}"
    );
    assert_eq!(
        get(addr, "/").await.header("x-policy").as_deref(),
        Some("v2"),
        "still serving"
    );

    // A plain SIGHUP does the same.
    std::fs::write(&path, versioned("v3", &a, "")).unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    log.wait_for(&["generation 3 is live"]);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let a = origin("A");
    let pocket = Pocket::start(&versioned("v1", &a, ""), 2);
    let addr = pocket.addr("web");
    let slow = tokio::spawn(async move { get(addr, "/delay/1000").await });
    while a.request_count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    unsafe { libc::kill(pocket.pid() as i32, libc::SIGTERM) };
    pocket.log.wait_for(&["draining"]);
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "in-flight request finished");
    pocket.log.wait_for(&["stopped"]);
    let mut pocket = pocket;
    let status = pocket.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

fn log_addr(log: &Log, listener: &str) -> std::net::SocketAddr {
    let line = log.wait_for(&[&format!("listener {listener} listening on ")]);
    line.rsplit("listening on ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The binary upgrade story: a second Pocket starts on the same port
/// (SO_REUSEPORT), the first drains on SIGTERM, clients see no failure.
/// Keep-alive connections the old one closes are reopened, as browsers do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pocket_takes_over_the_port_while_the_old_one_drains() {
    // Connections still queued on a closing listener move to the new one
    // (Linux 5.14+); without it a few could be reset. Needs root.
    let _ = std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1");
    let a = origin("A");
    let port = dead_addr().port();
    let policy = versioned("v1", &a, "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let old = Pocket::start(&policy, 2);
    let addr = old.addr("web");
    let stop = Arc::new(AtomicBool::new(false));
    let (result, tasks) = spawn_load(addr, 8, stop.clone());
    wait_served(&result, 500, "before the upgrade").await;
    let new = Pocket::start(&policy.replace("v1", "v2"), 2);
    unsafe { libc::kill(old.pid() as i32, libc::SIGTERM) };
    old.log.wait_for(&["stopped"]);
    let bodies = finish_load(&result, stop, tasks, 500, "upgrade").await;
    assert!(
        bodies.contains_key("v2 hello from A"),
        "the new Pocket served: {bodies:?}"
    );
    assert_eq!(
        get(addr, "/").await.header("x-policy").as_deref(),
        Some("v2")
    );
    drop(new);
}

/// A reload restarts health checking with the new policy: a pool it adds
/// is checked at once, and the new version's `on_health` and `on_check`
/// are the ones called (docs/health.md, "Health across reloads").
#[tokio::test]
async fn health_checks_on_health_and_on_check_follow_a_reload() {
    let a = origin("A");
    let (dead, dead2) = (dead_addr(), dead_addr());
    let policy = |version: &str, extra: &str| {
        format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{ servers = {{ "{a}" }}, check = {{ tcp = true, interval = "100ms" }} }},
{extra}  }},
  on_health = function(server, up, why)
    pocket.log.warn("on_health {version}", server.pool, server.addr, up and "up" or "down")
  end,
  on_check = function(server, http)
    pocket.log.warn("on_check {version}", server.pool, server.addr)
    return false, "said no"
  end,
}}
"#,
            a = a.addr
        )
    };
    let pocket = Pocket::start(&policy("v1", ""), 1);
    let added = format!(
        r#"    extra = {{ servers = {{ "{dead}" }}, check = {{ tcp = true, interval = "100ms", fall = 1 }} }},
    scripted = {{ servers = {{ "{dead2}" }}, check = {{ script = true, interval = "100ms", fall = 1 }} }},
"#
    );
    std::fs::write(&pocket.policy, policy("v2", &added)).unwrap();
    pocket.log.wait_for(&["generation 2 is live"]);
    // The added pool is checked, and v2's on_health hears of it.
    pocket
        .log
        .wait_for(&[&format!("server {dead} of pool extra is DOWN")]);
    pocket
        .log
        .wait_for(&["on_health v2", "extra", &dead.to_string(), "down"]);
    // The added scripted check runs v2's on_check.
    pocket
        .log
        .wait_for(&["on_check v2", "scripted", &dead2.to_string()]);
    pocket.log.wait_for(&[
        &format!("server {dead2} of pool scripted is DOWN"),
        "said no",
    ]);
    let log = pocket.log.text();
    assert!(!log.contains("on_health v1"), "{log}");
    assert!(
        !log.contains("on_check v1"),
        "no v1 scripted check ran:\n{log}"
    );
}

/// A reload that changes only a pool's `tls` says so, not "script
/// changed" (newcomer16 #12).
#[test]
fn a_pool_tls_change_is_named_in_the_reload_line() {
    let text = |tls: &str| {
        format!(
            r#"return {{
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "p" }} }},
  pools = {{ p = {{ mode = "tcp", servers = {{ "127.0.0.1:9" }}{tls} }} }},
}}
"#
        )
    };
    let pocket = Pocket::start(&text(""), 1);
    save_by_rename(&pocket.policy, &text(", tls = { verify = false }"));
    pocket
        .log
        .wait_for(&["generation 2 is live", "pool p +tls"]);
    save_by_rename(
        &pocket.policy,
        &text(", tls = { verify = false, sni = \"a.example\" }"),
    );
    pocket
        .log
        .wait_for(&["generation 3 is live", "pool p tls changed"]);
}
