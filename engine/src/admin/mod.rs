//! The admin listener: a stats page, a JSON API and `/metrics`, on an
//! address of its own (the policy's `admin` key), served by a thread and
//! a tokio runtime of its own so that nothing it does competes with the
//! workers. It never proxies traffic.
//!
//! The control thread (the [`crate::reload::Supervisor`]) owns an
//! [`Admin`]: it starts, moves and stops the listener as policies go live
//! and answers the actions that change the policy (a reload, a weight);
//! the listener reads the live state through [`Shared`].
//!
//! - `listener`: the thread, its runtime, the accept loop.
//! - `auth`: the token (`Authorization: Bearer`, or the page's cookie).
//! - `csrf`: what keeps other web pages from acting (POSTs only).
//! - `api`: routing and the JSON API.
//! - `page`: the stats page (`page.html`, built into the binary).
//! - `metrics`: what `/metrics` serves.

mod api;
mod auth;
mod csrf;
mod json;
mod listener;
mod metrics;
mod page;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use crate::config::{AdminSpec, Policy};

pub use api::state_of;
pub use json::rfc3339;

/// What the admin listener reads: the live policy and what the control
/// thread knows about it. Written by the control thread only.
#[derive(Debug, Clone)]
pub struct View {
    pub policy: Arc<Policy>,
    pub generation: u64,
    /// Each listener of the live policy and the address it listens on.
    pub listeners: Vec<(Arc<str>, SocketAddr)>,
    pub last_reload: LastReload,
}

/// The outcome of the last reload (at start: the start itself).
#[derive(Debug, Clone)]
pub struct LastReload {
    /// False until a reload was tried: `at` is then when Pocket started.
    pub reloaded: bool,
    pub ok: bool,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Why it was refused, each line `path:line: ...`.
    pub error: Option<String>,
}

/// An action only the control thread can carry out.
pub enum Command {
    /// Reload the policy file: the new generation, or why not.
    Reload(oneshot::Sender<Result<u64, String>>),
    /// Give a server of a pool another weight (kept across reloads):
    /// the generation that has it, or why not.
    Weight {
        pool: String,
        server: String,
        weight: u32,
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

/// Shared between the control thread and the admin listener.
pub struct Shared {
    view: RwLock<View>,
    commands: UnboundedSender<Command>,
}

impl Shared {
    pub fn view(&self) -> View {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks the control thread to carry out `command`.
    fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }
}

/// The admin side of the control thread.
pub struct Admin {
    shared: Arc<Shared>,
    commands: Option<UnboundedReceiver<Command>>,
    running: Option<listener::Running>,
    /// The spec of a listener [`Admin::prepare`] stopped to free its port
    /// for the next policy's address; [`Admin::cancel`] restarts it.
    stopped: Option<AdminSpec>,
}

/// What [`Admin::prepare`] readied for a policy about to go live.
pub enum Prepared {
    /// Nothing to bind: no admin key, or the same address as now.
    Nothing,
    /// A new address, bound.
    Bound(std::net::TcpListener),
    /// A new address on the listener's own port (`127.0.0.1:8404` to
    /// `0.0.0.0:8404`), bound after the running listener was stopped to
    /// let go of the port: commit it, or [`Admin::cancel`] it.
    Replaced(std::net::TcpListener),
}

/// How long a stopped listener may take to let its port go.
const PORT_FREED: std::time::Duration = std::time::Duration::from_secs(2);

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Admin {
    pub fn new(view: View) -> Admin {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Admin {
            shared: Arc::new(Shared {
                view: RwLock::new(view),
                commands: tx,
            }),
            commands: Some(rx),
            running: None,
            stopped: None,
        }
    }

    /// Where the actions the API asks of the control thread come. Once.
    pub fn take_commands(&mut self) -> Option<UnboundedReceiver<Command>> {
        self.commands.take()
    }

    /// Updates what the listener shows.
    pub fn update(&self, change: impl FnOnce(&mut View)) {
        let mut view = self.shared.view.write().unwrap_or_else(|e| e.into_inner());
        change(&mut view);
    }

    /// Binds `spec`'s address if it is not the one the listener has:
    /// an address that cannot be bound refuses the policy (`path:line`
    /// of `admin.bind`), and the running listener keeps serving. An
    /// address on the running listener's port that its socket keeps
    /// from binding (another IP, or the wildcard) is bound after it
    /// stops; when even then it cannot be, the listener starts again.
    pub fn prepare(&mut self, spec: Option<&AdminSpec>) -> Result<Prepared, String> {
        let Some(spec) = spec else {
            return Ok(Prepared::Nothing);
        };
        if self
            .running
            .as_ref()
            .is_some_and(|r| r.spec.bind == spec.bind)
        {
            return Ok(Prepared::Nothing);
        }
        let refused = |e: std::io::Error| {
            format!(
                "{}: admin.bind {}: cannot listen: {e}",
                spec.place, spec.bind
            )
        };
        match listener::bind(spec.bind) {
            Ok(socket) => Ok(Prepared::Bound(socket)),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && self
                        .running
                        .as_ref()
                        .is_some_and(|r| r.addr.port() == spec.bind.port()) =>
            {
                let Some(old) = self.running.take() else {
                    return Err(refused(e));
                };
                let mut old_spec = old.spec.clone();
                old_spec.bind = old.addr;
                old.stop_and_wait(PORT_FREED);
                self.stopped = Some(old_spec);
                match listener::bind(spec.bind) {
                    Ok(socket) => Ok(Prepared::Replaced(socket)),
                    Err(e) => {
                        self.cancel(Prepared::Nothing);
                        Err(refused(e))
                    }
                }
            }
            Err(e) => Err(refused(e)),
        }
    }

    /// The policy [`Admin::prepare`] readied for did not go live: a
    /// listener it stopped starts again on its address.
    pub fn cancel(&mut self, prepared: Prepared) {
        drop(prepared);
        let Some(spec) = self.stopped.take() else {
            return;
        };
        let restarted = listener::bind(spec.bind)
            .map_err(anyhow::Error::from)
            .and_then(|socket| listener::start(socket, spec.clone(), self.shared.clone()));
        match restarted {
            Ok(r) => self.running = Some(r),
            Err(e) => tracing::error!(
                "admin listener on {} could not start again: {e:#}",
                spec.bind
            ),
        }
    }

    /// The policy with `spec` is live: the listener starts, moves (with
    /// what [`Admin::prepare`] bound), takes the new token, or stops.
    pub fn commit(&mut self, spec: Option<&AdminSpec>, prepared: Prepared) -> anyhow::Result<()> {
        let Some(spec) = spec else {
            if let Some(old) = self.running.take() {
                tracing::info!("admin listener on {} stopped", old.addr);
            }
            return Ok(());
        };
        match prepared {
            Prepared::Bound(socket) | Prepared::Replaced(socket) => {
                let old = self.running.take().map(|r| r.addr);
                let old = old.or(self.stopped.take().map(|s| s.bind));
                let new = listener::start(socket, spec.clone(), self.shared.clone())?;
                match old {
                    Some(old) => {
                        tracing::info!("admin listener moved from {old} to {}", new.addr)
                    }
                    None => tracing::info!("admin listening on {}", new.addr),
                }
                self.running = Some(new);
            }
            Prepared::Nothing => {
                if let Some(r) = &mut self.running {
                    r.set_spec(spec.clone());
                }
            }
        }
        Ok(())
    }

    /// Where the listener listens now.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|r| r.addr)
    }
}
