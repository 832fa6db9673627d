//! The last active checks of one health, as the stats page and the API
//! show them: the last result, when and why, and a window of the last
//! [`WINDOW`] verdicts (Varnish's probe window, `varnishadm
//! backend.list -p`): `+` passed, `-` failed, oldest first. Written by
//! the check task on the control thread, read by the admin listener;
//! never touched on the request path.

use std::sync::Mutex;

/// How many verdicts the window keeps.
pub const WINDOW: usize = 16;

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCheck {
    pub ok: bool,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct CheckLog {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    last: Option<LastCheck>,
    /// Bit i: the i-th most recent verdict passed.
    bits: u32,
    count: usize,
}

impl CheckLog {
    pub fn record(&self, ok: bool, reason: &str) {
        let at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.bits = (inner.bits << 1) | u32::from(ok);
        inner.count = (inner.count + 1).min(WINDOW);
        inner.last = Some(LastCheck {
            ok,
            at_unix_ms,
            reason: reason.to_string(),
        });
    }

    /// The last verdict, and the window as `+` and `-`, oldest first.
    pub fn snapshot(&self) -> (Option<LastCheck>, String) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let window = (0..inner.count)
            .rev()
            .map(|i| if inner.bits >> i & 1 == 1 { '+' } else { '-' })
            .collect();
        (inner.last.clone(), window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_the_last_sixteen_oldest_first() {
        let log = CheckLog::default();
        assert_eq!(log.snapshot(), (None, String::new()));
        log.record(true, "a");
        log.record(true, "b");
        log.record(false, "c");
        log.record(true, "d");
        let (last, window) = log.snapshot();
        assert_eq!(window, "++-+");
        assert_eq!(last.map(|l| l.reason), Some("d".to_string()));
        for _ in 0..20 {
            log.record(false, "x");
        }
        assert_eq!(log.snapshot().1, "-".repeat(WINDOW));
    }
}
