//! A span being recorded: its fields written as OTLP protobuf into a
//! buffer taken from the exporter's pool as they become known, and the
//! buffer handed to the exporter's thread when the span ends.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::context::SpanIds;
use crate::exporter::Exporter;
use crate::proto::{self, field};

/// What a span stands for (OTLP's `SpanKind`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SpanKind {
    /// Work inside nuncio (a filter's).
    Internal = 1,
    /// A request nuncio received (the downstream span).
    Server = 2,
    /// A request nuncio sent (an upstream try, a mirror's copy).
    Client = 3,
}

/// How a span ended (OTLP's `Status`).
#[derive(Clone, Copy)]
pub enum Status<'a> {
    /// Nothing to say (OTLP's `UNSET`: an ordinary end).
    Unset,
    /// It failed: `ERROR` with this message.
    Error(&'a dyn fmt::Display),
    /// Its context was cancelled before it finished: `ERROR` with
    /// `canceled: CAUSE` as the message, and Envoy's `canceled = true`
    /// attribute.
    Canceled(&'a dyn fmt::Display),
}

/// Status codes.
const STATUS_ERROR: u64 = 2;

/// Span flags (`SpanFlags` in `trace.proto`): the parent's remoteness is
/// known, and whether it is remote.
const FLAGS_HAS_IS_REMOTE: u32 = 0x100;
const FLAGS_IS_REMOTE: u32 = 0x200;

/// The cause of a span dropped before it was ended (the future that held
/// it was dropped).
pub const ABANDONED: &str = "abandoned before it ended";

/// A span being recorded, on the thread that records it (a worker): its
/// fields go into a buffer of the exporter's pool as they are set; [`end`]
/// queues it for export. Dropped without being ended, it ends as
/// [`Status::Canceled`] with cause [`ABANDONED`] (or what
/// [`set_drop_cause`](Span::set_drop_cause) said).
///
/// [`end`]: Span::end
pub struct Span<'e> {
    exporter: &'e Exporter,
    buf: Vec<u8>,
    ended: bool,
    /// The cause it ends with if dropped before it was ended.
    drop_cause: &'static str,
}

impl<'e> Span<'e> {
    /// Starts span `ids` now, named by `name`'s parts joined with spaces
    /// (`["router", cluster, "egress"]`), sampled.
    pub(crate) fn start(exporter: &'e Exporter, ids: &SpanIds, kind: SpanKind, name: &[&str]) -> Span<'e> {
        let mut buf = exporter.buffer();
        proto::bytes_field(&mut buf, field::span::TRACE_ID, &ids.trace_id.to_bytes());
        proto::bytes_field(&mut buf, field::span::SPAN_ID, &ids.span_id.to_bytes());
        if let Some(parent) = ids.parent {
            proto::bytes_field(&mut buf, field::span::PARENT_SPAN_ID, &parent.to_bytes());
        }
        let remote = if ids.remote_parent { FLAGS_IS_REMOTE } else { 0 };
        proto::fixed32_field(
            &mut buf,
            field::span::FLAGS,
            u32::from(crate::context::SAMPLED) | FLAGS_HAS_IS_REMOTE | remote,
        );
        let len = name.iter().map(|part| part.len()).sum::<usize>() + name.len().saturating_sub(1);
        proto::len_header(&mut buf, field::span::NAME, len);
        for (i, part) in name.iter().enumerate() {
            if i > 0 {
                buf.push(b' ');
            }
            buf.extend_from_slice(part.as_bytes());
        }
        proto::varint_field(&mut buf, field::span::KIND, kind as u64);
        proto::fixed64_field(&mut buf, field::span::START_TIME, now());
        Span { exporter, buf, ended: false, drop_cause: ABANDONED }
    }

    /// The cause the span ends with ([`Status::Canceled`]) if it is dropped
    /// before it is ended (default [`ABANDONED`]): what dropping the future
    /// that holds it means there (`"the client disconnected"`...).
    pub fn set_drop_cause(&mut self, cause: &'static str) {
        self.drop_cause = cause;
    }

    /// Adds a string attribute.
    pub fn string(&mut self, key: &str, value: &str) {
        proto::string_attribute(&mut self.buf, field::span::ATTRIBUTES, key, value.as_bytes());
    }

    /// Adds a string attribute made of `parts`, one after the other (a URL
    /// from its pieces, without formatting).
    pub fn string_parts(&mut self, key: &str, parts: &[&str]) {
        let mut bytes: [&[u8]; 8] = [&[]; 8];
        for (slot, part) in bytes.iter_mut().zip(parts) {
            *slot = part.as_bytes();
        }
        proto::string_attribute_parts(&mut self.buf, field::span::ATTRIBUTES, key, &bytes[..parts.len().min(8)]);
    }

    /// Adds an address attribute (`1.2.3.4:80`, `[::1]:80`), an IPv4 one
    /// written without the formatting machinery.
    pub fn socket_addr(&mut self, key: &str, address: std::net::SocketAddr) {
        let std::net::SocketAddr::V4(v4) = address else { return self.display(key, address) };
        let mut text = [0u8; 21];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            text[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        let mut number = itoa::Buffer::new();
        for (i, octet) in v4.ip().octets().iter().enumerate() {
            if i > 0 {
                put(b".");
            }
            put(number.format(*octet).as_bytes());
        }
        put(b":");
        put(number.format(v4.port()).as_bytes());
        proto::string_attribute(&mut self.buf, field::span::ATTRIBUTES, key, &text[..len]);
    }

    /// Adds a string attribute written by `value`'s `Display` (at most
    /// 256 bytes of it).
    pub fn display(&mut self, key: &str, value: impl fmt::Display) {
        let mut text = Text::default();
        let _ = write!(text, "{value}");
        proto::string_attribute(&mut self.buf, field::span::ATTRIBUTES, key, text.as_bytes());
    }

    /// Adds an integer attribute.
    pub fn int(&mut self, key: &str, value: i64) {
        proto::int_attribute(&mut self.buf, field::span::ATTRIBUTES, key, value);
    }

    /// Adds a boolean attribute.
    pub fn bool(&mut self, key: &str, value: bool) {
        proto::bool_attribute(&mut self.buf, field::span::ATTRIBUTES, key, value);
    }

    /// Ends the span now with `status` and queues it for export (or drops
    /// it, counted, if the exporter's queue is full). Never blocks.
    pub fn end(mut self, status: Status<'_>) {
        self.finish(status);
    }

    fn finish(&mut self, status: Status<'_>) {
        self.ended = true;
        let buf = &mut self.buf;
        proto::fixed64_field(buf, field::span::END_TIME, now());
        let message = match status {
            Status::Unset => None,
            Status::Error(message) => Some((message, false)),
            Status::Canceled(cause) => Some((cause, true)),
        };
        if let Some((message, canceled)) = message {
            if canceled {
                proto::bool_attribute(buf, field::span::ATTRIBUTES, "canceled", true);
            }
            let mut text = Text::default();
            let _ = if canceled { write!(text, "canceled: {message}") } else { write!(text, "{message}") };
            proto::message_field(buf, field::span::STATUS, |b| {
                proto::bytes_field(b, field::status::MESSAGE, text.as_bytes());
                proto::varint_field(b, field::status::CODE, STATUS_ERROR);
            });
        }
        self.exporter.send(std::mem::take(&mut self.buf));
    }
}

impl Drop for Span<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let cause = self.drop_cause;
            self.finish(Status::Canceled(&cause));
        }
    }
}

impl fmt::Debug for Span<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Span").field("bytes", &self.buf.len()).field("ended", &self.ended).finish()
    }
}

/// Nanoseconds since the Unix epoch.
fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Up to 256 bytes of formatted text, on the stack; what does not fit is
/// cut at a character boundary.
struct Text {
    bytes: [u8; 256],
    len: usize,
}

impl Default for Text {
    fn default() -> Text {
        Text { bytes: [0; 256], len: 0 }
    }
}

impl Text {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}
