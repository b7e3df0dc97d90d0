//! The immutable view of the config that workers serve from.
//!
//! Built once on main from a validated [`Config`] and delivered to every
//! worker through a [`Slot`](nuncio_runtime::Slot) as a [`Local`]: the
//! shared snapshot plus the worker's own stats store for it. A request
//! reads it with no lock, and keeps the `Local` it started with for its
//! whole life (config and stats of one version, always together).

use std::sync::Arc;

use http::HeaderName;
use nuncio_accesslog::{Format, Sink, SinkRegistry, Target};
use nuncio_config::{Config, Listener, LogPath};
use nuncio_stats::Store;

use crate::NameMap;
use crate::cluster::ClusterShared;
use crate::error::Error;
use crate::filter_catalog::FilterChainFactory;
use crate::options::Options;
use crate::stats::{FilterTable, ProxyStats};
use nuncio_filter::FilterFactory;
use nuncio_router::RouteTable;

/// One version of the effective config, ready to serve.
pub(crate) struct Snapshot {
    /// Increases with every config delivered (1 for the first).
    pub(crate) version: u64,
    /// The config it was built from (for `/config_dump`).
    pub(crate) config: Arc<Config>,
    /// By listener name.
    pub(crate) listeners: NameMap<ListenerSnapshot>,
    /// By cluster name.
    pub(crate) clusters: NameMap<Arc<ClusterShared>>,
    /// The stats this version declares.
    pub(crate) stats: Arc<ProxyStats>,
}

/// A listener's settings, compiled routes and access log.
pub(crate) struct ListenerSnapshot {
    pub(crate) config: Listener,
    pub(crate) routes: RouteTable,
    pub(crate) access_log: Option<AccessLog>,
    /// Its filters, when it has any.
    pub(crate) filters: Option<FilterChainFactory>,
    /// Its filters' counters, when one of them declares any (ids of this
    /// snapshot's stats).
    pub(crate) filter_counters: Option<FilterTable>,
    /// The field upstreams hear the time left in (not gRPC), if any: the
    /// config's `time_left_header`, parsed once.
    pub(crate) time_left_header: Option<HeaderName>,
}

/// Where and how a listener logs its streams.
pub(crate) struct AccessLog {
    pub(crate) sink: Sink,
    pub(crate) format: Format,
}

impl Snapshot {
    /// Builds version `version` of `config`; clusters unchanged since
    /// `previous` are the same `ClusterShared` (their cross-worker counts —
    /// breakers, outlier runs — and workers' pools carry on). Access-log
    /// sinks come from `sinks` (one per file, shared by the listeners that
    /// name it; opened here, on main). `draining`: listeners the config no
    /// longer has whose connections are still finishing; they keep being
    /// served by their last settings (a name the config reuses wins).
    pub(crate) fn new(
        version: u64,
        config: Arc<Config>,
        previous: Option<&Snapshot>,
        sinks: &mut SinkRegistry,
        options: &Options,
        draining: &[Listener],
    ) -> Result<Snapshot, Error> {
        let mut listeners = NameMap::default();
        let kept = draining.iter().filter(|d| !config.listeners.iter().any(|l| l.name == d.name));
        for l in config.listeners.iter().chain(kept) {
            let access_log = match &l.access_log {
                None => None,
                Some(log) => {
                    let target = match &log.path {
                        LogPath::Stdout => Target::Stdout,
                        LogPath::Stderr => Target::Stderr,
                        LogPath::File(path) => Target::File(path.clone()),
                    };
                    let sink = sinks.get(&target).map_err(|source| Error::AccessLog {
                        listener: l.name.clone(),
                        target: format!("{target:?}"),
                        source,
                    })?;
                    Some(AccessLog { sink, format: log.format.clone() })
                }
            };
            // The embedding program's filters, then the config's.
            let mut chain: Vec<Arc<dyn FilterFactory>> =
                options.filters.get(&l.name).map(|f| f.iter().cloned().collect()).unwrap_or_default();
            for spec in &l.filters {
                let factory = options
                    .filter_kinds
                    .build(spec)
                    .map_err(|message| Error::Filter { listener: l.name.clone(), message })?;
                chain.push(factory);
            }
            let filters: Option<FilterChainFactory> = (!chain.is_empty()).then(|| chain.into());
            // Validated as a field name with the config; a config made in
            // code without validation may still hold anything.
            let time_left_header = match l.time_left_header.as_deref().map(HeaderName::try_from) {
                None => None,
                Some(Ok(name)) => Some(name),
                Some(Err(_)) => {
                    let message = format!("time_left_header {:?} is not a field name", l.time_left_header);
                    return Err(Error::Listener { listener: l.name.clone(), message });
                }
            };
            let snapshot = ListenerSnapshot {
                config: l.clone(),
                routes: RouteTable::new(&l.routes),
                access_log,
                filters,
                filter_counters: None,
                time_left_header,
            };
            listeners.insert(l.name.clone(), snapshot);
        }
        let clusters = config
            .clusters
            .iter()
            .map(|c| {
                let before = previous.and_then(|p| p.clusters.get(&c.name));
                let shared = match before {
                    Some(same) if *same.config == *c => same.clone(),
                    _ => Arc::new(ClusterShared::new(Arc::new(c.clone()), before.map(|s| &**s))),
                };
                (c.name.clone(), shared)
            })
            .collect();
        let chains: Vec<(&str, &FilterChainFactory)> =
            listeners.iter().filter_map(|(name, l)| Some((name.as_str(), l.filters.as_ref()?))).collect();
        let stats = Arc::new(ProxyStats::declare(&config, &chains)?);
        for (name, listener) in &mut listeners {
            listener.filter_counters = stats.filters.get(name).cloned();
        }
        Ok(Snapshot { version, config, listeners, clusters, stats })
    }
}

/// What a thread (worker or main) serves with: a snapshot and its own
/// stats store for that snapshot's stats.
pub(crate) struct Local {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) stats: Arc<Store>,
}
