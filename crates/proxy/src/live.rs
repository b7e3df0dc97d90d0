//! The admin's live page: one self-contained HTML page (`live.html`,
//! compiled into the binary: inline CSS and JS, no CDN, no build step)
//! and the JSON it polls, `GET /stats/live.json`.
//!
//! Everything here runs on main, from what the admin already reads: the
//! workers' stats stores (summed per worker for the per-worker figures,
//! [`Stats::read_by_worker`](nuncio_stats::Stats::read_by_worker)), the
//! endpoint state main keeps, the config manager's listeners and reload
//! history. A poll costs main one read of every store; nothing runs on a
//! worker for it.
//!
//! The JSON (every count since start, so the page computes rates from two
//! polls; `time_ms` dates each poll):
//!
//! ```text
//! { "time_ms", "uptime_s", "state": "ready"|"starting"|"draining", "version",
//!   "totals":   { "rq_total", "cx_active", "rq_class": { "2xx": N, ... } },
//!   "workers":  [ { "worker", "config_version", "rq_total", "cx_active" } ],
//!   "clusters": [ { "name", "rq_total", "rq_class", "cx_active",
//!                   "latency": { "count", "sum", "p50", "p90", "p99", "buckets": [[le, cumulative], ...] },
//!                   "endpoints": [ { "endpoint", "healthy", "ejected", "active_requests", "weight" } ] } ],
//!   "listeners": [ { "name", "address", "connections", "draining" } ],
//!   "reloads":  [ { "time_ms", "version", "duration_ms", "error" } ],
//!   "tracing":  { "exported", "dropped_queue_full", "dropped_export_failed" } | null }
//! ```
//!
//! Latency quantiles are those `/stats` shows (estimated from the
//! histogram's buckets since start, as `histogram_quantile` does); the
//! page plots quantiles of the last poll interval from bucket deltas.

use std::time::{SystemTime, UNIX_EPOCH};

use nuncio_stats::{HistogramSummary, Summary};
use serde_json::{Value, json};

use crate::admin::AdminState;

/// The page, as `GET /` serves it to a browser.
pub(crate) const PAGE: &str = include_str!("live.html");

/// The status classes, as label values.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `GET /stats/live.json`.
pub(crate) fn json(state: &AdminState) -> String {
    let summary = state.summary();
    let by_worker = state.stats.read_by_worker();
    let local = state.local.get().ok();
    let config = local.as_ref().map(|l| l.snapshot.config.clone());
    let status = if state.manager.is_draining() {
        "draining"
    } else if state.ready.get() {
        "ready"
    } else {
        "starting"
    };

    let workers: Vec<Value> = by_worker
        .iter()
        .filter(|(worker, _)| worker.bytes().all(|b| b.is_ascii_digit()))
        .map(|(worker, s)| {
            json!({
                "worker": worker,
                "config_version": s.gauge("nuncio_config_version", &[("worker", worker)]),
                "rq_total": s.counter("nuncio_downstream_rq_total", &[]).unwrap_or(0),
                "cx_active": s.gauge("nuncio_downstream_cx_active", &[]).unwrap_or(0),
            })
        })
        .collect();

    let clusters: Vec<Value> = config
        .iter()
        .flat_map(|config| config.clusters.iter())
        .map(|cluster| {
            let c = [("cluster", cluster.name.as_str())];
            let status = state.manager.hosts.endpoints(&cluster.name);
            let endpoints: Vec<Value> = cluster
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, endpoint)| {
                    let labels = [("cluster", cluster.name.as_str()), ("endpoint", endpoint.address.as_str())];
                    let s = status.get(i);
                    json!({
                        "endpoint": endpoint.address,
                        "healthy": s.is_none_or(|s| s.healthy),
                        "ejected": s.is_some_and(|s| s.ejected),
                        "active_requests": summary.gauge("nuncio_upstream_endpoint_rq_active", &labels).unwrap_or(0),
                        "weight": endpoint.weight,
                    })
                })
                .collect();
            json!({
                "name": cluster.name,
                "rq_total": summary.counter("nuncio_upstream_rq_total", &c).unwrap_or(0),
                "rq_class": classes(&summary, "nuncio_upstream_rq_class_total", &cluster.name),
                "cx_active": summary.gauge("nuncio_upstream_cx_active", &c).unwrap_or(0),
                "latency": summary.histogram("nuncio_upstream_rq_duration_seconds", &c).map(latency),
                "endpoints": endpoints,
            })
        })
        .collect();

    let listeners: Vec<Value> = state
        .manager
        .listener_states()
        .into_iter()
        .map(|l| {
            json!({
                "name": l.name,
                "address": l.address.to_string(),
                "connections": l.connections,
                "draining": l.draining,
            })
        })
        .collect();

    let reloads: Vec<Value> = state
        .manager
        .history()
        .into_iter()
        .map(|r| {
            json!({
                "time_ms": millis(r.at),
                "version": r.version,
                "duration_ms": r.duration.map(|d| d.as_secs_f64() * 1e3),
                "error": r.error,
            })
        })
        .collect();

    let tracing = summary.counter("nuncio_tracing_spans_exported_total", &[]).map(|exported| {
        let dropped =
            |reason| summary.counter("nuncio_tracing_spans_dropped_total", &[("reason", reason)]).unwrap_or(0);
        json!({
            "exported": exported,
            "dropped_queue_full": dropped("queue_full"),
            "dropped_export_failed": dropped("export_failed"),
        })
    });

    let live = json!({
        "time_ms": millis(SystemTime::now()),
        "uptime_s": state.started.elapsed().as_secs_f64(),
        "state": status,
        "version": local.as_ref().map(|l| l.snapshot.version),
        "totals": {
            "rq_total": summary.counter("nuncio_downstream_rq_total", &[]).unwrap_or(0),
            "cx_active": summary.gauge("nuncio_downstream_cx_active", &[]).unwrap_or(0),
            "rq_class": classes(&summary, "nuncio_downstream_rq_class_total", ""),
        },
        "workers": workers,
        "clusters": clusters,
        "listeners": listeners,
        "reloads": reloads,
        "tracing": tracing,
    });
    format!("{live}\n")
}

/// `{"1xx": N, ...}` of a class counter (of `cluster`, unless empty).
fn classes(summary: &Summary, name: &str, cluster: &str) -> Value {
    let map = CLASSES
        .iter()
        .map(|class| {
            let n = if cluster.is_empty() {
                summary.counter(name, &[("class", class)])
            } else {
                summary.counter(name, &[("class", class), ("cluster", cluster)])
            };
            ((*class).to_owned(), json!(n.unwrap_or(0)))
        })
        .collect();
    Value::Object(map)
}

/// A histogram's count, sum, quantiles (as `/stats` shows them; `null`
/// when empty) and cumulative buckets (`null` for `+Inf`'s bound).
fn latency(h: &HistogramSummary) -> Value {
    let quantile = |q| Some(h.quantile(q)).filter(|v| v.is_finite());
    let buckets: Vec<Value> =
        h.buckets().map(|(le, n)| json!([if le.is_finite() { Some(le) } else { None }, n])).collect();
    json!({
        "count": h.count(),
        "sum": h.sum(),
        "p50": quantile(0.5),
        "p90": quantile(0.9),
        "p99": quantile(0.99),
        "buckets": buckets,
    })
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
