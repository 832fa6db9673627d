//! State shared across Pockets on Redis (`stores = { NAME = { redis = ... } }`,
//! docs/several-pockets.md "Shared state on Redis"): real `pocket` processes,
//! a real `redis-server` (Debian's) started by each test on a free loopback
//! port with a folder of its own, killed at the end.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `redis-server` on 127.0.0.1:`port`, data in `dir`, no persistence;
/// killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// `--requirepass`, also given to redis-cli.
    password: Option<String>,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_with_password(None)
    }

    fn start_with_password(password: Option<&str>) -> Redis {
        require_command("redis-server", "redis-server");
        require_command("redis-cli", "redis-tools");
        let mut r = Redis {
            child: None,
            port: dead_addr().port(),
            dir: tempfile::tempdir().unwrap(),
            password: password.map(str::to_string),
        };
        r.restart();
        r
    }

    /// Starts it (again, on the same port, empty) and waits for PONG.
    fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(
                self.password
                    .iter()
                    .flat_map(|p| ["--requirepass".to_string(), p.clone()]),
            )
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while self.cli(&["PING"]) != "PONG" {
            assert!(start.elapsed() < DEADLINE, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: Redis goes away at once, as a crash would.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `redis-cli -p PORT ARGS...`, its output trimmed.
    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(
                self.password
                    .iter()
                    .flat_map(|p| ["--no-auth-warning", "-a", p.as_str()]),
            )
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP relay to Redis that can hold every answer back for a while: a
/// slow Redis, as a congested network or a busy server makes it. Threads
/// of its own; a connection's relay ends when either side closes.
struct SlowLink {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
}

fn slow_link(to: String) -> SlowLink {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let delay_ms = Arc::new(AtomicU64::new(0));
    let delay = delay_ms.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&to) else {
                continue;
            };
            let pipe = |mut from: std::net::TcpStream,
                        mut to: std::net::TcpStream,
                        delay: Option<Arc<AtomicU64>>| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if let Some(d) = &delay {
                            std::thread::sleep(Duration::from_millis(d.load(Ordering::Relaxed)));
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    let _ = from.shutdown(std::net::Shutdown::Both);
                });
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(client, server, None);
            pipe(s2, c2, Some(delay.clone()));
        }
    });
    SlowLink { addr, delay_ms }
}

/// A request's status and how long it took (a fresh connection each).
async fn timed_get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> (u16, Duration, Resp) {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let started = Instant::now();
    let resp = send(addr, request("GET", path, &headers, "")).await;
    (resp.status, started.elapsed(), resp)
}

fn admin_addr(pocket: &Pocket) -> SocketAddr {
    let line = pocket.log.wait_for(&["admin listening on "]);
    let text = line.rsplit("admin listening on ").next().unwrap().trim();
    text.parse().unwrap()
}

/// The value of a metric line `name{labels} value` in `/metrics`.
async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let host = admin.to_string();
    let r = send(admin, request("GET", "/metrics", &[("host", &host)], "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn limit_policy(redis: &str, origin: SocketAddr) -> String {
    format!(
        r#"local ratelimit = require "pocket.ratelimit"
-- One bucket for everyone (the key), so two Pockets share one count.
local burst_only = ratelimit.new {{ rate = 0.1, burst = 10, store = "limits", key = function(req) return "burst" end }}
local per_second = ratelimit.new {{ rate = 10, burst = 5, store = "limits", key = function(req) return "rate" end }}
return {{
  stores = {{ limits = {{ redis = "{redis}", prefix = "t:", timeout = "1s" }} }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{origin}" }} }} }},
  on_request = function(req)
    local limiter = req.path == "/burst" and burst_only or per_second
    local refused = limiter:check(req)
    if refused then return refused end
  end,
}}"#
    )
}

/// Two Pockets, one Redis: a limit holds for both together. A burst of 10
/// (refilling at 0.1/s) lets 10 of 40 requests through, not 10 per Pocket
/// (20, as before stores could be kept in Redis); a rate of 10/s with a
/// burst of 5, offered about 40/s alternately through both for about 3 s,
/// lets through burst + rate x time, within 10%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_holds_across_two_pockets() {
    let redis = Redis::start();
    let a = origin("A");
    let one = Pocket::start(&limit_policy(&redis.addr(), a.addr), 2);
    let two = Pocket::start(&limit_policy(&redis.addr(), a.addr), 2);
    for p in [&one, &two] {
        p.log.wait_for(&["store \"limits\": on Redis at"]);
    }
    let pockets = [one.addr("web"), two.addr("web")];

    // A known number of requests within one window of the bucket.
    let started = Instant::now();
    let mut allowed = 0;
    for i in 0..40 {
        let (status, _, _) = timed_get(pockets[i % 2], "/burst", None).await;
        assert!(status == 200 || status == 429, "status {status}");
        allowed += usize::from(status == 200);
    }
    // 10 at once, and 0.1 more per second the loop took.
    let expected = 10.0 + 0.1 * started.elapsed().as_secs_f64();
    eprintln!("burst: {allowed} of 40 allowed, {expected:.1} expected");
    assert!(
        (allowed as f64 - expected).abs() <= 0.1 * expected + 0.5,
        "burst: {allowed} allowed through two Pockets, {expected:.1} expected"
    );

    // A rate over several windows: what passes is burst + rate x time.
    // The expected count is the bucket run over the requests' own times
    // (each one's midpoint), so a slow machine offering fewer or later
    // requests expects what it offered.
    let mut offered = 0;
    let mut allowed = 0;
    let mut times = Vec::new();
    let first = Instant::now();
    while first.elapsed() < Duration::from_secs(3) && offered < 400 {
        let sent = first.elapsed();
        let (status, took, _) = timed_get(pockets[offered % 2], "/rate", None).await;
        assert!(status == 200 || status == 429, "status {status}");
        times.push((sent + took / 2).as_secs_f64());
        offered += 1;
        allowed += usize::from(status == 200);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let span = times.last().copied().unwrap_or(0.0) - times[0];
    let expected = bucket(&times, 10.0, 5.0);
    eprintln!("rate: {allowed} of {offered} allowed over {span:.2}s, {expected:.1} expected");
    assert!(
        (allowed as f64 - expected).abs() <= 0.1 * expected,
        "rate: {allowed} of {offered} allowed over {span:.2} s through two Pockets, {expected:.1} expected"
    );
    // The count is Redis's: the bucket's key is there, with its prefix.
    assert_ne!(redis.cli(&["GET", "t:rate"]), "");
}

/// How many requests at `times` (seconds) a token bucket of `rate` per
/// second and `burst` lets through.
fn bucket(times: &[f64], rate: f64, burst: f64) -> f64 {
    let (mut tokens, mut last, mut passed) = (burst, times.first().copied().unwrap_or(0.0), 0.0);
    for &t in times {
        tokens = burst.min(tokens + (t - last) * rate);
        last = t;
        if tokens >= 1.0 {
            tokens -= 1.0;
            passed += 1.0;
        }
    }
    passed
}

fn sticky_policy(redis: &str, servers: [SocketAddr; 2]) -> String {
    format!(
        r#"local sticky = require "pocket.sticky"
return {{
  stores = {{ sessions = {{ redis = "{redis}", prefix = "s:", timeout = "1s" }} }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}", "{}" }},
                     balance = sticky.balance {{ cookie = "sid", store = "sessions" }} }} }},
}}"#,
        servers[0], servers[1]
    )
}

/// A session made sticky on one Pocket goes to the same server through
/// the other. The two Pockets list the servers in opposite orders, so a
/// new session goes to B on the first and to A on the second: only the
/// shared store sends the second's requests to B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_sticky_on_one_pocket_keeps_its_server_on_the_other() {
    let redis = Redis::start();
    let (a, b) = (origin("A"), origin("B"));
    let one = Pocket::start(&sticky_policy(&redis.addr(), [b.addr, a.addr]), 2);
    let two = Pocket::start(&sticky_policy(&redis.addr(), [a.addr, b.addr]), 2);
    for p in [&one, &two] {
        p.log.wait_for(&["store \"sessions\": on Redis at"]);
    }
    let (one, two) = (one.addr("web"), two.addr("web"));
    for i in 0..10 {
        let cookie = format!("sid=user{i}");
        let (_, _, first) = timed_get(one, "/", Some(&cookie)).await;
        assert_eq!(
            first.header("x-origin").as_deref(),
            Some("B"),
            "made on the first"
        );
        for _ in 0..3 {
            let (_, _, next) = timed_get(two, "/", Some(&cookie)).await;
            assert_eq!(
                next.header("x-origin").as_deref(),
                Some("B"),
                "session user{i} through the second Pocket"
            );
        }
    }
    // A session new to both, first seen by the second: A there, and A
    // through the first too.
    let (_, _, fresh) = timed_get(two, "/", Some("sid=other")).await;
    assert_eq!(fresh.header("x-origin").as_deref(), Some("A"));
    let (_, _, back) = timed_get(one, "/", Some("sid=other")).await;
    assert_eq!(back.header("x-origin").as_deref(), Some("A"));
    assert_eq!(redis.cli(&["GET", "s:other"]), a.addr.to_string());
}

fn outage_policy(redis: &str, origin: SocketAddr) -> String {
    format!(
        r#"local hits = pocket.store("hits")
return {{
  stores = {{ hits = {{ redis = "{redis}", prefix = "o:" }} }},  -- timeout: the default 50ms
  admin = {{ bind = "127.0.0.1:0" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{origin}" }} }} }},
  on_request = function(req)
    hits:incr("n", 1)
    hits:set("last", req.path)
  end,
}}"#
    )
}

/// Redis killed under load, then started again (empty), then paused: no
/// request fails, none waits past the bound (50 ms, with 1 s of slack for
/// a busy machine), the log and `/metrics` show the fallback and the
/// return, and the increments made while Redis was away are in Redis
/// once it is back (replayed as deltas).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_costs_no_request_and_its_writes_reach_redis_after() {
    let mut redis = Redis::start();
    let a = origin("A");
    let pocket = Pocket::start(&outage_policy(&redis.addr(), a.addr), 2);
    pocket.log.wait_for(&["store \"hits\": on Redis at"]);
    let web = pocket.addr("web");
    let admin = admin_addr(&pocket);
    let slack = Duration::from_secs(1);
    let mut slowest = Duration::ZERO;
    let load = |n: usize| {
        let mut out = Vec::new();
        for i in 0..n {
            out.push(format!("/r{i}"));
        }
        out
    };

    for path in load(50) {
        let (status, took, _) = timed_get(web, &path, None).await;
        assert_eq!(status, 200);
        slowest = slowest.max(took);
    }
    assert_eq!(redis.cli(&["GET", "o:n"]), "50");
    assert_eq!(
        metric(admin, "pocket_store_redis_up{store=\"hits\"}").await,
        Some(1.0)
    );

    // Killed: requests go on, served from local state.
    redis.kill();
    let from = pocket.log.lines().len();
    for path in load(100) {
        let (status, took, _) = timed_get(web, &path, None).await;
        assert_eq!(status, 200, "during the outage");
        assert!(took < slack, "a request took {took:?} while Redis was down");
        slowest = slowest.max(took);
    }
    pocket.log.wait_for_after(
        from,
        &["store \"hits\": Redis at", "serving from local state"],
    );
    assert_eq!(
        metric(admin, "pocket_store_redis_up{store=\"hits\"}").await,
        Some(0.0)
    );
    assert!(metric(admin, "pocket_store_redis_fallbacks_total{store=\"hits\"}").await >= Some(1.0));

    // Back (empty: no persistence), the 100 increments are replayed.
    let from = pocket.log.lines().len();
    redis.restart();
    let back = pocket
        .log
        .wait_for_after(from, &["store \"hits\": Redis at", "answers again"]);
    assert!(back.contains("writes made meanwhile replayed"), "{back}");
    let replayed: i64 = redis.cli(&["GET", "o:n"]).parse().unwrap_or(0);
    assert!(
        replayed >= 100,
        "o:n is {replayed} after the outage's 100 increments were replayed"
    );
    assert_eq!(
        metric(admin, "pocket_store_redis_up{store=\"hits\"}").await,
        Some(1.0)
    );
    assert!(
        metric(admin, "pocket_store_redis_recoveries_total{store=\"hits\"}").await >= Some(1.0)
    );
    for path in load(20) {
        let (status, took, _) = timed_get(web, &path, None).await;
        assert_eq!(status, 200);
        slowest = slowest.max(took);
    }
    let now: i64 = redis.cli(&["GET", "o:n"]).parse().unwrap_or(0);
    assert!(
        now >= replayed + 20,
        "o:n went from {replayed} to {now} after 20 more requests"
    );

    // Paused (slow, not gone): the store gives up after its timeout once
    // and stays local until Redis answers again.
    let from = pocket.log.lines().len();
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "3000"]), "OK");
    for path in load(40) {
        let (status, took, _) = timed_get(web, &path, None).await;
        assert_eq!(status, 200, "while Redis is paused");
        assert!(
            took < slack,
            "a request took {took:?} while Redis was paused"
        );
        slowest = slowest.max(took);
    }
    pocket.log.wait_for_after(
        from,
        &["store \"hits\": Redis at", "did not answer within 50ms"],
    );
    pocket
        .log
        .wait_for_after(from, &["store \"hits\": Redis at", "answers again"]);
    eprintln!("slowest request across the outage and the pause: {slowest:?}");
    assert!(slowest < slack, "slowest request {slowest:?}");
}

/// Redis 100 ms slow (every answer held back): requests are not slowed
/// past the store's timeout (50 ms), the store falls back once and serves
/// locally, and goes back to Redis when it is fast again; the writes made
/// meanwhile reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_slows_no_request_past_the_timeout() {
    let redis = Redis::start();
    let link = slow_link(redis.addr());
    let a = origin("A");
    let pocket = Pocket::start(&outage_policy(&link.addr.to_string(), a.addr), 2);
    pocket.log.wait_for(&["store \"hits\": on Redis at"]);
    let web = pocket.addr("web");
    let admin = admin_addr(&pocket);
    for i in 0..20 {
        let (status, _, _) = timed_get(web, &format!("/f{i}"), None).await;
        assert_eq!(status, 200);
    }
    assert_eq!(redis.cli(&["GET", "o:n"]), "20");

    let from = pocket.log.lines().len();
    link.delay_ms.store(100, Ordering::Relaxed);
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        let (status, took, _) = timed_get(web, &format!("/s{i}"), None).await;
        assert_eq!(status, 200, "while Redis is slow");
        slowest = slowest.max(took);
    }
    eprintln!("slowest request while Redis answered 100 ms late: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?}"
    );
    pocket.log.wait_for_after(
        from,
        &["store \"hits\": Redis at", "did not answer within 50ms"],
    );
    assert_eq!(
        metric(admin, "pocket_store_redis_up{store=\"hits\"}").await,
        Some(0.0)
    );
    assert!(
        metric(
            admin,
            "pocket_store_redis_local_calls_total{store=\"hits\"}"
        )
        .await
            >= Some(39.0)
    );

    // Fast again: back on Redis, the 40 increments made meanwhile with it.
    link.delay_ms.store(0, Ordering::Relaxed);
    pocket
        .log
        .wait_for_after(from, &["store \"hits\": Redis at", "answers again"]);
    let n: i64 = redis.cli(&["GET", "o:n"]).parse().unwrap_or(0);
    assert!(n >= 60, "o:n is {n}: 20 before and 40 while Redis was slow");
}

/// A reload that leaves a store's settings alone keeps its connection
/// (and its data); one that changes them connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_connection_of_an_unchanged_store() {
    let redis = Redis::start();
    let a = origin("A");
    let policy = outage_policy(&redis.addr(), a.addr);
    let pocket = Pocket::start(&policy, 2);
    pocket.log.wait_for(&["store \"hits\": on Redis at"]);
    let web = pocket.addr("web");
    let clients = || redis.cli(&["CLIENT", "LIST"]).lines().count();
    let before = clients();
    std::fs::write(&pocket.policy, format!("-- edited\n{policy}")).unwrap();
    pocket.log.wait_for(&["generation 2 is live"]);
    let (status, _, _) = timed_get(web, "/after", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        clients(),
        before,
        "a reload with the same stores connected again"
    );
    let on_redis = |log: &str| log.matches("store \"hits\": on Redis at").count();
    assert_eq!(on_redis(&pocket.log.text()), 1);
    assert_eq!(redis.cli(&["GET", "o:n"]), "1");

    let changed = policy.replace("prefix = \"o:\"", "prefix = \"o:\", timeout = \"80ms\"");
    std::fs::write(&pocket.policy, changed).unwrap();
    pocket.log.wait_for(&["generation 3 is live: stores ~hits"]);
    pocket
        .log
        .wait_for(&["store \"hits\": on Redis at", "timeout 80ms"]);
}

/// A Redis that is not there at load: the policy loads, the log says so,
/// requests are served from local state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_at_load_still_loads() {
    let a = origin("A");
    let dead = dead_addr();
    let pocket = Pocket::start(&outage_policy(&dead.to_string(), a.addr), 1);
    pocket.log.wait_for(&[
        "store \"hits\": Redis at",
        "unreachable",
        "serving from local state",
    ]);
    let web = pocket.addr("web");
    for i in 0..5 {
        let (status, _, _) = timed_get(web, &format!("/x{i}"), None).await;
        assert_eq!(status, 200);
    }
}

fn check(dir: &Path, policy: &str) -> (i32, String) {
    let path = write_policy(dir, "policy.lua", policy);
    let (code, out, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    (code, format!("{out}{err}"))
}

/// A malformed address, a misspelt key or a bad timeout is refused at
/// load with `path:line`, like every other policy mistake.
#[test]
fn a_malformed_store_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let base = |store: &str| {
        format!(
            "return {{\n  listeners = {{ {{ name = \"web\", bind = \"127.0.0.1:0\", pool = \"app\" }} }},\n  pools = {{ app = {{ servers = {{ \"127.0.0.1:9\" }} }} }},\n  stores = {{\n    sessions = {store},\n  }},\n}}\n"
        )
    };
    let cases = [
        (
            "{ redis = \"127.0.0.1\" }",
            "policy.lua:5: store \"sessions\": redis: bad Redis address \"127.0.0.1\" (expected host:port, like \"127.0.0.1:6379\")",
        ),
        (
            "{ redis = \"redis://127.0.0.1:6379\" }",
            "policy.lua:5: store \"sessions\": redis: bad Redis address",
        ),
        (
            "{ redis = \"127.0.0.1:6379\", tmeout = \"50ms\" }",
            "policy.lua:5: store \"sessions\": unknown key \"tmeout\" (did you mean \"timeout\"?)",
        ),
        (
            "{ redis = \"127.0.0.1:6379\", timeout = \"10s\" }",
            "policy.lua:5: store \"sessions\": timeout must be from 1ms to 5s",
        ),
        ("{ prefix = \"x:\" }", "policy.lua:5: store \"sessions\" has no redis address"),
    ];
    for (store, expected) in cases {
        let (code, out) = check(dir.path(), &base(store));
        assert_eq!(code, 1, "{store}: {out}");
        assert!(
            out.contains(expected),
            "{store}:\nexpected {expected}\ngot {out}"
        );
    }
    let (code, out) = check(dir.path(), &base("{ redis = \"127.0.0.1:6379\" }"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "store sessions: Redis 127.0.0.1:6379 (prefix \"pocket:sessions:\", timeout 50ms"
        ),
        "{out}"
    );
}

impl Redis {
    /// Waits until `GET key` gives `want` (writes sent without waiting
    /// reach Redis a little later).
    fn wait_for_value(&self, key: &str, want: &str) {
        let start = Instant::now();
        loop {
            let got = self.cli(&["GET", key]);
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{key} is {got:?} at Redis, {want:?} expected"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A store call inside a function Lua's C code calls (a `string.gsub`
/// replacement, a `table.sort` comparator) cannot wait: it is served from
/// the local copy, a write also sent to Redis without waiting, and the
/// request is answered (it failed with "attempt to yield across a C-call
/// boundary" before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_call_inside_gsub_or_sort_is_served_locally() {
    let redis = Redis::start();
    let a = origin("A");
    let policy = format!(
        r#"local kv = pocket.store("kv")
return {{
  stores = {{ kv = {{ redis = "{}", prefix = "g:", timeout = "1s" }} }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
  on_request = function(req)
    kv:set("user", "ann")  -- waits on Redis; copied locally
    local two = {{ 2, 1 }}
    table.sort(two, function(x, y) kv:incr("compared") return x < y end)
    local body = ("Hello {{user}}\n"):gsub("{{(%w+)}}", function(k) return kv:get(k) or "?" end)
    return pocket.respond(200, body)
  end,
}}"#,
        redis.addr(),
        a.addr
    );
    let pocket = Pocket::start(&policy, 2);
    pocket.log.wait_for(&["store \"kv\": on Redis at"]);
    let web = pocket.addr("web");
    for i in 0..10 {
        let (status, _, resp) = timed_get(web, &format!("/g{i}"), None).await;
        assert_eq!(status, 200, "{}", resp.text());
        assert_eq!(resp.text(), "Hello ann\n");
    }
    // Sorting two values compares them once: one incr per request, each
    // sent to Redis without waiting.
    redis.wait_for_value("g:compared", "10");
    assert!(
        !pocket.log.text().contains("C-call boundary"),
        "{}",
        pocket.log.text()
    );

    // `pocket test` runs the same policy (no hook waits there).
    let dir = tempfile::tempdir().unwrap();
    let tested = policy.replace(
        "  on_request = function(req)",
        "  tests = { { req = { path = \"/\" }, status = 200, body = \"Hello ann\\n\" } },\n  on_request = function(req)",
    );
    let path = write_policy(dir.path(), "policy.lua", &tested);
    let (code, out, err) = pocket_cmd(&["test", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

fn kv_policy(redis: &str, origin: SocketAddr, on_request: &str) -> String {
    format!(
        r#"local kv = pocket.store("kv")
return {{
  stores = {{ kv = {{ redis = "{redis}", prefix = "k:", timeout = "1s" }} }},
  admin = {{ bind = "127.0.0.1:0" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{origin}" }} }} }},
  on_request = function(req)
{on_request}
  end,
}}"#
    )
}

/// Redis refusing a call for the script's own data (INCRBY on text, a
/// key holding a list, an overflow) is that call's Lua error, naming the
/// store and the key; Redis is not taken for down (no fallback, no WARN
/// line, `pocket_store_redis_up` stays 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_error_about_the_data_is_the_calls_error_not_an_outage() {
    let redis = Redis::start();
    let a = origin("A");
    let policy = kv_policy(
        &redis.addr(),
        a.addr,
        r#"    local ok, err
    if req.path == "/text" then
      kv:set("hh", "hello")
      ok, err = pcall(kv.incr, kv, "hh")
    elseif req.path == "/list" then
      ok, err = pcall(kv.get, kv, "lst")
    else
      kv:set("big", math.maxinteger)
      ok, err = pcall(kv.incr, kv, "big")
    end
    return pocket.respond(200, tostring(ok) .. " " .. tostring(err))"#,
    );
    assert_eq!(redis.cli(&["RPUSH", "k:lst", "x"]), "1");
    let pocket = Pocket::start(&policy, 2);
    pocket.log.wait_for(&["store \"kv\": on Redis at"]);
    let web = pocket.addr("web");
    let admin = admin_addr(&pocket);
    for (path, key) in [("/text", "hh"), ("/list", "lst"), ("/big", "big")] {
        for _ in 0..10 {
            let (status, _, resp) = timed_get(web, path, None).await;
            assert_eq!(status, 200);
            let text = resp.text();
            assert!(text.starts_with("false "), "{path}: {text}");
            assert!(
                text.contains(&format!("store kv: key \"{key}\"")),
                "{path}: {text}"
            );
        }
    }
    assert_eq!(
        metric(admin, "pocket_store_redis_up{store=\"kv\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(admin, "pocket_store_redis_fallbacks_total{store=\"kv\"}").await,
        Some(0.0)
    );
    let log = pocket.log.text();
    assert!(!log.contains("serving from local state"), "{log}");
    assert!(!log.contains("answers again"), "{log}");
}

/// Redis closing an idle connection (its `timeout` setting) is no
/// outage: the next call finds the connection broken, connects again and
/// is sent once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_closed_by_redis_is_made_again_without_a_fallback() {
    let redis = Redis::start();
    let a = origin("A");
    let pocket = Pocket::start(&outage_policy(&redis.addr(), a.addr), 2);
    pocket.log.wait_for(&["store \"hits\": on Redis at"]);
    let web = pocket.addr("web");
    let admin = admin_addr(&pocket);
    assert_eq!(redis.cli(&["CONFIG", "SET", "timeout", "1"]), "OK");
    let (status, _, _) = timed_get(web, "/first", None).await;
    assert_eq!(status, 200);
    // Redis drops clients idle for more than a second (checked in its
    // cron): wait until Pocket's connection is gone.
    let start = Instant::now();
    while redis.cli(&["CLIENT", "LIST"]).lines().count() > 1 {
        assert!(start.elapsed() < DEADLINE, "Redis kept the idle connection");
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..5 {
        let (status, _, _) = timed_get(web, &format!("/after{i}"), None).await;
        assert_eq!(status, 200);
    }
    assert_eq!(redis.cli(&["GET", "o:n"]), "6");
    assert_eq!(
        metric(admin, "pocket_store_redis_fallbacks_total{store=\"hits\"}").await,
        Some(0.0)
    );
    let log = pocket.log.text();
    assert!(!log.contains("serving from local state"), "{log}");
}

/// A reload that changes a store's settings while Redis is down keeps
/// the writes waiting to be replayed: the new settings' store replays
/// them when Redis answers (before its first answer is copied locally).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_redis_is_down_keeps_the_writes_to_replay() {
    let mut redis = Redis::start();
    let a = origin("A");
    let policy = outage_policy(&redis.addr(), a.addr);
    let pocket = Pocket::start(&policy, 2);
    pocket.log.wait_for(&["store \"hits\": on Redis at"]);
    let web = pocket.addr("web");
    redis.kill();
    for i in 0..10 {
        let (status, _, _) = timed_get(web, &format!("/d{i}"), None).await;
        assert_eq!(status, 200);
    }
    pocket
        .log
        .wait_for(&["store \"hits\": Redis at", "serving from local state"]);
    let changed = policy.replace("prefix = \"o:\"", "prefix = \"o:\", timeout = \"80ms\"");
    std::fs::write(&pocket.policy, changed).unwrap();
    pocket.log.wait_for(&["generation 2 is live: stores ~hits"]);
    redis.restart();
    // 10 incr and 10 set, made before the reload.
    let line = pocket
        .log
        .wait_for(&["store \"hits\": on Redis at", "timeout 80ms"]);
    assert!(
        line.contains("20 writes made before it answered replayed"),
        "{line}"
    );
    assert_eq!(redis.cli(&["GET", "o:n"]), "10");
    assert_eq!(redis.cli(&["GET", "o:last"]), "/d9");
}

/// A Redis with `requirepass`: without a password, or with a wrong one,
/// the log says so (not "unreachable"); with `password_env` naming a
/// variable that holds it, the store is on Redis. A variable that is not
/// set is refused at load with its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_with_a_password_is_used_with_password_env() {
    let redis = Redis::start_with_password(Some("s3cret"));
    let a = origin("A");
    let base = outage_policy(&redis.addr(), a.addr);

    let none = Pocket::start(&base, 1);
    none.log.wait_for(&[
        "store \"hits\": Redis at",
        "it wants a password and the store gives none",
    ]);
    drop(none);

    std::env::set_var("POCKET_TEST_REDIS_WRONG", "nope");
    std::env::set_var("POCKET_TEST_REDIS_RIGHT", "s3cret");
    let with = |var: &str| {
        base.replace(
            "prefix = \"o:\"",
            &format!("prefix = \"o:\", password_env = \"{var}\""),
        )
    };
    let wrong = Pocket::start(&with("POCKET_TEST_REDIS_WRONG"), 1);
    wrong.log.wait_for(&[
        "store \"hits\": Redis at",
        "the user (default) or password is wrong",
    ]);
    drop(wrong);

    let right = Pocket::start(&with("POCKET_TEST_REDIS_RIGHT"), 1);
    right.log.wait_for(&["store \"hits\": on Redis at"]);
    let web = right.addr("web");
    for i in 0..3 {
        let (status, _, _) = timed_get(web, &format!("/p{i}"), None).await;
        assert_eq!(status, 200);
    }
    assert_eq!(redis.cli(&["GET", "o:n"]), "3");
    assert!(!right.log.text().contains("s3cret"));
    drop(right);

    // A Redis 6 ACL user of its own.
    assert_eq!(
        redis.cli(&["ACL", "SETUSER", "app", "on", ">app-pass", "~o:*", "+@all"]),
        "OK"
    );
    std::env::set_var("POCKET_TEST_REDIS_APP", "app-pass");
    let user = Pocket::start(
        &with("POCKET_TEST_REDIS_APP")
            .replace("prefix = \"o:\"", "prefix = \"o:\", user = \"app\""),
        1,
    );
    user.log.wait_for(&["store \"hits\": on Redis at"]);
    let (status, _, _) = timed_get(user.addr("web"), "/acl", None).await;
    assert_eq!(status, 200);
    assert_eq!(redis.cli(&["GET", "o:n"]), "4");
    drop(user);
    let wrong_user = Pocket::start(
        &with("POCKET_TEST_REDIS_APP")
            .replace("prefix = \"o:\"", "prefix = \"o:\", user = \"nobody\""),
        1,
    );
    wrong_user.log.wait_for(&[
        "store \"hits\": Redis at",
        "the user \"nobody\" or password is wrong",
    ]);
    drop(wrong_user);

    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check(
        dir.path(),
        &with("POCKET_TEST_REDIS_RIGHT")
            .replace("prefix = \"o:\"", "prefix = \"o:\", user = \"app\""),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("timeout 50ms, user \"app\", with a password; not contacted by check"),
        "{out}"
    );
    assert!(!out.contains("s3cret"), "{out}");
    let (code, out) = check(dir.path(), &with("POCKET_TEST_REDIS_UNSET"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("policy.lua:3: store \"hits\": password_env names the environment variable POCKET_TEST_REDIS_UNSET, which is not set"),
        "{out}"
    );
}

/// `incr` with a TTL works on Redis 6 as on 7 (no `PEXPIRE ... NX`): the
/// count is Redis's and the key expires, also for increments replayed
/// after an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_with_a_ttl_counts_and_expires_at_redis() {
    let mut redis = Redis::start();
    let a = origin("A");
    let policy = kv_policy(
        &redis.addr(),
        a.addr,
        r#"    return pocket.respond(200, tostring(kv:incr("w", 1, 60)))"#,
    );
    let pocket = Pocket::start(&policy, 2);
    pocket.log.wait_for(&["store \"kv\": on Redis at"]);
    let web = pocket.addr("web");
    for i in 1..=5 {
        let (status, _, resp) = timed_get(web, "/", None).await;
        assert_eq!(status, 200);
        assert_eq!(resp.text(), i.to_string());
    }
    let ttl: i64 = redis.cli(&["PTTL", "k:w"]).parse().unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "PTTL {ttl}");
    redis.kill();
    for _ in 0..3 {
        let (status, _, _) = timed_get(web, "/", None).await;
        assert_eq!(status, 200);
    }
    let from = pocket.log.lines().len();
    redis.restart();
    pocket
        .log
        .wait_for_after(from, &["store \"kv\": Redis at", "answers again"]);
    assert_eq!(redis.cli(&["GET", "k:w"]), "3");
    let ttl: i64 = redis.cli(&["PTTL", "k:w"]).parse().unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "PTTL {ttl} after the replay");
}

/// More stores than a Pocket keeps is refused at load with the line.
#[test]
fn more_than_64_stores_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let stores: String = (0..65)
        .map(|i| format!("    s{i} = {{ redis = \"127.0.0.1:6379\" }},\n"))
        .collect();
    let policy = format!(
        "return {{\n  listeners = {{ {{ name = \"web\", bind = \"127.0.0.1:0\", pool = \"app\" }} }},\n  pools = {{ app = {{ servers = {{ \"127.0.0.1:9\" }} }} }},\n  stores = {{\n{stores}  }},\n}}\n"
    );
    let (code, out) = check(dir.path(), &policy);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("policy.lua:4: stores declares 65 stores; a Pocket keeps at most 64"),
        "{out}"
    );
}

/// A reload that takes a store off Redis takes its `pocket_store_redis_*`
/// series off `/metrics` (no false "Redis down").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_taken_off_redis_leaves_metrics() {
    let redis = Redis::start();
    let a = origin("A");
    let policy = outage_policy(&redis.addr(), a.addr);
    let pocket = Pocket::start(&policy, 1);
    pocket.log.wait_for(&["store \"hits\": on Redis at"]);
    let admin = admin_addr(&pocket);
    assert_eq!(
        metric(admin, "pocket_store_redis_up{store=\"hits\"}").await,
        Some(1.0)
    );
    let local = policy.replace(
        &format!("  stores = {{ hits = {{ redis = \"{}\", prefix = \"o:\" }} }},  -- timeout: the default 50ms\n", redis.addr()),
        "",
    );
    assert_ne!(local, policy);
    std::fs::write(&pocket.policy, local).unwrap();
    pocket.log.wait_for(&["store \"hits\": no longer on Redis"]);
    assert_eq!(
        metric(admin, "pocket_store_redis_up{store=\"hits\"}").await,
        None
    );
    assert_eq!(
        metric(admin, "pocket_store_redis_fallbacks_total{store=\"hits\"}").await,
        None
    );
}

/// Values read back are the same from Redis and from the local copy: a
/// whole number written as text is an integer (so `incr` works on it
/// either way), a float is its text, and a boolean is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_read_back_alike_from_redis_and_the_local_copy() {
    let redis = Redis::start();
    let a = origin("A");
    // gsub's callback cannot wait: those reads are the local copy's.
    let policy = kv_policy(
        &redis.addr(),
        a.addr,
        r#"    kv:set("t", "5")
    kv:set("f", 1.5)
    local seen = {}
    for _, k in ipairs({ "t", "f" }) do
      local v = kv:get(k)
      local l = ("x"):gsub("x", function() return kv:get(k) end)
      seen[#seen + 1] = k .. "=" .. tostring(math.type(v)) .. "/" .. type(v) .. "," .. type(kv:get(k)) .. ":" .. tostring(l)
    end
    seen[#seen + 1] = "incr=" .. kv:incr("t")
    local ok, err = pcall(kv.set, kv, "maint", false)
    seen[#seen + 1] = tostring(ok) .. " " .. tostring(err)
    return pocket.respond(200, table.concat(seen, "\n"))"#,
    );
    let pocket = Pocket::start(&policy, 1);
    pocket.log.wait_for(&["store \"kv\": on Redis at"]);
    let (status, _, resp) = timed_get(pocket.addr("web"), "/", None).await;
    assert_eq!(status, 200);
    let text = resp.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "t=integer/number,number:5", "{text}");
    assert!(lines[1].starts_with("f=nil/string,string:1.5"), "{text}");
    assert_eq!(lines[2], "incr=6", "{text}");
    assert!(
        lines[3].starts_with("false ") && lines[3].contains("not booleans"),
        "{text}"
    );
    assert_eq!(redis.cli(&["GET", "k:t"]), "6");
}
