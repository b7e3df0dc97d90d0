//! Thread-local slots across real worker threads.

#![cfg(not(nuncio_loom))]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use nuncio_runtime::{Dispatcher, Error, Slot, ThreadLocal};
use support::{Workers, ask, on_main};

#[derive(Debug)]
struct Config {
    version: u64,
}

#[test]
fn set_reaches_main_every_worker_and_workers_registered_later() {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let workers = Workers::start(&tls, 2);
    let slot = tls.allocate_slot::<Config>().unwrap();
    let shared = Arc::new(Config { version: 1 });
    let built_on = Arc::new(Mutex::new(Vec::new()));
    let b = built_on.clone();
    slot.set(move |d| {
        b.lock().unwrap().push(d.name().to_owned());
        shared.clone()
    })
    .unwrap();
    assert_eq!(slot.get().unwrap().version, 1, "main gets its object at once");

    let late = Workers::start(&tls, 1);
    for w in workers.handles.iter().chain(&late.handles) {
        let s = slot.clone();
        assert_eq!(ask(w, move || s.get().map(|c| c.version)), Ok(1));
    }
    let mut names = built_on.lock().unwrap().clone();
    names.sort();
    assert_eq!(names, ["main", "worker-0", "worker-0", "worker-1"]);
    // One object, shared: built once per thread here, but all the same Arc.
    let s = slot.clone();
    let a = ask(&workers.handles[0], move || s.get().unwrap().to_arc());
    assert!(Arc::ptr_eq(&a, &slot.get().unwrap().to_arc()));
    workers.stop();
    late.stop();
}

#[test]
fn get_tells_why_there_is_nothing() {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let slot = tls.allocate_slot::<Config>().unwrap();
    assert_eq!(slot.get().unwrap_err(), Error::NotSet);
    slot.set(|_| Arc::new(Config { version: 1 })).unwrap();
    let from_stranger = thread::spawn(move || slot.get().map(|c| c.version)).join().unwrap();
    assert_eq!(from_stranger, Err(Error::NotRegistered));
}

#[test]
fn main_only_operations_refuse_other_threads() {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let slot = tls.allocate_slot::<Config>().unwrap();
    let (t, s) = (tls, slot);
    let errors = thread::spawn(move || {
        vec![
            t.allocate_slot::<Config>().unwrap_err(),
            s.set(|_| Arc::new(Config { version: 2 })).unwrap_err(),
            s.run_on_all_threads(|_| {}, || {}).unwrap_err(),
            t.shutdown_global_threading().unwrap_err(),
        ]
    })
    .join()
    .unwrap();
    assert!(errors.iter().all(|e| matches!(e, Error::NotMainThread(_))), "{errors:?}");
    assert_eq!(
        errors[1].to_string(),
        "`Slot::set` must be called on the main thread (the dispatcher the ThreadLocal was created with)"
    );
}

#[test]
fn run_on_all_threads_updates_main_first_then_workers_then_completes_once() {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let workers = Workers::start(&tls, 3);
    let slot = tls.allocate_slot::<Config>().unwrap();
    slot.set(|_| Arc::new(Config { version: 1 })).unwrap();

    let updated = Arc::new(Mutex::new(Vec::new()));
    let completions = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (u, c) = (updated.clone(), completions.clone());
    let v2 = Arc::new(Config { version: 2 });
    let s = slot.clone();
    slot.run_on_all_threads(
        move |current| {
            assert_eq!(current.as_ref().unwrap().version, 1);
            u.lock().unwrap().push(thread::current().name().unwrap_or("?").to_owned());
            *current = Some(v2.clone());
        },
        move || {
            // On main, after every worker: each worker's copy is version 2.
            assert!(Dispatcher::current().unwrap().name() == "main");
            c.fetch_add(1, Ordering::SeqCst);
            tx.send(s.get().unwrap().version).unwrap();
        },
    )
    .unwrap();
    // Main ran `update` synchronously, before posting to any worker; the
    // workers may already be running theirs, so only the order is checked.
    let me = thread::current().name().unwrap_or("?").to_owned();
    assert_eq!(updated.lock().unwrap().first(), Some(&me), "main runs update first");
    assert_eq!(on_main(&main, rx).unwrap(), 2);
    let updated = updated.lock().unwrap().clone();
    assert_eq!(updated.len(), 4, "{updated:?}");
    assert!(updated[1..].iter().all(|name| name.starts_with("worker-")), "{updated:?}");
    for w in &workers.handles {
        let s = slot.clone();
        assert_eq!(ask(w, move || s.get().unwrap().version), 2);
    }
    // Let any stray second completion arrive before counting.
    on_main(&main, tokio::task::yield_now());
    assert_eq!(completions.load(Ordering::SeqCst), 1);
    workers.stop();
}

#[test]
fn completion_still_fires_when_a_worker_has_stopped() {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let workers = Workers::start(&tls, 2);
    let slot = tls.allocate_slot::<Config>().unwrap();
    slot.set(|_| Arc::new(Config { version: 1 })).unwrap();
    // Worker 1 stops (and its thread ends) before the update.
    workers.handles[1].stop();
    let updates = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let u = updates.clone();
    slot.run_on_all_threads(
        move |current| {
            u.fetch_add(1, Ordering::SeqCst);
            *current = Some(Arc::new(Config { version: 2 }));
        },
        move || tx.send(()).unwrap(),
    )
    .unwrap();
    on_main(&main, rx).unwrap();
    assert_eq!(updates.load(Ordering::SeqCst), 2, "main and the live worker");
    workers.stop();
}

#[test]
fn an_in_flight_reader_keeps_its_snapshot() {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let slot = tls.allocate_slot::<Config>().unwrap();
    slot.set(|_| Arc::new(Config { version: 1 })).unwrap();
    let held = slot.get().unwrap();
    slot.set(|_| Arc::new(Config { version: 2 })).unwrap();
    assert_eq!(held.version, 1);
    assert_eq!(slot.get().unwrap().version, 2);
}

/// Records, in one shared list, the order objects are dropped in.
#[derive(Debug)]
struct Named {
    name: &'static str,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl Drop for Named {
    fn drop(&mut self) {
        self.log.lock().unwrap().push(self.name);
    }
}

#[test]
fn shutdown_drops_in_reverse_allocation_order_even_with_a_reused_index() {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let workers = Workers::start(&tls, 1);
    let log = Arc::new(Mutex::new(Vec::new()));
    let named = |name: &'static str| {
        let log = log.clone();
        move |_: &Dispatcher| Arc::new(Named { name, log: log.clone() })
    };
    let a = tls.allocate_slot::<Named>().unwrap(); // index 0
    let b = tls.allocate_slot::<Named>().unwrap(); // index 1
    let c = tls.allocate_slot::<Named>().unwrap(); // index 2
    for (slot, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        slot.set(named(name)).unwrap();
    }
    drop(b); // frees index 1 and clears "b" everywhere
    let d = tls.allocate_slot::<Named>().unwrap(); // reuses index 1, allocated last
    d.set(named("d")).unwrap();
    assert!(format!("{d:?}").contains("index: 1"), "{d:?}");

    // Make sure the worker has everything before shutting down.
    let (w, probe) = (workers.handles[0].clone(), d.clone());
    assert!(ask(&w, move || probe.get().is_ok()));
    log.lock().unwrap().clear(); // "b" was dropped on main and on the worker

    tls.shutdown_global_threading().unwrap();
    workers.stop(); // the worker calls shutdown_thread after its loop ends
    assert_eq!(*log.lock().unwrap(), ["d", "c", "a"], "worker: reverse allocation order, not index order");
    log.lock().unwrap().clear();
    tls.shutdown_thread().unwrap();
    assert_eq!(*log.lock().unwrap(), ["d", "c", "a"], "main");
    assert_eq!(a.get().unwrap_err(), Error::ShutDown);
    assert_eq!(d.get().unwrap_err(), Error::ShutDown);
    assert_eq!(d.set(named("e")).unwrap_err(), Error::ShutDown);
}

#[test]
fn shutdown_thread_needs_the_global_flag_first() {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    assert_eq!(tls.shutdown_thread().unwrap_err(), Error::NotShuttingDown);
}

#[test]
fn dropping_the_last_slot_clone_clears_every_thread_and_frees_the_index() {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let workers = Workers::start(&tls, 2);
    let log = Arc::new(Mutex::new(Vec::new()));
    let slot = tls.allocate_slot::<Named>().unwrap();
    let l = log.clone();
    slot.set(move |_| Arc::new(Named { name: "per-thread", log: l.clone() })).unwrap();
    let clone = slot.clone();
    drop(slot);
    assert!(log.lock().unwrap().is_empty(), "a clone still holds the slot");
    // Dropped on a worker: the free is posted to main.
    let w = workers.handles[0].clone();
    ask(&w, move || drop(clone));
    on_main(&main, async {
        while log.lock().unwrap().len() < 3 {
            tokio::task::yield_now().await;
        }
    });
    let next = tls.allocate_slot::<Config>().unwrap();
    assert!(format!("{next:?}").contains("index: 0"), "index reused: {next:?}");
    // The reused index shows nothing of the old slot's objects anywhere.
    assert_eq!(next.get().unwrap_err(), Error::NotSet);
    for w in &workers.handles {
        let n = next.clone();
        assert_eq!(ask(w, move || n.get().map(|c| c.version)), Err(Error::NotSet));
    }
    workers.stop();
}

#[test]
fn an_update_in_flight_for_a_dropped_slot_never_touches_its_successor() {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let workers = Workers::start(&tls, 2);
    // Hold the workers so the update below is still queued when the slot
    // is dropped and its index reused.
    let gates: Vec<_> = workers
        .handles
        .iter()
        .map(|w| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            w.post(move || rx.recv().unwrap()).unwrap();
            tx
        })
        .collect();
    let old = tls.allocate_slot::<Config>().unwrap();
    old.set(|_| Arc::new(Config { version: 1 })).unwrap();
    let stale_updates = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let su = stale_updates.clone();
    old.run_on_all_threads(
        move |current| {
            su.fetch_add(1, Ordering::SeqCst);
            *current = Some(Arc::new(Config { version: 666 }));
        },
        move || tx.send(()).unwrap(),
    )
    .unwrap();
    drop(old);
    let new = tls.allocate_slot::<Config>().unwrap();
    new.set(|_| Arc::new(Config { version: 2 })).unwrap();
    for gate in gates {
        gate.send(()).unwrap();
    }
    on_main(&main, rx).unwrap();
    // The update was queued before the slot's clear on every worker, so it
    // ran there on the old slot's own entry (and on main, at once).
    assert_eq!(stale_updates.load(Ordering::SeqCst), 3);
    for w in &workers.handles {
        let n = new.clone();
        assert_eq!(ask(w, move || n.get().unwrap().version), 2);
    }
    assert_eq!(new.get().unwrap().version, 2);
    workers.stop();
}

/// Sets a flag when dropped.
struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Issue 11: `ThreadLocal::new` inside `with` rebinds this thread, which
/// dropped every object of the old instance, the one the closure was
/// reading included. The object must outlive the closure. `before` slots
/// are allocated first, to put the one read past index 32 (where the
/// unsafe read path had a slower path of its own).
fn a_new_thread_local_inside_with_keeps_the_object_being_read(before: usize) {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let _others: Vec<_> = (0..before).map(|_| tls.allocate_slot::<Config>().unwrap()).collect();
    let slot = tls.allocate_slot::<DropFlag>().unwrap();
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = dropped.clone();
    // The only reference: a fresh `Arc` per thread.
    slot.set(move |_| Arc::new(DropFlag(d.clone()))).unwrap();

    let (dropped_inside, second) = slot
        .with(|_object| {
            let second = ThreadLocal::new(&main);
            // `_object` is still borrowed here, so it must still be alive
            // (before the fix it was not, and touching it was a use after
            // free: the test only looks at the flag).
            (dropped.load(Ordering::SeqCst), second)
        })
        .unwrap();
    assert!(!dropped_inside, "the object was dropped while `with` still held a reference to it");
    // Deferred, not lost: the thread was rebound as the read ended,
    // dropping what the first instance left here.
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(slot.with(|_| ()), Err(Error::NotSet), "this thread now belongs to the second instance");
    let on_second = second.allocate_slot::<u64>().unwrap();
    on_second.set(|_| Arc::new(5)).unwrap();
    assert_eq!(on_second.with(|v| *v), Ok(5));
}

#[test]
fn a_new_thread_local_inside_with_never_drops_the_object_being_read() {
    a_new_thread_local_inside_with_keeps_the_object_being_read(0);
}

#[test]
fn a_new_thread_local_inside_with_past_index_32_never_drops_the_object_being_read() {
    a_new_thread_local_inside_with_keeps_the_object_being_read(40);
}

/// A worker whose `with` closure runs the loop itself receives posted
/// updates meanwhile: they wait until the read is over, then apply in the
/// order they were made.
#[test]
fn updates_posted_to_a_worker_during_its_read_wait_for_the_read_then_apply_in_order() {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let log = Arc::new(Mutex::new(Vec::new()));
    let slot = tls.allocate_slot::<Named>().unwrap();
    let (reading_tx, reading_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let (start_tx, start_rx) = tokio::sync::oneshot::channel::<()>();
    let s = slot.clone();
    let (worker, thread) = Dispatcher::spawn("worker", move |d| {
        d.run_until(start_rx).unwrap().unwrap();
        let seen = s
            .with(|object| {
                reading_tx.send(object.name).unwrap();
                d.run_until(release_rx).unwrap().unwrap();
                // Still the object the read started with.
                object.name
            })
            .unwrap();
        reading_tx.send(seen).unwrap();
        d.run();
    })
    .unwrap();
    tls.register_thread(worker.clone()).unwrap();
    // A new object per thread, so the worker's entry owns its own; only
    // the worker's log their drop.
    let named = |name: &'static str| {
        let log = log.clone();
        move |d: &Dispatcher| {
            let log = if d.name() == "worker" { log.clone() } else { Arc::new(Mutex::new(Vec::new())) };
            Arc::new(Named { name, log })
        }
    };
    slot.set(named("one")).unwrap();
    start_tx.send(()).unwrap();
    assert_eq!(reading_rx.recv_timeout(support::PATIENCE).unwrap(), "one");

    slot.set(named("two")).unwrap();
    slot.set(named("three")).unwrap();
    // Runs on the worker inside its read, after both sets arrived there.
    let (s, l) = (slot.clone(), log.clone());
    let during = ask(&worker, move || (s.get().unwrap().name, l.lock().unwrap().clone()));
    assert_eq!(during.0, "one", "the worker's entries do not change during its read");
    assert!(!during.1.contains(&"one"), "{:?}: the object being read was dropped", during.1);

    release_tx.send(()).unwrap();
    assert_eq!(reading_rx.recv_timeout(support::PATIENCE).unwrap(), "one");
    assert_eq!(ask(&worker, move || slot.get().unwrap().name), "three", "both applied, in order");
    assert_eq!(*log.lock().unwrap(), ["one", "two"]);
    worker.stop();
    thread.join().unwrap();
}

/// More than 32 slots: the unsafe read path kept the first 32 indexes in a
/// table of their own and read the rest another way, which had no test.
/// Everything works past 32 as it does below.
#[test]
fn more_than_32_slots_read_update_clear_and_reuse_an_index_past_32() {
    let main = Dispatcher::new("main").unwrap();
    let tls = ThreadLocal::new(&main);
    let workers = Workers::start(&tls, 1);
    let worker = workers.handles[0].clone();
    let slots: Vec<Slot<Config>> = (0..40).map(|_| tls.allocate_slot().unwrap()).collect();
    for (version, slot) in (0u64..).zip(&slots) {
        slot.set(move |_| Arc::new(Config { version })).unwrap();
    }
    let read_all = |slots: &[Slot<Config>]| -> Vec<(Result<u64, Error>, Result<u64, Error>)> {
        slots.iter().map(|s| (s.with(|c| c.version), s.get().map(|c| c.version))).collect()
    };
    let expected: Vec<_> = (0u64..40).map(|v| (Ok(v), Ok(v))).collect();
    assert_eq!(read_all(&slots), expected, "main");
    let all = slots.clone();
    assert_eq!(ask(&worker, move || read_all(&all)), expected, "worker");

    // Nested reads across the boundary, and a held reference.
    let far = slots[39].clone();
    assert_eq!(far.with(|c| slots[2].with(|n| c.version + n.version)), Ok(Ok(41)));
    let held = far.get().unwrap();

    // Update, then clear, the last one everywhere.
    let (tx, rx) = tokio::sync::oneshot::channel();
    far.run_on_all_threads(|c| *c = Some(Arc::new(Config { version: 139 })), move || tx.send(()).unwrap()).unwrap();
    on_main(&main, rx).unwrap();
    assert_eq!(far.with(|c| c.version), Ok(139));
    let f = far.clone();
    assert_eq!(ask(&worker, move || (f.with(|c| c.version), f.get().map(|c| c.version))), (Ok(139), Ok(139)));
    assert_eq!(held.version, 39, "a held reference keeps its snapshot");
    let refused = far.with(|_| far.set(|_| Arc::new(Config { version: 0 })).unwrap_err());
    assert_eq!(refused, Ok(Error::Reentrant("Slot::set")));

    let (tx, rx) = tokio::sync::oneshot::channel();
    far.run_on_all_threads(|c| *c = None, move || tx.send(()).unwrap()).unwrap();
    on_main(&main, rx).unwrap();
    assert_eq!(far.with(|c| c.version), Err(Error::NotSet));
    assert_eq!(far.get().map(|c| c.version), Err(Error::NotSet));
    assert_eq!(ask(&worker, move || far.with(|c| c.version)), Err(Error::NotSet));

    // Drop the slot at index 35: the next slot takes its index, another
    // type, and sees nothing of the old objects until set.
    let mut slots = slots;
    let old = slots.remove(35);
    let old_held = old.get().unwrap();
    drop(old);
    let reused = tls.allocate_slot::<String>().unwrap();
    assert!(format!("{reused:?}").contains("index: 35"), "{reused:?}");
    assert_eq!(reused.with(|s| s.len()), Err(Error::NotSet));
    let r = reused.clone();
    assert_eq!(ask(&worker, move || r.get().map(|s| s.len())), Err(Error::NotSet));
    reused.set(|_| Arc::new("thirty-five".to_owned())).unwrap();
    assert_eq!(reused.with(|s| s.clone()), Ok("thirty-five".to_owned()));
    assert_eq!(ask(&worker, move || reused.with(|s| s.len())), Ok(11));
    assert_eq!(old_held.version, 35);
    // The rest are untouched.
    assert_eq!(slots[34].with(|c| c.version), Ok(34));
    assert_eq!(slots[35].with(|c| c.version), Ok(36));
    workers.stop();
}

/// Reads another slot from its destructor, and reports what it saw.
struct ReadsOnDrop {
    other: Slot<Config>,
    seen: std::sync::mpsc::Sender<Result<u64, Error>>,
}

impl Drop for ReadsOnDrop {
    fn drop(&mut self) {
        let _ = self.seen.send(self.other.with(|c| c.version));
    }
}

/// A thread that exits without `shutdown_thread` drops its objects with
/// its storage; a destructor that reads a slot then is told the slots are
/// gone. (Before the fix the fast read path still pointed at the object
/// dropped just before, and this read returned its freed memory.)
#[test]
fn a_thread_exiting_without_shutdown_never_reads_a_dropped_object() {
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    // The handles outlive the thread, so only its storage goes at its exit.
    let _handles = thread::spawn(move || {
        let main = Dispatcher::new("main").unwrap();
        let tls = ThreadLocal::new(&main);
        let first = tls.allocate_slot::<Config>().unwrap();
        first.set(|_| Arc::new(Config { version: 1 })).unwrap();
        let second = tls.allocate_slot::<ReadsOnDrop>().unwrap();
        let other = first.clone();
        second.set(move |_| Arc::new(ReadsOnDrop { other: other.clone(), seen: seen_tx.clone() })).unwrap();
        assert_eq!(second.with(|r| r.other.with(|c| c.version)), Ok(Ok(1)));
        (tls, first, second)
    })
    .join()
    .unwrap();
    assert_eq!(seen_rx.recv_timeout(support::PATIENCE).unwrap(), Err(Error::ShutDown));
}
