//! Stats and the admin endpoints that show them, read after real traffic:
//! `/stats` has exact counts for a known sequence of requests (summed over
//! workers) and filters by regex; `/stats/prometheus` is valid exposition
//! (parsed by the `prometheus-parse` crate) with the same values; gauges
//! follow open connections; `/clusters` and `/config_dump?format=json`
//! describe what runs.

use std::net::SocketAddr;

use nuncio_test_support::{
    Admin, Control, Proxy, RawClient, Upstream, dead_address, get, get_in_background, wait_until,
};
use prometheus_parse::{Sample, Scrape, Value};

/// Two workers; `/app` goes to cluster `app` (`app`), `/down` to cluster
/// `down` (nothing listens there), anything else has no route.
fn start(app: SocketAddr) -> Proxy {
    Proxy::start(
        "
workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: { prefix: /app }
        cluster: app
      - match: { prefix: /down }
        cluster: down
clusters:
  - name: app
    endpoints: [ '{app}' ]
  - name: down
    endpoints: [ '{down}' ]
",
        &[("app", app), ("down", dead_address())],
    )
}

/// 3 forwarded 200s, 1 no-route 404 and 1 upstream-down 503, each on a
/// connection of its own; returns once `/stats` counts all 5.
fn known_sequence(proxy: &Proxy) {
    for _ in 0..3 {
        assert_eq!(get(proxy.addr(), "/app").status, 200);
    }
    assert_eq!(get(proxy.addr(), "/nope").status, 404);
    assert_eq!(get(proxy.addr(), "/down").status, 503);
    // Workers count a request just after writing its response.
    proxy.wait_for_stats(&["nuncio_downstream_rq_total: 5"]);
}

#[test]
fn stats_count_a_known_sequence_of_requests_over_every_worker() {
    let app = Upstream::echo("app");
    let proxy = start(app.addr);

    known_sequence(&proxy);

    proxy.wait_for_stats(&[
        "nuncio_downstream_rq_total: 5",
        "nuncio_downstream_cx_total: 5",
        r#"nuncio_downstream_rq_class_total{class="1xx"}: 0"#,
        r#"nuncio_downstream_rq_class_total{class="2xx"}: 3"#,
        r#"nuncio_downstream_rq_class_total{class="3xx"}: 0"#,
        r#"nuncio_downstream_rq_class_total{class="4xx"}: 1"#,
        r#"nuncio_downstream_rq_class_total{class="5xx"}: 1"#,
        "nuncio_downstream_rq_duration_seconds_count: 5",
        r#"nuncio_upstream_rq_total{cluster="app"}: 3"#,
        r#"nuncio_upstream_rq_class_total{class="2xx",cluster="app"}: 3"#,
        r#"nuncio_upstream_rq_class_total{class="5xx",cluster="app"}: 0"#,
        r#"nuncio_upstream_rq_duration_seconds_count{cluster="app"}: 3"#,
        r#"nuncio_upstream_cx_connect_fail_total{cluster="app"}: 0"#,
        // The try to `down` counts, though it got no response.
        r#"nuncio_upstream_rq_total{cluster="down"}: 1"#,
        r#"nuncio_upstream_rq_class_total{class="5xx",cluster="down"}: 0"#,
        r#"nuncio_upstream_cx_connect_fail_total{cluster="down"}: 1"#,
        r#"nuncio_upstream_cx_total{cluster="down"}: 0"#,
        r#"nuncio_upstream_rq_retry_total{cluster="app"}: 0"#,
        r#"nuncio_upstream_rq_timeout_total{cluster="app"}: 0"#,
    ]);
    assert_eq!(app.requests().len(), 3);
    // One pooled connection per worker at most.
    let opened: u64 = proxy.stat(r#"nuncio_upstream_cx_total{cluster="app"}"#).unwrap().parse().unwrap();
    assert!((1..=2).contains(&opened), "{opened} upstream connections for 3 sequential requests");

    // Every line is `name{labels}: value`, sorted.
    let text = proxy.admin_get("/stats").text();
    let line = regex::Regex::new(r#"^nuncio_[a-z0-9_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})?: \S+$"#).unwrap();
    for l in text.lines() {
        assert!(line.is_match(l), "malformed /stats line {l:?}");
    }
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.is_sorted(), "/stats is not sorted:\n{text}");
}

#[test]
fn stats_filter_keeps_only_the_lines_matching_a_regex() {
    let app = Upstream::echo("app");
    let proxy = start(app.addr);
    known_sequence(&proxy);

    // `cluster="down"`, percent-encoded.
    let reply = proxy.admin_get("/stats?filter=cluster%3D%22down%22");
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(text.lines().all(|l| l.contains(r#"cluster="down""#)), "{text}");
    assert!(text.lines().any(|l| l == r#"nuncio_upstream_rq_total{cluster="down"}: 1"#), "{text}");

    let reply = proxy.admin_get("/stats?filter=^nuncio_downstream_rq_class_total");
    assert_eq!(
        reply.text().lines().collect::<Vec<_>>(),
        [
            r#"nuncio_downstream_rq_class_total{class="1xx"}: 0"#,
            r#"nuncio_downstream_rq_class_total{class="2xx"}: 3"#,
            r#"nuncio_downstream_rq_class_total{class="3xx"}: 0"#,
            r#"nuncio_downstream_rq_class_total{class="4xx"}: 1"#,
            r#"nuncio_downstream_rq_class_total{class="5xx"}: 1"#,
        ]
    );

    let reply = proxy.admin_get("/stats?filter=no_such_stat");
    assert_eq!((reply.status, reply.text().as_str()), (200, ""));
}

#[test]
fn stats_filter_that_is_not_a_regex_is_400() {
    let proxy = start(dead_address());

    let reply = proxy.admin_get("/stats?filter=(");

    assert_eq!(reply.status, 400);
    assert!(reply.text().starts_with("bad filter"), "{}", reply.text());
}

/// The sample of `scrape` named `metric` with exactly `labels`.
fn sample<'s>(scrape: &'s Scrape, metric: &str, labels: &[(&str, &str)]) -> &'s Sample {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == metric
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no sample {metric} {labels:?}"))
}

/// A histogram's buckets are cumulative and end at `+Inf` with `count`.
fn assert_cumulative(sample: &Sample, count: f64) {
    let Value::Histogram(buckets) = &sample.value else { panic!("{} is not a histogram: {sample:?}", sample.metric) };
    assert!(buckets.len() > 1, "{buckets:?}");
    for pair in buckets.windows(2) {
        assert!(pair[0].less_than < pair[1].less_than, "bounds in order: {buckets:?}");
        assert!(pair[0].count <= pair[1].count, "cumulative: {buckets:?}");
    }
    let last = buckets.last().unwrap();
    assert_eq!((last.less_than, last.count), (f64::INFINITY, count), "{buckets:?}");
}

#[test]
fn prometheus_exposition_parses_and_has_the_same_values() {
    let app = Upstream::echo("app");
    let proxy = start(app.addr);
    known_sequence(&proxy);
    proxy.wait_for_stats(&[r#"nuncio_downstream_rq_class_total{class="5xx"}: 1"#]);

    let reply = proxy.admin_get("/stats/prometheus");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    let text = reply.text();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();

    let counter = |metric: &str, labels: &[(&str, &str)]| match sample(&scrape, metric, labels).value {
        Value::Counter(v) => v,
        ref other => panic!("{metric} {labels:?} is not a counter: {other:?}"),
    };
    assert_eq!(counter("nuncio_downstream_rq_total", &[]), 5.0);
    assert_eq!(counter("nuncio_downstream_cx_total", &[]), 5.0);
    for (class, n) in [("1xx", 0.0), ("2xx", 3.0), ("3xx", 0.0), ("4xx", 1.0), ("5xx", 1.0)] {
        assert_eq!(counter("nuncio_downstream_rq_class_total", &[("class", class)]), n, "{class}");
    }
    assert_eq!(counter("nuncio_upstream_rq_total", &[("cluster", "app")]), 3.0);
    assert_eq!(counter("nuncio_upstream_rq_class_total", &[("class", "2xx"), ("cluster", "app")]), 3.0);
    assert_eq!(counter("nuncio_upstream_cx_connect_fail_total", &[("cluster", "down")]), 1.0);
    assert_eq!(counter("nuncio_upstream_cb_open_total", &[("breaker", "max_requests"), ("cluster", "app")]), 0.0);
    assert!(matches!(sample(&scrape, "nuncio_downstream_cx_active", &[]).value, Value::Gauge(_)));
    assert!(matches!(sample(&scrape, "nuncio_upstream_cx_active", &[("cluster", "app")]).value, Value::Gauge(_)));

    // Every counter is typed as one, and every `_total` is a counter.
    for s in &scrape.samples {
        if s.metric.ends_with("_total") {
            assert!(matches!(s.value, Value::Counter(_)), "{} is typed {:?}", s.metric, s.value);
        }
        if matches!(s.value, Value::Counter(_)) {
            assert!(s.metric.ends_with("_total"), "counter {} does not end in _total", s.metric);
        }
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(scrape.docs.contains_key(name), "no HELP for {name}");
    }

    // The duration histograms: cumulative buckets, +Inf == _count.
    let downstream = sample(&scrape, "nuncio_downstream_rq_duration_seconds", &[]);
    assert_cumulative(downstream, 5.0);
    let count = sample(&scrape, "nuncio_downstream_rq_duration_seconds_count", &[]);
    assert!(matches!(count.value, Value::Untyped(v) if v == 5.0), "{count:?}");
    let sum = sample(&scrape, "nuncio_downstream_rq_duration_seconds_sum", &[]);
    assert!(matches!(sum.value, Value::Untyped(v) if v > 0.0), "{sum:?}");
    assert_cumulative(sample(&scrape, "nuncio_upstream_rq_duration_seconds", &[("cluster", "app")]), 3.0);
    assert_cumulative(sample(&scrape, "nuncio_upstream_rq_duration_seconds", &[("cluster", "down")]), 0.0);
}

#[test]
fn downstream_cx_active_follows_open_connections() {
    let proxy = start(dead_address());
    proxy.wait_for_stats(&["nuncio_downstream_cx_active: 0"]);

    let mut clients: Vec<RawClient> = (0..3).map(|_| RawClient::connect(proxy.addr())).collect();
    proxy.wait_for_stats(&["nuncio_downstream_cx_active: 3", "nuncio_downstream_cx_total: 3"]);

    clients.truncate(1);
    proxy.wait_for_stats(&["nuncio_downstream_cx_active: 1"]);
    drop(clients);
    proxy.wait_for_stats(&["nuncio_downstream_cx_active: 0", "nuncio_downstream_cx_total: 3"]);
}

#[test]
fn config_version_is_1_on_every_worker_and_main() {
    let proxy = start(dead_address());

    proxy.wait_for_stats(&[
        r#"nuncio_config_version{worker="0"}: 1"#,
        r#"nuncio_config_version{worker="1"}: 1"#,
        r#"nuncio_config_version{worker="main"}: 1"#,
    ]);
    assert_eq!(proxy.stat(r#"nuncio_config_version{worker="2"}"#), None, "there are 2 workers");
}

#[test]
fn clusters_lists_every_endpoint_with_its_state() {
    let control = Control::new();
    let (a, b) = (Upstream::controlled("a", &control), Upstream::controlled("b", &control));
    let proxy = Proxy::start(
        "
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {}
        cluster: app
clusters:
  - name: app
    endpoints: [ '{a}', { address: '{b}', weight: 3 } ]
",
        &[("a", a.addr), ("b", b.addr)],
    );

    // A request held upstream is in flight on one endpoint.
    let held = get_in_background(proxy.addr(), "/held");
    wait_until("the held request at an upstream", || a.requests().len() + b.requests().len() == 1);
    let (busy, idle) = if a.requests().is_empty() { (b.addr, a.addr) } else { (a.addr, b.addr) };
    proxy.wait_for_endpoint("app", busy, "active_requests", "1");

    let text = proxy.admin_get("/clusters").text();
    let mut expected = Vec::new();
    for (endpoint, weight) in [(a.addr, 1), (b.addr, 3)] {
        let active = if endpoint == busy { 1 } else { 0 };
        expected.extend([
            format!("app::{endpoint}::addresses::{endpoint}"),
            format!("app::{endpoint}::weight::{weight}"),
            format!("app::{endpoint}::healthy::true"),
            format!("app::{endpoint}::ejected::false"),
            format!("app::{endpoint}::active_requests::{active}"),
        ]);
    }
    assert_eq!(text.lines().collect::<Vec<_>>(), expected);

    let reply = proxy.admin_get("/clusters?format=json");
    assert_eq!(reply.header("content-type"), "application/json");
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let rows = json.as_array().expect("a JSON array");
    assert_eq!(rows.len(), 2, "{json:#}");
    for (row, (endpoint, weight)) in rows.iter().zip([(a.addr, 1), (b.addr, 3)]) {
        let endpoint = endpoint.to_string();
        let active = if endpoint == busy.to_string() { 1 } else { 0 };
        assert_eq!(
            *row,
            serde_json::json!({
                "cluster": "app",
                "endpoint": endpoint,
                "addresses": [endpoint],
                "weight": weight,
                "healthy": true,
                "ejected": false,
                "active_requests": active,
            })
        );
    }

    control.release();
    assert_eq!(held.join().unwrap().status, 200);
    proxy.wait_for_endpoint("app", busy, "active_requests", "0");
    assert_eq!(proxy.endpoint_field("app", idle, "active_requests"), "0");
}

#[test]
fn config_dump_in_json_has_the_version_and_the_listeners() {
    let proxy = start(dead_address());

    let reply = proxy.admin_get("/config_dump?format=json");

    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/json");
    let dump: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(dump["version"], 1, "{dump:#}");
    let listeners = dump["config"]["listeners"].as_array().expect("a listener list");
    assert_eq!(listeners.len(), 1, "{dump:#}");
    assert_eq!(listeners[0]["name"], "main");
    let routes = listeners[0]["routes"].as_array().expect("a route list");
    assert_eq!(routes[0]["cluster"], "app");
    assert_eq!(routes[1]["cluster"], "down");
    let clusters: Vec<&str> =
        dump["config"]["clusters"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(clusters, ["app", "down"]);
    assert_eq!(dump["config"]["workers"], 2);
}
