//! Filters' HTTP calls to clusters: the proxy's [`HttpClient`], on the
//! stream's worker, over the same cluster state a forwarded request uses —
//! the worker's balancer position and pools (`cluster`), the upstream codecs
//! (`upstream::send`, HTTP/1.1 or HTTP/2 by the cluster's `protocol`),
//! circuit breakers, outlier detection and the cluster's stats.
//!
//! What differs from forwarding a client's request: the body is buffered
//! whole both ways (the request's as given, the response's up to
//! [`CallOptions::max_response_bytes`]); there is one try (plus the free
//! one forwarding also takes when a pooled connection turns out closed);
//! nothing is added to the caller's fields but `Host` when absent and the
//! time left (in `grpc-timeout` for gRPC, else in the stream's listener's
//! `time_left_header`, if it has one).

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version, header};
use nuncio_config::UpstreamProtocol;
use nuncio_context::Context;
use nuncio_filter::{CallError, CallFuture, CallOptions, HttpClient};
use nuncio_runtime::SlotRef;
use nuncio_stats::Store;
use tokio::time::Instant;

use crate::bounded::under;
use crate::cluster::resources::Breaker;
use crate::cluster::{ActiveRequest, ClusterState, ConnectError, PickError};
use crate::message::{BodyFrame, BodySize};
use crate::snapshot::Local;
use crate::stats::ClusterStats;
use crate::stream::{is_grpc, time_left_header};
use crate::upstream::{self, NoClient, RequestBody, TryError, UpstreamRequest, UpstreamResponse};
use crate::worker::Worker;

/// One stream's client: the worker's cluster states, and the snapshot the
/// stream serves with (a call sees the clusters of the config its stream
/// started under, like the stream's own forwarding). Worker-local.
pub(crate) struct ClusterClient {
    worker: Option<Rc<Worker>>,
    local: SlotRef<Local>,
    /// The stream's listener's `time_left_header`.
    time_left: Option<HeaderName>,
}

impl ClusterClient {
    /// The client a stream's filters get (made where the stream's
    /// `StreamCx` is, on its worker); calls tell the time left in
    /// `time_left`, the stream's listener's field.
    pub(crate) fn for_stream(local: &SlotRef<Local>, time_left: Option<HeaderName>) -> Rc<dyn HttpClient> {
        Rc::new(ClusterClient { worker: Worker::current(), local: local.clone(), time_left })
    }
}

impl HttpClient for ClusterClient {
    fn call(
        &self,
        cluster: &str,
        request: http::Request<Bytes>,
        context: &Context,
        options: CallOptions,
    ) -> CallFuture {
        let state = self.worker.as_ref().and_then(|w| w.cluster(&self.local.snapshot, cluster));
        let call =
            Call { cluster: cluster.to_owned(), local: self.local.clone(), options, time_left: self.time_left.clone() };
        Box::pin(call.run(state, request, context.clone()))
    }
}

/// One call, as it runs.
struct Call {
    cluster: String,
    local: SlotRef<Local>,
    options: CallOptions,
    time_left: Option<HeaderName>,
}

impl Call {
    async fn run(
        self,
        state: Option<Rc<ClusterState>>,
        request: http::Request<Bytes>,
        context: Context,
    ) -> Result<http::Response<Bytes>, CallError> {
        let (Some(state), Some(stats)) = (state, self.local.snapshot.stats.clusters.get(&self.cluster)) else {
            return Err(CallError::UnknownCluster { cluster: self.cluster });
        };
        let (ctx, _call_guard) = match self.options.timeout {
            Some(timeout) => context.with_timeout(timeout),
            None => context.with_cancel(),
        };
        let (parts, body) = request.into_parts();
        let target = self.target(&parts.uri)?;
        let mut headers = parts.headers;
        nuncio_http1::remove_hop_by_hop(&mut headers);
        // nuncio tells the time left itself, as for forwarded requests.
        if let Some(name) = &self.time_left {
            headers.remove(name);
        }
        self.set_host(&mut headers, &parts.uri);
        let grpc = is_grpc(&headers);
        // A request that may carry a body says how long it is, even when
        // empty; one that never does goes without framing fields.
        let expects_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
        let (mut request_body, size) = if body.is_empty() && !expects_body {
            (RequestBody::Empty, BodySize::Empty)
        } else {
            let length = body.len() as u64;
            (RequestBody::Buffered(vec![body]), BodySize::Exact(length))
        };
        let store = &self.local.stats;
        let exchange = async {
            // A pooled connection the cluster had closed: a fresh one, once,
            // as forwarding does (nothing was processed upstream).
            let mut free_retry = true;
            loop {
                let active = state.pick(None, store, stats).map_err(|e| self.pick_error(&e, store, stats))?;
                store.inc(stats.rq_total);
                let upstream_request = UpstreamRequest {
                    method: parts.method.clone(),
                    target: target.clone(),
                    headers: &headers,
                    body: size,
                    deadline: ctx
                        .deadline()
                        .and_then(|deadline| time_left_header(deadline, grpc, self.time_left.as_ref())),
                };
                let sent_at = Instant::now();
                let protocol = state.config().protocol;
                match upstream::send(protocol, &active, &upstream_request, &mut request_body, &mut NoClient).await {
                    Ok(response) => {
                        let status = response.head.status.as_u16();
                        store.inc(stats.rq_class[crate::stats::class(status)]);
                        store.observe(stats.rq_duration, sent_at.elapsed());
                        active.report_status(status);
                        return self.read_whole(response, &active, protocol).await;
                    }
                    Err(TryError::Reset { reused: true }) if free_retry => free_retry = false,
                    Err(error) => return Err(self.try_error(error, store, stats)),
                }
            }
        };
        match under(&ctx, exchange).await {
            Ok(result) => result,
            Err(nuncio_context::Error::DeadlineExceeded) => {
                store.inc(stats.rq_timeout);
                Err(CallError::Timeout { cluster: self.cluster })
            }
            Err(nuncio_context::Error::Canceled) => Err(CallError::Cancelled { cluster: self.cluster }),
        }
    }

    /// The request target in origin form (`/path?query`).
    fn target(&self, uri: &Uri) -> Result<Uri, CallError> {
        let path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        if !path.starts_with('/') {
            let reason = format!("the request target must be a path (origin form), not {path:?}");
            return Err(CallError::BadRequest { cluster: self.cluster.clone(), reason });
        }
        path.parse().map_err(|e| CallError::BadRequest { cluster: self.cluster.clone(), reason: format!("{e}") })
    }

    /// `Host`, when the caller gave none: the URI's authority, else the
    /// cluster's name (an authorization service seldom cares, and a
    /// virtual host can be named by the caller).
    fn set_host(&self, headers: &mut HeaderMap, uri: &Uri) {
        if headers.contains_key(header::HOST) {
            return;
        }
        let host = uri.authority().map_or(self.cluster.as_str(), http::uri::Authority::as_str);
        if let Ok(value) = HeaderValue::from_str(host) {
            headers.insert(header::HOST, value);
        }
    }

    /// The response body read whole (within the limit); the HTTP/1.1
    /// connection back to the pool after it.
    async fn read_whole(
        &self,
        response: UpstreamResponse,
        active: &ActiveRequest<'_>,
        protocol: UpstreamProtocol,
    ) -> Result<http::Response<Bytes>, CallError> {
        let UpstreamResponse { head, mut body, tunnel, .. } = response;
        if tunnel {
            let reason = "switched protocols (101) for a request that did not ask to".to_owned();
            return Err(CallError::BadResponse { cluster: self.cluster.clone(), reason });
        }
        let limit = self.options.max_response_bytes;
        let too_large = || CallError::ResponseTooLarge { cluster: self.cluster.clone(), limit };
        if let BodySize::Exact(length) = head.body
            && length > limit as u64
        {
            return Err(too_large());
        }
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut length = 0;
        loop {
            match body.next_frame().await {
                Ok(Some(BodyFrame::Data(data))) => {
                    length += data.len();
                    if length > limit {
                        return Err(too_large());
                    }
                    chunks.push(data);
                }
                // A whole-body answer has nowhere to carry trailers.
                Ok(Some(BodyFrame::Trailers(_))) => {}
                Ok(None) => break,
                Err(e) => {
                    let reason = format!("response body: {}", e.0);
                    return Err(CallError::BadResponse { cluster: self.cluster.clone(), reason });
                }
            }
        }
        body.release(active);
        // One piece (the usual small answer) is taken as is, without a copy.
        let whole = if chunks.len() == 1 {
            chunks.pop().unwrap_or_default()
        } else {
            let mut whole = BytesMut::with_capacity(length);
            chunks.iter().for_each(|c| whole.extend_from_slice(c));
            whole.freeze()
        };
        let mut headers = head.headers;
        nuncio_http1::remove_hop_by_hop(&mut headers);
        let mut response = http::Response::new(whole);
        *response.status_mut() = head.status;
        *response.headers_mut() = headers;
        *response.version_mut() = match protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::Http2 => Version::HTTP_2,
        };
        Ok(response)
    }

    fn pick_error(&self, error: &PickError, store: &Store, stats: &ClusterStats) -> CallError {
        match error {
            PickError::NoHealthy => CallError::NoHealthyEndpoint { cluster: self.cluster.clone() },
            PickError::Overflow(breaker) => self.overflow(*breaker, store, stats),
        }
    }

    fn overflow(&self, breaker: Breaker, store: &Store, stats: &ClusterStats) -> CallError {
        store.inc(stats.cb_open[breaker as usize]);
        CallError::Overflow { cluster: self.cluster.clone(), breaker: breaker.name().to_owned() }
    }

    fn try_error(&self, error: TryError, store: &Store, stats: &ClusterStats) -> CallError {
        let cluster = self.cluster.clone();
        match error {
            TryError::Connect(ConnectError::Overflow(breaker)) => self.overflow(breaker, store, stats),
            TryError::Connect(ConnectError::Failed(e)) => CallError::Connect { cluster, reason: e.to_string() },
            TryError::Connect(ConnectError::Timeout) => {
                CallError::Connect { cluster, reason: "no connection within the cluster's connect_timeout".to_owned() }
            }
            TryError::Reset { .. } | TryError::Refused => CallError::Reset { cluster },
            TryError::BadResponse(reason) => CallError::BadResponse { cluster, reason },
            TryError::UnaskedUpgrade => {
                CallError::BadResponse { cluster, reason: "switched protocols (101) unasked".to_owned() }
            }
            TryError::TryTimeout => CallError::Timeout { cluster },
            // `NoClient` neither streams a body nor leaves: this is a call
            // given up on, whatever the reason.
            TryError::Downstream(_) => CallError::Cancelled { cluster },
        }
    }
}
