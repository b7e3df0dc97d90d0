//! nuncio's HTTP/1.1 codec: request and response heads, body framing and
//! chunked bodies, decoded from and encoded into byte buffers.
//!
//! **Sans I/O.** The crate owns no socket, spawns nothing and has no async:
//! the proxy's connection code reads into a [`bytes::BytesMut`] it reuses,
//! hands it to a decoder, and writes what the encoders put in its output
//! buffer (vectored, with body data passed through untouched). So there is
//! no threading rule: everything is a pure function or per-connection
//! decoder state (`Send`, no locks, no shared state), used by the one
//! worker that owns the connection. The one exception is [`field_maps`], a
//! per-thread pool of emptied header maps the decoders reuse: a thread's
//! own, so still nothing shared between workers.
//!
//! Heads use the `http` crate's types ([`http::Method`], [`http::Uri`],
//! [`http::HeaderMap`]...) so that HTTP/2 (the `h2` crate) and filters see
//! the same types. A decoded head is split off the read buffer and frozen;
//! header values are slices of it, not copies.
//!
//! **Strict, on purpose.** Anything that two HTTP implementations could
//! frame differently (request smuggling) is an error with the status the
//! proxy should answer ([`Error::status`]); the decisions are listed below.
//!
//! # How the proxy uses it
//!
//! Downstream: [`RequestDecoder::decode`] until it returns a [`Request`]
//! (headers event for the filter chain), then a [`BodyDecoder`] built from
//! [`Request::framing`] yields [`BodyEvent`]s (body / trailers events) until
//! `End`; then the next pipelined request. Upstream: [`encode_request_head`]
//! plus [`encode_chunk_size`] / [`CRLF`] / [`encode_last_chunk`] around the
//! body chunks, then [`ResponseDecoder::decode`] and a [`BodyDecoder`] for
//! the response, and [`encode_response_head`] back to the client.
//!
//! ```
//! use bytes::BytesMut;
//! use nuncio_http1::{BodyDecoder, BodyEvent, BodyFraming, Limits, RequestDecoder};
//!
//! let limits = Limits::default();
//! let mut decoder = RequestDecoder::new(limits);
//! let mut buf = BytesMut::from(&b"POST /upload HTTP/1.1\r\nHost: example.com\r\n"[..]);
//! assert!(decoder.decode(&mut buf)?.is_none()); // incomplete: read more
//!
//! buf.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
//! let request = decoder.decode(&mut buf)?.expect("complete head");
//! assert_eq!(request.uri, "/upload");
//! assert_eq!(request.authority.as_ref().map(|a| a.as_str()), Some("example.com"));
//! assert_eq!(request.framing, BodyFraming::Chunked);
//! assert!(request.keep_alive);
//!
//! let mut body = BodyDecoder::new(request.framing, limits);
//! assert_eq!(body.decode(&mut buf)?, Some(BodyEvent::Data("hello".into())));
//! assert_eq!(body.decode(&mut buf)?, Some(BodyEvent::End));
//! assert!(buf.is_empty());
//!
//! // Forward it: head and chunk-size line in one buffer, data not copied.
//! let mut out = BytesMut::new();
//! nuncio_http1::encode_request_head(
//!     &request.method,
//!     &request.uri,
//!     &request.headers,
//!     BodyFraming::Chunked,
//!     &mut out,
//! );
//! assert!(out.starts_with(b"POST /upload HTTP/1.1\r\nhost: example.com\r\n"));
//! # Ok::<(), nuncio_http1::Error>(())
//! ```
//!
//! # Strictness decisions (RFC 9110 / 9112)
//!
//! Heads:
//! - Head over `max_head_bytes` → 431, also while still incomplete; more
//!   than `max_headers` fields → 431.
//! - Malformed start line or field (anything httparse rejects: bare CR,
//!   control bytes, non-token names, extra spaces in the request line) →
//!   400; obs-fold and whitespace before the colon → 400 with their own
//!   variants (also in responses, which httparse could tolerate).
//! - `HTTP/x.y` other than 1.0 / 1.1 → 505.
//! - A bare LF as line terminator in a *head* is accepted (RFC 9112 §2.2
//!   MAY): the head is re-encoded with CRLF, so no other hop ever parses
//!   those bytes. Empty lines before the start line are skipped.
//! - Request-target: origin-form; absolute-form only `http`/`https`, no
//!   userinfo; authority-form only for CONNECT and with a port; `*` only for
//!   OPTIONS; no `#`, no non-ASCII → 400.
//! - Host: missing on HTTP/1.1 → 400 (even with an absolute-form target);
//!   more than one Host line → 400 (even if identical); a value that is not
//!   `host[:port]` (userinfo, bad port) → 400; empty is allowed and means no
//!   authority. With an absolute-form target the target's authority wins
//!   (RFC 9112 §3.2.2) and the Host field is rewritten to it, so filters and
//!   upstream see one host.
//!
//! Framing:
//! - Content-Length must be `1*DIGIT` fitting a u64 (`+5`, `-1`, `0x5`,
//!   `5 5`, empty, overflow → 400). Repeated lines or a list with *equal*
//!   values (`5, 5`, leading zeros compared numerically) are merged (RFC
//!   9110 §8.6); different values → 400.
//! - Content-Length together with Transfer-Encoding → 400 (requests and
//!   responses, though RFC 9112 lets a response's TE win).
//! - Transfer-Encoding: `chunked` (case-insensitive, no parameters) must be
//!   the last coding, else 400; `chunked` twice → 400; empty list elements
//!   → 400; any other coding before `chunked` (`gzip, chunked`) → 501 like
//!   Envoy and nginx, since a proxy would have to forward codings it cannot
//!   check; any Transfer-Encoding in an HTTP/1.0 message → 400.
//! - Responses: no body for 1xx, 204, 304 and HEAD (framing fields still
//!   validated); a 2xx to CONNECT is a tunnel and its framing fields are
//!   ignored; no length and no chunked → read until close (never reuse).
//! - Requests never read until close: no length, no chunked → no body.
//!
//! Chunked bodies: chunk size `1*HEXDIG`, at most 16 digits (leading zeros
//! included); only `BWS ;` may follow the digits; extensions are dropped,
//! must not contain control characters and count (all chunks together)
//! against `max_chunk_ext_bytes`; CRLF is required after the size line, the
//! data and each trailer line — a bare LF there is an error (a classic
//! smuggling vector, and there is no reason to be lenient inside a body).
//! Trailers are bounded like heads and `Content-Length` / `Transfer-Encoding`
//! are never encoded as trailers.
//!
//! Encoding writes framing only from the [`BodyFraming`] argument, so the
//! next hop sees exactly one well-formed framing field whatever filters did
//! to the header map. Field names are written lowercase, except by
//! [`encode_raw_response_head`]: a response head relayed as received
//! ([`ResponseDecoder::decode_raw`], [`RawFields`]) keeps the upstream's
//! bytes, names in its case, as nginx relays them (HTTP field names are
//! case-insensitive; httparse has checked each name and value already).
#![forbid(unsafe_code)]

mod body;
mod chunked;
mod encode;
mod error;
pub mod field_maps;
mod framing;
mod head;
mod hosts;
mod names;
mod raw_fields;
mod request;
mod response;

pub mod fuzzing;

pub use body::{BodyDecoder, BodyEvent};
pub use chunked::ChunkedDecoder;
pub use encode::{
    CRLF, ChunkSizeLine, LAST_CHUNK, encode_chunk_size, encode_last_chunk, encode_raw_request_head,
    encode_raw_response_head, encode_request_head, encode_response_head,
};
pub use error::Error;
pub use framing::{BodyFraming, HOP_BY_HOP, connection_tokens, remove_hop_by_hop};
pub use raw_fields::RawFields;
pub use request::{Request, RequestDecoder, decode_request};
pub use response::{Response, ResponseDecoder, decode_response};

/// Size limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest head (start line, fields and the empty line) accepted, and
    /// the longest trailer section. Default 60 KiB.
    pub max_head_bytes: usize,
    /// Most header fields in a head, and most trailer fields. Default 100.
    pub max_headers: usize,
    /// Most chunk-extension bytes in one chunked body, all chunks together
    /// (they are not body data, so body-size limits do not see them).
    /// Default 16 KiB.
    pub max_chunk_ext_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_head_bytes: 60 * 1024, max_headers: 100, max_chunk_ext_bytes: 16 * 1024 }
    }
}
