//! HPACK's per-request cost: decoding an h2load/curl-like request block
//! (the first on a connection, with Huffman literals inserted into the
//! dynamic table, and a repeat that only references the table), and
//! encoding a typical response block. Decoder and buffers are reused
//! across iterations, as a connection does.
//!
//! Run: `cargo bench -p nuncio-http2 --bench hpack`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nuncio_http2::hpack::huffman::huffman_encode;
use nuncio_http2::hpack::{Decoder, Encoder};

/// A literal with incremental indexing and a static name index (< 63),
/// its value Huffman-coded, the way nghttp2 sends new fields.
fn indexed_literal(name_index: u8, value: &[u8], out: &mut BytesMut) {
    let mut coded = BytesMut::new();
    huffman_encode(value, &mut coded);
    assert!(name_index < 63 && coded.len() < 127);
    out.extend_from_slice(&[0x40 | name_index, 0x80 | u8::try_from(coded.len()).unwrap()]);
    out.extend_from_slice(&coded);
}

/// The first request block on a connection, preceded by two size updates
/// (to 0, then back to 4096) that empty the table, so that every iteration
/// inserts the same four entries again.
fn first_request_block() -> BytesMut {
    let mut block = BytesMut::new();
    block.extend_from_slice(&[0x20, 0x3f, 0xe1, 0x1f]);
    block.extend_from_slice(&[0x82, 0x86]); // :method GET, :scheme http
    indexed_literal(1, b"127.0.0.1:8080", &mut block);
    indexed_literal(4, b"/small", &mut block);
    indexed_literal(58, b"h2load nghttp2/1.59.0", &mut block);
    indexed_literal(19, b"*/*", &mut block);
    block
}

/// The same request again: static and dynamic indices only.
const REPEAT_REQUEST_BLOCK: &[u8] = &[0x82, 0x86, 0xc1, 0xc0, 0xbf, 0xbe];

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("hpack decode");
    g.throughput(Throughput::Elements(1));
    let first = first_request_block();
    let mut decoder = Decoder::new(4096);
    let mut check = Vec::new();
    decoder.decode(&first, |n, v| check.push((n.to_vec(), v.to_vec()))).unwrap();
    decoder.decode(REPEAT_REQUEST_BLOCK, |n, v| check.push((n.to_vec(), v.to_vec()))).unwrap();
    assert_eq!(check.len(), 12);
    assert_eq!(check[..6], check[6..]);

    g.bench_function("request block, first (6 fields, 4 Huffman literals indexed)", |b| {
        b.iter(|| {
            let mut octets = 0;
            decoder.decode(black_box(&first), |n, v| octets += n.len() + v.len()).unwrap();
            octets
        });
    });
    g.bench_function("request block, repeat (6 indexed fields)", |b| {
        b.iter(|| {
            let mut octets = 0;
            decoder.decode(black_box(REPEAT_REQUEST_BLOCK), |n, v| octets += n.len() + v.len()).unwrap();
            octets
        });
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("hpack encode");
    g.throughput(Throughput::Elements(1));
    let mut encoder = Encoder::new();
    let mut out = BytesMut::with_capacity(4096);
    g.bench_function("response block (:status 200 + 4 fields)", |b| {
        b.iter(|| {
            out.clear();
            encoder.start_block(&mut out);
            encoder.encode_status(black_box(200), &mut out);
            encoder.encode_field(b"server", black_box(b"nuncio"), &mut out);
            encoder.encode_field(b"date", black_box(b"Mon, 23 Nov 2026 10:00:00 GMT"), &mut out);
            encoder.encode_field(b"content-type", black_box(b"text/plain"), &mut out);
            encoder.encode_field(b"content-length", black_box(b"64"), &mut out);
            out.len()
        });
    });
    g.finish();

    let mut g = c.benchmark_group("huffman");
    let value = b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    let mut coded = BytesMut::new();
    huffman_encode(value, &mut coded);
    g.throughput(Throughput::Bytes(value.len() as u64));
    let mut plain = Vec::with_capacity(256);
    g.bench_function("decode a 72-octet user-agent", |b| {
        b.iter(|| {
            plain.clear();
            nuncio_http2::hpack::huffman::huffman_decode(black_box(&coded), &mut plain).unwrap();
            plain.len()
        });
    });
    g.bench_function("encode a 72-octet user-agent", |b| {
        b.iter(|| {
            out.clear();
            huffman_encode(black_box(value), &mut out);
            out.len()
        });
    });
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
