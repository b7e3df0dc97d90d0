//! The extension pool: a few threads, started once per process on first
//! use, where filters run work that must not hold up a worker (hashing,
//! signing, a blocking library call), reaching their stream back through
//! its [`StreamHandle`](nuncio_filter::StreamHandle).
//!
//! Each pool thread runs a current-thread tokio runtime (with timers) and
//! is fed by a channel of its own; [`spawn`] picks the threads in turn
//! (per calling thread), so handing a job over takes no lock on the
//! worker: one allocation for the job, and a lock-free channel send that
//! wakes the pool thread. Jobs on one thread interleave at their `.await`s
//! (a handle call waiting for the worker does not hold the thread); a job
//! that computes for long or blocks delays the others on its thread, so
//! such work belongs in `tokio::task::spawn_blocking` inside the job.
//!
//! The threads are named `nuncio-ext-N`; there are as many as cores, at
//! least 2 and at most 4 ([`threads`]). They live as long as the process.
//! A job that panics ends alone (tokio catches it) and the thread goes on;
//! a job must therefore resume or answer its stream itself — if it does
//! not, the stream waits for its client or its route timeout.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use tokio::sync::mpsc;

/// A job, boxed once when it is handed over.
type Job = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The pool could not take the job: none of its threads runs (they could
/// not be started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the extension pool has no running thread")
    }
}

impl std::error::Error for Unavailable {}

struct Pool {
    queues: Box<[mpsc::UnboundedSender<Job>]>,
}

static POOL: OnceLock<Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
        let mut queues = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            match std::thread::Builder::new().name(format!("nuncio-ext-{i}")).spawn(move || serve(rx)) {
                Ok(_) => queues.push(tx),
                Err(error) => tracing::error!(%error, "could not start an extension pool thread"),
            }
        }
        Pool { queues: queues.into() }
    })
}

/// A pool thread: runs every job it is given, until the process ends.
fn serve(mut jobs: mpsc::UnboundedReceiver<Job>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            // Dropping `jobs` makes `spawn` pass this thread by.
            tracing::error!(%error, "could not start an extension pool thread's runtime");
            return;
        }
    };
    runtime.block_on(async move {
        while let Some(job) = jobs.recv().await {
            tokio::spawn(job);
        }
    });
}

thread_local! {
    /// The pool thread this thread gives its next job to.
    static NEXT: Cell<usize> = Cell::new(fastrand::usize(..));
}

/// Runs `job` on the extension pool (starting the pool if this is the
/// first job of the process). The job runs in a current-thread tokio
/// runtime with timers (no I/O driver): it may await handle calls,
/// `tokio::time`, channels, `spawn_blocking`.
///
/// Jobs given by one thread go to the pool's threads in turn; two jobs
/// given one after the other by the same thread run on different pool
/// threads (when there are two or more).
pub fn spawn(job: impl Future<Output = ()> + Send + 'static) -> Result<(), Unavailable> {
    let queues = &pool().queues;
    let mut job: Job = Box::pin(job);
    let start = NEXT.get();
    for k in 0..queues.len() {
        let i = start.wrapping_add(k) % queues.len();
        match queues[i].send(job) {
            Ok(()) => {
                NEXT.set(i.wrapping_add(1));
                return Ok(());
            }
            // That thread is gone: try the next one.
            Err(mpsc::error::SendError(back)) => job = back,
        }
    }
    Err(Unavailable)
}

/// How many threads the pool has (starting it if need be).
pub fn threads() -> usize {
    pool().queues.len()
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn jobs_run_on_the_pool_threads_in_turn() {
        let (tx, rx) = std_mpsc::channel();
        let n = threads();
        assert!((2..=4).contains(&n));
        for _ in 0..n {
            let tx = tx.clone();
            spawn(async move {
                // Awaiting works (a timer), and the job runs on a pool thread.
                tokio::time::sleep(Duration::from_millis(1)).await;
                let name = std::thread::current().name().unwrap_or("").to_owned();
                tx.send(name).unwrap();
            })
            .unwrap();
        }
        let mut names: Vec<String> = (0..n).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "{names:?}");
        assert!(names.iter().all(|name| name.starts_with("nuncio-ext-")), "{names:?}");
    }

    #[test]
    fn a_panicking_job_leaves_the_pool_serving() {
        for _ in 0..threads() {
            spawn(async { panic!("a job broke (expected by this test)") }).unwrap();
        }
        let (tx, rx) = std_mpsc::channel();
        for _ in 0..threads() {
            let tx = tx.clone();
            spawn(async move { tx.send(()).unwrap() }).unwrap();
        }
        for _ in 0..threads() {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
    }
}
