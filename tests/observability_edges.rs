//! Hostile and careless input to the access log and the admin listener,
//! each found by trying it on a real Pocket: a web page of another site
//! acting on an admin listener without a token, action bodies with keys
//! the action does not take, bodies sent a byte at a time to hold the
//! listener's connections, an access log path that is a FIFO nobody
//! reads. Real Pocket processes, real origins, real sockets.

mod common;
use common::*;

use std::net::SocketAddr;
use std::time::Duration;

fn policy(admin: SocketAddr, a: SocketAddr, b: SocketAddr) -> String {
    format!(
        r#"return {{
  admin = {{ bind = "{admin}" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{a}", "{b}" }} }} }},
}}
"#
    )
}

async fn post(admin: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let host = admin.to_string();
    let mut all = vec![
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    all.extend_from_slice(headers);
    send(admin, request("POST", path, &all, body)).await
}

async fn admin_state(admin: SocketAddr) -> String {
    let host = admin.to_string();
    let r = send(admin, request("GET", "/api/status", &[("host", &host)], "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// Without `admin.token` any web page the operator has open could POST
/// to 127.0.0.1 (a form or `fetch(..., {mode: "no-cors"})` needs no
/// preflight): put every server in maintenance, reload. Such requests
/// carry the page's `Origin`; they are refused and change nothing, while
/// curl (no Origin) and the stats page itself (its own Origin) still act.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_site_cannot_act_on_the_admin_listener() {
    let (a, b) = (origin("A"), origin("B"));
    let admin = dead_addr();
    let pocket = Pocket::start_with(&policy(admin, a.addr, b.addr), 1, &["--no-watch"]);
    pocket
        .log
        .wait_for(&[&format!("admin listening on {admin}")]);
    let maint = format!("/api/pools/app/servers/{}/state", a.addr);

    for headers in [
        vec![("origin", "http://evil.example")],
        vec![("origin", "null")],
        vec![("origin", "http://127.0.0.1.evil.example")],
        vec![("sec-fetch-site", "cross-site")],
    ] {
        let r = post(admin, &maint, &headers, r#"{"state":"maint"}"#).await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.text());
        assert!(r.text().contains("refused: "), "{}", r.text());
        let r = post(admin, "/api/reload", &headers, "").await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.text());
    }
    let status = admin_state(admin).await;
    assert!(!status.contains("\"maint\""), "{status}");
    assert!(status.contains("\"generation\":1"), "{status}");

    // The stats page's own buttons: Origin is the listener itself.
    let own = format!("http://{admin}");
    let r = post(admin, &maint, &[("origin", &own)], r#"{"state":"maint"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // curl: no Origin.
    let r = post(admin, &maint, &[], r#"{"state":"ready"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // GET stays open to everyone who may reach it (Prometheus, the page).
    let r = send(
        admin,
        request(
            "GET",
            "/metrics",
            &[
                ("host", &admin.to_string()),
                ("origin", "http://evil.example"),
            ],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `{"state":"drain","weight":5}` sent to .../state would drain and
/// silently not set the weight; a key given twice would keep one of the
/// two without a word. Both are a 400 naming the key, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_bodies_with_keys_the_action_does_not_take_are_refused() {
    let (a, b) = (origin("A"), origin("B"));
    let admin = dead_addr();
    let pocket = Pocket::start_with(&policy(admin, a.addr, b.addr), 1, &["--no-watch"]);
    pocket
        .log
        .wait_for(&[&format!("admin listening on {admin}")]);
    let server = format!("/api/pools/app/servers/{}", a.addr);

    for (action, body, says) in [
        (
            "state",
            r#"{"state":"drain","weight":5}"#,
            r#"state takes only \"state\", not \"weight\""#,
        ),
        (
            "state",
            r#"{"state":"drain","stat":"maint"}"#,
            r#"not \"stat\""#,
        ),
        (
            "state",
            r#"{"state":"drain","state":"ready"}"#,
            r#"\"state\" is given twice"#,
        ),
        (
            "weight",
            r#"{"weight":3,"weight":200}"#,
            r#"\"weight\" is given twice"#,
        ),
        ("weight", r#"{"weight":3,"state":"drain"}"#, "not"),
    ] {
        let r = post(admin, &format!("{server}/{action}"), &[], body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(says), "{body}: {}", r.text());
    }
    let status = admin_state(admin).await;
    assert!(!status.contains("\"drain\""), "{status}");
    assert!(status.contains("\"generation\":1"), "{status}");
    // The plain forms still work.
    let r = post(admin, &format!("{server}/weight"), &[], r#"{"weight":3}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The admin listener serves 64 connections at once. Clients that send
/// an action's head and then its body a byte at a time (or never) used
/// to hold all 64 for as long as they liked: the page and Prometheus got
/// nothing. Each such body now gets a 408 and its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_sent_slowly_do_not_hold_the_admin_listener() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b) = (origin("A"), origin("B"));
    let admin = dead_addr();
    let pocket = Pocket::start_with(&policy(admin, a.addr, b.addr), 1, &["--no-watch"]);
    pocket
        .log
        .wait_for(&[&format!("admin listening on {admin}")]);

    let head = format!(
        "POST /api/pools/app/servers/{}/state HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        a.addr
    );
    let mut held = Vec::new();
    for _ in 0..70 {
        let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        held.push(s);
    }
    // Every one of them is answered (not left hanging) with a 408.
    let mut timed_out = 0;
    for s in held.iter_mut() {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await;
        if String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408") {
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, 70);
    // And the listener answers again.
    let status = tokio::time::timeout(DEADLINE, admin_state(admin))
        .await
        .expect("the admin listener answers after slow bodies");
    assert!(status.contains("\"generation\":1"), "{status}");
    drop(held);
}

/// A FIFO as `log.access` (a log shipper's pipe) with nobody reading it
/// made `open` wait forever: a start or a reload hung. `pocket check`
/// (which opens nothing) passes it; `pocket run` refuses it at once with
/// `path:line` and the reason, instead of waiting.
#[test]
fn an_access_log_fifo_nobody_reads_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let text = format!(
        "return {{\n  log = {{ access = \"{}\", format = \"json\" }},\n  listeners = {{ {{ name = \"web\", bind = \"127.0.0.1:0\", pool = \"app\" }} }},\n  pools = {{ app = {{ servers = {{ \"127.0.0.1:9\" }} }} }},\n}}\n",
        fifo.display()
    );
    let policy = write_policy(dir.path(), "fifo.lua", &text);
    let (code, err) = check_within(&policy, Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");

    let mut run = std::process::Command::new(pocket_bin())
        .args([
            "run",
            policy.to_str().unwrap(),
            "--workers",
            "1",
            "--no-watch",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = run.kill();
            panic!("pocket run waited on a FIFO nobody reads");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("fifo.lua:2: log.access: cannot open")
            && err.contains("a FIFO that nobody reads yet"),
        "{err}"
    );
}

/// An admin bind equal to a proxy listener's: `pocket check` said ok and
/// only `pocket run` failed (address in use). Refused at load, at the
/// admin bind's line, naming the listener; a wildcard listener on the
/// same port counts too.
#[test]
fn an_admin_bind_that_is_a_listeners_bind_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let port = dead_addr().port();
    for (listener, admin) in [
        (format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}")),
        (format!("0.0.0.0:{port}"), format!("127.0.0.1:{port}")),
        (format!("127.0.0.1:{port}"), format!("localhost:{port}")),
    ] {
        let text = format!(
            "return {{\n  listeners = {{ {{ name = \"web\", bind = \"{listener}\", pool = \"app\" }} }},\n  admin = {{ bind = \"{admin}\" }},\n  pools = {{ app = {{ servers = {{ \"127.0.0.1:9\" }} }} }},\n}}\n"
        );
        let policy = write_policy(dir.path(), "same.lua", &text);
        let (code, err) = check_within(&policy, Duration::from_secs(30));
        assert_eq!(code, 1, "{listener} / {admin}: {err}");
        assert!(
            err.contains("same.lua:3: admin.bind ") && err.contains("listener \"web\""),
            "{err}"
        );
    }
    // Port 0 twice is two ports.
    let text = "return {\n  listeners = { { name = \"web\", bind = \"127.0.0.1:0\", pool = \"app\" } },\n  admin = { bind = \"127.0.0.1:0\" },\n  pools = { app = { servers = { \"127.0.0.1:9\" } } },\n}\n";
    let policy = write_policy(dir.path(), "zero.lua", text);
    let (code, err) = check_within(&policy, Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
}

/// `GET http://abs.example/p` with `Host: other`: Pocket and the script
/// take the URL's host (RFC 9112 section 3.2.2), the access log used to
/// say `other`. The line names the host the request was routed for;
/// hostile bytes in the request and in a script's field still leave one
/// valid JSON object per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logged_host_is_the_one_pocket_used_and_every_line_is_json() {
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let text = format!(
        r#"return {{
  log = {{ access = "{}", format = "json" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
  on_request = function(req)
    req:log_field("seen", tostring(req.host))
    local v = req:header("x-f")
    if v then req:log_field("f", v) end
  end,
}}
"#,
        log.display(),
        a.addr
    );
    let pocket = Pocket::start(&text, 1);
    let web = pocket.addr("web");
    let r = raw(
        web,
        b"GET http://abs.example/p HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = raw(
        web,
        b"GET /q%22?a=%5C' HTTP/1.1\r\nHost: h\r\nx-f: \xff\xc3(\t\"\\\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = h2_get(web, "h2.example", "/h2?x=%22").await;
    assert_eq!(r.status, 200);

    let deadline = std::time::Instant::now() + DEADLINE;
    let lines = loop {
        let text = std::fs::read(&log).unwrap_or_default();
        let lines: Vec<Vec<u8>> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        if lines.len() >= 3 || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let shown: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    assert_eq!(lines.len(), 3, "{shown:#?}");
    for l in &lines {
        let text = String::from_utf8(l.clone()).expect("a JSON line is UTF-8");
        assert!(
            text.starts_with('{') && text.ends_with('}'),
            "not one object: {text}"
        );
        let check = std::process::Command::new("python3")
            .args(["-c", "import json,sys; json.loads(sys.argv[1])", &text])
            .status()
            .expect("run python3");
        assert!(check.success(), "not valid JSON: {text}");
    }
    let first = String::from_utf8_lossy(&lines[0]);
    assert!(
        first.contains(r#""host":"abs.example""#) && first.contains(r#""seen":"abs.example""#),
        "{first}"
    );
    let h2 = String::from_utf8_lossy(&lines[2]);
    assert!(h2.contains(r#""host":"h2.example""#), "{h2}");
}

/// `req:log_field("\255", v)` (any string argument with bytes that are
/// not UTF-8, `req:set_path` too) said `expected invalid utf-8 sequence of
/// 1 bytes from index 0, got a string`. It says what is wrong in the
/// script's words, at its line; a value that is not UTF-8 is logged as
/// is (lossy), not refused.
#[test]
fn a_string_argument_that_is_not_utf8_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    for (call, says) in [
        (
            r#"req:log_field("\255", "v")"#,
            "p.lua:4: bad argument #1 to 'req:log_field': expected a UTF-8 string, got a string with bytes that are not UTF-8",
        ),
        (
            r#"req:set_path("/\255")"#,
            "p.lua:4: bad argument #1 to 'req:set_path': expected a UTF-8 string, got a string with bytes that are not UTF-8",
        ),
        (
            r#"req:log_field("a", {})"#,
            r#"log_field: the value of "a" must be a string, number or boolean, not a table"#,
        ),
        (r#"req:log_field("a", "\255")"#, "returned nil"),
    ] {
        let text = format!(
            "return {{\n  listeners = {{ {{ name = \"web\", bind = \"127.0.0.1:0\", pool = \"app\" }} }},\n  pools = {{ app = {{ servers = {{ \"127.0.0.1:9\" }} }} }},\n  on_request = function(req) {call} end,\n}}\n"
        );
        let policy = write_policy(dir.path(), "p.lua", &text);
        let (_, out, err) = pocket_cmd(&["explain", policy.to_str().unwrap(), "GET http://h/"]);
        assert!(
            out.contains(says),
            "{call}: wanted {says:?} in\n{out}\n{err}"
        );
        assert!(!out.contains("invalid utf-8 sequence"), "{out}");
    }
}
