//! An idle keep-alive connection is small: between requests a client
//! connection's task holds the socket and the wait for its next bytes, and
//! nothing of a request (the per-request work is one boxed future, freed
//! when the request ends; the read buffer goes back to the worker's pool).
//!
//! Measured the way `bench/idle_memory.py` does: resident memory with N
//! idle connections, each having served one request, against the same
//! process at rest. On this debug build a connection costs ~1.2 KiB (the
//! release build 0.86 KiB a connection more from 4,000 to 8,000,
//! `docs/benchmarks.md`); awaiting the
//! request's future in the connection's own task instead of boxing it
//! measured 7.4 KiB here.

use nuncio_test_support::{Client, Process, Scratch, Upstream};

const NUNCIO: &str = env!("CARGO_BIN_EXE_nuncio");

/// Connections held: few enough for a 1,024 file descriptor limit.
const IDLE: usize = 400;

/// The bound per idle connection, in KiB.
const LIMIT_KIB: f64 = 1.5;

#[test]
fn an_idle_keep_alive_connection_costs_little_memory() {
    let scratch = Scratch::new("idle-connections");
    let upstream = Upstream::echo("app");
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
workers: 1
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
    let addr = nuncio.listener("main");

    // Warm up: the upstream pool, the read buffer pool and the allocator's
    // pages for request-sized objects reach their size, and go quiet.
    let mut warm: Vec<Client> = (0..16).map(|_| Client::connect(addr)).collect();
    for _ in 0..20 {
        for client in &mut warm {
            assert_eq!(client.get("/warm").status, 200);
        }
    }
    drop(warm);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let rest = nuncio.rss_kib();

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut client = Client::connect(addr);
        assert_eq!(client.get("/").status, 200);
        idle.push(client);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let loaded = nuncio.rss_kib();
    let per_connection = loaded.saturating_sub(rest) as f64 / IDLE as f64;
    eprintln!("{IDLE} idle connections: {rest} → {loaded} KiB, {per_connection:.2} KiB each");
    assert!(
        per_connection <= LIMIT_KIB,
        "an idle keep-alive connection costs {per_connection:.2} KiB (limit {LIMIT_KIB}): {rest} → {loaded} KiB"
    );

    // They are alive, not closed: each carries another request.
    for client in idle.iter_mut().take(10) {
        assert_eq!(client.get("/again").status, 200);
    }
}
