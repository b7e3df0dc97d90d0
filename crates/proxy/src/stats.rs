//! The data plane's stats, declared on main for each config version
//! ([`ProxyStats::declare`]) and written by workers into their own
//! [`Store`] without locks; admin sums the stores.
//!
//! Names follow Prometheus conventions (see `docs/admin.md` for the list):
//! `nuncio_downstream_rq_total`, `nuncio_upstream_cx_active{cluster="api"}`,
//! `nuncio_downstream_rq_duration_seconds` ...
//!
//! Filters' own counters ([`FilterFactory::counters`](nuncio_filter::FilterFactory::counters)) are declared here
//! too, per listener, as `nuncio_filter_<KIND>_<NAME>{filter,listener}`
//! ([`FilterTable`]); a stream's [`StreamCx`](nuncio_filter::StreamCx)
//! writes them through [`FilterCounters`].

use std::sync::Arc;

use crate::NameMap;
use nuncio_config::Config;
use nuncio_filter::{CounterSink, FilterCounter};
use nuncio_stats::{Counter, DURATION_BUCKETS, Definitions, Gauge, Histogram, StatsBuilder, Store, WorkerGauge};

use crate::error::Error;
use crate::filter_catalog::FilterChainFactory;

/// Status classes, as label values, indexed by `status / 100 - 1`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The circuit breakers, as label values.
pub(crate) const BREAKERS: [&str; 4] = ["max_connections", "max_pending_requests", "max_requests", "max_retries"];

/// Every stat of one config version.
pub(crate) struct ProxyStats {
    pub(crate) defs: Arc<Definitions>,
    pub(crate) downstream_cx_total: Counter,
    pub(crate) downstream_cx_active: Gauge,
    pub(crate) downstream_rq_total: Counter,
    pub(crate) downstream_rq_class: [Counter; 5],
    pub(crate) downstream_rq_duration: Histogram,
    pub(crate) config_version: WorkerGauge,
    pub(crate) filter_panics: Counter,
    /// Reloads applied on every worker (written on main).
    pub(crate) config_reload: Counter,
    /// Reloads refused (a bad config, a port in use).
    pub(crate) config_reload_failed: Counter,
    /// From the new config validated to every worker serving it.
    pub(crate) config_reload_duration: Histogram,
    /// Client connections force-closed because a drain ran out of time.
    pub(crate) downstream_cx_drain_close: Counter,
    /// The overload level, 0 to 2 (set by main).
    pub(crate) overload_level: Gauge,
    /// Requests answered 503 because nuncio was overloaded.
    pub(crate) overload_shed: Counter,
    /// Connections closed as accepted because nuncio was overloaded.
    pub(crate) overload_refused: Counter,
    pub(crate) clusters: NameMap<ClusterStats>,
    /// By listener name: its filters' counters, for listeners with a
    /// filter that declares any.
    pub(crate) filters: NameMap<FilterTable>,
}

/// A listener's filter counters: by position in its chain, the ids of each
/// filter's counters in the order its factory declared them (so a
/// [`FilterCounter`] indexes the inner list).
pub(crate) type FilterTable = Arc<[Box<[Counter]>]>;

/// One cluster's stats.
pub(crate) struct ClusterStats {
    pub(crate) rq_total: Counter,
    pub(crate) rq_class: [Counter; 5],
    pub(crate) rq_duration: Histogram,
    pub(crate) cx_active: Gauge,
    pub(crate) cx_total: Counter,
    pub(crate) cx_connect_fail: Counter,
    pub(crate) rq_retry: Counter,
    /// Retries not made: the retry budget or the `max_retries` breaker
    /// refused them.
    pub(crate) rq_retry_overflow: Counter,
    /// Tries started beside a try past its per-try timeout.
    pub(crate) rq_hedged: Counter,
    /// Requests answered by a try other than the first one started.
    pub(crate) rq_hedge_won_by_later_try: Counter,
    pub(crate) rq_timeout: Counter,
    /// Copies of requests sent here by routes' `mirror`.
    pub(crate) mirror_rq: Counter,
    /// Copies not sent: a circuit breaker of this cluster was open.
    pub(crate) mirror_skipped_overflow: Counter,
    /// Copies not sent: the request's body was too large to keep a copy of.
    pub(crate) mirror_skipped_body: Counter,
    /// By breaker, in [`BREAKERS`] order.
    pub(crate) cb_open: [Counter; 4],
    pub(crate) health_check_success: Counter,
    pub(crate) health_check_failure: Counter,
    pub(crate) outlier_ejections: Counter,
    /// Requests in flight, by endpoint index (for `/clusters`).
    pub(crate) endpoint_rq_active: Vec<Gauge>,
}

impl ProxyStats {
    /// Declares every stat `config` calls for, and the counters of the
    /// filters each listener runs (`chains`: listener name and filters).
    pub(crate) fn declare(config: &Config, chains: &[(&str, &FilterChainFactory)]) -> Result<ProxyStats, Error> {
        let mut b = StatsBuilder::new();
        let mut filters = NameMap::default();
        for &(listener, chain) in chains {
            if let Some(table) = declare_filter_counters(&mut b, listener, chain)? {
                filters.insert(listener.to_owned(), table);
            }
        }
        let classes = |b: &mut StatsBuilder, name: &str, help: &str, labels: &[(&str, &str)]| {
            let mut ids = Vec::with_capacity(5);
            for class in CLASSES {
                let mut all = labels.to_vec();
                all.push(("class", class));
                ids.push(b.counter(name, help, &all)?);
            }
            Ok::<[Counter; 5], nuncio_stats::Error>(ids.try_into().expect("five classes"))
        };
        let downstream_rq_class =
            classes(&mut b, "downstream_rq_class_total", "Downstream requests answered, by status class.", &[])?;
        let mut clusters = NameMap::default();
        for cluster in &config.clusters {
            let c: &[(&str, &str)] = &[("cluster", cluster.name.as_str())];
            let breaker = |b: &mut StatsBuilder, name: &str| {
                b.counter(
                    "upstream_cb_open_total",
                    "Requests refused at once because a circuit breaker was open.",
                    &[("cluster", cluster.name.as_str()), ("breaker", name)],
                )
            };
            let health = |b: &mut StatsBuilder, result: &str| {
                b.counter(
                    "health_check_total",
                    "Active health checks, by result.",
                    &[("cluster", cluster.name.as_str()), ("result", result)],
                )
            };
            let mut endpoint_rq_active = Vec::with_capacity(cluster.endpoints.len());
            for endpoint in &cluster.endpoints {
                endpoint_rq_active.push(b.gauge(
                    "upstream_endpoint_rq_active",
                    "Requests in flight to an endpoint.",
                    &[("cluster", cluster.name.as_str()), ("endpoint", endpoint.address.as_str())],
                )?);
            }
            let stats = ClusterStats {
                rq_total: b.counter("upstream_rq_total", "Requests sent upstream (each try counts).", c)?,
                rq_class: classes(&mut b, "upstream_rq_class_total", "Upstream responses, by status class.", c)?,
                rq_duration: b.histogram(
                    "upstream_rq_duration_seconds",
                    "Time from sending a request upstream to its response head.",
                    c,
                    DURATION_BUCKETS,
                )?,
                cx_active: b.gauge("upstream_cx_active", "Open upstream connections.", c)?,
                cx_total: b.counter("upstream_cx_total", "Upstream connections opened.", c)?,
                cx_connect_fail: b.counter(
                    "upstream_cx_connect_fail_total",
                    "Upstream connections that failed or timed out.",
                    c,
                )?,
                rq_retry: b.counter("upstream_rq_retry_total", "Retries of upstream requests.", c)?,
                rq_retry_overflow: b.counter(
                    "upstream_rq_retry_overflow_total",
                    "Retries not made because the retry budget or the max_retries breaker refused them.",
                    c,
                )?,
                rq_hedged: b.counter(
                    "upstream_rq_hedged_total",
                    "Tries started beside a try past its per-try timeout (hedge_on_per_try_timeout).",
                    c,
                )?,
                rq_hedge_won_by_later_try: b.counter(
                    "upstream_rq_hedge_won_by_later_try_total",
                    "Requests answered by a try other than the first one started.",
                    c,
                )?,
                mirror_rq: b.counter(
                    "upstream_mirror_rq_total",
                    "Copies of requests sent here by a route's mirror.",
                    c,
                )?,
                mirror_skipped_overflow: b.counter(
                    "upstream_mirror_skipped_total",
                    "Mirror copies not sent, by reason.",
                    &[("cluster", cluster.name.as_str()), ("reason", "overflow")],
                )?,
                mirror_skipped_body: b.counter(
                    "upstream_mirror_skipped_total",
                    "Mirror copies not sent, by reason.",
                    &[("cluster", cluster.name.as_str()), ("reason", "body_too_large")],
                )?,
                rq_timeout: b.counter(
                    "upstream_rq_timeout_total",
                    "Upstream requests that hit the route or per-try timeout.",
                    c,
                )?,
                cb_open: [
                    breaker(&mut b, BREAKERS[0])?,
                    breaker(&mut b, BREAKERS[1])?,
                    breaker(&mut b, BREAKERS[2])?,
                    breaker(&mut b, BREAKERS[3])?,
                ],
                health_check_success: health(&mut b, "success")?,
                health_check_failure: health(&mut b, "failure")?,
                outlier_ejections: b.counter(
                    "outlier_ejections_total",
                    "Endpoints ejected by outlier detection.",
                    c,
                )?,
                endpoint_rq_active,
            };
            clusters.insert(cluster.name.clone(), stats);
        }
        Ok(ProxyStats {
            downstream_cx_total: b.counter("downstream_cx_total", "Client connections accepted.", &[])?,
            downstream_cx_active: b.gauge("downstream_cx_active", "Open client connections.", &[])?,
            downstream_rq_total: b.counter("downstream_rq_total", "Client requests answered.", &[])?,
            downstream_rq_class,
            downstream_rq_duration: b.histogram(
                "downstream_rq_duration_seconds",
                "Time from a request's head to the end of its response.",
                &[],
                DURATION_BUCKETS,
            )?,
            config_version: b.worker_gauge("config_version", "The config version each worker serves.", &[])?,
            filter_panics: b.counter(
                "filter_panics_total",
                "Filter hooks that panicked (each ended its stream with a 500).",
                &[],
            )?,
            config_reload: b.counter("config_reload_total", "Config reloads applied on every worker.", &[])?,
            config_reload_failed: b.counter(
                "config_reload_failed_total",
                "Config reloads refused (the old config kept serving).",
                &[],
            )?,
            config_reload_duration: b.histogram(
                "config_reload_duration_seconds",
                "Time from a new config validated to every worker serving it.",
                &[],
                DURATION_BUCKETS,
            )?,
            overload_level: b.gauge(
                "overload_level",
                "Overload: 0 normal, 1 shedding requests (503, no keep-alive), 2 refusing connections too.",
                &[],
            )?,
            overload_shed: b.counter(
                "overload_shed_requests_total",
                "Requests answered 503 because nuncio was overloaded.",
                &[],
            )?,
            overload_refused: b.counter(
                "overload_refused_connections_total",
                "Connections closed as they were accepted because nuncio was overloaded.",
                &[],
            )?,
            downstream_cx_drain_close: b.counter(
                "downstream_cx_drain_close_total",
                "Client connections closed because drain_timeout passed before they finished.",
                &[],
            )?,
            clusters,
            filters,
            defs: b.build(),
        })
    }
}

/// Declares the counters of `chain`'s filters on `listener`: each as
/// `filter_<KIND>_<NAME>` (so `nuncio_filter_ext_authz_allowed_total`)
/// with labels `listener` and `filter`. `<KIND>` is the factory's name
/// with what a stat name cannot hold written `_`; the `filter` label is
/// the name as is, with `[POSITION]` (its index in the chain) appended
/// when the chain has the kind more than once. `None` when no filter of
/// the chain declares a counter.
fn declare_filter_counters(
    b: &mut StatsBuilder,
    listener: &str,
    chain: &FilterChainFactory,
) -> Result<Option<FilterTable>, Error> {
    if chain.iter().all(|f| f.counters().is_empty()) {
        return Ok(None);
    }
    let mut table = Vec::with_capacity(chain.len());
    for (position, factory) in chain.iter().enumerate() {
        let kind = factory.name();
        let label = if chain.iter().filter(|f| f.name() == kind).count() > 1 {
            format!("{kind}[{position}]")
        } else {
            kind.to_owned()
        };
        let prefix = format!("filter_{}_", stat_name_part(kind));
        let labels = [("listener", listener), ("filter", label.as_str())];
        let counters = factory
            .counters()
            .iter()
            .map(|spec| {
                b.counter(&format!("{prefix}{}", spec.name()), spec.help(), &labels).map_err(|e| Error::Filter {
                    listener: listener.to_owned(),
                    message: format!("filter {kind}: counter {}: {e}", spec.name()),
                })
            })
            .collect::<Result<Box<[Counter]>, Error>>()?;
        table.push(counters);
    }
    Ok(Some(table.into()))
}

/// `name` as part of a stat name: ASCII letters, digits and `_`, anything
/// else written `_`.
fn stat_name_part(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// Where a stream's [`StreamCx`](nuncio_filter::StreamCx) counts: the
/// worker's store for the stream's config version and its listener's
/// [`FilterTable`]. Worker-local, like the store writes it makes.
pub(crate) struct FilterCounters {
    pub(crate) store: Arc<Store>,
    pub(crate) table: FilterTable,
}

impl CounterSink for FilterCounters {
    #[inline]
    fn add(&self, filter: usize, counter: FilterCounter, n: u64) {
        // An id the filter did not declare (made by another factory) has
        // no cell here: ignored rather than counted somewhere else.
        if let Some(&id) = self.table.get(filter).and_then(|counters| counters.get(counter.index())) {
            self.store.add(id, n);
        }
    }
}

/// The index of `status`'s class in a `[Counter; 5]`.
pub(crate) fn class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}
