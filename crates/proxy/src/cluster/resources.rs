//! Circuit breakers: per-cluster limits that hold across every worker,
//! counted without a shared write on each request.
//!
//! Envoy's resource manager counts every request in a cluster-wide atomic,
//! which is one cache line every worker writes per request: the cost per
//! request then grows with the workers. Here the cluster's units are a pool
//! ([`Resources`], shared), and each worker leases them in chunks
//! ([`LocalResources`], the worker's own): a request takes a unit from its
//! worker's lease, and the pool is touched only when a lease runs out or a
//! worker holds more than it needs (it gives a chunk back). The limit still
//! holds exactly: units in use on all workers never exceed it. What changes
//! is that a breaker may open a little early, while other workers hold
//! leased units they are not using: at most two chunks a worker, and a
//! chunk is a sixteenth of the limit shared out between the workers, so at
//! most an eighth of the limit. With one worker, or a limit no bigger than
//! 16 units per worker (chunks of one: every unit goes back at once), it
//! opens exactly at the limit.

use std::cell::Cell;
use std::rc::Rc;
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

/// A cluster's units, shared by every worker (and kept across reloads
/// that leave the cluster unchanged): for each breaker with a limit, the
/// units no worker has leased.
#[derive(Debug)]
pub(crate) struct Resources {
    limits: [Option<usize>; 4],
    free: [AtomicUsize; 4],
}

impl Resources {
    pub(crate) fn new(cluster: &Cluster) -> Arc<Resources> {
        let limits = [cluster.max_connections, cluster.max_pending_requests, cluster.max_requests, cluster.max_retries];
        Arc::new(Resources { limits, free: limits.map(|limit| AtomicUsize::new(limit.unwrap_or(0))) })
    }

    /// Takes up to `want` units of breaker `i` from the pool; how many it
    /// got (none when the pool is empty).
    fn lease(&self, i: usize, want: usize) -> usize {
        let mut free = self.free[i].load(Ordering::Relaxed);
        loop {
            let take = want.min(free);
            if take == 0 {
                return 0;
            }
            match self.free[i].compare_exchange_weak(free, free - take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return take,
                Err(now) => free = now,
            }
        }
    }

    fn give_back(&self, i: usize, units: usize) {
        if units > 0 {
            self.free[i].fetch_add(units, Ordering::Relaxed);
        }
    }
}

/// One worker's leases of a cluster's units (see the module doc). Lives
/// on the worker (`Rc`, `Cell`); permits hold it, so it outlives them, and
/// what it still holds goes back to the pool when the last one is dropped.
#[derive(Debug)]
pub(crate) struct LocalResources {
    shared: Arc<Resources>,
    /// Units leased to this worker, by breaker.
    leased: [Cell<usize>; 4],
    /// Of those, units in use.
    used: [Cell<usize>; 4],
    /// Units taken from the pool at a time.
    chunk: [usize; 4],
}

impl LocalResources {
    /// This worker's leases of `shared`, on one of `workers` workers.
    pub(crate) fn new(shared: Arc<Resources>, workers: usize) -> Rc<LocalResources> {
        let per_worker = |limit: Option<usize>| limit.map_or(1, |limit| (limit / workers.max(1) / 16).max(1));
        let chunk = shared.limits.map(per_worker);
        Rc::new(LocalResources { shared, leased: Default::default(), used: Default::default(), chunk })
    }

    /// Takes one unit of `breaker`, or `Err` when the breaker is open (no
    /// unit left in this worker's lease nor in the pool). Without a limit
    /// nothing is counted.
    pub(crate) fn acquire(self: &Rc<Self>, breaker: Breaker) -> Result<Permit, Breaker> {
        let i = breaker as usize;
        if self.shared.limits[i].is_none() {
            return Ok(Permit(None));
        }
        let (leased, used) = (&self.leased[i], &self.used[i]);
        if used.get() == leased.get() {
            let got = self.shared.lease(i, self.chunk[i]);
            if got == 0 {
                return Err(breaker);
            }
            leased.set(leased.get() + got);
        }
        used.set(used.get() + 1);
        Ok(Permit(Some((self.clone(), breaker))))
    }

    fn release(&self, i: usize) {
        let (leased, used) = (&self.leased[i], &self.used[i]);
        used.set(used.get() - 1);
        // Keep up to two chunks idle: a worker whose load hovers at a
        // chunk's edge does not go to the pool on every request.
        let chunk = self.chunk[i];
        if leased.get() - used.get() >= 2 * chunk {
            self.shared.give_back(i, chunk);
            leased.set(leased.get() - chunk);
        }
        if chunk == 1 && leased.get() > used.get() {
            // Chunks of one: each unit goes back at once, so the limit is
            // exact whatever the other workers hold.
            self.shared.give_back(i, leased.get() - used.get());
            leased.set(used.get());
        }
    }
}

impl Drop for LocalResources {
    fn drop(&mut self) {
        for i in 0..4 {
            self.shared.give_back(i, self.leased[i].get() - self.used[i].get());
        }
    }
}

/// One unit of a breaker, given back to its worker's lease when dropped
/// (on that worker).
#[derive(Debug)]
pub(crate) struct Permit(Option<(Rc<LocalResources>, Breaker)>);

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((local, breaker)) = &self.0 {
            local.release(*breaker as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(max_requests: usize) -> Cluster {
        let yaml = format!(
            "listeners:
  - name: main
    address: 127.0.0.1:0
    routes: [ {{ match: {{ prefix: / }}, cluster: app }} ]
clusters:
  - name: app
    endpoints: [ '127.0.0.1:1' ]
    max_requests: {max_requests}
"
        );
        nuncio_config::Config::from_yaml(&yaml, "test.yaml").expect("a valid config").clusters.remove(0)
    }

    fn in_use(shared: &Resources) -> usize {
        shared.limits[2].unwrap() - shared.free[2].load(Ordering::Relaxed)
    }

    #[test]
    fn the_limit_holds_across_workers_and_units_come_back() {
        let shared = Resources::new(&cluster(320));
        let workers: Vec<_> = (0..4).map(|_| LocalResources::new(shared.clone(), 4)).collect();
        // 320 / 4 / 16: chunks of 5.
        assert_eq!(workers[0].chunk[2], 5);
        let mut permits = Vec::new();
        for round in 0.. {
            match workers[round % 4].acquire(Breaker::Requests) {
                Ok(permit) => permits.push(permit),
                Err(Breaker::Requests) => break,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(permits.len(), 320, "round-robin over the workers uses the whole limit");
        assert_eq!(in_use(&shared), 320);
        permits.clear();
        // Each worker keeps under two chunks idle.
        assert!(in_use(&shared) < 4 * 2 * 5, "{} units still leased", in_use(&shared));
        drop(workers);
        assert_eq!(in_use(&shared), 0, "a worker's leases go back when it lets go of the cluster");
    }

    #[test]
    fn leasing_touches_the_pool_once_per_chunk() {
        let shared = Resources::new(&cluster(1024));
        let worker = LocalResources::new(shared.clone(), 2);
        assert_eq!(worker.chunk[2], 32);
        // Steady load of 10 in flight, a request ending and a new one
        // starting: after the first lease the pool is not touched.
        let mut permits: std::collections::VecDeque<_> =
            (0..10).map(|_| worker.acquire(Breaker::Requests).unwrap()).collect();
        let leased = in_use(&shared);
        for _ in 0..1000 {
            permits.pop_front();
            permits.push_back(worker.acquire(Breaker::Requests).unwrap());
            assert_eq!(in_use(&shared), leased);
        }
    }

    #[test]
    fn small_limits_are_exact_across_workers() {
        let shared = Resources::new(&cluster(3));
        let (a, b) = (LocalResources::new(shared.clone(), 2), LocalResources::new(shared, 2));
        let one = a.acquire(Breaker::Requests).unwrap();
        let _two = a.acquire(Breaker::Requests).unwrap();
        let _three = b.acquire(Breaker::Requests).unwrap();
        assert!(b.acquire(Breaker::Requests).is_err());
        drop(one);
        // Worker a's freed unit is back in the pool at once: b gets it.
        assert!(b.acquire(Breaker::Requests).is_ok());
    }

    #[test]
    fn no_limit_counts_nothing() {
        let shared = Resources::new(&cluster(1));
        let worker = LocalResources::new(shared.clone(), 1);
        let permits: Vec<_> = (0..100).map(|_| worker.acquire(Breaker::Connections).unwrap()).collect();
        assert_eq!(permits.len(), 100);
        assert_eq!(shared.free[Breaker::Connections as usize].load(Ordering::Relaxed), 0);
    }
}
