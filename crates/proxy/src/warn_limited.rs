//! Warnings that can repeat without bound (accept failing when file
//! descriptors run out, clients cut off for abuse) are logged at most once
//! per [`EVERY`] per kind and thread; the next one says how many were left
//! out meanwhile. A flood of bad clients must not become a flood of log
//! lines (which would cost the workers more than the clients do).
//!
//! Worker-local: each thread keeps its own clock per kind, no lock.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// At most one line per kind this often, per thread.
pub(crate) const EVERY: Duration = Duration::from_secs(1);

thread_local! {
    /// By kind: when the last line was written and how many were left out
    /// since.
    static SEEN: RefCell<Vec<(&'static str, Instant, u64)>> = const { RefCell::new(Vec::new()) };
}

/// Whether a warning of `kind` may be written now; if so, how many of this
/// kind were left out since the last one (to say so in it).
pub(crate) fn allow(kind: &'static str) -> Option<u64> {
    let now = Instant::now();
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        match seen.iter_mut().find(|(k, _, _)| *k == kind) {
            Some((_, last, suppressed)) if now.duration_since(*last) < EVERY => {
                *suppressed += 1;
                None
            }
            Some((_, last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                seen.push((kind, now, 0));
                Some(0)
            }
        }
    })
}

/// `tracing::warn!` at most once per [`EVERY`] per `$kind` on this thread,
/// with `suppressed` = how many were left out since the last line.
macro_rules! warn_limited {
    ($kind:expr, $($field:tt)*) => {
        if let Some(suppressed) = $crate::warn_limited::allow($kind) {
            tracing::warn!(suppressed, $($field)*);
        }
    };
}

pub(crate) use warn_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_gives_one_line_and_the_next_counts_the_rest() {
        assert_eq!(allow("test-burst"), Some(0));
        for _ in 0..99 {
            assert_eq!(allow("test-burst"), None);
        }
        assert_eq!(allow("test-other"), Some(0), "kinds are apart");
        std::thread::sleep(EVERY);
        assert_eq!(allow("test-burst"), Some(99));
    }
}
