use std::future::poll_fn;
use std::sync::Arc as StdArc;
use std::task::Poll;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::{Dispatcher, DispatcherHandle, ThreadLocal};

fn start_worker(tls: &ThreadLocal, name: &str) -> (DispatcherHandle, loom::thread::JoinHandle<()>) {
    let (handle, join) = Dispatcher::spawn(name, |d| d.run()).unwrap();
    tls.register_thread(handle.clone()).unwrap();
    (handle, join)
}

/// Asks `worker` to check its copy of `slot`, then to stop.
fn check_and_stop(worker: &DispatcherHandle, slot: &crate::Slot<u64>, expected: u64) {
    let (s, w) = (slot.clone(), worker.clone());
    worker
        .post(move || {
            assert_eq!(*s.get().unwrap(), expected);
            w.stop();
        })
        .unwrap();
}

/// `run_on_all_threads` with two workers racing to run the update: the
/// completion runs on main exactly once, after both updated.
#[test]
fn run_on_all_threads_completes_exactly_once() {
    loom::model(|| {
        let main = Dispatcher::new("main").unwrap();
        let tls = ThreadLocal::new(&main);
        let workers = [start_worker(&tls, "w0"), start_worker(&tls, "w1")];
        let slot = tls.allocate_slot::<u64>().unwrap();
        slot.set(|_| StdArc::new(1)).unwrap();

        let updated = Arc::new(AtomicUsize::new(0));
        let completed = Arc::new(AtomicUsize::new(0));
        let (u, c, stop_main) = (updated.clone(), completed.clone(), main.handle());
        slot.run_on_all_threads(
            move |current| {
                u.fetch_add(1, Ordering::SeqCst);
                *current = Some(StdArc::new(2));
            },
            move || {
                assert!(stop_main.is_thread_safe(), "completion runs on main");
                c.fetch_add(1, Ordering::SeqCst);
                stop_main.stop();
            },
        )
        .unwrap();
        main.run();
        assert_eq!(updated.load(Ordering::SeqCst), 3, "main and both workers ran update before completion");
        assert_eq!(completed.load(Ordering::SeqCst), 1);
        for (worker, join) in workers {
            check_and_stop(&worker, &slot, 2);
            join.join().unwrap();
        }
    });
}

/// A worker stopping while an update is in flight: completion still runs
/// exactly once.
#[test]
fn completion_survives_a_worker_stopping_meanwhile() {
    loom::model(|| {
        let main = Dispatcher::new("main").unwrap();
        let tls = ThreadLocal::new(&main);
        let (worker, join) = start_worker(&tls, "w0");
        let slot = tls.allocate_slot::<u64>().unwrap();
        slot.set(|_| StdArc::new(1)).unwrap();

        let completed = Arc::new(AtomicUsize::new(0));
        let (c, stop_main) = (completed.clone(), main.handle());
        slot.run_on_all_threads(
            |current| *current = Some(StdArc::new(2)),
            move || {
                c.fetch_add(1, Ordering::SeqCst);
                stop_main.stop();
            },
        )
        .unwrap();
        worker.stop();
        main.run();
        join.join().unwrap();
        assert_eq!(completed.load(Ordering::SeqCst), 1);
    });
}

/// A slot dropped (and its index reused) while its update is still queued
/// on a worker: the update runs on the old slot's entry or not at all, and
/// the new slot at the same index only ever holds its own object.
#[test]
fn slot_drop_while_update_in_flight() {
    loom::model(|| {
        let main = Dispatcher::new("main").unwrap();
        let tls = ThreadLocal::new(&main);
        let (worker, join) = start_worker(&tls, "w0");
        let old = tls.allocate_slot::<u64>().unwrap();
        old.set(|_| StdArc::new(1)).unwrap();
        let completed = Arc::new(AtomicUsize::new(0));
        let c = completed.clone();
        old.run_on_all_threads(
            |current| *current = Some(StdArc::new(666)),
            move || {
                c.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();

        // Dropped on another thread: the free is posted to main.
        let dropper = loom::thread::spawn(move || drop(old));
        dropper.join().unwrap();
        main.run_until(async {}); // runs the free, queued by now
        let new = tls.allocate_slot::<u64>().unwrap();
        assert!(format!("{new:?}").contains("index: 0"), "index reused: {new:?}");
        new.set(|_| StdArc::new(2)).unwrap();

        // The worker checks the new slot, then stops main; the completion
        // was posted to main before that, when the worker ran the update.
        let (s, stop_main) = (new, main.handle());
        worker
            .post(move || {
                assert_eq!(*s.get().unwrap(), 2);
                stop_main.post(stop_main_now).unwrap();
            })
            .unwrap();
        main.run();
        assert_eq!(completed.load(Ordering::SeqCst), 1);
        worker.stop();
        join.join().unwrap();
    });

    fn stop_main_now() {
        Dispatcher::current().unwrap().handle().stop();
    }
}

/// A worker's object that tells when it is dropped.
struct Tracked {
    value: u64,
    dropped: Option<Arc<AtomicBool>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(dropped) = &self.dropped {
            dropped.store(true, Ordering::SeqCst);
        }
    }
}

/// An update reaching a worker while its `with` closure runs the loop
/// (issue 11): it waits for the read to end, so the object being read
/// outlives the closure; then it applies, and only then does the
/// completion run on main.
#[test]
fn an_update_reaching_a_worker_mid_read_waits_and_completes_after() {
    loom::model(|| {
        let main = Dispatcher::new("main").unwrap();
        let tls = ThreadLocal::new(&main);
        let slot = tls.allocate_slot::<Tracked>().unwrap();
        let first_dropped = Arc::new(AtomicBool::new(false));
        let flag = first_dropped.clone();
        // A fresh object per thread; the worker's reports its drop.
        slot.set(move |d| StdArc::new(Tracked { value: 1, dropped: (d.name() == "w0").then(|| flag.clone()) }))
            .unwrap();

        let released = Arc::new(AtomicBool::new(false));
        let (s, r, flag) = (slot.clone(), released.clone(), first_dropped.clone());
        let (worker, join) = Dispatcher::spawn("w0", move |d| {
            // Until the registration (with the set) has arrived.
            d.run_until(poll_fn(|_| if s.get().is_ok() { Poll::Ready(()) } else { Poll::Pending })).unwrap();
            s.with(|object| {
                let before = object.value;
                d.run_until(poll_fn(|_| if r.load(Ordering::SeqCst) { Poll::Ready(()) } else { Poll::Pending }))
                    .unwrap();
                if before == 1 {
                    assert!(!flag.load(Ordering::SeqCst), "the object being read was dropped");
                }
                assert_eq!(object.value, before);
            })
            .unwrap();
            d.run();
        })
        .unwrap();
        tls.register_thread(worker.clone()).unwrap();

        let completed = Arc::new(AtomicUsize::new(0));
        let (c, stop_main) = (completed.clone(), main.handle());
        slot.run_on_all_threads(
            |current| *current = Some(StdArc::new(Tracked { value: 2, dropped: None })),
            move || {
                c.fetch_add(1, Ordering::SeqCst);
                stop_main.stop();
            },
        )
        .unwrap();
        worker.post(move || released.store(true, Ordering::SeqCst)).unwrap();
        main.run();
        assert_eq!(completed.load(Ordering::SeqCst), 1);
        // Completion came after the worker's update ran.
        let w = worker.clone();
        worker
            .post(move || {
                assert_eq!(slot.get().unwrap().value, 2);
                w.stop();
            })
            .unwrap();
        join.join().unwrap();
        assert!(first_dropped.load(Ordering::SeqCst));
    });
}
