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
//!    (`message`) and a `Downstream` to read its body from and write its
//!    response to.
//! 3. `stream`: selects a route (`router`); answers directly, redirects, or
//!    forwards: picks a cluster endpoint (`cluster`: round robin or least
//!    request), prepares the upstream head (hop-by-hop fields out,
//!    `x-forwarded-for`, `x-forwarded-proto`, `x-request-id` in, rewrites),
//!    tries the upstream with retries and timeouts (`upstream`: HTTP/1.1
//!    pool or one HTTP/2 connection per endpoint), and relays the response.
//! 4. Back in `downstream`: the next request on an HTTP/1.1 connection, if
//!    both sides keep it alive.
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

mod admin;
mod attempt;
mod bounded;
mod cluster;
mod deadline;
mod downstream;
mod error;
mod filter_catalog;
mod filter_manager;
mod flow_control;
mod http_client;
mod listener;
mod message;
mod read_buffers;
mod reload;
mod rewrite;
mod router;
mod server;
mod snapshot;
mod stats;
mod stream;
mod stream_info;
mod upstream;
mod worker;

/// A map keyed by names from the config (listeners, clusters), read on
/// every request. Fx hashing: several times cheaper than SipHash for short
/// keys, and the keys are the operator's, never a client's, so hash
/// flooding is not a concern.
pub(crate) type NameMap<V> = rustc_hash::FxHashMap<String, V>;

pub use error::Error;
pub use filter_catalog::FilterKinds;
pub use filter_manager::FilterChainFactory;
pub use nuncio_filter::FilterFactory;
pub use reload::Reloaded;
pub use server::{Addresses, LogLevelHook, Options, Resolver, RunningServer, WATCH_INTERVAL, run};
