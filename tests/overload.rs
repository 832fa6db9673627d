//! Connection caps: a listener's `max_connections` and the process's
//! `--max-connections`. At a cap Pocket stops accepting: the next client's
//! connection waits in the kernel's accept queue, unanswered, until an
//! open one closes; then it is served. The log and `pocket status` say
//! the cap was reached.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// A client connection that has been served once and stays open
/// (keep-alive), so it holds its place under the caps.
fn served(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .unwrap();
    let head = read_head(&mut s).expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

/// Reads a response head (and leaves the rest); None on a read timeout.
fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// The client one over a cap: connects (the kernel completes the
/// handshake), sends its request, and gets no answer while the cap is
/// full. How long "no answer" is watched is not a time bound on Pocket:
/// any answer at all would be wrong.
fn waiting(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /after HTTP/1.1\r\nhost: test\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    assert_eq!(
        read_head(&mut s),
        None,
        "a client over max_connections was answered"
    );
    s
}

/// Once a place is free, the waiting client is served.
fn answered_now(mut s: TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = read_head(&mut s).expect("the waiting client is answered once a connection closed");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

fn status_of(p: &Pocket) -> String {
    let (code, out, err) = pocket_cmd(&["status", p.policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn a_listener_at_max_connections_stops_accepting_until_one_closes() {
    let a = origin("A");
    // Two workers: the cap is one count over both.
    let p = Pocket::start_with(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app", max_connections = 2 }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
}}"#,
            a.addr
        ),
        2,
        &[],
    );
    let addr = p.addr("web");
    let first = served(addr);
    let _second = served(addr);
    let third = waiting(addr);
    p.log.wait_for(&[
        "listener \"web\": max_connections 2 reached",
        "wait in the kernel's accept queue",
    ]);
    drop(first);
    answered_now(third);

    // pocket status shows the cap and that it was reached (refreshed
    // every second).
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let status = status_of(&p);
        let line = status
            .lines()
            .find(|l| l.starts_with("listener web:"))
            .unwrap_or_default()
            .to_string();
        if line.contains("max_connections 2") && !line.contains("reached 0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never showed the cap reached:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_process_cap_counts_every_listener() {
    let a = origin("A");
    let p = Pocket::start_with(
        &format!(
            r#"return {{
  listeners = {{
    {{ name = "one", bind = "127.0.0.1:0", pool = "app" }},
    {{ name = "two", bind = "127.0.0.1:0", pool = "app" }},
  }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
}}"#,
            a.addr
        ),
        2,
        &["--max-connections", "2"],
    );
    let (one, two) = (p.addr("one"), p.addr("two"));
    let _on_one = served(one);
    let on_two = served(two);
    let third = waiting(one);
    p.log.wait_for(&["the process: max_connections 2 reached"]);
    drop(on_two);
    answered_now(third);
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let status = status_of(&p);
        if status.contains("max_connections: 2\n")
            && !status.contains("max_connections_reached: 0\n")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never showed the process cap reached:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_bad_max_connections_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(
        dir.path(),
        "policy.lua",
        r#"return {
  listeners = {
    { name = "web", bind = "127.0.0.1:0", pool = "app",
      max_connections = 0 },
  },
  pools = { app = { servers = { "127.0.0.1:9" } } },
}"#,
    );
    let (code, _, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "policy.lua:4: listener \"web\": max_connections must be a whole number of at least 1, not a number (0)"
        ),
        "{err}"
    );
    let (code, _, err) = pocket_cmd(&["run", path.to_str().unwrap(), "--max-connections", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--max-connections"), "{err}");
}

#[test]
fn a_process_cap_beyond_the_descriptor_limit_is_refused() {
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(
        dir.path(),
        "policy.lua",
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }} }},
}}"#,
            a.addr
        ),
    );
    // Linux caps RLIMIT_NOFILE at fs.nr_open (2^20 by default, at most
    // 2^30): 10^15 connections never fit.
    let (code, _, err) = pocket_cmd(&[
        "run",
        path.to_str().unwrap(),
        "--max-connections",
        "1000000000000000",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refusing to start: --max-connections 1000000000000000 needs at least")
            && err.contains("but the limit is"),
        "{err}"
    );
}
