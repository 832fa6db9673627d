//! One timer per client connection for all of the direct path's clocks:
//! the head and keep-alive timeouts of the client loop, the server's
//! answer (`timeouts.response`, `total`) and its silences mid-body
//! (`timeouts.idle`). Each phase says when it must be over ([`Clock::set`]);
//! the timer is moved only when that is earlier than it is armed for, and
//! otherwise re-armed when it fires early, so a request costs assignments,
//! not timer updates (HAProxy and nginx keep their timers coarse the same
//! way).

use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use tokio::time::{Instant, Sleep};

/// A client connection's one timer: due when the current phase must be
/// over ([`Clock::set`]), checked with [`Clock::poll_expired`].
pub struct Clock {
    sleep: Pin<Box<Sleep>>,
    /// When the timer fires.
    armed: Instant,
    /// When the current phase must be over.
    due: Instant,
}

impl Clock {
    /// A clock due at `due`.
    pub fn new(due: Instant) -> Clock {
        Clock {
            sleep: Box::pin(tokio::time::sleep_until(due)),
            armed: due,
            due,
        }
    }

    /// The current phase must be over by `due`.
    #[inline]
    pub fn set(&mut self, due: Instant) {
        self.due = due;
        if due < self.armed {
            self.sleep.as_mut().reset(due);
            self.armed = due;
        }
    }

    /// When the current phase must be over.
    #[inline]
    pub fn due(&self) -> Instant {
        self.due
    }

    /// The current phase's deadline has passed (else the task is woken
    /// when it may have).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= self.due {
                return true;
            }
            self.sleep.as_mut().reset(self.due);
            self.armed = self.due;
        }
    }
}
