//! Clusters: which endpoint gets a request, and a TCP connection to it.
//!
//! Three levels, by who owns them:
//! - [`ClusterShared`]: built by main for a config version and read by
//!   every worker (config, hash ring, and the cross-worker counts of
//!   [`ClusterRuntime`] — circuit breakers and outlier-detection runs —
//!   which survive reloads that leave the cluster unchanged).
//! - [`hosts::HostStatus`]: endpoint addresses, health and ejection, owned
//!   by main and published through a slot.
//! - [`ClusterState`]: a worker's own — balancer position and requests in
//!   flight per endpoint. Plain `Cell`s: never shared.
//!
//! Connections are not this module's: it picks an endpoint and opens a
//! connection to it ([`ActiveRequest::connect`], within the breakers: TCP,
//! then TLS for a cluster with `tls`, both within `connect_timeout`);
//! `upstream::pool` keeps them, `upstream` speaks HTTP on them.

pub(crate) mod dns;
pub(crate) mod hosts;
pub(crate) mod lb;
pub(crate) mod resources;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use nuncio_config::{AllUnhealthy, Cluster, LbPolicy};
use nuncio_runtime::Slot;
use nuncio_stats::{Gauge, Store};
use tokio::net::TcpStream;

use self::hosts::{HostEvent, HostStatus};
use self::lb::{Balancer, Ring};
use self::resources::{Breaker, LocalResources, Permit, Resources};
use crate::io::Io;
use crate::stats::ClusterStats;

/// A cluster as main built it for one config version.
pub(crate) struct ClusterShared {
    pub(crate) config: Arc<Cluster>,
    pub(crate) runtime: Arc<ClusterRuntime>,
    pub(crate) ring: Option<Arc<Ring>>,
    /// TLS to the endpoints, for a cluster with `tls`.
    pub(crate) tls: Option<UpstreamTls>,
}

/// The HTTP version of a cluster's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamMode {
    Http1,
    Http2,
    /// TLS offering both in ALPN: each connection speaks what the endpoint
    /// picked.
    Negotiated,
}

/// A cluster's TLS, built on main (the rustls client config, with its
/// session cache, shared by every worker).
pub(crate) struct UpstreamTls {
    connector: tokio_rustls::TlsConnector,
    /// By endpoint index: the name verified (and sent in SNI).
    names: Vec<nuncio_tls::rustls::pki_types::ServerName<'static>>,
    mode: UpstreamMode,
}

impl UpstreamTls {
    fn new(config: &Cluster) -> Result<Option<UpstreamTls>, crate::error::Error> {
        let Some(tls) = &config.tls else { return Ok(None) };
        let error = |message: String| crate::error::Error::Cluster { cluster: config.name.clone(), message };
        if !tls.verify {
            tracing::warn!(cluster = %config.name, "tls.verify is false: the endpoints' certificates are not verified");
        }
        let settings = nuncio_tls::ClientSettings {
            ca: tls.ca.as_ref().map(|ca| &ca.loaded),
            verify: tls.verify,
            client_certificate: tls.client_certificate.as_ref().map(|c| &c.loaded),
            alpn: &tls.alpn,
        };
        let client = nuncio_tls::client_config(settings).map_err(|e| error(format!("tls: {e}")))?;
        let names = config
            .endpoints
            .iter()
            .map(|e| {
                let host =
                    tls.sni.as_deref().unwrap_or_else(|| e.address.rsplit_once(':').map_or(&e.address, |(h, _)| h));
                nuncio_tls::server_name(host).map_err(|e| error(format!("tls: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let (h2, h1) = (tls.alpn.iter().any(|p| p == "h2"), tls.alpn.iter().any(|p| p == "http/1.1"));
        let mode = match (h2, h1) {
            (true, true) => UpstreamMode::Negotiated,
            (true, false) => UpstreamMode::Http2,
            _ => UpstreamMode::Http1,
        };
        Ok(Some(UpstreamTls { connector: client.into(), names, mode }))
    }
}

impl ClusterShared {
    /// Builds it, keeping `previous`'s counts if the cluster is unchanged.
    pub(crate) fn new(
        config: Arc<Cluster>,
        previous: Option<&ClusterShared>,
    ) -> Result<ClusterShared, crate::error::Error> {
        let runtime = match previous {
            Some(p) if *p.config == *config => p.runtime.clone(),
            _ => Arc::new(ClusterRuntime {
                resources: Resources::new(&config),
                endpoints: config.endpoints.iter().map(|_| EndpointCounters::default()).collect(),
            }),
        };
        let ring = (config.lb == LbPolicy::RingHash).then(|| Arc::new(Ring::new(&config)));
        let tls = UpstreamTls::new(&config)?;
        Ok(ClusterShared { config, runtime, ring, tls })
    }

    /// The HTTP version its connections speak.
    pub(crate) fn mode(&self) -> UpstreamMode {
        match (&self.tls, self.config.protocol) {
            (Some(tls), _) => tls.mode,
            (None, nuncio_config::UpstreamProtocol::Http1) => UpstreamMode::Http1,
            (None, nuncio_config::UpstreamProtocol::Http2) => UpstreamMode::Http2,
        }
    }
}

/// Counts shared by every worker.
pub(crate) struct ClusterRuntime {
    pub(crate) resources: Arc<Resources>,
    pub(crate) endpoints: Vec<EndpointCounters>,
}

/// Outlier-detection runs of one endpoint, across workers.
#[derive(Default)]
pub(crate) struct EndpointCounters {
    consecutive_5xx: AtomicU32,
    consecutive_connect_failures: AtomicU32,
}

impl EndpointCounters {
    /// Resets both runs (after an ejection).
    pub(crate) fn reset(&self) {
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_connect_failures.store(0, Ordering::Relaxed);
    }
}

/// A worker's state of a cluster.
pub(crate) struct ClusterState {
    pub(crate) shared: Arc<ClusterShared>,
    balancer: Balancer,
    endpoints: Vec<EndpointState>,
    /// Requests in flight from this worker, by endpoint (least request).
    active: Vec<Cell<u32>>,
    /// The cluster's retry budget as this worker keeps it, if it has one.
    budget: Option<LocalBudget>,
    /// This worker's leases of the circuit breakers' units.
    pub(crate) resources: Rc<LocalResources>,
    hosts: Slot<HostStatus>,
    events: tokio::sync::mpsc::UnboundedSender<HostEvent>,
}

/// A cluster's retry budget on one worker (see
/// [`RetryBudget`](nuncio_config::RetryBudget): each worker applies the
/// percentage to its own requests, and gets its share of the minimum).
struct LocalBudget {
    percent: u32,
    /// `min_retry_concurrency` shared out between the workers, rounded up.
    min: u32,
    /// Requests in flight from this worker.
    requests: Cell<u32>,
    /// Retries in flight from this worker.
    retries: Cell<u32>,
}

/// A retry the cluster's retry budget allowed; it is in flight until
/// dropped.
pub(crate) struct BudgetedRetry(Rc<ClusterState>);

impl Drop for BudgetedRetry {
    fn drop(&mut self) {
        if let Some(budget) = &self.0.budget {
            budget.retries.set(budget.retries.get().saturating_sub(1));
        }
    }
}

/// One endpoint on this worker.
struct EndpointState {
    /// The endpoint as written in the config.
    name: String,
}

/// Why no endpoint (or no connection) could be had.
#[derive(Debug)]
pub(crate) enum PickError {
    /// Every endpoint is unhealthy or ejected (`when_all_unhealthy: fail`).
    NoHealthy,
    /// A circuit breaker is open.
    Overflow(Breaker),
}

/// Why a connection could not be had.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// Every address refused or failed.
    Failed(std::io::Error),
    /// `connect_timeout` passed.
    Timeout,
    /// The TLS handshake failed (counted by reason and logged where it
    /// happened): rustls's account of why.
    Tls { message: String },
    /// `max_connections` or `max_pending_requests` reached.
    Overflow(Breaker),
}

/// All endpoints usable, without allocating, for clusters up to this size.
static ALL_USABLE: [bool; 256] = [true; 256];

impl ClusterState {
    /// This worker's state of `shared`, on one of `workers` workers.
    pub(crate) fn new(
        shared: Arc<ClusterShared>,
        hosts: Slot<HostStatus>,
        events: tokio::sync::mpsc::UnboundedSender<HostEvent>,
        workers: usize,
    ) -> ClusterState {
        let endpoints = shared.config.endpoints.iter().map(|e| EndpointState { name: e.address.clone() }).collect();
        let balancer = Balancer::new(&shared.config, shared.ring.clone());
        let active = shared.config.endpoints.iter().map(|_| Cell::new(0)).collect();
        let resources = LocalResources::new(shared.runtime.resources.clone(), workers);
        let workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
        let budget = shared.config.retry_budget.map(|b| LocalBudget {
            percent: b.percent,
            min: b.min_retry_concurrency.div_ceil(workers),
            requests: Cell::new(0),
            retries: Cell::new(0),
        });
        ClusterState { shared, balancer, endpoints, active, budget, resources, hosts, events }
    }

    /// Whether the cluster has a retry budget (then it, not the
    /// `max_retries` breaker, bounds retries).
    pub(crate) fn has_retry_budget(&self) -> bool {
        self.budget.is_some()
    }

    /// One more retry in flight, if the retry budget allows it: retries in
    /// flight stay within `percent` of requests in flight (this one's first
    /// try included), or the worker's share of `min_retry_concurrency`.
    /// `None` when it does not, or the cluster has no budget.
    pub(crate) fn budget_retry(self: &Rc<Self>) -> Option<BudgetedRetry> {
        let budget = self.budget.as_ref()?;
        let allowed = (u64::from(budget.requests.get()) * u64::from(budget.percent) / 100).max(u64::from(budget.min));
        if u64::from(budget.retries.get()) >= allowed {
            return None;
        }
        budget.retries.set(budget.retries.get() + 1);
        Some(BudgetedRetry(self.clone()))
    }

    pub(crate) fn config(&self) -> &Cluster {
        &self.shared.config
    }

    /// Chooses an endpoint for a request (by the cluster's policy, among
    /// healthy, non-ejected endpoints) and counts it in flight until the
    /// returned guard drops. `hash` is the request's hash for `ring_hash`.
    pub(crate) fn pick<'s>(
        self: &Rc<Self>,
        hash: Option<u64>,
        store: &'s Arc<Store>,
        stats: &'s ClusterStats,
    ) -> Result<ActiveRequest<'s>, PickError> {
        let n = self.endpoints.len();
        let chosen = self
            .hosts
            .with(|hosts| {
                let status = hosts.of(&self.shared.config);
                let all = status.is_none_or(|s| s.iter().all(hosts::EndpointStatus::usable));
                if all && n <= ALL_USABLE.len() {
                    return Ok(self.balancer.choose(&ALL_USABLE[..n], &self.active, hash));
                }
                let mut usable: Vec<bool> = match status {
                    Some(s) => s.iter().map(hosts::EndpointStatus::usable).collect(),
                    None => vec![true; n],
                };
                usable.resize(n, false);
                if !usable.contains(&true) {
                    match self.shared.config.when_all_unhealthy {
                        AllUnhealthy::Fail => return Err(PickError::NoHealthy),
                        AllUnhealthy::UseAll => usable.fill(true),
                    }
                }
                Ok(self.balancer.choose(&usable, &self.active, hash))
            })
            .unwrap_or(Err(PickError::NoHealthy))?;
        let index = chosen.ok_or(PickError::NoHealthy)?;
        let permit = self.resources.acquire(Breaker::Requests).map_err(PickError::Overflow)?;
        self.active[index].set(self.active[index].get() + 1);
        if let Some(budget) = &self.budget {
            budget.requests.set(budget.requests.get() + 1);
        }
        if let Some(gauge) = stats.endpoint_rq_active.get(index) {
            store.gauge_inc(*gauge);
        }
        Ok(ActiveRequest { cluster: self.clone(), index, store, stats, _permit: permit })
    }
}

/// A request in flight to one endpoint; dropping it ends the count.
pub(crate) struct ActiveRequest<'s> {
    cluster: Rc<ClusterState>,
    index: usize,
    store: &'s Arc<Store>,
    stats: &'s ClusterStats,
    _permit: Permit,
}

impl ActiveRequest<'_> {
    /// The endpoint's index in its cluster.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The endpoint as the config names it (`host:port`).
    pub(crate) fn endpoint_name(&self) -> &str {
        &self.cluster.endpoints[self.index].name
    }

    /// The endpoint's current addresses (DNS may have changed them).
    pub(crate) fn addresses(&self) -> Arc<[SocketAddr]> {
        let from_hosts = self
            .cluster
            .hosts
            .with(|h| h.of(&self.cluster.shared.config).and_then(|c| c.get(self.index)).map(|e| e.addresses.clone()))
            .ok()
            .flatten();
        from_hosts.unwrap_or_else(|| Arc::from(self.cluster.shared.config.endpoints[self.index].resolved.as_slice()))
    }

    /// Whether `peer` is one of the endpoint's current addresses. Reads them
    /// in place: cloning the `Arc` that [`addresses`](Self::addresses)
    /// returns would write its count, which every worker shares, on each
    /// pooled request.
    pub(crate) fn has_address(&self, peer: SocketAddr) -> bool {
        let from_hosts = self
            .cluster
            .hosts
            .with(|h| {
                h.of(&self.cluster.shared.config).and_then(|c| c.get(self.index)).map(|e| e.addresses.contains(&peer))
            })
            .ok()
            .flatten();
        from_hosts.unwrap_or_else(|| self.cluster.shared.config.endpoints[self.index].resolved.contains(&peer))
    }

    /// A new connection to the endpoint, within the cluster's
    /// `connect_timeout` and circuit breakers: TCP (each address the name
    /// resolved to is tried in turn), then TLS for a cluster with `tls`.
    /// The guard counts the connection open (stats, `max_connections`)
    /// until dropped with it.
    pub(crate) async fn connect(&self) -> Result<Connected, ConnectError> {
        let resources = &self.cluster.resources;
        let permit = resources.acquire(Breaker::Connections).map_err(ConnectError::Overflow)?;
        let pending = resources.acquire(Breaker::PendingRequests).map_err(ConnectError::Overflow)?;
        let addresses = self.addresses();
        let endpoint = self.endpoint_name();
        let attempt = async {
            let mut last = None;
            for address in addresses.iter() {
                match TcpStream::connect(address).await {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        return Ok(stream);
                    }
                    Err(e) => {
                        tracing::debug!(endpoint, %address, error = %e, "upstream connect failed");
                        last = Some(e);
                    }
                }
            }
            Err(ConnectError::Failed(last.unwrap_or_else(|| std::io::Error::other("endpoint resolved to no address"))))
        };
        let in_tls = Cell::new(false);
        let attempt = async {
            let stream = attempt.await?;
            match &self.cluster.shared.tls {
                None => Ok((Io::Plain(stream), false)),
                Some(tls) => {
                    in_tls.set(true);
                    // Boxed: a handshake's state (a rustls connection, KiBs)
                    // would otherwise sit in every request's future, since
                    // a try may connect.
                    Box::pin(self.handshake(tls, stream)).await
                }
            }
        };
        let connected = tokio::time::timeout(self.cluster.shared.config.connect_timeout, attempt)
            .await
            .unwrap_or(Err(ConnectError::Timeout));
        drop(pending);
        match connected {
            Ok((io, h2)) => {
                self.report_connect(true);
                self.store.inc(self.stats.cx_total);
                self.store.gauge_inc(self.stats.cx_active);
                let store = Arc::clone(self.store);
                Ok(Connected { io, h2, guard: ConnectionGuard { store, gauge: self.stats.cx_active, _permit: permit } })
            }
            Err(e) => {
                if let (ConnectError::Timeout, true, Some(tls)) = (&e, in_tls.get(), &self.stats.tls) {
                    self.store.inc(tls.failed("timeout"));
                    tracing::warn!(
                        cluster = %self.cluster.shared.config.name,
                        endpoint = self.endpoint_name(),
                        reason = "timeout",
                        "upstream TLS handshake failed: not done within connect_timeout"
                    );
                }
                self.report_connect(false);
                self.store.inc(self.stats.cx_connect_fail);
                Err(e)
            }
        }
    }

    /// The TLS handshake on a new TCP connection; whether ALPN agreed on
    /// `h2`. A failure is counted by reason and logged (a warning: the
    /// operator's upstream or config is wrong).
    async fn handshake(&self, tls: &UpstreamTls, stream: TcpStream) -> Result<(Io, bool), ConnectError> {
        let name = tls.names[self.index].clone();
        match tls.connector.connect(name, stream).await {
            Ok(stream) => {
                let session = nuncio_tls::SessionInfo::of(stream.get_ref().1, None);
                if let Some(stats) = &self.stats.tls {
                    stats.count(self.store, &session);
                }
                let h2 = session.alpn.as_deref() == Some("h2");
                Ok((Io::Tls(Box::new(stream.into())), h2))
            }
            Err(e) => {
                let reason = nuncio_tls::failure_reason(&e);
                let message = nuncio_tls::describe(&e);
                if let Some(stats) = &self.stats.tls {
                    self.store.inc(stats.failed(reason));
                }
                tracing::warn!(
                    cluster = %self.cluster.shared.config.name,
                    endpoint = self.endpoint_name(),
                    reason,
                    "upstream TLS handshake failed: {message}"
                );
                Err(ConnectError::Tls { message })
            }
        }
    }

    /// Outlier detection: a response with `status` came from the endpoint.
    pub(crate) fn report_status(&self, status: u16) {
        let Some(detection) = &self.cluster.shared.config.outlier_detection else { return };
        let counters = &self.cluster.shared.runtime.endpoints[self.index];
        if (500..600).contains(&status) {
            let run = counters.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            if detection.consecutive_5xx == Some(run) {
                self.tell_main("consecutive_5xx");
            }
        } else if counters.consecutive_5xx.load(Ordering::Relaxed) != 0 {
            // Only write when there is a run to end: a healthy endpoint's
            // counter line is never written by every worker.
            counters.consecutive_5xx.store(0, Ordering::Relaxed);
        }
    }

    /// Outlier detection: a connection attempt succeeded or failed.
    fn report_connect(&self, ok: bool) {
        let Some(detection) = &self.cluster.shared.config.outlier_detection else { return };
        let counters = &self.cluster.shared.runtime.endpoints[self.index];
        if ok {
            if counters.consecutive_connect_failures.load(Ordering::Relaxed) != 0 {
                counters.consecutive_connect_failures.store(0, Ordering::Relaxed);
            }
        } else {
            let run = counters.consecutive_connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if detection.consecutive_connect_failures == Some(run) {
                self.tell_main("consecutive_connect_failures");
            }
        }
    }

    fn tell_main(&self, reason: &'static str) {
        let event = HostEvent::ConsecutiveFailures {
            config: self.cluster.shared.config.clone(),
            cluster: self.cluster.shared.config.name.clone(),
            endpoint: self.index,
            reason,
        };
        let _ = self.cluster.events.send(event);
    }
}

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        let active = &self.cluster.active[self.index];
        active.set(active.get().saturating_sub(1));
        if let Some(budget) = &self.cluster.budget {
            budget.requests.set(budget.requests.get().saturating_sub(1));
        }
        if let Some(gauge) = self.stats.endpoint_rq_active.get(self.index) {
            self.store.gauge_dec(*gauge);
        }
    }
}

/// A new connection to an endpoint.
pub(crate) struct Connected {
    pub(crate) io: Io,
    /// TLS's ALPN agreed on HTTP/2.
    pub(crate) h2: bool,
    pub(crate) guard: ConnectionGuard,
}

/// Counts an upstream connection open (the `upstream_cx_active` gauge, the
/// `max_connections` breaker) for as long as it lives.
pub(crate) struct ConnectionGuard {
    store: Arc<Store>,
    gauge: Gauge,
    _permit: Permit,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.store.gauge_dec(self.gauge);
    }
}
