//! Smooth weighted round robin, shared by all workers without a lock.
//!
//! The smooth sequence (nginx's algorithm: weights 5,1,1 give a a b a c a a,
//! not a a a a a b c) is computed once at load; a request takes the next
//! slot with one atomic add. Every worker walks the same sequence, so
//! successive requests alternate even when they arrive on different workers.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct RoundRobin {
    /// Server indices in smooth weighted order.
    sequence: Vec<usize>,
    cursor: AtomicUsize,
}

impl RoundRobin {
    /// `servers` are (index into the pool, weight) pairs; weights >= 1.
    pub fn new(servers: &[(usize, u32)]) -> RoundRobin {
        RoundRobin {
            sequence: smooth_sequence(servers),
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sequence.is_empty()
    }

    /// The next server for which `usable` holds, or None when none does.
    #[inline]
    pub fn pick(&self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.sequence.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| self.sequence[(start.wrapping_add(i)) % n])
            .find(|&idx| usable(idx))
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One full cycle of smooth weighted round robin, with weights divided by
/// their greatest common divisor so the cycle stays short.
fn smooth_sequence(servers: &[(usize, u32)]) -> Vec<usize> {
    let g = servers.iter().fold(0, |g, &(_, w)| gcd(g, w)).max(1);
    let weights: Vec<i64> = servers.iter().map(|&(_, w)| (w / g) as i64).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; servers.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..servers.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(servers[best].0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_alternate() {
        let rr = RoundRobin::new(&[(0, 1), (1, 1)]);
        let picks: Vec<_> = (0..4).map(|_| rr.pick(|_| true).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 0, 1]);
    }

    #[test]
    fn weights_are_smooth() {
        assert_eq!(
            smooth_sequence(&[(0, 5), (1, 1), (2, 1)]),
            vec![0, 0, 1, 0, 2, 0, 0]
        );
        assert_eq!(smooth_sequence(&[(0, 20), (1, 10)]), vec![0, 1, 0]);
    }

    #[test]
    fn skips_unusable_servers() {
        let rr = RoundRobin::new(&[(0, 1), (1, 1), (2, 1)]);
        for _ in 0..6 {
            assert_ne!(rr.pick(|i| i != 1), Some(1));
        }
        assert_eq!(rr.pick(|_| false), None);
    }
}
