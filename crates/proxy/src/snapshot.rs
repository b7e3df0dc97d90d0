//! The immutable view of the config that workers serve from.
//!
//! Built once on main from a validated [`Config`] and delivered to every
//! worker through a [`Slot`](nuncio_runtime::Slot) as a [`Local`]: the
//! shared snapshot plus the worker's own stats store for it. A request
//! reads it with no lock, and keeps the `Local` it started with for its
//! whole life (config and stats of one version, always together).

use std::collections::HashMap;
use std::sync::Arc;

use nuncio_config::{Config, Listener};
use nuncio_stats::Store;

use crate::cluster::ClusterShared;
use crate::router::RouteTable;
use crate::stats::ProxyStats;

/// One version of the effective config, ready to serve.
pub(crate) struct Snapshot {
    /// Increases with every config delivered (1 for the first).
    pub(crate) version: u64,
    /// The config it was built from (for `/config_dump`).
    pub(crate) config: Arc<Config>,
    /// By listener name.
    pub(crate) listeners: HashMap<String, ListenerSnapshot>,
    /// By cluster name.
    pub(crate) clusters: HashMap<String, Arc<ClusterShared>>,
    /// The stats this version declares.
    pub(crate) stats: Arc<ProxyStats>,
}

/// A listener's settings and compiled routes.
#[derive(Debug)]
pub(crate) struct ListenerSnapshot {
    pub(crate) config: Listener,
    pub(crate) routes: RouteTable,
}

impl Snapshot {
    /// Builds version `version` of `config`; clusters unchanged since
    /// `previous` keep their cross-worker counts (breakers, outlier runs).
    pub(crate) fn new(
        version: u64,
        config: Arc<Config>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, nuncio_stats::Error> {
        let listeners = config
            .listeners
            .iter()
            .map(|l| (l.name.clone(), ListenerSnapshot { config: l.clone(), routes: RouteTable::new(&l.routes) }))
            .collect();
        let clusters = config
            .clusters
            .iter()
            .map(|c| {
                let before = previous.and_then(|p| p.clusters.get(&c.name)).map(|s| &**s);
                (c.name.clone(), Arc::new(ClusterShared::new(Arc::new(c.clone()), before)))
            })
            .collect();
        let stats = Arc::new(ProxyStats::declare(&config)?);
        Ok(Snapshot { version, config, listeners, clusters, stats })
    }
}

/// What a thread (worker or main) serves with: a snapshot and its own
/// stats store for that snapshot's stats.
pub(crate) struct Local {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) stats: Arc<Store>,
}
