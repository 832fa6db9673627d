//! "What if someone pulls the cable?" answered for real: server B runs in
//! its own Linux network namespace behind a veth pair, and the test takes
//! the host end of that link down in the middle of a transfer, then puts it
//! back. Needs root and `ip` (iproute2); anywhere else it fails saying
//! why (tests/run installs `ip`). Traffic only ever goes to 127.0.0.1 and
//! to the test's own namespace on 10.213.x.0/30, which exists only on this
//! machine.

mod common;
use common::*;

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use pocket::lab::{free_subnets, ip, veth_pair};

fn ip_ok(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// A namespace with server B in it, joined to the host by a veth pair.
/// Everything it made is undone on drop, also when the test panics.
struct Cable {
    ns: String,
    host_if: String,
    /// The test's /30, `10.213.x.0/30`, while it has a safety route.
    net: Option<String>,
    /// The address of B inside the namespace.
    server: SocketAddr,
    origin: Option<Child>,
}

impl Cable {
    /// Sets up the namespace; panics saying why when it cannot (the suite
    /// skips nothing: tests/run installs `ip` and says to run as root).
    fn lay() -> Cable {
        require_root("cable_pull");
        require_command("ip", "iproute2");
        let pid = std::process::id();
        let ns = format!("pkt{pid}");
        if let Err(e) = ip(&["netns", "add", &ns]) {
            panic!("cable_pull: cannot make a network namespace: {e}");
        }
        let host_if = format!("pkh{pid}");
        let ns_if = format!("pkn{pid}");
        let x = *free_subnets(pid).first().expect("a free 10.213.x.0/30");
        let mut cable = Cable {
            ns: ns.clone(),
            host_if: host_if.clone(),
            net: None,
            server: format!("10.213.{x}.2:9000").parse().unwrap(),
            origin: None,
        };
        // While the link is down its connected route is gone; without this
        // fallback, packets for the namespace would follow the default
        // route off the machine. With it they fail at once, here.
        let net = format!("10.213.{x}.0/30");
        ip_ok(&["route", "add", "unreachable", &net, "metric", "4000"]);
        cable.net = Some(net);
        if let Err(e) = veth_pair(&ns, &host_if, &ns_if, x) {
            // `cable` drops as this unwinds: the namespace goes.
            panic!("cable_pull: cannot make a veth pair: {e}");
        }
        ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);

        let child = Command::new("ip")
            .args(["netns", "exec", &ns, pocket_bin(), "origin", "--name", "B"])
            .args(["--bind", &format!("10.213.{x}.2"), "--port", "9000"])
            .env("POCKET_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start origin B in the namespace");
        cable.origin = Some(child);
        cable.wait_for_server();
        cable
    }

    /// Until a TCP connect to B from the host succeeds.
    fn wait_for_server(&mut self) {
        let start = Instant::now();
        loop {
            if TcpStream::connect_timeout(&self.server, Duration::from_millis(200)).is_ok() {
                eprintln!(
                    "origin B answers on {} after {:?}",
                    self.server,
                    start.elapsed()
                );
                return;
            }
            if let Some(status) = self.origin.as_mut().unwrap().try_wait().unwrap() {
                panic!("origin B in namespace {} exited: {status}", self.ns);
            }
            assert!(
                start.elapsed() < DEADLINE,
                "origin B never listened on {}",
                self.server
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn set_link(&self, state: &str) {
        ip_ok(&["link", "set", &self.host_if, state]);
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        if let Some(mut child) = self.origin.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting the namespace deletes its veth end, and so the pair;
        // the explicit delete covers a pair whose peer never moved in.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.ns]);
        if let Some(net) = self.net.take() {
            let _ = ip(&["route", "del", "unreachable", &net, "metric", "4000"]);
        }
    }
}

/// Waits for a log line with every one of `parts` among lines from index
/// `from` on; returns its index, the line and how long it took.
fn wait_line(log: &Log, from: usize, parts: &[&str], within: Duration) -> (usize, String) {
    let start = Instant::now();
    loop {
        let lines = log.lines();
        if let Some((i, l)) = lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| parts.iter().all(|p| l.contains(p)))
        {
            return (i, l.clone());
        }
        assert!(
            start.elapsed() < within,
            "no log line with {parts:?} within {within:?}; log:\n{}",
            lines.join("\n")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Seconds into the UTC day: now, and when a log line was written
/// (`2026-01-01T12:34:56.789012Z ...`), to time events from the log.
fn day_secs_now() -> f64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.as_secs_f64() % 86_400.0
}

fn day_secs_of(line: &str) -> Option<f64> {
    let clock = line.get(11..)?.split(['Z', ' ']).next()?;
    let mut parts = clock.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// How long after `since` (seconds into the day) `line` was logged.
fn logged_after(since: f64, line: &str) -> String {
    match day_secs_of(line) {
        Some(t) => format!("{:.0}ms", ((t - since + 86_400.0) % 86_400.0) * 1000.0),
        None => "?".to_string(),
    }
}

fn origin_of(r: &Resp) -> String {
    r.header("x-origin").unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_cable_mid_transfer_closes_the_client_takes_the_server_down_and_back_up() {
    let cable = Cable::lay();
    let b = cable.server;
    let a = origin("A");
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{
    servers = {{ "{b}", "{}" }},
    balance = "first",
    check = {{ tcp = true, interval = "200ms", timeout = "2s", fall = 2, rise = 2 }},
    timeouts = {{ idle = "1s", connect = "1s" }},
  }} }},
}}"#,
            a.addr
        ),
        1,
    );
    let addr = pocket.addr("web");
    assert_eq!(origin_of(&get(addr, "/").await), "B", "first picks B");

    // 1. A big download from B; the cable goes after a few MB.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/bytes/2000000000")
        .header("host", "t")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-origin"], "B");
    let mut body = resp.into_body();
    let mut got = 0u64;
    let mut pulled: Option<Instant> = None;
    let mut pulled_day = 0.0;
    let lines_before = pocket.log.lines().len();
    // Only tells "ended" from "hung": the idle timeout is 1 s.
    let deadline = Duration::from_secs(30);
    let ended = tokio::time::timeout(deadline + Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => got += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(e) => return Some(e.to_string()),
            }
            if pulled.is_none() && got >= 4_000_000 {
                cable.set_link("down");
                pulled = Some(Instant::now());
                pulled_day = day_secs_now();
            }
        }
        None
    })
    .await;
    let pulled = pulled.expect("the cable was pulled mid-transfer");
    let took = pulled.elapsed();
    eprintln!("client transfer ended {took:?} after the pull, {got} bytes in: {ended:?}");
    match ended {
        Ok(Some(_)) => {}
        Ok(None) => panic!("the body ended cleanly after a pulled cable ({got} bytes)"),
        Err(_) => panic!("the client hung for {took:?} after the pull"),
    }
    assert!(
        took < deadline,
        "idle timeout 1s, yet the client waited {took:?}"
    );
    assert!(got < 2_000_000_000, "the transfer was cut short");

    let (_, stall) = wait_line(
        &pocket.log,
        lines_before,
        &[&format!("server {b} sent nothing for 1s mid-response")],
        DEADLINE,
    );
    eprintln!(
        "stall logged {} after the pull: {stall}",
        logged_after(pulled_day, &stall)
    );
    let (down_at, down) = wait_line(
        &pocket.log,
        lines_before,
        &[&format!("server {b} of pool app is DOWN"), "checks failed"],
        DEADLINE,
    );
    eprintln!(
        "B marked DOWN by the check {} after the pull: {down}",
        logged_after(pulled_day, &down)
    );
    for _ in 0..6 {
        let r = get(addr, "/").await;
        assert_eq!((r.status, origin_of(&r)), (200, "A".to_string()));
    }

    // 2. The cable goes back in.
    let plugged = day_secs_now();
    cable.set_link("up");
    let (_, up) = wait_line(
        &pocket.log,
        down_at + 1,
        &[&format!("server {b} of pool app is UP"), "checks passed"],
        DEADLINE,
    );
    eprintln!(
        "B marked UP {} after the cable went back: {up}",
        logged_after(plugged, &up)
    );
    let r = get(addr, "/").await;
    assert_eq!((r.status, origin_of(&r)), (200, "B".to_string()));
    drop(pocket);
    drop(cable);
}
