//! What a hook answers.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// What the chain does after a hook, with Envoy's meaning. Every status is
/// valid on every hook unless said otherwise; `docs/filters.md` has the
/// table of what each does on each hook.
#[derive(Debug)]
pub enum Status {
    /// Go on to the next filter (with anything this filter held first).
    Continue,
    /// Stop here, holding what the hook was given (the head, the body
    /// chunk; on a trailers hook an empty body that goes out before the
    /// trailers). Nothing more is read from that side. The chain resumes at
    /// the next filter when someone calls
    /// [`StreamHandle::resume`](crate::StreamHandle::resume) (from any
    /// thread), or answers through
    /// [`StreamHandle::local_reply`](crate::StreamHandle::local_reply); the
    /// handle's `take_body` / `replace_body` / `append_body` act on the held
    /// body meanwhile. A client that leaves ends the stream.
    StopIteration,
    /// Body hooks: keep the body, up to the proxy's per-stream limit
    /// (1 MiB), then call this hook once more with the whole body and end
    /// of stream. Over the limit: 413 for a request, 500 for a response
    /// (whose head the proxy holds back until the body comes out of the
    /// chain; a reset if it had to go out already). A 500 on a headers or
    /// trailers hook (a filter bug).
    StopAndBuffer,
    /// Body hooks: keep the body like `StopAndBuffer`, but call this hook
    /// again with each new chunk; past the limit the proxy stops reading
    /// from the sender (backpressure) until the filter continues (`Continue`
    /// from a later call, or `resume`) or takes the body down under the
    /// limit. Never an error for size. A 500 on a headers or trailers hook.
    StopAndWatermark,
    /// Answer the client now. From the request path the rest of it is
    /// skipped, and the reply passes the response hooks of the filters
    /// before this one. From the response path it replaces the response if
    /// its head has not gone out yet; after that the client sees the
    /// response cut short (a reset or a closed connection).
    LocalReply(LocalReply),
}

impl Status {
    /// A local reply with a plain-text body.
    pub fn local_reply(status: StatusCode, body: impl Into<Bytes>) -> Status {
        Status::LocalReply(LocalReply { status, headers: HeaderMap::new(), body: body.into() })
    }
}

/// A response the filter makes itself.
#[derive(Debug)]
pub struct LocalReply {
    /// Its status.
    pub status: StatusCode,
    /// Its fields (`content-length` is set from the body).
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

/// A hook's answer: ready now (no allocation), or a future to await on the
/// worker. The future may borrow the filter and what the hook was given
/// (`'a`): the chain waits at this filter until it completes, or drops it
/// when the stream ends.
pub enum Hook<'a> {
    /// Decided synchronously.
    Done(Status),
    /// Decided when the future completes.
    Pending(Pin<Box<dyn Future<Output = Status> + 'a>>),
}

impl<'a> Hook<'a> {
    /// An async hook: `Hook::pending(async move { ... Status::Continue })`.
    pub fn pending(future: impl Future<Output = Status> + 'a) -> Hook<'a> {
        Hook::Pending(Box::pin(future))
    }

    /// Its status, awaiting the future if there is one.
    pub async fn resolve(self) -> Status {
        match self {
            Hook::Done(status) => status,
            Hook::Pending(future) => future.await,
        }
    }
}

impl From<Status> for Hook<'_> {
    fn from(status: Status) -> Self {
        Hook::Done(status)
    }
}

impl std::fmt::Debug for Hook<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hook::Done(status) => f.debug_tuple("Done").field(status).finish(),
            Hook::Pending(_) => f.write_str("Pending"),
        }
    }
}
