//! One worker: a current-thread runtime, its Lua VM, its accept loops, and
//! the control messages that swap its policy or drain it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use super::conn::{self, Http};
use super::listener::{Bound, ListenerKey};
use super::maxconn::{caps, take_slot, Gate, Gates};
use super::watchdog::{progress, Doing, Pulse, BEAT};
use crate::config::{ClientTimeouts, Mode, Policy};
use crate::context::Drain;
use crate::proxy::{ConnCtx, Worker};
use crate::script::api::conn::ConnView;
use crate::script::{Limits, WorkerScript};

/// What the control thread tells a worker.
pub enum Control {
    /// Build a VM for this policy and hold it, ready; answer on `reply`
    /// with the worker's index.
    Prepare {
        generation: u64,
        policy: Arc<Policy>,
        sockets: Vec<Bound>,
        reply: mpsc::Sender<(usize, Result<(), String>)>,
    },
    /// Every worker is prepared: switch to the held policy, then answer
    /// with the worker's index (so "live" in the log means live on every
    /// worker).
    Commit {
        generation: u64,
        done: mpsc::Sender<usize>,
    },
    /// Some worker failed: drop the held policy.
    Abort { generation: u64 },
    /// Stop accepting, let connections finish within `grace`, then stop.
    Shutdown { grace: Duration },
}

/// The accept loops running on this worker, by listener, with their
/// listening socket's descriptor (known to the watchdog).
type AcceptLoops = HashMap<ListenerKey, (JoinHandle<()>, RawFd)>;

/// Marks the pulse ended when the worker thread ends, however it ends.
struct Ended(Arc<Pulse>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.set_ended();
    }
}

/// Builds this worker's VM for `policy`, stamped as loading `generation`
/// (the watchdog allows the load budget for it).
fn load(
    pulse: &Arc<Pulse>,
    policy: Arc<Policy>,
    limits: Limits,
    generation: u64,
) -> Result<WorkerScript, String> {
    let place = pulse.places().index(policy.path.display().to_string());
    pulse.enter(Doing::Loading, place, generation);
    let script = WorkerScript::new(policy, limits);
    pulse.leave();
    let mut script = script?;
    script.generation = generation;
    script.direct_h1 = crate::proxy::h1::takes_policy(&script.policy);
    script.watch_with(pulse.stamp.clone());
    Ok(script)
}

/// What a new worker starts with: its index, the live policy and its
/// generation, the script limits, its listening sockets, and where to say
/// it is ready (or why it could not start).
pub struct Start {
    pub index: usize,
    pub generation: u64,
    pub policy: Arc<Policy>,
    pub limits: Limits,
    pub sockets: Vec<Bound>,
    pub ready: mpsc::Sender<Result<(), String>>,
}

/// The thread body of one worker.
pub fn run(start: Start, mut control: UnboundedReceiver<Control>, pulse: Arc<Pulse>) {
    let Start {
        index,
        generation,
        policy,
        limits,
        sockets,
        ready,
    } = start;
    let _ended = Ended(pulse.clone());
    // Every connection poll and accept-loop turn on this thread counts as
    // progress for the watchdog (not only the heartbeat task, which waits
    // its turn behind a burst of runnable connections).
    let _progress = pulse.watch_this_thread();
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
    let script = match load(&pulse, policy, limits, generation) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("worker {index}: {e}")));
            return;
        }
    };
    let worker = Rc::new(Worker::new(index, script, Rc::new(Drain::default())));
    let local = tokio::task::LocalSet::new();
    let watched = pulse.clone();
    local.block_on(&runtime, async move {
        let beating = pulse.clone();
        let sampled = worker.clone();
        tokio::task::spawn_local(async move {
            let mut every = tokio::time::interval(BEAT);
            let mut beats = 0u32;
            loop {
                every.tick().await;
                beating.beat();
                // About once a second: idle server connections of the
                // direct path that went stale or that the server closed.
                beats = beats.wrapping_add(1);
                if beats.is_multiple_of(10) {
                    sampled.servers.sweep();
                }
                // The Lua heap for /metrics: a read of mlua's count, off
                // the request path.
                let bytes = sampled.script().vm.lua.used_memory();
                crate::observe::metrics::lua_memory(sampled.index, bytes);
            }
        });
        let http = Rc::new(Http::new());
        let mut loops = AcceptLoops::new();
        if let Err(e) = start_listeners(&worker, &pulse, &http, &mut loops, sockets) {
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
                    let result = load(&pulse, policy, limits, generation).map(|s| {
                        pending = Some((generation, Rc::new(s), sockets));
                    });
                    let _ = reply.send((index, result.map_err(|e| format!("worker {index}: {e}"))));
                }
                Control::Commit { generation, done } => {
                    if let Some((g, script, sockets)) = pending.take() {
                        if g == generation {
                            commit(&worker, &pulse, &http, &mut loops, script, sockets).await;
                        }
                    }
                    let _ = done.send(index);
                }
                Control::Abort { .. } => pending = None,
                Control::Shutdown { grace } => {
                    drain(&worker, &pulse, &mut loops, grace).await;
                    break;
                }
            }
        }
    });
    if watched.is_abandoned() {
        tracing::warn!(
            "worker {index}, replaced while stuck, came back: its connections have finished and it has ended"
        );
    }
}

/// Switches to a prepared policy: new requests run on it from now on;
/// listeners it adds start accepting, listeners it drops stop.
async fn commit(
    worker: &Rc<Worker>,
    pulse: &Arc<Pulse>,
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
    let live = crate::proxy::upstream::live_keys(&script.policy.pools);
    worker.set_script(script);
    let removed: Vec<ListenerKey> = loops
        .keys()
        .filter(|k| !wanted.contains(k))
        .cloned()
        .collect();
    for key in removed {
        if let Some((handle, fd)) = loops.remove(&key) {
            // Ending the loop drops its listener, closing the socket;
            // connections it accepted carry on until they finish.
            pulse.remove_socket(fd);
            handle.abort();
            let _ = handle.await;
        }
    }
    if let Err(e) = start_listeners(worker, pulse, http, loops, sockets) {
        tracing::error!(worker = worker.index, "{e}");
    }
    worker.upstreams.forget_except(&live);
    worker.servers.forget_except(&live);
}

fn start_listeners(
    worker: &Rc<Worker>,
    pulse: &Arc<Pulse>,
    http: &Rc<Http>,
    loops: &mut AcceptLoops,
    sockets: Vec<Bound>,
) -> Result<(), String> {
    for bound in sockets {
        // SAFETY: the socket owns its descriptor, which stays open and
        // the same until the AsyncFd (which owns the socket) drops.
        let socket = socket2::Socket::from(bound.socket);
        let listener =
            unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
                .map_err(|e| format!("listener {}: {e}", bound.key.name))?;
        let fd = listener.as_raw_fd();
        pulse.add_socket(fd);
        let gate = caps().listener(&bound.key);
        let task = tokio::task::spawn_local(accept_loop(
            worker.clone(),
            listener,
            bound.key.name.clone(),
            http.clone(),
            gate,
            Registered {
                pulse: pulse.clone(),
                fd,
            },
        ));
        if let Some((old, old_fd)) = loops.insert(bound.key, (task, fd)) {
            pulse.remove_socket(old_fd);
            old.abort();
        }
    }
    Ok(())
}

/// Stops accepting, asks every connection to finish (keep-alive
/// connections close after their current request), waits up to `grace`.
async fn drain(worker: &Rc<Worker>, pulse: &Pulse, loops: &mut AcceptLoops, grace: Duration) {
    for (_, (handle, fd)) in loops.drain() {
        pulse.remove_socket(fd);
        handle.abort();
    }
    let open = worker.drain.begin();
    // Parked connections wait on the keep-alive sweep, not on the drain.
    super::idle::wake_all();
    tracing::debug!(
        worker = worker.index,
        "worker draining: {} open",
        crate::words::count(worker.drain.open() as u64, "connection")
    );
    match tokio::time::timeout(grace, worker.drain.closed()).await {
        Err(_) => tracing::warn!(
            worker = worker.index,
            "grace period of {grace:?} over; closing {} still open",
            crate::words::count(worker.drain.open() as u64, "connection")
        ),
        Ok(()) if open > 0 => {
            tracing::debug!(
                worker = worker.index,
                "{} finished",
                crate::words::count(open as u64, "connection")
            )
        }
        Ok(_) => {}
    }
}

fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(crate::proxy::forward::canonical_ip(addr.ip()), addr.port())
}

/// A listening socket known to the watchdog; unregistered when its accept
/// loop ends, before the socket closes (the loop's locals drop before its
/// arguments), so the watchdog never shuts a reused descriptor.
struct Registered {
    pulse: Arc<Pulse>,
    fd: RawFd,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.pulse.remove_socket(self.fd);
    }
}

async fn accept_loop(
    worker: Rc<Worker>,
    listener: AsyncFd<socket2::Socket>,
    name: Arc<str>,
    http: Rc<Http>,
    gate: Arc<Gate>,
    registered: Registered,
) {
    let gates = Rc::new(Gates {
        listener: gate,
        process: caps().process.clone(),
        ledger: registered.pulse.ledger.clone(),
    });
    let _registered = registered;
    // Where clients connect to, when the bind says it: then no connection
    // needs to ask its socket (a wildcard bind does, per connection).
    let bound = listener
        .get_ref()
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .filter(|a| !a.ip().is_unspecified())
        .map(canonical_addr);
    let mut shared = SharedTimeouts::default();
    loop {
        // A connection is waiting; take its slot before accepting it: at
        // a cap, stop calling accept so new connections wait in the
        // kernel's accept queue, not in a starved task. (No slot is held
        // while the loop waits for a connection.)
        let mut ready = match listener.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!(listener = %name, "cannot wait on the listening socket: {e}");
                return;
            }
        };
        let slot = take_slot(&gates).await;
        progress();
        // accept4 with SOCK_NONBLOCK, as tokio's own accept: no extra
        // syscall to make the socket non-blocking.
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let accepted = match ready.try_io(|l| l.get_ref().accept4(flags)) {
            Ok(result) => result.and_then(|(s, peer)| {
                let peer = peer.as_socket().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "not an IP peer")
                })?;
                Ok((TcpStream::from_std(std::net::TcpStream::from(s))?, peer))
            }),
            Err(_would_block) => continue,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // The watchdog shut this socket (the worker was stuck): it
                // no longer listens. The worker is ending.
                tracing::debug!(listener = %name, worker = worker.index, "listening socket closed by the watchdog");
                return;
            }
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
        // TCP_NODELAY: inherited from the listening socket (listener.rs).
        if worker.drain.is_draining() {
            return;
        }
        let script = worker.script();
        let listener = script.policy.listener(&name);
        let proxied = listener.is_some_and(|l| l.accept_proxy);
        let local = bound.unwrap_or_else(|| local_of(&stream, peer));
        if let Some(l) = listener.filter(|l| l.mode == Mode::Tcp) {
            // TCP mode (tcp/): on_connect runs in the connection's task,
            // which may wait for the client's ClientHello or PROXY header.
            let (timeouts, default_pool) = (l.timeouts, l.default_pool);
            let accepted = crate::tcp::serve::Accepted {
                script,
                listener: name.clone(),
                timeouts,
                proxied,
                default_pool,
            };
            let serve = crate::tcp::serve(worker.clone(), stream, (peer, local), accepted);
            tokio::task::spawn_local(Holding {
                fut: serve,
                slot: Some(slot),
            });
            continue;
        }
        // on_connect runs here, before the connection has a task: a
        // refused connection costs nothing more. On an accept_proxy
        // listener it runs in the task, once the PROXY header has named
        // the client it is to judge.
        if !proxied && !admitted(&script, peer, local, &name) {
            continue;
        }
        let timeouts = shared.get(listener.map_or_else(ClientTimeouts::default, |l| l.timeouts));
        let settings = conn::Listener::of(listener);
        drop(script);
        if proxied {
            let (worker, http) = (worker.clone(), http.clone());
            let name = name.clone();
            let serve = async move {
                let mut stream = stream;
                // None: closed (the slot goes with the task).
                let Some((peer, local)) =
                    proxied_peer(&worker, &mut stream, (peer, local), &name, *timeouts).await
                else {
                    return;
                };
                let cx = Rc::new(ConnCtx::new(worker.clone(), peer, local, name, timeouts));
                conn::serve(stream, cx, http, settings).await;
            };
            tokio::task::spawn_local(Holding {
                fut: serve,
                slot: Some(slot),
            });
            continue;
        }
        let cx = Rc::new(ConnCtx::new(
            worker.clone(),
            peer,
            local,
            name.clone(),
            timeouts,
        ));
        let serve = conn::serve(stream, cx, http.clone(), settings);
        tokio::task::spawn_local(Holding {
            fut: serve,
            slot: Some(slot),
        });
    }
}

/// The client timeouts an accept loop's connections share: the same
/// `Rc` while its listener's timeouts stay as they are (a reload that
/// changes them starts a new one; connections keep the ones they were
/// accepted with).
#[derive(Default)]
struct SharedTimeouts(Option<Rc<ClientTimeouts>>);

impl SharedTimeouts {
    fn get(&mut self, now: ClientTimeouts) -> Rc<ClientTimeouts> {
        match &self.0 {
            Some(t) if **t == now => t.clone(),
            _ => self.0.insert(Rc::new(now)).clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's future with its connection slot, given back the
    /// moment the future is done. Not `async move { fut.await; drop(slot) }`:
    /// rustc keeps a captured future twice in such a block's state (the
    /// capture and the awaited copy, rust-lang/rust#62958), which doubled
    /// every connection's task, parked ones included.
    ///
    /// Each poll counts as the worker's progress for the watchdog
    /// ([`progress`]): a worker busy with thousands of connections is not
    /// stuck, one stuck inside a poll stops counting.
    struct Holding<F, S> {
        #[pin]
        fut: F,
        slot: Option<S>,
    }
}

impl<F: std::future::Future<Output = ()>, S> std::future::Future for Holding<F, S> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        progress();
        let this = self.project();
        let done = this.fut.poll(cx);
        if done.is_ready() {
            this.slot.take();
        }
        done
    }
}

/// The address a client connected to, from its socket (the peer's if the
/// socket cannot say, which only a socket already gone does).
fn local_of(stream: &TcpStream, peer: SocketAddr) -> SocketAddr {
    canonical_addr(stream.local_addr().unwrap_or(peer))
}

/// Whether the policy's `on_connect` lets this connection in (true when it
/// has none). `local`: where the client connected (the socket's own
/// address, or the destination a PROXY header named).
fn admitted(script: &WorkerScript, peer: SocketAddr, local: SocketAddr, name: &Arc<str>) -> bool {
    if !script.has_on_connect() {
        return true;
    }
    let tls = script
        .policy
        .listener(name)
        .is_some_and(|l| l.tls.is_some());
    let mut view = ConnView::new(peer, local, name.clone(), tls);
    match script.on_connect(&mut view) {
        Ok(None) => true,
        Ok(Some(reason)) => {
            tracing::info!(listener = %name, peer = %peer, "connection rejected: {reason}");
            false
        }
        Err(e) => {
            tracing::error!(listener = %name, peer = %peer, hook = e.hook, "{}; connection closed", e.message);
            false
        }
    }
}

/// On an `accept_proxy` listener: reads the PROXY header (within the
/// `head` timeout) and runs `on_connect` on the client it names; that
/// client and the address it connected to, or None when the connection is
/// to be closed (no header, a bad or cut one: no answer is sent). A v2
/// LOCAL or v1 UNKNOWN header keeps the socket's addresses (`socket`: its
/// peer and local address; the balancer's own connection, as HAProxy
/// does).
async fn proxied_peer(
    worker: &Worker,
    stream: &mut TcpStream,
    socket: (SocketAddr, SocketAddr),
    name: &Arc<str>,
    timeouts: ClientTimeouts,
) -> Option<(SocketAddr, SocketAddr)> {
    let (peer, local) = read_proxied(stream, socket, name, timeouts.head).await?;
    admitted(&worker.script(), peer, local, name).then_some((peer, local))
}

/// Reads an `accept_proxy` connection's PROXY header within `wait` (an
/// http listener's `timeouts.head`, a tcp listener's
/// `timeouts.client_hello`: the first bytes from the client): the client it names and the address that client connected
/// to, or None when the connection is to be closed (said in the log).
/// Used by HTTP listeners ([`proxied_peer`]) and tcp ones (tcp/serve.rs).
pub(crate) async fn read_proxied(
    stream: &mut TcpStream,
    socket: (SocketAddr, SocketAddr),
    name: &Arc<str>,
    wait: Duration,
) -> Option<(SocketAddr, SocketAddr)> {
    use super::proxy_protocol::{read_header, Header, Refused};
    let socket_peer = socket.0;
    let (peer, local) = match read_header(stream, wait).await {
        Ok(Header::Proxied {
            source,
            destination,
        }) => (canonical_addr(source), canonical_addr(destination)),
        Ok(Header::Local) => socket,
        Err(e) => {
            crate::observe::metrics::proxy_header_refused(name, e.reason());
            match &e {
                // A balancer's TCP check connects and closes or resets
                // (HAProxy closes its checks with a RST), every few
                // seconds: not worth an info line each.
                Refused::Closed => tracing::debug!(listener = %name, peer = %socket_peer, "{e}"),
                Refused::Timeout(_) => {
                    tracing::debug!(listener = %name, peer = %socket_peer, "{e}; connection closed")
                }
                Refused::Io(io) if io.kind() == std::io::ErrorKind::ConnectionReset => {
                    tracing::debug!(listener = %name, peer = %socket_peer, "{e}; connection closed")
                }
                Refused::Malformed(_) | Refused::Io(_) => {
                    tracing::info!(listener = %name, peer = %socket_peer, "{e}; connection closed")
                }
            }
            return None;
        }
    };
    Some((peer, local))
}
