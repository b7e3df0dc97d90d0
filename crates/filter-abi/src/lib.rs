//! Filters written in another language — Go, through `sdk/go` — over a
//! versioned C ABI: the ABI itself ([`abi`], and
//! `include/nuncio_filter.h`, checked against it), the host functions a
//! library calls, the loader of the process's one library, and the `go`
//! filter kind ([`GoKind`]) whose filters drive a foreign filter.
//!
//! ```yaml
//! filters:
//!   - name: go
//!     config: { library: ./libauthz.so, filter: authz, config: { cluster: authz } }
//! ```
//!
//! # The concept
//!
//! Seed 000's setting: the extension's runtime has its own scheduler and
//! its own threads, and calls back into the proxy at any moment, while the
//! proxy may end the stream at any moment. The rules of `nuncio-filter`
//! hold across the boundary, enforced at run time:
//!
//! * **Ownership.** A hook hands the library a copy of what it was given
//!   (the head, the body piece). While the stream waits for the hook's
//!   decision the library owns that copy — it reads it without asking the
//!   worker — and the worker does not touch the stream for that filter.
//!   The decision carries the edits back, exactly once.
//! * **Liveness by integers.** A stream is a [`StreamId`] (worker, slot,
//!   generation), never a pointer. Any thread can tell from the id whether
//!   the stream lives and whether a hook of it waits for a decision (one
//!   atomic word per slot: `table.rs`); every call for an ended stream
//!   answers `STREAM_GONE`, and no call touches freed memory.
//! * **Memory is copied at the boundary.** A pointer is read during the
//!   call that received it, never kept (Go's `cgocheck` passes).
//!
//! # How a hook runs
//!
//! Each hook is one call into the library **on the worker**, inline (a
//! cgo call costs ~80 ns on a thread that called in before). A hook that
//! decides at once calls `decide` before returning: no allocation beyond
//! the copy, no thread hop. A hook that must wait (an HTTP call, a timer)
//! returns without deciding and hands the rest to a goroutine: the Rust
//! side is then a pending [`Hook`](nuncio_filter::Hook) on the worker,
//! resumed by the one `decide` that claims the hook (a compare-and-swap on
//! the slot's word) and is posted to the worker. A second or late decision
//! gets `NOT_STOPPED` or `STREAM_GONE`, never a crash.
//!
//! # The threading rule
//!
//! * [`GoKind::configure`](nuncio_filter::FilterKind::configure) runs on
//!   the thread that loads the config (main): the library is loaded there,
//!   never on a worker.
//! * Hooks, `nuncio_filter_end` and every completion are called on the
//!   stream's worker; the library must not block in them. Nothing on the
//!   worker waits for the library otherwise.
//! * Every host function may be called from any thread and never blocks:
//!   work for a stream is posted to its worker
//!   ([`DispatcherHandle::post`](nuncio_runtime::DispatcherHandle::post))
//!   and its result comes back as a call into the library. Calls whose
//!   answer needs a worker (posted operations, HTTP calls) made **on** a
//!   worker thread — from inside a hook — answer `WOULD_BLOCK` at once
//!   instead of deadlocking. Posted operations go through the stream's
//!   [`StreamHandle`](nuncio_filter::StreamHandle) and mailbox, so they
//!   apply between hooks, exactly as Rust filters' do.
//!
//! # Why this crate allows `unsafe`
//!
//! It is the one crate that must: it loads a shared library, calls its
//! functions and is called by it with raw pointers. All of that is in one
//! module, `boundary.rs`, where each block says why it holds; everything
//! above it (decoding, the table, the filter adapter) is safe Rust.
//!
//! # Example
//!
//! ```
//! use nuncio_filter::FilterKind;
//! use nuncio_filter_abi::GoKind;
//!
//! // The kind the `nuncio` command registers as `go`.
//! assert_eq!(GoKind.name(), "go");
//! // A block that names no library file is refused at its field.
//! let block = serde_json::json!({ "library": "/nonexistent/libfilters.so", "filter": "authz" });
//! let error = GoKind.configure(block).err().unwrap();
//! assert_eq!(error.path, "library");
//! assert!(error.message.starts_with("cannot read the filter library /nonexistent/libfilters.so"), "{error}");
//! // The header a library is built against is written from `abi`.
//! assert!(nuncio_filter_abi::abi::header().contains("#define NUNCIO_FILTER_ABI_VERSION 2"));
//! ```

#![allow(unsafe_code)]

pub mod abi;
mod boundary;
mod counts;
mod decision;
mod error;
mod filter;
mod host;
mod library;
mod stream;
mod table;
mod wire;

pub use boundary::raw;
pub use error::Error;
pub use filter::GoKind;
pub use library::{LibraryStats, library_stats, loaded_path};
pub use table::StreamId;

/// Streams of foreign filters registered and not yet ended, all workers
/// together: 0 once every stream ended.
pub fn live_streams() -> usize {
    table::live()
}
