//! Load balancing: which usable endpoint gets the next request. Every
//! policy honours endpoint `weight`. Per worker, so plain `Cell`s.

use std::cell::{Cell, RefCell};
use std::hash::{DefaultHasher, Hash, Hasher};

use nuncio_config::{Cluster, LbPolicy};

/// Virtual nodes per unit of weight on the hash ring: enough for an even
/// spread over a few dozen endpoints, small enough to build in microseconds.
const RING_POINTS_PER_WEIGHT: u32 = 100;

/// A cluster's balancer on one worker.
pub(crate) struct Balancer {
    policy: LbPolicy,
    weights: Vec<u32>,
    /// Smooth weighted round robin (nginx's): each endpoint's current weight.
    current: RefCell<Vec<i64>>,
    ring: Option<std::sync::Arc<Ring>>,
}

impl Balancer {
    pub(crate) fn new(cluster: &Cluster, ring: Option<std::sync::Arc<Ring>>) -> Balancer {
        let weights: Vec<u32> = cluster.endpoints.iter().map(|e| e.weight.max(1)).collect();
        Balancer { policy: cluster.lb, current: RefCell::new(vec![0; weights.len()]), weights, ring }
    }

    /// The endpoint for the next request among those `usable`, `None` when
    /// none is. `active` is each endpoint's requests in flight; `hash` the
    /// request's hash for `ring_hash` (`None`: a random endpoint).
    pub(crate) fn choose(&self, usable: &[bool], active: &[Cell<u32>], hash: Option<u64>) -> Option<usize> {
        let count = usable.iter().filter(|u| **u).count();
        if count <= 1 {
            return usable.iter().position(|u| *u);
        }
        match self.policy {
            LbPolicy::RoundRobin => Some(self.round_robin(usable)),
            LbPolicy::LeastRequest => Some(self.least_request(usable, active, count)),
            LbPolicy::Random => Some(self.random(usable)),
            LbPolicy::RingHash => match (hash, &self.ring) {
                (Some(hash), Some(ring)) => ring.lookup(hash, usable),
                _ => Some(self.random(usable)),
            },
        }
    }

    /// nginx's smooth weighted round robin: with equal weights, plain
    /// rotation; with 5:1:1, `a a b a c a a` rather than `a a a a a b c`.
    fn round_robin(&self, usable: &[bool]) -> usize {
        let mut current = self.current.borrow_mut();
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, weight) in self.weights.iter().enumerate() {
            if !usable[i] {
                continue;
            }
            current[i] += i64::from(*weight);
            total += i64::from(*weight);
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best.expect("at least two usable endpoints");
        current[best] -= total;
        best
    }

    /// Power of two choices: two distinct random usable endpoints, the one
    /// with fewer requests in flight per unit of weight wins.
    fn least_request(&self, usable: &[bool], active: &[Cell<u32>], count: usize) -> usize {
        let a = fastrand::usize(..count);
        let b = (a + 1 + fastrand::usize(..count - 1)) % count;
        let nth = |n: usize| usable.iter().enumerate().filter(|(_, u)| **u).nth(n).map(|(i, _)| i).unwrap_or(0);
        let (a, b) = (nth(a), nth(b));
        // active[b] / w[b] < active[a] / w[a], without division.
        let load = |x: usize, y: usize| u64::from(active[x].get()) * u64::from(self.weights[y]);
        if load(b, a) < load(a, b) { b } else { a }
    }

    /// Weighted random.
    fn random(&self, usable: &[bool]) -> usize {
        let total: u64 = self.weights.iter().zip(usable).filter(|(_, u)| **u).map(|(w, _)| u64::from(*w)).sum();
        let mut pick = fastrand::u64(..total);
        for (i, weight) in self.weights.iter().enumerate() {
            if !usable[i] {
                continue;
            }
            if pick < u64::from(*weight) {
                return i;
            }
            pick -= u64::from(*weight);
        }
        usable.iter().rposition(|u| *u).unwrap_or(0)
    }
}

/// A consistent-hash ring over a cluster's endpoints: a request's hash maps
/// to the same endpoint on every worker, and removing an endpoint moves only
/// the keys it had. Built once per cluster config on main, shared.
#[derive(Debug)]
pub(crate) struct Ring {
    /// (point, endpoint index), sorted by point.
    points: Vec<(u64, usize)>,
}

impl Ring {
    pub(crate) fn new(cluster: &Cluster) -> Ring {
        let mut points = Vec::new();
        for (index, endpoint) in cluster.endpoints.iter().enumerate() {
            for replica in 0..endpoint.weight.max(1) * RING_POINTS_PER_WEIGHT {
                points.push((hash_of(&(endpoint.address.as_str(), replica)), index));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The first usable endpoint at or after `hash` on the ring.
    fn lookup(&self, hash: u64, usable: &[bool]) -> Option<usize> {
        let start = self.points.partition_point(|(point, _)| *point < hash);
        let after = self.points[start..].iter();
        let before = self.points[..start].iter();
        after.chain(before).map(|(_, index)| *index).find(|index| usable[*index])
    }
}

/// A stable 64-bit hash (the same on every worker and every run).
pub(crate) fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nuncio_config::Config;

    fn cluster(lb: &str, endpoints: &str) -> Cluster {
        let hash = if lb == "ring_hash" { "\n    hash_on: { header: x-user }" } else { "" };
        let yaml = format!(
            "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    routes:\n      - match: {{}}\n        cluster: c\nclusters:\n  - name: c\n    lb: {lb}{hash}\n    endpoints: {endpoints}\n"
        );
        Config::from_yaml(&yaml, "t.yaml").unwrap().clusters.remove(0)
    }

    fn idle(n: usize) -> Vec<Cell<u32>> {
        (0..n).map(|_| Cell::new(0)).collect()
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves() {
        let c = cluster(
            "round_robin",
            "[ { address: '127.0.0.1:1', weight: 5 }, { address: '127.0.0.1:2', weight: 1 }, { address: '127.0.0.1:3', weight: 1 } ]",
        );
        let b = Balancer::new(&c, None);
        let picks: Vec<usize> = (0..7).map(|_| b.choose(&[true; 3], &idle(3), None).unwrap()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn unusable_endpoints_are_skipped_by_every_policy() {
        for lb in ["round_robin", "least_request", "random", "ring_hash"] {
            let c = cluster(lb, "[ '127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3' ]");
            let ring = (lb == "ring_hash").then(|| std::sync::Arc::new(Ring::new(&c)));
            let b = Balancer::new(&c, ring);
            for i in 0..50u64 {
                let pick = b.choose(&[true, false, true], &idle(3), Some(hash_of(&i))).unwrap();
                assert_ne!(pick, 1, "{lb}");
            }
            assert_eq!(b.choose(&[false; 3], &idle(3), None), None, "{lb}");
        }
    }

    #[test]
    fn weighted_random_follows_the_weights() {
        let c = cluster("random", "[ { address: '127.0.0.1:1', weight: 3 }, '127.0.0.1:2' ]");
        let b = Balancer::new(&c, None);
        let first = (0..4000).filter(|_| b.choose(&[true, true], &idle(2), None) == Some(0)).count();
        // Expected 3000; a 6-sigma band around it.
        assert!((2830..=3170).contains(&first), "{first}");
    }

    #[test]
    fn the_ring_moves_only_the_keys_of_a_removed_endpoint() {
        let c = cluster("ring_hash", "[ '127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3', '127.0.0.1:4' ]");
        let ring = Ring::new(&c);
        let keys: Vec<u64> = (0..2000u64).map(|k| hash_of(&k)).collect();
        let before: Vec<usize> = keys.iter().map(|k| ring.lookup(*k, &[true; 4]).unwrap()).collect();
        let after: Vec<usize> = keys.iter().map(|k| ring.lookup(*k, &[true, true, false, true]).unwrap()).collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != 2 {
                assert_eq!(a, b, "a key not on the removed endpoint stays");
            }
        }
        // And the keys spread over all four.
        for i in 0..4 {
            let share = before.iter().filter(|b| **b == i).count();
            assert!((300..=700).contains(&share), "endpoint {i}: {share} of 2000");
        }
    }
}
