//! One worker's values: a flat array of atomic cells that only that worker
//! writes.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::define::{Counter, Definitions, Gauge, Histogram, Kind, WorkerGauge};

/// What a per-worker gauge's cell holds until the worker sets it, so the
/// reader can tell "not set yet" from 0 (see [`Store::worker_gauge_set`]).
pub(crate) const UNSET: i64 = i64::MIN;

const CELLS_PER_LINE: usize = 16;

/// 128 bytes, aligned to 128: a store's cells never share a cache line
/// (nor the adjacent line the CPU prefetches with it) with another
/// allocation, so one worker's writes never evict another's.
#[repr(align(128))]
struct Line([AtomicU64; CELLS_PER_LINE]);

/// One worker's stats: a cell per counter and gauge, buckets and a sum per
/// histogram, laid out from one [`Definitions`].
///
/// # Threading
///
/// **One writer**: only the worker that owns a store writes to it (through
/// a thread-local slot, typically). A write is then a relaxed load and a
/// relaxed store to a cache line no other thread writes: no lock, no
/// atomic read-modify-write, no contention. Two threads writing one store
/// would lose increments (never memory safety): debug builds panic on the
/// second writing thread. Work off the worker posts back to count.
///
/// **Any reader**: main reads every store with relaxed loads and sums them
/// ([`Stats`](crate::Stats), [`Summary::of`](crate::Summary::of)). Each
/// cell only grows (counters, buckets, sums), so successive reads never go
/// back; a histogram's count is the sum of its buckets, so `+Inf` always
/// equals the count.
pub struct Store {
    defs: Arc<Definitions>,
    worker: String,
    lines: Box<[Line]>,
    /// The thread that first wrote, to catch a second writer.
    #[cfg(debug_assertions)]
    writer: std::sync::OnceLock<u64>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("worker", &self.worker).field("cells", &self.defs.cells).finish_non_exhaustive()
    }
}

impl Store {
    /// A zeroed store for the worker named `worker` (its `worker` label on
    /// per-worker gauges: `0`, `1`, … or `main`). Any thread; give the
    /// result to the worker and an `Arc` clone to main's
    /// [`Stats`](crate::Stats).
    pub fn new(defs: &Arc<Definitions>, worker: impl fmt::Display) -> Arc<Store> {
        let lines = (0..defs.cells.div_ceil(CELLS_PER_LINE))
            .map(|_| Line([const { AtomicU64::new(0) }; CELLS_PER_LINE]))
            .collect();
        let store = Store {
            defs: defs.clone(),
            worker: worker.to_string(),
            lines,
            #[cfg(debug_assertions)]
            writer: std::sync::OnceLock::new(),
        };
        for series in defs.series.iter().filter(|s| s.family.kind == Kind::WorkerGauge) {
            store.cell(series.cell).store(UNSET.cast_unsigned(), Relaxed);
        }
        Arc::new(store)
    }

    /// The worker this store belongs to.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// The definitions this store is laid out from.
    pub fn definitions(&self) -> &Arc<Definitions> {
        &self.defs
    }

    /// Adds one to `counter`. Owning worker only.
    #[inline]
    pub fn inc(&self, counter: Counter) {
        self.add(counter, 1);
    }

    /// Adds `n` to `counter`. Owning worker only.
    #[inline]
    pub fn add(&self, counter: Counter, n: u64) {
        let cell = self.write(counter.cell, counter.defs);
        cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds one to this worker's share of `gauge`. Owning worker only.
    #[inline]
    pub fn gauge_inc(&self, gauge: Gauge) {
        self.gauge_add(gauge, 1);
    }

    /// Takes one from this worker's share of `gauge`. Owning worker only.
    #[inline]
    pub fn gauge_dec(&self, gauge: Gauge) {
        self.gauge_add(gauge, -1);
    }

    /// Adds `delta` (may be negative) to this worker's share of `gauge`.
    /// Owning worker only.
    ///
    /// Decrement on the store you incremented: a connection that keeps the
    /// store it opened with (as it keeps its config snapshot) stays right
    /// across config reloads.
    #[inline]
    pub fn gauge_add(&self, gauge: Gauge, delta: i64) {
        let cell = self.write(gauge.cell, gauge.defs);
        // Two's complement: adding `delta as u64` wraps to the signed sum.
        cell.store(cell.load(Relaxed).wrapping_add(delta.cast_unsigned()), Relaxed);
    }

    /// Sets this worker's share of `gauge` (the reader still sums the
    /// workers' shares). Owning worker only.
    #[inline]
    pub fn gauge_set(&self, gauge: Gauge, value: i64) {
        self.write(gauge.cell, gauge.defs).store(value.cast_unsigned(), Relaxed);
    }

    /// Sets this worker's value of a per-worker gauge. Owning worker only.
    /// `i64::MIN` reads back as "not set" (the series is left out).
    #[inline]
    pub fn worker_gauge_set(&self, gauge: WorkerGauge, value: i64) {
        self.write(gauge.cell, gauge.defs).store(value.cast_unsigned(), Relaxed);
    }

    /// Records one duration in `histogram`: a bucket (a binary search over
    /// integer nanosecond bounds) and the sum. Owning worker only.
    #[inline]
    pub fn observe(&self, histogram: Histogram, elapsed: Duration) {
        self.check(histogram.defs);
        let def = &self.defs.histograms[histogram.index as usize];
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // Upper bounds are inclusive (Prometheus `le`): the first bound >= ns.
        let bucket = def.bounds_ns.partition_point(|&bound| bound < ns);
        let count = self.cell(def.cell + bucket);
        count.store(count.load(Relaxed).wrapping_add(1), Relaxed);
        let sum = self.cell(def.cell + def.bounds_ns.len() + 1);
        sum.store(sum.load(Relaxed).saturating_add(ns), Relaxed);
    }

    /// A cell's current value; any thread.
    #[inline]
    pub(crate) fn load(&self, cell: usize) -> u64 {
        self.cell(cell).load(Relaxed)
    }

    #[inline]
    fn cell(&self, cell: usize) -> &AtomicU64 {
        // `cell % 16 < 16`: only the line index is bounds-checked.
        &self.lines[cell / CELLS_PER_LINE].0[cell % CELLS_PER_LINE]
    }

    #[inline]
    fn write(&self, cell: u32, defs: u32) -> &AtomicU64 {
        self.check(defs);
        self.cell(cell as usize)
    }

    /// Debug builds only: the id belongs to these definitions, and this
    /// thread is the store's one writer.
    #[inline]
    fn check(&self, defs: u32) {
        debug_assert_eq!(defs, self.defs.id, "nuncio-stats: an id used with a store of other definitions");
        #[cfg(debug_assertions)]
        {
            let me = writer_id();
            let writer = *self.writer.get_or_init(|| me);
            assert_eq!(
                writer, me,
                "nuncio-stats: store of worker `{}` written from a second thread; only its worker may write it \
                 (post the update to that worker)",
                self.worker
            );
        }
    }
}

/// A number for the calling thread, for [`Store::check`]. Not
/// `thread::current().id()`: that clones the thread's handle, an `Arc`
/// the spawning thread allocated, and the debug build would then write a
/// line shared with main on every count (which the shared-writes check,
/// crates/nuncio/tests/shared_writes.rs, would rightly report).
#[cfg(debug_assertions)]
fn writer_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    std::thread_local! {
        static ID: u64 = NEXT.fetch_add(1, Relaxed);
    }
    ID.with(|id| *id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StatsBuilder;

    #[test]
    fn buckets_are_inclusive_upper_bounds_and_the_sum_is_exact() {
        let mut b = StatsBuilder::new();
        let h = b.histogram("d_seconds", "", &[], &[0.001, 0.01]).unwrap();
        let defs = b.build();
        let store = Store::new(&defs, 0);
        for ms in [0, 1, 2, 10, 11, 5000] {
            store.observe(h, Duration::from_millis(ms));
        }
        let cells: Vec<u64> = (0..4).map(|c| store.load(c)).collect();
        assert_eq!(cells, [2, 2, 2, 5_024_000_000], "≤1ms: 0,1; ≤10ms: 2,10; +Inf: 11,5000; sum in ns");
    }

    #[test]
    fn gauges_go_both_ways() {
        let mut b = StatsBuilder::new();
        let g = b.gauge("cx_active", "", &[]).unwrap();
        let store = Store::new(&b.build(), 0);
        store.gauge_dec(g);
        store.gauge_dec(g);
        store.gauge_inc(g);
        assert_eq!(store.load(0).cast_signed(), -1);
        store.gauge_add(g, 10);
        assert_eq!(store.load(0).cast_signed(), 9);
        store.gauge_set(g, -3);
        assert_eq!(store.load(0).cast_signed(), -3);
    }

    #[test]
    fn stores_do_not_share_cache_lines() {
        assert_eq!(size_of::<Line>(), 128);
        assert_eq!(align_of::<Line>(), 128);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "written from a second thread")]
    fn a_second_writer_is_caught_in_debug_builds() {
        let mut b = StatsBuilder::new();
        let c = b.counter("rq_total", "", &[]).unwrap();
        let store = Store::new(&b.build(), 0);
        let other = store.clone();
        std::thread::spawn(move || other.inc(c)).join().unwrap();
        store.inc(c);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "other definitions")]
    fn an_id_of_other_definitions_is_caught_in_debug_builds() {
        let mut a = StatsBuilder::new();
        let c = a.counter("rq_total", "", &[]).unwrap();
        let mut b = StatsBuilder::new();
        b.counter("rq_total", "", &[]).unwrap();
        Store::new(&b.build(), 0).inc(c);
    }
}
