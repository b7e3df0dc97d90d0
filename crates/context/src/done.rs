//! The [`Done`] future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use crate::{scope::Scope, sync::Arc};

/// Resolves when its context is done: cancelled, or past its deadline.
///
/// Returned by [`Context::done`](crate::Context::done). It owns what it needs
/// (no borrow of the context), is `Unpin` and cancel-safe: dropping it before
/// it resolves just forgets its waker. It resolves at once if the context is
/// already done, and never if the context can never be done
/// ([`Context::background`](crate::Context::background),
/// [`Context::without_cancel`](crate::Context::without_cancel)).
///
/// Polling it on a context with a deadline arms that deadline's timer, a task
/// on the current tokio runtime. Polled outside any tokio runtime, it still
/// resolves on cancellation, and when polled after the deadline has passed,
/// but nothing wakes it at the deadline.
///
/// Safe to poll from any thread.
#[must_use = "futures do nothing unless polled"]
pub struct Done {
    scope: Option<Arc<Scope>>,
    /// Our slot in the scope's waiters, once registered ([`UNREGISTERED`]
    /// before). 32 bits, so that a `Done` is two words: connections keep
    /// one for their whole life, idle ones included.
    key: u32,
    /// Polling arms the deadline timer (`false` for
    /// [`Context::done_unless_deadline`](crate::Context::done_unless_deadline)).
    arm_timer: bool,
}

/// [`Done::key`] before registration.
const UNREGISTERED: u32 = u32::MAX;

impl Done {
    pub(crate) fn new(scope: Option<Arc<Scope>>, arm_timer: bool) -> Done {
        Done { scope, key: UNREGISTERED, arm_timer }
    }

    fn key(&self) -> Option<usize> {
        (self.key != UNREGISTERED).then_some(self.key as usize)
    }

    /// Whether its context is done already, checked without waiting or
    /// registering (as [`Context::is_done`](crate::Context::is_done)): a
    /// holder that keeps only the `Done` of a context can still ask.
    #[inline]
    pub fn is_done(&self) -> bool {
        self.scope.as_deref().is_some_and(|scope| scope.err().is_some())
    }
}

impl Future for Done {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(scope) = &this.scope else { return Poll::Pending };
        let mut key = this.key();
        let done = Scope::poll_done(scope, &mut key, cx.waker(), this.arm_timer);
        // A scope's waiters are counted in memory (each takes a slot of
        // the scope's registry): four billion of them cannot exist.
        this.key = key.map_or(UNREGISTERED, |k| {
            u32::try_from(k).ok().filter(|&k| k != UNREGISTERED).expect("fewer than 2^32 - 1 waiters on a context")
        });
        if done { Poll::Ready(()) } else { Poll::Pending }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if let (Some(scope), Some(key)) = (&self.scope, self.key()) {
            scope.remove_waiter(key);
        }
    }
}

impl fmt::Debug for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Done")
            .field("err", &self.scope.as_ref().and_then(|s| s.peek_err()))
            .field("registered", &self.key().is_some())
            .finish()
    }
}
