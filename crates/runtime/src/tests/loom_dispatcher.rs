use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use crate::Dispatcher;

/// Counts runs and drops of a posted closure.
struct Probe {
    dropped: Arc<AtomicUsize>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// A post racing a stop: the closure is either refused (and dropped by the
/// poster) or accepted, and then run at most once; it is dropped exactly
/// once either way, and nothing deadlocks.
#[test]
fn post_races_stop() {
    loom::model(|| {
        let (worker, join) = Dispatcher::spawn("worker", |d| d.run()).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));

        let poster = {
            let (worker, ran, dropped) = (worker.clone(), ran.clone(), dropped.clone());
            thread::spawn(move || {
                let probe = Probe { dropped };
                worker
                    .post(move || {
                        let _probe = &probe;
                        ran.fetch_add(1, Ordering::SeqCst);
                    })
                    .is_ok()
            })
        };
        worker.stop();
        let accepted = poster.join().unwrap();
        join.join().unwrap();

        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        let ran = ran.load(Ordering::SeqCst);
        assert!(ran <= 1);
        if !accepted {
            assert_eq!(ran, 0);
        }
        assert!(worker.post(|| {}).is_err(), "a stopped dispatcher refuses posts");
    });
}

/// Two posters: each one's closures run in its own order.
#[test]
fn posts_keep_per_poster_order() {
    loom::model(|| {
        let (worker, join) = Dispatcher::spawn("worker", |d| d.run()).unwrap();
        let log = Arc::new(loom::sync::Mutex::new(Vec::new()));
        let posters: Vec<_> = (0..2)
            .map(|p| {
                let (worker, log) = (worker.clone(), log.clone());
                thread::spawn(move || {
                    for i in 0..2 {
                        let log = log.clone();
                        worker.post(move || log.lock().unwrap().push((p, i))).unwrap();
                    }
                })
            })
            .collect();
        for p in posters {
            p.join().unwrap();
        }
        let stopper = worker.clone();
        worker.post(move || stopper.stop()).unwrap();
        join.join().unwrap();
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 4);
        for p in 0..2 {
            let mine: Vec<_> = log.iter().filter(|(q, _)| *q == p).map(|(_, i)| *i).collect();
            assert_eq!(mine, [0, 1]);
        }
    });
}
