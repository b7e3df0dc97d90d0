//! One body decoder over every framing.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use crate::{BodyFraming, ChunkedDecoder, Error, Limits};

/// What a body decoder produces, in order: any number of `Data`, at most
/// one `Trailers` (chunked only), then `End` exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEvent {
    /// Body bytes, split off the connection's buffer without copying. Never
    /// empty.
    Data(Bytes),
    /// The trailer section of a chunked body (only when non-empty).
    Trailers(HeaderMap),
    /// The body is complete; bytes after it belong to the next message.
    End,
}

#[derive(Debug, Clone)]
enum Kind {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// Decodes a body with any [`BodyFraming`]: the one thing a connection
/// calls between two heads.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    kind: Kind,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing` (`None` ends at once).
    pub fn new(framing: BodyFraming, limits: Limits) -> Self {
        let kind = match framing {
            BodyFraming::None => Kind::Length(0),
            BodyFraming::Length(n) => Kind::Length(n),
            BodyFraming::Chunked => Kind::Chunked(ChunkedDecoder::new(limits)),
            BodyFraming::UntilClose => Kind::UntilClose,
        };
        BodyDecoder { kind }
    }

    /// Whether [`BodyEvent::End`] was returned.
    pub fn is_done(&self) -> bool {
        match &self.kind {
            Kind::Done => true,
            Kind::Chunked(c) => c.is_done(),
            _ => false,
        }
    }

    /// Consumes what it can from the front of `buf` and returns the next
    /// event; `Ok(None)` when more bytes are needed, and after `End`. Call it
    /// until it returns `Ok(None)` after every read.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BodyEvent>, Error> {
        match &mut self.kind {
            Kind::Length(0) => {
                self.kind = Kind::Done;
                Ok(Some(BodyEvent::End))
            }
            Kind::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
                *remaining -= n as u64;
                Ok(Some(BodyEvent::Data(buf.split_to(n).freeze())))
            }
            Kind::Chunked(chunked) => chunked.decode(buf),
            Kind::UntilClose => {
                if buf.is_empty() {
                    Ok(None)
                } else {
                    Ok(Some(BodyEvent::Data(buf.split().freeze())))
                }
            }
            Kind::Done => Ok(None),
        }
    }

    /// Like [`BodyDecoder::decode`], once the peer has closed its side and
    /// `buf` holds the last bytes there will be: ends an
    /// [`BodyFraming::UntilClose`] body, and fails with
    /// [`Error::IncompleteBody`] for a length or chunked body cut short.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BodyEvent>, Error> {
        if let Kind::UntilClose = self.kind
            && buf.is_empty()
        {
            self.kind = Kind::Done;
            return Ok(Some(BodyEvent::End));
        }
        match self.decode(buf)? {
            Some(event) => Ok(Some(event)),
            None if self.is_done() => Ok(None),
            None => Err(Error::IncompleteBody),
        }
    }
}
