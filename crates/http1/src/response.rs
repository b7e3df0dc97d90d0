//! Response heads (RFC 9112 §4) from upstreams.

use bytes::BytesMut;
use http::{HeaderMap, Method, StatusCode, Version};

use crate::head::{HeadScan, build_raw_fields, classify, decode_head, with_slots};
use crate::{BodyFraming, Error, Limits, RawFields};

/// A decoded response head and what the proxy needs decided from it; its
/// fields a `HeaderMap` ([`ResponseDecoder::decode`]) or, for a head
/// relayed as received, [`RawFields`] ([`ResponseDecoder::decode_raw`]).
#[derive(Debug, Clone)]
pub struct Response<H = HeaderMap> {
    /// The status code (the reason phrase is not kept; the encoder writes the
    /// canonical one).
    pub status: StatusCode,
    /// `HTTP_10` or `HTTP_11`.
    pub version: Version,
    /// The header fields in received order; values share the head's buffer.
    pub headers: H,
    /// How the body is delimited (RFC 9112 §6.3): `None` for 1xx, 204, 304,
    /// responses to HEAD and 2xx responses to CONNECT.
    pub framing: BodyFraming,
    /// Whether the upstream connection can carry another request after this
    /// response: false on `Connection: close`, on HTTP/1.0 without
    /// `keep-alive`, and for [`BodyFraming::UntilClose`].
    pub keep_alive: bool,
    /// After this head the connection carries opaque bytes both ways: a `101
    /// Switching Protocols`, or a 2xx answer to CONNECT. (A 101 is only
    /// legitimate for a request with [`crate::Request::upgrade`]; the proxy
    /// should treat any other as an upstream error.)
    pub tunnel: bool,
}

impl<H> Response<H> {
    /// The same head with its fields turned into something else.
    pub fn map_headers<T>(self, f: impl FnOnce(H) -> T) -> Response<T> {
        Response {
            status: self.status,
            version: self.version,
            headers: f(self.headers),
            framing: self.framing,
            keep_alive: self.keep_alive,
            tunnel: self.tunnel,
        }
    }

    /// A 1xx head (`100 Continue`, `103 Early Hints`, `101 Switching
    /// Protocols`...). Except for 101 (see [`Response::tunnel`]) the final
    /// response follows on the same connection: decode again.
    pub fn is_interim(&self) -> bool {
        self.status.is_informational()
    }
}

/// Decodes the response heads of one upstream connection; see
/// [`crate::RequestDecoder`] for why it keeps state.
#[derive(Debug, Clone, Default)]
pub struct ResponseDecoder {
    limits: Limits,
    scan: HeadScan,
}

impl ResponseDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        ResponseDecoder { limits, scan: HeadScan::default() }
    }

    /// Decodes one response head from the front of `buf`, given the method
    /// of the request it answers (HEAD and CONNECT change the framing).
    ///
    /// `Ok(None)`: incomplete, read more. `Ok(Some(_))`: the head was
    /// removed from `buf`. `Err(_)`: the upstream is broken; answer the
    /// client 502 and close the upstream connection.
    pub fn decode(&mut self, buf: &mut BytesMut, request_method: &Method) -> Result<Option<Response>, Error> {
        Ok(self.decode_raw(buf, request_method)?.map(|response| response.map_headers(|fields| fields.to_map())))
    }

    /// [`ResponseDecoder::decode`], with the fields as received: for a
    /// proxy that relays the head (`RawFields::to_map` makes the map when
    /// one is needed after all). Framing, keep-alive and errors are the
    /// same.
    pub fn decode_raw(
        &mut self,
        buf: &mut BytesMut,
        request_method: &Method,
    ) -> Result<Option<Response<RawFields>>, Error> {
        let limits = self.limits;
        let parsed = decode_head(&mut self.scan, buf, limits.max_head_bytes, Error::InvalidStatusLine, |bytes| {
            parse(bytes, request_method, &limits)
        })?;
        Ok(parsed.map(|(mut response, head)| {
            response.headers.attach(head);
            response
        }))
    }
}

/// Decodes one response head from the front of `buf`; see
/// [`ResponseDecoder::decode`] (which a connection should keep instead).
pub fn decode_response(
    buf: &mut BytesMut,
    request_method: &Method,
    limits: &Limits,
) -> Result<Option<Response>, Error> {
    ResponseDecoder::new(*limits).decode(buf, request_method)
}

/// Parses the response head at the start of `bytes`: `None` while it is
/// incomplete (and valid so far), else its length and the response, its
/// fields not yet [attached](RawFields::attach) to the head's bytes (the
/// caller splits them off the buffer that `bytes` borrows).
fn parse(bytes: &[u8], method: &Method, limits: &Limits) -> Result<Option<(usize, Response<RawFields>)>, Error> {
    with_slots(limits.max_headers, |slots| {
        let mut res = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, bytes, slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(classify(bytes, e, true)),
        };
        let (Some(code), Some(minor)) = (res.code, res.version) else {
            return Err(Error::InvalidStatusLine);
        };
        let status = StatusCode::from_u16(code).map_err(|_| Error::InvalidStatusLine)?;
        let http11 = minor == 1;
        let fields = build_raw_fields(bytes, res.headers)?;

        let connect_ok = *method == Method::CONNECT && status.is_success();
        let tunnel = connect_ok || status == StatusCode::SWITCHING_PROTOCOLS;
        let framing = if connect_ok {
            // RFC 9112 §6.3 (2): Content-Length / Transfer-Encoding of a 2xx
            // to CONNECT are ignored, the tunnel starts right after the head.
            BodyFraming::None
        } else {
            // Validate the framing fields even when the status says there is
            // no body: a broken upstream is better caught early.
            let declared = fields.framing(http11)?;
            if status.is_informational()
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED
                || *method == Method::HEAD
            {
                BodyFraming::None
            } else {
                declared.unwrap_or(BodyFraming::UntilClose)
            }
        };
        let keep_alive = framing != BodyFraming::UntilClose && fields.connection.keep_alive(http11);
        let response = Response {
            status,
            version: if http11 { Version::HTTP_11 } else { Version::HTTP_10 },
            headers: fields.headers,
            framing,
            keep_alive,
            tunnel,
        };
        Ok(Some((len, response)))
    })
}
