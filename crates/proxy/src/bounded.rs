//! Futures bounded by a [`Context`] ([`under`]), an optional timeout
//! ([`within`]) or an optional deadline ([`until`]).
//!
//! Written as structs rather than `async fn` wrappers on purpose: an
//! `async fn` that takes a future and awaits it stores that future twice
//! in its own state (once as the argument, once as the value being
//! awaited; rust-lang/rust#62958). A stream's future nests several of these
//! around the upstream request, and every copy made the per-request future
//! larger and its moves slower (docs/benchmarks.md, "Optimization pass").

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use nuncio_context::{Context, Done};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::timers::{self, KeptSleep};

pin_project! {
    /// See [`under`].
    #[must_use = "futures do nothing unless awaited"]
    pub(crate) struct Under<'c, F> {
        #[pin]
        fut: F,
        ctx: &'c Context,
        // Both set up once `fut` first has to wait.
        done: Option<Done>,
        // A kept entry (`timers`): an upstream try arms one each.
        #[pin]
        deadline: Option<KeptSleep>,
    }
}

/// Runs `fut` until it finishes or `ctx` is done, whichever comes first
/// (`fut` is polled first: a result that is ready wins over a cancel).
///
/// The context's deadline is watched with a timer entry of this future's
/// own rather than through [`Context::done`], which would spawn a timer
/// task for the context: this runs for every upstream try.
pub(crate) fn under<F: Future>(ctx: &Context, fut: F) -> Under<'_, F> {
    Under { fut, ctx, done: None, deadline: None }
}

impl<F: Future> Future for Under<'_, F> {
    type Output = Result<F::Output, nuncio_context::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.fut.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let ctx = *this.ctx;
        if this.done.is_none() {
            *this.done = Some(ctx.done_unless_deadline());
            if let Some(deadline) = ctx.deadline() {
                this.deadline.set(Some(timers::sleep_until(&timers::TRY_DEADLINES, deadline)));
            }
        }
        let cancelled = this.done.as_mut().is_some_and(|done| Pin::new(done).poll(cx).is_ready());
        let expired = this.deadline.as_pin_mut().is_some_and(|sleep| sleep.poll(cx).is_ready());
        if cancelled || expired {
            let err = ctx.err().unwrap_or(nuncio_context::Error::DeadlineExceeded);
            return Poll::Ready(Err(err));
        }
        Poll::Pending
    }
}

pin_project! {
    /// See [`within`] and [`until`].
    #[project = WithinProj]
    #[must_use = "futures do nothing unless awaited"]
    pub(crate) enum Within<F> {
        // `fut` and its timer side by side (what `tokio::time::Timeout`
        // holds): made through `tokio::time::timeout_at`, `fut` was
        // copied twice more on its way in. The timer is made only once
        // `fut` has to wait: most bounded steps (a buffered head, a write
        // the socket takes at once) finish at their first poll.
        Limited { #[pin] fut: F, deadline: Instant, #[pin] timer: Option<Sleep> },
        Unlimited { #[pin] fut: F },
    }
}

/// Runs `fut` under an optional timeout: `None` when it ran out.
///
/// Always inlined: the future is then built where the `Within` lives, not
/// built on the stack and copied in (a request's futures are large).
#[inline(always)]
pub(crate) fn within<F: Future>(limit: Option<Duration>, fut: F) -> Within<F> {
    // From the loop's time (`nuncio_runtime::clock`): a read of the clock
    // saved for each of a request's several bounded steps. A limit too
    // large to represent is none.
    until(limit.and_then(nuncio_runtime::clock::after), fut)
}

/// Runs `fut` until an optional deadline: `None` when it passed first.
#[inline(always)]
pub(crate) fn until<F: Future>(deadline: Option<Instant>, fut: F) -> Within<F> {
    match deadline {
        Some(deadline) => Within::Limited { fut, deadline, timer: None },
        None => Within::Unlimited { fut },
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project() {
            // The work first: a result that is ready wins over the timer.
            WithinProj::Limited { fut, deadline, mut timer } => {
                if let Poll::Ready(output) = fut.poll(cx) {
                    return Poll::Ready(Some(output));
                }
                if timer.is_none() {
                    timer.set(Some(tokio::time::sleep_until(*deadline)));
                }
                match timer.as_pin_mut().map(|timer| timer.poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(None),
                    _ => Poll::Pending,
                }
            }
            WithinProj::Unlimited { fut } => fut.poll(cx).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    #[test]
    fn under_returns_the_output_or_the_cause_of_cancellation() {
        rt().block_on(async {
            let (ctx, cancel) = Context::background().with_cancel();
            assert_eq!(under(&ctx, async { 7 }).await, Ok(7));
            let pending = under(&ctx, std::future::pending::<()>());
            cancel.cancel();
            assert_eq!(pending.await, Err(nuncio_context::Error::Canceled));
            // Ready wins over done.
            assert_eq!(under(&ctx, async { 8 }).await, Ok(8));
        });
    }

    #[test]
    fn under_a_deadline_reports_deadline_exceeded() {
        rt().block_on(async {
            let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(5));
            let result = under(&ctx, std::future::pending::<()>()).await;
            assert_eq!(result, Err(nuncio_context::Error::DeadlineExceeded));
        });
    }

    #[test]
    fn within_times_out_only_with_a_limit() {
        rt().block_on(async {
            assert_eq!(within(Some(Duration::from_millis(5)), std::future::pending::<()>()).await, None);
            assert_eq!(within(None, async { 3 }).await, Some(3));
            assert_eq!(within(Some(Duration::from_secs(5)), async { 4 }).await, Some(4));
        });
    }

    #[test]
    fn within_makes_its_timer_only_once_the_work_waits() {
        rt().block_on(async {
            let mut cx = TaskContext::from_waker(std::task::Waker::noop());
            let mut ready = std::pin::pin!(within(Some(Duration::from_secs(5)), async { 1 }));
            assert_eq!(ready.as_mut().poll(&mut cx), Poll::Ready(Some(1)));
            assert!(matches!(&*ready, Within::Limited { timer: None, .. }));
            let mut waiting = std::pin::pin!(within(Some(Duration::from_secs(5)), std::future::pending::<()>()));
            assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Pending);
            assert!(matches!(&*waiting, Within::Limited { timer: Some(_), .. }));
        });
    }

    #[test]
    fn the_wrapped_future_is_stored_once() {
        let ctx = Context::background();
        let small = size_of_val(&under(&ctx, async {}));
        let big = async {
            let buf = [0u8; 4096];
            tokio::task::yield_now().await;
            buf.len()
        };
        let big_size = size_of_val(&big);
        // One copy of the wrapped future plus the wrapper's own fields (an
        // `async fn` wrapper would hold two).
        assert!(size_of_val(&under(&ctx, big)) < big_size + small + 16);
        let big = async {
            let buf = [0u8; 4096];
            tokio::task::yield_now().await;
            buf.len()
        };
        assert!(size_of_val(&within(None, big)) < 2 * big_size);
    }
}
