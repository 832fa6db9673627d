//! Time buckets over a lab run's requests: what the live timeline, the
//! summary table and the chart show. A request counts in the bucket in
//! which it was sent (the load sends nothing after the end, so the last
//! bucket is as full as the others, and a failure shows when the request
//! that met it was made, even if it took the load's timeout to fail); a
//! bucket that the run's end cuts short is scaled by the part it covers.

use std::collections::BTreeMap;

use super::load::{Retry, Sample};

/// What the requests sent in [from, to) saw.
#[derive(Debug, Default, Clone)]
pub struct Bucket {
    /// Seconds on the lab's clock.
    pub from: f64,
    /// The bucket's end, or the run's end if that comes first.
    pub to: f64,
    /// Answered requests by the origin that answered.
    pub servers: BTreeMap<String, u64>,
    /// Failed requests by kind (`Failure::kind`).
    pub failed: BTreeMap<String, u64>,
    /// Requests Pocket tried on another server (its log lines).
    pub retried: u64,
    /// Latencies of the answered requests, milliseconds, sorted.
    latencies: Vec<f64>,
}

impl Bucket {
    pub fn ok(&self) -> u64 {
        self.servers.values().sum()
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Seconds this bucket covers (shorter than the width at the end).
    pub fn span(&self) -> f64 {
        (self.to - self.from).max(1e-9)
    }

    /// Requests per second for `count` requests of this bucket.
    pub fn rate(&self, count: u64) -> f64 {
        count as f64 / self.span()
    }

    /// Sorts the latencies, which [`Bucket::quantile_ms`] needs.
    pub fn sort(&mut self) {
        self.latencies.sort_by(f64::total_cmp);
    }

    /// The q-quantile (0..=1) of answered requests' latency in ms; None
    /// when nothing was answered.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies.get(i).copied()
    }
}

/// Buckets of `width` seconds from 0 to `end`.
pub fn buckets(samples: &[Sample], retries: &[Retry], width: f64, end: f64) -> Vec<Bucket> {
    let mut out = empty(width, end);
    add(&mut out, samples, retries, width, end);
    for b in &mut out {
        b.sort();
    }
    out
}

/// Empty buckets of `width` seconds from 0 to `end`, for [`add`].
pub fn empty(width: f64, end: f64) -> Vec<Bucket> {
    let n = ((end / width).ceil() as usize).max(1);
    (0..n)
        .map(|i| Bucket {
            from: i as f64 * width,
            to: ((i + 1) as f64 * width).min(end),
            ..Bucket::default()
        })
        .collect()
}

/// Counts `samples` and `retries` into `out` (made by [`empty`] with the
/// same `width` and `end`), so the live timeline adds only what is new.
/// Latencies stay unsorted: [`Bucket::sort`] before asking quantiles.
pub fn add(out: &mut [Bucket], samples: &[Sample], retries: &[Retry], width: f64, end: f64) {
    let n = out.len();
    if n == 0 {
        return;
    }
    let index = |t: f64| -> Option<usize> {
        (t >= 0.0 && t < end).then(|| ((t / width) as usize).min(n - 1))
    };
    for s in samples {
        let Some(i) = index(s.sent) else { continue };
        let b = &mut out[i];
        match &s.failure {
            None => {
                let who = s.server.clone().unwrap_or_else(|| "Pocket".into());
                *b.servers.entry(who).or_default() += 1;
                b.latencies.push(s.latency_ms());
            }
            Some(f) => *b.failed.entry(f.kind.clone()).or_default() += 1,
        }
    }
    for r in retries {
        if let Some(i) = index(r.t) {
            out[i].retried += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sent: f64, server: &str) -> Sample {
        Sample {
            sent,
            done: sent + 0.01,
            server: Some(server.into()),
            status: Some(200),
            failure: None,
            bytes: 0,
        }
    }

    /// The live timeline adds samples a few at a time; its buckets are the
    /// ones the report makes from all of them at once.
    #[test]
    fn adding_in_parts_counts_as_all_at_once() {
        let all: Vec<Sample> = (0..30)
            .map(|i| sample(i as f64 * 0.1, if i % 2 == 0 { "A" } else { "B" }))
            .collect();
        let whole = buckets(&all, &[], 1.0, 3.0);
        let mut parts = empty(1.0, 3.0);
        for chunk in all.chunks(7) {
            add(&mut parts, chunk, &[], 1.0, 3.0);
        }
        for (w, p) in whole.iter().zip(&mut parts) {
            p.sort();
            assert_eq!((&w.servers, w.ok()), (&p.servers, p.ok()));
            assert_eq!(w.quantile_ms(0.5), p.quantile_ms(0.5));
        }
    }
}
