//! Fuzz-target bodies, shared by `fuzz/` (cargo-fuzz) and the proptest
//! suite so that stable-toolchain `cargo test` runs the same checks.
//!
//! Each function takes arbitrary bytes and panics only if the codec breaks
//! one of its own invariants (a decoder panicking is a finding too):
//!
//! - decoding the input split into arbitrary pieces gives the same outcome
//!   as decoding it in one piece;
//! - whatever decodes, re-encodes into something that decodes to the same
//!   message (what the proxy forwards means what it received);
//! - a whole connection (heads, bodies, pipelined requests) decodes to the
//!   same events however its bytes are split into reads, and every decoder
//!   call either consumes bytes or ends (no input makes the loop spin).

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
    raw_request_agrees(input, &limits, one_shot.as_ref());
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
    raw_agrees(input, &method, &limits, one_shot.as_ref());
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

/// `decode_raw` decides as `decode` does for a request (`decode` is
/// `decode_raw` and one conversion: what this checks is that conversion),
/// its fields are the map's, and the head edited as a proxy does
/// (hop-by-hop fields out, a field replaced, one added) and encoded reads
/// back as the map edited alike.
fn raw_request_agrees(input: &[u8], limits: &Limits, map: Option<&Result<Request, Error>>) {
    let mut whole = BytesMut::from(input);
    let raw = RequestDecoder::new(*limits).decode_raw(&mut whole).transpose();
    let (raw, map) = match (raw, map) {
        (Some(Ok(raw)), Some(Ok(map))) => (raw, map),
        (Some(Err(a)), Some(Err(b))) => return assert_eq!(a, *b),
        (None, None) => return,
        (raw, map) => panic!("raw {raw:?} != map {map:?}"),
    };
    let raw_map = raw.clone().map_headers(|fields| fields.to_map());
    assert!(same_request(&raw_map, map) && raw_map.headers == map.headers, "{raw:?} != {map:?}");
    let via = http::HeaderName::from_static("via");
    let mut raw_fields = raw.headers.clone();
    raw_fields.remove_hop_by_hop();
    raw_fields.insert(header::HOST, http::HeaderValue::from_static("upstream"));
    raw_fields.append(via.clone(), http::HeaderValue::from_static("nuncio"));
    let mut map_fields = map.headers.clone();
    crate::remove_hop_by_hop(&mut map_fields);
    map_fields.insert(header::HOST, http::HeaderValue::from_static("upstream"));
    map_fields.append(via, http::HeaderValue::from_static("nuncio"));
    assert_eq!(raw_fields.to_map(), map_fields);
    let mut out = BytesMut::new();
    crate::encode_raw_request_head(&raw.method, &raw.uri, &raw_fields, raw.framing, &mut out);
    let mut expected = BytesMut::new();
    encode_request_head(&map.method, &map.uri, &map_fields, map.framing, &mut expected);
    let read = |mut head: BytesMut| {
        let request = crate::decode_request(&mut head, &Limits::default())
            .unwrap_or_else(|e| panic!("re-encoded {raw:?} fails: {e}"))
            .expect("re-encoded head is complete");
        (request.method, request.uri, request.framing, request.headers)
    };
    assert_eq!(read(out), read(expected));
}

/// `decode_raw` decides as `decode` does (`decode` is `decode_raw` and
/// one conversion), its fields are the map's, and a head relayed raw
/// (hop-by-hop fields removed) reads back as the map relayed.
fn raw_agrees(input: &[u8], method: &Method, limits: &Limits, map: Option<&Result<Response, Error>>) {
    let mut whole = BytesMut::from(input);
    let raw = ResponseDecoder::new(*limits).decode_raw(&mut whole, method).transpose();
    let (raw, map) = match (raw, map) {
        (Some(Ok(raw)), Some(Ok(map))) => (raw, map),
        (Some(Err(a)), Some(Err(b))) => return assert_eq!(a, *b),
        (None, None) => return,
        (raw, map) => panic!("raw {raw:?} != map {map:?}"),
    };
    assert!(
        raw.status == map.status
            && raw.version == map.version
            && raw.framing == map.framing
            && raw.keep_alive == map.keep_alive
            && raw.tunnel == map.tunnel
            && raw.headers.to_map() == map.headers,
        "{raw:?} != {map:?}"
    );
    let mut raw_fields = raw.headers.clone();
    raw_fields.remove_hop_by_hop();
    let mut map_fields = map.headers.clone();
    crate::remove_hop_by_hop(&mut map_fields);
    assert_eq!(raw_fields.to_map(), map_fields);
    let mut out = BytesMut::new();
    crate::encode_raw_response_head(raw.status, raw.version, &raw_fields, raw.framing, &mut out);
    let mut expected = BytesMut::new();
    encode_response_head(map.status, map.version, &map_fields, map.framing, &mut expected);
    let read = |mut head: BytesMut| {
        let response = crate::decode_response(&mut head, method, &Limits::default())
            .unwrap_or_else(|e| panic!("re-encoded {raw:?} fails: {e}"))
            .expect("re-encoded head is complete");
        (response.status, response.framing, response.headers)
    };
    assert_eq!(read(out), read(expected));
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

/// One thing the downstream side of a connection learns from its bytes,
/// in order; consecutive body data is merged (its split into events
/// depends on the reads).
#[derive(Debug)]
enum ConnEvent {
    Head(Request),
    Data(Vec<u8>),
    Trailers(HeaderMap),
    End,
    /// The request ends the connection after its body: no keep-alive, or
    /// an upgrade or CONNECT (the bytes after it are a tunnel's).
    Close,
    /// A decoder error: the proxy answers and closes. `head` tells which
    /// decoder failed.
    Failed {
        head: bool,
        error: Error,
    },
    /// The bytes ran out inside a head.
    Truncated,
}

fn same_event(a: &ConnEvent, b: &ConnEvent) -> bool {
    match (a, b) {
        (ConnEvent::Head(a), ConnEvent::Head(b)) => same_request(a, b),
        (ConnEvent::Data(a), ConnEvent::Data(b)) => a == b,
        (ConnEvent::Trailers(a), ConnEvent::Trailers(b)) => a == b,
        (ConnEvent::End, ConnEvent::End) | (ConnEvent::Close, ConnEvent::Close) => true,
        (ConnEvent::Truncated, ConnEvent::Truncated) => true,
        (ConnEvent::Failed { head: ha, error: a }, ConnEvent::Failed { head: hb, error: b }) => ha == hb && a == b,
        _ => false,
    }
}

/// Where the connection is: between messages or inside a body.
enum ConnState {
    Head,
    /// `close`: the connection ends with this body.
    Body {
        decoder: BodyDecoder,
        close: bool,
    },
    Done,
}

/// Drives a connection's decoders as the proxy's HTTP/1.1 downstream
/// does: one `RequestDecoder` for the connection, a `BodyDecoder` per
/// request, every decoder called until it wants more bytes after each
/// read, and end of input treated as the client closing.
struct Conn {
    limits: Limits,
    heads: RequestDecoder,
    state: ConnState,
    buf: BytesMut,
    events: Vec<ConnEvent>,
    /// Decoder calls left: a bound on the work per input byte, so a
    /// decoder that returns without consuming or finishing is caught.
    budget: usize,
}

impl Conn {
    fn new(limits: Limits, input_len: usize) -> Conn {
        Conn {
            limits,
            heads: RequestDecoder::new(limits),
            state: ConnState::Head,
            buf: BytesMut::new(),
            events: Vec::new(),
            budget: 8 + 4 * input_len,
        }
    }

    fn push(&mut self, event: ConnEvent) {
        if let (ConnEvent::Data(more), Some(ConnEvent::Data(data))) = (&event, self.events.last_mut()) {
            data.extend_from_slice(more);
            return;
        }
        self.events.push(event);
    }

    fn spend(&mut self) {
        self.budget = self.budget.checked_sub(1).unwrap_or_else(|| {
            panic!("decoders make no progress: {} bytes left, {:?}", self.buf.len(), self.events.last())
        });
    }

    fn read(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.drain();
    }

    /// Runs the decoders until they need more bytes or the connection ends.
    fn drain(&mut self) {
        loop {
            self.spend();
            match &mut self.state {
                ConnState::Done => return,
                ConnState::Head => {
                    let before = self.buf.len();
                    match self.heads.decode(&mut self.buf) {
                        Ok(None) => return,
                        Ok(Some(request)) => {
                            assert!(self.buf.len() < before, "a head consumed no byte");
                            assert_ne!(request.framing, BodyFraming::UntilClose, "a request read until close");
                            let close = !request.keep_alive || request.upgrade || request.method == Method::CONNECT;
                            self.state =
                                ConnState::Body { decoder: BodyDecoder::new(request.framing, self.limits), close };
                            self.push(ConnEvent::Head(request));
                        }
                        Err(error) => self.fail(true, error),
                    }
                }
                ConnState::Body { decoder: body, close } => {
                    let close = *close;
                    let before = self.buf.len();
                    match body.decode(&mut self.buf) {
                        Ok(None) => {
                            assert!(!body.is_done(), "a finished body wants more bytes");
                            return;
                        }
                        Ok(Some(event)) => self.body_event(event, before, close),
                        Err(error) => self.fail(false, error),
                    }
                }
            }
        }
    }

    fn body_event(&mut self, event: BodyEvent, before: usize, close: bool) {
        match event {
            BodyEvent::Data(data) => {
                assert!(!data.is_empty(), "empty data event");
                assert!(self.buf.len() < before, "a data event consumed no byte");
                self.push(ConnEvent::Data(data.to_vec()));
            }
            BodyEvent::Trailers(trailers) => {
                assert!(!trailers.is_empty(), "empty trailers event");
                assert!(self.buf.len() < before, "trailers consumed no byte");
                assert!(!matches!(self.events.last(), Some(ConnEvent::Trailers(_))), "second trailers");
                self.push(ConnEvent::Trailers(trailers));
            }
            BodyEvent::End => {
                let ConnState::Body { decoder: body, .. } = &mut self.state else { unreachable!() };
                assert!(body.is_done(), "End before the decoder is done");
                assert_eq!(body.decode(&mut self.buf), Ok(None), "an event after End");
                self.push(ConnEvent::End);
                if close {
                    self.push(ConnEvent::Close);
                    self.state = ConnState::Done;
                } else {
                    self.state = ConnState::Head;
                }
            }
        }
    }

    fn fail(&mut self, head: bool, error: Error) {
        self.push(ConnEvent::Failed { head, error });
        self.state = ConnState::Done;
    }

    /// The client closed: what was buffered is all there is.
    fn eof(mut self) -> Vec<ConnEvent> {
        loop {
            self.spend();
            match &mut self.state {
                ConnState::Done => break,
                ConnState::Head => {
                    if !self.buf.is_empty() {
                        self.push(ConnEvent::Truncated);
                    }
                    break;
                }
                ConnState::Body { decoder: body, close } => {
                    let close = *close;
                    let before = self.buf.len();
                    match body.decode_eof(&mut self.buf) {
                        Ok(Some(event)) => self.body_event(event, before, close),
                        // Only after End, which moved the state on.
                        Ok(None) => unreachable!("decode_eof ended without End"),
                        Err(error) => self.fail(false, error),
                    }
                }
            }
        }
        self.events
    }
}

/// Read sizes for a split feed: a xorshift from `seed`, each between 1 and
/// `2 * step`, so one input exercises uneven splits of every part.
fn read_sizes(seed: u8, step: usize) -> impl Iterator<Item = usize> {
    let mut x = 0x9e37_79b9_u32 ^ u32::from(seed);
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        1 + x as usize % (2 * step)
    })
}

/// A whole client connection: request heads, their bodies and the
/// pipelined requests after them, driven as the proxy drives them. The
/// events from one read of everything and from uneven reads are the same,
/// except that an error inside a head arriving in pieces may surface only
/// as the head completes, reaches the size limit, or never (the bytes ran
/// out first), as in [`request_head`].
pub fn connection(data: &[u8]) {
    let Some((limits, step, rest)) = setup(data) else {
        return;
    };
    let [seed, input @ ..] = rest else {
        return;
    };
    let mut whole = Conn::new(limits, input.len());
    whole.read(input);
    let whole = whole.eof();

    let mut split = Conn::new(limits, input.len());
    let mut at = 0;
    for size in read_sizes(*seed, step) {
        if at >= input.len() {
            break;
        }
        let end = (at + size).min(input.len());
        split.read(&input[at..end]);
        at = end;
    }
    let split = split.eof();

    let body_bytes: usize = split.iter().map(|e| if let ConnEvent::Data(d) = e { d.len() } else { 0 }).sum();
    assert!(body_bytes <= input.len());
    let last_ok = |a: &ConnEvent, b: &ConnEvent| match (a, b) {
        (ConnEvent::Failed { head: true, error: a }, ConnEvent::Failed { head: true, error: b }) => consistent(*a, *b),
        (ConnEvent::Failed { head: true, .. }, ConnEvent::Truncated) => true,
        (a, b) => same_event(a, b),
    };
    let same = whole.len() == split.len()
        && whole.split_last().is_none_or(|(last, rest)| {
            rest.iter().zip(&split).all(|(a, b)| same_event(a, b)) && last_ok(last, &split[rest.len()])
        });
    assert!(same, "one read: {whole:#?}\nsplit reads: {split:#?}");
}
