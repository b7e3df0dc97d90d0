//! Fuzz-target bodies, shared by `fuzz/` (cargo-fuzz) and the proptest
//! suite so that stable-toolchain `cargo test` runs the same checks.
//!
//! Each function takes arbitrary bytes and panics only if the codec breaks
//! one of its own invariants (a decoder panicking is a finding too):
//!
//! - decoding the input split into arbitrary pieces gives the same outcome
//!   as decoding it in one piece;
//! - whatever decodes, re-encodes into something that decodes to the same
//!   message (what the proxy forwards means what it received).

use bytes::BytesMut;
use http::{HeaderMap, Method, header};

use crate::{
    BodyDecoder, BodyEvent, BodyFraming, Error, Limits, Request, RequestDecoder, Response, ResponseDecoder,
    encode_chunk_size, encode_last_chunk, encode_request_head, encode_response_head,
};

/// Limits and read size derived from the first two input bytes, so limit
/// paths get exercised; returns them and the rest of the input.
fn setup(data: &[u8]) -> Option<(Limits, usize, &[u8])> {
    let [a, b, rest @ ..] = data else {
        return None;
    };
    let limits = Limits {
        max_head_bytes: 64 + usize::from(*a) * 8,
        max_headers: usize::from(*b % 32),
        max_chunk_ext_bytes: 16 + usize::from(*a),
    };
    Some((limits, 1 + usize::from(*b / 32) * 7, rest))
}

/// Feeds `input` `step` bytes at a time into `decode` until it produces a
/// message or fails; `None` if the input runs out first.
fn incremental<T>(
    input: &[u8],
    step: usize,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, Error>,
) -> (Option<Result<T, Error>>, BytesMut) {
    let mut buf = BytesMut::new();
    for piece in input.chunks(step) {
        buf.extend_from_slice(piece);
        match decode(&mut buf) {
            Ok(None) => {}
            Ok(Some(t)) => return (Some(Ok(t)), buf),
            Err(e) => return (Some(Err(e)), buf),
        }
    }
    (None, buf)
}

fn without_framing(headers: &HeaderMap) -> HeaderMap {
    let mut h = headers.clone();
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::TRANSFER_ENCODING);
    h
}

/// Two errors for the same input fed differently: same status, unless the
/// split feed hit the size limit before it saw the (later) error.
fn consistent(one_shot: Error, split: Error) -> bool {
    one_shot.status() == split.status() || split == Error::HeadTooLarge
}

fn same_request(a: &Request, b: &Request) -> bool {
    a.method == b.method
        && a.uri == b.uri
        && a.version == b.version
        && a.headers == b.headers
        && a.authority == b.authority
        && a.framing == b.framing
        && a.keep_alive == b.keep_alive
        && a.expect_continue == b.expect_continue
        && a.upgrade == b.upgrade
}

/// Request heads (and the bodies of pipelined requests after them).
pub fn request_head(data: &[u8]) {
    let Some((limits, step, input)) = setup(data) else {
        return;
    };
    let mut whole = BytesMut::from(input);
    let one_shot = crate::decode_request(&mut whole, &limits).transpose();
    let mut decoder = RequestDecoder::new(limits);
    let (split, mut buf) = incremental(input, step, |b| decoder.decode(b));
    match (&one_shot, &split) {
        (Some(Ok(a)), Some(Ok(b))) => assert!(same_request(a, b), "{a:?} != {b:?}"),
        (Some(Err(a)), Some(Err(b))) => assert!(consistent(*a, *b), "{a:?} vs {b:?}"),
        // An incomplete head is checked when first seen and when its start
        // line completes; an error further in may wait for the end of the
        // head (or the limit) when the head arrives in pieces.
        (Some(Err(_)) | None, None) => {}
        _ => panic!("one-shot {one_shot:?} != split {split:?}"),
    }
    let Some(Ok(request)) = split else { return };
    if request.version == http::Version::HTTP_11 {
        let mut out = BytesMut::new();
        encode_request_head(&request.method, &request.uri, &request.headers, request.framing, &mut out);
        let again = crate::decode_request(&mut out, &Limits::default())
            .unwrap_or_else(|e| panic!("re-encoded {request:?} fails: {e}"))
            .expect("re-encoded head is complete");
        assert!(out.is_empty());
        assert_eq!(again.framing, request.framing);
        assert_eq!(without_framing(&again.headers), without_framing(&request.headers));
        assert!(same_request(
            &Request { headers: HeaderMap::new(), ..again },
            &Request { headers: HeaderMap::new(), ..request.clone() }
        ));
    }
    // Whatever follows is body, then maybe the next request.
    let mut body = BodyDecoder::new(request.framing, limits);
    while let Ok(Some(event)) = body.decode(&mut buf) {
        if event == BodyEvent::End {
            let _ = decoder.decode(&mut buf);
            break;
        }
    }
}

/// Response heads; the request method comes from the input too.
pub fn response_head(data: &[u8]) {
    let Some((limits, step, input)) = setup(data) else {
        return;
    };
    let method = match step % 4 {
        0 => Method::HEAD,
        1 => Method::CONNECT,
        _ => Method::GET,
    };
    let mut whole = BytesMut::from(input);
    let one_shot = crate::decode_response(&mut whole, &method, &limits).transpose();
    let mut decoder = ResponseDecoder::new(limits);
    let (split, mut buf) = incremental(input, step, |b| decoder.decode(b, &method));
    let same = |a: &Response, b: &Response| {
        a.status == b.status
            && a.version == b.version
            && without_framing(&a.headers) == without_framing(&b.headers)
            && a.framing == b.framing
            && a.keep_alive == b.keep_alive
            && a.tunnel == b.tunnel
    };
    match (&one_shot, &split) {
        (Some(Ok(a)), Some(Ok(b))) => {
            assert!(same(a, b) && a.headers == b.headers, "{a:?} != {b:?}");
        }
        (Some(Err(a)), Some(Err(b))) => assert!(consistent(*a, *b), "{a:?} vs {b:?}"),
        (Some(Err(_)) | None, None) => {}
        _ => panic!("one-shot {one_shot:?} != split {split:?}"),
    }
    let Some(Ok(response)) = split else { return };
    let mut out = BytesMut::new();
    encode_response_head(response.status, response.version, &response.headers, response.framing, &mut out);
    let again = crate::decode_response(&mut out, &method, &Limits::default())
        .unwrap_or_else(|e| panic!("re-encoded {response:?} fails: {e}"))
        .expect("re-encoded head is complete");
    assert!(out.is_empty());
    assert!(same(&again, &response), "{again:?} != {response:?}");

    let mut body = BodyDecoder::new(response.framing, limits);
    while let Ok(Some(event)) = body.decode(&mut buf) {
        if event == BodyEvent::End {
            break;
        }
    }
    let _ = body.decode_eof(&mut buf);
}

/// What a body decoder made of an input: data, trailers, ended, failed.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
    end: bool,
    error: Option<Error>,
}

fn decode_body(input: &[u8], step: usize, limits: Limits) -> Decoded {
    let mut d = Decoded { data: Vec::new(), trailers: None, end: false, error: None };
    let mut decoder = BodyDecoder::new(BodyFraming::Chunked, limits);
    let mut buf = BytesMut::new();
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(BodyEvent::Data(data))) => {
                    assert!(!data.is_empty(), "empty data event");
                    assert!(!d.end && d.trailers.is_none(), "data after trailers/end");
                    d.data.extend_from_slice(&data);
                }
                Ok(Some(BodyEvent::Trailers(t))) => {
                    assert!(!d.end && d.trailers.is_none(), "second trailers");
                    d.trailers = Some(t);
                }
                Ok(Some(BodyEvent::End)) => {
                    assert!(!d.end, "second end");
                    d.end = true;
                }
                Ok(None) => break,
                Err(e) => {
                    d.error = Some(e);
                    return d;
                }
            }
        }
    }
    d
}

/// Chunked bodies.
pub fn chunked(data: &[u8]) {
    let Some((limits, step, input)) = setup(data) else {
        return;
    };
    let split = decode_body(input, step, limits);
    let whole = decode_body(input, input.len(), limits);
    assert_eq!(split, whole);
    assert!(split.data.len() <= input.len());
    if !split.end {
        return;
    }
    // Re-encode: one chunk per 1000 bytes, then the trailers.
    let mut out = BytesMut::new();
    for chunk in split.data.chunks(1000) {
        assert!(encode_chunk_size(chunk.len() as u64, &mut out));
        out.extend_from_slice(chunk);
        out.extend_from_slice(crate::CRLF);
    }
    encode_last_chunk(split.trailers.as_ref(), &mut out);
    let again = decode_body(&out, out.len(), Limits::default());
    assert!(again.end && again.error.is_none(), "{again:?}");
    assert_eq!(again.data, split.data);
    assert_eq!(
        again.trailers.as_ref().map(without_framing),
        split.trailers.as_ref().map(without_framing).filter(|t| !t.is_empty())
    );
}
