//! The primitives the stream handle crosses threads with, swapped for
//! loom's under `--cfg nuncio_loom` so the same code is model-checked (the
//! runtime crate's `sync.rs` pattern).

#[cfg(not(nuncio_loom))]
pub(crate) use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

#[cfg(nuncio_loom)]
pub(crate) use loom::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

#[cfg(not(nuncio_loom))]
pub(crate) use std::thread_local;

#[cfg(nuncio_loom)]
pub(crate) use loom::thread_local;
