//! Servers that move: pool servers written as DNS names, resolved by a real
//! DNS server (Debian's dnsmasq, started here on a free port of 127.0.0.1,
//! answering from a hosts file it reads again on SIGHUP), with origins on
//! other loopback addresses (127.0.0.2, 127.0.0.3, ... on one port), so one
//! name:port can lead to different servers. What a user notices: traffic
//! follows the records with no failed request, an address added takes
//! traffic, one removed finishes what it has, a DNS server that stops
//! answering changes nothing but a log line, SRV records give ports and
//! weights, a name that does not resolve is refused at load.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// dnsmasq is in /usr/sbin, which a user's PATH may leave out.
fn dnsmasq_bin() -> &'static str {
    if Command::new("dnsmasq").arg("--version").output().is_ok() {
        "dnsmasq"
    } else {
        require_command("/usr/sbin/dnsmasq", "dnsmasq-base");
        "/usr/sbin/dnsmasq"
    }
}

/// A real dnsmasq answering for `.test` names on 127.0.0.1:`port` only:
/// from its hosts file (read again on SIGHUP) and the records given on its
/// command line; NXDOMAIN for any other `.test` name; nothing forwarded.
struct Dns {
    child: Child,
    port: u16,
    hosts: PathBuf,
    log: Log,
    args: Vec<String>,
    _dir: Option<tempfile::TempDir>,
    stopped: bool,
}

impl Dns {
    fn start(hosts: &str, records: &[String]) -> Dns {
        let dir = tempfile::tempdir().unwrap();
        // dnsmasq run as root reads its files as nobody.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, hosts).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut last = String::new();
        for _ in 0..10 {
            let port = free_udp_port();
            let mut args = vec![
                "--keep-in-foreground".to_string(),
                "--conf-file=/dev/null".into(),
                "--no-resolv".into(),
                "--no-hosts".into(),
                format!("--addn-hosts={}", path.display()),
                "--local=/test/".into(),
                format!("--port={port}"),
                "--listen-address=127.0.0.1".into(),
                "--bind-interfaces".into(),
                "--pid-file=".into(),
                "--log-facility=-".into(),
                "--log-queries".into(),
            ];
            args.extend(records.iter().cloned());
            let mut dns = Dns::spawn(args, port, path.clone());
            let line = dns
                .log
                .wait_for_any(&[&["read ", "hosts"], &["<process ended>"]]);
            if !line.contains("<process ended>") {
                dns._dir = Some(dir);
                return dns;
            }
            last = dns.log.text();
            let _ = dns.child.wait();
        }
        panic!("dnsmasq did not start; its log:\n{last}");
    }

    fn spawn(args: Vec<String>, port: u16, hosts: PathBuf) -> Dns {
        let mut child = Command::new(dnsmasq_bin())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dnsmasq");
        let log = Log::default();
        log.follow(child.stderr.take().unwrap());
        Dns {
            child,
            port,
            hosts,
            log,
            args,
            _dir: None,
            stopped: false,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Writes the hosts file anew and has dnsmasq read it (SIGHUP).
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        let from = self.log.lines().len();
        self.signal(libc::SIGHUP);
        self.log.wait_for_after(from, &["read ", "hosts"]);
    }

    /// Stops (SIGSTOP) or resumes it: a DNS server that takes queries and
    /// never answers them.
    fn answering(&mut self, on: bool) {
        self.stopped = !on;
        self.signal(if on { libc::SIGCONT } else { libc::SIGSTOP });
    }

    /// Started again on the same port with other command-line records
    /// (SIGHUP does not read those again).
    fn restart_with(&mut self, records: &[String]) {
        self.kill();
        let mut args: Vec<String> = self
            .args
            .iter()
            .filter(|a| !a.starts_with("--srv-host") && !a.starts_with("--host-record"))
            .cloned()
            .collect();
        args.extend(records.iter().cloned());
        let dir = self._dir.take();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut next = Dns::spawn(args.clone(), self.port, self.hosts.clone());
            let line = next
                .log
                .wait_for_any(&[&["read ", "hosts"], &["<process ended>"]]);
            if !line.contains("<process ended>") {
                next._dir = dir;
                *self = next;
                return;
            }
            // The old one's port may not be free yet.
            let _ = next.child.wait();
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start again; log:\n{}",
                next.log.text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    fn kill(&mut self) {
        if self.stopped {
            self.signal(libc::SIGCONT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A UDP port of 127.0.0.1 free now (dnsmasq takes the TCP port too: if
/// that is taken, it does not start, and [`Dns::start`] tries another).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Origins named `names` on 127.0.0.2, 127.0.0.3, ... all on one port.
fn origins_on_one_port(names: &[&str]) -> (u16, Vec<OriginHandle>) {
    'again: for _ in 0..50 {
        let first = spawn_origin_at(names[0], "127.0.0.2:0".parse().unwrap()).unwrap();
        let port = first.addr.port();
        let mut all = vec![first];
        for (i, name) in names.iter().enumerate().skip(1) {
            let addr: SocketAddr = format!("127.0.0.{}:{port}", i + 2).parse().unwrap();
            match spawn_origin_at(name, addr) {
                Ok(o) => all.push(o),
                Err(_) => continue 'again,
            }
        }
        return (port, all);
    }
    panic!("no port free on 127.0.0.2 and the addresses after it");
}

/// Which origin answered (`hello from A ...`), or what went wrong.
fn who(r: &Resp) -> String {
    let text = r.text();
    match text.strip_prefix("hello from ") {
        Some(rest) if r.status == 200 => rest.split(' ').next().unwrap_or("").to_string(),
        _ => format!("status {} {text:?}", r.status),
    }
}

/// The admin API's `/api/status`.
async fn api_status(admin: SocketAddr) -> String {
    send(
        admin,
        request("GET", "/api/status", &[("host", "127.0.0.1")], ""),
    )
    .await
    .text()
}

fn admin_addr(p: &Pocket) -> SocketAddr {
    let line = p.log.wait_for(&["admin listening on "]);
    line.rsplit("listening on ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits until the API counts `n` requests answered by `addr` (a request
/// is counted as it ends, a moment after its client has the answer);
/// fails on more, or on a deadline.
async fn requests_reach(admin: SocketAddr, addr: &str, n: u64) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = api_status(admin).await;
        let got = requests_of(&status, addr).unwrap_or(0);
        assert!(got <= n, "{addr} counts {got} requests, not {n}: {status}");
        if got == n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} counts {got} requests, not {n}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `{"name":"ADDR",...,"requests":N` of the API's JSON.
fn requests_of(status: &str, addr: &str) -> Option<u64> {
    let at = status.find(&format!("{{\"name\":\"{addr}\""))?;
    let rest = &status[at..];
    let n = rest.split("\"requests\":").nth(1)?;
    n.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

const HOSTS_A: &str = "127.0.0.2 app.test\n";
const HOSTS_B: &str = "127.0.0.3 app.test\n";
const HOSTS_AB: &str = "127.0.0.2 app.test\n127.0.0.3 app.test\n";

fn policy(dns: &Dns, port: u16, pool: &str) -> String {
    format!(
        r#"return {{
  resolvers = {{ "{dns}" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  admin = {{ bind = "127.0.0.1:0" }},
  pools = {{
    app = {{ servers = {{ "app.test:{port}" }}, resolve = "1s"{pool} }},
  }},
}}
"#,
        dns = dns.addr()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_under_load_moves_traffic_with_no_failed_request() {
    let dns = Dns::start(HOSTS_A, &[]);
    let (port, _origins) = origins_on_one_port(&["A", "B"]);
    let pocket = Pocket::start(&policy(&dns, port, ""), 2);
    let web = pocket.addr("web");

    // A bounded load on one kept-alive connection, and on fresh ones.
    let load = tokio::spawn(async move {
        let mut seen: Vec<String> = Vec::new();
        let mut conn = H1::connect(web).await;
        let start = Instant::now();
        while seen.len() < 20_000 && start.elapsed() < Duration::from_secs(120) {
            let r = if seen.len().is_multiple_of(2) {
                match conn.send(request("GET", "/", &[], "")).await {
                    Ok(r) => r,
                    Err(e) => {
                        seen.push(format!("kept-alive connection failed: {e}"));
                        conn = H1::connect(web).await;
                        continue;
                    }
                }
            } else {
                get(web, "/").await
            };
            seen.push(who(&r));
            // Done once B has answered 50 in a row after A had answered.
            let tail = seen.iter().rev().take_while(|w| *w == "B").count();
            if tail >= 50 && seen.iter().any(|w| w == "A") {
                break;
            }
        }
        seen
    });
    // Some traffic first, then the record moves.
    pocket.log.wait_for(&["pocket ready"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    dns.set_hosts(HOSTS_B);
    let moved = pocket
        .log
        .wait_for(&["pool app: app.test:", " now 127.0.0.3:"]);
    assert!(
        moved.contains(&format!("removed 127.0.0.2:{port}")),
        "the log says what changed: {moved}"
    );
    let seen = load.await.unwrap();
    let failed: Vec<&String> = seen.iter().filter(|w| *w != "A" && *w != "B").collect();
    assert!(
        failed.is_empty(),
        "no request may fail: {failed:?} of {}",
        seen.len()
    );
    assert!(seen.iter().any(|w| w == "A"), "A answered before the move");
    let tail = seen.iter().rev().take_while(|w| *w == "B").count();
    assert!(
        tail >= 50,
        "B takes all the traffic after the move: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_address_takes_traffic_and_the_others_keep_their_counters() {
    let dns = Dns::start(HOSTS_A, &[]);
    let (port, _origins) = origins_on_one_port(&["A", "B"]);
    let pocket = Pocket::start(&policy(&dns, port, ""), 1);
    let web = pocket.addr("web");
    let admin = admin_addr(&pocket);
    for _ in 0..10 {
        assert_eq!(who(&get(web, "/").await), "A");
    }
    let a = format!("127.0.0.2:{port}");
    let before = requests_reach(admin, &a, 10).await;

    dns.set_hosts(HOSTS_AB);
    let line = pocket
        .log
        .wait_for(&[&format!("added 127.0.0.3:{port}"), "generation"]);
    assert!(
        line.contains(&format!(
            "app.test:{port} now 127.0.0.2:{port}, 127.0.0.3:{port}"
        )),
        "{line}"
    );
    let mut answered = Vec::new();
    for _ in 0..20 {
        answered.push(who(&get(web, "/").await));
    }
    assert!(
        answered.iter().all(|w| w == "A" || w == "B"),
        "{answered:?}"
    );
    assert!(
        answered.iter().filter(|w| *w == "B").count() >= 5,
        "the new address takes its share: {answered:?}"
    );
    // The server that stayed is the same server: its counters go on.
    let a_now = answered.iter().filter(|w| *w == "A").count() as u64;
    requests_reach(admin, &a, before + a_now).await;
    let status = api_status(admin).await;
    let b = &status[status
        .find(&format!("\"addr\":\"127.0.0.3:{port}\""))
        .expect("B in the API")..];
    assert!(
        b.split('}')
            .next()
            .unwrap()
            .contains(&format!("\"from\":\"app.test:{port}\"")),
        "the API says which name gave a server: {status}"
    );
    let (_, out, _) = pocket_cmd(&["status", pocket.policy.to_str().unwrap()]);
    assert!(
        out.contains(&format!(
            "server app 127.0.0.3:{port}: up, weight 1, from app.test:{port}"
        )),
        "{out}"
    );
}

/// A drain set on an address is for that server: the address leaves the
/// name's answer and comes back, and it is ready and takes traffic (not a
/// pool left with no server up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_leaves_and_comes_back_is_ready_again() {
    let dns = Dns::start(HOSTS_AB, &[]);
    let (port, _origins) = origins_on_one_port(&["A", "B"]);
    let pocket = Pocket::start(&policy(&dns, port, ""), 1);
    let web = pocket.addr("web");
    let admin = admin_addr(&pocket);
    let b = format!("127.0.0.3:{port}");
    let r = send(
        admin,
        request(
            "POST",
            &format!("/api/pools/app/servers/{b}/state"),
            &[("host", "127.0.0.1"), ("content-type", "application/json")],
            r#"{"state":"drain"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..6 {
        assert_eq!(who(&get(web, "/").await), "A");
    }

    dns.set_hosts(HOSTS_A);
    pocket
        .log
        .wait_for(&[&format!("removed {b}"), "generation"]);
    dns.set_hosts(HOSTS_AB);
    pocket.log.wait_for(&[&format!("added {b}"), "generation"]);
    let status = api_status(admin).await;
    let entry = &status[status
        .find(&format!("\"addr\":\"{b}\""))
        .expect("B in the API")..];
    assert!(
        entry
            .split('}')
            .next()
            .unwrap()
            .contains("\"admin\":\"ready\""),
        "{status}"
    );
    let mut answered = Vec::new();
    for _ in 0..20 {
        answered.push(who(&get(web, "/").await));
    }
    assert!(
        answered.iter().all(|w| w == "A" || w == "B"),
        "{answered:?}"
    );
    assert!(
        answered.iter().filter(|w| *w == "B").count() >= 5,
        "B takes its share again: {answered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_address_finishes_the_request_it_has() {
    let dns = Dns::start(HOSTS_A, &[]);
    let (port, _origins) = origins_on_one_port(&["A", "B"]);
    let pocket = Pocket::start(&policy(&dns, port, ""), 2);
    let web = pocket.addr("web");
    let slow = tokio::spawn(async move { get(web, "/delay/15000").await });
    // In flight on A (the only server) before the record moves.
    let admin = admin_addr(&pocket);
    let deadline = Instant::now() + DEADLINE;
    while !api_status(admin).await.contains("\"in_flight\":1") {
        assert!(Instant::now() < deadline, "the slow request never got to A");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dns.set_hosts(HOSTS_B);
    pocket
        .log
        .wait_for(&[&format!("removed 127.0.0.2:{port}, which drains")]);
    assert!(!slow.is_finished(), "the slow request is still in flight");
    assert_eq!(who(&get(web, "/").await), "B", "new requests go to B");
    let r = slow.await.unwrap();
    assert_eq!(who(&r), "A", "the request in flight on A finishes there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_server_that_stops_answering_keeps_the_last_addresses() {
    let mut dns = Dns::start(HOSTS_A, &[]);
    let (port, _origins) = origins_on_one_port(&["A", "B"]);
    let pocket = Pocket::start(&policy(&dns, port, ""), 1);
    let web = pocket.addr("web");
    dns.answering(false);
    let line = pocket.log.wait_for(&["does not resolve"]);
    assert!(
        line.contains(&format!("app.test:{port}"))
            && line.contains(&format!("keeping its last addresses 127.0.0.2:{port}")),
        "{line}"
    );
    for _ in 0..10 {
        assert_eq!(who(&get(web, "/").await), "A");
    }
    let admin = admin_addr(&pocket);
    let failing = format!("pocket_dns_failing{{pool=\"app\",name=\"app.test:{port}\"}}");
    let metrics = metrics_text(admin).await;
    assert!(metrics.contains(&format!("{failing} 1\n")), "{metrics}");
    let status = api_status(admin).await;
    assert!(
        status.contains(&format!(
            "\"names\":[{{\"name\":\"app.test:{port}\",\"failing\":true}}]"
        )),
        "{status}"
    );
    // A reload during the outage keeps the last answer too, with a warning.
    let from = pocket.log.lines().len();
    let (code, out, err) = pocket_cmd(&["reload", pocket.policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    pocket.log.wait_for_after(
        from,
        &["does not resolve now", "keeping its last addresses"],
    );
    // Two more rounds (each waits out the resolver's timeouts) say nothing.
    let rounds_from = pocket.log.lines().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(who(&get(web, "/").await), "A");
    dns.answering(true);
    pocket.log.wait_for_after(from, &["resolves again"]);
    let repeats = pocket.log.lines()[rounds_from..]
        .iter()
        .filter(|l| l.contains("pool app") && l.contains("does not resolve ("))
        .count();
    assert_eq!(
        repeats,
        0,
        "said once, not each round:\n{}",
        pocket.log.text()
    );
    let metrics = metrics_text(admin).await;
    assert!(metrics.contains(&format!("{failing} 0\n")), "{metrics}");
    let failed = format!(
        "pocket_dns_lookups_total{{pool=\"app\",name=\"app.test:{port}\",result=\"failed\"}} "
    );
    let count: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&failed))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{failed} in {metrics}"));
    assert!(count >= 2, "each failed round counts: {metrics}");
}

/// The admin listener's `/metrics`.
async fn metrics_text(admin: SocketAddr) -> String {
    send(
        admin,
        request("GET", "/metrics", &[("host", "127.0.0.1")], ""),
    )
    .await
    .text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_ports_weights_and_backups() {
    let a = spawn_origin_at("A", "127.0.0.2:0".parse().unwrap()).unwrap();
    let b = spawn_origin_at("B", "127.0.0.3:0".parse().unwrap()).unwrap();
    let c = spawn_origin_at("C", "127.0.0.4:0".parse().unwrap()).unwrap();
    let records = |b_weight: u16| {
        vec![
            "--host-record=a.test,127.0.0.2".to_string(),
            "--host-record=b.test,127.0.0.3".into(),
            "--host-record=c.test,127.0.0.4".into(),
            // A target with no address: left out.
            "--srv-host=_http._tcp.app.test,gone.test,9,10,5".into(),
            format!(
                "--srv-host=_http._tcp.app.test,a.test,{},10,3",
                a.addr.port()
            ),
            format!(
                "--srv-host=_http._tcp.app.test,b.test,{},10,{b_weight}",
                b.addr.port()
            ),
            format!(
                "--srv-host=_http._tcp.app.test,c.test,{},20,1",
                c.addr.port()
            ),
        ]
    };
    let mut dns = Dns::start("", &records(1));
    let policy = format!(
        r#"return {{
  resolvers = {{ "{dns}" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  admin = {{ bind = "127.0.0.1:0" }},
  pools = {{
    app = {{ servers = {{ {{ srv = "_http._tcp.app.test" }} }}, resolve = "1s" }},
  }},
}}
"#,
        dns = dns.addr()
    );
    let pocket = Pocket::start(&policy, 1);
    let web = pocket.addr("web");
    let admin = admin_addr(&pocket);
    let status = api_status(admin).await;
    for (addr, weight, backup) in [(a.addr, 3, false), (b.addr, 1, false), (c.addr, 1, true)] {
        let at = status
            .find(&format!("\"addr\":\"{addr}\""))
            .expect("each target in the API");
        let server = &status[at..at + status[at..].find("\"from\"").unwrap()];
        assert!(
            server.contains(&format!("\"backup\":{backup},\"weight\":{weight},")),
            "{addr} weight {weight} backup {backup}: {status}"
        );
    }
    assert_eq!(
        status.matches("\"from\":\"_http._tcp.app.test\"").count(),
        3,
        "{status}"
    );
    let mut count = std::collections::HashMap::new();
    for _ in 0..40 {
        *count.entry(who(&get(web, "/").await)).or_insert(0) += 1;
    }
    assert_eq!(count.get("C"), None, "the backup waits: {count:?}");
    let (na, nb) = (
        count.get("A").copied().unwrap_or(0),
        count.get("B").copied().unwrap_or(0),
    );
    assert_eq!(na + nb, 40, "{count:?}");
    assert!(na >= 25 && nb >= 5, "weights 3:1: {count:?}");

    // A weight changed in DNS changes the server's weight.
    dns.restart_with(&records(3));
    let line = pocket
        .log
        .wait_for(&[&format!("{} weight 1 -> 3", b.addr), "generation"]);
    assert!(line.contains("pool app: _http._tcp.app.test now"), "{line}");
}

#[test]
fn a_name_that_does_not_resolve_is_refused_at_load() {
    let dns = Dns::start(HOSTS_A, &[]);
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(
        dir.path(),
        "policy.lua",
        &format!(
            r#"return {{
  resolvers = {{ "{dns}" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{
      servers = {{ "app.test:80", "nope.test:80" }},
      resolve = "10s",
    }},
    svc = {{ servers = {{ {{ srv = "_http._tcp.nope.test" }} }} }},
  }},
}}
"#,
            dns = dns.addr()
        ),
    );
    let (code, _, err) = pocket_cmd(&["check", policy.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "policy.lua:6: pool \"app\": server \"nope.test:80\" does not resolve: no such name (NXDOMAIN) (resolvers: {})",
            dns.addr()
        )),
        "{err}"
    );
    assert!(
        err.contains(
            "policy.lua:9: pool \"svc\": SRV name \"_http._tcp.nope.test\" does not resolve"
        ),
        "{err}"
    );
}

/// A bad `resolvers` resolves no name at all: not with the system's DNS
/// servers (the policy meant others), nor with the good half of the list.
/// Each list here also names the test's dnsmasq, on loopback, and the pool a
/// name dnsmasq does not know: a name asked anyway would show as a second
/// "does not resolve" error, and no query ever leaves loopback.
#[test]
fn a_bad_resolvers_list_resolves_no_name() {
    let dns = Dns::start(HOSTS_A, &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dns.addr();
    for (list, expected) in [
        (
            format!(r#""1.2.3", "{d}""#),
            "policy.lua:2: resolvers: bad DNS server address \"1.2.3\"",
        ),
        (
            format!(r#""127.0.0.1:70000", "{d}""#),
            "policy.lua:2: resolvers: bad DNS server address \"127.0.0.1:70000\"",
        ),
        (
            format!(r#""127.0.0.1:0", "{d}""#),
            "policy.lua:2: resolvers: bad DNS server address \"127.0.0.1:0\"",
        ),
        (
            format!(r#""dns.internal:53", "{d}""#),
            "policy.lua:2: resolvers: bad DNS server address \"dns.internal:53\"",
        ),
        (format!(r#""{d}", "{d}""#), "policy.lua:2: resolvers: "),
    ] {
        let policy = write_policy(
            dir.path(),
            "policy.lua",
            &format!(
                r#"return {{
  resolvers = {{ {list} }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{ servers = {{ "nope.test:80" }}, resolve = "10s" }},
    svc = {{ servers = {{ {{ srv = "_http._tcp.nope.test" }} }} }},
  }},
}}
"#
            ),
        );
        let (code, _, err) = pocket_cmd(&["check", policy.to_str().unwrap()]);
        assert_eq!(code, 1, "{list}\n{err}");
        assert!(err.contains(expected), "{list}: {expected}\n{err}");
        for unwanted in [
            "does not resolve",
            "NXDOMAIN",
            "has no servers",
            "no connections",
        ] {
            assert!(!err.contains(unwanted), "{list}: {unwanted}\n{err}");
        }
    }
}

/// A DNS server where nothing listens: the load says how long it waited
/// and how often it asked, as it did (two tries of 2 s, not three).
#[test]
fn a_resolver_that_does_not_answer_is_said_as_it_was_asked() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let policy = write_policy(
        dir.path(),
        "policy.lua",
        &format!(
            r#"return {{
  resolvers = {{ "127.0.0.1:{port}" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "app.test:80" }} }} }},
}}
"#
        ),
    );
    let (code, _, err) = pocket_cmd(&["check", policy.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "policy.lua:4: pool \"app\": server \"app.test:80\" does not resolve: no answer within 4s (2 tries of 2s) (resolvers: 127.0.0.1:{port})"
        )),
        "{err}"
    );
}

#[test]
fn bad_dns_settings_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(
        dir.path(),
        "policy.lua",
        r#"return {
  resolvers = { "dns.internal:53" },
  listeners = { { name = "web", bind = "127.0.0.1:0", pool = "app" } },
  pools = {
    app = { servers = { "127.0.0.1:9001" }, resolve = "100ms" },
    svc = { servers = { { srv = "_http._tcp.svc.test", weight = 2 } } },
  },
}
"#,
    );
    let (code, _, err) = pocket_cmd(&["check", policy.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    for expected in [
        "policy.lua:2: resolvers: bad DNS server address \"dns.internal:53\"",
        "policy.lua:5: pool \"app\": resolve must be at least 1s",
        "policy.lua:6: pool \"svc\" server _http._tcp.svc.test: the SRV records give the weights: leave weight out",
    ] {
        assert!(err.contains(expected), "{expected}\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_address_is_checked_before_it_is_trusted() {
    let dns = Dns::start(HOSTS_A, &[]);
    let (port, mut origins) = origins_on_one_port(&["A", "C"]);
    // Nothing answers on 127.0.0.3 yet: DNS has it before it is ready.
    let c_addr: SocketAddr = format!("127.0.0.3:{port}").parse().unwrap();
    drop(origins.remove(1));
    let pocket = Pocket::start(
        &policy(
            &dns,
            port,
            r#", check = { http = "GET /health", interval = "200ms", rise = 2, fall = 1 }"#,
        ),
        2,
    );
    let web = pocket.addr("web");
    dns.set_hosts(HOSTS_AB);
    pocket.log.wait_for(&[&format!("added {c_addr}")]);
    pocket
        .log
        .wait_for(&[&format!("server {c_addr} of pool app is DOWN")]);
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(who(&get(web, "/").await));
    }
    assert!(
        seen.iter().all(|w| w == "A"),
        "no request fails on it: {seen:?}"
    );
    // It comes up: its check says so, and it takes traffic.
    let _c = spawn_origin_at("C", c_addr).unwrap();
    pocket
        .log
        .wait_for(&[&format!("server {c_addr} of pool app is UP")]);
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(who(&get(web, "/").await));
    }
    assert!(
        seen.iter().all(|w| w == "A" || w == "C") && seen.iter().any(|w| w == "C"),
        "{seen:?}"
    );
}

#[test]
fn pocket_check_lists_the_servers_names_give() {
    let dns = Dns::start(HOSTS_AB, &[]);
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(
        dir.path(),
        "policy.lua",
        &format!(
            r#"return {{
  resolvers = "{dns}",
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{ servers = {{ "127.0.0.2:80", {{ addr = "app.test:80", weight = 2 }} }}, resolve = "10s" }},
  }},
}}
"#,
            dns = dns.addr()
        ),
    );
    let (code, out, err) = pocket_cmd(&["check", policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    // 127.0.0.2:80 is written as an address too: one server, the written one.
    for line in [
        "    resolve: every 10s\n",
        "    127.0.0.2:80 weight 1\n",
        "    127.0.0.3:80 weight 2 (from app.test:80)\n",
        "  app (round_robin, 2 servers, retries 3)\n",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
}

/// The first line a TCP echo origin sends through Pocket (`origin A`).
fn banner_of(stream: &mut std::net::TcpStream) -> String {
    use std::io::BufRead;
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_string()
}

#[test]
fn a_tcp_pool_follows_its_name_and_an_open_connection_stays() {
    use std::io::{Read, Write};
    let dns = Dns::start(HOSTS_A, &[]);
    // Echo origins A and B on one port of 127.0.0.2 and 127.0.0.3.
    let (a, b) = loop {
        let a = pocket::origin::echo::spawn_echo("A", "127.0.0.2:0".parse().unwrap()).unwrap();
        let at: SocketAddr = format!("127.0.0.3:{}", a.addr.port()).parse().unwrap();
        if let Ok(b) = pocket::origin::echo::spawn_echo("B", at) {
            break (a, b);
        }
    };
    let port = a.addr.port();
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  resolvers = {{ "{dns}" }},
  listeners = {{ {{ name = "redis", bind = "127.0.0.1:0", pool = "app", mode = "tcp" }} }},
  pools = {{
    app = {{ mode = "tcp", servers = {{ "app.test:{port}" }}, resolve = "1s" }},
  }},
}}
"#,
            dns = dns.addr()
        ),
        1,
    );
    let listener = pocket.addr("redis");
    let mut open = std::net::TcpStream::connect(listener).unwrap();
    assert_eq!(banner_of(&mut open), "origin A");
    dns.set_hosts(HOSTS_B);
    pocket
        .log
        .wait_for(&[&format!("removed 127.0.0.2:{port}, which drains")]);
    let mut new = std::net::TcpStream::connect(listener).unwrap();
    assert_eq!(banner_of(&mut new), "origin B", "new connections go to B");
    // The connection open on A goes on: A echoes what it is sent.
    open.write_all(b"still there\n").unwrap();
    let mut echoed = [0u8; 12];
    open.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"still there\n");
    drop((a, b));
}

#[test]
fn a_reload_says_what_it_changed_of_the_dns_settings() {
    let dns = Dns::start(HOSTS_A, &[]);
    let other = Dns::start(HOSTS_B, &[]);
    let (port, _origins) = origins_on_one_port(&["A", "B"]);
    let pocket = Pocket::start(&policy(&dns, port, ""), 1);
    let text = std::fs::read_to_string(&pocket.policy)
        .unwrap()
        .replace("resolve = \"1s\"", "resolve = \"2s\"")
        .replace(&dns.addr(), &other.addr());
    std::fs::write(&pocket.policy, text).unwrap();
    let (code, out, err) = pocket_cmd(&["reload", pocket.policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let line = pocket.log.wait_for(&["generation 2 is live"]);
    for part in [
        &format!("pool app servers +127.0.0.3:{port} -127.0.0.2:{port}"),
        "pool app resolve 1s -> 2s",
        &format!("resolvers {} -> {}", dns.addr(), other.addr()),
    ] {
        assert!(line.contains(part), "{part:?} in {line}");
    }
}

#[test]
fn an_address_a_name_gives_that_another_pool_checks_differently_is_a_warning() {
    let dns = Dns::start(HOSTS_AB, &[]);
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(
        dir.path(),
        "policy.lua",
        &format!(
            r#"return {{
  resolvers = {{ "{dns}" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{ servers = {{ "app.test:80" }}, resolve = "10s", check = {{ http = "GET /health" }} }},
    fixed = {{ servers = {{ "127.0.0.3:80" }}, check = {{ tcp = true }} }},
    h2 = {{ servers = {{ "127.0.0.2:80" }}, protocol = "h2" }},
  }},
}}
"#,
            dns = dns.addr()
        ),
    );
    // What DNS says today does not refuse the policy: the first pool by
    // name checks the address, and the warning says so.
    let (code, out, err) = pocket_cmd(&["check", policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let all = format!("{out}{err}");
    assert!(
        all.contains("policy.lua:6: pool \"fixed\": server 127.0.0.3:80 is also in pool \"app\" (a DNS name gives it to one of them), which checks it differently"),
        "{all}"
    );
    assert!(
        all.contains("pool \"h2\": server 127.0.0.2:80 is also in pool \"app\" (a DNS name gives it to one of them), which reaches it differently"),
        "{all}"
    );
}
