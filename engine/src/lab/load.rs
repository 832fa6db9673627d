//! The lab's load generator: a bounded number of clients sending requests
//! through Pocket for a bounded time, and per-second results.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::scenario::Load;

/// What one second of load saw.
#[derive(Debug, Default, Clone)]
pub struct Second {
    pub ok: u64,
    /// Failures by cause: refused, reset, closed, timeout, 5xx, 4xx.
    pub failed: BTreeMap<String, u64>,
    /// Latencies of answered requests, microseconds.
    pub latencies: Vec<u32>,
    /// Answers by the origin that sent them (x-origin).
    pub servers: BTreeMap<String, u64>,
    /// Response body bytes received.
    pub bytes: u64,
    /// Requests Pocket sent to a second server (from its log).
    pub retried: u64,
}

impl Second {
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// The q-quantile of latencies in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let mut v = self.latencies.clone();
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i] as f64 / 1000.0
    }
}

pub type Timeline = Arc<Mutex<Vec<Second>>>;

pub fn record(timeline: &Timeline, start: Instant, f: impl FnOnce(&mut Second)) {
    let i = start.elapsed().as_secs() as usize;
    let mut t = timeline.lock().unwrap_or_else(|e| e.into_inner());
    if t.len() <= i {
        t.resize(i + 1, Second::default());
    }
    f(&mut t[i]);
}

fn cause(e: &hyper::Error) -> &'static str {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionReset => "reset",
                std::io::ErrorKind::ConnectionRefused => "refused",
                _ => "closed",
            };
        }
        source = s.source();
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        "closed"
    } else {
        "reset"
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, &'static str> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "refused",
            _ => "reset",
        })?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| "reset")?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Runs `load` against `addr` until `stop` or `until`; results per second
/// from `start` land in `timeline`.
pub async fn run(
    addr: SocketAddr,
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
        tasks.push(tokio::spawn(async move {
            let mut sender: Option<SendRequest<Full<Bytes>>> = None;
            let body = Bytes::from(vec![b'u'; load.body_bytes]);
            let mut n = c;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                if let Some(gap) = per_client {
                    tokio::time::sleep_until(next.into()).await;
                    next += gap;
                }
                let path = &load.paths[n % load.paths.len()];
                n += 1;
                let sent = Instant::now();
                let attempt = async {
                    let s = match sender.as_mut() {
                        Some(s) if !s.is_closed() => s,
                        _ => sender.insert(connect(addr).await?),
                    };
                    if s.ready().await.is_err() {
                        sender = None;
                        return Err("closed");
                    }
                    let req = http::Request::builder()
                        .method(load.method.as_str())
                        .uri(path.as_str())
                        .header("host", "lab")
                        .body(Full::new(body.clone()))
                        .map_err(|_| "reset")?;
                    let resp = match s.send_request(req).await {
                        Ok(r) => r,
                        Err(e) => {
                            sender = None;
                            return Err(cause(&e));
                        }
                    };
                    let status = resp.status().as_u16();
                    let origin = resp
                        .headers()
                        .get("x-origin")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("pocket")
                        .to_string();
                    let size = match resp.into_body().collect().await {
                        Ok(b) => b.to_bytes().len() as u64,
                        Err(e) => {
                            sender = None;
                            return Err(cause(&e));
                        }
                    };
                    Ok((status, origin, size))
                };
                let result = tokio::time::timeout(load.timeout, attempt).await;
                if !load.keepalive {
                    sender = None;
                }
                let micros = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                let timed_out = result.is_err();
                record(&timeline, start, |s| match result {
                    Ok(Ok((status, origin, size))) if status < 400 => {
                        s.ok += 1;
                        s.bytes += size;
                        s.latencies.push(micros);
                        *s.servers.entry(origin).or_default() += 1;
                    }
                    Ok(Ok((status, _, _))) => {
                        *s.failed
                            .entry(if status >= 500 { "5xx" } else { "4xx" }.into())
                            .or_default() += 1;
                    }
                    Ok(Err(why)) => *s.failed.entry(why.into()).or_default() += 1,
                    Err(_) => *s.failed.entry("timeout".into()).or_default() += 1,
                });
                if timed_out {
                    sender = None;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
