//! "What if a server dies?" answered with real servers: killed, refusing,
//! lying, stalling; and how each balancing algorithm spreads traffic.

mod common;
use common::*;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pocket::origin::{spawn_with, Behaviour};

fn pool_policy(pool: &str) -> String {
    format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {pool} }},
  on_health = function(server, up, why)
    pocket.log.warn("on_health", server.pool, server.addr, up and "up" or "down")
  end,
}}"#
    )
}

fn origin_of(r: &Resp) -> String {
    r.header("x-origin").unwrap_or_default()
}

/// Waits until `count()` reaches `n` (requests that reached the origins).
async fn until_arrived(count: impl Fn() -> u64, n: u64) {
    let start = Instant::now();
    while count() < n {
        assert!(
            start.elapsed() < DEADLINE,
            "{} of {n} requests reached the origins",
            count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_killed_server_is_marked_down_its_traffic_moves_and_it_comes_back() {
    let a = origin("A");
    let b = origin("B");
    let b_addr = b.addr;
    let pocket = Pocket::start(
        &pool_policy(&format!(
            r#"{{ servers = {{ "{}", "{}" }},
       check = {{ http = "GET /health", expect = 200, interval = "200ms", timeout = "2s", rise = 2, fall = 2 }} }}"#,
            a.addr, b.addr
        )),
        2,
    );
    let addr = pocket.addr("web");
    let mut client = H1::connect(addr).await;
    for _ in 0..4 {
        assert_eq!(client.get("/").await.status, 200);
    }
    let killed = Instant::now();
    drop(b);
    // Idempotent requests while it dies: no errors, all answered by A
    // once B is gone.
    for _ in 0..20 {
        let r = get(addr, "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Live traffic (passive) or the check, whichever notices first.
    pocket
        .log
        .wait_for(&[&format!("server {b_addr} of pool app is DOWN")]);
    let detected = killed.elapsed();
    eprintln!("down detected after {detected:?}");
    pocket
        .log
        .wait_for(&["on_health app", &b_addr.to_string(), "down"]);
    for _ in 0..6 {
        assert_eq!(origin_of(&get(addr, "/").await), "A");
    }

    let b = spawn_with("B", b_addr, Behaviour::default()).expect("restart B on its port");
    pocket.log.wait_for(&[
        &format!("server {b_addr} of pool app is UP"),
        "2 checks passed",
    ]);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(origin_of(&get(addr, "/").await));
    }
    assert!(
        seen.contains(&"B".to_string()),
        "B is back in rotation: {seen:?}"
    );
    drop(b);
}

#[tokio::test]
async fn passive_checks_eject_a_refusing_server_and_cool_down_brings_it_back() {
    let a = origin("A");
    let dead = dead_addr();
    let pocket = Pocket::start(
        &pool_policy(&format!(
            r#"{{ servers = {{ "{dead}", "{}" }}, passive = {{ after = 2, cooldown = "300ms" }} }}"#,
            a.addr
        )),
        1,
    );
    let addr = pocket.addr("web");
    for _ in 0..10 {
        assert_eq!(get(addr, "/").await.status, 200);
    }
    pocket.log.wait_for(&[
        &format!("server {dead} of pool app is DOWN"),
        "2 failures in a row on live traffic",
    ]);
    pocket
        .log
        .wait_for(&[&format!("server {dead} of pool app is UP"), "cool-down"]);
}

#[tokio::test]
async fn a_lying_server_is_caught_by_passive_checks_on_5xx() {
    let honest = origin("honest");
    let liar = spawn_with(
        "liar",
        "127.0.0.1:0".parse().unwrap(),
        Behaviour {
            fail_status: Some(500),
        },
    )
    .unwrap();
    let pocket = Pocket::start(
        &pool_policy(&format!(
            r#"{{ servers = {{ "{}", "{}" }},
       check = {{ http = "GET /health", interval = "1s", rise = 100, fall = 2 }},
       passive = {{ after = 3, on_5xx = true }} }}"#,
            honest.addr, liar.addr
        )),
        1,
    );
    let addr = pocket.addr("web");
    let mut fives = 0;
    for _ in 0..30 {
        if get(addr, "/").await.status == 500 {
            fives += 1;
        }
    }
    pocket.log.wait_for(&[
        &format!("server {} of pool app is DOWN", liar.addr),
        "5xx answer",
    ]);
    assert!(
        fives <= 3,
        "the liar is ejected after 3 errors in a row, saw {fives}"
    );
    for _ in 0..10 {
        let r = get(addr, "/").await;
        assert_eq!((r.status, origin_of(&r)), (200, "honest".to_string()));
    }
}

#[tokio::test]
async fn all_servers_down_gives_503_naming_the_pool() {
    let dead = dead_addr();
    let pocket = Pocket::start(
        &pool_policy(&format!(
            r#"{{ servers = {{ "{dead}" }}, check = {{ tcp = true, interval = "100ms", fall = 1, start = "down" }} }}"#
        )),
        1,
    );
    let r = get(pocket.addr("web"), "/").await;
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains("pool \"app\"") && r.text().contains("all down"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn a_server_that_stalls_mid_response_gets_the_client_connection_closed() {
    let a = origin("A");
    let pocket = Pocket::start(
        &pool_policy(&format!(
            r#"{{ servers = {{ "{}" }}, timeouts = {{ idle = "500ms" }} }}"#,
            a.addr
        )),
        1,
    );
    let started = Instant::now();
    let mut client = H1::connect(pocket.addr("web")).await;
    let result = client.send(request("GET", "/stall/100000", &[], "")).await;
    assert!(
        result.is_err(),
        "a stalled body must end in an error, not a hang"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    pocket
        .log
        .wait_for(&["sent nothing for 500ms mid-response"]);
}

#[tokio::test]
async fn a_server_that_dies_mid_response_gets_the_client_connection_closed() {
    let a = origin("A");
    let pocket = Pocket::start(
        &pool_policy(&format!(
            r#"{{ servers = {{ "{}" }}, passive = {{ after = 1 }} }}"#,
            a.addr
        )),
        1,
    );
    let stream = tokio::net::TcpStream::connect(pocket.addr("web"))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/bytes/10000000000")
        .header("host", "t")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let mut body = resp.into_body();
    use http_body_util::BodyExt;
    let mut got = 0u64;
    let mut killer = Some(a);
    let ended = tokio::time::timeout(DEADLINE, async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => got += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => return true,
            }
            if got > 1_000_000 {
                killer.take(); // the server dies mid-transfer
            }
        }
        false
    })
    .await;
    assert_eq!(
        ended,
        Ok(true),
        "the client sees the transfer break, promptly"
    );
    pocket.log.wait_for(&["broke off its response"]);
    // A body that breaks off is a passive failure.
    pocket.log.wait_for(&[
        "of pool app is DOWN",
        "in a row on live traffic (last: response broke off)",
    ]);
}

async fn spread(addr: SocketAddr, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut c = H1::connect(addr).await;
    for _ in 0..n {
        let r = c.send(request("GET", "/", headers, "")).await.unwrap();
        *counts.entry(origin_of(&r)).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn least_conn_prefers_the_idle_server() {
    let (a, b) = (origin("A"), origin("B"));
    let pocket = Pocket::start(
        &pool_policy(&format!(
            r#"{{ servers = {{ "{}", "{}" }}, balance = "least_conn" }}"#,
            a.addr, b.addr
        )),
        1,
    );
    let addr = pocket.addr("web");
    // Busy for a minute: longer than the requests below take on any
    // machine; the client gives up on it at the end.
    let slow = tokio::spawn(async move { get(addr, "/delay/60000").await });
    until_arrived(|| a.request_count() + b.request_count(), 1).await;
    let busy = if a.request_count() == 1 { "A" } else { "B" };
    let counts = spread(addr, 8, &[]).await;
    assert_eq!(
        counts.get(busy),
        None,
        "least_conn sent traffic to the busy server: {counts:?}"
    );
    assert!(!slow.is_finished(), "the slow request was still in flight");
    slow.abort();
}

#[tokio::test]
async fn random_p2c_and_first_spread_as_documented() {
    let (a, b) = (origin("A"), origin("B"));
    for (algo, check) in [("random", "both"), ("p2c", "both"), ("first", "A")] {
        let pocket = Pocket::start(
            &pool_policy(&format!(
                r#"{{ servers = {{ "{}", "{}" }}, balance = "{algo}" }}"#,
                a.addr, b.addr
            )),
            1,
        );
        let counts = spread(pocket.addr("web"), 60, &[]).await;
        match check {
            "both" => assert!(counts.len() == 2, "{algo}: {counts:?}"),
            _ => assert_eq!(counts.get("A"), Some(&60), "{algo}: {counts:?}"),
        }
    }
}

#[tokio::test]
async fn consistent_hashing_keeps_keys_and_moves_few_when_a_server_leaves() {
    let (a, b, c) = (origin("A"), origin("B"), origin("C"));
    let servers = |list: &[&OriginHandle]| {
        list.iter()
            .map(|o| format!("\"{}\"", o.addr))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let policy = |list: &[&OriginHandle]| {
        pool_policy(&format!(
            r#"{{ servers = {{ {} }}, balance = "hash", hash_key = "header:x-user" }}"#,
            servers(list)
        ))
    };
    let pocket = Pocket::start(&policy(&[&a, &b, &c]), 2);
    let addr = pocket.addr("web");
    let users: Vec<String> = (0..90).map(|i| format!("user{i}")).collect();
    let mut before = HashMap::new();
    for u in &users {
        let r = send(addr, request("GET", "/", &[("x-user", u)], "")).await;
        let again = send(addr, request("GET", "/", &[("x-user", u)], "")).await;
        assert_eq!(origin_of(&r), origin_of(&again), "one key, one server");
        before.insert(u.clone(), origin_of(&r));
    }
    let per: HashMap<&str, usize> = before.values().fold(HashMap::new(), |mut m, o| {
        *m.entry(o.as_str()).or_insert(0) += 1;
        m
    });
    assert_eq!(per.len(), 3, "keys spread over all servers: {per:?}");

    std::fs::write(&pocket.policy, policy(&[&a, &b])).unwrap();
    pocket.log.wait_for(&["generation 2 is live"]);
    let mut moved = 0;
    for u in &users {
        let now = origin_of(&send(addr, request("GET", "/", &[("x-user", u)], "")).await);
        if before[u] != "C" {
            assert_eq!(now, before[u], "{u} moved though its server stayed");
        } else {
            moved += 1;
        }
    }
    eprintln!("keys per server {per:?}; {moved} of {} moved", users.len());
    assert!(
        moved <= users.len() / 2,
        "about 1/3 of keys move, not {moved}"
    );
}

#[tokio::test]
async fn bounded_load_hashing_caps_a_hot_key() {
    let (a, b) = (origin("A"), origin("B"));
    let pocket = Pocket::start(
        &pool_policy(&format!(
            r#"{{ servers = {{ "{}", "{}" }}, balance = "hash", hash_key = "uri", hash_balance_factor = 150 }}"#,
            a.addr, b.addr
        )),
        1,
    );
    let addr = pocket.addr("web");
    // Six requests for the same key, each in flight for a minute (all at
    // once on any machine); the client gives up on them at the end.
    let mut slow = Vec::new();
    for _ in 0..6 {
        slow.push(tokio::spawn(async move { get(addr, "/delay/60000").await }));
        // One at a time reaches a server, so each sees the others' load.
        let sent = slow.len() as u64;
        until_arrived(|| a.request_count() + b.request_count(), sent).await;
    }
    assert!(
        slow.iter().all(|s| !s.is_finished()),
        "all six were in flight together"
    );
    for s in &slow {
        s.abort();
    }
    eprintln!("hot key: A {} B {}", a.request_count(), b.request_count());
    // Factor 150: a server takes the key while it carries less than 1.5x
    // the average load; the 4th concurrent request already spills over.
    let (hot, other) = if a.request_count() > b.request_count() {
        (a.request_count(), b.request_count())
    } else {
        (b.request_count(), a.request_count())
    };
    assert!(
        other >= 1 && hot <= 5,
        "the hot key spilled over: {hot}/{other}"
    );
}

#[tokio::test]
async fn health_survives_a_reload() {
    let a = origin("A");
    let dead = dead_addr();
    let policy = |tag: &str| {
        pool_policy(&format!(
            r#"{{ servers = {{ "{}", "{dead}" }}, check = {{ tcp = true, interval = "100ms", fall = 1 }} }}"#,
            a.addr
        ))
        .replace(
            "  on_health = function",
            &format!("  on_response = function(req, res) res:set_header('x-tag', '{tag}') end,\n  on_health = function"),
        )
    };
    let pocket = Pocket::start(&policy("one"), 2);
    pocket
        .log
        .wait_for(&[&format!("server {dead} of pool app is DOWN")]);
    std::fs::write(&pocket.policy, policy("two")).unwrap();
    pocket.log.wait_for(&["generation 2 is live"]);
    for _ in 0..10 {
        let r = get(pocket.addr("web"), "/").await;
        assert_eq!((r.status, r.header("x-tag").as_deref()), (200, Some("two")));
    }
    let log = pocket.log.text();
    assert_eq!(
        log.matches(&format!("server {dead} of pool app is"))
            .count(),
        1,
        "no flap on reload:\n{log}"
    );
    assert!(
        !log.contains("connect failed"),
        "traffic never tried the down server:\n{log}"
    );
}

#[tokio::test]
async fn a_client_sending_a_broken_body_does_not_take_a_healthy_server_down() {
    let a = origin("A");
    let pocket = Pocket::start(
        &pool_policy(&format!(
            r#"{{ servers = {{ "{}" }}, passive = {{ after = 2 }} }}"#,
            a.addr
        )),
        1,
    );
    let addr = pocket.addr("web");
    for _ in 0..4 {
        let answer = raw(
            addr,
            b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{answer:?}"
        );
    }
    assert_eq!(get(addr, "/").await.status, 200, "the server is still up");
    assert!(
        !pocket.log.text().contains("is DOWN"),
        "{}",
        pocket.log.text()
    );
}

/// A server that takes the request and closes without a byte of answer:
/// a GET is repeated on another server; the client sees a 200.
#[tokio::test]
async fn a_request_dropped_unanswered_is_retried_elsewhere_when_safe() {
    let dropper = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dropper_addr = dropper.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::Read;
        for stream in dropper.incoming().flatten() {
            let mut s = stream;
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf); // take the request, answer nothing
        }
    });
    let a = origin("A");
    let pocket = Pocket::start(
        &pool_policy(&format!(
            r#"{{ servers = {{ "{dropper_addr}", "{}" }}, passive = false }}"#,
            a.addr
        )),
        1,
    );
    let addr = pocket.addr("web");
    for _ in 0..6 {
        let r = get(addr, "/").await;
        assert_eq!(
            (r.status, origin_of(&r)),
            (200, "A".to_string()),
            "{}",
            r.text()
        );
    }
    // A POST is not repeated: it may have had an effect.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(addr, request("POST", "/", &[], "x")).await.status);
    }
    assert!(
        statuses.contains(&502),
        "a POST dropped unanswered is not retried: {statuses:?}"
    );
}

#[tokio::test]
async fn a_check_added_by_a_reload_starts_checking() {
    let a = origin("A");
    let dead = dead_addr();
    let without = pool_policy(&format!(
        r#"{{ servers = {{ "{}", "{dead}" }}, passive = false }}"#,
        a.addr
    ));
    let pocket = Pocket::start(&without, 1);
    let with = pool_policy(&format!(
        r#"{{ servers = {{ "{}", "{dead}" }}, passive = false, check = {{ tcp = true, interval = "100ms", fall = 1 }} }}"#,
        a.addr
    ));
    std::fs::write(&pocket.policy, with).unwrap();
    pocket.log.wait_for(&["generation 2 is live"]);
    pocket.log.wait_for(&[
        &format!("server {dead} of pool app is DOWN"),
        "1 check failed",
    ]);
}

/// A body that stalls for `timeouts.idle` is a passive failure: with
/// `passive = { after = 2 }` two stalled answers (status 200, body cut)
/// take the only server down and the third request gets a 503.
#[tokio::test]
async fn a_body_that_stalls_mid_response_is_a_passive_failure() {
    let a = origin("A");
    let pocket = Pocket::start(
        &pool_policy(&format!(
            r#"{{ servers = {{ "{}" }}, passive = {{ after = 2 }}, timeouts = {{ idle = "300ms" }} }}"#,
            a.addr
        )),
        1,
    );
    let addr = pocket.addr("web");
    let stall = b"GET /stall/1000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let answer = raw(addr, stall).await;
        statuses.push(answer.get(9..12).unwrap_or("").to_string());
    }
    assert_eq!(statuses, ["200", "200", "503"], "{}", pocket.log.text());
    pocket.log.wait_for(&[
        "of pool app is DOWN",
        "2 failures in a row on live traffic (last: stalled mid-response)",
    ]);
}
