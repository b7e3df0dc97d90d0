//! Writing heads and chunk framing into reused buffers.
//!
//! Framing is written from the [`BodyFraming`] argument only: any
//! `Content-Length` / `Transfer-Encoding` in the header map is skipped (with
//! the exceptions documented on each function), so the next hop always sees
//! exactly one, well-formed framing field whatever filters did to the map.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Uri, Version};

use crate::{BodyFraming, RawFields};

/// The CRLF that ends a chunk's data.
pub const CRLF: &[u8] = b"\r\n";

/// The last chunk of a body without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes a request head, always as HTTP/1.1 (the proxy speaks its own
/// version upstream, RFC 9110 §6.2).
///
/// The target is written as given: pass the origin-form
/// (`uri.path_and_query()`) to an origin server. `headers` should already be
/// free of hop-by-hop fields and carry the right `Host`. Framing:
/// `Length(n)` writes `content-length: n`, `Chunked` writes
/// `transfer-encoding: chunked`, `None` (and `UntilClose`, which is
/// meaningless for a request) writes neither; `Content-Length` and
/// `Transfer-Encoding` in `headers` are always skipped.
pub fn encode_request_head(
    method: &Method,
    target: &Uri,
    headers: &HeaderMap,
    framing: BodyFraming,
    dst: &mut BytesMut,
) {
    encode_request(method, target, framing, dst, |dst| put_fields(headers, true, dst));
}

/// [`encode_request_head`] for fields as received and edited
/// ([`RawFields`]): received names are written as the client wrote them.
pub fn encode_raw_request_head(
    method: &Method,
    target: &Uri,
    fields: &RawFields,
    framing: BodyFraming,
    dst: &mut BytesMut,
) {
    encode_request(method, target, framing, dst, |dst| put_raw_fields(fields, true, dst));
}

fn encode_request(
    method: &Method,
    target: &Uri,
    framing: BodyFraming,
    dst: &mut BytesMut,
    fields: impl FnOnce(&mut BytesMut),
) {
    dst.reserve(256);
    dst.put_slice(method.as_str().as_bytes());
    dst.put_u8(b' ');
    match target.path_and_query() {
        Some(pq) if target.scheme().is_none() => dst.put_slice(pq.as_str().as_bytes()),
        // absolute-form or authority-form; writing into a BytesMut cannot fail.
        _ => {
            let _ = write!(dst, "{target}");
        }
    }
    dst.put_slice(b" HTTP/1.1\r\n");
    fields(dst);
    put_framing(framing, dst);
    dst.put_slice(CRLF);
}

/// Writes a response head.
///
/// `version` is `HTTP_10` or else written as HTTP/1.1. Framing:
/// `Length(n)` writes `content-length: n` and `Chunked` writes
/// `transfer-encoding: chunked`, skipping those fields in `headers`;
/// `UntilClose` writes neither (the caller closes after the body and should
/// send `connection: close`); `None` means no body follows and writes
/// `headers` unchanged, so a HEAD or 304 response keeps the
/// `Content-Length` of the representation — do not pass `None` for a
/// response that could have had a body. 1xx and 204 never get either field
/// (RFC 9110 §8.6, RFC 9112 §6.1).
pub fn encode_response_head(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    framing: BodyFraming,
    dst: &mut BytesMut,
) {
    encode_response(status, version, framing, dst, |skip_framing, dst| put_fields(headers, skip_framing, dst));
}

/// [`encode_response_head`] for fields as received and edited
/// ([`RawFields`]): received names are written as the upstream wrote them.
pub fn encode_raw_response_head(
    status: StatusCode,
    version: Version,
    fields: &RawFields,
    framing: BodyFraming,
    dst: &mut BytesMut,
) {
    encode_response(status, version, framing, dst, |skip_framing, dst| put_raw_fields(fields, skip_framing, dst));
}

fn encode_response(
    status: StatusCode,
    version: Version,
    framing: BodyFraming,
    dst: &mut BytesMut,
    fields: impl FnOnce(bool, &mut BytesMut),
) {
    dst.reserve(256);
    put_status_line(status, version == Version::HTTP_10, dst);
    let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT;
    fields(bodiless || framing != BodyFraming::None, dst);
    if !bodiless {
        put_framing(framing, dst);
    }
    dst.put_slice(CRLF);
}

fn put_raw_fields(fields: &RawFields, skip_framing: bool, dst: &mut BytesMut) {
    for (name, value, framing) in fields.iter_marking_framing() {
        if skip_framing && framing {
            continue;
        }
        dst.put_slice(name);
        dst.put_slice(b": ");
        dst.put_slice(value);
        dst.put_slice(CRLF);
    }
}

fn put_fields(headers: &HeaderMap, skip_framing: bool, dst: &mut BytesMut) {
    for (name, value) in headers {
        if skip_framing && (name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING) {
            continue;
        }
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(CRLF);
    }
}

fn put_status_line(status: StatusCode, http10: bool, dst: &mut BytesMut) {
    match status_line(status) {
        Some(line) if !http10 => dst.put_slice(line),
        Some(line) => {
            dst.put_slice(b"HTTP/1.0");
            dst.put_slice(&line[8..]);
        }
        None => {
            dst.put_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
            dst.put_slice(status.as_str().as_bytes());
            dst.put_u8(b' ');
            dst.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
            dst.put_slice(CRLF);
        }
    }
}

fn put_framing(framing: BodyFraming, dst: &mut BytesMut) {
    match framing {
        BodyFraming::Length(n) => {
            dst.put_slice(b"content-length: ");
            dst.put_slice(itoa::Buffer::new().format(n).as_bytes());
            dst.put_slice(CRLF);
        }
        BodyFraming::Chunked => dst.put_slice(b"transfer-encoding: chunked\r\n"),
        BodyFraming::None | BodyFraming::UntilClose => {}
    }
}

/// The full status line for common codes (HTTP/1.1 flavour).
fn status_line(status: StatusCode) -> Option<&'static [u8]> {
    Some(match status.as_u16() {
        100 => b"HTTP/1.1 100 Continue\r\n",
        101 => b"HTTP/1.1 101 Switching Protocols\r\n",
        200 => b"HTTP/1.1 200 OK\r\n",
        201 => b"HTTP/1.1 201 Created\r\n",
        202 => b"HTTP/1.1 202 Accepted\r\n",
        204 => b"HTTP/1.1 204 No Content\r\n",
        206 => b"HTTP/1.1 206 Partial Content\r\n",
        301 => b"HTTP/1.1 301 Moved Permanently\r\n",
        302 => b"HTTP/1.1 302 Found\r\n",
        303 => b"HTTP/1.1 303 See Other\r\n",
        304 => b"HTTP/1.1 304 Not Modified\r\n",
        307 => b"HTTP/1.1 307 Temporary Redirect\r\n",
        308 => b"HTTP/1.1 308 Permanent Redirect\r\n",
        400 => b"HTTP/1.1 400 Bad Request\r\n",
        401 => b"HTTP/1.1 401 Unauthorized\r\n",
        403 => b"HTTP/1.1 403 Forbidden\r\n",
        404 => b"HTTP/1.1 404 Not Found\r\n",
        405 => b"HTTP/1.1 405 Method Not Allowed\r\n",
        408 => b"HTTP/1.1 408 Request Timeout\r\n",
        413 => b"HTTP/1.1 413 Content Too Large\r\n",
        417 => b"HTTP/1.1 417 Expectation Failed\r\n",
        429 => b"HTTP/1.1 429 Too Many Requests\r\n",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        500 => b"HTTP/1.1 500 Internal Server Error\r\n",
        501 => b"HTTP/1.1 501 Not Implemented\r\n",
        502 => b"HTTP/1.1 502 Bad Gateway\r\n",
        503 => b"HTTP/1.1 503 Service Unavailable\r\n",
        504 => b"HTTP/1.1 504 Gateway Timeout\r\n",
        505 => b"HTTP/1.1 505 HTTP Version Not Supported\r\n",
        _ => return None,
    })
}

/// A chunk-size line (`<hex>\r\n`) on the stack, for a vectored write of
/// `[head, size line, data, CRLF]` without copying the data.
#[derive(Debug, Clone, Copy)]
pub struct ChunkSizeLine {
    buf: [u8; 18],
    start: u8,
}

impl ChunkSizeLine {
    /// The line for a chunk of `len` bytes; `None` for 0, since an empty
    /// chunk would be the last-chunk: skip empty data instead.
    pub fn new(len: u64) -> Option<Self> {
        if len == 0 {
            return None;
        }
        let mut buf = [0u8; 18];
        buf[16] = b'\r';
        buf[17] = b'\n';
        let mut i = 16;
        let mut n = len;
        while n != 0 {
            i -= 1;
            buf[i] = b"0123456789abcdef"[(n & 0xf) as usize];
            n >>= 4;
        }
        Some(ChunkSizeLine { buf, start: i as u8 })
    }

    /// The line's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[usize::from(self.start)..]
    }
}

impl AsRef<[u8]> for ChunkSizeLine {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Appends the chunk-size line for `len` data bytes to `dst` (typically
/// right after the head, in the same buffer); the caller then writes the
/// data and [`CRLF`]. Writes nothing and returns false for `len == 0`.
pub fn encode_chunk_size(len: u64, dst: &mut BytesMut) -> bool {
    match ChunkSizeLine::new(len) {
        Some(line) => {
            dst.put_slice(line.as_bytes());
            true
        }
        None => false,
    }
}

/// Appends the last chunk and the trailer section (`0\r\n`, the trailers,
/// `\r\n`) to `dst`. `Content-Length` / `Transfer-Encoding` trailers are
/// dropped (they are never allowed there, RFC 9110 §6.5.1).
pub fn encode_last_chunk(trailers: Option<&HeaderMap>, dst: &mut BytesMut) {
    match trailers {
        Some(trailers) if !trailers.is_empty() => {
            dst.put_slice(b"0\r\n");
            put_fields(trailers, true, dst);
            dst.put_slice(CRLF);
        }
        _ => dst.put_slice(LAST_CHUNK),
    }
}
