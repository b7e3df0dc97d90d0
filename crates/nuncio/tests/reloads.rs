//! Reloads do not grow the process: each config reload gives every thread
//! a stats store of its own, and the stores of snapshots no thread serves
//! any more are freed at the next reload, whether or not anyone reads
//! `/stats` (they used to pile up until the next read: 7–16 KB a reload
//! per thread, for ever on a process nobody scrapes).

use nuncio_test_support::{Admin, Process, Scratch, Upstream, exchange};

const NUNCIO: &str = env!("CARGO_BIN_EXE_nuncio");

fn reload(nuncio: &Process, n: usize) {
    for _ in 0..n {
        let reply =
            exchange(nuncio.admin(), "POST /config/reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

#[test]
fn unread_stats_stores_do_not_pile_up_across_reloads() {
    let scratch = Scratch::new("reloads");
    let upstream = Upstream::echo("app");
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: app
clusters:
  - name: app
    endpoints: [ '{}' ]
",
        upstream.addr
    );
    let path = scratch.write("nuncio.yaml", &yaml);
    // `info`: the test learns the addresses from the readiness lines.
    let nuncio = Process::start(NUNCIO, &["-c", &path, "--log-level", "info"]);
    // Warm up: allocator pools and the reload machinery reach their size.
    reload(&nuncio, 100);
    let before = nuncio.rss_kib();
    reload(&nuncio, 500);
    let after = nuncio.rss_kib();
    let grown = after.saturating_sub(before);
    // Unfolded stores alone would be 500 × 3 threads × 7 KB or more.
    assert!(grown < 2048, "500 reloads grew RSS by {grown} KiB ({before} → {after} KiB)");
    // And the counts survive the folding.
    let reloads: u64 = nuncio.stat("nuncio_config_reload_total").expect("a reload counter").parse().unwrap();
    assert!(reloads >= 600, "{reloads} reloads counted");
}
