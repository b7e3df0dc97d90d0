//! HTTP calls from a filter to a cluster of the running config (Envoy's
//! `AsyncClient`): the proxy's own pools, balancing, circuit breakers,
//! outlier detection and stats, reached from an async hook.
//!
//! # The threading rule
//!
//! An [`HttpClient`] belongs to its stream's worker (`!Send`): call it from
//! a hook (or a task on the same worker), await the answer there. The
//! returned future owns what it needs (`'static`), so a hook may keep it
//! across other awaits; dropping it abandons the call at once (the
//! connection it used is closed, an HTTP/2 stream reset).
//!
//! # Example
//!
//! ```
//! use nuncio_filter::{CallOptions, Filter, Hook, RequestHead, Status, StreamCx, http};
//!
//! /// Asks cluster `policy` whether the path may be served.
//! struct AskPolicy;
//!
//! impl Filter for AskPolicy {
//!     fn request_headers<'a>(&'a mut self, cx: &'a mut StreamCx, head: &'a mut RequestHead, _eos: bool) -> Hook<'a> {
//!         let Some(client) = cx.http_client() else {
//!             return Status::local_reply(http::StatusCode::INTERNAL_SERVER_ERROR, "no HTTP client\n").into();
//!         };
//!         let check = http::Request::get(format!("/allowed{}", head.path())).body(Default::default()).unwrap();
//!         let call = client.call("policy", check, cx.context(), CallOptions::default());
//!         Hook::pending(async move {
//!             match call.await {
//!                 Ok(answer) if answer.status().is_success() => Status::Continue,
//!                 Ok(answer) => Status::local_reply(answer.status(), answer.into_body()),
//!                 Err(error) => Status::local_reply(http::StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
//!             }
//!         })
//!     }
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use nuncio_context::Context;

/// Response bodies up to this size are read unless [`CallOptions`] says
/// otherwise: a call's answer is held in memory whole.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// What a call answers: the whole response (head and body), or why there
/// is none.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, CallError>>>>;

/// Makes HTTP requests to the clusters of the running config, on the
/// stream's worker. The proxy gives each stream one ([`StreamCx::http_client`]).
///
/// [`StreamCx::http_client`]: crate::StreamCx::http_client
pub trait HttpClient {
    /// Sends `request` to an endpoint of `cluster` (chosen by the cluster's
    /// load balancer, within its circuit breakers) and reads the response
    /// whole, up to [`CallOptions::max_response_bytes`].
    ///
    /// * The request: its method, the path and query of its URI (origin
    ///   form: `/check?x=1`), its fields and body. `Host` is its `host`
    ///   field, else the URI's authority, else the cluster's name.
    ///   Hop-by-hop fields are dropped: connections belong to the pool.
    /// * `context` bounds the call: cancelled with it (the stream's context
    ///   is when the client leaves), never past its deadline, and
    ///   [`CallOptions::timeout`] can only shorten that. The time left is
    ///   told to the cluster like a forwarded request's: in the stream's
    ///   listener's `time_left_header` (`x-nuncio-expected-timeout-ms`
    ///   unless configured otherwise, or none), `grpc-timeout` for a gRPC
    ///   request.
    /// * One try: a pooled connection the cluster had closed is replaced
    ///   once, without counting; any other failure is the caller's to
    ///   retry.
    ///
    /// The call counts into the cluster's stats and outlier detection like
    /// a forwarded request.
    fn call(&self, cluster: &str, request: http::Request<Bytes>, context: &Context, options: CallOptions)
    -> CallFuture;
}

/// How one call is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    /// The longest the whole call (connect, request, response body) may
    /// take; `None`: the context's deadline alone. Never extends the
    /// context's deadline.
    pub timeout: Option<Duration>,
    /// A longer response body fails the call with
    /// [`CallError::ResponseTooLarge`].
    pub max_response_bytes: usize,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions { timeout: None, max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES }
    }
}

impl CallOptions {
    /// The defaults with a timeout.
    pub fn with_timeout(timeout: Duration) -> CallOptions {
        CallOptions { timeout: Some(timeout), ..CallOptions::default() }
    }
}

/// Why a call got no response. Each names the cluster, for the log line an
/// operator reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The running config has no cluster of that name (the config checks
    /// the clusters a filter declares through
    /// [`FilterFactory::clusters`](crate::FilterFactory::clusters); this is
    /// a name it did not declare).
    #[error("no cluster \"{cluster}\" in the running config")]
    UnknownCluster {
        /// The name asked for.
        cluster: String,
    },
    /// Every endpoint of the cluster is unhealthy or ejected.
    #[error("no healthy endpoint in cluster {cluster}")]
    NoHealthyEndpoint {
        /// The cluster.
        cluster: String,
    },
    /// A circuit breaker of the cluster is open (`max_requests`,
    /// `max_connections`, `max_pending_requests`).
    #[error("circuit breaker {breaker} open for cluster {cluster}")]
    Overflow {
        /// The cluster.
        cluster: String,
        /// The breaker's config name.
        breaker: String,
    },
    /// No connection could be made to the chosen endpoint.
    #[error("cannot connect to cluster {cluster}: {reason}")]
    Connect {
        /// The cluster.
        cluster: String,
        /// What the connection attempt said (refused, `connect_timeout`).
        reason: String,
    },
    /// The endpoint closed or reset the connection (or refused the HTTP/2
    /// stream) before answering.
    #[error("cluster {cluster} closed the call before answering")]
    Reset {
        /// The cluster.
        cluster: String,
    },
    /// The call's deadline (the context's, or [`CallOptions::timeout`])
    /// passed before the response was whole.
    #[error("cluster {cluster} did not answer in time")]
    Timeout {
        /// The cluster.
        cluster: String,
    },
    /// The context was cancelled (the stream ended: the client left).
    #[error("call to cluster {cluster} cancelled: the stream ended")]
    Cancelled {
        /// The cluster.
        cluster: String,
    },
    /// The request could not be sent as given (its URI has no path).
    #[error("bad request for cluster {cluster}: {reason}")]
    BadRequest {
        /// The cluster.
        cluster: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The response could not be decoded, or its body failed midway.
    #[error("invalid response from cluster {cluster}: {reason}")]
    BadResponse {
        /// The cluster.
        cluster: String,
        /// What was wrong.
        reason: String,
    },
    /// The response body is longer than [`CallOptions::max_response_bytes`].
    #[error("response from cluster {cluster} is larger than {limit} bytes")]
    ResponseTooLarge {
        /// The cluster.
        cluster: String,
        /// The limit it passed.
        limit: usize,
    },
}

impl CallError {
    /// The cluster the call went to.
    pub fn cluster(&self) -> &str {
        match self {
            CallError::UnknownCluster { cluster }
            | CallError::NoHealthyEndpoint { cluster }
            | CallError::Overflow { cluster, .. }
            | CallError::Connect { cluster, .. }
            | CallError::Reset { cluster }
            | CallError::Timeout { cluster }
            | CallError::Cancelled { cluster }
            | CallError::BadRequest { cluster, .. }
            | CallError::BadResponse { cluster, .. }
            | CallError::ResponseTooLarge { cluster, .. } => cluster,
        }
    }
}
