//! A request head from a decoded header block (RFC 9113 §8.3): the
//! pseudo-fields checked and made a method and URI, the regular fields a
//! [`HeaderMap`] whose values share one buffer.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Uri};

/// A request's head, as a client's `HEADERS` opened its stream.
#[derive(Debug)]
pub struct Request {
    /// The stream it came on.
    pub stream: u32,
    /// `:method`.
    pub method: Method,
    /// `:scheme`, `:authority` and `:path` (authority-form for `CONNECT`).
    pub uri: Uri,
    /// The regular fields, in order.
    pub headers: HeaderMap,
    /// `content-length`, if sent: the body must have exactly this many
    /// bytes (the connection checks as `DATA` comes).
    pub content_length: Option<u64>,
    /// The `HEADERS` ended the stream: there is no body.
    pub end_stream: bool,
    /// HPACK's size of the fields (name, value and 32 bytes each), pseudo
    /// ones included: what the block decoded to.
    pub decoded_size: u64,
}

/// Why a header block is not a valid request (a stream error,
/// `PROTOCOL_ERROR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

/// Where a decoded field's name and value lie in the block's buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// The fields of one header block as the decoder gave them, copied into
/// one buffer (reused from block to block: one allocation a block, shared
/// by the values of the map made from it).
#[derive(Debug, Default)]
pub(crate) struct Fields {
    buf: BytesMut,
    spans: Vec<Span>,
    /// HPACK's size of what was decoded.
    pub(crate) size: u64,
    /// Past the limit: fields are counted but no longer kept.
    pub(crate) too_large: bool,
}

impl Fields {
    /// Empties for the next block, keeping at most `limit` bytes of fields.
    pub(crate) fn start(&mut self) {
        self.buf.clear();
        self.spans.clear();
        self.size = 0;
        self.too_large = false;
    }

    /// Adds one decoded field, unless the list is past `limit`.
    pub(crate) fn push(&mut self, name: &[u8], value: &[u8], limit: u64) {
        self.size += (name.len() + value.len() + 32) as u64;
        if self.size > limit {
            self.too_large = true;
        }
        if self.too_large {
            return;
        }
        let at = self.buf.len() as u32;
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(value);
        self.spans.push(Span { name: (at, name.len() as u32), value: (at + name.len() as u32, value.len() as u32) });
    }

    /// The block as a request's head.
    pub(crate) fn request(&mut self, stream: u32, end_stream: bool) -> Result<Request, Malformed> {
        let bytes = self.buf.split().freeze();
        let slice = |(at, len): (u32, u32)| &bytes[at as usize..(at + len) as usize];
        let shared = |(at, len): (u32, u32)| bytes.slice(at as usize..(at + len) as usize);
        let (mut method, mut scheme, mut authority, mut path) = (None, None, None, None);
        let mut headers = HeaderMap::with_capacity(self.spans.len());
        let mut content_length = None;
        let mut regular = false;
        for span in &self.spans {
            let name = slice(span.name);
            if let Some(pseudo) = name.strip_prefix(b":") {
                if regular {
                    return Err(Malformed("a pseudo-field after a regular field"));
                }
                let slot = match pseudo {
                    b"method" => &mut method,
                    b"scheme" => &mut scheme,
                    b"authority" => &mut authority,
                    b"path" => &mut path,
                    _ => return Err(Malformed("an unknown or response pseudo-field")),
                };
                if slot.replace(span.value).is_some() {
                    return Err(Malformed("a pseudo-field sent twice"));
                }
                continue;
            }
            regular = true;
            let value = shared(span.value);
            let (name, value) = regular_field(name, value)?;
            if name == http::header::CONTENT_LENGTH {
                let n = parse_length(value.as_bytes()).ok_or(Malformed("an invalid content-length"))?;
                if content_length.replace(n).is_some_and(|m| m != n) {
                    return Err(Malformed("content-length fields that differ"));
                }
            }
            headers.append(name, value);
        }
        let method = method.ok_or(Malformed("no :method"))?;
        let method = Method::from_bytes(slice(method)).map_err(|_| Malformed("an invalid :method"))?;
        let authority = match authority {
            Some(a) => Some(Authority::from_maybe_shared(shared(a)).map_err(|_| Malformed("an invalid :authority"))?),
            None => None,
        };
        let uri = if method == Method::CONNECT {
            if scheme.is_some() || path.is_some() {
                return Err(Malformed("CONNECT with :scheme or :path (extended CONNECT is not supported)"));
            }
            let authority = authority.ok_or(Malformed("CONNECT without :authority"))?;
            Uri::from(authority)
        } else {
            let scheme = scheme.ok_or(Malformed("no :scheme"))?;
            let path = path.ok_or(Malformed("no :path"))?;
            if path.1 == 0 {
                return Err(Malformed("an empty :path"));
            }
            let scheme = match slice(scheme) {
                b"http" => Scheme::HTTP,
                b"https" => Scheme::HTTPS,
                other => Scheme::try_from(other).map_err(|_| Malformed("an invalid :scheme"))?,
            };
            let path = PathAndQuery::from_maybe_shared(shared(path)).map_err(|_| Malformed("an invalid :path"))?;
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(scheme);
            parts.authority = authority;
            parts.path_and_query = Some(path);
            Uri::from_parts(parts).map_err(|_| Malformed("an invalid request target"))?
        };
        Ok(Request { stream, method, uri, headers, content_length, end_stream, decoded_size: self.size })
    }

    /// The block as trailers: regular fields only.
    pub(crate) fn trailers(&mut self) -> Result<HeaderMap, Malformed> {
        let bytes = self.buf.split().freeze();
        let mut headers = HeaderMap::with_capacity(self.spans.len());
        for span in &self.spans {
            let name = &bytes[span.name.0 as usize..(span.name.0 + span.name.1) as usize];
            if name.starts_with(b":") {
                return Err(Malformed("a pseudo-field in trailers"));
            }
            let value = bytes.slice(span.value.0 as usize..(span.value.0 + span.value.1) as usize);
            let (name, value) = regular_field(name, value)?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

/// A regular field, checked as RFC 9113 §8.2 asks: lower-case name, no
/// connection-specific field, `te` only `trailers`.
fn regular_field(name: &[u8], value: Bytes) -> Result<(HeaderName, HeaderValue), Malformed> {
    if name.iter().any(u8::is_ascii_uppercase) {
        return Err(Malformed("an upper-case field name"));
    }
    let name = HeaderName::from_bytes(name).map_err(|_| Malformed("an invalid field name"))?;
    if is_connection_specific(&name) {
        return Err(Malformed("a connection-specific field"));
    }
    let value = HeaderValue::from_maybe_shared(value).map_err(|_| Malformed("an invalid field value"))?;
    if name == http::header::TE && value != "trailers" {
        return Err(Malformed("te other than trailers"));
    }
    Ok((name, value))
}

fn is_connection_specific(name: &HeaderName) -> bool {
    use http::header::{CONNECTION, TRANSFER_ENCODING, UPGRADE};
    *name == CONNECTION
        || *name == TRANSFER_ENCODING
        || *name == UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// A `content-length` value: digits only.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(fields: &[(&str, &str)]) -> Fields {
        let mut f = Fields::default();
        f.start();
        for (n, v) in fields {
            f.push(n.as_bytes(), v.as_bytes(), 1 << 20);
        }
        f
    }

    const GET: [(&str, &str); 4] =
        [(":method", "GET"), (":scheme", "http"), (":authority", "a.test"), (":path", "/x?y")];

    #[test]
    fn a_request_block_makes_a_method_uri_and_fields() {
        let mut fields = GET.to_vec();
        fields.extend([("accept", "*/*"), ("content-length", "5"), ("x-a", "1"), ("x-a", "2")]);
        let r = block(&fields).request(3, false).unwrap();
        assert_eq!(r.stream, 3);
        assert_eq!(r.method, Method::GET);
        assert_eq!(r.uri, "http://a.test/x?y");
        assert_eq!(r.content_length, Some(5));
        assert_eq!(r.headers.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(r.headers.len(), 4);
        let size: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
        assert_eq!(r.decoded_size, size as u64);
    }

    #[test]
    fn malformed_requests_say_why() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[(":method", "GET"), (":scheme", "http")], "no :path"),
            (&[(":method", "GET"), (":path", "/")], "no :scheme"),
            (&[(":scheme", "http"), (":path", "/")], "no :method"),
            (&[(":method", "GET"), (":scheme", "http"), (":path", "")], "an empty :path"),
            (&[(":method", "GET"), (":method", "GET")], "a pseudo-field sent twice"),
            (&[(":method", "GET"), ("x", "1"), (":path", "/")], "a pseudo-field after a regular field"),
            (&[(":status", "200")], "an unknown or response pseudo-field"),
            (&[(":method", "GET"), ("X-Up", "1")], "an upper-case field name"),
            (&[(":method", "GET"), ("connection", "close")], "a connection-specific field"),
            (&[(":method", "GET"), ("transfer-encoding", "chunked")], "a connection-specific field"),
            (&[(":method", "GET"), ("te", "gzip")], "te other than trailers"),
            (
                &[(":method", "GET"), ("content-length", "1"), ("content-length", "2")],
                "content-length fields that differ",
            ),
            (&[(":method", "GET"), ("content-length", "-1")], "an invalid content-length"),
            (
                &[(":method", "CONNECT"), (":authority", "a:1"), (":path", "/")],
                "CONNECT with :scheme or :path (extended CONNECT is not supported)",
            ),
        ];
        for (fields, why) in cases {
            assert_eq!(block(fields).request(1, true).unwrap_err(), Malformed(why), "{fields:?}");
        }
    }

    #[test]
    fn connect_is_authority_form_and_te_trailers_passes() {
        let r = block(&[(":method", "CONNECT"), (":authority", "a.test:443")]).request(1, false).unwrap();
        assert_eq!(r.uri, "a.test:443");
        let mut fields = GET.to_vec();
        fields.push(("te", "trailers"));
        assert!(block(&fields).request(1, true).is_ok());
    }

    #[test]
    fn a_list_past_the_limit_is_counted_not_kept() {
        let mut f = Fields::default();
        f.start();
        f.push(b"x-a", &[b'a'; 100], 200);
        assert!(!f.too_large);
        f.push(b"x-b", &[b'b'; 100], 200);
        assert!(f.too_large);
        assert_eq!(f.size, 2 * (3 + 100 + 32));
        assert_eq!(f.spans.len(), 1);
    }

    #[test]
    fn trailers_take_regular_fields_only() {
        let t = block(&[("x-sum", "abc")]).trailers().unwrap();
        assert_eq!(t["x-sum"], "abc");
        assert_eq!(block(&[(":path", "/")]).trailers().unwrap_err(), Malformed("a pseudo-field in trailers"));
    }
}
