//! What a newcomer sees first: requests alternate between servers, on new
//! connections and on one keep-alive connection, across workers.

mod common;
use common::*;

fn two_server_policy(a: &OriginHandle, b: &OriginHandle) -> String {
    format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}", "{}" }} }} }},
}}"#,
        a.addr, b.addr
    )
}

fn origin_of(r: &Resp) -> String {
    r.header("x-origin").unwrap_or_default()
}

#[tokio::test]
async fn new_connections_alternate_across_workers() {
    let (a, b) = (origin("A"), origin("B"));
    let pocket = Pocket::start(&two_server_policy(&a, &b), 2);
    let addr = pocket.addr("web");
    let mut seen = Vec::new();
    for _ in 0..8 {
        let r = get(addr, "/").await;
        assert_eq!(r.status, 200);
        assert!(r.text().starts_with("hello from"), "{}", r.text());
        seen.push(origin_of(&r));
    }
    let first = seen[0].clone();
    for (i, o) in seen.iter().enumerate() {
        let expected = if (i % 2 == 0) == (first == "A") {
            "A"
        } else {
            "B"
        };
        assert_eq!(o, expected, "sequence {seen:?}");
    }
}

#[tokio::test]
async fn one_keepalive_connection_alternates() {
    let (a, b) = (origin("A"), origin("B"));
    let pocket = Pocket::start(&two_server_policy(&a, &b), 1);
    let mut c = H1::connect(pocket.addr("web")).await;
    let seen: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(origin_of(&c.get("/").await));
        }
        v
    };
    assert_eq!(seen.iter().filter(|o| *o == "A").count(), 3, "{seen:?}");
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "{seen:?}");
    }
}

#[tokio::test]
async fn weights_and_backups() {
    let (a, b, c) = (origin("A"), origin("B"), origin("C"));
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{
    {{ addr = "{}", weight = 3 }}, "{}", {{ addr = "{}", backup = true }} }} }} }},
}}"#,
        a.addr, b.addr, c.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let mut client = H1::connect(pocket.addr("web")).await;
    let mut counts = std::collections::HashMap::new();
    for _ in 0..40 {
        *counts.entry(origin_of(&client.get("/").await)).or_insert(0) += 1;
    }
    assert_eq!(counts.get("A"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("B"), Some(&10), "{counts:?}");
    assert_eq!(
        counts.get("C"),
        None,
        "backup must stay idle while primaries are up: {counts:?}"
    );
}

#[tokio::test]
async fn refused_server_is_skipped_and_all_dead_gives_502_naming_the_pool() {
    let a = origin("A");
    let dead = dead_addr();
    // Another dead address: one address has one health in every pool, so
    // `app`'s passive failures would take `nowhere`'s server down (503).
    let gone = loop {
        let other = dead_addr();
        if other != dead {
            break other;
        }
    };
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }},
                {{ name = "gone", bind = "127.0.0.1:0", pool = "nowhere" }} }},
  pools = {{ app = {{ servers = {{ "{dead}", "{a}" }} }},
            nowhere = {{ servers = {{ "{gone}" }}, retries = 2 }} }},
}}"#,
        a = a.addr
    );
    let pocket = Pocket::start(&policy, 2);
    for _ in 0..6 {
        let r = get(pocket.addr("web"), "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(origin_of(&r), "A");
    }
    let r = get(pocket.addr("gone"), "/").await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("pool \"nowhere\""), "{}", r.text());
    assert!(r.text().contains("request id"), "{}", r.text());
    pocket.log.wait_for(&["trying another server"]);
}

#[tokio::test]
async fn slow_server_gets_504_within_the_response_timeout() {
    let a = origin("A");
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }}, timeouts = {{ response = "2s" }} }} }},
}}"#,
        a.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let started = std::time::Instant::now();
    // A server that would take a minute; the 2 s timeout (long enough for
    // a quick answer on a busy machine) ends it well before.
    let r = get(pocket.addr("web"), "/delay/60000").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("did not answer within"), "{}", r.text());
    assert!(started.elapsed() < std::time::Duration::from_secs(40));
    // The next request is fine.
    assert_eq!(get(pocket.addr("web"), "/").await.status, 200);
}
