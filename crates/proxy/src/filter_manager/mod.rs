//! The filter manager: runs a stream's filters with Envoy's semantics.
//!
//! [`FilteredStream`] is the one owner of a stream's filters: the stream
//! layer reads the request body from it and writes the response to it, and
//! it passes each through the hooks ([`chain`]) on the way to or from the
//! protocol-only [`Downstream`]. Without filters it passes everything
//! straight through, and so it passes a direction that no filter of the
//! chain acts on (`FilterFactory::acts_on_request`, `acts_on_response`). The stream layer never sees a hook, a held piece or
//! a held-back head; a filter's local reply is kept here and sent when the
//! stream layer asks ([`FilteredStream::send_answer`]), never carried as
//! an upstream error.
//!
//! Request hooks run in order; response hooks in reverse order, over the
//! filters that saw the request. A hook may be synchronous (no allocation)
//! or a future awaited on the worker; the client leaving drops it. A hook
//! that panics ends the stream with a 500 (or a reset once the response
//! head went out), counts `filter_panics`, and leaves the worker serving.
//!
//! # Statuses, on every hook
//!
//! * `Continue`: on to the next filter, with what this one holds first.
//! * `StopIteration`: the chain waits at this filter, holding what the hook
//!   was given (the request or response head, or the body chunk — or, on a
//!   trailers hook, an empty body that goes out before the trailers). The
//!   stream's [`StreamHandle`](nuncio_filter::StreamHandle) acts on what is
//!   held (headers, `take_body` / `replace_body` / `append_body`) and
//!   resumes the chain at the next filter, or answers locally. Nothing more
//!   is read from that side meanwhile; a client that leaves ends the stream.
//! * `StopAndBuffer` (body hooks): the filter's body is kept, up to
//!   [`PER_STREAM_BUFFER_LIMIT`], and the hook is called once more with all
//!   of it and `end_of_stream` when the body ends (before the trailers, if
//!   any). Over the limit: 413 for a request; 500 for a response if its head
//!   is still held back, a reset otherwise (logged).
//! * `StopAndWatermark` (body hooks): the filter's body is kept as with
//!   `StopAndBuffer`, but the hook is called again with each new chunk
//!   (Envoy's `StopIterationAndWatermark`); past the limit nothing more is
//!   read from the sender (the client, or the upstream) until the filter
//!   continues (`Continue` from a hook, or `resume` through the handle) or
//!   takes the body down under the limit (`take_body`). No error at the
//!   limit: the sender is slowed down instead (TCP or HTTP/2 flow control).
//! * `LocalReply`: from the request path (a hook, or the handle while the
//!   chain is stopped there), the rest of the request path is skipped and
//!   the reply passes the response hooks of the filters before this one.
//!   From the response path it replaces the response if its head is still
//!   held back; once the head went out the stream is reset (HTTP/2) or the
//!   connection closed (HTTP/1.1): the client sees a response cut short.
//!
//! `StopAndBuffer` and `StopAndWatermark` from a headers or trailers hook
//! are a filter bug: 500, logged. Any stop returned with `end_of_stream`
//! (nothing more will come) waits like `StopIteration`.
//!
//! # End of stream
//!
//! A body hook's `end_of_stream` means no more body follows (trailers may).
//! When a body ends without trailers, every filter's body hook is called
//! once with `end_of_stream`: with the body's last data when nuncio has
//! that data and the end together (the last bytes of a known length, a
//! chunked body's last chunk read with its terminator, an HTTP/2 DATA frame
//! with `END_STREAM`, in either direction; data a filter before added at
//! the end), else with an empty chunk (a buffering filter gets its whole
//! body instead). A filter must expect either, as in Envoy. A body that
//! ends with trailers reaches the trailers hooks. A head that said "no
//! body" calls no body hook.
//!
//! # The response head is held back
//!
//! With filters, the response head leaves only with the first body bytes
//! that come out of the chain, or when nuncio waits for the upstream and no
//! filter holds response body. So a filter buffering the response can still
//! replace it, and when the whole body came out at once the head gets its
//! exact length. Released earlier, the head keeps its `content-length`, as
//! the response hooks left it: a filter that changes the length of a body
//! it streams removes that field (Envoy's rule), and the body goes chunked.
//!
//! # Handle calls
//!
//! Calls are applied between hooks: after each headers hook, while the
//! chain is stopped or waiting for the sender to drain, after each body
//! piece, and (when a filter holds body, or on the response path) while
//! nuncio waits for more body. Body operations act on what the first
//! holding filter of the current direction holds (the one where the stream
//! is stopped); `resume` releases it to the next filter. Errors: request
//! fields once forwarded and a local reply or response fields once the
//! response head went out → `HeadersAlreadySent`; anything that needs the
//! stream stopped, when it is not (or, for response fields, before the
//! response exists) → `NotStopped`; after the stream → `StreamGone`.

mod chain;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use nuncio_filter::LocalReply;

pub(crate) use self::chain::{Chain, Directions};

use crate::downstream::{BodyStart, Downstream, WriteError};
use crate::message::{BodyFrame, BodySize, RequestBodyError, RequestHead, ResponseHead};
use crate::upstream::{Acted, RequestSource, Wake};

/// The most body kept for one filter of a stream, per direction (Envoy's
/// `per_connection_buffer_limit_bytes` default, 1 MiB): the buffering
/// limit (`StopAndBuffer`) and the high watermark (`StopAndWatermark`). One
/// constant rather than a setting until an operator needs another value.
pub(crate) const PER_STREAM_BUFFER_LIMIT: usize = 1024 * 1024;

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

/// Which way a body flows through the chain.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Direction {
    /// Client to upstream: filters first to last.
    Request,
    /// Upstream (or a local reply) to client: last to first.
    Response,
}

/// A piece of a body, between filters or out of the chain.
#[derive(Debug)]
pub(crate) enum Piece {
    Data(Bytes),
    /// The body's last data and its end together (no trailers).
    Last(Bytes),
    /// The body ends, with its trailers if it has some.
    End(Option<HeaderMap>),
}

/// Resolves when the client leaves (a stop or a pending hook then ends).
pub(crate) type Closed<'c> = Pin<&'c mut (dyn Future<Output = ()> + 'c)>;

/// A stream's client side as the stream layer sees it: the request body
/// after the request body hooks, the response through the response hooks.
/// Lives on the stream's worker, for the stream's life.
pub(crate) struct FilteredStream<'d, 'c> {
    downstream: &'d mut Downstream<'c>,
    /// The stream's filters; `None`: everything passes straight through.
    chain: Option<Box<Chain>>,
    /// Request body pieces that came out of the filters, not yet taken.
    filtered: VecDeque<Piece>,
    /// What the response body hooks let out of one piece; kept empty
    /// between pieces for its room (one allocation a stream, not a piece).
    response_out: VecDeque<Piece>,
    /// The filtered request body ended.
    filtered_end: bool,
    /// A filter answered from the request body path: sent by
    /// [`FilteredStream::send_answer`].
    answer: Option<LocalReply>,
    /// The response reached the filters: handle calls may act on it.
    responding: bool,
    /// A filter answered instead of the response: what the stream layer
    /// still sends of the original is dropped.
    replaced: bool,
    /// No filter acts on the response: it passes as without filters
    /// ([`Chain::passes_response`]).
    passing: bool,
}

impl<'d, 'c> FilteredStream<'d, 'c> {
    /// `downstream` through `chain` (or straight, without one).
    pub(crate) fn new(downstream: &'d mut Downstream<'c>, chain: Option<Box<Chain>>) -> FilteredStream<'d, 'c> {
        FilteredStream {
            downstream,
            chain,
            filtered: VecDeque::new(),
            response_out: VecDeque::new(),
            filtered_end: false,
            answer: None,
            responding: false,
            replaced: false,
            passing: false,
        }
    }

    /// What the request body starts with, if it is here already (see
    /// [`Downstream::body_start`]).
    pub(crate) fn body_start(&mut self) -> BodyStart {
        self.downstream.body_start()
    }

    /// Whether the request body goes through filters (their body hooks
    /// may change its length).
    pub(crate) fn filters_request(&self) -> bool {
        self.chain.as_deref().is_some_and(|chain| !chain.passes_request())
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.downstream.peer()
    }

    /// The client connection's TLS session, on a TLS listener.
    pub(crate) fn tls(&self) -> Option<&nuncio_tls::SessionInfo> {
        self.downstream.tls()
    }

    /// Request body bytes read from the client, and response body bytes
    /// sent to it.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (self.downstream.bytes_received(), self.downstream.bytes_sent())
    }

    /// The response status, once a head went out.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        self.downstream.status()
    }

    /// Gives up on the client connection after this stream.
    pub(crate) fn close_connection(&mut self) {
        self.downstream.close_connection();
    }

    // -- request ----------------------------------------------------------

    /// The request head through the request headers hooks, in order. On
    /// `Continue` the head, as the hooks left it, goes on to routing.
    pub(crate) async fn request_headers(&mut self, request: &mut RequestHead) -> Outcome {
        let Some(chain) = self.chain.as_deref_mut() else { return Outcome::Continue };
        if chain.passes_request() {
            chain.pass_request();
            return Outcome::Continue;
        }
        let mut view = request.take_for_filters();
        let end = request.body == BodySize::Empty;
        let outcome = {
            // The chain may wait (a filter stopped, a hook pending): a client
            // that leaves meanwhile ends it.
            let closed = std::pin::pin!(self.downstream.closed());
            crate::box_in_place!(chain.request_headers(&mut view, end, closed)).await
        };
        request.restore(view);
        outcome
    }

    /// The next piece of the request body out of the filters; `None` once
    /// it ended. Trailers, if any, come last. A filter's answer comes out
    /// as [`RequestBodyError::Answered`] (send it with
    /// [`FilteredStream::send_answer`]).
    pub(crate) async fn read_body(&mut self) -> Result<Option<BodyFrame>, RequestBodyError> {
        loop {
            let wake = self.wait(true).await;
            if let Acted::Body(frame) = self.act(wake).await? {
                return Ok(frame);
            }
        }
    }

    /// One step of the request body: a piece out of the filters (or the
    /// end), or `Acted::Nothing` when what came in was held. Reads the
    /// client at most once.
    async fn body_step(&mut self) -> Result<Acted, RequestBodyError> {
        let Some(chain) = self.chain.as_deref_mut().filter(|chain| !chain.passes_request()) else {
            return self.downstream.read_body().await.map(Acted::Body);
        };
        match self.filtered.pop_front() {
            Some(Piece::Data(data)) => return Ok(Acted::Body(Some(BodyFrame::Data(data)))),
            Some(Piece::Last(data)) => {
                // The upstream side takes the end as a frame of its own
                // (the downstream's own end, kept by `body_ended`, is
                // never asked for: the filters' end stands for it).
                self.filtered.push_front(Piece::End(None));
                return Ok(Acted::Body(Some(BodyFrame::Data(data))));
            }
            Some(Piece::End(trailers)) => {
                self.filtered_end = true;
                return Ok(Acted::Body(trailers.map(BodyFrame::Trailers)));
            }
            None if self.filtered_end => return Ok(Acted::Body(None)),
            None => {}
        }
        let piece = match self.downstream.read_body().await? {
            // The end is already here: the last data goes with it (one
            // body hook call).
            Some(BodyFrame::Data(data)) if self.downstream.body_ended() => Piece::Last(data),
            Some(BodyFrame::Data(data)) => Piece::Data(data),
            Some(BodyFrame::Trailers(trailers)) => Piece::End(Some(trailers)),
            None => Piece::End(None),
        };
        let outcome = {
            let closed = std::pin::pin!(self.downstream.closed());
            chain.body(Direction::Request, piece, &mut self.filtered, closed).await
        };
        self.request_outcome(outcome)?;
        Ok(Acted::Nothing)
    }

    /// Acts on what the request path's hooks or calls decided: an answer is
    /// kept for [`FilteredStream::send_answer`].
    fn request_outcome(&mut self, outcome: Outcome) -> Result<(), RequestBodyError> {
        match outcome {
            Outcome::Continue => Ok(()),
            Outcome::Reply(reply) => {
                self.answer = Some(reply);
                Err(RequestBodyError::Answered)
            }
            Outcome::Gone => Err(RequestBodyError::Gone),
        }
    }

    /// Whether a filter holds request body that is still coming.
    fn holding_request(&self) -> bool {
        !self.filtered_end && self.chain.as_deref().is_some_and(|c| c.holding(Direction::Request))
    }

    /// Applies the handle calls queued for the stream: to the request body
    /// while a filter holds it, to the response once there is one (a resume
    /// may release held body to the client).
    async fn apply_calls(&mut self) -> Result<(), RequestBodyError> {
        if self.holding_request()
            && let Some(chain) = self.chain.as_deref_mut()
        {
            let outcome = {
                let closed = std::pin::pin!(self.downstream.closed());
                Box::pin(chain.apply_body_calls(Direction::Request, &mut self.filtered, closed)).await
            };
            self.request_outcome(outcome)?;
        }
        if self.responding
            && let Some(chain) = self.chain.as_deref_mut()
        {
            let mut out = std::mem::take(&mut self.response_out);
            let outcome = {
                let closed = std::pin::pin!(self.downstream.closed());
                Box::pin(chain.apply_body_calls(Direction::Response, &mut out, closed)).await
            };
            let flowed = self.flow(outcome, &mut out).await;
            out.clear();
            self.response_out = out;
            flowed.map_err(|_| RequestBodyError::Gone)?;
        }
        Ok(())
    }

    /// The filter answered while the request went on (its body hooks, or a
    /// handle call): sends that answer, through the response hooks of the
    /// filters before the one that answered. Returns whether there was one.
    pub(crate) async fn send_answer(&mut self) -> bool {
        match self.answer.take() {
            Some(reply) => {
                self.reply(reply).await;
                true
            }
            None => false,
        }
    }

    // -- response ---------------------------------------------------------

    /// Starts the response: through the response headers hooks, then held
    /// back until body comes out of the chain (see the module docs), or out
    /// at once without filters (HTTP/1.1 buffers it until the first body
    /// bytes: one write for a small response).
    pub(crate) async fn send_head(&mut self, mut head: ResponseHead) -> Result<(), WriteError> {
        self.responding = true;
        let Some(chain) = self.chain.as_deref_mut() else { return self.downstream.send_head(head) };
        if chain.passes_response() {
            // As without filters, the head as received; handle calls on the
            // response find it sent.
            self.passing = true;
            chain.mark_response_started();
            return self.downstream.send_head(head);
        }
        let mut view =
            nuncio_filter::ResponseHead { status: head.status, headers: std::mem::take(&mut head.headers).into_map() };
        let end = head.body == BodySize::Empty;
        let outcome = {
            let closed = std::pin::pin!(self.downstream.closed());
            crate::box_in_place!(chain.response_headers(&mut view, end, closed)).await
        };
        match outcome {
            Outcome::Continue => {
                head.status = view.status;
                head.headers = view.headers.into();
                chain.hold_head(head);
                Ok(())
            }
            Outcome::Gone => Err(WriteError),
            Outcome::Reply(reply) => {
                // The filter's answer goes out as is (its own hooks do not
                // run again); the original response is dropped. Boxed here
                // and below: a rare path that would otherwise make every
                // stream's future larger.
                self.replaced = true;
                Box::pin(self.send_raw_reply(reply)).await
            }
        }
    }

    /// Whether the response goes through the filters' hooks.
    fn filters_response(&self) -> bool {
        self.chain.is_some() && !self.passing
    }

    /// A filter answered instead of the response: the rest of it is not
    /// wanted.
    pub(crate) fn response_replaced(&self) -> bool {
        self.replaced
    }

    /// Sends a piece of the response body, waiting for the client to take
    /// it (TCP or HTTP/2 flow control): the upstream is read no faster.
    pub(crate) async fn send_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        match (self.filters_response(), self.replaced) {
            (_, true) => Ok(()),
            (false, false) => self.downstream.send_data(data).await,
            // Boxed here and below: through the hooks, a future several times
            // the size of the bare write; a stream without filters should not
            // carry it.
            (true, false) => Box::pin(self.send_filtered_piece(Piece::Data(data))).await,
        }
    }

    /// Sends a piece of the response body whose next piece is already
    /// here: without filters it may wait to leave with that one
    /// ([`Downstream::hold_data`]); through filters it is a piece like any.
    pub(crate) async fn hold_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        match (self.filters_response(), self.replaced) {
            (false, false) => self.downstream.hold_data(data).await,
            _ => self.send_data(data).await,
        }
    }

    /// Sends the response's last piece of body and ends it: through the
    /// filters, one body hook call with the data and `end_of_stream`; to an
    /// HTTP/2 client, one DATA frame that ends the stream.
    pub(crate) async fn send_last(&mut self, data: Bytes) -> Result<(), WriteError> {
        match (self.filters_response(), self.replaced) {
            (_, true) => Ok(()),
            (false, false) => self.downstream.send_last(data).await,
            (true, false) => Box::pin(self.send_filtered_piece(Piece::Last(data))).await,
        }
    }

    /// Ends the response with trailer fields (dropped if the response is
    /// not chunked HTTP/1.1 or HTTP/2: nothing else can carry them).
    pub(crate) async fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), WriteError> {
        match (self.filters_response(), self.replaced) {
            (_, true) => Ok(()),
            (false, false) => self.downstream.send_trailers(trailers).await,
            (true, false) => Box::pin(self.send_filtered_piece(Piece::End(Some(trailers)))).await,
        }
    }

    /// Ends the response (no-op if trailers ended it).
    pub(crate) async fn finish(&mut self) -> Result<(), WriteError> {
        match (self.filters_response(), self.replaced) {
            (_, true) => Ok(()),
            (false, false) => self.downstream.finish().await,
            (true, false) => Box::pin(self.send_filtered_piece(Piece::End(None))).await,
        }
    }

    /// A piece of the response through the response body hooks, then out.
    async fn send_filtered_piece(&mut self, piece: Piece) -> Result<(), WriteError> {
        let Some(chain) = self.chain.as_deref_mut() else { return self.write_piece(piece).await };
        let mut out = std::mem::take(&mut self.response_out);
        let outcome = {
            let closed = std::pin::pin!(self.downstream.closed());
            chain.body(Direction::Response, piece, &mut out, closed).await
        };
        let flowed = self.flow(outcome, &mut out).await;
        out.clear();
        self.response_out = out;
        flowed
    }

    /// Acts on what the response body hooks decided.
    async fn flow(&mut self, outcome: Outcome, out: &mut VecDeque<Piece>) -> Result<(), WriteError> {
        match outcome {
            Outcome::Continue => self.write_pieces(out).await,
            Outcome::Gone => Err(WriteError),
            Outcome::Reply(reply) => {
                let held = self.chain.as_deref_mut().and_then(Chain::take_held_head);
                if held.is_none() && self.response_started() {
                    // The head is out: a filter refusing the body can only
                    // cut the response.
                    self.abort();
                    return Err(WriteError);
                }
                self.replaced = true;
                Box::pin(self.send_raw_reply(reply)).await
            }
        }
    }

    /// Writes what came out of the filters; a held-back head goes first.
    async fn write_pieces(&mut self, out: &mut VecDeque<Piece>) -> Result<(), WriteError> {
        while let Some(piece) = out.pop_front() {
            if self.holds_head() {
                // The whole body is here when its end is: the exact length.
                let ends = |p: &Piece| matches!(p, Piece::End(None) | Piece::Last(_));
                let whole = ends(&piece) || out.back().is_some_and(ends);
                let length = whole.then(|| {
                    std::iter::once(&piece)
                        .chain(out.iter())
                        .map(|p| if let Piece::Data(d) | Piece::Last(d) = p { d.len() as u64 } else { 0 })
                        .sum::<u64>()
                });
                self.release_head(length)?;
            }
            self.write_piece(piece).await?;
        }
        Ok(())
    }

    async fn write_piece(&mut self, piece: Piece) -> Result<(), WriteError> {
        match piece {
            Piece::Data(data) => self.downstream.send_data(data).await,
            Piece::Last(data) => self.downstream.send_last(data).await,
            Piece::End(Some(trailers)) => self.downstream.send_trailers(trailers).await,
            Piece::End(None) => self.downstream.finish().await,
        }
    }

    fn holds_head(&self) -> bool {
        self.chain.as_deref().is_some_and(Chain::holds_head)
    }

    /// Writes the held-back head: with `length` when the whole body is
    /// known, else with the `content-length` the hooks left (none: chunked).
    fn release_head(&mut self, length: Option<u64>) -> Result<(), WriteError> {
        let Some(mut head) = self.chain.as_deref_mut().and_then(Chain::take_held_head) else { return Ok(()) };
        head.body = match (head.body, length) {
            (BodySize::Empty, _) => BodySize::Empty,
            (_, Some(n)) => BodySize::Exact(n),
            (BodySize::Exact(_), None) => BodySize::from_content_length(head.headers.map()),
            (BodySize::Unknown, None) => BodySize::Unknown,
        };
        self.write_head(head)
    }

    fn write_head(&mut self, head: ResponseHead) -> Result<(), WriteError> {
        if let Some(chain) = self.chain.as_deref_mut() {
            chain.mark_response_started();
        }
        self.downstream.send_head(head)
    }

    /// Sends what is buffered (a response head waiting for body bytes). A
    /// head the filters hold back goes now unless a filter holds response
    /// body (it may still replace the response).
    pub(crate) async fn flush(&mut self) -> Result<(), WriteError> {
        if self.holds_head() && !self.chain.as_deref().is_some_and(|c| c.holding(Direction::Response)) {
            self.release_head(None)?;
        }
        self.downstream.flush().await
    }

    /// Whether a response is under way (its head sent, queued, or held
    /// back by the filters): after that, a failure can only abort the
    /// stream.
    pub(crate) fn response_started(&self) -> bool {
        self.holds_head() || self.downstream.response_started()
    }

    /// The response cannot complete: the client must see it fail rather
    /// than end short (HTTP/1.1 closes the connection; HTTP/2 resets).
    pub(crate) fn abort(&mut self) {
        self.downstream.abort();
    }

    /// A filter's local reply, past the response hooks.
    async fn send_raw_reply(&mut self, reply: LocalReply) -> Result<(), WriteError> {
        let LocalReply { status, mut headers, body } = reply;
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let size = if body.is_empty() { BodySize::Empty } else { BodySize::Exact(body.len() as u64) };
        self.write_head(ResponseHead { status, headers: headers.into(), body: size })?;
        if !body.is_empty() {
            self.downstream.send_data(body).await?;
        }
        self.downstream.finish().await
    }

    /// A filter's local reply from the request path: through the response
    /// hooks of the filters before it, like any response.
    pub(crate) async fn reply(&mut self, reply: LocalReply) {
        let LocalReply { status, headers, body } = reply;
        self.respond(status, headers, body).await;
    }

    /// A whole response nuncio makes itself. (Boxed: nuncio's own answers
    /// are the rare path, and their future would otherwise be part of every
    /// stream's.)
    pub(crate) async fn respond(&mut self, status: StatusCode, headers: HeaderMap, body: Bytes) {
        Box::pin(self.respond_inline(status, headers, body)).await;
    }

    async fn respond_inline(&mut self, status: StatusCode, mut headers: HeaderMap, body: Bytes) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let size = if body.is_empty() { BodySize::Empty } else { BodySize::Exact(body.len() as u64) };
        if self.send_head(ResponseHead { status, headers: headers.into(), body: size }).await.is_err() {
            return;
        }
        if !body.is_empty() && self.send_data(body).await.is_err() {
            return;
        }
        let _ = self.finish().await;
    }

    /// Answers with a short plain-text body saying why nuncio answered
    /// itself. Once a response started, all that can be done is abort it.
    pub(crate) async fn local_reply(&mut self, status: StatusCode, message: &str) {
        if self.response_started() {
            self.abort();
            return;
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        self.respond(status, headers, Bytes::from(format!("{message}\n"))).await;
    }

    /// Switches protocols (HTTP/1.1 WebSocket): the `101` goes out past the
    /// filters, then bytes flow both ways until either side closes. `false`
    /// when the client cannot (nothing was sent).
    pub(crate) async fn tunnel(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
        upstream: &mut crate::io::Io,
        early: Bytes,
        idle: Option<std::time::Duration>,
    ) -> bool {
        self.downstream.tunnel(status, headers, upstream, early, idle).await
    }

    /// The stream ended: every filter's last call. Returns how many hooks
    /// panicked on the stream.
    pub(crate) fn complete(&mut self) -> u64 {
        let Some(chain) = self.chain.as_deref_mut() else { return 0 };
        chain.complete();
        chain.panics()
    }
}

impl RequestSource for FilteredStream<'_, '_> {
    async fn wait(&mut self, want_body: bool) -> Wake {
        // What came out of the filters (or their end) is ready at once.
        if want_body && (self.filtered_end || !self.filtered.is_empty()) {
            return Wake::Body;
        }
        let body = want_body;
        let calls = self.holding_request() || (self.responding && self.chain.is_some());
        let (chain, downstream) = (self.chain.as_deref(), &mut *self.downstream);
        let client = async {
            if body {
                downstream.body_ready().await;
                Wake::Body
            } else {
                downstream.closed().await;
                Wake::Gone
            }
        };
        // In a fixed order, and no random number drawn a wait: the filters'
        // queued calls first (applying them empties the queue, so the
        // client's branch cannot starve).
        tokio::select! {
            biased;
            () = calls_ready(chain), if calls => Wake::Calls,
            wake = client => wake,
        }
    }

    fn gone(&mut self) -> bool {
        self.downstream.gone_now()
    }

    async fn act(&mut self, wake: Wake) -> Result<Acted, RequestBodyError> {
        match wake {
            Wake::Gone => Err(RequestBodyError::Gone),
            Wake::Body => self.body_step().await,
            Wake::Calls => self.apply_calls().await.map(|()| Acted::Nothing),
        }
    }
}

/// Resolves when a handle call is queued for `chain` (never without one).
async fn calls_ready(chain: Option<&Chain>) {
    match chain {
        Some(chain) => chain.calls_ready().await,
        None => std::future::pending().await,
    }
}
