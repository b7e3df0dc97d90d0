//! One request from headers to the end of its response.
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

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version, header};
use nuncio_config::{Forward, PathMatch, Redirect, RedirectPath, RetryOn, RetryPolicy, RouteAction};
use nuncio_context::Context;
use nuncio_http1::{BodyDecoder, BodyEvent, BodyFraming, Limits, Request, Response, ResponseDecoder};
use nuncio_runtime::SlotRef;

use crate::cluster::{ActiveRequest, ConnectError};
use crate::downstream::{Downstream, ReadError};
use crate::router::CompiledRoute;
use crate::snapshot::{ListenerSnapshot, Snapshot};
use crate::upstream::{Http1Connection, write_all_vectored};
use crate::worker::Worker;

/// Request bodies up to this size are buffered before the first try, so
/// that a retry can send them again. Larger ones stream, and are retried
/// only when no byte of them was sent (connect failures).
const RETRY_BUFFER: u64 = 64 * 1024;

static X_FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: header::HeaderName = header::HeaderName::from_static("x-forwarded-proto");
static X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// Serves one request; returns whether the client connection may carry
/// another.
pub(crate) async fn serve(
    worker: &Worker,
    snapshot: &SlotRef<Snapshot>,
    listener: &ListenerSnapshot,
    conn: &mut Downstream,
    request: Request,
    ctx: &Context,
) -> bool {
    let host = request.authority.as_ref().map_or("", |a| a.as_str()).to_owned();
    let path = request.uri.path().to_owned();
    // A local reply leaves an unread request body behind: close rather than
    // read it. (`Content-Length: 0` is no body.)
    let reusable = request.keep_alive && matches!(request.framing, BodyFraming::None | BodyFraming::Length(0));
    let Some(route) = listener.routes.select(&host, &path, &request.headers) else {
        let message = format!("nuncio: no route for host \"{host}\" path \"{path}\"");
        conn.local_reply(StatusCode::NOT_FOUND, request.version, &message, !reusable).await;
        return reusable;
    };
    match &route.route.action {
        RouteAction::DirectResponse(direct) => {
            let status = StatusCode::from_u16(direct.status).unwrap_or(StatusCode::OK);
            let body = Bytes::from(direct.body.clone().unwrap_or_default());
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            if !reusable {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            let framing =
                if request.method == Method::HEAD { BodyFraming::None } else { BodyFraming::Length(body.len() as u64) };
            if request.method == Method::HEAD {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            }
            nuncio_http1::encode_response_head(status, request.version, &headers, framing, &mut conn.write_buf);
            let body: &[u8] = if request.method == Method::HEAD { &[] } else { &body };
            conn.flush_with(&[body]).await.is_ok() && reusable
        }
        RouteAction::Redirect(redirect) => {
            let location = redirect_location(redirect, &route.route.matcher.path, &request.uri, &host);
            let status = StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            let mut headers = HeaderMap::new();
            match HeaderValue::from_str(&location) {
                Ok(value) => headers.insert(header::LOCATION, value),
                Err(_) => return false,
            };
            if !reusable {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            nuncio_http1::encode_response_head(
                status,
                request.version,
                &headers,
                BodyFraming::Length(0),
                &mut conn.write_buf,
            );
            conn.flush_with(&[]).await.is_ok() && reusable
        }
        // Tunnelling CONNECT to a cluster is not a reverse proxy's job (an
        // origin would not understand it): say so instead of forwarding.
        RouteAction::Forward(_) if request.method == Method::CONNECT => {
            let message = "nuncio: CONNECT is not supported";
            conn.local_reply(StatusCode::NOT_IMPLEMENTED, request.version, message, true).await;
            false
        }
        RouteAction::Forward(forward) => forward_request(worker, snapshot, conn, request, route, forward, ctx).await,
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

/// The request body as the tries see it.
enum RequestBody {
    /// No body.
    Empty,
    /// Read in full before the first try; can be sent again.
    Buffered(Vec<Bytes>),
    /// Still in the client's socket, forwarded as it arrives (once).
    Streaming { decoder: BodyDecoder, started: bool },
}

impl RequestBody {
    fn replayable(&self) -> bool {
        !matches!(self, RequestBody::Streaming { started: true, .. })
    }
}

/// Why one try failed.
#[derive(Debug)]
enum TryError {
    Connect(ConnectError),
    /// The upstream closed or reset before a complete response head.
    Reset {
        reused: bool,
    },
    /// The upstream's response could not be decoded.
    BadResponse(nuncio_http1::Error),
    /// The upstream switched protocols (101) for a request that did not ask.
    UnaskedUpgrade,
    /// The try's deadline (per-try timeout) passed.
    TryTimeout,
    /// The client went away, or sent a bad body.
    Downstream(ReadError),
}

async fn forward_request(
    worker: &Worker,
    snapshot: &SlotRef<Snapshot>,
    conn: &mut Downstream,
    mut request: Request,
    route: &CompiledRoute,
    forward: &Forward,
    ctx: &Context,
) -> bool {
    let version = request.version;
    let Some(cluster) = route.cluster(fastrand::u64(..)).and_then(|name| worker.cluster(snapshot, name)) else {
        conn.local_reply(StatusCode::INTERNAL_SERVER_ERROR, version, "nuncio: route names no known cluster", true)
            .await;
        return false;
    };
    let (stream_ctx, _stream_guard) = match forward.timeout {
        Some(timeout) => ctx.with_timeout(timeout),
        None => ctx.with_cancel(),
    };

    let upstream_head = prepare_upstream_head(&mut request, conn, route, forward);
    if request.expect_continue {
        // Answer the client's expectation ourselves (as Envoy does) rather
        // than forward it: the body then streams like any other.
        conn.write_buf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        if conn.flush_with(&[]).await.is_err() {
            return false;
        }
    }
    let mut body = match request.framing {
        BodyFraming::None => RequestBody::Empty,
        BodyFraming::Length(n) if n <= RETRY_BUFFER => {
            let mut decoder = BodyDecoder::new(request.framing, Limits::default());
            let mut chunks = Vec::new();
            loop {
                match under(&stream_ctx, conn.body_event(&mut decoder)).await {
                    Ok(Ok(BodyEvent::Data(data))) => chunks.push(data),
                    Ok(Ok(_)) => break,
                    Ok(Err(ReadError::Invalid(e))) => {
                        conn.local_reply(e.status(), version, &format!("nuncio: bad request body: {e}"), true).await;
                        return false;
                    }
                    Ok(Err(ReadError::Closed)) => return false,
                    Err(_) => {
                        conn.local_reply(
                            StatusCode::REQUEST_TIMEOUT,
                            version,
                            "nuncio: request body not received in time",
                            true,
                        )
                        .await;
                        return false;
                    }
                }
            }
            RequestBody::Buffered(chunks)
        }
        framing => RequestBody::Streaming { decoder: BodyDecoder::new(framing, Limits::default()), started: false },
    };
    let upstream_framing = match &body {
        RequestBody::Empty => BodyFraming::None,
        RequestBody::Buffered(chunks) => BodyFraming::Length(chunks.iter().map(|c| c.len() as u64).sum()),
        RequestBody::Streaming { .. } => request.framing,
    };
    let mut head = BytesMut::with_capacity(512);
    nuncio_http1::encode_request_head(
        &request.method,
        &upstream_head.target,
        &request.headers,
        upstream_framing,
        &mut head,
    );
    let head = head.freeze();

    let policy = forward.retries.as_ref();
    let tries = 1 + policy.map_or(0, |p| p.attempts);
    let mut tried = 0;
    let mut free_retry = true;
    loop {
        tried += 1;
        let Some(active) = cluster.pick() else {
            conn.local_reply(StatusCode::SERVICE_UNAVAILABLE, version, "nuncio: no healthy upstream", true).await;
            return false;
        };
        let per_try = policy.and_then(|p| p.per_try_timeout);
        let (try_ctx, _try_guard) = match per_try {
            Some(t) => stream_ctx.with_timeout(t),
            None => stream_ctx.with_cancel(),
        };
        let outcome =
            match under(&try_ctx, try_once(&active, &head, upstream_framing, &mut body, conn, &request.method)).await {
                Ok(outcome) => outcome,
                Err(_) if stream_ctx.err().is_some() => {
                    conn.local_reply(StatusCode::GATEWAY_TIMEOUT, version, "nuncio: upstream request timeout", true)
                        .await;
                    return false;
                }
                Err(_) => Err(TryError::TryTimeout),
            };
        let error = match outcome {
            // A 101 nobody asked for would make the client connection a raw
            // pipe to the upstream, past every route.
            Ok((_, response)) if response.tunnel && !request.upgrade => TryError::UnaskedUpgrade,
            Ok((upstream, response)) => {
                let status = response.status.as_u16();
                if tried < tries && body.replayable() && policy.is_some_and(|p| retry_on_status(p, status)) {
                    continue;
                }
                // The route timeout ends with the response head: the body
                // may take longer, bounded only by the connection.
                return relay_response(conn, &active, upstream, response, &request, ctx).await;
            }
            Err(error) => error,
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
        if tried < tries && body.replayable() && policy.is_some_and(|p| retry_on_error(p, &error)) {
            continue;
        }
        let (status, message) = match &error {
            TryError::Connect(ConnectError::Timeout) => {
                (StatusCode::SERVICE_UNAVAILABLE, "nuncio: upstream connect timeout".to_owned())
            }
            TryError::Connect(ConnectError::Failed(e)) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("nuncio: upstream connect error: {e}"))
            }
            TryError::Reset { .. } => {
                (StatusCode::BAD_GATEWAY, "nuncio: upstream reset before response headers".to_owned())
            }
            TryError::BadResponse(e) => (StatusCode::BAD_GATEWAY, format!("nuncio: invalid upstream response: {e}")),
            TryError::UnaskedUpgrade => (
                StatusCode::BAD_GATEWAY,
                "nuncio: upstream switched protocols for a request that did not ask to".to_owned(),
            ),
            TryError::TryTimeout => (StatusCode::GATEWAY_TIMEOUT, "nuncio: upstream per-try timeout".to_owned()),
            TryError::Downstream(ReadError::Invalid(e)) => (e.status(), format!("nuncio: bad request body: {e}")),
            TryError::Downstream(ReadError::Closed) => return false,
        };
        conn.local_reply(status, version, &message, true).await;
        return false;
    }
}

struct UpstreamHead {
    target: Uri,
}

/// Turns the client's head into the upstream's: hop-by-hop fields out,
/// forwarding fields in, rewrites applied.
fn prepare_upstream_head(
    request: &mut Request,
    conn: &Downstream,
    route: &CompiledRoute,
    forward: &Forward,
) -> UpstreamHead {
    let upgrade = request.upgrade.then(|| request.headers.get(header::UPGRADE).cloned()).flatten();
    nuncio_http1::remove_hop_by_hop(&mut request.headers);
    request.headers.remove(header::EXPECT);
    if let Some(protocol) = upgrade {
        request.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        request.headers.insert(header::UPGRADE, protocol);
    }
    // Several `x-forwarded-for` lines are one list (RFC 9110 §5.3): keep
    // every hop, in order, and add the client as the last.
    let mut xff: Vec<&str> = request.headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
    let client_ip = conn.peer.ip().to_string();
    xff.push(&client_ip);
    if let Ok(value) = HeaderValue::from_str(&xff.join(", ")) {
        request.headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    request.headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if !request.headers.contains_key(&X_REQUEST_ID) {
        request.headers.insert(X_REQUEST_ID.clone(), request_id());
    }
    if let Some(host) = &forward.host_rewrite
        && let Ok(value) = HeaderValue::from_str(host)
    {
        request.headers.insert(header::HOST, value);
    } else if !request.headers.contains_key(header::HOST)
        && let Some(authority) = &request.authority
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        request.headers.insert(header::HOST, value);
    }
    let path_and_query = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let target = match &forward.prefix_rewrite {
        Some(replacement) => {
            let path = rewrite_prefix(request.uri.path(), &route.route.matcher.path, replacement);
            let query = request.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            format!("{path}{query}").parse().unwrap_or_else(|_| Uri::from_static("/"))
        }
        None => path_and_query.parse().unwrap_or_else(|_| Uri::from_static("/")),
    };
    UpstreamHead { target }
}

/// A new request id: 128 random bits in hex.
fn request_id() -> HeaderValue {
    let id = format!("{:032x}", fastrand::u128(..));
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn retry_on_error(policy: &RetryPolicy, error: &TryError) -> bool {
    policy.on.iter().any(|on| {
        matches!(
            (on, error),
            (RetryOn::ConnectFailure | RetryOn::Status5xx | RetryOn::GatewayError, TryError::Connect(_))
                | (RetryOn::Reset | RetryOn::Status5xx | RetryOn::GatewayError, TryError::Reset { .. })
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

/// One try: a connection, the request head and body written, the response
/// head read.
async fn try_once(
    active: &ActiveRequest,
    head: &Bytes,
    framing: BodyFraming,
    body: &mut RequestBody,
    conn: &mut Downstream,
    method: &Method,
) -> Result<(Http1Connection, Response), TryError> {
    let mut upstream = active.connection().await.map_err(TryError::Connect)?;
    let reused = upstream.reused;
    upstream.reused = true;
    let reset = |_| TryError::Reset { reused };
    match body {
        RequestBody::Empty => write_all_vectored(&mut upstream.stream, &[head]).await.map_err(reset)?,
        RequestBody::Buffered(chunks) => {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(chunks.len() + 1);
            parts.push(head);
            parts.extend(chunks.iter().map(|c| &c[..]));
            write_all_vectored(&mut upstream.stream, &parts).await.map_err(reset)?;
        }
        RequestBody::Streaming { decoder, started } => {
            *started = true;
            write_all_vectored(&mut upstream.stream, &[head]).await.map_err(reset)?;
            let chunked = framing == BodyFraming::Chunked;
            loop {
                match conn.body_event(decoder).await.map_err(TryError::Downstream)? {
                    BodyEvent::Data(data) if chunked => {
                        let size = nuncio_http1::ChunkSizeLine::new(data.len() as u64).expect("a chunk is never empty");
                        write_all_vectored(&mut upstream.stream, &[size.as_bytes(), &data, nuncio_http1::CRLF])
                            .await
                            .map_err(reset)?;
                    }
                    BodyEvent::Data(data) => write_all_vectored(&mut upstream.stream, &[&data]).await.map_err(reset)?,
                    BodyEvent::Trailers(trailers) if chunked => {
                        let mut last = BytesMut::new();
                        nuncio_http1::encode_last_chunk(Some(&trailers), &mut last);
                        write_all_vectored(&mut upstream.stream, &[&last]).await.map_err(reset)?;
                        break;
                    }
                    BodyEvent::Trailers(_) => {}
                    BodyEvent::End => {
                        if chunked {
                            write_all_vectored(&mut upstream.stream, &[nuncio_http1::LAST_CHUNK])
                                .await
                                .map_err(reset)?;
                        }
                        break;
                    }
                }
            }
        }
    }
    let mut decoder = ResponseDecoder::new(Limits::default());
    loop {
        match decoder.decode(&mut upstream.read_buf, method) {
            Ok(Some(response)) if response.is_interim() && !response.tunnel => continue,
            Ok(Some(response)) => return Ok((upstream, response)),
            Ok(None) => {}
            Err(e) => return Err(TryError::BadResponse(e)),
        }
        // A client that leaves meanwhile takes its upstream request with it.
        let read = tokio::select! {
            read = upstream.read_more() => read,
            () = conn.closed() => return Err(TryError::Downstream(ReadError::Closed)),
        };
        match read {
            Ok(0) | Err(_) => return Err(TryError::Reset { reused }),
            Ok(_) => {}
        }
    }
}

/// Sends the upstream's response to the client; returns whether the client
/// connection may carry another request.
async fn relay_response(
    conn: &mut Downstream,
    active: &ActiveRequest,
    mut upstream: Http1Connection,
    response: Response,
    request: &Request,
    ctx: &Context,
) -> bool {
    let mut headers = response.headers;
    // The protocol the upstream chose, before hop-by-hop fields go.
    let upgrade = headers.get(header::UPGRADE).cloned();
    nuncio_http1::remove_hop_by_hop(&mut headers);
    if response.tunnel {
        return relay_tunnel(conn, upstream, response.status, headers, upgrade, request).await;
    }
    let http11 = request.version == Version::HTTP_11;
    // Re-frame for the client: HTTP/1.0 clients get no chunked encoding.
    let (framing, close) = match response.framing {
        BodyFraming::Chunked | BodyFraming::UntilClose if http11 => (BodyFraming::Chunked, false),
        BodyFraming::Chunked | BodyFraming::UntilClose => (BodyFraming::UntilClose, true),
        other => (other, false),
    };
    let keep_alive = request.keep_alive && !close;
    if !keep_alive {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    } else if !http11 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    nuncio_http1::encode_response_head(response.status, request.version, &headers, framing, &mut conn.write_buf);
    let mut decoder = BodyDecoder::new(response.framing, Limits::default());
    let chunked = framing == BodyFraming::Chunked;
    let mut last_chunk_sent = false;
    // The head goes out with the first body bytes (one write for small
    // responses), or alone when the upstream is slow to send any.
    let relayed = under(ctx, async {
        loop {
            let event = match decoder.decode(&mut upstream.read_buf) {
                Ok(Some(event)) => event,
                Ok(None) => {
                    if !conn.write_buf.is_empty() && upstream.read_buf.is_empty() {
                        conn.flush_with(&[]).await.map_err(|_| ())?;
                    }
                    match upstream.read_more().await {
                        Ok(0) => match decoder.decode_eof(&mut upstream.read_buf) {
                            Ok(Some(event)) => event,
                            _ => return Err(()),
                        },
                        Ok(_) => continue,
                        Err(_) => return Err(()),
                    }
                }
                Err(_) => return Err(()),
            };
            match event {
                BodyEvent::Data(data) if chunked => {
                    let size = nuncio_http1::ChunkSizeLine::new(data.len() as u64).expect("a chunk is never empty");
                    conn.flush_with(&[size.as_bytes(), &data, nuncio_http1::CRLF]).await.map_err(|_| ())?;
                }
                BodyEvent::Data(data) => conn.flush_with(&[&data]).await.map_err(|_| ())?,
                // The last chunk goes out with the trailers; `End` follows
                // and completes the decoder, so the connection can be pooled.
                BodyEvent::Trailers(trailers) => {
                    if chunked {
                        nuncio_http1::encode_last_chunk(Some(&trailers), &mut conn.write_buf);
                        conn.flush_with(&[]).await.map_err(|_| ())?;
                        last_chunk_sent = true;
                    }
                }
                BodyEvent::End => {
                    if chunked && !last_chunk_sent {
                        conn.flush_with(&[nuncio_http1::LAST_CHUNK]).await.map_err(|_| ())?;
                    } else {
                        conn.flush_with(&[]).await.map_err(|_| ())?;
                    }
                    return Ok(true);
                }
            }
        }
    })
    .await;
    match relayed {
        Ok(Ok(_)) => {
            if response.keep_alive && decoder.is_done() {
                active.release(upstream);
            }
            keep_alive
        }
        // The head may be out already: all we can do is close.
        _ => false,
    }
}

/// `101 Switching Protocols` (e.g. WebSocket): pass the head on, then
/// bytes both ways until either side closes. `upgrade` is the protocol the
/// upstream switched to (the client may have offered several).
async fn relay_tunnel(
    conn: &mut Downstream,
    mut upstream: Http1Connection,
    status: StatusCode,
    mut headers: HeaderMap,
    upgrade: Option<HeaderValue>,
    request: &Request,
) -> bool {
    if let Some(protocol) = upgrade.or_else(|| request.headers.get(header::UPGRADE).cloned()) {
        headers.insert(header::UPGRADE, protocol);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    nuncio_http1::encode_response_head(status, request.version, &headers, BodyFraming::None, &mut conn.write_buf);
    // Bytes either side sent after the heads are already buffered.
    let early_up = upstream.read_buf.split().freeze();
    if conn.flush_with(&[&early_up]).await.is_err() {
        return false;
    }
    let early_down = conn.read_buf.split().freeze();
    if write_all_vectored(&mut upstream.stream, &[&early_down]).await.is_err() {
        return false;
    }
    let _ = tokio::io::copy_bidirectional(&mut conn.stream, &mut upstream.stream).await;
    false
}

/// Runs `fut` until it finishes or `ctx` is done, whichever comes first.
pub(crate) async fn under<F: Future>(ctx: &Context, fut: F) -> Result<F::Output, nuncio_context::Error> {
    tokio::select! {
        biased;
        output = fut => Ok(output),
        () = ctx.done() => Err(ctx.err().unwrap_or(nuncio_context::Error::Canceled)),
    }
}
