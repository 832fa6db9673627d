//! What `/metrics` serves: Prometheus text, from `crate::observe::metrics`.

/// The Prometheus text exposition of the process's metrics.
pub fn text() -> String {
    crate::observe::metrics::render()
}
