//! A worker thread's serving state: the slots main feeds it (config with
//! its stats store, endpoint status), the channel to tell main about
//! endpoints, per-cluster state, and the listeners it accepts on. Lives on
//! the worker, shared by its connections through an `Rc`.
//!
//! Main changes what a worker serves only by posting to it: a new snapshot
//! (through the slot), a listener to start, drain or close (posted
//! functions of `crate::listener`, which find the worker in a
//! thread-local: [`Worker::current`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use nuncio_context::CancelHandle;
use nuncio_runtime::Slot;

use crate::NameMap;
use crate::cluster::ClusterState;
use crate::cluster::hosts::{HostEvent, HostStatus};
use crate::overload::Overload;
use crate::snapshot::{Local, Snapshot};
use crate::upstream::pool::ClusterPools;

pub(crate) struct Worker {
    /// The current config snapshot and this worker's stats store for it.
    pub(crate) local: Slot<Local>,
    /// Endpoint addresses, health and ejections, from main.
    pub(crate) hosts: Slot<HostStatus>,
    /// Reports to main (outlier runs).
    pub(crate) events: tokio::sync::mpsc::UnboundedSender<HostEvent>,
    /// The process's overload levels (shared with main and every worker).
    pub(crate) overload: Arc<Overload>,
    /// Load-balancing state and connection pools, by cluster name.
    clusters: RefCell<NameMap<LocalCluster>>,
    /// The listeners this worker accepts on (or drains), by id.
    listeners: RefCell<HashMap<u64, ListenerTasks>>,
}

/// A cluster as this worker serves it: its balancing state and its
/// connection pools, kept as long as the cluster's config is unchanged.
#[derive(Clone)]
pub(crate) struct LocalCluster {
    pub(crate) state: Rc<ClusterState>,
    pub(crate) pools: Rc<ClusterPools>,
}

/// One listener on this worker: its accept loop, and the signals its
/// connections watch (`crate::listener` starts, drains and closes it).
pub(crate) struct ListenerTasks {
    pub(crate) accept: tokio::task::JoinHandle<()>,
    /// Cancelled when the listener drains: connections finish what is in
    /// flight, then close (`Connection: close`, `GOAWAY`).
    pub(crate) drain: CancelHandle,
    /// Cancelled when the drain runs out of time: connections close now.
    pub(crate) close: CancelHandle,
}

thread_local! {
    /// This thread's worker, once main made it one.
    static CURRENT: RefCell<Option<Rc<Worker>>> = const { RefCell::new(None) };
}

impl Worker {
    /// Makes the calling thread a worker.
    pub(crate) fn install(
        local: Slot<Local>,
        hosts: Slot<HostStatus>,
        events: tokio::sync::mpsc::UnboundedSender<HostEvent>,
        overload: Arc<Overload>,
    ) {
        let worker = Rc::new(Worker {
            local,
            hosts,
            events,
            overload,
            clusters: RefCell::default(),
            listeners: RefCell::new(HashMap::new()),
        });
        CURRENT.with(|current| *current.borrow_mut() = Some(worker));
    }

    /// This thread's worker (`None` on main, or once it stopped).
    pub(crate) fn current() -> Option<Rc<Worker>> {
        CURRENT.with(|current| current.borrow().clone())
    }

    /// Forgets this thread's worker state (its loop ended): listeners,
    /// cluster pools and slots go before the thread's slot objects do.
    pub(crate) fn uninstall() {
        let worker = CURRENT.with(|current| current.borrow_mut().take());
        if let Some(worker) = worker {
            worker.listeners.borrow_mut().clear();
            worker.clusters.borrow_mut().clear();
        }
    }

    /// This worker's state for cluster `name` of `snapshot`: kept as long
    /// as the cluster's config is unchanged (pools survive reloads that do
    /// not touch it), rebuilt when it changed.
    pub(crate) fn cluster(&self, snapshot: &Snapshot, name: &str) -> Option<LocalCluster> {
        let shared = snapshot.clusters.get(name)?;
        let mut clusters = self.clusters.borrow_mut();
        match clusters.get(name) {
            Some(local) if Arc::ptr_eq(&local.state.shared, shared) || *local.state.shared.config == *shared.config => {
                Some(local.clone())
            }
            _ => {
                let workers = snapshot.config.workers;
                let state =
                    Rc::new(ClusterState::new(shared.clone(), self.hosts.clone(), self.events.clone(), workers));
                let config = &shared.config;
                let re_resolved = config.endpoints.iter().map(|e| crate::cluster::dns::re_resolved(config, e));
                let pools = ClusterPools::new(re_resolved, config.idle_timeout);
                let local = LocalCluster { state, pools };
                clusters.insert(name.to_owned(), local.clone());
                Some(local)
            }
        }
    }

    /// A new snapshot arrived: the state of clusters it removed or changed
    /// is let go. Requests in flight keep theirs (an `Rc`) and finish;
    /// idle pooled connections close with it.
    /// Listener `id` now accepts on this worker.
    pub(crate) fn add_listener(&self, id: u64, tasks: ListenerTasks) {
        self.listeners.borrow_mut().insert(id, tasks);
    }

    /// Runs `f` on listener `id`'s tasks, if it is served here.
    pub(crate) fn with_listener(&self, id: u64, f: impl FnOnce(&ListenerTasks)) {
        if let Some(tasks) = self.listeners.borrow().get(&id) {
            f(tasks);
        }
    }

    /// Listener `id` is no longer served here.
    pub(crate) fn remove_listener(&self, id: u64) -> Option<ListenerTasks> {
        self.listeners.borrow_mut().remove(&id)
    }

    pub(crate) fn retain_clusters(&self, snapshot: &Snapshot) {
        self.clusters.borrow_mut().retain(|name, local| {
            snapshot.clusters.get(name).is_some_and(|shared| *shared.config == *local.state.shared.config)
        });
    }
}
