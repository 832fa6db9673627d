//! The admin listener's thread: one tokio current-thread runtime, an
//! accept loop, HTTP/1.1 by hyper. Stopped by dropping its [`Running`]
//! (a reload that moves or removes it): the loop ends, and the runtime,
//! dropped with it, cancels the connections still open.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use super::Shared;
use crate::config::AdminSpec;

/// How many admin connections may be open at once; more wait in the
/// kernel's accept queue (the page polls once a second: a handful is a
/// crowd).
const MAX_CONNECTIONS: usize = 64;

/// A started listener. Dropping it stops it.
pub struct Running {
    pub addr: SocketAddr,
    pub spec: AdminSpec,
    /// The spec the connections read (a reload changes the token).
    live_spec: Arc<RwLock<AdminSpec>>,
    _stop: oneshot::Sender<()>,
    /// Ends (a message, or its sender dropped) once the socket is closed.
    closed: std::sync::mpsc::Receiver<()>,
}

impl Running {
    /// Stops the listener and returns once its address is free (up to
    /// `wait`), so that another socket can bind the same port. The
    /// connections under way still finish, as when dropped.
    pub fn stop_and_wait(self, wait: std::time::Duration) {
        let Running { _stop, closed, .. } = self;
        drop(_stop);
        let _ = closed.recv_timeout(wait);
    }

    pub fn set_spec(&mut self, spec: AdminSpec) {
        *self.live_spec.write().unwrap_or_else(|e| e.into_inner()) = spec.clone();
        self.spec = spec;
    }
}

/// Binds `addr` (SO_REUSEADDR, so a restart finds it free at once).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Serves on `socket` from a thread of its own.
pub fn start(
    socket: std::net::TcpListener,
    spec: AdminSpec,
    shared: Arc<Shared>,
) -> anyhow::Result<Running> {
    let addr = socket.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let (closed_tx, closed) = std::sync::mpsc::channel();
    let live_spec = Arc::new(RwLock::new(spec.clone()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let specs = live_spec.clone();
    std::thread::Builder::new()
        .name("pocket-admin".into())
        .spawn(move || {
            rt.block_on(accept_loop(socket, specs, shared, stop_rx, closed_tx));
        })?;
    Ok(Running {
        addr,
        spec,
        live_spec,
        _stop: stop_tx,
        closed,
    })
}

async fn accept_loop(
    socket: std::net::TcpListener,
    spec: Arc<RwLock<AdminSpec>>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
    closed: std::sync::mpsc::Sender<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(socket) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("admin listener: {e}");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    serve(&listener, &spec, &shared, &slots, &mut stop).await;
    // Stopped: the address is let go at once, and the answers under way
    // (the reload that moved this listener) are given before the
    // runtime goes, for up to FINISH.
    drop(listener);
    let _ = closed.send(());
    let _ = tokio::time::timeout(FINISH, slots.acquire_many(MAX_CONNECTIONS as u32)).await;
}

/// How long a stopped listener's open connections get to finish.
const FINISH: std::time::Duration = std::time::Duration::from_secs(5);

async fn serve(
    listener: &tokio::net::TcpListener,
    spec: &Arc<RwLock<AdminSpec>>,
    shared: &Arc<Shared>,
    slots: &Arc<tokio::sync::Semaphore>,
    stop: &mut oneshot::Receiver<()>,
) {
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            _ = &mut *stop => return,
        };
        let Ok(permit) = permit else { return };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!("admin listener: accept: {e}");
                    // EMFILE and the like: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut *stop => return,
        };
        let spec = spec.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let spec = spec.read().unwrap_or_else(|e| e.into_inner()).clone();
                let shared = shared.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        super::api::answer(req, &spec, &shared, peer).await,
                    )
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("admin connection from {peer}: {e}");
            }
            drop(permit);
        });
    }
}
