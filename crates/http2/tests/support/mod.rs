//! Helpers for the codec's integration tests: a client that builds frames
//! by hand ([`Wire`]), a harness that feeds them to a [`Connection`] and
//! reads its output back as decoded frames ([`Peer`], [`Out`]), raw HPACK
//! for the dynamic table the codec's encoder never uses, and a waker that
//! counts its wakes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use nuncio_http2::frame::{self, PREFACE, flag, kind, setting};
use nuncio_http2::hpack::{Decoder, Encoder};
use nuncio_http2::{BodyItem, Config, Connection, Error, Reason, Request, StreamError};

/// The fields of a plain `GET https://example.test/`.
pub(crate) const GET: &[(&str, &str)] =
    &[(":method", "GET"), (":scheme", "https"), (":authority", "example.test"), (":path", "/")];

/// The same head with `POST`.
pub(crate) const POST: &[(&str, &str)] =
    &[(":method", "POST"), (":scheme", "https"), (":authority", "example.test"), (":path", "/upload")];

/// `fields` followed by `extra`.
pub(crate) fn with<'a>(fields: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    fields.iter().chain(extra).copied().collect()
}

/// Owned field pairs, as [`Out::Headers`] carries them.
pub(crate) fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
}

// ---------------------------------------------------------------------------
// HPACK by hand

/// A header block for `fields`, from the codec's own encoder (static table
/// and raw literals, no dynamic table).
pub(crate) fn hpack(fields: &[(&str, &str)]) -> BytesMut {
    let mut encoder = Encoder::new();
    let mut out = BytesMut::new();
    encoder.start_block(&mut out);
    for (name, value) in fields {
        encoder.encode_field(name.as_bytes(), value.as_bytes(), &mut out);
    }
    out
}

/// An HPACK prefix integer (RFC 7541 §5.1).
pub(crate) fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u8, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal with incremental indexing and a new name (RFC 7541 §6.2.1):
/// the field is added to the dynamic table.
pub(crate) fn hpack_insert(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x40];
    hpack_int(&mut out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(&mut out, 0, 7, value.len());
    out.extend_from_slice(value.as_bytes());
    out
}

/// An indexed field (RFC 7541 §6.1); 62 is the newest dynamic entry.
pub(crate) fn hpack_index(index: usize) -> Vec<u8> {
    let mut out = Vec::new();
    hpack_int(&mut out, 0x80, 7, index);
    out
}

// ---------------------------------------------------------------------------
// What the client sends

/// Client bytes, built frame by frame.
#[derive(Debug, Default)]
pub(crate) struct Wire(pub(crate) BytesMut);

impl Wire {
    pub(crate) fn new() -> Wire {
        Wire::default()
    }

    /// The connection preface and a `SETTINGS` with `params`.
    pub(crate) fn preface(params: &[(u16, u32)]) -> Wire {
        let mut wire = Wire::new();
        wire.0.extend_from_slice(PREFACE);
        wire.settings(params)
    }

    pub(crate) fn bytes(mut self, bytes: &[u8]) -> Wire {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Any frame.
    pub(crate) fn frame(mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Wire {
        frame::put_head(&mut self.0, payload.len(), kind, flags, stream);
        self.0.extend_from_slice(payload);
        self
    }

    /// `HEADERS` with a whole block (`END_HEADERS`).
    pub(crate) fn block(self, stream: u32, block: &[u8], end_stream: bool) -> Wire {
        let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
        self.frame(kind::HEADERS, flags, stream, block)
    }

    /// `HEADERS` with `fields`.
    pub(crate) fn headers(self, stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Wire {
        self.block(stream, &hpack(fields), end_stream)
    }

    /// A `GET` that ends its stream.
    pub(crate) fn get(self, stream: u32) -> Wire {
        self.headers(stream, GET, true)
    }

    /// A `POST` whose body follows.
    pub(crate) fn post(self, stream: u32) -> Wire {
        self.headers(stream, POST, false)
    }

    pub(crate) fn data(self, stream: u32, payload: &[u8], end: bool) -> Wire {
        self.frame(kind::DATA, if end { flag::END_STREAM } else { 0 }, stream, payload)
    }

    /// `DATA` with `pad` bytes of padding.
    pub(crate) fn padded_data(self, stream: u32, payload: &[u8], pad: u8, end: bool) -> Wire {
        let mut body = vec![pad];
        body.extend_from_slice(payload);
        body.resize(body.len() + usize::from(pad), 0);
        self.frame(kind::DATA, flag::PADDED | if end { flag::END_STREAM } else { 0 }, stream, &body)
    }

    pub(crate) fn settings(mut self, params: &[(u16, u32)]) -> Wire {
        frame::put_settings(&mut self.0, params);
        self
    }

    pub(crate) fn settings_ack(self) -> Wire {
        self.frame(kind::SETTINGS, flag::ACK, 0, &[])
    }

    pub(crate) fn window_update(mut self, stream: u32, increment: u32) -> Wire {
        frame::put_window_update(&mut self.0, stream, increment);
        self
    }

    pub(crate) fn rst(mut self, stream: u32, reason: Reason) -> Wire {
        frame::put_reset(&mut self.0, stream, reason);
        self
    }

    pub(crate) fn ping(self, payload: [u8; 8]) -> Wire {
        self.frame(kind::PING, 0, 0, &payload)
    }

    pub(crate) fn goaway(mut self, last: u32, reason: Reason) -> Wire {
        frame::put_goaway(&mut self.0, last, reason);
        self
    }
}

// ---------------------------------------------------------------------------
// What the server sends

/// One frame as it came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Raw {
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
    pub(crate) payload: Bytes,
}

/// Splits output into frames; the output must hold whole frames only.
pub(crate) fn split_frames(mut buf: Bytes) -> Vec<Raw> {
    let mut frames = Vec::new();
    while !buf.is_empty() {
        assert!(buf.len() >= frame::HEAD_LEN, "a partial frame head in the output: {buf:?}");
        let head = frame::Head::parse(&buf);
        buf.advance(frame::HEAD_LEN);
        assert!(buf.len() >= head.len, "a partial frame in the output");
        let payload = buf.split_to(head.len);
        frames.push(Raw { kind: head.kind, flags: head.flags, stream: head.stream, payload });
    }
    frames
}

/// A frame (or a whole header block) the server sent, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Out {
    Settings(Vec<(u16, u32)>),
    SettingsAck,
    /// `HEADERS` and its `CONTINUATION`s, decoded.
    Headers {
        stream: u32,
        fields: Vec<(String, String)>,
        end: bool,
    },
    Data {
        stream: u32,
        data: Bytes,
        end: bool,
    },
    Reset {
        stream: u32,
        reason: Reason,
    },
    GoAway {
        last: u32,
        reason: Reason,
    },
    Ping {
        ack: bool,
        payload: [u8; 8],
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
}

impl Out {
    pub(crate) fn headers(stream: u32, fields: &[(&str, &str)], end: bool) -> Out {
        Out::Headers { stream, fields: owned(fields), end }
    }

    pub(crate) fn data(stream: u32, data: &[u8], end: bool) -> Out {
        Out::Data { stream, data: Bytes::copy_from_slice(data), end }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes frames; header blocks against `decoder` (the client's view of
/// the server's HPACK state).
pub(crate) fn decode_frames(frames: Vec<Raw>, decoder: &mut Decoder) -> Vec<Out> {
    let mut out = Vec::new();
    let mut frames = frames.into_iter();
    while let Some(f) = frames.next() {
        let p = &f.payload;
        let event = match f.kind {
            kind::SETTINGS if f.flags & flag::ACK != 0 => {
                assert!(p.is_empty(), "a SETTINGS ACK with a payload");
                Out::SettingsAck
            }
            kind::SETTINGS => {
                assert_eq!(p.len() % 6, 0);
                Out::Settings(p.chunks(6).map(|c| (u16::from_be_bytes([c[0], c[1]]), u32_at(c, 2))).collect())
            }
            kind::HEADERS => {
                assert_eq!(f.flags & flag::PADDED, 0, "the server pads nothing");
                assert_ne!(f.stream, 0);
                let mut block = p.to_vec();
                let mut flags = f.flags;
                while flags & flag::END_HEADERS == 0 {
                    let c = frames.next().expect("a CONTINUATION after HEADERS without END_HEADERS");
                    assert_eq!((c.kind, c.stream), (kind::CONTINUATION, f.stream), "a header block interrupted");
                    block.extend_from_slice(&c.payload);
                    flags = c.flags;
                }
                let mut fields = Vec::new();
                decoder
                    .decode(&block, |n, v| {
                        fields.push((String::from_utf8(n.to_vec()).unwrap(), String::from_utf8(v.to_vec()).unwrap()));
                    })
                    .expect("the server's header block decodes");
                Out::Headers { stream: f.stream, fields, end: f.flags & flag::END_STREAM != 0 }
            }
            kind::DATA => {
                assert_ne!(f.stream, 0);
                Out::Data { stream: f.stream, data: f.payload.clone(), end: f.flags & flag::END_STREAM != 0 }
            }
            kind::RST_STREAM => {
                assert_eq!(p.len(), 4);
                Out::Reset { stream: f.stream, reason: Reason(u32_at(p, 0)) }
            }
            kind::GOAWAY => {
                assert_eq!(f.stream, 0);
                Out::GoAway { last: u32_at(p, 0), reason: Reason(u32_at(p, 4)) }
            }
            kind::PING => Out::Ping { ack: f.flags & flag::ACK != 0, payload: p[..].try_into().unwrap() },
            kind::WINDOW_UPDATE => Out::WindowUpdate { stream: f.stream, increment: u32_at(p, 0) },
            other => panic!("the server sent a frame of type {other:#x}"),
        };
        out.push(event);
    }
    out
}

// ---------------------------------------------------------------------------
// The harness

/// A body piece as a stream's task takes it.
#[derive(Debug, PartialEq)]
pub(crate) enum Piece {
    Data(Bytes),
    Trailers(HeaderMap),
    /// `None`: the body ended.
    End,
    Err(StreamError),
}

/// A connection and the client's view of what it sends.
pub(crate) struct Peer {
    pub(crate) conn: Connection,
    pub(crate) decoder: Decoder,
}

/// A context whose waker does nothing.
pub(crate) fn noop() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

impl Peer {
    /// A connection that has not heard from its client.
    pub(crate) fn new(config: Config) -> Peer {
        Peer { conn: Connection::new(config), decoder: Decoder::new(4096) }
    }

    /// A connection past the preface and an empty client `SETTINGS`.
    pub(crate) fn start(config: Config) -> Peer {
        Peer::start_with(config, &[])
    }

    /// A connection past the preface, a client `SETTINGS` with `params` and
    /// the client's acknowledgement of nuncio's, its output (nuncio's
    /// `SETTINGS`, the `ACK`) taken.
    pub(crate) fn start_with(config: Config, params: &[(u16, u32)]) -> Peer {
        let mut peer = Peer::new(config);
        peer.recv(Wire::preface(params).settings_ack()).expect("the handshake");
        let out = peer.out();
        assert!(matches!(out.first(), Some(Out::Settings(_))), "{out:?}");
        assert_eq!(out.last(), Some(&Out::SettingsAck));
        assert!(peer.conn.is_established());
        peer
    }

    /// Feeds `wire` in one call; all of it must be taken.
    pub(crate) fn recv(&mut self, wire: Wire) -> Result<(), Error> {
        let mut input = wire.0;
        let result = self.conn.recv(&mut input);
        // A failed connection takes nothing more.
        if result.is_ok() && self.conn.wants_read() {
            assert!(input.is_empty(), "{} bytes left in the input", input.len());
        }
        result
    }

    /// Takes the output as it is (and says it was written).
    pub(crate) fn out_bytes(&mut self) -> Bytes {
        let bytes = self.conn.output().split().freeze();
        self.conn.written();
        bytes
    }

    /// Takes the output as raw frames.
    pub(crate) fn raw_out(&mut self) -> Vec<Raw> {
        split_frames(self.out_bytes())
    }

    /// Takes the output as decoded frames.
    pub(crate) fn out(&mut self) -> Vec<Out> {
        let raw = self.raw_out();
        decode_frames(raw, &mut self.decoder)
    }

    /// The next request, which must have come.
    pub(crate) fn accept(&mut self) -> Request {
        self.conn.accept().expect("a request to accept")
    }

    /// Takes what stream `id`'s body has now: pieces until it would wait,
    /// ended or failed.
    pub(crate) fn body(&mut self, id: u32) -> Vec<Piece> {
        let mut pieces = Vec::new();
        loop {
            match self.conn.poll_body(id, &mut noop()) {
                Poll::Pending => return pieces,
                Poll::Ready(None) => {
                    pieces.push(Piece::End);
                    return pieces;
                }
                Poll::Ready(Some(Err(e))) => {
                    pieces.push(Piece::Err(e));
                    return pieces;
                }
                Poll::Ready(Some(Ok(BodyItem::Data(data)))) => pieces.push(Piece::Data(data)),
                Poll::Ready(Some(Ok(BodyItem::Trailers(t)))) => pieces.push(Piece::Trailers(t)),
            }
        }
    }

    /// Queues `data` on stream `id` with a waker that does nothing.
    pub(crate) fn send_data(&mut self, id: u32, data: &mut Bytes, end: bool) -> Poll<Result<(), StreamError>> {
        self.conn.poll_send_data(id, data, end, &mut noop())
    }

    /// Sends a `200` head with no fields.
    pub(crate) fn respond(&mut self, id: u32, end: bool) {
        self.conn.send_response(id, 200, [], end).expect("the response head");
    }
}

/// The client's initial stream window, as a `SETTINGS` parameter.
pub(crate) fn initial_window(size: u32) -> (u16, u32) {
    (setting::INITIAL_WINDOW_SIZE, size)
}

// ---------------------------------------------------------------------------
// A waker that counts

#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Counter {
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A waker and its count of wakes.
pub(crate) fn counting() -> (Arc<Counter>, Waker) {
    let counter = Arc::new(Counter::default());
    (counter.clone(), Waker::from(counter))
}

/// A pattern of `len` bytes that makes misordering visible.
pub(crate) fn pattern(len: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(len);
    for i in 0..len {
        out.put_u8((i % 251) as u8);
    }
    out.freeze()
}
