//! What Pocket shows of what it does: one [`Exchange`] record per request
//! (per h2 stream), finished when the exchange ends, feeds the access log
//! and the metrics; the admin listener serves the metrics, the live stats
//! page and the admin API.
//!
//! The record is filled in as the request goes through its phases
//! (`proxy/mod.rs`) and handed over once, in [`exchange_ended`].

pub mod access_log;
pub mod exchange;
pub mod metrics;

pub use exchange::{Exchange, Termination};

/// The one place an exchange's record goes when the exchange is over
/// (response sent, or given up): counted in the metrics, written to the
/// access log if the policy turns it on. Runs on the worker's thread: it
/// must not block.
pub fn exchange_ended(ex: &Exchange) {
    metrics::exchange(ex);
    access_log::write(ex);
}
