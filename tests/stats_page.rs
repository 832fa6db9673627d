//! The stats page in a real browser (Debian's headless chromium, driven
//! by chromedriver from tests/browser/stats_page.py with selenium): it
//! shows every server; killing an origin turns its row to down without a
//! page reload; clicking drain on a server moves new requests away from
//! it. Leaves a screenshot (POCKET_SCREENSHOT=docs/stats-page.png puts it
//! there, as in the docs).

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const TOKEN: &str = "page-t0ken";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_dead_server_down_and_drain_moves_requests_away() {
    require_browser();
    let python = "python3";
    let (a, b) = (origin("A"), origin("B"));
    let mut c = Some(origin("C"));
    let c_addr = c.as_ref().unwrap().addr;
    let admin = dead_addr();
    let pocket = Pocket::start_with(
        &format!(
            r#"return {{
  admin = {{ bind = "{admin}", token = "{TOKEN}" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{ servers = {{ "{}", "{}", "{c_addr}" }}, check = {{ tcp = true, interval = "1s", fall = 2 }} }},
  }},
}}
"#,
            a.addr, b.addr
        ),
        1,
        &["--no-watch"],
    );
    let web = pocket.addr("web");
    for _ in 0..9 {
        assert_eq!(get(web, "/").await.status, 200);
    }
    let shot = std::env::var("POCKET_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| pocket.dir.path().join("stats-page.png"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/stats_page.py");
    let mut driver = Command::new(python)
        .args([
            script,
            &format!("http://{admin}"),
            TOKEN,
            shot.to_str().unwrap(),
            &a.addr.to_string(),
            &c_addr.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python3");
    let mut to = driver.stdin.take().unwrap();
    let mut from = BufReader::new(driver.stdout.take().unwrap()).lines();
    let mut expect = |what: &str| {
        let line = from.next().and_then(Result::ok).unwrap_or_default();
        assert_eq!(
            line,
            what,
            "the browser said {line:?}; Pocket's log:\n{}",
            pocket.log.text()
        );
    };

    expect("READY");
    // Kill C: its row turns down, the page not reloaded.
    drop(c.take());
    writeln!(to, "killed").unwrap();
    expect("DOWN");
    // Drain was clicked on A's row: new requests go to B only.
    expect("DRAINED");
    let (before_a, before_b) = (a.request_count(), b.request_count());
    for _ in 0..20 {
        let r = get(web, "/").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-origin").as_deref(), Some("B"));
    }
    assert_eq!(
        a.request_count(),
        before_a,
        "a drained server gets no new request"
    );
    assert_eq!(b.request_count() - before_b, 20);
    // Some traffic while the screenshot is taken (its req/s column).
    let traffic = tokio::spawn(async move {
        for _ in 0..200 {
            let _ = get(web, "/").await;
            tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        }
    });
    writeln!(to, "counted").unwrap();
    expect("DONE");
    traffic.abort();
    assert!(driver.wait().unwrap().success());
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG"),
        "a PNG screenshot at {}",
        shot.display()
    );
}

/// A tcp listener's row counts connections, not requests: those Pocket
/// refused (`pocket.reject`, PR) and those no server took (a refused
/// connect, SC) show as rejected and failed, with a "tcp" mark; the tcp
/// pool's table counts connections too. `/api/status` has the same
/// figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_row_counts_connections_rejected_and_failed() {
    require_browser();
    let python = "python3";
    let admin = dead_addr();
    let gone = dead_addr();
    let pocket = Pocket::start_with(
        &format!(
            r#"return {{
  admin = {{ bind = "{admin}" }},
  listeners = {{
    {{ name = "db", bind = "127.0.0.1:0", mode = "tcp", pool = "db" }},
    {{ name = "gate", bind = "127.0.0.1:0", mode = "tcp", pool = "db" }},
  }},
  pools = {{ db = {{ mode = "tcp", servers = {{ "{gone}" }} }} }},
  on_connect = function(conn)
    if conn.listener == "gate" then return pocket.reject("closed to all") end
  end,
}}
"#
        ),
        1,
        &["--no-watch"],
    );
    // Each client sees its connection closed: 3 with no server, 2 refused.
    for (listener, n) in [("db", 3), ("gate", 2)] {
        for _ in 0..n {
            let mut c = std::net::TcpStream::connect(pocket.addr(listener)).unwrap();
            c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut c, &mut sink);
            assert!(sink.is_empty(), "{listener}: no server answered");
        }
    }
    let start = std::time::Instant::now();
    let status = loop {
        let status = api_status(admin);
        if status.contains(r#""connections":2,"rejected":2,"failed":0"#)
            && status.contains(r#""connections":3,"rejected":0,"failed":3"#)
        {
            break status;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "/api/status never counted the 5 connections:\n{status}\n{}",
            pocket.log.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(status.contains(r#""name":"db","mode":"tcp""#), "{status}");
    assert!(!status.contains(r#""requests""#), "{status}");

    let shot = pocket.dir.path().join("stats-page-tcp.png");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser/stats_page_tcp.py"
    );
    let out = Command::new(python)
        .args([script, &format!("http://{admin}"), shot.to_str().unwrap()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run python3");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim() == "OK",
        "the browser said {said:?}; Pocket's log:\n{}",
        pocket.log.text()
    );
}

/// `GET /api/status` from the admin listener at `admin` (no token), by
/// its IP address as a browser would name it.
fn api_status(admin: std::net::SocketAddr) -> String {
    use std::io::Read;
    let Ok(mut c) = std::net::TcpStream::connect(admin) else {
        return String::new();
    };
    let _ = write!(
        c,
        "GET /api/status HTTP/1.0\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    text
}
