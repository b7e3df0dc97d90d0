//! The loop's time: a monotonic instant read once per turn of a
//! dispatcher's loop and shared by everything that turn runs (Envoy's
//! `approximateMonotonicTime`, nginx's cached `ngx_current_msec`).
//!
//! A proxied request reads the time about ten times (its start, its
//! deadline, the time left told upstream, when its try was sent and
//! answered, the pooled connection's expiry, its duration for the log),
//! and each read of the clock is a `clock_gettime` (~20 ns on a VM's TSC,
//! `bench/instructions` counts ~30 instructions). A turn of the loop
//! serves many requests, so [`now`] is the value read when the turn began.
//!
//! How stale it can be: a turn polls the loop (posted closures) and then
//! at most 61 local tasks (tokio's `LocalSet` tick) before the loop is
//! polled again, so the value is behind the clock by what those polls
//! took — microseconds to a millisecond or two under load, longer only
//! if a task's one poll runs longer. That is fine for timeouts (one fires
//! at most that much early) and for durations logged in milliseconds; it
//! is not a stopwatch: measure short spans of work with
//! [`tokio::time::Instant::now`].
//!
//! Thread rule: the value is the calling thread's own (a thread-local).
//! Off a dispatcher's loop (main before it runs, a test's own runtime, a
//! loop that has returned), [`now`] reads the clock.

use std::cell::Cell;
use std::time::Duration;

use tokio::time::Instant;

thread_local! {
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The time the running loop turn began; the clock itself when no loop
/// runs on this thread.
#[inline]
pub fn now() -> Instant {
    NOW.get().unwrap_or_else(Instant::now)
}

/// `after` from [`now`]: a deadline; `None` past what an instant can
/// hold (as good as never).
#[inline]
pub fn after(after: Duration) -> Option<Instant> {
    now().checked_add(after)
}

/// From `earlier` to [`now`]; zero if `earlier` is later (an instant
/// taken with the clock itself during this turn).
#[inline]
pub fn since(earlier: Instant) -> Duration {
    now().saturating_duration_since(earlier)
}

/// Starts a turn: reads the clock once for everything the turn runs.
pub(crate) fn turn() {
    NOW.set(Some(Instant::now()));
}

/// The loop stopped: [`now`] reads the clock again.
pub(crate) fn stop() {
    NOW.set(None);
}

#[cfg(all(test, not(nuncio_loom)))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Dispatcher;

    #[test]
    fn off_the_loop_now_is_the_clock() {
        let before = Instant::now();
        let now = now();
        assert!(now >= before && now <= Instant::now());
    }

    #[test]
    fn a_turn_reads_the_clock_once_and_the_next_turn_again() {
        let dispatcher = Dispatcher::new("clock-test").unwrap();
        let (first, same, later) = dispatcher
            .run_until(async {
                let first = now();
                // Work within one turn sees the turn's time...
                std::thread::sleep(Duration::from_millis(5));
                let same = now();
                // ...and a wait for a timer ends the turn.
                tokio::time::sleep(Duration::from_millis(5)).await;
                (first, same, now())
            })
            .unwrap();
        assert_eq!(first, same);
        assert!(after(Duration::MAX).is_none(), "past what an instant holds");
        assert!(later >= first + Duration::from_millis(5), "{:?}", later - first);
        // The loop has returned: the clock again.
        let after = Instant::now();
        assert!(now() >= after);
    }
}
