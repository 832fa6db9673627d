//! The lab's load generator: a bounded number of clients sending requests
//! through Pocket for a bounded time. Every request is kept as a
//! [`Sample`]: when it was sent and ended, which origin answered (the
//! built-in origins tag every answer with `x-origin`), its status, and why
//! it failed in the words of whoever failed it (Pocket's error bodies give
//! the reason; a broken connection gives its kind).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::scenario::Load;
use super::tls::{Dial, DialError};

/// Why a request failed, as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// A few words that group failures in the chart's legend, e.g.
    /// "502 from Pocket", "500 from B", "connection reset".
    pub kind: String,
    /// The whole story for the summary: Pocket's own reason line for the
    /// answers it made, else what happened on the wire.
    pub detail: String,
}

/// One request of the load.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds on the lab's clock when the request was sent.
    pub sent: f64,
    /// Seconds on the lab's clock when it ended (answered or failed).
    pub done: f64,
    /// The origin that answered (`x-origin`), if an origin's head came.
    pub server: Option<String>,
    /// The status, if a response head came.
    pub status: Option<u16>,
    /// None: answered with a status below 400 and a whole body.
    pub failure: Option<Failure>,
    /// Response body bytes received.
    pub bytes: u64,
}

impl Sample {
    /// Milliseconds from sending to the end.
    pub fn latency_ms(&self) -> f64 {
        (self.done - self.sent) * 1000.0
    }
}

/// Pocket tried another server for a request (from its log).
#[derive(Debug, Clone)]
pub struct Retry {
    /// Seconds on the lab's clock when the lab read the log line.
    pub t: f64,
    /// The server that could not take it, as the scenario names it.
    pub server: String,
    /// Its address, as Pocket's log gives it.
    pub addr: String,
    /// Pocket's reason, e.g. "connect failed: Connection refused (os error 111)".
    pub why: String,
}

/// Everything the load and Pocket's log saw, shared while the lab runs.
#[derive(Debug, Default)]
pub struct Record {
    pub samples: Mutex<Vec<Sample>>,
    pub retries: Mutex<Vec<Retry>>,
    /// Body bytes received so far (for faults `after_bytes`); for a TCP
    /// load, echoed bytes.
    pub bytes: AtomicU64,
    /// A TCP load's connections and bytes per server.
    pub tcp: super::tcp_load::TcpRecord,
}

pub type Timeline = Arc<Record>;

impl Record {
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn retries(&self) -> Vec<Retry> {
        self.retries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The samples from index `from` on: the live timeline copies only
    /// what came since it last looked, keeping the lock short.
    pub fn samples_from(&self, from: usize) -> Vec<Sample> {
        let all = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        all.get(from..).map(<[Sample]>::to_vec).unwrap_or_default()
    }

    /// The retries from index `from` on (see [`Record::samples_from`]).
    pub fn retries_from(&self, from: usize) -> Vec<Retry> {
        let all = self.retries.lock().unwrap_or_else(|e| e.into_inner());
        all.get(from..).map(<[Retry]>::to_vec).unwrap_or_default()
    }

    pub fn add_retry(&self, r: Retry) {
        self.retries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r);
    }

    pub(super) fn add(&self, s: Sample) {
        self.bytes.fetch_add(s.bytes, Ordering::Relaxed);
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s);
    }
}

pub(super) fn wire(kind: &str, detail: impl Into<String>) -> Failure {
    Failure {
        kind: kind.into(),
        detail: detail.into(),
    }
}

/// What a broken exchange looked like from the client.
fn broken(e: &hyper::Error, during: &str) -> Failure {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionReset => wire(
                    "connection reset",
                    format!("the connection to Pocket was reset {during}"),
                ),
                _ => wire(
                    "connection closed",
                    format!("the connection to Pocket closed {during}: {io}"),
                ),
            };
        }
        source = s.source();
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        wire(
            "connection closed",
            format!("the connection to Pocket closed {during}"),
        )
    } else {
        wire(
            "connection reset",
            format!("the connection to Pocket broke {during}: {e}"),
        )
    }
}

async fn connect(dial: &Dial) -> Result<SendRequest<Full<Bytes>>, Failure> {
    let addr = dial.addr;
    let stream = dial.connect().await.map_err(|e| match e {
        DialError::Tls(f) => f,
        DialError::Connect(e) => match e.kind() {
            std::io::ErrorKind::ConnectionRefused => wire(
                "refused by Pocket",
                format!("connection to Pocket ({addr}) refused: nothing listening"),
            ),
            _ => wire(
                "connection reset",
                format!("connect to Pocket ({addr}) failed: {e}"),
            ),
        },
    })?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| broken(&e, "at the HTTP handshake"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// What came back for one request.
struct Answer {
    status: u16,
    server: Option<String>,
    bytes: u64,
    failure: Option<Failure>,
}

/// The failure an answer head with `status` means, if any. Pocket's own
/// answers (no `x-origin`) carry the reason on their second body line.
pub(super) fn failure_of(status: u16, server: &Option<String>, body: &[u8]) -> Option<Failure> {
    if status < 400 {
        return None;
    }
    Some(match server {
        Some(name) => wire(
            &format!("{status} from {name}"),
            format!("{name} answered {status}"),
        ),
        None => {
            let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
            let reason = text.lines().nth(1).unwrap_or("").trim();
            wire(
                &format!("{status} from Pocket"),
                if reason.is_empty() {
                    format!("Pocket answered {status}")
                } else {
                    reason.to_string()
                },
            )
        }
    })
}

/// Runs `load` against Pocket (`dial`: its listener, plain or TLS) until
/// `stop` or `until`; every request lands in `timeline`, timed from `start`.
pub async fn run(
    dial: Dial,
    load: Load,
    start: Instant,
    until: Instant,
    stop: Arc<AtomicBool>,
    timeline: Timeline,
) {
    let mut tasks = Vec::new();
    let per_client = load
        .rate
        .map(|r| Duration::from_secs_f64(load.concurrency as f64 / r as f64));
    for c in 0..load.concurrency {
        let (load, stop, timeline) = (load.clone(), stop.clone(), timeline.clone());
        let dial = dial.clone();
        if load.websocket {
            let gap = per_client;
            tasks.push(tokio::spawn(async move {
                super::tunnel_load::client(dial, c, load, gap, start, until, stop, timeline).await
            }));
            continue;
        }
        tasks.push(tokio::spawn(async move {
            let mut sender: Option<SendRequest<Full<Bytes>>> = None;
            let body = Bytes::from(vec![b'u'; load.body_bytes]);
            let mut n = c;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                if let Some(gap) = per_client {
                    tokio::time::sleep_until(next.into()).await;
                    // A client that was held up (a hung request) goes on
                    // at its rate, not in a burst that makes up for it.
                    next = (next + gap).max(Instant::now());
                    if stop.load(Ordering::Relaxed) || Instant::now() >= until {
                        break;
                    }
                }
                let path = &load.paths[n % load.paths.len()];
                n += 1;
                let sent = start.elapsed().as_secs_f64();
                // The head's origin, kept if the body then breaks.
                let mut head_from: Option<String> = None;
                let mut head_status: Option<u16> = None;
                let attempt = async {
                    let s = match sender.as_mut() {
                        Some(s) if !s.is_closed() => s,
                        _ => sender.insert(connect(&dial).await?),
                    };
                    if s.ready().await.is_err() {
                        sender = None;
                        return Err(wire(
                            "connection closed",
                            "Pocket closed the kept-alive connection before the request",
                        ));
                    }
                    let req = http::Request::builder()
                        .method(load.method.as_str())
                        .uri(path.as_str())
                        .header("host", "lab")
                        .body(Full::new(body.clone()))
                        .map_err(|e| wire("bad request", e.to_string()))?;
                    let resp = match s.send_request(req).await {
                        Ok(r) => r,
                        Err(e) => {
                            sender = None;
                            return Err(broken(&e, "before an answer head"));
                        }
                    };
                    let status = resp.status().as_u16();
                    let server = resp
                        .headers()
                        .get("x-origin")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    // Several balancers: which one passed it on.
                    let peer = resp
                        .headers()
                        .get("x-origin-peer")
                        .and_then(|v| v.to_str().ok());
                    let server = match (server, peer) {
                        (Some(s), Some(peer)) => match load.via.iter().find(|(a, _)| a == peer) {
                            Some((_, b)) => Some(format!("{s} via {b}")),
                            None => Some(s),
                        },
                        (s, _) => s,
                    };
                    head_from = server.clone();
                    head_status = Some(status);
                    let body = match resp.into_body().collect().await {
                        Ok(b) => b.to_bytes(),
                        Err(e) => {
                            sender = None;
                            let who = server.as_deref().unwrap_or("Pocket");
                            return Err(broken(&e, &format!("mid-answer, after {who}'s head")));
                        }
                    };
                    let failure = failure_of(status, &server, &body);
                    Ok(Answer {
                        status,
                        server,
                        bytes: body.len() as u64,
                        failure,
                    })
                };
                let result = tokio::time::timeout(load.timeout, attempt).await;
                if !load.keepalive {
                    sender = None;
                }
                let done = start.elapsed().as_secs_f64();
                let sample = match result {
                    Ok(Ok(a)) => Sample {
                        sent,
                        done,
                        server: a.server,
                        status: Some(a.status),
                        failure: a.failure,
                        bytes: a.bytes,
                    },
                    Ok(Err(failure)) => Sample {
                        sent,
                        done,
                        server: head_from,
                        status: head_status,
                        failure: Some(failure),
                        bytes: 0,
                    },
                    Err(_) => {
                        sender = None;
                        Sample {
                            sent,
                            done,
                            server: head_from,
                            status: head_status,
                            failure: Some(wire(
                                "client timeout",
                                format!(
                                    "no whole answer within the load's timeout ({:?})",
                                    load.timeout
                                ),
                            )),
                            bytes: 0,
                        }
                    }
                };
                timeline.add(sample);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
