//! One worker: a current-thread runtime, its Lua VM, its accept loops.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::listener::Bound;
use crate::config::Policy;
use crate::proxy::upstream::Upstreams;
use crate::proxy::{self, ConnCtx, RequestId};
use crate::script::api::conn::ConnView;
use crate::script::{Limits, WorkerScript};

pub struct Worker {
    pub index: usize,
    script: RefCell<Rc<WorkerScript>>,
    pub upstreams: Rc<Upstreams>,
    seq: Cell<u64>,
}

impl Worker {
    /// The policy a new request runs on. Requests hold their own `Rc`, so a
    /// swap never disturbs one in flight.
    #[inline]
    pub fn script(&self) -> Rc<WorkerScript> {
        self.script.borrow().clone()
    }

    #[inline]
    pub fn next_request_id(&self) -> RequestId {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        RequestId {
            worker: self.index as u32,
            seq,
        }
    }
}

/// Runs HTTP/2 stream tasks on this worker's thread: the service holds the
/// worker's Lua VM, which must never leave the thread.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// The thread body of one worker.
pub fn run(
    index: usize,
    policy: Arc<Policy>,
    limits: Limits,
    sockets: Vec<Bound>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("worker {index}: cannot start a runtime: {e}")));
            return;
        }
    };
    let script = match WorkerScript::new(policy, limits) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("worker {index}: {e}")));
            return;
        }
    };
    let worker = Rc::new(Worker {
        index,
        script: RefCell::new(Rc::new(script)),
        upstreams: Rc::new(Upstreams::default()),
        seq: Cell::new(0),
    });
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let http = Rc::new(http_builder());
        let mut listeners = Vec::new();
        for bound in sockets {
            match TcpListener::from_std(bound.socket) {
                Ok(l) => listeners.push((l, bound.listener)),
                Err(e) => {
                    let _ = ready.send(Err(format!(
                        "worker {index}: listener {}: {e}",
                        bound.listener
                    )));
                    return;
                }
            }
        }
        let _ = ready.send(Ok(()));
        let mut loops = Vec::new();
        for (listener, name) in listeners {
            loops.push(tokio::task::spawn_local(accept_loop(
                worker.clone(),
                listener,
                name,
                http.clone(),
            )));
        }
        for l in loops {
            let _ = l.await;
        }
    });
}

fn http_builder() -> auto::Builder<LocalExec> {
    let mut b = auto::Builder::new(LocalExec);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(None);
    b
}

async fn accept_loop(
    worker: Rc<Worker>,
    listener: TcpListener,
    name: Arc<str>,
    http: Rc<auto::Builder<LocalExec>>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep going.
                tracing::warn!(listener = %name, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let worker = worker.clone();
        let http = http.clone();
        let name = name.clone();
        tokio::task::spawn_local(async move {
            let script = worker.script();
            if script.has_on_connect() {
                let local = stream.local_addr().unwrap_or(peer);
                let mut view = ConnView {
                    peer,
                    local,
                    listener: name.clone(),
                };
                match script.on_connect(&mut view) {
                    Ok(None) => {}
                    Ok(Some(reason)) => {
                        tracing::info!(listener = %name, peer = %peer, "connection rejected: {reason}");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(listener = %name, peer = %peer, hook = e.hook, "{}; connection closed", e.message);
                        return;
                    }
                }
            }
            drop(script);
            let cx = Rc::new(ConnCtx {
                worker,
                peer,
                listener: name,
            });
            let service = service_fn(move |req| proxy::handle(cx.clone(), req));
            if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(peer = %peer, "client connection ended: {e}");
            }
        });
    }
}
