//! The keep-alive of parked client connections, per worker thread: one
//! coarse sweep for all of them instead of a timer and a drain waiter in
//! each (nginx and HAProxy likewise keep their connections' timers in one
//! structure per worker). A parked connection holds a [`Ticket`] (an
//! index); its entry here holds when its keep-alive ends and its waker,
//! 32 bytes, where a tokio `Sleep` and the drain's `Notified` took
//! some 220 bytes of the connection's task. A keep-alive ends at most
//! [`TICK`] after its due time.
//!
//! A parked plain TCP connection is also watched here rather than by
//! tokio ([`Ticket::watch`]): its socket leaves tokio's registry (a
//! 256-byte `ScheduledIo` each) for an epoll instance of the sweep's, one
//! tokio registration for all of them, which wakes the connection when
//! its client sends (or closes). That costs four `epoll_ctl` calls per
//! park and wake, paid only by connections idle for a sweep tick or more
//! (a kept-alive client sending at once never parks, see `h1.rs`).

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
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
    /// The watched sockets' epoll instance, made at the first watch while
    /// the sweep runs.
    epoll: Option<Rc<AsyncFd<OwnedFd>>>,
    /// It could not be made: sockets stay with tokio.
    no_epoll: bool,
    /// The sweeping task, woken when the instance is made.
    sweeper: Option<Waker>,
}

thread_local! {
    static SWEEP: RefCell<Sweep> = RefCell::default();
}

/// A parked connection's place in the sweep; dropping it leaves (and
/// stops watching its socket, if it did).
pub struct Ticket {
    at: u32,
    /// The socket watched for the connection ([`Ticket::watch`]); -1: none.
    watched: RawFd,
}

impl Ticket {
    /// Enters a connection whose keep-alive ends at `due`. Must run on a
    /// worker thread (inside its `LocalSet`: the sweep is a local task).
    pub fn new(due: Instant) -> Ticket {
        Ticket {
            at: enter(due),
            watched: -1,
        }
    }

    /// Enters a connection whose keep-alive ends at `due` and watches its
    /// socket `fd` (not registered with tokio) for the client's next
    /// bytes or its close: the ticket then fires as it does when the
    /// keep-alive ends (the caller tells which by the clock). None: the
    /// sweep cannot watch sockets (the caller keeps the socket with tokio).
    pub fn watch(due: Instant, fd: RawFd) -> Option<Ticket> {
        let at = enter(due);
        // Dropped (leaving the sweep) if the socket cannot be watched.
        let mut ticket = Ticket { at, watched: -1 };
        let epoll = SWEEP.with(|s| {
            let mut s = s.borrow_mut();
            if s.epoll.is_none() && !s.no_epoll {
                s.epoll = new_epoll().map(Rc::new);
                s.no_epoll = s.epoll.is_none();
                if let Some(w) = s.sweeper.take() {
                    w.wake();
                }
            }
            s.epoll.as_ref().map(|e| e.as_raw_fd())
        })?;
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: u64::from(at),
        };
        // SAFETY: plain syscall on descriptors this thread owns; `event`
        // lives across the call.
        if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
            return None;
        }
        ticket.watched = fd;
        Some(ticket)
    }
}

/// Takes a place in the sweep (starting it if it is not running).
fn enter(due: Instant) -> u32 {
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
    at
}

/// An epoll instance registered with this thread's tokio runtime.
fn new_epoll() -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: a plain syscall; the descriptor is owned from here on.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just made and is owned by nothing else; the
    // AsyncFd owns it from here on, so it stays open and the same.
    unsafe {
        let fd = OwnedFd::from_raw_fd(fd);
        AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE).ok()
    }
}

impl Ticket {
    /// The keep-alive has ended (else `cx`'s task is woken when it has,
    /// or when [`wake_all`] is called).
    pub fn poll_expired(&self, cx: &mut Context<'_>) -> bool {
        SWEEP.with(|s| {
            let mut s = s.borrow_mut();
            let Some(Some(e)) = s.entries.get_mut(self.at as usize) else {
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
            if self.watched >= 0 {
                if let Some(epoll) = &s.epoll {
                    // SAFETY: a plain syscall; a socket closed already
                    // has left the instance (ENOENT/EBADF, ignored).
                    unsafe {
                        libc::epoll_ctl(
                            epoll.as_raw_fd(),
                            libc::EPOLL_CTL_DEL,
                            self.watched,
                            std::ptr::null_mut(),
                        )
                    };
                }
            }
            if let Some(slot) = s.entries.get_mut(self.at as usize) {
                if slot.take().is_some() {
                    s.live -= 1;
                    s.free.push(self.at);
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

/// Every [`TICK`], wakes the connections whose keep-alive has ended, and
/// at once those whose watched socket has bytes (or a close) for them;
/// ends when none is parked (the next one parked starts it again).
async fn sweep() {
    /// A sweep dropped with its runtime lets the next one start.
    struct Stopped;
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = SWEEP.try_with(|s| {
                let mut s = s.borrow_mut();
                s.sweeping = false;
                s.epoll = None;
                s.no_epoll = false;
                s.sweeper = None;
            });
        }
    }
    let _stopped = Stopped;
    let mut epoll: Option<Rc<AsyncFd<OwnedFd>>> = None;
    let mut woken = Vec::new();
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    let tick = tokio::time::sleep(TICK);
    tokio::pin!(tick);
    loop {
        // true: sockets to wake; false: the tick.
        let ready = std::future::poll_fn(|cx| {
            if epoll.is_none() {
                SWEEP.with(|s| {
                    let mut s = s.borrow_mut();
                    epoll = s.epoll.clone();
                    if epoll.is_none() {
                        s.sweeper = Some(cx.waker().clone());
                    }
                });
            }
            if let Some(epoll) = &epoll {
                if let Poll::Ready(Ok(mut guard)) = epoll.poll_read_ready(cx) {
                    loop {
                        // SAFETY: `events` holds 64 entries; timeout 0.
                        let n = unsafe {
                            libc::epoll_wait(
                                epoll.as_raw_fd(),
                                events.as_mut_ptr(),
                                events.len() as i32,
                                0,
                            )
                        };
                        let n = usize::try_from(n).unwrap_or(0);
                        SWEEP.with(|s| {
                            let mut s = s.borrow_mut();
                            for ev in &events[..n] {
                                if let Some(Some(e)) = s.entries.get_mut(ev.u64 as usize) {
                                    e.due = None;
                                    woken.extend(e.waker.take());
                                }
                            }
                        });
                        if n < events.len() {
                            guard.clear_ready();
                            return Poll::Ready(true);
                        }
                    }
                }
            }
            if std::future::Future::poll(tick.as_mut(), cx).is_ready() {
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await;
        if ready {
            // Woken outside the borrow.
            woken.drain(..).for_each(Waker::wake);
            continue;
        }
        let now = Instant::now();
        tick.as_mut().reset(now + TICK);
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

    /// A watched socket keeps its place until dropped, fires only when
    /// its client sends, and leaves the sweep's epoll when dropped.
    #[test]
    fn a_watched_socket_fires_when_its_client_sends() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            use std::io::Write;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
            let mut client =
                std::net::TcpStream::connect(listener.local_addr().expect("its address"))
                    .expect("a connection");
            let (server, _) = listener.accept().expect("accepted");
            let due = Instant::now() + Duration::from_secs(3600);
            let ticket = Ticket::watch(due, server.as_raw_fd()).expect("watched");
            assert_eq!(live(), 1);
            // Two ticks with nothing sent: not fired.
            tokio::time::sleep(TICK * 2).await;
            let fired = poll_fn(|cx| Poll::Ready(ticket.poll_expired(cx))).await;
            assert!(!fired, "fired with nothing sent");
            client.write_all(b"GET").expect("sent");
            tokio::time::timeout(
                Duration::from_secs(20),
                poll_fn(|cx| match ticket.poll_expired(cx) {
                    true => Poll::Ready(()),
                    false => Poll::Pending,
                }),
            )
            .await
            .expect("fired once the client sent");
            drop(ticket);
            assert_eq!(live(), 0);
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
