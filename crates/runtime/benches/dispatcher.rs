//! Posting between dispatchers.
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

criterion_group!(benches, post_round_trip);
criterion_main!(benches);
