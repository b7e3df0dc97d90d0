//! The filter trait and what a hook sees of its stream.

use std::any::{Any, TypeId};
use std::cell::OnceCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http::HeaderMap;
use nuncio_context::{Context, Instant};

use crate::counters::{CounterSink, FilterCounter};
use crate::handle::StreamHandle;
use crate::head::{RequestHead, ResponseHead};
use crate::http_client::HttpClient;
use crate::mailbox::Mailbox;
use crate::status::{Hook, Status};

/// An HTTP filter: one instance per stream, created on the stream's worker
/// by its factory. Every hook has a default that continues, so a filter
/// implements only what it needs.
pub trait Filter: 'static {
    /// The request head. `end_of_stream`: no body follows.
    fn request_headers<'a>(
        &'a mut self,
        cx: &'a mut StreamCx,
        head: &'a mut RequestHead,
        end_of_stream: bool,
    ) -> Hook<'a> {
        let _ = (cx, head, end_of_stream);
        Status::Continue.into()
    }

    /// A piece of the request body, owned by the filter while the hook
    /// runs (replace or clear it to change what goes on).
    /// `end_of_stream`: no more body follows; it comes with the last data
    /// or with an empty piece (see docs/filters.md, "End of stream").
    fn request_body<'a>(&'a mut self, cx: &'a mut StreamCx, body: &'a mut Bytes, end_of_stream: bool) -> Hook<'a> {
        let _ = (cx, body, end_of_stream);
        Status::Continue.into()
    }

    /// The request trailers (the body ends with them).
    fn request_trailers<'a>(&'a mut self, cx: &'a mut StreamCx, trailers: &'a mut HeaderMap) -> Hook<'a> {
        let _ = (cx, trailers);
        Status::Continue.into()
    }

    /// The response head (from the upstream, or a local reply).
    fn response_headers<'a>(
        &'a mut self,
        cx: &'a mut StreamCx,
        head: &'a mut ResponseHead,
        end_of_stream: bool,
    ) -> Hook<'a> {
        let _ = (cx, head, end_of_stream);
        Status::Continue.into()
    }

    /// A piece of the response body (`end_of_stream` as for
    /// [`Filter::request_body`]).
    fn response_body<'a>(&'a mut self, cx: &'a mut StreamCx, body: &'a mut Bytes, end_of_stream: bool) -> Hook<'a> {
        let _ = (cx, body, end_of_stream);
        Status::Continue.into()
    }

    /// The response trailers.
    fn response_trailers<'a>(&'a mut self, cx: &'a mut StreamCx, trailers: &'a mut HeaderMap) -> Hook<'a> {
        let _ = (cx, trailers);
        Status::Continue.into()
    }

    /// The stream ended (answered, reset or timed out): the last call, for
    /// logging and accounting. Synchronous.
    fn on_complete(&mut self, cx: &StreamCx) {
        let _ = cx;
    }
}

/// What a hook sees of its stream besides the message: its [`Context`],
/// where it is going, state the stream's filters share, and the running
/// filter's counters.
pub struct StreamCx {
    context: Context,
    downstream: SocketAddr,
    route: Option<String>,
    cluster: Option<String>,
    route_deadline: Option<Instant>,
    state: HashMap<TypeId, Box<dyn Any>>,
    /// Handles are made on demand ([`StreamCx::enable_handles`]): the
    /// stream's mailbox, once the first was asked for.
    handles: bool,
    mailbox: OnceCell<Rc<Mailbox>>,
    http_client: Option<Rc<dyn HttpClient>>,
    counters: Option<Rc<dyn CounterSink>>,
    /// The position in the chain of the filter whose hook runs.
    filter: usize,
}

impl StreamCx {
    /// A stream's filter context (made by the proxy).
    pub fn new(context: Context, downstream: SocketAddr) -> StreamCx {
        StreamCx {
            context,
            downstream,
            route: None,
            cluster: None,
            route_deadline: None,
            state: HashMap::new(),
            handles: false,
            mailbox: OnceCell::new(),
            http_client: None,
            counters: None,
            filter: 0,
        }
    }

    /// Gives the stream where its filters' counters go (the proxy: the
    /// worker's stats for the stream's config version).
    pub fn set_counters(&mut self, sink: Rc<dyn CounterSink>) {
        self.counters = Some(sink);
    }

    /// Where this stream's filter counters go, to count later on this
    /// worker without a hook (with [`StreamCx::filter_index`] for `filter`):
    /// what the foreign-filter kind does with counts a Go goroutine made
    /// after its stream's last hook. `Rc`: it stays on the worker. `None`
    /// on a stream made without counters (tests).
    pub fn counter_sink(&self) -> Option<Rc<dyn CounterSink>> {
        self.counters.clone()
    }

    /// Says which filter of the chain runs next (the proxy, before each
    /// hook): [`StreamCx::inc`] counts into that filter's counters.
    pub fn set_filter_index(&mut self, index: usize) {
        self.filter = index;
    }

    /// The position in the chain of the filter whose hook runs.
    pub fn filter_index(&self) -> usize {
        self.filter
    }

    /// Adds one to `counter`, one of the running filter's own (declared by
    /// its factory: [`FilterFactory::counters`](crate::FilterFactory::counters)).
    /// A write to the worker's own copy of the stats: no lock, no shared
    /// write. Does nothing on a stream made without counters (tests).
    #[inline]
    pub fn inc(&self, counter: FilterCounter) {
        self.add(counter, 1);
    }

    /// Adds `n` to `counter` (see [`StreamCx::inc`]).
    #[inline]
    pub fn add(&self, counter: FilterCounter, n: u64) {
        if let Some(sink) = &self.counters {
            sink.add(self.filter, counter, n);
        }
    }

    /// Lets the stream make its handles on demand (the proxy, on the
    /// stream's worker): the first [`StreamCx::handle`] makes the stream's
    /// [`Mailbox`] ([`StreamCx::mailbox`]). Most streams never ask for a
    /// handle, and then pay for no mailbox.
    pub fn enable_handles(&mut self) {
        self.handles = true;
    }

    /// The stream's mailbox, once a handle was made
    /// ([`StreamCx::enable_handles`]): where the proxy applies the handles'
    /// calls. `None` before: no call can be queued.
    pub fn mailbox(&self) -> Option<&Rc<Mailbox>> {
        self.mailbox.get()
    }

    /// A handle to this stream, to give to work off the worker (or to a
    /// later task on it). `None` only for a stream made without one (tests).
    /// A hook must not await a call on its own stream's handle: the chain
    /// answers handle calls between hooks, not during one.
    pub fn handle(&self) -> Option<StreamHandle> {
        self.handles.then(|| self.mailbox.get_or_init(|| Mailbox::new(self.context.clone()).0).handle())
    }

    /// Gives the stream an HTTP client (the proxy, on the stream's worker).
    pub fn set_http_client(&mut self, client: Rc<dyn HttpClient>) {
        self.http_client = Some(client);
    }

    /// The client for HTTP calls to the config's clusters from this
    /// stream's worker (see [`HttpClient`]); pass it [`StreamCx::context`]
    /// so that the call ends with the stream. `None` only for a stream
    /// made without one (tests).
    pub fn http_client(&self) -> Option<Rc<dyn HttpClient>> {
        self.http_client.clone()
    }

    /// The stream's context: cancelled when the stream ends for any reason
    /// (client reset, timeout, local reply), with the route timeout as its
    /// deadline. Give it to any work done for the stream.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The client's address.
    pub fn downstream_address(&self) -> SocketAddr {
        self.downstream
    }

    /// The route's name, once routed.
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The cluster the route chose, once routed.
    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// The deadline the route's timeout gives this request, counted from
    /// its arrival: a bound for work done for the stream (the Go SDK makes
    /// it its `ctx.Deadline()`). The route timeout proper starts when the
    /// request is forwarded, after the request hooks; [`StreamCx::context`]
    /// carries no deadline meanwhile. `None` when the route has no timeout,
    /// or the request matched no forwarding route on arrival (a filter may
    /// still change what it matches).
    pub fn route_deadline(&self) -> Option<Instant> {
        self.route_deadline
    }

    /// Sets [`StreamCx::route_deadline`] (the proxy, when the stream starts).
    pub fn set_route_deadline(&mut self, deadline: Option<Instant>) {
        self.route_deadline = deadline;
    }

    /// Sets where the stream is going (the proxy, when it routes).
    pub fn set_route(&mut self, route: Option<String>, cluster: Option<String>) {
        self.route = route;
        self.cluster = cluster;
    }

    /// A value of type `T` shared by the stream's filters, if one was put.
    pub fn state<T: 'static>(&self) -> Option<&T> {
        self.state.get(&TypeId::of::<T>()).and_then(|v| v.downcast_ref())
    }

    /// The same, mutable.
    pub fn state_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.state.get_mut(&TypeId::of::<T>()).and_then(|v| v.downcast_mut())
    }

    /// Puts a value of type `T` (replacing one there was); returns the old.
    pub fn put_state<T: 'static>(&mut self, value: T) -> Option<T> {
        self.state.insert(TypeId::of::<T>(), Box::new(value)).and_then(|old| old.downcast().ok()).map(|b| *b)
    }
}

impl std::fmt::Debug for StreamCx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCx")
            .field("downstream", &self.downstream)
            .field("route", &self.route)
            .field("cluster", &self.cluster)
            .field("state", &self.state.len())
            .field("http_client", &self.http_client.is_some())
            .field("counters", &self.counters.is_some())
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}
