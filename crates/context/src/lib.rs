//! Go-style request contexts: cancellation with a cause, deadlines, typed
//! values.
//!
//! A [`Context`] says when the work done on behalf of a request should stop,
//! and why. Contexts form a tree: deriving one ([`Context::with_cancel`],
//! [`Context::with_deadline`], [`Context::with_timeout`]) makes a child that is
//! done when its [`CancelHandle`] cancels it, when its deadline passes, or when
//! its parent is done, whichever comes first. Work waits on
//! [`Context::done`], polls [`Context::err`], or registers
//! [`Context::after_func`]; [`Context::cause`] says why it was stopped.
//! Request-scoped data rides along as typed values ([`Context::with_value`],
//! [`Context::value`]).
//!
//! In nuncio the listener owns a root context; each accepted connection gets
//! a child, each stream a child of its connection (deadline: the route
//! timeout), and each upstream try a child of its stream (deadline: the
//! per-try timeout). When the downstream resets or disconnects, the stream's
//! context is cancelled and, with it, the upstream request, every filter
//! future and every off-worker task of that stream.
//!
//! Where this differs from Go's `context` package:
//! - a value lookup does not walk the chain: values are copied on derive,
//!   so [`Context::value`] costs the same at any depth;
//! - no timer is armed until someone waits: a deadline is checked by reading
//!   the clock in [`Context::err`], and a timer task is started only when
//!   [`Context::done`] is polled or an [`Context::after_func`] is registered;
//! - dropping a [`CancelHandle`] cancels its context and unlinks it from its
//!   parent, so a forgotten child does not linger until the parent ends;
//! - every cancellation has a [`Cause`].
//!
//! # Threading
//!
//! Everything here is `Send + Sync` and may be used from any thread.
//! [`after_func`](Context::after_func) callbacks run on the thread that makes
//! the context done: the one that cancels it or an ancestor, the deadline
//! timer task, or one whose [`err`](Context::err) notices the deadline has
//! passed. Keep them short; post real work elsewhere. Deadline timers are
//! tasks on the tokio runtime current where the waiting starts (time must be
//! enabled on it); without one, deadlines are still seen by `err()` and by
//! polls of `done()`, but nothing fires at the deadline by itself.
//! Deadlines use [`tokio::time::Instant`] (re-exported as [`Instant`]), so a
//! paused test clock drives them.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use nuncio_context::{Cause, Context, Error};
//!
//! #[derive(Debug, PartialEq)]
//! struct RequestId(u64);
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let listener = Context::background();
//! let (connection, close_connection) = listener.with_cancel();
//! let (stream, _stream) = connection.with_timeout(Duration::from_secs(30));
//! let stream = stream.with_value(RequestId(7));
//! let (attempt, _attempt) = stream.with_timeout(Duration::from_secs(5));
//!
//! assert_eq!(attempt.value::<RequestId>(), Some(&RequestId(7)));
//! assert!(attempt.deadline() <= stream.deadline());
//!
//! let upstream = tokio::spawn({
//!     let ctx = attempt.clone();
//!     async move {
//!         ctx.done().await;
//!         ctx.err()
//!     }
//! });
//! close_connection.cancel_with_cause(Cause::new("downstream reset"));
//!
//! assert_eq!(upstream.await.unwrap(), Some(Error::Canceled));
//! assert_eq!(attempt.cause().unwrap().to_string(), "downstream reset");
//! # }
//! ```

#![forbid(unsafe_code)]

mod context;
mod done;
mod error;
mod registry;
mod scope;
mod sync;
mod timer;
mod values;

#[cfg(test)]
mod tests;

pub use context::{AfterFunc, CancelHandle, Context};
pub use done::Done;
pub use error::{Cause, Error, HandleDropped};
/// The instant deadlines are expressed in: tokio's, which follows a paused
/// test clock. Convert a [`std::time::Instant`] with `.into()`.
pub use tokio::time::Instant;
