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

use nuncio_config::Cluster;
use nuncio_runtime::Slot;

use crate::NameMap;

/// Every cluster's endpoint states, as workers read them.
#[derive(Debug, Default)]
pub(crate) struct HostStatus {
    pub(crate) clusters: NameMap<ClusterHosts>,
}

/// One cluster's endpoint states, for one config of the cluster.
#[derive(Debug, Clone)]
pub(crate) struct ClusterHosts {
    /// The cluster config these states index (by endpoint position). A
    /// worker still serving another config of the cluster (a reload in
    /// flight, or a request that started before it) must not apply them:
    /// it compares this pointer with its own.
    pub(crate) config: Arc<Cluster>,
    pub(crate) endpoints: Arc<[EndpointStatus]>,
}

impl HostStatus {
    /// `cluster`'s endpoint states, if they were made for `config`.
    pub(crate) fn of(&self, config: &Arc<Cluster>) -> Option<&[EndpointStatus]> {
        self.clusters.get(&config.name).filter(|c| Arc::ptr_eq(&c.config, config)).map(|c| &*c.endpoints)
    }
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
    ConsecutiveFailures {
        /// The cluster config the worker counted under (`endpoint` is a
        /// position in it; main ignores reports about a config it replaced).
        config: Arc<Cluster>,
        cluster: String,
        endpoint: usize,
        reason: &'static str,
    },
}

/// A cluster's config and its endpoints' states (by position in it).
type Tracked = (Arc<Cluster>, Vec<EndpointStatus>);

/// Main's side: the current state, and the slot it is published through.
pub(crate) struct Hosts {
    slot: Slot<HostStatus>,
    /// By cluster name: the config the states index, and the states.
    status: std::cell::RefCell<HashMap<String, Tracked>>,
    /// Ejections so far, by cluster and endpoint (the next one lasts longer).
    ejections: std::cell::RefCell<HashMap<(String, usize), u32>>,
}

impl Hosts {
    /// The initial state of every endpoint of `clusters` (addresses
    /// resolved at load, healthy, not ejected), published at once.
    pub(crate) fn new<'c>(
        slot: Slot<HostStatus>,
        clusters: impl IntoIterator<Item = &'c Arc<Cluster>>,
    ) -> Result<Rc<Hosts>, nuncio_runtime::Error> {
        let status = clusters.into_iter().map(|c| (c.name.clone(), (c.clone(), initial(c, None)))).collect();
        let hosts =
            Rc::new(Hosts { slot, status: std::cell::RefCell::new(status), ejections: std::cell::RefCell::default() });
        hosts.publish()?;
        Ok(hosts)
    }

    /// A reload: clusters whose config is the same `Arc` keep their state;
    /// a changed cluster gets fresh states, keeping health and DNS answers
    /// of endpoints it still names; a removed one goes. Returns
    /// the names of clusters that are new or changed (their health checks
    /// and DNS refreshes restart). Publishes.
    pub(crate) fn reconcile<'c>(
        &self,
        clusters: impl IntoIterator<Item = &'c Arc<Cluster>>,
    ) -> Result<Vec<String>, nuncio_runtime::Error> {
        let mut changed = Vec::new();
        {
            let mut status = self.status.borrow_mut();
            let mut next = HashMap::new();
            for config in clusters {
                let entry = match status.remove(&config.name) {
                    Some((old, endpoints)) if Arc::ptr_eq(&old, config) => (old, endpoints),
                    before => {
                        changed.push(config.name.clone());
                        self.ejections.borrow_mut().retain(|(cluster, _), _| *cluster != config.name);
                        (config.clone(), initial(config, before.as_ref().map(|(c, e)| (&**c, e.as_slice()))))
                    }
                };
                next.insert(config.name.clone(), entry);
            }
            for gone in status.keys() {
                self.ejections.borrow_mut().retain(|(cluster, _), _| cluster != gone);
            }
            *status = next;
        }
        self.publish()?;
        Ok(changed)
    }

    /// Sends the current state to every worker (one immutable copy).
    pub(crate) fn publish(&self) -> Result<(), nuncio_runtime::Error> {
        let status = self.status.borrow();
        let published = Arc::new(HostStatus {
            clusters: status
                .iter()
                .map(|(name, (config, endpoints))| {
                    let hosts = ClusterHosts { config: config.clone(), endpoints: Arc::from(endpoints.as_slice()) };
                    (name.clone(), hosts)
                })
                .collect(),
        });
        self.slot.set(move |_| published.clone())
    }

    /// Whether `config` is the cluster config main tracks now.
    pub(crate) fn is_current(&self, config: &Arc<Cluster>) -> bool {
        self.status.borrow().get(&config.name).is_some_and(|(current, _)| Arc::ptr_eq(current, config))
    }

    /// The current state of `cluster`'s endpoints.
    pub(crate) fn endpoints(&self, cluster: &str) -> Vec<EndpointStatus> {
        self.status.borrow().get(cluster).map(|(_, e)| e.clone()).unwrap_or_default()
    }

    /// Changes one endpoint and publishes if anything changed.
    pub(crate) fn update(&self, cluster: &str, endpoint: usize, change: impl FnOnce(&mut EndpointStatus)) {
        let changed = {
            let mut status = self.status.borrow_mut();
            let Some(e) = status.get_mut(cluster).and_then(|(_, c)| c.get_mut(endpoint)) else { return };
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

/// The states of `cluster`'s endpoints: those `before` (the cluster's
/// previous config and states) also named keep their state.
fn initial(cluster: &Cluster, before: Option<(&Cluster, &[EndpointStatus])>) -> Vec<EndpointStatus> {
    cluster
        .endpoints
        .iter()
        .map(|e| {
            let kept = before.and_then(|(config, states)| {
                let index = config.endpoints.iter().position(|old| old.address == e.address)?;
                // Health and DNS answers carry over; an ejection does not
                // (its timer names the old position).
                states.get(index).map(|s| EndpointStatus { ejected: false, ..s.clone() })
            });
            kept.unwrap_or_else(|| EndpointStatus {
                addresses: Arc::from(e.resolved.as_slice()),
                healthy: true,
                ejected: false,
            })
        })
        .collect()
}
