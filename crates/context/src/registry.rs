//! What a scope keeps for its cancellation (children, `done()` wakers,
//! callbacks), keyed like a slab, with the first [`INLINE`] entries inside
//! the scope itself.
//!
//! Why not a plain `Slab`: it allocates on its first insert, and most
//! scopes (a request's, an upstream try's) register one or two things in
//! their life: a waiter, a child. Two entries inline: 77 instructions fewer
//! per proxied request without filters, 262 with one filter (its stream has
//! a scope of its own); docs/benchmarks.md, "Second pass on one worker".
//!
//! Keys `0..INLINE` name the inline entries, `INLINE + k` the slab's key
//! `k`. A key is reused once its entry is removed, as a slab's is. The slab
//! itself is boxed, made on the first entry past the inline ones: one word
//! in the scope instead of five keeps a scope within a smaller allocation
//! (every connection has one, idle or not).

use slab::Slab;

/// Entries kept inline.
const INLINE: usize = 2;

pub(crate) struct Registry<T> {
    inline: [Option<T>; INLINE],
    rest: Option<Box<Slab<T>>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry { inline: [None, None], rest: None }
    }
}

impl<T> Registry<T> {
    /// The key the next [`Registry::insert`] will return.
    pub(crate) fn vacant_key(&self) -> usize {
        match self.inline.iter().position(Option::is_none) {
            Some(i) => i,
            None => INLINE + self.rest.as_ref().map_or(0, |rest| rest.vacant_key()),
        }
    }

    /// Stores `value`; returns its key.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        match self.inline.iter().position(Option::is_none) {
            Some(i) => {
                self.inline[i] = Some(value);
                i
            }
            None => INLINE + self.rest.get_or_insert_default().insert(value),
        }
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match key.checked_sub(INLINE) {
            None => self.inline[key].as_mut(),
            Some(k) => self.rest.as_mut()?.get_mut(k),
        }
    }

    /// Takes the entry with `key` out, if there is one.
    pub(crate) fn try_remove(&mut self, key: usize) -> Option<T> {
        match key.checked_sub(INLINE) {
            None => self.inline[key].take(),
            Some(k) => self.rest.as_mut()?.try_remove(k),
        }
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.inline.iter().flatten().chain(self.rest.iter().flat_map(|rest| rest.iter().map(|(_, v)| v)))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.inline.iter_mut().flatten().chain(self.rest.iter_mut().flat_map(|rest| rest.iter_mut().map(|(_, v)| v)))
    }

    pub(crate) fn into_values(self) -> impl Iterator<Item = T> {
        self.inline.into_iter().flatten().chain(self.rest.into_iter().flat_map(|rest| rest.into_iter().map(|(_, v)| v)))
    }
}

#[cfg(all(test, not(nuncio_loom)))]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_entries_inline_and_beyond() {
        let mut registry = Registry::default();
        let keys: Vec<usize> = (0..5)
            .map(|i| {
                let expected = registry.vacant_key();
                let key = registry.insert(i * 10);
                assert_eq!(key, expected, "vacant_key tells the key insert gives");
                key
            })
            .collect();
        assert_eq!(keys, [0, 1, 2, 3, 4]);
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(registry.get_mut(*key).copied(), Some(i * 10));
        }
        // Removing frees the key for the next insert, inline or not.
        assert_eq!(registry.try_remove(1), Some(10));
        assert_eq!(registry.try_remove(1), None);
        assert_eq!(registry.get_mut(1), None);
        assert_eq!(registry.vacant_key(), 1);
        assert_eq!(registry.insert(11), 1);
        assert_eq!(registry.try_remove(3), Some(30));
        assert_eq!(registry.insert(31), 3);
        assert_eq!(registry.try_remove(9), None, "a key never given");

        let mut all: Vec<usize> = registry.iter().copied().collect();
        all.sort_unstable();
        assert_eq!(all, [0, 11, 20, 31, 40]);
        for value in registry.iter_mut() {
            *value += 1;
        }
        let mut all: Vec<usize> = registry.into_values().collect();
        all.sort_unstable();
        assert_eq!(all, [1, 12, 21, 32, 41]);
    }
}
