//! Encoding response header blocks (RFC 7541 §6) without a dynamic table.
//!
//! nuncio never inserts into the dynamic table: a field is an indexed
//! static entry when the (name, value) pair is in the static table, else a
//! literal without indexing, with the static name index when there is one.
//! Strings are written raw, not Huffman-coded. Both choices trade a few
//! octets per response for no per-field table search, eviction or
//! Huffman pass: CPU per request matters more here than header octets.

use bytes::{BufMut, BytesMut};

use super::integer;
use super::table::{static_field_index, static_name_index};

/// Static index of `:status` (with value 200), the name of any status.
const STATUS_NAME_INDEX: usize = 8;

/// An HPACK encoder: one per connection, for nuncio's header blocks.
///
/// For each block call [`start_block`](Self::start_block) first, then
/// [`encode_status`](Self::encode_status) (responses) and
/// [`encode_field`](Self::encode_field) for each field.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// The peer's SETTINGS_HEADER_TABLE_SIZE as last seen.
    peer_max_table_size: usize,
    /// Whether the next block must start with a dynamic table size update.
    size_update_owed: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An encoder for a peer with the default SETTINGS_HEADER_TABLE_SIZE
    /// (4096).
    #[must_use]
    pub fn new() -> Encoder {
        Encoder { peer_max_table_size: 4096, size_update_owed: false }
    }

    /// Records that the peer's SETTINGS_HEADER_TABLE_SIZE is now `size`.
    ///
    /// RFC 7541 §4.2 wants a change of the table's maximum signalled at the
    /// start of the next block, and decoders such as nghttp2 insist on one
    /// after they lower their setting. As this encoder never inserts, its
    /// table is and stays empty, so the update it owes is always to size 0
    /// (valid under any setting); [`start_block`](Self::start_block)
    /// writes it once per change. Repeating the current value changes
    /// nothing.
    pub fn set_max_table_size(&mut self, size: usize) {
        if size != self.peer_max_table_size {
            self.peer_max_table_size = size;
            self.size_update_owed = true;
        }
    }

    /// Starts a header block: writes the dynamic table size update owed
    /// since [`set_max_table_size`](Self::set_max_table_size), if any.
    /// Call it first for every block (headers and trailers), as an update
    /// is only valid before the block's first field.
    pub fn start_block(&mut self, out: &mut BytesMut) {
        if self.size_update_owed {
            self.size_update_owed = false;
            // §6.3: 001 then the size (0) with a 5-bit prefix.
            integer::encode(0, 5, 0x20, out);
        }
    }

    /// Appends `:status`: indexed when the static table has it (200, 204,
    /// 206, 304, 400, 404, 500), otherwise a literal with the static name.
    pub fn encode_status(&mut self, status: u16, out: &mut BytesMut) {
        let index = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => {
                debug_assert!((100..1000).contains(&status), "status {status} is not three digits");
                let mut digits = itoa::Buffer::new();
                let digits = digits.format(status).as_bytes();
                integer::encode(STATUS_NAME_INDEX, 4, 0x00, out);
                write_raw_string(digits, out);
                return;
            }
        };
        integer::encode(index, 7, 0x80, out);
    }

    /// Appends one field, `name` already lower-case: indexed when the pair
    /// is in the static table, else a literal without indexing (§6.2.2)
    /// whose name is indexed when the static table has it.
    pub fn encode_field(&mut self, name: &[u8], value: &[u8], out: &mut BytesMut) {
        if let Some(name_index) = static_name_index(name) {
            if let Some(index) = static_field_index(name_index, value) {
                integer::encode(index, 7, 0x80, out);
                return;
            }
            integer::encode(name_index, 4, 0x00, out);
        } else {
            out.put_u8(0x00);
            write_raw_string(name, out);
        }
        write_raw_string(value, out);
    }
}

/// A string literal without Huffman coding (§5.2, H = 0).
fn write_raw_string(s: &[u8], out: &mut BytesMut) {
    integer::encode(s.len(), 7, 0x00, out);
    out.extend_from_slice(s);
}
