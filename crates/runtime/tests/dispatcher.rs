//! The dispatcher on real threads: posting, ordering, stopping, deferred
//! drops, local tasks and timers.

#![cfg(not(nuncio_loom))]

mod support;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::Duration;

use nuncio_runtime::{Dispatcher, DispatcherHandle, Error};
use support::{PATIENCE, ask, on_main};

/// Records the thread it was dropped on.
struct DropProbe(Arc<Mutex<Vec<ThreadId>>>);

impl Drop for DropProbe {
    fn drop(&mut self) {
        self.0.lock().unwrap().push(thread::current().id());
    }
}

fn worker() -> (DispatcherHandle, thread::JoinHandle<()>) {
    Dispatcher::spawn("worker", |d| d.run()).unwrap()
}

#[test]
fn post_runs_on_the_dispatcher_thread_in_order_per_poster() {
    let (worker, thread) = worker();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let posters: Vec<_> = (0..4)
        .map(|p| {
            let worker = worker.clone();
            let seen = seen.clone();
            thread::spawn(move || {
                for i in 0..1000 {
                    let seen = seen.clone();
                    let w = worker.clone();
                    worker
                        .post(move || {
                            assert!(w.is_thread_safe());
                            seen.lock().unwrap().push((p, i));
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for p in posters {
        p.join().unwrap();
    }
    let worker_thread = ask(&worker, || thread::current().id());
    assert_eq!(worker_thread, thread.thread().id());
    worker.stop();
    thread.join().unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4000);
    for p in 0..4 {
        let mine: Vec<_> = seen.iter().filter(|(q, _)| *q == p).map(|(_, i)| *i).collect();
        assert_eq!(mine, (0..1000).collect::<Vec<_>>(), "poster {p} out of order");
    }
}

#[test]
fn post_after_stop_fails_and_drops_the_closure_on_the_posting_thread() {
    let (worker, thread) = worker();
    worker.stop();
    thread.join().unwrap();
    assert!(worker.is_stopped());

    let drops = Arc::new(Mutex::new(Vec::new()));
    let probe = DropProbe(drops.clone());
    let ran = Arc::new(AtomicUsize::new(0));
    let ran2 = ran.clone();
    let err = worker
        .post(move || {
            let _keep = &probe;
            ran2.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_err();
    assert!(matches!(err, Error::Stopped(ref name) if name == "worker"), "{err}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(*drops.lock().unwrap(), vec![thread::current().id()]);
}

#[test]
fn closures_pending_at_stop_are_dropped_on_the_dispatcher_thread() {
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let (worker, thread) = worker();
    // Block the worker so the next posts queue up behind this one.
    let w = worker.clone();
    worker
        .post(move || {
            gate_rx.recv().unwrap();
            w.stop();
        })
        .unwrap();
    let drops = Arc::new(Mutex::new(Vec::new()));
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let probe = DropProbe(drops.clone());
        let ran = ran.clone();
        worker
            .post(move || {
                let _keep = &probe;
                ran.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
    }
    let worker_thread = thread.thread().id();
    gate_tx.send(()).unwrap();
    thread.join().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0, "closures posted before stop ran after it");
    assert_eq!(*drops.lock().unwrap(), vec![worker_thread; 10]);
}

#[test]
fn is_thread_safe_tells_the_dispatcher_thread_apart() {
    let main = Dispatcher::new("main").unwrap();
    let handle = main.handle();
    assert!(handle.is_thread_safe());
    let (worker, thread) = worker();
    assert!(!worker.is_thread_safe());
    assert!(ask(&worker, {
        let w = worker.clone();
        move || w.is_thread_safe()
    }));
    assert!(!ask(&worker, move || handle.is_thread_safe()));
    assert!(DispatcherHandle::current().unwrap().same_dispatcher(&main.handle()));
    worker.stop();
    thread.join().unwrap();
}

#[test]
fn one_dispatcher_per_thread() {
    let _main = Dispatcher::new("first").unwrap();
    let err = Dispatcher::new("second").unwrap_err();
    assert_eq!(err, Error::DispatcherExists("first".into()));
}

#[test]
fn a_finished_dispatcher_can_be_replaced_on_its_thread() {
    let first = Dispatcher::new("first").unwrap();
    first.handle().stop();
    first.run();
    assert!(Dispatcher::current().is_none());
    let second = Dispatcher::new("second").unwrap();
    assert!(second.handle().is_thread_safe());
    assert!(!first.handle().is_thread_safe());
}

#[test]
fn run_returns_when_stopped_from_another_thread() {
    let main = Dispatcher::new("main").unwrap();
    let handle = main.handle();
    let stopper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        handle.stop();
    });
    main.run();
    stopper.join().unwrap();
    assert!(main.handle().post(|| {}).is_err());
    // run again is a no-op on a finished dispatcher.
    main.run();
}

#[test]
fn a_panicking_post_is_counted_and_the_loop_goes_on() {
    let main = Dispatcher::new("main").unwrap();
    let handle = main.handle();
    handle.post(|| panic!("boom (expected by the test)")).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    handle.post(move || tx.send(7).unwrap()).unwrap();
    assert_eq!(on_main(&main, rx).unwrap(), 7);
    assert_eq!(main.panicked_posts(), 1);
}

#[test]
fn deferred_drop_happens_after_the_current_callback_returns() {
    let main = Dispatcher::new("main").unwrap();
    let dropped = Rc::new(Cell::new(false));
    struct Flag(Rc<Cell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let observed_inside = Rc::new(Cell::new(None));
    let (d2, o2) = (dropped.clone(), observed_inside.clone());
    main.spawn_local(async move {
        let d = Dispatcher::current().unwrap();
        d.deferred_drop(Flag(d2.clone()));
        // Still alive for the rest of this turn.
        o2.set(Some(d2.get()));
    })
    .unwrap();
    let d3 = dropped.clone();
    on_main(&main, async move {
        while !d3.get() {
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(observed_inside.get(), Some(false));
    assert!(dropped.get());
}

#[test]
fn deferred_objects_are_dropped_when_the_dispatcher_finishes() {
    let main = Dispatcher::new("main").unwrap();
    let drops = Arc::new(Mutex::new(Vec::new()));
    main.deferred_drop(DropProbe(drops.clone()));
    main.handle().stop();
    main.run();
    assert_eq!(drops.lock().unwrap().len(), 1);
}

#[test]
fn spawn_local_and_post_with_share_the_thread() {
    let main = Dispatcher::new("main").unwrap();
    let local_state = Rc::new(Cell::new(0));
    let s = local_state.clone();
    let task = main
        .spawn_local(async move {
            tokio::task::yield_now().await;
            s.set(s.get() + 1);
            s.get()
        })
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    main.handle().post_with(move |d| tx.send(d.name().to_owned()).unwrap()).unwrap();
    let (count, name) = on_main(&main, async { (task.await.unwrap(), rx.await.unwrap()) });
    assert_eq!((count, name.as_str()), (1, "main"));
    assert_eq!(local_state.get(), 1, "the !Send state was shared with the local task");
}

#[test]
fn timers_fire_in_order_and_cancelled_ones_never_fire() {
    let main = Dispatcher::new("main").unwrap();
    let fired = Rc::new(std::cell::RefCell::new(Vec::new()));
    let mut timers = Vec::new();
    for (name, ms) in [("late", 60u64), ("early", 10), ("cancelled", 20), ("middle", 30)] {
        let fired = fired.clone();
        timers.push((name, main.timer(Duration::from_millis(ms), move || fired.borrow_mut().push(name)).unwrap()));
    }
    let (_, cancelled) = timers.remove(2);
    assert!(cancelled.is_pending());
    cancelled.cancel();
    let f = fired.clone();
    on_main(&main, async move {
        while f.borrow().len() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Past the cancelled timer's deadline too.
        tokio::time::sleep(Duration::from_millis(30)).await;
    });
    assert_eq!(*fired.borrow(), vec!["early", "middle", "late"]);
    assert!(timers.iter().all(|(_, t)| !t.is_pending()));
}

#[test]
fn spawn_local_after_finish_is_an_error() {
    let main = Dispatcher::new("main").unwrap();
    main.handle().stop();
    main.run();
    assert!(matches!(main.spawn_local(async {}), Err(Error::Stopped(_))));
}

#[test]
fn posts_queued_before_the_thread_runs_are_delivered() {
    let (tx, rx) = mpsc::channel();
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let (worker, thread) = Dispatcher::spawn("late-start", move |d| {
        gate_rx.recv().unwrap();
        d.run();
    })
    .unwrap();
    for i in 0..5 {
        let tx = tx.clone();
        worker.post(move || tx.send(i).unwrap()).unwrap();
    }
    gate_tx.send(()).unwrap();
    let got: Vec<i32> = (0..5).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    worker.stop();
    thread.join().unwrap();
}
