//! The upstream tries of one request, until one brings a response head to
//! keep: pick an endpoint, take a pooled connection or open one, send,
//! await the head — and again per the retry policy. One unit for both a
//! client's forwarded request and a filter's HTTP call (the latter with no
//! policy: one try, plus the free one below).
//!
//! Each try runs under a child of the request's context (with the
//! per-try timeout when the policy has one), so a try that is given up on
//! is cancelled with everything it started. The retry decision is Envoy's:
//! a retryable failure (per `retries.on`) or status, tries left, a body that
//! can be sent again, and room under the cluster's `max_retries` breaker.
//! A pooled connection the upstream had closed meanwhile costs a fresh
//! connection once, without counting a try (nothing was processed
//! upstream).

use std::sync::Arc;

use http::HeaderName;
use nuncio_config::{RetryOn, RetryPolicy};
use nuncio_context::Context;
use nuncio_stats::Store;
use tokio::time::{Duration, Instant};

use crate::bounded::under;
use crate::cluster::UpstreamMode;
use crate::cluster::resources::{Breaker, Permit, Resources};
use crate::cluster::{ActiveRequest, ConnectError, PickError};
use crate::deadline::time_left_header;
use crate::message::RequestBodyError;
use crate::stats::ClusterStats;
use crate::upstream::pool::Pooled;
use crate::upstream::{
    self, Exchange, RequestBody, RequestSource, TryError, UpstreamHead, UpstreamRequest, http1, http2,
};
use crate::worker::LocalCluster;

/// The stats a request counts into: this thread's store and the cluster's
/// ids.
#[derive(Clone, Copy)]
pub(crate) struct Counting<'s> {
    pub(crate) store: &'s Arc<Store>,
    pub(crate) stats: &'s ClusterStats,
}

/// How a request's tries are made.
pub(crate) struct Attempts<'a> {
    pub(crate) cluster: &'a LocalCluster,
    pub(crate) counting: Counting<'a>,
    /// The route's retry policy; `None`: one try.
    pub(crate) policy: Option<&'a RetryPolicy>,
    /// The request's hash for a `ring_hash` cluster.
    pub(crate) hash: Option<u64>,
    /// The field the upstream hears the time left in (not gRPC), if any.
    pub(crate) time_left: Option<&'a HeaderName>,
    /// The request is gRPC: the time left goes in `grpc-timeout`.
    pub(crate) grpc: bool,
}

/// What the tries came to: a response head from the endpoint still counted
/// in flight; its body comes on the exchange the tries left in the
/// caller's slot.
pub(crate) struct Answer<'s> {
    pub(crate) head: UpstreamHead,
    pub(crate) active: ActiveRequest<'s>,
}

/// Why no response head was kept.
pub(crate) enum Failure {
    /// The last try failed (`retried`: after at least one retry).
    Try { error: TryError, retried: bool },
    /// Every endpoint is unhealthy or ejected.
    NoHealthy,
    /// A circuit breaker is open.
    Overflow(Breaker),
    /// The request's deadline (route timeout, or a gRPC client's) passed.
    Timeout,
    /// Whoever the request is for stopped it (client gone, bad body, a
    /// filter's answer).
    Source(RequestBodyError),
}

/// What the tries made, for the access log.
#[derive(Default)]
pub(crate) struct TryLog {
    /// Tries made (the free retry included).
    pub(crate) tries: u32,
    /// The address of the upstream that answered (or was tried last).
    pub(crate) host: Option<std::net::SocketAddr>,
    /// From sending the kept try to its response head.
    pub(crate) service_time: Option<Duration>,
}

impl Attempts<'_> {
    /// Tries `request` until a response head is kept or no try is left.
    /// `ctx` is the request's context (its deadline bounds every try); the
    /// body comes from `source` when it streams. Each try's exchange lives
    /// in `exchange` (in the caller's state, so that it is not moved along
    /// with every result); the kept one is there when this returns `Ok`.
    pub(crate) async fn run<'s, S: RequestSource>(
        &'s self,
        request: &mut UpstreamRequest<'_>,
        body: &mut RequestBody,
        source: &mut S,
        ctx: &Context,
        log: &mut TryLog,
        exchange: &mut Option<Exchange>,
    ) -> Result<Answer<'s>, Failure> {
        let tries = 1 + self.policy.map_or(0, |p| p.attempts);
        let mut tried = 0;
        let mut free_retry = true;
        // Held while a retry is in flight (the cluster's `max_retries`).
        let mut retry_permit = None;
        let Counting { store, stats } = self.counting;
        loop {
            tried += 1;
            let active = match self.cluster.state.pick(self.hash, store, stats) {
                Ok(active) => active,
                Err(PickError::NoHealthy) => return Err(Failure::NoHealthy),
                Err(PickError::Overflow(breaker)) => {
                    store.inc(stats.cb_open[breaker as usize]);
                    return Err(Failure::Overflow(breaker));
                }
            };
            // A try has a context of its own only when it has its own
            // deadline: otherwise ending the try (dropping its future) is
            // all the cancelling it needs.
            let per_try = self.policy.and_then(|p| p.per_try_timeout).map(|t| ctx.with_timeout(t));
            let try_ctx = per_try.as_ref().map_or(ctx, |(ctx, _guard)| ctx);
            store.inc(stats.rq_total);
            log.tries += 1;
            let sent_at = Instant::now();
            request.deadline =
                try_ctx.deadline().and_then(|deadline| time_left_header(deadline, self.grpc, self.time_left));
            let error = match under(try_ctx, self.try_once(&active, request, body, source, exchange)).await {
                Ok(Ok(head)) => {
                    let status = head.head.status.as_u16();
                    store.inc(stats.rq_class[crate::stats::class(status)]);
                    let service_time = sent_at.elapsed();
                    store.observe(stats.rq_duration, service_time);
                    active.report_status(status);
                    log.service_time = Some(service_time);
                    log.host = head.peer;
                    if self.policy.is_some_and(|p| retry_on_status(p, status))
                        && self.may_retry(tried < tries && body.replayable(), &mut retry_permit)
                    {
                        continue;
                    }
                    return Ok(Answer { head, active });
                }
                Ok(Err(TryError::Connect(ConnectError::Overflow(breaker)))) => {
                    store.inc(stats.cb_open[breaker as usize]);
                    return Err(Failure::Overflow(breaker));
                }
                Ok(Err(TryError::Source(e))) => return Err(Failure::Source(e)),
                Ok(Err(error)) => error,
                Err(_) if ctx.err().is_some() => {
                    store.inc(stats.rq_timeout);
                    return Err(Failure::Timeout);
                }
                Err(_) => {
                    store.inc(stats.rq_timeout);
                    TryError::TryTimeout
                }
            };
            if let TryError::Reset { reused: true } = error
                && free_retry
                && body.replayable()
            {
                free_retry = false;
                tried -= 1;
                continue;
            }
            if self.policy.is_some_and(|p| retry_on_error(p, &error))
                && self.may_retry(tried < tries && body.replayable(), &mut retry_permit)
            {
                continue;
            }
            return Err(Failure::Try { error, retried: tried > 1 });
        }
    }

    /// One try: a connection (pooled or new) in the cluster's protocol, the
    /// request sent, its response head awaited (the body sent meanwhile).
    /// The exchange goes to `slot` (replacing a failed try's).
    async fn try_once<S: RequestSource>(
        &self,
        active: &ActiveRequest<'_>,
        request: &UpstreamRequest<'_>,
        body: &mut RequestBody,
        source: &mut S,
        slot: &mut Option<Exchange>,
    ) -> Result<UpstreamHead, TryError> {
        let pools = &self.cluster.pools;
        *slot = None;
        let exchange = slot.insert(match self.cluster.state.shared.mode() {
            UpstreamMode::Http1 => {
                let conn = pools.http1(active).await.map_err(TryError::Connect)?;
                Exchange::Http1(http1::Exchange::start(conn, request, body).await?)
            }
            UpstreamMode::Http2 => {
                let (sender, stream, reused) = pools.h2(active).await?;
                Exchange::Http2(http2::Exchange::start(sender, stream, reused, active.endpoint_name(), request, body)?)
            }
            // Boxed: rarer, and a larger future than the others.
            UpstreamMode::Negotiated => match Box::pin(pools.negotiated(active)).await? {
                Pooled::Http1(conn) => Exchange::Http1(http1::Exchange::start(conn, request, body).await?),
                Pooled::Http2((sender, stream, reused)) => Exchange::Http2(http2::Exchange::start(
                    sender,
                    stream,
                    reused,
                    active.endpoint_name(),
                    request,
                    body,
                )?),
            },
        });
        let head = upstream::response_head(exchange, source).await?;
        // A 101 makes the client connection a raw pipe to the upstream, past
        // every route and filter: only for the protocol the request asked
        // for and the route allows.
        if head.tunnel {
            let switched = head.head.headers.get(http::header::UPGRADE);
            let asked = request.upgrade.as_ref();
            if !asked.zip(switched).is_some_and(|(a, s)| a.as_bytes().eq_ignore_ascii_case(s.as_bytes())) {
                return Err(TryError::UnaskedUpgrade);
            }
        }
        Ok(head)
    }

    /// Whether another try may follow (`left`: tries left and the body
    /// replayable) under the cluster's retry breaker; the permit is held
    /// until the next retry replaces it.
    fn may_retry(&self, left: bool, permit: &mut Option<Permit>) -> bool {
        if !left {
            return false;
        }
        let resources: &Arc<Resources> = &self.cluster.state.shared.runtime.resources;
        // This request's previous retry is over: its unit goes back first,
        // so one request never needs two.
        permit.take();
        let Counting { store, stats } = self.counting;
        match resources.acquire(Breaker::Retries) {
            Ok(acquired) => {
                *permit = Some(acquired);
                store.inc(stats.rq_retry);
                true
            }
            Err(breaker) => {
                store.inc(stats.cb_open[breaker as usize]);
                false
            }
        }
    }
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
