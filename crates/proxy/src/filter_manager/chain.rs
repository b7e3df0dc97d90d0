//! A stream's filters and their state: the hook engine behind
//! [`FilteredStream`](super::FilteredStream). Statuses, holds, buffering,
//! watermarks and handle calls as the module docs of
//! [`filter_manager`](super) describe them.
//!
//! A traced request's chain records a span (`filter NAME HOOK`) for each
//! hook that did not answer at once: one returned `Hook::Pending` (async
//! on the worker, `filter.wait = async`), or a stop waiting for the
//! stream's handle to resume it (the work it waits for is usually off the
//! worker, `filter.wait = stopped`). A hook answered synchronously costs
//! no more for it than a test of whether the request is traced: its future
//! is wrapped (and a span made) only once it turned out to be pending.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use nuncio_filter::{
    Error as FilterError, Filter, Hook, LocalReply, Mailbox, RequestHead, ResponseHead, Status, StreamCx, StreamOps,
};

use super::{Closed, Direction, Outcome, PER_STREAM_BUFFER_LIMIT, Piece};
use crate::filter_catalog::FilterChainFactory;
use crate::message;
use crate::spans::FilterTrace;

/// What a filter is doing with its direction's body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hold {
    /// Nothing kept: pieces go straight on.
    Passing,
    /// `StopAndBuffer`: kept until the end (or a resume).
    Buffering,
    /// `StopAndWatermark`: kept, the hook called per chunk.
    Watermark,
    /// `StopIteration` (or a stop at the end): the chain waits here.
    Stopped,
}

/// One filter's part of a body.
struct Held {
    hold: Hold,
    data: BytesMut,
}

/// One direction's body through the chain.
struct BodyState {
    /// By filter index; empty until a filter first holds body (most
    /// streams never do: two allocations a stream saved), then one per
    /// filter.
    held: Vec<Held>,
    /// The end went in (or the head said there is no body): whatever comes
    /// after passes no hook.
    ended: bool,
}

impl BodyState {
    fn new() -> BodyState {
        BodyState { held: Vec::new(), ended: false }
    }

    /// Filter `i`'s hold (passing while none was ever kept).
    fn hold(&self, i: usize) -> Hold {
        self.held.get(i).map_or(Hold::Passing, |held| held.hold)
    }

    /// Filter `i`'s part, the parts made (one for each of `filters`) at
    /// the first use.
    fn held_mut(&mut self, i: usize, filters: usize) -> &mut Held {
        if self.held.is_empty() {
            self.held = (0..filters).map(|_| Held { hold: Hold::Passing, data: BytesMut::new() }).collect();
        }
        &mut self.held[i]
    }
}

/// A stream's filters and their state. Lives on the stream's worker.
pub(crate) struct Chain {
    filters: Vec<Box<dyn Filter>>,
    names: FilterChainFactory,
    cx: StreamCx,
    /// How many filters saw the request (the response path runs these).
    entered: usize,
    /// Hooks that panicked on this stream.
    panics: u64,
    request: BodyState,
    response: BodyState,
    /// The response head, past its hooks, held back until body comes out of
    /// the chain (see the module docs); the filtered stream writes it.
    held_head: Option<message::ResponseHead>,
    /// A response head went to the client: too late to change or replace.
    response_started: bool,
    /// The request's trace, when it is sampled (filter spans are made).
    trace: Option<FilterTrace>,
    /// Which directions some filter acts on (the others pass unfiltered:
    /// see [`Chain::passes_request`] and [`Chain::passes_response`]).
    directions: Directions,
}

/// The directions some filter of a chain acts on
/// ([`nuncio_filter::FilterFactory::acts_on_request`], `acts_on_response`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Directions {
    pub(crate) request: bool,
    pub(crate) response: bool,
}

/// How a wait at a stopped filter ended.
enum Waited {
    Resumed,
    Reply(LocalReply),
    /// The stream's context is done or the client left.
    Gone,
}

/// Where the stream stands when handle calls are applied.
enum At<'h> {
    /// In the request headers hooks: their fields.
    RequestHead(&'h mut HeaderMap),
    /// In the response headers hooks: their fields.
    ResponseHead(&'h mut HeaderMap),
    /// In a direction's body.
    Body(Direction),
}

impl At<'_> {
    /// In `dir`'s headers hooks.
    fn head(dir: Direction, headers: &mut HeaderMap) -> At<'_> {
        match dir {
            Direction::Request => At::RequestHead(headers),
            Direction::Response => At::ResponseHead(headers),
        }
    }
}

impl Chain {
    /// Runs on the stream's worker (the mailbox belongs to it).
    /// `directions`: those some filter acts on.
    pub(crate) fn new(
        factories: &FilterChainFactory,
        mut cx: StreamCx,
        trace: Option<FilterTrace>,
        directions: Directions,
    ) -> Chain {
        // The stream's mailbox, where its handles' calls wait to be
        // applied, is made with the first handle a filter asks for.
        cx.enable_handles();
        Chain {
            filters: factories.iter().map(|f| f.create()).collect(),
            names: factories.clone(),
            cx,
            entered: 0,
            panics: 0,
            request: BodyState::new(),
            response: BodyState::new(),
            held_head: None,
            response_started: false,
            trace,
            directions,
        }
    }

    /// Whether the request passes as without filters: none acts on it
    /// ([`nuncio_filter::FilterFactory::acts_on_request`]). Its head then
    /// skips the request hooks ([`Chain::pass_request`]) and its body
    /// goes to the upstream as it comes.
    pub(crate) fn passes_request(&self) -> bool {
        !self.directions.request
    }

    /// The request passed without its hooks: every filter counts as having
    /// seen it (the response hooks run for all).
    pub(crate) fn pass_request(&mut self) {
        self.entered = self.filters.len();
    }

    /// Whether the response passes as without filters: none acts on it
    /// ([`nuncio_filter::FilterFactory::acts_on_response`]) and no handle
    /// call waits to act on it.
    pub(crate) fn passes_response(&self) -> bool {
        !self.directions.response && self.cx.mailbox().is_none_or(|mailbox| mailbox.is_empty())
    }

    /// The request head through every filter, in order. Calls on the
    /// stream's handle apply after each hook and while a filter holds the
    /// chain; once this returns `Continue` the head is forwarded and calls
    /// on it get `HeadersAlreadySent`.
    pub(crate) async fn request_headers(
        &mut self,
        head: &mut RequestHead,
        end_of_stream: bool,
        mut closed: Closed<'_>,
    ) -> Outcome {
        self.request.ended = end_of_stream;
        for i in 0..self.filters.len() {
            self.entered = i + 1;
            // Its counters are the ones `cx.inc` bumps.
            self.cx.set_filter_index(i);
            let (filter, cx, view) = (&mut self.filters[i], &mut self.cx, &mut *head);
            let traced = HookTrace::of(self.trace.as_ref(), &self.names, i, "request_headers");
            let hook = with_span(call(move || filter.request_headers(cx, view, end_of_stream)), traced);
            let Some(status) = settled(hook, &mut closed).await else { return Outcome::Gone };
            let Some(status) =
                self.after_head_hook(Direction::Request, i, status, &mut head.headers, &mut closed).await
            else {
                return Outcome::Gone;
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

    /// The response head through the filters that saw the request, in
    /// reverse order. On `Continue` the caller holds the head back in
    /// [`Chain::held_head`] until body comes out of the chain.
    pub(crate) async fn response_headers(
        &mut self,
        head: &mut ResponseHead,
        end_of_stream: bool,
        mut closed: Closed<'_>,
    ) -> Outcome {
        // Calls made while the upstream worked: the response exists now.
        if let (_, Some(reply)) = self.apply(&mut At::ResponseHead(&mut head.headers), false) {
            return Outcome::Reply(reply);
        }
        self.response.ended = end_of_stream;
        for i in (0..self.entered).rev() {
            // Its counters are the ones `cx.inc` bumps.
            self.cx.set_filter_index(i);
            let (filter, cx, view) = (&mut self.filters[i], &mut self.cx, &mut *head);
            let traced = HookTrace::of(self.trace.as_ref(), &self.names, i, "response_headers");
            let hook = with_span(call(move || filter.response_headers(cx, view, end_of_stream)), traced);
            let Some(status) = settled(hook, &mut closed).await else { return Outcome::Gone };
            let Some(status) =
                self.after_head_hook(Direction::Response, i, status, &mut head.headers, &mut closed).await
            else {
                return Outcome::Gone;
            };
            match self.decide(i, status) {
                Outcome::Continue => {}
                end => return end,
            }
        }
        Outcome::Continue
    }

    /// What a headers hook's `status` comes to: a `StopIteration` waits
    /// for the handle to resume or answer, then the calls that came in
    /// meanwhile apply (one may answer). `None` if the stream is gone.
    async fn after_head_hook(
        &mut self,
        dir: Direction,
        i: usize,
        status: Result<Status, Box<dyn Any + Send>>,
        headers: &mut HeaderMap,
        closed: &mut Closed<'_>,
    ) -> Option<Result<Status, Box<dyn Any + Send>>> {
        let hook = match dir {
            Direction::Request => "request_headers",
            Direction::Response => "response_headers",
        };
        let status = match status {
            Ok(Status::StopIteration) => match self.traced_wait(i, hook, &mut At::head(dir, headers), closed).await {
                Waited::Resumed => Ok(Status::Continue),
                Waited::Reply(reply) => Ok(Status::LocalReply(reply)),
                Waited::Gone => return None,
            },
            other => other,
        };
        Some(match self.apply(&mut At::head(dir, headers), false).1 {
            Some(reply) => Ok(Status::LocalReply(reply)),
            None => status,
        })
    }

    /// A body piece through the filters of `dir`; what comes out (zero or
    /// more pieces, the end last) goes to `out`. Then calls that came in
    /// apply, and while a watermarking filter holds more than the limit this
    /// waits (the caller reads nothing from the sender meanwhile).
    pub(crate) async fn body(
        &mut self,
        dir: Direction,
        piece: Piece,
        out: &mut VecDeque<Piece>,
        mut closed: Closed<'_>,
    ) -> Outcome {
        let state = self.state(dir);
        if state.ended {
            out.push_back(piece);
            return Outcome::Continue;
        }
        if matches!(piece, Piece::End(_) | Piece::Last(_)) {
            state.ended = true;
        }
        // The common case first, without the general machinery (whose
        // future is large and boxed): nothing is held in this direction,
        // and each hook in turn answers `Continue` and passes a piece on
        // (data, the end, or both; not a piece of data emptied). At the
        // first filter that does anything else, the general path takes over
        // from that filter with its answer.
        let (mut data, end) = match piece {
            Piece::Data(data) if !data.is_empty() && self.all_passing(dir) => (data, false),
            Piece::End(None) if self.all_passing(dir) => (Bytes::new(), true),
            Piece::Last(data) if self.all_passing(dir) => (data, true),
            piece => {
                return Box::pin(self.body_through(dir, 0, VecDeque::from([piece]), out, &mut closed)).await;
            }
        };
        for pos in 0..self.span(dir) {
            let i = self.index(dir, pos);
            let Some(status) = self.body_hook(dir, i, &mut data, end, &mut closed).await else {
                return Outcome::Gone;
            };
            if !matches!(status, Ok(Status::Continue)) || (data.is_empty() && !end) {
                return Box::pin(self.body_from(dir, pos, status, data, end, out, &mut closed)).await;
            }
        }
        out.push_back(match (end, data.is_empty()) {
            (false, _) => Piece::Data(data),
            (true, true) => Piece::End(None),
            (true, false) => Piece::Last(data),
        });
        // Nothing is held, so queued calls can only answer (no resume has
        // anything to release, no watermark to relieve).
        match self.apply(&mut At::Body(dir), false).1 {
            Some(reply) => Outcome::Reply(reply),
            None => Outcome::Continue,
        }
    }

    /// Whether no filter of `dir` holds body (every one passing).
    fn all_passing(&self, dir: Direction) -> bool {
        self.body_state(dir).held.iter().all(|held| held.hold == Hold::Passing && held.data.is_empty())
    }

    /// The general body path: `pieces` through the filters of `dir` from
    /// position `from` on, then the calls that came in, then backpressure.
    async fn body_through(
        &mut self,
        dir: Direction,
        from: usize,
        pieces: VecDeque<Piece>,
        out: &mut VecDeque<Piece>,
        closed: &mut Closed<'_>,
    ) -> Outcome {
        let outcome = self.push(dir, from, pieces, out, closed).await;
        if !matches!(outcome, Outcome::Continue) {
            return outcome;
        }
        let outcome = self.body_calls(dir, out, closed).await;
        if !matches!(outcome, Outcome::Continue) {
            return outcome;
        }
        self.relieve(dir, out, closed).await
    }

    /// The general path from the filter at `pos`, whose body hook answered
    /// `status` for `data` (`end`: the end of the body, with no trailers):
    /// what [`Chain::at_filter`] does after the hook, then the rest.
    #[allow(clippy::too_many_arguments)]
    async fn body_from(
        &mut self,
        dir: Direction,
        pos: usize,
        status: Result<Status, Box<dyn Any + Send>>,
        data: Bytes,
        end: bool,
        out: &mut VecDeque<Piece>,
        closed: &mut Closed<'_>,
    ) -> Outcome {
        let i = self.index(dir, pos);
        let mut next = VecDeque::new();
        match self.settle(dir, i, status, data, end, &mut next, closed).await {
            Outcome::Continue => {}
            Outcome::Reply(reply) => {
                if dir == Direction::Request {
                    // Its answer passes the filters before it only.
                    self.entered = i;
                }
                return Outcome::Reply(reply);
            }
            Outcome::Gone => return Outcome::Gone,
        }
        if end {
            push_end(&mut next);
        }
        self.body_through(dir, pos + 1, next, out, closed).await
    }

    /// Whether a filter holds body of `dir` (calls may then release it:
    /// the caller waits for [`Chain::calls_ready`] too, not only the sender).
    pub(crate) fn holding(&self, dir: Direction) -> bool {
        self.first_holder(dir).is_some()
    }

    /// Resolves when a handle call is queued (cancel-safe).
    pub(crate) async fn calls_ready(&self) {
        ready(self.cx.mailbox().map(Rc::as_ref)).await;
    }

    /// Applies the calls queued for `dir`'s body; what a resume releases
    /// goes on through the chain into `out`.
    pub(crate) async fn apply_body_calls(
        &mut self,
        dir: Direction,
        out: &mut VecDeque<Piece>,
        mut closed: Closed<'_>,
    ) -> Outcome {
        let outcome = self.body_calls(dir, out, &mut closed).await;
        if !matches!(outcome, Outcome::Continue) {
            return outcome;
        }
        self.relieve(dir, out, &mut closed).await
    }

    /// The stream ended: every filter's last call.
    pub(crate) fn complete(&mut self) {
        // Calls still queued find the stream gone.
        if let Some(mailbox) = self.cx.mailbox() {
            mailbox.close();
        }
        for (i, filter) in self.filters.iter_mut().enumerate() {
            self.cx.set_filter_index(i);
            let cx = &self.cx;
            if std::panic::catch_unwind(AssertUnwindSafe(|| filter.on_complete(cx))).is_err() {
                self.panics += 1;
            }
        }
    }

    /// Hooks that panicked on this stream so far.
    pub(crate) fn panics(&self) -> u64 {
        self.panics
    }

    /// Holds the response head back (past its hooks) until body comes out
    /// of the chain.
    pub(crate) fn hold_head(&mut self, head: message::ResponseHead) {
        self.held_head = Some(head);
    }

    /// The held-back head, to write now.
    pub(crate) fn take_held_head(&mut self) -> Option<message::ResponseHead> {
        self.held_head.take()
    }

    /// Whether a response head is held back.
    pub(crate) fn holds_head(&self) -> bool {
        self.held_head.is_some()
    }

    /// A response head went to the client: its fields can no longer change
    /// and a local reply can no longer replace it.
    pub(crate) fn mark_response_started(&mut self) {
        self.response_started = true;
    }

    /// `dir`'s body state, to read.
    /// Filter `i`'s part of `dir`'s body.
    fn held(&mut self, dir: Direction, i: usize) -> &mut Held {
        let filters = self.filters.len();
        self.state(dir).held_mut(i, filters)
    }

    fn body_state(&self, dir: Direction) -> &BodyState {
        match dir {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        }
    }

    fn state(&mut self, dir: Direction) -> &mut BodyState {
        match dir {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }

    /// How many filters `dir` passes.
    fn span(&self, dir: Direction) -> usize {
        match dir {
            Direction::Request => self.filters.len(),
            Direction::Response => self.entered,
        }
    }

    /// The filter at `pos` in `dir`'s order.
    fn index(&self, dir: Direction, pos: usize) -> usize {
        match dir {
            Direction::Request => pos,
            Direction::Response => self.entered - 1 - pos,
        }
    }

    /// The position of the first filter of `dir` that holds body: where
    /// the stream is stopped, and what body calls act on.
    fn first_holder(&self, dir: Direction) -> Option<usize> {
        let state = self.body_state(dir);
        (0..self.span(dir)).find(|&pos| state.hold(self.index(dir, pos)) != Hold::Passing)
    }

    /// Pieces through the filters of `dir` from position `from` on, each
    /// through the rest of the chain before the next, so that a filter
    /// stopped downstream never has a later piece held upstream of it.
    async fn push(
        &mut self,
        dir: Direction,
        from: usize,
        pieces: VecDeque<Piece>,
        out: &mut VecDeque<Piece>,
        closed: &mut Closed<'_>,
    ) -> Outcome {
        let mut work: VecDeque<(usize, Piece)> = pieces.into_iter().map(|piece| (from, piece)).collect();
        while let Some((pos, piece)) = work.pop_front() {
            if pos >= self.span(dir) {
                out.push_back(piece);
                continue;
            }
            let i = self.index(dir, pos);
            let mut next = VecDeque::new();
            match self.at_filter(dir, i, piece, &mut next, closed).await {
                Outcome::Continue => {}
                Outcome::Reply(reply) => {
                    if dir == Direction::Request {
                        // Its answer passes the filters before it only.
                        self.entered = i;
                    }
                    return Outcome::Reply(reply);
                }
                Outcome::Gone => return Outcome::Gone,
            }
            for piece in next.into_iter().rev() {
                work.push_front((pos + 1, piece));
            }
        }
        Outcome::Continue
    }

    /// One piece at filter `i`; what it lets through goes to `next`.
    async fn at_filter(
        &mut self,
        dir: Direction,
        i: usize,
        piece: Piece,
        next: &mut VecDeque<Piece>,
        closed: &mut Closed<'_>,
    ) -> Outcome {
        let hold = self.body_state(dir).hold(i);
        let (data, trailers) = match piece {
            Piece::Data(data) if hold == Hold::Buffering => return self.keep(dir, i, &data, Hold::Buffering),
            Piece::Data(mut data) => {
                let Some(status) = self.body_hook(dir, i, &mut data, false, closed).await else {
                    return Outcome::Gone;
                };
                return self.settle(dir, i, status, data, false, next, closed).await;
            }
            Piece::Last(data) => (data, None),
            Piece::End(trailers) => (Bytes::new(), trailers),
        };
        // The end of the body.
        if hold == Hold::Buffering || trailers.is_none() {
            // A buffering filter gets its whole body; any other hears the
            // end with the last data, or an empty chunk (none before
            // trailers: the trailers hook says it).
            let mut last = if hold == Hold::Buffering {
                if let overflow @ Outcome::Reply(_) = self.keep(dir, i, &data, Hold::Buffering) {
                    return overflow;
                }
                let held = self.held(dir, i);
                held.hold = Hold::Passing;
                held.data.split().freeze()
            } else {
                data
            };
            let Some(status) = self.body_hook(dir, i, &mut last, true, closed).await else {
                return Outcome::Gone;
            };
            let outcome = self.settle(dir, i, status, last, true, next, closed).await;
            if !matches!(outcome, Outcome::Continue) {
                return outcome;
            }
        }
        let Some(mut trailers) = trailers else {
            push_end(next);
            return Outcome::Continue;
        };
        // Its counters are the ones `cx.inc` bumps.
        self.cx.set_filter_index(i);
        let (filter, cx, t) = (&mut self.filters[i], &mut self.cx, &mut trailers);
        let hook_name = match dir {
            Direction::Request => "request_trailers",
            Direction::Response => "response_trailers",
        };
        let traced = HookTrace::of(self.trace.as_ref(), &self.names, i, hook_name);
        let hook = with_span(
            call(move || match dir {
                Direction::Request => filter.request_trailers(cx, t),
                Direction::Response => filter.response_trailers(cx, t),
            }),
            traced,
        );
        let Some(status) = settled(hook, closed).await else { return Outcome::Gone };
        let outcome = match status {
            Ok(Status::Continue) => {
                self.release(dir, i, next);
                Outcome::Continue
            }
            Ok(Status::StopIteration) => self.stop(dir, i, hook_name, next, closed).await,
            other => self.decide(i, other),
        };
        if matches!(outcome, Outcome::Continue) {
            next.push_back(Piece::End(Some(trailers)));
        }
        outcome
    }

    /// A body hook's status at filter `i` for the chunk it was given.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &mut self,
        dir: Direction,
        i: usize,
        status: Result<Status, Box<dyn Any + Send>>,
        data: Bytes,
        end_of_stream: bool,
        next: &mut VecDeque<Piece>,
        closed: &mut Closed<'_>,
    ) -> Outcome {
        match status {
            Ok(Status::Continue) => {
                self.release(dir, i, next);
                if !data.is_empty() {
                    next.push_back(Piece::Data(data));
                }
                Outcome::Continue
            }
            Ok(Status::StopAndBuffer) if !end_of_stream => self.keep(dir, i, &data, Hold::Buffering),
            Ok(Status::StopAndWatermark) if !end_of_stream => self.keep(dir, i, &data, Hold::Watermark),
            // With the end given there is nothing more to wait for but the
            // handle: any stop is a stop.
            Ok(Status::StopIteration | Status::StopAndBuffer | Status::StopAndWatermark) => {
                self.held(dir, i).data.extend_from_slice(&data);
                self.stop(dir, i, body_hook_name(dir), next, closed).await
            }
            other => self.decide(i, other),
        }
    }

    /// Waits at filter `i`, which holds its body, for the handle; on resume
    /// what it holds goes to `next`.
    async fn stop(
        &mut self,
        dir: Direction,
        i: usize,
        hook: &'static str,
        next: &mut VecDeque<Piece>,
        closed: &mut Closed<'_>,
    ) -> Outcome {
        if self.cx.context().err().is_some() {
            return Outcome::Gone;
        }
        self.held(dir, i).hold = Hold::Stopped;
        match self.traced_wait(i, hook, &mut At::Body(dir), closed).await {
            Waited::Resumed => {
                self.release(dir, i, next);
                Outcome::Continue
            }
            Waited::Reply(reply) => Outcome::Reply(reply),
            Waited::Gone => Outcome::Gone,
        }
    }

    /// Keeps `data` for filter `i`, now in `hold` mode; a buffering filter
    /// over the limit fails the stream.
    fn keep(&mut self, dir: Direction, i: usize, data: &[u8], hold: Hold) -> Outcome {
        let held = self.held(dir, i);
        held.data.extend_from_slice(data);
        held.hold = hold;
        if hold == Hold::Buffering && held.data.len() > PER_STREAM_BUFFER_LIMIT {
            return Outcome::Reply(self.overflow(dir, i));
        }
        Outcome::Continue
    }

    /// What filter `i` holds goes on (to `next`); it holds nothing now.
    fn release(&mut self, dir: Direction, i: usize, next: &mut VecDeque<Piece>) {
        let held = self.held(dir, i);
        held.hold = Hold::Passing;
        if !held.data.is_empty() {
            next.push_back(Piece::Data(held.data.split().freeze()));
        }
    }

    /// A body hook of filter `i`; `None` if the client left while it was
    /// pending.
    async fn body_hook(
        &mut self,
        dir: Direction,
        i: usize,
        data: &mut Bytes,
        end_of_stream: bool,
        closed: &mut Closed<'_>,
    ) -> Option<Result<Status, Box<dyn Any + Send>>> {
        // Its counters are the ones `cx.inc` bumps.
        self.cx.set_filter_index(i);
        let (filter, cx) = (&mut self.filters[i], &mut self.cx);
        let traced = HookTrace::of(self.trace.as_ref(), &self.names, i, body_hook_name(dir));
        let hook = with_span(
            call(move || match dir {
                Direction::Request => filter.request_body(cx, data, end_of_stream),
                Direction::Response => filter.response_body(cx, data, end_of_stream),
            }),
            traced,
        );
        settled(hook, closed).await
    }

    /// The answer when a buffering filter's body outgrew the limit.
    fn overflow(&self, dir: Direction, i: usize) -> LocalReply {
        let name = self.names.get(i).map_or("?", |f| f.name());
        match dir {
            Direction::Request => {
                tracing::debug!(
                    filter = name,
                    limit = PER_STREAM_BUFFER_LIMIT,
                    "request body over the buffer limit; 413"
                );
                let mut reply = internal("nuncio: request body larger than a filter may buffer");
                reply.status = http::StatusCode::PAYLOAD_TOO_LARGE;
                reply
            }
            Direction::Response => {
                tracing::warn!(
                    filter = name,
                    limit = PER_STREAM_BUFFER_LIMIT,
                    "response body over the buffer limit of a buffering filter; the client gets a 500"
                );
                internal(&format!("nuncio: response body larger than filter {name} may buffer"))
            }
        }
    }

    /// Applies queued calls to `dir`'s body; a resume releases the first
    /// holding filter's body through the rest of the chain.
    async fn body_calls(&mut self, dir: Direction, out: &mut VecDeque<Piece>, closed: &mut Closed<'_>) -> Outcome {
        let holder = self.first_holder(dir);
        let (resumed, reply) = self.apply(&mut At::Body(dir), false);
        if let Some(reply) = reply {
            if dir == Direction::Request
                && let Some(pos) = holder
            {
                self.entered = self.index(dir, pos);
            }
            return Outcome::Reply(reply);
        }
        match holder {
            Some(pos) if resumed => {
                let mut next = VecDeque::new();
                self.release(dir, self.index(dir, pos), &mut next);
                self.push(dir, pos + 1, next, out, closed).await
            }
            _ => Outcome::Continue,
        }
    }

    /// Backpressure: while a watermarking filter holds more than the limit,
    /// waits for calls that resume it or take its body.
    async fn relieve(&mut self, dir: Direction, out: &mut VecDeque<Piece>, closed: &mut Closed<'_>) -> Outcome {
        let context = self.cx.context().clone();
        while self.over_watermark(dir) {
            let mailbox = self.cx.mailbox().cloned();
            tokio::select! {
                () = ready(mailbox.as_deref()) => {}
                () = context.done() => return Outcome::Gone,
                () = closed.as_mut() => return Outcome::Gone,
            }
            let outcome = self.body_calls(dir, out, closed).await;
            if !matches!(outcome, Outcome::Continue) {
                return outcome;
            }
        }
        Outcome::Continue
    }

    fn over_watermark(&self, dir: Direction) -> bool {
        self.body_state(dir)
            .held
            .iter()
            .any(|held| held.hold == Hold::Watermark && held.data.len() > PER_STREAM_BUFFER_LIMIT)
    }

    /// [`Chain::wait`] at filter `i`, stopped by its `hook`, with a span
    /// when the request is traced.
    async fn traced_wait(&mut self, i: usize, hook: &'static str, at: &mut At<'_>, closed: &mut Closed<'_>) -> Waited {
        if self.trace.is_none() {
            return self.wait(at, closed).await;
        }
        // Taken out while waiting: the span borrows it, the wait borrows
        // the chain.
        let trace = self.trace.take();
        let waited = {
            let name = self.names.get(i).map_or("?", |f| f.name());
            let span = trace.as_ref().and_then(|t| t.start(name, hook, "stopped"));
            let waited = self.wait(at, closed).await;
            if let Some(mut span) = span {
                match &waited {
                    Waited::Resumed => {
                        span.string("filter.result", "resumed");
                        span.end(nuncio_trace::Status::Unset);
                    }
                    Waited::Reply(reply) => {
                        span.string("filter.result", "local_reply");
                        span.int("http.status_code", i64::from(reply.status.as_u16()));
                        span.end(nuncio_trace::Status::Unset);
                    }
                    Waited::Gone => {
                        span.end(nuncio_trace::Status::Canceled(&"the stream ended while the filter held it"));
                    }
                }
            }
            waited
        };
        self.trace = trace;
        waited
    }

    /// Stopped somewhere: applies handle calls as they come until one
    /// resumes the chain or answers, or the stream ends.
    async fn wait(&mut self, at: &mut At<'_>, closed: &mut Closed<'_>) -> Waited {
        let context = self.cx.context().clone();
        loop {
            let (resumed, reply) = self.apply(at, true);
            if let Some(reply) = reply {
                return Waited::Reply(reply);
            }
            if resumed {
                return Waited::Resumed;
            }
            let mailbox = self.cx.mailbox().cloned();
            tokio::select! {
                () = ready(mailbox.as_deref()) => {}
                () = context.done() => return Waited::Gone,
                () = closed.as_mut() => return Waited::Gone,
            }
        }
    }

    /// Applies the queued handle calls to the stream as it stands `at`;
    /// `stopped`: the chain waits at a headers hook. Returns whether a call
    /// resumed the chain, and the local reply one asked for.
    fn apply(&mut self, at: &mut At<'_>, stopped: bool) -> (bool, Option<LocalReply>) {
        // No handle was made: no call can wait.
        let Some(mailbox) = self.cx.mailbox().cloned() else { return (false, None) };
        let holder = match at {
            At::Body(dir) => self.first_holder(*dir).map(|pos| self.index(*dir, pos)),
            _ => None,
        };
        let mut ops = Ops {
            request: None,
            request_stopped: false,
            response: None,
            response_started: self.response_started,
            body: None,
            stopped,
            resumed: false,
            reply: None,
        };
        match at {
            At::RequestHead(headers) => {
                ops.request = Some(headers);
                ops.request_stopped = stopped;
            }
            At::ResponseHead(headers) => ops.response = Some(headers),
            At::Body(dir) => {
                let state = match dir {
                    Direction::Request => &mut self.request,
                    Direction::Response => {
                        ops.response = self.held_head.as_mut().map(|head| head.headers.map());
                        &mut self.response
                    }
                };
                ops.stopped = holder.is_some();
                ops.body = holder.map(|i| &mut state.held[i].data);
            }
        }
        mailbox.drain(&mut ops);
        (ops.resumed, ops.reply)
    }

    /// A hook's status, as the stream layer acts on it (stops are handled
    /// before this: any left here are misplaced).
    fn decide(&mut self, index: usize, status: Result<Status, Box<dyn Any + Send>>) -> Outcome {
        let name = self.names.get(index).map_or("?", |f| f.name());
        match status {
            Ok(Status::Continue) => Outcome::Continue,
            Ok(Status::LocalReply(reply)) => Outcome::Reply(reply),
            Ok(Status::StopIteration) if self.cx.context().err().is_some() => Outcome::Gone,
            Ok(other) => {
                tracing::warn!(filter = name, status = ?other, "filter returned a body status from a headers or trailers hook");
                Outcome::Reply(internal(&format!(
                    "nuncio: filter {name} returned {other:?} from a headers or trailers hook (it is for body hooks)"
                )))
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

/// Ends `next` (what a filter let through) without trailers: its last
/// data, if it ends with some, becomes the body's last piece, so that the
/// next filter hears the end with it (one hook call, not two).
/// Resolves when a call is queued in `mailbox` (never without one: no
/// handle was made, so none can come).
async fn ready(mailbox: Option<&Mailbox>) {
    match mailbox {
        Some(mailbox) => mailbox.ready().await,
        None => std::future::pending().await,
    }
}

fn push_end(next: &mut VecDeque<Piece>) {
    match next.pop_back() {
        Some(Piece::Data(data)) => next.push_back(Piece::Last(data)),
        other => {
            next.extend(other);
            next.push_back(Piece::End(None));
        }
    }
}

fn internal(message: &str) -> LocalReply {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    LocalReply { status: http::StatusCode::INTERNAL_SERVER_ERROR, headers, body: format!("{message}\n").into() }
}

/// The body hook of `dir`, by name (spans).
fn body_hook_name(dir: Direction) -> &'static str {
    match dir {
        Direction::Request => "request_body",
        Direction::Response => "response_body",
    }
}

/// Where a hook is, for the span it gets if it goes async (made only
/// then: a synchronous hook never reads this).
#[derive(Clone, Copy)]
struct HookTrace<'t> {
    trace: &'t FilterTrace,
    names: &'t FilterChainFactory,
    index: usize,
    hook: &'static str,
}

impl<'t> HookTrace<'t> {
    fn of(
        trace: Option<&'t FilterTrace>,
        names: &'t FilterChainFactory,
        index: usize,
        hook: &'static str,
    ) -> Option<HookTrace<'t>> {
        trace.map(|trace| HookTrace { trace, names, index, hook })
    }

    /// The span of the hook, which went async.
    fn start(self) -> Option<nuncio_trace::Span<'t>> {
        let name = self.names.get(self.index).map_or("?", |f| f.name());
        self.trace.start(name, self.hook, "async")
    }
}

/// Ends a pending hook's span with what the hook decided.
fn end_hook_span(mut span: nuncio_trace::Span<'_>, status: &Status) {
    let result = match status {
        Status::Continue => "continue",
        Status::StopIteration => "stop_iteration",
        Status::StopAndBuffer => "stop_and_buffer",
        Status::StopAndWatermark => "stop_and_watermark",
        Status::LocalReply(reply) => {
            span.int("http.status_code", i64::from(reply.status.as_u16()));
            "local_reply"
        }
    };
    span.string("filter.result", result);
    span.end(nuncio_trace::Status::Unset);
}

/// Calls a hook, catching a panic in the call itself.
fn call<'a>(hook: impl FnOnce() -> Hook<'a>) -> std::thread::Result<Hook<'a>> {
    std::panic::catch_unwind(AssertUnwindSafe(hook))
}

/// A hook's status (a panic, in the call or in its future, caught), or
/// `None` if the client went away while it was pending. A hook that
/// answered at once is taken as it is, without looking at the client's
/// socket: `select!` polls its branches in a random order, and the `closed`
/// branch cost a readiness poll of the socket per hook.
async fn settled(
    hook: std::thread::Result<Hook<'_>>,
    closed: &mut Closed<'_>,
) -> Option<Result<Status, Box<dyn Any + Send>>> {
    match hook {
        Ok(Hook::Done(status)) => Some(Ok(status)),
        Err(panic) => Some(Err(panic)),
        pending => tokio::select! {
            status = guarded(pending) => Some(status),
            () = closed.as_mut() => None,
        },
    }
}

/// A hook's status, with a panic (in the call or in its future) caught.
async fn guarded(hook: std::thread::Result<Hook<'_>>) -> Result<Status, Box<dyn Any + Send>> {
    match hook? {
        Hook::Done(status) => Ok(status),
        Hook::Pending(future) => CatchUnwind(future).await,
    }
}

/// A hook that went async, with a span, when the request is traced
/// (`traced`): its future is wrapped (and boxed again) only then, so a
/// hook answered at once, or any hook of an untraced request, is untouched.
#[inline]
fn with_span<'a>(hook: std::thread::Result<Hook<'a>>, traced: Option<HookTrace<'a>>) -> std::thread::Result<Hook<'a>> {
    match traced {
        None => hook,
        Some(traced) => with_span_traced(hook, traced),
    }
}

/// [`with_span`] for a traced request.
fn with_span_traced<'a>(hook: std::thread::Result<Hook<'a>>, traced: HookTrace<'a>) -> std::thread::Result<Hook<'a>> {
    match hook {
        Ok(Hook::Pending(future)) => match traced.start() {
            Some(span) => Ok(Hook::Pending(Box::pin(TracedHook { span: Some(span), future }))),
            None => Ok(Hook::Pending(future)),
        },
        hook => hook,
    }
}

/// A pending hook's future and its span, ended with what the hook
/// decided (or, dropped first, with the span's drop cause).
struct TracedHook<'a> {
    span: Option<nuncio_trace::Span<'a>>,
    future: Pin<Box<dyn Future<Output = Status> + 'a>>,
}

impl Future for TracedHook<'_> {
    type Output = Status;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Status> {
        let status = std::task::ready!(self.future.as_mut().poll(cx));
        if let Some(span) = self.span.take() {
            end_hook_span(span, &status);
        }
        Poll::Ready(status)
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

/// What a handle may do to the stream as it stands when its calls apply.
struct Ops<'s> {
    /// The request fields, while the head is in the chain.
    request: Option<&'s mut HeaderMap>,
    /// Stopped at a request headers hook (the fields may leave).
    request_stopped: bool,
    /// The response fields, while the head is in the chain or held back.
    response: Option<&'s mut HeaderMap>,
    response_started: bool,
    /// What the filter where the stream is stopped holds of the body.
    body: Option<&'s mut BytesMut>,
    /// Stopped at a filter: `resume` has something to resume.
    stopped: bool,
    resumed: bool,
    reply: Option<LocalReply>,
}

impl StreamOps for Ops<'_> {
    fn request_headers(&mut self) -> Result<&mut HeaderMap, FilterError> {
        self.request.as_deref_mut().ok_or(FilterError::HeadersAlreadySent)
    }

    fn response_headers(&mut self) -> Result<&mut HeaderMap, FilterError> {
        match &mut self.response {
            Some(headers) => Ok(headers),
            None if self.response_started => Err(FilterError::HeadersAlreadySent),
            None => Err(FilterError::NotStopped),
        }
    }

    fn take_request_headers(&mut self) -> Result<HeaderMap, FilterError> {
        match &mut self.request {
            None => Err(FilterError::HeadersAlreadySent),
            Some(_) if !self.request_stopped => Err(FilterError::NotStopped),
            Some(headers) => Ok(std::mem::take(*headers)),
        }
    }

    fn put_request_headers(&mut self, headers: HeaderMap) -> Result<(), FilterError> {
        match &mut self.request {
            None => Err(FilterError::HeadersAlreadySent),
            Some(_) if !self.request_stopped => Err(FilterError::NotStopped),
            Some(fields) => {
                **fields = headers;
                Ok(())
            }
        }
    }

    fn take_body(&mut self) -> Result<Bytes, FilterError> {
        let body = self.body.as_deref_mut().ok_or(FilterError::NotStopped)?;
        Ok(body.split().freeze())
    }

    fn replace_body(&mut self, data: Bytes) -> Result<(), FilterError> {
        let body = self.body.as_deref_mut().ok_or(FilterError::NotStopped)?;
        body.clear();
        body.extend_from_slice(&data);
        Ok(())
    }

    fn append_body(&mut self, data: Bytes) -> Result<(), FilterError> {
        let body = self.body.as_deref_mut().ok_or(FilterError::NotStopped)?;
        body.extend_from_slice(&data);
        Ok(())
    }

    fn resume(&mut self) -> Result<(), FilterError> {
        if !self.stopped {
            return Err(FilterError::NotStopped);
        }
        // Calls after this one in the same batch find the stream going on.
        self.resumed = true;
        self.stopped = false;
        self.request_stopped = false;
        self.body = None;
        Ok(())
    }

    fn local_reply(&mut self, reply: LocalReply) -> Result<(), FilterError> {
        if self.response_started || self.reply.is_some() {
            return Err(FilterError::HeadersAlreadySent);
        }
        self.reply = Some(reply);
        Ok(())
    }
}
