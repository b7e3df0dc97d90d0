//! What request and response heads share: finding the end of a head in a
//! growing buffer, noting httparse's fields as [`RawFields`], and naming
//! httparse's errors precisely.

use std::mem::MaybeUninit;
use std::sync::LazyLock;

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem::Finder;

use crate::Error;
use crate::framing::{ConnectionOptions, TransferEncoding, list_elements, parse_content_length};
use crate::names::Special;
use crate::raw_fields::{RawFields, offset_in};

/// Up to this many header slots live on the stack; more come from the heap.
const STACK_HEADERS: usize = 128;

/// Runs `f` with `max` uninitialised httparse header slots.
pub(crate) fn with_slots<'b, R>(max: usize, f: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> R) -> R {
    if max <= STACK_HEADERS {
        let mut slots = [const { MaybeUninit::uninit() }; STACK_HEADERS];
        f(&mut slots[..max])
    } else {
        let mut slots = vec![MaybeUninit::uninit(); max];
        f(&mut slots)
    }
}

/// Outcome of looking for the end of a head.
enum Scan {
    /// The first look at this head: parse the first `usize` bytes at once.
    /// Most heads arrive whole in one read, and httparse finds their end
    /// itself; searching for it first (two memmem passes, ~350
    /// instructions a head, `bench/instructions`) would be wasted. If the
    /// head is incomplete, tell [`HeadScan::looked_at`].
    Fresh(usize),
    /// The head is the first `usize` bytes of the buffer.
    Complete(usize),
    /// No complete head yet.
    Incomplete {
        /// Let httparse check what is there: the head's start line just
        /// completed. Garbage (a TLS hello on a cleartext port, another
        /// protocol) is rejected at once.
        check: bool,
        /// The buffer already holds `max_head` bytes without a complete head.
        over_limit: bool,
    },
}

/// Per-connection memory of how far the current head was already searched
/// for its terminating empty line, so a head trickling in one byte per read
/// costs linear, not quadratic, time: httparse runs at most three times per
/// head (first look, start line complete, head complete).
#[derive(Debug, Default, Clone)]
pub(crate) struct HeadScan {
    scanned: usize,
    start_line_checked: bool,
}

impl HeadScan {
    /// Where the head at the front of `buf` ends, if it is complete (or
    /// [`Scan::Fresh`]: parse and see).
    fn scan(&mut self, buf: &mut BytesMut, max_head: usize) -> Scan {
        if self.scanned == 0 {
            // RFC 9112 §2.2: ignore empty lines received before the start line
            // (clients send a stray CRLF after a POST body).
            loop {
                match buf.first() {
                    Some(b'\n') => buf.advance(1),
                    Some(b'\r') if buf.get(1) == Some(&b'\n') => buf.advance(2),
                    _ => break,
                }
            }
            self.start_line_checked = false;
            if buf.len() <= 1 {
                return Scan::Incomplete { check: false, over_limit: buf.len() >= max_head };
            }
            return Scan::Fresh(buf.len().min(max_head));
        }
        let window = buf.len().min(max_head);
        // (Clamped in case the caller consumed bytes in between.)
        let from = self.scanned.min(window);
        if let Some(end) = find_empty_line(&buf[..window], from) {
            self.scanned = 0;
            return Scan::Complete(end);
        }
        let mut check = false;
        if !self.start_line_checked && memchr::memchr(b'\n', &buf[from..window]).is_some() {
            self.start_line_checked = true;
            check = true;
        }
        let over_limit = buf.len() >= max_head;
        self.scanned = if over_limit { 0 } else { window };
        Scan::Incomplete { check, over_limit }
    }

    /// After a [`Scan::Fresh`] look found the head incomplete (and valid so
    /// far): the first `window` bytes of `buf` need no search again.
    /// Returns whether `buf` holds `max_head` bytes already.
    fn looked_at(&mut self, buf: &[u8], window: usize, max_head: usize) -> bool {
        self.start_line_checked = memchr::memchr(b'\n', &buf[..window]).is_some();
        let over_limit = buf.len() >= max_head;
        self.scanned = if over_limit { 0 } else { window };
        over_limit
    }
}

/// One decode step, the same for requests and responses: once the head at
/// the front of `buf` is complete, it is split off and frozen, and returned
/// with what `parse` made of it (its fields not yet
/// [attached](RawFields::attach) to it).
///
/// `parse` parses the head at the start of the bytes it is given: its
/// length and what it made, `None` while incomplete and valid so far, or
/// the error. It also rejects garbage early: it runs on an incomplete head
/// when the head is first seen and when its start line completes.
/// `not_whole`: the error for a head whose end the search found and
/// httparse did not.
///
/// `#[inline]`: as a call of its own it moved each parsed head through its
/// result once more (~150 instructions a request, `bench/instructions`).
#[inline]
pub(crate) fn decode_head<P>(
    scan: &mut HeadScan,
    buf: &mut BytesMut,
    max_head: usize,
    not_whole: Error,
    parse: impl Fn(&[u8]) -> Result<Option<(usize, P)>, Error>,
) -> Result<Option<(P, Bytes)>, Error> {
    match scan.scan(buf, max_head) {
        Scan::Fresh(window) => match parse(&buf[..window])? {
            Some((len, parsed)) => Ok(Some((parsed, buf.split_to(len).freeze()))),
            None if scan.looked_at(buf, window, max_head) => Err(Error::HeadTooLarge),
            None => Ok(None),
        },
        Scan::Incomplete { check, over_limit } => {
            // Within the limit only, as the first look: an error past it is
            // the head's size, whichever way the bytes came (found by the
            // fuzz target `response_head`).
            if check {
                parse(&buf[..buf.len().min(max_head)])?;
            }
            if over_limit {
                return Err(Error::HeadTooLarge);
            }
            Ok(None)
        }
        Scan::Complete(len) => {
            let head = buf.split_to(len).freeze();
            match parse(&head)? {
                Some((parsed_len, parsed)) if parsed_len == len => Ok(Some((parsed, head))),
                _ => Err(not_whole),
            }
        }
    }
}

/// The length up to and including the first empty line (`\n\n` or
/// `\n\r\n`), for an empty line whose final LF is at or after `from`.
#[inline]
pub(crate) fn find_empty_line(buf: &[u8], from: usize) -> Option<usize> {
    static CRLF_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\r\n"));
    static LF_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));
    // Two SIMD passes beat stopping at every LF of a typical head.
    let crlf = from.saturating_sub(2);
    let crlf = CRLF_END.find(&buf[crlf..]).map(|i| crlf + i + 3);
    let lf_window = &buf[..crlf.map_or(buf.len(), |end| end - 1)];
    let lf = from.saturating_sub(1).min(lf_window.len());
    let lf = LF_END.find(&lf_window[lf..]).map(|i| lf + i + 2);
    lf.or(crlf)
}

/// The header fields of a head as received, plus what the codec decides
/// from them.
pub(crate) struct Fields {
    pub(crate) headers: RawFields,
    pub(crate) content_length: Result<Option<u64>, Error>,
    pub(crate) transfer_encoding: TransferEncoding,
    pub(crate) connection: ConnectionOptions,
    /// Where the (last) `Host` value lies in the bytes parsed.
    pub(crate) host: Option<(u32, u32)>,
    pub(crate) host_count: usize,
    pub(crate) expect_continue: bool,
    pub(crate) upgrade_header: bool,
}

/// Fields a decoded head has room for beyond its own: what the proxy adds
/// (forwarding, request id, the time-left field) and a filter or two,
/// without growing the map (a growth reallocates and rehashes every field:
/// ~340 instructions when one `headers` filter added a field to a short
/// request head, with room for 4).
pub(crate) const SPARE_FIELDS: usize = 6;

impl Fields {
    fn new(headers: RawFields) -> Self {
        Fields {
            headers,
            content_length: Ok(None),
            transfer_encoding: TransferEncoding::default(),
            connection: ConnectionOptions::default(),
            host: None,
            host_count: 0,
            expect_continue: false,
            upgrade_header: false,
        }
    }

    /// Notes what a field the codec reads says; `value` is a slice of
    /// `parsed`.
    fn note(&mut self, special: Special, parsed: &[u8], value: &[u8]) {
        match special {
            Special::ContentLength => {
                // Errors wait for `framing()`: a 2xx to CONNECT ignores these.
                let n = parse_content_length(value);
                self.content_length = match (self.content_length, n) {
                    (Err(e), _) | (_, Err(e)) => Err(e),
                    (Ok(Some(prev)), Ok(n)) if prev != n => Err(Error::ConflictingContentLength),
                    (_, Ok(n)) => Ok(Some(n)),
                };
            }
            Special::TransferEncoding => self.transfer_encoding.add(value),
            Special::Host => {
                self.host_count += 1;
                self.host = offset_in(parsed, value);
            }
            Special::Connection => self.connection.add(value),
            Special::Expect => {
                self.expect_continue |= list_elements(value).any(|e| e.eq_ignore_ascii_case(b"100-continue"));
            }
            Special::Upgrade => self.upgrade_header = true,
        }
    }

    /// Framing from Content-Length / Transfer-Encoding (RFC 9112 §6.1-6.3),
    /// `None` when neither is present.
    pub(crate) fn framing(&self, http11: bool) -> Result<Option<crate::BodyFraming>, Error> {
        if self.transfer_encoding.present {
            if !http11 {
                return Err(Error::TransferEncodingHttp10);
            }
            if !matches!(self.content_length, Ok(None)) {
                return Err(Error::ContentLengthAndTransferEncoding);
            }
            self.transfer_encoding.check()?;
            return Ok(Some(crate::BodyFraming::Chunked));
        }
        Ok(self.content_length?.map(crate::BodyFraming::Length))
    }
}

/// The fields as received ([`RawFields`], not yet
/// [attached](RawFields::attach) to their head): no map, no name lookup,
/// no value check beyond httparse's. `parsed`: the bytes httparse parsed,
/// which `headers` are slices of.
pub(crate) fn build_raw_fields(parsed: &[u8], headers: &[httparse::Header<'_>]) -> Result<Fields, Error> {
    let mut f = Fields::new(RawFields::with_capacity(headers.len()));
    for h in headers {
        let known = crate::names::classify(h.name.as_bytes());
        if let Some(special) = known.special {
            f.note(special, parsed, h.value);
        }
        f.headers.push_received(parsed, h.name.as_bytes(), h.value, known).ok_or(Error::HeadTooLarge)?;
    }
    f.headers.connection_names_others = f.connection.names_other;
    Ok(f)
}

fn skip_empty_lines(mut head: &[u8]) -> &[u8] {
    loop {
        match head {
            [b'\n', rest @ ..] | [b'\r', b'\n', rest @ ..] => head = rest,
            _ => return head,
        }
    }
}

/// Names an httparse error. `response` selects the start-line flavour.
pub(crate) fn classify(head: &[u8], err: httparse::Error, response: bool) -> Error {
    use httparse::Error as H;
    let start_line_error = if response { Error::InvalidStatusLine } else { Error::InvalidRequestLine };
    let head = skip_empty_lines(head);
    match err {
        H::TooManyHeaders => Error::TooManyHeaders,
        H::Version => {
            let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
            let token =
                if response { line.split(|&b| b == b' ').next() } else { line.splitn(3, |&b| b == b' ').nth(2) };
            if token.is_some_and(unsupported_version) { Error::UnsupportedVersion } else { start_line_error }
        }
        H::Token | H::Status => start_line_error,
        H::HeaderName | H::HeaderValue | H::NewLine => {
            let Some(nl) = memchr::memchr(b'\n', head) else {
                return start_line_error;
            };
            let first = &head[..nl];
            let first = first.strip_suffix(b"\r").unwrap_or(first);
            let start_line_ok = if response {
                !first.contains(&b'\r')
            } else {
                // httparse got past the start line only if it is exactly
                // `method SP target SP HTTP/1.x`.
                first.iter().filter(|&&b| b == b' ').count() == 2
                    && (first.ends_with(b" HTTP/1.1") || first.ends_with(b" HTTP/1.0"))
            };
            if !start_line_ok {
                return start_line_error;
            }
            classify_field_error(&head[nl + 1..])
        }
        // httparse's error enum may grow.
        #[allow(unreachable_patterns)]
        _ => start_line_error,
    }
}

/// `HTTP/` DIGIT followed by anything but `1.0` / `1.1`: a version we can
/// name but do not speak (505) rather than garbage (400). Decided on the
/// bytes httparse saw before failing, so it does not depend on how the
/// head was split across reads.
fn unsupported_version(token: &[u8]) -> bool {
    let token = token.strip_suffix(b"\r").unwrap_or(token);
    match token {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor, ..] => minor.is_ascii_digit(),
        [b'H', b'T', b'T', b'P', b'/', major, ..] => major.is_ascii_digit() && *major != b'1',
        _ => false,
    }
}

fn classify_field_error(fields: &[u8]) -> Error {
    for line in fields.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.first() {
            None => break,
            Some(b' ' | b'\t') => return Error::ObsFold,
            Some(_) => {}
        }
        let name_len = line.iter().position(|&b| !is_token(b)).unwrap_or(line.len());
        let after = &line[name_len..];
        let ws = after.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        if name_len > 0 && ws > 0 && matches!(after.get(ws), None | Some(b':')) {
            return Error::WhitespaceBeforeColon;
        }
    }
    Error::InvalidHeader
}

/// RFC 9110 `tchar`.
#[inline]
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_line_search() {
        assert_eq!(find_empty_line(b"a\r\n\r\nb", 0), Some(5));
        assert_eq!(find_empty_line(b"a\n\nb", 0), Some(3));
        assert_eq!(find_empty_line(b"a\r\n\nb", 0), Some(4));
        assert_eq!(find_empty_line(b"a\r\nb\r\n", 0), None);
        // Resuming mid-terminator still sees the bytes before `from`.
        assert_eq!(find_empty_line(b"a\r\n\r\n", 4), Some(5));
    }

    #[test]
    fn version_names() {
        assert!(unsupported_version(b"HTTP/2.0"));
        assert!(unsupported_version(b"HTTP/1.2\r"));
        assert!(unsupported_version(b"HTTP/0.9"));
        assert!(unsupported_version(b"HTTP/3"));
        assert!(!unsupported_version(b"HTTP/x"));
        assert!(!unsupported_version(b"HTTP/1x"));
        assert!(!unsupported_version(b"FOO/1.1"));
    }
}
