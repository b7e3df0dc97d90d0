//! Frame layout (RFC 9113 §4, §6): the 9-byte frame head, the frame types
//! and flags, and the encoders for the frames a server sends.

use bytes::{BufMut, BytesMut};

use crate::Reason;

/// What a client sends first (RFC 9113 §3.4), before its `SETTINGS`.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of a frame head.
pub const HEAD_LEN: usize = 9;
/// The smallest `SETTINGS_MAX_FRAME_SIZE` and the default (RFC 9113 §6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16_384;
/// The window size every stream and the connection start with.
pub const DEFAULT_WINDOW: u32 = 65_535;
/// The largest window (2^31 - 1).
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

/// Frame types.
pub mod kind {
    /// `DATA`.
    pub const DATA: u8 = 0x0;
    /// `HEADERS`.
    pub const HEADERS: u8 = 0x1;
    /// `PRIORITY` (deprecated; checked and ignored).
    pub const PRIORITY: u8 = 0x2;
    /// `RST_STREAM`.
    pub const RST_STREAM: u8 = 0x3;
    /// `SETTINGS`.
    pub const SETTINGS: u8 = 0x4;
    /// `PUSH_PROMISE` (never from a client).
    pub const PUSH_PROMISE: u8 = 0x5;
    /// `PING`.
    pub const PING: u8 = 0x6;
    /// `GOAWAY`.
    pub const GOAWAY: u8 = 0x7;
    /// `WINDOW_UPDATE`.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// `CONTINUATION`.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    /// `END_STREAM` (`DATA`, `HEADERS`).
    pub const END_STREAM: u8 = 0x1;
    /// `ACK` (`SETTINGS`, `PING`).
    pub const ACK: u8 = 0x1;
    /// `END_HEADERS` (`HEADERS`, `CONTINUATION`).
    pub const END_HEADERS: u8 = 0x4;
    /// `PADDED` (`DATA`, `HEADERS`).
    pub const PADDED: u8 = 0x8;
    /// `PRIORITY` (`HEADERS`).
    pub const PRIORITY: u8 = 0x20;
}

/// `SETTINGS` parameters.
pub mod setting {
    /// `SETTINGS_HEADER_TABLE_SIZE`.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// `SETTINGS_ENABLE_PUSH`.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// `SETTINGS_INITIAL_WINDOW_SIZE`.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// `SETTINGS_MAX_FRAME_SIZE`.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// A frame head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Payload length.
    pub len: usize,
    /// Frame type ([`kind`]).
    pub kind: u8,
    /// Flags ([`flag`]).
    pub flags: u8,
    /// Stream identifier (the reserved bit cleared).
    pub stream: u32,
}

impl Head {
    /// Reads a head from the first [`HEAD_LEN`] bytes of `b`.
    ///
    /// # Panics
    /// If `b` is shorter than [`HEAD_LEN`].
    pub fn parse(b: &[u8]) -> Head {
        Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Appends a frame head.
pub fn put_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24);
    let len = len as u32;
    out.put_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.put_u32(stream);
}

/// Writes a frame head over the 9 bytes at `at` (reserved earlier, its
/// length known once the payload was written).
pub(crate) fn patch_head(out: &mut BytesMut, at: usize, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = len as u32;
    let s = stream.to_be_bytes();
    out[at..at + HEAD_LEN].copy_from_slice(&[
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        kind,
        flags,
        s[0],
        s[1],
        s[2],
        s[3],
    ]);
}

/// Appends `SETTINGS` with `params`.
pub fn put_settings(out: &mut BytesMut, params: &[(u16, u32)]) {
    put_head(out, params.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, value) in params {
        out.put_u16(id);
        out.put_u32(value);
    }
}

/// Appends `WINDOW_UPDATE`.
pub fn put_window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    put_head(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.put_u32(increment);
}

/// Appends `RST_STREAM`.
pub fn put_reset(out: &mut BytesMut, stream: u32, reason: Reason) {
    put_head(out, 4, kind::RST_STREAM, 0, stream);
    out.put_u32(reason.0);
}

/// Appends `GOAWAY` (no debug data).
pub fn put_goaway(out: &mut BytesMut, last_stream: u32, reason: Reason) {
    put_head(out, 8, kind::GOAWAY, 0, 0);
    out.put_u32(last_stream);
    out.put_u32(reason.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_reads_back_as_written_and_the_reserved_bit_is_dropped() {
        let mut out = BytesMut::new();
        put_head(&mut out, 0x01_02_03, kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 0x8000_0005);
        let head = Head::parse(&out);
        assert_eq!(head, Head { len: 0x01_02_03, kind: kind::HEADERS, flags: 0x5, stream: 5 });
        assert!(head.has(flag::END_STREAM));
        assert!(!head.has(flag::PADDED));
        let mut patched = BytesMut::from(&[0u8; 12][..]);
        patch_head(&mut patched, 3, 7, kind::DATA, 1, 9);
        assert_eq!(Head::parse(&patched[3..]), Head { len: 7, kind: kind::DATA, flags: 1, stream: 9 });
    }

    #[test]
    fn control_frames_have_their_fixed_layouts() {
        let mut out = BytesMut::new();
        put_settings(&mut out, &[(setting::MAX_CONCURRENT_STREAMS, 128)]);
        assert_eq!(&out[..], &[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 128]);
        out.clear();
        put_window_update(&mut out, 3, 1000);
        assert_eq!(&out[..], &[0, 0, 4, 8, 0, 0, 0, 0, 3, 0, 0, 3, 232]);
        out.clear();
        put_reset(&mut out, 1, Reason::CANCEL);
        assert_eq!(&out[..], &[0, 0, 4, 3, 0, 0, 0, 0, 1, 0, 0, 0, 8]);
        out.clear();
        put_goaway(&mut out, 7, Reason::ENHANCE_YOUR_CALM);
        assert_eq!(&out[..], &[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 11]);
    }
}
