//! What a worker pays per stat update, against the plain atomic operations
//! it is made of, and what main pays to sum and render.
//!
//! `cargo bench -p nuncio-stats --bench stats`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nuncio_stats::{DURATION_BUCKETS, Stats, StatsBuilder, Store};

fn writes(c: &mut Criterion) {
    let mut b = StatsBuilder::new();
    let rq = b.counter("upstream_rq_total", "", &[("cluster", "api")]).unwrap();
    let active = b.gauge("upstream_cx_active", "", &[("cluster", "api")]).unwrap();
    let latency = b.histogram("upstream_rq_duration_seconds", "", &[("cluster", "api")], DURATION_BUCKETS).unwrap();
    let store = Store::new(&b.build(), 0);

    let mut group = c.benchmark_group("write");
    group.bench_function("inc", |b| b.iter(|| black_box(&store).inc(black_box(rq))));
    group.bench_function("gauge_inc_dec", |b| {
        b.iter(|| {
            black_box(&store).gauge_inc(black_box(active));
            black_box(&store).gauge_dec(black_box(active));
        });
    });
    let fast = Duration::from_micros(1_700);
    let slow = Duration::from_millis(700);
    group.bench_function("observe_2ms", |b| b.iter(|| black_box(&store).observe(black_box(latency), black_box(fast))));
    group.bench_function("observe_700ms", |b| {
        b.iter(|| black_box(&store).observe(black_box(latency), black_box(slow)));
    });
    // References: the relaxed load+store `inc` is built on, and the
    // read-modify-write it avoids (a `lock xadd` on x86, even uncontended).
    let cell = AtomicU64::new(0);
    group.bench_function("reference_load_store", |b| {
        b.iter(|| {
            let cell = black_box(&cell);
            cell.store(cell.load(Relaxed) + 1, Relaxed);
        });
    });
    group.bench_function("reference_fetch_add", |b| b.iter(|| black_box(&cell).fetch_add(1, Relaxed)));
    group.finish();
}

fn reads(c: &mut Criterion) {
    // 4 workers, 50 clusters with 10 counters, 2 gauges, 1 histogram each.
    let mut b = StatsBuilder::new();
    let mut counters = Vec::new();
    for cluster in 0..50 {
        let cluster = cluster.to_string();
        let labels = [("cluster", cluster.as_str())];
        for name in ["rq", "rq_2xx", "rq_4xx", "rq_5xx", "retry", "timeout", "cx", "cx_fail", "cb_open", "hc_ok"] {
            counters.push(b.counter(&format!("upstream_{name}_total"), "", &labels).unwrap());
        }
        b.gauge("upstream_cx_active", "", &labels).unwrap();
        b.gauge("upstream_rq_active", "", &labels).unwrap();
        b.histogram("upstream_rq_duration_seconds", "", &labels, DURATION_BUCKETS).unwrap();
    }
    let defs = b.build();
    let stores: Vec<Arc<Store>> = (0..4).map(|w| Store::new(&defs, w)).collect();
    let mut stats = Stats::new();
    for store in &stores {
        stats.attach(store.clone());
        for &counter in &counters {
            store.add(counter, 1234);
        }
    }

    let mut group = c.benchmark_group("read_4_workers_650_series");
    group.sample_size(20);
    group.bench_function("sum", |b| b.iter(|| black_box(stats.read())));
    let summary = stats.read();
    group.bench_function("text", |b| b.iter(|| black_box(summary.text(None))));
    group.bench_function("prometheus", |b| b.iter(|| black_box(summary.prometheus())));
    group.finish();
}

criterion_group!(benches, writes, reads);
criterion_main!(benches);
