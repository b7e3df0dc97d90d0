//! Decoding header blocks (RFC 7541 §6) against the connection's dynamic
//! table.

use super::DecodeError;
use super::huffman::huffman_decode;
use super::integer;
use super::table::{DynamicTable, STATIC, STATIC_LEN};

/// An HPACK decoder: one per connection, for the peer's header blocks.
///
/// It owns the dynamic table the peer's encoder fills, and two scratch
/// buffers for Huffman-coded names and values that are reused across
/// fields and blocks, so a warmed-up decoder allocates nothing per field
/// or per block.
pub struct Decoder {
    table: DynamicTable,
    /// The SETTINGS_HEADER_TABLE_SIZE this side advertised: the largest
    /// size update the peer may send.
    max_table_size: usize,
    name_scratch: Vec<u8>,
    value_scratch: Vec<u8>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The table's octets are the peer's headers: keep them out of logs.
        f.debug_struct("Decoder")
            .field("max_table_size", &self.max_table_size)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// Where a literal's name comes from.
enum Name<'a> {
    Static(&'static [u8]),
    /// Dynamic position (0 = newest).
    Dynamic(usize),
    Literal(&'a [u8]),
}

impl Decoder {
    /// A decoder for a connection on which this side advertised
    /// SETTINGS_HEADER_TABLE_SIZE = `max_table_size` (4096 unless changed):
    /// the initial size of the dynamic table and the largest dynamic table
    /// size update the peer may ask for.
    #[must_use]
    pub fn new(max_table_size: usize) -> Decoder {
        Decoder {
            table: DynamicTable::new(max_table_size),
            max_table_size,
            name_scratch: Vec::new(),
            value_scratch: Vec::new(),
        }
    }

    /// Decodes one complete header block (the HEADERS and CONTINUATION
    /// payloads joined), calling `emit(name, value)` for each field in
    /// order.
    ///
    /// The slices are valid for the call only: they borrow `block`, the
    /// static or dynamic table, or the decoder's Huffman scratch buffers.
    /// Names are passed as decoded; checking case, pseudo-fields and
    /// forbidden octets is the caller's job, as is limiting the decoded
    /// size (count in `emit`).
    ///
    /// Dynamic table size updates are accepted only before the first field
    /// and at most two in a row (RFC 7541 §4.2 needs no more: the smallest
    /// size since the last block, then the final one).
    ///
    /// # Errors
    ///
    /// Any [`DecodeError`]: the block is malformed. Fields already emitted
    /// stay emitted, and the dynamic table no longer matches the peer's,
    /// so the caller must end the connection with COMPRESSION_ERROR.
    pub fn decode<F: FnMut(&[u8], &[u8])>(&mut self, block: &[u8], mut emit: F) -> Result<(), DecodeError> {
        let Decoder { table, max_table_size, name_scratch, value_scratch } = self;
        let mut pos = 0;
        let mut size_updates = 0;
        let mut fields_seen = false;
        while let Some(&first) = block.get(pos) {
            if first & 0x80 != 0 {
                // §6.1 Indexed Header Field.
                let index = integer::decode(block, &mut pos, 7)?;
                let (name, value) = field(table, index)?;
                emit(name, value);
            } else if first & 0x40 != 0 {
                // §6.2.1 Literal with Incremental Indexing.
                let index = integer::decode(block, &mut pos, 6)?;
                let name = literal_name(table, index, block, &mut pos, name_scratch)?;
                let value = string(block, &mut pos, value_scratch)?;
                match name {
                    Name::Static(name) | Name::Literal(name) => {
                        emit(name, value);
                        table.insert(name, value);
                    }
                    Name::Dynamic(i) => {
                        let (name, _) = table.get(i).expect("checked by literal_name");
                        emit(name, value);
                        table.insert_with_dynamic_name(i, value);
                    }
                }
            } else if first & 0x20 != 0 {
                // §6.3 Dynamic Table Size Update.
                if fields_seen {
                    return Err(DecodeError::LateTableSizeUpdate);
                }
                size_updates += 1;
                if size_updates > 2 {
                    return Err(DecodeError::TooManyTableSizeUpdates);
                }
                let size = integer::decode(block, &mut pos, 5)?;
                if size > *max_table_size {
                    return Err(DecodeError::TableSizeTooLarge { requested: size, max: *max_table_size });
                }
                table.set_max_size(size);
                continue;
            } else {
                // §6.2.2 Literal without Indexing (0000) and §6.2.3 Never
                // Indexed (0001): the same to a decoder that does not
                // re-encode the field.
                let index = integer::decode(block, &mut pos, 4)?;
                let name = literal_name(table, index, block, &mut pos, name_scratch)?;
                let value = string(block, &mut pos, value_scratch)?;
                let name = match name {
                    Name::Static(name) | Name::Literal(name) => name,
                    Name::Dynamic(i) => table.get(i).expect("checked by literal_name").0,
                };
                emit(name, value);
            }
            fields_seen = true;
        }
        Ok(())
    }

    /// The dynamic table, for tests that check its contents.
    #[cfg(test)]
    pub(super) fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// The scratch buffers' capacities, to check their reuse.
    #[cfg(test)]
    pub(super) fn scratch_capacities(&self) -> (usize, usize) {
        (self.name_scratch.capacity(), self.value_scratch.capacity())
    }
}

/// The field at `index` (1-based, static then dynamic).
fn field(table: &DynamicTable, index: usize) -> Result<(&[u8], &[u8]), DecodeError> {
    if let Some(&entry) = index.checked_sub(1).and_then(|i| STATIC.get(i)) {
        return Ok(entry);
    }
    index.checked_sub(STATIC_LEN + 1).and_then(|i| table.get(i)).ok_or_else(|| invalid_index(table, index))
}

/// The name of a literal representation: indexed when `index` is not 0,
/// otherwise the string literal that follows.
fn literal_name<'a>(
    table: &DynamicTable,
    index: usize,
    block: &'a [u8],
    pos: &mut usize,
    scratch: &'a mut Vec<u8>,
) -> Result<Name<'a>, DecodeError> {
    if index == 0 {
        return string(block, pos, scratch).map(Name::Literal);
    }
    if index <= STATIC_LEN {
        return Ok(Name::Static(STATIC[index - 1].0));
    }
    let i = index - STATIC_LEN - 1;
    if i < table.len() { Ok(Name::Dynamic(i)) } else { Err(invalid_index(table, index)) }
}

fn invalid_index(table: &DynamicTable, index: usize) -> DecodeError {
    DecodeError::InvalidIndex { index, last: STATIC_LEN + table.len() }
}

/// Reads a string literal (§5.2) at `block[*pos]`: a slice of `block` when
/// raw, of `scratch` (cleared first) when Huffman-coded.
fn string<'a>(block: &'a [u8], pos: &mut usize, scratch: &'a mut Vec<u8>) -> Result<&'a [u8], DecodeError> {
    let huffman = block.get(*pos).is_some_and(|&first| first & 0x80 != 0);
    let length = integer::decode(block, pos, 7)?;
    let remaining = block.len() - *pos;
    if length > remaining {
        return Err(DecodeError::TruncatedString { length, remaining });
    }
    let raw = &block[*pos..*pos + length];
    *pos += length;
    if huffman {
        scratch.clear();
        huffman_decode(raw, scratch)?;
        Ok(scratch)
    } else {
        Ok(raw)
    }
}
