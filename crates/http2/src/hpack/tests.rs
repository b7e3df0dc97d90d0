//! Tests across the decoder and encoder: RFC 7541 Appendix C, malformed
//! blocks, round trips and allocation reuse.

use bytes::BytesMut;
use proptest::prelude::*;

use super::{DecodeError, Decoder, Encoder};

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Fields, DecodeError> {
    let mut fields = Vec::new();
    decoder.decode(block, |n, v| fields.push((n.to_vec(), v.to_vec())))?;
    Ok(fields)
}

fn pairs(list: &[(&str, &str)]) -> Fields {
    list.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
}

fn table_contents(decoder: &Decoder) -> Fields {
    let table = decoder.table();
    (0..table.len())
        .map(|i| {
            let (n, v) = table.get(i).unwrap();
            (n.to_vec(), v.to_vec())
        })
        .collect()
}

/// Decodes `block` and checks the fields, then the dynamic table (newest
/// first) and its size.
fn check(decoder: &mut Decoder, block: &str, fields: &[(&str, &str)], table: &[(&str, &str)], size: usize) {
    assert_eq!(decode(decoder, &hex(block)).unwrap(), pairs(fields));
    assert_eq!(table_contents(decoder), pairs(table));
    assert_eq!(decoder.table().size(), size);
}

#[test]
fn rfc_c2_single_representations() {
    // C.2.1 Literal Header Field with Indexing.
    let mut decoder = Decoder::new(4096);
    check(
        &mut decoder,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        &[("custom-key", "custom-header")],
        &[("custom-key", "custom-header")],
        55,
    );
    // C.2.2 Literal Header Field without Indexing.
    let mut decoder = Decoder::new(4096);
    check(&mut decoder, "040c 2f73 616d 706c 652f 7061 7468", &[(":path", "/sample/path")], &[], 0);
    // C.2.3 Literal Header Field Never Indexed.
    let mut decoder = Decoder::new(4096);
    check(&mut decoder, "1008 7061 7373 776f 7264 0673 6563 7265 74", &[("password", "secret")], &[], 0);
    // C.2.4 Indexed Header Field.
    let mut decoder = Decoder::new(4096);
    check(&mut decoder, "82", &[(":method", "GET")], &[], 0);
}

const REQUEST_1: &[(&str, &str)] =
    &[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")];
const REQUEST_2: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
    ("cache-control", "no-cache"),
];
const REQUEST_3: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
];

fn check_requests(blocks: [&str; 3]) {
    let mut decoder = Decoder::new(4096);
    check(&mut decoder, blocks[0], REQUEST_1, &[(":authority", "www.example.com")], 57);
    check(&mut decoder, blocks[1], REQUEST_2, &[("cache-control", "no-cache"), (":authority", "www.example.com")], 110);
    check(
        &mut decoder,
        blocks[2],
        REQUEST_3,
        &[("custom-key", "custom-value"), ("cache-control", "no-cache"), (":authority", "www.example.com")],
        164,
    );
}

#[test]
fn rfc_c3_requests_without_huffman() {
    check_requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn rfc_c4_requests_with_huffman() {
    check_requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

const DATE_21: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE_22: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOCATION: &str = "https://www.example.com";
const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

/// C.5 and C.6: responses through a 256-octet table, with evictions.
fn check_responses(blocks: [&str; 3]) {
    let mut decoder = Decoder::new(256);
    check(
        &mut decoder,
        blocks[0],
        &[(":status", "302"), ("cache-control", "private"), ("date", DATE_21), ("location", LOCATION)],
        &[("location", LOCATION), ("date", DATE_21), ("cache-control", "private"), (":status", "302")],
        222,
    );
    check(
        &mut decoder,
        blocks[1],
        &[(":status", "307"), ("cache-control", "private"), ("date", DATE_21), ("location", LOCATION)],
        &[(":status", "307"), ("location", LOCATION), ("date", DATE_21), ("cache-control", "private")],
        222,
    );
    check(
        &mut decoder,
        blocks[2],
        &[
            (":status", "200"),
            ("cache-control", "private"),
            ("date", DATE_22),
            ("location", LOCATION),
            ("content-encoding", "gzip"),
            ("set-cookie", COOKIE),
        ],
        &[("set-cookie", COOKIE), ("content-encoding", "gzip"), ("date", DATE_22)],
        215,
    );
}

#[test]
fn rfc_c5_responses_without_huffman() {
    check_responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d \
         546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f \
         6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b \
         2076 6572 7369 6f6e 3d31",
    ]);
}

#[test]
fn rfc_c6_responses_with_huffman() {
    check_responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 \
         8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 \
         dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ]);
}

fn decode_err(block: &[u8]) -> DecodeError {
    decode(&mut Decoder::new(4096), block).unwrap_err()
}

#[test]
fn invalid_indices() {
    assert_eq!(decode_err(&[0x80]), DecodeError::InvalidIndex { index: 0, last: 61 });
    assert_eq!(decode_err(&[0xbe]), DecodeError::InvalidIndex { index: 62, last: 61 });
    // Indexed names past the tables, in each literal form.
    assert_eq!(decode_err(&[0x7e, 0x00]), DecodeError::InvalidIndex { index: 62, last: 61 });
    assert_eq!(decode_err(&[0x0f, 0x2f, 0x00]), DecodeError::InvalidIndex { index: 62, last: 61 });
    assert_eq!(decode_err(&[0x1f, 0x30, 0x00]), DecodeError::InvalidIndex { index: 63, last: 61 });
    // After one insertion, 62 is valid and 63 is not.
    let mut decoder = Decoder::new(4096);
    let fields = decode(&mut decoder, &[0x41, 0x01, b'x', 0xbe]).unwrap();
    assert_eq!(fields, pairs(&[(":authority", "x"), (":authority", "x")]));
    assert_eq!(decode(&mut decoder, &[0xbf]), Err(DecodeError::InvalidIndex { index: 63, last: 62 }));
    // A huge index (within the integer limit) is just out of range.
    assert_eq!(
        decode_err(&[0xff, 0xff, 0xff, 0xff, 0x7f]),
        DecodeError::InvalidIndex { index: 127 + (1 << 28) - 1, last: 61 }
    );
}

#[test]
fn truncated_blocks() {
    // Indexed field whose integer continues past the end.
    assert_eq!(decode_err(&[0xff]), DecodeError::TruncatedInteger);
    assert_eq!(decode_err(&[0xff, 0x80]), DecodeError::TruncatedInteger);
    // Literal with a new name and nothing after the representation octet.
    assert_eq!(decode_err(&[0x40]), DecodeError::TruncatedInteger);
    // Name length 5, three octets present.
    assert_eq!(decode_err(&[0x00, 0x05, b'a', b'b', b'c']), DecodeError::TruncatedString { length: 5, remaining: 3 });
    // Name complete, value missing, then value too long.
    assert_eq!(decode_err(&[0x00, 0x01, b'a']), DecodeError::TruncatedInteger);
    assert_eq!(decode_err(&[0x04, 0x82, b'/']), DecodeError::TruncatedString { length: 2, remaining: 1 });
    // A length far beyond the block.
    assert_eq!(
        decode_err(&[0x04, 0xff, 0xff, 0xff, 0x7f]),
        DecodeError::TruncatedString { length: 127 + 0x1f_ffff, remaining: 0 }
    );
    // Size update whose integer is cut.
    assert_eq!(decode_err(&[0x3f]), DecodeError::TruncatedInteger);
}

#[test]
fn integer_overflow() {
    assert_eq!(decode_err(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), DecodeError::IntegerOverflow);
    assert_eq!(decode_err(&[0x04, 0xff, 0x80, 0x80, 0x80, 0x80, 0x00]), DecodeError::IntegerOverflow);
    assert_eq!(
        decode_err(&[0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        DecodeError::IntegerOverflow
    );
}

#[test]
fn table_size_updates() {
    // Above the advertised maximum: 4097 = 31 + 4066 (0xe2 0x1f).
    assert_eq!(decode_err(&[0x3f, 0xe2, 0x1f]), DecodeError::TableSizeTooLarge { requested: 4097, max: 4096 });
    // After a field.
    assert_eq!(decode_err(&[0x82, 0x20]), DecodeError::LateTableSizeUpdate);
    // Three in a row.
    assert_eq!(decode_err(&[0x20, 0x20, 0x20, 0x82]), DecodeError::TooManyTableSizeUpdates);

    // Two in a row are fine; the last one wins, and 0 empties the table.
    let mut decoder = Decoder::new(4096);
    decode(&mut decoder, &[0x41, 0x01, b'x']).unwrap();
    assert_eq!(decoder.table().len(), 1);
    let fields = decode(&mut decoder, &[0x20, 0x3f, 0x11, 0x82]).unwrap();
    assert_eq!(fields, pairs(&[(":method", "GET")]));
    assert_eq!(decoder.table().len(), 0);
    assert_eq!(decoder.table().max_size(), 48);
    // An update alone is a valid (empty) block, and the limit is per block.
    assert_eq!(decode(&mut decoder, &[0x3f, 0xe1, 0x1f]).unwrap(), pairs(&[]));
    assert_eq!(decoder.table().max_size(), 4096);
    assert_eq!(decode(&mut decoder, &[0x20, 0x20]).unwrap(), pairs(&[]));

    // A smaller table evicts at once; a larger entry than the table empties it.
    let mut decoder = Decoder::new(4096);
    decode(&mut decoder, &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")).unwrap();
    assert_eq!(decoder.table().size(), 55);
    decode(&mut decoder, &[0x3f, 0x17]).unwrap(); // 31 + 23 = 54
    assert_eq!(decoder.table().len(), 0);
    assert_eq!(decoder.table().max_size(), 54);
    // :authority (10) + 12 + 32 = 54 fits exactly.
    let mut block = vec![0x41, 0x0c];
    block.extend_from_slice(b"example.com:");
    decode(&mut decoder, &block).unwrap();
    assert_eq!(decoder.table().size(), 54);
    // One octet more: emitted all the same, but the table ends up empty.
    let mut block = vec![0x41, 0x0d];
    block.extend_from_slice(b"example.com:1");
    assert_eq!(decode(&mut decoder, &block).unwrap(), pairs(&[(":authority", "example.com:1")]));
    assert_eq!(decoder.table().len(), 0);
    assert_eq!(decoder.table().size(), 0);
}

#[test]
fn huffman_errors_in_blocks() {
    // Name literal, Huffman, four octets of ones: EOS.
    assert_eq!(decode_err(&[0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00]), DecodeError::HuffmanEos);
    // Value literal, Huffman, one octet of ones: 8 bits of padding.
    assert_eq!(decode_err(&[0x04, 0x81, 0xff]), DecodeError::HuffmanPadding);
    // Padding with a zero bit ('0' then 110).
    assert_eq!(decode_err(&[0x04, 0x81, 0x06]), DecodeError::HuffmanPadding);
}

#[test]
fn literal_with_dynamic_name() {
    let mut decoder = Decoder::new(4096);
    // custom-key: a, then a literal without indexing and one with
    // indexing that both reuse dynamic index 62's name.
    let mut block = vec![0x40, 0x0a];
    block.extend_from_slice(b"custom-key");
    block.extend_from_slice(&[0x01, b'a', 0x0f, 0x2f, 0x01, b'b', 0x7e, 0x01, b'c', 0xbe, 0xbf]);
    let fields = decode(&mut decoder, &block).unwrap();
    assert_eq!(
        fields,
        pairs(&[
            ("custom-key", "a"),
            ("custom-key", "b"),
            ("custom-key", "c"),
            ("custom-key", "c"),
            ("custom-key", "a"),
        ])
    );
}

fn encode_fields(encoder: &mut Encoder, status: Option<u16>, fields: &[(Vec<u8>, Vec<u8>)]) -> BytesMut {
    let mut out = BytesMut::new();
    encoder.start_block(&mut out);
    if let Some(status) = status {
        encoder.encode_status(status, &mut out);
    }
    for (name, value) in fields {
        encoder.encode_field(name, value, &mut out);
    }
    out
}

#[test]
fn encoder_representations() {
    let mut encoder = Encoder::new();
    for (status, bytes) in [
        (200, &[0x88][..]),
        (204, &[0x89]),
        (206, &[0x8a]),
        (304, &[0x8b]),
        (400, &[0x8c]),
        (404, &[0x8d]),
        (500, &[0x8e]),
        (302, b"\x08\x03302"),
        (101, b"\x08\x03101"),
        (999, b"\x08\x03999"),
    ] {
        let mut out = BytesMut::new();
        encoder.encode_status(status, &mut out);
        assert_eq!(&out[..], bytes, "{status}");
    }
    let mut out = BytesMut::new();
    encoder.encode_field(b"accept-encoding", b"gzip, deflate", &mut out);
    encoder.encode_field(b"content-type", b"text/plain", &mut out);
    encoder.encode_field(b"x-a", b"", &mut out);
    encoder.encode_field(b"www-authenticate", b"", &mut out);
    assert_eq!(&out[..], b"\x90\x0f\x10\x0atext/plain\x00\x03x-a\x00\x0f\x2e\x00");
}

#[test]
fn encoder_size_update_once_per_change() {
    let mut encoder = Encoder::default();
    let mut decoder = Decoder::new(100);
    let fields = pairs(&[("server", "nuncio")]);
    assert_eq!(encode_fields(&mut encoder, Some(200), &fields)[0], 0x88);
    encoder.set_max_table_size(4096); // unchanged
    assert_eq!(encode_fields(&mut encoder, Some(200), &fields)[0], 0x88);
    encoder.set_max_table_size(100);
    let block = encode_fields(&mut encoder, Some(200), &fields);
    assert_eq!(&block[..2], [0x20, 0x88]);
    assert_eq!(decode(&mut decoder, &block).unwrap(), pairs(&[(":status", "200"), ("server", "nuncio")]));
    assert_eq!(decoder.table().max_size(), 0);
    // Owed once; trailers blocks start with it too when owed.
    assert_eq!(encode_fields(&mut encoder, None, &fields)[0], 0x0f);
    encoder.set_max_table_size(0);
    assert_eq!(encode_fields(&mut encoder, None, &fields)[..2], [0x20, 0x0f]);
}

#[test]
fn long_values_use_multi_octet_lengths() {
    let value = vec![b'v'; 300];
    let name = vec![b'n'; 130];
    let mut encoder = Encoder::new();
    let block = encode_fields(&mut encoder, None, &[(name.clone(), value.clone())]);
    let mut decoder = Decoder::new(4096);
    assert_eq!(decode(&mut decoder, &block).unwrap(), vec![(name, value)]);
}

/// After a warm-up block, decoding the same block again reuses the scratch
/// buffers and the dynamic table's storage instead of growing them.
#[test]
fn warmed_up_decoder_reuses_buffers() {
    // C.6.3's block has Huffman names and values and inserts entries.
    let blocks = [
        hex("4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad \
             1718 63c7 8f0b 97c8 e9ae 82ae 43d3"),
        hex("4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
    ];
    let mut decoder = Decoder::new(256);
    for block in &blocks {
        decoder.decode(block, |_, _| {}).unwrap();
    }
    let scratch = decoder.scratch_capacities();
    let table = decoder.table().capacities();
    assert!(scratch.0 > 0 && scratch.1 > 0);
    for _ in 0..100 {
        for block in &blocks {
            decoder.decode(block, |_, _| {}).unwrap();
        }
    }
    assert_eq!(decoder.scratch_capacities(), scratch);
    assert_eq!(decoder.table().capacities(), table);
}

fn token_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z0-9!#$%&'*+.^_`|~-]{1,24}".prop_map(String::into_bytes),
        prop::sample::select(vec![
            "content-type",
            "content-length",
            "server",
            "date",
            "accept-encoding",
            "set-cookie",
            "www-authenticate",
            "age",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>().prop_filter("no CR, LF or NUL", |b| !matches!(b, b'\r' | b'\n' | 0)), 0..200),
        Just(b"gzip, deflate".to_vec()),
        Just(Vec::new()),
    ]
}

proptest! {
    /// Encoder output decodes back to the same fields; the decoder's table
    /// stays empty since the encoder never indexes.
    #[test]
    fn encoder_decoder_round_trip(
        status in prop_oneof![Just(200u16), Just(404), 100u16..1000],
        fields in prop::collection::vec((token_name(), field_value()), 0..20),
        new_table_size in prop::option::of(0usize..8192),
    ) {
        let mut encoder = Encoder::new();
        if let Some(size) = new_table_size {
            encoder.set_max_table_size(size);
        }
        let block = encode_fields(&mut encoder, Some(status), &fields);
        let mut decoder = Decoder::new(8192);
        let decoded = decode(&mut decoder, &block).unwrap();
        let mut expected = vec![(b":status".to_vec(), status.to_string().into_bytes())];
        expected.extend(fields);
        prop_assert_eq!(decoded, expected);
        prop_assert_eq!(decoder.table().len(), 0);
    }

    /// Arbitrary blocks never panic the decoder; the table stays within its
    /// maximum whatever they do.
    #[test]
    fn arbitrary_blocks(blocks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..8)) {
        let mut decoder = Decoder::new(256);
        for block in &blocks {
            if decoder.decode(block, |_, _| {}).is_err() {
                break;
            }
            prop_assert!(decoder.table().size() <= decoder.table().max_size());
        }
    }
}

/// Strings whose lengths take one, two and three continuation octets (the
/// prefix octets are gathered before the string) decode back as written.
#[test]
fn long_names_and_values_round_trip() {
    let fields: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (vec![b'x'; 130], vec![b'v'; 127]),
        (b"location".to_vec(), vec![b'l'; 1_000]),
        (b"content-type".to_vec(), vec![b'a'; 20_000]),
        (vec![b'n'; 20_000], vec![b'b'; 70_000]),
        (b"server".to_vec(), Vec::new()),
    ];
    let block = encode_fields(&mut Encoder::new(), None, &fields);
    let mut decoder = Decoder::new(4096);
    assert_eq!(decode(&mut decoder, &block).unwrap(), fields);
}
