//! Stress: many posters and thousands of slot updates racing readers on
//! real worker threads. Bounded in count; the only timeout is the safety
//! net in `support`.

#![cfg(not(nuncio_loom))]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use nuncio_runtime::{Dispatcher, ThreadLocal};
use support::{PATIENCE, Workers, on_main};

const WORKERS: usize = 4;
const POSTERS: usize = 4;
const POSTS: usize = 100_000;
const UPDATES: u64 = 10_000;

/// A snapshot whose every field is derived from its version, so a torn or
/// mixed object would show.
struct Snapshot {
    version: u64,
    payload: [u64; 16],
}

impl Snapshot {
    fn new(version: u64) -> Arc<Snapshot> {
        let mut payload = [0; 16];
        for (i, p) in payload.iter_mut().enumerate() {
            *p = version.wrapping_mul(31).wrapping_add(i as u64);
        }
        Arc::new(Snapshot { version, payload })
    }

    fn is_whole(&self) -> bool {
        self.payload.iter().enumerate().all(|(i, p)| *p == self.version.wrapping_mul(31).wrapping_add(i as u64))
    }
}

#[test]
fn posts_and_updates_race_readers_without_tearing_or_going_back() {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let workers = Workers::start(&tls, WORKERS);
    let slot = tls.allocate_slot::<Snapshot>().unwrap();
    slot.set(|_| Snapshot::new(0)).unwrap();

    // Readers: one local task per worker, reading as fast as the loop lets it.
    let stop_reading = Arc::new(AtomicBool::new(false));
    let (report_tx, report_rx) = mpsc::channel::<Result<u64, String>>();
    for w in &workers.handles {
        let (slot, stop, report) = (slot.clone(), stop_reading.clone(), report_tx.clone());
        w.post_with(move |d| {
            d.spawn_local(async move {
                let (mut last, mut reads) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = match slot.get() {
                        Ok(s) => s,
                        Err(e) => return report.send(Err(format!("read failed: {e}"))).unwrap(),
                    };
                    if !snapshot.is_whole() {
                        return report.send(Err(format!("torn snapshot {}", snapshot.version))).unwrap();
                    }
                    if snapshot.version < last {
                        return report.send(Err(format!("went back from {last} to {}", snapshot.version))).unwrap();
                    }
                    last = snapshot.version;
                    reads += 1;
                    tokio::task::yield_now().await;
                }
                report.send(Ok(reads)).unwrap();
            })
            .unwrap();
        })
        .unwrap();
    }

    // Posters: 100k closures from other threads, each checking it runs in
    // its poster's order on its worker.
    let ran = Arc::new(AtomicUsize::new(0));
    let posters: Vec<_> = (0..POSTERS)
        .map(|p| {
            let handles = workers.handles.clone();
            let ran = ran.clone();
            thread::spawn(move || {
                let next: Vec<Arc<AtomicU64>> = (0..WORKERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
                for i in 0..POSTS / POSTERS {
                    let w = (i + p) % WORKERS;
                    let seq = (i / WORKERS) as u64;
                    let (next, ran) = (next[w].clone(), ran.clone());
                    handles[w]
                        .post(move || {
                            assert_eq!(next.fetch_add(1, Ordering::Relaxed), seq, "post out of order");
                            ran.fetch_add(1, Ordering::Relaxed);
                        })
                        .unwrap();
                }
            })
        })
        .collect();

    // Main: 10k updates, each a new snapshot swapped in everywhere, each
    // reporting its completion back on main.
    let completions = Arc::new(AtomicU64::new(0));
    on_main(&main, async {
        for version in 1..=UPDATES {
            let snapshot = Snapshot::new(version);
            let (completions, main) = (completions.clone(), Dispatcher::current().unwrap().handle());
            slot.run_on_all_threads(
                move |current| *current = Some(snapshot.clone()),
                move || {
                    assert!(main.is_thread_safe());
                    completions.fetch_add(1, Ordering::Relaxed);
                },
            )
            .unwrap();
            if version % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        while completions.load(Ordering::Relaxed) < UPDATES {
            tokio::task::yield_now().await;
        }
    });

    for p in posters {
        p.join().unwrap();
    }
    stop_reading.store(true, Ordering::Relaxed);
    let mut total_reads = 0;
    for _ in 0..WORKERS {
        match report_rx.recv_timeout(PATIENCE).unwrap() {
            Ok(reads) => total_reads += reads,
            Err(problem) => panic!("{problem}"),
        }
    }
    assert!(total_reads > 0);
    for w in &workers.handles {
        let s = slot.clone();
        assert_eq!(support::ask(w, move || s.get().unwrap().version), UPDATES);
    }
    // Every post ran: the loop drained them before answering `ask`.
    assert_eq!(ran.load(Ordering::Relaxed), POSTS);
    assert_eq!(completions.load(Ordering::Relaxed), UPDATES);
    tls.shutdown_global_threading().unwrap();
    workers.stop();
    tls.shutdown_thread().unwrap();
}
