//! Thread-local slots (Envoy's `ThreadLocal::Instance` and `Slot`).
//!
//! Every registered thread (main and each worker) keeps, in a plain
//! `thread_local!`, one entry per slot index: the slot's generation and
//! that thread's object. Only the owning thread ever touches its entries;
//! other threads change them by posting a closure to that thread. That is
//! why a read needs no lock and no atomic read-modify-write: it borrows
//! the thread's storage (a `RefCell`), checks the generation and
//! downcasts the object, all in safe code.
//!
//! Generations are unique and increase with every `allocate_slot`, so they
//! double as the allocation order used at shutdown, and they tell a
//! closure meant for a dropped slot apart from the slot that reuses its
//! index (Envoy's PRs #12833 and #17634 fixed that very bug).
//!
//! # Which thread calls what
//!
//! * Main only (the thread of the dispatcher given to [`ThreadLocal::new`],
//!   which is called there): [`ThreadLocal::register_thread`],
//!   [`ThreadLocal::allocate_slot`], [`Slot::set`], [`Slot::set_then`],
//!   [`Slot::run_on_all_threads`], [`ThreadLocal::shutdown_global_threading`].
//!   Elsewhere they fail with [`Error::NotMainThread`].
//! * Any registered thread, on its own copy: [`Slot::with`], [`Slot::get`];
//!   and [`ThreadLocal::shutdown_thread`], each thread on itself, once
//!   `shutdown_global_threading` was called.
//! * Anywhere: cloning and dropping a [`Slot`] (the last drop clears the
//!   slot through main), [`ThreadLocal::is_shut_down`],
//!   [`ThreadLocal::registered_workers`]. A [`SlotRef`] is `!Send` and
//!   stays on the thread that read it.
//!
//! # The read guard
//!
//! A [`Slot::with`] closure borrows this thread's object, so while it runs
//! this thread's entries do not change (a change could drop the object).
//! Inside the closure, on the same thread:
//!
//! * reads ([`Slot::with`], [`Slot::get`] of any slot) work as anywhere;
//! * [`Slot::set`], [`Slot::set_then`], [`Slot::run_on_all_threads`] and
//!   [`ThreadLocal::shutdown_thread`] are refused with [`Error::Reentrant`]
//!   and change nothing on any thread;
//! * [`ThreadLocal::new`] (which rebinds this thread), dropping the last
//!   clone of a [`Slot`], and changes posted to this thread while the
//!   closure runs the loop itself (a worker's registration, a set, update
//!   or clear reaching it) are deferred: queued in order and applied as
//!   the outermost read ends, before `with` returns (if its closure
//!   panicked: on the next turn of this thread's loop, or first thing in
//!   the next change on this thread).
//!
//! A [`SlotRef`] from [`Slot::get`] is not a read in progress: it holds its
//! snapshot by reference count and blocks nothing.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc as StdArc;
use std::sync::atomic::AtomicU64 as IdCounter;

use crate::dispatcher::{Dispatcher, DispatcherHandle};
use crate::error::Error;
use std::sync::atomic::Ordering;

use crate::sync::{Arc, AtomicBool, Mutex, lock, thread_local};

/// Generations start at 1: 0 marks a vacant entry.
static NEXT_GENERATION: IdCounter = IdCounter::new(1);
static NEXT_INSTANCE: IdCounter = IdCounter::new(1);

fn next(counter: &IdCounter) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed)
}

/// Builds a thread's object, on that thread.
type Init = StdArc<dyn Fn(&Dispatcher) -> Stored + Send + Sync>;
/// Changes a thread's object in place: set, update or clear.
type Op = StdArc<dyn Fn(&Dispatcher, &mut Option<Stored>) + Send + Sync>;

/// A thread's object for one slot: the slot's `Arc<T>`, type-erased, in an
/// `Rc` so that a reader who wants its own reference ([`Slot::get`]) takes
/// it with a non-atomic increment. A read gets the `Arc<T>` back with a
/// downcast: the generation check already tells the object is this
/// slot's, but the downcast keeps the crate free of `unsafe` for ~1 ns a
/// read (docs/benchmarks.md, "Slot reads: safe or unsafe").
type Stored = Rc<dyn Any>;

fn store<T: Send + Sync + 'static>(object: StdArc<T>) -> Stored {
    Rc::new(object)
}

/// A generation belongs to one `Slot<T>` for ever, and everything it
/// stores is an `Arc<T>`: a read whose generation matched cannot fail
/// here.
const SAME_TYPE: &str = "a slot's generation only ever stores its own Arc<T>";

// ---------------------------------------------------------------------------
// Per-thread storage

struct Entry {
    generation: u64,
    object: Option<Stored>,
}

struct ThreadData {
    /// The instance this thread is registered with; 0 for none.
    instance: u64,
    shut_down: bool,
    /// Indexed by slot index; owns the objects.
    entries: Vec<Entry>,
    /// Changes wait in [`PENDING`] for the read in progress to end.
    waiting: Cell<bool>,
}

impl ThreadData {
    const fn new() -> ThreadData {
        ThreadData { instance: 0, shut_down: false, entries: Vec::new(), waiting: Cell::new(false) }
    }

    #[cold]
    fn why_missing(&self) -> Error {
        if self.shut_down {
            Error::ShutDown
        } else if self.instance == 0 {
            Error::NotRegistered
        } else {
            Error::NotSet
        }
    }
}

impl Drop for ThreadData {
    /// The thread is exiting without `shutdown_thread`: the same order.
    /// (Reads from the destructors find the storage gone: `ShutDown`.)
    fn drop(&mut self) {
        drop_in_reverse_allocation_order(std::mem::take(&mut self.entries));
    }
}

/// Drops `entries` one at a time, later slots first (they may depend on
/// earlier ones), with no borrow held: a destructor may read a slot.
fn drop_in_reverse_allocation_order(entries: Vec<Entry>) {
    let mut entries: Vec<Entry> = entries.into_iter().filter(|e| e.object.is_some()).collect();
    entries.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.generation));
    for entry in entries {
        drop(entry);
    }
}

/// A change to this thread's storage that met a read in progress; it runs
/// once the read is over, with the dispatcher it was meant to run with.
type Deferred = Box<dyn FnOnce()>;

/// The changes waiting for the read in progress on this thread to end.
struct Pending {
    queue: RefCell<VecDeque<Deferred>>,
    /// A drain runs further up the stack: it will run what is queued.
    draining: Cell<bool>,
}

#[cfg(not(nuncio_loom))]
thread_local! {
    static DATA: RefCell<ThreadData> = const { RefCell::new(ThreadData::new()) };
    static PENDING: Pending = const { Pending { queue: RefCell::new(VecDeque::new()), draining: Cell::new(false) } };
}

#[cfg(nuncio_loom)]
thread_local! {
    static DATA: RefCell<ThreadData> = RefCell::new(ThreadData::new());
    static PENDING: Pending = Pending { queue: RefCell::new(VecDeque::new()), draining: Cell::new(false) };
}

// ---------------------------------------------------------------------------
// Changes and the read guard
//
// A `Slot::with` closure holds a reference into one of this thread's
// objects, with a shared borrow of `DATA` that lasts as long as the
// closure: while one runs (`reading()`) nothing can change this thread's
// entries, and the borrow checker of `RefCell` makes that a refusal, never
// a dangling reference. Every change goes through one of two doors:
//
// * `direct_change`, for calls that return a `Result` (`set`, `set_then`,
//   `run_on_all_threads`, `shutdown_thread`): refused with
//   `Error::Reentrant` while reading;
// * `change_or_defer`, for changes that arrive in a posted closure (a
//   worker's registration, a set, update or clear reaching a worker) or
//   that have no way to report an error (`ThreadLocal::new`, a slot's
//   drop): queued while reading, and run when the outermost read ends
//   (or, if the reader panicked, on the loop's next turn).
//
// Either way the changes already queued on this thread run first, so the
// thread sees every change in the order it was made.

/// Whether a [`Slot::with`] closure is running on this thread (the only
/// time `DATA` stays borrowed while other code runs).
fn reading() -> bool {
    DATA.try_with(|data| data.try_borrow_mut().is_err()).unwrap_or(false)
}

/// Runs `change` now if no read is in progress on this thread and nothing
/// waits before it; otherwise queues it, to run in order once the read is
/// over.
fn change_or_defer(change: Deferred) {
    let must_wait = PENDING.try_with(|p| reading() || p.draining.get() || !p.queue.borrow().is_empty());
    if !must_wait.unwrap_or(false) {
        change();
        return;
    }
    PENDING.with(|p| p.queue.borrow_mut().push_back(change));
    run_deferred();
}

/// For the changes user code calls directly: refused while a read is in
/// progress on this thread; otherwise the queued changes run first.
fn direct_change(what: &'static str) -> Result<(), Error> {
    if reading() {
        return Err(Error::Reentrant(what));
    }
    // Cannot stop half way: a queued change may read, but its read ends
    // before it returns.
    run_deferred();
    Ok(())
}

/// Runs the queued changes in order, unless a read is in progress (then
/// its end runs them) or a drain further up the stack (a queued change
/// that made a change) will.
fn run_deferred() {
    struct Draining<'a>(&'a Cell<bool>);
    impl Drop for Draining<'_> {
        fn drop(&mut self) {
            self.0.set(false);
            // A change panicked: the rest must not wait for a change that
            // may never come.
            if std::thread::panicking() {
                post_drain();
            }
        }
    }
    let _ = PENDING.try_with(|p| {
        if p.draining.replace(true) {
            return;
        }
        let _draining = Draining(&p.draining);
        loop {
            if reading() {
                // The end of the outermost read looks at this.
                let _ = DATA.try_with(|data| data.borrow().waiting.set(true));
                return;
            }
            let next = p.queue.borrow_mut().pop_front();
            let Some(change) = next else {
                let _ = DATA.try_with(|data| data.borrow().waiting.set(false));
                return;
            };
            change();
        }
    });
}

/// The outermost read ended with changes waiting: they run now.
#[cold]
#[inline(never)]
fn read_over() {
    if !reading() {
        run_deferred();
    }
}

/// Ends a read whose closure panics with changes waiting: they run on the
/// loop's next turn, not in the middle of the unwinding.
struct Unwinding<'a>(&'a Cell<bool>);

impl Drop for Unwinding<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.0.get() && std::thread::panicking() {
            post_drain();
        }
    }
}

/// Posts [`run_deferred`] to this thread's dispatcher. Refused (or with no
/// dispatcher) the queue waits for the next read to end or change on this
/// thread, or goes with the thread.
fn post_drain() {
    if let Some(dispatcher) = Dispatcher::current() {
        let _ = dispatcher.handle().post(run_deferred);
    }
}

/// Binds the calling thread to `instance` and builds its objects. Whatever
/// a previous instance left on this thread is dropped (outside the borrow).
/// Only with no read in progress (through [`change_or_defer`]).
fn bind_thread(dispatcher: &Dispatcher, instance: u64, initial: &[(usize, u64, Init)]) {
    let previous = DATA.try_with(|data| {
        let mut data = data.borrow_mut();
        data.instance = instance;
        data.shut_down = false;
        std::mem::take(&mut data.entries)
    });
    if let Ok(previous) = previous {
        drop_in_reverse_allocation_order(previous);
    }
    for (index, generation, init) in initial {
        apply(dispatcher, instance, *index, *generation, &|d, object| *object = Some(init(d)));
    }
}

/// Runs `op` on this thread's object for slot (`index`, `generation`).
/// Only with no read in progress (through [`change_or_defer`] or after
/// [`direct_change`]).
///
/// The object is taken out while `op` runs so that user code inside it
/// (an init or update) may read other slots, or post, without hitting a
/// held borrow. A closure for a slot older than the entry's is stale (its
/// slot was dropped and the index reused) and does nothing.
fn apply(
    dispatcher: &Dispatcher,
    instance: u64,
    index: usize,
    generation: u64,
    op: &dyn Fn(&Dispatcher, &mut Option<Stored>),
) {
    let taken = DATA.try_with(|data| {
        let data = &mut *data.borrow_mut();
        if data.shut_down || data.instance != instance {
            return None;
        }
        if data.entries.len() <= index {
            data.entries.resize_with(index + 1, || Entry { generation: 0, object: None });
        }
        let entry = &mut data.entries[index];
        if entry.generation > generation {
            return None;
        }
        if entry.generation < generation {
            // A leftover of the dropped slot that used this index before.
            entry.generation = generation;
            Some((entry.object.take(), None))
        } else {
            Some((None, entry.object.take()))
        }
    });
    let Ok(Some((leftover, mut object))) = taken else { return };
    drop(leftover);
    // `op` may read slots (its own included, which reads as not set) but
    // any change it makes ends before it returns.
    op(dispatcher, &mut object);
    let displaced = DATA.try_with(|data| {
        let data = &mut *data.borrow_mut();
        match data.entries.get_mut(index) {
            Some(entry) if entry.generation == generation && !data.shut_down => {
                std::mem::replace(&mut entry.object, object)
            }
            // Shut down (or rebound) while `op` ran: the object goes with
            // everything else.
            _ => object,
        }
    });
    drop(displaced);
}

// ---------------------------------------------------------------------------
// The instance

/// The slot allocator and thread registry (Envoy's `ThreadLocal::Instance`).
///
/// Created on the main thread, with the main dispatcher; main is registered
/// at once. Cloning is cheap and clones may travel to other threads, but
/// `register_thread`, `allocate_slot`, `Slot::set`, `Slot::run_on_all_threads`
/// and `shutdown_global_threading` must be called on main
/// ([`Error::NotMainThread`] otherwise). `shutdown_thread` is called by each
/// thread on itself.
#[derive(Clone)]
pub struct ThreadLocal {
    instance: Arc<Instance>,
}

struct Instance {
    id: u64,
    main: DispatcherHandle,
    shut_down: AtomicBool,
    registry: Mutex<Registry>,
}

/// Main-thread bookkeeping. Behind a mutex only because `Slot` is `Send`
/// and may be dropped anywhere; the read path never comes here.
struct Registry {
    workers: Vec<DispatcherHandle>,
    slots: Vec<Option<SlotRecord>>,
    free: Vec<usize>,
}

struct SlotRecord {
    generation: u64,
    /// The latest `set`, replayed on threads registered later.
    init: Option<Init>,
}

impl ThreadLocal {
    /// Creates the instance on the main thread, whose dispatcher is `main`,
    /// and registers main. Must be called on `main`'s thread (it is, since
    /// a `Dispatcher` never leaves its thread).
    ///
    /// A thread belongs to one instance at a time: this drops whatever an
    /// earlier instance left on main. Inside a [`Slot::with`] closure on
    /// main that waits until the read is over (see the module docs).
    pub fn new(main: &Dispatcher) -> ThreadLocal {
        let instance = Arc::new(Instance {
            id: next(&NEXT_INSTANCE),
            main: main.handle(),
            shut_down: AtomicBool::new(false),
            registry: Mutex::new(Registry { workers: Vec::new(), slots: Vec::new(), free: Vec::new() }),
        });
        let (d, id) = (main.clone(), instance.id);
        // Inside a `Slot::with` on this thread the rebinding (and the drop
        // of a previous instance's objects) waits until the read is over.
        change_or_defer(Box::new(move || bind_thread(&d, id, &[])));
        ThreadLocal { instance }
    }

    /// Registers a worker. Every slot already set is built on it (a post,
    /// so before anything posted to it later), and every later `set` and
    /// `run_on_all_threads` reaches it. Main only.
    pub fn register_thread(&self, worker: DispatcherHandle) -> Result<(), Error> {
        self.instance.check_main("ThreadLocal::register_thread")?;
        let initial: Vec<(usize, u64, Init)> = lock(&self.instance.registry)
            .slots
            .iter()
            .enumerate()
            .filter_map(|(index, record)| {
                let record = record.as_ref()?;
                Some((index, record.generation, record.init.clone()?))
            })
            .collect();
        // Nothing else can change the registry meanwhile: it only changes on
        // main, and this is main.
        let id = self.instance.id;
        worker.post_with(move |d| {
            let dispatcher = d.clone();
            change_or_defer(Box::new(move || bind_thread(&dispatcher, id, &initial)));
        })?;
        lock(&self.instance.registry).workers.push(worker);
        Ok(())
    }

    /// Allocates a slot for objects of type `T`, reusing a freed index if
    /// there is one. It holds nothing until [`Slot::set`]. Main only.
    pub fn allocate_slot<T: Send + Sync + 'static>(&self) -> Result<Slot<T>, Error> {
        self.instance.check_main("ThreadLocal::allocate_slot")?;
        let generation = next(&NEXT_GENERATION);
        let index = {
            let mut registry = lock(&self.instance.registry);
            let record = Some(SlotRecord { generation, init: None });
            match registry.free.pop() {
                Some(index) => {
                    registry.slots[index] = record;
                    index
                }
                None => {
                    registry.slots.push(record);
                    registry.slots.len() - 1
                }
            }
        };
        Ok(Slot {
            index,
            generation,
            inner: Arc::new(SlotInner { index, generation, instance: self.instance.clone() }),
            _type: PhantomData,
        })
    }

    /// Marks the whole slot system as shutting down (Envoy's
    /// `shutdownGlobalThreading`): `set`, `run_on_all_threads`,
    /// `register_thread` and `allocate_slot` fail with
    /// [`Error::ShutDown`] from now on, and dropping a slot posts nothing.
    /// Objects stay readable until each thread calls
    /// [`ThreadLocal::shutdown_thread`]. Main only.
    pub fn shutdown_global_threading(&self) -> Result<(), Error> {
        if !self.instance.main.is_thread_safe() {
            return Err(Error::NotMainThread("ThreadLocal::shutdown_global_threading"));
        }
        self.instance.shut_down.store(true, Ordering::Release);
        Ok(())
    }

    /// Drops the calling thread's objects in reverse order of slot
    /// allocation (later slots may depend on earlier ones), then makes
    /// every `get` on this thread fail with [`Error::ShutDown`]. Call it on
    /// each worker after its dispatcher stopped, and on main last.
    /// [`Error::Reentrant`] from inside a [`Slot::with`] on this thread.
    pub fn shutdown_thread(&self) -> Result<(), Error> {
        if !self.instance.shut_down.load(Ordering::Acquire) {
            return Err(Error::NotShuttingDown);
        }
        direct_change("ThreadLocal::shutdown_thread")?;
        let id = self.instance.id;
        let entries = DATA
            .try_with(|data| {
                let mut data = data.borrow_mut();
                if data.instance != id {
                    return Err(Error::NotRegistered);
                }
                data.shut_down = true;
                Ok(std::mem::take(&mut data.entries))
            })
            .unwrap_or(Err(Error::ShutDown))?;
        // A destructor that reads a slot gets `ShutDown`.
        drop_in_reverse_allocation_order(entries);
        Ok(())
    }

    /// Whether `shutdown_global_threading` was called.
    pub fn is_shut_down(&self) -> bool {
        self.instance.shut_down.load(Ordering::Acquire)
    }

    /// How many worker threads are registered (main not counted).
    pub fn registered_workers(&self) -> usize {
        lock(&self.instance.registry).workers.len()
    }
}

impl fmt::Debug for ThreadLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadLocal").field("id", &self.instance.id).finish_non_exhaustive()
    }
}

impl Instance {
    fn check_main(&self, what: &'static str) -> Result<(), Error> {
        if !self.main.is_thread_safe() {
            return Err(Error::NotMainThread(what));
        }
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        Ok(())
    }

    /// The one mechanism behind `set`, `run_on_all_threads` and slot
    /// clearing: run `op` on main now, post it to every worker, and (if
    /// asked) post `on_complete` to main once every worker ran or dropped
    /// its copy.
    ///
    /// Called from inside [`Slot::with`] on main, a set or update
    /// (`what` is `Some`) is refused ([`Error::Reentrant`]) before reaching
    /// any worker, so every thread sees the same sequence of objects; a
    /// clear (`what` is `None`) is deferred on main instead. On a worker
    /// inside `with` (its closure running the loop), the change waits for
    /// the read to end.
    fn broadcast(
        &self,
        what: Option<&'static str>,
        index: usize,
        generation: u64,
        op: &Op,
        on_complete: Option<Box<dyn FnOnce() + Send>>,
    ) -> Result<(), Error> {
        let main = Dispatcher::current().ok_or_else(|| Error::Stopped(self.main.name().to_owned()))?;
        let id = self.id;
        match what {
            Some(what) => {
                direct_change(what)?;
                apply(&main, id, index, generation, &**op);
            }
            None => {
                let op = op.clone();
                change_or_defer(Box::new(move || apply(&main, id, index, generation, &*op)));
            }
        }
        let workers = lock(&self.registry).workers.clone();
        let completion = on_complete
            .map(|callback| Arc::new(Completion { main: self.main.clone(), callback: Mutex::new(Some(callback)) }));
        for worker in workers {
            let op = op.clone();
            let completion = completion.clone();
            // A stopped worker refuses the post and the closure, with its
            // completion reference, is dropped here: completion still fires.
            let _ = worker.post_with(move |d| {
                let dispatcher = d.clone();
                change_or_defer(Box::new(move || {
                    apply(&dispatcher, id, index, generation, &*op);
                    // Only now: a deferred update completes once it ran.
                    drop(completion);
                }));
            });
        }
        Ok(())
    }

    /// Frees a dropped slot's index and clears its objects everywhere.
    /// Runs on main.
    fn free_slot(&self, index: usize, generation: u64) {
        {
            let mut registry = lock(&self.registry);
            match registry.slots.get(index) {
                Some(Some(record)) if record.generation == generation => {}
                _ => return,
            }
            registry.slots[index] = None;
            registry.free.push(index);
        }
        if self.shut_down.load(Ordering::Acquire) {
            return;
        }
        let clear: Op = StdArc::new(|_: &Dispatcher, object: &mut Option<Stored>| *object = None);
        // Late is harmless (a slot dropped inside `Slot::with` on main is
        // cleared there once the read is over): the generation check keeps
        // a clear of this dead slot away from any slot that reuses the index.
        let _ = self.broadcast(None, index, generation, &clear, None);
    }
}

/// Posts `callback` to main when the last worker drops its reference
/// (Envoy's shared-pointer-with-a-deleter trick).
struct Completion {
    main: DispatcherHandle,
    /// Only touched in `drop`; the mutex just makes the guard `Sync`.
    callback: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let callback = lock(&self.callback).take();
        if let Some(callback) = callback {
            // If main has stopped the callback is dropped with the refused
            // post, on this thread.
            let _ = self.main.post(callback);
        }
    }
}

// ---------------------------------------------------------------------------
// Slots

/// A handle to one slot: per-thread copies of an `Arc<T>`.
///
/// Cheap to clone (an index and a generation behind a reference count),
/// `Send + Sync`, usable on any registered thread. Dropping the last clone
/// frees the index for reuse and clears the slot's objects on every thread
/// (posted from main).
pub struct Slot<T> {
    /// Copies of `inner`'s, kept inline so a read does not chase the `Arc`.
    index: usize,
    generation: u64,
    inner: Arc<SlotInner>,
    _type: PhantomData<fn() -> T>,
}

struct SlotInner {
    index: usize,
    generation: u64,
    instance: Arc<Instance>,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        let instance = self.instance.clone();
        if instance.shut_down.load(Ordering::Acquire) {
            return;
        }
        let (index, generation) = (self.index, self.generation);
        if instance.main.is_thread_safe() {
            instance.free_slot(index, generation);
        } else {
            let main = instance.main.clone();
            let _ = main.post(move || instance.free_slot(index, generation));
        }
    }
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Slot { index: self.index, generation: self.generation, inner: self.inner.clone(), _type: PhantomData }
    }
}

impl<T> fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("type", &std::any::type_name::<T>())
            .field("index", &self.index)
            .field("generation", &self.generation)
            .finish()
    }
}

impl<T: Send + Sync + 'static> Slot<T> {
    /// Calls `f` with this thread's object: the fast read. No lock, no
    /// atomic read-modify-write, no reference count: a thread-local access,
    /// a `RefCell` borrow, an index, a generation check and a downcast.
    ///
    /// While `f` runs, this thread's entries do not change: reads inside
    /// `f` are fine; `set`, `set_then`, `run_on_all_threads` and
    /// `shutdown_thread` called from `f` fail with [`Error::Reentrant`];
    /// `ThreadLocal::new`, the drop of a slot's last clone and changes
    /// posted to this thread wait until `f` has returned.
    ///
    /// Fails with [`Error::NotSet`] before `set` reached this thread,
    /// [`Error::NotRegistered`] on a thread that is not registered, and
    /// [`Error::ShutDown`] after this thread's `shutdown_thread`.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> Result<R, Error> {
        let (index, generation) = (self.index, self.generation);
        DATA.try_with(|cell| {
            // The read guard: held until `f` returns.
            let data = cell.borrow();
            let object = match data.entries.get(index) {
                Some(Entry { generation: g, object: Some(object) }) if *g == generation => object,
                _ => return Err(data.why_missing()),
            };
            let object: &StdArc<T> = object.downcast_ref().expect(SAME_TYPE);
            let output = {
                let _unwinding = Unwinding(&data.waiting);
                f(object)
            };
            let waiting = data.waiting.get();
            drop(data);
            if waiting {
                read_over();
            }
            Ok(output)
        })
        // The thread is exiting, past its storage.
        .unwrap_or(Err(Error::ShutDown))
    }

    /// This thread's object, as a reference that can be held (across
    /// awaits, for the life of a request) on this thread. Costs one
    /// non-atomic reference count over [`Slot::with`]; fails as it does.
    #[inline]
    pub fn get(&self) -> Result<SlotRef<T>, Error> {
        let (index, generation) = (self.index, self.generation);
        DATA.try_with(|cell| {
            let data = cell.borrow();
            match data.entries.get(index) {
                Some(Entry { generation: g, object: Some(object) }) if *g == generation => {
                    Ok(SlotRef { object: Rc::clone(object).downcast().expect(SAME_TYPE) })
                }
                _ => Err(data.why_missing()),
            }
        })
        .unwrap_or(Err(Error::ShutDown))
    }

    /// Sets the slot's object on every registered thread: `init` runs on
    /// main now, on each worker through a post, and on every thread
    /// registered later. Return one shared `Arc` (built once, cloned) for
    /// read-only config, or a new one per thread for per-thread state.
    /// Main only; [`Error::Reentrant`] from inside a [`Slot::with`] on main
    /// (then no thread is changed). A worker reading in a `with` whose
    /// closure runs its loop gets the new object when that read ends.
    pub fn set<F>(&self, init: F) -> Result<(), Error>
    where
        F: Fn(&Dispatcher) -> StdArc<T> + Send + Sync + 'static,
    {
        self.set_inner(init, None)
    }

    /// [`Slot::set`], then `on_complete` on main once every worker has its
    /// new object (see [`Slot::run_on_all_threads`] for stopped workers).
    pub fn set_then<F, C>(&self, init: F, on_complete: C) -> Result<(), Error>
    where
        F: Fn(&Dispatcher) -> StdArc<T> + Send + Sync + 'static,
        C: FnOnce() + Send + 'static,
    {
        self.set_inner(init, Some(Box::new(on_complete)))
    }

    fn set_inner<F>(&self, init: F, on_complete: Option<Box<dyn FnOnce() + Send>>) -> Result<(), Error>
    where
        F: Fn(&Dispatcher) -> StdArc<T> + Send + Sync + 'static,
    {
        let instance = &self.inner.instance;
        instance.check_main("Slot::set")?;
        let init: Init = StdArc::new(move |d| store(init(d)));
        {
            let mut registry = lock(&instance.registry);
            if let Some(Some(record)) = registry.slots.get_mut(self.index) {
                record.init = Some(init.clone());
            }
        }
        let op: Op = StdArc::new(move |d, object| *object = Some(init(d)));
        instance.broadcast(Some("Slot::set"), self.index, self.generation, &op, on_complete)
    }

    /// Runs `update` on every thread's object, main first, then each worker
    /// through a post; then `on_complete` on main, exactly once, after every
    /// worker has run `update`. `update` may replace the object (a new
    /// config snapshot), clear it, or leave it. Main only; refused inside
    /// a [`Slot::with`] on main as [`Slot::set`] is.
    ///
    /// A worker that stopped meanwhile does not run `update` (its post is
    /// refused, or dropped when its loop ends); `on_complete` still runs
    /// once the others are done. If main itself has stopped, `on_complete`
    /// is dropped without running. Threads registered later start from the
    /// latest [`Slot::set`], not from updates.
    pub fn run_on_all_threads<U, C>(&self, update: U, on_complete: C) -> Result<(), Error>
    where
        U: Fn(&mut Option<StdArc<T>>) + Send + Sync + 'static,
        C: FnOnce() + Send + 'static,
    {
        let instance = &self.inner.instance;
        instance.check_main("Slot::run_on_all_threads")?;
        let op: Op = StdArc::new(move |_d, object| {
            let mut typed = object.take().map(|stored| {
                let rc = stored.downcast::<StdArc<T>>().expect(SAME_TYPE);
                // Shared with a `SlotRef` still held: that one keeps its own.
                Rc::try_unwrap(rc).unwrap_or_else(|rc| StdArc::clone(&rc))
            });
            update(&mut typed);
            *object = typed.map(store);
        });
        instance.broadcast(
            Some("Slot::run_on_all_threads"),
            self.index,
            self.generation,
            &op,
            Some(Box::new(on_complete)),
        )
    }
}

/// A reference to this thread's object in a slot.
///
/// `!Send`: it stays on the thread that read it. Holding it keeps that
/// snapshot alive (an in-flight request finishes on the config it started
/// with) even after the slot moves on; [`SlotRef::to_arc`] gives a `Send`
/// reference.
pub struct SlotRef<T> {
    // The `Rc` the entry stores, downcast: cloning it costs a non-atomic
    // increment where the `Arc` would cost an atomic one.
    #[allow(clippy::redundant_allocation)]
    object: Rc<StdArc<T>>,
}

impl<T> SlotRef<T> {
    /// The underlying `Arc`, to send elsewhere.
    pub fn to_arc(&self) -> StdArc<T> {
        StdArc::clone(&self.object)
    }
}

impl<T> Clone for SlotRef<T> {
    fn clone(&self) -> Self {
        SlotRef { object: Rc::clone(&self.object) }
    }
}

impl<T> Deref for SlotRef<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.object
    }
}

impl<T: fmt::Debug> fmt::Debug for SlotRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Held references, reused indexes, and changes from inside `with`, seen
/// from the storage itself.
#[cfg(all(test, not(nuncio_loom)))]
mod tests {
    use super::*;

    fn setup() -> (Dispatcher, ThreadLocal) {
        let main = Dispatcher::new("main").unwrap();
        let tls = ThreadLocal::new(&main);
        (main, tls)
    }

    #[test]
    fn reads_follow_replacements_and_held_refs_outlive_them() {
        let (_main, tls) = setup();
        let slot = tls.allocate_slot::<String>().unwrap();
        slot.set(|_| StdArc::new("one".to_owned())).unwrap();
        let held = slot.get().unwrap();
        assert_eq!(slot.with(|s| s.clone()).unwrap(), "one");
        slot.set(|_| StdArc::new("two".to_owned())).unwrap();
        assert_eq!(slot.with(|s| s.len()).unwrap(), 3);
        assert_eq!(&*slot.get().unwrap(), "two");
        assert_eq!(&*held, "one", "the old snapshot lives while held");
        let arc = held.to_arc();
        drop(slot);
        tls.shutdown_global_threading().unwrap();
        tls.shutdown_thread().unwrap();
        assert_eq!(&*held, "one", "held past slot drop and thread shutdown");
        assert_eq!(*arc, "one");
        let cloned = held.clone();
        drop(held);
        assert_eq!(&*cloned, "one");
    }

    #[test]
    fn a_reused_index_never_reads_as_the_old_type() {
        let (main, tls) = setup();
        let old = tls.allocate_slot::<String>().unwrap();
        old.set(|_| StdArc::new("text".to_owned())).unwrap();
        drop(old);
        let new = tls.allocate_slot::<u64>().unwrap();
        assert_eq!(new.index, 0);
        assert_eq!(new.with(|v| *v).unwrap_err(), Error::NotSet);
        assert!(new.get().is_err());
        new.set(|_| StdArc::new(5)).unwrap();
        assert_eq!(new.with(|v| *v).unwrap(), 5);
        drop(main);
    }

    #[test]
    fn changes_from_inside_with_are_refused_or_deferred_never_torn() {
        let (main, tls) = setup();
        let a = tls.allocate_slot::<u64>().unwrap();
        let b = tls.allocate_slot::<u64>().unwrap();
        a.set(|_| StdArc::new(1)).unwrap();
        b.set(|_| StdArc::new(10)).unwrap();
        let err = a.with(|_| {
            assert_eq!(b.with(|w| *w).unwrap(), 10, "nested reads are fine");
            b.set(|_| StdArc::new(11)).unwrap_err()
        });
        assert_eq!(err.unwrap(), Error::Reentrant("Slot::set"));
        assert_eq!(b.with(|w| *w).unwrap(), 10, "refused, so nothing changed anywhere");

        // Dropping the last clone of a slot inside `with`: cleared when the
        // read is over.
        let stored = |index: usize| DATA.with(|data| data.borrow().entries[index].object.is_some());
        let c = tls.allocate_slot::<u64>().unwrap();
        let c_index = c.index;
        c.set(|_| StdArc::new(3)).unwrap();
        let held = c.get().unwrap();
        let inside = a.with(move |_| {
            drop(c);
            stored(c_index)
        });
        assert_eq!(inside, Ok(true), "not cleared while `with` was running");
        assert!(!stored(c_index), "cleared as the read ended");
        assert_eq!(*held, 3);

        // The same in a `with` whose closure panics: cleared on the next turn.
        let e = tls.allocate_slot::<u64>().unwrap();
        let e_index = e.index;
        e.set(|_| StdArc::new(4)).unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.with(move |_| {
                drop(e);
                panic!("reader panics");
            })
        }));
        assert!(panicked.is_err());
        assert!(stored(e_index), "not run while unwinding");
        let turn = StdArc::new(AtomicBool::new(false));
        let t = turn.clone();
        main.handle().post(move || t.store(true, Ordering::SeqCst)).unwrap();
        main.run_until(async {
            while !turn.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        });
        assert!(!stored(e_index), "cleared on the next turn");

        let d = tls.allocate_slot::<u64>().unwrap();
        assert_eq!(d.with(|v| *v).unwrap_err(), Error::NotSet);
        tls.shutdown_global_threading().unwrap();
        let err = a.with(|_| tls.shutdown_thread().unwrap_err());
        assert_eq!(err.unwrap(), Error::Reentrant("ThreadLocal::shutdown_thread"));
        assert_eq!(a.with(|v| *v), Ok(1), "refused, so still there");
        tls.shutdown_thread().unwrap();
        assert_eq!(a.with(|v| *v), Err(Error::ShutDown));
    }
}
