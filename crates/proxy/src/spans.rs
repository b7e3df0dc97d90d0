//! Where a request's trace is decided and its spans are made (the config's
//! `tracing:`; `nuncio_trace` has the concepts). With no `tracing:` none
//! of this runs: the stream reads one `Option` and goes on.
//!
//! The spans of one request, all in its trace (W3C `traceparent`: the
//! sender's trace, or a new one):
//!
//! ```text
//! ingress                         SERVER   the downstream request (stream.rs), parent: the sender's span
//! ├─ router CLUSTER egress        CLIENT   each upstream try, hedges included (attempt.rs)
//! ├─ mirror CLUSTER egress        CLIENT   each try of a mirror's copy (mirror.rs; may end after ingress)
//! └─ filter NAME HOOK             INTERNAL a hook that went async, or a stop waiting on the StreamHandle
//!                                          (filter_manager/chain.rs)
//! ```
//!
//! Each upstream request carries a `traceparent` naming the try's span;
//! `tracestate` passes untouched. A request that is not sampled still
//! joins a trace: a sender's `traceparent` goes on as it came, and a
//! request without one gets a new trace id (`traceparent` with the
//! sampled flag off), so the services behind nuncio see one trace either
//! way. A request without `x-request-id` gets one as its head arrives
//! (without tracing, only when it is forwarded), seen by the filters, sent
//! upstream, in the span (`guid:x-request-id`) and the access log.
//!
//! A span's context cancelled before it ended (the client left, another
//! try answered first, a timeout passed) ends it with `ERROR`, message
//! `canceled: CAUSE`, and Envoy's `canceled = true` attribute.

use std::net::SocketAddr;

use http::{HeaderName, HeaderValue, Method, StatusCode, Version};
use nuncio_accesslog::ResponseFlags;
use nuncio_config::UpstreamProtocol;
use nuncio_trace::{Exporter, LogIds, RequestTrace, Sampler, Span, SpanKind, Status, TraceParent};

use crate::message::RequestHead;

/// The fields, as names made once (a name from a `&str` is parsed at
/// each use).
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static(nuncio_trace::TRACEPARENT);
static X_REQUEST_ID: HeaderName = HeaderName::from_static(nuncio_trace::X_REQUEST_ID);

/// A snapshot's tracing: the exporter its config names (shared with every
/// snapshot naming the same collector) and the sampling ratio.
pub(crate) struct Tracing {
    pub(crate) exporter: Exporter,
    pub(crate) sampler: Sampler,
}

/// The trace decision for `request`, made as its head arrives, and its
/// fields set accordingly: a sampled request's `traceparent` is taken out
/// (each try sends its own); an unsampled one without a valid one gets
/// one naming a new trace; a request without `x-request-id` gets one.
pub(crate) fn begin(tracing: &Tracing, request: &mut RequestHead) -> RequestTrace {
    let incoming = request.headers.get(&TRACEPARENT);
    let valid = incoming.and_then(TraceParent::parse).is_some();
    let trace = RequestTrace::start(incoming, tracing.sampler);
    if trace.sampled {
        request.headers.remove(&TRACEPARENT);
    } else if !valid {
        let value = trace.child_of(trace.span_id).encode();
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            request.headers.insert(TRACEPARENT.clone(), value);
        }
    }
    if !request.headers.contains(&X_REQUEST_ID) {
        request.headers.insert(X_REQUEST_ID.clone(), crate::rewrite::request_id());
    }
    trace
}

/// What log lines about `request` say, once [`begin`] made its ids: its
/// `x-request-id` and, when it is sampled, its trace id.
pub(crate) fn log_ids(request: &RequestHead, trace: &RequestTrace) -> Option<LogIds> {
    let id = request.headers.get(&X_REQUEST_ID);
    Some(LogIds::new(id, trace.sampled.then_some(trace.trace_id)))
}

/// A sampled request's own span (`ingress`), with what is known from its
/// head (Envoy's tags).
pub(crate) fn downstream_span<'e>(
    exporter: &'e Exporter,
    trace: &RequestTrace,
    request: &RequestHead,
    peer: SocketAddr,
) -> Span<'e> {
    let mut span = exporter.span(&trace.own_span(), SpanKind::Server, &["ingress"]);
    span.set_drop_cause("the stream was dropped before it ended");
    span.string("component", "proxy");
    span.string("http.method", request.method.as_str());
    let authority = request.authority.as_ref().map_or("", |a| a.as_str());
    let path = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
    span.string_parts("http.url", &["http://", authority, path]);
    span.string("http.protocol", protocol(request.version));
    span.socket_addr("peer.address", peer);
    if let Some(agent) = request.headers.get(&http::header::USER_AGENT).and_then(|v| std::str::from_utf8(v).ok()) {
        span.string("user_agent", agent);
    }
    if let Some(id) = request.headers.get(&X_REQUEST_ID).and_then(|v| std::str::from_utf8(v).ok()) {
        span.string("guid:x-request-id", id);
    }
    span
}

/// What the stream came to, for its span.
pub(crate) struct Served<'i> {
    pub(crate) status: Option<StatusCode>,
    pub(crate) flags: ResponseFlags,
    pub(crate) cluster: Option<&'i str>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
}

/// Ends a request's own span with what it came to: a client that left
/// cancelled it; a 5xx (or no response at all) is an error.
pub(crate) fn end_downstream(mut span: Span<'_>, served: &Served<'_>) {
    if let Some(status) = served.status {
        span.int("http.status_code", i64::from(status.as_u16()));
    }
    span.display("response_flags", served.flags);
    span.int("request_size", i64::try_from(served.bytes_received).unwrap_or(i64::MAX));
    span.int("response_size", i64::try_from(served.bytes_sent).unwrap_or(i64::MAX));
    if let Some(cluster) = served.cluster {
        span.string("upstream_cluster", cluster);
        span.string("upstream_cluster.name", cluster);
    }
    if let Some(upstream) = served.upstream {
        span.socket_addr("upstream_address", upstream);
    }
    if served.flags.contains(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION) {
        return span.end(Status::Canceled(&CLIENT_LEFT));
    }
    match served.status {
        Some(status) if status.is_server_error() => {
            span.bool("error", true);
            span.end(Status::Error(&format_args!("answered {status}")));
        }
        Some(_) => span.end(Status::Unset),
        None => {
            span.bool("error", true);
            span.end(Status::Error(&"no response was sent"));
        }
    }
}

/// The cause of a span whose client left first.
pub(crate) const CLIENT_LEFT: &str = "the client disconnected";

/// What a request's tries need to make their spans: the exporter, the
/// request's trace, and what kind of copy they send.
#[derive(Clone, Copy)]
pub(crate) struct TryTrace<'e> {
    pub(crate) exporter: &'e Exporter,
    pub(crate) request: RequestTrace,
    /// `router` for the request's own tries, `mirror` for a mirror's copy.
    pub(crate) label: &'static str,
}

impl<'e> TryTrace<'e> {
    /// The span of try `number` to `endpoint` of `cluster` (a hedge if
    /// `hedge`), and the `traceparent` it sends.
    pub(crate) fn start(
        &self,
        cluster: &str,
        endpoint: &str,
        method: &Method,
        protocol: UpstreamProtocol,
        number: u32,
        hedge: bool,
    ) -> (Span<'e>, TraceParent) {
        let ids = self.request.child_span();
        let mut span = self.exporter.span(&ids, SpanKind::Client, &[self.label, cluster, "egress"]);
        span.set_drop_cause("the request was dropped before the try ended");
        span.string("component", "proxy");
        span.string("upstream_cluster", cluster);
        span.string("upstream_cluster.name", cluster);
        span.string("upstream_address", endpoint);
        span.string("http.method", method.as_str());
        span.string("http.protocol", if protocol == UpstreamProtocol::Http2 { "HTTP/2" } else { "HTTP/1.1" });
        span.int("nuncio.try", i64::from(number));
        if hedge {
            span.bool("nuncio.hedge", true);
        }
        (span, self.request.child_of(ids.span_id))
    }
}

/// How a try (or the exchange of the kept one) ended, for its span.
#[derive(Clone, Copy)]
pub(crate) enum TryEnd<'m> {
    /// The upstream answered this status (and, for the kept try, its
    /// body was relayed in full).
    Status(u16),
    /// It failed.
    Error(&'m dyn std::fmt::Display),
    /// Its context was cancelled first.
    Canceled(&'m dyn std::fmt::Display),
}

/// Ends a try's span (nothing without one: inlined, so that an untraced
/// request pays a test and no call).
#[inline]
pub(crate) fn end_try(span: Option<Span<'_>>, end: TryEnd<'_>) {
    if let Some(span) = span {
        end_try_span(span, end);
    }
}

fn end_try_span(mut span: Span<'_>, end: TryEnd<'_>) {
    match end {
        TryEnd::Status(status) => {
            span.int("http.status_code", i64::from(status));
            if status >= 500 {
                span.bool("error", true);
                span.end(Status::Error(&format_args!("the upstream answered {status}")));
            } else {
                span.end(Status::Unset);
            }
        }
        TryEnd::Error(why) => {
            span.bool("error", true);
            span.end(Status::Error(why));
        }
        TryEnd::Canceled(cause) => span.end(Status::Canceled(cause)),
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// What a stream's filter chain needs to make its spans (only for a
/// sampled request with filters): the snapshot the stream started with
/// (its exporter) and the request's trace.
pub(crate) struct FilterTrace {
    pub(crate) local: nuncio_runtime::SlotRef<crate::snapshot::Local>,
    pub(crate) request: RequestTrace,
}

impl FilterTrace {
    /// The span of filter `filter`'s `hook`, which went async (`wait`:
    /// `async`) or stopped the chain until its `StreamHandle` resumes it
    /// (`stopped`; the work it waits for is usually off the worker).
    pub(crate) fn start(&self, filter: &str, hook: &str, wait: &'static str) -> Option<Span<'_>> {
        let exporter = &self.local.snapshot.tracing.as_ref()?.exporter;
        let mut span = exporter.span(&self.request.child_span(), SpanKind::Internal, &["filter", filter, hook]);
        span.set_drop_cause("the stream ended while the filter held it");
        span.string("component", "proxy");
        span.string("filter.name", filter);
        span.string("filter.hook", hook);
        span.string("filter.wait", wait);
        Some(span)
    }
}
