//! Runtime state of a server: kept outside the policy, keyed by pool and
//! address, so a server that is in the old and the new policy keeps its
//! health and counters across a reload. Read on the request path without
//! locks; every worker sees a change at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

/// A health change, for the log and the `on_health` hook.
#[derive(Debug, Clone)]
pub struct HealthEvent {
    pub pool: Arc<str>,
    pub addr: SocketAddr,
    pub up: bool,
    pub reason: String,
}

/// What an operator (or a script) says about a server, apart from health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// Takes traffic when healthy.
    Ready,
    /// Takes no new requests; the ones it has finish.
    Drain,
    /// Out of service: no traffic at all.
    Maint,
}

impl AdminState {
    pub fn parse(text: &str) -> Option<AdminState> {
        match text {
            "ready" => Some(AdminState::Ready),
            "drain" => Some(AdminState::Drain),
            "maint" | "maintenance" => Some(AdminState::Maint),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

/// Milliseconds since the process started: a clock atomics can hold.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[derive(Debug)]
pub struct ServerState {
    pub pool: Arc<str>,
    pub addr: SocketAddr,
    up: AtomicBool,
    /// Requests in flight on this server, across workers.
    pub active: AtomicUsize,
    /// Requests this server answered.
    pub requests: AtomicU64,
    /// Connections or requests that failed on this server.
    pub failures: AtomicU64,
    /// Consecutive failures on live traffic (passive check).
    passive_streak: AtomicU32,
    /// Consecutive active check results of the same kind (checker only).
    check_ok: AtomicU32,
    check_fail: AtomicU32,
    /// When the server last went down (for the passive cool-down).
    down_since: Mutex<Option<Instant>>,
    /// Whether the last change came from live traffic, not a check.
    down_by_traffic: AtomicBool,
    /// [`AdminState`] as a number.
    admin: AtomicU8,
    /// When it last came up ([`now_ms`]), for slow start; 0: at start.
    up_at_ms: AtomicU64,
    events: Option<UnboundedSender<HealthEvent>>,
}

impl ServerState {
    fn new(
        pool: &str,
        addr: SocketAddr,
        events: Option<UnboundedSender<HealthEvent>>,
    ) -> ServerState {
        ServerState {
            pool: Arc::from(pool),
            addr,
            up: AtomicBool::new(true),
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            passive_streak: AtomicU32::new(0),
            check_ok: AtomicU32::new(0),
            check_fail: AtomicU32::new(0),
            down_since: Mutex::new(None),
            down_by_traffic: AtomicBool::new(false),
            admin: AtomicU8::new(0),
            up_at_ms: AtomicU64::new(0),
            events,
        }
    }

    pub fn admin(&self) -> AdminState {
        match self.admin.load(Ordering::Relaxed) {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    /// Sets drain or maintenance; kept across reloads like health.
    pub fn set_admin(&self, state: AdminState) -> bool {
        let n = match state {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Maint => 2,
        };
        if self.admin.swap(n, Ordering::Relaxed) == n {
            return false;
        }
        tracing::warn!(
            "server {} of pool {} set to {}",
            self.addr,
            self.pool,
            state.name()
        );
        true
    }

    /// Healthy and ready: may get a new request.
    #[inline]
    pub fn takes_traffic(&self) -> bool {
        self.is_up() && self.admin.load(Ordering::Relaxed) == 0
    }

    /// When it last came back up (0: up since start).
    pub fn up_at_ms(&self) -> u64 {
        self.up_at_ms.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn down_by_traffic(&self) -> bool {
        self.down_by_traffic.load(Ordering::Relaxed)
    }

    pub fn down_since(&self) -> Option<Instant> {
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the state; on a change, tells the control thread why.
    pub fn set_up(&self, up: bool, reason: impl Into<String>) -> bool {
        if self.up.swap(up, Ordering::AcqRel) == up {
            return false;
        }
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner()) =
            if up { None } else { Some(Instant::now()) };
        if up {
            self.passive_streak.store(0, Ordering::Relaxed);
            self.down_by_traffic.store(false, Ordering::Relaxed);
            self.up_at_ms.store(now_ms(), Ordering::Relaxed);
        }
        let reason = reason.into();
        match &self.events {
            Some(tx) => {
                let _ = tx.send(HealthEvent {
                    pool: self.pool.clone(),
                    addr: self.addr,
                    up,
                    reason,
                });
            }
            None => tracing::warn!(
                "server {} of pool {} is {}: {reason}",
                self.addr,
                self.pool,
                if up { "UP" } else { "DOWN" }
            ),
        }
        true
    }

    /// A request failed on live traffic (refused, timed out, reset, or a
    /// 5xx when the pool counts those). `limit` in a row take it down.
    pub fn traffic_failed(&self, limit: u32, what: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let streak = self.passive_streak.fetch_add(1, Ordering::Relaxed) + 1;
        if limit > 0 && streak >= limit && self.is_up() {
            self.down_by_traffic.store(true, Ordering::Relaxed);
            // Its active check must pass `rise` times anew.
            self.check_ok.store(0, Ordering::Relaxed);
            self.set_up(
                false,
                format!(
                    "{} in a row on live traffic (last: {what})",
                    crate::words::count(streak, "failure")
                ),
            );
        }
    }

    /// A request succeeded on live traffic.
    #[inline]
    pub fn traffic_ok(&self) {
        if self.passive_streak.load(Ordering::Relaxed) != 0 {
            self.passive_streak.store(0, Ordering::Relaxed);
        }
    }

    /// One active check result; flips the state after `rise` successes or
    /// `fall` failures in a row. Returns the streak that flipped it.
    pub fn observe_check(&self, ok: bool, rise: u32, fall: u32, reason: &str) -> Option<u32> {
        let (same, other) = if ok {
            (&self.check_ok, &self.check_fail)
        } else {
            (&self.check_fail, &self.check_ok)
        };
        other.store(0, Ordering::Relaxed);
        let streak = same.fetch_add(1, Ordering::Relaxed) + 1;
        let up = self.is_up();
        if ok && !up && streak >= rise {
            self.set_up(
                true,
                format!("{} passed: {reason}", crate::words::count(streak, "check")),
            );
            return Some(streak);
        }
        if !ok && up && streak >= fall {
            self.set_up(
                false,
                format!("{} failed: {reason}", crate::words::count(streak, "check")),
            );
            return Some(streak);
        }
        None
    }
}

/// Where server states live between policy generations.
#[derive(Debug, Default)]
pub struct StateRegistry {
    states: Mutex<HashMap<(String, SocketAddr), Arc<ServerState>>>,
    events: Mutex<Option<UnboundedSender<HealthEvent>>>,
}

/// The registry of the running process, for `pocket.server(...)`.
static GLOBAL: OnceLock<Arc<StateRegistry>> = OnceLock::new();

impl StateRegistry {
    /// Makes `registry` the one scripts reach with `pocket.server`.
    pub fn install_global(registry: Arc<StateRegistry>) {
        let _ = GLOBAL.set(registry);
    }

    /// A server's state in the running process, if it is in some policy.
    pub fn lookup_global(pool: &str, addr: SocketAddr) -> Option<Arc<ServerState>> {
        let registry = GLOBAL.get()?;
        let states = registry.states.lock().unwrap_or_else(|e| e.into_inner());
        states.get(&(pool.to_string(), addr)).cloned()
    }

    /// Health changes of servers created from now on go to `tx`.
    pub fn set_events(&self, tx: UnboundedSender<HealthEvent>) {
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    /// The state of `addr` in `pool`, created on first sight (in the state
    /// `start_up`). Called at load time only.
    pub fn get_or_create(&self, pool: &str, addr: SocketAddr, start_up: bool) -> Arc<ServerState> {
        let events = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states
            .entry((pool.to_string(), addr))
            .or_insert_with(|| {
                let s = ServerState::new(pool, addr, events);
                s.up.store(start_up, Ordering::Relaxed);
                if !start_up {
                    *s.down_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                }
                Arc::new(s)
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_need_streaks() {
        let s = ServerState::new("p", "127.0.0.1:1".parse().unwrap(), None);
        assert_eq!(s.observe_check(false, 2, 3, "x"), None);
        assert_eq!(s.observe_check(false, 2, 3, "x"), None);
        assert_eq!(
            s.observe_check(true, 2, 3, "x"),
            None,
            "a success breaks the failure streak"
        );
        for _ in 0..2 {
            assert_eq!(s.observe_check(false, 2, 3, "x"), None);
        }
        assert_eq!(s.observe_check(false, 2, 3, "x"), Some(3));
        assert!(!s.is_up());
        assert_eq!(s.observe_check(true, 2, 3, "x"), None);
        assert_eq!(s.observe_check(true, 2, 3, "x"), Some(2));
        assert!(s.is_up());
    }

    #[test]
    fn passive_failures_eject_after_the_limit() {
        let s = ServerState::new("p", "127.0.0.1:1".parse().unwrap(), None);
        s.traffic_failed(3, "refused");
        s.traffic_ok();
        s.traffic_failed(3, "refused");
        s.traffic_failed(3, "refused");
        assert!(s.is_up());
        s.traffic_failed(3, "refused");
        assert!(!s.is_up() && s.down_by_traffic());
    }
}
