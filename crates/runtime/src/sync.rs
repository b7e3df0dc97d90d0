//! The synchronisation primitives the crate is built on, swapped for loom's
//! under `--cfg nuncio_loom` so the same code is model-checked (tokio's
//! `src/loom/` pattern). Everything in the crate that crosses threads goes
//! through here.

#[cfg(not(nuncio_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard, atomic::AtomicBool};

#[cfg(nuncio_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard, atomic::AtomicBool};

/// Locks `mutex`, ignoring poisoning: every critical section in this crate
/// leaves its data consistent before it can panic (user callbacks never run
/// under a lock), so a poisoned lock still guards valid state.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(not(nuncio_loom))]
    {
        mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    #[cfg(nuncio_loom)]
    {
        mutex.lock().unwrap()
    }
}

#[cfg(not(nuncio_loom))]
pub(crate) use std::{thread, thread_local};

#[cfg(nuncio_loom)]
pub(crate) use loom::{thread, thread_local};
