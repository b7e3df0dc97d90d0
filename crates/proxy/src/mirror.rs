//! Request mirroring (a route's `mirror`): a copy of a request sent to
//! another cluster, fire and forget, as Envoy's `request_mirror_policies`.
//!
//! The copy goes out as its own task on the worker, under a context of its
//! own: the original request's end does not cancel it, its `timeout` does.
//! Its answer is read to the end and dropped. It never slows or fails the
//! request it copies: it is started after the original's body is in hand
//! and is sent beside it; a mirror cluster over its circuit breakers is
//! skipped (counted in `upstream_mirror_skipped_total{reason="overflow"}`),
//! and so is a request whose body streams (larger than the buffer a retry
//! keeps: `reason="body_too_large"`). The copy's `Host` (`:authority`) gets
//! `-shadow` after the host name, as in Envoy, so the mirror can tell copies
//! from real traffic.
//!
//! A traced request's copies are traced too: each try of a copy gets a
//! span (`mirror CLUSTER egress`), a child of the request's own span that
//! may end after it, and sends a `traceparent` naming it. A copy's log
//! lines carry the request's ids.

use http::{HeaderMap, HeaderValue, header};

use crate::message::HeadFields;
use nuncio_config::Mirror;
use nuncio_context::Context;
use nuncio_runtime::SlotRef;
use nuncio_trace::{InRequest, RequestTrace};

use crate::attempt::{Attempts, Counting, Failure, TryLog};
use crate::bounded::under;
use crate::snapshot::Local;
use crate::spans::{TryEnd, TryTrace, end_try};
use crate::upstream::{self, NoClient, RequestBody, UpstreamRequest};
use crate::worker::Worker;

/// Sends copies of `request` (with `body`, the original's as the tries
/// send it) to every mirror the route samples this request for. Returns at
/// once; the copies go on as tasks of their own. Runs on the worker.
pub(crate) fn send(
    worker: &Worker,
    local: &SlotRef<Local>,
    mirrors: &[Mirror],
    request: &UpstreamRequest<'_>,
    body: &RequestBody,
    ctx: &Context,
    trace: Option<RequestTrace>,
) {
    for mirror in mirrors {
        if mirror.per_million < 1_000_000 && fastrand::u32(0..1_000_000) >= mirror.per_million {
            continue;
        }
        let Some(cluster) = worker.cluster(&local.snapshot, &mirror.cluster) else { continue };
        let Some(stats) = local.snapshot.stats.clusters.get(&mirror.cluster) else { continue };
        let body = match body {
            RequestBody::Empty => RequestBody::Empty,
            RequestBody::Buffered(chunks) => RequestBody::Buffered(chunks.clone()),
            RequestBody::Streaming { .. } => {
                local.stats.inc(stats.mirror_skipped_body);
                continue;
            }
        };
        local.stats.inc(stats.mirror_rq);
        let mut headers = request.headers.to_map();
        shadow_host(&mut headers);
        let copy = Copy {
            local: local.clone(),
            cluster,
            name: mirror.cluster.clone(),
            method: request.method.clone(),
            target: request.target.clone(),
            size: request.body,
            headers: headers.into(),
            body,
            trace,
        };
        // The original's values, not its cancellation or deadline: the
        // mirror's own timeout bounds the copy.
        let detached = ctx.without_cancel();
        let (ctx, guard) = match mirror.timeout {
            Some(timeout) => crate::deadline::with_timeout(&detached, timeout),
            None => detached.with_cancel(),
        };
        // Boxed inside a small task, as a stream on an HTTP/2 connection
        // is (`downstream::http2`): tokio moves a spawned future by value.
        tokio::task::spawn_local(InRequest::new(nuncio_trace::current_log_ids(), async move {
            crate::box_in_place!(copy.send(&ctx)).await;
            drop(guard);
        }));
    }
}

/// `Host: example.com:8080` becomes `Host: example.com-shadow:8080`.
fn shadow_host(headers: &mut HeaderMap) {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return };
    // An IPv6 literal's port follows its closing bracket.
    let split = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => i,
        _ => host.len(),
    };
    let shadow = format!("{}-shadow{}", &host[..split], &host[split..]);
    if let Ok(value) = HeaderValue::from_str(&shadow) {
        headers.insert(header::HOST, value);
    }
}

/// One copy on its way.
struct Copy {
    local: SlotRef<Local>,
    cluster: crate::worker::LocalCluster,
    name: String,
    method: http::Method,
    target: http::Uri,
    size: crate::message::BodySize,
    headers: HeadFields,
    body: RequestBody,
    /// The original request's trace, when it is sampled.
    trace: Option<RequestTrace>,
}

impl Copy {
    async fn send(mut self, ctx: &Context) {
        let Some(stats) = self.local.snapshot.stats.clusters.get(&self.name) else { return };
        let store = &self.local.stats;
        let trace = self.trace.zip(self.local.snapshot.tracing.as_ref()).map(|(request, tracing)| TryTrace {
            exporter: &tracing.exporter,
            request,
            label: "mirror",
        });
        let attempts = Attempts {
            cluster: &self.cluster,
            counting: Counting { store, stats },
            policy: None,
            hash: None,
            time_left: None,
            grpc: crate::deadline::is_grpc(&self.headers),
            trace,
        };
        let mut request = UpstreamRequest {
            method: self.method.clone(),
            target: self.target.clone(),
            headers: &self.headers,
            body: self.size,
            deadline: None,
            traceparent: None,
            upgrade: None,
            expect_continue: false,
            // Read and dropped.
        };
        let (mut log, mut exchange) = (TryLog::default(), None);
        let tried = attempts.run(&mut request, &mut self.body, &mut NoClient, ctx, &mut log, &mut exchange).await;
        match tried {
            Ok(answer) => {
                // Read to the end and dropped: the connection can go back to
                // the pool.
                let Some(mut exchange) = exchange else { return };
                let drained = under(ctx, async {
                    while let Ok(Some(_)) = upstream::next_frame(&mut exchange, &mut NoClient).await {}
                })
                .await;
                let status = answer.head.head.status.as_u16();
                match drained {
                    Ok(()) => end_try(answer.span, TryEnd::Status(status)),
                    Err(_) => {
                        end_try(answer.span, TryEnd::Canceled(&"context deadline exceeded (the mirror's timeout)"));
                    }
                }
                if drained.is_ok()
                    && let upstream::Exchange::Http1(exchange) = exchange
                    && let Some(conn) = exchange.into_reusable()
                {
                    self.cluster.pools.release(answer.active.index(), conn);
                }
            }
            Err(Failure::Overflow(_)) => store.inc(stats.mirror_skipped_overflow),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_host_keeps_the_port() {
        let cases = [
            ("example.com", "example.com-shadow"),
            ("example.com:8080", "example.com-shadow:8080"),
            ("[::1]:80", "[::1]-shadow:80"),
            ("[::1]", "[::1]-shadow"),
        ];
        for (host, shadow) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static(host));
            shadow_host(&mut headers);
            assert_eq!(headers[header::HOST], shadow, "{host}");
        }
    }
}
