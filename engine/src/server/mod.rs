//! Worker threads and listeners. Each worker is a single-threaded tokio
//! runtime with its own Lua VM, its own listening socket per listener
//! (SO_REUSEPORT: the kernel spreads connections) and its own upstream
//! connection pool. Workers share only the policy and server state.
//!
//! A new policy reaches the workers in two phases: every worker builds its
//! VM and holds it (prepare); only when all succeeded do they switch
//! (commit). So the fleet is never split across generations.

mod conn;
mod h1;
mod h2_flood;
/// Also read by `pocket explain`, to refuse an oversized head as the
/// listener does.
pub(crate) mod head_check;
mod idle;
mod listener;
pub mod maxconn;
mod proxy_protocol;
/// TLS on client connections: the handshake (what it agreed, which
/// scripts see, is `context::TlsInfo`).
pub mod tls;
mod transport;
pub mod watchdog;
pub(crate) mod worker;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

pub(crate) use conn::H1_BUF;
pub use listener::{bind_all, Bound, ListenerKey};
pub use worker::Control;

use crate::config::Policy;
use crate::script::Limits;
use watchdog::{Pulse, Watchdog};

/// How to run: how many workers, the script limits, the process's
/// connection cap.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub workers: usize,
    pub limits: Limits,
    /// At most this many client connections open at once over the whole
    /// process (HAProxy's global `maxconn`); see [`maxconn`].
    pub max_connections: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            limits: Limits::default(),
            max_connections: usize::MAX,
        }
    }
}

/// How long a worker may take to build a new policy's VM.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a wait for workers' answers looks whether one of them has
/// been found stuck meanwhile (it will never answer).
const ANSWER_POLL: Duration = Duration::from_millis(50);

/// One worker thread and how to reach it.
struct Slot {
    index: usize,
    thread: std::thread::JoinHandle<()>,
    control: UnboundedSender<Control>,
    pulse: Arc<Pulse>,
}

/// A running Pocket: its worker threads and how to reach them.
pub struct Running {
    workers: Vec<Slot>,
    /// Workers the watchdog found stuck and that were replaced; if one
    /// comes back it finishes its connections and ends.
    abandoned: Vec<Slot>,
    /// The address each listener really got (port 0 resolved).
    addrs: Vec<(ListenerKey, SocketAddr)>,
    policy: Arc<Policy>,
    generation: u64,
    limits: Limits,
    next_index: usize,
    watchdog: Arc<Watchdog>,
    stuck: Option<UnboundedReceiver<usize>>,
}

impl Running {
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// How many workers were found stuck and replaced so far.
    pub fn replaced(&self) -> usize {
        self.abandoned.len()
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The indices of the workers the watchdog finds stuck, for the
    /// control thread (which calls [`Running::replace`]). Once.
    pub fn stuck_workers(&mut self) -> Option<UnboundedReceiver<usize>> {
        self.stuck.take()
    }

    pub fn addr_of(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(k, _)| &*k.name == listener)
            .map(|(_, a)| *a)
    }

    /// Waits for one answer from each worker in `from` (by index, which
    /// `index_of` reads off an answer), up to `PREPARE_TIMEOUT`; a worker
    /// the watchdog abandons meanwhile is not waited for. Returns the
    /// answers and whether some worker was late.
    fn answers<T>(
        &self,
        rx: &mpsc::Receiver<T>,
        index_of: impl Fn(&T) -> usize,
        mut from: Vec<usize>,
    ) -> (Vec<T>, bool) {
        let deadline = Instant::now() + PREPARE_TIMEOUT;
        let mut got = Vec::new();
        while !from.is_empty() {
            match rx.recv_timeout(ANSWER_POLL) {
                Ok(answer) => {
                    let index = index_of(&answer);
                    from.retain(|&i| i != index);
                    got.push(answer);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    from.retain(|&i| {
                        !self
                            .workers
                            .iter()
                            .any(|w| w.index == i && w.pulse.is_abandoned())
                    });
                    if Instant::now() >= deadline {
                        return (got, !from.is_empty());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return (got, !from.is_empty()),
            }
        }
        (got, false)
    }

    /// The workers to talk to: not the ones the watchdog has abandoned.
    fn live(&self) -> impl Iterator<Item = &Slot> {
        self.workers.iter().filter(|w| !w.pulse.is_abandoned())
    }

    /// Makes `policy` live on every worker, or on none. Listeners it adds
    /// are bound first: an address that cannot be bound refuses the whole
    /// policy. A worker found stuck meanwhile is left out (the watchdog
    /// has it replaced), so one stuck worker does not refuse a reload.
    pub fn switch_to(&mut self, generation: u64, policy: Arc<Policy>) -> Result<(), String> {
        let added: Vec<_> = policy
            .listeners
            .iter()
            .filter(|l| !self.addrs.iter().any(|(k, _)| *k == ListenerKey::of(l)))
            .collect();
        let live: Vec<usize> = self.live().map(|w| w.index).collect();
        let mut sockets = bind_all(added, live.len()).map_err(|e| format!("{e:#}"))?;
        let new_addrs: Vec<(ListenerKey, SocketAddr)> = sockets
            .first()
            .map(|s| s.iter().map(|b| (b.key.clone(), b.addr)).collect())
            .unwrap_or_default();

        let (reply_tx, reply_rx) = mpsc::channel();
        for worker in self.live().collect::<Vec<_>>().into_iter().rev() {
            let mine = sockets.pop().unwrap_or_default();
            let sent = worker.control.send(Control::Prepare {
                generation,
                policy: policy.clone(),
                sockets: mine,
                reply: reply_tx.clone(),
            });
            if sent.is_err() {
                return Err("a worker has stopped".into());
            }
        }
        drop(reply_tx);
        let (replies, late) = self.answers(&reply_rx, |(i, _)| *i, live);
        let mut failure = replies.into_iter().find_map(|(_, r)| r.err());
        if late {
            failure = failure.or(Some("a worker did not load the policy in time".to_string()));
        }
        if let Some(e) = failure {
            for worker in &self.workers {
                let _ = worker.control.send(Control::Abort { generation });
            }
            return Err(e);
        }
        let (done_tx, done_rx) = mpsc::channel();
        let committing: Vec<usize> = self.live().map(|w| w.index).collect();
        for worker in self.live() {
            let _ = worker.control.send(Control::Commit {
                generation,
                done: done_tx.clone(),
            });
        }
        drop(done_tx);
        if self.answers(&done_rx, |i| *i, committing).1 {
            tracing::warn!("a worker was slow to switch to generation {generation}");
        }
        let wanted: Vec<ListenerKey> = policy.listeners.iter().map(ListenerKey::of).collect();
        self.addrs.retain(|(k, _)| wanted.contains(k));
        self.addrs.extend(new_addrs);
        maxconn::caps().configure(&policy);
        self.policy = policy;
        self.generation = generation;
        Ok(())
    }

    /// Takes the stuck worker `index` out of the fleet (it gets a
    /// `Shutdown`, which it obeys if it ever comes back) and starts a new
    /// worker in its place on the live policy, with fresh sockets in the
    /// same reuseport groups. Returns the new worker's index.
    pub fn replace(&mut self, index: usize, grace: Duration) -> Result<usize, String> {
        let pos = self
            .workers
            .iter()
            .position(|w| w.index == index)
            .ok_or_else(|| format!("no worker {index}"))?;
        let stuck = self.workers.remove(pos);
        let _ = stuck.control.send(Control::Shutdown { grace });
        self.abandoned.push(stuck);
        // Each stuck thread may be burning a core: replace no more of
        // them at once than the fleet has workers.
        let still_stuck = self
            .abandoned
            .iter()
            .filter(|w| !w.thread.is_finished())
            .count();
        let fleet = self.workers.len() + 1;
        if still_stuck > fleet {
            return Err(format!(
                "{} {} stuck; not starting another (at most {fleet} are replaced at once)",
                crate::words::count(still_stuck as u64, "worker"),
                crate::words::verb(still_stuck as u64, "is", "are"),
            ));
        }
        let sockets = listener::bind_for_one(&self.policy.listeners, &self.addrs)
            .map_err(|e| format!("{e:#}"))?;
        let new_index = self.next_index;
        self.next_index += 1;
        let (ready_tx, ready_rx) = mpsc::channel();
        let start = worker::Start {
            index: new_index,
            generation: self.generation,
            policy: self.policy.clone(),
            limits: self.limits,
            sockets,
            ready: ready_tx,
        };
        let slot = spawn_worker(start, &self.watchdog)
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        match ready_rx.recv_timeout(PREPARE_TIMEOUT + self.limits.load_budget) {
            Ok(Ok(())) => {
                self.workers.push(slot);
                Ok(new_index)
            }
            // Its thread has ended: not one of the fleet.
            Ok(Err(e)) => Err(e),
            Err(_) => {
                // Still loading: it joins the fleet, and the watchdog
                // watches it like any other.
                self.workers.push(slot);
                Err(format!("worker {new_index} did not start in time"))
            }
        }
    }

    /// Stops accepting everywhere, lets open connections finish for up to
    /// `grace`, and waits for the workers to end: at most `grace` and half
    /// a second, so a stuck worker cannot hold the process up (it is left
    /// behind; the process exits around it).
    pub fn shutdown(self, grace: Duration) {
        self.watchdog.stop();
        for worker in self.workers.iter().chain(&self.abandoned) {
            let _ = worker.control.send(Control::Shutdown { grace });
        }
        let deadline = Instant::now() + grace + Duration::from_millis(500);
        for worker in self.workers {
            while !worker.thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if worker.thread.is_finished() {
                let _ = worker.thread.join();
            } else {
                tracing::warn!(
                    "worker {} did not stop within the grace period; exiting without it",
                    worker.index
                );
            }
        }
    }
}

fn spawn_worker(start: worker::Start, watchdog: &Watchdog) -> std::io::Result<Slot> {
    let index = start.index;
    let (control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let pulse = watchdog.pulse(index);
    let for_worker = pulse.clone();
    let thread = std::thread::Builder::new()
        .name(format!("pocket-worker-{index}"))
        .spawn(move || worker::run(start, control_rx, for_worker))?;
    Ok(Slot {
        index,
        thread,
        control: control_tx,
        pulse,
    })
}

/// Binds every listener for every worker, starts the workers and the
/// watchdog, and returns once all of them have loaded the policy, or with
/// the first error. Nothing starts half-configured: a port that cannot be
/// bound fails before any worker starts.
pub fn start(policy: Arc<Policy>, opts: &RunOptions) -> anyhow::Result<Running> {
    // Whatever serves opens the policy's access log (`pocket run`, the
    // demo, the lab): only serving does (`pocket check` creates nothing).
    policy
        .open_log()
        .map_err(|e| anyhow::anyhow!("refusing to start:\n{e}"))?;
    let workers = opts.workers.max(1);
    let caps = maxconn::caps();
    caps.process.set_max(Some(opts.max_connections));
    caps.configure(&policy);
    let mut sockets = bind_all(&policy.listeners, workers)?;
    let addrs = sockets
        .first()
        .map(|first| first.iter().map(|b| (b.key.clone(), b.addr)).collect())
        .unwrap_or_default();
    let (stuck_tx, stuck_rx) = tokio::sync::mpsc::unbounded_channel();
    let watchdog = Watchdog::spawn(stuck_tx, opts.limits.load_budget)?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut slots = Vec::with_capacity(workers);
    for index in (0..workers).rev() {
        let mine = sockets.pop().unwrap_or_default();
        let start = worker::Start {
            index,
            generation: 1,
            policy: policy.clone(),
            limits: opts.limits,
            sockets: mine,
            ready: ready_tx.clone(),
        };
        slots.push(spawn_worker(start, &watchdog)?);
    }
    slots.reverse();
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                watchdog.stop();
                anyhow::bail!("a worker could not load the policy: {e}")
            }
            Err(_) => {
                watchdog.stop();
                anyhow::bail!("a worker stopped while starting")
            }
        }
    }
    Ok(Running {
        workers: slots,
        abandoned: Vec::new(),
        addrs,
        policy,
        generation: 1,
        limits: opts.limits,
        next_index: workers,
        watchdog,
        stuck: Some(stuck_rx),
    })
}
