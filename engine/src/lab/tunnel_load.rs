//! The lab's `websocket` load: each client opens an HTTP/1.1 upgrade
//! tunnel through Pocket to an origin's `/echo` and sends one message per
//! request of the load, waiting for its echo. Each round trip is a
//! [`Sample`] (status 101, the origin that took the tunnel), so a tunnel
//! broken or gone silent under a fault shows in the timeline as failed
//! samples on its server; the client then opens a new tunnel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::load::{failure_of, wire, Failure, Sample, Timeline};
use super::scenario::Load;
use super::tls::{Dial, DialError, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most of a 101 (or refusal) head the client reads.
const MAX_HEAD: usize = 16 * 1024;

/// An open tunnel and the origin that took it.
struct Tunnel {
    /// Plain or TLS, as the scenario says.
    stream: Stream,
    server: Option<String>,
}

fn io_failure(e: &std::io::Error, during: &str) -> Failure {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => wire(
            "refused by Pocket",
            format!("connection to Pocket refused {during}"),
        ),
        std::io::ErrorKind::ConnectionReset => {
            wire("connection reset", format!("the tunnel was reset {during}"))
        }
        _ => wire(
            "connection closed",
            format!("the tunnel closed {during}: {e}"),
        ),
    }
}

/// Opens a tunnel on `path`: the upgrade request, then its answer head.
async fn open(dial: &Dial, path: &str) -> Result<Tunnel, (Option<u16>, Option<String>, Failure)> {
    let mut stream = dial.connect().await.map_err(|e| match e {
        DialError::Connect(e) => (None, None, io_failure(&e, "at connect")),
        DialError::Tls(f) => (None, None, f),
    })?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: Upgrade\r\nUpgrade: lab-echo\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| (None, None, io_failure(&e, "sending the upgrade")))?;
    let mut buf = Vec::with_capacity(1024);
    let mut piece = [0u8; 1024];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err((None, None, wire("bad answer", "an answer head over 16 KiB")));
        }
        let n = stream
            .read(&mut piece)
            .await
            .map_err(|e| (None, None, io_failure(&e, "before the answer head")))?;
        if n == 0 {
            return Err((
                None,
                None,
                wire(
                    "connection closed",
                    "Pocket closed the connection before an answer head",
                ),
            ));
        }
        buf.extend_from_slice(&piece[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let server = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-origin")
            .then(|| v.trim().to_string())
    });
    if status != 101 {
        let failure = failure_of(status, &server, &buf[end..]).unwrap_or_else(|| {
            wire(
                &format!("{status} instead of 101"),
                format!("the upgrade was answered {status}"),
            )
        });
        return Err((Some(status), server, failure));
    }
    Ok(Tunnel { stream, server })
}

/// One message through `t` and its echo back: the bytes.
async fn round_trip(t: &mut Tunnel, n: u64) -> Result<u64, Failure> {
    let who = t.server.clone().unwrap_or_else(|| "?".into());
    let msg = format!("message {n}\n");
    t.stream
        .write_all(msg.as_bytes())
        .await
        .map_err(|e| io_failure(&e, &format!("sending to {who}")))?;
    let mut back = vec![0u8; msg.len()];
    let mut got = 0;
    while got < back.len() {
        let k = t
            .stream
            .read(&mut back[got..])
            .await
            .map_err(|e| io_failure(&e, &format!("waiting for {who}'s echo")))?;
        if k == 0 {
            return Err(wire(
                "connection closed",
                format!("Pocket closed the tunnel to {who}"),
            ));
        }
        got += k;
    }
    if back != msg.as_bytes() {
        return Err(wire("bad echo", format!("{who} echoed something else")));
    }
    Ok(msg.len() as u64)
}

/// Client `c` of the load, until `stop` or `until`.
#[allow(clippy::too_many_arguments)]
pub async fn client(
    dial: Dial,
    c: usize,
    load: Load,
    gap: Option<Duration>,
    start: Instant,
    until: Instant,
    stop: Arc<AtomicBool>,
    timeline: Timeline,
) {
    let path = load.paths[c % load.paths.len()].clone();
    let mut tunnel: Option<Tunnel> = None;
    let mut next = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        if let Some(gap) = gap {
            tokio::time::sleep_until(next.into()).await;
            next = (next + gap).max(Instant::now());
            if stop.load(Ordering::Relaxed) || Instant::now() >= until {
                break;
            }
        }
        n += 1;
        let sent = start.elapsed().as_secs_f64();
        let mut status = None;
        let mut server = tunnel.as_ref().and_then(|t| t.server.clone());
        let attempt = async {
            if tunnel.is_none() {
                match open(&dial, &path).await {
                    Ok(t) => {
                        server = t.server.clone();
                        tunnel = Some(t);
                    }
                    Err((s, who, f)) => {
                        status = s;
                        server = who;
                        return Err(f);
                    }
                }
            }
            status = Some(101);
            match tunnel.as_mut() {
                Some(t) => round_trip(t, n).await,
                None => Err(wire("connection closed", "no tunnel")),
            }
        };
        let result = tokio::time::timeout(load.timeout, attempt).await;
        let (failure, bytes) = match result {
            Ok(Ok(b)) => (None, b),
            Ok(Err(f)) => (Some(f), 0),
            Err(_) => (
                Some(wire(
                    "client timeout",
                    format!("no echo within the load's timeout ({:?})", load.timeout),
                )),
                0,
            ),
        };
        if failure.is_some() {
            // A broken or silent tunnel is dropped; the next round opens
            // a new one.
            tunnel = None;
        }
        timeline.add(Sample {
            sent,
            done: start.elapsed().as_secs_f64(),
            server,
            status,
            failure,
            bytes,
        });
    }
}
