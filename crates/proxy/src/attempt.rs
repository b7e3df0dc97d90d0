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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use http::HeaderName;
use nuncio_config::{Backoff, RetryOn, RetryPolicy};
use nuncio_context::Context;
use nuncio_runtime::clock;
use nuncio_stats::Store;
use nuncio_trace::Span;
use tokio::time::{Duration, Instant};

use crate::bounded::under;
use crate::cluster::UpstreamMode;
use crate::cluster::resources::{Breaker, Permit};
use crate::cluster::{ActiveRequest, BudgetedRetry, ConnectError, PickError};
use crate::deadline::time_left_header;
use crate::message::RequestBodyError;
use crate::spans::{CLIENT_LEFT, TryEnd, TryTrace, end_try};
use crate::stats::ClusterStats;
use crate::upstream::pool::Pooled;
use crate::upstream::{
    self, Exchange, NoClient, RequestBody, RequestSource, TryError, UpstreamHead, UpstreamRequest, Wake, http1, http2,
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
    /// The request is traced (sampled): each try gets a span and sends a
    /// `traceparent` naming it.
    pub(crate) trace: Option<TryTrace<'a>>,
}

/// What the tries came to: a response head from the endpoint still counted
/// in flight; its body comes on the exchange the tries left in the
/// caller's slot.
pub(crate) struct Answer<'s> {
    pub(crate) head: UpstreamHead,
    pub(crate) active: ActiveRequest<'s>,
    /// The try's span, when the request is traced and the span is still
    /// open: it ends when the exchange does (see `spans::end_try`).
    pub(crate) span: Option<Span<'s>>,
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
    /// Whether hedges were started, and whether one of them won (see
    /// `%UPSTREAM_HEDGE_WON%`).
    pub(crate) hedge_won: Option<bool>,
    /// The address of the upstream that answered (or was tried last).
    pub(crate) host: Option<std::net::SocketAddr>,
    /// From sending the kept try to its response head.
    pub(crate) service_time: Option<Duration>,
}

impl<'a> Attempts<'a> {
    /// Tries `request` until a response head is kept or no try is left.
    /// `ctx` is the request's context (its deadline bounds every try); the
    /// body comes from `source` when it streams. Each try's exchange lives
    /// in `exchange` (in the caller's state, so that it is not moved along
    /// with every result); the kept one is there when this returns `Ok`.
    pub(crate) async fn run<S: RequestSource>(
        &self,
        request: &mut UpstreamRequest<'_>,
        body: &mut RequestBody,
        source: &mut S,
        ctx: &Context,
        log: &mut TryLog,
        exchange: &mut Option<Exchange>,
    ) -> Result<Answer<'a>, Failure> {
        if let Some(policy) = self.policy
            && policy.hedge_on_per_try_timeout
            && let Some(per_try) = policy.per_try_timeout
            && let RequestBody::Empty | RequestBody::Buffered(_) = body
        {
            // Boxed: the rare path, with several tries in flight.
            return Box::pin(self.run_hedged(policy, per_try, request, body, source, ctx, log, exchange)).await;
        }
        let tries = 1 + self.policy.map_or(0, |p| p.attempts);
        let mut tried = 0;
        let mut free_retry = true;
        // Held while a retry is in flight (the budget's or the breaker's).
        let mut retry_permit = None;
        let Counting { store, stats } = self.counting;
        loop {
            tried += 1;
            if source.gone() {
                return Err(Failure::Source(RequestBodyError::Gone));
            }
            let active = self.pick()?;
            // A try has a context of its own only when it has its own
            // deadline: otherwise ending the try (dropping its future) is
            // all the cancelling it needs.
            let per_try = self.policy.and_then(|p| p.per_try_timeout).map(|t| crate::deadline::with_timeout(ctx, t));
            let try_ctx = per_try.as_ref().map_or(ctx, |(ctx, _guard)| ctx);
            store.inc(stats.rq_total);
            log.tries += 1;
            let sent_at = clock::now();
            request.deadline =
                try_ctx.deadline().and_then(|deadline| time_left_header(deadline, self.grpc, self.time_left));
            let mut span = self.span(&active, request, log.tries, false);
            let error = match under(try_ctx, self.try_once(&active, request, body, source, exchange)).await {
                Ok(Ok(head)) => {
                    self.count_answer(&active, &head, sent_at, log);
                    let status = head.head.status.as_u16();
                    if self.policy.is_some_and(|p| retry_on_status(p, status)) && tried < tries && body.replayable() {
                        // Its answer is judged: the try is over for its span.
                        end_try(span.take(), TryEnd::Status(status));
                        if self.retry(tried, ctx, source, &mut retry_permit).await? {
                            continue;
                        }
                    }
                    return Ok(Answer { head, active, span });
                }
                Ok(Err(TryError::Connect(ConnectError::Overflow(breaker)))) => {
                    store.inc(stats.cb_open[breaker as usize]);
                    end_try(span, TryEnd::Error(&format_args!("circuit breaker {} open", breaker.name())));
                    return Err(Failure::Overflow(breaker));
                }
                Ok(Err(TryError::Source(e))) => {
                    end_try(span, source_end(&e));
                    return Err(Failure::Source(e));
                }
                Ok(Err(error)) => error,
                Err(_) if ctx.err().is_some() => {
                    store.inc(stats.rq_timeout);
                    end_try(span, TryEnd::Canceled(&ROUTE_DEADLINE));
                    return Err(Failure::Timeout);
                }
                Err(_) => {
                    store.inc(stats.rq_timeout);
                    TryError::TryTimeout
                }
            };
            end_try(span, error_end(&error));
            if let TryError::Reset { reused: true } = error
                && free_retry
                && body.replayable()
            {
                free_retry = false;
                tried -= 1;
                continue;
            }
            if self.policy.is_some_and(|p| retry_on_error(p, &error))
                && tried < tries
                && body.replayable()
                && self.retry(tried, ctx, source, &mut retry_permit).await?
            {
                continue;
            }
            return Err(Failure::Try { error, retried: tried > 1 });
        }
    }

    /// An endpoint for the next try, counted in flight.
    fn pick(&self) -> Result<ActiveRequest<'a>, Failure> {
        let Counting { store, stats } = self.counting;
        match self.cluster.state.pick(self.hash, store, stats) {
            Ok(active) => Ok(active),
            Err(PickError::NoHealthy) => Err(Failure::NoHealthy),
            Err(PickError::Overflow(breaker)) => {
                store.inc(stats.cb_open[breaker as usize]);
                Err(Failure::Overflow(breaker))
            }
        }
    }

    /// The span of try `number` to `active`'s endpoint (a hedge if
    /// `hedge`), when the request is traced; `request` then sends a
    /// `traceparent` naming it.
    #[inline]
    fn span(
        &self,
        active: &ActiveRequest<'_>,
        request: &mut UpstreamRequest<'_>,
        number: u32,
        hedge: bool,
    ) -> Option<Span<'a>> {
        let trace = self.trace?;
        let config = self.cluster.state.config();
        let (span, parent) =
            trace.start(&config.name, active.endpoint_name(), &request.method, config.protocol, number, hedge);
        request.traceparent = Some(parent);
        Some(span)
    }

    /// Counts a response head from `active`'s endpoint.
    fn count_answer(&self, active: &ActiveRequest<'_>, head: &UpstreamHead, sent_at: Instant, log: &mut TryLog) {
        let Counting { store, stats } = self.counting;
        let status = head.head.status.as_u16();
        store.inc(stats.rq_class[crate::stats::class(status)]);
        let service_time = clock::since(sent_at);
        store.observe(stats.rq_duration, service_time);
        active.report_status(status);
        log.service_time = Some(service_time);
        log.host = head.peer;
    }

    /// Whether retry number `tried` (1 for the first retry) is made: its
    /// back-off fits before the request's deadline, and the cluster's
    /// retry budget (or `max_retries` breaker) has room. Waits the back-off
    /// (a client that leaves meanwhile ends the request). The permit is
    /// held until the next retry replaces it.
    async fn retry<S: RequestSource>(
        &self,
        tried: u32,
        ctx: &Context,
        source: &mut S,
        permit: &mut Option<RetryPermit>,
    ) -> Result<bool, Failure> {
        let delay = self.policy.map_or(Duration::ZERO, |p| backoff_delay(p, tried));
        // A back-off that would pass the deadline is not taken.
        if ctx.deadline().is_some_and(|deadline| Instant::now() + delay >= deadline) {
            return Ok(false);
        }
        if !self.may_retry(permit) {
            return Ok(false);
        }
        if !delay.is_zero() {
            wait(delay, source).await?;
        }
        Ok(true)
    }

    /// Takes a unit of the cluster's retry budget, or else of its
    /// `max_retries` breaker, for one more retry in flight; counts it.
    fn may_retry(&self, permit: &mut Option<RetryPermit>) -> bool {
        // This request's previous retry is over: its unit goes back first,
        // so one request never needs two.
        permit.take();
        let Counting { store, stats } = self.counting;
        let state = &self.cluster.state;
        let acquired = if state.has_retry_budget() {
            state.budget_retry().map(RetryPermit::Budget)
        } else {
            match state.resources.acquire(Breaker::Retries) {
                Ok(acquired) => Some(RetryPermit::Breaker(acquired)),
                Err(breaker) => {
                    store.inc(stats.cb_open[breaker as usize]);
                    None
                }
            }
        };
        match acquired {
            Some(acquired) => {
                *permit = Some(acquired);
                store.inc(stats.rq_retry);
                true
            }
            None => {
                store.inc(stats.rq_retry_overflow);
                false
            }
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
            let switched = head.head.headers.get(&http::header::UPGRADE);
            let asked = request.upgrade.as_ref();
            if !asked.zip(switched).is_some_and(|(a, s)| a.as_bytes().eq_ignore_ascii_case(s)) {
                return Err(TryError::UnaskedUpgrade);
            }
        }
        Ok(head)
    }

    /// Hedged tries (`hedge_on_per_try_timeout`): a try past its per-try
    /// timeout stays open and the next one starts beside it; the first
    /// answer to keep wins and every other try is cancelled at once
    /// (dropped: its connection closed or its stream reset, its context
    /// cancelled). A try that fails, or brings a status the policy retries
    /// on, is replaced by the next try at once, without back-off (hedging
    /// is for latency); when no try is left, the last answer (or failure)
    /// stands. The body is empty or buffered whole, so every try can send
    /// it; the client is watched here rather than by each try.
    #[allow(clippy::too_many_arguments)]
    async fn run_hedged<S: RequestSource>(
        &self,
        policy: &RetryPolicy,
        per_try: Duration,
        request: &UpstreamRequest<'_>,
        body: &RequestBody,
        source: &mut S,
        ctx: &Context,
        log: &mut TryLog,
        slot: &mut Option<Exchange>,
    ) -> Result<Answer<'a>, Failure> {
        let Counting { store, stats } = self.counting;
        let tries = 1 + policy.attempts;
        let mut started: u32 = 0;
        let mut retry_permit = None;
        let mut inflight: Vec<Hedge<'_, 'a>> = Vec::new();
        // What to answer with when no try is left: the last retryable
        // answer, else the last failure.
        let mut fallback: Option<(UpstreamHead, Exchange, ActiveRequest<'a>)> = None;
        let mut last_error: Option<TryError> = None;
        // When the next try starts (`None`: only when one ends).
        let mut next_try = Some(Instant::now());
        let mut free_retry = true;
        let tried = under(ctx, async {
            loop {
                if source.gone() {
                    return Err(Failure::Source(RequestBodyError::Gone));
                }
                if started < tries && next_try.is_some_and(|at| at <= Instant::now()) {
                    let hedged = !inflight.is_empty();
                    if hedged {
                        store.inc(stats.rq_hedged);
                        log.hedge_won.get_or_insert(false);
                    }
                    let active = self.pick()?;
                    started += 1;
                    store.inc(stats.rq_total);
                    log.tries += 1;
                    let mut own = request.clone();
                    own.deadline = ctx.deadline().and_then(|d| time_left_header(d, self.grpc, self.time_left));
                    let span = self.span(&active, &mut own, log.tries, hedged);
                    inflight.push(self.hedge(active, own, body.clone(), started, ctx, span));
                    next_try = Some(Instant::now() + per_try);
                }
                if inflight.is_empty() {
                    // Nothing in flight and no try left.
                    if let Some((head, exchange, active)) = fallback.take() {
                        *slot = Some(exchange);
                        return Ok(Answer { head, active, span: None });
                    }
                    let error = last_error.take().unwrap_or(TryError::TryTimeout);
                    return Err(Failure::Try { error, retried: started > 1 });
                }
                let due = next_try.filter(|_| started < tries);
                let event = {
                    let mut wait = std::pin::pin!(source.wait(false));
                    let mut sleep = std::pin::pin!(due.map(tokio::time::sleep_until));
                    std::future::poll_fn(|cx| {
                        for (i, hedge) in inflight.iter_mut().enumerate() {
                            if let Poll::Ready(done) = hedge.run.as_mut().poll(cx) {
                                return Poll::Ready(Event::Done(i, Box::new(done)));
                            }
                        }
                        if let Some(sleep) = sleep.as_mut().as_pin_mut()
                            && sleep.poll(cx).is_ready()
                        {
                            return Poll::Ready(Event::TryDue);
                        }
                        wait.as_mut().poll(cx).map(Event::Source)
                    })
                    .await
                };
                let done = match event {
                    Event::TryDue => continue,
                    Event::Source(wake) => {
                        Box::pin(source.act(wake)).await.map_err(Failure::Source)?;
                        continue;
                    }
                    Event::Done(i, done) => {
                        let Hedge { number, span, .. } = inflight.remove(i);
                        (number, span, done)
                    }
                };
                let (number, mut span, done) = done;
                let HedgeDone { result, active, sent_at } = *done;
                match result {
                    Ok((head, exchange)) => {
                        self.count_answer(&active, &head, sent_at, log);
                        let status = head.head.status.as_u16();
                        if retry_on_status(policy, status)
                            && (!inflight.is_empty() || started < tries && self.may_retry(&mut retry_permit))
                        {
                            end_try(span.take(), TryEnd::Status(status));
                            fallback = Some((head, exchange, active));
                            next_try = Some(Instant::now());
                            continue;
                        }
                        if number > 1 {
                            store.inc(stats.rq_hedge_won_by_later_try);
                        }
                        if log.hedge_won.is_some() {
                            log.hedge_won = Some(number > 1);
                        }
                        // The others lose: dropped here, which cancels them.
                        for loser in inflight.drain(..) {
                            let Hedge { span, .. } = loser;
                            end_try(span, TryEnd::Canceled(&HEDGE_LOST));
                        }
                        *slot = Some(exchange);
                        return Ok(Answer { head, active, span });
                    }
                    Err(TryError::Connect(ConnectError::Overflow(breaker))) => {
                        store.inc(stats.cb_open[breaker as usize]);
                        end_try(span, TryEnd::Error(&format_args!("circuit breaker {} open", breaker.name())));
                        if inflight.is_empty() && fallback.is_none() {
                            return Err(Failure::Overflow(breaker));
                        }
                    }
                    Err(TryError::Source(e)) => {
                        end_try(span, source_end(&e));
                        return Err(Failure::Source(e));
                    }
                    Err(error) => {
                        end_try(span, error_end(&error));
                        if matches!(error, TryError::Reset { reused: true }) && free_retry {
                            // A pooled connection closed under the try: a
                            // fresh one, not counted as a try.
                            free_retry = false;
                            started -= 1;
                            next_try = Some(Instant::now());
                        } else if retry_on_error(policy, &error) && started < tries && self.may_retry(&mut retry_permit)
                        {
                            next_try = Some(Instant::now());
                        } else if inflight.is_empty() {
                            // No retry for this one, and nothing else in
                            // flight: no more tries.
                            started = tries;
                        }
                        last_error = Some(error);
                    }
                }
            }
        })
        .await;
        // Tries still in flight end with the request: why, for their spans.
        let cause: &dyn std::fmt::Display = match &tried {
            Err(_) => &ROUTE_DEADLINE,
            Ok(Err(Failure::Source(RequestBodyError::Gone))) => &CLIENT_LEFT,
            Ok(_) => &"the request ended first",
        };
        for hedge in inflight.drain(..) {
            let Hedge { span, .. } = hedge;
            end_try(span, TryEnd::Canceled(cause));
        }
        tried.unwrap_or_else(|_| {
            store.inc(stats.rq_timeout);
            Err(Failure::Timeout)
        })
    }

    /// Try number `number` of a hedged request, as a future of its own
    /// that owns its endpoint and its copy of the request and body.
    fn hedge<'h>(
        &'h self,
        active: ActiveRequest<'a>,
        request: UpstreamRequest<'h>,
        mut body: RequestBody,
        number: u32,
        ctx: &Context,
        span: Option<Span<'a>>,
    ) -> Hedge<'h, 'a>
    where
        'a: 'h,
    {
        let (try_ctx, cancel) = ctx.with_cancel();
        let run = Box::pin(async move {
            let sent_at = clock::now();
            let (mut slot, mut client) = (None, NoClient);
            let tried = self.try_once(&active, &request, &mut body, &mut client, &mut slot);
            let result = match under(&try_ctx, tried).await {
                Ok(Ok(head)) => match slot.take() {
                    Some(exchange) => Ok((head, exchange)),
                    None => Err(TryError::BadResponse("the try kept no exchange".into())),
                },
                Ok(Err(error)) => Err(error),
                Err(_) => Err(TryError::TryTimeout),
            };
            HedgeDone { result, active, sent_at }
        });
        Hedge { number, run, _cancel: cancel, span }
    }
}

/// One hedged try in flight (its future borrows for `'h`; its endpoint
/// counts for `'a`).
struct Hedge<'h, 'a> {
    /// 1 for the first try started, 2 for the next...
    number: u32,
    run: Pin<Box<dyn Future<Output = HedgeDone<'a>> + 'h>>,
    /// Cancels the try's context when the try is dropped (it lost).
    _cancel: nuncio_context::CancelHandle,
    /// Its span, when the request is traced.
    span: Option<Span<'a>>,
}

/// How a hedged try ended.
struct HedgeDone<'a> {
    result: Result<(UpstreamHead, Exchange), TryError>,
    active: ActiveRequest<'a>,
    sent_at: Instant,
}

/// What woke a hedged request.
enum Event<'a> {
    /// The try at this position of the in-flight list ended (boxed: the
    /// event is moved around, the ending is large and rare).
    Done(usize, Box<HedgeDone<'a>>),
    /// The newest try passed its per-try timeout: the next one starts.
    TryDue,
    /// The client side needs attention.
    Source(Wake),
}

/// Why a try ended before it was answered, for its span.
const HEDGE_LOST: &str = "another try answered first";
const ROUTE_DEADLINE: &str = "context deadline exceeded (the request's timeout)";
const TRY_DEADLINE: &str = "context deadline exceeded (the per-try timeout)";

/// How a try that failed ends its span.
fn error_end(error: &TryError) -> TryEnd<'_> {
    match error {
        TryError::TryTimeout => TryEnd::Canceled(&TRY_DEADLINE),
        TryError::Source(e) => source_end(e),
        error => TryEnd::Error(error),
    }
}

/// How a try stopped by whoever the request is for ends its span.
fn source_end(error: &RequestBodyError) -> TryEnd<'_> {
    match error {
        RequestBodyError::Gone => TryEnd::Canceled(&CLIENT_LEFT),
        RequestBodyError::Answered => TryEnd::Canceled(&"a filter answered instead"),
        RequestBodyError::Invalid(e) => TryEnd::Error(e),
        RequestBodyError::TimedOut => TryEnd::Error(&"the request body came too slowly"),
    }
}

/// A unit of retry allowance, given back when dropped.
enum RetryPermit {
    Breaker(#[allow(dead_code)] Permit),
    Budget(#[allow(dead_code)] BudgetedRetry),
}

/// The back-off before retry `n` (1 for the first retry): full jitter
/// between 0 and `min(max, base × 2^(n-1))`.
fn backoff_delay(policy: &RetryPolicy, n: u32) -> Duration {
    let Backoff { base, max } = policy.backoff;
    let ceiling = base.saturating_mul(1u32 << n.saturating_sub(1).min(20)).min(max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// Waits `delay` while watching `source`: the client leaving ends the
/// wait (and the request); handle calls are applied as they come.
async fn wait<S: RequestSource>(delay: Duration, source: &mut S) -> Result<(), Failure> {
    let until = Instant::now() + delay;
    loop {
        let wake = tokio::select! {
            () = tokio::time::sleep_until(until) => return Ok(()),
            wake = source.wait(false) => wake,
        };
        Box::pin(source.act(wake)).await.map_err(Failure::Source)?;
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
