//! What keeps the admin listener safe and usable at its edges: a web page
//! in a browser on this machine cannot act through a token-less listener
//! (CSRF), a slow body does not hold a connection slot, a wrong token is
//! told apart from a missing one, tokens are cookie-safe, an admin address
//! on a listener's port is refused at load, the listener can move to
//! another IP on its own port, and a reload's log line names what changed
//! in `admin` and `log`. Real Pocket processes, real origins, real HTTP.

mod common;
use common::*;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn policy(admin: &str, a: SocketAddr) -> String {
    format!(
        r#"return {{
  admin = {admin},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{a}" }} }} }},
}}
"#
    )
}

fn start(text: &str) -> Pocket {
    Pocket::start_with(text, 1, &["--no-watch"])
}

/// The admin state of the pool's only server, from `/api/status`.
async fn admin_state(admin: SocketAddr, auth: &[(&str, &str)]) -> String {
    let mut headers = vec![("host", "127.0.0.1")];
    headers.extend_from_slice(auth);
    let r = send(admin, request("GET", "/api/status", &headers, "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let at = text.find("\"admin\":\"").expect("a server") + 9;
    text[at..].split('"').next().unwrap_or("").to_string()
}

/// A POST's path, its headers but `Host`, the status and what it says.
type Refused<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, &'a str);

/// A page on another site that posts to the token-less listener (a
/// `no-cors` fetch, a `text/plain` form whose body reads as JSON) is
/// refused; the stats page's own requests and curl with the JSON content
/// type go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_on_another_site_cannot_act_through_a_loopback_admin() {
    let a = origin("A");
    let admin = dead_addr();
    let pocket = start(&policy(&format!("{{ bind = \"{admin}\" }}"), a.addr));
    pocket
        .log
        .wait_for(&[&format!("admin listening on {admin}")]);
    let host = admin.to_string();
    let state = format!("/api/pools/app/servers/{}/state", a.addr);
    let drain = r#"{"state":"drain"}"#;
    let refused: [Refused; 5] = [
        // fetch(url, {method: "POST", mode: "no-cors"}) from a page elsewhere.
        (
            "/api/reload",
            &[
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site"),
                ("content-type", "text/plain;charset=UTF-8"),
            ],
            403,
            "another site",
        ),
        // A form with enctype=text/plain: its body is the JSON.
        (
            &state,
            &[
                ("origin", "http://evil.example"),
                ("content-type", "text/plain"),
            ],
            403,
            "http://evil.example",
        ),
        // An older browser without Fetch Metadata or Origin: the type.
        (
            &state,
            &[("content-type", "text/plain")],
            415,
            "Content-Type: application/json",
        ),
        (&state, &[], 415, "-H 'Content-Type: application/json'"),
        // A page of another port of this machine.
        (
            &state,
            &[
                ("origin", "http://127.0.0.1:1"),
                ("sec-fetch-site", "same-site"),
                ("content-type", "application/json"),
            ],
            403,
            "another site",
        ),
    ];
    for (path, extra, want, says) in refused {
        let mut headers = vec![("host", host.as_str())];
        headers.extend_from_slice(extra);
        let r = send(admin, request("POST", path, &headers, drain)).await;
        assert_eq!(r.status, want, "{path} {extra:?}: {}", r.text());
        assert!(r.text().contains(says), "{path} {extra:?}: {}", r.text());
    }
    assert_eq!(admin_state(admin, &[]).await, "ready", "nothing changed");
    assert!(!pocket.log.text().contains("generation 2"), "no reload");

    // The stats page's own request (as Chromium sends it), and curl.
    let own = format!("http://{admin}");
    let page = [
        ("host", host.as_str()),
        ("origin", own.as_str()),
        ("sec-fetch-site", "same-origin"),
        ("content-type", "application/json"),
    ];
    let r = send(admin, request("POST", &state, &page, drain)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(admin_state(admin, &[]).await, "drain");
    let curl = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let r = send(admin, request("POST", "/api/reload", &curl, "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"generation\":2"), "{}", r.text());
}

/// A wrong token is told apart from none; a body that does not come in
/// 10 s gets a 408 and frees its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_named_and_a_slow_body_gets_408() {
    let a = origin("A");
    let admin = dead_addr();
    let _pocket = start(&policy(
        &format!("{{ bind = \"{admin}\", token = \"s3cr3t\" }}"),
        a.addr,
    ));
    wait_port(admin).await;
    let r = send(admin, request("GET", "/api/status", &[], "")).await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("wants its token"), "{}", r.text());
    for auth in [
        ("authorization", "Bearer s3cr3"),
        ("cookie", "pocket_admin=nope"),
    ] {
        let r = send(admin, request("GET", "/api/status", &[auth], "")).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert!(
            r.text().contains("the token does not match"),
            "{}",
            r.text()
        );
    }
    let r = get(admin, "/?token=s3cr").await;
    assert_eq!(r.status, 401);
    assert!(
        r.text().contains("the token does not match"),
        "{}",
        r.text()
    );

    // Headers, then 5 of the 17 bytes promised, then nothing.
    let mut c = tokio::net::TcpStream::connect(admin).await.unwrap();
    let head = format!(
        "POST /api/pools/app/servers/{}/state HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer s3cr3t\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n{{\"sta",
        a.addr
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within 30 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 10 s"), "{answer}");
    assert_eq!(
        admin_state(admin, &[("authorization", "Bearer s3cr3t")]).await,
        "ready"
    );
}

async fn wait_port(addr: SocketAddr) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "{addr} never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the loader refuses, with `path:line`: a token a cookie cannot
/// carry, an empty one, an admin address on a listener's port.
#[test]
fn bad_tokens_and_an_admin_bind_on_a_listener_port_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "return {\n  listeners = { { name = \"web\", bind = \"127.0.0.1:8080\", pool = \"app\" } },\n  pools = { app = { servers = { \"127.0.0.1:1\" } } },\n  admin = { bind = \"127.0.0.1:8404\",\n    token = \"a;b\" },\n}\n",
            "5: admin.token has ';': a token is letters, digits and printable ASCII punctuation except",
        ),
        (
            "return {\n  listeners = { { name = \"web\", bind = \"127.0.0.1:8080\", pool = \"app\" } },\n  pools = { app = { servers = { \"127.0.0.1:1\" } } },\n  admin = { bind = \"127.0.0.1:8404\",\n    token = \"two words\" },\n}\n",
            "5: admin.token has a space",
        ),
        (
            "return {\n  listeners = { { name = \"web\", bind = \"127.0.0.1:8080\", pool = \"app\" } },\n  pools = { app = { servers = { \"127.0.0.1:1\" } } },\n  admin = { bind = \"127.0.0.1:8404\",\n    token = \"\" },\n}\n",
            "5: admin.token is empty: set a secret string or remove token",
        ),
        (
            "return {\n  listeners = {\n    { name = \"web\", bind = \"0.0.0.0:8080\", pool = \"app\" },\n  },\n  pools = { app = { servers = { \"127.0.0.1:1\" } } },\n  admin = { bind = \"127.0.0.1:8080\" },\n}\n",
            "6: admin.bind 127.0.0.1:8080 is the port of listener \"web\" (0.0.0.0:8080, ",
        ),
    ];
    for (i, (text, says)) in cases.into_iter().enumerate() {
        let path = write_policy(dir.path(), &format!("p{i}.lua"), text);
        let (code, out, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
        assert_ne!(code, 0, "{out}");
        let want = format!("{}:{says}", path.display());
        assert!(err.contains(&want), "want {want:?} in:\n{err}");
    }
    let (_, _, err) = pocket_cmd(&["check", dir.path().join("p3.lua").to_str().unwrap()]);
    assert!(err.contains("p3.lua:3)"), "the listener's line: {err}");
}

/// From `127.0.0.1:P` to `0.0.0.0:P` (with a token): the old socket held
/// the port, so it goes first; the listener answers on the new address.
/// The reload's line names the change, as it does for `log`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_moves_to_another_ip_on_its_port_and_the_reload_says_so() {
    let a = origin("A");
    let admin = dead_addr();
    let without = policy("nil", a.addr);
    let pocket = start(&without);
    let reload = |text: String| {
        std::fs::write(&pocket.policy, text).unwrap();
        let (code, out, err) = pocket_cmd(&["reload", pocket.policy.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
    };
    let local = format!("{{ bind = \"{admin}\", token = \"t0k\" }}");
    reload(policy(&local, a.addr));
    pocket
        .log
        .wait_for(&["generation 2 is live: ", &format!("admin +{admin}")]);
    let wide = format!("{{ bind = \"0.0.0.0:{}\", token = \"t0k\" }}", admin.port());
    reload(policy(&wide, a.addr));
    pocket.log.wait_for(&[
        "generation 3 is live: ",
        &format!("admin {admin} -> 0.0.0.0:{}", admin.port()),
    ]);
    pocket.log.wait_for(&[&format!(
        "admin listener moved from {admin} to 0.0.0.0:{}",
        admin.port()
    )]);
    let auth = [("authorization", "Bearer t0k")];
    assert_eq!(admin_state(admin, &auth).await, "ready");

    // Back, with a new token and an access log in JSON: both named.
    let back = format!("{{ bind = \"{admin}\", token = \"t1k\" }}");
    let text = policy(&back, a.addr).replace(
        "\n}\n",
        "\n  log = { access = \"-\", format = \"json\" },\n}\n",
    );
    reload(text);
    let line = pocket.log.wait_for(&["generation 4 is live: "]);
    assert!(
        line.contains(&format!(
            "admin 0.0.0.0:{} -> {admin}, token changed; log +stderr (json)",
            admin.port()
        )),
        "{line}"
    );
    assert_eq!(
        admin_state(admin, &[("authorization", "Bearer t1k")]).await,
        "ready"
    );
    reload(without);
    let line = pocket.log.wait_for(&["generation 5 is live: "]);
    assert!(
        line.contains(&format!("admin -{admin}; log -stderr")),
        "{line}"
    );
}

/// What a user compares on the page: a server that cannot be reached
/// answers nothing (`requests` 0) and fails (`failures` goes up), while
/// the server that answered counts its responses; as the metrics say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_counts_answers_and_failures_per_server() {
    let a = origin("A");
    let dead = dead_addr();
    let admin = dead_addr();
    let pocket = start(&format!(
        r#"return {{
  admin = {{ bind = "{admin}" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{dead}", "{a}" }}, passive = {{ after = 100 }} }} }},
}}
"#,
        a = a.addr
    ));
    pocket
        .log
        .wait_for(&[&format!("admin listening on {admin}")]);
    let web = pocket.addr("web");
    for _ in 0..6 {
        assert_eq!(get(web, "/").await.status, 200);
    }
    let r = send(
        admin,
        request("GET", "/api/status", &[("host", "127.0.0.1")], ""),
    )
    .await;
    let text = r.text();
    let server = |addr: SocketAddr| {
        let at = text
            .find(&format!("\"name\":\"{addr}\""))
            .unwrap_or_else(|| panic!("{addr} in {text}"));
        text[at..].split('}').next().unwrap().to_string()
    };
    let (d, live) = (server(dead), server(a.addr));
    assert!(d.contains("\"requests\":0,"), "{d}");
    assert!(!d.contains("\"failures\":0,"), "{d}");
    assert!(live.contains("\"requests\":6,"), "{live}");
    assert!(live.contains("\"errors\":0,\"failures\":0,"), "{live}");
    // The listener counts every answer, whoever made it.
    assert!(
        text.contains("\"pool\":\"app\",\"requests\":6,\"errors\":0}"),
        "{text}"
    );
}
