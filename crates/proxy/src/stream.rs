//! One request from headers to the end of its response, whichever protocol
//! the client and the upstream speak: the client side is a
//! [`Downstream`], the upstream side [`upstream::send`].
//!
//! The path, top to bottom: select a route → answer directly, redirect, or
//! forward → (forward) prepare the upstream head (hop-by-hop fields out,
//! `x-forwarded-*` and `x-request-id` in, rewrites) → try the upstream,
//! retrying per policy → relay the response head and body back.
//!
//! Every stream gets a child of its connection's [`Context`] whose deadline
//! is the route timeout (it ends when the response head arrives); each try a
//! child of that with the per-try timeout. A client that disconnects while
//! its request waits for the response head takes the upstream request with
//! it (like nginx, a half-close counts as leaving).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version, header};
use nuncio_accesslog::{Record, ResponseFlags};
use nuncio_config::{
    Cluster, Forward, HashOn, PathMatch, Redirect, RedirectPath, RetryOn, RetryPolicy, RouteAction, UpstreamProtocol,
};
use nuncio_context::Context;
use nuncio_runtime::SlotRef;
use nuncio_stats::Store;
use tokio::time::Instant;

use crate::bounded::under;
use crate::cluster::resources::{Breaker, Permit, Resources};
use crate::cluster::{ActiveRequest, ClusterState, ConnectError, PickError};
use crate::downstream::{Codec, Downstream, Interrupt, ReadError};
use crate::filter_manager::{Chain, Outcome};
use crate::message::{BodyFrame, BodySize, RequestHead, ResponseHead};
use crate::router::CompiledRoute;
use crate::snapshot::{ListenerSnapshot, Local};
use crate::stats::{ClusterStats, FilterCounters};
use crate::stream_info::StreamInfo;
use crate::upstream::{self, RequestBody, ResponseBody, TryError, UpstreamRequest, UpstreamResponse};
use crate::worker::Worker;

/// Request bodies up to this size are buffered before the first try, so
/// that a retry can send them again. Larger ones stream, and are retried
/// only when no byte of them was sent (connect failures).
const RETRY_BUFFER: u64 = 64 * 1024;

static X_FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: header::HeaderName = header::HeaderName::from_static("x-forwarded-proto");
static X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// Serves one request, from its head to the end of its response, whichever
/// protocol the client speaks, and counts it.
pub(crate) async fn serve(
    worker: &Worker,
    local: &SlotRef<Local>,
    listener: &ListenerSnapshot,
    downstream: &mut Downstream<'_>,
    mut request: RequestHead,
    ctx: &Context,
) {
    let mut info = StreamInfo::new(listener.access_log.is_some());
    // With filters, the stream has a context of its own, cancelled when the
    // stream ends, whatever ends it, so that filter work for it stops too.
    // Without, the connection's will do: everything the stream derives from
    // it is cancelled by its own guard.
    let own_ctx = listener.filters.is_some().then(|| ctx.with_cancel());
    let stream_ctx = own_ctx.as_ref().map_or(ctx, |(ctx, _cancel)| ctx);
    if let Some(factories) = &listener.filters {
        let mut cx = nuncio_filter::StreamCx::new(stream_ctx.clone(), downstream.peer());
        cx.set_route_deadline(route_timeout(listener, &request).map(|timeout| Instant::now() + timeout));
        cx.set_http_client(crate::http_client::ClusterClient::for_stream(local, listener.time_left_header.clone()));
        if let Some(table) = &listener.filter_counters {
            cx.set_counters(Rc::new(FilterCounters { store: local.stats.clone(), table: table.clone() }));
        }
        downstream.filters = Some(Box::new(Chain::new(factories, cx)));
    }
    answer(worker, local, listener, downstream, &mut request, stream_ctx, &mut info).await;
    if let Some(chain) = &mut downstream.filters {
        chain.complete();
        if chain.panics > 0 {
            local.stats.add(local.snapshot.stats.filter_panics, chain.panics);
        }
    }
    let (store, stats) = (&local.stats, &local.snapshot.stats);
    store.inc(stats.downstream_rq_total);
    if let Some(status) = downstream.status() {
        store.inc(stats.downstream_rq_class[crate::stats::class(status.as_u16())]);
    }
    let duration = info.start.elapsed();
    store.observe(stats.downstream_rq_duration, duration);
    if let Some(log) = &listener.access_log {
        let record = Record {
            method: Some(&request.method),
            path: request.uri.path_and_query().map(|pq| pq.as_str()),
            authority: request.authority.as_ref().map(|a| a.as_str()),
            scheme: Some("http"),
            version: Some(request.version),
            request_headers: Some(&request.headers),
            response_headers: info.response_headers.as_ref(),
            status: downstream.status(),
            flags: info.flags,
            bytes_received: downstream.bytes_received,
            bytes_sent: downstream.bytes_sent,
            duration,
            response_duration: info.response_duration,
            upstream_service_time: info.upstream_service_time,
            upstream_host: info.upstream_host,
            upstream_cluster: info.cluster.as_deref(),
            downstream_remote_address: Some(downstream.peer()),
            upstream_request_attempt_count: info.attempts,
            ..Record::new(info.start_time.unwrap_or_else(std::time::SystemTime::now))
        };
        log.sink.log(&log.format, &record);
    }
}

async fn answer(
    worker: &Worker,
    local: &SlotRef<Local>,
    listener: &ListenerSnapshot,
    downstream: &mut Downstream<'_>,
    request: &mut RequestHead,
    ctx: &Context,
    info: &mut StreamInfo,
) {
    if let Some(mut chain) = downstream.filters.take() {
        let mut view = request.take_for_filters();
        let outcome = {
            // The chain may wait (a filter stopped, a hook pending): a client
            // that leaves meanwhile ends it.
            let closed = std::pin::pin!(downstream.closed());
            Box::pin(chain.request_headers(&mut view, request.body == BodySize::Empty, closed)).await
        };
        downstream.filters = Some(chain);
        request.restore(view);
        match outcome {
            Outcome::Continue => {}
            Outcome::Reply(reply) => return downstream.reply(reply).await,
            Outcome::Gone => {
                info.flags |= ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
                return;
            }
        }
    }
    let host = request.authority.as_ref().map_or("", |a| a.as_str()).to_owned();
    let path = request.uri.path().to_owned();
    let Some(route) = listener.routes.select(&host, &path, &request.headers) else {
        let message = format!("nuncio: no route for host \"{host}\" path \"{path}\"");
        info.flags |= ResponseFlags::NO_ROUTE_FOUND;
        return downstream.local_reply(StatusCode::NOT_FOUND, &message).await;
    };
    match &route.route.action {
        RouteAction::DirectResponse(direct) => {
            let status = StatusCode::from_u16(direct.status).unwrap_or(StatusCode::OK);
            let body = Bytes::from(direct.body.clone().unwrap_or_default());
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            downstream.respond(status, headers, body).await;
        }
        RouteAction::Redirect(redirect) => {
            let location = redirect_location(redirect, &route.route.matcher.path, &request.uri, &host);
            let status = StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            let mut headers = HeaderMap::new();
            match HeaderValue::from_str(&location) {
                Ok(value) => headers.insert(header::LOCATION, value),
                Err(_) => return downstream.local_reply(StatusCode::BAD_REQUEST, "nuncio: bad redirect target").await,
            };
            downstream.respond(status, headers, Bytes::new()).await;
        }
        // Tunnelling CONNECT to a cluster is not a reverse proxy's job (an
        // origin would not understand it): say so instead of forwarding.
        RouteAction::Forward(_) if request.method == Method::CONNECT => {
            downstream.close_connection();
            downstream.local_reply(StatusCode::NOT_IMPLEMENTED, "nuncio: CONNECT is not supported").await;
        }
        RouteAction::Forward(forward) => {
            let cluster = route.cluster(fastrand::u64(..)).and_then(|name| {
                Some((worker.cluster(&local.snapshot, name)?, local.snapshot.stats.clusters.get(name)?))
            });
            let Some((cluster, stats)) = cluster else {
                let message = "nuncio: route names no known cluster";
                info.flags |= ResponseFlags::NO_ROUTE_FOUND;
                return downstream.local_reply(StatusCode::INTERNAL_SERVER_ERROR, message).await;
            };
            if request.upgrade && cluster.config().protocol != UpstreamProtocol::Http1 {
                downstream.close_connection();
                let message = "nuncio: protocol upgrades go to HTTP/1.1 clusters only";
                return downstream.local_reply(StatusCode::NOT_IMPLEMENTED, message).await;
            }
            let hash = request_hash(cluster.config(), request, downstream.peer());
            info.cluster = Some(cluster.config().name.clone());
            let time_left = listener.time_left_header.as_ref();
            let target = prepare_upstream_request(request, downstream.peer(), route, forward, time_left);
            let request = &*request;
            // A small body is read in full first (see `forward_request`), so
            // it goes upstream with its exact length whatever framing the
            // client used. A larger one streams: with its declared length,
            // unless body filters may change it.
            let body = match request.body {
                BodySize::Exact(n) if n > RETRY_BUFFER && downstream.filters.is_some() => BodySize::Unknown,
                size => size,
            };
            let upstream_request = UpstreamRequest {
                method: request.method.clone(),
                target,
                headers: &request.headers,
                body,
                deadline: None,
            };
            let counting = Counting { store: &local.stats, stats };
            forward_request(
                downstream,
                &cluster,
                counting,
                upstream_request,
                request,
                hash,
                forward,
                time_left,
                ctx,
                info,
            )
            .await;
        }
    }
}

/// The timeout of the forwarding route the request matches on arrival,
/// for filters (`StreamCx::route_deadline`).
fn route_timeout(listener: &ListenerSnapshot, request: &RequestHead) -> Option<std::time::Duration> {
    let host = request.authority.as_ref().map_or("", |a| a.as_str());
    match &listener.routes.select(host, request.uri.path(), &request.headers)?.route.action {
        RouteAction::Forward(forward) => forward.timeout,
        _ => None,
    }
}

/// The `Location` of a redirect: the request's URL with the route's
/// changes (query kept).
fn redirect_location(redirect: &Redirect, matched: &PathMatch, uri: &Uri, host: &str) -> String {
    let path = uri.path();
    let new_path = match &redirect.path {
        RedirectPath::Keep => path.to_owned(),
        RedirectPath::Replace(p) => p.clone(),
        RedirectPath::PrefixRewrite(p) => rewrite_prefix(path, matched, p),
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let host = redirect.host.as_deref().unwrap_or(host);
    format!("http://{host}{new_path}{query}")
}

/// Replaces the part of `path` the route matched with `replacement`.
fn rewrite_prefix(path: &str, matched: &PathMatch, replacement: &str) -> String {
    match matched {
        PathMatch::Prefix(prefix) if path.starts_with(prefix.as_str()) => {
            format!("{replacement}{}", &path[prefix.len()..])
        }
        PathMatch::Exact(p) if path == p => replacement.to_owned(),
        _ => path.to_owned(),
    }
}

/// Forwards to `cluster`: the body read (small ones in full, so that a
/// retry can send them again), tries made per the retry policy, the
/// response relayed.
#[allow(clippy::too_many_arguments)]
async fn forward_request(
    downstream: &mut Downstream<'_>,
    cluster: &Rc<ClusterState>,
    counting: Counting<'_>,
    mut request: UpstreamRequest<'_>,
    client_request: &RequestHead,
    hash: Option<u64>,
    forward: &Forward,
    time_left: Option<&header::HeaderName>,
    ctx: &Context,
    info: &mut StreamInfo,
) {
    let (route_ctx, _route_guard) = match forward.timeout {
        Some(timeout) => ctx.with_timeout(timeout),
        None => ctx.with_cancel(),
    };
    // A gRPC client's own deadline can only shorten the route's.
    let grpc_deadline = grpc_timeout(&client_request.headers).map(|timeout| route_ctx.with_timeout(timeout));
    let stream_ctx = grpc_deadline.as_ref().map_or(&route_ctx, |(ctx, _guard)| ctx);
    let grpc = is_grpc(&client_request.headers);
    let mut body = match request.body {
        BodySize::Empty => RequestBody::Empty,
        BodySize::Exact(n) if n <= RETRY_BUFFER => {
            let mut chunks = Vec::new();
            loop {
                match under(stream_ctx, downstream.read_body()).await {
                    Ok(Ok(Some(BodyFrame::Data(data)))) => chunks.push(data),
                    Ok(Ok(Some(BodyFrame::Trailers(_)))) => {}
                    Ok(Ok(None)) => break,
                    Ok(Err(ReadError::Invalid(e))) => {
                        downstream.close_connection();
                        info.flags |= ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR;
                        return downstream.local_reply(e.status(), &format!("nuncio: bad request body: {e}")).await;
                    }
                    Ok(Err(ReadError::Closed)) => {
                        info.flags |= ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
                        return;
                    }
                    Ok(Err(ReadError::Replied(reply))) => return downstream.reply(reply).await,
                    Err(_) => {
                        let message = "nuncio: request body not received in time";
                        return downstream.local_reply(StatusCode::REQUEST_TIMEOUT, message).await;
                    }
                }
            }
            RequestBody::Buffered(chunks)
        }
        BodySize::Exact(_) | BodySize::Unknown => RequestBody::Streaming { started: false },
    };

    let policy = forward.retries.as_ref();
    let tries = 1 + policy.map_or(0, |p| p.attempts);
    let mut tried = 0;
    let mut free_retry = true;
    // Held while a retry is in flight (the cluster's `max_retries`).
    let mut retry_permit = None;
    let resources = &cluster.shared.runtime.resources;
    let Counting { store, stats } = counting;
    loop {
        tried += 1;
        let active = match cluster.pick(hash, store, stats) {
            Ok(active) => active,
            Err(PickError::NoHealthy) => {
                info.flags |= ResponseFlags::NO_HEALTHY_UPSTREAM;
                let message = format!("nuncio: no healthy endpoint in cluster {}", cluster.config().name);
                return downstream.local_reply(StatusCode::SERVICE_UNAVAILABLE, &message).await;
            }
            Err(PickError::Overflow(breaker)) => {
                info.flags |= ResponseFlags::UPSTREAM_OVERFLOW;
                return breaker_open(downstream, cluster, counting, breaker).await;
            }
        };
        // A try has a context of its own only when it has its own
        // deadline: otherwise ending the try (dropping its future) is all
        // the cancelling it needs.
        let per_try = policy.and_then(|p| p.per_try_timeout).map(|t| stream_ctx.with_timeout(t));
        let try_ctx = per_try.as_ref().map_or(stream_ctx, |(ctx, _guard)| ctx);
        store.inc(stats.rq_total);
        info.attempts += 1;
        let sent_at = Instant::now();
        request.deadline = try_ctx.deadline().and_then(|deadline| time_left_header(deadline, grpc, time_left));
        let sent = upstream::send(cluster.config().protocol, &active, &request, &mut body, downstream);
        let error = match under(try_ctx, sent).await {
            // A 101 nobody asked for would make the client connection a raw
            // pipe to the upstream, past every route.
            Ok(Ok(response)) if response.tunnel && !client_request.upgrade => TryError::UnaskedUpgrade,
            Ok(Ok(response)) => {
                let status = response.head.status.as_u16();
                store.inc(stats.rq_class[crate::stats::class(status)]);
                let service_time = sent_at.elapsed();
                store.observe(stats.rq_duration, service_time);
                active.report_status(status);
                info.upstream_service_time = Some(service_time);
                info.upstream_host = response.peer;
                if policy.is_some_and(|p| retry_on_status(p, status))
                    && may_retry(tried < tries && body.replayable(), resources, counting, &mut retry_permit)
                {
                    continue;
                }
                // The route timeout ends with the response head: the body
                // may take longer, bounded only by the connection.
                return relay_response(downstream, &active, response, client_request, ctx, info).await;
            }
            Ok(Err(TryError::Connect(ConnectError::Overflow(breaker)))) => {
                info.flags |= ResponseFlags::UPSTREAM_OVERFLOW;
                return breaker_open(downstream, cluster, counting, breaker).await;
            }
            Ok(Err(error)) => error,
            Err(_) if stream_ctx.err().is_some() => {
                store.inc(stats.rq_timeout);
                info.flags |= ResponseFlags::UPSTREAM_REQUEST_TIMEOUT;
                return downstream.local_reply(StatusCode::GATEWAY_TIMEOUT, "nuncio: upstream request timeout").await;
            }
            Err(_) => {
                store.inc(stats.rq_timeout);
                TryError::TryTimeout
            }
        };
        // A pooled connection the upstream had already closed: a fresh one,
        // once, without counting a try (nothing was processed upstream).
        if let TryError::Reset { reused: true } = error
            && free_retry
            && body.replayable()
        {
            free_retry = false;
            tried -= 1;
            continue;
        }
        if policy.is_some_and(|p| retry_on_error(p, &error))
            && may_retry(tried < tries && body.replayable(), resources, counting, &mut retry_permit)
        {
            continue;
        }
        if let TryError::Downstream(ReadError::Replied(reply)) = error {
            // A filter answered while the body streamed upstream.
            return downstream.reply(reply).await;
        }
        info.flags |= flag_of(&error);
        if tried > 1 {
            info.flags |= ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
        }
        let (status, message) = match &error {
            TryError::Connect(ConnectError::Timeout) => {
                (StatusCode::SERVICE_UNAVAILABLE, "nuncio: upstream connect timeout".to_owned())
            }
            TryError::Connect(ConnectError::Failed(e)) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("nuncio: upstream connect error: {e}"))
            }
            TryError::Connect(ConnectError::Overflow(breaker)) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("nuncio: circuit breaker {} open", breaker.name()))
            }
            TryError::Reset { .. } => {
                (StatusCode::BAD_GATEWAY, "nuncio: upstream reset before response headers".to_owned())
            }
            TryError::Refused => (StatusCode::SERVICE_UNAVAILABLE, "nuncio: upstream refused the stream".to_owned()),
            TryError::BadResponse(e) => (StatusCode::BAD_GATEWAY, format!("nuncio: invalid upstream response: {e}")),
            TryError::UnaskedUpgrade => (
                StatusCode::BAD_GATEWAY,
                "nuncio: upstream switched protocols for a request that did not ask to".to_owned(),
            ),
            TryError::TryTimeout => (StatusCode::GATEWAY_TIMEOUT, "nuncio: upstream per-try timeout".to_owned()),
            TryError::Downstream(ReadError::Invalid(e)) => {
                downstream.close_connection();
                (e.status(), format!("nuncio: bad request body: {e}"))
            }
            TryError::Downstream(ReadError::Closed | ReadError::Replied(_)) => return,
        };
        // Part of a streamed body may be unread: the connection cannot
        // carry another request then (the HTTP/1.1 codec sees to it).
        return downstream.local_reply(status, &message).await;
    }
}

static GRPC_TIMEOUT: header::HeaderName = header::HeaderName::from_static("grpc-timeout");

/// Whether the request is gRPC (`content-type: application/grpc...`).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// An incoming `grpc-timeout` (`1*8DIGIT` and a unit: H M S m u n).
fn grpc_timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    let value = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => std::time::Duration::from_secs(n.saturating_mul(3600)),
        "M" => std::time::Duration::from_secs(n.saturating_mul(60)),
        "S" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_millis(n),
        "u" => std::time::Duration::from_micros(n),
        "n" => std::time::Duration::from_nanos(n),
        _ => return None,
    })
}

/// The time left before `deadline`, as the upstream should hear it:
/// `grpc-timeout: Nm` for gRPC (whatever the listener says, as Envoy does),
/// otherwise `N` milliseconds in the listener's `time_left_header`
/// (`x-nuncio-expected-timeout-ms` by default, after Envoy's
/// `x-envoy-expected-rq-timeout-ms`), or nothing when it has none.
pub(crate) fn time_left_header(
    deadline: Instant,
    grpc: bool,
    name: Option<&header::HeaderName>,
) -> Option<(header::HeaderName, HeaderValue)> {
    let ms = deadline.saturating_duration_since(Instant::now()).as_millis().max(1);
    if grpc {
        // At most 8 digits: past that, say it in seconds.
        let value = if ms < 100_000_000 { format!("{ms}m") } else { format!("{}S", (ms / 1000).min(99_999_999)) };
        Some((GRPC_TIMEOUT.clone(), HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("1m"))))
    } else {
        let name = name?;
        let ms = u64::try_from(ms).unwrap_or(u64::MAX);
        let value = HeaderValue::from_bytes(itoa::Buffer::new().format(ms).as_bytes());
        Some((name.clone(), value.unwrap_or(HeaderValue::from_static("1"))))
    }
}

/// The response flag a failed try leaves in the access log.
fn flag_of(error: &TryError) -> ResponseFlags {
    match error {
        TryError::Connect(ConnectError::Overflow(_)) => ResponseFlags::UPSTREAM_OVERFLOW,
        TryError::Connect(_) => ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
        TryError::Reset { .. } => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
        TryError::Refused => ResponseFlags::UPSTREAM_REMOTE_RESET,
        TryError::BadResponse(_) | TryError::UnaskedUpgrade => ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
        TryError::TryTimeout => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
        TryError::Downstream(ReadError::Invalid(_)) => ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        TryError::Downstream(ReadError::Closed) => ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
        TryError::Downstream(ReadError::Replied(_)) => ResponseFlags::NONE,
    }
}

/// The stats a forwarded request counts into: this thread's store and the
/// cluster's ids.
#[derive(Clone, Copy)]
struct Counting<'s> {
    store: &'s Arc<Store>,
    stats: &'s ClusterStats,
}

/// Whether another try may follow (`left`: attempts left and the body
/// replayable) under the cluster's retry breaker; the permit is held until
/// the next retry replaces it.
fn may_retry(left: bool, resources: &Arc<Resources>, counting: Counting<'_>, permit: &mut Option<Permit>) -> bool {
    if !left {
        return false;
    }
    // This request's previous retry is over: its unit goes back first, so
    // one request never needs two.
    permit.take();
    match resources.acquire(Breaker::Retries) {
        Ok(acquired) => {
            *permit = Some(acquired);
            counting.store.inc(counting.stats.rq_retry);
            true
        }
        Err(breaker) => {
            counting.store.inc(counting.stats.cb_open[breaker as usize]);
            false
        }
    }
}

/// A 503 at once because a circuit breaker of the cluster is open.
async fn breaker_open(
    downstream: &mut Downstream<'_>,
    cluster: &ClusterState,
    counting: Counting<'_>,
    breaker: Breaker,
) {
    counting.store.inc(counting.stats.cb_open[breaker as usize]);
    let message = format!("nuncio: circuit breaker {} open for cluster {}", breaker.name(), cluster.config().name);
    downstream.local_reply(StatusCode::SERVICE_UNAVAILABLE, &message).await;
}

/// The request's hash for a `ring_hash` cluster: its `hash_on` header, or
/// the client's IP. `None` (a random endpoint) when the header is absent.
fn request_hash(cluster: &Cluster, request: &RequestHead, peer: SocketAddr) -> Option<u64> {
    match cluster.hash_on.as_ref()? {
        HashOn::Header(name) => request.headers.get(name.as_str()).map(|v| crate::cluster::lb::hash_of(v.as_bytes())),
        HashOn::SourceIp => Some(crate::cluster::lb::hash_of(&peer.ip())),
    }
}

/// Turns the client's head into the upstream's: hop-by-hop fields out,
/// forwarding fields in, rewrites applied.
/// Returns the upstream request target.
fn prepare_upstream_request(
    request: &mut RequestHead,
    peer: SocketAddr,
    route: &CompiledRoute,
    forward: &Forward,
    time_left: Option<&header::HeaderName>,
) -> Uri {
    let headers = &mut request.headers;
    let upgrade = request.upgrade.then(|| headers.get(header::UPGRADE).cloned()).flatten();
    nuncio_http1::remove_hop_by_hop(headers);
    headers.remove(header::EXPECT);
    // The listener's time-left field is nuncio's to set: what a client
    // sends in it never reaches the upstream as if nuncio had said it.
    if let Some(name) = time_left {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    // Several `x-forwarded-for` lines are one list (RFC 9110 §5.3): keep
    // every hop, in order, and add the client as the last.
    let xff = forwarded_for(headers.get_all(&X_FORWARDED_FOR), peer);
    if let Ok(value) = HeaderValue::from_maybe_shared(xff) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID.clone(), request_id());
    }
    if let Some(host) = &route.host_rewrite {
        headers.insert(header::HOST, host.clone());
    } else if let Some(authority) = &request.authority
        && (!headers.contains_key(header::HOST) || request.version == Version::HTTP_2)
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        // HTTP/2's `:authority` wins over a `Host` field (RFC 9113 §8.3.1).
        headers.insert(header::HOST, value);
    }
    match &forward.prefix_rewrite {
        Some(replacement) => {
            let path = rewrite_prefix(request.uri.path(), &route.route.matcher.path, replacement);
            let query = request.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            format!("{path}{query}").parse().unwrap_or_else(|_| Uri::from_static("/"))
        }
        // The path and query as they came, sharing the request's bytes.
        None => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query =
                Some(request.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
            Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
        }
    }
}

/// The `x-forwarded-for` value: the hops already listed (every line, in
/// order) and then the client's address, written into one buffer.
fn forwarded_for(hops: header::GetAll<'_, HeaderValue>, peer: SocketAddr) -> Bytes {
    use std::io::Write;
    let mut value = Vec::with_capacity(48);
    for hop in hops {
        value.extend_from_slice(hop.as_bytes());
        value.extend_from_slice(b", ");
    }
    match peer.ip() {
        // By hand: `Display` for an address goes through the formatting
        // machinery, several times the cost of the rest of this function.
        std::net::IpAddr::V4(ip) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    value.push(b'.');
                }
                value.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        ip @ std::net::IpAddr::V6(_) => {
            let _ = write!(value, "{ip}");
        }
    }
    Bytes::from(value)
}

/// A new request id: 128 random bits in hex.
fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = fastrand::u128(..);
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn retry_on_error(policy: &RetryPolicy, error: &TryError) -> bool {
    policy.on.iter().any(|on| {
        matches!(
            (on, error),
            (RetryOn::ConnectFailure | RetryOn::Status5xx | RetryOn::GatewayError, TryError::Connect(_))
                | (RetryOn::Reset | RetryOn::Status5xx | RetryOn::GatewayError, TryError::Reset { .. })
                | (
                    RetryOn::RefusedStream | RetryOn::Reset | RetryOn::Status5xx | RetryOn::GatewayError,
                    TryError::Refused
                )
                | (RetryOn::Status5xx | RetryOn::GatewayError, TryError::TryTimeout)
        )
    })
}

fn retry_on_status(policy: &RetryPolicy, status: u16) -> bool {
    policy.on.iter().any(|on| match on {
        RetryOn::Status5xx => (500..600).contains(&status),
        RetryOn::GatewayError => matches!(status, 502..=504),
        RetryOn::Status(code) => *code == status,
        _ => false,
    })
}

/// Sends the upstream's response to the client, body frames as they
/// come; an HTTP/1.1 upstream connection goes back to the pool when its
/// body ended cleanly.
async fn relay_response(
    downstream: &mut Downstream<'_>,
    active: &ActiveRequest<'_>,
    response: UpstreamResponse,
    request: &RequestHead,
    ctx: &Context,
    info: &mut StreamInfo,
) {
    let UpstreamResponse { head, mut body, tunnel, .. } = response;
    let mut headers = head.headers;
    // The protocol the upstream chose, before hop-by-hop fields go.
    let upgrade = headers.get(header::UPGRADE).cloned();
    nuncio_http1::remove_hop_by_hop(&mut headers);
    if tunnel {
        if let Some(protocol) = upgrade.or_else(|| request.headers.get(header::UPGRADE).cloned()) {
            headers.insert(header::UPGRADE, protocol);
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let (Codec::Http1(exchange), ResponseBody::Http1(body)) = (&mut downstream.codec, body) {
            let (mut upstream, early) = body.into_tunnel();
            exchange.tunnel(head.status, &headers, &mut upstream.stream, early).await;
        }
        return;
    }
    if info.keep_response_headers {
        info.response_headers = Some(headers.clone());
    }
    info.response_duration = Some(info.start.elapsed());
    if downstream.send_head(ResponseHead { status: head.status, headers, body: head.body }).await.is_err() {
        info.flags |= ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
        return;
    }
    let relayed = under(ctx, async {
        loop {
            // A filter answered instead: the rest of the upstream's body is
            // not wanted (its connection is not reused).
            if downstream.response_replaced() {
                return Ok(());
            }
            // The head goes out with the first body bytes (one write for a
            // small response), or alone when the upstream is slow to send.
            let frame = match body.ready_frame() {
                Some(frame) => frame,
                None => {
                    downstream.flush().await.map_err(|_| ())?;
                    let interrupt = tokio::select! {
                        frame = body.next_frame() => Ok(frame),
                        interrupt = downstream.interrupted() => Err(interrupt),
                    };
                    match interrupt {
                        Ok(frame) => frame,
                        // The client left: stop reading for nobody.
                        Err(Interrupt::ClientGone) => return Err(()),
                        // A filter's handle call (it may release held body).
                        Err(Interrupt::FilterCalls) => {
                            downstream.apply_filter_calls().await.map_err(|_| ())?;
                            continue;
                        }
                    }
                }
            };
            match frame.map_err(|e| tracing::debug!(error = %e.0, "upstream response body failed"))? {
                Some(BodyFrame::Data(data)) => downstream.send_data(data).await.map_err(|_| ())?,
                Some(BodyFrame::Trailers(trailers)) => downstream.send_trailers(trailers).await.map_err(|_| ())?,
                None => return downstream.finish().await.map_err(|_| ()),
            }
        }
    })
    .await;
    match relayed {
        Ok(Ok(())) => body.release(active),
        // The head is out: all that can be done is make the client see the
        // response fail rather than end short.
        _ => {
            info.flags |= ResponseFlags::UPSTREAM_CONNECTION_TERMINATION;
            downstream.abort();
        }
    }
}
