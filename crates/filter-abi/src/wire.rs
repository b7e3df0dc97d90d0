//! The buffers that cross the boundary (the header's "Buffers"): string
//! lists, field lists, heads and edit lists. Encoding writes into a
//! reusable `Vec`; decoding reads a borrowed slice, checks every length
//! and every name and value, and copies what it keeps. Safe Rust only.

use std::io::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use nuncio_filter::{RequestHead, ResponseHead};

use crate::abi::edit;

/// A buffer from the library is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct WireError(pub(crate) String);

fn err<T>(message: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(message.into()))
}

/// Appends one string-list entry.
pub(crate) fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    // Entries longer than 4 GiB cannot occur: heads are bounded far below.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&bytes[..len as usize]);
}

/// Appends a field list.
pub(crate) fn put_fields(buf: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        put(buf, name.as_str().as_bytes());
        put(buf, value.as_bytes());
    }
}

/// Appends a request head: method, path and query, authority, the
/// client's address, fields.
pub(crate) fn put_request_head(buf: &mut Vec<u8>, head: &RequestHead, client: SocketAddr) {
    put(buf, head.method.as_str().as_bytes());
    put(buf, head.uri.path_and_query().map_or("/", PathAndQuery::as_str).as_bytes());
    put(buf, head.authority.as_ref().map_or("", Authority::as_str).as_bytes());
    // Written in place: no allocation, and no formatting machinery for the
    // usual IPv4 client.
    let at = buf.len();
    put(buf, &[]);
    match client {
        SocketAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                buf.extend_from_slice(digits.format(octet).as_bytes());
            }
            buf.push(b':');
            buf.extend_from_slice(digits.format(v4.port()).as_bytes());
        }
        SocketAddr::V6(_) => {
            let _ = write!(buf, "{client}");
        }
    }
    let len = u32::try_from(buf.len() - at - 4).unwrap_or(0);
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    put_fields(buf, &head.headers);
}

/// Appends a response head: status, fields.
pub(crate) fn put_response_head(buf: &mut Vec<u8>, head: &ResponseHead) {
    put(buf, head.status.as_str().as_bytes());
    put_fields(buf, &head.headers);
}

/// Reads a string list entry by entry.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next entry; an error if the buffer ends inside one.
    pub(crate) fn entry(&mut self) -> Result<&'a [u8], WireError> {
        let Some((len, rest)) = self.rest.split_first_chunk::<4>() else {
            return err("a string list ends inside an entry's length");
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return err(format!("a string list entry says {len} bytes, {} are left", rest.len()));
        }
        let (entry, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(entry)
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        let Some((&b, rest)) = self.rest.split_first() else {
            return err("an edit list ends inside an entry");
        };
        self.rest = rest;
        Ok(b)
    }

    pub(crate) fn text(&mut self, what: &str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.entry()?).or_else(|_| err(format!("{what} is not UTF-8")))
    }
}

fn name(bytes: &[u8]) -> Result<HeaderName, WireError> {
    HeaderName::from_bytes(bytes).or_else(|_| err(format!("invalid field name {:?}", String::from_utf8_lossy(bytes))))
}

fn value(name: &HeaderName, bytes: &[u8]) -> Result<HeaderValue, WireError> {
    HeaderValue::from_bytes(bytes).or_else(|_| err(format!("invalid value for field {name}")))
}

/// Reads a field list.
#[cfg(test)]
pub(crate) fn fields(bytes: &[u8]) -> Result<HeaderMap, WireError> {
    let mut reader = Reader::new(bytes);
    let mut map = HeaderMap::new();
    while !reader.is_empty() {
        let n = name(reader.entry()?)?;
        let v = value(&n, reader.entry()?)?;
        map.append(n, v);
    }
    Ok(map)
}

/// A request head as an HTTP call sends it.
#[derive(Debug)]
pub(crate) struct CallHead {
    pub(crate) method: Method,
    pub(crate) path: PathAndQuery,
    pub(crate) authority: Option<Authority>,
    pub(crate) fields: HeaderMap,
}

/// Reads a call head (an HTTP call's: a request head without the
/// client's address).
pub(crate) fn request_head(bytes: &[u8]) -> Result<CallHead, WireError> {
    let mut reader = Reader::new(bytes);
    let method = Method::from_bytes(reader.entry()?).or_else(|_| err("invalid method"))?;
    let path = reader.text("the path")?;
    let path: PathAndQuery = path.parse().or_else(|_| err(format!("invalid path {path:?}")))?;
    if !path.as_str().starts_with('/') {
        return err(format!("the path {path} does not start with `/`"));
    }
    let authority = match reader.text("the authority")? {
        "" => None,
        a => Some(a.parse().or_else(|_| err(format!("invalid authority {a:?}")))?),
    };
    let mut fields = HeaderMap::new();
    while !reader.is_empty() {
        let n = name(reader.entry()?)?;
        let v = value(&n, reader.entry()?)?;
        fields.append(n, v);
    }
    Ok(CallHead { method, path, authority, fields })
}

/// One change to a head or a field list, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Edit {
    Set(HeaderName, HeaderValue),
    Add(HeaderName, HeaderValue),
    Del(HeaderName),
    Method(Method),
    Path(PathAndQuery),
    Authority(Authority),
    Status(StatusCode),
}

/// Reads and checks an edit list.
pub(crate) fn edits(bytes: &[u8]) -> Result<Vec<Edit>, WireError> {
    let mut reader = Reader::new(bytes);
    let mut out = Vec::new();
    while !reader.is_empty() {
        let op = u32::from(reader.byte()?);
        let e = match op {
            edit::EDIT_SET | edit::EDIT_ADD => {
                let n = name(reader.entry()?)?;
                let v = value(&n, reader.entry()?)?;
                if op == edit::EDIT_SET { Edit::Set(n, v) } else { Edit::Add(n, v) }
            }
            edit::EDIT_DEL => Edit::Del(name(reader.entry()?)?),
            edit::EDIT_METHOD => Edit::Method(Method::from_bytes(reader.entry()?).or_else(|_| err("invalid method"))?),
            edit::EDIT_PATH => {
                let p = reader.text("a path")?;
                let path: PathAndQuery = p.parse().or_else(|_| err(format!("invalid path {p:?}")))?;
                if !path.as_str().starts_with('/') {
                    return err(format!("the path {p:?} does not start with `/`"));
                }
                Edit::Path(path)
            }
            edit::EDIT_AUTHORITY => {
                let a = reader.text("an authority")?;
                Edit::Authority(a.parse().or_else(|_| err(format!("invalid authority {a:?}")))?)
            }
            edit::EDIT_STATUS => {
                let s = reader.text("a status")?;
                let status = s.parse::<u16>().ok().and_then(|s| StatusCode::from_u16(s).ok());
                Edit::Status(status.ok_or_else(|| WireError(format!("invalid status {s:?}")))?)
            }
            other => return err(format!("unknown edit op {other}")),
        };
        out.push(e);
    }
    Ok(out)
}

/// Applies the field edits to `fields` (head edits do not apply to a field
/// list and are skipped).
pub(crate) fn apply_fields(edits: &[Edit], fields: &mut HeaderMap) {
    for e in edits {
        match e {
            Edit::Set(n, v) => {
                fields.insert(n.clone(), v.clone());
            }
            Edit::Add(n, v) => {
                fields.append(n.clone(), v.clone());
            }
            Edit::Del(n) => {
                fields.remove(n);
            }
            Edit::Method(_) | Edit::Path(_) | Edit::Authority(_) | Edit::Status(_) => {}
        }
    }
}

/// Applies edits to a request head. A new authority also replaces a `host`
/// field the head has.
pub(crate) fn apply_request(edits: &[Edit], head: &mut RequestHead) {
    apply_fields(edits, &mut head.headers);
    for e in edits {
        match e {
            Edit::Method(m) => head.method = m.clone(),
            Edit::Path(p) => {
                let mut parts = std::mem::take(&mut head.uri).into_parts();
                parts.path_and_query = Some(p.clone());
                head.uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from(p.clone()));
            }
            Edit::Authority(a) => {
                head.authority = Some(a.clone());
                if head.headers.contains_key(HOST)
                    && let Ok(v) = HeaderValue::from_str(a.as_str())
                {
                    head.headers.insert(HOST, v);
                }
                if head.uri.authority().is_some() {
                    let mut parts = std::mem::take(&mut head.uri).into_parts();
                    parts.authority = Some(a.clone());
                    head.uri = Uri::from_parts(parts).unwrap_or_default();
                }
            }
            _ => {}
        }
    }
}

/// Applies edits to a response head.
pub(crate) fn apply_response(edits: &[Edit], head: &mut ResponseHead) {
    apply_fields(edits, &mut head.headers);
    for e in edits {
        if let Edit::Status(s) = e {
            head.status = *s;
        }
    }
}

/// The fields of a local reply: its edit list's sets and adds.
pub(crate) fn reply_fields(edits: &[Edit]) -> HeaderMap {
    let mut fields = HeaderMap::new();
    apply_fields(edits, &mut fields);
    fields
}

/// Copies a library's bytes into an owned buffer.
pub(crate) fn owned(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        for e in entries {
            put(&mut buf, e);
        }
        buf
    }

    #[test]
    fn a_field_list_round_trips() {
        let mut map = HeaderMap::new();
        map.append("x-a", HeaderValue::from_static("1"));
        map.append("x-a", HeaderValue::from_static("2"));
        map.insert("x-b", HeaderValue::from_bytes(b"\xe9t\xe9").unwrap());
        let mut buf = Vec::new();
        put_fields(&mut buf, &map);
        assert_eq!(fields(&buf).unwrap(), map);
    }

    #[test]
    fn a_request_head_carries_the_clients_address() {
        let head = RequestHead {
            method: Method::GET,
            uri: "/p?q".parse().unwrap(),
            version: http::Version::HTTP_11,
            headers: HeaderMap::new(),
            authority: None,
        };
        for client in ["192.0.2.7:40000", "[2001:db8::1]:8080", "0.0.0.0:0"] {
            let mut buf = Vec::new();
            put_request_head(&mut buf, &head, client.parse().unwrap());
            let mut reader = Reader::new(&buf);
            let entries: Vec<&[u8]> = (0..4).map(|_| reader.entry().unwrap()).collect();
            assert_eq!(entries, [&b"GET"[..], b"/p?q", b"", client.as_bytes()]);
            assert!(reader.is_empty());
        }
    }

    #[test]
    fn truncated_and_bad_buffers_are_errors() {
        let buf = list(&[b"x-a", b"1"]);
        for cut in 1..buf.len() {
            assert!(fields(&buf[..cut]).is_err(), "cut at {cut}");
        }
        assert!(fields(&list(&[b"bad name", b"1"])).is_err());
        assert!(fields(&list(&[b"x-a", b"line\nbreak"])).is_err());
        let mut huge = Vec::new();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(fields(&huge).is_err());
    }

    #[test]
    fn edits_apply_to_a_request_head() {
        let mut buf = vec![edit::EDIT_SET as u8];
        put(&mut buf, b"x-set");
        put(&mut buf, b"yes");
        buf.push(edit::EDIT_DEL as u8);
        put(&mut buf, b"x-drop");
        buf.push(edit::EDIT_PATH as u8);
        put(&mut buf, b"/new?q=1");
        buf.push(edit::EDIT_AUTHORITY as u8);
        put(&mut buf, b"example.org");
        let edits = edits(&buf).unwrap();
        let mut head = RequestHead {
            method: Method::GET,
            uri: "/old".parse().unwrap(),
            version: http::Version::HTTP_11,
            headers: HeaderMap::new(),
            authority: None,
        };
        head.headers.insert("x-drop", HeaderValue::from_static("1"));
        head.headers.insert(HOST, HeaderValue::from_static("old.example"));
        apply_request(&edits, &mut head);
        assert_eq!(head.uri, "/new?q=1");
        assert_eq!(head.headers["x-set"], "yes");
        assert!(!head.headers.contains_key("x-drop"));
        assert_eq!(head.headers[HOST], "example.org");
        assert_eq!(head.authority.unwrap().as_str(), "example.org");
    }

    #[test]
    fn bad_edits_are_refused() {
        for bad in [&[9u8][..], &[edit::EDIT_SET as u8, 1, 0, 0, 0, b' ', 0, 0, 0, 0]] {
            assert!(edits(bad).is_err(), "{bad:?}");
        }
        let mut buf = vec![edit::EDIT_PATH as u8];
        put(&mut buf, b"no-slash");
        assert!(edits(&buf).is_err());
        let mut buf = vec![edit::EDIT_STATUS as u8];
        put(&mut buf, b"99");
        assert!(edits(&buf).is_err());
    }
}
