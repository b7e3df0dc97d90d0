//! Streams named by integers: the id a library gets for a stream, and the
//! table any thread reads to tell whether that stream is alive and whether
//! a hook of it waits for a decision.
//!
//! # Ids
//!
//! A [`StreamId`] is a `u64`: the worker (12 bits: the process's n-th
//! worker to run a foreign filter), the stream's slot on that worker (20
//! bits) and the slot's generation (32 bits), bumped each time the slot is
//! reused — so an id never names a later stream, as the mailbox keys of
//! `nuncio-filter` never do. No pointer ever crosses.
//!
//! # The shared word
//!
//! Each slot has one `AtomicU64` readable from every thread: its
//! generation, the id of the hook that waits for a decision (24 bits) and
//! two flags, `ALIVE` and `PENDING`. The worker owns the slot: it alone
//! sets `ALIVE`, `PENDING` and the hook, and clears `ALIVE`. Any thread
//! may clear `PENDING`, by a compare-and-swap that names the generation
//! and the hook: [`take_pending`]. Exactly one decision per hook wins; a
//! second, or one for a stream that ended, fails without touching the
//! stream. The worker's side never waits: its writes are plain atomic
//! stores and compare-and-swaps on its own slots.
//!
//! The rest of a stream (its handle, its HTTP client, the place a deferred
//! decision lands) is worker-local ([`lookup`], on the worker only), found
//! by the same slot: code on another thread posts a closure to the
//! worker's dispatcher ([`dispatcher`]), and the closure looks the stream
//! up there, or finds it gone.
//!
//! The slots live in chunks of 1024 allocated on first use and kept for
//! the life of the process (a worker that ends keeps its table: its
//! dispatcher then refuses posts, and every id of it reads as gone).

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use nuncio_runtime::{Dispatcher, DispatcherHandle};

use crate::abi::status;
use crate::stream::StreamCell;

const WORKER_BITS: u32 = 12;
const INDEX_BITS: u32 = 20;
const MAX_WORKERS: usize = 1 << WORKER_BITS;
const CHUNK: usize = 1024;
const CHUNKS: usize = (1 << INDEX_BITS) / CHUNK;

const ALIVE: u64 = 1;
const PENDING: u64 = 2;
const HOOK_SHIFT: u32 = 8;
const HOOK_MASK: u64 = 0x00FF_FFFF;

/// A stream as a library names it: worker, slot and generation in one
/// `u64`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct StreamId(u64);

impl StreamId {
    fn new(worker: usize, index: usize, generation: u32) -> StreamId {
        StreamId(((worker as u64) << (INDEX_BITS + 32)) | ((index as u64) << 32) | u64::from(generation))
    }

    /// The id as the ABI passes it.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// An id received from a library (any `u64`; a wrong one is simply
    /// never found).
    pub fn from_raw(raw: u64) -> StreamId {
        StreamId(raw)
    }

    fn worker(self) -> usize {
        (self.0 >> (INDEX_BITS + 32)) as usize
    }

    fn index(self) -> usize {
        ((self.0 >> 32) & ((1 << INDEX_BITS) - 1)) as usize
    }

    fn generation(self) -> u32 {
        self.0 as u32
    }
}

/// One worker's slots, readable from any thread.
struct WorkerShared {
    dispatcher: DispatcherHandle,
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl WorkerShared {
    fn word(&self, index: usize) -> Option<&AtomicU64> {
        self.chunks.get(index / CHUNK)?.get().map(|chunk| &chunk[index % CHUNK])
    }
}

static WORKERS: [OnceLock<WorkerShared>; MAX_WORKERS] = [const { OnceLock::new() }; MAX_WORKERS];
static NEXT_WORKER: AtomicUsize = AtomicUsize::new(0);
/// Streams registered and not yet unregistered, all workers together.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// This worker's side: which slots are free, and the streams by slot.
struct Local {
    worker: usize,
    shared: &'static WorkerShared,
    free: Vec<usize>,
    next: usize,
    cells: Vec<Option<Weak<StreamCell>>>,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's table, making it on first use (the thread
/// must run a dispatcher). `None` on a thread without one, or past the
/// process's worker limit.
fn with_local<R>(f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    LOCAL
        .try_with(|local| {
            let mut local = local.borrow_mut();
            // The thread's dispatcher may have been replaced (tests make
            // several on one thread): a new one is a new worker.
            if !local.as_ref().is_some_and(|l| l.shared.dispatcher.is_thread_safe()) {
                let current = Dispatcher::current()?.handle();
                let worker = NEXT_WORKER.fetch_add(1, Ordering::Relaxed);
                let slot = WORKERS.get(worker)?;
                let shared =
                    WorkerShared { dispatcher: current, chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect() };
                if slot.set(shared).is_err() {
                    return None;
                }
                let shared = slot.get()?;
                *local = Some(Local { worker, shared, free: Vec::new(), next: 0, cells: Vec::new() });
            }
            local.as_mut().map(f)
        })
        .ok()
        .flatten()
}

/// Registers a stream on the calling worker: its id, or `None` on a thread
/// that runs no dispatcher or when the worker has 2^20 streams.
pub(crate) fn register(cell: Weak<StreamCell>) -> Option<StreamId> {
    with_local(|local| {
        let index = match local.free.pop() {
            Some(index) => index,
            None if local.next < CHUNKS * CHUNK => {
                local.next += 1;
                local.next - 1
            }
            None => return None,
        };
        let chunk = local.shared.chunks[index / CHUNK]
            .get_or_init(|| (0..CHUNK).map(|_| AtomicU64::new(0)).collect::<Vec<_>>().into_boxed_slice());
        let word = &chunk[index % CHUNK];
        // Only this thread writes ALIVE and the generation: no race on them.
        let generation = ((word.load(Ordering::Acquire) >> 32) as u32).wrapping_add(1);
        word.store((u64::from(generation) << 32) | ALIVE, Ordering::Release);
        if local.cells.len() <= index {
            local.cells.resize(index + 1, None);
        }
        local.cells[index] = Some(cell);
        LIVE.fetch_add(1, Ordering::Relaxed);
        Some(StreamId::new(local.worker, index, generation))
    })
    .flatten()
}

/// Ends a stream: every later check of its id reads "gone", and its slot
/// is free for another stream (with the next generation). On its worker.
pub(crate) fn unregister(id: StreamId) {
    let _ = with_local(|local| {
        if id.worker() != local.worker {
            return;
        }
        let Some(word) = local.shared.word(id.index()) else { return };
        let current = word.load(Ordering::Acquire);
        if (current >> 32) as u32 != id.generation() || current & ALIVE == 0 {
            return;
        }
        word.store(u64::from(id.generation()) << 32, Ordering::Release);
        local.cells[id.index()] = None;
        local.free.push(id.index());
        LIVE.fetch_sub(1, Ordering::Relaxed);
    });
}

/// The stream behind `id`, on its worker; `None` if it ended (or `id` is
/// another worker's).
pub(crate) fn lookup(id: StreamId) -> Option<Rc<StreamCell>> {
    with_local(|local| {
        if id.worker() != local.worker {
            return None;
        }
        let word = local.shared.word(id.index())?.load(Ordering::Acquire);
        if (word >> 32) as u32 != id.generation() || word & ALIVE == 0 {
            return None;
        }
        local.cells.get(id.index())?.as_ref()?.upgrade()
    })
    .flatten()
}

fn word_of(id: StreamId) -> Option<&'static AtomicU64> {
    WORKERS.get(id.worker())?.get()?.word(id.index())
}

/// Marks hook `hook` of `id` as waiting for its decision. On the worker.
pub(crate) fn expect(id: StreamId, hook: u32) {
    if let Some(word) = word_of(id) {
        let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            ((w >> 32) as u32 == id.generation() && w & ALIVE != 0)
                .then(|| (w & !(HOOK_MASK << HOOK_SHIFT)) | ((u64::from(hook) & HOOK_MASK) << HOOK_SHIFT) | PENDING)
        });
    }
}

/// Stops waiting for a decision of `id` (the hook was dropped). On the
/// worker.
pub(crate) fn forget_pending(id: StreamId) {
    if let Some(word) = word_of(id) {
        let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            ((w >> 32) as u32 == id.generation() && w & PENDING != 0).then_some(w & !PENDING)
        });
    }
}

/// Claims the decision of hook `hook` of `id`, from any thread: `OK` for
/// exactly one caller per hook; `STREAM_GONE` when the stream ended;
/// `NOT_STOPPED` when no such hook waits (decided already, or never
/// asked).
pub(crate) fn take_pending(id: StreamId, hook: u32) -> i32 {
    let Some(word) = word_of(id) else { return status::STREAM_GONE as i32 };
    let expected_hook = (u64::from(hook) & HOOK_MASK) << HOOK_SHIFT;
    let mut current = word.load(Ordering::Acquire);
    loop {
        if (current >> 32) as u32 != id.generation() || current & ALIVE == 0 {
            return status::STREAM_GONE as i32;
        }
        if current & PENDING == 0 || current & (HOOK_MASK << HOOK_SHIFT) != expected_hook {
            return status::NOT_STOPPED as i32;
        }
        match word.compare_exchange_weak(current, current & !PENDING, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return status::OK as i32,
            Err(now) => current = now,
        }
    }
}

/// Whether `id` names a live stream (any thread).
pub(crate) fn is_alive(id: StreamId) -> bool {
    word_of(id).is_some_and(|word| {
        let w = word.load(Ordering::Acquire);
        (w >> 32) as u32 == id.generation() && w & ALIVE != 0
    })
}

/// The dispatcher of `id`'s worker, to post to (any thread).
pub(crate) fn dispatcher(id: StreamId) -> Option<DispatcherHandle> {
    WORKERS.get(id.worker())?.get().map(|w| w.dispatcher.clone())
}

/// How many streams are registered, all workers together.
pub(crate) fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_their_parts() {
        let id = StreamId::new(4095, (1 << 20) - 1, u32::MAX);
        assert_eq!((id.worker(), id.index(), id.generation()), (4095, (1 << 20) - 1, u32::MAX));
        let id = StreamId::from_raw(StreamId::new(3, 17, 9).raw());
        assert_eq!((id.worker(), id.index(), id.generation()), (3, 17, 9));
    }

    #[test]
    fn unknown_ids_read_as_gone() {
        let id = StreamId::new(MAX_WORKERS - 1, 5, 1);
        assert!(!is_alive(id));
        assert_eq!(take_pending(id, 1), status::STREAM_GONE as i32);
        assert!(dispatcher(id).is_none());
    }
}
