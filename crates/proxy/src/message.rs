//! The protocol-neutral shape of a stream's messages: what the HTTP/1.1 and
//! HTTP/2 codecs on either side turn their frames into, and what the stream
//! layer ([`crate::stream`]) routes, rewrites and relays. The filter chain
//! sees the same shapes.

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version, header};

/// A request head, whichever protocol brought it.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) method: Method,
    /// As received: origin-form (`/path?q`) from HTTP/1.1 (absolute-form
    /// when the client sent it), the full URI from HTTP/2.
    pub(crate) uri: Uri,
    /// The client's protocol version.
    pub(crate) version: Version,
    /// Regular fields only (HTTP/2 pseudo-fields are in `uri`/`method`).
    pub(crate) headers: HeaderMap,
    /// Host for routing: HTTP/2's `:authority`, else the `Host` field.
    pub(crate) authority: Option<Authority>,
    /// What follows the head.
    pub(crate) body: BodySize,
    /// An HTTP/1.1 `Upgrade` request (WebSocket): only an HTTP/1.1 upstream
    /// can take it.
    pub(crate) upgrade: bool,
    /// The client sent `Expect: 100-continue` with a body: it waits for
    /// `100 Continue` before sending it, which nuncio sends only once the
    /// upstream asked for the body (Envoy's `proxy_100_continue`).
    pub(crate) expect_continue: bool,
}

/// A response head, whichever protocol brought it.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    /// Regular fields; framing fields (`content-length`,
    /// `transfer-encoding`) are rewritten by the downstream codec from
    /// `body`.
    pub(crate) headers: HeaderMap,
    pub(crate) body: BodySize,
}

/// How much body follows a head, as far as the sender said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodySize {
    /// None at all (end of stream with the head).
    Empty,
    /// Exactly this many bytes (`content-length`).
    Exact(u64),
    /// Until the sender ends the stream (chunked, HTTP/2 without
    /// `content-length`, or until the connection closes).
    Unknown,
}

impl BodySize {
    /// From a `content-length` field of a message that has a body; `Unknown`
    /// when there is none or it does not parse (the codec has already
    /// rejected conflicting values).
    pub(crate) fn from_content_length(headers: &HeaderMap) -> BodySize {
        headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map_or(BodySize::Unknown, BodySize::Exact)
    }
}

/// One piece of a body.
#[derive(Debug)]
pub(crate) enum BodyFrame {
    Data(Bytes),
    /// The trailer fields; the body ends after them.
    Trailers(HeaderMap),
}

/// Why a request body stopped before its end.
#[derive(Debug)]
pub(crate) enum RequestBodyError {
    /// The client closed or reset the connection (or the stream).
    Gone,
    /// The client sent a body the codec refuses.
    Invalid(nuncio_http1::Error),
    /// A filter answered the request while its body passed (or the body
    /// overflowed a buffering filter): the filtered stream holds the answer
    /// and sends it when the stream layer gives up on the upstream.
    Answered,
    /// The body did not arrive in time (the listener's
    /// `request_body_timeout` and `request_body_min_rate`): a client
    /// trickling it is cut off.
    TimedOut,
}

/// Whether a response to `method` with `status` carries no body whatever
/// its fields say (RFC 9110 §6.4.1).
pub(crate) fn bodiless(method: &Method, status: StatusCode) -> bool {
    method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

impl RequestHead {
    /// The head as filters see it, moved out (no copy); give it back with
    /// [`RequestHead::restore`].
    pub(crate) fn take_for_filters(&mut self) -> nuncio_filter::RequestHead {
        nuncio_filter::RequestHead {
            method: std::mem::replace(&mut self.method, Method::GET),
            uri: std::mem::take(&mut self.uri),
            version: self.version,
            headers: std::mem::take(&mut self.headers),
            authority: self.authority.take(),
        }
    }

    /// Takes back what filters made of the head.
    pub(crate) fn restore(&mut self, head: nuncio_filter::RequestHead) {
        self.method = head.method;
        self.uri = head.uri;
        self.version = head.version;
        self.headers = head.headers;
        self.authority = head.authority;
    }
}

/// Moves `headers`' values into one allocation of their own, for HTTP/2:
/// HPACK's dynamic table keeps the values it indexes for the connection's
/// life, and a value decoded by nuncio's HTTP/1.1 codec is a slice of the
/// buffer its message was read into. Each such value kept a whole read
/// buffer alive (16 KiB upstream, 8 KiB client) long after its message,
/// and that buffer could not go back to its pool: under h2c load 360 of
/// them were alive at the peak (valgrind's DHAT), and the pool allocated a
/// new one for most requests. One copy of a few hundred bytes a message
/// instead.
pub(crate) fn own_values(headers: &mut HeaderMap) {
    let total = headers.values().map(HeaderValue::len).sum();
    let mut all = BytesMut::with_capacity(total);
    for value in headers.values() {
        all.extend_from_slice(value.as_bytes());
    }
    let all = all.freeze();
    let mut at = 0;
    for value in headers.values_mut() {
        let len = value.len();
        // Valid already: the same bytes.
        if let Ok(mut owned) = HeaderValue::from_maybe_shared(all.slice(at..at + len)) {
            owned.set_sensitive(value.is_sensitive());
            *value = owned;
        }
        at += len;
    }
}

#[cfg(test)]
mod own_values_tests {
    use super::*;

    #[test]
    fn values_move_out_of_the_buffer_they_were_read_into() {
        let mut read = BytesMut::with_capacity(16 * 1024);
        read.extend_from_slice(b"text/plainnginx");
        let head = read.split().freeze();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_maybe_shared(head.slice(0..10)).unwrap());
        headers.append(header::SERVER, HeaderValue::from_maybe_shared(head.slice(10..15)).unwrap());
        let mut secret = HeaderValue::from_static("s3cret");
        secret.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, secret);
        drop(head);
        // The read buffer is shared while the values point into it.
        assert!(!read.try_reclaim(16 * 1024));
        own_values(&mut headers);
        assert!(read.try_reclaim(16 * 1024), "no value points into the read buffer any more");
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain");
        assert_eq!(headers[header::SERVER], "nginx");
        assert!(headers[header::AUTHORIZATION].is_sensitive());
    }
}
