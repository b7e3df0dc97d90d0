//! Header maps kept per thread between messages.
//!
//! A decoded head's [`HeaderMap`] holds its fields in one vector of about
//! a hundred bytes a field, sized with room to spare: 1.2 KiB for a short
//! request head, 2.5 KiB for a typical response. That is above the size
//! the allocator (mimalloc) serves from its fast path (1 KiB), so every
//! head cost a slow-path allocation of ~260 instructions and its free
//! (`bench/instructions --top`: ~3.7 such allocations a proxied request, two
//! of them header maps). A proxy that is done with a head (encoded it to
//! the next hop, or ended the stream) gives its map back with
//! [`give_back`]; the decoders take one from here before allocating.
//!
//! Thread rule: the pool is a thread-local, so each worker has its own and
//! nothing is shared between workers; a map given back on one thread is
//! reused on that thread. At most [`KEEP`] maps wait per thread, each with
//! room for at most [`MAX_KEPT_CAPACITY`] fields (a map grown by a
//! hundred-field head is freed, not kept).

use std::cell::RefCell;

use http::HeaderMap;
use http::header::MaxSizeReached;

/// Most maps a thread keeps (~160 KiB at most).
pub const KEEP: usize = 64;

/// Largest capacity (in fields) of a map worth keeping: what a head of 24
/// fields with the decoder's spare room gets.
pub const MAX_KEPT_CAPACITY: usize = 48;

thread_local! {
    static POOL: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `capacity` fields: a kept one if there is
/// one (grown if it is too small), else a new one.
pub(crate) fn take(capacity: usize) -> Result<HeaderMap, MaxSizeReached> {
    match POOL.with_borrow_mut(Vec::pop) {
        Some(mut map) => {
            map.try_reserve(capacity)?;
            Ok(map)
        }
        None => HeaderMap::try_with_capacity(capacity),
    }
}

/// Keeps `map`, emptied, for the next decoded head on this thread; frees it
/// instead when it is too large or the pool is full. Its fields are dropped
/// either way, so whatever buffer their values point into is released now.
pub fn give_back(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > MAX_KEPT_CAPACITY {
        return;
    }
    POOL.with_borrow_mut(|pool| {
        if pool.len() < KEEP {
            map.clear();
            pool.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use http::header::HOST;

    use super::*;

    fn pooled() -> usize {
        POOL.with_borrow(Vec::len)
    }

    #[test]
    fn a_map_given_back_comes_back_empty_with_its_room() {
        let mut map = take(9).unwrap();
        map.insert(HOST, HeaderValue::from_static("a"));
        let room = map.capacity();
        let before = pooled();
        give_back(map);
        assert_eq!(pooled(), before + 1);
        let again = take(9).unwrap();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room);
        assert_eq!(pooled(), before);
    }

    #[test]
    fn a_kept_map_too_small_grows_and_large_or_empty_maps_are_not_kept() {
        give_back(take(2).unwrap());
        assert!(take(30).unwrap().capacity() >= 30);
        let before = pooled();
        give_back(HeaderMap::with_capacity(200));
        give_back(HeaderMap::new());
        assert_eq!(pooled(), before);
    }

    #[test]
    fn the_pool_keeps_at_most_keep_maps() {
        for _ in 0..KEEP + 5 {
            give_back(HeaderMap::with_capacity(4));
        }
        assert_eq!(pooled(), KEEP);
    }
}
