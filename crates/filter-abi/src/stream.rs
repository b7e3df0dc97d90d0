//! A stream's worker-side record for the library: where a deferred
//! decision lands, its handle (for posted calls), its HTTP client, and the
//! HTTP calls in flight. Lives on the stream's worker (`Rc`); other
//! threads reach it only by posting to the worker and looking it up by id
//! (`table::lookup`), so nothing here is shared.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, StatusCode};
use nuncio_context::Context;
use nuncio_filter::{CallOptions, Error as FilterError, HttpClient, LocalReply, StreamHandle, StreamOps};
use nuncio_runtime::Dispatcher;
use tokio::task::AbortHandle;

use crate::abi::status;
use crate::boundary::Library;
use crate::decision::Decision;
use crate::table::{self, StreamId};
use crate::wire::{self, CallHead, Edit};

/// One stream, as the library's calls reach it.
pub(crate) struct StreamCell {
    pub(crate) id: StreamId,
    library: Library,
    handle: Option<StreamHandle>,
    client: Option<Rc<dyn HttpClient>>,
    context: Context,
    /// The hook that waits for a deferred decision, and the decision once
    /// it came.
    waiting: Cell<Option<u32>>,
    decision: RefCell<Option<Decision>>,
    waker: Cell<Option<Waker>>,
    /// A hook was dropped while it waited (the stream ended under it).
    pub(crate) abandoned: Cell<bool>,
    /// HTTP calls in flight, by the library's call id.
    calls: RefCell<HashMap<u64, AbortHandle>>,
}

impl StreamCell {
    /// Registers a new stream on this worker; `None` on a thread without a
    /// dispatcher or a worker full of streams.
    pub(crate) fn register(
        library: Library,
        handle: Option<StreamHandle>,
        client: Option<Rc<dyn HttpClient>>,
        context: Context,
    ) -> Option<Rc<StreamCell>> {
        let _ = ALIVE.try_with(|_| ());
        let mut registered = None;
        let cell = Rc::new_cyclic(|weak: &Weak<StreamCell>| {
            registered = table::register(weak.clone());
            StreamCell {
                id: registered.unwrap_or(StreamId::from_raw(0)),
                library,
                handle,
                client,
                context,
                waiting: Cell::new(None),
                decision: RefCell::new(None),
                waker: Cell::new(None),
                abandoned: Cell::new(false),
                calls: RefCell::new(HashMap::new()),
            }
        });
        registered.map(|_| cell)
    }

    /// Hook `hook` waits for a deferred decision.
    pub(crate) fn wait_for(&self, hook: u32) {
        self.waiting.set(Some(hook));
        *self.decision.borrow_mut() = None;
    }

    /// The hook decided inline: nothing to wait for.
    pub(crate) fn stop_waiting(&self) {
        self.waiting.set(None);
    }

    /// A deferred decision arrived (posted by `decide`).
    pub(crate) fn deliver(&self, hook: u32, decision: Decision) {
        if self.waiting.get() != Some(hook) {
            return;
        }
        *self.decision.borrow_mut() = Some(decision);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// The decision of `hook`, once it came.
    pub(crate) fn decision(self: &Rc<Self>, hook: u32) -> AwaitDecision {
        AwaitDecision { cell: self.clone(), hook, done: false }
    }

    /// Runs a posted call on this stream (on its worker): the operation
    /// goes through the stream's [`StreamHandle`] (applied by the filter
    /// manager between hooks), and its result back to the library.
    pub(crate) fn start_call(&self, dispatcher: &Dispatcher, call: u64, op: Op) {
        let completion = CallCompletion { library: self.library, call, sent: false };
        let Some(handle) = self.handle.clone() else {
            return completion.send(status::STREAM_GONE as i32, &[]);
        };
        let task = async move {
            let result = handle.call(move |ops| op.apply(ops)).await;
            match result {
                Ok(data) => completion.send(status::OK as i32, &data),
                Err(error) => completion.send(status_of(&error), &[]),
            }
        };
        // A stopped worker drops the task, whose completion says gone.
        let _ = dispatcher.spawn_local(task);
    }

    /// Starts an HTTP call from this stream (on its worker).
    pub(crate) fn start_http(self: &Rc<Self>, dispatcher: &Dispatcher, call: u64, request: HttpRequest) {
        let mut completion = HttpCompletion { library: self.library, call, sent: false };
        let Some(client) = self.client.clone() else {
            return completion.failed(status::CALL_FAILED as i32, "this stream has no HTTP client");
        };
        let HttpRequest { cluster, head, body, timeout, max_bytes } = request;
        let mut builder = http::Request::builder().method(head.method).uri(head.path);
        if let Some(authority) = head.authority
            && !head.fields.contains_key(HOST)
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            builder = builder.header(HOST, host);
        }
        let Ok(mut request) = builder.body(body) else {
            return completion.failed(status::INVALID as i32, "the request cannot be built");
        };
        request.headers_mut().extend(head.fields);
        let options = CallOptions { timeout, max_response_bytes: max_bytes };
        let future = client.call(&cluster, request, &self.context, options);
        let cell = Rc::downgrade(self);
        let task = async move {
            let result = future.await;
            if let Some(cell) = cell.upgrade() {
                cell.calls.borrow_mut().remove(&call);
            }
            match result {
                Ok(response) => completion.ok(&response),
                Err(error) => completion.failed(status::CALL_FAILED as i32, &error.to_string()),
            }
        };
        if let Ok(task) = dispatcher.spawn_local(task) {
            self.calls.borrow_mut().insert(call, task.abort_handle());
        }
    }

    /// Abandons an HTTP call (its completion then says gone).
    pub(crate) fn cancel_http(&self, call: u64) {
        if let Some(task) = self.calls.borrow_mut().remove(&call) {
            task.abort();
        }
    }
}

impl Drop for StreamCell {
    fn drop(&mut self) {
        for (_, task) in self.calls.get_mut().drain() {
            task.abort();
        }
    }
}

/// Resolves with the deferred decision of one hook. Dropped before that
/// (the stream ended while the hook waited), it marks the stream
/// abandoned and stops waiting, so a late decision finds nothing to
/// decide.
pub(crate) struct AwaitDecision {
    cell: Rc<StreamCell>,
    hook: u32,
    done: bool,
}

impl Future for AwaitDecision {
    type Output = Decision;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Decision> {
        let decided = self.cell.decision.borrow_mut().take();
        if let Some(decision) = decided {
            self.done = true;
            self.cell.waiting.set(None);
            return Poll::Ready(decision);
        }
        self.cell.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for AwaitDecision {
    fn drop(&mut self) {
        if !self.done && self.cell.waiting.get() == Some(self.hook) {
            self.cell.abandoned.set(true);
            self.cell.waiting.set(None);
            table::forget_pending(self.cell.id);
        }
    }
}

/// The status a call's error maps to.
fn status_of(error: &FilterError) -> i32 {
    (match error {
        FilterError::StreamGone => status::STREAM_GONE,
        FilterError::HeadersAlreadySent => status::HEADERS_SENT,
        FilterError::NotStopped => status::NOT_STOPPED,
        _ => status::INVALID,
    }) as i32
}

/// A posted operation, checked and owned.
#[derive(Debug)]
pub(crate) enum Op {
    ReadRequest,
    EditRequest(Vec<Edit>),
    ReadResponse,
    EditResponse(Vec<Edit>),
    ReadBody,
    ReplaceBody(Bytes),
    AppendBody(Bytes),
    Resume,
    Reply(LocalReply),
}

impl Op {
    /// Runs on the worker, between hooks; the data read, if any.
    fn apply(self, ops: &mut dyn StreamOps) -> Result<Vec<u8>, FilterError> {
        let mut out = Vec::new();
        match self {
            Op::ReadRequest => wire::put_fields(&mut out, ops.request_headers()?),
            Op::EditRequest(edits) => wire::apply_fields(&edits, ops.request_headers()?),
            Op::ReadResponse => wire::put_fields(&mut out, ops.response_headers()?),
            Op::EditResponse(edits) => wire::apply_fields(&edits, ops.response_headers()?),
            Op::ReadBody => {
                let body = ops.take_body()?;
                out.extend_from_slice(&body);
                ops.replace_body(body)?;
            }
            Op::ReplaceBody(body) => ops.replace_body(body)?,
            Op::AppendBody(data) => ops.append_body(data)?,
            Op::Resume => ops.resume()?,
            Op::Reply(reply) => ops.local_reply(reply)?,
        }
        Ok(out)
    }
}

/// An HTTP call, checked and owned.
#[derive(Debug)]
pub(crate) struct HttpRequest {
    pub(crate) cluster: String,
    pub(crate) head: CallHead,
    pub(crate) body: Bytes,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_bytes: usize,
}

/// Answers a posted call exactly once: with its result, or, dropped
/// unanswered (the worker stopped), with `STREAM_GONE`.
struct CallCompletion {
    library: Library,
    call: u64,
    sent: bool,
}

impl CallCompletion {
    fn send(mut self, status: i32, data: &[u8]) {
        self.sent = true;
        self.library.call_done(self.call, status, data);
    }
}

impl Drop for CallCompletion {
    fn drop(&mut self) {
        if !self.sent && still_running() {
            self.library.call_done(self.call, status::STREAM_GONE as i32, &[]);
        }
    }
}

/// Answers an HTTP call exactly once (`STREAM_GONE` when dropped
/// unanswered: the stream ended, or the call was cancelled).
struct HttpCompletion {
    library: Library,
    call: u64,
    sent: bool,
}

impl HttpCompletion {
    fn ok(&mut self, response: &http::Response<Bytes>) {
        let mut fields = Vec::new();
        wire::put_fields(&mut fields, response.headers());
        self.sent = true;
        let code = u32::from(response.status().as_u16());
        self.library.http_done(self.call, status::OK as i32, code, &fields, response.body());
    }

    fn failed(&mut self, status: i32, reason: &str) {
        self.sent = true;
        self.library.http_done(self.call, status, u32::from(StatusCode::BAD_GATEWAY.as_u16()), &[], reason.as_bytes());
    }
}

impl Drop for HttpCompletion {
    fn drop(&mut self) {
        if !self.sent && still_running() {
            self.library.http_done(self.call, status::STREAM_GONE as i32, 0, &[], b"the stream ended");
        }
    }
}

/// Whether this thread may still call into the library: not while its
/// thread-locals are torn down (a worker that ends drops its tasks there,
/// and the library's runtime may have let go of the thread already).
pub(crate) fn still_running() -> bool {
    ALIVE.try_with(|_| ()).is_ok()
}

/// A thread-local with a destructor: once it is torn down, `try_with`
/// fails. Touched when a stream registers, so it exists before any
/// completion can be dropped.
struct ThreadAlive;

impl Drop for ThreadAlive {
    fn drop(&mut self) {}
}

thread_local! {
    static ALIVE: ThreadAlive = const { ThreadAlive };
}
