//! TCP mode (`mode = "tcp"` listeners and pools) end to end: a real Pocket
//! in front of real TCP servers (small threads here that speak simple
//! protocols and report what they received), real clients.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Reads with a deadline: a test never hangs on a socket.
fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to pocket");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read to the end");
    out
}

/// What a test server does with each connection, on its own thread.
type Behaviour = fn(TcpStream, &str, &mpsc::Sender<String>);

/// A TCP server on a free loopback port named `name`; each connection is
/// handled by `behaviour` on a thread of its own, which may report on
/// the channel.
fn server(name: &'static str, behaviour: Behaviour) -> (SocketAddr, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let _ = s.set_read_timeout(Some(DEADLINE));
            let tx = tx.clone();
            std::thread::spawn(move || behaviour(s, name, &tx));
        }
    });
    (addr, rx)
}

/// Reads the whole request (to the client's half-close), then answers
/// `NAME:` and what it read, and closes.
fn echo_after_eof(mut s: TcpStream, name: &str, tx: &mpsc::Sender<String>) {
    let got = read_all(&mut s);
    let _ = tx.send(format!("{name} got {}", got.len()));
    let _ = s.write_all(format!("{name}:").as_bytes());
    let _ = s.write_all(&got);
    let _ = s.shutdown(Shutdown::Write);
}

/// Sends a banner and shuts its write side at once; then reads what the
/// client still sends, to its end, and reports it.
fn banner_then_listen(mut s: TcpStream, name: &str, tx: &mpsc::Sender<String>) {
    let _ = s.write_all(format!("220 {name} ready\r\n").as_bytes());
    let _ = s.shutdown(Shutdown::Write);
    let got = read_all(&mut s);
    let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
}

/// Says its name on a line, then writes back each piece as it comes,
/// until the client's end; then ends its own side.
fn echo_live(mut s: TcpStream, name: &str, tx: &mpsc::Sender<String>) {
    let _ = s.write_all(format!("{name}\n").as_bytes());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Write);
    let _ = tx.send("closed".into());
}

/// Counts what the client sends to its end, reports the count and
/// answers it.
fn count_bytes(mut s: TcpStream, _name: &str, tx: &mpsc::Sender<String>) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let _ = tx.send(total.to_string());
    let _ = s.write_all(format!("counted {total}").as_bytes());
    let _ = s.shutdown(Shutdown::Write);
}

/// A policy with one tcp listener `t` on pool `p` of `servers`;
/// `pool_extra` goes in the pool's table, `extra` in the policy's.
fn policy(servers: &[SocketAddr], pool_extra: &str, extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"return {{
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "p" }} }},
  pools = {{ p = {{ mode = "tcp", servers = {{ {} }}, {pool_extra} }} }},
  {extra}
}}
"#,
        list.join(", ")
    )
}

/// One exchange: sends `what`, shuts the write side, reads to the end.
fn ask(addr: SocketAddr, what: &[u8]) -> Vec<u8> {
    let mut c = connect(addr);
    c.write_all(what).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    read_all(&mut c)
}

/// Sends `what` and finds the connection closed by Pocket without a byte
/// (EOF, or a reset since Pocket closed with our bytes unread).
fn refused(addr: SocketAddr, what: &[u8]) {
    let mut c = connect(addr);
    let _ = c.write_all(what);
    let _ = c.shutdown(Shutdown::Write);
    closed_by_pocket(&mut c);
}

/// Pocket closed `c` (before [`DEADLINE`]): its end (EOF), or a reset /
/// abort / broken pipe when it closed with our bytes unread. A read that
/// times out is Pocket keeping the connection open: a failure, never a
/// pass.
fn closed_by_pocket(c: &mut TcpStream) {
    use std::io::ErrorKind::*;
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("Pocket sent {n} bytes instead of closing"),
        Err(e) if matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe) => {}
        Err(e) => panic!("Pocket did not close the connection within {DEADLINE:?}: {e}"),
    }
}

/// Opens a connection to an [`echo_live`] server and reads its name.
fn open_live(addr: SocketAddr) -> (TcpStream, String) {
    let mut c = connect(addr);
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    while c.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
        name.push(byte[0]);
    }
    (c, String::from_utf8_lossy(&name).into_owned())
}

/// Sends a line on an open connection and reads its echo back.
fn round_trip(c: &mut TcpStream, line: &str) {
    c.write_all(line.as_bytes()).unwrap();
    let mut got = vec![0u8; line.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), line);
}

/// The lines of an access log file once it has `n` of them (polled,
/// within the deadline).
fn access_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} of {n} access log lines after {DEADLINE:?}: {text}",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn echo_with_half_close_both_ways() {
    let (echo, echoed) = server("E", echo_after_eof);
    let (banner, heard) = server("B", banner_then_listen);
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "echo", bind = "127.0.0.1:0", mode = "tcp", pool = "echo" }},
                {{ name = "banner", bind = "127.0.0.1:0", mode = "tcp", pool = "banner" }} }},
  pools = {{ echo = {{ mode = "tcp", servers = {{ "{echo}" }} }},
            banner = {{ mode = "tcp", servers = {{ "{banner}" }} }} }},
}}
"#
        ),
        1,
    );

    // The client shuts its write side first and still reads the answer.
    let mut c = connect(pocket.addr("echo"));
    c.write_all(b"hello over tcp").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut c), b"E:hello over tcp");
    assert_eq!(
        echoed.recv_timeout(DEADLINE).unwrap(),
        "E got 14",
        "the server saw the client's end"
    );

    // The server shuts first; the client can still send.
    let mut c = connect(pocket.addr("banner"));
    assert_eq!(read_all(&mut c), b"220 B ready\r\n");
    c.write_all(b"QUIT after your close\r\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        heard.recv_timeout(DEADLINE).unwrap(),
        "QUIT after your close\r\n"
    );
}

#[test]
fn round_robin_over_two_servers() {
    let (a, _) = server("A", echo_after_eof);
    let (b, _) = server("B", echo_after_eof);
    let pocket = Pocket::start(&policy(&[a, b], "", ""), 1);
    let addr = pocket.addr("t");
    let answers: Vec<String> = (0..4)
        .map(|_| String::from_utf8(ask(addr, b"x")).unwrap())
        .collect();
    let on = |name: &str| {
        answers
            .iter()
            .filter(|a| *a == &format!("{name}:x"))
            .count()
    };
    assert_eq!((on("A"), on("B")), (2, 2), "{answers:?}");
}

#[test]
fn a_refused_server_is_skipped_for_the_next() {
    let dead = dead_addr();
    let (a, _) = server("A", echo_after_eof);
    let pocket = Pocket::start(&policy(&[dead, a], "retries = 2", ""), 1);
    let addr = pocket.addr("t");
    for _ in 0..3 {
        assert_eq!(ask(addr, b"hi"), b"A:hi");
    }
    pocket
        .log
        .wait_for(&["connect failed", &dead.to_string(), "pool=p"]);
}

#[test]
fn no_server_left_closes_the_connection_saying_so() {
    let dead = dead_addr();
    let pocket = Pocket::start(&policy(&[dead], "retries = 0", ""), 1);
    refused(pocket.addr("t"), b"hi");
    pocket.log.wait_for(&[
        "no server of pool \"p\" could be reached (tried 1; last: ",
        "; connection closed",
        "listener=t",
        "peer=127.0.0.1:",
    ]);
}

/// Every server marked down: nothing was tried, and the line says so in
/// the HTTP path's words (newcomer16 #7), not "could be connected to".
#[test]
fn no_server_up_says_none_is_up() {
    let dead = dead_addr();
    let pocket = Pocket::start(
        &policy(
            &[dead],
            r#"check = { tcp = true, start = "down", interval = "1s" }"#,
            "",
        ),
        1,
    );
    refused(pocket.addr("t"), b"hi");
    let line = pocket.log.wait_for(&[
        "no server of pool \"p\" is up (1 server, all down); connection closed",
        "listener=t",
    ]);
    assert!(!line.contains("could be"), "{line}");
}

#[test]
fn pocket_reject_closes_the_connection() {
    let (a, _) = server("A", echo_after_eof);
    let pocket = Pocket::start(
        &policy(
            &[a],
            "",
            r#"on_connect = function(conn)
    if conn.listener == "t" then return pocket.reject("not today") end
  end,"#,
        ),
        1,
    );
    let mut c = connect(pocket.addr("t"));
    // Closed without a byte: EOF, or a reset if our bytes arrive after.
    closed_by_pocket(&mut c);
    pocket
        .log
        .wait_for(&["connection rejected: not today", "listener=t"]);
}

#[test]
fn an_on_connect_error_closes_only_that_connection() {
    let (a, _) = server("A", echo_after_eof);
    let pocket = Pocket::start(
        &format!(
            r#"local seen = 0
return {{
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "p" }} }},
  pools = {{ p = {{ mode = "tcp", servers = {{ "{a}" }} }} }},
  on_connect = function(conn)
    seen = seen + 1
    if seen == 1 then error("the first one fails") end
    return nil
  end,
}}
"#
        ),
        1,
    );
    let addr = pocket.addr("t");
    refused(addr, b"one");
    let line = pocket
        .log
        .wait_for(&["the first one fails", "connection closed"]);
    assert!(line.contains("policy.lua:7:"), "{line}");
    assert!(
        line.contains("listener=t") && line.contains("peer=127.0.0.1:"),
        "{line}"
    );
    assert_eq!(ask(addr, b"two"), b"A:two");
}

#[test]
fn on_connect_picks_the_pool_and_a_balance_function_the_server() {
    let (a, _) = server("A", echo_after_eof);
    let (b, _) = server("B", echo_after_eof);
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "h", bind = "127.0.0.1:0", mode = "tcp" }},
                {{ name = "k", bind = "127.0.0.1:0", mode = "tcp" }},
                {{ name = "s", bind = "127.0.0.1:0", mode = "tcp" }} }},
  pools = {{
    hashed = {{ mode = "tcp", servers = {{ "{a}", "{b}" }}, balance = "hash", hash_key = "source" }},
    keyed = {{ mode = "tcp", servers = {{ "{a}", "{b}" }}, balance = "hash",
              hash_key = function(conn) return conn.listener end }},
    scripted = {{ mode = "tcp", servers = {{ "{a}", "{b}" }},
                 balance = function(servers, conn)
                   for i, s in ipairs(servers) do
                     if s.addr == "{b}" and conn.peer_ip == "127.0.0.1" then return i end
                   end
                 end }},
  }},
  on_connect = function(conn)
    if conn.listener == "h" then return "hashed" end
    if conn.listener == "k" then return "keyed" end
    return "scripted"
  end,
}}
"#
        ),
        1,
    );
    for listener in ["h", "k"] {
        // One client address, one key: always the same server.
        let addr = pocket.addr(listener);
        let answers: Vec<Vec<u8>> = (0..4).map(|_| ask(addr, b"k")).collect();
        assert!(
            answers.iter().all(|x| x == &answers[0]),
            "{listener}: {answers:?}"
        );
    }
    let addr = pocket.addr("s");
    for _ in 0..3 {
        assert_eq!(ask(addr, b"k"), b"B:k");
    }
}

#[test]
fn the_access_log_has_a_line_per_connection_in_both_formats() {
    for format in ["json", "text"] {
        let (a, _) = server("A", echo_after_eof);
        let dead = dead_addr();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("access.log");
        let pocket = Pocket::start(
            &format!(
                r#"return {{
  log = {{ access = "{}", format = "{format}" }},
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "p" }},
                {{ name = "no", bind = "127.0.0.1:0", mode = "tcp", pool = "p" }} }},
  pools = {{ p = {{ mode = "tcp", servers = {{ "{dead}", "{a}" }}, retries = 1 }} }},
  on_connect = function(conn)
    if conn.listener == "no" then return pocket.reject("closed listener") end
  end,
}}
"#,
                file.display()
            ),
            1,
        );
        // The first connection goes to the dead server first, then A.
        assert_eq!(ask(pocket.addr("t"), b"hello"), b"A:hello");
        let lines = access_lines(&file, 1);
        let line = &lines[0];
        if format == "json" {
            for part in [
                "\"listener\":\"t\"".to_string(),
                "\"method\":null,\"host\":null,\"path\":null,\"proto\":\"TCP\",\"status\":null"
                    .into(),
                format!("\"bytes_in\":5,\"bytes_out\":7,\"pool\":\"p\",\"server\":\"{a}\""),
                format!("\"retries\":[{{\"server\":\"{dead}\",\"cause\":\"connect failed\"}}]"),
                "\"termination\":\"--\"".into(),
            ] {
                assert!(line.contains(&part), "{part:?} not in {line}");
            }
            assert!(!line.contains("\"connect_ms\":null"), "{line}");
        } else {
            for part in [
                " t g1 \"TCP\" - -- in=5 out=7 pool=p",
                &format!("server={a} retries=1"),
            ] {
                assert!(line.contains(part), "{part:?} not in {line}");
            }
        }
        let mut c = connect(pocket.addr("no"));
        closed_by_pocket(&mut c);
        let lines = access_lines(&file, 2);
        assert!(lines[1].contains("PR"), "{}", lines[1]);
    }
}

#[test]
fn a_reload_leaves_an_open_connection_on_its_generation() {
    let (a, _) = server("A", echo_live);
    let (b, _) = server("B", echo_live);
    let pocket = Pocket::start(&policy(&[a], "", ""), 1);
    let addr = pocket.addr("t");
    let (mut old, name) = open_live(addr);
    assert_eq!(name, "A");
    round_trip(&mut old, "before the reload\n");

    std::fs::write(&pocket.policy, policy(&[b], "", "")).unwrap();
    let (code, out, err) = pocket_cmd(&["reload", pocket.policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("generation 2"), "{out}");

    // New connections go to the new pool's server...
    let (mut new, name) = open_live(addr);
    assert_eq!(name, "B");
    round_trip(&mut new, "new\n");
    // ...and the one opened before keeps working, on its server.
    round_trip(&mut old, "after the reload\n");
    old.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut old), b"");
}

#[test]
fn sigterm_closes_an_open_connection_after_the_grace_period() {
    let (a, closed) = server("A", echo_live);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.json");
    let text = policy(
        &[a],
        "",
        &format!(
            r#"log = {{ access = "{}", format = "json" }},"#,
            file.display()
        ),
    );
    let path = write_policy(dir.path(), "policy.lua", &text);
    let mut pocket = Pocket::start_file_with(dir, path, 1, &["--grace", "1s"]);
    let (mut c, _) = open_live(pocket.addr("t"));
    round_trip(&mut c, "still here\n");
    unsafe { libc::kill(pocket.pid() as i32, libc::SIGTERM) };
    // The connection stays usable while the grace period runs, then is
    // closed: the client sees its end, the server its client gone.
    closed_by_pocket(&mut c);
    assert_eq!(closed.recv_timeout(DEADLINE).unwrap(), "closed");
    pocket
        .log
        .wait_for(&["grace period of 1s over; closing 1 connection still open"]);
    let status = pocket.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let lines = access_lines(&file, 1);
    assert!(lines[0].contains("\"termination\":\"KD\""), "{}", lines[0]);
    assert!(lines[0].contains("\"bytes_in\":11"), "{}", lines[0]);
}

#[test]
fn a_gib_stream_passes_with_flat_memory() {
    const GIB: u64 = 1 << 30;
    const CHUNK: usize = 256 * 1024;
    let (a, counted) = server("A", count_bytes);
    let pocket = Pocket::start(&policy(&[a], "", ""), 1);
    let addr = pocket.addr("t");
    // Warm: the first connection's allocations are not growth.
    assert_eq!(ask(addr, b"warm"), b"counted 4");
    assert_eq!(counted.recv_timeout(DEADLINE).unwrap(), "4");
    let (before, _) = pocket.rss_kib();

    let started = std::time::Instant::now();
    let mut c = connect(addr);
    let chunk = vec![7u8; CHUNK];
    let mut sent: u64 = 0;
    let mut highest = before;
    while sent < GIB {
        c.write_all(&chunk).unwrap();
        sent += CHUNK as u64;
        if sent.is_multiple_of(64 << 20) {
            highest = highest.max(pocket.rss_kib().0);
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "1 GiB not through in 10 minutes ({sent} bytes sent)"
            );
        }
    }
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut c), format!("counted {GIB}").as_bytes());
    assert_eq!(counted.recv_timeout(DEADLINE).unwrap(), GIB.to_string());
    let grew = highest.saturating_sub(before);
    eprintln!(
        "1 GiB in {:?}; RSS {before} KiB before, highest {highest} KiB",
        started.elapsed()
    );
    assert!(
        grew < 32 * 1024,
        "RSS grew by {grew} KiB over a 1 GiB stream"
    );
}

#[test]
fn tls_to_the_servers_of_a_tcp_pool() {
    let dir = tempfile::tempdir().unwrap();
    make_test_certs(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/tls_origin.py");
    let mut origin = std::process::Command::new("python3")
        .arg(script)
        .arg(dir.path().join("server.pem"))
        .arg(dir.path().join("server.key"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs tests/clients/tls_origin.py");
    let out = Log::default();
    out.follow(origin.stdout.take().unwrap());
    let line = out.wait_for_any(&[&["listening "], &["<process ended>"]]);
    assert!(line.contains("listening "), "the TLS origin did not start");
    let port: u16 = line.rsplit(' ').next().unwrap().trim().parse().unwrap();
    let text = format!(
        r#"return {{
  log = {{ access = "access.json", format = "json" }},
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "p" }} }},
  pools = {{ p = {{ mode = "tcp", servers = {{ "localhost:{port}" }}, tls = {{ ca = "ca.pem" }} }} }},
}}
"#
    );
    let file = dir.path().join("access.json");
    let path = write_policy(dir.path(), "policy.lua", &text);
    let pocket = Pocket::start_file(dir, path, 1);
    // Plain bytes in, TLS to the server: an HTTP/1.0 request by hand.
    let got = ask(pocket.addr("t"), b"GET /tcp HTTP/1.0\r\n\r\n");
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("tls origin: /tcp sni=localhost"), "{got}");
    // Python closes its TLS connections without a close_notify: still the
    // server's normal end, not a break.
    let lines = access_lines(&file, 1);
    assert!(lines[0].contains("\"termination\":\"--\""), "{}", lines[0]);
    let _ = origin.kill();
    let _ = origin.wait();
}

/// `GET /metrics` from the admin listener, by hand.
fn scrape(pocket: &Pocket) -> String {
    let line = pocket.log.wait_for(&["admin listening on "]);
    let admin: SocketAddr = line
        .rsplit("admin listening on ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut c = connect(admin);
    c.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n").as_bytes())
        .unwrap();
    String::from_utf8_lossy(&read_all(&mut c)).into_owned()
}

#[test]
fn least_conn_counts_open_connections_and_metrics_count_them() {
    let (a, _) = server("A", echo_live);
    let (b, _) = server("B", echo_live);
    let pocket = Pocket::start(
        &policy(
            &[a, b],
            r#"balance = "least_conn""#,
            r#"admin = { bind = "127.0.0.1:0" },"#,
        ),
        1,
    );
    let addr = pocket.addr("t");
    // One connection held open on the first server...
    let (mut held, first) = open_live(addr);
    round_trip(&mut held, "held\n");
    // ...so every new one goes to the other while it stays open.
    for _ in 0..3 {
        let (mut c, name) = open_live(addr);
        assert_ne!(
            name, first,
            "least_conn sent a connection to the busy server"
        );
        round_trip(&mut c, "x\n");
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut c), b"");
    }
    let held_addr = if first == "A" { a } else { b };
    let metrics = scrape(&pocket);
    let in_flight =
        format!("pocket_server_requests_in_flight{{pool=\"p\",server=\"{held_addr}\"}} 1");
    assert!(
        metrics.contains(&in_flight),
        "{in_flight} not in\n{metrics}"
    );
    held.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut held), b"");
    // Counted when they end: three on one server, one on the other.
    let other = if first == "A" { b } else { a };
    let start = std::time::Instant::now();
    let want = [
        // All ended normally: termination "--".
        "pocket_tcp_connections_total{listener=\"t\",termination=\"--\"} 4".to_string(),
        format!("pocket_server_tcp_connections_total{{pool=\"p\",server=\"{other}\",termination=\"--\"}} 3"),
        format!("pocket_server_tcp_connections_total{{pool=\"p\",server=\"{held_addr}\",termination=\"--\"}} 1"),
        // Bytes client to server: "held\n" and three "x\n".
        "pocket_request_bytes_total{listener=\"t\"} 11".to_string(),
    ];
    loop {
        let metrics = scrape(&pocket);
        if want.iter().all(|w| metrics.contains(w.as_str())) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "{want:?} not all in\n{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_silent_connection_is_closed_after_timeouts_idle() {
    let (a, closed) = server("A", echo_live);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.json");
    let text = policy(
        &[a],
        r#"timeouts = { idle = "300ms" }"#,
        &format!(
            r#"log = {{ access = "{}", format = "json" }},"#,
            file.display()
        ),
    );
    let path = write_policy(dir.path(), "policy.lua", &text);
    let pocket = Pocket::start_file(dir, path, 1);
    let (mut c, _) = open_live(pocket.addr("t"));
    // Nothing more is sent: Pocket closes both sides.
    assert_eq!(read_all(&mut c), b"");
    assert_eq!(closed.recv_timeout(DEADLINE).unwrap(), "closed");
    let lines = access_lines(&file, 1);
    // The server spoke last (its name): the client is the quiet side.
    assert!(lines[0].contains("\"termination\":\"cD\""), "{}", lines[0]);
    pocket.log.wait_for(&["timeouts.idle", "listener=t"]);
}

#[test]
fn check_shows_the_mode_and_a_reload_says_when_it_changes() {
    let (a, _) = server("A", echo_after_eof);
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", pool = "p" }} }},
  pools = {{ p = {{ servers = {{ "{a}" }} }} }},
}}
"#
        ),
        1,
    );
    let addr = pocket.addr("t");
    std::fs::write(&pocket.policy, policy(&[a], "", "")).unwrap();
    let path = pocket.policy.to_str().unwrap();
    let (code, out, err) = pocket_cmd(&["check", path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("t on 127.0.0.1:0 (default pool: p, mode tcp)"),
        "{out}"
    );
    assert!(
        out.contains("p (round_robin, 1 server, retries 3, mode tcp)"),
        "{out}"
    );
    let (code, out, err) = pocket_cmd(&["reload", path]);
    assert_eq!(code, 0, "{out}{err}");
    pocket
        .log
        .wait_for(&["pool p mode http -> tcp", "listener t mode http -> tcp"]);
    // The same socket now serves whole TCP connections.
    assert_eq!(ask(addr, b"raw bytes"), b"A:raw bytes");
}

/// Reports the first line it reads (a PROXY header), then echoes the rest
/// after the client's end.
fn first_line(mut s: TcpStream, name: &str, tx: &mpsc::Sender<String>) {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while s.read_exact(&mut byte).is_ok() {
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
    echo_after_eof(s, name, tx);
}

#[test]
fn send_proxy_names_the_client_and_a_fallback_pool_takes_over() {
    let (a, lines) = server("A", first_line);
    let (b, _) = server("B", echo_after_eof);
    let dead = dead_addr();
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "proxied" }},
                {{ name = "f", bind = "127.0.0.1:0", mode = "tcp", pool = "gone" }} }},
  pools = {{
    proxied = {{ mode = "tcp", servers = {{ "{a}" }}, send_proxy = "v1" }},
    gone = {{ mode = "tcp", servers = {{ "{dead}" }}, retries = 1, fallback = "spare" }},
    spare = {{ mode = "tcp", servers = {{ "{b}" }} }},
  }},
}}
"#
        ),
        1,
    );
    let t = pocket.addr("t");
    let mut c = connect(t);
    let me = c.local_addr().unwrap();
    c.write_all(b"data").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut c), b"A:data");
    let header = lines.recv_timeout(DEADLINE).unwrap();
    assert_eq!(
        header,
        format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
            me.port(),
            t.port()
        )
    );
    // The dead server is tried, then the pool has none left: its fallback.
    assert_eq!(ask(pocket.addr("f"), b"x"), b"B:x");
}

#[test]
fn an_accept_proxy_listener_judges_the_client_its_header_names() {
    let (a, lines) = server("A", first_line);
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "p", accept_proxy = true }} }},
  pools = {{ p = {{ mode = "tcp", servers = {{ "{a}" }}, send_proxy = "v1" }} }},
  on_connect = function(conn)
    if conn.peer_ip ~= "10.1.2.3" then return pocket.reject("not from 10.1.2.3") end
  end,
}}
"#
        ),
        1,
    );
    let t = pocket.addr("t");
    let got = ask(t, b"PROXY TCP4 10.1.2.3 192.0.2.1 5555 25\r\nmail");
    assert_eq!(got, b"A:mail");
    assert_eq!(
        lines.recv_timeout(DEADLINE).unwrap(),
        "PROXY TCP4 10.1.2.3 192.0.2.1 5555 25\r\n"
    );
    refused(t, b"PROXY TCP4 10.9.9.9 192.0.2.1 5555 25\r\nmail");
    pocket.log.wait_for(&[
        "connection rejected: not from 10.1.2.3",
        "peer=10.9.9.9:5555",
    ]);
}

#[test]
fn quiet_open_connections_hold_no_copy_buffers() {
    const N: usize = 200;
    let (a, _) = server("A", echo_live);
    let pocket = Pocket::start(&policy(&[a], "", ""), 1);
    let addr = pocket.addr("t");
    let (mut warm, _) = open_live(addr);
    round_trip(&mut warm, "warm\n");
    let (before, _) = pocket.rss_kib();
    let mut open = Vec::with_capacity(N);
    for i in 0..N {
        let (mut c, _) = open_live(addr);
        // Each has moved bytes both ways: both of its buffers are touched.
        round_trip(&mut c, &format!("{i}\n"));
        open.push(c);
    }
    let (after, _) = pocket.rss_kib();
    let per = after.saturating_sub(before) as f64 / N as f64;
    eprintln!("{N} open tcp connections: RSS {before} -> {after} KiB, {per:.1} KiB each");
    // A connection waiting for bytes holds no copy buffer (they go back
    // to the worker once written out): its task and sockets only, well
    // under one 16 KiB buffer (two each when every direction kept its
    // own).
    assert!(per < 12.0, "{per:.1} KiB per open connection");
    for mut c in open {
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut c), b"");
    }
}

#[test]
fn on_connect_naming_an_unknown_pool_closes_that_connection_saying_where() {
    let (a, _) = server("A", echo_after_eof);
    let pocket = Pocket::start(
        &format!(
            r#"local n = 0
return {{
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "p" }} }},
  pools = {{ p = {{ mode = "tcp", servers = {{ "{a}" }} }} }},
  on_connect = function(conn)
    n = n + 1
    if n == 1 then return "nowhere" end
    return "p"
  end,
}}
"#
        ),
        1,
    );
    let addr = pocket.addr("t");
    refused(addr, b"q");
    let line = pocket.log.wait_for(&[
        "on_connect returned pool \"nowhere\", which is not defined",
        "connection closed",
    ]);
    // Placed at the hook's function, as every bad hook result is.
    assert!(line.contains("policy.lua:5:"), "{line}");
    assert!(
        line.contains("listener=t") && line.contains("peer=127.0.0.1:"),
        "{line}"
    );
    // The next connection is served.
    assert_eq!(ask(addr, b"q"), b"A:q");
}

/// A plain HTTP/1.1 GET with `Connection: close`: the status of the answer.
fn http_status(addr: SocketAddr, path: &str) -> u16 {
    let mut c = connect(addr);
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let text = String::from_utf8_lossy(&read_all(&mut c)).into_owned();
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// on_request returning a tcp pool would send `GET / HTTP/1.1` to a
/// Redis or SMTP server (and count its puzzled answers against it): a
/// 500, the log at the hook's line, and the server never connected to.
/// A name no pool has lists only the pools the hook may return, for
/// on_request and on_connect alike.
#[test]
fn on_request_naming_a_tcp_pool_gets_a_500_and_the_server_no_connection() {
    let (r, seen) = server("R", first_line);
    let web = origin("W");
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "web" }},
                {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "redis" }} }},
  pools = {{ web = {{ servers = {{ "{w}" }} }}, redis = {{ mode = "tcp", servers = {{ "{r}" }} }} }},
  on_request = function(req)
    if req.path == "/redis" then return "redis" end
    if req.path == "/typo" then return "rediss" end
  end,
  on_connect = function(conn)
    if conn.listener == "t" then return "webb" end
  end,
}}
"#,
            w = web.addr
        ),
        1,
    );
    let addr = pocket.addr("web");
    assert_eq!(http_status(addr, "/redis"), 500);
    pocket.log.wait_for(&[
        "policy.lua:5: on_request returned pool \"redis\", a tcp pool; an http listener needs an http pool",
        "request=",
    ]);
    assert_eq!(http_status(addr, "/typo"), 500);
    pocket.log.wait_for(&[
        "policy.lua:5: on_request returned pool \"rediss\", which is not defined (pools: web)",
    ]);
    assert_eq!(http_status(addr, "/fine"), 200);
    refused(pocket.addr("t"), b"PING\r\n");
    pocket.log.wait_for(&[
        "policy.lua:9: on_connect returned pool \"webb\", which is not defined (pools: redis)",
        "listener=t",
    ]);
    assert!(
        seen.recv_timeout(Duration::from_millis(500)).is_err(),
        "the tcp server was connected to"
    );
}

/// A tcp listener has no `timeouts.head`: its PROXY header is awaited
/// for `timeouts.client_hello` (the wait for the client's first bytes),
/// not the 30 s an http listener's head gets.
#[test]
fn a_silent_client_of_an_accept_proxy_tcp_listener_is_closed_after_client_hello() {
    let (a, seen) = server("A", first_line);
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "p", accept_proxy = true,
                   timeouts = {{ client_hello = "1s" }} }} }},
  pools = {{ p = {{ mode = "tcp", servers = {{ "{a}" }} }} }},
}}
"#
        ),
        1,
    );
    let mut c = connect(pocket.addr("t"));
    // Well under the 30 s a `timeouts.head` would have been.
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    closed_by_pocket(&mut c);
    assert!(
        seen.recv_timeout(Duration::from_millis(500)).is_err(),
        "a server was connected to"
    );
}

/// on_connect returning nil on a listener without a pool: the warning
/// says what happened in the policy's words.
#[test]
fn on_connect_returning_nil_on_a_listener_without_a_pool_says_so() {
    let (a, _) = server("A", echo_after_eof);
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp" }} }},
  pools = {{ p = {{ mode = "tcp", servers = {{ "{a}" }} }} }},
  on_connect = function(conn)
    if conn.peer_ip == "10.0.0.1" then return "p" end
  end,
}}
"#
        ),
        1,
    );
    refused(pocket.addr("t"), b"hi");
    pocket.log.wait_for(&[
        "on_connect returned nil and listener \"t\" has no pool; connection closed",
        "peer=127.0.0.1:",
    ]);
}

#[test]
fn on_connect_past_its_budget_closes_that_connection_and_the_next_is_served() {
    let (a, _) = server("A", echo_after_eof);
    let pocket = Pocket::start(
        &format!(
            r#"local n = 0
return {{
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "p" }} }},
  pools = {{ p = {{ mode = "tcp", servers = {{ "{a}" }} }} }},
  on_connect = function(conn)
    n = n + 1
    if n == 1 then
      while true do end
    end
  end,
}}
"#
        ),
        1,
    );
    let addr = pocket.addr("t");
    refused(addr, b"one");
    let line = pocket.log.wait_for(&[
        "policy.lua:8:",
        "ran past its time budget",
        "connection closed",
    ]);
    assert!(
        line.contains("listener=t") && line.contains("peer=127.0.0.1:"),
        "{line}"
    );
    assert_eq!(ask(addr, b"two"), b"A:two");
}

/// Passive health in a tcp pool with no check at all: failed connects
/// alone take the server DOWN (`passive.after` in a row), and then its
/// connections go to the other server without trying it first.
#[test]
fn failed_connects_alone_take_a_tcp_server_down_and_its_traffic_moves() {
    let (a, _) = server("A", echo_after_eof);
    let dead = dead_addr();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  log = {{ access = "{}" }},
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "p" }} }},
  pools = {{ p = {{ mode = "tcp", servers = {{ "{dead}", "{a}" }}, retries = 1,
                   passive = {{ after = 2, cooldown = "10m" }} }} }},
}}
"#,
            file.display()
        ),
        1,
    );
    let addr = pocket.addr("t");
    let down = format!("server {dead} of pool p is DOWN");
    let mut asked = 0;
    while asked < 20 && !pocket.log.lines().iter().any(|l| l.contains(&down)) {
        assert_eq!(ask(addr, b"hi"), b"A:hi");
        asked += 1;
    }
    pocket
        .log
        .wait_for(&[&down, "2 failures in a row on live traffic"]);
    for _ in 0..6 {
        assert_eq!(ask(addr, b"hi"), b"A:hi");
    }
    let lines = access_lines(&file, asked + 6);
    for line in &lines[asked..] {
        assert!(
            line.contains(&format!("server={a} retries=0")),
            "a connection after the DOWN still tried {dead}: {line}"
        );
    }
}

/// A client that leaves while Pocket is still connecting for it: the
/// connect is abandoned and the line says `CC` (not `sC` once the
/// connect times out). The server here never completes a handshake: its
/// accept queue is full.
#[test]
fn a_client_that_leaves_during_the_connect_is_logged_cc() {
    let (full, _held) = unanswering_server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  log = {{ access = "{}" }},
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "p" }} }},
  pools = {{ p = {{ mode = "tcp", servers = {{ "{full}" }}, timeouts = {{ connect = "20s" }} }} }},
}}
"#,
            file.display()
        ),
        1,
    );
    // Gone at once, having sent nothing: whether Pocket has started its
    // connect when the FIN comes or sees it first, it opens nothing.
    drop(connect(pocket.addr("t")));
    let line = pocket.log.wait_for(&[
        "the client left while a server was being connected to",
        "listener=t",
    ]);
    assert!(line.contains("pool=p"), "{line}");
    let lines = access_lines(&file, 1);
    assert!(lines[0].contains(" CC "), "{}", lines[0]);
}

/// A server whose connects never complete: its accept queue is full
/// (listen(0) holds one connection, never accepted; the next SYNs are
/// dropped). Keep the second value alive as long as the server is needed.
fn unanswering_server() -> (SocketAddr, (socket2::Socket, Vec<TcpStream>)) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..3 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            fillers.push(s);
        }
    }
    (addr, (sock, fillers))
}

/// `least_conn` counts a connection on its server from the pick, while
/// it is still connecting (HAProxy does the same): a server that is slow
/// to accept does not get every new connection meanwhile. Seen in the
/// in-flight gauge, and in the split: two each.
#[test]
fn least_conn_counts_a_connection_while_it_connects() {
    let (slow, _held) = unanswering_server();
    let (a, _) = server("A", echo_live);
    let pocket = Pocket::start(
        &policy(
            &[slow, a],
            r#"balance = "least_conn", retries = 0, timeouts = { connect = "50s" }"#,
            r#"admin = { bind = "127.0.0.1:0" },"#,
        ),
        1,
    );
    let addr = pocket.addr("t");
    let in_flight = |metrics: &str, server: SocketAddr| -> u64 {
        let name = format!("pocket_server_requests_in_flight{{pool=\"p\",server=\"{server}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut clients = Vec::new();
    let mut metrics = String::new();
    for i in 1..=4u64 {
        clients.push(connect(addr));
        // Each picked before the next comes.
        let start = std::time::Instant::now();
        loop {
            metrics = scrape(&pocket);
            if in_flight(&metrics, slow) + in_flight(&metrics, a) == i {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "connection {i} not counted in flight:\n{metrics}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(in_flight(&metrics, slow), 2, "{metrics}");
    assert_eq!(in_flight(&metrics, a), 2, "{metrics}");
}

/// A tcp line's `hooks_ms` counts the time `on_connect` ran (here a loop
/// of some 50 000 steps): the connection's decision is its hooks' time,
/// as on_request's is a request's.
#[test]
fn on_connect_s_run_time_is_in_a_tcp_line_s_hooks_ms() {
    let (a, _) = server("A", echo_after_eof);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let pocket = Pocket::start(
        &policy(
            &[a],
            "",
            &format!(
                r#"log = {{ access = "{}", format = "json" }},
  on_connect = function(conn)
    local x = 0
    for i = 1, 50000 do x = x + i end
    return nil
  end,"#,
                file.display()
            ),
        ),
        1,
    );
    assert_eq!(ask(pocket.addr("t"), b"hi"), b"A:hi");
    let lines = access_lines(&file, 1);
    let hooks_ms: f64 = lines[0]
        .split("\"hooks_ms\":")
        .nth(1)
        .and_then(|v| v.split([',', '}']).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no hooks_ms in {}", lines[0]));
    assert!(
        hooks_ms > 0.0,
        "on_connect's time not counted: {}",
        lines[0]
    );
}
