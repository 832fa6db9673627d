//! The copy buffers of one worker thread, reused from connection to
//! connection.
//!
//! A fresh [`BUF`](super::BUF) buffer per direction per connection was a
//! large allocation each time: the allocator faulted its pages in, the
//! zeroing touched them all, and freeing them returned them to the kernel
//! (madvise) — about a fifth of the CPU of a short TCP connection. Here a
//! buffer is taken only when a direction is about to read and given back
//! as soon as it holds nothing (HAProxy's buffers work the same way), so
//! a short connection reuses warm memory and a connection that waits
//! holds no buffer at all: ten thousand quiet connections cost no
//! 32 KiB each.

use std::cell::RefCell;

use super::BUF;

/// Free buffers a worker keeps for the next connections (1 MiB of
/// 16 KiB buffers); beyond that a buffer given back is freed, so a burst
/// of busy connections leaves no lasting memory behind.
const KEEP: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Buffers taken and not given back on this thread (tests only).
    pub(super) static OUT: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

/// A buffer of [`BUF`] bytes: a free one of this thread's, else a new one
/// (zeroed once, when it is first made; a reused one holds old bytes,
/// which are only ever read after being overwritten).
pub(super) fn take() -> Box<[u8]> {
    #[cfg(test)]
    OUT.with(|n| n.set(n.get() + 1));
    FREE.with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; BUF].into_boxed_slice())
}

/// Gives `buf` back for the next connection of this thread.
pub(super) fn give(buf: Box<[u8]>) {
    #[cfg(test)]
    OUT.with(|n| n.set(n.get() - 1));
    // During thread teardown the pool may be gone: then it is just freed.
    let _ = FREE.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_the_next_one_taken() {
        let buf = take();
        assert_eq!(buf.len(), BUF);
        let at = buf.as_ptr();
        give(buf);
        let again = take();
        assert_eq!(again.as_ptr(), at, "reused, not allocated anew");
        give(again);
    }
}
