//! `nuncio_context::Context` against tokio-util's `CancellationToken` (and, in
//! the report, Go's `context`): derive + cancel, deadlines, value lookup,
//! `err()`.
//!
//! Run: `cargo bench -p nuncio-context --bench context`.

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use nuncio_context::Context;
use tokio_util::sync::CancellationToken;

/// Ten distinct value types.
struct V<const N: usize>(#[allow(dead_code)] u64);

fn derive_cancel(c: &mut Criterion) {
    let mut g = c.benchmark_group("derive+cancel");
    let background = Context::background();
    g.bench_function("context with_cancel+cancel, from background", |b| {
        b.iter(|| {
            let (ctx, cancel) = black_box(&background).with_cancel();
            cancel.cancel();
            ctx
        });
    });
    let (parent, _parent) = Context::background().with_cancel();
    g.bench_function("context with_cancel+cancel, from cancellable parent", |b| {
        b.iter(|| {
            let (ctx, cancel) = black_box(&parent).with_cancel();
            cancel.cancel();
            ctx
        });
    });
    g.bench_function("context with_cancel+drop handle, from cancellable parent", |b| {
        b.iter(|| black_box(&parent).with_cancel());
    });
    g.bench_function("tokio-util new+cancel", |b| {
        b.iter(|| {
            let token = CancellationToken::new();
            token.cancel();
            token
        });
    });
    let root = CancellationToken::new();
    g.bench_function("tokio-util child_token+cancel", |b| {
        b.iter(|| {
            let token = black_box(&root).child_token();
            token.cancel();
            token
        });
    });
    g.bench_function("tokio-util child_token+drop", |b| {
        b.iter(|| black_box(&root).child_token());
    });
    g.finish();
}

fn timeout(c: &mut Criterion) {
    let mut g = c.benchmark_group("timeout");
    let background = Context::background();
    g.bench_function("context with_timeout+cancel, from background", |b| {
        b.iter(|| {
            let (ctx, cancel) = black_box(&background).with_timeout(Duration::from_secs(5));
            cancel.cancel();
            ctx
        });
    });
    let (parent, _parent) = Context::background().with_timeout(Duration::from_secs(60));
    g.bench_function("context with_timeout+cancel, from parent with deadline", |b| {
        b.iter(|| {
            let (ctx, cancel) = black_box(&parent).with_timeout(Duration::from_secs(5));
            cancel.cancel();
            ctx
        });
    });
    g.finish();
}

fn value(c: &mut Criterion) {
    let mut g = c.benchmark_group("value");
    let depth1 = Context::background().with_value(V::<0>(0));
    g.bench_function("context value, depth 1", |b| {
        b.iter(|| black_box(&depth1).value::<V<0>>().is_some());
    });
    // Ten layers, each a value of its own type under a cancellable scope.
    let mut handles = Vec::new();
    let mut depth10 = Context::background();
    macro_rules! layer {
        ($($n:literal)*) => {$(
            let (ctx, handle) = depth10.with_cancel();
            handles.push(handle);
            depth10 = ctx.with_value(V::<$n>($n));
        )*};
    }
    layer!(0 1 2 3 4 5 6 7 8 9);
    g.bench_function("context value, depth 10, outermost (Go's worst case)", |b| {
        b.iter(|| black_box(&depth10).value::<V<0>>().is_some());
    });
    g.bench_function("context value, depth 10, innermost", |b| {
        b.iter(|| black_box(&depth10).value::<V<9>>().is_some());
    });
    g.bench_function("context value, depth 10, absent type", |b| {
        b.iter(|| black_box(&depth10).value::<V<10>>().is_some());
    });
    g.finish();
    drop(handles);
}

fn err(c: &mut Criterion) {
    let mut g = c.benchmark_group("err");
    let (live, _live) = Context::background().with_cancel();
    g.bench_function("context err(), live", |b| b.iter(|| black_box(&live).err()));
    let background = Context::background();
    g.bench_function("context err(), background", |b| {
        b.iter(|| black_box(&background).err());
    });
    let (timed, _timed) = Context::background().with_timeout(Duration::from_secs(3600));
    g.bench_function("context err(), live with deadline (reads the clock)", |b| {
        b.iter(|| black_box(&timed).err());
    });
    g.bench_function("reference: std Instant::now", |b| b.iter(std::time::Instant::now));
    g.bench_function("reference: tokio Instant::now", |b| b.iter(tokio::time::Instant::now));
    let token = CancellationToken::new();
    g.bench_function("tokio-util is_cancelled", |b| {
        b.iter(|| black_box(&token).is_cancelled());
    });
    g.finish();
}

criterion_group!(benches, derive_cancel, timeout, value, err);
criterion_main!(benches);
