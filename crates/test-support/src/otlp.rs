//! An OTLP/HTTP collector for the tracing tests: a scripted upstream that
//! takes `POST /v1/traces`, records every export request, and decodes
//! them with the `opentelemetry-proto` crate's generated types (so what
//! nuncio writes by hand is checked against OpenTelemetry's own
//! definitions).

use std::collections::BTreeMap;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

use crate::TIMEOUT;
use crate::upstream::{Answer, Upstream};

/// A span as the collector received it, with its resource's service name.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedSpan {
    /// The `service.name` of the resource it came with.
    pub service: String,
    /// Lowercase hex.
    pub trace_id: String,
    /// Lowercase hex.
    pub span_id: String,
    /// Lowercase hex; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// Its name (`ingress`, `router app egress`...).
    pub name: String,
    /// OTLP's `SpanKind`: 1 internal, 2 server, 3 client.
    pub kind: i32,
    /// Nanoseconds since the Unix epoch.
    pub start: u64,
    /// Nanoseconds since the Unix epoch.
    pub end: u64,
    /// Attributes, each as text (`true`, `200`, `GET`).
    pub attributes: BTreeMap<String, String>,
    /// OTLP's status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// The status message (empty unless an error).
    pub status_message: String,
    /// Span flags (trace flags in the low byte, parent remoteness above).
    pub flags: u32,
}

impl ExportedSpan {
    /// Attribute `key` as text, or "" when absent.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// A collector on `127.0.0.1:0` that answers every export `200`.
pub struct Collector {
    upstream: Upstream,
}

impl Collector {
    /// Starts it.
    #[allow(clippy::new_without_default, reason = "it binds a socket: not a default value")]
    pub fn start() -> Collector {
        let upstream =
            Upstream::scripted("otlp", |_| Answer::status(200).with("content-type", "application/x-protobuf"));
        Collector { upstream }
    }

    /// Its URL (`http://127.0.0.1:PORT`), for `tracing.otlp_endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.upstream.addr)
    }

    /// The upstream behind it (its raw requests).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Every span received so far, in arrival order. Panics on a request
    /// that is not a valid OTLP protobuf export to `/v1/traces`.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        let mut spans = Vec::new();
        for request in self.upstream.requests() {
            assert_eq!((request.method.as_str(), request.target.as_str()), ("POST", "/v1/traces"));
            assert_eq!(request.header("content-type"), "application/x-protobuf");
            let export = ExportTraceServiceRequest::decode(request.body.as_slice())
                .unwrap_or_else(|e| panic!("not an OTLP ExportTraceServiceRequest: {e}"));
            for resource_spans in export.resource_spans {
                let resource = resource_spans.resource.unwrap_or_default();
                let service = resource
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                    .unwrap_or_default();
                for scope_spans in resource_spans.scope_spans {
                    for span in scope_spans.spans {
                        let status = span.status.unwrap_or_default();
                        spans.push(ExportedSpan {
                            service: service.clone(),
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
                            name: span.name,
                            kind: span.kind,
                            start: span.start_time_unix_nano,
                            end: span.end_time_unix_nano,
                            attributes: span
                                .attributes
                                .iter()
                                .map(|kv| (kv.key.clone(), text(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
                                .collect(),
                            status_code: status.code,
                            status_message: status.message,
                            flags: span.flags,
                        });
                    }
                }
            }
        }
        spans
    }

    /// Waits (at most [`TIMEOUT`]) until spans for which `wanted` holds
    /// have arrived, `n` of them, and returns every span received.
    pub fn wait_for(&self, what: &str, n: usize, wanted: impl Fn(&ExportedSpan) -> bool) -> Vec<ExportedSpan> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let spans = self.spans();
            if spans.iter().filter(|s| wanted(s)).count() >= n {
                return spans;
            }
            assert!(Instant::now() < deadline, "after {TIMEOUT:?}, fewer than {n} {what}; received:\n{spans:#?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits until `n` spans (any) arrived; returns every span received.
    pub fn wait_for_spans(&self, n: usize) -> Vec<ExportedSpan> {
        self.wait_for("spans", n, |_| true)
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The trace id and parent id of a `traceparent` value (`00-T-P-F`), and
/// its flags.
pub fn parse_traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "a traceparent: {value:?}");
    assert_eq!(parts[0], "00", "version 00: {value:?}");
    (parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned())
}
