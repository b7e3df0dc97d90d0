//! The HPACK Huffman code (RFC 7541 §5.2, Appendix B): encoding, its
//! length, and a table-driven decoder that consumes four bits per step.
//!
//! The decoder is a state machine over the code tree's 256 internal
//! nodes: for each (node, nibble) a precomputed step gives the next node,
//! the symbol completed on the way (at most one, as no code is shorter
//! than five bits), whether EOS was hit, and whether stopping there leaves
//! valid padding. Both tables are built by `const fn` from the code table, so
//! the code table is the only hand-typed data and nothing runs at start-up.

use bytes::{BufMut, BytesMut};

use super::DecodeError;

/// (code, length in bits) for symbols 0..=255 and EOS (256), the code
/// right-aligned, as listed in RFC 7541 Appendix B.
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7f_ffd8, 23),
    (0xfff_ffe2, 28),
    (0xfff_ffe3, 28),
    (0xfff_ffe4, 28),
    (0xfff_ffe5, 28),
    (0xfff_ffe6, 28),
    (0xfff_ffe7, 28),
    (0xfff_ffe8, 28),
    (0xff_ffea, 24),
    (0x3fff_fffc, 30),
    (0xfff_ffe9, 28),
    (0xfff_ffea, 28),
    (0x3fff_fffd, 30),
    (0xfff_ffeb, 28),
    (0xfff_ffec, 28),
    (0xfff_ffed, 28),
    (0xfff_ffee, 28),
    (0xfff_ffef, 28),
    (0xfff_fff0, 28),
    (0xfff_fff1, 28),
    (0xfff_fff2, 28),
    (0x3fff_fffe, 30),
    (0xfff_fff3, 28),
    (0xfff_fff4, 28),
    (0xfff_fff5, 28),
    (0xfff_fff6, 28),
    (0xfff_fff7, 28),
    (0xfff_fff8, 28),
    (0xfff_fff9, 28),
    (0xfff_fffa, 28),
    (0xfff_fffb, 28),
    (0x14, 6),        // ' '
    (0x3f8, 10),      // '!'
    (0x3f9, 10),      // '"'
    (0xffa, 12),      // '#'
    (0x1ff9, 13),     // '$'
    (0x15, 6),        // '%'
    (0xf8, 8),        // '&'
    (0x7fa, 11),      // '''
    (0x3fa, 10),      // '('
    (0x3fb, 10),      // ')'
    (0xf9, 8),        // '*'
    (0x7fb, 11),      // '+'
    (0xfa, 8),        // ','
    (0x16, 6),        // '-'
    (0x17, 6),        // '.'
    (0x18, 6),        // '/'
    (0x0, 5),         // '0'
    (0x1, 5),         // '1'
    (0x2, 5),         // '2'
    (0x19, 6),        // '3'
    (0x1a, 6),        // '4'
    (0x1b, 6),        // '5'
    (0x1c, 6),        // '6'
    (0x1d, 6),        // '7'
    (0x1e, 6),        // '8'
    (0x1f, 6),        // '9'
    (0x5c, 7),        // ':'
    (0xfb, 8),        // ';'
    (0x7ffc, 15),     // '<'
    (0x20, 6),        // '='
    (0xffb, 12),      // '>'
    (0x3fc, 10),      // '?'
    (0x1ffa, 13),     // '@'
    (0x21, 6),        // 'A'
    (0x5d, 7),        // 'B'
    (0x5e, 7),        // 'C'
    (0x5f, 7),        // 'D'
    (0x60, 7),        // 'E'
    (0x61, 7),        // 'F'
    (0x62, 7),        // 'G'
    (0x63, 7),        // 'H'
    (0x64, 7),        // 'I'
    (0x65, 7),        // 'J'
    (0x66, 7),        // 'K'
    (0x67, 7),        // 'L'
    (0x68, 7),        // 'M'
    (0x69, 7),        // 'N'
    (0x6a, 7),        // 'O'
    (0x6b, 7),        // 'P'
    (0x6c, 7),        // 'Q'
    (0x6d, 7),        // 'R'
    (0x6e, 7),        // 'S'
    (0x6f, 7),        // 'T'
    (0x70, 7),        // 'U'
    (0x71, 7),        // 'V'
    (0x72, 7),        // 'W'
    (0xfc, 8),        // 'X'
    (0x73, 7),        // 'Y'
    (0xfd, 8),        // 'Z'
    (0x1ffb, 13),     // '['
    (0x7_fff0, 19),   // '\'
    (0x1ffc, 13),     // ']'
    (0x3ffc, 14),     // '^'
    (0x22, 6),        // '_'
    (0x7ffd, 15),     // '`'
    (0x3, 5),         // 'a'
    (0x23, 6),        // 'b'
    (0x4, 5),         // 'c'
    (0x24, 6),        // 'd'
    (0x5, 5),         // 'e'
    (0x25, 6),        // 'f'
    (0x26, 6),        // 'g'
    (0x27, 6),        // 'h'
    (0x6, 5),         // 'i'
    (0x74, 7),        // 'j'
    (0x75, 7),        // 'k'
    (0x28, 6),        // 'l'
    (0x29, 6),        // 'm'
    (0x2a, 6),        // 'n'
    (0x7, 5),         // 'o'
    (0x2b, 6),        // 'p'
    (0x76, 7),        // 'q'
    (0x2c, 6),        // 'r'
    (0x8, 5),         // 's'
    (0x9, 5),         // 't'
    (0x2d, 6),        // 'u'
    (0x77, 7),        // 'v'
    (0x78, 7),        // 'w'
    (0x79, 7),        // 'x'
    (0x7a, 7),        // 'y'
    (0x7b, 7),        // 'z'
    (0x7ffe, 15),     // '{'
    (0x7fc, 11),      // '|'
    (0x3ffd, 14),     // '}'
    (0x1ffd, 13),     // '~'
    (0xfff_fffc, 28), // 127
    (0xf_ffe6, 20),   // 128
    (0x3f_ffd2, 22),
    (0xf_ffe7, 20),
    (0xf_ffe8, 20),
    (0x3f_ffd3, 22),
    (0x3f_ffd4, 22),
    (0x3f_ffd5, 22),
    (0x7f_ffd9, 23),
    (0x3f_ffd6, 22),
    (0x7f_ffda, 23),
    (0x7f_ffdb, 23), // 138
    (0x7f_ffdc, 23),
    (0x7f_ffdd, 23),
    (0x7f_ffde, 23),
    (0xff_ffeb, 24),
    (0x7f_ffdf, 23),
    (0xff_ffec, 24),
    (0xff_ffed, 24),
    (0x3f_ffd7, 22),
    (0x7f_ffe0, 23),
    (0xff_ffee, 24), // 148
    (0x7f_ffe1, 23),
    (0x7f_ffe2, 23),
    (0x7f_ffe3, 23),
    (0x7f_ffe4, 23),
    (0x1f_ffdc, 21),
    (0x3f_ffd8, 22),
    (0x7f_ffe5, 23),
    (0x3f_ffd9, 22),
    (0x7f_ffe6, 23),
    (0x7f_ffe7, 23), // 158
    (0xff_ffef, 24),
    (0x3f_ffda, 22),
    (0x1f_ffdd, 21),
    (0xf_ffe9, 20),
    (0x3f_ffdb, 22),
    (0x3f_ffdc, 22),
    (0x7f_ffe8, 23),
    (0x7f_ffe9, 23),
    (0x1f_ffde, 21),
    (0x7f_ffea, 23), // 168
    (0x3f_ffdd, 22),
    (0x3f_ffde, 22),
    (0xff_fff0, 24),
    (0x1f_ffdf, 21),
    (0x3f_ffdf, 22),
    (0x7f_ffeb, 23),
    (0x7f_ffec, 23),
    (0x1f_ffe0, 21),
    (0x1f_ffe1, 21),
    (0x3f_ffe0, 22), // 178
    (0x1f_ffe2, 21),
    (0x7f_ffed, 23),
    (0x3f_ffe1, 22),
    (0x7f_ffee, 23),
    (0x7f_ffef, 23),
    (0xf_ffea, 20),
    (0x3f_ffe2, 22),
    (0x3f_ffe3, 22),
    (0x3f_ffe4, 22),
    (0x7f_fff0, 23), // 188
    (0x3f_ffe5, 22),
    (0x3f_ffe6, 22),
    (0x7f_fff1, 23),
    (0x3ff_ffe0, 26),
    (0x3ff_ffe1, 26),
    (0xf_ffeb, 20),
    (0x7_fff1, 19),
    (0x3f_ffe7, 22),
    (0x7f_fff2, 23),
    (0x3f_ffe8, 22), // 198
    (0x1ff_ffec, 25),
    (0x3ff_ffe2, 26),
    (0x3ff_ffe3, 26),
    (0x3ff_ffe4, 26),
    (0x7ff_ffde, 27),
    (0x7ff_ffdf, 27),
    (0x3ff_ffe5, 26),
    (0xff_fff1, 24),
    (0x1ff_ffed, 25),
    (0x7_fff2, 19), // 208
    (0x1f_ffe3, 21),
    (0x3ff_ffe6, 26),
    (0x7ff_ffe0, 27),
    (0x7ff_ffe1, 27),
    (0x3ff_ffe7, 26),
    (0x7ff_ffe2, 27),
    (0xff_fff2, 24),
    (0x1f_ffe4, 21),
    (0x1f_ffe5, 21),
    (0x3ff_ffe8, 26), // 218
    (0x3ff_ffe9, 26),
    (0xfff_fffd, 28),
    (0x7ff_ffe3, 27),
    (0x7ff_ffe4, 27),
    (0x7ff_ffe5, 27),
    (0xf_ffec, 20),
    (0xff_fff3, 24),
    (0xf_ffed, 20),
    (0x1f_ffe6, 21),
    (0x3f_ffe9, 22), // 228
    (0x1f_ffe7, 21),
    (0x1f_ffe8, 21),
    (0x7f_fff3, 23),
    (0x3f_ffea, 22),
    (0x3f_ffeb, 22),
    (0x1ff_ffee, 25),
    (0x1ff_ffef, 25),
    (0xff_fff4, 24),
    (0xff_fff5, 24),
    (0x3ff_ffea, 26), // 238
    (0x7f_fff4, 23),
    (0x3ff_ffeb, 26),
    (0x7ff_ffe6, 27),
    (0x3ff_ffec, 26),
    (0x3ff_ffed, 26),
    (0x7ff_ffe7, 27),
    (0x7ff_ffe8, 27),
    (0x7ff_ffe9, 27),
    (0x7ff_ffea, 27),
    (0x7ff_ffeb, 27), // 248
    (0xfff_fffe, 28),
    (0x7ff_ffec, 27),
    (0x7ff_ffed, 27),
    (0x7ff_ffee, 27),
    (0x7ff_ffef, 27),
    (0x7ff_fff0, 27),
    (0x3ff_ffee, 26),
    (0x3fff_ffff, 30), // EOS
];

/// The EOS symbol's number in [`CODES`].
const EOS: usize = 256;

/// A child in the code tree with this bit set is a leaf holding a symbol;
/// without it, the index of an internal node.
const LEAF: u16 = 0x8000;

/// Builds the code tree: 257 leaves need exactly 256 internal nodes, node
/// 0 being the root; `tree[node][bit]` is the child reached by `bit`. The
/// asserts make a mistyped [`CODES`] a compile error.
const fn build_tree() -> [[u16; 2]; 256] {
    // 0 marks a missing child: the root is nobody's child.
    let mut tree = [[0u16; 2]; 256];
    let mut nodes = 1;
    let mut sym = 0;
    while sym < CODES.len() {
        let (code, len) = CODES[sym];
        let mut node = 0;
        let mut bit_pos = len;
        while bit_pos > 1 {
            bit_pos -= 1;
            let bit = ((code >> bit_pos) & 1) as usize;
            if tree[node][bit] == 0 {
                assert!(nodes < 256, "Huffman table: more than 256 internal nodes");
                tree[node][bit] = nodes as u16;
                nodes += 1;
            }
            assert!(tree[node][bit] & LEAF == 0, "Huffman table: a code is a prefix of another");
            node = tree[node][bit] as usize;
        }
        let bit = (code & 1) as usize;
        assert!(tree[node][bit] == 0, "Huffman table: a code is a prefix of another");
        tree[node][bit] = LEAF | sym as u16;
        sym += 1;
    }
    // With 257 leaves and 256 internal nodes every node has both children:
    // the code is complete, so any bit string walks somewhere defined.
    assert!(nodes == 256, "Huffman table: code is not complete");
    tree
}

/// Step flag: a symbol was completed (in [`Step::sym`]).
const EMITS: u8 = 1;
/// Step flag: ending the string here leaves valid padding (the bits since
/// the last symbol are at most seven ones, RFC 7541 §5.2).
const ACCEPTS: u8 = 2;
/// Step flag: the nibble completed EOS, which a string must not contain.
const FAILS: u8 = 4;

/// One transition of the nibble state machine.
#[derive(Clone, Copy)]
struct Step {
    next: u8,
    sym: u8,
    flags: u8,
}

/// `STEPS[node][nibble]`: the transition from internal node `node` on the
/// four bits `nibble` (most significant first).
static STEPS: [[Step; 16]; 256] = build_steps();

const fn build_steps() -> [[Step; 16]; 256] {
    let tree = build_tree();

    // The nodes reached from the root by 0..=7 one bits are where a string
    // may end; all are internal (no code is all ones shorter than EOS).
    let mut accepting = [false; 256];
    let mut node = 0;
    let mut depth = 0;
    loop {
        accepting[node] = true;
        if depth == 7 {
            break;
        }
        let child = tree[node][1];
        assert!(child & LEAF == 0);
        node = child as usize;
        depth += 1;
    }

    let mut steps = [[Step { next: 0, sym: 0, flags: 0 }; 16]; 256];
    let mut state = 0;
    while state < 256 {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut step = Step { next: 0, sym: 0, flags: 0 };
            let mut bit_pos = 4;
            while bit_pos > 0 {
                bit_pos -= 1;
                let child = tree[node][(nibble >> bit_pos) & 1];
                if child & LEAF == 0 {
                    node = child as usize;
                    continue;
                }
                let sym = (child & !LEAF) as usize;
                if sym == EOS {
                    step.flags = FAILS;
                    break;
                }
                assert!(step.flags & EMITS == 0, "two symbols in one nibble");
                step.flags |= EMITS;
                step.sym = sym as u8;
                node = 0;
            }
            if step.flags & FAILS == 0 {
                step.next = node as u8;
                if accepting[node] {
                    step.flags |= ACCEPTS;
                }
            }
            steps[state][nibble] = step;
            nibble += 1;
        }
        state += 1;
    }
    steps
}

/// Decodes the Huffman-coded `src`, appending the octets to `out`.
///
/// Rejects a string containing EOS, and one whose padding is longer than
/// seven bits or not all ones (RFC 7541 §5.2): both are decoding errors.
///
/// # Errors
///
/// [`DecodeError::HuffmanEos`] or [`DecodeError::HuffmanPadding`].
pub fn huffman_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    // No code is shorter than five bits: this bounds the output, so the
    // pushes below never reallocate.
    out.reserve(src.len() * 8 / 5);
    let mut state = 0u8;
    let mut flags = ACCEPTS;
    for &octet in src {
        for nibble in [octet >> 4, octet & 0x0f] {
            let step = STEPS[usize::from(state)][usize::from(nibble)];
            if step.flags & FAILS != 0 {
                return Err(DecodeError::HuffmanEos);
            }
            if step.flags & EMITS != 0 {
                out.push(step.sym);
            }
            state = step.next;
            flags = step.flags;
        }
    }
    if flags & ACCEPTS == 0 {
        return Err(DecodeError::HuffmanPadding);
    }
    Ok(())
}

/// The length in octets of `src` once Huffman-coded (padding included).
#[must_use]
pub fn huffman_encoded_len(src: &[u8]) -> usize {
    let bits: usize = src.iter().map(|&b| usize::from(CODES[usize::from(b)].1)).sum();
    bits.div_ceil(8)
}

/// Appends the Huffman coding of `src` to `out`, padded with the most
/// significant bits of EOS (ones) to an octet boundary.
pub fn huffman_encode(src: &[u8], out: &mut BytesMut) {
    out.reserve(huffman_encoded_len(src));
    // Pending bits sit in the low `bits` bits of `acc`; at most 7 remain
    // between symbols, plus at most 30 for a code, so 64 bits suffice and
    // bits shifted out above have already been written.
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in src {
        let (code, len) = CODES[usize::from(b)];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.put_u8((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        out.put_u8(((acc << (8 - bits)) | (0xff >> bits)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encode(src: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        huffman_encode(src, &mut out);
        assert_eq!(out.len(), huffman_encoded_len(src));
        out.to_vec()
    }

    fn decode(src: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        huffman_decode(src, &mut out).map(|()| out)
    }

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
    }

    /// The code is canonical (RFC 7541 Appendix B was generated that way):
    /// recomputing each code from the lengths alone must give the typed
    /// code. A slip in a typed code or length shows up here, and the
    /// `const` tree construction already proved the code prefix-free and
    /// complete.
    #[test]
    fn codes_are_canonical() {
        let mut order: Vec<usize> = (0..CODES.len()).collect();
        order.sort_by_key(|&sym| (CODES[sym].1, sym));
        let mut code: u32 = 0;
        let mut prev_len = CODES[order[0]].1;
        for (i, &sym) in order.iter().enumerate() {
            let len = CODES[sym].1;
            if i > 0 {
                code = (code + 1) << (len - prev_len);
            }
            prev_len = len;
            assert_eq!(CODES[sym], (code, len), "symbol {sym}");
        }
        assert_eq!(CODES[EOS], (0x3fff_ffff, 30));
        let kraft: u64 = CODES.iter().map(|&(_, len)| 1u64 << (30 - len)).sum();
        assert_eq!(kraft, 1 << 30);
    }

    /// The Huffman-coded strings of RFC 7541 Appendix C.4 and C.6.
    #[test]
    fn rfc_appendix_c_strings() {
        let cases: [(&str, &str); 13] = [
            ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
            ("no-cache", "a8eb 1064 9cbf"),
            ("custom-key", "25a8 49e9 5ba9 7d7f"),
            ("custom-value", "25a8 49e9 5bb8 e8b4 bf"),
            ("302", "6402"),
            ("private", "aec3 771a 4b"),
            ("Mon, 21 Oct 2013 20:13:21 GMT", "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff"),
            ("https://www.example.com", "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3"),
            ("307", "640e ff"),
            ("Mon, 21 Oct 2013 20:13:22 GMT", "d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff"),
            ("gzip", "9bd9 ab"),
            (
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
                "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ),
            ("", ""),
        ];
        for (plain, coded) in cases {
            assert_eq!(encode(plain.as_bytes()), hex(coded), "{plain}");
            assert_eq!(decode(&hex(coded)).unwrap(), plain.as_bytes(), "{plain}");
        }
    }

    #[test]
    fn every_octet_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
        for b in 0..=255u8 {
            assert_eq!(decode(&encode(&[b])).unwrap(), [b], "octet {b}");
            assert_eq!(decode(&encode(&[b, b, b])).unwrap(), [b, b, b], "octet {b}");
        }
    }

    #[test]
    fn rejects_eos() {
        // EOS (30 ones) followed by two padding ones.
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff]), Err(DecodeError::HuffmanEos));
        // 'a' (00011) then EOS, then padding.
        assert_eq!(decode(&[0x1f, 0xff, 0xff, 0xff, 0xff]), Err(DecodeError::HuffmanEos));
    }

    #[test]
    fn rejects_bad_padding() {
        // Eight ones of padding after '0' (00000 + 111 then 11111111).
        assert_eq!(decode(&[0x07, 0xff]), Err(DecodeError::HuffmanPadding));
        // A whole octet of ones is padding longer than seven bits.
        assert_eq!(decode(&[0xff]), Err(DecodeError::HuffmanPadding));
        // Padding with a zero: '0' then 110.
        assert_eq!(decode(&[0x06]), Err(DecodeError::HuffmanPadding));
        // Padding all zeros ('a' = 00011, then 000): an incomplete code, not EOS bits.
        assert_eq!(decode(&[0x18]), Err(DecodeError::HuffmanPadding));
        // Valid: '0' then 111.
        assert_eq!(decode(&[0x07]).unwrap(), b"0");
    }

    proptest! {
        #[test]
        fn round_trip(src in proptest::collection::vec(any::<u8>(), 0..300)) {
            let coded = encode(&src);
            prop_assert_eq!(decode(&coded).unwrap(), src);
        }

        /// Arbitrary input never panics; when it decodes, re-encoding the
        /// result gives the input back (the code is canonical and padding
        /// is forced to ones, so the coding is unique).
        #[test]
        fn arbitrary_input(src in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(plain) = decode(&src) {
                prop_assert_eq!(encode(&plain), src);
            }
        }
    }
}
