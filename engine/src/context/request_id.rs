//! The name of one request in the log, in error bodies and in the
//! watchdog's report: which worker, which of its requests.

use std::fmt;

/// Names a request in the log and in error bodies: worker and sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId {
    pub worker: u32,
    pub seq: u64,
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:x}", self.worker, self.seq)
    }
}
