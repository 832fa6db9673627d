//! One worker: a current-thread runtime, its Lua VM, its accept loops, and
//! the control messages that swap its policy or drain it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use super::conn::{self, Http};
use super::drain::Drain;
use super::listener::{Bound, ListenerKey};
use crate::config::{ClientTimeouts, Policy};
use crate::proxy::upstream::Upstreams;
use crate::proxy::{ConnCtx, RequestId};
use crate::script::api::conn::ConnView;
use crate::script::{Limits, WorkerScript};

/// What the control thread tells a worker.
pub enum Control {
    /// Build a VM for this policy and hold it, ready; answer on `reply`.
    Prepare {
        generation: u64,
        policy: Arc<Policy>,
        sockets: Vec<Bound>,
        reply: mpsc::Sender<Result<(), String>>,
    },
    /// Every worker is prepared: switch to the held policy, then answer
    /// (so "live" in the log means live on every worker).
    Commit {
        generation: u64,
        done: mpsc::Sender<()>,
    },
    /// Some worker failed: drop the held policy.
    Abort { generation: u64 },
    /// Stop accepting, let connections finish within `grace`, then stop.
    Shutdown { grace: Duration },
}

pub struct Worker {
    pub index: usize,
    script: RefCell<Rc<WorkerScript>>,
    pub upstreams: Rc<Upstreams>,
    seq: Cell<u64>,
    drain: Rc<Drain>,
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

/// The accept loops running on this worker, by listener.
type AcceptLoops = HashMap<ListenerKey, JoinHandle<()>>;

/// The thread body of one worker.
pub fn run(
    index: usize,
    policy: Arc<Policy>,
    limits: Limits,
    sockets: Vec<Bound>,
    ready: mpsc::Sender<Result<(), String>>,
    mut control: UnboundedReceiver<Control>,
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
        drain: Rc::new(Drain::default()),
    });
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let http = Rc::new(Http::new());
        let mut loops = AcceptLoops::new();
        if let Err(e) = start_listeners(&worker, &http, &mut loops, sockets) {
            let _ = ready.send(Err(format!("worker {index}: {e}")));
            return;
        }
        let _ = ready.send(Ok(()));

        let mut pending: Option<(u64, Rc<WorkerScript>, Vec<Bound>)> = None;
        while let Some(msg) = control.recv().await {
            match msg {
                Control::Prepare {
                    generation,
                    policy,
                    sockets,
                    reply,
                } => {
                    let result = WorkerScript::new(policy, limits).map(|s| {
                        pending = Some((generation, Rc::new(s), sockets));
                    });
                    let _ = reply.send(result.map_err(|e| format!("worker {index}: {e}")));
                }
                Control::Commit { generation, done } => {
                    if let Some((g, script, sockets)) = pending.take() {
                        if g == generation {
                            commit(&worker, &http, &mut loops, script, sockets).await;
                        }
                    }
                    let _ = done.send(());
                }
                Control::Abort { .. } => pending = None,
                Control::Shutdown { grace } => {
                    drain(&worker, &mut loops, grace).await;
                    break;
                }
            }
        }
    });
}

/// Switches to a prepared policy: new requests run on it from now on;
/// listeners it adds start accepting, listeners it drops stop.
async fn commit(
    worker: &Rc<Worker>,
    http: &Rc<Http>,
    loops: &mut AcceptLoops,
    script: Rc<WorkerScript>,
    sockets: Vec<Bound>,
) {
    let wanted: Vec<ListenerKey> = script
        .policy
        .listeners
        .iter()
        .map(ListenerKey::of)
        .collect();
    let live: Vec<SocketAddr> = script
        .policy
        .pools
        .iter()
        .flat_map(|p| p.servers.iter().map(|s| s.addr))
        .collect();
    *worker.script.borrow_mut() = script;
    let removed: Vec<ListenerKey> = loops
        .keys()
        .filter(|k| !wanted.contains(k))
        .cloned()
        .collect();
    for key in removed {
        if let Some(handle) = loops.remove(&key) {
            // Ending the loop drops its listener, closing the socket;
            // connections it accepted carry on until they finish.
            handle.abort();
            let _ = handle.await;
        }
    }
    if let Err(e) = start_listeners(worker, http, loops, sockets) {
        tracing::error!(worker = worker.index, "{e}");
    }
    worker.upstreams.forget_except(&live);
}

fn start_listeners(
    worker: &Rc<Worker>,
    http: &Rc<Http>,
    loops: &mut AcceptLoops,
    sockets: Vec<Bound>,
) -> Result<(), String> {
    for bound in sockets {
        let listener = TcpListener::from_std(bound.socket)
            .map_err(|e| format!("listener {}: {e}", bound.key.name))?;
        let task = tokio::task::spawn_local(accept_loop(
            worker.clone(),
            listener,
            bound.key.name.clone(),
            http.clone(),
        ));
        if let Some(old) = loops.insert(bound.key, task) {
            old.abort();
        }
    }
    Ok(())
}

/// Stops accepting, asks every connection to finish (keep-alive
/// connections close after their current request), waits up to `grace`.
async fn drain(worker: &Rc<Worker>, loops: &mut AcceptLoops, grace: Duration) {
    for (_, handle) in loops.drain() {
        handle.abort();
    }
    let open = worker.drain.drain();
    match tokio::time::timeout(grace, open).await {
        Err(_) => tracing::warn!(
            worker = worker.index,
            "grace period of {grace:?} over; closing connections still open"
        ),
        Ok(open) if open > 0 => {
            tracing::debug!(worker = worker.index, "{open} connections finished")
        }
        Ok(_) => {}
    }
}

fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(crate::proxy::forward::canonical_ip(addr.ip()), addr.port())
}

async fn accept_loop(worker: Rc<Worker>, listener: TcpListener, name: Arc<str>, http: Rc<Http>) {
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
        // An IPv4 client on a dual-stack `[::]` listener is `::ffff:a.b.c.d`
        // to the kernel; everything from here on (on_connect, req.peer_ip,
        // X-Forwarded-For, source hashing) sees it as the `a.b.c.d` it is.
        let peer = canonical_addr(peer);
        let _ = stream.set_nodelay(true);
        if worker.drain.is_draining() {
            return;
        }
        // on_connect runs here, before the connection has a task: a
        // refused connection costs nothing more.
        let script = worker.script();
        if script.has_on_connect() {
            let local = canonical_addr(stream.local_addr().unwrap_or(peer));
            let mut view = ConnView {
                peer,
                local,
                listener: name.clone(),
            };
            match script.on_connect(&mut view) {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    tracing::info!(listener = %name, peer = %peer, "connection rejected: {reason}");
                    continue;
                }
                Err(e) => {
                    tracing::error!(listener = %name, peer = %peer, hook = e.hook, "{}; connection closed", e.message);
                    continue;
                }
            }
        }
        let timeouts = script
            .policy
            .listener(&name)
            .map_or_else(ClientTimeouts::default, |l| l.timeouts);
        drop(script);
        let cx = Rc::new(ConnCtx::new(worker.clone(), peer, name.clone(), timeouts));
        tokio::task::spawn_local(conn::serve(
            stream,
            cx,
            http.clone(),
            worker.drain.clone(),
            timeouts,
        ));
    }
}
