//! The protocol-neutral shape of a stream's messages: what the HTTP/1.1 and
//! HTTP/2 codecs on either side turn their frames into, and what the stream
//! layer ([`crate::stream`]) routes, rewrites and relays. The filter chain
//! sees the same shapes.

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};

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
    pub(crate) headers: HeadFields,
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
    pub(crate) headers: HeadFields,
    pub(crate) body: BodySize,
}

/// A head's fields: as nuncio's HTTP/1.1 codec received them (with the
/// edits made since), until something needs them as a map (a filter,
/// HTTP/2, the access log, a route matching on fields), or a map.
///
/// Most requests and responses are forwarded with a few fields removed
/// and added and no other look at them; building a `HeaderMap` for each
/// head, and hashing every name looked up in it, was a sixth of a
/// proxied request's instructions (`bench/instructions`, 2026-12-06).
/// The edits here are linear scans of the few fields a head has.
#[derive(Debug, Clone)]
pub(crate) enum HeadFields {
    /// From nuncio's HTTP/1.1 codec.
    Received(nuncio_http1::RawFields),
    Map(HeaderMap),
}

impl HeadFields {
    /// The fields as a map, made now if they were not one.
    pub(crate) fn map(&mut self) -> &mut HeaderMap {
        if let HeadFields::Received(raw) = self {
            *self = HeadFields::Map(raw.to_map());
        }
        match self {
            HeadFields::Map(map) => map,
            HeadFields::Received(_) => unreachable!("made a map above"),
        }
    }

    /// The fields as a map.
    pub(crate) fn into_map(self) -> HeaderMap {
        match self {
            HeadFields::Received(raw) => raw.to_map(),
            HeadFields::Map(map) => map,
        }
    }

    /// A copy as a map (the values share their bytes).
    pub(crate) fn to_map(&self) -> HeaderMap {
        match self {
            HeadFields::Received(raw) => raw.to_map(),
            HeadFields::Map(map) => map.clone(),
        }
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        match self {
            HeadFields::Received(raw) => raw.get(name.as_str()),
            HeadFields::Map(map) => map.get(name).map(HeaderValue::as_bytes),
        }
    }

    /// The first value of the field `name` (lowercase), for a name known
    /// as a string only.
    pub(crate) fn get_str(&self, name: &str) -> Option<&[u8]> {
        match self {
            HeadFields::Received(raw) => raw.get(name),
            HeadFields::Map(map) => map.get(name).map(HeaderValue::as_bytes),
        }
    }

    /// Every value of `name`, in order.
    pub(crate) fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (raw, map) = match self {
            HeadFields::Received(raw) => (Some(raw.get_all(name.as_str())), None),
            HeadFields::Map(map) => (None, Some(map.get_all(name).into_iter().map(HeaderValue::as_bytes))),
        };
        raw.into_iter().flatten().chain(map.into_iter().flatten())
    }

    /// Whether a field is called `name`.
    pub(crate) fn contains(&self, name: &HeaderName) -> bool {
        match self {
            HeadFields::Received(raw) => raw.contains(name.as_str()),
            HeadFields::Map(map) => map.contains_key(name),
        }
    }

    /// Replaces every field called `name` by one with `value`.
    pub(crate) fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        match self {
            HeadFields::Received(raw) => raw.insert(name, value),
            HeadFields::Map(map) => {
                map.insert(name, value);
            }
        }
    }

    /// Adds a field after the others (for a `name` known to be absent, the
    /// cheaper [`HeadFields::insert`]).
    pub(crate) fn append(&mut self, name: HeaderName, value: HeaderValue) {
        match self {
            HeadFields::Received(raw) => raw.append(name, value),
            HeadFields::Map(map) => {
                map.append(name, value);
            }
        }
    }

    /// Removes every field called `name`.
    pub(crate) fn remove(&mut self, name: &HeaderName) {
        match self {
            HeadFields::Received(raw) => raw.remove(name.as_str()),
            HeadFields::Map(map) => {
                map.remove(name);
            }
        }
    }

    /// See [`nuncio_http1::remove_hop_by_hop`].
    pub(crate) fn remove_hop_by_hop(&mut self) {
        match self {
            HeadFields::Received(raw) => raw.remove_hop_by_hop(),
            HeadFields::Map(map) => nuncio_http1::remove_hop_by_hop(map),
        }
    }

    /// Gives a map back to the worker's pool (`nuncio_http1::field_maps`)
    /// once the head is done with.
    pub(crate) fn recycle(self) {
        if let HeadFields::Map(map) = self {
            nuncio_http1::field_maps::give_back(map);
        }
    }
}

/// What a route's field matchers look up.
impl nuncio_router::Fields for HeadFields {
    fn has(&self, name: &HeaderName) -> bool {
        self.contains(name)
    }

    fn has_value(&self, name: &HeaderName, value: &[u8]) -> bool {
        self.get_all(name).any(|v| v == value)
    }
}

impl Default for HeadFields {
    /// No fields.
    fn default() -> Self {
        HeadFields::Map(HeaderMap::new())
    }
}

impl From<HeaderMap> for HeadFields {
    fn from(map: HeaderMap) -> Self {
        HeadFields::Map(map)
    }
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
            headers: std::mem::take(&mut self.headers).into_map(),
            authority: self.authority.take(),
        }
    }

    /// Takes back what filters made of the head.
    pub(crate) fn restore(&mut self, head: nuncio_filter::RequestHead) {
        self.method = head.method;
        self.uri = head.uri;
        self.version = head.version;
        self.headers = head.headers.into();
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
