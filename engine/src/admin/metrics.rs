//! What `/metrics` serves: Prometheus text. The values come from
//! `crate::observe::metrics` (its own owner); until that is wired in,
//! this serves an empty exposition, which Prometheus accepts.

/// The Prometheus text exposition of the process's metrics.
pub fn text() -> String {
    String::new()
}
