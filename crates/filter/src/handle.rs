//! `StreamHandle`: a stream, reachable from any thread.
//!
//! # Design
//!
//! A stream's data lives on its worker and is touched only there, and only
//! between hooks. Other threads reach it the way Envoy's Go extension does
//! (writes are posted to the worker; reads hand ownership back and forth),
//! in Rust terms:
//!
//! * **One mechanism.** Every handle method is [`StreamHandle::call`]: the
//!   caller's closure is boxed together with the sending half of a
//!   `tokio::sync::oneshot`, posted to the stream's worker through its
//!   [`DispatcherHandle`](nuncio_runtime::DispatcherHandle), run there on
//!   the stream's [`StreamOps`], and its result sent back. Reads are round
//!   trips that return clones; the zero-copy path is an ownership transfer
//!   ([`StreamHandle::take_request_headers`] /
//!   [`StreamHandle::put_request_headers`], [`StreamHandle::take_body`] /
//!   [`StreamHandle::replace_body`]).
//! * **A mailbox per stream, on the worker.** The filter manager creates a
//!   [`Mailbox`] per stream ([`Mailbox::new`], which also returns the first
//!   handle). A posted closure does not touch the stream: it finds the
//!   mailbox in a worker-thread-local registry (a slab of `Weak<Mailbox>`,
//!   keyed by slot and by a stream id that is never reused, so an operation
//!   for an ended stream never lands in the stream that took its slot),
//!   queues the operation there and wakes the manager. The manager applies
//!   the queue only at safe points: after each hook ([`Mailbox::drain`]),
//!   and while the stream waits ([`Mailbox::ready`], then `drain`). A hook
//!   in progress therefore owns what it was given, and no operation ever
//!   observes a half-done hook.
//! * **Gone means gone, never a crash.** When the stream ends the manager
//!   closes or drops the mailbox: it clears an alive flag shared (one
//!   `Arc`) with the handles, leaves the registry and drops what is queued.
//!   A call checks the flag before posting, so once the stream is gone it
//!   fails with [`Error::StreamGone`] at once. A call already in flight
//!   finds no mailbox on the worker and its operation is dropped unrun;
//!   dropping the operation drops its reply sender, which the caller sees
//!   as `StreamGone`. A stopped worker refuses the post, or drops the
//!   closure when its loop ends: `StreamGone` again. Every call thus gets
//!   exactly one answer, `Ok` only if its operation ran, and no operation
//!   runs after the stream ended (model-checked with loom in
//!   `src/tests/loom_handle.rs`).
//! * **No lock on the worker's side.** The mailbox is a `RefCell` queue and
//!   a `Cell<Option<Waker>>`; the registry is a thread-local `RefCell`; the
//!   alive flag is an atomic written only by the worker; replies go through
//!   a lock-free oneshot. The dispatcher's post queue is the runtime's.
//! * **Panics stay with the caller.** A panic in the caller's closure (or
//!   in the `StreamOps` it called) is caught on the worker and resumed in
//!   the caller when it gets its answer; the worker and the stream go on.
//!
//! A mailbox needs a worker: [`Mailbox::new`] panics on a thread without a
//! current [`nuncio_runtime::Dispatcher`]. Tests run the stream on one
//! (`Dispatcher::spawn`, or `Dispatcher::new` on the test thread).
//!
//! # Ordering and cancellation
//!
//! Operations posted from one thread are applied in the order they were
//! posted (a call posts when first polled). Dropping a call's future after
//! it posted does not recall the operation: it is applied anyway and its
//! answer discarded. A hook must not await a call on its own stream: the
//! call is only answered after the hook returns.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use nuncio_context::Context;
use tokio::sync::oneshot;

use crate::Error;
#[cfg(doc)]
use crate::mailbox::Mailbox;
use crate::mailbox::{Link, Op, deliver};
use crate::status::LocalReply;
use crate::sync::Arc;

/// What a handle can do to a stream, implemented by the proxy's filter
/// manager for the stream's current state. Called on the stream's worker,
/// between hooks (never while a hook runs: a hook owns what it was given).
///
/// The errors, as nuncio's manager answers them: [`Error::HeadersAlreadySent`]
/// for the request fields once forwarded upstream, and for the response
/// fields or a local reply once the response head went to the client;
/// [`Error::NotStopped`] for what needs the stream stopped where it is not
/// (a body operation when no filter holds body, `resume` with nothing
/// stopped, the response fields before the response exists).
pub trait StreamOps {
    /// The request fields, if not yet forwarded upstream.
    fn request_headers(&mut self) -> Result<&mut HeaderMap, Error>;
    /// The response fields: in the response head hooks, or while the proxy
    /// holds the head back (a filter holds response body); not once sent.
    fn response_headers(&mut self) -> Result<&mut HeaderMap, Error>;
    /// Moves the request fields out of a stream stopped at a request
    /// headers hook.
    fn take_request_headers(&mut self) -> Result<HeaderMap, Error>;
    /// Puts request fields back (after [`StreamOps::take_request_headers`]).
    fn put_request_headers(&mut self, headers: HeaderMap) -> Result<(), Error>;
    /// Moves out the body held by the filter where the stream is stopped
    /// (in the current direction: the first filter holding body — stopped,
    /// buffering or watermarking). The filter keeps holding (now nothing)
    /// until it is resumed.
    fn take_body(&mut self) -> Result<Bytes, Error>;
    /// Replaces that held body.
    fn replace_body(&mut self, body: Bytes) -> Result<(), Error>;
    /// Appends to that held body.
    fn append_body(&mut self, data: Bytes) -> Result<(), Error>;
    /// Resumes the chain at the filter after the one that stopped (what it
    /// held goes on). Later calls in the same batch find it not stopped.
    fn resume(&mut self) -> Result<(), Error>;
    /// Answers the client now (see [`Status::LocalReply`](crate::Status)).
    fn local_reply(&mut self, reply: LocalReply) -> Result<(), Error>;
}

/// A stream, reachable from any thread: every call is posted to the
/// stream's worker and answered from there. Once the stream is gone, every
/// call returns [`Error::StreamGone`].
///
/// Made by the proxy with [`Mailbox::new`], on the stream's worker. Every
/// method is [`StreamHandle::call`]: the operation is posted to the worker,
/// queued in the stream's [`Mailbox`], applied by the filter manager at the
/// stream's next safe point (between hooks), and its result sent back.
/// Cheap to clone (a context and one `Arc`).
#[derive(Clone)]
pub struct StreamHandle {
    context: Context,
    link: Arc<Link>,
}

/// What a call's closure sends back: its result, or the panic it raised.
type Reply<R> = Result<Result<R, Error>, Box<dyn Any + Send>>;

impl StreamHandle {
    pub(crate) fn new(context: Context, link: Arc<Link>) -> StreamHandle {
        StreamHandle { context, link }
    }

    /// The stream's context (cancelled when the stream ends).
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Runs `op` on the stream's worker with the stream's operations; the
    /// one mechanism every other call is made of.
    ///
    /// `op` runs at the stream's next safe point (between hooks), at most
    /// once. Fails with [`Error::StreamGone`], without running `op`, when
    /// the stream has ended or ends before `op` gets its turn, or when its
    /// worker has stopped; otherwise returns what `op` returned. If `op`
    /// panics, the panic is resumed here, in the caller.
    pub async fn call<R, F>(&self, op: F) -> Result<R, Error>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn StreamOps) -> Result<R, Error> + Send + 'static,
    {
        let link = &*self.link;
        if !link.is_alive() {
            return Err(Error::StreamGone);
        }
        let (reply, answer) = oneshot::channel::<Reply<R>>();
        let op: Op = Box::new(move |ops: &mut dyn StreamOps| {
            let _ = reply.send(catch_unwind(AssertUnwindSafe(|| op(ops))));
        });
        let key = link.key;
        link.dispatcher.post(move || deliver(key, op)).map_err(|_| Error::StreamGone)?;
        match answer.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => resume_unwind(panic),
            // The op was dropped unrun: the stream or its worker is gone.
            Err(_) => Err(Error::StreamGone),
        }
    }

    /// Sets a request field (replacing any of that name).
    pub async fn set_request_header(&self, name: HeaderName, value: HeaderValue) -> Result<(), Error> {
        self.call(move |ops| {
            ops.request_headers()?.insert(name, value);
            Ok(())
        })
        .await
    }

    /// Adds a request field (keeping any others of that name).
    pub async fn add_request_header(&self, name: HeaderName, value: HeaderValue) -> Result<(), Error> {
        self.call(move |ops| {
            ops.request_headers()?.append(name, value);
            Ok(())
        })
        .await
    }

    /// Removes every request field of that name.
    pub async fn remove_request_header(&self, name: HeaderName) -> Result<(), Error> {
        self.call(move |ops| {
            ops.request_headers()?.remove(name);
            Ok(())
        })
        .await
    }

    /// The first request field of that name (a copy).
    pub async fn request_header(&self, name: HeaderName) -> Result<Option<HeaderValue>, Error> {
        self.call(move |ops| Ok(ops.request_headers()?.get(name).cloned())).await
    }

    /// A copy of the request fields. To work on them off the worker without
    /// copying, take them instead ([`StreamHandle::take_request_headers`]).
    pub async fn request_headers(&self) -> Result<HeaderMap, Error> {
        self.call(|ops| Ok(ops.request_headers()?.clone())).await
    }

    /// Moves the request fields out of the stopped stream; give them back
    /// with [`StreamHandle::put_request_headers`].
    pub async fn take_request_headers(&self) -> Result<HeaderMap, Error> {
        self.call(|ops| ops.take_request_headers()).await
    }

    /// Puts the request fields back into the stream.
    pub async fn put_request_headers(&self, headers: HeaderMap) -> Result<(), Error> {
        self.call(move |ops| ops.put_request_headers(headers)).await
    }

    /// Sets a response field (replacing any of that name).
    pub async fn set_response_header(&self, name: HeaderName, value: HeaderValue) -> Result<(), Error> {
        self.call(move |ops| {
            ops.response_headers()?.insert(name, value);
            Ok(())
        })
        .await
    }

    /// Adds a response field (keeping any others of that name).
    pub async fn add_response_header(&self, name: HeaderName, value: HeaderValue) -> Result<(), Error> {
        self.call(move |ops| {
            ops.response_headers()?.append(name, value);
            Ok(())
        })
        .await
    }

    /// Removes every response field of that name.
    pub async fn remove_response_header(&self, name: HeaderName) -> Result<(), Error> {
        self.call(move |ops| {
            ops.response_headers()?.remove(name);
            Ok(())
        })
        .await
    }

    /// The first response field of that name (a copy).
    pub async fn response_header(&self, name: HeaderName) -> Result<Option<HeaderValue>, Error> {
        self.call(move |ops| Ok(ops.response_headers()?.get(name).cloned())).await
    }

    /// A copy of the response fields.
    pub async fn response_headers(&self) -> Result<HeaderMap, Error> {
        self.call(|ops| Ok(ops.response_headers()?.clone())).await
    }

    /// Moves the body held where the stream is stopped out of the stream
    /// (see [`StreamOps::take_body`]); give it back with
    /// [`StreamHandle::replace_body`] before resuming. `NotStopped` when no
    /// filter holds body.
    pub async fn take_body(&self) -> Result<Bytes, Error> {
        self.call(|ops| ops.take_body()).await
    }

    /// Replaces the buffered body.
    pub async fn replace_body(&self, body: impl Into<Bytes>) -> Result<(), Error> {
        let body = body.into();
        self.call(move |ops| ops.replace_body(body)).await
    }

    /// Appends to the buffered body.
    pub async fn append_body(&self, data: impl Into<Bytes>) -> Result<(), Error> {
        let data = data.into();
        self.call(move |ops| ops.append_body(data)).await
    }

    /// Resumes the chain at the filter after the one that stopped.
    pub async fn resume(&self) -> Result<(), Error> {
        self.call(|ops| ops.resume()).await
    }

    /// Answers the client now.
    pub async fn local_reply(&self, reply: LocalReply) -> Result<(), Error> {
        self.call(move |ops| ops.local_reply(reply)).await
    }
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandle")
            .field("key", &self.link.key)
            .field("alive", &self.link.is_alive())
            .finish_non_exhaustive()
    }
}
