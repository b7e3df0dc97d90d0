//! What is known about endpoints right now — addresses (DNS), health
//! (active checks), ejection (outlier detection) — owned by main and
//! published to every worker through a slot whenever it changes. Workers
//! only read it; they report what they see (a run of 5xx) as
//! [`HostEvent`]s sent to main, which decides.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use nuncio_config::{Cluster, Config};
use nuncio_runtime::Slot;

/// Every cluster's endpoint states, as workers read them.
#[derive(Debug, Default)]
pub(crate) struct HostStatus {
    pub(crate) clusters: HashMap<String, Arc<[EndpointStatus]>>,
}

/// One endpoint's state.
#[derive(Debug, Clone)]
pub(crate) struct EndpointStatus {
    /// Where to connect, in order of preference.
    pub(crate) addresses: Arc<[SocketAddr]>,
    /// Active health checking says it serves (always true without checks).
    pub(crate) healthy: bool,
    /// Outlier detection took it out of rotation.
    pub(crate) ejected: bool,
}

impl EndpointStatus {
    /// Whether it should get new requests.
    pub(crate) fn usable(&self) -> bool {
        self.healthy && !self.ejected
    }
}

/// What a worker tells main about an endpoint.
#[derive(Debug)]
pub(crate) enum HostEvent {
    /// It answered 5xx (`consecutive_5xx`) or could not be connected to
    /// (`consecutive_connect_failures`) that many times in a row.
    ConsecutiveFailures { cluster: String, endpoint: usize, reason: &'static str },
}

/// Main's side: the current state, and the slot it is published through.
pub(crate) struct Hosts {
    slot: Slot<HostStatus>,
    status: std::cell::RefCell<HashMap<String, Vec<EndpointStatus>>>,
    /// Ejections so far, by cluster and endpoint (the next one lasts longer).
    ejections: std::cell::RefCell<HashMap<(String, usize), u32>>,
}

impl Hosts {
    /// The initial state of every endpoint of `config` (addresses resolved
    /// at load, healthy, not ejected), published at once.
    pub(crate) fn new(slot: Slot<HostStatus>, config: &Config) -> Result<Rc<Hosts>, nuncio_runtime::Error> {
        let status = config.clusters.iter().map(|c| (c.name.clone(), initial(c))).collect();
        let hosts =
            Rc::new(Hosts { slot, status: std::cell::RefCell::new(status), ejections: std::cell::RefCell::default() });
        hosts.publish()?;
        Ok(hosts)
    }

    /// Sends the current state to every worker (one immutable copy).
    pub(crate) fn publish(&self) -> Result<(), nuncio_runtime::Error> {
        let status = self.status.borrow();
        let published = Arc::new(HostStatus {
            clusters: status.iter().map(|(name, endpoints)| (name.clone(), Arc::from(endpoints.as_slice()))).collect(),
        });
        self.slot.set(move |_| published.clone())
    }

    /// The current state of `cluster`'s endpoints.
    pub(crate) fn endpoints(&self, cluster: &str) -> Vec<EndpointStatus> {
        self.status.borrow().get(cluster).cloned().unwrap_or_default()
    }

    /// Changes one endpoint and publishes if anything changed.
    pub(crate) fn update(&self, cluster: &str, endpoint: usize, change: impl FnOnce(&mut EndpointStatus)) {
        let changed = {
            let mut status = self.status.borrow_mut();
            let Some(e) = status.get_mut(cluster).and_then(|c| c.get_mut(endpoint)) else { return };
            let before = (e.addresses.clone(), e.healthy, e.ejected);
            change(e);
            before != (e.addresses.clone(), e.healthy, e.ejected)
        };
        if changed && let Err(e) = self.publish() {
            tracing::warn!(error = %e, "cannot publish endpoint state");
        }
    }

    /// Counts an ejection of `endpoint`; returns how long it lasts:
    /// `base × ejections so far`, at most `max`.
    pub(crate) fn next_ejection(&self, cluster: &str, endpoint: usize, base: Duration, max: Duration) -> Duration {
        let mut ejections = self.ejections.borrow_mut();
        let count = ejections.entry((cluster.to_owned(), endpoint)).or_insert(0);
        *count += 1;
        base.saturating_mul(*count).min(max)
    }
}

fn initial(cluster: &Cluster) -> Vec<EndpointStatus> {
    cluster
        .endpoints
        .iter()
        .map(|e| EndpointStatus { addresses: Arc::from(e.resolved.as_slice()), healthy: true, ejected: false })
        .collect()
}
