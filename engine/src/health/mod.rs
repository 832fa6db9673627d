//! Active health checks: one task per checked health on the control
//! thread, never on the request path. An address in several pools has one
//! health and one check, the first checking pool's by name (the loader
//! refuses differing checks; see `config::load`), unless a pool keeps its
//! own (`own_health`). A verdict flips a server only after `rise` passes or
//! `fall` failures in a row; the state is an atomic every worker reads. A
//! reload keeps the tasks of checks that did not change.

mod held;
mod history;
mod probe;

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinHandle;

use crate::config::Policy;
use crate::lb::{CheckKind, CheckSpec, HealthKey, ServerState};
use crate::script::WorkerScript;

pub use held::Holding;
pub use history::{CheckLog, LastCheck, WINDOW};
pub use probe::{exchange, exchange_until, http, probe, HttpAnswer, Transport};

/// The running check tasks, by health, owning pool and check.
#[derive(Default)]
pub struct Checker {
    tasks: HashMap<(HealthKey, Arc<str>, String), JoinHandle<()>>,
}

impl Checker {
    /// Starts checks the policy has and the checker does not, stops the
    /// ones it no longer has. Call from within the control runtime.
    ///
    /// Scripted checks run in `control`, the policy's VM on the control
    /// thread; they restart with each new generation's VM.
    pub fn sync(&mut self, policy: &Policy, control: Option<&Rc<WorkerScript>>) {
        let mut wanted = HashMap::new();
        let mut owned: HashSet<HealthKey> = HashSet::new();
        for (index, pool) in policy.pools.iter().enumerate() {
            let Some(spec) = &pool.check else { continue };
            let script = match (&spec.kind, control) {
                (CheckKind::Script, Some(c)) => Some(c.clone()),
                (CheckKind::Script, None) => continue,
                _ => None,
            };
            let fingerprint = match &script {
                Some(c) => format!("{}#{:p}", spec.fingerprint(), Rc::as_ptr(c)),
                None => spec.fingerprint(),
            };
            // Checks go as the pool's requests do (TLS, HTTP/2).
            let fingerprint = format!("{fingerprint}|{:?}|{}", pool.tls, pool.protocol.name());
            for server in &pool.servers {
                // Pools come in name order: the first one checks.
                let health = server.state.health.key();
                if !owned.insert(health.clone()) {
                    continue;
                }
                let transport = Transport {
                    tls: pool.tls.clone(),
                    protocol: pool.protocol,
                    name: server.name.clone(),
                    send_proxy: spec.send_proxy,
                };
                wanted.insert(
                    (health, pool.name.clone(), fingerprint.clone()),
                    (
                        server.state.clone(),
                        spec.clone(),
                        script.clone(),
                        index,
                        transport,
                    ),
                );
            }
        }
        self.tasks.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (state, spec, script, index, transport)) in wanted {
            self.tasks.entry(key).or_insert_with(|| {
                tokio::task::spawn_local(check_loop(state, spec, script, index, transport))
            });
        }
    }

    pub fn count(&self) -> usize {
        self.tasks.len()
    }
}

async fn check_loop(
    state: Arc<ServerState>,
    spec: Arc<CheckSpec>,
    script: Option<Rc<WorkerScript>>,
    pool: usize,
    transport: Transport,
) {
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = Instant::now();
        let run = async {
            match &script {
                Some(s) => s.run_check(pool, state.addr, spec.timeout).await,
                None => probe(state.addr, &spec.kind, &transport).await,
            }
        };
        // The timeout does not count time other checks held this thread.
        let (verdict, held) = held::within(spec.timeout, run).await;
        let verdict = match verdict {
            Some(v) => v,
            None => Err(format!(
                "no answer within {:?}{}",
                spec.timeout,
                unended_send(&spec.kind)
            )),
        };
        let (ok, reason) = match verdict {
            Ok(what) => (true, what),
            Err(why) => (false, why),
        };
        tracing::debug!(
            server = %state.addr,
            pool = %state.pool,
            "check {} in {:?}: {reason}",
            if ok { "passed" } else { "failed" },
            started.elapsed()
        );
        state.health.checks.record(ok, &reason);
        state.observe_check(ok, spec.rise, spec.fall, &reason);
        // A check whose Lua held the control thread for longer than its
        // interval (a runaway, stopped at its timeout) waits as long
        // before it runs again: the other checks get the thread at least
        // half of the time.
        if held > spec.interval {
            tokio::time::sleep(held).await;
            tick.reset();
        }
    }
}

/// A line check's `send` with no line end (`"PING"` for `"PING\r\n"`)
/// is the likely reason a server said nothing: most line protocols wait
/// for the end of the command. Said beside the timeout.
fn unended_send(kind: &crate::lb::CheckKind) -> String {
    match kind {
        crate::lb::CheckKind::Expect {
            send: Some(bytes), ..
        } if !bytes.ends_with(b"\n") => format!(
            " (sent {} with no line end)",
            crate::words::count(bytes.len() as u64, "byte")
        ),
        _ => String::new(),
    }
}
