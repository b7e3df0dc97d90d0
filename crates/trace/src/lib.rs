//! nuncio's distributed tracing: W3C trace context in, OpenTelemetry spans
//! out, and never a cost the request path can feel.
//!
//! # Concepts
//!
//! * **Trace context** ([`TraceParent`], [`RequestTrace`]): a request's
//!   `traceparent` field is read when its head arrives; the request joins
//!   the sender's trace, or starts a new one. The [`Sampler`] decides
//!   whether nuncio records it: the sender's decision when it sent one
//!   (OpenTelemetry's parent-based sampler, Envoy's default), else a draw
//!   at the configured ratio. Every request sent upstream on its behalf
//!   carries a `traceparent` naming the span that sent it.
//! * **Spans** ([`Span`]): written as OTLP protobuf, field by field, into a
//!   buffer taken from the exporter's pool, by the thread that records the
//!   span, while the span is open; ended, the buffer goes to the exporter.
//!   No span object is built, no attribute is allocated.
//! * **Exporter** ([`Exporter`]): a bounded queue to a thread of its own,
//!   which batches spans into OTLP/HTTP requests to a collector. A
//!   collector that is slow or down costs the request path nothing: spans
//!   that find the queue full are dropped and counted.
//! * **Log ids** ([`InRequest`], [`current_log_ids`]): while a request's
//!   future is polled, its request id and trace id are the thread's
//!   current ones, so every log line logged meanwhile can say them.
//!
//! # The threading rule
//!
//! * [`Exporter::start`], [`ExporterRegistry`]: main (config time).
//! * [`Exporter::span`], [`Span`]: any thread, typically the worker that
//!   serves the request; a span lives on the thread that opened it (it
//!   borrows the exporter handle). Ending one never blocks: `try_send`.
//! * The exporter's thread is the only one that writes its stats
//!   ([`Exporter::store`]), does network I/O, and blocks.
//!
//! # Decisions
//!
//! * **No OpenTelemetry SDK.** Measured here (docs/benchmarks.md,
//!   "Tracing"): the SDK with its OTLP/HTTP exporter adds ~120 crates to
//!   the build and 9 allocations and ~1.2 µs to a request with two spans;
//!   spans written straight into pooled buffers cost no allocation and
//!   0.53 µs (`cargo bench -p nuncio-trace`). The
//!   wire format is OTLP's protobuf, written by hand (`src/proto.rs` has the
//!   field numbers); the tests decode it with the `opentelemetry-proto`
//!   crate's types, so the encoding is checked against OpenTelemetry's own
//!   definitions.
//! * **Span names and attributes are Envoy's** where Envoy has them
//!   (`ingress`, `router CLUSTER egress`; `http.method`, `http.url`,
//!   `http.status_code`, `upstream_cluster`, `response_flags`,
//!   `guid:x-request-id`, `canceled`...).
//!
//! # Example
//!
//! ```
//! use nuncio_trace::{DEFAULT_QUEUE_SIZE, Endpoint, Exporter, ExporterConfig, RequestTrace, Sampler, SpanKind, Status};
//!
//! // Main, at config time: one exporter per collector.
//! let exporter = Exporter::start(ExporterConfig {
//!     endpoint: Endpoint::parse("http://127.0.0.1:4318")?,
//!     service_name: "nuncio".into(),
//!     queue_size: DEFAULT_QUEUE_SIZE,
//! })?;
//!
//! // A worker, when a request's head arrives: the sender sampled its
//! // trace, so nuncio records it whatever its own ratio.
//! let incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
//! let trace = RequestTrace::start(Some(incoming), Sampler::ratio(0.1));
//! assert!(trace.sampled);
//! let mut request = exporter.span(&trace.own_span(), SpanKind::Server, &["ingress"]);
//! request.string("http.method", "GET");
//!
//! // A try upstream: a span of its own, named in the traceparent it sends.
//! let try_ids = trace.child_span();
//! let sent = trace.child_of(try_ids.span_id).encode();
//! assert_eq!(&sent[3..35], b"4bf92f3577b34da6a3ce929d0e0e4736");
//! let mut upstream = exporter.span(&try_ids, SpanKind::Client, &["router", "app", "egress"]);
//! upstream.int("http.status_code", 200);
//! upstream.end(Status::Unset);
//!
//! // Both leave for the exporter's thread, which posts them in a batch.
//! request.end(Status::Unset);
//! # Ok::<(), nuncio_trace::Error>(())
//! ```

#![forbid(unsafe_code)]

mod context;
mod endpoint;
mod error;
mod exporter;
mod proto;
mod scope;
mod span;

pub use context::{
    RequestTrace, SAMPLED, Sampler, SpanId, SpanIds, TRACEPARENT, TRACESTATE, TraceId, TraceParent, X_REQUEST_ID,
};
pub use endpoint::{DEFAULT_PATH, Endpoint};
pub use error::Error;
pub use exporter::{
    BATCH_DELAY, CONNECT_TIMEOUT, DEFAULT_QUEUE_SIZE, EXPORT_TIMEOUT, Exporter, ExporterConfig, ExporterRegistry,
    FIRST_BACKOFF, MAX_BACKOFF, MAX_BATCH, POLL_INTERVAL,
};
pub use scope::{InRequest, LogIds, MAX_LOGGED_ID, current_log_ids, note_request_id, set_log_ids, with_log_ids};
pub use span::{ABANDONED, Span, SpanKind, Status};
