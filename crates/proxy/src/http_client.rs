//! Filters' HTTP calls to clusters: the proxy's [`HttpClient`], on the
//! stream's worker, over the same cluster state a forwarded request uses —
//! the worker's balancer position and pools (`cluster`), the upstream codecs
//! (`upstream::send`, HTTP/1.1 or HTTP/2 by the cluster's `protocol`),
//! circuit breakers, outlier detection and the cluster's stats.
//!
//! The tries are forwarding's own unit (`attempt::Attempts`), with no
//! retry policy. What differs from forwarding a client's request: the body
//! is buffered whole both ways (the request's as given, the response's up
//! to [`CallOptions::max_response_bytes`]); there is one try (plus the free
//! one forwarding also takes when a pooled connection turns out closed);
//! nothing is added to the caller's fields but `Host` when absent and the
//! time left (in `grpc-timeout` for gRPC, else in the stream's listener's
//! `time_left_header`, if it has one).

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version, header};
use nuncio_context::Context;
use nuncio_filter::{CallError, CallFuture, CallOptions, HttpClient};
use nuncio_runtime::SlotRef;

use crate::attempt::{Answer, Attempts, Counting, Failure, TryLog};
use crate::bounded::under;
use crate::cluster::ConnectError;
use crate::cluster::resources::Breaker;
use crate::deadline::is_grpc;
use crate::message::{BodyFrame, BodySize, HeadFields};
use crate::snapshot::Local;
use crate::upstream::{self, NoClient, RequestBody, TryError, UpstreamRequest};
use crate::worker::{LocalCluster, Worker};

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
        cluster: Option<LocalCluster>,
        request: http::Request<Bytes>,
        context: Context,
    ) -> Result<http::Response<Bytes>, CallError> {
        let (Some(cluster), Some(stats)) = (cluster, self.local.snapshot.stats.clusters.get(&self.cluster)) else {
            return Err(CallError::UnknownCluster { cluster: self.cluster });
        };
        let (ctx, _call_guard) = match self.options.timeout {
            // From the loop's time, as every deadline nuncio tells upstream
            // (`deadline::time_left_header` reads that time too: a deadline
            // from the clock itself would be told up to a loop turn longer
            // than the call's timeout).
            Some(timeout) => crate::deadline::with_timeout(&context, timeout),
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
        // A request that may carry a body says how long it is, even when
        // empty; one that never does goes without framing fields.
        let expects_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
        let (mut request_body, size) = if body.is_empty() && !expects_body {
            (RequestBody::Empty, BodySize::Empty)
        } else {
            let length = body.len() as u64;
            (RequestBody::Buffered(vec![body]), BodySize::Exact(length))
        };
        let headers = HeadFields::from(headers);
        let mut upstream_request = UpstreamRequest {
            method: parts.method,
            target,
            headers: &headers,
            body: size,
            deadline: None,
            traceparent: None,
            upgrade: None,
            expect_continue: false,
        };
        let attempts = Attempts {
            cluster: &cluster,
            counting: Counting { store: &self.local.stats, stats },
            policy: None,
            hash: None,
            time_left: self.time_left.as_ref(),
            grpc: is_grpc(&headers),
            trace: None,
        };
        let exchange = async {
            let (mut log, mut exchange) = (TryLog::default(), None);
            let answer = attempts
                .run(&mut upstream_request, &mut request_body, &mut NoClient, &ctx, &mut log, &mut exchange)
                .await
                .map_err(|failure| self.failure(failure))?;
            let exchange = exchange.expect("a kept try leaves its exchange");
            self.read_whole(answer, exchange, &cluster).await
        };
        match under(&ctx, exchange).await {
            Ok(result) => result,
            Err(nuncio_context::Error::DeadlineExceeded) => {
                self.local.stats.inc(stats.rq_timeout);
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
        answer: Answer<'_>,
        mut exchange: upstream::Exchange,
        cluster: &LocalCluster,
    ) -> Result<http::Response<Bytes>, CallError> {
        // A filter's call is not traced: no span.
        let Answer { head, active, .. } = answer;
        if head.tunnel {
            let reason = "switched protocols (101) for a request that did not ask to".to_owned();
            return Err(CallError::BadResponse { cluster: self.cluster.clone(), reason });
        }
        let limit = self.options.max_response_bytes;
        let too_large = || CallError::ResponseTooLarge { cluster: self.cluster.clone(), limit };
        if let BodySize::Exact(length) = head.head.body
            && length > limit as u64
        {
            return Err(too_large());
        }
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut length = 0;
        loop {
            match upstream::next_frame(&mut exchange, &mut NoClient).await {
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
                    let reason = format!("response body: {}", e.answer().1);
                    return Err(CallError::BadResponse { cluster: self.cluster.clone(), reason });
                }
            }
        }
        let version = match &exchange {
            upstream::Exchange::Http1(_) => Version::HTTP_11,
            upstream::Exchange::Http2(_) => Version::HTTP_2,
        };
        if let upstream::Exchange::Http1(exchange) = exchange
            && let Some(conn) = exchange.into_reusable()
        {
            cluster.pools.release(active.index(), conn);
        }
        // One piece (the usual small answer) is taken as is, without a copy.
        let whole = if chunks.len() == 1 {
            chunks.pop().unwrap_or_default()
        } else {
            let mut whole = BytesMut::with_capacity(length);
            chunks.iter().for_each(|c| whole.extend_from_slice(c));
            whole.freeze()
        };
        let mut headers = head.head.headers.into_map();
        nuncio_http1::remove_hop_by_hop(&mut headers);
        let mut response = http::Response::new(whole);
        *response.status_mut() = head.head.status;
        *response.headers_mut() = headers;
        *response.version_mut() = version;
        Ok(response)
    }

    /// What the caller hears when no response head was kept.
    fn failure(&self, failure: Failure) -> CallError {
        let cluster = self.cluster.clone();
        match failure {
            Failure::NoHealthy => CallError::NoHealthyEndpoint { cluster },
            Failure::Overflow(breaker) => self.overflow(breaker),
            Failure::Timeout => CallError::Timeout { cluster },
            // `NoClient` neither streams a body nor leaves: this is a call
            // given up on, whatever the reason.
            Failure::Source(_) => CallError::Cancelled { cluster },
            Failure::Try { error, .. } => self.try_error(error),
        }
    }

    fn overflow(&self, breaker: Breaker) -> CallError {
        CallError::Overflow { cluster: self.cluster.clone(), breaker: breaker.name().to_owned() }
    }

    fn try_error(&self, error: TryError) -> CallError {
        let cluster = self.cluster.clone();
        match error {
            TryError::Connect(ConnectError::Overflow(breaker)) => self.overflow(breaker),
            TryError::Connect(ConnectError::Failed(e)) => CallError::Connect { cluster, reason: e.to_string() },
            TryError::Connect(ConnectError::Tls { message, .. }) => {
                CallError::Connect { cluster, reason: format!("TLS handshake failed: {message}") }
            }
            TryError::Connect(ConnectError::Timeout) => {
                CallError::Connect { cluster, reason: "no connection within the cluster's connect_timeout".to_owned() }
            }
            TryError::Reset { .. } | TryError::Refused => CallError::Reset { cluster },
            TryError::BadResponse(reason) => CallError::BadResponse { cluster, reason },
            TryError::UnaskedUpgrade => {
                CallError::BadResponse { cluster, reason: "switched protocols (101) unasked".to_owned() }
            }
            TryError::TryTimeout => CallError::Timeout { cluster },
            TryError::Source(_) => CallError::Cancelled { cluster },
        }
    }
}
