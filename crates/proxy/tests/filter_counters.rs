//! Filters' own counters through the real proxy: declared by the factory
//! when configured, declared by nuncio per listener as
//! `nuncio_filter_<KIND>_<NAME>{filter,listener}`, bumped from hooks on
//! the workers (synchronous, async, `on_complete`), summed over workers in
//! `/stats`, and kept across a reload.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nuncio_filter::{
    CounterSet, CounterSpec, Filter, FilterCounter, FilterFactory, Hook, RequestHead, ResponseHead, Status, StreamCx,
};
use nuncio_test_support::{Admin, Proxy, Upstream, catch_all, exchange, get};

/// Counts what passes it: requests, response heads, response body bytes,
/// requests to `/slow` (from inside an async hook) and streams ended.
struct TallyFactory {
    name: &'static str,
    counters: CounterSet,
    ids: Ids,
}

#[derive(Clone, Copy)]
struct Ids {
    requests: FilterCounter,
    responses: FilterCounter,
    body_bytes: FilterCounter,
    slow: FilterCounter,
    completed: FilterCounter,
}

impl TallyFactory {
    fn named(name: &'static str) -> Arc<dyn FilterFactory> {
        let mut counters = CounterSet::new();
        let mut declare = |name, help| counters.declare(name, help).expect("a valid counter");
        let ids = Ids {
            requests: declare("requests_total", "Request heads seen."),
            responses: declare("responses_total", "Response heads seen."),
            body_bytes: declare("response_body_bytes_total", "Response body bytes seen."),
            slow: declare("slow_total", "Requests held by the async hook."),
            completed: declare("completed_total", "Streams ended."),
        };
        Arc::new(TallyFactory { name, counters, ids })
    }
}

impl FilterFactory for TallyFactory {
    fn name(&self) -> &str {
        self.name
    }

    fn create(&self) -> Box<dyn Filter> {
        Box::new(Tally(self.ids))
    }

    fn counters(&self) -> &[CounterSpec] {
        self.counters.specs()
    }
}

struct Tally(Ids);

impl Filter for Tally {
    fn request_headers<'a>(&'a mut self, cx: &'a mut StreamCx, head: &'a mut RequestHead, _eos: bool) -> Hook<'a> {
        cx.inc(self.0.requests);
        if !head.path().starts_with("/slow") {
            return Status::Continue.into();
        }
        let slow = self.0.slow;
        Hook::pending(async move {
            // The subject: the hook awaits something before it counts.
            tokio::time::sleep(Duration::from_millis(5)).await;
            cx.inc(slow);
            Status::Continue
        })
    }

    fn response_headers<'a>(&'a mut self, cx: &'a mut StreamCx, _head: &'a mut ResponseHead, _eos: bool) -> Hook<'a> {
        cx.inc(self.0.responses);
        Status::Continue.into()
    }

    fn response_body<'a>(&'a mut self, cx: &'a mut StreamCx, body: &'a mut Bytes, _eos: bool) -> Hook<'a> {
        cx.add(self.0.body_bytes, body.len() as u64);
        Status::Continue.into()
    }

    fn on_complete(&mut self, cx: &StreamCx) {
        cx.inc(self.0.completed);
    }
}

/// A filter that declares nothing (its position still counts).
struct Plain;

impl FilterFactory for Plain {
    fn name(&self) -> &str {
        "plain"
    }

    fn create(&self) -> Box<dyn Filter> {
        struct Nothing;
        impl Filter for Nothing {}
        Box::new(Nothing)
    }
}

/// nuncio (2 workers) whose listener `main` runs `filters` in front of
/// `upstream`.
fn start(upstream: &Upstream, filters: Vec<Arc<dyn FilterFactory>>) -> Proxy {
    Proxy::with_filters(upstream, 2, filters)
}

/// The value of `series` in `/stats`, if it has the line.
fn count(proxy: &Proxy, series: &str) -> Option<u64> {
    proxy.stat(series).map(|v| v.parse().expect("a count"))
}

/// Waits until `series` reads `value` (workers count as a stream ends,
/// which a client may see after its response).
fn wait_for(proxy: &Proxy, series: &str, value: u64) {
    proxy.wait_for_stats(&[format!("{series}: {value}")]);
}

#[test]
fn hooks_count_into_counters_their_factory_declared() {
    let upstream = Upstream::echo("app");
    let proxy = start(&upstream, vec![TallyFactory::named("tally")]);
    let addr = proxy.addr();
    let mut body_bytes = 0;
    for path in ["/a", "/slow/b", "/c", "/slow/d", "/e"] {
        let reply = get(addr, path);
        assert_eq!(reply.status, 200, "{}", reply.text());
        body_bytes += reply.body.len() as u64;
    }
    assert!(body_bytes > 0);
    let series = |name: &str| format!("nuncio_filter_tally_{name}{{filter=\"tally\",listener=\"main\"}}");
    wait_for(&proxy, &series("completed_total"), 5);
    assert_eq!(count(&proxy, &series("requests_total")), Some(5));
    assert_eq!(count(&proxy, &series("slow_total")), Some(2), "counted from inside the async hook");
    assert_eq!(count(&proxy, &series("responses_total")), Some(5));
    assert_eq!(count(&proxy, &series("response_body_bytes_total")), Some(body_bytes), "cx.add");

    // Declared with their help, as Prometheus counters.
    let prometheus = proxy.admin_get("/stats/prometheus").text();
    assert!(prometheus.contains("# HELP nuncio_filter_tally_slow_total Requests held by the async hook.\n"));
    assert!(prometheus.contains("# TYPE nuncio_filter_tally_slow_total counter\n"));
}

#[test]
fn a_kind_twice_in_a_chain_is_told_apart_by_its_position() {
    let upstream = Upstream::echo("app");
    let chain =
        vec![TallyFactory::named("tally"), Arc::new(Plain) as Arc<dyn FilterFactory>, TallyFactory::named("tally")];
    let proxy = start(&upstream, chain);
    assert_eq!(get(proxy.addr(), "/").status, 200);
    for position in [0, 2] {
        let series = format!("nuncio_filter_tally_completed_total{{filter=\"tally[{position}]\",listener=\"main\"}}");
        wait_for(&proxy, &series, 1);
    }
    let text = proxy.stats();
    assert!(!text.contains("nuncio_filter_plain"), "a filter without counters has none:\n{text}");
    assert!(!text.contains("filter=\"tally\""), "no unnumbered series when the kind appears twice:\n{text}");
}

#[test]
fn a_kind_name_a_stat_name_cannot_hold_is_written_with_underscores() {
    let upstream = Upstream::echo("app");
    let proxy = start(&upstream, vec![TallyFactory::named("my-tally.v2")]);
    assert_eq!(get(proxy.addr(), "/").status, 200);
    wait_for(&proxy, "nuncio_filter_my_tally_v2_completed_total{filter=\"my-tally.v2\",listener=\"main\"}", 1);
}

#[test]
fn counts_carry_over_a_reload() {
    let upstream = Upstream::echo("app");
    let mut proxy = start(&upstream, vec![TallyFactory::named("tally")]);
    let series = "nuncio_filter_tally_requests_total{filter=\"tally\",listener=\"main\"}";
    let completed = "nuncio_filter_tally_completed_total{filter=\"tally\",listener=\"main\"}";
    for _ in 0..3 {
        assert_eq!(get(proxy.addr(), "/").status, 200);
    }
    wait_for(&proxy, completed, 3);

    // A slow request in flight across the reload counts on the config
    // (and the stats) it started with.
    let addr = proxy.addr();
    let in_flight = std::thread::spawn(move || {
        let request = "GET / HTTP/1.1\r\nHost: t\r\nx-delay-ms: 300\r\n\r\n";
        exchange(addr, request).status
    });
    upstream.wait_for_requests(4);
    // Another route: a new config version, new stats definitions.
    let changed = catch_all("", "", "    endpoints: [ '{app}' ]").replace(
        "      - match: {}",
        "      - match: { path: /other }\n        direct_response: { status: 204 }\n      - match: {}",
    );
    let reloaded = proxy.reload(&changed, &[("app", upstream.addr)]);
    assert_eq!(reloaded.version, 2);
    assert_eq!(in_flight.join().unwrap(), 200);
    for _ in 0..2 {
        assert_eq!(get(proxy.addr(), "/").status, 200);
    }
    assert_eq!(get(proxy.addr(), "/other").status, 204);
    wait_for(&proxy, completed, 7);
    assert_eq!(count(&proxy, series), Some(7), "3 + 1 in flight on version 1, 3 on version 2");
    // Each read retires the stores nobody else holds any more, folding
    // their counts: a read after that neither loses nor doubles them.
    assert_eq!(count(&proxy, series), Some(7));
}
