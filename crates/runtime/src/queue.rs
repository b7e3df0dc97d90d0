//! The post queue: the one way work reaches a dispatcher from another thread.
//!
//! Posters push boxed closures under a short lock and wake the dispatcher;
//! the dispatcher swaps the whole queue out in one lock and runs the batch
//! with no lock held. No closure is ever dropped or run while the lock is
//! held: a closure's destructor may itself post (a completion guard does),
//! possibly to this very queue.
//!
//! The dispatcher looks at the queue each time its loop is polled, which is
//! many times per request. That look takes no lock and writes nothing while
//! nothing was posted (a flag posters set), so a worker does not write the
//! queue's line, which main allocated beside other workers' data, on every
//! turn of its loop.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use crate::dispatcher::Dispatcher;
use crate::sync::{AtomicBool, Mutex, lock};
use std::sync::atomic::Ordering;

/// A unit of posted work. It receives the dispatcher it runs on.
pub(crate) type Task = Box<dyn FnOnce(&Dispatcher) + Send + 'static>;

/// What [`PostQueue::poll_batch`] found.
pub(crate) enum Batch {
    /// Tasks were moved into the caller's buffer.
    Ready,
    /// A stop was requested: the queue is now closed.
    Stopped,
}

pub(crate) struct PostQueue {
    state: Mutex<State>,
    /// Mirrors `State::stop_requested` so the dispatcher can check it
    /// between two closures of a batch without taking the lock.
    stopping: AtomicBool,
    /// Set (under the lock) by every push and stop request, cleared (under
    /// the lock) by the dispatcher when it takes the lock: while it is
    /// clear, nothing changed since the dispatcher last looked and
    /// registered its waker.
    signal: AtomicBool,
}

struct State {
    tasks: VecDeque<Task>,
    /// Set once by a stop request; from then on `push` refuses.
    closed: bool,
    stop_requested: bool,
    /// The dispatcher's waker, present while it waits for work.
    waker: Option<Waker>,
}

impl PostQueue {
    pub(crate) fn new() -> Self {
        PostQueue {
            state: Mutex::new(State { tasks: VecDeque::new(), closed: false, stop_requested: false, waker: None }),
            stopping: AtomicBool::new(false),
            signal: AtomicBool::new(false),
        }
    }

    /// Appends `task`, or hands it back when the queue is closed so the
    /// caller drops it outside the lock, on its own thread.
    pub(crate) fn push(&self, task: Task) -> Result<(), Task> {
        let waker = {
            let mut state = lock(&self.state);
            if state.closed || state.stop_requested {
                return Err(task);
            }
            state.tasks.push_back(task);
            self.signal.store(true, Ordering::Release);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Asks the dispatcher to stop. Pushes are refused from now on.
    pub(crate) fn request_stop(&self) {
        let waker = {
            let mut state = lock(&self.state);
            state.stop_requested = true;
            self.stopping.store(true, Ordering::Release);
            self.signal.store(true, Ordering::Release);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Moves every queued task into `batch` (which must be empty), reports a
    /// stop, or registers the waker and returns `Pending`. A stop wins over
    /// queued tasks: they are left for [`PostQueue::close`] to hand back.
    ///
    /// `registered` is the caller's record of the waker the queue holds for
    /// it. When that waker is still the current one and nothing was pushed
    /// since (the signal is clear), the answer is `Pending` without the
    /// lock: a push after the check sets the signal and wakes that waker.
    pub(crate) fn poll_batch(
        &self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<Task>,
        registered: &mut Option<Waker>,
    ) -> Poll<Batch> {
        debug_assert!(batch.is_empty());
        if registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) && !self.signal.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // A push may take the queue's waker from here on: the record is
        // renewed below only when this call registers one.
        *registered = None;
        let mut state = lock(&self.state);
        self.signal.store(false, Ordering::Relaxed);
        if state.stop_requested {
            state.closed = true;
            return Poll::Ready(Batch::Stopped);
        }
        if !state.tasks.is_empty() {
            std::mem::swap(&mut state.tasks, batch);
            return Poll::Ready(Batch::Ready);
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        *registered = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Closes the queue for good and returns what was still queued, for the
    /// caller to drop outside the lock.
    pub(crate) fn close(&self) -> VecDeque<Task> {
        let mut state = lock(&self.state);
        state.closed = true;
        state.stop_requested = true;
        state.waker = None;
        std::mem::take(&mut state.tasks)
    }

    /// Whether a stop was requested; lock-free, for the run loop.
    pub(crate) fn stop_requested(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn is_closed(&self) -> bool {
        let state = lock(&self.state);
        state.closed || state.stop_requested
    }
}
