use http::{HeaderMap, HeaderValue, Method};
use nuncio_config::Config;
use proptest::prelude::*;

use super::*;

fn table(yaml_routes: &str) -> RouteTable {
    let yaml = format!(
        "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    routes:\n{yaml_routes}\nclusters:\n  - name: a\n    endpoints: [127.0.0.1:1]\n  - name: b\n    endpoints: [127.0.0.1:2]\n"
    );
    let config = Config::from_yaml(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    RouteTable::new(&config.listeners[0].routes)
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, HeaderValue::from_static(v));
    }
    map
}

/// The cluster (or `direct`, or `none`) `t` picks for a request.
fn pick<'t>(t: &'t RouteTable, method: &Method, host: &str, path_and_query: &str, h: &HeaderMap) -> &'t str {
    let (path, query) = path_and_query.split_once('?').map_or((path_and_query, None), |(p, q)| (p, Some(q)));
    let request = Request { method, host, path, query, headers: h };
    match t.select(&request) {
        Some(route) => route.cluster(0).unwrap_or("direct"),
        None => "none",
    }
}

#[test]
fn first_match_wins_on_host_path_and_headers() {
    let t = table(
        "      - match: { path: /healthz }\n        direct_response: { status: 200 }\n      - match: { host: '*.example.com', prefix: /api/ }\n        cluster: a\n      - match: { prefix: /, headers: [ { name: x-canary, exact: '1' } ] }\n        cluster: b\n      - match: { prefix: / }\n        cluster: a",
    );
    let none = HeaderMap::new();
    let get = &Method::GET;
    assert_eq!(pick(&t, get, "x", "/healthz", &none), "direct");
    assert_eq!(pick(&t, get, "api.example.com:8080", "/api/v1", &none), "a");
    assert_eq!(pick(&t, get, "example.com", "/api/v1", &headers(&[("x-canary", "1")])), "b");
    assert_eq!(pick(&t, get, "other", "/x", &headers(&[("x-canary", "0"), ("x-canary", "1")])), "b");
    assert_eq!(pick(&t, get, "other", "/x", &none), "a");
}

#[test]
fn methods_query_and_regex_narrow_a_match() {
    let t = table(
        "      - match: { prefix: /api/, methods: [GET, HEAD], query: [ { name: debug, present: false } ] }\n        cluster: a\n      - match: { regex: '/v[0-9]+/users/[^/]+' }\n        cluster: b\n      - match: { prefix: /q, query: [ { name: v, exact: '2' } ] }\n        cluster: b\n      - match: {}\n        direct_response: { status: 404 }",
    );
    let h = HeaderMap::new();
    assert_eq!(pick(&t, &Method::GET, "h", "/api/x", &h), "a");
    assert_eq!(pick(&t, &Method::HEAD, "h", "/api/x?y=1", &h), "a");
    assert_eq!(pick(&t, &Method::POST, "h", "/api/x", &h), "direct", "method not listed");
    assert_eq!(pick(&t, &Method::GET, "h", "/api/x?debug", &h), "direct", "debug present (no value)");
    assert_eq!(pick(&t, &Method::GET, "h", "/api/x?a=1&debug=0", &h), "direct");
    assert_eq!(pick(&t, &Method::GET, "h", "/v12/users/ann", &h), "b");
    assert_eq!(pick(&t, &Method::GET, "h", "/v12/users/ann/posts", &h), "direct", "the regex matches whole paths");
    assert_eq!(pick(&t, &Method::GET, "h", "/q?v=1&v=2", &h), "b", "any one of a repeated parameter");
    assert_eq!(pick(&t, &Method::GET, "h", "/q?v=22", &h), "direct");
}

#[test]
fn weighted_clusters_split_by_weight() {
    let t = table(
        "      - match: {}\n        weighted_clusters: [ { cluster: a, weight: 90 }, { cluster: b, weight: 10 } ]",
    );
    let h = HeaderMap::new();
    let request = Request { method: &Method::GET, host: "h", path: "/", query: None, headers: &h };
    let route = t.select(&request).unwrap();
    let mut counts = [0; 2];
    for pick in 0..1000u64 {
        counts[usize::from(route.cluster(pick) == Some("b"))] += 1;
    }
    assert_eq!(counts, [900, 100]);
}

#[test]
fn nothing_matches_gives_none() {
    let t = table("      - match: { path: /only }\n        cluster: a");
    assert_eq!(pick(&t, &Method::GET, "h", "/other", &HeaderMap::new()), "none");
}

/// One route for the property test: a path match and, sometimes, a method
/// and a host, as YAML.
fn route() -> impl Strategy<Value = String> {
    let path = prop_oneof![
        Just(String::new()),
        "/[ab]{0,3}".prop_map(|p| format!("path: '{p}'")),
        "/[ab]{0,3}".prop_map(|p| format!("prefix: '{p}'")),
        Just("regex: '/a.*'".to_owned()),
        Just("regex: '/[ab]b'".to_owned()),
    ];
    let extra = prop_oneof![Just(""), Just(", methods: [GET]"), Just(", host: x")];
    let cluster = prop_oneof![Just("a"), Just("b")];
    (path, extra, cluster).prop_map(|(path, extra, cluster)| {
        let comma = if path.is_empty() { extra.trim_start_matches(", ").to_owned() } else { format!("{path}{extra}") };
        format!("      - match: {{ {comma} }}\n        cluster: {cluster}")
    })
}

proptest! {
    /// The index picks what a scan in file order picks, for every request.
    #[test]
    fn the_index_picks_what_a_scan_picks(
        routes in proptest::collection::vec(route(), 9..40),
        paths in proptest::collection::vec("/[ab]{0,4}", 1..20),
    ) {
        let t = table(&routes.join("\n"));
        prop_assert!(t.index.is_some(), "big enough to be indexed");
        let h = HeaderMap::new();
        for path in &paths {
            for (method, host) in [(&Method::GET, "x"), (&Method::POST, "y")] {
                let request = Request { method, host, path, query: None, headers: &h };
                let indexed = t.select(&request).map(|r| r as *const CompiledRoute);
                let scanned = t.routes.iter().find(|r| r.matches(&request)).map(|r| r as *const CompiledRoute);
                prop_assert_eq!(indexed, scanned, "{} {} {}", method, host, path);
            }
        }
    }
}
