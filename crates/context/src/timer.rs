//! The deadline timer: a tokio task sleeping until the deadline, armed only
//! when someone waits (`done()` polled, or `after_func` registered).

#[cfg(not(nuncio_loom))]
mod imp {
    use std::sync::{Arc, Weak};

    use crate::{Cause, Error, Instant, scope::Scope};

    pub(crate) type TimerHandle = tokio::task::AbortHandle;

    /// Spawns a task on the current tokio runtime that cancels `scope` with
    /// `DeadlineExceeded` at `deadline`. `None` without a current runtime.
    pub(crate) fn spawn(scope: &Arc<Scope>, deadline: Instant) -> Option<TimerHandle> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        // Weak: the timer must not keep a forgotten scope alive until the
        // deadline; cancelling the scope aborts the task anyway.
        let scope: Weak<Scope> = Arc::downgrade(scope);
        let task = runtime.spawn(async move {
            tokio::time::sleep_until(deadline).await;
            if let Some(scope) = scope.upgrade() {
                scope.cancel(Error::DeadlineExceeded, Cause::DEADLINE_EXCEEDED);
            }
        });
        Some(task.abort_handle())
    }
}

/// Under loom there is no runtime and no timer: deadlines are only seen by
/// `err()` and `done()` polls.
#[cfg(nuncio_loom)]
mod imp {
    use crate::{Instant, scope::Scope, sync::Arc};

    pub(crate) struct TimerHandle;

    impl TimerHandle {
        pub(crate) fn abort(&self) {}
    }

    pub(crate) fn spawn(_scope: &Arc<Scope>, _deadline: Instant) -> Option<TimerHandle> {
        None
    }
}

pub(crate) use imp::{TimerHandle, spawn};
