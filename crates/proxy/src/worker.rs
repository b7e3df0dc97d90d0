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
    /// Endpoint addresses, health and ejections, from main.
    pub(crate) hosts: Slot<HostStatus>,
    /// Reports to main (outlier runs).
    pub(crate) events: tokio::sync::mpsc::UnboundedSender<HostEvent>,
    /// Load-balancing state and connection pools, by cluster name.
    clusters: RefCell<HashMap<String, Rc<ClusterState>>>,
}

impl Worker {
    pub(crate) fn new(
        local: Slot<Local>,
        hosts: Slot<HostStatus>,
        events: tokio::sync::mpsc::UnboundedSender<HostEvent>,
    ) -> Worker {
        Worker { local, hosts, events, clusters: RefCell::new(HashMap::new()) }
    }

    /// This worker's state for cluster `name` of `snapshot`: kept as long
    /// as the cluster's config is unchanged (pools survive reloads that do
    /// not touch it), rebuilt when it changed.
    pub(crate) fn cluster(&self, snapshot: &Snapshot, name: &str) -> Option<Rc<ClusterState>> {
        let shared = snapshot.clusters.get(name)?;
        let mut clusters = self.clusters.borrow_mut();
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
