//! The bits of HTTP/1.1 the raw client and the raw upstream parse
//! themselves, independently of nuncio's codec.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Where `needle` first starts in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The start line and the fields of a head (ending in CRLF CRLF).
pub(crate) fn parse_head(head: &[u8]) -> (String, HeaderMap) {
    let text = std::str::from_utf8(head).expect("an ASCII head");
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or("").to_owned();
    let mut headers = HeaderMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("bad field line {line:?}"));
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|_| panic!("bad field name {name:?}"));
        headers.append(name, HeaderValue::from_str(value.trim()).expect("a valid field value"));
    }
    (start, headers)
}

/// Whether the head says `Transfer-Encoding: chunked`.
pub(crate) fn is_chunked(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::TRANSFER_ENCODING).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
}

/// The head's `Content-Length`, if it has one.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(http::header::CONTENT_LENGTH).map(|v| v.to_str().unwrap().parse().expect("a numeric content-length"))
}

/// The size on a chunk-size line (extensions ignored).
pub(crate) fn chunk_size(line: &[u8]) -> usize {
    let text = std::str::from_utf8(line).unwrap().trim_end();
    let digits = text.split(';').next().unwrap_or("");
    usize::from_str_radix(digits, 16).unwrap_or_else(|_| panic!("bad chunk size line {text:?}"))
}
