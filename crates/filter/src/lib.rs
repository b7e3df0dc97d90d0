//! The API nuncio's HTTP filters are written against. A filter author
//! depends on this crate alone.
//!
//! # The concept
//!
//! A stream passes through a chain of filters: request headers, body and
//! trailers on the way in; response headers, body and trailers on the way
//! out, in reverse order; the router is the implicit last filter. Each hook
//! returns a [`Status`] with Envoy's meaning: continue, stop iteration
//! (resumed later through the [`StreamHandle`]), stop and buffer, stop with
//! watermark, or a local reply.
//!
//! # The threading rule
//!
//! A filter instance lives on its stream's worker and is never shared. Its
//! hooks may be `async` ([`Hook::pending`]) and await I/O on the worker:
//! while a hook is pending the chain waits at that filter and the hook holds
//! `&mut` access to what it was given — the borrow checker is the ownership
//! state machine. Slow work may also leave the worker: what crosses threads
//! is either owned data moved out of a stopped stream, or a
//! [`StreamHandle`] (`Send + Sync + Clone`), which posts every read and
//! write to the owning worker. Once the stream is gone every handle call
//! returns [`Error::StreamGone`] at once.
//!
//! A hook that completes synchronously returns [`Hook::Done`]: no heap
//! allocation.
//!
//! # Calls to other services
//!
//! An async hook can make HTTP requests to the config's clusters through
//! [`StreamCx::http_client`] ([`HttpClient`]: the proxy's pools, balancing
//! and breakers, bounded by the stream's context). A filter that calls a
//! cluster names it in [`FilterFactory::clusters`], so that a config
//! naming a cluster that does not exist is refused at load.
//!
//! # Counters
//!
//! A filter counts what it decides in stats declared when it is configured
//! ([`CounterSet::declare`], reported by [`FilterFactory::counters`]) and
//! bumped from a hook with [`StreamCx::inc`]; the proxy exposes them as
//! `nuncio_filter_<KIND>_<NAME>{filter,listener}` ([`CounterSet`] has the
//! naming and an example).
//!
//! # Example
//!
//! ```
//! use nuncio_filter::{Filter, Hook, RequestHead, Status, StreamCx};
//!
//! /// Refuses requests without an API key.
//! struct RequireKey;
//!
//! impl Filter for RequireKey {
//!     fn request_headers<'a>(
//!         &'a mut self,
//!         _cx: &'a mut StreamCx,
//!         head: &'a mut RequestHead,
//!         _end_of_stream: bool,
//!     ) -> Hook<'a> {
//!         if head.headers.contains_key("x-api-key") {
//!             Status::Continue.into()
//!         } else {
//!             Status::local_reply(http::StatusCode::UNAUTHORIZED, "missing x-api-key\n").into()
//!         }
//!     }
//! }
//! ```

mod counters;
mod factory;
mod field_names;
mod filter;
mod handle;
mod head;
mod http_client;
mod mailbox;
mod status;
mod sync;

#[cfg(all(test, nuncio_loom))]
mod tests;

pub use bytes::{Bytes, BytesMut};
pub use counters::{CounterSet, CounterSink, CounterSpec, FilterCounter};
pub use factory::{ClusterRef, ConfigError, FilterFactory, FilterKind, parse_config};
pub use field_names::{field_name, field_value};
pub use filter::{Filter, StreamCx};
pub use handle::{StreamHandle, StreamOps};
pub use head::{RequestHead, ResponseHead};
pub use http;
pub use http_client::{CallError, CallFuture, CallOptions, DEFAULT_MAX_RESPONSE_BYTES, HttpClient};
pub use mailbox::Mailbox;
#[doc(hidden)]
pub use mailbox::live_mailboxes;
pub use nuncio_context::Context;
pub use status::{Hook, LocalReply, Status};

/// Why a stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream ended (completed, reset, timed out or answered locally):
    /// there is nothing left to act on.
    #[error("the stream is gone")]
    StreamGone,
    /// The headers were already forwarded; changing them now would change
    /// nothing.
    #[error("the headers were already sent")]
    HeadersAlreadySent,
    /// The operation needs the stream stopped at a filter (it is not).
    #[error("the stream is not stopped")]
    NotStopped,
}
