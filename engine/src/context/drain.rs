//! Draining a worker: stop taking requests, let every open client
//! connection finish what it is doing, know when the last one has gone.
//! (hyper-util's GracefulShutdown watches hyper connection futures; ours
//! are parked between requests, outside hyper, so they need their own.)

use std::cell::Cell;
use std::rc::Rc;

use tokio::sync::Notify;

#[derive(Default)]
pub struct Drain {
    draining: Cell<bool>,
    open: Cell<usize>,
    /// Wakes every connection when draining starts.
    start: Notify,
    /// Wakes the drainer when the last connection has closed.
    last_closed: Notify,
}

/// Held by each open connection; dropping it counts the connection closed.
pub struct Open(Rc<Drain>);

impl Drop for Open {
    fn drop(&mut self) {
        let left = self.0.open.get() - 1;
        self.0.open.set(left);
        if left == 0 && self.0.draining.get() {
            self.0.last_closed.notify_one();
        }
    }
}

impl Drain {
    /// Counts a new connection open, unless the worker is draining.
    pub fn enter(self: &Rc<Self>) -> Option<Open> {
        if self.draining.get() {
            return None;
        }
        self.open.set(self.open.get() + 1);
        Some(Open(self.clone()))
    }

    /// Connections open now (the shutdown's "closing N connections still
    /// open" line).
    pub fn open(&self) -> usize {
        self.open.get()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Resolves once draining has started.
    pub async fn started(&self) {
        loop {
            let notified = self.start.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.draining.get() {
                return;
            }
            notified.await;
        }
    }

    /// Starts draining: no new connection is counted, and the waiting ones
    /// are woken ([`Drain::started`]). Returns how many were open. (The
    /// server wakes its parked connections too: they wait on its
    /// keep-alive sweep, not here.)
    pub fn begin(&self) -> usize {
        self.draining.set(true);
        self.start.notify_waiters();
        self.open.get()
    }

    /// Waits until every connection has closed.
    pub async fn closed(&self) {
        while self.open.get() > 0 {
            self.last_closed.notified().await;
        }
    }
}
