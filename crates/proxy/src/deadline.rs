//! How much time a forwarded request has, and how the upstream hears it.
//!
//! A stream's deadline is the route's `timeout`, shortened by a gRPC
//! client's own `grpc-timeout` (never lengthened: seed 004's rule that a
//! child's deadline can only be earlier than its parent's). Each try tells
//! the upstream the time it has left: `grpc-timeout` for gRPC, otherwise the
//! listener's `time_left_header` (`x-nuncio-expected-timeout-ms` by default,
//! after Envoy's `x-envoy-expected-rq-timeout-ms`).

use std::time::Duration;

use http::{HeaderName, HeaderValue, header};

use crate::message::HeadFields;
use nuncio_context::{CancelHandle, Context};
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
            Some(timeout) => stream.with_timeout(timeout),
            None => stream.with_cancel(),
        };
        // A gRPC client's own deadline can only shorten the route's.
        let grpc = grpc_timeout(headers).map(|timeout| route.0.with_timeout(timeout));
        RequestDeadline { route, grpc, grpc_request: is_grpc(headers) }
    }

    /// The context every try of the request derives from.
    pub(crate) fn context(&self) -> &Context {
        self.grpc.as_ref().map_or(&self.route.0, |(ctx, _)| ctx)
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
pub(crate) fn time_left_header(
    deadline: Instant,
    grpc: bool,
    name: Option<&HeaderName>,
) -> Option<(HeaderName, HeaderValue)> {
    let ms = deadline.saturating_duration_since(Instant::now()).as_millis().max(1);
    if grpc {
        // At most 8 digits: past that, say it in seconds.
        let value = if ms < 100_000_000 { format!("{ms}m") } else { format!("{}S", (ms / 1000).min(99_999_999)) };
        Some((GRPC_TIMEOUT.clone(), HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("1m"))))
    } else {
        let name = name?;
        let ms = u64::try_from(ms).unwrap_or(u64::MAX);
        let value = HeaderValue::from_bytes(itoa::Buffer::new().format(ms).as_bytes());
        Some((name.clone(), value.unwrap_or(HeaderValue::from_static("1"))))
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
        let stream = Context::background();
        let longer = RequestDeadline::new(&stream, Some(Duration::from_secs(1)), &headers("5S"));
        assert!(longer.context().deadline().unwrap() <= Instant::now() + Duration::from_secs(1));
        assert!(!longer.grpc_request, "no content-type: not gRPC");
        let shorter = RequestDeadline::new(&stream, Some(Duration::from_secs(10)), &headers("2S"));
        assert!(shorter.context().deadline().unwrap() <= Instant::now() + Duration::from_secs(2));
    }

    #[test]
    fn the_time_left_is_told_in_the_field_the_request_calls_for() {
        // Far enough ahead that the milliseconds left are certain to the
        // second on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(100);
        let (name, value) = time_left_header(deadline, true, None).unwrap();
        let ms = value.to_str().unwrap().strip_suffix('m').unwrap().parse::<u64>().unwrap();
        assert_eq!(name.as_str(), "grpc-timeout");
        assert!((99_000..=100_000).contains(&ms), "{ms}");
        let field = HeaderName::from_static("x-time-left");
        let (name, value) = time_left_header(deadline, false, Some(&field)).unwrap();
        let ms = value.to_str().unwrap().parse::<u64>().unwrap();
        assert_eq!(name.as_str(), "x-time-left");
        assert!((99_000..=100_000).contains(&ms), "{ms}");
        assert!(time_left_header(deadline, false, None).is_none());
    }
}
