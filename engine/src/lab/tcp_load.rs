//! The lab's TCP load (`load.streams`, `load.connections`): clients of a
//! `mode = "tcp"` listener, each reaching one of the lab's echo origins
//! through Pocket. The origin's banner (`origin NAME\r\n`) tells the
//! client which server it reached; every connection is kept as a
//! [`Conn`] (opened, completed, failed before the server answered, or cut
//! after), and the echoed bytes are counted per server in 100 ms buckets.
//!
//! - A long stream sends `chunk` bytes and reads their echo, a round trip
//!   every 10 ms at most (bounded, so the lab does not eat the machine),
//!   for the whole run; a stream that is cut or goes silent for the load's
//!   `timeout` is counted cut and opened again.
//! - A short connection connects, sends `bytes`, reads their echo, shuts
//!   its write and reads the server's close: completed. `load.rate` paces
//!   them (connections per second over all clients).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::load::{wire, Failure, Sample, Timeline};
use super::scenario::{Load, TcpLoad};

/// Width of the byte-count buckets, seconds.
pub const BYTE_BUCKET: f64 = 0.1;
/// A long stream's shortest round trip: at most 100 a second each.
const STREAM_PACE: Duration = Duration::from_millis(10);
/// The longest banner line read.
const MAX_BANNER: usize = 256;

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Closed by the client after its exchange (or at the run's end), the
    /// server's close read.
    Completed,
    /// No banner came: refused, reset, closed or silent before the server
    /// answered (Pocket found no server, or rejected it).
    Failed,
    /// Broken after the server answered: reset, closed or silent mid-stream.
    Cut,
}

impl Outcome {
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Cut => "cut",
        }
    }
}

/// One connection of the TCP load.
#[derive(Debug, Clone)]
pub struct Conn {
    /// "stream" or "short".
    pub kind: &'static str,
    /// Seconds on the lab's clock when the client connected to Pocket.
    pub start: f64,
    /// When it ended.
    pub end: f64,
    /// When the server's banner came: the first moment the lab knows
    /// which server Pocket gave the connection to (`start` is before
    /// Pocket picked one). None: no banner came.
    pub banner: Option<f64>,
    /// The server whose banner came.
    pub server: Option<String>,
    pub outcome: Outcome,
    /// Why it failed or was cut, as the client saw it.
    pub why: Option<Failure>,
    /// Echoed bytes received (the banner not counted).
    pub bytes: u64,
    /// The client's local port once connected: Pocket's log names the
    /// connection by it (`peer=`), see [`TcpRecord::pocket_ended`].
    pub port: Option<u16>,
}

/// What the TCP load saw, shared while the lab runs.
#[derive(Debug, Default)]
pub struct TcpRecord {
    pub conns: Mutex<Vec<Conn>>,
    /// (when the client connected, the server whose banner came) for
    /// every connection a server answered, as soon as it answers: the live
    /// timeline counts a stream when it opens, not when it ends.
    pub opened: Mutex<Vec<(f64, String)>>,
    /// Echoed bytes by (bucket index of [`BYTE_BUCKET`], server).
    pub bytes: Mutex<BTreeMap<(u32, String), u64>>,
    /// Why Pocket ended connections it logged (a server that broke one,
    /// `SD`; its idle timeout, `sD`/`cD`), by the client's port: (lab
    /// clock seconds, the cause in words).
    pub ends: Mutex<HashMap<u16, Vec<(f64, String)>>>,
}

impl TcpRecord {
    pub fn conns(&self) -> Vec<Conn> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn opened(&self) -> Vec<(f64, String)> {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn open(&self, t: f64, server: &str) {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((t, server.to_string()));
    }

    pub fn bytes(&self) -> BTreeMap<(u32, String), u64> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Pocket logged, at `t`, that it ended the connection of the client
    /// on `port` for `cause`.
    pub fn pocket_ended(&self, port: u16, t: f64, cause: String) {
        self.ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(port)
            .or_default()
            .push((t, cause));
    }

    /// The connections, each cut one's cause told with Pocket's word on
    /// it when Pocket logged one within 2 s of the client seeing the end
    /// (a port is used again over a long run: the nearest in time wins).
    /// The client alone cannot tell a server that broke its connection
    /// from Pocket's idle timeout: both reach it as a close.
    pub fn conns_with_causes(&self) -> Vec<Conn> {
        let ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        let mut conns = self.conns();
        for c in conns.iter_mut().filter(|c| c.outcome == Outcome::Cut) {
            let (Some(port), Some(why)) = (c.port, c.why.as_mut()) else {
                continue;
            };
            let nearest = ends.get(&port).and_then(|list| {
                list.iter()
                    .filter(|(t, _)| (t - c.end).abs() < 2.0)
                    .min_by(|a, b| (a.0 - c.end).abs().total_cmp(&(b.0 - c.end).abs()))
            });
            if let Some((_, cause)) = nearest {
                why.detail = format!("{}: {cause}", why.detail);
            }
        }
        conns
    }
}

/// What Pocket's log line about a TCP connection it ended says, in the
/// lab's words: `Some((client port, cause))` for a server that broke the
/// connection (`SD`) or an idle timeout (`sD`, `cD`); the server named
/// as the line does (the lab has put origin names in it).
pub fn pocket_end_of(line: &str) -> Option<(u16, String)> {
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(|v| v.trim_matches(|c| c == '"' || c == ':').to_string())
    };
    let server = field("server=").unwrap_or_else(|| "the server".into());
    let cause = if line.contains("(SD)") {
        format!("{server} broke the connection (Pocket's log: SD)")
    } else if line.contains("(sD)") {
        format!("nothing came from {server} for the pool's timeouts.idle (Pocket's log: sD)")
    } else if line.contains("(cD)") {
        "nothing came from the client for the pool's timeouts.idle (Pocket's log: cD)".to_string()
    } else {
        return None;
    };
    let port = field("peer=")?.rsplit_once(':')?.1.parse().ok()?;
    Some((port, cause))
}

/// The sample a connection is on the chart: one per connection, by the
/// server that answered, failed or cut ones by cause (`cut: connection
/// reset`, `failed: client timeout`). A completed connection counts when
/// it opened; a cut or failed one when it ended, so a stream cut by a
/// fault shows at the fault, not where it began.
pub fn sample_of(c: &Conn) -> Sample {
    let sent = match c.outcome {
        Outcome::Completed => c.start,
        Outcome::Failed | Outcome::Cut => c.end,
    };
    Sample {
        sent,
        done: c.end,
        server: c.server.clone(),
        status: None,
        failure: c
            .why
            .as_ref()
            .filter(|_| c.outcome != Outcome::Completed)
            .map(|f| Failure {
                kind: format!("{}: {}", c.outcome.word(), f.kind),
                detail: f.detail.clone(),
            }),
        bytes: c.bytes,
    }
}

fn record(timeline: &Timeline, c: Conn) {
    timeline.add(sample_of(&c));
    timeline
        .tcp
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(c);
}

fn count_bytes(timeline: &Timeline, start: Instant, server: &str, n: u64) {
    let i = (start.elapsed().as_secs_f64() / BYTE_BUCKET) as u32;
    *timeline
        .tcp
        .bytes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((i, server.to_string()))
        .or_default() += n;
    timeline.bytes.fetch_add(n, Ordering::Relaxed);
}

fn io_failure(e: &std::io::Error, during: &str) -> Failure {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => wire(
            "refused by Pocket",
            format!("connection to Pocket refused {during}"),
        ),
        std::io::ErrorKind::ConnectionReset => wire(
            "connection reset",
            format!("the connection was reset {during}"),
        ),
        _ => wire(
            "connection closed",
            format!("the connection closed {during}: {e}"),
        ),
    }
}

fn closed(during: &str) -> Failure {
    wire(
        "connection closed",
        format!("Pocket closed the connection {during}"),
    )
}

/// Connects to Pocket and reads the banner: the stream and the server.
async fn open(addr: SocketAddr) -> Result<(TcpStream, String), Failure> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| io_failure(&e, "at connect"))?;
    let _ = s.set_nodelay(true);
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() > MAX_BANNER {
            return Err(wire("bad banner", "no echo origin's banner"));
        }
        let n = s
            .read(&mut b)
            .await
            .map_err(|e| io_failure(&e, "before the server's banner"))?;
        if n == 0 {
            return Err(closed("before the server's banner"));
        }
        line.push(b[0]);
    }
    let text = String::from_utf8_lossy(&line);
    match text.trim_end().strip_prefix("origin ") {
        Some(name) => Ok((s, name.to_string())),
        // An HTTP listener answers the stream's bytes with an error.
        None if text.starts_with("HTTP/") => Err(wire(
            "bad banner",
            format!(
                "Pocket answered HTTP ({:?}): is the policy's listener mode = \"tcp\"?",
                text.trim_end()
            ),
        )),
        None => Err(wire(
            "bad banner",
            format!("not an echo origin's banner: {text:?}"),
        )),
    }
}

/// Sends `out` and reads its echo: Ok(bytes echoed).
async fn round_trip(s: &mut TcpStream, out: &[u8], who: &str) -> Result<u64, Failure> {
    s.write_all(out)
        .await
        .map_err(|e| io_failure(&e, &format!("sending to {who}")))?;
    let mut back = vec![0u8; out.len()];
    let mut got = 0;
    while got < back.len() {
        let k = s
            .read(&mut back[got..])
            .await
            .map_err(|e| io_failure(&e, &format!("waiting for {who}'s echo")))?;
        if k == 0 {
            return Err(closed(&format!("mid-stream with {who}")));
        }
        got += k;
    }
    if back != out {
        return Err(wire("bad echo", format!("{who} echoed something else")));
    }
    Ok(out.len() as u64)
}

/// Shuts the write and reads to the server's close (the echo of what was
/// in flight, then EOF), within `timeout`.
async fn close(s: &mut TcpStream, timeout: Duration, who: &str) -> Result<(), Failure> {
    let done = async {
        s.shutdown()
            .await
            .map_err(|e| io_failure(&e, &format!("closing to {who}")))?;
        let mut sink = [0u8; 16 * 1024];
        loop {
            match s.read(&mut sink).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(io_failure(&e, &format!("closing to {who}"))),
            }
        }
    };
    tokio::time::timeout(timeout, done)
        .await
        .unwrap_or_else(|_| {
            Err(wire(
                "client timeout",
                format!("{who} did not close within {timeout:?} of the client's half-close"),
            ))
        })
}

/// A connection no server answered in time. Pocket's TCP path closes a
/// connection it cannot place; an HTTP listener waits for a request: the
/// hint is given only when the listener is not known to be a tcp one.
fn no_banner(timeout: Duration, listener_tcp: bool) -> Failure {
    let hint = if listener_tcp {
        ""
    } else {
        "; an HTTP listener would wait for a request: is the policy's listener mode = \"tcp\"?"
    };
    wire(
        "client timeout",
        format!("no server's banner within the load's timeout ({timeout:?}){hint}"),
    )
}

fn timed_out(timeout: Duration, what: &str) -> Failure {
    wire(
        "client timeout",
        format!("{what} within the load's timeout ({timeout:?})"),
    )
}

/// Runs the TCP `load` against Pocket's listener `addr` until `stop` or
/// `until`; every connection lands in `timeline`, timed from `start`.
pub async fn run(
    addr: SocketAddr,
    load: Load,
    tcp: TcpLoad,
    start: Instant,
    until: Instant,
    stop: Arc<AtomicBool>,
    timeline: Timeline,
) {
    let mut tasks = Vec::new();
    let gap = load
        .rate
        .map(|r| Duration::from_secs_f64(tcp.connections.max(1) as f64 / r as f64));
    for c in 0..tcp.streams {
        let (stop, timeline, tcp) = (stop.clone(), timeline.clone(), tcp.clone());
        let timeout = load.timeout;
        tasks.push(tokio::spawn(async move {
            stream(c, addr, tcp, timeout, start, until, stop, timeline).await
        }));
    }
    for _ in 0..tcp.connections {
        let (stop, timeline, tcp) = (stop.clone(), timeline.clone(), tcp.clone());
        let timeout = load.timeout;
        tasks.push(tokio::spawn(async move {
            short(addr, tcp, timeout, gap, start, until, stop, timeline).await
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

fn running(stop: &AtomicBool, until: Instant) -> bool {
    !stop.load(Ordering::Relaxed) && Instant::now() < until
}

/// Long stream client `c`, opened again whenever it is cut.
#[allow(clippy::too_many_arguments)]
async fn stream(
    c: usize,
    addr: SocketAddr,
    tcp: TcpLoad,
    timeout: Duration,
    start: Instant,
    until: Instant,
    stop: Arc<AtomicBool>,
    timeline: Timeline,
) {
    // Distinct bytes per stream, so a crossed stream would show.
    let chunk: Vec<u8> = (0..tcp.chunk)
        .map(|i| b'a' + ((i + c) % 26) as u8)
        .collect();
    while running(&stop, until) {
        let t0 = start.elapsed().as_secs_f64();
        let opened = tokio::time::timeout(timeout, open(addr))
            .await
            .unwrap_or_else(|_| Err(no_banner(timeout, tcp.listener_tcp)));
        let banner = start.elapsed().as_secs_f64();
        let (mut s, who) = match opened {
            Ok(pair) => {
                timeline.tcp.open(t0, &pair.1);
                pair
            }
            Err(f) => {
                record(
                    &timeline,
                    Conn {
                        kind: "stream",
                        start: t0,
                        end: start.elapsed().as_secs_f64(),
                        banner: None,
                        server: None,
                        outcome: Outcome::Failed,
                        why: Some(f),
                        bytes: 0,
                        port: None,
                    },
                );
                // Not a busy loop against a listener that refuses.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let port = s.local_addr().ok().map(|a| a.port());
        let mut bytes = 0u64;
        let mut why = None;
        let mut next = Instant::now();
        while running(&stop, until) {
            tokio::time::sleep_until(next.into()).await;
            next = (next + STREAM_PACE).max(Instant::now());
            match tokio::time::timeout(timeout, round_trip(&mut s, &chunk, &who)).await {
                Ok(Ok(n)) => {
                    bytes += n;
                    count_bytes(&timeline, start, &who, n);
                }
                Ok(Err(f)) => {
                    why = Some(f);
                    break;
                }
                Err(_) => {
                    why = Some(timed_out(timeout, &format!("no echo from {who}")));
                    break;
                }
            }
        }
        if why.is_none() {
            why = close(&mut s, timeout, &who).await.err();
        }
        record(
            &timeline,
            Conn {
                kind: "stream",
                start: t0,
                end: start.elapsed().as_secs_f64(),
                banner: Some(banner),
                server: Some(who),
                outcome: if why.is_some() {
                    Outcome::Cut
                } else {
                    Outcome::Completed
                },
                why,
                bytes,
                port,
            },
        );
    }
}

/// A client of short connections, one after another.
#[allow(clippy::too_many_arguments)]
async fn short(
    addr: SocketAddr,
    tcp: TcpLoad,
    timeout: Duration,
    gap: Option<Duration>,
    start: Instant,
    until: Instant,
    stop: Arc<AtomicBool>,
    timeline: Timeline,
) {
    let out = vec![b'x'; tcp.bytes];
    let mut next = Instant::now();
    while running(&stop, until) {
        if let Some(gap) = gap {
            tokio::time::sleep_until(next.into()).await;
            next = (next + gap).max(Instant::now());
            if !running(&stop, until) {
                break;
            }
        }
        let t0 = start.elapsed().as_secs_f64();
        let mut server = None;
        let mut banner = None;
        let mut bytes = 0;
        let mut port = None;
        let exchange = async {
            let (mut s, who) = open(addr).await.map_err(|f| (Outcome::Failed, f))?;
            banner = Some(start.elapsed().as_secs_f64());
            server = Some(who.clone());
            port = s.local_addr().ok().map(|a| a.port());
            timeline.tcp.open(t0, &who);
            let n = round_trip(&mut s, &out, &who)
                .await
                .map_err(|f| (Outcome::Cut, f))?;
            bytes = n;
            count_bytes(&timeline, start, &who, n);
            close(&mut s, timeout, &who)
                .await
                .map_err(|f| (Outcome::Cut, f))
        };
        let result = tokio::time::timeout(timeout, exchange).await;
        let (outcome, why) = match result {
            Ok(Ok(())) => (Outcome::Completed, None),
            Ok(Err((o, f))) => (o, Some(f)),
            Err(_) if server.is_none() => {
                (Outcome::Failed, Some(no_banner(timeout, tcp.listener_tcp)))
            }
            Err(_) => (
                Outcome::Cut,
                Some(timed_out(timeout, "no whole echo and close")),
            ),
        };
        record(
            &timeline,
            Conn {
                kind: "short",
                start: t0,
                end: start.elapsed().as_secs_f64(),
                banner,
                server,
                outcome,
                why,
                bytes,
                port,
            },
        );
        if outcome == Outcome::Failed {
            // Not a busy loop against a listener that refuses.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::faults::{FaultProxy, Mode};
    use super::*;

    /// The "is the listener mode = tcp?" hint only when it is not known
    /// to be (breaker16 F6: a tiny load.timeout on a tcp listener).
    #[test]
    fn the_mode_hint_is_given_only_for_a_listener_not_known_to_be_tcp() {
        let ms = Duration::from_millis(1);
        assert!(!no_banner(ms, true).detail.contains("mode"));
        assert!(no_banner(ms, false)
            .detail
            .ends_with("is the policy's listener mode = \"tcp\"?"));
    }

    /// `expect.connections_to_down` times a connection by its banner, not
    /// by when its client began to connect: a stream begun while B was
    /// down whose banner came after B's UP was placed after Pocket knew B
    /// was up (seen under load: counted against B, the expectation
    /// failed); one whose banner came inside the window is counted.
    #[test]
    fn a_connection_counts_against_a_down_server_by_when_its_banner_came() {
        use super::super::report::Event;
        let conn = |start: f64, banner: f64, server: &str| Conn {
            kind: "stream",
            start,
            end: banner + 1.0,
            banner: Some(banner),
            server: Some(server.into()),
            outcome: Outcome::Completed,
            why: None,
            bytes: 0,
            port: None,
        };
        let health = |t: f64, text: &str| Event {
            t,
            kind: "health",
            text: text.into(),
        };
        let events = [
            health(2.0, "server B of pool app is DOWN: 3 failures in a row"),
            health(5.0, "server B of pool app is UP: 2 checks passed"),
        ];
        let origins = ["A".to_string(), "B".to_string()];
        let count = |conns: &[Conn]| super::super::connections_to_down(conns, &events, &origins);
        // Begun before the UP, its banner after: not counted.
        assert_eq!(count(&[conn(4.9, 5.3, "B")]), (0, 1));
        // Begun before the DOWN, its banner inside the window: counted.
        assert_eq!(count(&[conn(1.9, 2.4, "B")]), (1, 1));
        let mut failed_to_connect = conn(4.5, 0.0, "B");
        failed_to_connect.banner = None;
        failed_to_connect.server = None;
        let conns = [
            conn(4.9, 5.3, "B"),
            conn(1.9, 2.4, "B"),
            // Begun and answered inside the window: counted.
            conn(3.0, 3.1, "B"),
            // Answered before the DOWN: not counted.
            conn(1.0, 1.5, "B"),
            // Another server, inside the window: not counted.
            conn(3.0, 3.1, "A"),
            failed_to_connect,
        ];
        assert_eq!(count(&conns), (2, 1));
    }

    /// Pocket's log lines carry tracing's RFC 3339 timestamp: the health
    /// events are timed by it.
    #[test]
    fn a_log_timestamp_reads_as_seconds_since_the_epoch() {
        let t = super::super::unix_seconds("2026-11-30T01:45:15.123456Z").unwrap();
        assert!((t - 1_796_003_115.123456).abs() < 1e-5, "{t}");
        assert_eq!(
            super::super::unix_seconds("2000-02-29T00:00:00Z"),
            Some(951_782_400.0)
        );
        assert_eq!(
            super::super::unix_seconds("1970-01-01T00:00:00.000Z"),
            Some(0.0)
        );
        assert_eq!(super::super::unix_seconds("INFO"), None);
        assert_eq!(super::super::unix_seconds("2026-13-01T00:00:00Z"), None);
    }

    /// Without Pocket: the load straight at an echo origin behind the fault
    /// proxy. The stream and the short connections count bytes by the
    /// banner's server; when the port closes under them (`Refuse`: the
    /// open connection reset), the stream is counted cut and the connects
    /// that follow failed.
    #[test]
    fn connections_and_bytes_are_counted_by_server_and_a_reset_stream_is_cut() {
        let echo = crate::origin::echo::spawn_echo("A", "127.0.0.1:0".parse().unwrap()).unwrap();
        let proxy = FaultProxy::start(echo.addr).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let load = Load {
            concurrency: 2,
            rate: Some(50),
            paths: vec!["/".into()],
            keepalive: true,
            timeout: Duration::from_secs(2),
            method: "GET".into(),
            body_bytes: 0,
            websocket: false,
            tcp: None,
            via: Vec::new(),
        };
        let tcp = TcpLoad {
            streams: 1,
            connections: 1,
            bytes: 100,
            chunk: 1000,
            listener_tcp: true,
        };
        let timeline: Timeline = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let task = runtime.spawn(run(
            proxy.addr,
            load,
            tcp,
            start,
            start + Duration::from_secs(30),
            stop.clone(),
            timeline.clone(),
        ));
        // Bytes flow, then the port closes under them.
        let deadline = Instant::now() + Duration::from_secs(20);
        while timeline
            .tcp
            .conns()
            .iter()
            .filter(|c| c.kind == "short")
            .count()
            < 3
        {
            assert!(Instant::now() < deadline, "no short connection completed");
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy.set(Mode::Refuse);
        while !timeline
            .tcp
            .conns()
            .iter()
            .any(|c| c.kind == "stream" && c.outcome == Outcome::Cut)
            || !timeline
                .tcp
                .conns()
                .iter()
                .any(|c| c.outcome == Outcome::Failed)
        {
            assert!(Instant::now() < deadline, "{:?}", timeline.tcp.conns());
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        let _ = runtime.block_on(task);

        let conns = timeline.tcp.conns();
        let cut = conns
            .iter()
            .find(|c| c.kind == "stream" && c.outcome == Outcome::Cut)
            .unwrap();
        assert_eq!(cut.server.as_deref(), Some("A"));
        assert!(cut.bytes > 0, "{cut:?}");
        assert!(conns
            .iter()
            .any(|c| c.kind == "short" && c.outcome == Outcome::Completed && c.bytes == 100));
        let failed = conns.iter().find(|c| c.outcome == Outcome::Failed).unwrap();
        assert_eq!(failed.server, None);
        let bytes = timeline.tcp.bytes();
        assert!(bytes.keys().all(|(_, s)| s == "A"));
        assert!(bytes.values().sum::<u64>() >= cut.bytes);
        // Every connection a server answered was counted open.
        let answered = conns.iter().filter(|c| c.server.is_some()).count();
        assert!(timeline.tcp.opened().len() >= answered);
    }

    /// The cut cause tells a server that broke the connection from
    /// Pocket's idle timeout, from Pocket's log lines (tcp/serve.rs).
    #[test]
    fn pocket_s_log_tells_a_broken_server_from_an_idle_timeout() {
        let broke = "2026-11-30T08:00:11.464Z  INFO connection=0-5 listener=t peer=127.0.0.1:40100 server=B the server broke the connection; connection closed (SD)";
        let (port, cause) = pocket_end_of(broke).expect("an SD line");
        assert_eq!(port, 40100);
        assert_eq!(cause, "B broke the connection (Pocket's log: SD)");
        let idle = "2026-11-30T08:00:11.464Z  INFO connection=0-6 listener=t peer=127.0.0.1:40101 server=A nothing moved for 3s (timeouts.idle); connection closed (sD)";
        let (port, cause) = pocket_end_of(idle).expect("an sD line");
        assert_eq!(port, 40101);
        assert!(
            cause.contains("timeouts.idle") && cause.contains("sD"),
            "{cause}"
        );
        assert_eq!(pocket_end_of("INFO pocket ready"), None);

        let record = TcpRecord::default();
        let cut = |port, end| Conn {
            kind: "stream",
            start: 0.0,
            end,
            banner: Some(0.0),
            server: Some("B".into()),
            outcome: Outcome::Cut,
            why: Some(wire(
                "connection closed",
                "Pocket closed the connection mid-stream with B",
            )),
            bytes: 1,
            port: Some(port),
        };
        record
            .conns
            .lock()
            .unwrap()
            .extend([cut(40100, 5.0), cut(40102, 5.0)]);
        record.pocket_ended(40100, 4.9, cause_of(broke));
        let conns = record.conns_with_causes();
        assert_eq!(
            conns[0].why.as_ref().unwrap().detail,
            "Pocket closed the connection mid-stream with B: B broke the connection (Pocket's log: SD)"
        );
        assert_eq!(
            conns[1].why.as_ref().unwrap().detail,
            "Pocket closed the connection mid-stream with B",
            "no line for its port: as the client saw it"
        );
    }

    fn cause_of(line: &str) -> String {
        pocket_end_of(line).unwrap().1
    }
}
