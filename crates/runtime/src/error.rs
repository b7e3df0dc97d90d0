use thiserror::Error;

/// Everything that can go wrong in the runtime crate.
///
/// None of these is a bug in the caller's thread: each says what state the
/// dispatcher or the slot system is in and what to do about it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The dispatcher has stopped (or is stopping) and accepts no more work.
    /// A closure refused this way was dropped on the posting thread before
    /// `post` returned.
    #[error("dispatcher `{0}` has stopped and accepts no more work")]
    Stopped(String),

    /// A second dispatcher was created on a thread that already has one.
    #[error("this thread already runs dispatcher `{0}`: one dispatcher per thread")]
    DispatcherExists(String),

    /// The tokio runtime under a dispatcher could not be built.
    #[error("could not build the event loop for dispatcher `{name}`: {reason}")]
    Runtime {
        /// The dispatcher's name.
        name: String,
        /// What the OS or tokio said.
        reason: String,
    },

    /// A main-thread-only operation was called from another thread.
    #[error("`{0}` must be called on the main thread (the dispatcher the ThreadLocal was created with)")]
    NotMainThread(&'static str),

    /// The slot system was shut down (`shutdown_global_threading`, or this
    /// thread's `shutdown_thread`).
    #[error("thread-local slots are shut down")]
    ShutDown,

    /// This thread was never registered with the `ThreadLocal` instance, or
    /// its registration has not been delivered yet.
    #[error("this thread is not registered with the ThreadLocal instance")]
    NotRegistered,

    /// The slot holds no object on this thread: `set` was not called yet, its
    /// post has not run on this thread yet, or an update cleared it.
    #[error("slot has no object on this thread (not set yet, or not delivered yet)")]
    NotSet,

    /// A call that changes this thread's slot storage was made from inside
    /// [`crate::Slot::with`] on the same thread.
    #[error("`{0}` was called from inside Slot::with on the same thread; call it after `with` returns")]
    Reentrant(&'static str),

    /// `shutdown_thread` was called before `shutdown_global_threading`.
    #[error("shutdown_thread called before shutdown_global_threading")]
    NotShuttingDown,
}
