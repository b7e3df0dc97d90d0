//! A worker's view of one cluster: its endpoints, load balancing state and
//! idle upstream connections. Owned by one worker, never shared: plain
//! `Cell`s and `RefCell`s, no atomics, no locks.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use nuncio_config::{Cluster, LbPolicy};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::upstream::http1::Http1Connection;

/// Per-worker state of a cluster.
pub(crate) struct ClusterState {
    pub(crate) config: Arc<Cluster>,
    endpoints: Vec<EndpointState>,
    /// Round-robin position.
    next: Cell<usize>,
}

/// One endpoint (`host:port` from the config) of a cluster.
pub(crate) struct EndpointState {
    /// The endpoint as written in the config.
    pub(crate) name: String,
    /// What the name resolved to, tried in order on connect.
    addresses: Vec<SocketAddr>,
    /// Requests in flight to it from this worker (least-request LB).
    active: Cell<u32>,
    /// Idle keep-alive connections, most recently used last.
    idle: RefCell<Vec<(Http1Connection, Instant)>>,
    /// HTTP/2 connections (`protocol: http2`), shared by this worker's
    /// streams to this endpoint.
    pub(crate) h2: crate::upstream::http2::Pool,
}

/// Why a connection could not be had.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// Every address refused or failed.
    Failed(std::io::Error),
    /// `connect_timeout` passed.
    Timeout,
}

impl ClusterState {
    pub(crate) fn new(config: Arc<Cluster>) -> ClusterState {
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| EndpointState {
                name: e.address.clone(),
                addresses: e.resolved.clone(),
                active: Cell::new(0),
                idle: RefCell::new(Vec::new()),
                h2: crate::upstream::http2::Pool::default(),
            })
            .collect();
        ClusterState { config, endpoints, next: Cell::new(0) }
    }

    /// Chooses an endpoint by the cluster's policy and counts a request in
    /// flight to it until the returned guard drops.
    pub(crate) fn pick(self: &Rc<Self>) -> Option<ActiveRequest> {
        let n = self.endpoints.len();
        let index = match n {
            0 => return None,
            1 => 0,
            _ => match self.config.lb {
                LbPolicy::RoundRobin => {
                    let i = self.next.get() % n;
                    self.next.set(i + 1);
                    i
                }
                // Power of two choices: two distinct random endpoints, the
                // one with fewer requests in flight wins.
                LbPolicy::LeastRequest => {
                    let a = fastrand::usize(..n);
                    let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                    if self.endpoints[b].active.get() < self.endpoints[a].active.get() { b } else { a }
                }
            },
        };
        let endpoint = &self.endpoints[index];
        endpoint.active.set(endpoint.active.get() + 1);
        Some(ActiveRequest { cluster: self.clone(), index })
    }
}

/// A request in flight to one endpoint; dropping it ends the count.
pub(crate) struct ActiveRequest {
    cluster: Rc<ClusterState>,
    index: usize,
}

impl ActiveRequest {
    pub(crate) fn endpoint(&self) -> &EndpointState {
        &self.cluster.endpoints[self.index]
    }

    /// A pooled connection if a live one is idle, else a new one.
    pub(crate) async fn connection(&self) -> Result<Http1Connection, ConnectError> {
        let idle_timeout = self.cluster.config.idle_timeout;
        let endpoint = self.endpoint();
        loop {
            let Some((conn, since)) = endpoint.idle.borrow_mut().pop() else { break };
            let fresh = idle_timeout.is_none_or(|t| since.elapsed() < t);
            if fresh && conn.is_reusable() {
                return Ok(conn);
            }
        }
        self.connect().await.map(Http1Connection::new)
    }

    /// A new TCP connection to the endpoint, within the cluster's
    /// `connect_timeout`; each address the name resolved to is tried in turn.
    pub(crate) async fn connect(&self) -> Result<TcpStream, ConnectError> {
        let timeout = self.cluster.config.connect_timeout;
        let endpoint = self.endpoint();
        let attempt = async {
            let mut last = None;
            for address in &endpoint.addresses {
                match TcpStream::connect(address).await {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        return Ok(stream);
                    }
                    Err(e) => {
                        tracing::debug!(endpoint = %endpoint.name, %address, error = %e, "upstream connect failed");
                        last = Some(e);
                    }
                }
            }
            Err(ConnectError::Failed(last.unwrap_or_else(|| std::io::Error::other("endpoint resolved to no address"))))
        };
        tokio::time::timeout(timeout, attempt).await.unwrap_or(Err(ConnectError::Timeout))
    }

    /// Returns a connection whose exchange ended cleanly to the pool.
    pub(crate) fn release(&self, conn: Http1Connection) {
        let mut idle = self.endpoint().idle.borrow_mut();
        // Bounded: a burst must not leave thousands of idle sockets behind.
        if idle.len() < 128 {
            idle.push((conn, Instant::now()));
        }
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let endpoint = &self.cluster.endpoints[self.index];
        endpoint.active.set(endpoint.active.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nuncio_config::Config;

    fn cluster(lb: &str, n: usize) -> Rc<ClusterState> {
        let endpoints: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", 10000 + i)).collect();
        let yaml = format!(
            "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    routes:\n      - match: {{}}\n        cluster: c\nclusters:\n  - name: c\n    lb: {lb}\n    endpoints: [{}]\n",
            endpoints.join(", ")
        );
        let config = Config::from_yaml(&yaml, "t.yaml").unwrap();
        Rc::new(ClusterState::new(Arc::new(config.clusters[0].clone())))
    }

    #[test]
    fn round_robin_cycles() {
        let c = cluster("round_robin", 3);
        let names: Vec<String> = (0..6).map(|_| c.pick().unwrap().endpoint().name.clone()).collect();
        assert_eq!(names[0..3], names[3..6]);
        assert_ne!(names[0], names[1]);
        assert_ne!(names[1], names[2]);
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let c = cluster("least_request", 2);
        // Hold 5 requests on whichever endpoint gets them first...
        let held: Vec<_> = (0..5).map(|_| c.pick().unwrap()).collect();
        let busy_counts: Vec<u32> = c.endpoints.iter().map(|e| e.active.get()).collect();
        assert_eq!(busy_counts.iter().sum::<u32>(), 5);
        // ...with two endpoints, P2C always compares both: it picks the less busy.
        let idle_index = if busy_counts[0] <= busy_counts[1] { 0 } else { 1 };
        for _ in 0..20 {
            let r = c.pick().unwrap();
            assert_eq!(r.index, idle_index);
        }
        drop(held);
        assert!(c.endpoints.iter().all(|e| e.active.get() == 0));
    }
}
