//! The ways a header block can be malformed: every one is a connection
//! error of type COMPRESSION_ERROR (RFC 9113 §4.3), so the variants exist
//! for the operator reading the log, not for the caller to branch on.

/// Why a header block could not be decoded.
///
/// After any of these the decoder's dynamic table no longer matches the
/// peer's, so the connection must end (COMPRESSION_ERROR).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An indexed field or name referred to index 0 or past the end of the
    /// static and dynamic tables.
    #[error("header field index {index} is out of range (valid: 1..={last})")]
    InvalidIndex {
        /// The index the block asked for.
        index: usize,
        /// The highest valid index at that point (61 + dynamic entries).
        last: usize,
    },
    /// A prefix integer used more than four continuation octets (a value of
    /// 2^28 or more, beyond anything a header block can need).
    #[error("HPACK integer too large (more than four continuation octets)")]
    IntegerOverflow,
    /// The block ended inside a prefix integer.
    #[error("header block ends inside an integer")]
    TruncatedInteger,
    /// A string literal's length runs past the end of the block.
    #[error("string literal of {length} octets overruns the header block ({remaining} left)")]
    TruncatedString {
        /// The length the string literal announced.
        length: usize,
        /// The octets left in the block after the length.
        remaining: usize,
    },
    /// A Huffman-coded string contains the EOS symbol.
    #[error("Huffman-coded string contains EOS")]
    HuffmanEos,
    /// A Huffman-coded string ends with more than 7 bits of padding, or
    /// padding that is not the most significant bits of EOS (all ones).
    #[error("Huffman-coded string has invalid padding")]
    HuffmanPadding,
    /// A dynamic table size update asked for more than this side advertised
    /// in SETTINGS_HEADER_TABLE_SIZE.
    #[error("dynamic table size update to {requested} exceeds the advertised maximum {max}")]
    TableSizeTooLarge {
        /// The size the update asked for.
        requested: usize,
        /// The SETTINGS_HEADER_TABLE_SIZE this side advertised.
        max: usize,
    },
    /// A dynamic table size update came after a header field (RFC 7541
    /// §4.2 allows it only at the start of a block).
    #[error("dynamic table size update after a header field")]
    LateTableSizeUpdate,
    /// More than two dynamic table size updates in a row at the start of a
    /// block (a smallest and a final one is all §4.2 needs).
    #[error("more than two dynamic table size updates in one header block")]
    TooManyTableSizeUpdates,
}
