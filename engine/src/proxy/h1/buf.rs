//! The byte buffers of the direct path, per worker thread, reused from
//! request to request: a client connection's head buffer while it has a
//! request to read or serve, a server connection's read buffer while it
//! answers, and the scratch a head is written into. A connection that
//! waits holds none (HAProxy's buffers work the same way), so ten thousand
//! idle keep-alive connections cost their sockets and a few words each.

use std::cell::RefCell;

/// What a buffer starts with, in bytes: a head and the first body bytes
/// of most responses (HAProxy's `tune.bufsize`); one that grew (a larger
/// head) is not kept.
pub const SIZE: usize = 16 * 1024;

/// Free buffers a worker keeps (1 MiB); beyond that one given back is
/// freed, so a burst leaves no lasting memory behind.
const KEEP: usize = 64;

/// What a head buffer starts with, in bytes: the request head written
/// for a server, then the response head written for the client (larger
/// ones grow it once; a grown one is not kept).
pub const HEAD: usize = 2 * 1024;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static FREE_HEADS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for a [`HEAD`] at least.
#[inline]
pub fn take_head() -> Vec<u8> {
    FREE_HEADS
        .try_with(|f| f.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(HEAD))
}

/// Gives a head buffer back.
#[inline]
pub fn give_head(mut buf: Vec<u8>) {
    if buf.capacity() != HEAD {
        return;
    }
    buf.clear();
    let _ = FREE_HEADS.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            free.push(buf);
        }
    });
}

/// An empty buffer with room for [`SIZE`] bytes at least.
#[inline]
pub fn take() -> Vec<u8> {
    FREE.try_with(|f| f.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(SIZE))
}

/// Gives `buf` back for the next request of this thread.
#[inline]
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() != SIZE {
        return;
    }
    buf.clear();
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
    #[test]
    fn a_buffer_given_back_is_the_next_one_taken() {
        let mut b = super::take();
        b.extend_from_slice(b"abc");
        let at = b.as_ptr();
        super::give(b);
        let again = super::take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at);
    }
}
