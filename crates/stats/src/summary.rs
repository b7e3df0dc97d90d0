//! Reading on main: summing the workers' stores into a [`Summary`], and
//! [`Stats`], which also keeps the counts of stores that were replaced.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::define::{self, Definitions, Kind, Labels};
use crate::store::{Store, UNSET};

/// Main's view of every worker's store: attach each store as it is made,
/// [`read`](Stats::read) to sum them. Main thread (the admin) only.
///
/// Config reloads replace stores (new clusters, new series), and a store
/// stays in use until the last request holding it ends. `Stats` reads each
/// attached store while anyone else holds it; on the first read after main
/// holds the last reference, nobody can write it any more, so its counters
/// and histograms are folded into a carried total and the store is let go.
/// Counts therefore never go back across reloads, and the counters of a
/// series that no longer exists (a removed cluster) stay at their last
/// value for the life of the `Stats`. A retired store's gauges are
/// dropped: they described connections and workers that are gone.
#[derive(Debug, Default)]
pub struct Stats {
    live: Vec<Arc<Store>>,
    retired: Summary,
    /// The same, per worker (the name the store was made with).
    retired_by_worker: BTreeMap<String, Summary>,
}

impl Stats {
    /// No stores yet.
    pub fn new() -> Stats {
        Stats::default()
    }

    /// Starts reading `store`: a clone of the `Arc` its worker gets. Attach
    /// in creation order (for a per-worker gauge, the newest store of a
    /// worker that set it wins), and while something else still holds the
    /// store (a store only `Stats` holds is retired on the next read).
    /// Attaching a store twice is a no-op.
    pub fn attach(&mut self, store: Arc<Store>) {
        if !self.live.iter().any(|s| Arc::ptr_eq(s, &store)) {
            self.live.push(store);
        }
    }

    /// How many stores are read live (attached and not yet retired).
    pub fn live_stores(&self) -> usize {
        self.live.len()
    }

    /// Sums every store, after retiring those only `Stats` still holds.
    pub fn read(&mut self) -> Summary {
        self.retire();
        let mut summary = self.retired.clone();
        summary.add(&self.live, true);
        summary
    }

    /// What each worker counted: the stores of each worker name (`0`, `1`,
    /// …, `main`, or any other name a store was made with) summed apart,
    /// retired ones included, so a worker's counters never go back across
    /// reloads either. For per-worker rates (the admin's live page).
    pub fn read_by_worker(&mut self) -> BTreeMap<String, Summary> {
        self.retire();
        let mut by_worker = self.retired_by_worker.clone();
        for store in &self.live {
            by_worker.entry(store.worker().to_owned()).or_default().add(std::slice::from_ref(store), true);
        }
        by_worker
    }

    /// Folds the stores only `Stats` still holds into the carried totals
    /// and frees them. [`read`](Self::read) does it first; a process that
    /// makes stores often (each config reload does) calls it between reads
    /// too, so that unread stores do not pile up.
    pub fn retire(&mut self) {
        let mut retiring = Vec::new();
        self.live.retain_mut(|store| {
            // `get_mut` succeeds only with no other `Arc` or `Weak`, and it
            // synchronises with their drops: every write is visible.
            if Arc::get_mut(store).is_none() {
                return true;
            }
            retiring.push(store.clone());
            false
        });
        self.retired.add(&retiring, false);
        for store in &retiring {
            self.retired_by_worker
                .entry(store.worker().to_owned())
                .or_default()
                .add(std::slice::from_ref(store), false);
        }
    }
}

/// Every stat summed over the stores it was read from, ready to render
/// ([`text`](Summary::text), [`prometheus`](Summary::prometheus)) or to
/// look up (tests, health decisions). Names are full names, prefix
/// included.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub(crate) families: BTreeMap<String, Family>,
}

#[derive(Debug, Clone)]
pub(crate) struct Family {
    pub(crate) help: String,
    pub(crate) kind: Kind,
    pub(crate) series: BTreeMap<Labels, Value>,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Counter(u64),
    Gauge(i64),
    Histogram(HistogramSummary),
}

/// A histogram summed over workers.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSummary {
    bounds: Arc<[f64]>,
    /// Per bucket, not cumulative; the last is `+Inf`.
    counts: Vec<u64>,
    sum_ns: u64,
}

impl Summary {
    /// Sums `stores` once; [`Stats::read`] does this and carries the counts
    /// of retired stores. Any thread.
    pub fn of(stores: &[Arc<Store>]) -> Summary {
        let mut summary = Summary::default();
        summary.add(stores, true);
        summary
    }

    /// A counter's total, e.g. `counter("nuncio_downstream_rq_total",
    /// &[("class", "2xx")])`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        match self.get(name, labels)? {
            Value::Counter(v) => Some(*v),
            _ => None,
        }
    }

    /// A gauge's total, or one worker's per-worker gauge (pass its
    /// `("worker", "N")` label).
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<i64> {
        match self.get(name, labels)? {
            Value::Gauge(v) => Some(*v),
            _ => None,
        }
    }

    /// A per-worker gauge's value for each worker that set it, as
    /// `(worker, value)` (series with other labels are left out).
    pub fn worker_gauges(&self, name: &str) -> Vec<(String, i64)> {
        let Some(family) = self.families.get(name) else { return Vec::new() };
        family
            .series
            .iter()
            .filter_map(|(labels, value)| match (labels.as_slice(), value) {
                ([(key, worker)], Value::Gauge(v)) if key == "worker" => Some((worker.clone(), *v)),
                _ => None,
            })
            .collect()
    }

    /// A histogram's buckets, count and sum.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<&HistogramSummary> {
        match self.get(name, labels)? {
            Value::Histogram(h) => Some(h),
            _ => None,
        }
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Value> {
        let mut labels: Labels = labels.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect();
        labels.sort();
        self.families.get(name)?.series.get(&labels)
    }

    /// Adds `stores`' values. `live: false` means retired stores: only what
    /// accumulates (counters, histograms) is kept.
    ///
    /// Stores of the same definitions are first summed cell by cell (plain
    /// loads into a `Vec`), so the keyed maps are walked once per
    /// definitions, not once per worker.
    fn add(&mut self, stores: &[Arc<Store>], live: bool) {
        let mut groups: Vec<(&Arc<Definitions>, Vec<u64>)> = Vec::new();
        for store in stores {
            let defs = store.definitions();
            let index = match groups.iter().position(|(d, _)| Arc::ptr_eq(d, defs)) {
                Some(index) => index,
                None => {
                    groups.push((defs, vec![0; defs.cells]));
                    groups.len() - 1
                }
            };
            for (cell, total) in groups[index].1.iter_mut().enumerate() {
                *total = total.wrapping_add(store.load(cell));
            }
        }
        for (defs, cells) in &groups {
            self.add_cells(defs, cells, live);
        }
        if live {
            // In attach order: a newer store of a worker overwrites.
            for store in stores {
                self.add_worker_gauges(store);
            }
        }
    }

    /// Adds cells summed over stores of `defs` (per-worker gauges aside).
    fn add_cells(&mut self, defs: &Definitions, cells: &[u64], live: bool) {
        for series in &defs.series {
            let def = &series.family;
            if def.kind == Kind::WorkerGauge || (!live && def.kind == Kind::Gauge) {
                continue;
            }
            let Some(family) = self.family(def) else { continue };
            let raw = cells[series.cell];
            match def.kind {
                Kind::Counter => {
                    if let Value::Counter(total) = entry(&mut family.series, &series.labels, || Value::Counter(0)) {
                        *total = total.wrapping_add(raw);
                    }
                }
                Kind::Gauge => {
                    if let Value::Gauge(total) = entry(&mut family.series, &series.labels, || Value::Gauge(0)) {
                        *total = total.wrapping_add(raw.cast_signed());
                    }
                }
                Kind::WorkerGauge => {}
                Kind::Histogram => {
                    let width = def.bounds.len() + 1;
                    let total = entry(&mut family.series, &series.labels, || {
                        Value::Histogram(HistogramSummary {
                            bounds: def.bounds.clone(),
                            counts: vec![0; width],
                            sum_ns: 0,
                        })
                    });
                    if let Value::Histogram(total) = total
                        && (Arc::ptr_eq(&total.bounds, &def.bounds) || total.bounds == def.bounds)
                    {
                        for (count, raw) in total.counts.iter_mut().zip(&cells[series.cell..]) {
                            *count = count.wrapping_add(*raw);
                        }
                        total.sum_ns = total.sum_ns.saturating_add(cells[series.cell + width]);
                    }
                }
            }
        }
    }

    /// Adds `store`'s per-worker gauges that its worker has set.
    fn add_worker_gauges(&mut self, store: &Store) {
        for series in store.definitions().series.iter().filter(|s| s.family.kind == Kind::WorkerGauge) {
            let value = store.load(series.cell).cast_signed();
            if value == UNSET {
                continue;
            }
            let Some(family) = self.family(&series.family) else { continue };
            let mut labels = series.labels.clone();
            labels.push(("worker".to_owned(), store.worker().to_owned()));
            labels.sort();
            family.series.insert(labels, Value::Gauge(value));
        }
    }

    /// `def`'s family, made on first sight (looked up first: names are
    /// cloned once per summary). `None` if the name was seen with another
    /// kind: a family must keep its kind across definitions, and values
    /// that do not fit are left out.
    fn family(&mut self, def: &define::Family) -> Option<&mut Family> {
        if !self.families.contains_key(&def.name) {
            let family = Family { help: def.help.clone(), kind: def.kind, series: BTreeMap::new() };
            self.families.insert(def.name.clone(), family);
        }
        self.families.get_mut(&def.name).filter(|f| f.kind == def.kind)
    }
}

/// `series[labels]`, inserted with `init` (and a clone of `labels`) only if
/// missing.
fn entry<'a>(series: &'a mut BTreeMap<Labels, Value>, labels: &Labels, init: impl FnOnce() -> Value) -> &'a mut Value {
    if !series.contains_key(labels) {
        series.insert(labels.clone(), init());
    }
    series.get_mut(labels).expect("inserted above")
}

impl HistogramSummary {
    /// How many durations were observed (equals the `+Inf` bucket).
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their sum, in seconds (kept in whole nanoseconds).
    pub fn sum(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// Cumulative buckets as Prometheus shows them: `(le, count of
    /// observations <= le)`, ascending, the last `le` being `+Inf`.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
        bounds.zip(self.counts.iter().scan(0u64, |acc, c| {
            *acc += c;
            Some(*acc)
        }))
    }

    /// The `q`-quantile (0 ≤ q ≤ 1) estimated as Prometheus'
    /// `histogram_quantile` does: linear within the bucket it falls in,
    /// the highest finite bound if it falls in `+Inf`, NaN when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        let count = self.count();
        if count == 0 || !(0.0..=1.0).contains(&q) {
            return f64::NAN;
        }
        let rank = q * count as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (i, &n) in self.counts.iter().enumerate() {
            let Some(&upper) = self.bounds.get(i) else { break };
            if n > 0 && (below + n) as f64 >= rank {
                return lower + (upper - lower) * (rank - below as f64) / n as f64;
            }
            below += n;
            lower = upper;
        }
        lower
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::StatsBuilder;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = HistogramSummary { bounds: Arc::from([1.0, 2.0, 4.0]), counts: vec![0, 10, 10, 0], sum_ns: 0 };
        assert_eq!(h.quantile(0.5), 2.0);
        assert_eq!(h.quantile(0.25), 1.5);
        assert_eq!(h.quantile(0.75), 3.0);
        let h = HistogramSummary { bounds: Arc::from([1.0]), counts: vec![1, 3], sum_ns: 0 };
        assert_eq!(h.quantile(0.99), 1.0, "in +Inf: the highest finite bound");
        assert_eq!(h.buckets().collect::<Vec<_>>(), [(1.0, 1), (f64::INFINITY, 4)]);
        assert!(HistogramSummary { bounds: Arc::from([1.0]), counts: vec![0, 0], sum_ns: 0 }.quantile(0.5).is_nan());
    }

    #[test]
    fn workers_are_summed_except_per_worker_gauges() {
        let mut b = StatsBuilder::new();
        let rq = b.counter("rq_total", "", &[("cluster", "a")]).unwrap();
        let active = b.gauge("cx_active", "", &[]).unwrap();
        let version = b.worker_gauge("config_version", "", &[]).unwrap();
        let latency = b.histogram("rq_duration_seconds", "", &[], &[0.01]).unwrap();
        let defs = b.build();
        let stores = [Store::new(&defs, 0), Store::new(&defs, 1), Store::new(&defs, 2)];
        for (i, store) in stores.iter().enumerate() {
            store.add(rq, 10);
            store.gauge_add(active, 2);
            store.observe(latency, Duration::from_millis(6 * i as u64));
        }
        stores[0].worker_gauge_set(version, 7);
        stores[1].worker_gauge_set(version, 8);

        let s = Summary::of(&stores);
        assert_eq!(s.counter("nuncio_rq_total", &[("cluster", "a")]), Some(30));
        assert_eq!(s.gauge("nuncio_cx_active", &[]), Some(6));
        assert_eq!(s.gauge("nuncio_config_version", &[("worker", "0")]), Some(7));
        assert_eq!(s.gauge("nuncio_config_version", &[("worker", "1")]), Some(8));
        assert_eq!(s.gauge("nuncio_config_version", &[("worker", "2")]), None, "never set");
        let h = s.histogram("nuncio_rq_duration_seconds", &[]).unwrap();
        assert_eq!((h.count(), h.sum()), (3, 0.018));
        assert_eq!(h.buckets().collect::<Vec<_>>(), [(0.01, 2), (f64::INFINITY, 3)]);
        assert_eq!(s.counter("nuncio_cx_active", &[]), None, "wrong kind");
    }

    #[test]
    fn each_worker_is_read_apart() {
        let mut b = StatsBuilder::new();
        let rq = b.counter("rq_total", "", &[]).unwrap();
        let version = b.worker_gauge("config_version", "", &[]).unwrap();
        let defs = b.build();
        let (w0, w1) = (Store::new(&defs, 0), Store::new(&defs, 1));
        let mut stats = Stats::new();
        stats.attach(w0.clone());
        stats.attach(w1.clone());
        w0.add(rq, 3);
        w1.add(rq, 5);
        w1.worker_gauge_set(version, 2);
        let by_worker = stats.read_by_worker();
        assert_eq!(by_worker.keys().collect::<Vec<_>>(), ["0", "1"]);
        assert_eq!(by_worker["0"].counter("nuncio_rq_total", &[]), Some(3));
        assert_eq!(by_worker["1"].counter("nuncio_rq_total", &[]), Some(5));
        assert_eq!(by_worker["1"].gauge("nuncio_config_version", &[("worker", "1")]), Some(2));
        assert_eq!(stats.read().counter("nuncio_rq_total", &[]), Some(8));
    }

    #[test]
    fn retired_stores_carry_counts_but_not_gauges() {
        let mut b = StatsBuilder::new();
        let rq = b.counter("rq_total", "", &[]).unwrap();
        let active = b.gauge("cx_active", "", &[]).unwrap();
        let version = b.worker_gauge("config_version", "", &[]).unwrap();
        let old_defs = b.build();
        let mut stats = Stats::new();
        let old = Store::new(&old_defs, 0);
        stats.attach(old.clone());
        stats.attach(old.clone());
        old.add(rq, 5);
        old.gauge_inc(active);
        old.worker_gauge_set(version, 1);

        // A reload: new definitions (one more counter), a new store.
        let mut b = StatsBuilder::new();
        let rq2 = b.counter("rq_total", "", &[]).unwrap();
        let new_rq = b.counter("rq_new_total", "", &[]).unwrap();
        let active2 = b.gauge("cx_active", "", &[]).unwrap();
        let version2 = b.worker_gauge("config_version", "", &[]).unwrap();
        let new = Store::new(&b.build(), 0);
        stats.attach(new.clone());
        let s = stats.read();
        assert_eq!(s.gauge("nuncio_config_version", &[("worker", "0")]), Some(1), "the new store is not set yet");
        new.worker_gauge_set(version2, 2);
        new.inc(rq2);
        new.inc(new_rq);
        new.gauge_inc(active2);
        let s = stats.read();
        assert_eq!(s.counter("nuncio_rq_total", &[]), Some(6));
        assert_eq!(s.gauge("nuncio_cx_active", &[]), Some(2), "both stores are live");
        assert_eq!(s.gauge("nuncio_config_version", &[("worker", "0")]), Some(2), "the newest store wins");

        let by_worker = stats.read_by_worker();
        assert_eq!(by_worker["0"].counter("nuncio_rq_total", &[]), Some(6));
        drop(old); // the last request on the old config ends
        assert_eq!(stats.read_by_worker()["0"].counter("nuncio_rq_total", &[]), Some(6), "carried for the worker");
        let s = stats.read();
        assert_eq!(stats.live_stores(), 1);
        assert_eq!(s.counter("nuncio_rq_total", &[]), Some(6), "carried");
        assert_eq!(s.counter("nuncio_rq_new_total", &[]), Some(1));
        assert_eq!(s.gauge("nuncio_cx_active", &[]), Some(1), "the retired store's gauge is dropped");
        assert_eq!(s.gauge("nuncio_config_version", &[("worker", "0")]), Some(2));
        assert_eq!(stats.read().counter("nuncio_rq_total", &[]), Some(6), "folded once");
    }
}
