//! Body decoding: chunked (strict), length, until-close.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use nuncio_http1::{BodyDecoder, BodyEvent, BodyFraming, ChunkedDecoder, Error, Limits};

/// Everything a decoder yields for `input` fed in `pieces`.
#[derive(Debug, PartialEq)]
struct Out {
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
    end: bool,
    rest: Vec<u8>,
}

fn run(framing: BodyFraming, limits: Limits, pieces: &[&[u8]]) -> Result<Out, Error> {
    let mut d = BodyDecoder::new(framing, limits);
    let mut buf = BytesMut::new();
    let mut out = Out { data: Vec::new(), trailers: None, end: false, rest: Vec::new() };
    for piece in pieces {
        buf.extend_from_slice(piece);
        while let Some(event) = d.decode(&mut buf)? {
            match event {
                BodyEvent::Data(b) => {
                    assert!(!b.is_empty());
                    out.data.extend_from_slice(&b);
                }
                BodyEvent::Trailers(t) => out.trailers = Some(t),
                BodyEvent::End => {
                    assert!(!out.end);
                    out.end = true;
                }
            }
        }
    }
    assert_eq!(out.end, d.is_done());
    out.rest = buf.to_vec();
    Ok(out)
}

fn chunked(input: &[u8]) -> Result<Out, Error> {
    run(BodyFraming::Chunked, Limits::default(), &[input])
}

const WITH_EXT_AND_TRAILERS: &[u8] =
    b"5;name=value\r\nhello\r\n6 ; a=\"q s\";b\r\n world\r\n0;last\r\nExpires: never\r\nX-Checksum: abc\r\n\r\nNEXT";

#[test]
fn extensions_and_trailers() {
    let out = chunked(WITH_EXT_AND_TRAILERS).unwrap();
    assert_eq!(out.data, b"hello world");
    let t = out.trailers.unwrap();
    assert_eq!(t["expires"], "never");
    assert_eq!(t["x-checksum"], "abc");
    assert!(out.end);
    assert_eq!(out.rest, b"NEXT");
}

#[test]
fn chunked_split_at_every_byte_boundary() {
    let whole = chunked(WITH_EXT_AND_TRAILERS).unwrap();
    for cut in 0..=WITH_EXT_AND_TRAILERS.len() {
        let (a, b) = WITH_EXT_AND_TRAILERS.split_at(cut);
        let out = run(BodyFraming::Chunked, Limits::default(), &[a, b]).unwrap();
        assert_eq!(out, whole, "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = WITH_EXT_AND_TRAILERS.chunks(1).collect();
    assert_eq!(run(BodyFraming::Chunked, Limits::default(), &bytes).unwrap(), whole);
}

#[test]
fn data_is_streamed_zero_copy() {
    let mut buf = BytesMut::from(&b"a\r\n0123"[..]);
    let base = buf.as_ptr() as usize;
    let mut d = ChunkedDecoder::new(Limits::default());
    let Some(BodyEvent::Data(first)) = d.decode(&mut buf).unwrap() else { panic!() };
    assert_eq!(first, "0123");
    assert_eq!(first.as_ptr() as usize, base + 3, "a slice of the read buffer");
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"456789\r\n0\r\n\r\n");
    assert_eq!(d.decode(&mut buf).unwrap(), Some(BodyEvent::Data(Bytes::from_static(b"456789"))));
    assert_eq!(d.decode(&mut buf).unwrap(), Some(BodyEvent::End));
    assert_eq!(d.decode(&mut buf).unwrap(), None);
}

#[test]
fn no_trailers_means_no_trailers_event() {
    let out = chunked(b"3\r\nabc\r\n0\r\n\r\n").unwrap();
    assert!(out.trailers.is_none());
    assert!(out.end);
    let out = chunked(b"0\r\n\r\n").unwrap();
    assert!(out.data.is_empty() && out.end);
}

#[test]
fn uppercase_hex_and_leading_zeros() {
    let out = chunked(b"0000A\r\n0123456789\r\n0\r\n\r\n").unwrap();
    assert_eq!(out.data, b"0123456789");
}

#[test]
fn bare_lf_is_rejected() {
    assert_eq!(chunked(b"3\r\nabc\n0\r\n\r\n").unwrap_err(), Error::MissingChunkCrlf);
    assert_eq!(chunked(b"3\nabc\r\n0\r\n\r\n").unwrap_err(), Error::MissingChunkCrlf);
    assert_eq!(chunked(b"0\n\r\n").unwrap_err(), Error::MissingChunkCrlf);
    assert_eq!(chunked(b"0\r\n\n").unwrap_err(), Error::MissingChunkCrlf);
    assert_eq!(chunked(b"0\r\nX: a\n\r\n").unwrap_err(), Error::MissingChunkCrlf);
}

#[test]
fn data_must_be_followed_by_crlf() {
    assert_eq!(chunked(b"3\r\nabcd\r\n0\r\n\r\n").unwrap_err(), Error::MissingChunkCrlf);
    assert_eq!(chunked(b"3\r\nabc\rX").unwrap_err(), Error::MissingChunkCrlf);
    // Detected as soon as the first wrong byte arrives.
    assert_eq!(chunked(b"3\r\nabcX").unwrap_err(), Error::MissingChunkCrlf);
}

#[test]
fn chunk_size_overflow() {
    assert_eq!(chunked(b"10000000000000000\r\n").unwrap_err(), Error::ChunkSizeTooLarge);
    assert_eq!(chunked(b"00000000000000001\r\nx\r\n").unwrap_err(), Error::ChunkSizeTooLarge);
    // Before the line is even complete.
    assert_eq!(chunked(b"fffffffffffffffff").unwrap_err(), Error::ChunkSizeTooLarge);
    // 16 digits are fine (and wait for that much data).
    let out = chunked(b"ffffffffffffffff\r\nabc").unwrap();
    assert_eq!(out.data, b"abc");
    assert!(!out.end);
}

#[test]
fn invalid_chunk_size_lines() {
    for bad in [&b"\r\n"[..], b"x\r\n", b"-1\r\n", b"+1\r\n", b" 5\r\n", b"0x5\r\n", b"5 \r\n", b"5 x\r\n", b"5\r\r\n"]
    {
        assert_eq!(chunked(bad).unwrap_err(), Error::InvalidChunkSize, "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn chunk_extensions_are_bounded() {
    let mut limits = Limits::default();
    limits.max_chunk_ext_bytes = 32;
    let long = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(40));
    assert_eq!(run(BodyFraming::Chunked, limits, &[long.as_bytes()]).unwrap_err(), Error::InvalidChunkExtension);
    // Incomplete line already over the budget.
    let partial = format!("1;{}", "x".repeat(40));
    assert_eq!(run(BodyFraming::Chunked, limits, &[partial.as_bytes()]).unwrap_err(), Error::InvalidChunkExtension);
    // The budget is for the whole body.
    let many = "1;abcdefghij\r\na\r\n".repeat(4) + "0\r\n\r\n";
    assert_eq!(run(BodyFraming::Chunked, limits, &[many.as_bytes()]).unwrap_err(), Error::InvalidChunkExtension);
    assert_eq!(chunked(b"1;a\x01b\r\na\r\n0\r\n\r\n").unwrap_err(), Error::InvalidChunkExtension);
    assert_eq!(chunked(b"1;a\rb\r\na\r\n0\r\n\r\n").unwrap_err(), Error::InvalidChunkExtension);
}

#[test]
fn trailers_are_bounded() {
    let mut limits = Limits::default();
    limits.max_headers = 2;
    let three = b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(run(BodyFraming::Chunked, limits, &[three]).unwrap_err(), Error::TrailersTooLarge);
    limits.max_headers = 100;
    limits.max_head_bytes = 32;
    let big = format!("0\r\nA: {}\r\n\r\n", "x".repeat(40));
    let e = run(BodyFraming::Chunked, limits, &[big.as_bytes()]).unwrap_err();
    assert_eq!(e, Error::TrailersTooLarge);
    assert_eq!(e.status().as_u16(), 431);
    assert_eq!(chunked(b"0\r\nA : 1\r\n\r\n").unwrap_err(), Error::InvalidTrailer);
    assert_eq!(chunked(b"0\r\nA: 1\r\n b\r\n\r\n").unwrap_err(), Error::InvalidTrailer);
}

#[test]
fn length_body() {
    let out = run(BodyFraming::Length(5), Limits::default(), &[b"he", b"llo", b"GET /"]).unwrap();
    assert_eq!(out.data, b"hello");
    assert!(out.end);
    assert_eq!(out.rest, b"GET /");
}

#[test]
fn none_and_zero_length_end_at_once() {
    for framing in [BodyFraming::None, BodyFraming::Length(0)] {
        let out = run(framing, Limits::default(), &[b"GET / HTTP/1.1"]).unwrap();
        assert!(out.data.is_empty() && out.end);
        assert_eq!(out.rest, b"GET / HTTP/1.1");
    }
}

#[test]
fn until_close_body() {
    let mut d = BodyDecoder::new(BodyFraming::UntilClose, Limits::default());
    let mut buf = BytesMut::from(&b"abc"[..]);
    assert_eq!(d.decode(&mut buf).unwrap(), Some(BodyEvent::Data("abc".into())));
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"def");
    assert_eq!(d.decode_eof(&mut buf).unwrap(), Some(BodyEvent::Data("def".into())));
    assert_eq!(d.decode_eof(&mut buf).unwrap(), Some(BodyEvent::End));
    assert!(d.is_done());
    assert_eq!(d.decode_eof(&mut buf).unwrap(), None);
}

#[test]
fn eof_before_the_end_is_an_error() {
    let mut d = BodyDecoder::new(BodyFraming::Length(10), Limits::default());
    let mut buf = BytesMut::from(&b"abc"[..]);
    assert_eq!(d.decode_eof(&mut buf).unwrap(), Some(BodyEvent::Data("abc".into())));
    assert_eq!(d.decode_eof(&mut buf).unwrap_err(), Error::IncompleteBody);

    let mut d = BodyDecoder::new(BodyFraming::Chunked, Limits::default());
    let mut buf = BytesMut::from(&b"3\r\nabc\r\n"[..]);
    assert!(d.decode_eof(&mut buf).unwrap().is_some());
    assert_eq!(d.decode_eof(&mut buf).unwrap_err(), Error::IncompleteBody);
}
