//! The built-in origin: a small HTTP server that says who it is, used by
//! `pocket demo`, `pocket origin`, the tests and the labs.
//!
//! - `GET /anything`: `hello from A (request 3) path /anything`
//! - `GET /health`: `ok`
//! - `GET /headers`: the request headers it received, one per line
//! - `GET /bytes/N`: N bytes, streamed in 64 KiB chunks
//! - `GET /status/N`: a response with status N
//! - `GET /delay/MS`: answers after MS milliseconds
//! - `GET /stall/N`: sends N bytes of a longer body, then goes silent
//! - with `fail_status` set (a "lying" server), everything but `/health`
//!   answers that status
//! - `POST`/`PUT` anything: reads the body and says how many bytes came
//! - `GET /echo` with `Connection: upgrade` and `Upgrade: P`: `101`, then
//!   every byte that comes is sent back (a tunnel for the lab's
//!   `websocket` load; not WebSocket framing, any protocol name)
//!
//! Every response carries `x-origin: NAME`, `x-origin-request: N` and
//! `x-origin-peer: IP`, the address the request came from (the lab tells
//! by it which of several balancers passed a request on).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub mod echo;

const CHUNK: usize = 64 * 1024;
static FILLER: [u8; CHUNK] = [b'x'; CHUNK];

/// An origin's response body: small and whole, or streamed filler.
pub enum OriginBody {
    Full(Option<Bytes>),
    Repeat {
        remaining: u64,
    },
    /// Sends `remaining` bytes, then nothing, forever.
    Stall {
        remaining: u64,
    },
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            OriginBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            OriginBody::Repeat { remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(CHUNK as u64) as usize;
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..n])))))
            }
            OriginBody::Stall { remaining } => {
                if *remaining == 0 {
                    return Poll::Pending;
                }
                let n = (*remaining).min(CHUNK as u64) as usize;
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..n])))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OriginBody::Full(b) => b.is_none(),
            OriginBody::Repeat { remaining } => *remaining == 0,
            OriginBody::Stall { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OriginBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            OriginBody::Repeat { remaining } => SizeHint::with_exact(*remaining),
            OriginBody::Stall { remaining } => SizeHint::with_exact(*remaining * 2 + 1),
        }
    }
}

/// A running origin on its own thread; stops when dropped.
pub struct OriginHandle {
    pub name: String,
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    /// The status every path but /health answers with (0: none).
    fail_status: Arc<AtomicU16>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OriginHandle {
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Starts (Some) or stops (None) lying: failing traffic while
    /// `/health` still says ok.
    pub fn set_fail_status(&self, status: Option<u16>) {
        self.fail_status
            .store(status.unwrap_or(0), Ordering::Relaxed);
    }
}

impl Drop for OriginHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How an origin misbehaves, for tests and labs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// Answer every path but `/health` with this status.
    pub fail_status: Option<u16>,
}

/// Binds `addr` (port 0 picks one) and serves on a thread of its own.
pub fn spawn(name: &str, addr: SocketAddr) -> io::Result<OriginHandle> {
    spawn_with(name, addr, Behaviour::default())
}

/// Like [`spawn`], misbehaving as told.
pub fn spawn_with(name: &str, addr: SocketAddr, behaviour: Behaviour) -> io::Result<OriginHandle> {
    let fail_status = Arc::new(AtomicU16::new(behaviour.fail_status.unwrap_or(0)));
    let failing = fail_status.clone();
    let origin_name: Arc<str> = Arc::from(name);
    on_own_thread(
        name,
        format!("origin-{name}"),
        addr,
        fail_status,
        move |listener, requests| serve_with(listener, origin_name, requests, failing),
    )
}

/// Binds `addr` (port 0 picks one) and runs `serve` on it, on a thread
/// named `thread` with a runtime of its own, until the handle is dropped
/// (which ends the runtime and every connection with it). `serve` gets
/// the handle's counter to count what it serves. Shared by the HTTP and
/// the echo origins.
pub(crate) fn on_own_thread<F, Fut>(
    name: &str,
    thread: String,
    addr: SocketAddr,
    fail_status: Arc<AtomicU16>,
    serve: F,
) -> io::Result<OriginHandle>
where
    F: FnOnce(TcpListener, Arc<AtomicU64>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let requests = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let counter = requests.clone();
    let label = thread.clone();
    let thread = std::thread::Builder::new().name(thread).spawn(move || {
        runtime.block_on(async move {
            let listener = match TcpListener::from_std(std_listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("{label}: {e}");
                    return;
                }
            };
            tokio::select! {
                _ = serve(listener, counter) => {}
                _ = stop_rx => {}
            }
        });
    })?;
    Ok(OriginHandle {
        name: name.to_string(),
        addr,
        requests,
        fail_status,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// Serves forever on `listener`.
pub async fn serve(listener: TcpListener, name: Arc<str>, requests: Arc<AtomicU64>) {
    serve_with(listener, name, requests, Arc::new(AtomicU16::new(0))).await
}

async fn serve_with(
    listener: TcpListener,
    name: Arc<str>,
    requests: Arc<AtomicU64>,
    fail_status: Arc<AtomicU16>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        let requests = requests.clone();
        let fail_status = fail_status.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                answer(
                    name.clone(),
                    requests.clone(),
                    fail_status.clone(),
                    peer.ip(),
                    req,
                )
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<OriginBody> {
    let mut r = Response::new(OriginBody::Full(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn answer(
    name: Arc<str>,
    requests: Arc<AtomicU64>,
    fail_status: Arc<AtomicU16>,
    peer: std::net::IpAddr,
    req: Request<Incoming>,
) -> Result<Response<OriginBody>, Infallible> {
    let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
    let path = req.uri().path().to_string();
    if path == "/echo" {
        if let Some(mut resp) = echo_upgrade(req) {
            if let Ok(v) = http::HeaderValue::from_str(&name) {
                resp.headers_mut().insert("x-origin", v);
            }
            return Ok(resp);
        }
        return Ok(text(
            StatusCode::BAD_REQUEST,
            "/echo needs an upgrade\n".into(),
        ));
    }
    let failing =
        Some(fail_status.load(Ordering::Relaxed)).filter(|&s| s != 0 && path != "/health");
    let mut resp = if let Some(code) = failing {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        text(status, format!("{name} fails on purpose ({code})\n"))
    } else if let Some(n) = path
        .strip_prefix("/stall/")
        .and_then(|s| s.parse::<u64>().ok())
    {
        Response::new(OriginBody::Stall { remaining: n })
    } else if req.method() == Method::POST || req.method() == Method::PUT {
        let mut body = req.into_body();
        let mut total: u64 = 0;
        let mut failed = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            Some(e) => text(
                StatusCode::BAD_REQUEST,
                format!("{name} failed reading the body after {total} bytes: {e}\n"),
            ),
            None => text(StatusCode::OK, format!("{name} received {total} bytes\n")),
        }
    } else if path == "/health" {
        text(StatusCode::OK, "ok\n".into())
    } else if path == "/headers" {
        let mut out = String::new();
        for (k, v) in req.headers() {
            out.push_str(&format!(
                "{}: {}\n",
                k,
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
        text(StatusCode::OK, out)
    } else if let Some(size) = path
        .strip_prefix("/bytes/")
        .and_then(|s| s.parse::<u64>().ok())
    {
        let mut r = Response::new(OriginBody::Repeat { remaining: size });
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        r
    } else if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        text(status, format!("{name} answered {code}\n"))
    } else if let Some(ms) = path
        .strip_prefix("/delay/")
        .and_then(|s| s.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms.min(600_000))).await;
        text(
            StatusCode::OK,
            format!("hello from {name} (request {n}) after {ms} ms\n"),
        )
    } else {
        text(
            StatusCode::OK,
            format!("hello from {name} (request {n}) path {path}\n"),
        )
    };
    let headers = resp.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(&name) {
        headers.insert("x-origin", v);
    }
    headers.insert("x-origin-request", http::HeaderValue::from(n));
    if let Ok(v) = http::HeaderValue::from_str(&peer.to_string()) {
        headers.insert("x-origin-peer", v);
    }
    Ok(resp)
}

/// `/echo`: agrees to any upgrade, then sends back every byte that comes
/// until the peer closes. None: the request asked for no upgrade.
fn echo_upgrade(mut req: Request<Incoming>) -> Option<Response<OriginBody>> {
    let proto = req.headers().get(http::header::UPGRADE)?.clone();
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on.await else { return };
        let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
    });
    let mut resp = Response::new(OriginBody::Full(None));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(http::header::UPGRADE, proto);
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    Some(resp)
}
