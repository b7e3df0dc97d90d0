//! The synchronisation primitives the scope tree is built from.
//!
//! Under `cfg(nuncio_loom)` they are loom's, so the same code is model-checked
//! (the pattern of tokio's `src/loom/`); otherwise they are `std`'s.

#[cfg(nuncio_loom)]
pub(crate) use loom::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicU8, Ordering},
};
#[cfg(not(nuncio_loom))]
pub(crate) use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicU8, Ordering},
};
