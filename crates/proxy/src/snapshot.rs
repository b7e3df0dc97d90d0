//! The immutable view of the config that workers serve from.
//!
//! Built once on main from a validated [`Config`] and delivered to every
//! worker through a [`Slot`](nuncio_runtime::Slot): a request reads it with
//! no lock, and keeps the snapshot it started with for its whole life.

use std::collections::HashMap;
use std::sync::Arc;

use nuncio_config::{Cluster, Config, Listener};

use crate::router::RouteTable;

/// One version of the effective config, ready to serve.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// Increases with every config delivered (1 for the first).
    pub(crate) version: u64,
    /// The config it was built from (for `/config_dump`).
    pub(crate) config: Arc<Config>,
    /// By listener name.
    pub(crate) listeners: HashMap<String, ListenerSnapshot>,
    /// By cluster name.
    pub(crate) clusters: HashMap<String, Arc<Cluster>>,
}

/// A listener's settings and compiled routes.
#[derive(Debug)]
pub(crate) struct ListenerSnapshot {
    pub(crate) config: Listener,
    pub(crate) routes: RouteTable,
}

impl Snapshot {
    pub(crate) fn new(version: u64, config: Arc<Config>) -> Snapshot {
        let listeners = config
            .listeners
            .iter()
            .map(|l| (l.name.clone(), ListenerSnapshot { config: l.clone(), routes: RouteTable::new(&l.routes) }))
            .collect();
        let clusters = config.clusters.iter().map(|c| (c.name.clone(), Arc::new(c.clone()))).collect();
        Snapshot { version, config, listeners, clusters }
    }
}
