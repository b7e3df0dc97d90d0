//! Declaring stats on main: the builder, the ids it hands out and the
//! immutable definitions every worker's [`Store`](crate::Store) is laid out
//! from.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Error;

/// The prefix [`StatsBuilder::new`] puts before every name.
pub const DEFAULT_PREFIX: &str = "nuncio_";

/// Bucket upper bounds (seconds) for request and connect durations: 0.5 ms
/// to 30 s, about ×2.5 apart, so p50 and p99 of a local service and of a
/// slow one both land between two close bounds. 15 bounds plus `+Inf`.
pub const DURATION_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Tells apart the ids of different builders, so that (in debug builds) an
/// id used with a store of other definitions is caught at once.
static NEXT_DEFINITIONS: AtomicU32 = AtomicU32::new(1);

/// A counter's id: which cell of a [`Store`](crate::Store) to bump. Copy it
/// freely; it is only valid with stores of the definitions that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Counter {
    pub(crate) cell: u32,
    pub(crate) defs: u32,
}

/// A gauge's id: each worker keeps its own value, the reader sums them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gauge {
    pub(crate) cell: u32,
    pub(crate) defs: u32,
}

/// A per-worker gauge's id: each worker's value is shown on its own with a
/// `worker` label and never summed (e.g. the config version it serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerGauge {
    pub(crate) cell: u32,
    pub(crate) defs: u32,
}

/// A duration histogram's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Histogram {
    pub(crate) index: u32,
    pub(crate) defs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    WorkerGauge,
    Histogram,
}

/// Label pairs, sorted by name: one canonical order, so the same series
/// declared with its labels in another order is the same series.
pub(crate) type Labels = Vec<(String, String)>;

/// One Prometheus family: every series of one name.
#[derive(Debug, PartialEq)]
pub(crate) struct Family {
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) kind: Kind,
    /// Bucket upper bounds in seconds; empty unless a histogram.
    pub(crate) bounds: Arc<[f64]>,
}

/// One series: a family and its label values, at `cell` in every store.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) family: Arc<Family>,
    pub(crate) labels: Labels,
    pub(crate) cell: usize,
}

/// What `observe` needs, without touching the family: where the cells are
/// and the bounds in nanoseconds (an integer compare per bound).
#[derive(Debug)]
pub(crate) struct HistogramDef {
    pub(crate) cell: usize,
    pub(crate) bounds_ns: Box<[u64]>,
}

/// Declares stats, on main at config time; [`build`](StatsBuilder::build)
/// freezes them into [`Definitions`].
///
/// Names get the builder's prefix and must follow Prometheus conventions:
/// counters end in `_total`, histograms measure durations and end in
/// `_seconds`, gauges end in neither. Declaring a series again (same name,
/// kind, help and labels) returns the same id, so two components may both
/// declare what they count.
#[derive(Debug)]
pub struct StatsBuilder {
    id: u32,
    prefix: String,
    families: HashMap<String, Arc<Family>>,
    /// Full name and labels → the id's index (a cell, or a histogram index).
    declared: HashMap<(String, Labels), u32>,
    series: Vec<Series>,
    histograms: Vec<HistogramDef>,
    cells: usize,
}

impl Default for StatsBuilder {
    fn default() -> Self {
        StatsBuilder::new()
    }
}

impl StatsBuilder {
    /// A builder whose names start with [`DEFAULT_PREFIX`] (`nuncio_`).
    pub fn new() -> StatsBuilder {
        StatsBuilder::with_prefix(DEFAULT_PREFIX)
    }

    /// A builder whose names start with `prefix` (may be empty; it is
    /// checked as part of each full name).
    pub fn with_prefix(prefix: &str) -> StatsBuilder {
        StatsBuilder {
            id: NEXT_DEFINITIONS.fetch_add(1, Ordering::Relaxed),
            prefix: prefix.to_owned(),
            families: HashMap::new(),
            declared: HashMap::new(),
            series: Vec::new(),
            histograms: Vec::new(),
            cells: 0,
        }
    }

    /// Declares a counter: a count that only goes up, summed over workers.
    /// `name` must end in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)]) -> Result<Counter, Error> {
        let cell = self.declare(name, help, Kind::Counter, labels, &[])?;
        Ok(Counter { cell, defs: self.id })
    }

    /// Declares a gauge: a value that goes up and down (open connections),
    /// each worker's share summed when read.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)]) -> Result<Gauge, Error> {
        let cell = self.declare(name, help, Kind::Gauge, labels, &[])?;
        Ok(Gauge { cell, defs: self.id })
    }

    /// Declares a per-worker gauge: each worker sets its own value, shown as
    /// one series per worker with a `worker` label (so `worker` may not be
    /// one of `labels`). For values that make no sense summed, like the
    /// config version each worker serves.
    pub fn worker_gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)]) -> Result<WorkerGauge, Error> {
        let cell = self.declare(name, help, Kind::WorkerGauge, labels, &[])?;
        Ok(WorkerGauge { cell, defs: self.id })
    }

    /// Declares a duration histogram with `buckets` as upper bounds in
    /// seconds (`+Inf` is implied). `name` must end in `_seconds`; `le` and
    /// `quantile` are reserved label names.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        buckets: &[f64],
    ) -> Result<Histogram, Error> {
        let index = self.declare(name, help, Kind::Histogram, labels, buckets)?;
        Ok(Histogram { index, defs: self.id })
    }

    /// Freezes the declarations. Workers' stores are laid out from the
    /// result ([`Store::new`](crate::Store::new)).
    pub fn build(self) -> Arc<Definitions> {
        Arc::new(Definitions { id: self.id, series: self.series, histograms: self.histograms, cells: self.cells })
    }

    fn declare(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[(&str, &str)],
        bounds: &[f64],
    ) -> Result<u32, Error> {
        let name = format!("{}{name}", self.prefix);
        check_name(&name, kind)?;
        let labels = check_labels(&name, kind, labels)?;
        let bounds_ns = if kind == Kind::Histogram { Some(check_buckets(&name, bounds)?) } else { None };
        let family = match self.families.get(&name) {
            Some(family) if family.kind != kind || family.help != help || *family.bounds != *bounds => {
                return Err(Error::Conflict { name });
            }
            Some(family) => family.clone(),
            None => {
                let family =
                    Arc::new(Family { name: name.clone(), help: help.to_owned(), kind, bounds: bounds.into() });
                self.families.insert(name.clone(), family.clone());
                family
            }
        };
        let key = (name, labels);
        if let Some(&id) = self.declared.get(&key) {
            return Ok(id);
        }
        let cell = self.cells;
        let id = if let Some(bounds_ns) = bounds_ns {
            self.cells += bounds_ns.len() + 2; // buckets, the `+Inf` bucket, the sum
            self.histograms.push(HistogramDef { cell, bounds_ns });
            self.histograms.len() - 1
        } else {
            self.cells += 1;
            cell
        };
        // Ids are u32 to keep them small; four billion cells is far past any
        // config (and past memory: each worker's store would be 32 GiB).
        let id = u32::try_from(id).expect("fewer than 2^32 stats");
        self.series.push(Series { family, labels: key.1.clone(), cell });
        self.declared.insert(key, id);
        Ok(id)
    }
}

/// Every declared stat, frozen: shared (`Arc`) by all stores laid out from
/// it and by the reader. Safe from any thread.
#[derive(Debug)]
pub struct Definitions {
    pub(crate) id: u32,
    pub(crate) series: Vec<Series>,
    pub(crate) histograms: Vec<HistogramDef>,
    /// Cells in each store: one a counter or gauge, buckets + 2 a histogram.
    pub(crate) cells: usize,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_name(name: &str, kind: Kind) -> Result<(), Error> {
    let reason = if !is_name(name) {
        "names are ASCII letters, digits and `_`, not starting with a digit"
    } else if name.starts_with("__") {
        "names starting with `__` are reserved by Prometheus"
    } else if kind == Kind::Counter && !name.ends_with("_total") {
        "a counter's name ends in `_total`"
    } else if kind == Kind::Histogram && !name.ends_with("_seconds") {
        "histograms measure durations: the name ends in `_seconds`"
    } else if kind != Kind::Counter && name.ends_with("_total") {
        "only counters end in `_total`"
    } else if matches!(kind, Kind::Gauge | Kind::WorkerGauge)
        && ["_bucket", "_count", "_sum"].iter().any(|suffix| name.ends_with(suffix))
    {
        "`_bucket`, `_count` and `_sum` name a histogram's series"
    } else {
        return Ok(());
    };
    Err(Error::Name { name: name.to_owned(), reason })
}

fn check_labels(name: &str, kind: Kind, labels: &[(&str, &str)]) -> Result<Labels, Error> {
    let mut sorted: Labels = labels.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect();
    sorted.sort();
    for (i, (label, _)) in sorted.iter().enumerate() {
        let reason = if !is_name(label) {
            "label names are ASCII letters, digits and `_`, not starting with a digit"
        } else if label.starts_with("__") {
            "label names starting with `__` are reserved by Prometheus"
        } else if i > 0 && sorted[i - 1].0 == *label {
            "given twice"
        } else if kind == Kind::Histogram && (label == "le" || label == "quantile") {
            "`le` and `quantile` are reserved for a histogram's buckets and quantiles"
        } else if kind == Kind::WorkerGauge && label == "worker" {
            "a per-worker gauge gets its `worker` label from the store"
        } else {
            continue;
        };
        return Err(Error::Label { name: name.to_owned(), label: label.clone(), reason });
    }
    Ok(sorted)
}

fn check_buckets(name: &str, bounds: &[f64]) -> Result<Box<[u64]>, Error> {
    let error = || Error::Buckets { name: name.to_owned() };
    if bounds.is_empty() || bounds.iter().any(|b| !b.is_finite() || *b < 0.0) {
        return Err(error());
    }
    // Saturates past ~584 years, which no bound needs.
    let ns: Box<[u64]> = bounds.iter().map(|b| (b * 1e9).round() as u64).collect();
    if ns.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(error());
    }
    Ok(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventions_are_enforced() {
        let mut b = StatsBuilder::new();
        assert!(matches!(b.counter("rq", "", &[]), Err(Error::Name { .. })));
        assert!(matches!(b.gauge("rq_total", "", &[]), Err(Error::Name { .. })));
        assert!(matches!(b.gauge("endpoints_count", "", &[]), Err(Error::Name { .. })));
        assert!(matches!(b.histogram("rq_duration", "", &[], DURATION_BUCKETS), Err(Error::Name { .. })));
        assert!(matches!(StatsBuilder::with_prefix("").counter("9rq_total", "", &[]), Err(Error::Name { .. })));
        assert!(matches!(b.counter("rq-x_total", "", &[]), Err(Error::Name { .. })));
        assert!(matches!(StatsBuilder::with_prefix("__").counter("rq_total", "", &[]), Err(Error::Name { .. })));
        assert!(matches!(StatsBuilder::with_prefix("a.b_").counter("rq_total", "", &[]), Err(Error::Name { .. })));
        assert!(StatsBuilder::with_prefix("").counter("rq_total", "", &[]).is_ok());
    }

    #[test]
    fn labels_are_checked() {
        let mut b = StatsBuilder::new();
        let label = |r: Result<Counter, Error>| match r {
            Err(Error::Label { label, .. }) => label,
            other => panic!("expected a label error, got {other:?}"),
        };
        assert_eq!(label(b.counter("a_total", "", &[("1x", "v")])), "1x");
        assert_eq!(label(b.counter("a_total", "", &[("__x", "v")])), "__x");
        assert_eq!(label(b.counter("a_total", "", &[("x", "1"), ("x", "2")])), "x");
        assert!(matches!(b.histogram("d_seconds", "", &[("le", "1")], &[1.0]), Err(Error::Label { .. })));
        assert!(matches!(b.worker_gauge("v", "", &[("worker", "0")]), Err(Error::Label { .. })));
        // Any value is fine: values are escaped when rendered.
        assert!(b.counter("a_total", "", &[("cluster", "a\"b\\c\nd")]).is_ok());
    }

    #[test]
    fn buckets_are_checked() {
        let mut b = StatsBuilder::new();
        for bad in [&[][..], &[1.0, 1.0], &[2.0, 1.0], &[-1.0], &[f64::INFINITY], &[f64::NAN], &[1e-12, 2e-12]] {
            assert!(matches!(b.histogram("d_seconds", "", &[], bad), Err(Error::Buckets { .. })), "{bad:?}");
        }
    }

    #[test]
    fn redeclaring_returns_the_same_id_and_conflicts_are_refused() {
        let mut b = StatsBuilder::new();
        let a = b.counter("rq_total", "Requests.", &[("cluster", "a"), ("class", "2xx")]).unwrap();
        let again = b.counter("rq_total", "Requests.", &[("class", "2xx"), ("cluster", "a")]).unwrap();
        let other = b.counter("rq_total", "Requests.", &[("class", "5xx"), ("cluster", "a")]).unwrap();
        assert_eq!(a, again);
        assert_ne!(a, other);
        assert!(matches!(b.counter("rq_total", "Other help.", &[]), Err(Error::Conflict { .. })));
        let h = b.histogram("d_seconds", "D.", &[], &[0.1, 1.0]).unwrap();
        assert_eq!(b.histogram("d_seconds", "D.", &[], &[0.1, 1.0]).unwrap(), h);
        assert!(matches!(b.histogram("d_seconds", "D.", &[("x", "y")], &[0.5]), Err(Error::Conflict { .. })));
        let defs = b.build();
        assert_eq!(defs.cells, 2 + 4);
        assert_eq!(defs.series.len(), 3);
    }
}
