//! Why each server of a pool was or was not the one picked, said after
//! the pick from the same state the pick read (health, admin state,
//! requests in flight, the servers this request already tried).

use std::sync::atomic::Ordering;

use crate::lb::{AdminState, Algorithm, Pool};

/// Why a server was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Its health check (or live traffic) says down.
    Down,
    /// Set to drain: finishes what it has, takes nothing new.
    Drain,
    /// Set to maint: out of rotation.
    Maint,
    /// This request already failed on it (a retry goes elsewhere).
    Tried,
    /// A backup, and a primary could take the request.
    Backup,
    /// Bounded-load hashing (`balance_factor`): it has `in_flight`
    /// requests, at or over the bound of `bound`.
    OverLoad { in_flight: usize, bound: usize },
    /// Not skipped at all: it could have taken the request and the
    /// algorithm chose another (its turn had not come, it was busier, it
    /// is not the key's server). Listed apart from the skips (`others[...]`
    /// in the compact form), since nothing is wrong with it.
    NotPicked,
}

impl Skip {
    /// The word used in the compact form and the printed trace.
    pub fn word(&self) -> String {
        match self {
            Skip::Down => "down".into(),
            Skip::Drain => "drain".into(),
            Skip::Maint => "maint".into(),
            Skip::Tried => "tried".into(),
            Skip::Backup => "backup".into(),
            Skip::OverLoad { in_flight, bound } => format!("load{in_flight}>={bound}"),
            Skip::NotPicked => "usable".into(),
        }
    }

    /// A sentence for the printed trace.
    pub fn sentence(&self) -> String {
        match self {
            Skip::Down => "skipped: down".into(),
            Skip::Drain => "skipped: drain (takes no new requests)".into(),
            Skip::Maint => "skipped: maint (out of rotation)".into(),
            Skip::Tried => "skipped: already tried by this request".into(),
            Skip::Backup => "skipped: backup (a primary server can take the request)".into(),
            Skip::OverLoad { in_flight, bound } => {
                format!("skipped: over the bounded load ({in_flight} in flight, bound {bound})")
            }
            Skip::NotPicked => "usable, balance chose another".into(),
        }
    }
}

/// One server of the pool, as the pick saw it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub addr: String,
    pub weight: u32,
    pub backup: bool,
    /// A hash pool's server for this request's key on the ring (the pick
    /// starts there; bounded load or its state may move the request on).
    pub key_owner: bool,
    /// None: this is the chosen server.
    pub skip: Option<Skip>,
}

/// Every server of `pool` with why it was passed over, for a pick that
/// chose `chosen` with `tried` already tried and hash `key`.
pub fn of(pool: &Pool, tried: &[usize], key: Option<u64>, chosen: Option<usize>) -> Vec<Candidate> {
    let open = |i: usize| pool.servers[i].state.takes_traffic() && !tried.contains(&i);
    let primary_open = (0..pool.servers.len()).any(|i| !pool.servers[i].backup && open(i));
    // The bound a hash pool with balance_factor sets, as the pick
    // computes it (Tier::hashed): over the servers of the tier in use.
    let bound = match (pool.algorithm == Algorithm::Hash, key, pool.balance_factor) {
        (true, Some(_), Some(f)) => {
            let tier: Vec<usize> = (0..pool.servers.len())
                .filter(|&i| pool.servers[i].backup != primary_open && open(i))
                .collect();
            let total: usize = tier
                .iter()
                .map(|&i| pool.servers[i].state.active.load(Ordering::Relaxed))
                .sum();
            let n = tier.len().max(1);
            Some((((total + 1) * f as usize) as f64 / (100 * n) as f64).ceil() as usize)
        }
        _ => None,
    };
    // A hash pick walks the ring from the key: only the servers met
    // before the chosen one were passed over for their load.
    let ring = match (pool.algorithm == Algorithm::Hash, key) {
        (true, Some(k)) => pool.ring_order(k, !primary_open),
        _ => Vec::new(),
    };
    let owner = ring.first().copied();
    let passed_over = |i: usize| {
        let at = |j: usize| ring.iter().position(|&r| r == j);
        match (at(i), chosen.and_then(at)) {
            (Some(a), Some(c)) => a < c,
            _ => true,
        }
    };
    pool.servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let state = &s.state;
            let in_flight = state.active.load(Ordering::Relaxed);
            let skip = if chosen == Some(i) {
                None
            } else if !state.is_up() {
                Some(Skip::Down)
            } else if state.admin() == AdminState::Drain {
                Some(Skip::Drain)
            } else if state.admin() == AdminState::Maint {
                Some(Skip::Maint)
            } else if tried.contains(&i) {
                Some(Skip::Tried)
            } else if s.backup && primary_open {
                Some(Skip::Backup)
            } else {
                match bound {
                    Some(b) if in_flight >= b && passed_over(i) => Some(Skip::OverLoad {
                        in_flight,
                        bound: b,
                    }),
                    _ => Some(Skip::NotPicked),
                }
            };
            Candidate {
                addr: s.addr_text.to_string(),
                weight: s.weight,
                backup: s.backup,
                key_owner: owner == Some(i),
                skip,
            }
        })
        .collect()
}
