//! A worker thread's serving state: the config slot, and per-cluster
//! state built from it. Lives on the worker, shared by its connections
//! through an `Rc`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use nuncio_runtime::Slot;

use crate::cluster::ClusterState;
use crate::snapshot::Snapshot;

pub(crate) struct Worker {
    /// The current config snapshot, delivered by main.
    pub(crate) snapshot: Slot<Snapshot>,
    /// Load-balancing state and connection pools, by cluster name.
    clusters: RefCell<HashMap<String, Rc<ClusterState>>>,
}

impl Worker {
    pub(crate) fn new(snapshot: Slot<Snapshot>) -> Worker {
        Worker { snapshot, clusters: RefCell::new(HashMap::new()) }
    }

    /// This worker's state for cluster `name` of `snapshot`: kept as long
    /// as the cluster's config is unchanged (pools survive reloads that do
    /// not touch it), rebuilt when it changed.
    pub(crate) fn cluster(&self, snapshot: &Snapshot, name: &str) -> Option<Rc<ClusterState>> {
        let config = snapshot.clusters.get(name)?;
        let mut clusters = self.clusters.borrow_mut();
        match clusters.get(name) {
            Some(state) if Arc::ptr_eq(&state.config, config) || *state.config == **config => Some(state.clone()),
            _ => {
                let state = Rc::new(ClusterState::new(config.clone()));
                clusters.insert(name.to_owned(), state.clone());
                Some(state)
            }
        }
    }
}
