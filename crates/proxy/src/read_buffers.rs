//! Read buffers for HTTP/1.1 connections, client and upstream, kept per
//! worker thread between requests.
//!
//! An idle keep-alive connection holds no buffer (as in nginx), so that
//! thousands of idle clients, and a pool of idle upstream connections,
//! cost little. A busy connection goes idle
//! between every two requests, though: without this pool each request
//! would pay a fresh 8 KiB allocation (a slow path of the allocator at that
//! size) and, on its first split, the `bytes` crate's shared-header
//! allocation. Buffers given back here are whole and unshared, already in
//! their shared form, and at most [`KEEP`] wait per worker.
//!
//! Thread rule: a worker's pool is its own (a thread-local); nothing is
//! shared between workers.

use std::cell::RefCell;

use bytes::BytesMut;

/// The size of a read buffer: a request head of a browser or an API client
/// fits; a larger one grows its buffer (and that buffer is not kept).
pub(crate) const SIZE: usize = 8 * 1024;

/// Most buffers a worker keeps for reuse (512 KiB).
pub(crate) const KEEP: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for [`SIZE`] bytes: a kept one if there is
/// one.
pub(crate) fn take() -> BytesMut {
    POOL.with_borrow_mut(Vec::pop).unwrap_or_else(|| BytesMut::with_capacity(SIZE))
}

/// Keeps `buf` for the next [`take`] if nothing else still points into it
/// (the request's fields are gone), it did not grow past [`SIZE`], and the
/// pool is not full; else frees it.
pub(crate) fn give_back(mut buf: BytesMut) {
    buf.clear();
    // `try_reclaim` succeeds only for a buffer this handle owns alone,
    // and makes its whole allocation usable again.
    if !buf.try_reclaim(SIZE) || buf.capacity() > 2 * SIZE {
        return;
    }
    POOL.with_borrow_mut(|pool| {
        if pool.len() < KEEP {
            pool.push(buf);
        }
    });
}

/// How many buffers this thread keeps (tests).
#[cfg(test)]
fn kept() -> usize {
    POOL.with_borrow(Vec::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_only_when_unshared() {
        std::thread::spawn(|| {
            let mut buf = take();
            assert!(buf.capacity() >= SIZE);
            buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let head = buf.split_to(6).freeze();
            // The head still points into it: not kept.
            give_back(buf);
            assert_eq!(kept(), 0);
            drop(head);

            let mut buf = take();
            buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let head = buf.split_to(6).freeze();
            drop(head);
            give_back(buf);
            assert_eq!(kept(), 1);
            let again = take();
            assert!(again.is_empty() && again.capacity() >= SIZE);
            assert_eq!(kept(), 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_pool_is_bounded() {
        std::thread::spawn(|| {
            for _ in 0..KEEP + 10 {
                give_back(BytesMut::with_capacity(SIZE));
            }
            assert_eq!(kept(), KEEP);
            // A buffer that grew large is not kept.
            POOL.with_borrow_mut(Vec::clear);
            give_back(BytesMut::with_capacity(16 * SIZE));
            assert_eq!(kept(), 0);
        })
        .join()
        .unwrap();
    }
}
