//! Health checks of tcp pools against real servers: two SMTP servers
//! (Python's `aiosmtpd`, tests/clients/smtp_server.py) checked on their
//! `220` banner, one stopped (down) and started again on its port (up);
//! Debian's `redis-server` checked with `send = "PING\r\n", expect =
//! "+PONG"`, and one with a password whose `-NOAUTH` answer is the reason
//! the log and the admin API show; a Lua check's `http.tcp` in a tcp pool.

mod common;
use common::tcp_servers::*;
use common::*;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "t0ken";

/// The admin API's `/api/status`.
async fn status(admin: SocketAddr) -> String {
    let r = send(
        admin,
        request(
            "GET",
            "/api/status",
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// Polls `/api/status` until it contains every one of `parts` (at most
/// 20 s); the last answer.
async fn status_until(admin: SocketAddr, parts: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let s = status(admin).await;
        if parts.iter().all(|p| s.contains(p)) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the admin API never showed {parts:?}; last:\n{s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn smtp_servers_checked_on_their_banner_go_down_when_stopped_and_up_when_started() {
    let a = Smtp::start("A", 0);
    let b = Smtp::start("B", 0);
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "smtp", bind = "127.0.0.1:0", mode = "tcp", pool = "mail" }} }},
  pools = {{
    mail = {{ mode = "tcp", servers = {{ "{a}", "{b}" }},
              check = {{ expect = "220", interval = "200ms", timeout = "5s", rise = 2, fall = 2 }} }},
  }},
}}
"#,
        a = a.addr,
        b = b.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let b_addr = b.addr;
    drop(b);
    let down = pocket
        .log
        .wait_for(&[&format!("server {b_addr} of pool mail is DOWN")]);
    assert!(down.contains("2 checks failed: connect:"), "{down}");
    // Started again on its port (its address is the pool's).
    let _b = Smtp::start("B", b_addr.port());
    let up = pocket
        .log
        .wait_for(&[&format!("server {b_addr} of pool mail is UP")]);
    assert!(
        up.contains("2 checks passed: answered \"220 B ESMTP pocket-test\""),
        "{up}"
    );
    // A never went down (its banner gets 5 s: a busy machine is no
    // reason to fail it).
    assert!(
        !pocket
            .log
            .text()
            .contains(&format!("{} of pool mail is DOWN", a.addr)),
        "{}",
        pocket.log.text()
    );
}

#[test]
fn a_banner_pattern_passes_a_matching_line_and_says_what_another_server_sent() {
    let smtp = Smtp::start("A", 0);
    let [port] = free_ports();
    let redis = Redis::start(port, None);
    // Two pools, one address each: the same pattern judges an SMTP
    // banner (passes: a server that speaks first is judged on its first
    // line even when `send` is given) and redis's reply to `send` (fails,
    // quoting it).
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "smtp", bind = "127.0.0.1:0", mode = "tcp", pool = "mail" }} }},
  pools = {{
    mail = {{ mode = "tcp", servers = {{ "{smtp}" }},
              check = {{ send = "QUIT\r\n", pattern = "^220[ -]", interval = "200ms", rise = 1, fall = 2, start = "down" }} }},
    wrong = {{ mode = "tcp", servers = {{ "{redis}" }},
               check = {{ send = "PING\r\n", pattern = "^220[ -]", interval = "200ms", fall = 2 }} }},
  }},
}}
"#,
        smtp = smtp.addr,
        redis = redis.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let up = pocket
        .log
        .wait_for(&[&format!("server {} of pool mail is UP", smtp.addr)]);
    assert!(up.contains("answered \"220 A ESMTP pocket-test\""), "{up}");
    let down = pocket
        .log
        .wait_for(&[&format!("server {} of pool wrong is DOWN", redis.addr)]);
    assert!(
        down.contains("expected a line matching \"^220[ -]\", got \"+PONG\""),
        "{down}"
    );
}

#[test]
fn a_banner_check_of_a_tls_pool_reads_the_banner_after_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    make_test_certs(dir.path());
    let smtps = Smtp::start_tls("S", 0, dir.path());
    let port = smtps.addr.port();
    // The same server checked by a pool with tls (the banner comes after
    // the handshake) and by one without (a TLS server says nothing
    // first: the check's timeout).
    let text = format!(
        r#"return {{
  listeners = {{ {{ name = "smtps", bind = "127.0.0.1:0", mode = "tcp", pool = "smtps" }} }},
  pools = {{
    smtps = {{ mode = "tcp", servers = {{ "localhost:{port}" }}, tls = {{ ca = "ca.pem" }},
               check = {{ expect = "220", interval = "200ms", rise = 1, start = "down" }} }},
    plain = {{ mode = "tcp", servers = {{ "127.0.0.1:{port}" }}, own_health = true,
               check = {{ expect = "220", interval = "200ms", timeout = "300ms", fall = 2 }} }},
  }},
}}
"#
    );
    let path = write_policy(dir.path(), "policy.lua", &text);
    let pocket = Pocket::start_file(dir, path, 1);
    let up = pocket
        .log
        .wait_for(&[&format!("server {} of pool smtps is UP", smtps.addr)]);
    assert!(up.contains("answered \"220 S ESMTP pocket-test\""), "{up}");
    let down = pocket
        .log
        .wait_for(&[&format!("server {} of pool plain is DOWN", smtps.addr)]);
    assert!(down.contains("no answer within 300ms"), "{down}");
}

#[test]
fn redis_passes_a_ping_check_and_a_locked_one_fails_saying_noauth() {
    let [po, pl] = free_ports();
    let open = Redis::start(po, None);
    let locked = Redis::start(pl, Some("s3cret"));
    let policy = format!(
        r#"return {{
  admin = {{ bind = "127.0.0.1:0", token = "{TOKEN}" }},
  listeners = {{ {{ name = "redis", bind = "127.0.0.1:0", mode = "tcp", pool = "redis" }} }},
  pools = {{
    redis = {{ mode = "tcp", servers = {{ "{open}" }},
               check = {{ send = "PING\r\n", expect = "+PONG", interval = "200ms", rise = 1, start = "down" }} }},
    locked = {{ mode = "tcp", servers = {{ "{locked}" }},
                check = {{ send = "PING\r\n", expect = "+PONG", interval = "200ms", fall = 2 }} }},
  }},
}}
"#,
        open = open.addr,
        locked = locked.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let up = pocket
        .log
        .wait_for(&[&format!("server {} of pool redis is UP", open.addr)]);
    assert!(up.contains("answered \"+PONG\""), "{up}");
    let down = pocket
        .log
        .wait_for(&[&format!("server {} of pool locked is DOWN", locked.addr)]);
    assert!(
        down.contains(
            "2 checks failed: expected \"+PONG\", got \"-NOAUTH Authentication required.\""
        ),
        "{down}"
    );
    // The stats page's API shows the same reason.
    let admin = admin_addr(&pocket);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(status_until(
        admin,
        &[
            r#"\"-NOAUTH Authentication required.\""#,
            r#"answered \"+PONG\""#,
        ],
    ));
}

#[test]
fn a_lua_check_in_a_tcp_pool_talks_to_redis_with_http_tcp() {
    let [port] = free_ports();
    let redis = Redis::start(port, None);
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "redis", bind = "127.0.0.1:0", mode = "tcp", pool = "redis" }} }},
  pools = {{
    redis = {{ mode = "tcp", servers = {{ "{redis}" }},
      check = {{
        interval = "200ms", rise = 1, start = "down",
        run = function(server, http)
          local got = http.tcp("SET pocket-check ok\r\n")
          return got == "+OK\r\n", "SET answered " .. got:gsub("%s+$", "")
        end,
      }},
    }},
  }},
}}
"#,
        redis = redis.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let up = pocket
        .log
        .wait_for(&[&format!("server {} of pool redis is UP", redis.addr)]);
    assert!(up.contains("SET answered +OK"), "{up}");
}

#[test]
fn mail_sent_through_pocket_arrives_and_a_stopped_server_gets_none() {
    let a = Smtp::start("A", 0);
    let b = Smtp::start("B", 0);
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "smtp", bind = "127.0.0.1:0", mode = "tcp", pool = "mail" }} }},
  pools = {{
    mail = {{ mode = "tcp", servers = {{ "{a}", "{b}" }}, retries = 0,
              check = {{ expect = "220", interval = "200ms", timeout = "5s", rise = 2, fall = 2 }} }},
  }},
}}
"#,
        a = a.addr,
        b = b.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let smtp = pocket.addr("smtp");
    let mut to = Vec::new();
    for i in 0..4 {
        let said = send_mail(smtp, &format!("round {i}"));
        assert!(said.contains("banner 220 "), "{said}");
        to.push(delivered_to(&said));
    }
    // Round robin: both servers got mail, and each has it.
    to.sort();
    assert_eq!(to, ["A", "A", "B", "B"]);
    a.out.wait_for(&[
        "mail A from=alice@client.test to=bob@example.test",
        "subject=round",
    ]);
    b.out
        .wait_for(&["mail B from=alice@client.test", "subject=round"]);

    // B stops; once its banner check says so, every mail goes to A, with
    // no retry to hide a refused connection (retries = 0).
    let b_addr = b.addr;
    drop(b);
    pocket
        .log
        .wait_for(&[&format!("server {b_addr} of pool mail is DOWN")]);
    for i in 0..4 {
        let said = send_mail(smtp, &format!("after {i}"));
        assert!(said.contains("sent 250 delivered to A"), "{said}");
    }
    a.out.wait_for(&["mail A", "subject=after 3"]);
}

#[test]
fn redis_cli_sets_and_gets_through_pocket() {
    let [port] = free_ports();
    let redis = Redis::start(port, None);
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "redis", bind = "127.0.0.1:0", mode = "tcp", pool = "redis" }} }},
  pools = {{
    redis = {{ mode = "tcp", servers = {{ "{redis}" }},
               check = {{ send = "PING\r\n", expect = "+PONG", interval = "200ms" }} }},
  }},
}}
"#,
        redis = redis.addr
    );
    let pocket = Pocket::start(&policy, 2);
    let via = pocket.addr("redis");
    assert_eq!(
        redis_cli(via, &["SET", "greeting", "hello from pocket"]),
        "OK"
    );
    assert_eq!(redis_cli(via, &["GET", "greeting"]), "hello from pocket");
    // The server itself has it: the bytes went through, not around.
    assert_eq!(
        redis_cli(redis.addr, &["GET", "greeting"]),
        "hello from pocket"
    );
    // A pipeline of many commands on one connection (backpressure both
    // ways): every answer comes back, in order.
    let mut pipe = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &via.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run redis-cli");
    {
        use std::io::Write;
        let mut stdin = pipe.stdin.take().unwrap();
        for i in 0..2000 {
            writeln!(stdin, "INCR counter").unwrap();
            if i == 1999 {
                writeln!(stdin, "GET counter").unwrap();
            }
        }
    }
    let out = pipe.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().last(),
        Some("2000"),
        "{}",
        text.lines().count()
    );
}

#[test]
fn a_line_check_of_a_send_proxy_pool_starts_with_the_proxy_header() {
    use std::io::{BufRead, BufReader, Write};
    // A server behind a PROXY-speaking pool: it reads the header line
    // first, then greets, saying what it read.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(50) {
            let Ok(mut conn) = conn else { continue };
            let mut first = String::new();
            let _ = BufReader::new(&conn).read_line(&mut first);
            let _ = write!(conn, "220 saw {}\r\n", first.trim_end());
        }
    });
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "smtp", bind = "127.0.0.1:0", mode = "tcp", pool = "mail" }} }},
  pools = {{
    mail = {{ mode = "tcp", servers = {{ "{addr}" }}, send_proxy = "v1",
              check = {{ expect = "220 saw PROXY UNKNOWN", interval = "200ms", rise = 1, start = "down" }} }},
  }},
}}
"#
    );
    let pocket = Pocket::start(&policy, 1);
    let up = pocket
        .log
        .wait_for(&[&format!("server {addr} of pool mail is UP")]);
    assert!(up.contains("answered \"220 saw PROXY UNKNOWN\""), "{up}");
}

/// A line check whose `send` has no line end (`"PING"`, not
/// `"PING\r\n"`): a server waiting for the end of the command says
/// nothing, and the reason names the likely cause (newcomer16 #12). The
/// server is a bound socket never accepted from: the kernel completes
/// the connect and takes the bytes, and nothing answers.
#[test]
fn a_send_with_no_line_end_is_named_when_the_check_gets_no_answer() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "r", bind = "127.0.0.1:0", mode = "tcp", pool = "redis" }} }},
  pools = {{
    redis = {{ mode = "tcp", servers = {{ "{addr}" }},
               check = {{ send = "PING", expect = "+PONG", interval = "200ms", timeout = "300ms", fall = 1 }} }},
  }},
}}
"#
        ),
        1,
    );
    let down = pocket
        .log
        .wait_for(&[&format!("server {addr} of pool redis is DOWN")]);
    assert!(
        down.contains("no answer within 300ms (sent 4 bytes with no line end)"),
        "{down}"
    );
    drop(silent);
}
