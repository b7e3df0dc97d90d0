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
    /// Our slot in the scope's waiters, once registered.
    key: Option<usize>,
    /// Polling arms the deadline timer (`false` for
    /// [`Context::done_unless_deadline`](crate::Context::done_unless_deadline)).
    arm_timer: bool,
}

impl Done {
    pub(crate) fn new(scope: Option<Arc<Scope>>, arm_timer: bool) -> Done {
        Done { scope, key: None, arm_timer }
    }
}

impl Future for Done {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        match &this.scope {
            Some(scope) if Scope::poll_done(scope, &mut this.key, cx.waker(), this.arm_timer) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if let (Some(scope), Some(key)) = (&self.scope, self.key) {
            scope.remove_waiter(key);
        }
    }
}

impl fmt::Debug for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Done")
            .field("err", &self.scope.as_ref().and_then(|s| s.peek_err()))
            .field("registered", &self.key.is_some())
            .finish()
    }
}
