//! Message framing (RFC 9112 §6) and connection-level header helpers.

use http::header::{self, HeaderMap, HeaderName};

use crate::Error;

/// How the body of a message is delimited, decided once from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body follows the head.
    None,
    /// Exactly this many bytes follow (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Responses only: the body runs until the upstream closes the
    /// connection (no Content-Length, no chunked). The connection cannot be
    /// reused afterwards.
    UntilClose,
}

/// Header fields that apply to one connection only and must not be
/// forwarded (RFC 9110 §7.6.1), besides those named in `Connection`.
pub const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// [`HOP_BY_HOP`] as one value: each use of a `const` array of
/// `HeaderName`s builds and drops a copy.
static HOP_BY_HOP_FIELDS: [HeaderName; 7] = HOP_BY_HOP;

/// OWS = *( SP / HTAB )
#[inline]
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The elements of a comma-separated field value, OWS-trimmed (empty
/// elements included, so callers can decide about them).
#[inline]
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// Parses one Content-Length field value: `1*DIGIT`, or a comma list of
/// identical `1*DIGIT` values (RFC 9110 §8.6 lets a recipient merge those).
pub(crate) fn parse_content_length(value: &[u8]) -> Result<u64, Error> {
    let mut result = None;
    for element in list_elements(value) {
        let n = parse_decimal(element).ok_or(Error::InvalidContentLength)?;
        match result {
            None => result = Some(n),
            Some(prev) if prev == n => {}
            Some(_) => return Err(Error::ConflictingContentLength),
        }
    }
    result.ok_or(Error::InvalidContentLength)
}

/// `1*DIGIT` into a u64, rejecting signs, spaces, hex and overflow.
#[inline]
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Accumulates the Transfer-Encoding field lines of one message.
#[derive(Default)]
pub(crate) struct TransferEncoding {
    pub(crate) present: bool,
    last_is_chunked: bool,
    chunked_seen: bool,
    other_coding: bool,
    error: Option<Error>,
}

impl TransferEncoding {
    /// Adds one field line.
    pub(crate) fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in list_elements(value) {
            if coding.is_empty() {
                // `Transfer-Encoding: ,chunked` and friends: reject rather than
                // guess what the next hop makes of it.
                self.error.get_or_insert(Error::NotChunkedLast);
            } else if coding.eq_ignore_ascii_case(b"chunked") {
                if self.chunked_seen {
                    self.error.get_or_insert(Error::ChunkedRepeated);
                }
                self.chunked_seen = true;
                self.last_is_chunked = true;
            } else {
                self.other_coding = true;
                self.last_is_chunked = false;
            }
        }
    }

    /// The verdict once every field line was added: `Ok(())` means the
    /// message is chunked.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if !self.last_is_chunked {
            return Err(Error::NotChunkedLast);
        }
        if self.other_coding {
            return Err(Error::UnsupportedTransferCoding);
        }
        Ok(())
    }
}

/// The `Connection` options the codec itself acts on.
#[derive(Default, Clone, Copy)]
pub(crate) struct ConnectionOptions {
    pub(crate) close: bool,
    pub(crate) keep_alive: bool,
    pub(crate) upgrade: bool,
    /// An option names a field that is not hop-by-hop by itself (which a
    /// proxy removes too).
    pub(crate) names_other: bool,
}

impl ConnectionOptions {
    pub(crate) fn add(&mut self, value: &[u8]) {
        // A value is mostly one option (an upstream's `keep-alive` on
        // every response): recognised whole first, without the split (~200
        // instructions a response for `keep-alive` split and compared byte
        // by byte, ~40 so).
        if self.add_known(value) {
            return;
        }
        for token in list_elements(value) {
            if !self.add_known(token) && !token.is_empty() && !crate::raw_fields::is_hop_by_hop(token) {
                self.names_other = true;
            }
        }
    }

    /// Sets the flag of `token` if it is an option the codec acts on, and
    /// says whether it was: its length picks the option it could be, then
    /// one comparison, a word at a time.
    fn add_known(&mut self, token: &[u8]) -> bool {
        let is = |option: &[u8]| crate::names::eq_lowercase(token, option);
        let flag = match token.len() {
            5 if is(b"close") => &mut self.close,
            10 if is(b"keep-alive") => &mut self.keep_alive,
            7 if is(b"upgrade") => &mut self.upgrade,
            _ => return false,
        };
        *flag = true;
        true
    }

    /// Persistence per RFC 9112 §9.3: `close` wins; HTTP/1.1 defaults to
    /// persistent, HTTP/1.0 only with `keep-alive`.
    pub(crate) fn keep_alive(&self, http11: bool) -> bool {
        !self.close && (http11 || self.keep_alive)
    }
}

/// The options listed in every `Connection` field of `headers`, OWS-trimmed
/// and non-empty, as written (compare case-insensitively). The fields they
/// name are hop-by-hop too (RFC 9110 §7.6.1). Values that are not UTF-8 are
/// skipped.
pub fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim_matches([' ', '\t'])))
        .filter(|t| !t.is_empty())
}

/// Removes the [`HOP_BY_HOP`] fields and every field named in `Connection`
/// from `headers`, as a proxy must before forwarding (RFC 9110 §7.6.1).
///
/// A client can name any end-to-end field in `Connection` to have it
/// stripped; that is what the RFC asks for, so anything the proxy must
/// guarantee (Host, forwarding headers) has to be set *after* this call. An
/// upgrade being forwarded needs `Connection: upgrade` and `Upgrade` put back.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One look at the names first, then a `remove` (which hashes) only for
    // what is there: most messages carry none of these but `Connection`.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP_FIELDS.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // `Connection` is HOP_BY_HOP[0]. Each of its values is cloned (shared
        // bytes, no copy) so that its tokens can be read while fields are
        // removed; there is seldom more than one.
        let mut line = 0;
        while let Some(value) = headers.get_all(header::CONNECTION).iter().nth(line).cloned() {
            line += 1;
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(|t| t.trim_matches([' ', '\t'])).filter(|t| !t.is_empty()) {
                // A token naming a hop-by-hop field (`keep-alive`,
                // `upgrade`, ...) needs no lookup: the loop below removes
                // that field if the first pass saw it.
                if HOP_BY_HOP_FIELDS.iter().any(|h| h.as_str().eq_ignore_ascii_case(token)) {
                    continue;
                }
                // By `&str`: looked up without allocating a name; one that
                // does not parse is in no map.
                headers.remove(token);
            }
        }
    }
    for (i, name) in HOP_BY_HOP_FIELDS.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn connection_options_whole_or_listed_in_any_case() {
        let options = |value: &str| {
            let mut options = ConnectionOptions::default();
            options.add(value.as_bytes());
            (options.close, options.keep_alive, options.upgrade, options.names_other)
        };
        // One option, recognised whole.
        assert_eq!(options("keep-alive"), (false, true, false, false));
        assert_eq!(options("Keep-Alive"), (false, true, false, false));
        assert_eq!(options("close"), (true, false, false, false));
        assert_eq!(options("CLOSE"), (true, false, false, false));
        // The same lengths, other names: fields the connection names.
        assert_eq!(options("keep-alivf"), (false, false, false, true));
        assert_eq!(options("clone"), (false, false, false, true));
        // Lists, with OWS and empty elements.
        assert_eq!(options("close, Upgrade"), (true, false, true, false));
        assert_eq!(options(" keep-alive ,,x-private"), (false, true, false, true));
        assert_eq!(options("upgrade,te"), (false, false, true, false));
        assert_eq!(options(""), (false, false, false, false));
    }

    #[test]
    fn hop_by_hop_fields_and_the_ones_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("host", "a"),
            ("connection", "close, X-Custom"),
            ("connection", "keep-alive,,bad name"),
            ("x-custom", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("x-kept", "2"),
        ] {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        remove_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(left, ["host", "x-kept"]);

        // Nothing to remove: nothing changes.
        let mut plain = HeaderMap::new();
        plain.insert(header::HOST, HeaderValue::from_static("a"));
        remove_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_content_length(b"0"), Ok(0));
        assert_eq!(parse_content_length(b"0005"), Ok(5));
        assert_eq!(parse_content_length(b"5, 5"), Ok(5));
        assert_eq!(parse_content_length(b"5,5 ,\t5"), Ok(5));
        assert_eq!(parse_content_length(b"18446744073709551615"), Ok(u64::MAX));
        for bad in [&b""[..], b"+5", b"-1", b"0x5", b"5 5", b"5,", b",5", b"5,,5", b"1e3", b"18446744073709551616"] {
            assert_eq!(
                parse_content_length(bad),
                Err(Error::InvalidContentLength),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_content_length(b"5, 6"), Err(Error::ConflictingContentLength));
    }

    fn te(values: &[&str]) -> Result<(), Error> {
        let mut t = TransferEncoding::default();
        for v in values {
            t.add(v.as_bytes());
        }
        t.check()
    }

    #[test]
    fn transfer_encoding_values() {
        assert_eq!(te(&["chunked"]), Ok(()));
        assert_eq!(te(&["Chunked "]), Ok(()));
        assert_eq!(te(&["chunked", "gzip"]), Err(Error::NotChunkedLast));
        assert_eq!(te(&["chunked, chunked"]), Err(Error::ChunkedRepeated));
        assert_eq!(te(&["chunked", "chunked"]), Err(Error::ChunkedRepeated));
        assert_eq!(te(&["gzip, chunked"]), Err(Error::UnsupportedTransferCoding));
        assert_eq!(te(&["identity"]), Err(Error::NotChunkedLast));
        assert_eq!(te(&[",chunked"]), Err(Error::NotChunkedLast));
        assert_eq!(te(&["chunked;a=b"]), Err(Error::NotChunkedLast));
        assert_eq!(te(&[""]), Err(Error::NotChunkedLast));
    }

    #[test]
    fn hop_by_hop_removal() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, X-Secret , keep-alive".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        let tokens: Vec<_> = connection_tokens(&h).collect();
        assert_eq!(tokens, ["close", "X-Secret", "keep-alive"]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
