//! How a server is picked among those that can take a request. Each
//! algorithm sees the candidates of one tier (primaries, or backups when no
//! primary can serve) and a predicate saying which of them are usable
//! (up, not already tried by this request).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{RoundRobin, Server};

/// What a pool's `balance` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastConn,
    P2c,
    Random,
    First,
    Hash,
    /// `balance = function(servers, req)`: the script picks; round robin
    /// for retries and when it returns nil.
    Script,
}

impl Algorithm {
    pub const NAMES: &'static str = "round_robin, least_conn, p2c, random, first, hash";

    pub fn parse(name: &str) -> Option<Algorithm> {
        Some(match name {
            "round_robin" | "roundrobin" => Algorithm::RoundRobin,
            "least_conn" | "leastconn" => Algorithm::LeastConn,
            "p2c" => Algorithm::P2c,
            "random" => Algorithm::Random,
            "first" => Algorithm::First,
            "hash" => Algorithm::Hash,
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastConn => "least_conn",
            Algorithm::P2c => "p2c",
            Algorithm::Random => "random",
            Algorithm::First => "first",
            Algorithm::Hash => "hash",
            Algorithm::Script => "function",
        }
    }
}

/// One tier's picker, built at load.
#[derive(Debug)]
pub struct Tier {
    members: Vec<usize>,
    rr: RoundRobin,
    ring: Vec<(u64, usize)>,
    rotate: AtomicUsize,
}

/// Points per unit of weight on the consistent-hash ring (ketama uses 160
/// per server; more points, smoother shares).
const POINTS_PER_WEIGHT: u32 = 100;

impl Tier {
    pub fn new(servers: &[Server], members: Vec<usize>, algorithm: &Algorithm) -> Tier {
        let weighted: Vec<(usize, u32)> = members.iter().map(|&i| (i, servers[i].weight)).collect();
        let mut ring = Vec::new();
        if *algorithm == Algorithm::Hash {
            for &i in &members {
                for p in 0..servers[i].weight * POINTS_PER_WEIGHT {
                    ring.push((hash_bytes(format!("{}#{p}", servers[i].addr).as_bytes()), i));
                }
            }
            ring.sort_unstable();
        }
        Tier {
            rr: RoundRobin::new(&weighted),
            members,
            ring,
            rotate: AtomicUsize::new(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Picks a usable member. `key` is the request's hash key (hash only;
    /// without one, hash falls back to round robin). `bound` caps a
    /// server's in-flight requests for bounded-load hashing.
    pub fn pick(
        &self,
        algorithm: &Algorithm,
        servers: &[Server],
        usable: &dyn Fn(usize) -> bool,
        key: Option<u64>,
        balance_factor: Option<u32>,
        rehash: bool,
    ) -> Option<usize> {
        match algorithm {
            Algorithm::RoundRobin | Algorithm::Script => self.rr.pick(usable),
            Algorithm::First => self.members.iter().copied().find(|&i| usable(i)),
            Algorithm::LeastConn => self.least_loaded(servers, usable),
            Algorithm::P2c => self.p2c(servers, usable),
            Algorithm::Random => self.random(servers, usable),
            Algorithm::Hash => match key {
                // A cache tier: the key's own server or nobody (the pool's
                // fallback), though bounded load may still spill it over.
                Some(k) if !rehash => {
                    let owner = self.owner(k)?;
                    if !usable(owner) {
                        return None;
                    }
                    self.hashed(servers, usable, k, balance_factor)
                }
                Some(k) => self.hashed(servers, usable, k, balance_factor),
                None => self.rr.pick(usable),
            },
        }
    }

    fn least_loaded(&self, servers: &[Server], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        // Start at a rotating offset so ties spread instead of piling on
        // the first server.
        let n = self.members.len();
        let start = self.rotate.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = self.members[(start + k) % n];
            if !usable(i) {
                continue;
            }
            best = match best {
                Some(b) if !lighter(&servers[i], &servers[b]) => Some(b),
                _ => Some(i),
            };
        }
        best
    }

    fn p2c(&self, servers: &[Server], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = self
            .members
            .iter()
            .copied()
            .filter(|&i| usable(i))
            .collect();
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0]),
            n => {
                let a = candidates[random_below(n)];
                let mut b = candidates[random_below(n - 1)];
                if b == a {
                    b = candidates[n - 1];
                }
                Some(if lighter(&servers[b], &servers[a]) {
                    b
                } else {
                    a
                })
            }
        }
    }

    fn random(&self, servers: &[Server], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let total: u64 = self
            .members
            .iter()
            .filter(|&&i| usable(i))
            .map(|&i| servers[i].weight as u64)
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = random_below(total as usize) as u64;
        for &i in &self.members {
            if !usable(i) {
                continue;
            }
            let w = servers[i].weight as u64;
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }

    /// Each server once, in the order a walk of the ring from `key` meets
    /// them (`pocket explain`: who was passed over before the one chosen).
    pub(super) fn ring_order(&self, key: u64) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        let start = self.ring.partition_point(|(p, _)| *p < key);
        for k in 0..self.ring.len() {
            let (_, i) = self.ring[(start + k) % self.ring.len()];
            if !out.contains(&i) {
                out.push(i);
                if out.len() == self.members.len() {
                    break;
                }
            }
        }
        out
    }

    /// The server that owns `key` on the ring, up or not.
    fn owner(&self, key: u64) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let start = self.ring.partition_point(|(p, _)| *p < key);
        Some(self.ring[start % self.ring.len()].1)
    }

    fn hashed(
        &self,
        servers: &[Server],
        usable: &dyn Fn(usize) -> bool,
        key: u64,
        factor: Option<u32>,
    ) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let bound = factor.map(|f| {
            let up: Vec<usize> = self
                .members
                .iter()
                .copied()
                .filter(|&i| usable(i))
                .collect();
            let total: usize = up
                .iter()
                .map(|&i| servers[i].state.active.load(Ordering::Relaxed))
                .sum();
            let n = up.len().max(1);
            // HAProxy's hash-balance-factor: nobody over factor% of the
            // average (counting this request).
            (((total + 1) * f as usize) as f64 / (100 * n) as f64).ceil() as usize
        });
        let start = self.ring.partition_point(|(p, _)| *p < key);
        let mut first_usable = None;
        for k in 0..self.ring.len() {
            let (_, i) = self.ring[(start + k) % self.ring.len()];
            if !usable(i) {
                continue;
            }
            match bound {
                Some(b) if servers[i].state.active.load(Ordering::Relaxed) >= b => {
                    first_usable.get_or_insert(i);
                }
                _ => return Some(i),
            }
        }
        first_usable
    }
}

/// `a` carries less load per unit of weight than `b`.
fn lighter(a: &Server, b: &Server) -> bool {
    let la = a.state.active.load(Ordering::Relaxed) as u64 * b.weight as u64;
    let lb = b.state.active.load(Ordering::Relaxed) as u64 * a.weight as u64;
    la < lb
}

/// A stable 64-bit hash (FNV-1a, then a splitmix64 finish for spread):
/// the same key maps to the same server in every worker and every run.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let here = &t as *const u64 as u64;
        (t ^ here.rotate_left(32)) | 1
    });
}

/// A fast per-thread xorshift: balancing needs spread, not secrecy.
pub(crate) fn random_below(n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.set(x);
        (x % n as u64) as usize
    })
}
