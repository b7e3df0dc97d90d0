//! Prefix integers (RFC 7541 §5.1): the N-bit prefix in the first octet,
//! then 7-bit continuation octets, least significant group first.

use bytes::{BufMut, BytesMut};

use super::DecodeError;

/// The most continuation octets accepted after a full prefix.
///
/// Four octets carry 28 bits, so a decoded value is below 2^28 + 2^N: far
/// more than any index, table size or string length a header block can
/// hold, and small enough that the sum cannot overflow even a 32-bit
/// `usize`. A fifth octet is an error rather than something to wrap.
const MAX_CONTINUATION_OCTETS: u32 = 4;

/// Decodes the integer whose prefix is the low `prefix_bits` (1..=8) of
/// `block[*pos]`, and moves `pos` past its last octet. The bits above the
/// prefix (the representation's flags) are the caller's and ignored here.
pub(super) fn decode(block: &[u8], pos: &mut usize, prefix_bits: u32) -> Result<usize, DecodeError> {
    debug_assert!((1..=8).contains(&prefix_bits));
    let Some(&first) = block.get(*pos) else {
        return Err(DecodeError::TruncatedInteger);
    };
    *pos += 1;
    let max_prefix = (1usize << prefix_bits) - 1;
    let prefix = usize::from(first) & max_prefix;
    if prefix < max_prefix {
        return Ok(prefix);
    }
    let mut value = max_prefix;
    let mut shift = 0;
    for _ in 0..MAX_CONTINUATION_OCTETS {
        let Some(&octet) = block.get(*pos) else {
            return Err(DecodeError::TruncatedInteger);
        };
        *pos += 1;
        value += usize::from(octet & 0x7f) << shift;
        if octet & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
    Err(DecodeError::IntegerOverflow)
}

/// Appends `value` with an N-bit prefix (`prefix_bits`, 1..=8); `flags`
/// holds the representation's bits above the prefix in the first octet.
pub(super) fn encode(value: usize, prefix_bits: u32, flags: u8, out: &mut BytesMut) {
    debug_assert!((1..=8).contains(&prefix_bits));
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        // value < 2^prefix_bits <= 256: the cast is lossless.
        out.put_u8(flags | value as u8);
        return;
    }
    out.put_u8(flags | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        out.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.put_u8(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: usize, prefix_bits: u32) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(value, prefix_bits, 0, &mut out);
        out.to_vec()
    }

    #[test]
    fn rfc_c1_examples() {
        // C.1.1: 10 with a 5-bit prefix.
        assert_eq!(encoded(10, 5), [0x0a]);
        // C.1.2: 1337 with a 5-bit prefix.
        assert_eq!(encoded(1337, 5), [0x1f, 0x9a, 0x0a]);
        // C.1.3: 42 starting at an octet boundary (8-bit prefix).
        assert_eq!(encoded(42, 8), [0x2a]);

        let mut pos = 0;
        assert_eq!(decode(&[0xea], &mut pos, 5), Ok(10)); // flag bits ignored
        assert_eq!(pos, 1);
        let mut pos = 0;
        assert_eq!(decode(&[0x1f, 0x9a, 0x0a, 0xff], &mut pos, 5), Ok(1337));
        assert_eq!(pos, 3);
        let mut pos = 0;
        assert_eq!(decode(&[0x2a], &mut pos, 8), Ok(42));
    }

    #[test]
    fn boundaries_round_trip() {
        for prefix_bits in 1..=8 {
            let max_prefix = (1usize << prefix_bits) - 1;
            let limit = max_prefix + (1 << 28) - 1;
            for value in [0, 1, max_prefix - 1, max_prefix, max_prefix + 1, max_prefix + 127, max_prefix + 128, limit] {
                let bytes = encoded(value, prefix_bits);
                let mut pos = 0;
                assert_eq!(decode(&bytes, &mut pos, prefix_bits), Ok(value), "{value} N={prefix_bits}");
                assert_eq!(pos, bytes.len());
            }
            // One past the limit needs a fifth continuation octet.
            let bytes = encoded(limit + 1, prefix_bits);
            assert_eq!(decode(&bytes, &mut 0, prefix_bits), Err(DecodeError::IntegerOverflow));
        }
    }

    #[test]
    fn truncated_and_overflowing() {
        assert_eq!(decode(&[], &mut 0, 7), Err(DecodeError::TruncatedInteger));
        assert_eq!(decode(&[0x7f], &mut 0, 7), Err(DecodeError::TruncatedInteger));
        assert_eq!(decode(&[0x7f, 0x80, 0x80], &mut 0, 7), Err(DecodeError::TruncatedInteger));
        // Five continuation octets, even if they would encode a small value.
        assert_eq!(decode(&[0x7f, 0x80, 0x80, 0x80, 0x80, 0x00], &mut 0, 7), Err(DecodeError::IntegerOverflow));
        assert_eq!(
            decode(&[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut 0, 7),
            Err(DecodeError::IntegerOverflow)
        );
    }
}
