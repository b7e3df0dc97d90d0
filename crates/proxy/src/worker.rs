//! A worker thread's serving state: the slots main feeds it (config with
//! its stats store, endpoint status), the channel to tell main about
//! endpoints, and per-cluster state. Lives on the worker, shared by its
//! connections through an `Rc`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use nuncio_runtime::Slot;

use crate::cluster::ClusterState;
use crate::cluster::hosts::{HostEvent, HostStatus};
use crate::snapshot::{Local, Snapshot};

pub(crate) struct Worker {
    /// The current config snapshot and this worker's stats store for it.
    pub(crate) local: Slot<Local>,
    /// Load-balancing state and connection pools, by cluster name (in an
    /// `Rc`: filters' HTTP clients reach the same pools).
    clusters: Rc<WorkerClusters>,
}

/// A worker's state of every cluster it served, by name.
pub(crate) struct WorkerClusters {
    /// Endpoint addresses, health and ejections, from main.
    hosts: Slot<HostStatus>,
    /// Reports to main (outlier runs).
    events: tokio::sync::mpsc::UnboundedSender<HostEvent>,
    states: RefCell<HashMap<String, Rc<ClusterState>>>,
}

impl Worker {
    pub(crate) fn new(
        local: Slot<Local>,
        hosts: Slot<HostStatus>,
        events: tokio::sync::mpsc::UnboundedSender<HostEvent>,
    ) -> Worker {
        let clusters = Rc::new(WorkerClusters { hosts, events, states: RefCell::new(HashMap::new()) });
        Worker { local, clusters }
    }

    /// The worker's cluster states, for a filter's HTTP client to share.
    pub(crate) fn clusters(&self) -> &Rc<WorkerClusters> {
        &self.clusters
    }

    /// This worker's state for cluster `name` of `snapshot`: kept as long
    /// as the cluster's config is unchanged (pools survive reloads that do
    /// not touch it), rebuilt when it changed.
    pub(crate) fn cluster(&self, snapshot: &Snapshot, name: &str) -> Option<Rc<ClusterState>> {
        self.clusters.get(snapshot, name)
    }
}

impl WorkerClusters {
    /// See [`Worker::cluster`].
    pub(crate) fn get(&self, snapshot: &Snapshot, name: &str) -> Option<Rc<ClusterState>> {
        let shared = snapshot.clusters.get(name)?;
        let mut clusters = self.states.borrow_mut();
        match clusters.get(name) {
            Some(state) if Arc::ptr_eq(&state.shared, shared) || *state.shared.config == *shared.config => {
                Some(state.clone())
            }
            _ => {
                let state = Rc::new(ClusterState::new(shared.clone(), self.hosts.clone(), self.events.clone()));
                clusters.insert(name.to_owned(), state.clone());
                Some(state)
            }
        }
    }
}
