//! Reading a slot against the other ways to share read-mostly data with
//! worker threads, and `run_on_all_threads` round trips.
//!
//! `cargo bench -p nuncio-runtime --bench slots`

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use criterion::{Criterion, criterion_group, criterion_main};
use nuncio_runtime::{Dispatcher, ThreadLocal};

struct Config {
    version: u64,
}

fn config() -> Arc<Config> {
    Arc::new(Config { version: 7 })
}

thread_local! {
    static PLAIN: RefCell<Arc<Config>> = RefCell::new(config());
}

fn reads(c: &mut Criterion) {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let slot = tls.allocate_slot::<Config>().unwrap();
    let shared = config();
    slot.set(move |_| shared.clone()).unwrap();

    let mut group = c.benchmark_group("read");
    group.bench_function("slot_get", |b| b.iter(|| black_box(&slot).get().unwrap().version));
    group.bench_function("slot_with", |b| b.iter(|| black_box(&slot).with(|c| c.version).unwrap()));
    group.bench_function("thread_local_refcell_arc", |b| {
        b.iter(|| PLAIN.with(|p| black_box(p).borrow().version));
    });
    let tl = thread_local::ThreadLocal::new();
    tl.get_or(config);
    group.bench_function("thread_local_crate_get", |b| b.iter(|| black_box(&tl).get().unwrap().version));
    let swap = ArcSwap::new(config());
    group.bench_function("arc_swap_load", |b| b.iter(|| black_box(&swap).load().version));
    let rw = RwLock::new(config());
    group.bench_function("rwlock_arc_read", |b| b.iter(|| black_box(&rw).read().unwrap().version));
    group.finish();
}

fn run_on_all_threads(c: &mut Criterion) {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let mut group = c.benchmark_group("run_on_all_threads");
    let mut threads = Vec::new();
    let mut handles = Vec::new();
    for workers in [2usize, 8] {
        while handles.len() < workers {
            let (handle, thread) = Dispatcher::spawn(format!("worker-{}", handles.len()), |d| d.run()).unwrap();
            tls.register_thread(handle.clone()).unwrap();
            handles.push(handle);
            threads.push(thread);
        }
        let slot = tls.allocate_slot::<Config>().unwrap();
        slot.set(|_| config()).unwrap();
        group.bench_function(format!("{workers}_workers"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                main.run_until(async {
                    for _ in 0..iters {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        let next = config();
                        slot.run_on_all_threads(
                            move |current| *current = Some(next.clone()),
                            move || {
                                let _ = tx.send(());
                            },
                        )
                        .unwrap();
                        rx.await.unwrap();
                    }
                });
                start.elapsed()
            });
        });
    }
    group.finish();
    for handle in &handles {
        handle.stop();
    }
    for thread in threads {
        thread.join().unwrap();
    }
}

criterion_group!(benches, reads, run_on_all_threads);
criterion_main!(benches);
