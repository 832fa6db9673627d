//! The admin listener (`admin = { bind, token }`): its API answers what a
//! user asked or says what exists and what is accepted, its actions
//! outlive reloads, an address anyone could reach needs a token, and an
//! address that cannot be bound refuses the policy while the running one
//! keeps serving. Real Pocket processes, real origins, real HTTP.

mod common;
use common::*;

use std::net::SocketAddr;

const TOKEN: &str = "t0ken";

fn policy(admin: SocketAddr, a: SocketAddr, b: SocketAddr, extra: &str) -> String {
    format!(
        r#"return {{
  admin = {{ bind = "{admin}", token = "{TOKEN}" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{ servers = {{ "{a}", "{b}" }} }},
    other = {{ servers = {{ "{a}" }} }},{extra}
  }},
}}
"#
    )
}

fn start(text: &str) -> Pocket {
    Pocket::start_with(text, 1, &["--no-watch"])
}

async fn call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Resp {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    send(admin, request(method, path, &headers, body)).await
}

async fn status(admin: SocketAddr) -> String {
    let r = call(admin, "GET", "/api/status", Some(TOKEN), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// Which origins answered `n` requests, as "A A B ...".
async fn answers(web: SocketAddr, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let r = get(web, "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        seen.push(r.header("x-origin").unwrap_or_default());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_say_what_exists_and_what_is_accepted() {
    let (a, b) = (origin("A"), origin("B"));
    let admin = dead_addr();
    let pocket = start(&policy(admin, a.addr, b.addr, ""));
    pocket
        .log
        .wait_for(&[&format!("admin listening on {admin}")]);
    let server = format!("/api/pools/app/servers/{}/state", a.addr);

    // 401: no token, a wrong one; with it, /metrics and the page answer.
    for token in [None, Some("wrong")] {
        for (method, path) in [
            ("GET", "/api/status"),
            ("GET", "/metrics"),
            ("GET", "/"),
            ("POST", server.as_str()),
        ] {
            let r = call(admin, method, path, token, r#"{"state":"drain"}"#).await;
            assert_eq!(
                r.status,
                401,
                "{method} {path} with {token:?}: {}",
                r.text()
            );
            assert!(r.text().contains("Authorization: Bearer"), "{}", r.text());
        }
    }
    let r = call(admin, "GET", "/metrics", Some(TOKEN), "").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let r = call(admin, "GET", "/", Some(TOKEN), "").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("/api/status"), "the page polls the API");
    // A browser: ?token= once sets a cookie that works from then on.
    let r = call(admin, "GET", &format!("/?token={TOKEN}"), None, "").await;
    assert_eq!(r.status, 200);
    let cookie = r.header("set-cookie").expect("a cookie for the page");
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = send(
        admin,
        request("GET", "/api/status", &[("cookie", &pair)], ""),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // 404: an unknown pool names the pools; an unknown server the pool's servers.
    let r = call(
        admin,
        "POST",
        "/api/pools/nope/servers/127.0.0.1:1/state",
        Some(TOKEN),
        r#"{"state":"drain"}"#,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.text().contains(r#"no pool \"nope\" (pools: app, other)"#),
        "{}",
        r.text()
    );
    let r = call(
        admin,
        "POST",
        "/api/pools/app/servers/127.0.0.1:1/weight",
        Some(TOKEN),
        r#"{"weight":2}"#,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.text()
            .contains(&format!("(servers: {}, {})", a.addr, b.addr)),
        "{}",
        r.text()
    );

    // 400: not JSON, an unknown state, a weight out of range.
    for (path, body, says) in [
        (server.as_str(), "drain", "ready, drain or maint"),
        (
            server.as_str(),
            r#"{"state":"sleeping"}"#,
            r#"{\"state\": \"maint\"}"#,
        ),
        (server.as_str(), r#"{"state":"#, "bad JSON"),
        (
            &format!("/api/pools/app/servers/{}/weight", a.addr) as &str,
            r#"{"weight":0}"#,
            "from 1 to 256",
        ),
        (
            &format!("/api/pools/app/servers/{}/weight", a.addr) as &str,
            r#"{"weight":"heavy"}"#,
            "from 1 to 256",
        ),
    ] {
        let r = call(admin, "POST", path, Some(TOKEN), body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(says), "{body}: {}", r.text());
    }
    // Nothing changed on the way.
    assert!(!status(admin).await.contains("\"admin\":\"drain\""));
    let r = call(admin, "GET", "/api/nothing", Some(TOKEN), "").await;
    assert_eq!(r.status, 404);
    let r = call(admin, "GET", "/api/reload", Some(TOKEN), "").await;
    assert_eq!(r.status, 405);
    // The admin listener never proxies: a path of the origin is not there.
    let r = call(admin, "GET", "/hello", Some(TOKEN), "").await;
    assert_eq!(r.status, 404);
    assert!(r.header("x-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_survive_a_reload_and_the_api_reload_answers_the_generation_or_the_error() {
    let (a, b) = (origin("A"), origin("B"));
    let admin = dead_addr();
    let text = policy(admin, a.addr, b.addr, "");
    let pocket = start(&text);
    let web = pocket.addr("web");

    // Drain A through the API: new requests all go to B.
    let r = call(
        admin,
        "POST",
        &format!("/api/pools/app/servers/{}/state", a.addr),
        Some(TOKEN),
        r#"{"state":"drain"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(r#""admin":"drain""#), "{}", r.text());
    assert_eq!(answers(web, 6).await, vec!["B"; 6]);
    // B weighs 3: a new generation with it.
    let r = call(
        admin,
        "POST",
        &format!("/api/pools/app/servers/{}/weight", b.addr),
        Some(TOKEN),
        r#"{"weight":3}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(r#""generation":2"#), "{}", r.text());

    // A reload (the file changed: a pool more) keeps both.
    std::fs::write(
        &pocket.policy,
        policy(
            admin,
            a.addr,
            b.addr,
            "\n    more = { servers = { \"127.0.0.1:1\" } },",
        ),
    )
    .unwrap();
    let r = call(admin, "POST", "/api/reload", Some(TOKEN), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().trim(), r#"{"generation":3}"#);
    let st = status(admin).await;
    assert!(st.contains(r#""generation":3"#), "{st}");
    assert!(
        st.contains(&format!(
            r#""name":"{}","addr":"{}","state":"drain","health":"up","admin":"drain""#,
            a.addr, a.addr
        )),
        "{st}"
    );
    assert!(st.contains(&format!(r#""name":"{}","addr":"{}","state":"up","health":"up","admin":"ready","backup":false,"weight":3"#, b.addr, b.addr)), "{st}");
    assert!(st.contains(r#""name":"more""#), "{st}");
    assert_eq!(answers(web, 6).await, vec!["B"; 6]);

    // A broken policy: the error with path:line, and generation 3 serves on.
    std::fs::write(
        &pocket.policy,
        text.replace("balance", "x")
            .replace("servers = { \"", "servers = { \"nowhere:x\", \""),
    )
    .unwrap();
    let r = call(admin, "POST", "/api/reload", Some(TOKEN), "").await;
    assert_eq!(r.status, 422, "{}", r.text());
    let line = text.lines().position(|l| l.contains("app = {")).unwrap() + 1;
    assert!(
        r.text().contains(&format!("policy.lua:{line}: ")),
        "{}",
        r.text()
    );
    let st = status(admin).await;
    assert!(st.contains(r#""generation":3,"#), "{st}");
    assert!(
        st.contains(r#""last_reload":{"ok":false"#) && st.contains(&format!("policy.lua:{line}")),
        "{st}"
    );

    // Ready again: both serve, B three times as often.
    let r = call(
        admin,
        "POST",
        &format!("/api/pools/app/servers/{}/state", a.addr),
        Some(TOKEN),
        r#"{"state":"ready"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = answers(web, 8).await;
    assert_eq!(seen.iter().filter(|o| *o == "A").count(), 2, "{seen:?}");

    // `pocket status` lists pools and servers with their states (its
    // file is brought up to date every second).
    wait_status(&pocket, "pool app: round_robin, 2/2 servers up").await;
    wait_status(&pocket, &format!("server app {}: up, weight 3", b.addr)).await;
    let out = wait_status(&pocket, &format!("admin: http://{admin}/ (token required)")).await;
    assert!(
        out.contains("pool more: round_robin, 1/1 servers up"),
        "{out}"
    );
    let _ = call(
        admin,
        "POST",
        &format!("/api/pools/app/servers/{}/state", a.addr),
        Some(TOKEN),
        r#"{"state":"maint"}"#,
    )
    .await;
    wait_status(&pocket, &format!("server app {}: maint, weight 1", a.addr)).await;
}

/// `pocket status` once it shows `needle`.
async fn wait_status(pocket: &Pocket, needle: &str) -> String {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (code, out, err) = pocket_cmd(&["status", pocket.policy.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        if out.contains(needle) {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in:\n{out}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_bind_anyone_can_reach_needs_a_token_and_one_that_cannot_be_bound_refuses_the_policy(
) {
    let a = origin("A");
    // At load: `pocket check` and `pocket run` refuse it, with path:line.
    let dir = tempfile::tempdir().unwrap();
    let open = "return {\n  listeners = { { bind = \"127.0.0.1:0\", pool = \"app\" } },\n  pools = { app = { servers = { \"127.0.0.1:1\" } } },\n  admin = {\n    bind = \"0.0.0.0:8404\",\n  },\n}\n";
    let path = write_policy(dir.path(), "open.lua", open);
    for cmd in ["check", "run"] {
        let (code, out, err) = pocket_cmd(&[cmd, path.to_str().unwrap()]);
        assert_ne!(code, 0, "{out}{err}");
        assert!(
            err.contains(&format!(
                "{}:5: admin.bind 0.0.0.0:8404 is not a loopback address: set admin.token too",
                path.display()
            )),
            "{cmd}: {out}{err}"
        );
    }
    // A misspelt key gets a did-you-mean.
    let typo = write_policy(
        dir.path(),
        "typo.lua",
        &open.replace("bind = \"0.0.0.0:8404\"", "bnd = \"127.0.0.1:8404\""),
    );
    let (code, _, err) = pocket_cmd(&["check", typo.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(":5: admin: unknown key \"bnd\" (did you mean \"bind\"?)"),
        "{err}"
    );

    // At reload: same refusal through the API, the running policy on.
    let admin = dead_addr();
    let b = origin("B");
    let text = policy(admin, a.addr, b.addr, "");
    let pocket = start(&text);
    let web = pocket.addr("web");
    std::fs::write(
        &pocket.policy,
        text.replace(&format!("token = \"{TOKEN}\""), "")
            .replace(&admin.ip().to_string(), "0.0.0.0"),
    )
    .unwrap();
    let r = call(admin, "POST", "/api/reload", Some(TOKEN), "").await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("policy.lua:2: admin.bind 0.0.0.0:"),
        "{}",
        r.text()
    );

    // An address taken by another socket: refused, the listener stays.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    std::fs::write(
        &pocket.policy,
        text.replace(&admin.to_string(), &busy.to_string()),
    )
    .unwrap();
    let r = call(admin, "POST", "/api/reload", Some(TOKEN), "").await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text()
            .contains(&format!("policy.lua:2: admin.bind {busy}: cannot listen")),
        "{}",
        r.text()
    );
    assert_eq!(get(web, "/").await.status, 200);
    assert!(status(admin).await.contains(r#""generation":1,"#));

    // A free one: the listener moves there.
    let moved = dead_addr();
    std::fs::write(
        &pocket.policy,
        text.replace(&admin.to_string(), &moved.to_string()),
    )
    .unwrap();
    let r = call(admin, "POST", "/api/reload", Some(TOKEN), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    pocket
        .log
        .wait_for(&[&format!("admin listener moved from {admin} to {moved}")]);
    assert!(status(moved).await.contains(r#""generation":2,"#));
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "the old address is closed"
    );
    drop(taken);
}

/// Loopback without a token: anyone on this machine may, but only by an
/// address or `localhost` (a web page that rebinds a name of its own to
/// 127.0.0.1 sends that name and gets a 403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_admin_without_a_token_answers_local_names_only() {
    let (a, b) = (origin("A"), origin("B"));
    let admin = dead_addr();
    let pocket =
        start(&policy(admin, a.addr, b.addr, "").replace(&format!(", token = \"{TOKEN}\""), ""));
    pocket
        .log
        .wait_for(&[&format!("admin listening on {admin}")]);
    for (host, want) in [
        (admin.to_string(), 200),
        (format!("localhost:{}", admin.port()), 200),
        ("evil.example".to_string(), 403),
    ] {
        let r = send(admin, request("GET", "/api/status", &[("host", &host)], "")).await;
        assert_eq!(r.status, want, "Host {host}: {}", r.text());
    }
}
