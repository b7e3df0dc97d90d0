//! The per-thread event loop and the handle other threads post through.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::AtomicU64 as IdCounter;
use std::task::{Context, Poll, Waker};

use crate::error::Error;
use crate::queue::{Batch, PostQueue, Task};
use crate::sync::{Arc, thread, thread_local};

/// Ids start at 1: 0 means "no dispatcher on this thread".
static NEXT_ID: IdCounter = IdCounter::new(1);

// `CURRENT_ID`: the id of the dispatcher bound to this thread, for
// `is_thread_safe`. `CURRENT`: that dispatcher; weak, so the thread-local
// never keeps an event loop alive after its owner dropped it.
#[cfg(not(nuncio_loom))]
thread_local! {
    static CURRENT_ID: Cell<u64> = const { Cell::new(0) };
    static CURRENT: RefCell<Weak<Core>> = const { RefCell::new(Weak::new()) };
}

#[cfg(nuncio_loom)]
thread_local! {
    static CURRENT_ID: Cell<u64> = Cell::new(0);
    static CURRENT: RefCell<Weak<Core>> = RefCell::new(Weak::new());
}

/// The part of a dispatcher other threads can reach: its post queue.
pub(crate) struct Shared {
    queue: PostQueue,
    id: u64,
    name: String,
}

impl Shared {
    fn new(name: String) -> Arc<Shared> {
        Arc::new(Shared {
            queue: PostQueue::new(),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            name,
        })
    }
}

/// A thread's event loop (Envoy's `Event::Dispatcher`).
///
/// One per thread, created on the thread it serves and never moved off it
/// (`Dispatcher` is `!Send`). It runs closures posted from any thread
/// through a [`DispatcherHandle`], local tasks ([`Dispatcher::spawn_local`]),
/// timers ([`Dispatcher::timer`]) and deferred drops. Underneath is a tokio
/// current-thread runtime and a `LocalSet`, so tokio I/O and timers work in
/// everything it runs.
///
/// Cloning is cheap (a reference count) and gives another view of the same
/// loop. Prefer [`Dispatcher::current`] over keeping a clone inside a task:
/// a task that holds its own dispatcher keeps the loop's memory alive until
/// [`Dispatcher::run`] returns.
#[derive(Clone)]
pub struct Dispatcher {
    core: Rc<Core>,
}

struct Core {
    shared: Arc<Shared>,
    /// Objects whose drop waits for the end of the current loop turn.
    deferred: RefCell<Vec<Box<dyn Any>>>,
    /// Wakes the loop so deferred objects go promptly.
    loop_waker: RefCell<Option<Waker>>,
    #[cfg(not(nuncio_loom))]
    exec: RefCell<Option<Exec>>,
    panicked_posts: Cell<u64>,
    finished: Cell<bool>,
}

#[cfg(not(nuncio_loom))]
struct Exec {
    runtime: tokio::runtime::Runtime,
    local: tokio::task::LocalSet,
}

/// A `Send + Sync + Clone` way to reach a [`Dispatcher`] from any thread.
#[derive(Clone)]
pub struct DispatcherHandle {
    shared: Arc<Shared>,
}

impl Dispatcher {
    /// Creates the dispatcher of the calling thread.
    ///
    /// Fails with [`Error::DispatcherExists`] when this thread already has a
    /// live one, and with [`Error::Runtime`] when the event loop cannot be
    /// built.
    pub fn new(name: impl Into<String>) -> Result<Dispatcher, Error> {
        let shared = Shared::new(name.into());
        #[cfg(not(nuncio_loom))]
        let runtime = build_runtime(&shared.name)?;
        Dispatcher::bind(
            shared,
            #[cfg(not(nuncio_loom))]
            runtime,
        )
    }

    /// Starts a thread named `name` with its own dispatcher and calls
    /// `body` on it (typically `|d| { d.run(); tls.shutdown_thread(); }`).
    ///
    /// The returned handle accepts posts at once, even before the thread
    /// runs; they run in order once `body` runs the loop.
    pub fn spawn<F>(name: impl Into<String>, body: F) -> Result<(DispatcherHandle, thread::JoinHandle<()>), Error>
    where
        F: FnOnce(Dispatcher) + Send + 'static,
    {
        let thread_name: String = name.into();
        #[cfg(not(nuncio_loom))]
        {
            // The dispatcher's shared part (its post queue) and its runtime
            // (I/O driver, timer wheel, task queues) are made on the new
            // thread, so they come from that thread's heap. Made here, on
            // main, they would sit in main's pages next to other workers'
            // and workers writing neighbouring lines would slow each other
            // down (false sharing); each stream's handle clone writes the
            // shared part's count. The thread hands the shared part back
            // once the runtime is built, before it runs `body`, so posts
            // are accepted as soon as this returns.
            let (built_tx, built_rx) = std::sync::mpsc::sync_channel(1);
            let name = thread_name.clone();
            let start = move || {
                let shared = Shared::new(name);
                let runtime = match build_runtime(&shared.name) {
                    Ok(runtime) => {
                        let _ = built_tx.send(Ok(shared.clone()));
                        runtime
                    }
                    Err(e) => {
                        let _ = built_tx.send(Err(e));
                        return;
                    }
                };
                let dispatcher = Dispatcher::bind(shared, runtime).expect("a fresh thread has no dispatcher yet");
                body(dispatcher);
            };
            let join = thread::Builder::new()
                .name(thread_name.clone())
                .spawn(start)
                .map_err(|e| Error::Runtime { name: thread_name.clone(), reason: e.to_string() })?;
            match built_rx.recv() {
                Ok(Ok(shared)) => Ok((DispatcherHandle { shared }, join)),
                Ok(Err(e)) => {
                    let _ = join.join();
                    Err(e)
                }
                Err(_) => {
                    let _ = join.join();
                    Err(Error::Runtime {
                        name: thread_name,
                        reason: "the thread ended before its runtime was built".into(),
                    })
                }
            }
        }
        #[cfg(nuncio_loom)]
        {
            let shared = Shared::new(thread_name);
            let handle = DispatcherHandle { shared: shared.clone() };
            let join = thread::spawn(move || {
                let dispatcher = Dispatcher::bind(shared).expect("a fresh thread has no dispatcher yet");
                body(dispatcher);
            });
            Ok((handle, join))
        }
    }

    fn bind(
        shared: Arc<Shared>,
        #[cfg(not(nuncio_loom))] runtime: tokio::runtime::Runtime,
    ) -> Result<Dispatcher, Error> {
        if let Some(existing) = Dispatcher::current() {
            return Err(Error::DispatcherExists(existing.name().to_owned()));
        }
        let core = Rc::new(Core {
            shared,
            deferred: RefCell::new(Vec::new()),
            loop_waker: RefCell::new(None),
            #[cfg(not(nuncio_loom))]
            exec: RefCell::new(Some(Exec { runtime, local: tokio::task::LocalSet::new() })),
            panicked_posts: Cell::new(0),
            finished: Cell::new(false),
        });
        CURRENT_ID.with(|id| id.set(core.shared.id));
        CURRENT.with(|current| *current.borrow_mut() = Rc::downgrade(&core));
        Ok(Dispatcher { core })
    }

    /// The dispatcher running on the calling thread, if any (and not
    /// finished).
    pub fn current() -> Option<Dispatcher> {
        CURRENT
            .with(|current| current.borrow().upgrade())
            .filter(|core| !core.finished.get())
            .map(|core| Dispatcher { core })
    }

    /// A handle other threads can post through.
    pub fn handle(&self) -> DispatcherHandle {
        DispatcherHandle { shared: self.core.shared.clone() }
    }

    /// The name given at creation (used in errors and thread names).
    pub fn name(&self) -> &str {
        &self.core.shared.name
    }

    /// Runs the event loop until a stop is requested through
    /// [`DispatcherHandle::stop`].
    ///
    /// When it returns the dispatcher is finished: posts are refused, and
    /// closures posted but not yet run, deferred objects and local tasks
    /// have been dropped **on this thread**. Call it from the thread's top
    /// level, never from inside something the loop runs.
    pub fn run(&self) {
        let _ = self.run_until(std::future::pending::<()>());
    }

    /// Runs the event loop until `until` completes (returning its output)
    /// or a stop is requested (returning `None`, and finishing the
    /// dispatcher as [`Dispatcher::run`] does). After `Some`, the
    /// dispatcher keeps its queue and tasks and can run again.
    pub fn run_until<F: Future>(&self, until: F) -> Option<F::Output> {
        if self.core.finished.get() {
            return None;
        }
        let output =
            self.block_on(EventLoop { dispatcher: self, until: pin!(until), batch: VecDeque::new(), registered: None });
        crate::clock::stop();
        if output.is_none() {
            self.core.finish();
        }
        output
    }

    #[cfg(not(nuncio_loom))]
    fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let exec = self.core.exec.borrow();
        let exec = exec.as_ref().expect("exec lives until the dispatcher finishes");
        exec.local.block_on(&exec.runtime, fut)
    }

    #[cfg(nuncio_loom)]
    fn block_on<F: Future>(&self, fut: F) -> F::Output {
        loom::future::block_on(fut)
    }

    /// Drops `object` at the end of the current loop turn, on this thread
    /// (Envoy's deferred delete): after the callback or task that called
    /// this has returned, before the loop waits for I/O again. Use it to
    /// get rid of something whose own methods are still on the stack.
    pub fn deferred_drop<T: 'static>(&self, object: T) {
        self.core.deferred.borrow_mut().push(Box::new(object));
        if let Some(waker) = self.core.loop_waker.borrow().as_ref() {
            waker.wake_by_ref();
        }
    }

    /// How many posted closures panicked. The dispatcher catches such a
    /// panic, counts it and goes on with the next closure.
    pub fn panicked_posts(&self) -> u64 {
        self.core.panicked_posts.get()
    }

    fn run_task(&self, task: Task) {
        if catch_unwind(AssertUnwindSafe(|| task(self))).is_err() {
            self.core.panicked_posts.set(self.core.panicked_posts.get() + 1);
        }
    }
}

#[cfg(not(nuncio_loom))]
impl Dispatcher {
    /// Spawns a `!Send` task on this dispatcher's thread. It starts running
    /// once the loop runs; fails with [`Error::Stopped`] once the dispatcher
    /// has finished.
    pub fn spawn_local<F>(&self, future: F) -> Result<tokio::task::JoinHandle<F::Output>, Error>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let exec = self.core.exec.borrow();
        match exec.as_ref() {
            Some(exec) => Ok(exec.local.spawn_local(future)),
            None => Err(Error::Stopped(self.name().to_owned())),
        }
    }

    /// Calls `callback` on this thread once `delay` has passed, unless the
    /// returned [`Timer`] is cancelled or dropped first.
    pub fn timer<F>(&self, delay: std::time::Duration, callback: F) -> Result<Timer, Error>
    where
        F: FnOnce() + 'static,
    {
        let task = self.spawn_local(async move {
            tokio::time::sleep(delay).await;
            callback();
        })?;
        Ok(Timer { task: task.abort_handle() })
    }
}

/// A pending timer callback; dropping it cancels the callback.
#[cfg(not(nuncio_loom))]
#[derive(Debug)]
pub struct Timer {
    task: tokio::task::AbortHandle,
}

#[cfg(not(nuncio_loom))]
impl Timer {
    /// Cancels the callback if it has not run yet.
    pub fn cancel(self) {}

    /// Whether the callback has neither run nor been cancelled.
    pub fn is_pending(&self) -> bool {
        !self.task.is_finished()
    }
}

#[cfg(not(nuncio_loom))]
impl Drop for Timer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher").field("name", &self.name()).finish_non_exhaustive()
    }
}

impl Core {
    /// Drops everything the loop still owns, on this thread. Idempotent.
    fn finish(&self) {
        if self.finished.replace(true) {
            return;
        }
        // Posted closures first: their destructors may post elsewhere (a
        // completion guard does) or defer objects here.
        drop(self.shared.queue.close());
        self.drop_deferred();
        #[cfg(not(nuncio_loom))]
        {
            // Taken out before it is dropped, so a task destructor that
            // tries to spawn sees a finished dispatcher instead of a
            // borrowed RefCell.
            let exec = self.exec.borrow_mut().take();
            drop(exec);
        }
        self.loop_waker.borrow_mut().take();
        self.drop_deferred();
    }

    fn drop_deferred(&self) {
        loop {
            let objects = std::mem::take(&mut *self.deferred.borrow_mut());
            if objects.is_empty() {
                return;
            }
            drop(objects);
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.finish();
        // `try_with`: this may run while the thread's locals are torn down.
        let _ = CURRENT_ID.try_with(|id| {
            if id.get() == self.shared.id {
                id.set(0);
            }
        });
    }
}

/// Runs posted closures, clears deferred objects, and polls the caller's
/// future; `Ready(None)` on a stop request.
struct EventLoop<'a, F> {
    dispatcher: &'a Dispatcher,
    until: std::pin::Pin<&'a mut F>,
    batch: VecDeque<Task>,
    /// The waker the post queue holds for this loop, while it holds one
    /// (see [`PostQueue::poll_batch`]).
    registered: Option<Waker>,
}

impl<F: Future> Future for EventLoop<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let core = &this.dispatcher.core;
        // A turn begins: what it runs reads the time from here.
        crate::clock::turn();
        {
            let mut waker = core.loop_waker.borrow_mut();
            match waker.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        core.drop_deferred();
        match core.shared.queue.poll_batch(cx, &mut this.batch, &mut this.registered) {
            Poll::Ready(Batch::Stopped) => return Poll::Ready(None),
            Poll::Ready(Batch::Ready) => {
                while let Some(task) = this.batch.pop_front() {
                    if core.shared.queue.stop_requested() {
                        // Stop means stop: the rest of the batch is dropped
                        // here, like anything still queued.
                        this.batch.clear();
                        drop(task);
                        return Poll::Ready(None);
                    }
                    this.dispatcher.run_task(task);
                }
                core.drop_deferred();
                // Give I/O and local tasks a turn before the next batch.
                cx.waker().wake_by_ref();
            }
            Poll::Pending => {}
        }
        if let Poll::Ready(output) = this.until.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        Poll::Pending
    }
}

impl DispatcherHandle {
    /// Runs `f` on the dispatcher's thread.
    ///
    /// Closures from one poster run in the order they were posted. Never
    /// blocks and never panics: after a stop request it returns
    /// [`Error::Stopped`], having dropped `f` on the calling thread. A
    /// closure accepted but not yet run when the dispatcher stops is
    /// dropped on the dispatcher's thread when `run` returns.
    ///
    /// Safe to call from any thread, including the dispatcher's own.
    pub fn post<F>(&self, f: F) -> Result<(), Error>
    where
        F: FnOnce() + Send + 'static,
    {
        self.post_task(Box::new(move |_: &Dispatcher| f()))
    }

    /// Like [`DispatcherHandle::post`], with access to the dispatcher the
    /// closure runs on.
    pub fn post_with<F>(&self, f: F) -> Result<(), Error>
    where
        F: FnOnce(&Dispatcher) + Send + 'static,
    {
        self.post_task(Box::new(f))
    }

    pub(crate) fn post_task(&self, task: Task) -> Result<(), Error> {
        match self.shared.queue.push(task) {
            Ok(()) => Ok(()),
            Err(refused) => {
                // Dropped here, on the posting thread, outside any lock.
                drop(refused);
                Err(Error::Stopped(self.shared.name.clone()))
            }
        }
    }

    /// Asks the dispatcher to stop: `run` returns at its next turn. Posts
    /// are refused from now on. Safe from any thread; idempotent.
    pub fn stop(&self) {
        self.shared.queue.request_stop();
    }

    /// Whether the dispatcher has stopped or been asked to stop.
    pub fn is_stopped(&self) -> bool {
        self.shared.queue.is_closed()
    }

    /// Whether the calling thread is this dispatcher's thread.
    pub fn is_thread_safe(&self) -> bool {
        CURRENT_ID.with(|id| id.get() == self.shared.id)
    }

    /// The handle of the dispatcher running on the calling thread, if any.
    pub fn current() -> Option<DispatcherHandle> {
        Dispatcher::current().map(|d| d.handle())
    }

    /// The dispatcher's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether both handles reach the same dispatcher.
    pub fn same_dispatcher(&self, other: &DispatcherHandle) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl fmt::Debug for DispatcherHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatcherHandle").field("name", &self.shared.name).finish_non_exhaustive()
    }
}

#[cfg(not(nuncio_loom))]
fn build_runtime(name: &str) -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime { name: name.to_owned(), reason: e.to_string() })
}
