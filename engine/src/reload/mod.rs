//! Hot reload: the control thread watches the policy's folder and listens
//! for SIGHUP; a new policy is loaded and validated once, here, then made
//! live on every worker at once ([`crate::server::Running::switch_to`]).
//! A policy that fails anywhere is refused whole and the running one keeps
//! serving. SIGTERM and SIGINT drain and stop.

mod diff;
mod files;
mod moved;
mod procstate;
mod watch;

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub use diff::describe_changes;
pub use files::{serving, stem, RunFiles, Serving, Status};
pub use procstate::{is_stopped, with_process_state, STOPPED};

use tokio::sync::mpsc::UnboundedReceiver;

use crate::admin::{Admin, Command, LastReload, View};
use crate::config::load_policy;
use crate::health::Checker;
use crate::lb::{CheckKind, HealthEvent, StateRegistry};
use crate::script::{Limits, WorkerScript};
use crate::server::Running;

/// Saves closer together than this are one reload (editors write a file in
/// several steps; a storm of saves ends in one reload of the last content).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// A storm never delays a reload longer than this.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// How often passive cool-downs are looked at.
const COOLDOWN_TICK: Duration = Duration::from_millis(250);
/// How often the status file's connection counts are brought up to date.
const STATUS_TICK: Duration = Duration::from_secs(1);
/// SIGTERM ends the process within the grace period and this, whatever a
/// stuck worker does.
const EXIT_MARGIN: Duration = Duration::from_millis(900);

pub struct Supervisor {
    path: PathBuf,
    events: Option<UnboundedReceiver<HealthEvent>>,
    checker: Checker,
    /// The policy's VM on this thread, for `on_health` and scripted checks.
    control: Option<Rc<WorkerScript>>,
    registry: Arc<StateRegistry>,
    running: Running,
    generation: u64,
    status: Status,
    files: RunFiles,
    watch: bool,
    /// `pocket run --lab-faults`: SIGUSR2 arms the lab's `hang_worker`.
    lab_faults: bool,
    grace: Duration,
    /// The admin listener (stats page, API, metrics), as the live
    /// policy's `admin` key says.
    admin: Admin,
    /// Pools with `resolve`: their names asked again (crate::dns); the
    /// answers come on `resolved`.
    refresher: crate::dns::Refresher,
    resolved: Option<UnboundedReceiver<crate::dns::Resolved>>,
    /// Servers DNS answers removed, by pool, address and `own_health`, and
    /// since when: their state is forgotten after a while (moved.rs).
    gone: moved::Gone,
}

impl Supervisor {
    /// `events` receives the health changes of the servers `registry`
    /// makes (see [`StateRegistry::set_events`]).
    pub fn new(
        path: PathBuf,
        registry: Arc<StateRegistry>,
        events: UnboundedReceiver<HealthEvent>,
        running: Running,
        watch: bool,
    ) -> Supervisor {
        registry.went_live(running.policy());
        crate::observe::metrics::generation_live(1);
        let admin = Admin::new(View {
            policy: running.policy().clone(),
            generation: 1,
            listeners: Vec::new(),
            last_reload: LastReload {
                reloaded: false,
                ok: true,
                at_unix_ms: crate::admin::unix_ms(),
                error: None,
            },
        });
        let files = RunFiles::for_process(&path, std::process::id());
        let (refresher, resolved) = crate::dns::Refresher::new();
        let status = Status {
            pid: std::process::id(),
            policy: files::escape_path(&path),
            generation: 1,
            workers: running.workers(),
            ..Status::default()
        };
        Supervisor {
            path,
            events: Some(events),
            checker: Checker::default(),
            control: None,
            registry,
            running,
            generation: 1,
            status,
            files,
            watch,
            lab_faults: false,
            grace: Duration::from_secs(30),
            admin,
            refresher,
            resolved: Some(resolved),
            gone: Default::default(),
        }
    }

    /// Honour the failure lab's balancer faults (SIGUSR2: the next hook
    /// call hangs its worker). For `pocket lab` and tests only.
    pub fn with_lab_faults(mut self, on: bool) -> Supervisor {
        self.lab_faults = on;
        self
    }

    /// Serves until SIGTERM or SIGINT, reloading on file changes and
    /// SIGHUP; then drains for up to `grace` and returns.
    pub fn run(mut self, grace: Duration) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // A LocalSet: scripted checks run in this thread's own Lua VM.
        let local = tokio::task::LocalSet::new();
        self.grace = grace;
        let stop = stop_signals(grace, self.lab_faults, self.files.clone())?;
        let result = local.block_on(&rt, self.serve(stop));
        if result.is_err() {
            self.files.remove();
        }
        result?;
        // Still listed while it drains, as draining: `pocket reload`
        // leaves it alone, and `pocket status` does not hide it.
        self.status.draining = true;
        self.files.write(&self.status);
        tracing::info!("draining: no new connections; open ones get up to {grace:?} to finish");
        self.running.shutdown(grace);
        self.files.remove();
        crate::observe::access_log::flush();
        tracing::info!("stopped");
        Ok(())
    }

    async fn serve(
        &mut self,
        mut stop: tokio::sync::mpsc::UnboundedReceiver<()>,
    ) -> anyhow::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        // logrotate's convention (nginx's too): reopen the access logs.
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut stuck = self
            .running
            .stuck_workers()
            .ok_or_else(|| anyhow::anyhow!("supervisor started twice"))?;
        let mut status_tick = tokio::time::interval(STATUS_TICK);
        let (mut watcher, mut changes) = if self.watch {
            let (mut w, rx) = watch::watch_folder_of(&self.path)?;
            w.follow(self.running.policy());
            (Some(w), Some(rx))
        } else {
            (None, None)
        };
        let mut events = self
            .events
            .take()
            .ok_or_else(|| anyhow::anyhow!("supervisor started twice"))?;
        let mut resolved = self
            .resolved
            .take()
            .ok_or_else(|| anyhow::anyhow!("supervisor started twice"))?;
        self.policy_changed();
        // A start whose admin address cannot be bound is refused.
        let spec = self.running.policy().admin.clone();
        let prepared = self
            .admin
            .prepare(spec.as_ref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.admin.commit(spec.as_ref(), prepared)?;
        self.show_live();
        let mut commands = self
            .admin
            .take_commands()
            .ok_or_else(|| anyhow::anyhow!("supervisor started twice"))?;
        let mut cooldowns = tokio::time::interval(COOLDOWN_TICK);
        self.refresh_counts();
        // Also clears files that Pockets killed outright left behind.
        let others: Vec<Serving> = files::serving(&self.path)
            .into_iter()
            .filter(|s| s.pid != self.status.pid as i32)
            .collect();
        tell_about_others(&others);
        self.files.write(&self.status);
        for l in &self.running.policy().listeners {
            if let Some(addr) = self.running.addr_of(&l.name) {
                tracing::info!("listener {} listening on {}", l.name, addr);
            }
        }
        tracing::info!(
            "pocket ready: {}, policy {}, generation {}",
            crate::words::count(self.running.workers() as u64, "worker"),
            self.path.display(),
            self.generation
        );

        let mut first_change: Option<tokio::time::Instant> = None;
        let mut last_change = tokio::time::Instant::now();
        loop {
            let due = first_change.map(|first| (last_change + DEBOUNCE).min(first + DEBOUNCE_MAX));
            tokio::select! {
                Some(()) = async { match changes.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                    let now = tokio::time::Instant::now();
                    first_change.get_or_insert(now);
                    last_change = now;
                }
                _ = async { match due { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    first_change = None;
                    if self.reload("file changed").is_ok() {
                        if let Some(w) = &mut watcher { w.follow(self.running.policy()); }
                    }
                }
                _ = hup.recv() => {
                    if self.reload("SIGHUP").is_ok() {
                        if let Some(w) = &mut watcher { w.follow(self.running.policy()); }
                    }
                }
                Some(command) = commands.recv() => {
                    self.command(command);
                    // A reload from the admin API may name other certificates.
                    if let Some(w) = &mut watcher { w.follow(self.running.policy()); }
                }
                _ = usr1.recv() => crate::observe::access_log::reopen(),
                Some(event) = events.recv() => self.health_changed(event),
                Some(answer) = resolved.recv() => self.servers_moved(answer),
                _ = cooldowns.tick() => self.end_cooldowns(),
                Some(index) = stuck.recv() => self.replace_stuck(index),
                _ = status_tick.tick() => {
                    if self.refresh_counts() {
                        self.files.refresh(&self.status);
                    }
                }
                _ = stop.recv() => return Ok(()),
            }
        }
    }

    /// A worker the watchdog found stuck (it has logged what it was
    /// doing): a new worker takes its place.
    fn replace_stuck(&mut self, index: usize) {
        match self.running.replace(index, self.grace) {
            Ok(new) => tracing::warn!("worker {new} started in place of stuck worker {index}"),
            Err(e) => tracing::error!("worker {index} is stuck and was not replaced: {e}"),
        }
        self.status.workers = self.running.workers();
        self.status.workers_replaced = self.running.replaced();
        self.files.write(&self.status);
    }

    /// Brings the status's connection counts up to date; true if they
    /// changed.
    fn refresh_counts(&mut self) -> bool {
        let caps = crate::server::maxconn::caps();
        let listeners: Vec<String> = caps
            .listener_counts(self.running.policy())
            .into_iter()
            .map(|(name, open, max, reached)| {
                let max = max.map_or_else(|| "none".to_string(), |m| m.to_string());
                format!("{name}: open {open}, max_connections {max}, reached {reached}")
            })
            .collect();
        let before = (
            self.status.connections,
            self.status.max_connections,
            self.status.max_connections_reached,
        );
        let now = (
            caps.process.open(),
            caps.process.max().unwrap_or(usize::MAX),
            caps.process.reached(),
        );
        let (pools, servers) = pool_lines(self.running.policy());
        let admin = self.admin.addr().map(|a| {
            let with = if self
                .running
                .policy()
                .admin
                .as_ref()
                .is_some_and(|s| s.token.is_some())
            {
                "token required"
            } else {
                "no token"
            };
            format!("http://{a}/ ({with})")
        });
        let changed = before != now
            || listeners != self.status.listeners
            || pools != self.status.pools
            || servers != self.status.servers
            || admin != self.status.admin;
        self.status.pools = pools;
        self.status.servers = servers;
        self.status.admin = admin;
        (
            self.status.connections,
            self.status.max_connections,
            self.status.max_connections_reached,
        ) = now;
        self.status.listeners = listeners;
        changed
    }

    /// Checks and the control VM follow the live policy.
    fn policy_changed(&mut self) {
        let policy = self.running.policy().clone();
        let scripted = policy.pools.iter().any(|p| {
            p.check
                .as_ref()
                .is_some_and(|c| matches!(c.kind, CheckKind::Script))
        });
        self.control = if policy.hooks.on_health || scripted {
            match WorkerScript::new(policy.clone(), Limits::default()) {
                Ok(s) => Some(Rc::new(s)),
                Err(e) => {
                    tracing::error!("on_health and scripted checks will not run: {e}");
                    None
                }
            }
        } else {
            None
        };
        self.checker.sync(&policy, self.control.as_ref());
        self.refresher.sync(&policy);
        // A health whose last check went with this change.
        self.end_cooldowns();
    }

    /// One line for a health change, naming every pool that sees it
    /// (the address's shared health is every pool's that lists it, but
    /// for pools with `own_health`), and `on_health` once per pool.
    fn health_changed(&mut self, e: HealthEvent) {
        let state = if e.up { "UP" } else { "DOWN" };
        let policy = self.running.policy().clone();
        let pools: Vec<&Arc<crate::lb::Pool>> = policy
            .pools
            .iter()
            .filter(|p| e.concerns(&p.name, p.own_health))
            .filter(|p| p.servers.iter().any(|s| s.addr == e.addr))
            .collect();
        let names: Vec<&str> = pools.iter().map(|p| &*p.name).collect();
        let of = match names.as_slice() {
            [] => String::new(),
            [one] => format!(" of pool {one}"),
            many => format!(" of pools {}", many.join(", ")),
        };
        let left = match pools.as_slice() {
            [] => String::new(),
            [one] => format!("; {}/{} servers up", one.servers_up(), one.servers.len()),
            many => {
                let each: Vec<String> = many
                    .iter()
                    .map(|p| format!("{} {}/{}", p.name, p.servers_up(), p.servers.len()))
                    .collect();
                format!("; servers up: {}", each.join(", "))
            }
        };
        if e.up {
            tracing::info!("server {}{of} is {state}: {}{left}", e.addr, e.reason);
        } else {
            tracing::warn!("server {}{of} is {state}: {}{left}", e.addr, e.reason);
        }
        if let Some(control) = &self.control {
            for name in names {
                if let Err(err) = control.on_health(name, &e.addr.to_string(), e.up, &e.reason) {
                    tracing::error!(hook = err.hook, "{}", err.message);
                }
            }
        }
    }

    /// A health no pool of the live policy checks any more (a reload
    /// removed its check, the pool that checked it went away, or
    /// `own_health` changed) is not left down by a check that no longer
    /// runs: down by a check (or by `start = "down"`), it is up at once, as
    /// HAProxy assumes a server without a check is up; down by live
    /// traffic, it rests its passive cool-down. Called on every policy
    /// change and every [`COOLDOWN_TICK`].
    ///
    /// The cool-down is the longest `cooldown` of the pools that list the
    /// address and count its failures (`passive.after` above 0): a pool
    /// with `passive = false` adds nothing to the streak, so its cooldown
    /// (10 s by default) does not count either. If none counts (the pool
    /// that did went away), the longest of all of them.
    fn end_cooldowns(&mut self) {
        let policy = self.running.policy();
        let checked: std::collections::HashSet<crate::lb::HealthKey> = policy
            .pools
            .iter()
            .filter(|p| p.check.is_some())
            .flat_map(|p| p.servers.iter().map(|s| s.state.health.key()))
            .collect();
        // Per health: the longest cooldown of the pools counting its
        // failures, and of all pools.
        type Rest<'a> = (&'a Arc<crate::lb::Health>, Option<Duration>, Duration);
        let mut rest: std::collections::HashMap<crate::lb::HealthKey, Rest> =
            std::collections::HashMap::new();
        for pool in &policy.pools {
            for s in &pool.servers {
                let health = &s.state.health;
                if health.is_up() || checked.contains(&health.key()) {
                    continue;
                }
                let entry = rest
                    .entry(health.key())
                    .or_insert((health, None, Duration::ZERO));
                if pool.passive.after > 0 {
                    entry.1 = Some(entry.1.unwrap_or_default().max(pool.passive.cooldown));
                }
                entry.2 = entry.2.max(pool.passive.cooldown);
            }
        }
        for (health, counting, any) in rest.into_values() {
            if !health.down_by_traffic() {
                health.set_up(true, "no check any more");
                continue;
            }
            let cooldown = counting.unwrap_or(any);
            if health.down_since().is_some_and(|t| t.elapsed() >= cooldown) {
                health.set_up(true, format!("cool-down of {cooldown:?} over"));
            }
        }
    }

    /// An action of the admin API.
    fn command(&mut self, command: Command) {
        match command {
            Command::Reload(reply) => {
                let _ = reply.send(self.reload("admin API"));
            }
            Command::Weight {
                pool,
                server,
                weight,
                reply,
            } => {
                let _ = reply.send(self.set_weight(&pool, &server, weight));
            }
        }
    }

    /// Gives `server` of `pool` the weight `weight`, in a new generation
    /// of the live policy (the balancers' tables are built at load); the
    /// weight stays with the server's state, so later reloads keep it.
    fn set_weight(&mut self, pool: &str, server: &str, weight: u32) -> Result<u64, String> {
        let live = self.running.policy().clone();
        let state = live
            .pools
            .iter()
            .find(|p| &*p.name == pool)
            .and_then(|p| p.servers.iter().find(|s| &*s.addr_text == server))
            .map(|s| s.state.clone())
            .ok_or_else(|| format!("no server {server} in pool \"{pool}\""))?;
        let before = state.weight_or(0);
        state.set_weight(weight);
        let policy = Arc::new(live.reweighted());
        match self.go_live(policy) {
            Ok(generation) => {
                tracing::info!(
                    "admin API: server {server} of pool {pool} has weight {weight}; generation {generation} is live"
                );
                Ok(generation)
            }
            Err(e) => {
                state.set_weight(before);
                Err(format!("weight not changed: {e}"))
            }
        }
    }

    /// Makes `policy`, the live one with some servers changed (a weight
    /// set through the admin API, what a name resolves to now), live as
    /// the next generation, as a reload does but without loading the
    /// file. Returns the generation, or why the workers did not take it.
    fn go_live(&mut self, policy: Arc<crate::config::Policy>) -> Result<u64, String> {
        let generation = self.generation + 1;
        self.running.switch_to(generation, policy.clone())?;
        self.registry.went_live(&policy);
        self.generation = generation;
        self.status.generation = generation;
        // The gauge follows every generation; `pocket_reloads_total`
        // counts reloads of the file only.
        crate::observe::metrics::generation_live(generation);
        self.show_live();
        self.refresh_counts();
        self.files.write(&self.status);
        self.policy_changed();
        Ok(generation)
    }

    /// What the admin listener shows follows the live policy.
    fn show_live(&mut self) {
        let policy = self.running.policy().clone();
        let listeners = policy
            .listeners
            .iter()
            .filter_map(|l| Some((l.name.clone(), self.running.addr_of(&l.name)?)))
            .collect();
        let generation = self.generation;
        self.admin.update(|v| {
            v.policy = policy;
            v.generation = generation;
            v.listeners = listeners;
        });
    }

    /// Loads, validates and switches to the policy file's current content,
    /// or keeps the running policy and says why not. Returns the new
    /// generation, or why it was refused (each line `path:line: ...`).
    pub fn reload(&mut self, why: &str) -> Result<u64, String> {
        // Checks wait on this thread meanwhile: not charged to their timeouts.
        let _held = crate::health::Holding::start();
        // Its access log opens here (a file that cannot be opened refuses it).
        let candidate = load_policy(&self.path, &self.registry)
            .map_err(|e| e.to_string())
            .and_then(|p| p.open_log().map(|()| p));
        let outcome = match candidate {
            Err(errors) => Err(errors),
            Ok(policy) => {
                for w in &policy.warnings {
                    tracing::warn!("{w}");
                }
                let policy = Arc::new(policy);
                let generation = self.generation + 1;
                let changes = describe_changes(self.running.policy(), &policy);
                // An admin address that cannot be bound refuses the policy.
                let admin = self.admin.prepare(policy.admin.as_ref());
                let before: Vec<_> = self
                    .running
                    .policy()
                    .listeners
                    .iter()
                    .map(|l| l.name.clone())
                    .collect();
                let switched = match admin {
                    Ok(prepared) => match self.running.switch_to(generation, policy.clone()) {
                        Ok(()) => Ok(prepared),
                        Err(e) => {
                            // The admin listener stays where it was.
                            self.admin.cancel(prepared);
                            Err(e)
                        }
                    },
                    Err(e) => Err(e),
                };
                match switched {
                    Ok(prepared) => {
                        if let Err(e) = self.admin.commit(policy.admin.as_ref(), prepared) {
                            tracing::error!("admin listener: {e:#}");
                        }
                        self.registry.went_live(&policy);
                        crate::script::api::store::redis::apply(&policy.stores);
                        self.generation = generation;
                        for l in policy
                            .listeners
                            .iter()
                            .filter(|l| !before.contains(&l.name))
                        {
                            if let Some(addr) = self.running.addr_of(&l.name) {
                                tracing::info!("listener {} listening on {}", l.name, addr);
                            }
                        }
                        tracing::info!(
                            "reload ({why}): generation {generation} is live: {changes}"
                        );
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let result = match &outcome {
            Ok(()) => Ok(self.generation),
            Err(e) => Err(e.clone()),
        };
        let at_unix_ms = crate::admin::unix_ms();
        self.admin.update(|v| {
            v.last_reload = LastReload {
                reloaded: true,
                ok: result.is_ok(),
                at_unix_ms,
                error: result.as_ref().err().cloned(),
            }
        });
        match outcome {
            Ok(()) => {
                self.refresh_counts();
                self.status.generation = self.generation;
                self.status.reloads_ok += 1;
                crate::observe::metrics::generation_live(self.generation);
                crate::observe::metrics::reload_ended(true);
                self.show_live();
                // Checks, on_health and on_check follow the new policy.
                self.policy_changed();
            }
            Err(e) => {
                for line in e.lines() {
                    tracing::error!(
                        "reload ({why}) refused, generation {} keeps serving: {line}",
                        self.generation
                    );
                }
                self.status.reloads_failed += 1;
                crate::observe::metrics::reload_ended(false);
                self.status.last_error = e.lines().collect::<Vec<_>>().join(" | ");
            }
        }
        self.files.write(&self.status);
        result
    }
}

/// What `pocket status` lists of the live policy's pools and servers:
/// `app: round_robin, 1/2 servers up` and `app 127.0.0.1:9001: drain,
/// weight 1` (a state as the admin API names it; `, from app.test:8080`
/// for a server a name gave).
fn pool_lines(policy: &crate::config::Policy) -> (Vec<String>, Vec<String>) {
    let mut pools = Vec::new();
    let mut servers = Vec::new();
    for pool in &policy.pools {
        pools.push(format!(
            "{}: {}, {}/{} servers up",
            pool.name,
            pool.balance_name(),
            pool.servers_up(),
            pool.servers.len()
        ));
        for s in &pool.servers {
            let state = crate::admin::state_of(s);
            // A server a name gave says which (`from app.internal:8080`).
            servers.push(format!(
                "{} {}: {state}, weight {}{}{}",
                pool.name,
                s.addr_text,
                s.weight,
                if s.backup { ", backup" } else { "" },
                s.from
                    .as_ref()
                    .map_or(String::new(), |f| format!(", from {f}"))
            ));
        }
    }
    (pools, servers)
}

/// Other Pockets already serving this policy, said at start: one still
/// serving takes connections on the same ports too (SO_REUSEPORT, see
/// docs/operations.md), most likely by mistake, so a warning; one
/// draining is the old process of a binary upgrade, as it should be.
fn tell_about_others(others: &[Serving]) {
    let pids = |draining: bool| -> Vec<String> {
        others
            .iter()
            .filter(|s| s.draining() == draining)
            .map(|s| s.pid.to_string())
            .collect()
    };
    match pids(false).as_slice() {
        [] => {}
        [one] => tracing::warn!(
            "another Pocket (pid {one}) serves this policy; both take connections on the same ports (SO_REUSEPORT)"
        ),
        many => tracing::warn!(
            "other Pockets (pids {}) serve this policy; all take connections on the same ports (SO_REUSEPORT)",
            many.join(", ")
        ),
    }
    match pids(true).as_slice() {
        [] => {}
        [one] => tracing::info!(
            "another Pocket (pid {one}) serves this policy and is draining (a binary upgrade): it takes no new connections"
        ),
        many => tracing::info!(
            "other Pockets (pids {}) serve this policy and are draining (a binary upgrade): they take no new connections",
            many.join(", ")
        ),
    }
}

/// SIGTERM and SIGINT, watched on a thread of their own so that nothing
/// the control thread is busy with (a reload, replacing a worker) can
/// delay the exit: from the first one, the process ends within `grace`
/// plus [`EXIT_MARGIN`] even if a worker never stops (removing `files`
/// on the way out). With `lab_faults`,
/// SIGUSR2 arms the failure lab's `hang_worker` fault.
fn stop_signals(
    grace: Duration,
    lab_faults: bool,
    files: RunFiles,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered here, before this returns, so no signal is missed.
    let (mut term, mut int, mut usr2) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            if lab_faults {
                Some(signal(SignalKind::user_defined2())?)
            } else {
                None
            },
        ))
    })?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("pocket-signals".into())
        .spawn(move || {
            rt.block_on(async {
                loop {
                    tokio::select! {
                        _ = term.recv() => break,
                        _ = int.recv() => break,
                        Some(()) = async { match usr2.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                            let did = crate::context::stamp::lab_hang_signal();
                            tracing::warn!("lab fault hang_worker {did}");
                        }
                    }
                }
                let _ = tx.send(());
                tokio::time::sleep(grace + EXIT_MARGIN).await;
            });
            tracing::error!(
                "still not stopped {:?} after the signal (grace {grace:?}): exiting now",
                grace + EXIT_MARGIN
            );
            files.remove();
            std::process::exit(0);
        })?;
    Ok(rx)
}
