//! Worker threads and listeners. Each worker is a single-threaded tokio
//! runtime with its own Lua VM, its own listening socket per listener
//! (SO_REUSEPORT: the kernel spreads connections) and its own upstream
//! connection pool. Workers share only the policy and server state.
//!
//! A new policy reaches the workers in two phases: every worker builds its
//! VM and holds it (prepare); only when all succeeded do they switch
//! (commit). So the fleet is never split across generations.

mod conn;
mod drain;
mod h2_flood;
mod head_check;
mod listener;
mod worker;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

pub use listener::{bind_all, Bound, ListenerKey};
pub use worker::{Control, Worker};

use crate::config::Policy;
use crate::script::Limits;

/// How to run: how many workers and the script limits.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub workers: usize,
    pub limits: Limits,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            limits: Limits::default(),
        }
    }
}

/// How long a worker may take to build a new policy's VM.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running Pocket: its worker threads and how to reach them.
pub struct Running {
    threads: Vec<std::thread::JoinHandle<()>>,
    controls: Vec<UnboundedSender<Control>>,
    /// The address each listener really got (port 0 resolved).
    addrs: Vec<(ListenerKey, SocketAddr)>,
    policy: Arc<Policy>,
}

impl Running {
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub fn addr_of(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(k, _)| &*k.name == listener)
            .map(|(_, a)| *a)
    }

    /// Makes `policy` live on every worker, or on none. Listeners it adds
    /// are bound first: an address that cannot be bound refuses the whole
    /// policy.
    pub fn switch_to(&mut self, generation: u64, policy: Arc<Policy>) -> Result<(), String> {
        let added: Vec<_> = policy
            .listeners
            .iter()
            .filter(|l| !self.addrs.iter().any(|(k, _)| *k == ListenerKey::of(l)))
            .collect();
        let mut sockets = bind_all(added, self.controls.len()).map_err(|e| format!("{e:#}"))?;
        let new_addrs: Vec<(ListenerKey, SocketAddr)> = sockets
            .first()
            .map(|s| s.iter().map(|b| (b.key.clone(), b.addr)).collect())
            .unwrap_or_default();

        let (reply_tx, reply_rx) = mpsc::channel();
        for control in self.controls.iter().rev() {
            let mine = sockets.pop().unwrap_or_default();
            let sent = control.send(Control::Prepare {
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
        let mut failure = None;
        for _ in 0..self.controls.len() {
            match reply_rx.recv_timeout(PREPARE_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => {
                    failure =
                        failure.or(Some("a worker did not load the policy in time".to_string()))
                }
            }
        }
        if let Some(e) = failure {
            for control in &self.controls {
                let _ = control.send(Control::Abort { generation });
            }
            return Err(e);
        }
        let (done_tx, done_rx) = mpsc::channel();
        for control in &self.controls {
            let _ = control.send(Control::Commit {
                generation,
                done: done_tx.clone(),
            });
        }
        drop(done_tx);
        for _ in 0..self.controls.len() {
            if done_rx.recv_timeout(PREPARE_TIMEOUT).is_err() {
                tracing::warn!("a worker was slow to switch to generation {generation}");
                break;
            }
        }
        let wanted: Vec<ListenerKey> = policy.listeners.iter().map(ListenerKey::of).collect();
        self.addrs.retain(|(k, _)| wanted.contains(k));
        self.addrs.extend(new_addrs);
        self.policy = policy;
        Ok(())
    }

    /// Stops accepting everywhere, lets open connections finish for up to
    /// `grace`, and waits for the workers to end.
    pub fn shutdown(self, grace: Duration) {
        for control in &self.controls {
            let _ = control.send(Control::Shutdown { grace });
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Binds every listener for every worker, starts the workers, and returns
/// once all of them have loaded the policy, or with the first error.
/// Nothing starts half-configured: a port that cannot be bound fails
/// before any worker starts.
pub fn start(policy: Arc<Policy>, opts: &RunOptions) -> anyhow::Result<Running> {
    let workers = opts.workers.max(1);
    let mut sockets = bind_all(&policy.listeners, workers)?;
    let addrs = sockets
        .first()
        .map(|first| first.iter().map(|b| (b.key.clone(), b.addr)).collect())
        .unwrap_or_default();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut threads = Vec::with_capacity(workers);
    let mut controls = Vec::with_capacity(workers);
    for index in (0..workers).rev() {
        let mine = sockets.pop().unwrap_or_default();
        let policy = policy.clone();
        let limits = opts.limits;
        let ready = ready_tx.clone();
        let (control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
        let handle = std::thread::Builder::new()
            .name(format!("pocket-worker-{index}"))
            .spawn(move || worker::run(index, policy, limits, mine, ready, control_rx))?;
        threads.push(handle);
        controls.push(control_tx);
    }
    threads.reverse();
    controls.reverse();
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("a worker could not load the policy: {e}"),
            Err(_) => anyhow::bail!("a worker stopped while starting"),
        }
    }
    Ok(Running {
        threads,
        controls,
        addrs,
        policy,
    })
}
