//! Route selection with 10,000 routes: the index (exact paths by hash,
//! prefixes by trie) against the scan in file order that the first wave
//! did, for a request that matches one of the last routes and one that
//! matches none.
//!
//! `cargo bench -p nuncio-router --bench select`

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use nuncio_config::Config;
use nuncio_router::{Request, RouteTable};

/// A listener with `n` routes: exact paths and prefixes, one per service,
/// then a regex and a catch-all.
fn config(n: usize) -> Config {
    let mut yaml = String::from("listeners:\n  - name: l\n    address: 127.0.0.1:0\n    routes:\n");
    for i in 0..n / 2 {
        yaml.push_str(&format!(
            "      - match: {{ path: /svc{i}/health }}\n        direct_response: {{ status: 200 }}\n"
        ));
        yaml.push_str(&format!("      - match: {{ prefix: /svc{i}/, methods: [GET] }}\n        cluster: app\n"));
    }
    yaml.push_str("      - match: { regex: '/v[0-9]+/users/[^/]+' }\n        cluster: app\n");
    yaml.push_str("clusters:\n  - name: app\n    endpoints: [127.0.0.1:1]\n");
    Config::from_yaml(&yaml, "bench.yaml").expect("a valid config")
}

fn select(c: &mut Criterion) {
    let big = config(10_000);
    let routes = &big.listeners[0].routes;
    let table = RouteTable::new(routes);
    let headers = HeaderMap::new();
    let late = Request { method: &Method::GET, host: "h", path: "/svc4990/items/7", query: None, headers: &headers };
    let none = Request { path: "/nothing/here", ..late };
    let mut group = c.benchmark_group("select_10k_routes");
    group.bench_function("index_late_match", |b| b.iter(|| table.select(std::hint::black_box(&late)).is_some()));
    group.bench_function("index_no_match", |b| b.iter(|| table.select(std::hint::black_box(&none)).is_some()));
    // The first wave's way: every route in file order.
    group.bench_function("scan_late_match", |b| {
        b.iter(|| routes.iter().position(|r| r.matcher.path.matches(std::hint::black_box(late.path))));
    });
    group.finish();

    let small = config(6);
    let small = RouteTable::new(&small.listeners[0].routes);
    let first = Request { path: "/svc1/x", ..late };
    c.bench_function("select_6_routes_scanned", |b| b.iter(|| small.select(std::hint::black_box(&first)).is_some()));
}

criterion_group!(benches, select);
criterion_main!(benches);
