//! `/metrics` seen from outside: a real Pocket with real origins, scraped
//! over its admin listener; `promtool check metrics` on what it serves;
//! and a real Prometheus scraping it that sees a killed server go down.

mod common;
use common::*;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn policy(a: SocketAddr, b: SocketAddr) -> String {
    format!(
        r#"return {{
  admin = {{ bind = "127.0.0.1:0" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{a}", "{b}" }},
    check = {{ http = "GET /health", expect = 200, interval = "200ms", timeout = "2s", rise = 1, fall = 1 }} }} }},
  on_request = function(req) return nil end,
}}"#
    )
}

/// The admin listener's address, as its log line says.
fn admin_addr(pocket: &Pocket) -> SocketAddr {
    let line = pocket.log.wait_for(&["admin listening on "]);
    let text = line.rsplit("admin listening on ").next().unwrap().trim();
    text.parse()
        .unwrap_or_else(|_| panic!("bad address in {line:?}"))
}

/// `GET /metrics`, with the admin address as the Host (without a token
/// the admin listener answers only Hosts that are IP addresses or
/// localhost), as Prometheus sends it.
async fn scrape(admin: SocketAddr) -> String {
    let host = admin.to_string();
    let r = send(admin, request("GET", "/metrics", &[("host", &host)], "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// The value of the sample whose line starts with `series` (name and
/// labels exactly as written), if there is one.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `promtool check metrics` on `text`: what it says (empty when clean).
fn promtool(text: &str) -> (bool, String) {
    use std::io::Write;
    require_command("promtool", "prometheus");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Scrapes until every `(series, at_least)` is reached: a request is
/// counted when its record closes, just after the response's last byte,
/// so a scrape right after the responses may come first.
async fn scrape_counted(admin: SocketAddr, wanted: &[(&str, f64)]) -> String {
    until("the requests counted", async || {
        let t = scrape(admin).await;
        wanted
            .iter()
            .all(|(series, at_least)| value(&t, series) >= Some(*at_least))
            .then_some(t)
    })
    .await
}

async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn metrics_move_with_traffic_and_server_state_and_promtool_finds_nothing() {
    let a = origin("A");
    let b = origin("B");
    let b_addr = b.addr;
    let pocket = Pocket::start(&policy(a.addr, b.addr), 2);
    let web = pocket.addr("web");
    let admin = admin_addr(&pocket);

    for _ in 0..10 {
        assert_eq!(get(web, "/").await.status, 200);
    }
    // A request is counted when its record closes, just after the
    // response's last byte: a scrape may come first, so wait for all ten.
    let text = until("the 10 requests counted", async || {
        let t = scrape(admin).await;
        let counted = value(&t, r#"pocket_requests_total{listener="web",class="2xx"}"#);
        let by_servers: f64 = [a.addr, b_addr]
            .iter()
            .filter_map(|s| {
                value(
                    &t,
                    &format!(
                        r#"pocket_server_requests_total{{pool="app",server="{s}",class="2xx"}}"#
                    ),
                )
            })
            .sum();
        (counted >= Some(10.0) && Some(by_servers) == counted).then_some(t)
    })
    .await;
    let (clean, said) = promtool(&text);
    assert!(clean && said.trim().is_empty(), "promtool: {said}\n{text}");
    for family in [
        "pocket_requests_total",
        "pocket_response_bytes_total",
        "pocket_client_connections",
        "pocket_server_requests_total",
        "pocket_server_state",
        "pocket_server_checks_total",
        "pocket_server_request_duration_seconds",
        "pocket_hook_duration_seconds",
        "pocket_reloads_total",
        "pocket_policy_generation",
        "pocket_lua_memory_bytes",
        "pocket_upstream_connections_idle",
        "pocket_access_log_dropped_lines_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no {family} in\n{text}"
        );
    }
    let requests = |text: &str| {
        value(text, r#"pocket_requests_total{listener="web",class="2xx"}"#).unwrap_or(0.0)
    };
    assert!(requests(&text) >= 10.0, "10 requests sent:\n{text}");
    let by_server = |text: &str, s: SocketAddr| {
        value(
            text,
            &format!(r#"pocket_server_requests_total{{pool="app",server="{s}",class="2xx"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        by_server(&text, a.addr) + by_server(&text, b_addr),
        requests(&text)
    );
    let hooks = value(
        &text,
        r#"pocket_hook_duration_seconds_count{hook="on_request"}"#,
    );
    assert!(hooks >= Some(10.0), "on_request ran 10 times:\n{text}");
    assert!(
        value(&text, r#"pocket_lua_memory_bytes{worker="0"}"#) > Some(0.0),
        "{text}"
    );
    assert!(
        value(&text, r#"pocket_client_connections{listener="web"}"#).is_some(),
        "{text}"
    );
    assert_eq!(
        value(&text, "pocket_policy_generation"),
        Some(1.0),
        "{text}"
    );
    let up = format!(r#"pocket_server_state{{pool="app",server="{b_addr}",state="up"}}"#);
    let down = format!(r#"pocket_server_state{{pool="app",server="{b_addr}",state="down"}}"#);
    assert_eq!(value(&text, &up), Some(1.0), "{text}");
    assert_eq!(value(&text, &down), Some(0.0), "{text}");

    // More traffic counts up.
    for _ in 0..5 {
        assert_eq!(get(web, "/").await.status, 200);
    }
    let before = requests(&text);
    until("requests to count up", async || {
        let t = scrape(admin).await;
        (requests(&t) >= before + 5.0).then_some(())
    })
    .await;

    // A killed server flips to down.
    drop(b);
    let text = until("the killed server to show down", async || {
        let t = scrape(admin).await;
        (value(&t, &down) == Some(1.0)).then_some(t)
    })
    .await;
    assert_eq!(value(&text, &up), Some(0.0), "{text}");
    let failed =
        format!(r#"pocket_server_checks_total{{pool="app",server="{b_addr}",result="failed"}}"#);
    assert!(value(&text, &failed).unwrap_or(0.0) >= 1.0, "{text}");
    let (clean, said) = promtool(&text);
    assert!(clean && said.trim().is_empty(), "promtool: {said}");

    // A reload that goes live and one that is refused.
    let good = std::fs::read_to_string(&pocket.policy).unwrap();
    std::fs::write(
        &pocket.policy,
        good.replace("return nil end", "return nil end --"),
    )
    .unwrap();
    pocket_cmd(&["reload", pocket.policy.to_str().unwrap()]);
    until("a reload that went live", async || {
        let t = scrape(admin).await;
        // The file watcher may reload too: at least one, generation 2 on.
        (value(&t, r#"pocket_reloads_total{result="ok"}"#) >= Some(1.0)
            && value(&t, "pocket_policy_generation") >= Some(2.0))
        .then_some(())
    })
    .await;
    std::fs::write(&pocket.policy, "return {").unwrap();
    pocket_cmd(&["reload", pocket.policy.to_str().unwrap()]);
    until("a refused reload", async || {
        let t = scrape(admin).await;
        (value(&t, r#"pocket_reloads_total{result="refused"}"#) >= Some(1.0)).then_some(())
    })
    .await;
}

/// A free loopback port (bound, then given back).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Prometheus scraping `target` every second; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        require_command("prometheus", "prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: pocket\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `/api/v1/query` for `query`: the JSON answer, or None while
    /// Prometheus is not answering yet.
    async fn query(&self, query: &str) -> Option<String> {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        let r = tokio::time::timeout(Duration::from_secs(10), try_get(self.addr, &path))
            .await
            .ok()??;
        (r.0 == 200).then_some(r.1)
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A GET that gives up (None) when nothing listens yet.
async fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .ok()?;
    let res = sender.send_request(req).await.ok()?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Whether a query answer has at least one series.
fn has_series(answer: &str) -> bool {
    answer.contains("\"status\":\"success\"") && !answer.contains("\"result\":[]")
}

#[tokio::test]
async fn a_real_prometheus_scrapes_pocket_and_sees_a_killed_server_go_down() {
    let a = origin("A");
    let b = origin("B");
    let b_addr = b.addr;
    let pocket = Pocket::start(&policy(a.addr, b.addr), 2);
    let web = pocket.addr("web");
    let admin = admin_addr(&pocket);
    let prometheus = Prometheus::start(admin);
    for _ in 0..10 {
        assert_eq!(get(web, "/").await.status, 200);
    }

    let up = format!(r#"pocket_server_state{{pool="app",server="{b_addr}",state="up"}} == 1"#);
    let start = Instant::now();
    let seen = |what: &'static str, query: String| {
        let prometheus = &prometheus;
        async move {
            loop {
                if let Some(answer) = prometheus.query(&query).await {
                    if has_series(&answer) {
                        return;
                    }
                }
                assert!(
                    start.elapsed() < DEADLINE * 2,
                    "Prometheus never saw {what} ({query}); its log:\n{}",
                    prometheus.log()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    seen("the server up", up).await;
    seen(
        "the requests",
        r#"sum(pocket_requests_total{listener="web",class="2xx"}) >= 10"#.to_string(),
    )
    .await;
    // The scrape itself is healthy: Prometheus's own `up` for the job.
    seen("a healthy scrape", r#"up{job="pocket"} == 1"#.to_string()).await;

    drop(b);
    let down = format!(r#"pocket_server_state{{pool="app",server="{b_addr}",state="down"}} == 1"#);
    seen("the killed server down", down).await;
}

#[tokio::test]
async fn a_refused_connect_counts_as_a_connect_failure_and_a_retry() {
    let a = origin("A");
    let dead = dead_addr();
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  admin = {{ bind = "127.0.0.1:0" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{dead}", "{}" }}, balance = "round_robin", passive = false }} }},
}}"#,
            a.addr
        ),
        1,
    );
    let web = pocket.addr("web");
    let admin = admin_addr(&pocket);
    for _ in 0..4 {
        assert_eq!(get(web, "/").await.status, 200);
    }
    let retried = format!(
        r#"pocket_server_retries_total{{pool="app",server="{dead}",cause="connect failed"}}"#
    );
    let text = scrape_counted(
        admin,
        &[
            (r#"pocket_requests_total{listener="web",class="2xx"}"#, 4.0),
            (&retried, 1.0),
        ],
    )
    .await;
    let at = |name: &str, extra: &str| {
        value(
            &text,
            &format!(r#"{name}{{pool="app",server="{dead}"{extra}}}"#),
        )
        .unwrap_or(0.0)
    };
    assert!(
        at("pocket_server_connect_failures_total", "") >= 1.0,
        "{text}"
    );
    assert!(
        at("pocket_server_retries_total", r#",cause="connect failed""#) >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"pocket_requests_total{listener="web",class="2xx"}"#
        ),
        Some(4.0),
        "{text}"
    );
    let (clean, said) = promtool(&text);
    assert!(clean && said.trim().is_empty(), "promtool: {said}");
}

/// What a user reads off the retry and per-server series when servers are
/// down: a one-server pool whose server is down answers 502 with no retry
/// made and nothing the server answered; a request whose pool's server is
/// down and that its fallback pool serves counts its retry under the pool
/// it was tried in (the first), not the fallback that answered.
#[tokio::test]
async fn retries_count_where_they_happened_and_only_when_one_was_made() {
    let a = origin("A");
    let solo_dead = dead_addr();
    let first_dead = dead_addr();
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  admin = {{ bind = "127.0.0.1:0" }},
  listeners = {{ {{ name = "solo", bind = "127.0.0.1:0", pool = "solo" }},
                {{ name = "web", bind = "127.0.0.1:0", pool = "first" }} }},
  pools = {{
    solo = {{ servers = {{ "{solo_dead}" }}, passive = false }},
    first = {{ servers = {{ "{first_dead}" }}, passive = false, fallback = "app" }},
    app = {{ servers = {{ "{}" }}, passive = false }},
  }},
}}"#,
            a.addr
        ),
        1,
    );
    let admin = admin_addr(&pocket);
    for _ in 0..3 {
        assert_eq!(get(pocket.addr("solo"), "/").await.status, 502);
        assert_eq!(get(pocket.addr("web"), "/").await.status, 200);
    }
    let first_retries = format!(
        r#"pocket_server_retries_total{{pool="first",server="{first_dead}",cause="connect failed"}}"#
    );
    let text = scrape_counted(
        admin,
        &[
            (r#"pocket_requests_total{listener="solo",class="5xx"}"#, 3.0),
            (r#"pocket_requests_total{listener="web",class="2xx"}"#, 3.0),
            (&first_retries, 3.0),
        ],
    )
    .await;
    let at = |pool: &str, server: SocketAddr, name: &str, extra: &str| {
        value(
            &text,
            &format!(r#"{name}{{pool="{pool}",server="{server}"{extra}}}"#),
        )
        .unwrap_or(0.0)
    };
    let retries = "pocket_server_retries_total";
    let cause = r#",cause="connect failed""#;
    assert_eq!(at("solo", solo_dead, retries, cause), 0.0, "{text}");
    assert_eq!(
        at(
            "solo",
            solo_dead,
            "pocket_server_requests_total",
            r#",class="5xx""#
        ),
        0.0,
        "the server answered nothing: {text}"
    );
    assert_eq!(
        at(
            "solo",
            solo_dead,
            "pocket_server_connect_failures_total",
            ""
        ),
        3.0,
        "{text}"
    );
    assert_eq!(at("first", first_dead, retries, cause), 3.0, "{text}");
    assert_eq!(
        at(
            "app",
            a.addr,
            "pocket_server_requests_total",
            r#",class="2xx""#
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"pocket_requests_total{listener="solo",class="5xx"}"#
        ),
        Some(3.0),
        "{text}"
    );
}

/// A server that answers `NAME\r\n`, then echoes each line, and resets
/// the connection (SO_LINGER 0) when a line says `reset`.
fn line_server(name: &'static str) -> SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(DEADLINE));
                let _ = write!(s, "{name}\r\n");
                let mut lines = BufReader::new(s.try_clone().unwrap()).lines();
                while let Some(Ok(line)) = lines.next() {
                    if line == "reset" {
                        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                        return;
                    }
                    let _ = write!(s, "{line}\r\n");
                }
            });
        }
    });
    addr
}

/// A tcp listener's connections are counted by how they ended, as the
/// access log says (HAProxy's frontend and server sessions, denied and
/// errors), with their bytes both ways; promtool finds nothing wrong; a
/// tcp listener has no request series.
#[tokio::test]
async fn tcp_connections_are_counted_by_termination_and_promtool_finds_nothing() {
    use std::io::{BufRead, BufReader, Write};
    let a = line_server("A");
    let gone = dead_addr();
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  admin = {{ bind = "127.0.0.1:0" }},
  listeners = {{
    {{ name = "db", bind = "127.0.0.1:0", mode = "tcp", pool = "db" }},
    {{ name = "off", bind = "127.0.0.1:0", mode = "tcp", pool = "gone" }},
    {{ name = "web", bind = "127.0.0.1:0", pool = "app" }},
  }},
  pools = {{
    db = {{ mode = "tcp", servers = {{ "{a}" }} }},
    gone = {{ mode = "tcp", servers = {{ "{gone}" }} }},
    app = {{ servers = {{ "{gone}" }} }},
  }},
}}"#
        ),
        1,
    );
    let admin = admin_addr(&pocket);
    // Two normal connections (4 bytes up, 3 + 4 down each) and one the
    // server resets.
    for line in ["ping", "ping", "reset"] {
        let mut c = std::net::TcpStream::connect(pocket.addr("db")).unwrap();
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut banner = String::new();
        r.read_line(&mut banner).unwrap();
        assert_eq!(banner, "A\r\n");
        writeln!(c, "{line}").unwrap();
        if line == "ping" {
            let mut back = String::new();
            r.read_line(&mut back).unwrap();
            assert_eq!(back, "ping\r\n");
            c.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut r, &mut rest);
    }
    // Two that no server takes.
    for _ in 0..2 {
        let mut c = std::net::TcpStream::connect(pocket.addr("off")).unwrap();
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut c, &mut rest);
    }
    let server = |t: &str| {
        format!(
            "pocket_server_tcp_connections_total{{pool=\"db\",server=\"{a}\",termination=\"{t}\"}}"
        )
    };
    let text = until("the 5 connections counted", async || {
        let text = scrape(admin).await;
        let done = value(
            &text,
            r#"pocket_tcp_connections_total{listener="db",termination="SD"}"#,
        ) == Some(1.0)
            && value(
                &text,
                r#"pocket_tcp_connections_total{listener="off",termination="SC"}"#,
            ) == Some(2.0);
        done.then_some(text)
    })
    .await;
    let (clean, said) = promtool(&text);
    assert!(clean && said.trim().is_empty(), "promtool: {said}\n{text}");
    for (series, want) in [
        (
            r#"pocket_tcp_connections_total{listener="db",termination="--"}"#.to_string(),
            2.0,
        ),
        (
            r#"pocket_tcp_connections_total{listener="db",termination="PR"}"#.into(),
            0.0,
        ),
        (
            r#"pocket_tcp_connections_total{listener="off",termination="--"}"#.into(),
            0.0,
        ),
        (server("--"), 2.0),
        (server("SD"), 1.0),
        // "ping\n" twice and "reset\n": client to server.
        (r#"pocket_request_bytes_total{listener="db"}"#.into(), 16.0),
        (
            format!("pocket_server_request_bytes_total{{pool=\"db\",server=\"{a}\"}}"),
            16.0,
        ),
        // "A\r\n" three times, "ping\r\n" twice: server to client.
        (r#"pocket_response_bytes_total{listener="db"}"#.into(), 21.0),
        (
            format!("pocket_server_response_bytes_total{{pool=\"db\",server=\"{a}\"}}"),
            21.0,
        ),
        (
            format!("pocket_server_connect_failures_total{{pool=\"gone\",server=\"{gone}\"}}"),
            2.0,
        ),
    ] {
        assert_eq!(value(&text, &series), Some(want), "{series} in\n{text}");
    }
    for absent in [
        r#"pocket_requests_total{listener="db""#.to_string(),
        r#"pocket_tcp_connections_total{listener="web""#.into(),
        r#"pocket_server_requests_total{pool="db""#.into(),
        format!(
            "pocket_server_tcp_connections_total{{pool=\"db\",server=\"{a}\",termination=\"PR\""
        ),
    ] {
        assert!(!text.contains(&absent), "{absent} in\n{text}");
    }
    assert!(text.contains(r#"pocket_requests_total{listener="web",class="2xx"} 0"#));
    pocket
        .log
        .wait_for(&["the server broke the connection; connection closed (SD)"]);
}
