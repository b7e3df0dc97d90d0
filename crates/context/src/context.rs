//! [`Context`], [`CancelHandle`] and [`AfterFunc`].

use std::{any::Any, fmt, time::Duration};

use crate::{Cause, Done, Error, Instant, scope::Scope, sync::Arc, values::Values};

/// A request-scoped context: a cancellation signal with a cause, an optional
/// deadline, and typed values.
///
/// Immutable and cheap to clone (two reference counts at most); deriving
/// makes a child. `Send + Sync`: every method may be called from any thread.
/// See the [crate docs](crate) for how nuncio uses it.
#[derive(Clone, Default)]
pub struct Context {
    /// `None`: never done (background, `without_cancel`).
    scope: Option<Arc<Scope>>,
    values: Values,
}

impl Context {
    /// The root context: never cancelled, no deadline, no values.
    /// Allocates nothing.
    pub const fn background() -> Context {
        Context { scope: None, values: Values::EMPTY }
    }

    /// A child that is done when `cancel` is called on the returned handle,
    /// when the handle is dropped, or when `self` is done, whichever comes
    /// first. It keeps `self`'s values and deadline.
    ///
    /// Keep the handle alive as long as the child should live:
    /// `let (ctx, _) = parent.with_cancel();` drops it, and so cancels `ctx`,
    /// at once (`let (ctx, _cancel) = …` keeps it to the end of the block).
    #[must_use = "dropping the CancelHandle cancels the context at once"]
    pub fn with_cancel(&self) -> (Context, CancelHandle) {
        self.derive(None)
    }

    /// Like [`with_cancel`](Self::with_cancel), and also done with
    /// [`Error::DeadlineExceeded`] at `deadline`, or at `self`'s deadline if
    /// that comes first: a child's deadline is never later than its parent's.
    ///
    /// Accepts a [`tokio::time::Instant`] or a [`std::time::Instant`]. No
    /// timer is armed until someone polls [`done`](Self::done) or registers
    /// an [`after_func`](Self::after_func); [`err`](Self::err) reads the clock.
    #[must_use = "dropping the CancelHandle cancels the context at once"]
    pub fn with_deadline(&self, deadline: impl Into<Instant>) -> (Context, CancelHandle) {
        self.derive(Some(deadline.into()))
    }

    /// [`with_deadline`](Self::with_deadline) at now + `timeout` (tokio's
    /// clock, so a paused test clock applies). A timeout too large to
    /// represent means no deadline of its own.
    #[must_use = "dropping the CancelHandle cancels the context at once"]
    pub fn with_timeout(&self, timeout: Duration) -> (Context, CancelHandle) {
        self.derive(Instant::now().checked_add(timeout))
    }

    fn derive(&self, deadline: Option<Instant>) -> (Context, CancelHandle) {
        let scope = Scope::derive(self.scope.as_ref(), deadline);
        let ctx = Context { scope: Some(scope), values: self.values.clone() };
        (ctx.clone(), CancelHandle { ctx })
    }

    /// A context that shares `self`'s cancellation and deadline and adds (or,
    /// for a type already set, replaces) a value of type `T`.
    ///
    /// Use a type of your own (`struct RequestId(u64)`) as the key. Deriving
    /// copies the list of values, so keep them few (a handful) and put
    /// bulky data behind one type.
    #[must_use]
    pub fn with_value<T: Any + Send + Sync>(&self, value: T) -> Context {
        Context { scope: self.scope.clone(), values: self.values.with(value) }
    }

    /// The value of type `T` set on this context or an ancestor (the
    /// nearest one wins). Costs one pointer hop plus a scan of the few
    /// values set, whatever the depth of the context.
    #[inline]
    pub fn value<T: Any>(&self) -> Option<&T> {
        self.values.get()
    }

    /// A context with `self`'s values that is never done and has no
    /// deadline, for work that must outlive the request (Go's
    /// `WithoutCancel`).
    #[must_use]
    pub fn without_cancel(&self) -> Context {
        Context { scope: None, values: self.values.clone() }
    }

    /// A future that resolves when this context is done. See [`Done`] for
    /// when its deadline timer is armed.
    pub fn done(&self) -> Done {
        Done::new(self.scope.clone(), true)
    }

    /// Like [`done`](Self::done), but polling it arms no deadline timer: it
    /// resolves on cancellation (through a handle, an ancestor's, or a
    /// deadline whose timer something else armed) and when polled after the
    /// deadline, but nothing wakes it *at* the deadline.
    ///
    /// For a caller that waits on the deadline itself, with a
    /// `tokio::time::Sleep` until [`deadline`](Self::deadline) beside it:
    /// that costs one timer entry where `done()` spawns a timer task, which
    /// matters on a per-request path.
    pub fn done_unless_deadline(&self) -> Done {
        Done::new(self.scope.clone(), false)
    }

    /// `None` while the context is live, else why it is done.
    ///
    /// One atomic load, plus a clock read if the context has a deadline:
    /// past the deadline this reports [`Error::DeadlineExceeded`] even if no
    /// timer fired (and marks the context done right there, so its children,
    /// waiters and `after_func` callbacks see it too).
    #[inline]
    pub fn err(&self) -> Option<Error> {
        self.scope.as_deref()?.err()
    }

    /// Whether the context is done (`err().is_some()`).
    #[inline]
    pub fn is_done(&self) -> bool {
        self.err().is_some()
    }

    /// `None` while the context is live, else the [`Cause`] of its
    /// cancellation (see there for the defaults). Takes a lock.
    pub fn cause(&self) -> Option<Cause> {
        self.scope.as_deref()?.cause()
    }

    /// When the context will be done by itself, if ever.
    #[inline]
    pub fn deadline(&self) -> Option<Instant> {
        self.scope.as_deref()?.deadline()
    }

    /// Arranges for `f` to run once when this context is done.
    ///
    /// `f` runs on the thread that makes the context done: the one calling
    /// [`CancelHandle::cancel`] (or dropping the handle) on it or an
    /// ancestor, the deadline timer task, or a thread whose call to
    /// [`err`](Self::err) (or poll of [`done`](Self::done)) notices the
    /// deadline has passed. Keep `f` short, non-blocking and panic-free;
    /// post real work elsewhere (a channel, `tokio::spawn`). If the context
    /// is already done, `f` runs now on the calling thread. If it can never be done (no cancellation
    /// in its ancestry), `f` is dropped and never runs.
    ///
    /// On a context with a deadline this arms the deadline timer (a task on
    /// the current tokio runtime, if any; see [`Done`]).
    ///
    /// Dropping the returned handle leaves `f` registered; call
    /// [`AfterFunc::stop`] to unregister it.
    pub fn after_func<F: FnOnce() + Send + 'static>(&self, f: F) -> AfterFunc {
        let Some(scope) = &self.scope else {
            return AfterFunc(AfterState::Never);
        };
        if scope.err().is_some() {
            f();
            return AfterFunc(AfterState::Ran);
        }
        match Scope::add_after_func(scope, Box::new(f)) {
            Some(key) => AfterFunc(AfterState::Registered { scope: Arc::clone(scope), key }),
            None => AfterFunc(AfterState::Ran),
        }
    }

    #[cfg(test)]
    pub(crate) fn scope(&self) -> Option<&Arc<Scope>> {
        self.scope.as_ref()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = self.scope.as_deref();
        f.debug_struct("Context")
            .field("err", &scope.and_then(Scope::peek_err))
            .field("deadline", &self.deadline())
            .field("values", &self.values.len())
            .finish()
    }
}

/// Cancels the context it came with, and through it every descendant.
///
/// Returned by [`Context::with_cancel`], [`Context::with_deadline`] and
/// [`Context::with_timeout`]. Dropping it cancels the context too (cause
/// [`HandleDropped`](crate::HandleDropped)) and unlinks it from its parent,
/// so a forgotten child never lingers in its parent. Cancelling a done
/// context does nothing. May be used from any thread.
#[must_use = "dropping a CancelHandle cancels its context at once"]
pub struct CancelHandle {
    /// The context it cancels: always one with a scope (made by
    /// [`Context::derive`]).
    ctx: Context,
}

impl CancelHandle {
    fn scope(&self) -> &Scope {
        self.ctx.scope.as_deref().expect("a cancel handle's context always has a scope")
    }

    /// Cancels the context with [`Error::Canceled`]; its cause is
    /// [`Error::Canceled`] too. Descendants get the same error and cause;
    /// `after_func` callbacks run on this thread before this returns.
    pub fn cancel(&self) {
        self.scope().cancel(Error::Canceled, Cause::CANCELED);
    }

    /// Cancels the context with [`Error::Canceled`] and `cause`, which
    /// descendants carry too.
    pub fn cancel_with_cause(&self, cause: Cause) {
        self.scope().cancel(Error::Canceled, cause);
    }

    /// The context this handle cancels.
    pub fn context(&self) -> Context {
        self.ctx.clone()
    }

    /// The context this handle cancels, lent: whoever keeps the handle for
    /// the context's whole life needs no copy of the context beside it.
    pub fn as_context(&self) -> &Context {
        &self.ctx
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.scope().cancel(Error::Canceled, Cause::HANDLE_DROPPED);
    }
}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelHandle").field("err", &self.scope().peek_err()).finish()
    }
}

/// The registration of an [`Context::after_func`] callback.
///
/// Dropping it leaves the callback registered.
#[derive(Debug)]
pub struct AfterFunc(AfterState);

enum AfterState {
    /// The context can never be done: `f` was dropped.
    Never,
    /// `f` already ran (the context was done at registration).
    Ran,
    Registered {
        scope: Arc<Scope>,
        key: usize,
    },
}

impl fmt::Debug for AfterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AfterState::Never => "Never",
            AfterState::Ran => "Ran",
            AfterState::Registered { .. } => "Registered",
        })
    }
}

impl AfterFunc {
    /// Unregisters the callback. Returns true if that prevented it from
    /// running: then it never runs. Returns false if it has already run or
    /// started, or is about to on another thread (the context was done
    /// first).
    pub fn stop(self) -> bool {
        match self.0 {
            AfterState::Never => true,
            AfterState::Ran => false,
            AfterState::Registered { scope, key } => scope.remove_after_func(key),
        }
    }
}
