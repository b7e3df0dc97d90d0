//! The static table (RFC 7541 Appendix A) with the encoder's lookups, and
//! the decoder's dynamic table (§2.3.2, §4).

use std::collections::VecDeque;

/// Number of entries in the static table; dynamic indices start after it.
pub(super) const STATIC_LEN: usize = 61;

/// RFC 7541 Appendix A; `STATIC[i - 1]` is index `i`.
pub(super) static STATIC: [(&[u8], &[u8]); STATIC_LEN] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The lowest static index whose name is `name`.
///
/// Dispatching on the length first leaves at most a handful of
/// fixed-length comparisons per name, instead of a scan of 61 entries.
pub(super) fn static_name_index(name: &[u8]) -> Option<usize> {
    let index = match name.len() {
        3 => match name {
            b"age" => 21,
            b"via" => 60,
            _ => return None,
        },
        4 => match name {
            b"date" => 33,
            b"etag" => 34,
            b"from" => 37,
            b"host" => 38,
            b"link" => 45,
            b"vary" => 59,
            _ => return None,
        },
        5 => match name {
            b":path" => 4,
            b"allow" => 22,
            b"range" => 50,
            _ => return None,
        },
        6 => match name {
            b"accept" => 19,
            b"cookie" => 32,
            b"expect" => 35,
            b"server" => 54,
            _ => return None,
        },
        7 => match name {
            b":method" => 2,
            b":scheme" => 6,
            b":status" => 8,
            b"expires" => 36,
            b"referer" => 51,
            b"refresh" => 52,
            _ => return None,
        },
        8 => match name {
            b"if-match" => 39,
            b"if-range" => 42,
            b"location" => 46,
            _ => return None,
        },
        10 => match name {
            b":authority" => 1,
            b"set-cookie" => 55,
            b"user-agent" => 58,
            _ => return None,
        },
        11 => match name {
            b"retry-after" => 53,
            _ => return None,
        },
        12 => match name {
            b"content-type" => 31,
            b"max-forwards" => 47,
            _ => return None,
        },
        13 => match name {
            b"accept-ranges" => 18,
            b"authorization" => 23,
            b"cache-control" => 24,
            b"content-range" => 30,
            b"if-none-match" => 41,
            b"last-modified" => 44,
            _ => return None,
        },
        14 => match name {
            b"accept-charset" => 15,
            b"content-length" => 28,
            _ => return None,
        },
        15 => match name {
            b"accept-encoding" => 16,
            b"accept-language" => 17,
            _ => return None,
        },
        16 => match name {
            b"content-encoding" => 26,
            b"content-language" => 27,
            b"content-location" => 29,
            b"www-authenticate" => 61,
            _ => return None,
        },
        17 => match name {
            b"if-modified-since" => 40,
            b"transfer-encoding" => 57,
            _ => return None,
        },
        18 => match name {
            b"proxy-authenticate" => 48,
            _ => return None,
        },
        19 => match name {
            b"content-disposition" => 25,
            b"if-unmodified-since" => 43,
            b"proxy-authorization" => 49,
            _ => return None,
        },
        25 => match name {
            b"strict-transport-security" => 56,
            _ => return None,
        },
        27 => match name {
            b"access-control-allow-origin" => 20,
            _ => return None,
        },
        _ => return None,
    };
    Some(index)
}

/// The static index of the exact field (`name`, `value`), given the
/// lowest index of `name` ([`static_name_index`]). Only indices 2..=14 and
/// 16 have values; every entry sharing a name is contiguous from the first.
pub(super) fn static_field_index(name_index: usize, value: &[u8]) -> Option<usize> {
    let candidates = match name_index {
        2 => 2..=3,
        4 => 4..=5,
        6 => 6..=7,
        8 => 8..=14,
        16 => 16..=16,
        _ => return None,
    };
    candidates.into_iter().find(|&i| STATIC[i - 1].1 == value)
}

/// The per-entry overhead of RFC 7541 §4.1 added to name and value lengths.
pub(super) const ENTRY_OVERHEAD: usize = 32;

/// Where one dynamic entry's octets are in [`DynamicTable::buf`].
#[derive(Clone, Copy)]
struct Entry {
    /// Position of the name's first octet, counted since the table was
    /// created (see [`DynamicTable::base`]), so compaction moves no entry.
    pos: usize,
    name_len: usize,
    value_len: usize,
}

impl Entry {
    fn size(self) -> usize {
        self.name_len + self.value_len + ENTRY_OVERHEAD
    }
}

/// The decoder's dynamic table.
///
/// Every entry's name and value are appended to one byte buffer, oldest
/// first; eviction only forgets entries, and the dead octets at the front
/// are dropped (one `memmove`) when an insertion would take the buffer past
/// twice the maximum size. The live octets never exceed the maximum, so the
/// buffer never needs more than twice it, the shift is amortised over at
/// least that many inserted octets, and once the buffer and the entry
/// queue have reached their capacity nothing allocates again.
pub(super) struct DynamicTable {
    buf: Vec<u8>,
    /// The position (see [`Entry::pos`]) of `buf[0]`.
    base: usize,
    /// Newest first: dynamic index 62 is `entries[0]`.
    entries: VecDeque<Entry>,
    /// The RFC 7541 §4.1 size of the entries.
    size: usize,
    max_size: usize,
}

impl std::fmt::Debug for DynamicTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicTable")
            .field("entries", &self.entries.len())
            .field("size", &self.size)
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

impl DynamicTable {
    pub(super) fn new(max_size: usize) -> Self {
        Self { buf: Vec::new(), base: 0, entries: VecDeque::new(), size: 0, max_size }
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry at dynamic position `i` (0 = newest), if any.
    pub(super) fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let entry = *self.entries.get(i)?;
        let start = entry.pos - self.base;
        let (name, rest) = self.buf[start..start + entry.name_len + entry.value_len].split_at(entry.name_len);
        Some((name, rest))
    }

    /// Applies a dynamic table size update (already checked against the
    /// advertised limit), evicting what no longer fits.
    pub(super) fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    /// Inserts (`name`, `value`) as the newest entry.
    pub(super) fn insert(&mut self, name: &[u8], value: &[u8]) {
        if self.make_room(name.len() + value.len()) {
            self.buf.extend_from_slice(name);
            self.push(name.len(), value);
        }
    }

    /// Inserts an entry whose name is that of dynamic entry `i` (0 =
    /// newest), which must exist. The name is copied before anything is
    /// evicted, so it may be the very entry this insertion evicts (§4.4).
    pub(super) fn insert_with_dynamic_name(&mut self, i: usize, value: &[u8]) {
        let name = self.entries[i];
        if self.make_room(name.name_len + value.len()) {
            // make_room only drops octets of entries already evicted, so
            // entry `i` is still in the buffer.
            let start = name.pos - self.base;
            self.buf.extend_from_within(start..start + name.name_len);
            self.push(name.name_len, value);
        }
    }

    /// Prepares the buffer for an entry of `octets` octets of name and
    /// value. Returns false when the entry is larger than the whole table:
    /// then the table is emptied and nothing is inserted (§4.4, not an
    /// error).
    fn make_room(&mut self, octets: usize) -> bool {
        if octets + ENTRY_OVERHEAD > self.max_size {
            self.evict_to(0);
            return false;
        }
        let limit = 2 * self.max_size;
        if self.buf.len() + octets > limit {
            let dead = self.entries.back().map_or(self.buf.len(), |oldest| oldest.pos - self.base);
            self.buf.drain(..dead);
            self.base += dead;
        }
        if self.buf.capacity() < limit {
            // Once, up front: growth by doubling could overshoot the bound.
            self.buf.reserve_exact(limit - self.buf.len());
        }
        true
    }

    /// Ends an insertion whose name (`name_len` octets) is already at the
    /// end of the buffer, then evicts the oldest entries until the table
    /// fits: the new entry itself always fits (checked by `make_room`), so
    /// this is the same as evicting first, as §4.4 describes it.
    fn push(&mut self, name_len: usize, value: &[u8]) {
        let pos = self.base + self.buf.len() - name_len;
        self.buf.extend_from_slice(value);
        let entry = Entry { pos, name_len, value_len: value.len() };
        self.size += entry.size();
        self.entries.push_front(entry);
        self.evict_to(self.max_size);
    }

    fn evict_to(&mut self, max_size: usize) {
        while self.size > max_size {
            let Some(oldest) = self.entries.pop_back() else {
                break;
            };
            self.size -= oldest.size();
        }
        if self.entries.is_empty() {
            // Nothing live: restart at the front of the buffer for free.
            self.base += self.buf.len();
            self.buf.clear();
        }
    }

    /// The RFC 7541 §4.1 size of the entries.
    #[cfg(test)]
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// The current maximum size.
    #[cfg(test)]
    pub(super) fn max_size(&self) -> usize {
        self.max_size
    }

    /// The buffer's capacity, to check that the steady state allocates nothing.
    #[cfg(test)]
    pub(super) fn capacities(&self) -> (usize, usize) {
        (self.buf.capacity(), self.entries.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_name_lookup_matches_the_table() {
        for (i, (name, _)) in STATIC.iter().enumerate() {
            let first = STATIC.iter().position(|(n, _)| n == name).unwrap() + 1;
            assert_eq!(static_name_index(name), Some(first), "{}", String::from_utf8_lossy(name));
            assert!(first <= i + 1);
        }
        for name in [&b""[..], b"x", b"content-typ", b"content-typf", b"Content-Type", b"accept-encodinG", b":path2"] {
            assert_eq!(static_name_index(name), None);
        }
    }

    #[test]
    fn static_field_lookup_matches_the_table() {
        for (i, (name, value)) in STATIC.iter().enumerate() {
            let found = static_name_index(name).and_then(|n| static_field_index(n, value));
            if value.is_empty() {
                assert_eq!(found, None, "index {}", i + 1);
            } else {
                assert_eq!(found, Some(i + 1));
            }
        }
        assert_eq!(static_field_index(8, b"201"), None);
        assert_eq!(static_field_index(16, b"gzip"), None);
        assert_eq!(static_field_index(31, b""), None);
    }

    fn contents(table: &DynamicTable) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..table.len()).map(|i| table.get(i).map(|(n, v)| (n.to_vec(), v.to_vec())).unwrap()).collect()
    }

    #[test]
    fn eviction_and_oversized_entries() {
        let mut table = DynamicTable::new(100);
        table.insert(b"aaaa", b"1111"); // 40
        table.insert(b"bbbb", b"2222"); // 80
        assert_eq!(table.size(), 80);
        table.insert(b"cccc", b"3333"); // evicts a
        assert_eq!(contents(&table), [(b"cccc".to_vec(), b"3333".to_vec()), (b"bbbb".to_vec(), b"2222".to_vec())]);
        assert_eq!(table.size(), 80);
        // An entry of exactly the maximum fits, alone.
        table.insert(&[b'x'; 60], b"12345678");
        assert_eq!(table.len(), 1);
        assert_eq!(table.size(), 100);
        // One octet more empties the table without inserting.
        table.insert(&[b'x'; 61], b"12345678");
        assert_eq!(table.len(), 0);
        assert_eq!(table.size(), 0);
        table.set_max_size(0);
        table.insert(b"", b"");
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn name_of_an_entry_the_insertion_evicts() {
        let mut table = DynamicTable::new(80);
        table.insert(b"name-one", b"v"); // 41
        table.insert(b"two", b"v"); // 36
        // Reuses the oldest entry's name while evicting it.
        table.insert_with_dynamic_name(1, b"a-longer-value");
        assert_eq!(contents(&table), [(b"name-one".to_vec(), b"a-longer-value".to_vec())]);
    }

    #[test]
    fn buffer_stays_bounded_and_stops_allocating() {
        let mut table = DynamicTable::new(256);
        for round in 0..2000usize {
            let value = vec![b'v'; round % 50];
            if round % 3 == 0 && table.len() > 2 {
                table.insert_with_dynamic_name(2, &value);
            } else {
                table.insert(format!("name-{}", round % 17).as_bytes(), &value);
            }
            let mut expect_size = 0;
            for i in 0..table.len() {
                let (n, v) = table.get(i).unwrap();
                expect_size += n.len() + v.len() + ENTRY_OVERHEAD;
            }
            assert_eq!(table.size(), expect_size);
            assert!(table.size() <= 256);
            assert!(table.buf.len() <= 512);
        }
        let capacities = table.capacities();
        assert_eq!(capacities.0, 512);
        for round in 0..2000usize {
            table.insert(format!("name-{}", round % 17).as_bytes(), &vec![b'v'; round % 50]);
        }
        assert_eq!(table.capacities(), capacities);
        assert_eq!(table.max_size(), 256);
    }
}
