//! Typed request-scoped values, copied on derive so a lookup never walks the chain.

use std::{
    any::{Any, TypeId},
    hash::{Hash, Hasher},
    iter,
    sync::Arc,
};

/// The values visible from one context: at most one per type.
///
/// A small open-addressing hash table keyed by (64 bits of) the `TypeId`,
/// never more than half full, rebuilt (copied) on every `with_value`. So a
/// lookup is one pointer hop plus, typically, one probe, whatever the depth
/// of the context tree or the number of values.
#[derive(Clone, Default)]
pub(crate) struct Values(Option<Arc<[Option<Entry>]>>);

#[derive(Clone)]
struct Entry {
    /// 64 bits of the value's `TypeId`, to probe on; the type itself is
    /// checked by the downcast.
    key: u64,
    value: Arc<dyn Any + Send + Sync>,
}

/// 64 bits of `T`'s `TypeId` (which is itself a hash); folds to a constant.
#[inline]
fn key_of<T: Any>() -> u64 {
    let mut hasher = KeyHasher(0);
    TypeId::of::<T>().hash(&mut hasher);
    hasher.0
}

/// Keeps what `TypeId` hashes (today one `u64`) as it is.
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Values {
    pub(crate) const EMPTY: Values = Values(None);

    /// A copy of `self` with the value of type `T` set to `value`.
    pub(crate) fn with<T: Any + Send + Sync>(&self, value: T) -> Values {
        let key = key_of::<T>();
        let kept = self.entries().filter(|e| !(e.key == key && e.value.is::<T>()));
        let entries: Vec<Entry> = kept.cloned().chain(iter::once(Entry { key, value: Arc::new(value) })).collect();
        // At most half full, so a probe for an absent key meets an empty slot.
        let capacity = (entries.len() * 2).next_power_of_two();
        // Collecting from `take` allocates once; the `Arc` is ours alone.
        let mut table: Arc<[Option<Entry>]> = iter::repeat_with(|| None).take(capacity).collect();
        let slots = Arc::get_mut(&mut table).unwrap_or_else(|| unreachable!("a fresh Arc is unique"));
        for entry in entries {
            let mut i = slot_of(entry.key, capacity);
            while slots[i].is_some() {
                i = (i + 1) & (capacity - 1);
            }
            slots[i] = Some(entry);
        }
        Values(Some(table))
    }

    /// The value of type `T`, if one was set.
    #[inline]
    pub(crate) fn get<T: Any>(&self) -> Option<&T> {
        let table = self.0.as_deref()?;
        let key = key_of::<T>();
        let mask = table.len() - 1;
        let mut i = slot_of(key, table.len());
        // Two types sharing 64 bits of `TypeId` would just probe on.
        while let Some(entry) = &table[i] {
            if entry.key == key
                && let Some(value) = entry.value.downcast_ref()
            {
                return Some(value);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// How many values are set.
    pub(crate) fn len(&self) -> usize {
        self.entries().count()
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.0.as_deref().unwrap_or(&[]).iter().flatten()
    }
}

/// The home slot of `key` in a table of `capacity` (a power of two) slots.
#[inline]
fn slot_of(key: u64, capacity: usize) -> usize {
    // Truncation intended: `TypeId`s are hashes, any bits will do.
    (key as usize) & (capacity - 1)
}
