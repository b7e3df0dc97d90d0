//! The worker side of [`StreamHandle`]: a stream's [`Mailbox`] and the
//! worker-thread registry posted operations find it through.
//!
//! The design as a whole is written down in `handle.rs`'s module docs.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::rc::{Rc, Weak};
use std::task::{Context as TaskContext, Poll, Waker};

use nuncio_context::Context;
use nuncio_runtime::DispatcherHandle;
use slab::Slab;

use crate::handle::{StreamHandle, StreamOps};
use crate::sync::{Arc, AtomicBool, Ordering, thread_local};

/// An operation posted through a [`StreamHandle`], waiting for a safe point.
/// It carries its own reply channel: running it answers the caller, and
/// dropping it unrun answers [`Error::StreamGone`](crate::Error::StreamGone).
/// Built only by [`StreamHandle::call`], which catches a panic of the
/// caller's closure, so running one never unwinds into the worker.
pub(crate) type Op = Box<dyn FnOnce(&mut dyn StreamOps) + Send>;

/// Where a stream's mailbox sits in its worker's registry: the slot, and the
/// stream id that was put there (a slot is reused; an id never is, so an op
/// for an old stream never lands in a new one).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key {
    index: usize,
    id: u64,
}

/// What a stream's handles share: the worker to post to, the key to find
/// the mailbox there, and the alive flag.
pub(crate) struct Link {
    pub(crate) dispatcher: DispatcherHandle,
    pub(crate) key: Key,
    /// Cleared once, by the worker, when the mailbox closes. Handles read it
    /// before posting so calls on a gone stream fail at once; correctness
    /// does not rest on it (the worker-side registry lookup decides).
    alive: AtomicBool,
}

impl Link {
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

/// One stream's registry entry: a weak pointer, so the registry never keeps
/// a stream alive.
struct Entry {
    id: u64,
    mailbox: Weak<Mailbox>,
}

/// The mailboxes of the streams on this thread.
struct Registry {
    streams: Slab<Entry>,
    /// The last stream id handed out on this thread.
    last_id: u64,
}

impl Registry {
    fn lookup(&self, key: Key) -> Option<Rc<Mailbox>> {
        self.streams.get(key.index).filter(|entry| entry.id == key.id).and_then(|entry| entry.mailbox.upgrade())
    }

    fn remove(&mut self, key: Key) -> Option<Entry> {
        match self.streams.get(key.index) {
            Some(entry) if entry.id == key.id => Some(self.streams.remove(key.index)),
            _ => None,
        }
    }
}

#[cfg(not(nuncio_loom))]
thread_local! {
    static REGISTRY: RefCell<Registry> = const { RefCell::new(Registry { streams: Slab::new(), last_id: 0 }) };
}

#[cfg(nuncio_loom)]
thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry { streams: Slab::new(), last_id: 0 });
}

/// A stream's mailbox, on its worker: where operations posted through the
/// stream's [`StreamHandle`]s wait until the filter manager applies them.
///
/// The filter manager creates one per stream, on the stream's worker, with
/// [`Mailbox::new`], and keeps the `Rc`. It applies what is queued only at
/// safe points, never while a hook runs (a hook owns what it was given):
///
/// * after each hook returns: [`Mailbox::drain`];
/// * while the stream waits (stopped at a filter, or waiting for the
///   upstream): `mailbox.ready().await` (cancel-safe, so it can sit in a
///   `select!` with the stream's other events), then [`Mailbox::drain`].
///   Handle calls are answered only at these points: a stream that never
///   drains leaves its callers waiting until it ends.
///
/// When the stream ends the manager calls [`Mailbox::close`] or drops the
/// mailbox: from then on every handle call fails with
/// [`Error::StreamGone`](crate::Error::StreamGone) without posting, and
/// operations still queued or in flight are dropped unrun, which answers
/// their callers `StreamGone`.
///
/// `!Send`: it lives and dies on its worker, and touches nothing but that
/// thread's data and one atomic flag (no lock).
///
/// ```
/// use nuncio_filter::{Mailbox, StreamOps};
///
/// /// The manager's loop while the stream is stopped at a filter (a real
/// /// one also selects on the stream's other events, and stops waiting once
/// /// an operation resumed the chain).
/// async fn while_stopped(mailbox: &Mailbox, ops: &mut dyn StreamOps) {
///     while !mailbox.is_closed() {
///         mailbox.ready().await;
///         mailbox.drain(ops);
///     }
/// }
/// ```
pub struct Mailbox {
    link: Arc<Link>,
    context: Context,
    queue: RefCell<VecDeque<Op>>,
    /// The task waiting in [`Mailbox::ready`] (one waiter: the manager).
    waker: Cell<Option<Waker>>,
    /// The registry is per thread: a mailbox never moves.
    _not_send: PhantomData<Rc<()>>,
}

impl Mailbox {
    /// Creates the mailbox of a new stream on the calling thread's worker,
    /// and the first [`StreamHandle`] to it (clone it, or get more with
    /// [`Mailbox::handle`]). `context` is the stream's context, which the
    /// handles hand out; cancelling it is the proxy's business.
    ///
    /// # Panics
    ///
    /// When the calling thread runs no [`nuncio_runtime::Dispatcher`]: a
    /// mailbox belongs to a worker, which handles post to. (Tests make one
    /// with `Dispatcher::new` or `Dispatcher::spawn`.)
    pub fn new(context: Context) -> (Rc<Mailbox>, StreamHandle) {
        let dispatcher = DispatcherHandle::current().expect(
            "nuncio_filter::Mailbox::new must run on a worker: no nuncio_runtime::Dispatcher is current on this thread",
        );
        let mailbox = REGISTRY.with(|registry| {
            let mut registry = registry.borrow_mut();
            registry.last_id += 1;
            let key = Key { index: registry.streams.vacant_key(), id: registry.last_id };
            let mailbox = Rc::new(Mailbox {
                link: Arc::new(Link { dispatcher, key, alive: AtomicBool::new(true) }),
                context,
                queue: RefCell::new(VecDeque::new()),
                waker: Cell::new(None),
                _not_send: PhantomData,
            });
            registry.streams.insert(Entry { id: key.id, mailbox: Rc::downgrade(&mailbox) });
            mailbox
        });
        let handle = mailbox.handle();
        (mailbox, handle)
    }

    /// Another handle to this stream (they are also `Clone`).
    pub fn handle(&self) -> StreamHandle {
        StreamHandle::new(self.context.clone(), self.link.clone())
    }

    /// Applies every queued operation to `ops`, in arrival order (the order
    /// of posting, per posting thread), and returns how many ran. Call it
    /// at a safe point, never from inside a hook or an operation. An
    /// operation may close the mailbox (a local reply that ends the
    /// stream): draining stops there and the rest is dropped.
    pub fn drain(&self, ops: &mut dyn StreamOps) -> usize {
        let mut applied = 0;
        while self.is_alive() {
            // The borrow ends before the op runs: it may close the mailbox.
            let Some(op) = self.queue.borrow_mut().pop_front() else {
                break;
            };
            op(ops);
            applied += 1;
        }
        applied
    }

    /// Resolves when an operation is queued or the mailbox is closed;
    /// cancel-safe (dropping it loses nothing). One waiter at a time: the
    /// stream's manager.
    pub async fn ready(&self) {
        poll_fn(|cx| self.poll_ready(cx)).await;
    }

    /// [`Mailbox::ready`] as a poll function, for a manager that writes its
    /// own future.
    pub fn poll_ready(&self, cx: &mut TaskContext<'_>) -> Poll<()> {
        if !self.is_alive() || !self.queue.borrow().is_empty() {
            return Poll::Ready(());
        }
        let waker = match self.waker.take() {
            Some(waker) if waker.will_wake(cx.waker()) => waker,
            _ => cx.waker().clone(),
        };
        self.waker.set(Some(waker));
        Poll::Pending
    }

    /// Ends the stream for its handles: calls fail with `StreamGone` from
    /// now on, queued operations are dropped unrun (answering `StreamGone`)
    /// and a pending [`Mailbox::ready`] resolves. Idempotent; dropping the
    /// mailbox does the same.
    pub fn close(&self) {
        if !self.is_alive() {
            return;
        }
        self.link.alive.store(false, Ordering::Release);
        // `try_with`: the mailbox may be dropped while the thread's locals
        // are torn down; the registry then goes with them anyway.
        let entry = REGISTRY.try_with(|registry| registry.borrow_mut().remove(self.link.key)).ok().flatten();
        // Dropped outside every borrow: an op's destructor is the caller's
        // code.
        drop(entry);
        let queued = std::mem::take(&mut *self.queue.borrow_mut());
        drop(queued);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Whether no operation waits to be applied (one posted from another
    /// thread counts once its post has run on this worker).
    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// Whether [`Mailbox::close`] has run.
    pub fn is_closed(&self) -> bool {
        !self.is_alive()
    }

    /// The stream's context, as given to [`Mailbox::new`].
    pub fn context(&self) -> &Context {
        &self.context
    }

    fn is_alive(&self) -> bool {
        // Only this thread writes the flag.
        self.link.alive.load(Ordering::Relaxed)
    }

    fn push(&self, op: Op) {
        if !self.is_alive() {
            return;
        }
        self.queue.borrow_mut().push_back(op);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("key", &self.link.key)
            .field("closed", &self.is_closed())
            .field("queued", &self.queue.try_borrow().map(|q| q.len()).ok())
            .finish_non_exhaustive()
    }
}

/// Runs on the stream's worker, in the closure a handle posted: queues `op`
/// in the stream's mailbox and wakes its manager, or drops `op` (answering
/// `StreamGone`) when that stream is gone.
pub(crate) fn deliver(key: Key, op: Op) {
    let mailbox = REGISTRY.try_with(|registry| registry.borrow().lookup(key)).ok().flatten();
    if let Some(mailbox) = mailbox {
        mailbox.push(op);
    }
}

/// How many mailboxes are open on the calling thread (for tests: 0 once
/// every stream of a worker has ended).
#[doc(hidden)]
pub fn live_mailboxes() -> usize {
    REGISTRY.try_with(|registry| registry.borrow().streams.len()).unwrap_or(0)
}
