//! Request heads (RFC 9112 §3).

use bytes::{Bytes, BytesMut};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Method, Uri, Version, header};

use crate::head::{Fields, HeadScan, build_raw_fields, classify, decode_head, with_slots};
use crate::raw_fields::offset_in;
use crate::{BodyFraming, Error, Limits, RawFields};

/// A decoded request head and what the proxy needs decided from it; its
/// fields a `HeaderMap` ([`RequestDecoder::decode`]) or, for a head a
/// proxy relays with a few edits, [`RawFields`]
/// ([`RequestDecoder::decode_raw`]).
#[derive(Debug, Clone)]
pub struct Request<H = HeaderMap> {
    /// The method.
    pub method: Method,
    /// The request-target: origin-form (`/path?q`), absolute-form
    /// (`http://host/path`), authority-form (`host:port`, CONNECT only) or
    /// `*` (OPTIONS only).
    pub uri: Uri,
    /// `HTTP_10` or `HTTP_11`.
    pub version: Version,
    /// The header fields in received order; values share the head's buffer.
    /// Framing and connection fields are still present (filters may read
    /// them) but the encoder writes framing from [`BodyFraming`] only.
    pub headers: H,
    /// The target's authority: the URI's for absolute-form and CONNECT, else
    /// the Host field's. `None` for an empty Host (allowed by RFC 9112 §3.2)
    /// or an HTTP/1.0 request without Host.
    pub authority: Option<Authority>,
    /// How the body is delimited: never [`BodyFraming::UntilClose`].
    pub framing: BodyFraming,
    /// Whether the client connection may carry another request after this
    /// one (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (ignored on 1.0, RFC
    /// 9110 §10.1.1). Other expectations are ignored.
    pub expect_continue: bool,
    /// An HTTP/1.1 upgrade request: `Connection: upgrade` plus an `Upgrade`
    /// field (e.g. websocket). The protocol names are in `headers`.
    pub upgrade: bool,
}

impl<H> Request<H> {
    /// The same head with its fields turned into something else.
    pub fn map_headers<T>(self, f: impl FnOnce(H) -> T) -> Request<T> {
        Request {
            method: self.method,
            uri: self.uri,
            version: self.version,
            headers: f(self.headers),
            authority: self.authority,
            framing: self.framing,
            keep_alive: self.keep_alive,
            expect_continue: self.expect_continue,
            upgrade: self.upgrade,
        }
    }
}

/// Decodes the request heads of one client connection.
///
/// Holds only a search offset, so that a head trickling in a few bytes per
/// read is scanned once in total rather than re-parsed on every read:
/// httparse parses a head at its first look (most heads arrive whole, and
/// httparse finds their end itself), and one that was incomplete then again
/// when its start line is complete (so garbage such as a TLS hello on the
/// cleartext port fails at once) and once its end is found; an error
/// further in is reported when the head is complete or reaches
/// `max_head_bytes`.
#[derive(Debug, Clone, Default)]
pub struct RequestDecoder {
    limits: Limits,
    scan: HeadScan,
}

impl RequestDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestDecoder { limits, scan: HeadScan::default() }
    }

    /// Decodes one request head from the front of `buf`.
    ///
    /// `Ok(None)`: the head is incomplete and still within the limits; read
    /// more into `buf` and call again. `Ok(Some(_))`: the head was removed
    /// from `buf` (the body, or the next pipelined request, follows).
    /// `Err(_)`: answer [`Error::status`] and close the connection.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, Error> {
        Ok(self.decode_raw(buf)?.map(|request| request.map_headers(|fields| fields.to_map())))
    }

    /// [`RequestDecoder::decode`], with the fields as received (no map
    /// built): for a proxy that forwards the head with a few edits
    /// (`RawFields::to_map` makes the map when one is needed after all).
    /// Framing, the authority and errors are the same.
    pub fn decode_raw(&mut self, buf: &mut BytesMut) -> Result<Option<Request<RawFields>>, Error> {
        let limits = self.limits;
        let parsed = decode_head(&mut self.scan, buf, limits.max_head_bytes, Error::InvalidRequestLine, |bytes| {
            parse(bytes, &limits)
        })?;
        parsed.map(|(parsed, head)| parsed.finish(head)).transpose()
    }
}

/// Decodes one request head from the front of `buf`; see
/// [`RequestDecoder::decode`]. Stateless: an incomplete head is re-parsed
/// from its start on every call (quadratic for a head trickling in), so a
/// connection should keep a [`RequestDecoder`] instead.
pub fn decode_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, Error> {
    RequestDecoder::new(*limits).decode(buf)
}

/// A request head httparse accepted, before it is split off the buffer
/// it was parsed in (which it still borrowed then).
struct Parsed {
    method: Method,
    /// Where the request-target lies in the head.
    target: (u32, u32),
    http11: bool,
    fields: Fields,
}

/// Parses the request head at the start of `bytes`: `None` while it is
/// incomplete (and valid so far), else its length and what was parsed.
fn parse(bytes: &[u8], limits: &Limits) -> Result<Option<(usize, Parsed)>, Error> {
    with_slots(limits.max_headers, |slots| {
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(bytes, slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(classify(bytes, e, false)),
        };
        let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
            return Err(Error::InvalidRequestLine);
        };
        let method = Method::from_bytes(method.as_bytes()).map_err(|_| Error::InvalidRequestLine)?;
        // Non-ASCII must be percent-encoded; a fragment is never sent.
        if !target.is_ascii() || memchr::memchr(b'#', target.as_bytes()).is_some() {
            return Err(Error::InvalidTarget);
        }
        let target = offset_in(bytes, target.as_bytes()).ok_or(Error::HeadTooLarge)?;
        let fields = build_raw_fields(bytes, req.headers)?;
        Ok(Some((len, Parsed { method, target, http11: minor == 1, fields })))
    })
}

impl Parsed {
    /// The request, given its `head`: the bytes parsed, from their start
    /// to the head's end.
    fn finish(self, head: Bytes) -> Result<Request<RawFields>, Error> {
        let Parsed { method, target, http11, mut fields } = self;
        let version = if http11 { Version::HTTP_11 } else { Version::HTTP_10 };
        let uri = parse_target(&method, &head, target)?;
        let framing = fields.framing(http11)?.unwrap_or(BodyFraming::None);

        if fields.host_count > 1 {
            return Err(Error::MultipleHost);
        }
        if http11 && fields.host_count == 0 {
            return Err(Error::MissingHost);
        }
        let host = match fields.host.take() {
            Some((start, len)) => parse_host(&head[start as usize..(start + len) as usize])?,
            None => None,
        };
        fields.headers.attach(head);
        let authority = match uri.authority() {
            // RFC 9112 §3.2.2: the target's authority wins over Host. Make
            // Host agree so filters and the upstream see one host.
            Some(target_authority) => {
                if host.as_ref() != Some(target_authority) {
                    let value = HeaderValue::from_str(target_authority.as_str()).map_err(|_| Error::InvalidTarget)?;
                    fields.headers.insert(header::HOST, value);
                }
                Some(target_authority.clone())
            }
            None => host,
        };

        Ok(Request {
            method,
            uri,
            version,
            authority,
            framing,
            keep_alive: fields.connection.keep_alive(http11),
            expect_continue: http11 && fields.expect_continue,
            upgrade: http11 && fields.connection.upgrade && fields.upgrade_header,
            headers: fields.headers,
        })
    }
}

/// Checks the request-target form against the method (RFC 9112 §3.2); the
/// target (at `start`, `len` bytes into `head`) is ASCII, without `#`.
fn parse_target(method: &Method, head: &Bytes, (start, len): (u32, u32)) -> Result<Uri, Error> {
    let range = start as usize..(start + len) as usize;
    let bytes = &head[range.clone()];
    let uri = Uri::from_maybe_shared(head.slice(range)).map_err(|_| Error::InvalidTarget)?;
    let ok = if *method == Method::CONNECT {
        // authority-form, host and port only (RFC 9110 §9.3.6).
        uri.scheme().is_none()
            && uri.path_and_query().is_none()
            && uri.authority().is_some_and(|a| authority_ok(a, true))
    } else if bytes[0] == b'/' {
        true
    } else if bytes == b"*" {
        *method == Method::OPTIONS
    } else {
        // absolute-form; userinfo is an error (RFC 9110 §4.2.4).
        matches!(uri.scheme(), Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS)
            && uri.authority().is_some_and(|a| authority_ok(a, false))
    };
    if ok { Ok(uri) } else { Err(Error::InvalidTarget) }
}

/// Host = uri-host [ ":" port ] (RFC 9110 §7.2). Empty means no authority.
/// A value this thread accepted lately is not parsed again
/// ([`crate::hosts`]).
fn parse_host(value: &[u8]) -> Result<Option<Authority>, Error> {
    if value.is_empty() {
        return Ok(None);
    }
    if let Some(authority) = crate::hosts::find(value) {
        return Ok(Some(authority));
    }
    let authority = crate::hosts::parse(value, |value| {
        let authority = Authority::from_maybe_shared(value).map_err(|_| Error::InvalidHost)?;
        if authority_ok(&authority, false) { Ok(authority) } else { Err(Error::InvalidHost) }
    })?;
    Ok(Some(authority))
}

/// No userinfo, a non-empty host, and a port that is empty (only when not
/// required) or a decimal number up to 65535.
pub(crate) fn authority_ok(authority: &Authority, require_port: bool) -> bool {
    let s = authority.as_str();
    if s.contains('@') {
        return false;
    }
    let (host, port) = if s.starts_with('[') {
        match s.find(']') {
            Some(end) => s.split_at(end + 1),
            None => return false,
        }
    } else {
        match s.rfind(':') {
            Some(i) => s.split_at(i),
            None => (s, ""),
        }
    };
    if host.is_empty() {
        return false;
    }
    match port.strip_prefix(':') {
        None => port.is_empty() && !require_port,
        Some("") => !require_port,
        Some(digits) => {
            digits.len() <= 5
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.parse::<u32>().is_ok_and(|p| p <= 65535)
        }
    }
}
