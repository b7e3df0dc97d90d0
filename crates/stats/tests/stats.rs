//! Stats with real threads: workers write their own stores while main reads,
//! stores are replaced as on config reloads, and the Prometheus output is
//! checked line by line against the exposition format.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::Duration;

use nuncio_stats::{Stats, StatsBuilder, Store, Summary};

const WORKERS: usize = 4;
const ROUNDS: u64 = 50_000;
const BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.0015];

/// The `k`-th observation of a worker: 0 to 1.999 ms, so every bucket and
/// `+Inf` get some.
fn latency(k: u64) -> Duration {
    Duration::from_micros(k % 2000)
}

#[test]
fn sums_read_while_workers_write_never_go_back_and_end_exact() {
    let mut b = StatsBuilder::new();
    let ok = b.counter("downstream_rq_total", "Requests.", &[("class", "2xx")]).unwrap();
    let bytes = b.counter("downstream_bytes_total", "Bytes.", &[]).unwrap();
    let active = b.gauge("downstream_cx_active", "Open connections.", &[]).unwrap();
    let version = b.worker_gauge("config_version", "Config version per worker.", &[]).unwrap();
    let duration = b.histogram("downstream_rq_duration_seconds", "Duration.", &[], BUCKETS).unwrap();
    let defs = b.build();
    let stores: Vec<Arc<Store>> = (0..WORKERS).map(|w| Store::new(&defs, w)).collect();

    let done = AtomicBool::new(false);
    // The reader reads once before anyone writes, then all run together.
    let start = Barrier::new(WORKERS + 1);
    let (reads, last) = thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0u64;
            let mut before = (0, 0, Vec::new());
            loop {
                // `done` first: a read that starts after it is true sees every write.
                let finished = done.load(Ordering::Acquire);
                let summary = Summary::of(&stores);
                let rq = summary.counter("nuncio_downstream_rq_total", &[("class", "2xx")]).unwrap();
                let sent = summary.counter("nuncio_downstream_bytes_total", &[]).unwrap();
                let h = summary.histogram("nuncio_downstream_rq_duration_seconds", &[]).unwrap();
                let buckets: Vec<u64> = h.buckets().map(|(_, n)| n).collect();
                assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "cumulative: {buckets:?}");
                assert_eq!(buckets.last(), Some(&h.count()), "+Inf is the count");
                assert!(rq >= before.0 && sent >= before.1, "a counter went back: {before:?}, then {rq} {sent}");
                assert!(buckets.iter().zip(&before.2).all(|(now, then)| now >= then), "a bucket went back");
                before = (rq, sent, buckets);
                reads += 1;
                if reads == 1 {
                    start.wait();
                }
                if finished {
                    return (reads, summary);
                }
            }
        });
        let writers: Vec<_> = stores
            .iter()
            .map(|store| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    for k in 0..ROUNDS {
                        store.gauge_inc(active);
                        store.inc(ok);
                        store.add(bytes, 3);
                        store.observe(duration, latency(k));
                        store.gauge_dec(active);
                    }
                    store.worker_gauge_set(version, 42);
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        done.store(true, Ordering::Release);
        reader.join().unwrap()
    });

    assert!(reads > 1, "the reader read before and after the writes");
    let n = WORKERS as u64 * ROUNDS;
    assert_eq!(last.counter("nuncio_downstream_rq_total", &[("class", "2xx")]), Some(n));
    assert_eq!(last.counter("nuncio_downstream_bytes_total", &[]), Some(3 * n));
    assert_eq!(last.gauge("nuncio_downstream_cx_active", &[]), Some(0));
    for w in 0..WORKERS {
        assert_eq!(last.gauge("nuncio_config_version", &[("worker", &w.to_string())]), Some(42));
    }
    let h = last.histogram("nuncio_downstream_rq_duration_seconds", &[]).unwrap();
    let expected_ns: u64 = (0..ROUNDS).map(|k| latency(k).as_nanos() as u64).sum::<u64>() * WORKERS as u64;
    assert_eq!(h.count(), n);
    assert_eq!(h.sum(), expected_ns as f64 / 1e9);
    let expected: Vec<(f64, u64)> = BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .map(|le| (le, (0..ROUNDS).filter(|&k| latency(k).as_secs_f64() <= le).count() as u64 * WORKERS as u64))
        .collect();
    assert_eq!(h.buckets().collect::<Vec<_>>(), expected);
    check_exposition(&last.prometheus());
}

/// Each worker gets a new store per config generation, writes it and lets
/// it go; main reads all along. Retired stores are folded in, so totals
/// never drop and end exact.
#[test]
fn counts_survive_store_replacement_under_concurrency() {
    const GENERATIONS: u64 = 3;
    let mut stats = Stats::new();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut inboxes = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (tx, rx) = mpsc::channel::<(Arc<Store>, nuncio_stats::Counter)>();
        let done = done_tx.clone();
        inboxes.push(tx);
        workers.push(thread::spawn(move || {
            for (store, rq) in rx {
                for _ in 0..ROUNDS {
                    store.inc(rq);
                }
                drop(store); // the last request on this config ends
                done.send(()).unwrap();
            }
        }));
    }

    let mut last = 0;
    for generation in 0..GENERATIONS {
        // A reload: new definitions (one cluster more each time).
        let mut b = StatsBuilder::new();
        let mut rq = None;
        for cluster in 0..=generation {
            let id = b.counter("upstream_rq_total", "Upstream requests.", &[("cluster", &cluster.to_string())]);
            rq.get_or_insert(id.unwrap());
        }
        let defs = b.build();
        for (w, inbox) in inboxes.iter().enumerate() {
            let store = Store::new(&defs, w);
            stats.attach(store.clone());
            inbox.send((store, rq.unwrap())).unwrap();
        }
        let mut finished = 0;
        while finished < WORKERS {
            let now = stats.read().counter("nuncio_upstream_rq_total", &[("cluster", "0")]).unwrap();
            assert!(now >= last, "went back from {last} to {now}");
            last = now;
            finished += done_rx.try_iter().count();
        }
    }
    drop(inboxes);
    for worker in workers {
        worker.join().unwrap();
    }
    let summary = stats.read();
    assert_eq!(stats.live_stores(), 0, "every store was retired");
    let total = WORKERS as u64 * ROUNDS * GENERATIONS;
    assert_eq!(summary.counter("nuncio_upstream_rq_total", &[("cluster", "0")]), Some(total));
    assert_eq!(summary.counter("nuncio_upstream_rq_total", &[("cluster", "2")]), Some(0));
    check_exposition(&summary.prometheus());
}

#[test]
fn exposition_is_valid_with_awkward_label_values() {
    let mut b = StatsBuilder::new();
    let awkward = ["plain", "quo\"te", "back\\slash", "new\nline", "ünïcode", ""];
    let mut ids = Vec::new();
    for value in awkward {
        let labels = [("cluster", value)];
        ids.push((
            b.counter("upstream_rq_total", "Upstream requests.\nSecond line \\ done.", &labels).unwrap(),
            b.gauge("upstream_cx_active", "Open upstream connections.", &labels).unwrap(),
            b.histogram("upstream_rq_duration_seconds", "Upstream duration.", &labels, BUCKETS).unwrap(),
        ));
    }
    b.worker_gauge("config_version", "Config version.", &[]).unwrap();
    let defs = b.build();
    let stores = [Store::new(&defs, 0), Store::new(&defs, "main")];
    for (i, &(rq, cx, duration)) in ids.iter().enumerate() {
        stores[0].add(rq, i as u64);
        stores[1].gauge_add(cx, -(i as i64));
        stores[1].observe(duration, latency(i as u64 * 400));
    }
    let text = Summary::of(&stores).prometheus();
    let parsed = check_exposition(&text);
    for value in awkward {
        assert!(parsed.contains(&("nuncio_upstream_rq_total".to_owned(), value.to_owned())), "{value:?}");
    }
}

/// Checks `text` line by line against the Prometheus text format (0.0.4)
/// and nuncio's conventions, panicking on the first violation; returns the
/// `(name, cluster label)` pairs of the samples it read.
fn check_exposition(text: &str) -> HashSet<(String, String)> {
    let mut helped = HashSet::new();
    let mut typed = HashSet::new();
    let mut family: Option<(String, String)> = None;
    let mut last_help: Option<String> = None;
    // Histogram series (labels without `le`) → (last le, last cumulative count).
    let mut buckets: HashMap<String, (f64, u64)> = HashMap::new();
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut seen = HashSet::new();
    assert!(text.ends_with('\n'), "ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(helped.insert(name.to_owned()), "HELP twice for {name}");
            last_help = Some(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_eq!(last_help.take().as_deref(), Some(name), "HELP right before TYPE");
            assert!(typed.insert(name.to_owned()), "TYPE twice for {name}");
            assert!(is_name(name), "metric name {name:?}");
            assert!(name.starts_with("nuncio_"), "{name} has the prefix");
            match kind {
                "counter" => assert!(name.ends_with("_total"), "counter {name} ends in _total"),
                "histogram" => assert!(name.ends_with("_seconds"), "histogram {name} ends in _seconds"),
                "gauge" => assert!(!name.ends_with("_total"), "gauge {name} does not end in _total"),
                other => panic!("unexpected type {other}"),
            }
            check_histograms_closed(&mut buckets, &mut counts);
            family = Some((name.to_owned(), kind.to_owned()));
        } else {
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let (name, labels, value) = parse_sample(line);
            let (family, kind) = family.as_ref().expect("a sample after its TYPE");
            let value_f64 = match value.as_str() {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse::<f64>().unwrap_or_else(|_| panic!("value {v:?} in {line:?}")),
            };
            let mut keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
            let le = labels.iter().find(|(k, _)| k == "le").map(|(_, v)| v.clone());
            let series: Vec<String> =
                labels.iter().filter(|(k, _)| k != "le").map(|(k, v)| format!("{k}={v:?}")).collect();
            let series = series.join(",");
            keys.dedup();
            assert_eq!(keys.len(), labels.len(), "no label twice in {line:?}");
            if kind == "histogram" {
                if name == format!("{family}_bucket") {
                    let le = le.expect("a bucket has le");
                    let le = if le == "+Inf" { f64::INFINITY } else { le.parse().expect("le is a float") };
                    let count = value.parse::<u64>().expect("bucket counts are integers");
                    let (last_le, last_count) = buckets.get(&series).copied().unwrap_or((f64::NEG_INFINITY, 0));
                    assert!(le > last_le, "le ascending in {line:?}");
                    assert!(count >= last_count, "cumulative in {line:?}");
                    assert_eq!(labels.last().map(|(k, _)| k.as_str()), Some("le"), "le last");
                    buckets.insert(series, (le, count));
                } else if name == format!("{family}_count") {
                    let count = value.parse::<u64>().expect("count is an integer");
                    assert!(counts.insert(series, count).is_none(), "_count once");
                } else {
                    assert_eq!(name, format!("{family}_sum"), "histogram sample names");
                    assert!(value_f64 >= 0.0);
                }
            } else {
                assert_eq!(&name, family, "a {kind}'s samples carry its name");
                assert!(le.is_none());
            }
            let cluster = labels.iter().find(|(k, _)| k == "cluster").map(|(_, v)| v.clone()).unwrap_or_default();
            seen.insert((name, cluster));
        }
    }
    check_histograms_closed(&mut buckets, &mut counts);
    assert!(last_help.is_none(), "a HELP without its TYPE");
    seen
}

/// Every histogram series of the family just read ended in `+Inf`, equal
/// to its `_count`.
fn check_histograms_closed(buckets: &mut HashMap<String, (f64, u64)>, counts: &mut HashMap<String, u64>) {
    for (series, (le, count)) in buckets.drain() {
        assert_eq!(le, f64::INFINITY, "{series}: the last bucket is +Inf");
        assert_eq!(counts.remove(&series), Some(count), "{series}: +Inf equals _count");
    }
    assert!(counts.is_empty(), "a _count without buckets: {counts:?}");
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `name{k="v",…} value`, with label values unescaped.
fn parse_sample(line: &str) -> (String, Vec<(String, String)>, String) {
    let end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value in {line:?}"));
    let name = &line[..end];
    assert!(is_name(name), "sample name {name:?}");
    let mut labels = Vec::new();
    let mut rest = &line[end..];
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("label in {line:?}"));
            assert!(is_name(key), "label name {key:?}");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let close = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, '\n')) | None => panic!("unterminated label value in {line:?}"),
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            rest = &after[close + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else {
                rest = rest.strip_prefix('}').unwrap_or_else(|| panic!("labels end with }} in {line:?}"));
                break;
            }
        }
    }
    let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("one space before the value in {line:?}"));
    assert!(!value.contains(' '), "no timestamp, one value in {line:?}");
    (name.to_owned(), labels, value.to_owned())
}
