//! `StreamHandle`: a stream, reachable from any thread.
//!
//! (Being written: this file fixes the API the proxy's filter manager codes
//! against; the bodies marked `todo` are filled in by the handle work.)

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use nuncio_context::Context;

use crate::Error;
use crate::status::LocalReply;

/// What a handle can do to a stream, implemented by the proxy's filter
/// manager for the stream's current state. Called on the stream's worker,
/// between hooks (never while a hook runs: a hook owns what it was given).
pub trait StreamOps {
    /// The request fields, if not yet forwarded upstream.
    fn request_headers(&mut self) -> Result<&mut HeaderMap, Error>;
    /// The response fields, if not yet sent to the client.
    fn response_headers(&mut self) -> Result<&mut HeaderMap, Error>;
    /// Moves the request fields out of a stopped stream.
    fn take_request_headers(&mut self) -> Result<HeaderMap, Error>;
    /// Puts request fields back (after [`StreamOps::take_request_headers`]).
    fn put_request_headers(&mut self, headers: HeaderMap) -> Result<(), Error>;
    /// Moves the buffered body (of the direction the stream stopped in) out.
    fn take_body(&mut self) -> Result<Bytes, Error>;
    /// Replaces the buffered body.
    fn replace_body(&mut self, body: Bytes) -> Result<(), Error>;
    /// Appends to the buffered body.
    fn append_body(&mut self, data: Bytes) -> Result<(), Error>;
    /// Resumes the chain at the filter after the one that stopped.
    fn resume(&mut self) -> Result<(), Error>;
    /// Answers the client now.
    fn local_reply(&mut self, reply: LocalReply) -> Result<(), Error>;
}

/// A stream, reachable from any thread: every call is posted to the
/// stream's worker and answered from there. Once the stream is gone, every
/// call returns [`Error::StreamGone`].
#[derive(Clone)]
pub struct StreamHandle {
    context: Context,
}

impl StreamHandle {
    /// The stream's context (cancelled when the stream ends).
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Sets a request field (replacing any of that name).
    pub async fn set_request_header(&self, name: HeaderName, value: HeaderValue) -> Result<(), Error> {
        self.call(move |ops| {
            ops.request_headers()?.insert(name, value);
            Ok(())
        })
        .await
    }

    /// Runs `op` on the stream's worker with the stream's operations; the
    /// one mechanism every other call is made of.
    pub async fn call<R, F>(&self, op: F) -> Result<R, Error>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn StreamOps) -> Result<R, Error> + Send + 'static,
    {
        let _ = op;
        Err(Error::StreamGone)
    }
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandle").finish_non_exhaustive()
    }
}
