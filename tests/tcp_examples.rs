//! The TCP-mode examples a user copies (examples/tcp/*.lua), each run as
//! shipped with the real servers it is written for: two SMTP servers
//! (Python's `aiosmtpd`) and mail sent with `smtplib`; Debian's
//! `redis-server` and `redis-cli`; two TLS origins holding their own
//! certificates and `openssl s_client -servername`.
//!
//! How a file is run: its text is read, and only its addresses change.
//! Each `"127.0.0.1:PORT"` literal the example binds or connects to is
//! replaced by the test's own address (a listener's by `127.0.0.1:0`, a
//! server's by the port the real server took), and each must appear in
//! the file exactly once, so an example whose addresses move fails here
//! rather than running something else. The rest of the file (pools,
//! balance, timeouts, checks, `on_connect`) is what a user gets.

mod common;
use common::tcp_servers::*;
use common::*;

use std::net::SocketAddr;
use std::path::Path;

/// examples/tcp/NAME with each `"from"` address replaced by `"to"`,
/// written to a fresh folder under the same name: (folder, path).
fn example(name: &str, addresses: &[(&str, String)]) -> (tempfile::TempDir, std::path::PathBuf) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/tcp")
        .join(name);
    let mut text = std::fs::read_to_string(&shipped).unwrap();
    for (from, to) in addresses {
        let quoted = format!("\"{from}\"");
        assert_eq!(
            text.matches(&quoted).count(),
            1,
            "examples/tcp/{name} should name {quoted} once"
        );
        text = text.replace(&quoted, &format!("\"{to}\""));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), name, &text);
    (dir, path)
}

/// A mail's subject arrives at server `name` (its own log says so).
fn arrives(server: &Smtp, name: &str, subject: &str) {
    server.out.wait_for(&[
        &format!("mail {name} from=alice@client.test to=bob@example.test"),
        &format!("subject={subject}"),
    ]);
}

#[test]
fn the_mail_example_delivers_through_pocket_and_a_stopped_server_goes_down() {
    let [p1, p2] = free_ports::<2>();
    let mail1 = Smtp::start("mail1", p1);
    let mail2 = Smtp::start("mail2", p2);
    let (dir, path) = example(
        "mail.lua",
        &[
            ("127.0.0.1:2525", "127.0.0.1:0".into()),
            ("127.0.0.1:2601", mail1.addr.to_string()),
            ("127.0.0.1:2602", mail2.addr.to_string()),
        ],
    );
    let pocket = Pocket::start_file(dir, path, 2);
    let smtp = pocket.addr("smtp");

    // Each mail is answered with the banner of one of the two servers and
    // lands there; one after another, both servers get mail (least_conn
    // with no connection open takes them in turns).
    let mut took = Vec::new();
    for i in 0..4 {
        let subject = format!("first {i}");
        let said = send_mail(smtp, &subject);
        assert!(said.contains("banner 220 mail"), "{said}");
        let to = delivered_to(&said);
        match to.as_str() {
            "mail1" => arrives(&mail1, "mail1", &subject),
            "mail2" => arrives(&mail2, "mail2", &subject),
            other => panic!("delivered to {other}?"),
        }
        took.push(to);
    }
    took.sort();
    took.dedup();
    assert_eq!(took, ["mail1", "mail2"]);

    // mail2 stops: its banner check takes it down (3 checks, 2 s apart),
    // and the mail goes on arriving, at mail1.
    drop(mail2);
    let down = pocket
        .log
        .wait_for(&[&format!("127.0.0.1:{p2} of pool mail is DOWN")]);
    assert!(down.contains("3 checks failed: connect:"), "{down}");
    for i in 0..3 {
        let subject = format!("while down {i}");
        let said = send_mail(smtp, &subject);
        assert_eq!(delivered_to(&said), "mail1", "{said}");
        arrives(&mail1, "mail1", &subject);
    }

    // Started again on its port, 2 passed checks bring it back.
    let _mail2 = Smtp::start("mail2", p2);
    let up = pocket
        .log
        .wait_for(&[&format!("127.0.0.1:{p2} of pool mail is UP")]);
    assert!(
        up.contains("2 checks passed: answered \"220 mail2 ESMTP pocket-test\""),
        "{up}"
    );
    assert!(
        !pocket
            .log
            .text()
            .contains(&format!("127.0.0.1:{p1} of pool mail is DOWN")),
        "{}",
        pocket.log.text()
    );
}

#[test]
fn the_redis_example_sets_and_gets_through_pocket() {
    let redis = Redis::start(free_port(), None);
    let (dir, path) = example(
        "redis.lua",
        &[
            ("127.0.0.1:6380", "127.0.0.1:0".into()),
            ("127.0.0.1:6379", redis.addr.to_string()),
        ],
    );
    let pocket = Pocket::start_file(dir, path, 2);
    let via = pocket.addr("redis");
    assert_eq!(redis_cli(via, &["SET", "greeting", "hello"]), "OK");
    assert_eq!(redis_cli(via, &["GET", "greeting"]), "hello");
    // The server itself has it: the bytes went through Pocket to it.
    assert_eq!(redis_cli(redis.addr, &["GET", "greeting"]), "hello");
    // Pub/sub on a connection that waits in silence: the message sent
    // through another connection arrives.
    let mut sub = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &via.port().to_string()])
        .args(["SUBSCRIBE", "news"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run redis-cli");
    let out = Log::default();
    out.follow(sub.stdout.take().unwrap());
    out.wait_for(&["news"]);
    let start = std::time::Instant::now();
    // PUBLISH answers how many subscribers got it: 0 until the
    // subscription above is registered at the server.
    while redis_cli(via, &["PUBLISH", "news", "it works"]) != "1" {
        assert!(start.elapsed() < DEADLINE, "the subscriber never counted");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    out.wait_for(&["it works"]);
    let _ = sub.kill();
    let _ = sub.wait();
}

/// The example's note on AUTH, both halves: a Redis with a password fails
/// the shipped PING check with the `-NOAUTH` answer quoted, and the check
/// the note gives (a user that may run no command, logging in) passes it.
#[test]
fn the_redis_example_says_noauth_on_a_locked_server_and_its_note_fixes_it() {
    let redis = Redis::start(free_port(), Some("s3cret"));
    let (dir, path) = example(
        "redis.lua",
        &[
            ("127.0.0.1:6380", "127.0.0.1:0".into()),
            ("127.0.0.1:6379", redis.addr.to_string()),
        ],
    );
    let shipped = std::fs::read_to_string(&path).unwrap();
    let pocket = Pocket::start_file(dir, path.clone(), 1);
    let via = pocket.addr("redis");
    let down = pocket
        .log
        .wait_for(&[&format!("server {} of pool redis is DOWN", redis.addr)]);
    assert!(
        down.contains(
            "3 checks failed: expected \"+PONG\", got \"-NOAUTH Authentication required.\""
        ),
        "{down}"
    );

    // The note's two lines, taken from the file's comments as written:
    // the ACL command (run here with the password) and the check.
    let note = |starts: &str| -> String {
        shipped
            .lines()
            .map(|l| l.trim_start_matches("--").trim())
            .find(|l| l.starts_with(starts))
            .unwrap_or_else(|| panic!("no {starts:?} line in the note"))
            .to_string()
    };
    let acl = note("redis-cli ACL SETUSER");
    let mut args: Vec<String> = vec!["-a".into(), "s3cret".into(), "--no-auth-warning".into()];
    args.extend(
        acl.trim_start_matches("redis-cli ")
            .split_whitespace()
            .map(|w| w.trim_matches('\'').to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(redis_cli(redis.addr, &args), "OK");
    let check = note("check = { send = \"AUTH");
    let shipped_check = shipped
        .lines()
        .find(|l| l.trim_start().starts_with("check = { send = \"PING"))
        .expect("the shipped check");
    let indent = &shipped_check[..shipped_check.len() - shipped_check.trim_start().len()];
    let fixed = shipped.replace(shipped_check, &format!("{indent}{check}"));
    assert_ne!(fixed, shipped);
    let lines = pocket.log.lines().len();
    std::fs::write(&path, fixed).unwrap();
    pocket.log.wait_for_after(lines, &["generation 2 is live"]);
    let up = pocket.log.wait_for_after(
        lines,
        &[&format!("server {} of pool redis is UP", redis.addr)],
    );
    assert!(up.contains("answered \"+OK\""), "{up}");
    // Clients log in through Pocket as they would without it.
    let login = ["-a", "s3cret", "--no-auth-warning"];
    let set: Vec<&str> = login.iter().copied().chain(["SET", "k", "v"]).collect();
    assert_eq!(redis_cli(via, &set), "OK");
    let get: Vec<&str> = login.iter().copied().chain(["GET", "k"]).collect();
    assert_eq!(redis_cli(via, &get), "v");
}

#[test]
fn the_sni_example_passes_each_name_to_its_origin_and_rejects_the_rest() {
    let certs = tempfile::tempdir().unwrap();
    let a = TlsOrigin::start(certs.path(), "A", "a.example");
    let b = TlsOrigin::start(certs.path(), "B", "b.example");
    let (dir, path) = example(
        "sni-passthrough.lua",
        &[
            ("127.0.0.1:8443", "127.0.0.1:0".into()),
            ("127.0.0.1:9443", format!("127.0.0.1:{}", a.port)),
            ("127.0.0.1:9444", format!("127.0.0.1:{}", b.port)),
        ],
    );
    let pocket = Pocket::start_file(dir, path, 2);
    let addr: SocketAddr = pocket.addr("tls");
    for (name, origin) in [("a.example", "A"), ("b.example", "B"), ("B.Example", "B")] {
        // s_client's exit status is left aside: it reports how the origin
        // ended the session, not what Pocket did.
        let (_, text) = s_client(addr, Some(name));
        let lower = name.to_ascii_lowercase();
        assert!(
            text.lines()
                .any(|l| l.starts_with("subject=") && l.contains(&lower)),
            "{name}: origin {origin}'s own certificate comes back:\n{text}"
        );
        assert!(
            text.contains(&format!("origin {origin} sni={name} alpn=h2")),
            "{name} reaches origin {origin} with its ClientHello whole:\n{text}"
        );
    }
    // A name no pool serves, and no name at all: closed before any
    // certificate, and the log says why.
    for (name, why) in [
        (Some("c.example"), "unknown name c.example"),
        (None, "unknown name (none)"),
    ] {
        let (ok, text) = s_client(addr, name);
        assert!(!ok, "{name:?}: the handshake must fail:\n{text}");
        assert!(text.contains("no peer certificate available"), "{text}");
        assert!(!text.contains("origin "), "{text}");
        pocket
            .log
            .wait_for(&[&format!("connection rejected: {why}")]);
    }
}
