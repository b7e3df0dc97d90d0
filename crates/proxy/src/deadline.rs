//! How much time a forwarded request has, and how the upstream hears it.
//!
//! A stream's deadline is the route's `timeout`, shortened by a gRPC
//! client's own `grpc-timeout` (a gRPC request's only; never lengthened: seed 004's rule that a
//! child's deadline can only be earlier than its parent's). Each try tells
//! the upstream the time it has left: `grpc-timeout` for gRPC, otherwise the
//! listener's `time_left_header` (`x-nuncio-expected-timeout-ms` by default,
//! after Envoy's `x-envoy-expected-rq-timeout-ms`).

use std::time::Duration;

use http::{HeaderName, HeaderValue, header};

use crate::message::HeadFields;
use nuncio_context::{CancelHandle, Context};
use nuncio_runtime::clock;
use tokio::time::Instant;

pub(crate) static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// A forwarded request's context: a child of the stream's whose deadline is
/// the route timeout, shortened by an incoming `grpc-timeout`. Dropping it
/// cancels what was derived from it.
pub(crate) struct RequestDeadline {
    route: (Context, CancelHandle),
    grpc: Option<(Context, CancelHandle)>,
    /// The request is gRPC: the time left goes in `grpc-timeout`.
    pub(crate) grpc_request: bool,
}

impl RequestDeadline {
    /// The deadline of a request with `headers` forwarded under `timeout`
    /// (the route's; `None` for none).
    pub(crate) fn new(stream: &Context, timeout: Option<Duration>, headers: &HeadFields) -> RequestDeadline {
        let route = match timeout {
            Some(timeout) => with_timeout(stream, timeout),
            None => stream.with_cancel(),
        };
        // A gRPC client's own deadline can only shorten the route's. Only
        // a gRPC request's counts (as in Envoy): the field means nothing
        // to other clients, and the lookup is saved for every request.
        let grpc_request = is_grpc(headers);
        let grpc = grpc_request.then(|| grpc_timeout(headers)).flatten().map(|timeout| with_timeout(&route.0, timeout));
        RequestDeadline { route, grpc, grpc_request }
    }

    /// The context every try of the request derives from.
    pub(crate) fn context(&self) -> &Context {
        self.grpc.as_ref().map_or(&self.route.0, |(ctx, _)| ctx)
    }
}

/// A child of `ctx` done `timeout` after the loop's time
/// ([`nuncio_runtime::clock`]): [`Context::with_timeout`] without a read of
/// the clock. A timeout too large to represent means no deadline of its
/// own.
pub(crate) fn with_timeout(ctx: &Context, timeout: Duration) -> (Context, CancelHandle) {
    match clock::after(timeout) {
        Some(deadline) => ctx.with_deadline(deadline),
        None => ctx.with_cancel(),
    }
}

/// Whether the request is gRPC (`content-type: application/grpc...`).
pub(crate) fn is_grpc(headers: &HeadFields) -> bool {
    headers.get(&header::CONTENT_TYPE).is_some_and(|v| v.starts_with(b"application/grpc"))
}

/// An incoming `grpc-timeout` (`1*8DIGIT` and a unit: H M S m u n).
fn grpc_timeout(headers: &HeadFields) -> Option<Duration> {
    let value = std::str::from_utf8(headers.get(&GRPC_TIMEOUT)?).ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The time left before `deadline`, as the upstream should hear it:
/// `grpc-timeout: Nm` for gRPC (whatever the listener says, as Envoy does),
/// otherwise `N` milliseconds in the listener's field `name`, or nothing
/// when it has none.
pub(crate) fn time_left_header(deadline: Instant, grpc: bool, name: Option<&HeaderName>) -> Option<TimeLeft> {
    let ms = deadline.saturating_duration_since(clock::now()).as_millis().max(1);
    let ms = u64::try_from(ms).unwrap_or(u64::MAX);
    if grpc {
        Some(TimeLeft { name: GRPC_TIMEOUT.clone(), ms, grpc: true })
    } else {
        Some(TimeLeft { name: name?.clone(), ms, grpc: false })
    }
}

/// The time left to a try, as the upstream hears it: the field `name` and
/// its value, kept as a number until the request is encoded (an HTTP/1.1
/// head takes the digits as they are; a `HeaderValue` made for them was an
/// allocation a request).
#[derive(Debug, Clone)]
pub(crate) struct TimeLeft {
    pub(crate) name: HeaderName,
    ms: u64,
    grpc: bool,
}

impl TimeLeft {
    /// The value's text, written into `buf`: `N` milliseconds, or for gRPC
    /// `Nm` (`NS` past 8 digits of milliseconds: the field allows no more).
    pub(crate) fn text<'b>(&self, buf: &'b mut [u8; 24]) -> &'b [u8] {
        let (n, unit): (u64, &[u8]) = match (self.grpc, self.ms) {
            (false, ms) => (ms, b""),
            (true, ms) if ms < 100_000_000 => (ms, b"m"),
            (true, ms) => ((ms / 1000).min(99_999_999), b"S"),
        };
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n).as_bytes();
        buf[..digits.len()].copy_from_slice(digits);
        buf[digits.len()..digits.len() + unit.len()].copy_from_slice(unit);
        &buf[..digits.len() + unit.len()]
    }

    /// The value as a field value (for a map: HTTP/2, or a request that
    /// carries the field already).
    pub(crate) fn value(&self) -> HeaderValue {
        HeaderValue::from_bytes(self.text(&mut [0; 24])).unwrap_or(HeaderValue::from_static("1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(grpc_timeout: &'static str) -> HeadFields {
        let mut headers = http::HeaderMap::new();
        headers.insert(&GRPC_TIMEOUT, HeaderValue::from_static(grpc_timeout));
        headers.into()
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_refuse_the_rest() {
        assert_eq!(grpc_timeout(&headers("2S")), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(&headers("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout(&headers("250m")), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(&headers("7u")), Some(Duration::from_micros(7)));
        assert_eq!(grpc_timeout(&headers("123456789S")), None, "at most 8 digits");
        assert_eq!(grpc_timeout(&headers("S")), None);
        assert_eq!(grpc_timeout(&headers("10x")), None);
    }

    #[test]
    fn a_grpc_deadline_only_shortens_the_route() {
        let grpc = |timeout| {
            let mut fields = http::HeaderMap::new();
            fields.insert(&GRPC_TIMEOUT, HeaderValue::from_static(timeout));
            fields.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc+proto"));
            HeadFields::from(fields)
        };
        let stream = Context::background();
        let longer = RequestDeadline::new(&stream, Some(Duration::from_secs(1)), &grpc("5S"));
        assert!(longer.context().deadline().unwrap() <= Instant::now() + Duration::from_secs(1));
        assert!(longer.grpc_request);
        let shorter = RequestDeadline::new(&stream, Some(Duration::from_secs(10)), &grpc("2S"));
        assert!(shorter.context().deadline().unwrap() <= Instant::now() + Duration::from_secs(2));
        // Not gRPC (no content-type): the field is not the client's deadline.
        let plain = RequestDeadline::new(&stream, Some(Duration::from_secs(10)), &headers("2S"));
        assert!(!plain.grpc_request);
        assert!(plain.context().deadline().unwrap() > Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn the_time_left_is_told_in_the_field_the_request_calls_for() {
        // Far enough ahead that the milliseconds left are certain to the
        // second on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(100);
        let left = time_left_header(deadline, true, None).unwrap();
        let ms = left.value().to_str().unwrap().strip_suffix('m').unwrap().parse::<u64>().unwrap();
        assert_eq!(left.name.as_str(), "grpc-timeout");
        assert!((99_000..=100_000).contains(&ms), "{ms}");
        let field = HeaderName::from_static("x-time-left");
        let left = time_left_header(deadline, false, Some(&field)).unwrap();
        let ms = left.value().to_str().unwrap().parse::<u64>().unwrap();
        assert_eq!(left.name.as_str(), "x-time-left");
        assert!((99_000..=100_000).contains(&ms), "{ms}");
        assert_eq!(left.text(&mut [0; 24]), left.value().as_bytes());
        assert!(time_left_header(deadline, false, None).is_none());
    }

    #[test]
    fn a_grpc_time_left_past_eight_digits_is_said_in_seconds() {
        let text = |ms, grpc| TimeLeft { name: GRPC_TIMEOUT.clone(), ms, grpc }.value();
        assert_eq!(text(1, true), "1m");
        assert_eq!(text(99_999_999, true), "99999999m");
        assert_eq!(text(100_000_000, true), "100000S");
        assert_eq!(text(u64::MAX, true), "99999999S");
        assert_eq!(text(u64::MAX, false), u64::MAX.to_string().as_str());
    }
}
