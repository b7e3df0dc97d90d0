//! The protobuf wire format, as much of it as OTLP's trace messages need
//! (<https://protobuf.dev/programming-guides/encoding/>), written by hand:
//! a span is a handful of fields, and writing them straight into a reused
//! buffer costs no allocation. The field numbers are those of
//! `opentelemetry/proto/trace/v1/trace.proto` (and `common`, `resource`,
//! `collector/trace/v1`); the tests decode what this writes with the
//! `opentelemetry-proto` crate's generated types.

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// Field numbers, by message.
pub(crate) mod field {
    pub(crate) mod export_request {
        pub(crate) const RESOURCE_SPANS: u32 = 1;
    }
    pub(crate) mod resource_spans {
        pub(crate) const RESOURCE: u32 = 1;
        pub(crate) const SCOPE_SPANS: u32 = 2;
    }
    pub(crate) mod resource {
        pub(crate) const ATTRIBUTES: u32 = 1;
    }
    pub(crate) mod scope_spans {
        pub(crate) const SCOPE: u32 = 1;
        pub(crate) const SPANS: u32 = 2;
    }
    pub(crate) mod scope {
        pub(crate) const NAME: u32 = 1;
        pub(crate) const VERSION: u32 = 2;
    }
    pub(crate) mod span {
        pub(crate) const TRACE_ID: u32 = 1;
        pub(crate) const SPAN_ID: u32 = 2;
        pub(crate) const PARENT_SPAN_ID: u32 = 4;
        pub(crate) const NAME: u32 = 5;
        pub(crate) const KIND: u32 = 6;
        pub(crate) const START_TIME: u32 = 7;
        pub(crate) const END_TIME: u32 = 8;
        pub(crate) const ATTRIBUTES: u32 = 9;
        pub(crate) const STATUS: u32 = 15;
        pub(crate) const FLAGS: u32 = 16;
    }
    pub(crate) mod status {
        pub(crate) const MESSAGE: u32 = 2;
        pub(crate) const CODE: u32 = 3;
    }
    pub(crate) mod key_value {
        pub(crate) const KEY: u32 = 1;
        pub(crate) const VALUE: u32 = 2;
    }
    pub(crate) mod any_value {
        pub(crate) const STRING: u32 = 1;
        pub(crate) const BOOL: u32 = 2;
        pub(crate) const INT: u32 = 3;
    }
}

/// Bytes a varint of `n` takes.
#[inline]
pub(crate) fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

#[inline]
pub(crate) fn varint(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

#[inline]
fn tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, u64::from(field) << 3 | u64::from(wire));
}

/// Bytes a tag of `field` takes.
#[inline]
pub(crate) fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field) << 3)
}

/// A length-delimited field's header: its tag and `len`.
#[inline]
pub(crate) fn len_header(buf: &mut Vec<u8>, field: u32, len: usize) {
    tag(buf, field, LEN);
    varint(buf, len as u64);
}

/// Bytes a length-delimited field of `len` bytes takes, header included.
#[inline]
pub(crate) fn len_field_len(field: u32, len: usize) -> usize {
    tag_len(field) + varint_len(len as u64) + len
}

#[inline]
pub(crate) fn bytes_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    len_header(buf, field, bytes.len());
    buf.extend_from_slice(bytes);
}

#[inline]
pub(crate) fn varint_field(buf: &mut Vec<u8>, field: u32, n: u64) {
    tag(buf, field, VARINT);
    varint(buf, n);
}

#[inline]
pub(crate) fn fixed64_field(buf: &mut Vec<u8>, field: u32, n: u64) {
    tag(buf, field, FIXED64);
    buf.extend_from_slice(&n.to_le_bytes());
}

#[inline]
pub(crate) fn fixed32_field(buf: &mut Vec<u8>, field: u32, n: u32) {
    tag(buf, field, FIXED32);
    buf.extend_from_slice(&n.to_le_bytes());
}

/// A field holding a message whose length is only known once written:
/// `write` appends the message, then its header is put in front of it.
pub(crate) fn message_field(buf: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    write(buf);
    let len = buf.len() - start;
    let mut header = Vec::with_capacity(tag_len(field) + varint_len(len as u64));
    len_header(&mut header, field, len);
    buf.splice(start..start, header);
}

/// A `KeyValue` with a string value, as field `field` of its message.
pub(crate) fn string_attribute(buf: &mut Vec<u8>, field: u32, key: &str, value: &[u8]) {
    string_attribute_parts(buf, field, key, &[value]);
}

/// A `KeyValue` whose string value is `parts` one after the other
/// (written without joining them first).
pub(crate) fn string_attribute_parts(buf: &mut Vec<u8>, field: u32, key: &str, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    // The usual attribute is small: every tag and length one byte.
    let (any, kv) = (2 + len, 2 + key.len() + 2 + 2 + len);
    if field < 16 && kv < 128 {
        buf.reserve(2 + kv);
        buf.extend_from_slice(&[short_tag(field), kv as u8, short_tag(field::key_value::KEY), key.len() as u8]);
        buf.extend_from_slice(key.as_bytes());
        let value = [short_tag(field::key_value::VALUE), any as u8, short_tag(field::any_value::STRING), len as u8];
        buf.extend_from_slice(&value);
        for part in parts {
            buf.extend_from_slice(part);
        }
        return;
    }
    let any = len_field_len(field::any_value::STRING, len);
    let kv = len_field_len(field::key_value::KEY, key.len()) + len_field_len(field::key_value::VALUE, any);
    buf.reserve(len_field_len(field, kv));
    len_header(buf, field, kv);
    bytes_field(buf, field::key_value::KEY, key.as_bytes());
    len_header(buf, field::key_value::VALUE, any);
    len_header(buf, field::any_value::STRING, len);
    for part in parts {
        buf.extend_from_slice(part);
    }
}

/// The one-byte tag of a length-delimited field numbered below 16.
#[inline]
fn short_tag(field: u32) -> u8 {
    (field << 3) as u8 | LEN
}

/// A `KeyValue` with an integer value.
pub(crate) fn int_attribute(buf: &mut Vec<u8>, field: u32, key: &str, value: i64) {
    let raw = value as u64; // int64 is sent as its two's complement
    if field < 16 && key.len() < 100 {
        // A small key: every tag and length one byte.
        let any = 1 + varint_len(raw);
        let kv = 2 + key.len() + 2 + any;
        buf.reserve(2 + kv);
        buf.extend_from_slice(&[short_tag(field), kv as u8, short_tag(field::key_value::KEY), key.len() as u8]);
        buf.extend_from_slice(key.as_bytes());
        let int_tag = (field::any_value::INT << 3) as u8 | VARINT;
        buf.extend_from_slice(&[short_tag(field::key_value::VALUE), any as u8, int_tag]);
        varint(buf, raw);
        return;
    }
    let any = tag_len(field::any_value::INT) + varint_len(raw);
    let kv = len_field_len(field::key_value::KEY, key.len()) + len_field_len(field::key_value::VALUE, any);
    len_header(buf, field, kv);
    bytes_field(buf, field::key_value::KEY, key.as_bytes());
    len_header(buf, field::key_value::VALUE, any);
    varint_field(buf, field::any_value::INT, raw);
}

/// A `KeyValue` with a boolean value.
pub(crate) fn bool_attribute(buf: &mut Vec<u8>, field: u32, key: &str, value: bool) {
    let any = tag_len(field::any_value::BOOL) + 1;
    let kv = len_field_len(field::key_value::KEY, key.len()) + len_field_len(field::key_value::VALUE, any);
    len_header(buf, field, kv);
    bytes_field(buf, field::key_value::KEY, key.as_bytes());
    len_header(buf, field::key_value::VALUE, any);
    varint_field(buf, field::any_value::BOOL, u64::from(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_as_the_guide_writes_them() {
        let mut buf = Vec::new();
        varint(&mut buf, 150);
        assert_eq!(buf, [0x96, 0x01]);
        for n in [0, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut buf = Vec::new();
            varint(&mut buf, n);
            assert_eq!(buf.len(), varint_len(n), "{n}");
        }
    }

    #[test]
    fn short_attributes_are_written_as_the_general_path_writes_them() {
        for (key, value) in [("k", "v"), ("http.method", "GET"), ("", ""), ("key", &*"x".repeat(100))] {
            let mut fast = Vec::new();
            string_attribute_parts(&mut fast, 9, key, &[value.as_bytes()]);
            let mut general = Vec::new();
            let any = len_field_len(field::any_value::STRING, value.len());
            len_header(
                &mut general,
                9,
                len_field_len(field::key_value::KEY, key.len()) + len_field_len(field::key_value::VALUE, any),
            );
            bytes_field(&mut general, field::key_value::KEY, key.as_bytes());
            len_header(&mut general, field::key_value::VALUE, any);
            bytes_field(&mut general, field::any_value::STRING, value.as_bytes());
            assert_eq!(fast, general, "{key}");
        }
        for value in [0, 1, 127, 128, 200, -1, i64::MAX] {
            let mut fast = Vec::new();
            int_attribute(&mut fast, 9, "http.status_code", value);
            let raw = value as u64;
            let any = tag_len(field::any_value::INT) + varint_len(raw);
            let mut general = Vec::new();
            len_header(
                &mut general,
                9,
                len_field_len(field::key_value::KEY, 16) + len_field_len(field::key_value::VALUE, any),
            );
            bytes_field(&mut general, field::key_value::KEY, b"http.status_code");
            len_header(&mut general, field::key_value::VALUE, any);
            varint_field(&mut general, field::any_value::INT, raw);
            assert_eq!(fast, general, "{value}");
        }
    }

    #[test]
    fn a_message_field_gets_its_length_in_front() {
        let mut buf = vec![0xAA];
        message_field(&mut buf, 2, |b| b.extend_from_slice(&[1; 200]));
        assert_eq!(&buf[..4], [0xAA, 0x12, 0xC8, 0x01]);
        assert_eq!(buf.len(), 4 + 200);
    }
}
