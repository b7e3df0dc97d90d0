//! Filters' own counters through the real proxy: declared by the factory
//! when configured, declared by nuncio per listener as
//! `nuncio_filter_<KIND>_<NAME>{filter,listener}`, bumped from hooks on
//! the workers (synchronous, async, `on_complete`), summed over workers in
//! `/stats`, and kept across a reload.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nuncio_filter::{
    CounterSet, CounterSpec, Filter, FilterCounter, FilterFactory, Hook, RequestHead, ResponseHead, Status, StreamCx,
};
use nuncio_proxy::{Options, RunningServer};
use support::{Upstream, exchange, get, test_config, wait_until};

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

const CONFIG: &str = "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {}
        cluster: app
clusters:
  - name: app
    endpoints: [ '{app}' ]
";

/// nuncio (2 workers) whose listener `main` runs `filters` in front of
/// `upstream`.
fn start(upstream: &Upstream, filters: Vec<Arc<dyn FilterFactory>>) -> RunningServer {
    let mut options = Options::default();
    options.filters.insert("main".to_owned(), filters.into());
    RunningServer::start_with(test_config(CONFIG, &[("app", upstream.addr)]), options).expect("nuncio starts")
}

fn stats(server: &RunningServer) -> String {
    let reply = exchange(server.addresses().admin, "GET /stats HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert_eq!(reply.status, 200);
    reply.text()
}

/// The value of `series` in `/stats`, if it has the line.
fn stat(server: &RunningServer, series: &str) -> Option<u64> {
    let prefix = format!("{series}: ");
    stats(server).lines().find_map(|l| l.strip_prefix(&prefix).map(|v| v.parse().expect("a count")))
}

/// Waits until `series` reads `value` (workers count as a stream ends,
/// which a client may see after its response).
fn wait_for(server: &RunningServer, series: &str, value: u64) {
    wait_until(&format!("{series} = {value}"), || stat(server, series) == Some(value));
}

#[test]
fn hooks_count_into_counters_their_factory_declared() {
    let upstream = Upstream::echo("app");
    let server = start(&upstream, vec![TallyFactory::named("tally")]);
    let addr = server.listener("main").unwrap();
    let mut body_bytes = 0;
    for path in ["/a", "/slow/b", "/c", "/slow/d", "/e"] {
        let reply = get(addr, path);
        assert_eq!(reply.status, 200, "{}", reply.text());
        body_bytes += reply.body.len() as u64;
    }
    assert!(body_bytes > 0);
    let series = |name: &str| format!("nuncio_filter_tally_{name}{{filter=\"tally\",listener=\"main\"}}");
    wait_for(&server, &series("completed_total"), 5);
    assert_eq!(stat(&server, &series("requests_total")), Some(5));
    assert_eq!(stat(&server, &series("slow_total")), Some(2), "counted from inside the async hook");
    assert_eq!(stat(&server, &series("responses_total")), Some(5));
    assert_eq!(stat(&server, &series("response_body_bytes_total")), Some(body_bytes), "cx.add");

    // Declared with their help, as Prometheus counters.
    let prometheus = exchange(server.addresses().admin, "GET /stats/prometheus HTTP/1.1\r\nHost: admin\r\n\r\n").text();
    assert!(prometheus.contains("# HELP nuncio_filter_tally_slow_total Requests held by the async hook.\n"));
    assert!(prometheus.contains("# TYPE nuncio_filter_tally_slow_total counter\n"));
}

#[test]
fn a_kind_twice_in_a_chain_is_told_apart_by_its_position() {
    let upstream = Upstream::echo("app");
    let chain =
        vec![TallyFactory::named("tally"), Arc::new(Plain) as Arc<dyn FilterFactory>, TallyFactory::named("tally")];
    let server = start(&upstream, chain);
    assert_eq!(get(server.listener("main").unwrap(), "/").status, 200);
    for position in [0, 2] {
        let series = format!("nuncio_filter_tally_completed_total{{filter=\"tally[{position}]\",listener=\"main\"}}");
        wait_for(&server, &series, 1);
    }
    let text = stats(&server);
    assert!(!text.contains("nuncio_filter_plain"), "a filter without counters has none:\n{text}");
    assert!(!text.contains("filter=\"tally\""), "no unnumbered series when the kind appears twice:\n{text}");
}

#[test]
fn a_kind_name_a_stat_name_cannot_hold_is_written_with_underscores() {
    let upstream = Upstream::echo("app");
    let server = start(&upstream, vec![TallyFactory::named("my-tally.v2")]);
    assert_eq!(get(server.listener("main").unwrap(), "/").status, 200);
    wait_for(&server, "nuncio_filter_my_tally_v2_completed_total{filter=\"my-tally.v2\",listener=\"main\"}", 1);
}

#[test]
fn counts_carry_over_a_reload() {
    let upstream = Upstream::echo("app");
    let mut server = start(&upstream, vec![TallyFactory::named("tally")]);
    let series = "nuncio_filter_tally_requests_total{filter=\"tally\",listener=\"main\"}";
    let completed = "nuncio_filter_tally_completed_total{filter=\"tally\",listener=\"main\"}";
    for _ in 0..3 {
        assert_eq!(get(server.listener("main").unwrap(), "/").status, 200);
    }
    wait_for(&server, completed, 3);

    // A slow request in flight across the reload counts on the config
    // (and the stats) it started with.
    let addr = server.listener("main").unwrap();
    let in_flight = std::thread::spawn(move || {
        let request = "GET / HTTP/1.1\r\nHost: t\r\nx-delay-ms: 300\r\n\r\n";
        exchange(addr, request).status
    });
    upstream.wait_for_requests(4);
    // Another route: a new config version, new stats definitions.
    let changed = CONFIG.replace(
        "      - match: {}",
        "      - match: { path: /other }\n        direct_response: { status: 204 }\n      - match: {}",
    );
    let reloaded = server.reload(test_config(&changed, &[("app", upstream.addr)])).expect("the reload is applied");
    assert_eq!(reloaded.version, 2);
    assert_eq!(in_flight.join().unwrap(), 200);
    for _ in 0..2 {
        assert_eq!(get(server.listener("main").unwrap(), "/").status, 200);
    }
    assert_eq!(get(server.listener("main").unwrap(), "/other").status, 204);
    wait_for(&server, completed, 7);
    assert_eq!(stat(&server, series), Some(7), "3 + 1 in flight on version 1, 3 on version 2");
    // Each read retires the stores nobody else holds any more, folding
    // their counts: a read after that neither loses nor doubles them.
    assert_eq!(stat(&server, series), Some(7));
}
