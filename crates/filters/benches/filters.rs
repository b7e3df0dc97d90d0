//! The built-in filters' hooks, called directly through `dyn Filter` as
//! the filter manager calls them (no proxy, no I/O).
//!
//! `cargo bench -p nuncio-filters --bench filters`
//!
//! * `noop/request_headers`: a filter that does nothing: the floor of a
//!   synchronous hook (a virtual call and `Hook::Done`). Goal: ≤ 20 ns.
//! * `noop/chain_of_8`: eight of them in a row, as a chain does; per
//!   filter, divide by 8.
//! * `headers/request_constants`: `headers` setting two constant fields and
//!   removing one on a typical 8-field browser request head.
//! * `headers/by_hand_constants`: the same three edits written by hand on
//!   the `HeaderMap`: the floor `request_constants` is read against.
//! * `headers/request_templates`: the same plus a value rendered from the
//!   client's address and one from another request field.
//! * `headers/response`: setting a field rendered from a kept request field
//!   and removing `server` on a typical response head.
//! * `local_ratelimit/request_headers`: taking a token (a clock read and a
//!   thread-local table lookup).
//! * `request_signature/sign_inline`: the HMAC the `request_signature`
//!   filter computes off the worker, measured in place (a stream without a
//!   handle is signed on the spot): what leaving the worker saves it.
//!
//! Heads that a hook changes are built fresh for each call (field by
//! field, as a codec does), outside the measurement (`iter_batched_ref`).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use nuncio_filter::{Context, Filter, FilterFactory, FilterKind, Hook, RequestHead, ResponseHead, Status, StreamCx};
use nuncio_filters::headers::HeadersKind;
use nuncio_filters::local_ratelimit::LocalRateLimitKind;
use nuncio_filters::request_signature::RequestSignatureKind;
use serde_json::json;

/// A filter that does nothing.
struct Noop;

impl Filter for Noop {}

fn cx() -> StreamCx {
    let addr: SocketAddr = "203.0.113.9:52100".parse().unwrap();
    StreamCx::new(Context::background(), addr)
}

/// A typical browser request head: 8 fields.
fn request_head() -> RequestHead {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "shop.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "session=0123456789abcdef; theme=dark"),
        ("x-request-id", "7f3c1e2a-9b4d-4c6e-8f1a-2b3c4d5e6f70"),
        ("x-debug", "1"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    RequestHead {
        method: Method::GET,
        uri: "/products/42?ref=home".parse().unwrap(),
        version: Version::HTTP_11,
        headers,
        authority: Some("shop.example.com".parse().unwrap()),
    }
}

fn response_head() -> ResponseHead {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "text/html; charset=utf-8"),
        ("content-length", "5120"),
        ("server", "app/1.0"),
        ("cache-control", "max-age=60"),
        ("date", "Tue, 01 Jul 2025 10:00:00 GMT"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    ResponseHead { status: StatusCode::OK, headers }
}

fn done(hook: Hook<'_>) -> Status {
    match hook {
        Hook::Done(status) => status,
        Hook::Pending(_) => unreachable!("synchronous hooks"),
    }
}

fn factory(kind: &dyn FilterKind, config: serde_json::Value) -> Arc<dyn FilterFactory> {
    kind.configure(config).expect("a valid bench config")
}

fn noop(c: &mut Criterion) {
    let mut group = c.benchmark_group("noop");
    let mut cx = cx();
    let mut head = request_head();
    let mut filter: Box<dyn Filter> = Box::new(Noop);
    group.bench_function("request_headers", |b| {
        // The manager matches on the status, as here.
        b.iter(|| {
            let status = done(black_box(&mut filter).request_headers(&mut cx, &mut head, true));
            black_box(matches!(status, Status::Continue))
        });
    });
    let mut chain: Vec<Box<dyn Filter>> = (0..8).map(|_| Box::new(Noop) as Box<dyn Filter>).collect();
    group.bench_function("chain_of_8", |b| {
        b.iter(|| {
            for filter in black_box(&mut chain).iter_mut() {
                if !matches!(done(filter.request_headers(&mut cx, &mut head, true)), Status::Continue) {
                    break;
                }
            }
        });
    });
    group.finish();
}

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    let mut cx = cx();

    let constants = factory(
        &HeadersKind,
        json!({ "request": {
            "set": [ { "name": "x-env", "value": "prod" }, { "name": "x-edge", "value": "fra1" } ],
            "remove": [ "x-debug" ],
        } }),
    );
    let mut filter = constants.create();
    group.bench_function("request_constants", |b| {
        b.iter_batched_ref(
            request_head,
            |head| black_box(done(filter.request_headers(&mut cx, head, true))),
            BatchSize::SmallInput,
        );
    });

    // The same edits written by hand on the `HeaderMap`: the floor.
    let (env, edge) =
        (http::HeaderName::from_bytes(b"x-env").unwrap(), http::HeaderName::from_bytes(b"x-edge").unwrap());
    let (prod, fra1) = (HeaderValue::from_bytes(b"prod").unwrap(), HeaderValue::from_bytes(b"fra1").unwrap());
    let debug = http::HeaderName::from_bytes(b"x-debug").unwrap();
    group.bench_function("by_hand_constants", |b| {
        b.iter_batched_ref(
            request_head,
            |head| {
                head.headers.insert(&env, prod.clone());
                head.headers.insert(&edge, fra1.clone());
                head.headers.remove(&debug);
            },
            BatchSize::SmallInput,
        );
    });

    let templates = factory(
        &HeadersKind,
        json!({ "request": {
            "set": [
                { "name": "x-env", "value": "prod" },
                { "name": "x-client-ip", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" },
                { "name": "x-trace", "value": "req=%REQ(x-request-id)%" },
            ],
            "add": [ { "name": "x-edge", "value": "fra1" } ],
            "remove": [ "x-debug" ],
        } }),
    );
    let mut filter = templates.create();
    group.bench_function("request_templates", |b| {
        b.iter_batched_ref(
            request_head,
            |head| black_box(done(filter.request_headers(&mut cx, head, true))),
            BatchSize::SmallInput,
        );
    });

    let response = factory(
        &HeadersKind,
        json!({ "response": {
            "set": [ { "name": "x-request-id", "value": "%REQ(x-request-id)%" } ],
            "remove": [ "server" ],
        } }),
    );
    let mut filter = response.create();
    done(filter.request_headers(&mut cx, &mut request_head(), true));
    group.bench_function("response", |b| {
        b.iter_batched_ref(
            response_head,
            |head| black_box(done(filter.response_headers(&mut cx, head, false))),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn local_ratelimit(c: &mut Criterion) {
    let mut cx = cx();
    let mut head = request_head();
    let limit = factory(&LocalRateLimitKind, json!({ "tokens": u32::MAX, "interval": "1h" }));
    let mut filter = limit.create();
    c.bench_function("local_ratelimit/request_headers", |b| {
        b.iter(|| black_box(done(filter.request_headers(&mut cx, &mut head, true))));
    });
}

fn request_signature(c: &mut Criterion) {
    let mut cx = cx();
    let signature = factory(
        &RequestSignatureKind,
        json!({ "key": "0123456789abcdef0123456789abcdef", "headers": ["cookie", "x-request-id"] }),
    );
    let mut filter = signature.create();
    c.bench_function("request_signature/sign_inline", |b| {
        b.iter_batched_ref(
            request_head,
            |head| black_box(done(filter.request_headers(&mut cx, head, true))),
            BatchSize::SmallInput,
        );
    });
}

criterion_group!(benches, noop, headers, local_ratelimit, request_signature);
criterion_main!(benches);
