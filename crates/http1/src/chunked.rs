//! Incremental decoding of the chunked transfer coding (RFC 9112 §7.1).

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::head::find_empty_line;
use crate::{BodyEvent, Error, Limits};

/// At most this many hex digits in a chunk size (a u64).
const MAX_SIZE_DIGITS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataCrlf,
    /// After the last chunk: trailer fields or the final CRLF.
    Trailers,
    /// Trailers were returned; `End` is next.
    EndPending,
    /// `End` was returned.
    Done,
}

/// Decodes one chunked body incrementally.
///
/// Data is returned as it arrives (a chunk split across reads yields several
/// [`BodyEvent::Data`]), each a zero-copy split of the caller's buffer. The
/// syntax is checked strictly: CRLF (never a bare LF) after the size line,
/// the data and the trailer fields; at most 16 hex digits; extensions are
/// accepted and dropped, but their bytes count against
/// `Limits::max_chunk_ext_bytes` for the whole body and may not contain
/// control characters; trailers are bounded by `max_head_bytes` and
/// `max_headers`.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    limits: Limits,
    ext_bytes: usize,
    /// How far the current size line / trailer section was searched already.
    scanned: usize,
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new(limits: Limits) -> Self {
        ChunkedDecoder { state: State::Size, limits, ext_bytes: 0, scanned: 0 }
    }

    /// Whether [`BodyEvent::End`] was returned.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes what it can from the front of `buf` and returns the next
    /// event, or `Ok(None)` when more bytes are needed (or after `End`:
    /// bytes left in `buf` then belong to the next message).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BodyEvent>, Error> {
        loop {
            match self.state {
                State::Size => {
                    let Some(size) = self.size_line(buf)? else {
                        return Ok(None);
                    };
                    self.state = if size == 0 { State::Trailers } else { State::Data(size) };
                }
                State::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
                    let left = remaining - n as u64;
                    self.state = if left == 0 { State::DataCrlf } else { State::Data(left) };
                    return Ok(Some(BodyEvent::Data(buf.split_to(n).freeze())));
                }
                State::DataCrlf => match buf.get(..2) {
                    Some(b"\r\n") => {
                        buf.advance(2);
                        self.state = State::Size;
                    }
                    Some(_) => return Err(Error::MissingChunkCrlf),
                    None if buf.first().is_some_and(|&b| b != b'\r') => {
                        return Err(Error::MissingChunkCrlf);
                    }
                    None => return Ok(None),
                },
                State::Trailers => return self.trailers(buf),
                State::EndPending => {
                    self.state = State::Done;
                    return Ok(Some(BodyEvent::End));
                }
                State::Done => return Ok(None),
            }
        }
    }

    /// `chunk-size [ chunk-ext ] CRLF`, consumed whole or not at all.
    fn size_line(&mut self, buf: &mut BytesMut) -> Result<Option<u64>, Error> {
        let digits = buf.iter().take(MAX_SIZE_DIGITS + 1).take_while(|b| b.is_ascii_hexdigit()).count();
        if digits > MAX_SIZE_DIGITS {
            return Err(Error::ChunkSizeTooLarge);
        }
        if digits == 0 && !buf.is_empty() {
            return Err(Error::InvalidChunkSize);
        }
        let ext_budget = self.limits.max_chunk_ext_bytes - self.ext_bytes;
        let from = self.scanned.min(buf.len());
        let lf = memchr::memchr(b'\n', &buf[from..]).map(|i| i + from);
        // The same checks, in the same order, whether or not the line is
        // complete yet, so the verdict does not depend on how it was split.
        // Of two violations, the one at the earlier byte wins: that is the one
        // a byte-by-byte feed meets first.
        let after_digits = &buf[digits..lf.unwrap_or(buf.len())];
        let bws = after_digits.len() - skip_bws(after_digits).len();
        let syntax_error_at = match after_digits.get(bws) {
            None | Some(b';') => None,
            // The CR of the line's CRLF, right after the digits.
            Some(b'\r') if bws == 0 && after_digits.len() == 1 => None,
            Some(_) => Some(bws),
        };
        let budget_error_at = (after_digits.len() > ext_budget + 1).then_some(ext_budget + 1);
        match (syntax_error_at, budget_error_at) {
            (Some(s), Some(b)) if b < s => return Err(Error::InvalidChunkExtension),
            (Some(_), _) => return Err(Error::InvalidChunkSize),
            (None, Some(_)) => return Err(Error::InvalidChunkExtension),
            (None, None) => {}
        }
        let Some(lf) = lf else {
            self.scanned = buf.len();
            return Ok(None);
        };
        self.scanned = 0;
        let Some(rest) = after_digits.strip_suffix(b"\r") else {
            return Err(Error::MissingChunkCrlf);
        };
        if rest.len() > ext_budget || rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Error::InvalidChunkExtension);
        }
        self.ext_bytes += rest.len();
        let size = buf[..digits].iter().fold(0u64, |n, &b| (n << 4) | u64::from(hex_value(b)));
        buf.advance(lf + 1);
        Ok(Some(size))
    }

    /// The trailer section and the final CRLF.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<BodyEvent>, Error> {
        match buf.first() {
            None => return Ok(None),
            Some(b'\r') => match buf.get(1) {
                None => return Ok(None),
                Some(b'\n') => {
                    buf.advance(2);
                    self.state = State::Done;
                    return Ok(Some(BodyEvent::End));
                }
                Some(_) => return Err(Error::MissingChunkCrlf),
            },
            Some(b'\n') => return Err(Error::MissingChunkCrlf),
            Some(_) => {}
        }
        let max = self.limits.max_head_bytes;
        let window = buf.len().min(max);
        let Some(len) = find_empty_line(&buf[..window], self.scanned.min(window)) else {
            if buf.len() >= max {
                return Err(Error::TrailersTooLarge);
            }
            self.scanned = window;
            return Ok(None);
        };
        self.scanned = 0;
        let section = buf.split_to(len).freeze();
        let trailers = parse_trailers(&section, self.limits.max_headers)?;
        self.state = State::EndPending;
        Ok(Some(BodyEvent::Trailers(trailers)))
    }
}

/// BWS = *( SP / HTAB )
fn skip_bws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// `*( field-line CRLF ) CRLF`, CRLF strictly.
fn parse_trailers(section: &Bytes, max_headers: usize) -> Result<HeaderMap, Error> {
    // Every LF must follow a CR: no bare-LF line endings inside a body.
    if memchr::memchr_iter(b'\n', section).any(|i| i == 0 || section[i - 1] != b'\r') {
        return Err(Error::MissingChunkCrlf);
    }
    let mut slots = vec![httparse::EMPTY_HEADER; max_headers];
    let parsed = match httparse::parse_headers(section, &mut slots) {
        Ok(httparse::Status::Complete((n, parsed))) if n == section.len() => parsed,
        Err(httparse::Error::TooManyHeaders) => return Err(Error::TrailersTooLarge),
        _ => return Err(Error::InvalidTrailer),
    };
    let mut trailers = HeaderMap::try_with_capacity(parsed.len()).map_err(|_| Error::TrailersTooLarge)?;
    for h in parsed {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Error::InvalidTrailer)?;
        let value = HeaderValue::from_maybe_shared(section.slice_ref(h.value)).map_err(|_| Error::InvalidTrailer)?;
        trailers.try_append(name, value).map_err(|_| Error::TrailersTooLarge)?;
    }
    Ok(trailers)
}
