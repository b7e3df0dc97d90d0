//! Overload protection (Envoy's overload manager, simplified): two
//! resources, each with two thresholds from the config's `overload`.
//!
//! - Open downstream connections, all listeners and workers together:
//!   counted as connections are accepted and closed (one shared counter
//!   written per connection, never per request).
//! - The process's resident memory, sampled on main four times a second
//!   from `/proc/self/status` (every buffer nuncio holds ends up there, and
//!   the request path pays nothing for it).
//!
//! Past either resource's `shed` threshold ([`Level::Shed`]) new requests
//! are answered `503` with `Connection: close` (HTTP/2: the stream only)
//! and `/ready` says `overloaded`; past `refuse` ([`Level::Refuse`]) new
//! connections are also closed as they are accepted. Workers read the
//! levels with plain loads when a connection or a request starts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nuncio_config::{Overload as Limits, Thresholds};

/// How often main samples the process's memory.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// How loaded nuncio is, by the worst resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Normal = 0,
    /// New requests get `503` and `Connection: close`.
    Shed = 1,
    /// New connections are closed too.
    Refuse = 2,
}

/// The resources' current levels, shared by every thread.
#[derive(Debug, Default)]
pub(crate) struct Overload {
    connections: AtomicUsize,
    /// Resident bytes at the last sample.
    memory: AtomicU64,
}

impl Overload {
    /// The level under `limits` right now.
    pub(crate) fn level(&self, limits: &Limits) -> Level {
        let connections = self.connections.load(Ordering::Relaxed) as u64;
        let memory = self.memory.load(Ordering::Relaxed);
        level(&limits.downstream_connections, connections).max(level(&limits.memory, memory))
    }

    /// A connection was accepted: counts it open, and says whether it may
    /// stay under `limits` (`false`: over the `refuse` threshold; it is
    /// uncounted, and must be closed).
    pub(crate) fn connection_opened(&self, limits: &Limits) -> bool {
        let open = self.connections.fetch_add(1, Ordering::Relaxed) as u64 + 1;
        let memory = self.memory.load(Ordering::Relaxed);
        let level = level(&limits.downstream_connections, open).max(level(&limits.memory, memory));
        if level == Level::Refuse {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// An accepted connection closed.
    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Samples the process's resident memory (main, every
    /// [`SAMPLE_EVERY`]).
    pub(crate) fn sample_memory(&self) {
        if let Some(bytes) = resident_bytes() {
            self.memory.store(bytes, Ordering::Relaxed);
        }
    }

    /// Open downstream connections and resident bytes, as last counted.
    pub(crate) fn readings(&self) -> (usize, u64) {
        (self.connections.load(Ordering::Relaxed), self.memory.load(Ordering::Relaxed))
    }
}

fn level(thresholds: &Thresholds, value: u64) -> Level {
    if thresholds.refuse.is_some_and(|t| value >= t) {
        Level::Refuse
    } else if thresholds.shed.is_some_and(|t| value >= t) {
        Level::Shed
    } else {
        Level::Normal
    }
}

/// The process's resident set size, from `/proc/self/status` (Linux; in
/// KiB there, whatever the page size).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(shed: u64, refuse: u64) -> Limits {
        Limits {
            downstream_connections: Thresholds { shed: Some(shed), refuse: Some(refuse) },
            memory: Thresholds::default(),
        }
    }

    #[test]
    fn levels_follow_the_worst_resource() {
        let overload = Overload::default();
        let limits = limits(2, 3);
        assert!(overload.connection_opened(&limits));
        assert_eq!(overload.level(&limits), Level::Normal);
        assert!(overload.connection_opened(&limits));
        assert_eq!(overload.level(&limits), Level::Shed);
        assert!(!overload.connection_opened(&limits), "the third is refused");
        assert_eq!(overload.readings().0, 2, "and not counted");
        overload.connection_closed();
        assert_eq!(overload.level(&limits), Level::Normal);
        overload.sample_memory();
        assert!(overload.readings().1 > 0, "this process has resident memory");
        let tight = Limits { memory: Thresholds { shed: Some(1), refuse: None }, ..limits };
        assert_eq!(overload.level(&tight), Level::Shed);
        assert_eq!(overload.level(&Limits::default()), Level::Normal, "no thresholds, never");
    }
}
