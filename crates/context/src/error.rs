//! Why a context is done: [`Error`] (the kind) and [`Cause`] (the detail).

use std::{error::Error as StdError, fmt, sync::Arc};

/// Why a context is done, as reported by [`Context::err`](crate::Context::err).
///
/// The messages are Go's, so logs read the same across both worlds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The context, or one of its ancestors, was cancelled through a
    /// [`CancelHandle`](crate::CancelHandle) (explicitly or by dropping it).
    #[error("context canceled")]
    Canceled,
    /// The context's deadline (its own or an ancestor's) has passed.
    #[error("context deadline exceeded")]
    DeadlineExceeded,
}

/// The cause recorded when a [`CancelHandle`](crate::CancelHandle) is dropped
/// without being cancelled first.
///
/// Find it with `ctx.cause().and_then(|c| c.downcast_ref::<HandleDropped>().copied())`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, thiserror::Error)]
#[error("context cancel handle dropped")]
pub struct HandleDropped;

type DynError = dyn StdError + Send + Sync + 'static;

/// A cause that is not one of the defaults, as a scope stores it.
pub(crate) type SharedCause = Arc<DynError>;

/// The detailed reason a context was cancelled: any error, shared.
///
/// Every done context has one ([`Context::cause`](crate::Context::cause)):
/// [`Error::Canceled`] after a plain [`cancel`](crate::CancelHandle::cancel),
/// [`Error::DeadlineExceeded`] at the deadline, [`HandleDropped`] when the
/// handle was dropped, or whatever was given to
/// [`cancel_with_cause`](crate::CancelHandle::cancel_with_cause). A context
/// cancelled by its parent carries the parent's cause.
///
/// Cloning is cheap (a reference count, or nothing for the default causes).
#[derive(Clone)]
pub struct Cause(Repr);

#[derive(Clone)]
enum Repr {
    /// The default causes: no allocation, and recorded in the scope's state
    /// byte rather than under its lock.
    Canceled,
    DeadlineExceeded,
    HandleDropped,
    Shared(SharedCause),
}

impl Cause {
    pub(crate) const CANCELED: Cause = Cause(Repr::Canceled);
    pub(crate) const DEADLINE_EXCEEDED: Cause = Cause(Repr::DeadlineExceeded);
    pub(crate) const HANDLE_DROPPED: Cause = Cause(Repr::HandleDropped);

    /// The cause, unless it is one of the defaults (which have a code).
    pub(crate) fn into_shared(self) -> Option<SharedCause> {
        match self.0 {
            Repr::Shared(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn from_shared(e: SharedCause) -> Cause {
        Cause(Repr::Shared(e))
    }

    /// A 2-bit code for the default causes, 0 for the others.
    pub(crate) fn code(&self) -> u8 {
        match self.0 {
            Repr::Shared(_) => 0,
            Repr::Canceled => 1,
            Repr::DeadlineExceeded => 2,
            Repr::HandleDropped => 3,
        }
    }

    /// The default cause with this code (`None` for 0).
    pub(crate) fn from_code(code: u8) -> Option<Cause> {
        match code {
            1 => Some(Cause::CANCELED),
            2 => Some(Cause::DEADLINE_EXCEEDED),
            3 => Some(Cause::HANDLE_DROPPED),
            _ => None,
        }
    }

    /// Wraps an error, or a message: `Cause::new("downstream reset")`.
    pub fn new(error: impl Into<Box<DynError>>) -> Cause {
        Cause(Repr::Shared(Arc::from(error.into())))
    }

    /// The cause as an error.
    pub fn as_error(&self) -> &DynError {
        match &self.0 {
            Repr::Canceled => &Error::Canceled,
            Repr::DeadlineExceeded => &Error::DeadlineExceeded,
            Repr::HandleDropped => &HandleDropped,
            Repr::Shared(e) => &**e,
        }
    }

    /// The cause as a concrete error type, if it is one.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.as_error().downcast_ref()
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_error(), f)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_error(), f)
    }
}

impl StdError for Cause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.as_error().source()
    }
}
