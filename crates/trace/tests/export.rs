//! The exporter against a real OTLP/HTTP receiver (nuncio-test-support's
//! `Collector`, which decodes with `opentelemetry-proto`): what a span
//! records arrives as OpenTelemetry reads it; a collector that is down
//! costs whoever records spans nothing, and every span lost is counted.

use std::time::Duration;

use nuncio_stats::Summary;
use nuncio_test_support::{Blackhole, Collector, dead_address, wait_until};
use nuncio_trace::{Endpoint, Exporter, ExporterConfig, RequestTrace, Sampler, SpanKind, Status};

fn exporter(url: &str, queue_size: usize) -> Exporter {
    Exporter::start(ExporterConfig { endpoint: Endpoint::parse(url).unwrap(), service_name: "edge".into(), queue_size })
        .unwrap()
}

fn counter(exporter: &Exporter, name: &str, labels: &[(&str, &str)]) -> u64 {
    Summary::of(std::slice::from_ref(exporter.store())).counter(name, labels).unwrap_or(0)
}

#[test]
fn spans_arrive_as_opentelemetry_reads_them() {
    let collector = Collector::start();
    let exporter = exporter(&collector.url(), 64);
    let incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let trace = RequestTrace::start(Some(incoming), Sampler::ratio(0.0));
    let mut request = exporter.span(&trace.own_span(), SpanKind::Server, &["ingress"]);
    request.string("http.method", "GET");
    request.display("peer.address", "127.0.0.1:4242".parse::<std::net::SocketAddr>().unwrap());
    let child = trace.child_span();
    let mut upstream = exporter.span(&child, SpanKind::Client, &["router", "app", "egress"]);
    upstream.int("http.status_code", 503);
    upstream.bool("error", true);
    upstream.end(Status::Error(&"upstream answered 503"));
    let abandoned = exporter.span(&trace.child_span(), SpanKind::Internal, &["filter", "slow", "request_headers"]);
    drop(abandoned);
    request.end(Status::Canceled(&"the client disconnected"));

    let spans = collector.wait_for_spans(3);
    let by_name = |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name}"));
    let (ingress, egress, filter) =
        (by_name("ingress"), by_name("router app egress"), by_name("filter slow request_headers"));

    assert_eq!(ingress.service, "edge");
    assert_eq!(ingress.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ingress.parent_span_id.as_deref(), Some("00f067aa0ba902b7"), "the sender's span");
    assert_eq!(ingress.flags, 0x301, "sampled, parent known to be remote");
    assert_eq!((ingress.kind, ingress.attr("http.method"), ingress.attr("peer.address")), (2, "GET", "127.0.0.1:4242"));
    assert_eq!((ingress.status_code, ingress.status_message.as_str()), (2, "canceled: the client disconnected"));
    assert_eq!(ingress.attr("canceled"), "true");
    assert!(ingress.start <= egress.start && egress.end <= ingress.end && ingress.start > 0);

    assert_eq!(egress.parent_span_id.as_ref(), Some(&ingress.span_id));
    assert_eq!((egress.trace_id.as_str(), egress.kind, egress.flags), (ingress.trace_id.as_str(), 3, 0x101));
    assert_eq!((egress.attr("http.status_code"), egress.attr("error")), ("503", "true"));
    assert_eq!((egress.status_code, egress.status_message.as_str()), (2, "upstream answered 503"));

    assert_eq!(filter.parent_span_id.as_ref(), Some(&ingress.span_id));
    assert_eq!((filter.kind, filter.status_message.as_str()), (1, "canceled: abandoned before it ended"));

    wait_until("the export counted", || counter(&exporter, "nuncio_tracing_spans_exported_total", &[]) == 3);
    assert_eq!(counter(&exporter, "nuncio_tracing_exports_total", &[("result", "success")]), 1, "one batch");
}

#[test]
fn a_collector_that_refuses_connections_costs_spans_not_callers() {
    let exporter = exporter(&format!("http://{}", dead_address()), 8);
    let trace = RequestTrace::start(None, Sampler::ratio(1.0));
    for _ in 0..200 {
        exporter.span(&trace.child_span(), SpanKind::Client, &["x"]).end(Status::Unset);
    }
    // The queue held 8: everything else found it full at once.
    assert!(exporter.dropped() >= 150, "{}", exporter.dropped());
    wait_until("failed exports counted", || {
        counter(&exporter, "nuncio_tracing_exports_total", &[("result", "failure")]) >= 1
            && counter(&exporter, "nuncio_tracing_spans_dropped_total", &[("reason", "queue_full")]) >= 150
    });
    wait_until("every span accounted for", || {
        let lost = counter(&exporter, "nuncio_tracing_spans_dropped_total", &[("reason", "queue_full")])
            + counter(&exporter, "nuncio_tracing_spans_dropped_total", &[("reason", "export_failed")]);
        lost == 200
    });
    assert_eq!(counter(&exporter, "nuncio_tracing_spans_exported_total", &[]), 0);
}

#[test]
fn a_collector_that_never_answers_blocks_only_the_exporter() {
    let blackhole = Blackhole::new();
    let exporter = exporter(&format!("http://{}", blackhole.addr), 4);
    let trace = RequestTrace::start(None, Sampler::ratio(1.0));
    // Ending spans never waits, even with the exporter stuck connecting.
    let started = std::time::Instant::now();
    for round in 0..3 {
        for _ in 0..50 {
            exporter.span(&trace.child_span(), SpanKind::Client, &["x"]).end(Status::Unset);
        }
        if round == 0 {
            std::thread::sleep(Duration::from_millis(300)); // the exporter takes a batch and hangs on it
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5), "ending spans waited for the exporter");
    assert!(exporter.dropped() >= 100, "{}", exporter.dropped());
}

#[test]
fn batches_share_one_kept_alive_connection() {
    let collector = Collector::start();
    let exporter = exporter(&collector.url(), 64);
    let trace = RequestTrace::start(None, Sampler::ratio(1.0));
    exporter.span(&trace.child_span(), SpanKind::Client, &["first"]).end(Status::Unset);
    collector.wait_for_spans(1);
    // Another batch goes on the kept-alive connection.
    exporter.span(&trace.child_span(), SpanKind::Client, &["second"]).end(Status::Unset);
    let spans = collector.wait_for_spans(2);
    assert_eq!(spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["first", "second"]);
    assert!(exporter.flush(Duration::from_secs(5)), "a flush with nothing queued is answered");
    assert_eq!(collector.upstream().connections(), 1, "one connection, kept alive");
}
