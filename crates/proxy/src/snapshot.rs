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
use nuncio_config::{Config, Listener, ListenerTls, LogPath, TlsMinVersion};
use nuncio_stats::Store;
use nuncio_trace::{Exporter, ExporterConfig, ExporterRegistry, Sampler};

use crate::NameMap;
use crate::cluster::ClusterShared;
use crate::error::Error;
use crate::filter_catalog::FilterChainFactory;
use crate::filter_manager::Directions;
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
    /// Its `tracing:`, when configured: the exporter and the sampler.
    pub(crate) tracing: Option<crate::spans::Tracing>,
}

/// A listener's settings, compiled routes and access log.
pub(crate) struct ListenerSnapshot {
    /// Its place among the snapshot's listeners (indexes [`Local`]'s
    /// per-worker filters).
    pub(crate) index: usize,
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
    /// TLS termination, on a listener with `tls`.
    pub(crate) tls: Option<TlsTermination>,
}

/// A listener's TLS as workers use it: the rustls config built on main for
/// this version (certificates as validated), shared by every worker.
#[derive(Clone)]
pub(crate) struct TlsTermination {
    pub(crate) server: nuncio_tls::ServerTls,
    pub(crate) handshake_timeout: std::time::Duration,
}

impl TlsTermination {
    /// Builds `tls`'s rustls config; `previous` (the same listener's in the
    /// last snapshot) lends its session cache and ticket keys, so a reload
    /// or a certificate rotation does not end resumption.
    fn new(name: &str, tls: &ListenerTls, previous: Option<&TlsTermination>) -> Result<TlsTermination, Error> {
        let certificates: Vec<nuncio_tls::Certificate> = tls.certificates.iter().map(|c| c.loaded.clone()).collect();
        let min_version = match tls.min_version {
            TlsMinVersion::Tls12 => nuncio_tls::MinVersion::Tls12,
            TlsMinVersion::Tls13 => nuncio_tls::MinVersion::Tls13,
        };
        let settings = nuncio_tls::ServerSettings {
            certificates: &certificates,
            alpn: &tls.alpn,
            min_version,
            client_ca: tls.client_ca.as_ref().map(|ca| &ca.loaded),
        };
        let server = nuncio_tls::ServerTls::new(settings, previous.map(|p| &p.server))
            .map_err(|e| Error::Listener { listener: name.to_owned(), message: format!("tls: {e}") })?;
        Ok(TlsTermination { server, handshake_timeout: tls.handshake_timeout })
    }
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
    /// name it; opened here, on main), the tracing exporter from
    /// `exporters` (one per collector). `draining`: listeners the config no
    /// longer has whose connections are still finishing; they keep being
    /// served by their last settings (a name the config reuses wins).
    pub(crate) fn new(
        version: u64,
        config: Arc<Config>,
        previous: Option<&Snapshot>,
        sinks: &mut SinkRegistry,
        exporters: &mut Exporters,
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
            // code without validation may still hold anything. Kept as
            // `'static` text: each request's clone then writes no count
            // shared by every worker.
            let time_left_header = match l.time_left_header.as_deref().map(nuncio_filter::field_name) {
                None => None,
                Some(Ok(name)) => Some(name),
                Some(Err(_)) => {
                    let message = format!("time_left_header {:?} is not a field name", l.time_left_header);
                    return Err(Error::Listener { listener: l.name.clone(), message });
                }
            };
            let tls = match &l.tls {
                None => None,
                Some(tls) => {
                    let before = previous.and_then(|p| p.listeners.get(&l.name)).and_then(|p| p.tls.as_ref());
                    Some(TlsTermination::new(&l.name, tls, before)?)
                }
            };
            let snapshot = ListenerSnapshot {
                index: listeners.len(),
                config: l.clone(),
                tls,
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
                    _ => Arc::new(ClusterShared::new(Arc::new(c.clone()), before.map(|s| &**s))?),
                };
                Ok((c.name.clone(), shared))
            })
            .collect::<Result<_, Error>>()?;
        let chains: Vec<(&str, &FilterChainFactory)> =
            listeners.iter().filter_map(|(name, l)| Some((name.as_str(), l.filters.as_ref()?))).collect();
        let stats = Arc::new(ProxyStats::declare(&config, &chains)?);
        for (name, listener) in &mut listeners {
            listener.filter_counters = stats.filters.get(name).cloned();
        }
        let tracing = match &config.tracing {
            None => None,
            Some(t) => {
                let exporter = exporters.get(&ExporterConfig {
                    endpoint: t.otlp_endpoint.clone(),
                    service_name: t.service_name.clone(),
                    queue_size: t.queue_size,
                })?;
                Some(crate::spans::Tracing { exporter, sampler: Sampler::per_million(t.sampling_per_million) })
            }
        };
        Ok(Snapshot { version, config, listeners, clusters, stats, tracing })
    }
}

/// The tracing exporters, kept on main like the access-log sinks: one per
/// collector, shared by the snapshots that name it.
#[derive(Default)]
pub(crate) struct Exporters {
    registry: ExporterRegistry,
    /// The stores of exporters started since [`Exporters::take_new_stores`]:
    /// the admin must read them.
    new_stores: Vec<Arc<Store>>,
}

impl Exporters {
    fn get(&mut self, config: &ExporterConfig) -> Result<Exporter, Error> {
        let (exporter, new) = self.registry.get(config)?;
        if new {
            self.new_stores.push(exporter.store().clone());
        }
        Ok(exporter)
    }

    /// The stores of the exporters started since the last call.
    pub(crate) fn take_new_stores(&mut self) -> Vec<Arc<Store>> {
        std::mem::take(&mut self.new_stores)
    }

    /// Lets go of the exporters no snapshot holds any more (their threads
    /// send what is queued and end).
    pub(crate) fn prune(&mut self) {
        self.registry.prune();
    }
}

/// What a thread (worker or main) serves with: a snapshot, its own stats
/// store for that snapshot's stats, and its own copy of the listeners'
/// filter factories.
pub(crate) struct Local {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) stats: Arc<Store>,
    /// By [`ListenerSnapshot::index`]; `None` for a listener without
    /// filters.
    filters: Box<[Option<WorkerFilters>]>,
}

/// A listener's filters as one thread creates them for its streams.
///
/// Each stream clones the chain and its counter table, and each factory's
/// `create` typically clones an `Arc` of its config: made once on main and
/// shared, those clones would write counts that every worker writes on
/// every stream (a shared cache line per request). The copies here are
/// made on the thread that uses them, so the counts are its own.
pub(crate) struct WorkerFilters {
    pub(crate) factories: FilterChainFactory,
    pub(crate) counters: Option<FilterTable>,
    /// The directions some filter acts on
    /// ([`FilterFactory::acts_on_request`](nuncio_filter::FilterFactory::acts_on_request),
    /// `acts_on_response`).
    pub(crate) directions: Directions,
}

impl Local {
    /// Call on the thread that will serve with it (a worker's copies are
    /// then allocated and written there).
    pub(crate) fn new(snapshot: Arc<Snapshot>, stats: Arc<Store>) -> Local {
        let mut filters: Vec<Option<WorkerFilters>> = (0..snapshot.listeners.len()).map(|_| None).collect();
        for listener in snapshot.listeners.values() {
            let Some(chain) = &listener.filters else { continue };
            filters[listener.index] = Some(WorkerFilters {
                factories: chain.iter().map(|f| f.for_worker().unwrap_or_else(|| f.clone())).collect(),
                counters: listener.filter_counters.as_ref().map(|table| table.iter().cloned().collect()),
                directions: Directions {
                    request: chain.iter().any(|f| f.acts_on_request()),
                    response: chain.iter().any(|f| f.acts_on_response()),
                },
            });
        }
        Local { snapshot, stats, filters: filters.into() }
    }

    /// This thread's filters for `listener` (one of this snapshot's), if
    /// it has any.
    pub(crate) fn filters(&self, listener: &ListenerSnapshot) -> Option<&WorkerFilters> {
        debug_assert!(
            self.snapshot.listeners.get(&listener.config.name).is_some_and(|l| std::ptr::eq(l, listener)),
            "a listener of another snapshot"
        );
        self.filters.get(listener.index)?.as_ref()
    }
}
