//! nuncio's threading model: a [`Dispatcher`] per thread and thread-local
//! [`Slot`]s that carry read-mostly data (routes, clusters, stats handles)
//! to every worker without locks. This is Envoy's model (its
//! `Event::Dispatcher` and `ThreadLocal::Instance`); the crate knows
//! nothing about HTTP.
//!
//! # The threading rule
//!
//! * A [`Dispatcher`] is created on its thread and never leaves it. Other
//!   threads reach it only through a [`DispatcherHandle`] (`Send + Sync +
//!   Clone`), whose [`post`](DispatcherHandle::post) runs a closure on the
//!   dispatcher's thread, in order per poster, and never blocks.
//! * A [`ThreadLocal`] lives on main. [`Slot::set`] and
//!   [`Slot::run_on_all_threads`] run on main: they build the new object
//!   once there and post a pointer swap to every worker, so no thread ever
//!   writes another thread's data. [`Slot::get`] runs on any registered
//!   thread and reads that thread's copy with no lock and no atomic
//!   read-modify-write.
//! * Shutdown: main calls [`ThreadLocal::shutdown_global_threading`], each
//!   thread then [`ThreadLocal::shutdown_thread`], which drops its objects
//!   in reverse order of slot allocation.
//!
//! # The loop's time
//!
//! [`clock::now`] is the time the running turn of this thread's loop
//! began, read once for everything the turn runs (Envoy's
//! `approximateMonotonicTime`): timeouts and logged durations on the
//! request path use it rather than a clock read each.
//!
//! # The read guard
//!
//! [`Slot::with`] lends its closure this thread's object, so while the
//! closure runs, this thread's slot objects do not change. Inside it, on
//! the same thread, reads of any slot work; [`Slot::set`],
//! [`Slot::set_then`], [`Slot::run_on_all_threads`] and
//! [`ThreadLocal::shutdown_thread`] fail with [`Error::Reentrant`] and
//! change nothing anywhere; [`ThreadLocal::new`], the drop of a slot's last
//! clone, and changes posted to this thread (when the closure runs the
//! loop itself) wait, in order, until the closure has returned. To keep an
//! object across changes, hold a [`SlotRef`] from [`Slot::get`] instead.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::mpsc;
//! use nuncio_runtime::{Dispatcher, ThreadLocal};
//!
//! struct Routes { version: u32 }
//!
//! let main = Dispatcher::new("main").unwrap();
//! let tls = ThreadLocal::new(&main);
//!
//! // A worker: its own thread, its own dispatcher.
//! let worker_tls = tls.clone();
//! let (worker, thread) = Dispatcher::spawn("worker-0", move |d| {
//!     d.run();
//!     worker_tls.shutdown_thread().unwrap();
//! })
//! .unwrap();
//! tls.register_thread(worker.clone()).unwrap();
//!
//! // Build the config once on main; every thread gets a pointer to it.
//! let routes = tls.allocate_slot::<Routes>().unwrap();
//! let v1 = Arc::new(Routes { version: 1 });
//! routes.set(move |_| v1.clone()).unwrap();
//!
//! // Swap in version 2 everywhere, and learn on main when all are done.
//! let (done_tx, done_rx) = mpsc::channel();
//! let v2 = Arc::new(Routes { version: 2 });
//! routes
//!     .run_on_all_threads(move |current| *current = Some(v2.clone()), move || done_tx.send(()).unwrap())
//!     .unwrap();
//! main.run_until(async {
//!     while done_rx.try_recv().is_err() {
//!         tokio::task::yield_now().await;
//!     }
//! });
//!
//! // A worker reads its own copy.
//! let (seen_tx, seen_rx) = mpsc::channel();
//! let reader = routes.clone();
//! worker.post(move || seen_tx.send(reader.get().unwrap().version).unwrap()).unwrap();
//! assert_eq!(seen_rx.recv().unwrap(), 2);
//!
//! tls.shutdown_global_threading().unwrap();
//! worker.stop();
//! thread.join().unwrap();
//! tls.shutdown_thread().unwrap();
//! ```

// Slot reads are safe code too (docs/benchmarks.md, "Slot reads: safe or
// unsafe"): nothing in this crate may opt back in.
#![forbid(unsafe_code)]

pub mod clock;
mod dispatcher;
mod error;
mod queue;
mod slots;
mod sync;

#[cfg(all(test, nuncio_loom))]
mod tests;

#[cfg(not(nuncio_loom))]
pub use dispatcher::Timer;
pub use dispatcher::{Dispatcher, DispatcherHandle};
pub use error::Error;
pub use slots::{Slot, SlotRef, ThreadLocal};
