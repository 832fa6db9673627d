//! The names of pools with `resolve`, asked again on the control thread:
//! one task per pool, each round's answer sent to the supervisor, which
//! makes a new generation when it changes the pool's servers
//! (reload/moved.rs). Never on a worker, never on the request path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use super::{list, remember, remembered, Found, Named, Resolver, Resolvers};
use crate::config::Policy;

/// One round's answer for a pool's names.
#[derive(Debug)]
pub struct Resolved {
    pub pool: Arc<str>,
    /// The entries and resolvers asked: an answer for a pool whose names
    /// a reload has changed since is left alone.
    pub named: Vec<Named>,
    pub resolvers: Resolvers,
    /// Per entry of `named`, what it gives now: DNS's answer, or the last
    /// good one while it fails.
    pub found: Vec<Vec<Found>>,
}

/// What a task resolves: a change to any part restarts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Job {
    pool: Arc<str>,
    every: Duration,
    named: Vec<Named>,
    resolvers: Resolvers,
}

/// The refresh tasks of the live policy's pools.
pub struct Refresher {
    tasks: HashMap<Job, JoinHandle<()>>,
    tx: UnboundedSender<Resolved>,
}

impl Refresher {
    /// The answers arrive on the receiver.
    pub fn new() -> (Refresher, UnboundedReceiver<Resolved>) {
        let (tx, rx) = unbounded_channel();
        (
            Refresher {
                tasks: HashMap::new(),
                tx,
            },
            rx,
        )
    }

    /// One task per pool of `policy` with `resolve` and a name: a task
    /// whose pool still asks the same keeps running (and its timing); the
    /// others stop, new ones start. Called on every policy change, inside
    /// the control thread's runtime.
    pub fn sync(&mut self, policy: &Policy) {
        let wanted: Vec<Job> = policy
            .pools
            .iter()
            .filter(|p| !p.named.is_empty())
            .filter_map(|p| {
                Some(Job {
                    pool: p.name.clone(),
                    every: p.resolve?,
                    named: p.named.clone(),
                    resolvers: policy.resolvers.clone(),
                })
            })
            .collect();
        let names: Vec<(Arc<str>, Arc<str>)> = wanted
            .iter()
            .flat_map(|j| j.named.iter().map(|n| (j.pool.clone(), n.text.clone())))
            .collect();
        crate::observe::metrics::dns_names_live(&names);
        self.tasks.retain(|job, task| {
            let keep = wanted.contains(job);
            if !keep {
                task.abort();
            }
            keep
        });
        for job in wanted {
            if !self.tasks.contains_key(&job) {
                let task = tokio::spawn(refresh(job.clone(), self.tx.clone()));
                self.tasks.insert(job, task);
            }
        }
    }

    /// How many pools are resolved again.
    pub fn count(&self) -> usize {
        self.tasks.len()
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

/// Every `job.every`, asks each name of the pool and sends what it gives.
/// A name that stops resolving keeps its last answer: said once when it
/// starts failing, once when it answers again.
async fn refresh(job: Job, tx: UnboundedSender<Resolved>) {
    let Job {
        pool,
        every,
        named,
        resolvers,
    } = job;
    let resolver = match Resolver::new(&resolvers) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("pool {pool}: its server names will not be resolved again: {e}");
            return;
        }
    };
    // The load resolved each (or kept its last answer): that is the start.
    let mut last: Vec<Vec<Found>> = named
        .iter()
        .map(|n| remembered(&resolvers, &n.query).unwrap_or_default())
        .collect();
    let mut failing: Vec<bool> = vec![false; named.len()];
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    // A slow DNS server delays the next round; rounds never pile up.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (i, n) in named.iter().enumerate() {
            let answer = resolver.find(&n.query).await;
            crate::observe::metrics::dns_lookup(&pool, &n.text, answer.is_ok());
            match answer {
                Ok(found) => {
                    if failing[i] {
                        failing[i] = false;
                        tracing::info!(
                            "pool {pool}: {} resolves again: {}",
                            n.text,
                            list(&addrs(&found))
                        );
                    }
                    remember(&resolvers, &n.query, &found);
                    last[i] = found;
                }
                Err(why) => {
                    if !failing[i] {
                        failing[i] = true;
                        tracing::warn!(
                            "pool {pool}: {} does not resolve ({why}; resolvers: {}): keeping its last addresses {}",
                            n.text,
                            resolvers.describe(),
                            list(&addrs(&last[i]))
                        );
                    }
                }
            }
        }
        let round = Resolved {
            pool: pool.clone(),
            named: named.clone(),
            resolvers: resolvers.clone(),
            found: last.clone(),
        };
        if tx.send(round).is_err() {
            return;
        }
    }
}

fn addrs(found: &[Found]) -> Vec<SocketAddr> {
    found.iter().map(|f| f.addr).collect()
}
