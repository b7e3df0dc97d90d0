//! The worker's cost per access-log line.
//!
//! `cargo bench -p nuncio-accesslog --bench accesslog`

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use nuncio_accesslog::{Format, Record, Sink, Target};

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("host", "shop.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-encoding", "gzip, deflate, br"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-request-id", "4c2f9a1e-77b0-4c39-9f0e-2d1f5e6a7b8c"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h
}

/// A typical proxied GET.
fn record<'a>(req: &'a HeaderMap, resp: &'a HeaderMap) -> Record<'a> {
    Record {
        method: Some(&Method::GET),
        path: Some("/api/v1/items?id=7&page=2"),
        authority: Some("shop.example.com"),
        scheme: Some("http"),
        version: Some(Version::HTTP_11),
        request_headers: Some(req),
        response_headers: Some(resp),
        status: Some(StatusCode::OK),
        bytes_sent: 5_321,
        duration: Duration::from_micros(15_900),
        response_duration: Some(Duration::from_millis(13)),
        upstream_service_time: Some(Duration::from_millis(12)),
        upstream_host: Some("10.1.2.3:8080".parse::<SocketAddr>().unwrap()),
        upstream_cluster: Some("shop"),
        route_name: Some("api"),
        upstream_request_attempt_count: 1,
        ..Record::new(SystemTime::now())
    }
}

fn render(c: &mut Criterion) {
    let (req, resp) = (request_headers(), HeaderMap::new());
    let record = record(&req, &resp);
    let mut buf = Vec::with_capacity(512);

    let default = Format::default_text();
    c.bench_function("render_default_text", |b| {
        b.iter(|| {
            buf.clear();
            default.render(black_box(&record), &mut buf);
        });
    });

    let fields: Vec<(String, String)> = [
        ("start_time", "%START_TIME%"),
        ("method", "%REQ(:METHOD)%"),
        ("path", "%REQ(:PATH)%"),
        ("protocol", "%PROTOCOL%"),
        ("status", "%RESPONSE_CODE%"),
        ("flags", "%RESPONSE_FLAGS%"),
        ("bytes_received", "%BYTES_RECEIVED%"),
        ("bytes_sent", "%BYTES_SENT%"),
        ("duration", "%DURATION%"),
        ("upstream_service_time", "%UPSTREAM_SERVICE_TIME%"),
        ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
        ("user_agent", "%REQ(USER-AGENT)%"),
        ("request_id", "%REQ(X-REQUEST-ID)%"),
        ("authority", "%REQ(:AUTHORITY)%"),
        ("upstream_host", "%UPSTREAM_HOST%"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let json = Format::json(&fields).unwrap();
    c.bench_function("render_json_same_fields", |b| {
        b.iter(|| {
            buf.clear();
            json.render(black_box(&record), &mut buf);
        });
    });
}

/// What the worker pays to hand a line to the writer thread, which writes
/// to /dev/null here. Timed in batches smaller than the channel, with the
/// writer caught up (untimed `flush`) between them, so that every line is
/// queued rather than dropped.
fn send(c: &mut Criterion) {
    const BATCH: u64 = 4096;
    let (req, resp) = (request_headers(), HeaderMap::new());
    let record = record(&req, &resp);
    let format = Format::default_text();
    let sink = Sink::open(Target::File(PathBuf::from("/dev/null"))).unwrap();
    let mut line = Vec::new();
    format.render(&record, &mut line);

    let timed = |iters: u64, send: &dyn Fn() -> bool| {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(BATCH);
            let start = Instant::now();
            for _ in 0..n {
                black_box(send());
            }
            total += start.elapsed();
            assert!(sink.flush(Duration::from_secs(10)));
            left -= n;
        }
        total
    };
    c.bench_function("sink_write_line", |b| b.iter_custom(|iters| timed(iters, &|| sink.write_line(black_box(&line)))));
    c.bench_function("sink_log_default_text", |b| {
        b.iter_custom(|iters| timed(iters, &|| sink.log(&format, black_box(&record))));
    });
    assert_eq!(sink.dropped(), 0, "the bench measured drops, not sends");
}

criterion_group!(benches, render, send);
criterion_main!(benches);
