//! Read buffers for client connections (HTTP/1.1 and HTTP/2) and upstream
//! HTTP/1.1 ones, kept per worker thread between requests.
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
use std::thread::LocalKey;

use bytes::BytesMut;

/// The size of a client connection's read buffer: a request head of a
/// browser or an API client fits; a larger one grows its buffer (and that
/// buffer is not kept).
pub(crate) const SIZE: usize = 8 * 1024;

/// The size of an upstream connection's read buffer: a response of a
/// 16 KiB body and a head of up to 4 KiB read in one `recv`. With 8 KiB a
/// 16 KiB response took a `recv` and a `writev` more (four of each a
/// request instead of three; `strace -c`, 20,000 `/large` requests); with
/// 16 KiB its last ~240 bytes still took a `recv` of their own (three a
/// request, `bench/syscalls --path /large`, two with this size). What a
/// buffer holds counts in resident memory only where it was written.
pub(crate) const UPSTREAM_SIZE: usize = 20 * 1024;

/// Room an upstream buffer must have left to take a read without growing
/// first (below it, the reader reserves [`UPSTREAM_SIZE`] more).
pub(crate) const UPSTREAM_MIN_ROOM: usize = 4096;

/// Most buffers a worker keeps for reuse, of each size (512 KiB of client
/// buffers, 1.25 MiB of upstream ones; what a buffer holds counts in
/// resident memory only where it was written).
pub(crate) const KEEP: usize = 64;

type Pool = RefCell<Vec<BytesMut>>;

thread_local! {
    static POOL: Pool = const { RefCell::new(Vec::new()) };
    static UPSTREAM: Pool = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for [`SIZE`] bytes: a kept one if there is
/// one.
pub(crate) fn take() -> BytesMut {
    take_from(&POOL, SIZE)
}

/// Keeps `buf` for the next [`take`] if nothing else still points into it
/// (the request's fields are gone), it did not grow past twice [`SIZE`],
/// and the pool is not full; else frees it.
pub(crate) fn give_back(buf: BytesMut) {
    // Still shared: freed (the fields' last holder frees it).
    drop(give_back_to(&POOL, SIZE, buf));
}

/// [`take`] for an upstream connection: room for [`UPSTREAM_SIZE`] bytes.
pub(crate) fn take_upstream() -> BytesMut {
    take_from(&UPSTREAM, UPSTREAM_SIZE)
}

/// [`give_back`] for an upstream connection's buffer, except that a
/// buffer something else still points into (a response body an HTTP/2
/// client's send queue holds), with room left, comes back: the connection
/// keeps it and reads its next response into the rest, as it always did.
/// Freeing it and taking another cost a 16 KiB allocation a request on
/// h2c (valgrind's DHAT: 19,999 for 20,000 requests, 828 alive at the
/// peak).
pub(crate) fn give_back_upstream(buf: BytesMut) -> Option<BytesMut> {
    give_back_to(&UPSTREAM, UPSTREAM_SIZE, buf).filter(|shared| shared.capacity() >= UPSTREAM_MIN_ROOM)
}

fn take_from(pool: &'static LocalKey<Pool>, size: usize) -> BytesMut {
    pool.with_borrow_mut(Vec::pop).unwrap_or_else(|| BytesMut::with_capacity(size))
}

/// Pools `buf` (emptied) if nothing else points into it, it did not grow
/// past twice `size` and the pool has room, else frees it; hands it back
/// instead when something else still points into it.
fn give_back_to(pool: &'static LocalKey<Pool>, size: usize, mut buf: BytesMut) -> Option<BytesMut> {
    buf.clear();
    // `try_reclaim` succeeds only for a buffer this handle owns alone (or
    // one with `size` left anyway), and makes its whole allocation usable
    // again.
    if !buf.try_reclaim(size) {
        return Some(buf);
    }
    if buf.capacity() <= 2 * size {
        pool.with_borrow_mut(|pool| {
            if pool.len() < KEEP {
                pool.push(buf);
            }
        });
    }
    None
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
    fn upstream_buffers_have_their_own_size_and_pool() {
        std::thread::spawn(|| {
            let mut buf = take_upstream();
            assert!(buf.capacity() >= UPSTREAM_SIZE);
            // Shared (a body still points into it), with room left: kept
            // by its connection, not pooled.
            buf.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            let body = buf.split().freeze();
            let buf = give_back_upstream(buf).expect("shared with room: the connection keeps it");
            assert_eq!(UPSTREAM.with_borrow(Vec::len), 0);
            drop(body);
            assert!(give_back_upstream(buf).is_none(), "unshared: pooled");
            assert_eq!(kept(), 0, "not in the client pool");
            assert_eq!(UPSTREAM.with_borrow(Vec::len), 1);
            assert!(take_upstream().capacity() >= UPSTREAM_SIZE);
            assert!(take().capacity() < UPSTREAM_SIZE, "a client buffer is not an upstream one");
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
