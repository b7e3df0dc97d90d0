//! W3C trace context (<https://www.w3.org/TR/trace-context/>): trace and
//! span ids, the `traceparent` field and the sampling decision.

use std::fmt;

/// The `traceparent` request field.
pub const TRACEPARENT: &str = "traceparent";

/// The `tracestate` request field (passed on untouched).
pub const TRACESTATE: &str = "tracestate";

/// The `x-request-id` request field.
pub const X_REQUEST_ID: &str = "x-request-id";

/// A trace's id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// A span's id: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl TraceId {
    /// A random id (from this thread's generator: no lock, no shared
    /// write).
    pub fn random() -> TraceId {
        loop {
            let id = fastrand::u128(..).to_be_bytes();
            if id != [0; 16] {
                return TraceId(id);
            }
        }
    }

    /// The id from its bytes; `None` for all zeros (invalid).
    pub fn from_bytes(bytes: [u8; 16]) -> Option<TraceId> {
        (bytes != [0; 16]).then_some(TraceId(bytes))
    }

    /// The id's bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The id as 32 lowercase hex digits.
    pub fn to_hex(self) -> [u8; 32] {
        let mut out = [0; 32];
        hex(&self.0, &mut out);
        out
    }
}

impl SpanId {
    /// A random id (from this thread's generator).
    pub fn random() -> SpanId {
        loop {
            let id = fastrand::u64(..).to_be_bytes();
            if id != [0; 8] {
                return SpanId(id);
            }
        }
    }

    /// The id from its bytes; `None` for all zeros (invalid).
    pub fn from_bytes(bytes: [u8; 8]) -> Option<SpanId> {
        (bytes != [0; 8]).then_some(SpanId(bytes))
    }

    /// The id's bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }

    /// The id as 16 lowercase hex digits.
    pub fn to_hex(self) -> [u8; 16] {
        let mut out = [0; 16];
        hex(&self.0, &mut out);
        out
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.to_hex()).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.to_hex()).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

/// Lowercase hex only: the spec's parsers treat uppercase as invalid.
fn unhex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// A `traceparent` value: `00-TRACE_ID-PARENT_ID-FLAGS`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TraceParent {
    /// The trace the request belongs to.
    pub trace_id: TraceId,
    /// The span of whoever sent the request (its parent).
    pub parent_id: SpanId,
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

/// The `sampled` trace flag.
pub const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// Parses a `traceparent` value as the spec says a receiver must:
    /// version `00` is exactly 55 characters; a later version (not `ff`)
    /// may be longer, with a `-` after the first 55, and is read as `00`.
    /// Lowercase hex only; an all-zero trace or parent id is invalid.
    /// `None` when invalid (the request is then treated as carrying none).
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() < 55 {
            return None;
        }
        let version = unhex::<1>(&value[0..2])?[0];
        match (version, value.len()) {
            (0xff, _) => return None,
            (0, 55) => {}
            (0, _) => return None,
            (_, 55) => {}
            (_, _) if value[55] == b'-' => {}
            _ => return None,
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let trace_id = TraceId::from_bytes(unhex::<16>(&value[3..35])?)?;
        let parent_id = SpanId::from_bytes(unhex::<8>(&value[36..52])?)?;
        let flags = unhex::<1>(&value[53..55])?[0];
        Some(TraceParent { trace_id, parent_id, flags })
    }

    /// Whether the sender sampled (recorded) the trace.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The value, version `00`: 55 ASCII bytes.
    pub fn encode(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[0] = b'0';
        out[1] = b'0';
        hex(&self.trace_id.0, &mut out[3..35]);
        hex(&self.parent_id.0, &mut out[36..52]);
        hex(&[self.flags], &mut out[53..55]);
        out
    }
}

/// Decides which requests are traced: the sender's decision when the
/// request carries a valid `traceparent` (OpenTelemetry's parent-based
/// sampler, and what Envoy does), else a random draw at the configured
/// ratio. Copy it freely; a decision costs one draw from the thread's
/// generator.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Sampler {
    per_million: u32,
}

impl Sampler {
    /// Samples `per_million` of the requests without a parent (at most a
    /// million: all).
    pub fn per_million(per_million: u32) -> Sampler {
        Sampler { per_million: per_million.min(1_000_000) }
    }

    /// Samples `ratio` (0.0–1.0, clamped) of the requests without a parent.
    pub fn ratio(ratio: f64) -> Sampler {
        Sampler::per_million((ratio.clamp(0.0, 1.0) * 1e6).round() as u32)
    }

    /// The share sampled, per million.
    pub fn rate_per_million(&self) -> u32 {
        self.per_million
    }

    /// Whether a request with this `parent` (if any) is traced.
    pub fn sample(&self, parent: Option<&TraceParent>) -> bool {
        match parent {
            Some(parent) => parent.sampled(),
            None => self.per_million >= 1_000_000 || fastrand::u32(0..1_000_000) < self.per_million,
        }
    }
}

/// Where one request stands in its trace, decided when its head arrives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RequestTrace {
    /// The trace: the sender's, or a new one.
    pub trace_id: TraceId,
    /// The request's own span (nuncio's downstream span).
    pub span_id: SpanId,
    /// The sender's span, when the request came with a valid `traceparent`.
    pub parent: Option<SpanId>,
    /// Whether nuncio records spans for it.
    pub sampled: bool,
}

impl RequestTrace {
    /// The decision for a request whose `traceparent` field is `incoming`
    /// (its raw value, if present).
    pub fn start(incoming: Option<&[u8]>, sampler: Sampler) -> RequestTrace {
        let parent = incoming.and_then(TraceParent::parse);
        let sampled = sampler.sample(parent.as_ref());
        RequestTrace {
            trace_id: parent.map_or_else(TraceId::random, |p| p.trace_id),
            span_id: SpanId::random(),
            parent: parent.map(|p| p.parent_id),
            sampled,
        }
    }

    /// The trace flags nuncio sends on.
    pub fn flags(&self) -> u8 {
        if self.sampled { SAMPLED } else { 0 }
    }

    /// The `traceparent` for a request sent on behalf of span `span` of
    /// this trace (a try's span, or the request's own when unsampled).
    pub fn child_of(&self, span: SpanId) -> TraceParent {
        TraceParent { trace_id: self.trace_id, parent_id: span, flags: self.flags() }
    }

    /// The ids of a new span, child of the request's span.
    pub fn child_span(&self) -> SpanIds {
        SpanIds { trace_id: self.trace_id, span_id: SpanId::random(), parent: Some(self.span_id), remote_parent: false }
    }

    /// The ids of the request's own span.
    pub fn own_span(&self) -> SpanIds {
        SpanIds {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            remote_parent: self.parent.is_some(),
        }
    }
}

/// A span's place in its trace.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SpanIds {
    /// The trace.
    pub trace_id: TraceId,
    /// The span itself.
    pub span_id: SpanId,
    /// Its parent; `None` for a trace's root.
    pub parent: Option<SpanId>,
    /// The parent is another process's span (it came in a `traceparent`).
    pub remote_parent: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_round_trips() {
        let parent = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(parent.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.sampled());
        assert_eq!(&parent.encode()[..], EXAMPLE);
    }

    #[test]
    fn invalid_values_are_refused() {
        let bad: &[&[u8]] = &[
            b"",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for value in bad {
            assert_eq!(TraceParent::parse(value), None, "{}", String::from_utf8_lossy(value));
        }
        // A later version may carry more, after a `-`.
        let later = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        assert!(!TraceParent::parse(later).unwrap().sampled());
    }

    #[test]
    fn the_parent_decides_else_the_ratio() {
        let sampled = TraceParent::parse(EXAMPLE).unwrap();
        let unsampled = TraceParent { flags: 0, ..sampled };
        let never = Sampler::ratio(0.0);
        let always = Sampler::ratio(1.0);
        assert!(never.sample(Some(&sampled)), "a sampled parent is honoured");
        assert!(!always.sample(Some(&unsampled)), "and so is an unsampled one");
        assert!(!(0..1000).any(|_| never.sample(None)));
        assert!((0..1000).all(|_| always.sample(None)));
        let half = (0..10_000).filter(|_| Sampler::ratio(0.5).sample(None)).count();
        assert!((4000..6000).contains(&half), "{half}");
    }

    #[test]
    fn a_request_keeps_its_senders_trace() {
        let trace = RequestTrace::start(Some(EXAMPLE), Sampler::ratio(0.0));
        assert_eq!(trace.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.parent.unwrap().to_string(), "00f067aa0ba902b7");
        assert!(trace.sampled);
        let child = trace.child_span();
        assert_eq!(child.parent, Some(trace.span_id));
        let sent = trace.child_of(child.span_id);
        assert_eq!((sent.trace_id, sent.parent_id, sent.flags), (trace.trace_id, child.span_id, SAMPLED));
        let fresh = RequestTrace::start(Some(b"garbage"), Sampler::ratio(0.0));
        assert!(!fresh.sampled && fresh.parent.is_none());
    }
}
