//! Posting between dispatchers, and reading the loop's time.
//!
//! `cargo bench -p nuncio-runtime --bench dispatcher`

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use nuncio_runtime::Dispatcher;

/// Main posts to a worker, which posts back to main: one full round trip
/// across two threads, including both wake-ups.
fn post_round_trip(c: &mut Criterion) {
    let main = Dispatcher::new("main").unwrap();
    let back = main.handle();
    let (worker, thread) = Dispatcher::spawn("worker", |d| d.run()).unwrap();
    c.bench_function("post_round_trip", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            main.run_until(async {
                for _ in 0..iters {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let back = back.clone();
                    worker
                        .post(move || {
                            back.post(move || {
                                let _ = tx.send(());
                            })
                            .unwrap();
                        })
                        .unwrap();
                    rx.await.unwrap();
                }
            });
            start.elapsed()
        });
    });
    // Posting to the loop's own thread and draining it: the cost of the
    // queue itself, with no cross-thread wake-up.
    let own = main.handle();
    c.bench_function("post_same_thread_1000", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for _ in 0..1000 {
                    own.post(|| {}).unwrap();
                }
                main.run_until(async {});
            }
            start.elapsed()
        });
    });
    worker.stop();
    thread.join().unwrap();
}

/// The loop's time (`nuncio_runtime::clock::now`, read once a turn) beside
/// a read of the clock, which it saves a request ~8 times.
fn clock(c: &mut Criterion) {
    c.bench_function("clock_read", |b| b.iter(|| std::hint::black_box(tokio::time::Instant::now())));
    let dispatcher = Dispatcher::new("clock").unwrap();
    c.bench_function("loop_time_read", |b| {
        b.iter_custom(|iters| {
            dispatcher
                .run_until(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        std::hint::black_box(nuncio_runtime::clock::now());
                    }
                    start.elapsed()
                })
                .unwrap()
        });
    });
}

criterion_group!(benches, post_round_trip, clock);
criterion_main!(benches);
