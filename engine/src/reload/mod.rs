//! Hot reload: the control thread watches the policy's folder and listens
//! for SIGHUP; a new policy is loaded and validated once, here, then made
//! live on every worker at once ([`crate::server::Running::switch_to`]).
//! A policy that fails anywhere is refused whole and the running one keeps
//! serving. SIGTERM and SIGINT drain and stop.

mod diff;
mod files;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use diff::describe_changes;
pub use files::{RunFiles, Status};

use crate::config::load_policy;
use crate::lb::StateRegistry;
use crate::server::Running;

/// Saves closer together than this are one reload (editors write a file in
/// several steps; a storm of saves ends in one reload of the last content).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// A storm never delays a reload longer than this.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

pub struct Supervisor {
    path: PathBuf,
    registry: Arc<StateRegistry>,
    running: Running,
    generation: u64,
    status: Status,
    files: RunFiles,
    watch: bool,
}

impl Supervisor {
    pub fn new(
        path: PathBuf,
        registry: Arc<StateRegistry>,
        running: Running,
        watch: bool,
    ) -> Supervisor {
        let files = RunFiles::for_policy(&path);
        let status = Status {
            pid: std::process::id(),
            policy: path.display().to_string(),
            generation: 1,
            workers: running.workers(),
            ..Status::default()
        };
        Supervisor {
            path,
            registry,
            running,
            generation: 1,
            status,
            files,
            watch,
        }
    }

    /// Serves until SIGTERM or SIGINT, reloading on file changes and
    /// SIGHUP; then drains for up to `grace` and returns.
    pub fn run(mut self, grace: Duration) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let result = rt.block_on(self.serve());
        self.files.remove();
        result?;
        tracing::info!("draining: no new connections; open ones get up to {grace:?} to finish");
        self.running.shutdown(grace);
        tracing::info!("stopped");
        Ok(())
    }

    async fn serve(&mut self) -> anyhow::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (_watcher, mut changes) = if self.watch {
            let (w, rx) = watch::watch_folder_of(&self.path)?;
            (Some(w), Some(rx))
        } else {
            (None, None)
        };
        self.files.write(&self.status);
        for l in &self.running.policy().listeners {
            if let Some(addr) = self.running.addr_of(&l.name) {
                tracing::info!("listener {} listening on {}", l.name, addr);
            }
        }
        tracing::info!(
            "pocket ready: {} workers, policy {}, generation {}",
            self.running.workers(),
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
                    self.reload("file changed");
                }
                _ = hup.recv() => self.reload("SIGHUP"),
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
            }
        }
    }

    /// Loads, validates and switches to the policy file's current content,
    /// or keeps the running policy and says why not.
    pub fn reload(&mut self, why: &str) {
        let candidate = load_policy(&self.path, &self.registry);
        let outcome = match candidate {
            Err(errors) => Err(errors.to_string()),
            Ok(policy) => {
                let policy = Arc::new(policy);
                let generation = self.generation + 1;
                let changes = describe_changes(self.running.policy(), &policy);
                let before: Vec<_> = self
                    .running
                    .policy()
                    .listeners
                    .iter()
                    .map(|l| l.name.clone())
                    .collect();
                match self.running.switch_to(generation, policy.clone()) {
                    Ok(()) => {
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
        match outcome {
            Ok(()) => {
                self.status.generation = self.generation;
                self.status.reloads_ok += 1;
            }
            Err(e) => {
                for line in e.lines() {
                    tracing::error!(
                        "reload ({why}) refused, generation {} keeps serving: {line}",
                        self.generation
                    );
                }
                self.status.reloads_failed += 1;
                self.status.last_error = e.lines().collect::<Vec<_>>().join(" | ");
            }
        }
        self.files.write(&self.status);
    }
}
