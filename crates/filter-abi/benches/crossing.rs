//! What crossing into a Go filter costs per hook, through the real `go`
//! kind and a real library (sdk/go/internal/testfilters, built here):
//!
//! * `hook/inline_continue`: one request-headers hook (five fields) of a
//!   live stream
//!   that decides at once, no change (the head encoded, the cgo call, the
//!   head copied and decoded in Go, the decision back);
//! * `hook/inline_edit`: the same with one header edit (bench/filters'
//!   Go variant's request half);
//! * `stream/inline_edit`: a whole stream of that filter: made, its hook,
//!   its end (the stream registered in the table, the Go side's ctx and
//!   record made and dropped);
//! * `stream/deferred`: a stream whose hook defers: the decision comes
//!   from a goroutine, posted to the worker (a thread hop each way).
//!
//! `cargo bench -p nuncio-filter-abi --bench crossing` (needs Go; skipped
//! with a note without it). Figures in docs/benchmarks.md.

// The bench prints why it skips.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Version};
use nuncio_context::Context;
use nuncio_filter::{Filter, FilterFactory, FilterKind, Hook, RequestHead, StreamCx};
use nuncio_filter_abi::GoKind;
use nuncio_runtime::Dispatcher;

fn library() -> Option<PathBuf> {
    let go = ["/usr/lib/go-1.23/bin/go"]
        .into_iter()
        .map(PathBuf::from)
        .chain(std::env::var_os("NUNCIO_GO").map(PathBuf::from))
        .chain(
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).map(|d| d.join("go")).collect::<Vec<_>>()),
        )
        .find(|p| p.is_file())?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go/libtestfilters-bench.so");
    let status = Command::new(go)
        .current_dir(root.join("sdk/go/internal/testfilters"))
        .args(["build", "-buildmode=c-shared", "-o"])
        .arg(&out)
        .arg(".")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .status()
        .ok()?;
    status.success().then_some(out)
}

fn head() -> RequestHead {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "bench.example"),
        ("user-agent", "wrk"),
        ("accept", "*/*"),
        ("x-request-id", "0f8e1c1e-8d5b-4b5e-9a3c-2b7a1f0d9e11"),
        ("accept-encoding", "gzip"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    RequestHead {
        method: Method::GET,
        uri: "/small".parse().unwrap(),
        version: Version::HTTP_11,
        headers,
        authority: Some("bench.example".parse().unwrap()),
    }
}

fn factory(library: &Path, filter: &str) -> std::sync::Arc<dyn FilterFactory> {
    let block = serde_json::json!({ "library": library, "filter": filter });
    GoKind.configure(block).unwrap_or_else(|e| panic!("{filter}: {e}"))
}

fn done(hook: Hook<'_>) {
    match hook {
        Hook::Done(status) => {
            black_box(status);
        }
        Hook::Pending(_) => panic!("an inline filter deferred"),
    }
}

fn crossing(c: &mut Criterion) {
    let Some(library) = library() else {
        println!("note: no Go toolchain: the crossing bench needs one (see the README)");
        return;
    };
    let dispatcher = Dispatcher::new("bench-worker").expect("a dispatcher");
    let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let template = head();

    let noop = factory(&library, "bench_noop");
    let edit = factory(&library, "bench_edit");
    let deferred = factory(&library, "bench_defer");
    let mut group = c.benchmark_group("hook");
    for (name, factory) in [("inline_continue", &noop), ("inline_edit", &edit)] {
        let mut cx = StreamCx::new(Context::background(), client);
        let mut filter = factory.create();
        // The same head each time: the edit sets the same field again.
        let mut head = template.clone();
        group.bench_function(name, |b| {
            b.iter(|| done(filter.request_headers(&mut cx, &mut head, true)));
        });
        filter.on_complete(&cx);
    }
    group.finish();

    let mut group = c.benchmark_group("stream");
    group.bench_function("inline_edit", |b| {
        b.iter(|| {
            let mut cx = StreamCx::new(Context::background(), client);
            let mut filter: Box<dyn Filter> = edit.create();
            let mut head = template.clone();
            done(filter.request_headers(&mut cx, &mut head, true));
            filter.on_complete(&cx);
            head
        });
    });
    group.bench_function("deferred", |b| {
        b.iter(|| {
            let mut cx = StreamCx::new(Context::background(), client);
            let mut filter: Box<dyn Filter> = deferred.create();
            let mut head = template.clone();
            let status = dispatcher.run_until(filter.request_headers(&mut cx, &mut head, true).resolve());
            black_box(status);
            filter.on_complete(&cx);
            head
        });
    });
    group.finish();
}

criterion_group!(benches, crossing);
criterion_main!(benches);
