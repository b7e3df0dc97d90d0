//! Circuit breakers: per-cluster limits counted across every worker, as
//! Envoy's resource manager does. The counts are shared atomics (the only
//! shared writes on the request path, and only for the limits a cluster
//! sets); going over a limit refuses the request at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nuncio_config::Cluster;

/// A circuit breaker of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breaker {
    /// Open upstream connections.
    Connections = 0,
    /// Requests waiting for a connection.
    PendingRequests = 1,
    /// Requests in flight.
    Requests = 2,
    /// Retries in flight.
    Retries = 3,
}

impl Breaker {
    /// The config field (and stat label) that sets it.
    pub(crate) fn name(self) -> &'static str {
        crate::stats::BREAKERS[self as usize]
    }
}

/// The counts and limits of one cluster, shared by every worker (and kept
/// across reloads that leave the cluster unchanged).
#[derive(Debug)]
pub(crate) struct Resources {
    limits: [Option<usize>; 4],
    counts: [AtomicUsize; 4],
}

impl Resources {
    pub(crate) fn new(cluster: &Cluster) -> Arc<Resources> {
        Arc::new(Resources {
            limits: [cluster.max_connections, cluster.max_pending_requests, cluster.max_requests, cluster.max_retries],
            counts: Default::default(),
        })
    }

    /// Takes one unit of `breaker`, or `None` when the breaker is open (the
    /// limit is reached). Without a limit nothing is counted: no shared write.
    pub(crate) fn acquire(self: &Arc<Self>, breaker: Breaker) -> Result<Permit, Breaker> {
        let i = breaker as usize;
        let Some(limit) = self.limits[i] else { return Ok(Permit(None)) };
        if self.counts[i].fetch_add(1, Ordering::Relaxed) >= limit {
            self.counts[i].fetch_sub(1, Ordering::Relaxed);
            return Err(breaker);
        }
        Ok(Permit(Some((self.clone(), breaker))))
    }
}

/// One unit of a breaker, given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit(Option<(Arc<Resources>, Breaker)>);

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((resources, breaker)) = &self.0 {
            resources.counts[*breaker as usize].fetch_sub(1, Ordering::Relaxed);
        }
    }
}
