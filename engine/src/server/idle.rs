//! The keep-alive of parked client connections, per worker thread: one
//! coarse sweep for all of them instead of a timer and a drain waiter in
//! each (nginx and HAProxy likewise keep their connections' timers in one
//! structure per worker). A parked connection holds a [`Ticket`] (an
//! index); its entry here holds when its keep-alive ends and its waker,
//! 32 bytes, where a tokio `Sleep` and the drain's `Notified` took
//! some 220 bytes of the connection's task. A keep-alive ends at most
//! [`TICK`] after its due time.

use std::cell::RefCell;
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::time::Instant;

/// How often the sweep looks, while any connection is parked: how late a
/// keep-alive may end at most.
pub const TICK: Duration = Duration::from_millis(100);

/// 32 bytes (a free place too: None's niche).
struct Entry {
    /// When the keep-alive ends; None: it has (the sweep saw it).
    due: Option<Instant>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Sweep {
    /// Parked connections' entries (None: a free place, listed in `free`).
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    live: usize,
    /// The sweeping task is alive (it ends once nothing is parked).
    sweeping: bool,
}

thread_local! {
    static SWEEP: RefCell<Sweep> = RefCell::default();
}

/// A parked connection's place in the sweep; dropping it leaves.
pub struct Ticket(u32);

impl Ticket {
    /// Enters a connection whose keep-alive ends at `due`. Must run on a
    /// worker thread (inside its `LocalSet`: the sweep is a local task).
    pub fn new(due: Instant) -> Ticket {
        let (at, start) = SWEEP.with(|s| {
            let mut s = s.borrow_mut();
            let entry = Some(Entry {
                due: Some(due),
                waker: None,
            });
            let at = match s.free.pop() {
                Some(at) => {
                    s.entries[at as usize] = entry;
                    at
                }
                None => {
                    s.entries.push(entry);
                    (s.entries.len() - 1) as u32
                }
            };
            s.live += 1;
            let start = !s.sweeping;
            s.sweeping = true;
            (at, start)
        });
        if start {
            tokio::task::spawn_local(sweep());
        }
        Ticket(at)
    }

    /// The keep-alive has ended (else `cx`'s task is woken when it has,
    /// or when [`wake_all`] is called).
    pub fn poll_expired(&self, cx: &mut Context<'_>) -> bool {
        SWEEP.with(|s| {
            let mut s = s.borrow_mut();
            let Some(Some(e)) = s.entries.get_mut(self.0 as usize) else {
                return true;
            };
            if e.due.is_none() {
                return true;
            }
            if !e.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                e.waker = Some(cx.waker().clone());
            }
            false
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // During thread teardown the sweep may be gone: nothing to leave.
        let _ = SWEEP.try_with(|s| {
            let mut s = s.borrow_mut();
            if let Some(slot) = s.entries.get_mut(self.0 as usize) {
                if slot.take().is_some() {
                    s.live -= 1;
                    s.free.push(self.0);
                }
            }
        });
    }
}

/// Wakes every parked connection of this thread (the worker drains: each
/// sees it and closes).
pub fn wake_all() {
    let wakers: Vec<Waker> = SWEEP.with(|s| {
        let mut s = s.borrow_mut();
        s.entries
            .iter_mut()
            .flatten()
            .filter_map(|e| e.waker.take())
            .collect()
    });
    wakers.into_iter().for_each(Waker::wake);
}

/// Every [`TICK`], wakes the connections whose keep-alive has ended; ends
/// when none is parked (the next one parked starts it again).
async fn sweep() {
    /// A sweep dropped with its runtime lets the next one start.
    struct Stopped;
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = SWEEP.try_with(|s| s.borrow_mut().sweeping = false);
        }
    }
    let _stopped = Stopped;
    let mut woken = Vec::new();
    loop {
        tokio::time::sleep(TICK).await;
        let now = Instant::now();
        let done = SWEEP.with(|s| {
            let mut s = s.borrow_mut();
            if s.live == 0 {
                // Places freed by a burst are not kept.
                s.entries = Vec::new();
                s.free = Vec::new();
                return true;
            }
            for e in s.entries.iter_mut().flatten() {
                if e.due.is_some_and(|due| due <= now) {
                    e.due = None;
                    woken.extend(e.waker.take());
                }
            }
            false
        });
        // Woken outside the borrow.
        woken.drain(..).for_each(Waker::wake);
        if done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::mem::size_of;
    use std::task::Poll;

    use super::*;

    fn on_a_worker_thread(f: impl std::future::Future<Output = ()>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            tokio::time::timeout(Duration::from_secs(20), f)
                .await
                .expect("the sweep did its part within 20 s");
        });
    }

    #[test]
    fn an_entry_is_32_bytes() {
        assert_eq!(size_of::<Option<Entry>>(), 32);
    }

    fn live() -> usize {
        SWEEP.with(|s| s.borrow().live)
    }

    #[test]
    fn a_keepalive_ends_by_the_sweep_and_its_place_is_given_back() {
        on_a_worker_thread(async {
            let later = Ticket::new(Instant::now() + Duration::from_secs(3600));
            let soon = Ticket::new(Instant::now() + Duration::from_millis(20));
            assert_eq!(live(), 2);
            poll_fn(|cx| match soon.poll_expired(cx) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            })
            .await;
            let still = poll_fn(|cx| Poll::Ready(later.poll_expired(cx))).await;
            assert!(!still, "a keep-alive an hour away ended");
            drop(soon);
            drop(later);
            assert_eq!(live(), 0);
            // The sweep ends with nothing parked, and starts again.
            let again = Ticket::new(Instant::now());
            poll_fn(|cx| match again.poll_expired(cx) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            })
            .await;
        });
    }

    #[test]
    fn wake_all_wakes_every_parked_connection() {
        on_a_worker_thread(async {
            let ticket = Ticket::new(Instant::now() + Duration::from_secs(3600));
            let mut polls = 0;
            poll_fn(|cx| {
                polls += 1;
                if polls == 1 {
                    assert!(!ticket.poll_expired(cx));
                    wake_all();
                    return Poll::Pending;
                }
                Poll::Ready(())
            })
            .await;
            assert_eq!(polls, 2);
        });
    }
}
