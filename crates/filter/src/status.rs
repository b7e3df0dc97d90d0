//! What a hook answers.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// What the chain does after a hook, with Envoy's meaning.
#[derive(Debug)]
pub enum Status {
    /// Go on to the next filter.
    Continue,
    /// Stop here; the chain resumes at the next filter when the filter
    /// calls [`StreamHandle::resume`](crate::StreamHandle) (or the stream ends).
    StopIteration,
    /// Body hooks: keep the body in the stream's buffer up to the
    /// listener's limit, then call this hook once more with the whole body
    /// and end of stream. Over the limit: 413 for a request, 500 for a
    /// response.
    StopAndBuffer,
    /// Body hooks: keep buffering, but let the sender slow down at the high
    /// watermark instead of failing (streaming with backpressure).
    StopAndWatermark,
    /// Answer the client now: the rest of the request path is skipped, and
    /// the response goes through the response hooks of the filters before
    /// this one.
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
