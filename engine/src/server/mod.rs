//! Worker threads and listeners. Each worker is a single-threaded tokio
//! runtime with its own Lua VM, its own listening socket per listener
//! (SO_REUSEPORT: the kernel spreads connections) and its own upstream
//! connection pool. Workers share only the policy and server state.

mod listener;
mod worker;

use std::sync::mpsc;
use std::sync::Arc;

pub use listener::bind_all;
pub use worker::Worker;

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

/// A running Pocket: its worker threads.
pub struct Running {
    pub threads: Vec<std::thread::JoinHandle<()>>,
    /// The address each listener really got (port 0 resolved).
    pub addrs: Vec<(Arc<str>, std::net::SocketAddr)>,
}

impl Running {
    pub fn addr_of(&self, listener: &str) -> Option<std::net::SocketAddr> {
        self.addrs
            .iter()
            .find(|(n, _)| &**n == listener)
            .map(|(_, a)| *a)
    }
}

/// Binds every listener for every worker, starts the workers, and returns
/// once all of them have loaded the policy, or with the first error.
/// Nothing starts half-configured: a port that cannot be bound fails
/// before any worker starts.
pub fn start(policy: Arc<Policy>, opts: &RunOptions) -> anyhow::Result<Running> {
    let workers = opts.workers.max(1);
    let mut sockets = bind_all(&policy, workers)?;
    let addrs = sockets
        .first()
        .map(|first| first.iter().map(|b| (b.listener.clone(), b.addr)).collect())
        .unwrap_or_default();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut threads = Vec::with_capacity(workers);
    for index in (0..workers).rev() {
        let mine = sockets.pop().unwrap_or_default();
        let policy = policy.clone();
        let limits = opts.limits;
        let ready = ready_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("pocket-worker-{index}"))
            .spawn(move || worker::run(index, policy, limits, mine, ready))?;
        threads.push(handle);
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("a worker could not load the policy: {e}"),
            Err(_) => anyhow::bail!("a worker stopped while starting"),
        }
    }
    Ok(Running { threads, addrs })
}
