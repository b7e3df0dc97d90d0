//! A foreign filter's counters. The library counts in its own memory
//! (lock-free, from any goroutine); nuncio takes the counts on a worker,
//! where its stats are written: after every call into the library that
//! says counts are pending, and, for counts made outside such a call (a
//! goroutine after its stream's last hook), within [`FLUSH_DELAY`] of the
//! library's `counts_pending`, on a worker that ran the config — through
//! the counter sink of one of its streams, kept per worker and config.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nuncio_filter::{CounterSink, FilterCounter, StreamCx};
use nuncio_runtime::{Dispatcher, DispatcherHandle};

use crate::abi::status;
use crate::filter::GoConfig;

/// How long counts made outside a call may wait for nuncio's stats.
pub(crate) const FLUSH_DELAY: Duration = Duration::from_millis(100);

/// The configs the library may name in `counts_pending`.
static CONFIGS: Mutex<Option<HashMap<u64, Weak<GoConfig>>>> = Mutex::new(None);

/// Where a config's late counts are taken: a worker that ran it.
#[derive(Default)]
pub(crate) struct Flush {
    scheduled: AtomicBool,
    worker: Mutex<Option<DispatcherHandle>>,
}

/// The counter sink of a config on this worker: one of its streams', and
/// the filter's position in the chain.
struct Sink {
    sink: Rc<dyn CounterSink>,
    filter: usize,
    /// Dropped with the config: its entry goes at the next prune.
    config: Weak<GoConfig>,
}

thread_local! {
    static SINKS: RefCell<HashMap<u64, Sink>> = RefCell::new(HashMap::new());
}

/// A config exists: the library may name it.
pub(crate) fn register(config: &Arc<GoConfig>) {
    let mut configs = CONFIGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    configs.get_or_insert_with(HashMap::new).insert(config.id, Arc::downgrade(config));
}

/// A config is gone.
pub(crate) fn unregister(id: u64) {
    let mut configs = CONFIGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(configs) = configs.as_mut() {
        configs.remove(&id);
    }
}

/// A stream of `config` runs on this worker: keep its sink for late
/// counts, the first time.
pub(crate) fn note_worker(config: &Arc<GoConfig>, cx: &StreamCx) {
    let Some(sink) = cx.counter_sink() else { return };
    let _ = SINKS.try_with(|sinks| {
        let mut sinks = sinks.borrow_mut();
        if sinks.contains_key(&config.id) {
            return;
        }
        // Tried, never waited for on the worker: when busy, a later stream
        // of this worker tries again (the sink is kept only once done).
        let Ok(mut worker) = config.flush.worker.try_lock() else { return };
        if worker.is_none() {
            *worker = DispatcherHandle::current();
        }
        drop(worker);
        sinks.retain(|_, s| s.config.strong_count() > 0);
        sinks.insert(config.id, Sink { sink, filter: cx.filter_index(), config: Arc::downgrade(config) });
    });
}

/// Adds what the library reports (`(index, count)` pairs) through `add`.
pub(crate) fn apply(config: &GoConfig, bytes: &[u8], add: impl Fn(FilterCounter, u64)) {
    for pair in bytes.chunks_exact(16) {
        let (index, count) = pair.split_at(8);
        let index = u64::from_le_bytes(index.try_into().unwrap_or_default());
        let count = u64::from_le_bytes(count.try_into().unwrap_or_default());
        let counter = if index == u64::MAX {
            config.panics
        } else {
            usize::try_from(index).ok().and_then(|i| config.go_counters.get(i)).copied()
        };
        if let Some(counter) = counter {
            add(counter, count);
        }
    }
}

/// `counts_pending`: schedules a take on the config's worker (once per
/// batch).
pub(crate) fn pending(id: u64) -> i32 {
    // On a worker (a hook counted) the lock is only tried, never waited
    // for: a busy one answers INVALID, and the library asks again with its
    // next count (the hook's own counts go with its call anyway).
    let configs = if DispatcherHandle::current().is_some() {
        match CONFIGS.try_lock() {
            Ok(configs) => configs,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return status::INVALID as i32,
        }
    } else {
        CONFIGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let config = configs.as_ref().and_then(|c| c.get(&id)).and_then(Weak::upgrade);
    drop(configs);
    let Some(config) = config else { return status::INVALID as i32 };
    if config.flush.scheduled.swap(true, Ordering::AcqRel) {
        return status::OK as i32;
    }
    let worker = config.flush.worker.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let weak = Arc::downgrade(&config);
    let posted = worker.is_some_and(|worker| {
        worker
            .post_with(move |dispatcher: &Dispatcher| {
                let _ = dispatcher.spawn_local(async move {
                    tokio::time::sleep(FLUSH_DELAY).await;
                    take_late(&weak);
                });
            })
            .is_ok()
    });
    if !posted {
        // No worker ran it yet, or its worker stopped: the next call into
        // the library takes the counts.
        config.flush.scheduled.store(false, Ordering::Release);
        *config.flush.worker.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        return status::INVALID as i32;
    }
    status::OK as i32
}

/// On the config's worker: takes the counts and adds them through the
/// sink kept for it.
fn take_late(config: &Weak<GoConfig>) {
    let Some(config) = config.upgrade() else { return };
    config.flush.scheduled.store(false, Ordering::Release);
    let bytes = config.library.take_counts(config.id, true);
    let _ = SINKS.try_with(|sinks| {
        if let Some(sink) = sinks.borrow().get(&config.id).filter(|s| s.config.strong_count() > 0) {
            apply(&config, &bytes, |counter, n| sink.sink.add(sink.filter, counter, n));
        }
    });
}
