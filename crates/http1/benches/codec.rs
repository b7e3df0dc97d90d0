//! The codec's hot paths: decoding a browser-like request head and a typical
//! response head, encoding both, and decoding a 16 KiB chunked body in
//! 4 KiB chunks. Buffers are reused across iterations, as a connection does.
//! `httparse alone` is the floor the head decoders build on.
//!
//! Run: `cargo bench -p nuncio-http1 --bench codec`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Method;
use nuncio_http1::{
    BodyDecoder, BodyEvent, BodyFraming, CRLF, Limits, RequestDecoder, ResponseDecoder, encode_chunk_size,
    encode_last_chunk, encode_request_head, encode_response_head,
};

const REQUEST: &[u8] = b"GET /search?q=rust+http&lang=en HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/\r\n\
Connection: keep-alive\r\n\
Cookie: session=7f3a9c2e4b1d; theme=dark; consent=yes\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\r\n";

const SMALL_REQUEST: &[u8] =
    b"GET /index.html HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Mon, 23 Nov 2026 10:00:00 GMT\r\n\
Server: origin\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Length: 5120\r\n\
Cache-Control: private, max-age=0\r\n\
ETag: \"5f3e-1a2b3c\"\r\n\
Vary: Accept-Encoding\r\n\
X-Request-Id: 3b2f7c9a-8d1e-4f60-a0b7-2c9e5d4f1a38\r\n\r\n";

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    let limits = Limits::default();

    let mut buf = BytesMut::with_capacity(4096);
    let mut decoder = RequestDecoder::new(limits);
    g.bench_function("request head (browser GET, 11 fields)", |b| {
        b.iter(|| {
            buf.extend_from_slice(black_box(REQUEST));
            decoder.decode(&mut buf).unwrap().unwrap()
        });
    });

    g.bench_function("request head (curl GET, 3 fields)", |b| {
        b.iter(|| {
            buf.extend_from_slice(black_box(SMALL_REQUEST));
            decoder.decode(&mut buf).unwrap().unwrap()
        });
    });

    let mut decoder = ResponseDecoder::new(limits);
    g.bench_function("response head (8 fields)", |b| {
        b.iter(|| {
            buf.extend_from_slice(black_box(RESPONSE));
            decoder.decode(&mut buf, &Method::GET).unwrap().unwrap()
        });
    });

    g.bench_function("httparse alone, request head", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 100];
            let mut req = httparse::Request::new(&mut headers);
            req.parse(black_box(REQUEST)).unwrap().unwrap()
        });
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    let mut buf = BytesMut::from(REQUEST);
    let request = RequestDecoder::new(Limits::default()).decode(&mut buf).unwrap().unwrap();
    let mut buf = BytesMut::from(RESPONSE);
    let response = ResponseDecoder::new(Limits::default()).decode(&mut buf, &Method::GET).unwrap().unwrap();

    let mut out = BytesMut::with_capacity(4096);
    g.bench_function("request head (browser GET, 11 fields)", |b| {
        b.iter(|| {
            out.clear();
            encode_request_head(black_box(&request.method), &request.uri, &request.headers, request.framing, &mut out);
            black_box(&out);
        });
    });
    g.bench_function("response head (8 fields)", |b| {
        b.iter(|| {
            out.clear();
            encode_response_head(
                black_box(response.status),
                response.version,
                &response.headers,
                response.framing,
                &mut out,
            );
            black_box(&out);
        });
    });
    g.finish();
}

fn chunked(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunked");
    let data = vec![b'x'; 4096];
    let mut wire = BytesMut::new();
    for _ in 0..4 {
        encode_chunk_size(data.len() as u64, &mut wire);
        wire.extend_from_slice(&data);
        wire.extend_from_slice(CRLF);
    }
    encode_last_chunk(None, &mut wire);
    let wire = wire.freeze();
    g.throughput(Throughput::Bytes(16 * 1024));

    let limits = Limits::default();
    // A connection's read copies the bytes into its (reused, hot) buffer; the
    // decoder only splits it. "copy alone" is that copy, to subtract.
    let mut buf = BytesMut::with_capacity(32 * 1024);
    g.bench_function("copy 16 KiB into the read buffer + decode", |b| {
        b.iter(|| {
            buf.extend_from_slice(&wire);
            let mut body = BodyDecoder::new(BodyFraming::Chunked, limits);
            let mut n = 0;
            while let Some(event) = body.decode(&mut buf).unwrap() {
                match event {
                    BodyEvent::Data(d) => n += d.len(),
                    BodyEvent::Trailers(_) => {}
                    BodyEvent::End => break,
                }
            }
            assert_eq!(n, 16 * 1024);
        });
    });
    g.bench_function("copy 16 KiB into the read buffer alone", |b| {
        b.iter(|| {
            buf.extend_from_slice(&wire);
            black_box(&buf);
            buf.clear();
        });
    });
    g.finish();
}

criterion_group!(benches, decode, encode, chunked);
criterion_main!(benches);
