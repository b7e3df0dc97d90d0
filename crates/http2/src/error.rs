//! HTTP/2 error codes (RFC 9113 §7) and the crate's error type.

use std::fmt;

/// An HTTP/2 error code, as carried by `RST_STREAM` and `GOAWAY`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reason(pub u32);

impl Reason {
    /// Graceful shutdown, or a stream closed with nothing wrong.
    pub const NO_ERROR: Reason = Reason(0x0);
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    /// Something went wrong on this side.
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    /// The peer sent more than its window allowed.
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    /// A frame came for a stream already closed.
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    /// A frame of the wrong size.
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    /// The stream was not processed (the client may retry it).
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    /// The stream is no longer needed.
    pub const CANCEL: Reason = Reason(0x8);
    /// The header compression state cannot be kept.
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    /// The peer behaves in a way that looks like abuse.
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);

    /// The code's name in RFC 9113, or `UNKNOWN`.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => "UNKNOWN",
        }
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:#x})", self.name(), self.0)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a connection ended with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The peer broke the protocol, or abused it: `GOAWAY` with `reason`
    /// has been queued for it.
    #[error("HTTP/2 connection error {reason}: {why}")]
    Connection {
        /// The code sent in `GOAWAY`.
        reason: Reason,
        /// What the peer did.
        why: &'static str,
    },
    /// The client did not start with the HTTP/2 connection preface.
    #[error("the client did not send the HTTP/2 connection preface")]
    Preface,
}

/// Why a stream operation could not be done: the stream is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The stream was reset (by the client, by nuncio, or because the
    /// connection ended), with this code.
    #[error("the HTTP/2 stream was reset ({0})")]
    Reset(Reason),
    /// The stream is closed, or was never open.
    #[error("the HTTP/2 stream is closed")]
    Closed,
}
