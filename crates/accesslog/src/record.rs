//! What one access-log line is rendered from.

use std::fmt;
use std::net::SocketAddr;
use std::ops::{BitOr, BitOrAssign};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode, Version};

/// Everything known about one finished stream, filled by the proxy on the
/// worker that ran it.
///
/// It borrows from the stream's own state, so building one copies nothing;
/// [`Format::render`](crate::Format::render) reads only the fields its
/// commands name. Start from [`Record::new`] and set what is known:
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use nuncio_accesslog::{Record, ResponseFlags};
///
/// let record = Record {
///     status: Some(http::StatusCode::NOT_FOUND),
///     flags: ResponseFlags::NO_ROUTE_FOUND,
///     duration: Duration::from_millis(1),
///     ..Record::new(SystemTime::now())
/// };
/// # let _ = record;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// When the first byte of the request arrived (`%START_TIME%`).
    pub start_time: SystemTime,
    /// `%REQ(:METHOD)%`; `None` when the request head never parsed.
    pub method: Option<&'a Method>,
    /// Path and query as the client sent them, before any rewrite
    /// (`%REQ(:PATH)%`).
    pub path: Option<&'a str>,
    /// HTTP/2's `:authority` or HTTP/1.1's `Host` (`%REQ(:AUTHORITY)%`; when
    /// `None`, the `host` field of `request_headers` is used).
    pub authority: Option<&'a str>,
    /// `http` or `https` (`%REQ(:SCHEME)%`).
    pub scheme: Option<&'a str>,
    /// The downstream protocol (`%PROTOCOL%`).
    pub version: Option<Version>,
    /// The request's fields as received downstream (`%REQ(name)%`).
    pub request_headers: Option<&'a HeaderMap>,
    /// The response's fields as sent downstream (`%RESP(name)%`).
    pub response_headers: Option<&'a HeaderMap>,
    /// The status sent downstream; `None` when no response head was sent,
    /// which renders `0` like Envoy (`%RESPONSE_CODE%`).
    pub status: Option<StatusCode>,
    /// Why nuncio answered itself or the stream ended early
    /// (`%RESPONSE_FLAGS%`).
    pub flags: ResponseFlags,
    /// Request body bytes received downstream (`%BYTES_RECEIVED%`).
    pub bytes_received: u64,
    /// Response body bytes sent downstream (`%BYTES_SENT%`).
    pub bytes_sent: u64,
    /// From `start_time` to the last byte sent or the stream's end
    /// (`%DURATION%`).
    pub duration: Duration,
    /// From `start_time` until the response head was sent downstream,
    /// nuncio's own replies included (`%RESPONSE_DURATION%`).
    pub response_duration: Option<Duration>,
    /// From sending the request head upstream (last attempt) until the
    /// upstream response head arrived; `None` when no upstream answered
    /// (`%UPSTREAM_SERVICE_TIME%`).
    pub upstream_service_time: Option<Duration>,
    /// The upstream endpoint of the last attempt (`%UPSTREAM_HOST%`).
    pub upstream_host: Option<SocketAddr>,
    /// The routed cluster's name (`%UPSTREAM_CLUSTER%`).
    pub upstream_cluster: Option<&'a str>,
    /// The matched route's name (`%ROUTE_NAME%`).
    pub route_name: Option<&'a str>,
    /// The client's address (`%DOWNSTREAM_REMOTE_ADDRESS%`).
    pub downstream_remote_address: Option<SocketAddr>,
    /// Why the last upstream connection failed, e.g. `connection refused`
    /// (`%UPSTREAM_TRANSPORT_FAILURE_REASON%`).
    pub upstream_transport_failure_reason: Option<&'a str>,
    /// How many times the request was sent upstream; 0 when never
    /// (`%UPSTREAM_REQUEST_ATTEMPT_COUNT%`).
    pub upstream_request_attempt_count: u32,
    /// Whether tries were hedged, and which won (`%UPSTREAM_HEDGE_WON%`):
    /// `None` when no hedge was started, `Some(true)` when a later try (a
    /// hedge) answered, `Some(false)` when the first one did.
    pub upstream_hedge_won: Option<bool>,
    /// The downstream connection's id (`%CONNECTION_ID%`).
    pub connection_id: Option<u64>,
}

impl<'a> Record<'a> {
    /// A record with only the start time: everything else unknown, zero or
    /// empty.
    pub fn new(start_time: SystemTime) -> Record<'a> {
        Record {
            start_time,
            method: None,
            path: None,
            authority: None,
            scheme: None,
            version: None,
            request_headers: None,
            response_headers: None,
            status: None,
            flags: ResponseFlags::NONE,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            response_duration: None,
            upstream_service_time: None,
            upstream_host: None,
            upstream_cluster: None,
            route_name: None,
            downstream_remote_address: None,
            upstream_transport_failure_reason: None,
            upstream_request_attempt_count: 0,
            upstream_hedge_won: None,
            connection_id: None,
        }
    }
}

/// Why a stream did not end as a plain proxied exchange, as Envoy's
/// `%RESPONSE_FLAGS%` short codes.
///
/// A set: a stream can carry several (a timeout after retries is `UT,URX`
/// in Envoy's order). Renders as the codes joined by `,`, or `-` when empty.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ResponseFlags(u32);

impl ResponseFlags {
    /// No flag: renders `-`.
    pub const NONE: ResponseFlags = ResponseFlags(0);
    /// `UH`: the cluster had no healthy endpoint to send to (503).
    pub const NO_HEALTHY_UPSTREAM: ResponseFlags = ResponseFlags(1 << 0);
    /// `UT`: the upstream did not answer within the route's timeout (504).
    pub const UPSTREAM_REQUEST_TIMEOUT: ResponseFlags = ResponseFlags(1 << 1);
    /// `LR`: nuncio reset the stream itself (e.g. on shutdown or an
    /// internal limit).
    pub const LOCAL_RESET: ResponseFlags = ResponseFlags(1 << 2);
    /// `UR`: the upstream reset the stream (HTTP/2 `RST_STREAM`, or closed
    /// the connection mid-response).
    pub const UPSTREAM_REMOTE_RESET: ResponseFlags = ResponseFlags(1 << 3);
    /// `UF`: connecting to the upstream failed (refused, unreachable,
    /// connect timeout) (503).
    pub const UPSTREAM_CONNECTION_FAILURE: ResponseFlags = ResponseFlags(1 << 4);
    /// `UC`: the upstream connection closed before the response was
    /// complete (503 when no response head was received yet).
    pub const UPSTREAM_CONNECTION_TERMINATION: ResponseFlags = ResponseFlags(1 << 5);
    /// `UO`: a circuit breaker was open (connection, pending-request or
    /// request limit reached) (503).
    pub const UPSTREAM_OVERFLOW: ResponseFlags = ResponseFlags(1 << 6);
    /// `NR`: no route matched, or the route names no usable cluster (404).
    pub const NO_ROUTE_FOUND: ResponseFlags = ResponseFlags(1 << 7);
    /// `RL`: a rate limit refused the request (429).
    pub const RATE_LIMITED: ResponseFlags = ResponseFlags(1 << 8);
    /// `DC`: the client closed its connection before the stream finished.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: ResponseFlags = ResponseFlags(1 << 9);
    /// `URX`: the request was retried until the retry limit and the last
    /// attempt failed too.
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: ResponseFlags = ResponseFlags(1 << 10);
    /// `SI`: the stream saw no bytes in either direction for the idle
    /// timeout (408 before the response started, else a reset).
    pub const STREAM_IDLE_TIMEOUT: ResponseFlags = ResponseFlags(1 << 11);
    /// `DPE`: the client broke the HTTP protocol (400, or a reset).
    pub const DOWNSTREAM_PROTOCOL_ERROR: ResponseFlags = ResponseFlags(1 << 12);
    /// `UPE`: the upstream broke the HTTP protocol (502).
    pub const UPSTREAM_PROTOCOL_ERROR: ResponseFlags = ResponseFlags(1 << 13);
    /// `OM`: nuncio was overloaded and answered 503 itself (Envoy's
    /// overload manager flag).
    pub const OVERLOAD_MANAGER: ResponseFlags = ResponseFlags(1 << 14);

    /// Every flag with its code, in the order Envoy renders them.
    const CODES: [(ResponseFlags, &'static str); 15] = [
        (Self::NO_HEALTHY_UPSTREAM, "UH"),
        (Self::UPSTREAM_REQUEST_TIMEOUT, "UT"),
        (Self::LOCAL_RESET, "LR"),
        (Self::UPSTREAM_REMOTE_RESET, "UR"),
        (Self::UPSTREAM_CONNECTION_FAILURE, "UF"),
        (Self::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (Self::UPSTREAM_OVERFLOW, "UO"),
        (Self::NO_ROUTE_FOUND, "NR"),
        (Self::RATE_LIMITED, "RL"),
        (Self::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (Self::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
        (Self::STREAM_IDLE_TIMEOUT, "SI"),
        (Self::DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
        (Self::UPSTREAM_PROTOCOL_ERROR, "UPE"),
        (Self::OVERLOAD_MANAGER, "OM"),
    ];

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the flags of `other`.
    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }

    /// The short codes of the set flags, in Envoy's order.
    pub fn codes(self) -> impl Iterator<Item = &'static str> {
        Self::CODES.into_iter().filter(move |(f, _)| self.contains(*f)).map(|(_, code)| code)
    }
}

impl BitOr for ResponseFlags {
    type Output = ResponseFlags;
    fn bitor(self, rhs: ResponseFlags) -> ResponseFlags {
        ResponseFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: ResponseFlags) {
        self.insert(rhs);
    }
}

impl fmt::Display for ResponseFlags {
    /// `UT,URX`, or `-` when empty (what `%RESPONSE_FLAGS%` renders).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, code) in self.codes().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(code)?;
        }
        Ok(())
    }
}

impl fmt::Debug for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseFlags({self})")
    }
}
