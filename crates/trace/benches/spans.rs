//! What tracing costs the thread that records: the sampling decision and
//! the spans of one proxied request (a downstream span and one try, with
//! the attributes nuncio sets), written and queued.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use nuncio_trace::{
    DEFAULT_QUEUE_SIZE, Endpoint, Exporter, ExporterConfig, RequestTrace, Sampler, SpanKind, Status, TraceParent,
};

fn request(c: &mut Criterion) {
    // A collector nobody listens on: the exporter's thread fails fast and
    // keeps draining, so the queue has room and spans are queued, not
    // dropped (the recording side's cost either way).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let exporter = Exporter::start(ExporterConfig {
        endpoint: Endpoint::parse(&format!("http://{dead}")).unwrap(),
        service_name: "nuncio".into(),
        queue_size: DEFAULT_QUEUE_SIZE,
    })
    .unwrap();
    let sampler = Sampler::ratio(1.0);
    let peer: std::net::SocketAddr = "127.0.0.1:4242".parse().unwrap();
    c.bench_function("decide, no traceparent, unsampled", |b| {
        let never = Sampler::ratio(0.0);
        b.iter(|| black_box(RequestTrace::start(black_box(None), never)));
    });
    c.bench_function("traceparent parse + encode", |b| {
        let value = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        b.iter(|| black_box(TraceParent::parse(black_box(value)).unwrap().encode()));
    });
    c.bench_function("request with one try: 2 spans, 14 attributes", |b| {
        b.iter(|| {
            let trace = RequestTrace::start(None, sampler);
            let mut server = exporter.span(&trace.own_span(), SpanKind::Server, &["ingress"]);
            server.string("component", "proxy");
            server.string("http.method", "GET");
            server.string_parts("http.url", &["http://", "example.com", "/small"]);
            server.string("http.protocol", "HTTP/1.1");
            server.socket_addr("peer.address", peer);
            server.string("guid:x-request-id", "0b9c3a6e-0000-4000-8000-000000000000");
            let try_ids = trace.child_span();
            black_box(trace.child_of(try_ids.span_id).encode());
            let mut client = exporter.span(&try_ids, SpanKind::Client, &["router", "app", "egress"]);
            client.string("component", "proxy");
            client.string("upstream_cluster", "app");
            client.socket_addr("upstream_address", peer);
            client.int("http.status_code", 200);
            client.end(Status::Unset);
            server.int("http.status_code", 200);
            server.string("response_flags", "-");
            server.string("upstream_cluster", "app");
            server.end(Status::Unset);
        });
    });
}

criterion_group!(benches, request);
criterion_main!(benches);
