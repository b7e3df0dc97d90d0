//! Request heads (RFC 9112 §3).

use bytes::{Bytes, BytesMut};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Method, Uri, Version, header};

use crate::head::{Fields, HeadScan, Scan, build_fields, build_raw_fields, classify, unread, with_slots};
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
/// httparse looks at an incomplete head when it is first seen and when its
/// start line is complete (so garbage such as a TLS hello on the cleartext
/// port fails at once); an error further in is reported when the head is
/// complete or reaches `max_head_bytes`.
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
        self.decode_with(buf, build_fields)
    }

    /// [`RequestDecoder::decode`], with the fields as received (no map
    /// built): for a proxy that forwards the head with a few edits
    /// (`RawFields::to_map` makes the map when one is needed after all).
    /// Framing, the authority and errors are the same.
    pub fn decode_raw(&mut self, buf: &mut BytesMut) -> Result<Option<Request<RawFields>>, Error> {
        self.decode_with(buf, build_raw_fields)
    }

    fn decode_with<H: HostField>(
        &mut self,
        buf: &mut BytesMut,
        build: fn(&Bytes, &[httparse::Header<'_>]) -> Result<Fields<H>, Error>,
    ) -> Result<Option<Request<H>>, Error> {
        self.decode_scanned(buf, build, true)
    }

    /// [`Self::decode_with`]; `try_whole`: see [`Scan::Whole`].
    fn decode_scanned<H: HostField>(
        &mut self,
        buf: &mut BytesMut,
        build: fn(&Bytes, &[httparse::Header<'_>]) -> Result<Fields<H>, Error>,
        try_whole: bool,
    ) -> Result<Option<Request<H>>, Error> {
        match self.scan.scan(buf, self.limits.max_head_bytes, try_whole) {
            Scan::Incomplete { check, over_limit } => {
                if check {
                    early_check(buf, &self.limits)?;
                }
                if over_limit {
                    return Err(Error::HeadTooLarge);
                }
                Ok(None)
            }
            Scan::Complete(len) => {
                let head = buf.split_to(len).freeze();
                parse(&head, &self.limits, build).map(Some)
            }
            Scan::Whole(len) => {
                let head = buf.split_to(len).freeze();
                match parse(&head, &self.limits, build) {
                    Ok(decoded) => Ok(Some(decoded)),
                    Err(_) => {
                        unread(buf, head);
                        self.decode_scanned(buf, build, false)
                    }
                }
            }
        }
    }
}

/// Decodes one request head from the front of `buf`; see
/// [`RequestDecoder::decode`]. Stateless: an incomplete head is re-parsed
/// from its start on every call (quadratic for a head trickling in), so a
/// connection should keep a [`RequestDecoder`] instead.
pub fn decode_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, Error> {
    RequestDecoder::new(*limits).decode(buf)
}

/// Lets httparse reject an incomplete head that is already invalid (a TLS
/// hello on a cleartext port) instead of waiting for a terminator.
fn early_check(buf: &[u8], limits: &Limits) -> Result<(), Error> {
    with_slots(limits.max_headers, |slots| {
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(buf, slots) {
            Err(e) => Err(classify(buf, e, false)),
            Ok(_) => Ok(()),
        }
    })
}

/// The one edit the decoder makes to the fields it decoded.
pub(crate) trait HostField {
    /// Replaces the `Host` field(s).
    fn set_host(&mut self, value: HeaderValue);
}

impl HostField for HeaderMap {
    fn set_host(&mut self, value: HeaderValue) {
        self.insert(header::HOST, value);
    }
}

impl HostField for RawFields {
    fn set_host(&mut self, value: HeaderValue) {
        self.insert(header::HOST, value);
    }
}

fn parse<H: HostField>(
    head: &Bytes,
    limits: &Limits,
    build: fn(&Bytes, &[httparse::Header<'_>]) -> Result<Fields<H>, Error>,
) -> Result<Request<H>, Error> {
    with_slots(limits.max_headers, |slots| {
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(head, slots) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            Ok(_) => return Err(Error::InvalidRequestLine),
            Err(e) => return Err(classify(head, e, false)),
        }
        let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
            return Err(Error::InvalidRequestLine);
        };
        let method = Method::from_bytes(method.as_bytes()).map_err(|_| Error::InvalidRequestLine)?;
        let http11 = minor == 1;
        let version = if http11 { Version::HTTP_11 } else { Version::HTTP_10 };
        let uri = parse_target(&method, head, target)?;
        let mut fields = build(head, req.headers)?;

        let framing = fields.framing(http11)?.unwrap_or(BodyFraming::None);

        if fields.host_count > 1 {
            return Err(Error::MultipleHost);
        }
        if http11 && fields.host_count == 0 {
            return Err(Error::MissingHost);
        }
        let host = match fields.host.take() {
            Some(value) => parse_host(value)?,
            None => None,
        };
        let authority = match uri.authority() {
            // RFC 9112 §3.2.2: the target's authority wins over Host. Make
            // Host agree so filters and the upstream see one host.
            Some(target_authority) => {
                if host.as_ref() != Some(target_authority) {
                    let value = HeaderValue::from_str(target_authority.as_str()).map_err(|_| Error::InvalidTarget)?;
                    fields.headers.set_host(value);
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
    })
}

/// Checks the request-target form against the method (RFC 9112 §3.2).
fn parse_target(method: &Method, head: &Bytes, target: &str) -> Result<Uri, Error> {
    let bytes = target.as_bytes();
    // Non-ASCII must be percent-encoded; a fragment is never sent.
    if !target.is_ascii() || memchr::memchr(b'#', bytes).is_some() {
        return Err(Error::InvalidTarget);
    }
    let uri = Uri::from_maybe_shared(head.slice_ref(bytes)).map_err(|_| Error::InvalidTarget)?;
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
fn parse_host(value: Bytes) -> Result<Option<Authority>, Error> {
    if value.is_empty() {
        return Ok(None);
    }
    let authority = Authority::from_maybe_shared(value).map_err(|_| Error::InvalidHost)?;
    if authority_ok(&authority, false) { Ok(Some(authority)) } else { Err(Error::InvalidHost) }
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
