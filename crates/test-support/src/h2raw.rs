//! A raw HTTP/2 client for the tests that need to misbehave: frames written
//! byte by byte (the `h2` crate will not send a flood or a bad frame), and
//! frames read back to see what nuncio answered (a `GOAWAY`, resets).
//!
//! Blocking, on a `std::net::TcpStream`; header blocks are HPACK-encoded by
//! hand ([`Hpack`]) with the few representations the tests need.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The frame types the tests use (RFC 9113 §6).
pub mod frame {
    /// `DATA`
    pub const DATA: u8 = 0x0;
    /// `HEADERS`
    pub const HEADERS: u8 = 0x1;
    /// `RST_STREAM`
    pub const RST_STREAM: u8 = 0x3;
    /// `SETTINGS`
    pub const SETTINGS: u8 = 0x4;
    /// `PING`
    pub const PING: u8 = 0x6;
    /// `GOAWAY`
    pub const GOAWAY: u8 = 0x7;
    /// `WINDOW_UPDATE`
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// `CONTINUATION`
    pub const CONTINUATION: u8 = 0x9;
    /// Flag `END_STREAM`.
    pub const END_STREAM: u8 = 0x1;
    /// Flag `END_HEADERS`.
    pub const END_HEADERS: u8 = 0x4;
    /// Flag `ACK`.
    pub const ACK: u8 = 0x1;
}

/// A frame as read from nuncio.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Its type.
    pub kind: u8,
    /// Its flags.
    pub flags: u8,
    /// Its stream.
    pub stream: u32,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A `GOAWAY`'s error code.
    pub fn goaway_code(&self) -> Option<u32> {
        (self.kind == frame::GOAWAY && self.payload.len() >= 8)
            .then(|| u32::from_be_bytes(self.payload[4..8].try_into().expect("four bytes")))
    }
}

/// How a raw connection ended, as far as reading it told.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every frame read.
    pub frames: Vec<Frame>,
    /// The connection closed (or was reset) while reading.
    pub closed: bool,
}

impl Seen {
    /// The first `GOAWAY`, if any.
    pub fn goaway(&self) -> Option<&Frame> {
        self.frames.iter().find(|f| f.kind == frame::GOAWAY)
    }

    /// Streams nuncio reset.
    pub fn resets(&self) -> usize {
        self.frames.iter().filter(|f| f.kind == frame::RST_STREAM).count()
    }

    /// Streams nuncio answered with a response head (`HEADERS` frames).
    pub fn heads(&self) -> usize {
        self.frames.iter().filter(|f| f.kind == frame::HEADERS).count()
    }
}

/// A raw HTTP/2 (h2c, prior knowledge) connection to nuncio.
pub struct RawH2 {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawH2 {
    /// Connects and sends the preface and an empty `SETTINGS`.
    pub fn connect(addr: SocketAddr) -> RawH2 {
        let stream = TcpStream::connect(addr).expect("connect to nuncio");
        let mut raw = RawH2 { stream, buf: Vec::new() };
        raw.send_bytes(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        raw.send_frame(frame::SETTINGS, 0, 0, &[]);
        raw
    }

    /// Writes bytes as they are; `false` when nuncio no longer takes them.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// A frame's bytes.
    pub fn encode(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("a frame payload under 16 MiB");
        let mut out = Vec::with_capacity(9 + payload.len());
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Writes one frame; `false` when nuncio no longer takes bytes.
    pub fn send_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> bool {
        self.send_bytes(&RawH2::encode(kind, flags, stream, payload))
    }

    /// Reads frames for `wait` at most (or until the connection closes),
    /// acknowledging nothing.
    pub fn read_for(&mut self, wait: Duration) -> Seen {
        let mut seen = Seen::default();
        let until = Instant::now() + wait;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            while let Some(frame) = self.next_buffered() {
                seen.frames.push(frame);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return seen;
            }
            self.stream.set_read_timeout(Some(left)).expect("a read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    seen.closed = true;
                    while let Some(frame) = self.next_buffered() {
                        seen.frames.push(frame);
                    }
                    return seen;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return seen;
                }
                Err(_) => {
                    seen.closed = true;
                    return seen;
                }
            }
        }
    }

    /// Reads until a `GOAWAY` arrives or the connection closes (at most
    /// `wait`).
    pub fn read_until_goaway(&mut self, wait: Duration) -> Seen {
        let until = Instant::now() + wait;
        let mut all = Seen::default();
        while Instant::now() < until {
            let seen = self.read_for(Duration::from_millis(100).min(until.saturating_duration_since(Instant::now())));
            all.frames.extend(seen.frames);
            if seen.closed || all.goaway().is_some() {
                all.closed |= seen.closed;
                return all;
            }
        }
        all
    }

    fn next_buffered(&mut self) -> Option<Frame> {
        if self.buf.len() < 9 {
            return None;
        }
        let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
        if self.buf.len() < 9 + len {
            return None;
        }
        let head: Vec<u8> = self.buf.drain(..9 + len).collect();
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes(head[5..9].try_into().expect("four bytes")) & 0x7fff_ffff,
            payload: head[9..].to_vec(),
        })
    }
}

/// A header block, HPACK-encoded by hand (RFC 7541) with what the tests
/// need: static-table references, literals with or without indexing, and
/// references to the dynamic table.
#[derive(Debug, Default, Clone)]
pub struct Hpack(pub Vec<u8>);

impl Hpack {
    /// `:method: GET`, `:scheme: http`, `:path: /`, `:authority: t` — a
    /// plain request's pseudo-fields.
    pub fn get() -> Hpack {
        let mut block = Hpack::default();
        block.indexed(2).indexed(6).indexed(4).literal_indexed_name(1, b"t");
        block
    }

    /// A field from the static table (1-61) or the dynamic table (62 up).
    pub fn indexed(&mut self, index: usize) -> &mut Hpack {
        self.integer(0x80, 7, index);
        self
    }

    /// A literal field whose name is the static table's `index`, not
    /// indexed.
    pub fn literal_indexed_name(&mut self, index: usize, value: &[u8]) -> &mut Hpack {
        self.integer(0x00, 4, index);
        self.string(value);
        self
    }

    /// A literal field with a new name, added to the dynamic table
    /// (incremental indexing): later blocks may reference it as 62.
    pub fn literal_add(&mut self, name: &[u8], value: &[u8]) -> &mut Hpack {
        self.0.push(0x40);
        self.string(name);
        self.string(value);
        self
    }

    /// A literal field with a new name, not indexed.
    pub fn literal(&mut self, name: &[u8], value: &[u8]) -> &mut Hpack {
        self.0.push(0x00);
        self.string(name);
        self.string(value);
        self
    }

    fn string(&mut self, text: &[u8]) {
        self.integer(0x00, 7, text.len());
        self.0.extend_from_slice(text);
    }

    /// An integer with an `n`-bit prefix after `first`'s high bits.
    fn integer(&mut self, first: u8, n: u32, mut value: usize) {
        let max = (1usize << n) - 1;
        if value < max {
            self.0.push(first | u8::try_from(value).expect("under the prefix"));
            return;
        }
        self.0.push(first | u8::try_from(max).expect("a prefix fits a byte"));
        value -= max;
        while value >= 128 {
            self.0.push(u8::try_from(value % 128).expect("7 bits") | 0x80);
            value /= 128;
        }
        self.0.push(u8::try_from(value).expect("7 bits"));
    }
}
