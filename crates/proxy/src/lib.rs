//! nuncio's data plane: listeners, client connections, routing, upstream
//! connection pools and the admin listener.
//!
//! # Threads
//!
//! [`RunningServer::start`] (or [`run`], on the calling thread) makes a main
//! thread and `workers` worker threads, each with its own
//! [`Dispatcher`](nuncio_runtime::Dispatcher). Main binds every socket,
//! builds one immutable snapshot of the config and delivers it to workers
//! through a [`Slot`](nuncio_runtime::Slot); it also serves admin. Each
//! worker has its own `SO_REUSEPORT` socket per listener, and owns the
//! connections it accepts, their streams, and its upstream connection
//! pools, for life. Nothing on the request path takes a lock.
//!
//! # A request, top to bottom
//!
//! 1. `listener`: a worker accepts a connection (within the listener's
//!    `max_connections`) and serves it on a local task.
//! 2. `downstream`: tells HTTP/1.1 from h2c by the connection preface.
//!    HTTP/1.1 reads a head with the idle and header timeouts on nuncio's
//!    own codec ([`nuncio_http1`]; a malformed head gets its 4xx and the
//!    connection closes); HTTP/2 (the `h2` crate) runs each stream as a
//!    local task. Either way the request becomes a protocol-neutral head
//!    (`message`) and a `Downstream`, protocol only, to read its body from
//!    and write its response to.
//! 3. `stream`: the request's phases, in one file that names them: request
//!    filters (`filter_manager`, whose `FilteredStream` wraps the
//!    `Downstream`), route (`nuncio_router`), then a direct answer, a redirect, or
//!    forwarding: the upstream head (`rewrite`), the deadline (`deadline`),
//!    the request body, the tries (`attempt`: endpoint from `cluster`,
//!    connection from `upstream::pool`, the exchange in `upstream`, full
//!    duplex), the response through the filters; then stats and the access
//!    log.
//! 4. Back in `downstream`: the next request on an HTTP/1.1 connection, if
//!    both sides keep it alive.
//!
//! On main: `server` starts and stops everything, `reload` builds and
//! delivers config snapshots (`snapshot`), `health` decides endpoint
//! health, `admin` answers operators.
//!
//! The modules depend on each other downwards in that order, with one
//! circle on purpose: `downstream` hands each request to `stream::serve`
//! (a connection drives its streams, as Envoy's connection manager drives
//! its active streams), and `stream` works on `downstream`'s `Downstream`
//! through `filter_manager`.
//!
//! # Example
//!
//! ```no_run
//! use nuncio_config::Config;
//! use nuncio_proxy::RunningServer;
//!
//! let server = RunningServer::start(Config::builtin_default()).unwrap();
//! println!("serving on {:?}", server.addresses());
//! server.shutdown();
//! ```

#![forbid(unsafe_code)]

/// `Box::pin(future)` for the request path's large futures, made in place:
/// the box is allocated before the future is made, so the future is built
/// in it. `Box::pin(f(..))` builds the whole future (several KB for a
/// stream) on the stack and copies it into the box: measured, ~490
/// instructions per HTTP/1.1 request for that one copy (docs/benchmarks.md,
/// "Second pass on one worker").
macro_rules! box_in_place {
    ($future:expr) => {
        ::std::boxed::Box::into_pin(::std::boxed::Box::write(::std::boxed::Box::new_uninit(), $future))
    };
}
pub(crate) use box_in_place;

mod admin;
mod attempt;
mod bounded;
mod cluster;
mod deadline;
mod downstream;
mod error;
mod filter_catalog;
mod filter_manager;
mod health;
mod http_client;
mod io;
mod listener;
mod live;
mod message;
mod mirror;
mod options;
mod overload;
mod read_buffers;
mod reload;
mod rewrite;
mod server;
mod snapshot;
mod spans;
mod stats;
mod stats_book;
mod stream;
mod stream_info;
mod timers;
mod upstream;
mod warn_limited;
mod worker;

/// A map keyed by names from the config (listeners, clusters), read on
/// every request. Fx hashing: several times cheaper than SipHash for short
/// keys, and the keys are the operator's, never a client's, so hash
/// flooding is not a concern.
pub(crate) type NameMap<V> = rustc_hash::FxHashMap<String, V>;

pub use error::Error;
pub use filter_catalog::{FilterChainFactory, FilterKinds};
pub use nuncio_filter::FilterFactory;
pub use options::{LogLevelHook, Options, Resolver};
pub use reload::Reloaded;
pub use reload::WATCH_INTERVAL;
pub use server::{Addresses, RunningServer, run};
