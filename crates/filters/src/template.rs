//! Field names and field-value templates in a filter's config: checked
//! once, when the config is loaded, so that rendering on the worker cannot
//! produce an invalid field.
//!
//! A template is text with variables in Envoy's syntax (the subset the
//! `headers` filter documents): `%DOWNSTREAM_REMOTE_ADDRESS%`,
//! `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`, `%REQ(name)%`, and `%%` for a
//! literal `%`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use nuncio_filter::RequestHead;
use serde::{Deserialize, Deserializer};

/// Fields that frame the message or belong to one connection hop: the
/// proxy sets and strips them itself, so a filter's config may not name
/// them (changing them could desynchronise framing).
const PROXY_FIELDS: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A field name from the config: valid, lower-cased, not one of
/// [`PROXY_FIELDS`]. Kept as `'static` text ([`nuncio_filter::field_name`]):
/// every stream that sets it clones it, and a clone of a name built from
/// bytes would write a count shared by all workers.
pub(crate) fn field_name(text: &str) -> Result<HeaderName, String> {
    let name = nuncio_filter::field_name(text)
        .map_err(|_| format!("invalid field name {text:?} (a token: letters, digits and !#$%&'*+-.^_`|~)"))?;
    if PROXY_FIELDS.contains(&name.as_str()) {
        return Err(format!(
            "`{name}` is managed by the proxy (framing and hop-by-hop fields may not be set, added or removed)"
        ));
    }
    Ok(name)
}

/// A checked field name, as a config field.
#[derive(Debug, Clone)]
pub(crate) struct Name(pub(crate) HeaderName);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        field_name(&text).map(Name).map_err(serde::de::Error::custom)
    }
}

/// Where a `%REQ(...)%` reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A request field (the first, if repeated).
    Field(HeaderName),
    /// `:method`.
    Method,
    /// `:path`: the path and query.
    Path,
    /// `:authority`: HTTP/2's `:authority`, or the `Host` field.
    Authority,
    /// `:scheme`.
    Scheme,
}

/// What a template's `%REQ(...)%` variables read.
pub(crate) trait Lookup {
    /// The bytes of `source`, if the request has it.
    fn get(&self, source: &Source) -> Option<&[u8]>;
}

impl Lookup for RequestHead {
    fn get(&self, source: &Source) -> Option<&[u8]> {
        match source {
            Source::Field(name) => self.headers.get(name).map(HeaderValue::as_bytes),
            Source::Method => Some(self.method.as_str().as_bytes()),
            Source::Path => Some(self.uri.path_and_query().map_or("/", |pq| pq.as_str()).as_bytes()),
            Source::Authority => self.authority.as_ref().map(|a| a.as_str().as_bytes()),
            Source::Scheme => Some(self.scheme().as_bytes()),
        }
    }
}

impl Source {
    /// The value of `source` in `head`, as an owned field value (for a
    /// response template that reads the request).
    pub(crate) fn capture(&self, head: &RequestHead) -> Option<HeaderValue> {
        match self {
            // A field value is cheap to clone (shared bytes).
            Source::Field(name) => head.headers.get(name).cloned(),
            other => head.get(other).and_then(|bytes| HeaderValue::from_bytes(bytes).ok()),
        }
    }
}

/// A piece of a template.
#[derive(Debug, Clone)]
enum Part {
    Literal(Bytes),
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`: the client's `ip:port`.
    RemoteAddress,
    /// `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`: the client's IP.
    RemoteIp,
    /// `%REQ(name)%`: empty when absent.
    Request(Source),
}

/// Room for any `ip:port` a `SocketAddr` prints: the longest,
/// `[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535`, is 58 bytes.
const MAX_ADDRESS_LEN: usize = 64;

/// A field value with variables, checked when the config is read.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    parts: Box<[Part]>,
    /// The value itself when there is no variable (rendering is a clone).
    constant: Option<HeaderValue>,
}

impl Template {
    /// Reads `text`; the error says what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        if text.is_empty() {
            return Err("empty value (to drop a field, use `remove`)".to_owned());
        }
        if text.starts_with([' ', '\t']) || text.ends_with([' ', '\t']) {
            return Err(format!(
                "value {text:?} begins or ends with whitespace, which is dropped on the wire (RFC 9110 §5.5)"
            ));
        }
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find('%') {
            literal.extend_from_slice(&rest.as_bytes()[..start]);
            let after = &rest[start + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                literal.push(b'%');
                rest = tail;
                continue;
            }
            let Some(end) = after.find('%') else {
                return Err(format!("unterminated variable in {text:?} (write `%%` for a literal `%`)"));
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(checked_literal(std::mem::take(&mut literal), text)?));
            }
            parts.push(variable(&after[..end])?);
            rest = &after[end + 1..];
        }
        literal.extend_from_slice(rest.as_bytes());
        if !literal.is_empty() {
            parts.push(Part::Literal(checked_literal(literal, text)?));
        }
        let constant = match parts.as_slice() {
            // A constant is cloned into every stream: kept as `'static`
            // text where it can be, so the clone writes no shared count.
            [Part::Literal(bytes)] => match std::str::from_utf8(bytes).ok().and_then(nuncio_filter::field_value) {
                Some(value) => Some(value),
                None => Some(HeaderValue::from_maybe_shared(bytes.clone()).map_err(|_| invalid(text))?),
            },
            _ => None,
        };
        Ok(Template { parts: parts.into(), constant })
    }

    /// The `%REQ(...)%` sources the template reads.
    pub(crate) fn sources(&self) -> impl Iterator<Item = &Source> {
        self.parts.iter().filter_map(|part| match part {
            Part::Request(source) => Some(source),
            _ => None,
        })
    }

    /// The value for a stream; `None` when it renders empty (the field is
    /// then not written, as in Envoy).
    ///
    /// A constant is a clone (no allocation); otherwise one buffer of the
    /// exact size (an upper bound for addresses) is filled and frozen into
    /// the value.
    pub(crate) fn render(&self, client: SocketAddr, request: &(impl Lookup + ?Sized)) -> Option<HeaderValue> {
        if let Some(value) = &self.constant {
            return Some(value.clone());
        }
        let len: usize = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Literal(bytes) => bytes.len(),
                Part::RemoteAddress | Part::RemoteIp => MAX_ADDRESS_LEN,
                Part::Request(source) => request.get(source).map_or(0, <[u8]>::len),
            })
            .sum();
        let mut buf = BytesMut::with_capacity(len);
        for part in &self.parts {
            match part {
                Part::Literal(bytes) => buf.extend_from_slice(bytes),
                Part::RemoteAddress => write_address(&mut buf, client),
                Part::RemoteIp => write_ip(&mut buf, client.ip()),
                Part::Request(source) => buf.extend_from_slice(request.get(source).unwrap_or_default()),
            }
        }
        if buf.is_empty() {
            return None;
        }
        // Valid by construction (checked literals, addresses, and bytes
        // that were valid values already); checked anyway, never panics.
        HeaderValue::from_maybe_shared(buf.freeze()).ok()
    }
}

/// Writes `ip` as `Display` does; IPv4 without the formatting machinery
/// (the common case, several times faster).
fn write_ip(buf: &mut BytesMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.extend_from_slice(b".");
                }
                write_decimal(buf, u16::from(octet));
            }
        }
        // Writing to a `BytesMut` cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(buf, "{v6}");
        }
    }
}

/// Writes `address` as `Display` does (`ip:port`, `[ip]:port`).
fn write_address(buf: &mut BytesMut, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            write_ip(buf, IpAddr::V4(*v4.ip()));
            buf.extend_from_slice(b":");
            write_decimal(buf, v4.port());
        }
        SocketAddr::V6(v6) => {
            let _ = write!(buf, "{v6}");
        }
    }
}

fn write_decimal(buf: &mut BytesMut, n: u16) {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Template::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn invalid(text: &str) -> String {
    format!("invalid field value {text:?}")
}

/// A literal part, checked against the field-value rules.
fn checked_literal(bytes: Vec<u8>, text: &str) -> Result<Bytes, String> {
    if let Some(bad) = bytes.iter().find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!(
            "value {text:?} contains the control character {:?}, not allowed in a field",
            *bad as char
        ));
    }
    HeaderValue::from_bytes(&bytes).map_err(|_| invalid(text))?;
    Ok(Bytes::from(bytes))
}

/// The variable between two `%`.
fn variable(name: &str) -> Result<Part, String> {
    match name {
        "DOWNSTREAM_REMOTE_ADDRESS" => return Ok(Part::RemoteAddress),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => return Ok(Part::RemoteIp),
        _ => {}
    }
    let Some(arg) = name.strip_prefix("REQ(").and_then(|rest| rest.strip_suffix(')')) else {
        return Err(format!(
            "unknown variable `%{name}%` (use %DOWNSTREAM_REMOTE_ADDRESS%, \
             %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% or %REQ(name)%; %% for a literal %)"
        ));
    };
    let source = match arg.to_ascii_lowercase().as_str() {
        ":method" => Source::Method,
        ":path" => Source::Path,
        ":authority" => Source::Authority,
        ":scheme" => Source::Scheme,
        _ => Source::Field(
            HeaderName::from_bytes(arg.as_bytes()).map_err(|_| format!("invalid field name {arg:?} in `%{name}%`"))?,
        ),
    };
    Ok(Part::Request(source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> RequestHead {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("ada"));
        RequestHead {
            method: http::Method::POST,
            uri: "/a/b?c=d".parse().unwrap(),
            version: http::Version::HTTP_11,
            headers,
            authority: Some("shop.example:8080".parse().unwrap()),
        }
    }

    fn render(text: &str) -> Option<String> {
        let client: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        Template::parse(text).unwrap().render(client, &head()).map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn renders_variables() {
        assert_eq!(render("plain").as_deref(), Some("plain"));
        assert_eq!(render("100%%").as_deref(), Some("100%"));
        assert_eq!(render("%DOWNSTREAM_REMOTE_ADDRESS%").as_deref(), Some("192.0.2.7:5555"));
        assert_eq!(render("ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%;").as_deref(), Some("ip=192.0.2.7;"));
        assert_eq!(render("%REQ(X-User)%/%REQ(x-absent)%").as_deref(), Some("ada/"));
        assert_eq!(
            render("%REQ(:METHOD)% %REQ(:scheme)%://%REQ(:authority)%%REQ(:path)%").as_deref(),
            Some("POST http://shop.example:8080/a/b?c=d")
        );
        // Renders empty: not written.
        assert_eq!(render("%REQ(x-absent)%"), None);
    }

    #[test]
    fn addresses_render_as_display_does() {
        for text in ["0.0.0.0:0", "255.255.255.255:65535", "10.20.3.4:80", "[::1]:8080", "[2001:db8::1%7]:1"] {
            let address: SocketAddr = text.parse().unwrap();
            let mut buf = BytesMut::new();
            write_address(&mut buf, address);
            assert_eq!(&buf[..], address.to_string().as_bytes());
            let mut buf = BytesMut::new();
            write_ip(&mut buf, address.ip());
            assert_eq!(&buf[..], address.ip().to_string().as_bytes());
        }
    }

    #[test]
    fn ipv6_clients_render_bracketed() {
        let client: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let t = Template::parse("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%").unwrap();
        assert_eq!(t.render(client, &head()).unwrap(), "[2001:db8::1]:443 2001:db8::1");
    }

    #[test]
    fn refuses_templates_that_cannot_make_a_valid_value() {
        let error = |text: &str| Template::parse(text).unwrap_err();
        assert!(error("").contains("empty value"));
        assert!(error("a\nb").contains("control character"), "{}", error("a\nb"));
        assert!(error(" a").contains("whitespace"));
        assert!(error("50%").contains("unterminated"));
        assert!(error("%UPSTREAM_HOST%").contains("unknown variable `%UPSTREAM_HOST%`"));
        assert!(error("%REQ(a b)%").contains("invalid field name \"a b\""));
        assert!(error("%REQ()%").contains("invalid field name"));
        assert!(error("%REQ(x):10%").contains("unknown variable"));
    }

    #[test]
    fn field_names_are_checked_and_proxy_fields_refused() {
        assert_eq!(field_name("X-Trace").unwrap(), "x-trace");
        assert!(field_name("bad name").unwrap_err().contains("invalid field name"));
        assert!(field_name(":path").unwrap_err().contains("invalid field name"));
        assert!(field_name("Transfer-Encoding").unwrap_err().contains("managed by the proxy"));
        assert!(field_name("content-length").unwrap_err().contains("managed by the proxy"));
    }
}
