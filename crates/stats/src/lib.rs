//! nuncio's stats: counters, gauges and duration histograms that workers
//! update without locks and main sums when the admin asks (`/stats`,
//! `/stats/prometheus`). Envoy's model: stats are declared once, each
//! worker writes only its own copy, and the reader adds the copies up.
//!
//! # Concepts
//!
//! * **Declared on main, at config time.** A [`StatsBuilder`] declares each
//!   series (a name, a help text, fixed labels such as `cluster="api"`) and
//!   hands back a small `Copy` id: [`Counter`], [`Gauge`], [`WorkerGauge`],
//!   [`Histogram`]. [`build`](StatsBuilder::build) freezes them into
//!   [`Definitions`], shared through an `Arc`.
//! * **Written by one worker.** Each worker gets its own [`Store`] (a flat
//!   array of atomic cells, on cache lines of its own), usually through a
//!   thread-local slot. A write is a relaxed load and a relaxed store: no
//!   lock, no read-modify-write, no line shared with another writer. An id
//!   is an index into that array.
//! * **Summed on main.** [`Stats`] holds an `Arc` of every store, reads them
//!   with relaxed loads and sums them into a [`Summary`], which renders as
//!   `/stats` text ([`Summary::text`]) or Prometheus exposition
//!   ([`Summary::prometheus`]).
//!
//! # The threading rule
//!
//! * [`StatsBuilder`], [`Stats`]: main (they are plain values; main is where
//!   config and the admin live).
//! * [`Store`] writes (`inc`, `add`, `gauge_*`, `observe`): the store's
//!   worker only. A second writing thread would lose increments; debug
//!   builds panic on it. Off-worker code posts to the worker to count.
//! * [`Store`] reads, [`Summary::of`]: any thread. Every cell a counter or
//!   histogram uses only grows, so sums read one after another never go
//!   back, and a histogram's count *is* the sum of its buckets.
//!
//! # Decisions
//!
//! * **Names.** Every name gets a prefix, `nuncio_` unless the builder is
//!   made [`with_prefix`](StatsBuilder::with_prefix). Declared names are the
//!   exposed names: counters must end in `_total`; histograms measure
//!   durations and end in `_seconds`; gauges end in neither. Labels are
//!   kept sorted by name, so `/stats` and `/stats/prometheus` show the same
//!   `name{labels}`.
//! * **Per-worker values.** A [`WorkerGauge`] (e.g. the config version a
//!   worker serves) is never summed: each store shows its own value with a
//!   `worker="N"` label (the name given to [`Store::new`]). Until a worker
//!   sets it, its series is absent.
//! * **Reloads.** A reload builds new definitions and new stores; in-flight
//!   requests keep the old store as they keep the old config. [`Stats`]
//!   reads both; once main holds the last reference to the old store it
//!   folds the old counters and histograms into a carried total, so counts
//!   never drop across reloads. Old gauges are dropped (decrement on the
//!   store you incremented, and they are back to zero by then). For a
//!   per-worker gauge, the newest store of that worker that set it wins.
//! * **Histograms** keep integer nanoseconds: buckets are compared as
//!   integers and the sum is exact. `/stats` shows count, sum and the
//!   p50/p90/p99 estimated from the buckets; Prometheus gets the buckets.
//! * **Exposition is hand-written**, not `prometheus-client`'s encoder:
//!   that encoder writes OpenMetrics (`# EOF`, `# TYPE` without `_total`,
//!   its own content type), the 0.24 line the workspace pins does not
//!   escape label values (fixed in 0.25.2), and it is reached only through
//!   a `Registry` of boxed `'static` collectors rebuilt per scrape. The
//!   classic text format is a few dozen lines here and tested line by line.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use nuncio_stats::{DURATION_BUCKETS, Stats, StatsBuilder, Store};
//!
//! // Main, at config time: declare.
//! let mut b = StatsBuilder::new();
//! let ok = b.counter("downstream_rq_total", "Downstream requests by status class.", &[("class", "2xx")])?;
//! let active = b.gauge("downstream_cx_active", "Open downstream connections.", &[])?;
//! let version = b.worker_gauge("config_version", "Config version each worker serves.", &[])?;
//! let latency = b.histogram("downstream_rq_duration_seconds", "Request duration.", &[], DURATION_BUCKETS)?;
//! let defs = b.build();
//!
//! // A store per worker; main reads them all.
//! let stores = [Store::new(&defs, 0), Store::new(&defs, 1)];
//! let mut stats = Stats::new();
//! for store in &stores {
//!     stats.attach(store.clone());
//! }
//!
//! // Each worker writes its own store only.
//! std::thread::scope(|s| {
//!     for store in &stores {
//!         s.spawn(move || {
//!             store.worker_gauge_set(version, 7);
//!             store.gauge_inc(active);
//!             store.inc(ok);
//!             store.observe(latency, Duration::from_millis(3));
//!         });
//!     }
//! });
//!
//! // Main, when the admin asks.
//! let summary = stats.read();
//! assert_eq!(summary.counter("nuncio_downstream_rq_total", &[("class", "2xx")]), Some(2));
//! assert_eq!(summary.gauge("nuncio_config_version", &[("worker", "1")]), Some(7));
//! let only_rq = regex::Regex::new("^nuncio_downstream_rq_total").unwrap();
//! assert_eq!(summary.text(Some(&only_rq)), "nuncio_downstream_rq_total{class=\"2xx\"}: 2\n");
//! assert!(summary.prometheus().contains("nuncio_downstream_rq_duration_seconds_bucket{le=\"0.005\"} 2\n"));
//! # Ok::<(), nuncio_stats::Error>(())
//! ```

#![forbid(unsafe_code)]

mod define;
mod error;
mod render;
mod store;
mod summary;

pub use define::{Counter, DEFAULT_PREFIX, DURATION_BUCKETS, Definitions, Gauge, Histogram, StatsBuilder, WorkerGauge};
pub use error::Error;
pub use render::PROMETHEUS_CONTENT_TYPE;
pub use store::Store;
pub use summary::{HistogramSummary, Stats, Summary};
