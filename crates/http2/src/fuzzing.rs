//! Fuzz-target bodies, shared by `fuzz/` (cargo-fuzz) and the stable test
//! suite (`tests/fuzzing.rs`), so that `cargo test` runs the same checks.
//!
//! Each function takes arbitrary bytes and panics only if the codec breaks
//! one of its own invariants (a panic inside the codec is a finding too):
//!
//! - [`hpack`]: whatever header blocks decode re-encode (with [`Encoder`])
//!   into blocks that decode to the same fields; decoding is deterministic
//!   (a fresh decoder, or one whose scratch buffers were used, gives the same
//!   fields and error); Huffman coding round-trips, and a Huffman string
//!   that decodes is the canonical coding of what it decodes to.
//! - [`connection`]: a whole client connection, written in a small
//!   language of frames (see [`connection`]) and driven as the proxy drives
//!   it, with every byte nuncio sends parsed and checked: frame layouts and
//!   sizes, flow control against the windows the client granted, stream ids,
//!   `GOAWAY`, the response blocks and data the streams asked for, request
//!   bodies as the client sent them, and the same outcome when every read is
//!   split into small pieces.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

use crate::frame::{self, Head, flag, kind, setting};
use crate::hpack::huffman::{huffman_decode, huffman_encode, huffman_encoded_len};
use crate::hpack::{DecodeError, Decoder, Encoder};
use crate::{BodyItem, Config, Connection, Reason};

/// One decoded field.
type Field = (Vec<u8>, Vec<u8>);

/// Codec bugs the fuzzers found, not fixed yet (`fuzz/README.md` has each,
/// with its input in `fuzz/seeds/h2_connection/bug-<name>`). Their checks let
/// them pass, so that the fuzzers look past them and CI stays green; with
/// `NUNCIO_FUZZ_STRICT` set in the environment none is let pass (replay a
/// `bug-` seed so). Remove a name once its bug is fixed.
const KNOWN_BUGS: &[&str] = &[];

/// Whether the check that found `bug` lets it pass (see [`KNOWN_BUGS`]).
fn known_bug(bug: &str) -> bool {
    static STRICT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    KNOWN_BUGS.contains(&bug) && !*STRICT.get_or_init(|| std::env::var_os("NUNCIO_FUZZ_STRICT").is_some())
}

/// Appends `value` as an HPACK prefix integer (RFC 7541 §5.1).
fn put_int(value: usize, prefix_bits: u32, flags: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Appends a string literal, Huffman-coded or raw.
fn put_string(s: &[u8], huffman: bool, out: &mut Vec<u8>) {
    if huffman {
        let mut coded = BytesMut::new();
        huffman_encode(s, &mut coded);
        put_int(coded.len(), 7, 0x80, out);
        out.extend_from_slice(&coded);
    } else {
        put_int(s.len(), 7, 0, out);
        out.extend_from_slice(s);
    }
}

// ---------------------------------------------------------------------------
// HPACK
// ---------------------------------------------------------------------------

/// Splits the input into header blocks, each a length octet and that many
/// octets (the last one cut short where the input ends).
fn split_blocks(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut blocks = Vec::new();
    while let [len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        blocks.push(&tail[..n]);
        rest = &tail[n..];
    }
    blocks
}

/// What one block decoded to: the fields emitted, then the error if any.
type Decoded = (Vec<Field>, Result<(), DecodeError>);

/// Decodes the blocks in order with `decoder`, up to the first error (after
/// which the table no longer follows the encoder's).
fn decode_blocks(decoder: &mut Decoder, blocks: &[&[u8]]) -> Vec<Decoded> {
    let mut all = Vec::new();
    for block in blocks {
        let mut fields = Vec::new();
        let result = decoder.decode(block, |n, v| fields.push((n.to_vec(), v.to_vec())));
        let failed = result.is_err();
        all.push((fields, result));
        if failed {
            break;
        }
    }
    all
}

/// Huffman coding: the input round-trips, its coded length is what
/// `huffman_encoded_len` says, and a Huffman string that decodes is the
/// one coding of what it decodes to (padding is at most 7 one bits).
fn huffman_round_trip(input: &[u8]) {
    let mut coded = BytesMut::new();
    huffman_encode(input, &mut coded);
    assert_eq!(coded.len(), huffman_encoded_len(input), "huffman_encoded_len disagrees with huffman_encode");
    let mut decoded = Vec::new();
    huffman_decode(&coded, &mut decoded).unwrap_or_else(|e| panic!("Huffman coding of {input:02x?} fails: {e}"));
    assert_eq!(decoded, input, "Huffman round trip");
    let mut back = Vec::new();
    if huffman_decode(input, &mut back).is_ok() {
        let mut again = BytesMut::new();
        huffman_encode(&back, &mut again);
        assert_eq!(&again[..], input, "a Huffman string that decodes is not the coding of what it decodes to");
    }
}

/// HPACK. The first byte picks the decoder's table size (and the size the
/// re-encoding peer announces); the rest is header blocks, each a length
/// octet then the block (see `seeds/hpack/`), decoded on one connection.
pub fn hpack(data: &[u8]) {
    let [cfg, rest @ ..] = data else {
        return;
    };
    huffman_round_trip(rest);
    let sizes = [0, 32, 64, 100, 256, 1024, 4096, 65_536];
    let max = sizes[usize::from(cfg & 7)];
    let blocks = split_blocks(rest);

    let first = decode_blocks(&mut Decoder::new(max), &blocks);
    let second = decode_blocks(&mut Decoder::new(max), &blocks);
    assert_eq!(first, second, "the same blocks decode differently on two fresh decoders");
    // A decoder whose Huffman scratch buffers hold an earlier block's
    // strings (a literal without indexing leaves the table as it was).
    let mut warm = Decoder::new(max);
    let mut prelude = vec![0x00];
    put_string(rest.get(..rest.len().min(40)).unwrap_or_default(), true, &mut prelude);
    put_string(rest, true, &mut prelude);
    warm.decode(&prelude, |_, _| {}).expect("a literal without indexing decodes");
    let third = decode_blocks(&mut warm, &blocks);
    assert_eq!(first, third, "used scratch buffers change what decodes");

    // Re-encode what decoded (nuncio's encoder, as if relaying the fields)
    // and decode it on a decoder of its own: the same fields.
    let mut encoder = Encoder::new();
    let announced = sizes[usize::from((cfg >> 3) & 7)];
    if cfg & 0x40 != 0 {
        encoder.set_max_table_size(announced);
    }
    let mut decoder = Decoder::new(announced);
    for (fields, result) in &first {
        if result.is_err() {
            break;
        }
        let mut out = BytesMut::new();
        encoder.start_block(&mut out);
        for (name, value) in fields {
            encoder.encode_field(name, value, &mut out);
        }
        let again = decode_blocks(&mut decoder, &[&out]);
        assert_eq!(again, [(fields.clone(), Ok(()))], "re-encoded fields decode differently");
    }
    // A status, as a response head starts.
    let status =
        100 + u16::from_le_bytes([rest.first().copied().unwrap_or(0), rest.get(1).copied().unwrap_or(0)]) % 900;
    let mut out = BytesMut::new();
    encoder.start_block(&mut out);
    encoder.encode_status(status, &mut out);
    let again = decode_blocks(&mut decoder, &[&out]);
    assert_eq!(again, [(vec![(b":status".to_vec(), status.to_string().into_bytes())], Ok(()))]);
}

// ---------------------------------------------------------------------------
// Connection: the client's side, written from the fuzz input
// ---------------------------------------------------------------------------

/// The fuzz input, read an octet at a time (zeros once it is spent).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0 {
            [b, rest @ ..] => {
                self.0 = rest;
                *b
            }
            [] => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

/// What happens, in order: client bytes, reads, stream operations.
#[derive(Debug)]
enum Step {
    /// Bytes the client sends (not read yet).
    Bytes(Vec<u8>),
    /// A read of what the client sent, less the last `keep` bytes.
    Read { keep: usize },
    /// The proxy's side does something (after reading what came).
    Op { stream: u8, action: u8, arg: u8 },
}

/// A connection's whole script.
#[derive(Debug)]
struct Script {
    config: Config,
    /// Drain the output after every read (else only when an op says so).
    auto_drain: bool,
    /// Piece size for the second, split run.
    step: usize,
    steps: Vec<Step>,
}

/// The client's side as it writes frames: the streams it opened.
struct Writer {
    next_id: u32,
    opened: Vec<u32>,
    steps: Vec<Step>,
}

impl Writer {
    fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut out = Vec::with_capacity(frame::HEAD_LEN + payload.len());
        let len = payload.len().min((1 << 24) - 1);
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(&payload[..len]);
        self.bytes(out);
    }

    fn bytes(&mut self, bytes: Vec<u8>) {
        if let Some(Step::Bytes(last)) = self.steps.last_mut() {
            last.extend_from_slice(&bytes);
        } else {
            self.steps.push(Step::Bytes(bytes));
        }
    }

    /// A stream the client opened, by `sel`; the next new id if none.
    fn existing(&self, sel: u8) -> u32 {
        if self.opened.is_empty() { self.next_id } else { self.opened[usize::from(sel) % self.opened.len()] }
    }

    /// The stream a `HEADERS` goes on: a new one (ids sometimes skipped),
    /// an open one (trailers, or a reuse), or an even one.
    fn headers_stream(&mut self, sel: u8) -> u32 {
        match sel >> 6 {
            3 if !self.opened.is_empty() => self.existing(sel),
            2 if sel & 0x3f == 0x3f => self.next_id + 1,
            _ => {
                let id = self.next_id;
                self.next_id += 2 + 2 * u32::from(sel & 0x20 != 0);
                self.opened.push(id);
                id
            }
        }
    }
}

/// A request head's block, of the kind `k` picks.
fn request_block(k: u8, input: &mut Input<'_>, id: u32) -> Vec<u8> {
    let mut b = Vec::new();
    let huffman = k & 0x10 != 0;
    match k % 8 {
        // GET http://a/, the authority inserted into the table.
        0 => {
            b.extend_from_slice(&[0x82, 0x86, 0x84, 0x41]);
            put_string(b"a.test", huffman, &mut b);
        }
        // POST with a content-length, maybe te: trailers.
        1 => {
            b.extend_from_slice(&[0x83, 0x86, 0x84, 0x01]);
            put_string(b"a.test", huffman, &mut b);
            let n = input.byte();
            put_int(28, 4, 0, &mut b);
            put_string(n.to_string().as_bytes(), huffman, &mut b);
            if k & 0x20 != 0 {
                b.push(0x00);
                put_string(b"te", false, &mut b);
                put_string(b"trailers", huffman, &mut b);
            }
        }
        // CONNECT a.test:443
        2 => {
            put_int(2, 4, 0, &mut b);
            put_string(b"CONNECT", huffman, &mut b);
            put_int(1, 4, 0, &mut b);
            put_string(b"a.test:443", huffman, &mut b);
        }
        // Malformed, one way or another.
        3 => {
            let (name, value): (&[u8], &[u8]) = match input.byte() % 6 {
                0 => (b":path", b""),
                1 => (b"X-Upper", b"1"),
                2 => (b"connection", b"close"),
                3 => (b":status", b"200"),
                4 => (b"te", b"gzip"),
                _ => (b"content-length", b"x"),
            };
            b.extend_from_slice(&[0x82, 0x86]);
            if name != b":path" {
                b.push(0x84);
            }
            b.push(0x00);
            put_string(name, huffman, &mut b);
            put_string(value, huffman, &mut b);
        }
        // A large field (past small header list limits).
        4 => {
            b.extend_from_slice(&[0x82, 0x86, 0x84, 0x00]);
            put_string(b"x-big", huffman, &mut b);
            let len = usize::from(input.byte()) * 32;
            put_string(&vec![b'v'; len], huffman, &mut b);
        }
        // A field inserted into the table, then referenced (twice).
        5 => {
            b.extend_from_slice(&[0x82, 0x86, 0x84, 0x01]);
            put_string(b"a.test", huffman, &mut b);
            b.push(0x40);
            put_string(b"x-d", huffman, &mut b);
            put_string(id.to_string().as_bytes(), huffman, &mut b);
            b.extend_from_slice(&[0xbe, 0xbe]);
        }
        // GET whose authority is the table's newest entry (or none).
        6 => b.extend_from_slice(&[0x82, 0x86, 0x84, 0xbe]),
        // Whatever bytes follow.
        _ => {
            let n = usize::from(input.byte());
            b.extend_from_slice(input.bytes(n));
        }
    }
    b
}

/// Wraps a block fragment as a `HEADERS` payload: padding and a priority
/// as `f` says; returns the payload and flags.
fn headers_payload(block: &[u8], f: u8, id: u32) -> (Vec<u8>, u8) {
    let mut flags = if f & 1 != 0 { flag::END_STREAM } else { 0 };
    let mut payload = Vec::new();
    let pad = usize::from(f >> 6);
    if f & 2 != 0 {
        flags |= flag::PADDED;
        payload.push(pad as u8);
    }
    if f & 4 != 0 {
        flags |= flag::PRIORITY;
        let dependency = if f & 0x20 != 0 { id } else { 0 };
        payload.extend_from_slice(&dependency.to_be_bytes());
        payload.push(16);
    }
    payload.extend_from_slice(block);
    if f & 2 != 0 {
        payload.extend(std::iter::repeat_n(0, pad));
    }
    (payload, flags)
}

/// Reads the fuzz input as a script. After five configuration bytes
/// (connection limits, the client's `SETTINGS`, the read split), records,
/// each an opcode byte (`op % 16`) and its operands:
///
/// | op | record |
/// |----|--------|
/// | 0  | `HEADERS` opening a request: stream, kind, flags (+ operands of the kind) |
/// | 1  | `DATA`: stream, flags, length |
/// | 2  | `HEADERS` + `CONTINUATION`: as 0, the block split in two |
/// | 3  | `RST_STREAM`: stream, code |
/// | 4  | `WINDOW_UPDATE`: stream, two increment bytes (shifted by the stream byte) |
/// | 5  | `PING`: flags, 8 bytes |
/// | 6  | `SETTINGS`: count, then (id, 4-byte value) each |
/// | 7  | `SETTINGS` ack |
/// | 8  | `PRIORITY`: stream, dependency flag, length |
/// | 9  | `GOAWAY`: code |
/// | 10 | trailers (`HEADERS`): stream, flags |
/// | 11 | any frame: type, flags, stream, length, payload |
/// | 12 | raw bytes: length, bytes |
/// | 13 | a read, keeping back the last `n` bytes sent: n |
/// | 14 | a stream operation (after a read): stream, action, argument |
/// | 15 | `CONTINUATION`: stream, flags, length |
fn script(data: &[u8]) -> Option<Script> {
    let &[c0, c1, c2, c3, c4, ref rest @ ..] = data else {
        return None;
    };
    let config = Config {
        max_concurrent_streams: 1 + u32::from(c0 & 3),
        max_pending_accept_resets: usize::from((c0 >> 2) & 3),
        stream_window: [0, 1, 10, 100, 1000, 16_384, 65_535, 1 << 20][usize::from(c1 & 7)],
        connection_window: [2, 3, 100, 1000, 65_535, 100_000, 1 << 20, 4 << 20][usize::from((c1 >> 3) & 7)],
        max_header_list_size: [0, 40, 100, 200, 1000, 4096, 16_384, 65_536][usize::from(c2 & 7)],
        max_local_error_resets: usize::from((c2 >> 3) & 3),
        max_empty_data_frames: usize::from(c2 >> 5),
        max_decoded_ratio: [1, 2, 10, 500][usize::from(c3 & 3)],
        min_decoded_for_ratio: [0, 100, 1000, 1 << 20][usize::from((c3 >> 2) & 3)],
    };
    let mut params = Vec::new();
    let windows: [u32; 7] = [0, 1, 100, 16_384, 65_535, 1 << 20, (1 << 31) - 1];
    if let Some(&w) = windows.get(usize::from(c4 & 7)) {
        params.push((setting::INITIAL_WINDOW_SIZE, w));
    }
    if let Some(&size) = [16_384u32, 16_385, (1 << 24) - 1].get(usize::from((c4 >> 3) & 3)) {
        params.push((setting::MAX_FRAME_SIZE, size));
    }
    if let Some(&size) = [0u32, 100, 65_536].get(usize::from((c4 >> 5) & 3)) {
        params.push((setting::HEADER_TABLE_SIZE, size));
    }
    let mut w = Writer { next_id: 1, opened: Vec::new(), steps: Vec::new() };
    let mut preface = frame::PREFACE.to_vec();
    preface.extend_from_slice(&[0, 0, (params.len() * 6) as u8, kind::SETTINGS, 0, 0, 0, 0, 0]);
    for (id, value) in params {
        preface.extend_from_slice(&id.to_be_bytes());
        preface.extend_from_slice(&value.to_be_bytes());
    }
    w.bytes(preface);

    let mut input = Input(rest);
    while !input.0.is_empty() {
        let op = input.byte();
        match op % 16 {
            0 | 2 => {
                let (sel, k, f) = (input.byte(), input.byte(), input.byte());
                let id = w.headers_stream(sel);
                let block = request_block(k, &mut input, id);
                if op % 16 == 0 {
                    let (payload, flags) = headers_payload(&block, f, id);
                    w.frame(kind::HEADERS, flags | flag::END_HEADERS, id, &payload);
                } else {
                    let cut = usize::from(f >> 3).min(block.len());
                    let (payload, flags) = headers_payload(&block[..cut], f & 0x7, id);
                    w.frame(kind::HEADERS, flags, id, &payload);
                    w.frame(kind::CONTINUATION, 0, id, &[]);
                    w.frame(kind::CONTINUATION, flag::END_HEADERS, id, &block[cut..]);
                }
            }
            1 => {
                let (sel, f, l) = (input.byte(), input.byte(), input.byte());
                let id = if sel == 0xff { 0 } else { w.existing(sel) };
                let len = if f & 0x40 != 0 { usize::from(l) * 64 } else { usize::from(l) };
                let mut payload = Vec::with_capacity(len + 1);
                let mut flags = f & flag::END_STREAM;
                if f & 2 != 0 {
                    flags |= flag::PADDED;
                    let pad = f >> 4;
                    payload.push(pad);
                    payload.extend((0..len).map(|i| (i as u32 * 31 + id) as u8));
                    payload.extend(std::iter::repeat_n(0, usize::from(pad).min(len + 1)));
                } else {
                    payload.extend((0..len).map(|i| (i as u32 * 31 + id) as u8));
                }
                w.frame(kind::DATA, flags, id, &payload);
            }
            3 => {
                let (sel, code) = (input.byte(), input.byte());
                let id = w.existing(sel);
                w.frame(kind::RST_STREAM, 0, id, &u32::from(code).to_be_bytes());
            }
            4 => {
                let (sel, a, b) = (input.byte(), input.byte(), input.byte());
                let id = if sel & 1 != 0 { w.existing(sel >> 1) } else { 0 };
                let increment = u32::from_be_bytes([0, 0, a, b]).checked_shl(u32::from((sel >> 1) & 15)).unwrap_or(0);
                w.frame(kind::WINDOW_UPDATE, 0, id, &increment.to_be_bytes());
            }
            5 => {
                let f = input.byte();
                let payload = input.bytes(8).to_vec();
                w.frame(kind::PING, f & flag::ACK, 0, &payload);
            }
            6 => {
                let n = input.byte() % 4;
                let mut payload = Vec::new();
                for _ in 0..n {
                    let id = u16::from(input.byte() % 8);
                    payload.extend_from_slice(&id.to_be_bytes());
                    payload.extend_from_slice(&input.u32().to_be_bytes());
                }
                w.frame(kind::SETTINGS, 0, 0, &payload);
            }
            7 => w.frame(kind::SETTINGS, flag::ACK, 0, &[]),
            8 => {
                let (sel, f) = (input.byte(), input.byte());
                let id = if sel & 0x80 != 0 { w.next_id + 2 * u32::from(sel & 3) } else { w.existing(sel) };
                let dependency = if f & 1 != 0 { id } else { 0 };
                let mut payload = dependency.to_be_bytes().to_vec();
                payload.push(f);
                payload.truncate(if f & 2 != 0 { 4 } else { 5 });
                w.frame(kind::PRIORITY, 0, id, &payload);
            }
            9 => {
                let code = input.byte();
                let mut payload = w.opened.last().copied().unwrap_or(0).to_be_bytes().to_vec();
                payload.extend_from_slice(&u32::from(code).to_be_bytes());
                w.frame(kind::GOAWAY, 0, 0, &payload);
            }
            10 => {
                let (sel, f) = (input.byte(), input.byte());
                let id = w.existing(sel);
                let mut block = vec![0x00];
                put_string(if f & 4 != 0 { b":path" } else { b"x-trailer" }, f & 8 != 0, &mut block);
                put_string(b"1", false, &mut block);
                let flags = if f & 1 == 0 { flag::END_STREAM } else { 0 };
                w.frame(kind::HEADERS, flags | flag::END_HEADERS, id, &block);
            }
            11 => {
                let (k, f, id, len) = (input.byte(), input.byte(), input.byte(), input.byte());
                let payload = input.bytes(usize::from(len)).to_vec();
                w.frame(k, f, u32::from(id), &payload);
            }
            12 => {
                let len = input.byte();
                let bytes = input.bytes(usize::from(len)).to_vec();
                w.bytes(bytes);
            }
            13 => {
                let keep = usize::from(input.byte());
                w.steps.push(Step::Read { keep });
            }
            14 => {
                let (stream, action, arg) = (input.byte(), input.byte(), input.byte());
                w.steps.push(Step::Op { stream, action, arg });
            }
            _ => {
                let (sel, f, len) = (input.byte(), input.byte(), input.byte());
                let id = w.existing(sel);
                let payload = input.bytes(usize::from(len)).to_vec();
                w.frame(kind::CONTINUATION, f & flag::END_HEADERS, id, &payload);
            }
        }
    }
    Some(Script { config, auto_drain: c0 & 0x10 != 0, step: 1 + usize::from(c0 >> 5) * 5, steps: w.steps })
}

// ---------------------------------------------------------------------------
// Connection: what the client's frames granted and asked for
// ---------------------------------------------------------------------------

/// A stream as the client's frames (parsed independently of the codec)
/// made it.
#[derive(Debug, Default)]
struct ClientStream {
    /// What nuncio may still send on it.
    window: i64,
    /// The body sent (padding stripped), up to `END_STREAM`.
    body: Vec<u8>,
    ended: bool,
    /// `DATA` bytes sent on it, padding included (what nuncio may give back).
    flow: u64,
}

/// The client's frames, parsed as they are read, independently of the
/// codec: what they grant nuncio and what they ask of it.
#[derive(Debug)]
struct Client {
    buf: Vec<u8>,
    /// Preface bytes still to skip.
    preface: usize,
    /// A frame too large for nuncio: it stops reading there.
    stopped: bool,
    initial_window: i64,
    max_frame_size: usize,
    window: i64,
    streams: HashMap<u32, ClientStream>,
    /// The highest stream a `HEADERS` opened.
    max_opened: u32,
    /// A header block still open: stream, `END_STREAM`.
    block: Option<(u32, bool)>,
    pings: Vec<[u8; 8]>,
    settings: usize,
    /// `DATA` bytes sent on any stream, padding included.
    flow: u64,
    /// Idle streams a `PRIORITY` named.
    prioritized: Vec<u32>,
}

impl Client {
    fn new() -> Client {
        Client {
            buf: Vec::new(),
            preface: frame::PREFACE.len(),
            stopped: false,
            initial_window: i64::from(frame::DEFAULT_WINDOW),
            max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            window: i64::from(frame::DEFAULT_WINDOW),
            streams: HashMap::new(),
            max_opened: 0,
            block: None,
            pings: Vec::new(),
            settings: 0,
            flow: 0,
            prioritized: Vec::new(),
        }
    }

    fn read(&mut self, mut bytes: &[u8]) {
        let skip = self.preface.min(bytes.len());
        self.preface -= skip;
        bytes = &bytes[skip..];
        if self.stopped {
            return;
        }
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        while self.buf.len() - at >= frame::HEAD_LEN {
            let head = Head::parse(&self.buf[at..]);
            if head.len > frame::DEFAULT_MAX_FRAME_SIZE {
                self.stopped = true;
                break;
            }
            let end = at + frame::HEAD_LEN + head.len;
            if self.buf.len() < end {
                break;
            }
            let payload = self.buf[at + frame::HEAD_LEN..end].to_vec();
            self.frame(head, &payload);
            at = end;
        }
        self.buf.drain(..at);
    }

    fn frame(&mut self, head: Head, payload: &[u8]) {
        let id = head.stream;
        match head.kind {
            kind::HEADERS if id != 0 => {
                let end = head.has(flag::END_STREAM);
                if head.has(flag::END_HEADERS) {
                    self.header_block(id, end);
                } else {
                    self.block = Some((id, end));
                }
            }
            kind::CONTINUATION if head.has(flag::END_HEADERS) => {
                if let Some((id, end)) = self.block.take() {
                    self.header_block(id, end);
                }
            }
            kind::DATA if id != 0 => {
                self.flow += head.len as u64;
                let data = if head.has(flag::PADDED) {
                    match payload.split_first() {
                        Some((&pad, rest)) if usize::from(pad) <= rest.len() => &rest[..rest.len() - usize::from(pad)],
                        _ => return,
                    }
                } else {
                    payload
                };
                if let Some(stream) = self.streams.get_mut(&id) {
                    stream.flow += head.len as u64;
                    if !stream.ended {
                        stream.body.extend_from_slice(data);
                        stream.ended = head.has(flag::END_STREAM);
                    }
                }
            }
            kind::WINDOW_UPDATE if payload.len() == 4 => {
                let increment = i64::from(u32::from_be_bytes(payload.try_into().unwrap()) & 0x7fff_ffff);
                if id == 0 {
                    self.window += increment;
                } else if let Some(stream) = self.streams.get_mut(&id) {
                    stream.window += increment;
                }
            }
            kind::SETTINGS if id == 0 && !head.has(flag::ACK) && payload.len().is_multiple_of(6) => {
                for param in payload.chunks_exact(6) {
                    let value = u32::from_be_bytes([param[2], param[3], param[4], param[5]]);
                    match u16::from_be_bytes([param[0], param[1]]) {
                        setting::INITIAL_WINDOW_SIZE if i64::from(value) <= frame::MAX_WINDOW => {
                            let delta = i64::from(value) - self.initial_window;
                            self.initial_window = i64::from(value);
                            for stream in self.streams.values_mut() {
                                stream.window += delta;
                            }
                        }
                        setting::MAX_FRAME_SIZE if (16_384..1 << 24).contains(&value) => {
                            self.max_frame_size = value as usize;
                        }
                        _ => {}
                    }
                }
                self.settings += 1;
            }
            kind::PING if id == 0 && !head.has(flag::ACK) && payload.len() == 8 => {
                self.pings.push(payload.try_into().unwrap());
            }
            kind::PRIORITY if id > self.max_opened || id.is_multiple_of(2) => self.prioritized.push(id),
            _ => {}
        }
    }

    fn header_block(&mut self, id: u32, end: bool) {
        if id > self.max_opened {
            self.max_opened = id;
            let stream = ClientStream { window: self.initial_window, ended: end, ..ClientStream::default() };
            self.streams.insert(id, stream);
        } else if let Some(stream) = self.streams.get_mut(&id)
            && end
        {
            stream.ended = true;
        }
    }
}

// ---------------------------------------------------------------------------
// Connection: checking what nuncio sends
// ---------------------------------------------------------------------------

/// A stream as nuncio's frames and the proxy's calls made it.
#[derive(Debug, Default)]
struct SentStream {
    accepted: bool,
    /// Header blocks the proxy queued: fields, `END_STREAM`.
    blocks: VecDeque<(Vec<Field>, bool)>,
    /// Response data the proxy queued, not yet seen.
    data: VecDeque<u8>,
    /// The proxy's data ended the stream.
    data_end: bool,
    final_head: bool,
    ended: bool,
    reset: bool,
    updates: u64,
}

/// Parses nuncio's output as it grows and checks every frame.
struct Checker {
    buf: Vec<u8>,
    frames: usize,
    expected_settings: Vec<u8>,
    /// The connection window's first update (sent with the `SETTINGS`).
    initial_update: u64,
    decoder: Decoder,
    block: Option<(u32, bool, Vec<u8>)>,
    goaway: Option<u32>,
    /// A `GOAWAY` with an error went: nothing may follow.
    fatal: bool,
    last_kind: Option<u8>,
    streams: HashMap<u32, SentStream>,
    updates: u64,
    pings: usize,
    settings_acks: usize,
}

impl Checker {
    fn new(config: &Config) -> Checker {
        let mut settings = BytesMut::new();
        frame::put_settings(
            &mut settings,
            &[
                (setting::MAX_CONCURRENT_STREAMS, config.max_concurrent_streams),
                (setting::INITIAL_WINDOW_SIZE, config.stream_window),
                (setting::MAX_HEADER_LIST_SIZE, config.max_header_list_size),
            ],
        );
        Checker {
            buf: Vec::new(),
            frames: 0,
            expected_settings: settings[frame::HEAD_LEN..].to_vec(),
            initial_update: u64::from(config.connection_window.saturating_sub(frame::DEFAULT_WINDOW)),
            decoder: Decoder::new(4096),
            block: None,
            goaway: None,
            fatal: false,
            last_kind: None,
            streams: HashMap::new(),
            updates: 0,
            pings: 0,
            settings_acks: 0,
        }
    }

    fn stream(&mut self, id: u32) -> &mut SentStream {
        self.streams.entry(id).or_default()
    }

    fn feed(&mut self, bytes: &[u8], client: &mut Client) {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        while self.buf.len() - at >= frame::HEAD_LEN {
            let raw = &self.buf[at..];
            let head = Head::parse(raw);
            assert_eq!(raw[5] & 0x80, 0, "nuncio set the reserved bit of a stream id: {head:?}");
            let end = at + frame::HEAD_LEN + head.len;
            if self.buf.len() < end {
                break;
            }
            let payload = self.buf[at + frame::HEAD_LEN..end].to_vec();
            self.frame(head, &payload, client);
            at = end;
        }
        self.buf.drain(..at);
    }

    fn frame(&mut self, head: Head, payload: &[u8], client: &mut Client) {
        let id = head.stream;
        self.frames += 1;
        assert!(
            !self.fatal || (head.kind == kind::WINDOW_UPDATE && known_bug("window-update-after-goaway")),
            "{head:?} after a GOAWAY for an error"
        );
        if self.frames == 1 {
            assert!(
                head.kind == kind::SETTINGS && head.flags == 0 && id == 0 && payload == self.expected_settings,
                "nuncio's first frame is not its SETTINGS: {head:?} {payload:02x?}"
            );
            self.last_kind = Some(head.kind);
            return;
        }
        assert!(head.len <= client.max_frame_size, "{head:?} larger than the client's {}", client.max_frame_size);
        if let Some((block_id, ..)) = &self.block {
            assert!(head.kind == kind::CONTINUATION && id == *block_id, "{head:?} inside a header block");
        }
        if id != 0 {
            // Known bug: a malformed PRIORITY on an idle stream is answered
            // RST_STREAM, which RFC 9113 §6.4 forbids on an idle stream.
            let idle_priority = head.kind == kind::RST_STREAM && client.prioritized.contains(&id);
            assert!(
                (id % 2 == 1 && id <= client.max_opened) || (idle_priority && known_bug("rst-on-idle-stream")),
                "{head:?} on a stream the client did not open"
            );
        }
        if matches!(head.kind, kind::HEADERS | kind::DATA) {
            if let Some(last) = self.goaway {
                assert!(id <= last, "{head:?} after GOAWAY with last stream {last}");
            }
            let s = self.stream(id);
            assert!(!s.ended && !s.reset, "{head:?} on a stream nuncio ended or reset ({s:?})");
        }
        match head.kind {
            kind::DATA => self.data(head, payload, client),
            kind::HEADERS => {
                assert_eq!(head.flags & !(flag::END_STREAM | flag::END_HEADERS), 0, "{head:?}: flags");
                assert_ne!(id, 0, "HEADERS on stream 0");
                self.block = Some((id, head.has(flag::END_STREAM), payload.to_vec()));
                if head.has(flag::END_HEADERS) {
                    self.header_block();
                }
            }
            kind::CONTINUATION => {
                assert_eq!(head.flags & !flag::END_HEADERS, 0, "{head:?}: flags");
                let Some((_, _, block)) = &mut self.block else { panic!("CONTINUATION without a header block") };
                block.extend_from_slice(payload);
                if head.has(flag::END_HEADERS) {
                    self.header_block();
                }
            }
            kind::RST_STREAM => {
                assert!(head.len == 4 && id != 0 && head.flags == 0, "malformed RST_STREAM {head:?}");
                // (One on an idle stream, a known bug, leaves it idle.)
                let idle = client.prioritized.contains(&id) && known_bug("rst-on-idle-stream");
                if id <= client.max_opened && !idle {
                    self.stream(id).reset = true;
                }
            }
            kind::SETTINGS => {
                assert!(id == 0 && head.flags == flag::ACK && head.len == 0, "a second SETTINGS {head:?}");
                self.settings_acks += 1;
                assert!(self.settings_acks <= client.settings, "more SETTINGS acks than SETTINGS");
            }
            kind::PING => {
                assert!(id == 0 && head.flags == flag::ACK && head.len == 8, "malformed PING {head:?}");
                assert_eq!(client.pings.get(self.pings).map(|p| &p[..]), Some(payload), "a PING ack for no PING");
                self.pings += 1;
            }
            kind::GOAWAY => {
                assert!(id == 0 && head.len == 8 && head.flags == 0, "malformed GOAWAY {head:?}");
                let last = u32::from_be_bytes(payload[..4].try_into().unwrap());
                assert!(last <= client.max_opened, "GOAWAY with last stream {last}, never opened");
                if let Some(previous) = self.goaway {
                    assert!(
                        last <= previous || known_bug("goaway-last-stream-rises"),
                        "GOAWAY's last stream rose from {previous} to {last}"
                    );
                }
                self.goaway = Some(self.goaway.map_or(last, |previous| previous.min(last)));
                self.fatal = payload[4..8] != [0; 4];
            }
            kind::WINDOW_UPDATE => {
                assert!(head.len == 4 && head.flags == 0, "malformed WINDOW_UPDATE {head:?}");
                let increment = u32::from_be_bytes(payload.try_into().unwrap());
                assert!((1..=0x7fff_ffff).contains(&increment), "WINDOW_UPDATE of {increment:#x} on {id}");
                let increment = u64::from(increment);
                if id == 0 {
                    self.updates += increment;
                    assert!(
                        self.updates <= self.initial_update + client.flow,
                        "connection window reopened by {} (+{}) for {} bytes of DATA",
                        self.updates,
                        self.initial_update,
                        client.flow
                    );
                } else {
                    let flow = client.streams.get(&id).map_or(0, |s| s.flow);
                    let s = self.stream(id);
                    s.updates += increment;
                    assert!(s.updates <= flow, "stream {id} window reopened by {} for {flow} bytes", s.updates);
                }
            }
            _ => panic!("nuncio sent a frame it never should: {head:?}"),
        }
        self.last_kind = Some(head.kind);
    }

    fn data(&mut self, head: Head, payload: &[u8], client: &mut Client) {
        let id = head.stream;
        assert_eq!(head.flags & !flag::END_STREAM, 0, "{head:?}: flags");
        assert_ne!(id, 0, "DATA on stream 0");
        let len = payload.len() as i64;
        let granted = client.streams.get_mut(&id).expect("DATA on a stream the client opened");
        assert!(
            len <= granted.window && len <= client.window,
            "DATA of {len} on stream {id}: windows {} (stream), {} (connection)",
            granted.window,
            client.window
        );
        granted.window -= len;
        client.window -= len;
        let s = self.stream(id);
        assert!(s.final_head, "DATA on stream {id} before its response head");
        assert!(s.data.len() >= payload.len(), "DATA on stream {id} that nobody sent");
        assert!(s.data.drain(..payload.len()).eq(payload.iter().copied()), "DATA on stream {id} not as sent");
        if head.has(flag::END_STREAM) {
            assert!(s.data_end && s.data.is_empty(), "DATA ended stream {id} early");
            s.ended = true;
        }
    }

    fn header_block(&mut self) {
        let (id, end, block) = self.block.take().expect("a header block");
        let mut fields = Vec::new();
        self.decoder
            .decode(&block, |n, v| fields.push((n.to_vec(), v.to_vec())))
            .unwrap_or_else(|e| panic!("nuncio's header block on stream {id} does not decode: {e}"));
        let s = self.stream(id);
        match s.blocks.pop_front() {
            Some((expected, expected_end)) => {
                assert_eq!(fields, expected, "stream {id}'s header block");
                assert_eq!(end, expected_end, "stream {id}'s header block END_STREAM");
            }
            None => {
                // nuncio's own answer to a request head too large.
                assert!(!s.accepted, "a header block on stream {id} that nobody sent: {fields:?}");
                assert_eq!(fields, [(b":status".to_vec(), b"431".to_vec())], "stream {id}: unexpected block");
                assert!(end, "431 without END_STREAM");
            }
        }
        if fields.first().is_some_and(|(n, v)| n == b":status" && v[0] != b'1') {
            s.final_head = true;
        }
        s.ended |= end;
    }

    /// All output is in: no frame is cut short, no header block open.
    fn finish(&self) {
        assert!(self.buf.is_empty(), "output ends inside a frame: {:02x?}", self.buf);
        assert!(self.block.is_none(), "output ends inside a header block");
    }
}

// ---------------------------------------------------------------------------
// Connection: driving it
// ---------------------------------------------------------------------------

/// The proxy's side of an accepted stream.
#[derive(Debug, Default)]
struct Driven {
    content_length: Option<u64>,
    body: Vec<u8>,
    trailers: bool,
    body_ended: bool,
    /// 0: no response head yet, 1: head sent, 2: response ended (or gone).
    response: u8,
    /// Response data not yet taken by `poll_send_data`, and its `end`.
    pending: Option<(Bytes, bool)>,
}

/// One run of a script.
struct Run<'s> {
    script: &'s Script,
    /// Feed each read in pieces of this size.
    pieces: Option<usize>,
    conn: Connection,
    input: BytesMut,
    unread: Vec<u8>,
    fed: usize,
    client: Client,
    checker: Checker,
    /// Output bytes already checked.
    seen: usize,
    failed: bool,
    last_accepted: u32,
    streams: BTreeMap<u32, Driven>,
    /// What came out: output written, requests taken, stream results.
    transcript: Vec<u8>,
    requests: Vec<String>,
    log: Vec<String>,
}

/// Statuses a response may have (informational ones apart).
const STATUSES: [u16; 8] = [200, 204, 301, 304, 404, 431, 500, 599];

impl<'s> Run<'s> {
    fn new(script: &'s Script, pieces: Option<usize>) -> Run<'s> {
        Run {
            script,
            pieces,
            conn: Connection::new(script.config.clone()),
            input: BytesMut::new(),
            unread: Vec::new(),
            fed: 0,
            client: Client::new(),
            checker: Checker::new(&script.config),
            seen: 0,
            failed: false,
            last_accepted: 0,
            streams: BTreeMap::new(),
            transcript: Vec::new(),
            requests: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Checks the output queued since the last look, and the stream count.
    fn inspect(&mut self) {
        let out = self.conn.output();
        let new = out[self.seen..].to_vec();
        self.seen = out.len();
        self.checker.feed(&new, &mut self.client);
        let open = self.conn.open_streams();
        assert!(
            open <= self.script.config.max_concurrent_streams as usize,
            "{open} streams open, more than max_concurrent_streams {}",
            self.script.config.max_concurrent_streams
        );
    }

    fn drain(&mut self, n: usize) {
        let out = self.conn.output();
        let taken = out.split_to(n.min(out.len()));
        self.transcript.extend_from_slice(&taken);
        self.seen -= taken.len();
        self.conn.written();
    }

    /// Reads what the client sent, less its last `keep` bytes.
    fn read(&mut self, keep: usize) {
        let n = self.unread.len() - keep.min(self.unread.len());
        let bytes: Vec<u8> = self.unread.drain(..n).collect();
        let step = self.pieces.unwrap_or(usize::MAX).max(1);
        for piece in bytes.chunks(step) {
            self.recv(piece);
        }
        while let Some(request) = self.conn.accept() {
            let id = request.stream;
            assert!(id % 2 == 1 && id > self.last_accepted, "request on stream {id} after {}", self.last_accepted);
            assert!(self.client.streams.contains_key(&id), "request on stream {id}, which no HEADERS opened");
            self.last_accepted = id;
            self.checker.stream(id).accepted = true;
            self.requests.push(format!("{request:?}"));
            self.streams.insert(id, Driven { content_length: request.content_length, ..Driven::default() });
        }
        self.inspect();
        if self.script.auto_drain {
            self.drain(usize::MAX);
        }
    }

    fn recv(&mut self, piece: &[u8]) {
        self.input.extend_from_slice(piece);
        self.client.read(piece);
        self.fed += piece.len();
        let result = self.conn.recv(&mut self.input);
        self.inspect();
        match result {
            Err(e) => {
                assert!(!self.failed, "recv failed twice: {e}");
                self.failed = true;
                self.log.push(format!("recv: {e}"));
                assert!(
                    self.checker.last_kind == Some(kind::GOAWAY) && self.checker.buf.is_empty(),
                    "recv failed ({e}) and the output does not end with GOAWAY"
                );
                assert!(self.conn.is_done() && !self.conn.wants_read(), "a failed connection goes on");
            }
            Ok(()) if !self.failed && self.fed > frame::PREFACE.len() && self.input.len() >= frame::HEAD_LEN => {
                let head = Head::parse(&self.input);
                assert!(
                    self.input.len() < frame::HEAD_LEN + head.len,
                    "recv left a whole frame unread: {head:?}, {} bytes",
                    self.input.len()
                );
            }
            Ok(()) => {}
        }
    }

    /// Takes what `poll_body` gives once; whether to go on.
    fn poll_body(&mut self, id: u32) -> bool {
        let result = self.conn.poll_body(id, &mut Context::from_waker(Waker::noop()));
        let d = self.streams.get_mut(&id).expect("a driven stream");
        match result {
            Poll::Ready(Some(Ok(BodyItem::Data(data)))) => {
                assert!(!data.is_empty(), "an empty body piece on stream {id}");
                assert!(!d.trailers && !d.body_ended, "body data on stream {id} after its end");
                d.body.extend_from_slice(&data);
                true
            }
            Poll::Ready(Some(Ok(BodyItem::Trailers(trailers)))) => {
                assert!(!d.trailers && !d.body_ended, "trailers on stream {id} after its end");
                d.trailers = true;
                self.log.push(format!("{id} trailers {trailers:?}"));
                true
            }
            Poll::Ready(None) => {
                if !d.body_ended {
                    d.body_ended = true;
                    let sent = self.client.streams.get(&id).expect("an opened stream");
                    assert!(sent.ended, "stream {id}'s body ended before the client ended it");
                    assert!(d.body == sent.body, "stream {id}'s body is not what the client sent");
                    if let Some(n) = d.content_length {
                        assert_eq!(d.body.len() as u64, n, "stream {id}'s body against its content-length");
                    }
                    assert!(self.conn.body_ended(id), "poll_body ended, body_ended says no");
                    self.log.push(format!("{id} body {} bytes", d.body.len()));
                }
                false
            }
            Poll::Ready(Some(Err(e))) => {
                self.log.push(format!("{id} body: {e}"));
                false
            }
            Poll::Pending => false,
        }
    }

    fn send_response(&mut self, id: u32, status: u16, fields: &[(&[u8], &[u8])], end: bool) {
        let result = self.conn.send_response(id, status, fields.iter().copied(), end);
        self.log.push(format!("{id} response {status}: {result:?}"));
        let d = self.streams.get_mut(&id).expect("a driven stream");
        d.response = if end { 2 } else { 1 };
        if result.is_ok() {
            let mut block = vec![(b":status".to_vec(), status.to_string().into_bytes())];
            block.extend(fields.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec())));
            self.checker.stream(id).blocks.push_back((block, end));
        } else {
            d.response = 2;
        }
    }

    fn send_data(&mut self, id: u32, fresh: impl FnOnce() -> (Bytes, bool)) {
        let d = self.streams.get_mut(&id).expect("a driven stream");
        let (mut data, end) = d.pending.take().unwrap_or_else(fresh);
        let before = data.clone();
        let result = self.conn.poll_send_data(id, &mut data, end, &mut Context::from_waker(Waker::noop()));
        let sent = &before[..before.len() - data.len()];
        self.log.push(format!("{id} data {} of {} end {end}: {result:?}", sent.len(), before.len()));
        let s = self.checker.stream(id);
        s.data.extend(sent);
        let d = self.streams.get_mut(&id).expect("a driven stream");
        if end && data.is_empty() && result.is_ready() {
            s.data_end = true;
        }
        match result {
            Poll::Ready(Ok(())) => {
                assert!(data.is_empty(), "poll_send_data ready with data left");
                if end {
                    s.data_end = true;
                    d.response = 2;
                }
            }
            Poll::Ready(Err(e)) => {
                let all_sent = end && !before.is_empty() && data.is_empty();
                assert!(!all_sent, "stream {id}: all its data sent with END_STREAM, and {e}");
                d.response = 2;
            }
            Poll::Pending => d.pending = Some((data, end)),
        }
    }

    /// One stream operation, on the `sel`-th stream taken.
    fn op(&mut self, sel: u8, action: u8, arg: u8) {
        match action % 16 {
            13 => return self.drain(usize::MAX),
            14 => {
                let half = self.conn.output().len() / 2;
                return self.drain(half);
            }
            15 => {
                self.conn.go_away(Reason::NO_ERROR);
                self.log.push("go_away".into());
                return self.inspect();
            }
            _ => {}
        }
        let Some(&id) = self.streams.keys().nth(usize::from(sel) % self.streams.len().max(1)) else { return };
        let response = self.streams[&id].response;
        let idle = self.streams[&id].pending.is_none();
        match action % 16 {
            0 => {
                for _ in 0..64 {
                    if !self.poll_body(id) {
                        break;
                    }
                }
            }
            1 => {
                self.poll_body(id);
            }
            2 if response == 0 => {
                let result = self.conn.send_informational(id, 100);
                self.log.push(format!("{id} 100: {result:?}"));
                if result.is_ok() {
                    self.checker.stream(id).blocks.push_back((vec![(b":status".to_vec(), b"100".to_vec())], false));
                }
            }
            3 | 4 if response == 0 => {
                let status = STATUSES[usize::from(arg) % STATUSES.len()];
                let fields: &[(&[u8], &[u8])] = match arg >> 4 {
                    0 => &[],
                    1 => &[(b"content-type", b"text/plain")],
                    2 => &[(b"Server", b"nuncio"), (b"X-A", b"1"), (b"x-a", b"2")],
                    _ => &[(b"cache-control", b"private"), (b"content-length", b"5")],
                };
                self.send_response(id, status, fields, action % 16 == 4);
            }
            5 if response == 0 => {
                let value = vec![b'v'; usize::from(arg) * 256];
                let long_name = vec![b'N'; 70];
                self.send_response(id, 200, &[(b"x-big", &value), (&long_name, b"long name")], false);
            }
            6..=8 if response == 1 => {
                let len = if action % 16 == 8 { usize::from(arg) * 1024 } else { usize::from(arg) };
                let end = action % 16 == 7;
                self.send_data(id, || (Bytes::from_iter((0..len).map(|i| (i * 7 + id as usize) as u8)), end));
            }
            9 if response == 1 && idle => {
                let fields: [(&[u8], &[u8]); 2] = [(b"x-sum", b"abc"), (b"X-Trailer", b"")];
                let result = self.conn.send_trailers(id, fields.iter().copied());
                self.log.push(format!("{id} trailers: {result:?}"));
                if result.is_ok() {
                    let block = fields.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec())).collect();
                    self.checker.stream(id).blocks.push_back((block, true));
                }
                self.streams.get_mut(&id).expect("a driven stream").response = 2;
            }
            10 => {
                self.conn.reset(id, Reason(u32::from(arg % 14)));
                self.log.push(format!("{id} reset"));
            }
            11 => {
                self.conn.release(id);
                self.streams.remove(&id);
                self.log.push(format!("{id} released"));
            }
            12 => {
                let ready = self.conn.poll_reset(id, &mut Context::from_waker(Waker::noop()));
                assert_eq!(ready.is_ready(), self.conn.is_reset(id), "poll_reset and is_reset disagree on {id}");
                self.log.push(format!("{id} poll_reset {ready:?} by peer {}", self.conn.reset_by_peer(id)));
            }
            _ => {}
        }
        self.inspect();
    }

    fn play(mut self) -> Run<'s> {
        for step in &self.script.steps {
            match step {
                Step::Bytes(bytes) => self.unread.extend_from_slice(bytes),
                Step::Read { keep } => self.read(*keep),
                Step::Op { stream, action, arg } => {
                    self.read(0);
                    self.op(*stream, *action, *arg);
                }
            }
        }
        self.read(0);
        // Every stream still driven: its body taken, a response (or the
        // rest of it) sent, the stream released.
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            while self.poll_body(id) {}
            match self.streams[&id].response {
                0 => {
                    self.send_response(id, 200, &[], false);
                    self.send_data(id, || (Bytes::from_static(b"done"), true));
                }
                1 => self.send_data(id, || (Bytes::from_static(b"done"), true)),
                _ => {}
            }
            self.conn.release(id);
            self.streams.remove(&id);
            self.inspect();
        }
        self.drain(usize::MAX);
        self.checker.finish();
        self
    }
}

/// A whole client connection, driven as the proxy's HTTP/2 downstream
/// drives one, with every frame nuncio sends checked.
///
/// The input is a script (see the table in this function's source, at
/// `fn script`): five configuration bytes (small windows and limits, so
/// the limit paths run; the client's first `SETTINGS`; how output is
/// drained), then records that write the client's frames (requests, body
/// data, trailers, resets, window updates, pings, settings, any frame, raw
/// bytes), reads at chosen points (frames cut anywhere), and the proxy's
/// operations between reads on the streams it took: `poll_body`,
/// `send_informational`, `send_response`, `poll_send_data`,
/// `send_trailers`, `reset`, `release`, `poll_reset`, draining the output
/// in full or in part, `go_away`. After the script every stream left is
/// read, answered and released.
///
/// Invariants: no panic; the output is a sequence of well-formed frames
/// (nuncio's `SETTINGS` first, no frame larger than the client's
/// `SETTINGS_MAX_FRAME_SIZE`, known layouts, header blocks uninterrupted
/// and decodable, to the blocks the proxy sent or nuncio's own 431), on
/// streams the client opened, none after a `GOAWAY` for an error and no
/// response past a `GOAWAY`'s last stream (whose id never rises); after
/// `recv` fails the output ends with `GOAWAY`; `recv` leaves no whole
/// frame unread; `DATA` never exceeds what the client's windows allow and
/// carries the bytes the proxy sent; nuncio reopens no more window than
/// the client used; `PING` and `SETTINGS` acknowledgements answer the
/// client's; a request body that ends is the bytes the client sent (and
/// its content-length); `open_streams()` stays within
/// `max_concurrent_streams`. And the same script with every read fed in
/// small pieces gives the same output, requests and stream results.
pub fn connection(data: &[u8]) {
    let Some(script) = script(data) else {
        return;
    };
    let whole = Run::new(&script, None).play();
    let split = Run::new(&script, Some(script.step)).play();
    assert_eq!(whole.requests, split.requests, "requests differ when the reads are split");
    assert_eq!(whole.log, split.log, "stream results differ when the reads are split");
    if whole.transcript != split.transcript {
        let at = whole.transcript.iter().zip(&split.transcript).position(|(a, b)| a != b);
        panic!(
            "output differs when the reads are split: {} vs {} bytes, first difference at {at:?}",
            whole.transcript.len(),
            split.transcript.len()
        );
    }
}
