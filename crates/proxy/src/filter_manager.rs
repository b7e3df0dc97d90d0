//! The filter manager: runs a stream's filters with Envoy's semantics.
//!
//! Request hooks run in order; a filter that answers locally ends the
//! request path there, and the response — its own or the upstream's —
//! passes the response hooks of the filters that saw the request, in
//! reverse order. A hook may be synchronous (no allocation) or a future
//! awaited on the worker; the stream's context going done drops it. A hook
//! that panics ends the stream with a 500 (or a reset once the response
//! started), counts `filter_panics`, and leaves the worker serving.
//!
//! Supported now: every hook; `Continue` and `LocalReply` everywhere;
//! `StopIteration` on request headers (resumed through the stream's
//! `StreamHandle`, whose calls are applied between hooks); `StopAndBuffer`
//! on request bodies (1 MiB, then 413). Not yet: `StopAndWatermark`, and
//! stopping on the response path — a filter returning those gets a 500
//! saying so, rather than a silent continue.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use nuncio_filter::{
    Error as FilterError, Filter, FilterFactory, Hook, LocalReply, Mailbox, RequestHead, ResponseHead, Status,
    StreamCx, StreamOps,
};

use crate::message::BodyFrame;

/// The filters of a listener, in order.
pub type FilterChainFactory = Arc<[Arc<dyn FilterFactory>]>;

/// What a hook (or the chain) decided, for the stream layer.
pub(crate) enum Outcome {
    /// Go on (to the router, or to the client).
    Continue,
    /// Answer the client with this instead.
    Reply(LocalReply),
    /// The stream ended while a filter held it (client gone, timeout):
    /// nothing more to do.
    Gone,
}

/// A stream's filters and their state.
pub(crate) struct Chain {
    filters: Vec<Box<dyn Filter>>,
    names: FilterChainFactory,
    pub(crate) cx: StreamCx,
    /// How many filters saw the request (the response path runs these).
    entered: usize,
    /// Hooks that panicked on this stream.
    pub(crate) panics: u64,
    /// The request body kept for each filter that answered `StopAndBuffer`.
    buffers: Vec<Option<BytesMut>>,
    /// Where the stream's handles' calls wait to be applied.
    mailbox: Rc<Mailbox>,
}

/// How a wait at a stopped filter ended.
enum Waited {
    Resumed,
    Reply(LocalReply),
    /// The stream's context is done (client gone, timeout).
    Gone,
}

impl Chain {
    /// Runs on the stream's worker (the mailbox belongs to it).
    pub(crate) fn new(factories: &FilterChainFactory, mut cx: StreamCx) -> Chain {
        let (mailbox, handle) = Mailbox::new(cx.context().clone());
        cx.set_handle(handle);
        Chain {
            mailbox,
            filters: factories.iter().map(|f| f.create()).collect(),
            names: factories.clone(),
            cx,
            entered: 0,
            panics: 0,
            buffers: factories.iter().map(|_| None).collect(),
        }
    }

    /// The request head through every filter, in order.
    /// `closed` resolves when the client leaves: a hook pending or a filter
    /// stopped then ends the stream at once (`Gone`).
    pub(crate) async fn request_headers(
        &mut self,
        head: &mut RequestHead,
        end_of_stream: bool,
        mut closed: Pin<&mut dyn Future<Output = ()>>,
    ) -> Outcome {
        for i in 0..self.filters.len() {
            self.entered = i + 1;
            let (filter, cx, view) = (&mut self.filters[i], &mut self.cx, &mut *head);
            let hook = call(move || filter.request_headers(cx, view, end_of_stream));
            let status = tokio::select! {
                status = guarded(hook) => status,
                () = closed.as_mut() => return Outcome::Gone,
            };
            let status = match status {
                Ok(Status::StopIteration) => match self.wait(head, closed.as_mut()).await {
                    Waited::Resumed => Ok(Status::Continue),
                    Waited::Reply(reply) => Ok(Status::LocalReply(reply)),
                    Waited::Gone => return Outcome::Gone,
                },
                other => other,
            };
            // Calls that came in while the hook ran apply now.
            let mut ops = RequestOps { head: &mut *head, stopped: false, resumed: false, reply: None };
            self.mailbox.drain(&mut ops);
            let status = match ops.reply {
                Some(reply) => Ok(Status::LocalReply(reply)),
                None => status,
            };
            match self.decide(i, status) {
                Outcome::Continue => {}
                Outcome::Gone => return Outcome::Gone,
                reply @ Outcome::Reply(_) => {
                    // Its answer passes the filters before it, not itself.
                    self.entered = i;
                    return reply;
                }
            }
        }
        Outcome::Continue
    }

    /// Stopped at a filter: applies handle calls as they come until one
    /// resumes the chain or answers, or the stream ends.
    async fn wait(&mut self, head: &mut RequestHead, mut closed: Pin<&mut dyn Future<Output = ()>>) -> Waited {
        let context = self.cx.context().clone();
        loop {
            let mut ops = RequestOps { head: &mut *head, stopped: true, resumed: false, reply: None };
            self.mailbox.drain(&mut ops);
            if let Some(reply) = ops.reply {
                return Waited::Reply(reply);
            }
            if ops.resumed {
                return Waited::Resumed;
            }
            tokio::select! {
                () = self.mailbox.ready() => {}
                () = context.done() => return Waited::Gone,
                () = closed.as_mut() => return Waited::Gone,
            }
        }
    }

    /// Applies handle calls that came in, once the request head is gone
    /// upstream (they see `HeadersAlreadySent` for it).
    pub(crate) fn drain_forwarded(&mut self) {
        self.mailbox.drain(&mut ForwardedOps);
    }

    /// The response head through the filters that saw the request, in
    /// reverse order.
    pub(crate) async fn response_headers(&mut self, head: &mut ResponseHead, end_of_stream: bool) -> Outcome {
        for i in (0..self.entered).rev() {
            let (filter, cx, head) = (&mut self.filters[i], &mut self.cx, &mut *head);
            let hook = call(move || filter.response_headers(cx, head, end_of_stream));
            let status = guarded(hook).await;
            match self.decide(i, status) {
                Outcome::Continue => {}
                end => return end,
            }
        }
        Outcome::Continue
    }

    /// A request body frame through every filter, in order; what comes out
    /// (zero or more frames) goes to `out`. A filter that answers
    /// `StopAndBuffer` gets the frames kept for it (up to the limit) and is
    /// called once more with the whole body at its end.
    pub(crate) async fn request_body(&mut self, frame: Option<BodyFrame>, out: &mut VecDeque<BodyFrame>) -> Outcome {
        // Frames entering filter `i`, and whether the body ends with them.
        let mut frames: VecDeque<Option<BodyFrame>> = VecDeque::from([frame]);
        for i in 0..self.filters.len() {
            let mut next = VecDeque::new();
            while let Some(frame) = frames.pop_front() {
                match frame {
                    Some(BodyFrame::Data(mut data)) => {
                        if let Some(buffer) = &mut self.buffers[i] {
                            if buffer.len() + data.len() > REQUEST_BUFFER_LIMIT {
                                return Outcome::Reply(too_large());
                            }
                            buffer.extend_from_slice(&data);
                            continue;
                        }
                        let eos = false;
                        let (filter, cx, body) = (&mut self.filters[i], &mut self.cx, &mut data);
                        let status = guarded(call(move || filter.request_body(cx, body, eos))).await;
                        match status {
                            Ok(Status::Continue) => next.push_back(Some(BodyFrame::Data(data))),
                            Ok(Status::StopAndBuffer) => {
                                if data.len() > REQUEST_BUFFER_LIMIT {
                                    return Outcome::Reply(too_large());
                                }
                                self.buffers[i] = Some(BytesMut::from(&data[..]));
                            }
                            other => match self.decide(i, other) {
                                Outcome::Continue => next.push_back(Some(BodyFrame::Data(data))),
                                reply => return reply,
                            },
                        }
                    }
                    end @ (Some(BodyFrame::Trailers(_)) | None) => {
                        // The body ends here: a buffering filter gets it whole.
                        if let Some(buffer) = self.buffers[i].take() {
                            let mut whole = buffer.freeze();
                            let (filter, cx, body) = (&mut self.filters[i], &mut self.cx, &mut whole);
                            let status = guarded(call(move || filter.request_body(cx, body, true))).await;
                            match status {
                                Ok(Status::Continue) => {}
                                other => {
                                    if let reply @ Outcome::Reply(_) = self.decide(i, other) {
                                        return reply;
                                    }
                                }
                            }
                            if !whole.is_empty() {
                                next.push_back(Some(BodyFrame::Data(whole)));
                            }
                        }
                        let end = match end {
                            Some(BodyFrame::Trailers(mut trailers)) => {
                                let (filter, cx, t) = (&mut self.filters[i], &mut self.cx, &mut trailers);
                                let status = guarded(call(move || filter.request_trailers(cx, t))).await;
                                if let reply @ Outcome::Reply(_) = self.decide(i, status) {
                                    return reply;
                                }
                                Some(BodyFrame::Trailers(trailers))
                            }
                            _ => None,
                        };
                        next.push_back(end);
                    }
                }
            }
            frames = next;
        }
        out.extend(frames.into_iter().flatten());
        Outcome::Continue
    }

    /// A response body chunk through the filters that saw the request, in
    /// reverse order. (Buffering a response is not supported yet: it would
    /// need the head held back too.)
    pub(crate) async fn response_body(&mut self, data: &mut Bytes, end_of_stream: bool) -> Outcome {
        for i in (0..self.entered).rev() {
            let (filter, cx, body) = (&mut self.filters[i], &mut self.cx, &mut *data);
            let status = guarded(call(move || filter.response_body(cx, body, end_of_stream))).await;
            if let reply @ Outcome::Reply(_) = self.decide(i, status) {
                return reply;
            }
        }
        Outcome::Continue
    }

    /// The response trailers through the filters, in reverse order.
    pub(crate) async fn response_trailers(&mut self, trailers: &mut HeaderMap) -> Outcome {
        for i in (0..self.entered).rev() {
            let (filter, cx, t) = (&mut self.filters[i], &mut self.cx, &mut *trailers);
            let status = guarded(call(move || filter.response_trailers(cx, t))).await;
            if let reply @ Outcome::Reply(_) = self.decide(i, status) {
                return reply;
            }
        }
        Outcome::Continue
    }

    /// The stream ended: every filter's last call.
    pub(crate) fn complete(&mut self) {
        // Calls still queued find the stream gone.
        self.mailbox.close();
        for filter in &mut self.filters {
            let cx = &self.cx;
            if std::panic::catch_unwind(AssertUnwindSafe(|| filter.on_complete(cx))).is_err() {
                self.panics += 1;
            }
        }
    }

    /// A hook's status, as the stream layer acts on it.
    fn decide(&mut self, index: usize, status: Result<Status, Box<dyn Any + Send>>) -> Outcome {
        let name = self.names.get(index).map_or("?", |f| f.name());
        match status {
            Ok(Status::Continue) => Outcome::Continue,
            Ok(Status::LocalReply(reply)) => Outcome::Reply(reply),
            Ok(Status::StopIteration) if self.cx.context().err().is_some() => Outcome::Gone,
            Ok(other) => {
                tracing::warn!(filter = name, status = ?other, "filter status not supported on this hook yet");
                Outcome::Reply(internal(&format!("nuncio: filter {name} returned {other:?}, not supported here yet")))
            }
            Err(panic) => {
                self.panics += 1;
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(filter = name, panic = %why, "filter panicked; the stream gets a 500");
                Outcome::Reply(internal(&format!("nuncio: filter {name} failed")))
            }
        }
    }
}

/// Most request body kept for a buffering filter (Envoy's default buffer
/// limit); past it the client gets 413.
const REQUEST_BUFFER_LIMIT: usize = 1024 * 1024;

fn too_large() -> LocalReply {
    let mut reply = internal("nuncio: request body larger than a filter may buffer");
    reply.status = http::StatusCode::PAYLOAD_TOO_LARGE;
    reply
}

fn internal(message: &str) -> LocalReply {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    LocalReply { status: http::StatusCode::INTERNAL_SERVER_ERROR, headers, body: format!("{message}\n").into() }
}

/// Calls a hook, catching a panic in the call itself.
fn call<'a>(hook: impl FnOnce() -> Hook<'a>) -> std::thread::Result<Hook<'a>> {
    std::panic::catch_unwind(AssertUnwindSafe(hook))
}

/// A hook's status, with a panic (in the call or in its future) caught.
async fn guarded(hook: std::thread::Result<Hook<'_>>) -> Result<Status, Box<dyn Any + Send>> {
    match hook? {
        Hook::Done(status) => Ok(status),
        Hook::Pending(future) => CatchUnwind(future).await,
    }
}

/// Polls a future, turning a panic into an `Err`.
struct CatchUnwind<'a>(Pin<Box<dyn Future<Output = Status> + 'a>>);

impl Future for CatchUnwind<'_> {
    type Output = Result<Status, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Ready(status)) => Poll::Ready(Ok(status)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// What a handle may do while the request head is still here.
struct RequestOps<'h> {
    head: &'h mut RequestHead,
    /// The chain is stopped at a filter (ownership transfer and resume
    /// allowed).
    stopped: bool,
    resumed: bool,
    reply: Option<LocalReply>,
}

impl StreamOps for RequestOps<'_> {
    fn request_headers(&mut self) -> Result<&mut HeaderMap, FilterError> {
        Ok(&mut self.head.headers)
    }

    fn response_headers(&mut self) -> Result<&mut HeaderMap, FilterError> {
        Err(FilterError::NotStopped)
    }

    fn take_request_headers(&mut self) -> Result<HeaderMap, FilterError> {
        if !self.stopped {
            return Err(FilterError::NotStopped);
        }
        Ok(std::mem::take(&mut self.head.headers))
    }

    fn put_request_headers(&mut self, headers: HeaderMap) -> Result<(), FilterError> {
        if !self.stopped {
            return Err(FilterError::NotStopped);
        }
        self.head.headers = headers;
        Ok(())
    }

    fn take_body(&mut self) -> Result<Bytes, FilterError> {
        Err(FilterError::NotStopped)
    }

    fn replace_body(&mut self, _body: Bytes) -> Result<(), FilterError> {
        Err(FilterError::NotStopped)
    }

    fn append_body(&mut self, _data: Bytes) -> Result<(), FilterError> {
        Err(FilterError::NotStopped)
    }

    fn resume(&mut self) -> Result<(), FilterError> {
        if !self.stopped {
            return Err(FilterError::NotStopped);
        }
        self.resumed = true;
        Ok(())
    }

    fn local_reply(&mut self, reply: LocalReply) -> Result<(), FilterError> {
        if self.reply.is_some() {
            return Err(FilterError::HeadersAlreadySent);
        }
        self.reply = Some(reply);
        Ok(())
    }
}

/// What a handle may do once the request went upstream: nothing to the
/// request any more.
struct ForwardedOps;

impl StreamOps for ForwardedOps {
    fn request_headers(&mut self) -> Result<&mut HeaderMap, FilterError> {
        Err(FilterError::HeadersAlreadySent)
    }

    fn response_headers(&mut self) -> Result<&mut HeaderMap, FilterError> {
        Err(FilterError::NotStopped)
    }

    fn take_request_headers(&mut self) -> Result<HeaderMap, FilterError> {
        Err(FilterError::HeadersAlreadySent)
    }

    fn put_request_headers(&mut self, _headers: HeaderMap) -> Result<(), FilterError> {
        Err(FilterError::HeadersAlreadySent)
    }

    fn take_body(&mut self) -> Result<Bytes, FilterError> {
        Err(FilterError::NotStopped)
    }

    fn replace_body(&mut self, _body: Bytes) -> Result<(), FilterError> {
        Err(FilterError::NotStopped)
    }

    fn append_body(&mut self, _data: Bytes) -> Result<(), FilterError> {
        Err(FilterError::NotStopped)
    }

    fn resume(&mut self) -> Result<(), FilterError> {
        Err(FilterError::NotStopped)
    }

    fn local_reply(&mut self, _reply: LocalReply) -> Result<(), FilterError> {
        Err(FilterError::HeadersAlreadySent)
    }
}
