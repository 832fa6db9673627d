//! Runtime state of a server: kept outside the policy, so a server that is
//! in the old and the new policy keeps its health and counters across a
//! reload. Read on the request path without locks; every worker sees a
//! change at once.
//!
//! One address, one health: up or down, the check and passive streaks
//! belong to the address, shared by every pool that lists it (a server
//! killed is down in all of them at once), unless a pool says
//! `own_health = true`. Counters and the admin state (drain, maint) stay
//! per pool. See docs/health.md, "One address, one health".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

/// A health change, for the log and the `on_health` hook. The control
/// thread finds the pools it concerns in the live policy (see
/// [`HealthEvent::concerns`]).
#[derive(Debug, Clone)]
pub struct HealthEvent {
    pub addr: SocketAddr,
    /// The pool that keeps this health for itself (`own_health`); None:
    /// the address's shared health, seen by every pool that shares it.
    pub own: Option<Arc<str>>,
    pub up: bool,
    pub reason: String,
}

impl HealthEvent {
    /// Whether the change shows in `pool`, a pool with `own_health` or
    /// not, that lists `addr`.
    pub fn concerns(&self, pool: &str, own_health: bool) -> bool {
        match &self.own {
            Some(own) => own_health && &**own == pool,
            None => !own_health,
        }
    }
}

/// Which health a pool's server uses: the address's shared one, or the
/// pool's own (`own_health = true`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HealthKey {
    Shared(SocketAddr),
    Own(Arc<str>, SocketAddr),
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

/// The health of an address (or of an address in one pool that keeps its
/// own): what active checks, passive checks and cool-downs decide.
#[derive(Debug)]
pub struct Health {
    pub addr: SocketAddr,
    /// The pool that keeps it for itself; None: shared by address.
    pub own: Option<Arc<str>>,
    up: AtomicBool,
    /// Consecutive failures on live traffic (passive check), over every
    /// pool that shares it.
    passive_streak: AtomicU32,
    /// Consecutive active check results of the same kind (checker only).
    check_ok: AtomicU32,
    check_fail: AtomicU32,
    /// When the server last went down (for the passive cool-down).
    down_since: Mutex<Option<Instant>>,
    /// Whether the last change came from live traffic, not a check.
    down_by_traffic: AtomicBool,
    /// When it last came up ([`now_ms`]), for slow start; 0: at start.
    up_at_ms: AtomicU64,
    /// Some policy with this health has gone live. Until then the health
    /// belongs to loads only (a refused one may have made it), so the next
    /// load still applies its check's `start = "down"`.
    live: AtomicBool,
    events: Option<UnboundedSender<HealthEvent>>,
    /// Active check results ever, passed and failed (for `/metrics`).
    checks_ok: AtomicU64,
    checks_failed: AtomicU64,
    /// The last active checks, for the stats page and the API.
    pub checks: crate::health::CheckLog,
}

impl Health {
    fn new(
        addr: SocketAddr,
        own: Option<Arc<str>>,
        events: Option<UnboundedSender<HealthEvent>>,
    ) -> Health {
        Health {
            addr,
            own,
            up: AtomicBool::new(true),
            passive_streak: AtomicU32::new(0),
            check_ok: AtomicU32::new(0),
            check_fail: AtomicU32::new(0),
            down_since: Mutex::new(None),
            down_by_traffic: AtomicBool::new(false),
            up_at_ms: AtomicU64::new(0),
            live: AtomicBool::new(false),
            events,
            checks_ok: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            checks: crate::health::CheckLog::default(),
        }
    }

    /// Active check results so far: (passed, failed).
    pub fn checks(&self) -> (u64, u64) {
        (
            self.checks_ok.load(Ordering::Relaxed),
            self.checks_failed.load(Ordering::Relaxed),
        )
    }

    /// No live policy has had this health yet.
    pub fn fresh(&self) -> bool {
        !self.live.load(Ordering::Relaxed)
    }

    pub fn key(&self) -> HealthKey {
        match &self.own {
            Some(pool) => HealthKey::Own(pool.clone(), self.addr),
            None => HealthKey::Shared(self.addr),
        }
    }

    /// Down before its first verdict, as a check's `start = "down"` asks;
    /// not a change (no event). For a health made by the load in progress.
    pub fn start_down(&self) {
        self.up.store(false, Ordering::Relaxed);
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// When it last came back up (0: up since start).
    pub fn up_at_ms(&self) -> u64 {
        self.up_at_ms.load(Ordering::Relaxed)
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
                    addr: self.addr,
                    own: self.own.clone(),
                    up,
                    reason,
                });
            }
            None => tracing::warn!(
                "server {} is {}: {reason}",
                self.addr,
                if up { "UP" } else { "DOWN" }
            ),
        }
        true
    }

    /// A request failed on live traffic; `limit` (above 0) in a row,
    /// counted over every pool sharing this health, each pool applying its
    /// own `after`, take it down.
    fn traffic_failed(&self, limit: u32, what: &str) {
        let streak = self.passive_streak.fetch_add(1, Ordering::Relaxed) + 1;
        if streak >= limit && self.is_up() {
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

    #[inline]
    fn traffic_ok(&self) {
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
        if ok {
            &self.checks_ok
        } else {
            &self.checks_failed
        }
        .fetch_add(1, Ordering::Relaxed);
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

/// What the request path tells [`ServerState::traffic_failed`] when a
/// connect failed (`pocket_server_connect_failures_total` counts these).
pub const CONNECT_FAILED: &str = "connect failed";

/// A server as one pool sees it: the health it shares (or owns), and the
/// pool's own counters and admin state.
#[derive(Debug)]
pub struct ServerState {
    pub pool: Arc<str>,
    pub addr: SocketAddr,
    pub health: Arc<Health>,
    /// Requests in flight on this server from this pool, across workers.
    pub active: AtomicUsize,
    /// Requests this server answered for this pool.
    pub requests: AtomicU64,
    /// Connections or requests of this pool that failed on this server.
    pub failures: AtomicU64,
    /// [`AdminState`] as a number.
    admin: AtomicU8,
    /// What `/metrics` shows of it (status classes, bytes, durations...).
    pub metrics: crate::observe::metrics::ServerMetrics,
    /// A weight the admin API set, kept across reloads like `admin`;
    /// 0: the policy's own.
    weight_set: AtomicU32,
}

impl ServerState {
    fn new(pool: &str, health: Arc<Health>) -> ServerState {
        ServerState {
            pool: Arc::from(pool),
            addr: health.addr,
            health,
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            admin: AtomicU8::new(0),
            metrics: Default::default(),
            weight_set: AtomicU32::new(0),
        }
    }

    pub fn admin(&self) -> AdminState {
        match self.admin.load(Ordering::Relaxed) {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    /// Sets drain or maintenance in this pool; kept across reloads like
    /// health while the server stays in the pool (ready again once it
    /// leaves).
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

    /// Sets the weight every policy from now on gives this server in this
    /// pool, over the one it writes (the admin API's weight action).
    pub fn set_weight(&self, weight: u32) {
        self.weight_set.store(weight, Ordering::Relaxed);
    }

    /// The weight set by [`ServerState::set_weight`], else `written`.
    pub fn weight_or(&self, written: u32) -> u32 {
        match self.weight_set.load(Ordering::Relaxed) {
            0 => written,
            set => set,
        }
    }

    /// Forgets what the admin API set (ready, the policy's weight): the
    /// server left its pool's live policy (see [`StateRegistry::went_live`]).
    fn left_pool(&self) {
        self.admin.store(0, Ordering::Relaxed);
        self.weight_set.store(0, Ordering::Relaxed);
    }

    /// Healthy and ready: may get a new request.
    #[inline]
    pub fn takes_traffic(&self) -> bool {
        self.is_up() && self.admin.load(Ordering::Relaxed) == 0
    }

    /// When it last came back up (0: up since start).
    pub fn up_at_ms(&self) -> u64 {
        self.health.up_at_ms()
    }

    #[inline]
    pub fn is_up(&self) -> bool {
        self.health.is_up()
    }

    pub fn down_by_traffic(&self) -> bool {
        self.health.down_by_traffic()
    }

    pub fn down_since(&self) -> Option<Instant> {
        self.health.down_since()
    }

    /// Sets the (shared) health; on a change, tells the control thread why.
    pub fn set_up(&self, up: bool, reason: impl Into<String>) -> bool {
        self.health.set_up(up, reason)
    }

    /// A request failed on live traffic (refused, timed out, reset, or a
    /// 5xx when the pool counts those). `limit` in a row take it down, in
    /// every pool that shares its health.
    pub fn traffic_failed(&self, limit: u32, what: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if what == CONNECT_FAILED {
            self.metrics
                .connect_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        // `passive = false`: this pool's failures count for nothing, not
        // even toward a streak another pool's `after` would end.
        if limit > 0 {
            let was_up = self.health.is_up();
            self.health.traffic_failed(limit, what);
            if was_up && !self.health.is_up() {
                self.metrics.ejections.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A request succeeded on live traffic.
    #[inline]
    pub fn traffic_ok(&self) {
        self.health.traffic_ok();
    }

    /// One active check result; see [`Health::observe_check`].
    pub fn observe_check(&self, ok: bool, rise: u32, fall: u32, reason: &str) -> Option<u32> {
        self.health.observe_check(ok, rise, fall, reason)
    }
}

/// Where server states and healths live between policy generations.
#[derive(Debug, Default)]
pub struct StateRegistry {
    /// Every pool's state of every server a load has made, by pool,
    /// address and whether the pool keeps its own health: a refused
    /// reload that toggles `own_health` makes a new entry and leaves the
    /// live one (its drain, its requests in flight) as it was.
    states: Mutex<HashMap<(String, SocketAddr, bool), Arc<ServerState>>>,
    /// The states of the live policy, by pool and address, for
    /// `pocket.server` (see [`StateRegistry::went_live`]).
    live: Mutex<HashMap<(String, SocketAddr), Arc<ServerState>>>,
    healths: Mutex<HashMap<HealthKey, Arc<Health>>>,
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
        let key = (pool.to_string(), addr);
        let live = registry.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = live.get(&key) {
            return Some(state.clone());
        }
        drop(live);
        // Nothing live yet (`pocket test`, a load at start): what the load
        // made.
        let states = registry.states.lock().unwrap_or_else(|e| e.into_inner());
        let (pool, addr) = key;
        states
            .get(&(pool.clone(), addr, false))
            .or_else(|| states.get(&(pool, addr, true)))
            .cloned()
    }

    /// `policy` is live on the workers: its healths are no longer fresh,
    /// and `pocket.server` sees its states.
    pub fn went_live(&self, policy: &crate::config::Policy) {
        crate::observe::metrics::went_live(policy);
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let before = std::mem::take(&mut *live);
        for pool in &policy.pools {
            for server in &pool.servers {
                server.state.health.live.store(true, Ordering::Relaxed);
                live.insert((pool.name.to_string(), server.addr), server.state.clone());
            }
        }
        // A server that left its pool (a reload, a DNS answer) and comes
        // back later is a new server (docs/operations.md, "Servers that
        // move"): its drain, maint or weight set by the admin API does not
        // wait for it. Its health history stays (one address, one health).
        for (key, state) in before {
            if !live.get(&key).is_some_and(|now| Arc::ptr_eq(now, &state)) {
                state.left_pool();
            }
        }
    }

    /// Health changes of servers created from now on go to `tx`.
    pub fn set_events(&self, tx: UnboundedSender<HealthEvent>) {
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    /// The state of `addr` in `pool`, created on first sight, with the
    /// address's shared health or, with `own_health`, the pool's own (a
    /// health no live policy has had starts as `start_up` says). Also says
    /// whether the health is fresh. Called at load time only.
    pub fn get_or_create(
        &self,
        pool: &str,
        addr: SocketAddr,
        own_health: bool,
        start_up: bool,
    ) -> (Arc<ServerState>, bool) {
        let events = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let key = if own_health {
            HealthKey::Own(Arc::from(pool), addr)
        } else {
            HealthKey::Shared(addr)
        };
        let health = {
            let mut healths = self.healths.lock().unwrap_or_else(|e| e.into_inner());
            healths
                .entry(key.clone())
                .or_insert_with(|| {
                    let own = match &key {
                        HealthKey::Own(pool, _) => Some(pool.clone()),
                        HealthKey::Shared(_) => None,
                    };
                    Arc::new(Health::new(addr, own, events))
                })
                .clone()
        };
        // Fresh until a policy with it goes live: a health a refused load
        // made still starts as the next load's check says.
        let fresh = health.fresh();
        if fresh && !start_up {
            health.start_down();
        }
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        // Keyed by `own_health` too: a reload that turns it on or off gets
        // the pool's state on the other health, and turning it back finds
        // the first one again.
        let slot = states
            .entry((pool.to_string(), addr, own_health))
            .or_insert_with(|| Arc::new(ServerState::new(pool, health)));
        (slot.clone(), fresh)
    }
}

impl StateRegistry {
    /// Forgets the state of `addr` in `pool` (and its health, when no
    /// other state kept here shares it): for a server a DNS name stopped
    /// giving long ago (crate::dns), so that addresses that come and go
    /// do not pile up. Requests still holding it finish with it; the
    /// address, if it comes back, starts as a new server. Not for a
    /// server of the live policy.
    pub fn forget(&self, pool: &str, addr: SocketAddr, own_health: bool) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = states.remove(&(pool.to_string(), addr, own_health)) else {
            return;
        };
        let shared = states
            .values()
            .any(|s| Arc::ptr_eq(&s.health, &state.health));
        drop(states);
        if !shared {
            self.healths
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&state.health.key());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_server_comes_back_new_and_a_shared_health_stays() {
        let r = StateRegistry::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (a, _) = r.get_or_create("a", addr, false, true);
        let (b, _) = r.get_or_create("b", addr, false, true);
        a.requests.fetch_add(5, Ordering::Relaxed);
        r.forget("a", addr, false);
        let (again, _) = r.get_or_create("a", addr, false, true);
        assert!(!Arc::ptr_eq(&a, &again), "a new state");
        assert_eq!(again.requests.load(Ordering::Relaxed), 0);
        assert!(
            Arc::ptr_eq(&again.health, &b.health),
            "pool b still has the address: one health"
        );
        r.forget("a", addr, false);
        r.forget("b", addr, false);
        let (fresh, new) = r.get_or_create("b", addr, false, true);
        assert!(
            new && !Arc::ptr_eq(&fresh.health, &b.health),
            "a new health"
        );
    }

    #[test]
    fn rise_and_fall_need_streaks() {
        let s = ServerState::new(
            "p",
            Arc::new(Health::new("127.0.0.1:1".parse().unwrap(), None, None)),
        );
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
        let s = ServerState::new(
            "p",
            Arc::new(Health::new("127.0.0.1:1".parse().unwrap(), None, None)),
        );
        s.traffic_failed(3, "refused");
        s.traffic_ok();
        s.traffic_failed(3, "refused");
        s.traffic_failed(3, "refused");
        assert!(s.is_up());
        s.traffic_failed(3, "refused");
        assert!(!s.is_up() && s.down_by_traffic());
    }

    #[test]
    fn one_address_has_one_health_unless_a_pool_keeps_its_own() {
        let r = StateRegistry::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (a, new_a) = r.get_or_create("a", addr, false, true);
        let (b, new_b) = r.get_or_create("b", addr, false, true);
        let (c, _) = r.get_or_create("c", addr, true, true);
        // Fresh (no policy with it has gone live yet), and one health.
        assert!(new_a && new_b);
        assert!(Arc::ptr_eq(&a.health, &b.health) && !Arc::ptr_eq(&a.health, &c.health));
        a.traffic_failed(1, "refused");
        assert!(!b.is_up(), "down in every pool that shares it");
        assert!(c.is_up(), "a pool with its own health is not touched");
        assert_eq!(b.failures.load(Ordering::Relaxed), 0, "counters per pool");

        let other: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let (watching, _) = r.get_or_create("watching", other, false, true);
        let (trusting, _) = r.get_or_create("trusting", other, false, true);
        for _ in 0..5 {
            trusting.traffic_failed(0, "refused");
        }
        watching.traffic_failed(2, "refused");
        assert!(
            watching.is_up(),
            "passive = false adds nothing to the streak"
        );
        watching.traffic_failed(2, "refused");
        assert!(!trusting.is_up());
    }
}
