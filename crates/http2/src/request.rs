//! A request head from a decoded header block (RFC 9113 §8.3): the
//! pseudo-fields checked and made a method and URI, the regular fields
//! checked and kept as decoded, in one buffer ([`FieldBlock`]): a proxy
//! relays them as they are, and building a [`HeaderMap`] (a hash, an
//! insert and a validation a field) was ~2,000 instructions a request.

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
    pub fields: FieldBlock,
    /// `content-length`, if sent: the body must have exactly this many
    /// bytes (the connection checks as `DATA` comes).
    pub content_length: Option<u64>,
    /// The `HEADERS` ended the stream: there is no body.
    pub end_stream: bool,
    /// HPACK's size of the fields (name, value and 32 bytes each), pseudo
    /// ones included: what the block decoded to.
    pub decoded_size: u64,
}

/// A request's regular fields as decoded: one buffer, each field's name
/// and value a range of it. Names are lower case tokens; values have no
/// control bytes but HTAB; no connection-specific field is among them.
#[derive(Debug, Clone, Default)]
pub struct FieldBlock {
    bytes: Bytes,
    spans: Vec<Span>,
}

impl FieldBlock {
    /// The buffer the fields lie in.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Each field's name and value as `(offset, length)` in
    /// [`FieldBlock::bytes`].
    pub fn ranges(&self) -> impl ExactSizeIterator<Item = ((u32, u32), (u32, u32))> + '_ {
        self.spans.iter().map(|span| (span.name, span.value))
    }

    /// Each field's name and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|span| (range(&self.bytes, span.name), range(&self.bytes, span.value)))
    }

    /// The value of the first field called `name` (lower case).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, value)| value)
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The fields as a map, values sharing the buffer.
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.spans.len());
        for span in &self.spans {
            // Checked as they were decoded: neither conversion fails.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(range(&self.bytes, span.name)),
                HeaderValue::from_maybe_shared(
                    self.bytes.slice(span.value.0 as usize..(span.value.0 + span.value.1) as usize),
                ),
            ) {
                map.append(name, value);
            }
        }
        map
    }
}

fn range(bytes: &Bytes, (at, len): (u32, u32)) -> &[u8] {
    &bytes[at as usize..(at + len) as usize]
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
    /// The last request's authority: a client sends the same one stream
    /// after stream, and a clone of the parsed one costs less than a
    /// parse (~200 instructions).
    last_authority: Option<Authority>,
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
        let mut content_length = None;
        let mut regular = Vec::with_capacity(self.spans.len());
        for span in &self.spans {
            let name = slice(span.name);
            if let Some(pseudo) = name.strip_prefix(b":") {
                if !regular.is_empty() {
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
            let value = slice(span.value);
            check_regular(name, value)?;
            if name == b"content-length" {
                let n = parse_length(value).ok_or(Malformed("an invalid content-length"))?;
                if content_length.replace(n).is_some_and(|m| m != n) {
                    return Err(Malformed("content-length fields that differ"));
                }
            }
            regular.push(*span);
        }
        if end_stream && content_length.is_some_and(|n| n != 0) {
            // RFC 9113 §8.1.1: the length says a body comes, the stream
            // says none does.
            return Err(Malformed("a content-length with no body"));
        }
        let method = method.ok_or(Malformed("no :method"))?;
        let method = Method::from_bytes(slice(method)).map_err(|_| Malformed("an invalid :method"))?;
        let host = regular.iter().find(|span| slice(span.name) == b"host").map(|span| span.value);
        let authority = match (authority, host) {
            (Some(a), Some(h)) if !slice(a).eq_ignore_ascii_case(slice(h)) => {
                // RFC 9113 §8.3.1: a proxy routing by one and forwarding
                // the other would be told two different hosts.
                return Err(Malformed(":authority and host that differ"));
            }
            // Without `:authority`, `host` says it (RFC 9113 §8.3.1).
            (Some(a), _) | (None, Some(a)) => match &self.last_authority {
                Some(last) if last.as_str().as_bytes() == slice(a) => Some(last.clone()),
                _ => {
                    let parsed =
                        Authority::from_maybe_shared(shared(a)).map_err(|_| Malformed("an invalid :authority"))?;
                    self.last_authority = Some(parsed.clone());
                    Some(parsed)
                }
            },
            (None, None) => None,
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
        let fields = FieldBlock { bytes, spans: regular };
        Ok(Request { stream, method, uri, fields, content_length, end_stream, decoded_size: self.size })
    }

    /// The block as trailers: regular fields only.
    pub(crate) fn trailers(&mut self) -> Result<HeaderMap, Malformed> {
        let bytes = self.buf.split().freeze();
        for span in &self.spans {
            let name = range(&bytes, span.name);
            if name.starts_with(b":") {
                return Err(Malformed("a pseudo-field in trailers"));
            }
            check_regular(name, range(&bytes, span.value))?;
        }
        Ok(FieldBlock { bytes, spans: std::mem::take(&mut self.spans) }.to_map())
    }
}

/// A regular field, checked as RFC 9113 §8.2 asks: a lower-case token
/// for a name, no control byte but HTAB in the value (what `http`'s types
/// accept), no connection-specific field, `te` only `trailers`.
fn check_regular(name: &[u8], value: &[u8]) -> Result<(), Malformed> {
    if name.is_empty() {
        return Err(Malformed("an empty field name"));
    }
    if name.iter().any(u8::is_ascii_uppercase) {
        return Err(Malformed("an upper-case field name"));
    }
    if !name.iter().all(|&b| BYTE_CLASS[usize::from(b)] & TOKEN != 0) {
        return Err(Malformed("an invalid field name"));
    }
    if !value.iter().all(|&b| BYTE_CLASS[usize::from(b)] & VALUE != 0) {
        return Err(Malformed("an invalid field value"));
    }
    if matches!(name, b"connection" | b"transfer-encoding" | b"upgrade" | b"keep-alive" | b"proxy-connection") {
        return Err(Malformed("a connection-specific field"));
    }
    if name == b"te" && value != b"trailers" {
        return Err(Malformed("te other than trailers"));
    }
    Ok(())
}

/// A `tchar` (RFC 9110 §5.6.2), in [`BYTE_CLASS`].
const TOKEN: u8 = 1;
/// A byte a field value may hold: any but the control bytes (HTAB
/// allowed), as `http`'s `HeaderValue` checks.
const VALUE: u8 = 2;

/// Each byte's classes: one table lookup a byte, where comparing with the
/// token punctuation was a search a byte.
static BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        let token = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        let value = (byte >= 0x20 && byte != 0x7f) || byte == b'\t';
        table[b] = if token { TOKEN } else { 0 } | if value { VALUE } else { 0 };
        b += 1;
    }
    table
};

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
        let x_a: Vec<&[u8]> = r.fields.iter().filter(|(n, _)| *n == b"x-a").map(|(_, v)| v).collect();
        assert_eq!(x_a, [b"1", b"2"]);
        assert_eq!(r.fields.len(), 4);
        assert_eq!(r.fields.get(b"accept"), Some(&b"*/*"[..]));
        assert_eq!(r.fields.to_map().get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
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
    fn the_last_authority_is_reused_only_when_the_same() {
        let mut fields = Fields::default();
        for authority in ["a.test", "a.test", "b.test:81", "a.test"] {
            fields.start();
            for (n, v) in [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", "/")] {
                fields.push(n.as_bytes(), v.as_bytes(), 1 << 20);
            }
            let r = fields.request(1, true).unwrap();
            assert_eq!(r.uri.authority().map(|a| a.as_str()), Some(authority));
        }
    }

    #[test]
    fn host_stands_for_a_missing_authority_and_must_agree_with_one() {
        let fields = [(":method", "GET"), (":scheme", "http"), (":path", "/"), ("host", "h.test")];
        assert_eq!(block(&fields).request(1, true).unwrap().uri, "http://h.test/");
        let mut agreeing = GET.to_vec();
        agreeing.push(("host", "A.test"));
        assert_eq!(block(&agreeing).request(1, true).unwrap().uri, "http://a.test/x?y");
        let mut differing = GET.to_vec();
        differing.push(("host", "b.test"));
        assert_eq!(block(&differing).request(1, true).unwrap_err(), Malformed(":authority and host that differ"));
        let neither = [(":method", "GET"), (":scheme", "http"), (":path", "/")];
        assert_eq!(block(&neither).request(1, true).unwrap_err(), Malformed("an invalid request target"));
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
