//! Fixtures shared by the runtime's integration tests: real threads, real
//! dispatchers, no mocks.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::thread::JoinHandle;
use std::time::Duration;

use nuncio_runtime::{Dispatcher, DispatcherHandle, ThreadLocal};

/// A safety net: no test waits on main longer than this.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// `n` worker threads, each running a dispatcher and, once it stops,
/// `shutdown_thread` on `tls`.
pub struct Workers {
    pub handles: Vec<DispatcherHandle>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub fn start(tls: &ThreadLocal, n: usize) -> Workers {
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n {
            let worker_tls = tls.clone();
            let (handle, thread) = Dispatcher::spawn(format!("worker-{i}"), move |d| {
                d.run();
                // Fails only if main never called shutdown_global_threading,
                // which some tests do on purpose.
                let _ = worker_tls.shutdown_thread();
            })
            .expect("spawn worker");
            tls.register_thread(handle.clone()).expect("register worker");
            handles.push(handle);
            threads.push(thread);
        }
        Workers { handles, threads }
    }

    /// Stops every worker and joins its thread.
    pub fn stop(self) {
        for handle in &self.handles {
            handle.stop();
        }
        for thread in self.threads {
            thread.join().expect("worker thread panicked");
        }
    }
}

/// Runs `main`'s loop until `fut` completes, or panics after [`PATIENCE`].
pub fn on_main<F: Future>(main: &Dispatcher, fut: F) -> F::Output {
    main.run_until(async { tokio::time::timeout(PATIENCE, fut).await.expect("main waited too long") })
        .expect("main dispatcher stopped")
}

/// Runs `f` on `worker` and returns its result to the calling thread.
pub fn ask<R, F>(worker: &DispatcherHandle, f: F) -> R
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    worker.post(move || tx.send(f()).expect("asker gone")).expect("worker stopped");
    rx.recv_timeout(PATIENCE).expect("worker did not answer")
}
