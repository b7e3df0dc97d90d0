//! One request, from its head to the end of its response, whichever
//! protocol the client and the upstream speak. The path of a request, top
//! to bottom, as phases (after Pingora's phase list); each is a method of
//! [`Stream`] below, in this order:
//!
//! 1. **request filters** ([`Stream::request_filters`]): the head through
//!    the listener's filters; a filter may answer instead.
//! 2. **route** ([`Stream::route`]): the first route whose match holds; no
//!    route, a 404.
//! 3. the route's action: a **direct response** or a **redirect**
//!    ([`Stream::direct_response`], [`Stream::redirect`]), or **forward**
//!    ([`Stream::forward`]):
//!    1. **upstream request**: the client's head made the upstream's
//!       (`rewrite`), under the request's deadline (`deadline`);
//!    2. **request body** ([`Stream::request_body`]): read whole when small
//!       (a retry can send it again), else streamed during the tries;
//!    3. **upstream attempts** (`attempt`): tries per the retry policy until
//!       a response head is kept;
//!    4. **response** ([`Stream::response`]): through the response filters
//!       to the client, the body relayed as it comes — the request body may
//!       still be going up (full duplex, `upstream`) — or a tunnel for a
//!       WebSocket.
//! 4. **log** ([`Stream::log`]): stats and the access log.
//!
//! The client side is a [`FilteredStream`] throughout: it runs the filters,
//! and the stream layer never sees a hook.
//!
//! Every stream with filters gets a child of its connection's [`Context`],
//! cancelled when the stream ends, whatever ends it, so filter work for it
//! stops too; a forwarded request a child of that whose deadline is the
//! route timeout (it ends with the response head); each try a child of
//! that with the per-try timeout. A client that disconnects while its
//! request waits for the response head takes the upstream request with it
//! (like nginx, a half-close counts as leaving).
//!
//! With `tracing:` in the config, the trace is decided as the head arrives
//! (`spans`): a sampled request gets its `ingress` span, ended after the
//! log phase, and its tries and filters spans of their own. Log lines
//! emitted while the stream is worked on carry its request id (and trace
//! id) — `nuncio_trace::InRequest` around the task that serves it: with
//! tracing from the head on (the id is made then), without from the
//! forwarding on (`rewrite` makes it).

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use nuncio_accesslog::{Record, ResponseFlags};
use nuncio_config::{Cluster, DirectResponse, Forward, HashOn, Redirect, RouteAction, UpstreamProtocol};
use nuncio_context::{CancelHandle, Context};
use nuncio_runtime::SlotRef;
use nuncio_runtime::clock;
use nuncio_trace::{RequestTrace, Span};

use crate::attempt::{Answer, Attempts, Counting, Failure, TryLog};
use crate::bounded::{under, within};
use crate::deadline::RequestDeadline;
use crate::downstream::{BodyStart, Downstream};
use crate::filter_manager::{Chain, FilteredStream};
use crate::message::{BodyFrame, BodySize, RequestBodyError, RequestHead, ResponseHead};
use crate::snapshot::{ListenerSnapshot, Local};
use crate::spans::{FilterTrace, Served, TryEnd, TryTrace, end_try};
use crate::stats::FilterCounters;
use crate::stream_info::StreamInfo;
use crate::upstream::{self, RequestBody, TryError, UpstreamRequest};
use crate::worker::{LocalCluster, Worker};
use nuncio_router::CompiledRoute;

/// Request bodies up to this size are buffered before the first try, so
/// that a retry can send them again. Larger ones stream, and are retried
/// only when no byte of them was sent (connect failures).
const RETRY_BUFFER: u64 = 64 * 1024;

/// Serves one request, from its head to the end of its response, whichever
/// protocol the client speaks, and counts it.
pub(crate) async fn serve(
    worker: &Worker,
    local: &SlotRef<Local>,
    listener: &ListenerSnapshot,
    downstream: &mut Downstream<'_>,
    // By reference: the caller's future holds the head already, and an
    // owned argument would be copied twice more into this one's (an async
    // fn keeps its argument and moves it into a local).
    request: &mut RequestHead,
    ctx: &Context,
) {
    // Tracing, when configured: the request's place in its trace (and its
    // request id), decided before any filter sees the head.
    let trace = local.snapshot.tracing.as_ref().map(|tracing| crate::spans::begin(tracing, request));
    // Log lines say the request's ids (the task serving it is wrapped in
    // `InRequest`): with tracing known now; without, from the forwarding
    // on (`rewrite` notes the id). (One `async fn`, not two: awaiting a
    // second one would copy its future, kilobytes, per request.)
    nuncio_trace::set_log_ids(trace.as_ref().and_then(|trace| crate::spans::log_ids(request, trace)));
    // Spans only for a sampled request.
    let trace = trace.filter(|t| t.sampled);
    let span = trace
        .as_ref()
        .zip(local.snapshot.tracing.as_ref())
        .map(|(trace, tracing)| crate::spans::downstream_span(&tracing.exporter, trace, request, downstream.peer()));
    // With filters the stream has a context of its own (see the module
    // docs); without, the connection's will do: everything the stream
    // derives from it is cancelled by its own guard.
    let filters = local.filters(listener);
    let own_ctx: Option<(Context, CancelHandle)> = filters.is_some().then(|| ctx.with_cancel());
    let ctx = own_ctx.as_ref().map_or(ctx, |(ctx, _cancel)| ctx);
    let chain = filters.map(|filters| {
        let mut cx = nuncio_filter::StreamCx::new(ctx.clone(), downstream.peer());
        cx.set_route_deadline(route_timeout(listener, request).and_then(clock::after));
        cx.set_http_client(crate::http_client::ClusterClient::for_stream(local, listener.time_left_header.clone()));
        if let Some(table) = &filters.counters {
            cx.set_counters(Rc::new(FilterCounters { store: local.stats.clone(), table: table.clone() }));
        }
        let trace = trace.map(|request| FilterTrace { local: local.clone(), request });
        Box::new(Chain::new(&filters.factories, cx, trace, filters.directions))
    });
    let info = StreamInfo::new(listener.access_log.is_some(), downstream.started());
    let mut stream =
        Stream { worker, local, listener, client: FilteredStream::new(downstream, chain), ctx, info, trace };
    stream.run(request).await;
    let panics = stream.client.complete();
    if panics > 0 {
        local.stats.add(local.snapshot.stats.filter_panics, panics);
    }
    stream.log(request);
    if let Some(span) = span {
        stream.end_span(span);
    }
    nuncio_trace::set_log_ids(None);
    // The next head decoded on this worker reuses a map it had.
    std::mem::take(&mut request.headers).recycle();
}

/// The timeout of the forwarding route the request matches on arrival, for
/// the filters (`StreamCx::route_deadline`).
fn route_timeout(listener: &ListenerSnapshot, request: &RequestHead) -> Option<std::time::Duration> {
    let route = listener.routes.select(&nuncio_router::Request {
        method: &request.method,
        host: request.authority.as_ref().map_or("", |a| a.as_str()),
        path: request.uri.path(),
        query: request.uri.query(),
        headers: &request.headers,
    })?;
    match &route.route.action {
        RouteAction::Forward(forward) => forward.timeout,
        _ => None,
    }
}

/// A stream being served: what its phases share.
struct Stream<'a, 'd, 'c> {
    worker: &'a Worker,
    local: &'a SlotRef<Local>,
    listener: &'a ListenerSnapshot,
    /// The client side, through the listener's filters.
    client: FilteredStream<'d, 'c>,
    /// The stream's context.
    ctx: &'a Context,
    info: StreamInfo,
    /// The request's trace, when it is sampled (its spans are made).
    trace: Option<RequestTrace>,
}

impl<'a> Stream<'a, '_, '_> {
    /// The phases, in order.
    async fn run(&mut self, request: &mut RequestHead) {
        if self.worker.overload.level(&self.local.snapshot.config.overload) != crate::overload::Level::Normal {
            return Box::pin(self.shed()).await;
        }
        if !self.request_filters(request).await {
            return;
        }
        let Some(route) = self.route(request).await else { return };
        match &route.route.action {
            RouteAction::DirectResponse(direct) => self.direct_response(direct).await,
            RouteAction::Redirect(redirect) => self.redirect(redirect, route, request).await,
            // Tunnelling CONNECT to a cluster is not a reverse proxy's job
            // (an origin would not understand it): say so instead.
            RouteAction::Forward(_) if request.method == Method::CONNECT => {
                self.client.close_connection();
                self.client.local_reply(StatusCode::NOT_IMPLEMENTED, "nuncio: CONNECT is not supported").await;
            }
            RouteAction::Forward(forward) => self.forward(route, forward, request).await,
        }
    }

    /// Overloaded: the request is answered 503 at once, and the connection
    /// closes after it (see `overload`).
    async fn shed(&mut self) {
        self.local.stats.inc(self.local.snapshot.stats.overload_shed);
        self.info.flags |= ResponseFlags::OVERLOAD_MANAGER;
        self.client.close_connection();
        self.client.local_reply(StatusCode::SERVICE_UNAVAILABLE, "nuncio: overloaded, try again later").await;
    }

    /// Phase 1: the request head through the listener's filters. `false`
    /// when the stream ends here (a filter answered, or the client left).
    async fn request_filters(&mut self, request: &mut RequestHead) -> bool {
        match self.client.request_headers(request).await {
            crate::filter_manager::Outcome::Continue => true,
            crate::filter_manager::Outcome::Reply(reply) => {
                self.client.reply(reply).await;
                false
            }
            crate::filter_manager::Outcome::Gone => {
                self.info.flags |= ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
                false
            }
        }
    }

    /// Phase 2: the route for the request (as the filters left it); `None`
    /// when there is none (answered 404).
    async fn route(&mut self, request: &RequestHead) -> Option<&'a CompiledRoute> {
        let host = request.authority.as_ref().map_or("", |a| a.as_str());
        let path = request.uri.path();
        let query = request.uri.query();
        let route = self.listener.routes.select(&nuncio_router::Request {
            method: &request.method,
            host,
            path,
            query,
            headers: &request.headers,
        });
        if route.is_none() {
            let message = format!("nuncio: no route for host \"{host}\" path \"{path}\"");
            self.info.flags |= ResponseFlags::NO_ROUTE_FOUND;
            self.client.local_reply(StatusCode::NOT_FOUND, &message).await;
        }
        route
    }

    /// Phase 3, a route that answers itself.
    async fn direct_response(&mut self, direct: &DirectResponse) {
        let status = StatusCode::from_u16(direct.status).unwrap_or(StatusCode::OK);
        let body = Bytes::from(direct.body.clone().unwrap_or_default());
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        self.client.respond(status, headers, body).await;
    }

    /// Phase 3, a route that redirects.
    async fn redirect(&mut self, redirect: &Redirect, route: &CompiledRoute, request: &RequestHead) {
        let host = request.authority.as_ref().map_or("", |a| a.as_str());
        let https = self.client.tls().is_some();
        let location =
            crate::rewrite::redirect_location(redirect, &route.route.matcher.path, &request.uri, host, https);
        let status = StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
        let Ok(location) = HeaderValue::from_str(&location) else {
            return self.client.local_reply(StatusCode::BAD_REQUEST, "nuncio: bad redirect target").await;
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, location);
        self.client.respond(status, headers, Bytes::new()).await;
    }

    /// Phase 3, a route that forwards: the upstream request, its body, the
    /// tries, the response.
    async fn forward(&mut self, route: &CompiledRoute, forward: &Forward, request: &mut RequestHead) {
        let (local, worker) = (self.local, self.worker);
        let cluster = route
            .cluster(fastrand::u64(..))
            .and_then(|name| Some((worker.cluster(&local.snapshot, name)?, local.snapshot.stats.clusters.get(name)?)));
        let Some((cluster, stats)) = cluster else {
            self.info.flags |= ResponseFlags::NO_ROUTE_FOUND;
            let message = "nuncio: route names no known cluster";
            return self.client.local_reply(StatusCode::INTERNAL_SERVER_ERROR, message).await;
        };
        self.info.cluster = Some(cluster.state.clone());
        let config = cluster.state.config();
        let upgrade = crate::rewrite::tunnelled_protocol(request);
        if upgrade.is_some() && config.protocol != UpstreamProtocol::Http1 {
            self.client.close_connection();
            let message = "nuncio: protocol upgrades go to HTTP/1.1 clusters only";
            return self.client.local_reply(StatusCode::NOT_IMPLEMENTED, message).await;
        }
        let hash = request_hash(config, request, self.client.peer());
        let time_left = self.listener.time_left_header.as_ref();

        // 3.1: the upstream request, under the request's deadline.
        let target = crate::rewrite::prepare_upstream_request(
            request,
            self.client.peer(),
            route,
            forward,
            time_left,
            upgrade.as_ref(),
            self.client.tls().is_some(),
        );
        let deadline = RequestDeadline::new(self.ctx, forward.timeout, &request.headers);
        // A small body is read in full first (see `request_body`), so it goes
        // upstream with its exact length whatever framing the client used. A
        // larger one streams: with its declared length, unless body filters
        // may change it.
        let size = match request.body {
            BodySize::Exact(n) if n > RETRY_BUFFER && self.client.filters_request() => BodySize::Unknown,
            size => size,
        };
        let mut upstream_request = UpstreamRequest {
            method: request.method.clone(),
            target,
            headers: &request.headers,
            body: size,
            deadline: None,
            traceparent: None,
            upgrade,
            expect_continue: request.expect_continue,
        };

        // 3.2: the request body; copies to the route's mirrors, if any.
        // A body the client holds back until the upstream asks for it
        // (`Expect: 100-continue`) is never read ahead: it streams. A body
        // of unknown length that has already ended, empty (an h2c `DATA`
        // frame with only the end, a chunked body of just its last chunk),
        // is no body to stream: it goes without chunked framing.
        // A body whose first bytes are already malformed is refused before
        // anything goes upstream.
        let size = match request.body {
            _ if request.expect_continue => BodySize::Unknown,
            BodySize::Unknown => match self.client.body_start() {
                BodyStart::Empty => BodySize::Exact(0),
                BodyStart::Invalid => BodySize::Exact(0),
                BodyStart::Unknown => BodySize::Unknown,
            },
            size => size,
        };
        let Some(mut body) = self.request_body(size, deadline.context()).await else { return };
        if !forward.mirrors.is_empty() {
            crate::mirror::send(worker, local, &forward.mirrors, &upstream_request, &body, self.ctx, self.trace);
        }

        // 3.3: the tries.
        let attempts = Attempts {
            cluster: &cluster,
            counting: Counting { store: &local.stats, stats },
            policy: forward.retries.as_ref(),
            hash,
            time_left,
            grpc: deadline.grpc_request,
            trace: self.try_trace(),
        };
        let (mut log, mut exchange) = (TryLog::default(), None);
        let client = &mut self.client;
        let mut tried =
            attempts.run(&mut upstream_request, &mut body, client, deadline.context(), &mut log, &mut exchange).await;
        self.info.attempts = log.tries;
        self.info.hedge_won = log.hedge_won;
        self.info.upstream_host = log.host;
        self.info.upstream_service_time = log.service_time;
        drop(deadline);

        // 3.4: the response.
        match tried {
            Ok(ref mut answer) => self.response(answer, &mut exchange, &cluster).await,
            // Boxed: the rare path, kept out of every stream's future.
            Err(failure) => Box::pin(self.failed(failure, config)).await,
        }
    }

    /// Phase 3.2: the request body as the tries will send it; `None` when
    /// the stream ended while it was read (answered already).
    async fn request_body(&mut self, size: BodySize, ctx: &Context) -> Option<RequestBody> {
        match size {
            BodySize::Empty => Some(RequestBody::Empty),
            BodySize::Exact(n) if n <= RETRY_BUFFER => {
                // Boxed, once for the whole body (not once a piece): reading
                // through the filters is a large future, and only requests
                // with a body come here.
                let client = &mut self.client;
                let read = Box::pin(async {
                    let mut chunks = Vec::new();
                    loop {
                        match under(ctx, client.read_body()).await {
                            Ok(Ok(Some(BodyFrame::Data(data)))) => chunks.push(data),
                            Ok(Ok(Some(BodyFrame::Trailers(_)))) => {}
                            Ok(Ok(None)) => return Ok(chunks),
                            Ok(Err(e)) => return Err(Some(e)),
                            Err(_) => return Err(None),
                        }
                    }
                })
                .await;
                match read {
                    Ok(chunks) => Some(RequestBody::Buffered(chunks)),
                    Err(Some(e)) => {
                        Box::pin(self.source_failed(e)).await;
                        None
                    }
                    // Out of time (the stream's context).
                    Err(None) => {
                        let message = "nuncio: request body not received in time";
                        self.client.local_reply(StatusCode::REQUEST_TIMEOUT, message).await;
                        None
                    }
                }
            }
            BodySize::Exact(_) | BodySize::Unknown => Some(RequestBody::Streaming { started: false }),
        }
    }

    /// Phase 3.4: the upstream's response to the client, through the
    /// response filters, its body as it comes (feeding the upstream the rest
    /// of the request body meanwhile, if it still streams); then the
    /// HTTP/1.1 connection back to its pool if the exchange ended cleanly.
    /// The route's timeout is over: the body is bounded only by the
    /// stream's context.
    ///
    /// The answer by reference: it lies in `forward`'s future already, and
    /// taken by value it would be copied into this one's (its head's fields
    /// are taken out of it instead).
    async fn response(
        &mut self,
        answer: &mut Answer<'_>,
        slot: &mut Option<upstream::Exchange>,
        cluster: &LocalCluster,
    ) {
        let (active, span) = (&answer.active, answer.span.take());
        let Some(exchange) = slot.as_mut() else { return };
        let ResponseHead { status, ref mut headers, body } = answer.head.head;
        let mut headers = std::mem::take(headers);
        let upstream_status = status.as_u16();
        if answer.head.tunnel {
            let mut headers = headers.into_map();
            // The protocol the upstream chose, before hop-by-hop fields go.
            let switched = headers.get(header::UPGRADE).cloned();
            nuncio_http1::remove_hop_by_hop(&mut headers);
            // `attempt` let only the protocol the request asked for through.
            if let Some(protocol) = switched {
                headers.insert(header::UPGRADE, protocol);
            }
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(upstream::Exchange::Http1(exchange)) = slot.take() {
                let (mut upstream, early) = exchange.into_tunnel();
                let idle = self.listener.config.stream_idle_timeout;
                Box::pin(self.client.tunnel(status, &headers, &mut upstream.stream, early, idle)).await;
            }
            return end_try(span, TryEnd::Status(upstream_status));
        }
        headers.remove_hop_by_hop();
        if self.info.logged {
            self.info.response_headers = Some(headers.to_map());
            self.info.response_duration = Some(clock::since(self.info.start));
        }
        if self.client.send_head(ResponseHead { status, headers, body }).await.is_err() {
            self.info.flags |= ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
            return end_try(span, TryEnd::Canceled(&crate::spans::CLIENT_LEFT));
        }
        // No progress for `stream_idle_timeout` (the upstream sends
        // nothing, or the client takes nothing: a zero window) ends it.
        let idle = self.listener.config.stream_idle_timeout;
        let client = &mut self.client;
        let relayed = under(self.ctx, async {
            // A frame read ahead, to learn whether the one before it ended
            // the body.
            let mut ahead = None;
            loop {
                // A filter answered instead: the rest of the upstream's body
                // is not wanted (its connection is not reused).
                if client.response_replaced() {
                    return Ok(());
                }
                // The head goes out with the first body bytes (one write for
                // a small response), or alone when the upstream is slow.
                let frame = match ahead.take().or_else(|| exchange.ready_frame()) {
                    Some(frame) => frame,
                    None => {
                        within(idle, client.flush()).await.ok_or(Stop::Idle)?.map_err(|_| Stop::Client)?;
                        within(idle, upstream::next_frame(exchange, client)).await.ok_or(Stop::Idle)?
                    }
                };
                let written = match frame.map_err(Stop::from)? {
                    Some(BodyFrame::Data(data)) => {
                        let mut next = exchange.ready_frame();
                        // What the upstream sent already is read before this
                        // piece goes (see `read_now`).
                        if next.is_none() && exchange.read_now() {
                            next = exchange.ready_frame();
                        }
                        match next {
                            // The end is already here: the last data goes with
                            // it (one body hook call, one HTTP/2 frame, one
                            // write).
                            Some(Ok(None)) => {
                                return within(idle, client.send_last(data))
                                    .await
                                    .ok_or(Stop::Idle)?
                                    .map_err(|_| Stop::Client);
                            }
                            // More is here: the two pieces may leave together.
                            Some(Ok(Some(_))) => {
                                ahead = next;
                                within(idle, client.hold_data(data)).await
                            }
                            // Nothing more yet, or the upstream failed: what
                            // came goes out now.
                            _ => {
                                ahead = next;
                                within(idle, client.send_data(data)).await
                            }
                        }
                    }
                    Some(BodyFrame::Trailers(trailers)) => within(idle, client.send_trailers(trailers)).await,
                    None => return within(idle, client.finish()).await.ok_or(Stop::Idle)?.map_err(|_| Stop::Client),
                };
                written.ok_or(Stop::Idle)?.map_err(|_| Stop::Client)?;
            }
        })
        .await;
        match relayed {
            Ok(Ok(())) => {
                end_try(span, TryEnd::Status(upstream_status));
                if let Some(upstream::Exchange::Http1(exchange)) = slot.take()
                    && let Some(conn) = exchange.into_reusable()
                {
                    cluster.pools.release(active.index(), conn);
                }
                return;
            }
            Ok(Err(Stop::Idle)) => {
                end_try(span, TryEnd::Error(&"nothing moved for the stream idle timeout"));
                self.info.flags |= ResponseFlags::STREAM_IDLE_TIMEOUT;
            }
            Ok(Err(Stop::Client)) => {
                end_try(span, TryEnd::Error(&"the client disconnected"));
                self.info.flags |= ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
            }
            Ok(Err(Stop::Upstream)) | Err(_) => {
                end_try(span, TryEnd::Error(&"the response was cut short"));
                self.info.flags |= ResponseFlags::UPSTREAM_CONNECTION_TERMINATION;
            }
        }
        // The head is out: all that can be done is make the client see the
        // response fail rather than end short.
        self.client.abort();
    }

    /// Phase 3.4 when no response head was kept: nuncio answers itself.
    async fn failed(&mut self, failure: Failure, cluster: &Cluster) {
        match failure {
            Failure::NoHealthy => {
                self.info.flags |= ResponseFlags::NO_HEALTHY_UPSTREAM;
                let message = format!("nuncio: no healthy endpoint in cluster {}", cluster.name);
                self.client.local_reply(StatusCode::SERVICE_UNAVAILABLE, &message).await;
            }
            Failure::Overflow(breaker) => {
                self.info.flags |= ResponseFlags::UPSTREAM_OVERFLOW;
                let message = format!("nuncio: circuit breaker {} open for cluster {}", breaker.name(), cluster.name);
                self.client.local_reply(StatusCode::SERVICE_UNAVAILABLE, &message).await;
            }
            Failure::Timeout => {
                self.info.flags |= ResponseFlags::UPSTREAM_REQUEST_TIMEOUT;
                self.client.local_reply(StatusCode::GATEWAY_TIMEOUT, "nuncio: upstream request timeout").await;
            }
            Failure::Source(e) => self.source_failed(e).await,
            Failure::Try { error, retried } => {
                self.info.flags |= error.flag();
                if retried {
                    self.info.flags |= ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
                }
                let (status, message) = error.answer();
                if let TryError::Source(RequestBodyError::Invalid(_) | RequestBodyError::TimedOut) = error {
                    self.client.close_connection();
                }
                // Part of a streamed body may be unread: the connection
                // cannot carry another request then (the HTTP/1.1 codec sees
                // to it).
                self.client.local_reply(status, &message).await;
            }
        }
    }

    /// The request body stopped before it was forwarded: the client left,
    /// sent a body the codec refuses, or a filter answered.
    async fn source_failed(&mut self, error: RequestBodyError) {
        match error {
            RequestBodyError::Gone => self.info.flags |= ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
            RequestBodyError::Answered => {
                self.client.send_answer().await;
            }
            RequestBodyError::Invalid(e) => {
                self.client.close_connection();
                self.info.flags |= ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR;
                self.client.local_reply(e.status(), &format!("nuncio: bad request body: {e}")).await;
            }
            RequestBodyError::TimedOut => {
                // The rest of the body is not read: the connection cannot
                // carry another request.
                self.client.close_connection();
                self.info.flags |= ResponseFlags::STREAM_IDLE_TIMEOUT;
                let message = "nuncio: request body not received in time";
                self.client.local_reply(StatusCode::REQUEST_TIMEOUT, message).await;
            }
        }
    }

    /// Phase 4: the stream counted, and logged if its listener logs.
    fn log(&self, request: &mut RequestHead) {
        let (store, stats) = (&self.local.stats, &self.local.snapshot.stats);
        store.inc(stats.downstream_rq_total);
        let status = self.client.status();
        if let Some(status) = status {
            store.inc(stats.downstream_rq_class[crate::stats::class(status.as_u16())]);
        }
        let info = &self.info;
        let duration = clock::since(info.start);
        store.observe(stats.downstream_rq_duration, duration);
        let Some(log) = &self.listener.access_log else { return };
        let (bytes_received, bytes_sent) = self.client.bytes();
        let tls = self.client.tls();
        let record = Record {
            method: Some(&request.method),
            path: request.uri.path_and_query().map(|pq| pq.as_str()),
            authority: request.authority.as_ref().map(|a| a.as_str()),
            scheme: Some(if tls.is_some() { "https" } else { "http" }),
            downstream_tls_version: tls.map(|t| t.version),
            downstream_tls_cipher: tls.map(|t| t.cipher),
            requested_server_name: tls.and_then(|t| t.server_name.as_deref()),
            version: Some(request.version),
            request_headers: Some(request.headers.map()),
            response_headers: info.response_headers.as_ref(),
            status,
            flags: info.flags,
            bytes_received,
            bytes_sent,
            duration,
            response_duration: info.response_duration,
            upstream_service_time: info.upstream_service_time,
            upstream_host: info.upstream_host,
            upstream_cluster: info.cluster_name(),
            downstream_remote_address: Some(self.client.peer()),
            upstream_request_attempt_count: info.attempts,
            upstream_hedge_won: info.hedge_won,
            ..Record::new(info.start_time.unwrap_or_else(std::time::SystemTime::now))
        };
        log.sink.log(&log.format, &record);
    }
}

/// Why relaying a response stopped before its end.
enum Stop {
    /// Nothing moved for `stream_idle_timeout`.
    Idle,
    /// The client left (a write failed, or it reset the stream).
    Client,
    /// The upstream failed mid-body.
    Upstream,
}

impl From<TryError> for Stop {
    fn from(error: TryError) -> Stop {
        tracing::debug!(?error, "upstream response body failed");
        match error {
            TryError::Source(RequestBodyError::Gone) => Stop::Client,
            _ => Stop::Upstream,
        }
    }
}

impl<'a> Stream<'a, '_, '_> {
    /// What the tries need to make their spans, when the request is traced.
    fn try_trace(&self) -> Option<TryTrace<'a>> {
        let local: &'a SlotRef<Local> = self.local;
        let tracing = local.snapshot.tracing.as_ref()?;
        Some(TryTrace { exporter: &tracing.exporter, request: self.trace?, label: "router" })
    }

    /// Ends the request's own span with what it came to.
    fn end_span(&self, span: Span<'_>) {
        let (bytes_received, bytes_sent) = self.client.bytes();
        let served = Served {
            status: self.client.status(),
            flags: self.info.flags,
            cluster: self.info.cluster_name(),
            upstream: self.info.upstream_host,
            bytes_received,
            bytes_sent,
        };
        crate::spans::end_downstream(span, &served);
    }
}

/// The request's hash for a `ring_hash` cluster: its `hash_on` header, or
/// the client's IP. `None` (a random endpoint) when the header is absent.
fn request_hash(cluster: &Cluster, request: &RequestHead, peer: SocketAddr) -> Option<u64> {
    match cluster.hash_on.as_ref()? {
        HashOn::Header(name) => request.headers.get_str(name).map(crate::cluster::lb::hash_of),
        HashOn::SourceIp => Some(crate::cluster::lb::hash_of(&peer.ip())),
    }
}
