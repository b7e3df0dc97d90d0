//! Timer entries kept per worker between uses, so that a timeout armed for
//! every request does not cost a trip through tokio's timer wheel each
//! time.
//!
//! Every proxied request arms its upstream try's deadline while the
//! response is awaited. A new `tokio::time::Sleep` is inserted into the
//! worker's timer wheel when first polled and removed when dropped, each
//! under the timer driver's lock: ~300 instructions a timer
//! (`bench/instructions`, 2026-12-06). An entry kept here stays in the
//! wheel after its use; the next use moves its deadline later, which tokio
//! does without touching the wheel (the entry is re-filed once the old
//! deadline comes round, the lazy re-arming nginx does for its timers).
//! Deadlines of one kind of timer grow with time, so each kind has a pool
//! of its own ([`TRY_DEADLINES`]); an earlier deadline, or an entry that
//! fired while kept, is filed again as a new one would be.
//!
//! Entries are boxed (a future holds 16 bytes, not tokio's ~100), which is
//! why a client connection's idle timeout does not come from here: an idle
//! connection would hold one more allocation (`bench/idle_memory.py`:
//! 0.92 → 1.12 KiB a connection, marginal), while its inline entry costs
//! nothing in a task sized for the request phase anyway.
//!
//! A kept entry still holds the waker of the last task that waited on it
//! until its next use (or until it fires unused, a spurious wake-up that
//! task's futures take as any other): at most [`KEEP`] tasks a pool kept
//! alive a little longer. Replacing the waker on the way in cost as much as
//! the wheel trip saved.
//!
//! Thread rule: a pool is a thread-local, a worker's own; an entry belongs
//! to the timer driver of the worker's runtime and never leaves its thread.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::LocalKey;

use tokio::time::{Instant, Sleep};

/// Most entries a pool keeps (~128 bytes each).
pub(crate) const KEEP: usize = 256;

type Pool = RefCell<Vec<Pin<Box<Sleep>>>>;

thread_local! {
    /// Upstream tries waiting for their answer.
    pub(crate) static TRY_DEADLINES: Pool = const { RefCell::new(Vec::new()) };
}

/// A future that completes at `deadline`, with an entry from `pool` (or a
/// new one), given back to `pool` when dropped. Must be created and
/// dropped on a thread with a tokio runtime that has time enabled.
pub(crate) fn sleep_until(pool: &'static LocalKey<Pool>, deadline: Instant) -> KeptSleep {
    let sleep = match pool.with_borrow_mut(Vec::pop) {
        Some(mut sleep) => {
            sleep.as_mut().reset(deadline);
            sleep
        }
        None => Box::pin(tokio::time::sleep_until(deadline)),
    };
    KeptSleep { sleep: Some(sleep), pool }
}

/// See [`sleep_until`].
#[must_use = "futures do nothing unless awaited"]
pub(crate) struct KeptSleep {
    /// Always `Some` until dropped.
    sleep: Option<Pin<Box<Sleep>>>,
    pool: &'static LocalKey<Pool>,
}

impl Future for KeptSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for KeptSleep {
    fn drop(&mut self) {
        let Some(sleep) = self.sleep.take() else { return };
        // `try_with`: a thread exiting may have dropped its pool already.
        let _ = self.pool.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < KEEP {
                pool.push(sleep);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    thread_local! {
        static TEST_POOL: Pool = const { RefCell::new(Vec::new()) };
    }

    fn kept() -> usize {
        TEST_POOL.with_borrow(Vec::len)
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_entry_fires_at_its_new_deadline_earlier_or_later() {
        let start = Instant::now();
        sleep_until(&TEST_POOL, start + Duration::from_secs(5)).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        assert_eq!(kept(), 1);

        // Reused, armed later than its first deadline.
        let again = Instant::now();
        sleep_until(&TEST_POOL, again + Duration::from_secs(30)).await;
        assert_eq!(Instant::now() - again, Duration::from_secs(30));

        // Reused while still armed for a later time: an earlier deadline
        // is honoured.
        let mut pending = Box::pin(sleep_until(&TEST_POOL, Instant::now() + Duration::from_secs(60)));
        assert!(futures_poll_once(pending.as_mut()).await.is_pending());
        drop(pending);
        let soon = Instant::now();
        sleep_until(&TEST_POOL, soon + Duration::from_secs(1)).await;
        assert_eq!(Instant::now() - soon, Duration::from_secs(1));
        assert_eq!(kept(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_entry_does_not_fire_before_its_extended_deadline() {
        let mut first = Box::pin(sleep_until(&TEST_POOL, Instant::now() + Duration::from_secs(2)));
        assert!(futures_poll_once(first.as_mut()).await.is_pending());
        drop(first);
        // Moved later while still in the wheel for the old deadline.
        let start = Instant::now();
        let mut later = Box::pin(sleep_until(&TEST_POOL, start + Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(futures_poll_once(later.as_mut()).await.is_pending(), "fired at the old deadline");
        later.await;
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_pool_keeps_at_most_keep_entries() {
        let sleeps: Vec<_> =
            (0..KEEP + 3).map(|_| sleep_until(&TEST_POOL, Instant::now() + Duration::from_secs(1))).collect();
        drop(sleeps);
        assert_eq!(kept(), KEEP);
    }

    /// Polls `fut` once with the test task's waker.
    async fn futures_poll_once<F: Future + Unpin>(mut fut: F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut fut).poll(cx))).await
    }
}
