//! A check's `timeout` counts the time the check could have used, not the
//! time the control thread spent running other checks. Every check runs
//! on that one thread, and a scripted check holds it for as long as its
//! Lua runs (up to its own `timeout`): without this, one runaway check
//! (`while true do end` with `timeout = "2s"`) would fail every other
//! check that waited on the network meanwhile, `no answer within 1s`,
//! and take healthy servers of other pools down. A reload's load on the
//! same thread is not charged either ([`Holding`]). And a check that held
//! the thread for longer than its interval waits as long before its next
//! run (see `check_loop`), so a runaway takes at most about half of it.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

thread_local! {
    /// Time this thread has spent inside the polls of checks (a sum).
    static HELD: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

fn held() -> Duration {
    HELD.with(Cell::get)
}

/// Counts, until dropped, the control thread's time as held by work other
/// than checks: a reload, which runs the new policy's main chunk (up to
/// its 2 s budget, or 20 budgets on a busy machine, see lua-api.md
/// "Limits") on this thread while the checks wait.
pub struct Holding(Instant);

impl Holding {
    pub fn start() -> Holding {
        Holding(Instant::now())
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let spent = self.0.elapsed();
        HELD.with(|h| h.set(h.get() + spent));
    }
}

/// Runs `check` until it ends (`Some`) or until `timeout` has passed
/// beyond the time other checks held this thread since it began (`None`).
/// The check's own polls count against its timeout; their sum is
/// returned beside (how long this check held the thread).
pub async fn within<F: Future>(timeout: Duration, check: F) -> (Option<F::Output>, Duration) {
    let started = Instant::now();
    let held_before = held();
    let mut own = Duration::ZERO;
    let mut check = pin!(check);
    let mut due = pin!(tokio::time::sleep(timeout));
    std::future::poll_fn(|cx| {
        let polled = Instant::now();
        let out = check.as_mut().poll(cx);
        let spent = polled.elapsed();
        own += spent;
        HELD.with(|h| h.set(h.get() + spent));
        if let Poll::Ready(v) = out {
            return Poll::Ready((Some(v), own));
        }
        loop {
            if due.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let others = held().saturating_sub(held_before).saturating_sub(own);
            let end = started + timeout + others;
            if end <= Instant::now() {
                return Poll::Ready((None, own));
            }
            due.as_mut().reset(end.into());
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Checks whose second step comes after another check held the
    /// thread for 600 ms: one that then waits 200 ms passes its 500 ms
    /// timeout (it would fail if the 600 ms were charged to it), one that
    /// waits 1 s fails its 100 ms timeout all the same. Margins of 300 ms
    /// and more either way.
    #[test]
    fn time_held_by_another_check_is_not_charged() {
        runtime().block_on(async {
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let ms = Duration::from_millis;
                    let steps = |second: u64| async move {
                        tokio::time::sleep(ms(100)).await;
                        tokio::time::sleep(ms(second)).await;
                    };
                    // The timeout alone: late is late.
                    assert!(within(ms(200), tokio::time::sleep(ms(600)))
                        .await
                        .0
                        .is_none());
                    assert!(within(ms(600), tokio::time::sleep(ms(200)))
                        .await
                        .0
                        .is_some());
                    let hog =
                        tokio::task::spawn_local(within(Duration::from_secs(5), async move {
                            tokio::task::yield_now().await;
                            std::thread::sleep(ms(600));
                        }));
                    let patient = tokio::task::spawn_local(within(ms(500), steps(200)));
                    let late = tokio::task::spawn_local(within(ms(100), steps(1000)));
                    assert!(hog.await.unwrap().0.is_some());
                    assert!(
                        patient.await.unwrap().0.is_some(),
                        "the 600 ms held are not its own"
                    );
                    assert!(late.await.unwrap().0.is_none());
                })
                .await;
        });
    }

    /// A reload holding the thread for 600 ms (`Holding`) is not charged
    /// to a check that waited meanwhile either.
    #[test]
    fn time_held_by_a_reload_is_not_charged() {
        runtime().block_on(async {
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let ms = Duration::from_millis;
                    let patient = tokio::task::spawn_local(within(ms(500), async move {
                        tokio::time::sleep(ms(100)).await;
                        tokio::time::sleep(ms(200)).await;
                    }));
                    tokio::task::yield_now().await;
                    {
                        let _reload = Holding::start();
                        std::thread::sleep(ms(600));
                    }
                    assert!(patient.await.unwrap().0.is_some());
                })
                .await;
        });
    }
}
