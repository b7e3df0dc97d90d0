//! Tracing (issue 17) against a real OTLP/HTTP receiver (test-support's
//! `Collector`, decoding with `opentelemetry-proto`): the spans of a
//! request and their parent/child structure, the `traceparent` each
//! upstream hears, sampling, cancellation causes, and a collector that is
//! down.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use http_body_util::Full;
use nuncio_filter::{Filter, FilterFactory, Hook, RequestHead, Status, StreamCx};
use nuncio_proxy::Options;
use nuncio_test_support::{
    Admin, Answer, Blackhole, Client, Collector, ExportedSpan, Proxy, RawClient, Upstream, catch_all,
    parse_traceparent, rt, wait_until,
};

const SAMPLED_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const UNSAMPLED_PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

/// `tracing:` to `collector` at `sampling`, then one catch-all route to
/// `app` (whose route and cluster lines are `route`, `cluster`).
fn traced(collector: &Collector, sampling: &str, route: &str, cluster: &str) -> String {
    format!(
        "tracing: {{ otlp_endpoint: '{}', sampling: {sampling} }}\n{}",
        collector.url(),
        catch_all("", route, cluster)
    )
}

fn get_with(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> nuncio_test_support::Reply {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Client::connect(proxy.addr()).send(request.body(Full::default()).unwrap())
}

fn named<'s>(spans: &'s [ExportedSpan], name: &str) -> Vec<&'s ExportedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[test]
fn a_traced_request_has_a_server_span_a_try_span_and_tells_the_upstream() {
    let collector = Collector::start();
    let app = Upstream::echo("app");
    let proxy = Proxy::start(&traced(&collector, "1.0", "", "    endpoints: [ '{app}' ]"), &[("app", app.addr)]);
    let reply = get_with(&proxy, "/hello?x=1", &[("traceparent", SAMPLED_PARENT), ("tracestate", "vendor=1")]);
    assert_eq!(reply.status, 200);

    let spans = collector.wait_for_spans(2);
    let (ingress, egress) = (named(&spans, "ingress")[0], named(&spans, "router app egress")[0]);
    // The client's trace, the client's span as parent, and a child per try.
    assert_eq!(ingress.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ingress.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!((ingress.kind, ingress.flags), (2, 0x301), "a server span whose parent is remote");
    assert_eq!(egress.trace_id, ingress.trace_id);
    assert_eq!(egress.parent_span_id.as_ref(), Some(&ingress.span_id));
    assert_eq!(egress.kind, 3);
    assert!(ingress.start <= egress.start && egress.end <= ingress.end, "the try within the request");
    assert_eq!(spans.len(), 2, "{spans:#?}");

    // Envoy's tags.
    assert_eq!(ingress.attr("http.method"), "GET");
    assert!(ingress.attr("http.url").ends_with("/hello?x=1"), "{}", ingress.attr("http.url"));
    assert_eq!(ingress.attr("http.status_code"), "200");
    assert_eq!(ingress.attr("upstream_cluster"), "app");
    assert_eq!(ingress.attr("response_flags"), "-");
    assert_eq!(ingress.attr("component"), "proxy");
    assert_eq!(egress.attr("upstream_cluster"), "app");
    assert_eq!(egress.attr("upstream_address"), app.addr.to_string());
    assert_eq!((egress.attr("http.status_code"), egress.attr("nuncio.try")), ("200", "1"));
    assert_eq!((ingress.status_code, egress.status_code), (0, 0));

    // The upstream heard the try's span as its parent, the client's
    // tracestate untouched, and a request id (the one in the span).
    let seen = app.last_request();
    assert_eq!(seen.all("traceparent").len(), 1, "nuncio's replaces the client's");
    let (trace_id, parent, flags) = parse_traceparent(seen.header("traceparent"));
    assert_eq!(
        (trace_id.as_str(), parent.as_str(), flags.as_str()),
        (ingress.trace_id.as_str(), egress.span_id.as_str(), "01")
    );
    assert_eq!(seen.header("tracestate"), "vendor=1");
    let request_id = seen.header("x-request-id");
    assert_eq!(request_id.len(), 32, "128 random bits in hex: {request_id}");
    assert_eq!(ingress.attr("guid:x-request-id"), request_id);
    assert_eq!(ingress.service, "nuncio");
}

#[test]
fn sampling_zero_records_nothing_yet_every_request_joins_a_trace() {
    let collector = Collector::start();
    let app = Upstream::echo("app");
    let proxy = Proxy::start(&traced(&collector, "0.0", "", "    endpoints: [ '{app}' ]"), &[("app", app.addr)]);

    // No traceparent: a new trace, not sampled, and an id.
    assert_eq!(get_with(&proxy, "/a", &[("x-request-id", "client-id-1")]).status, 200);
    let seen = app.last_request();
    let (trace_id, _, flags) = parse_traceparent(seen.header("traceparent"));
    assert_eq!(flags, "00");
    assert_ne!(trace_id, "0".repeat(32));
    assert_eq!(seen.header("x-request-id"), "client-id-1", "the client's id is kept");
    // An unsampled parent goes on as it came.
    assert_eq!(get_with(&proxy, "/b", &[("traceparent", UNSAMPLED_PARENT)]).status, 200);
    assert_eq!(app.last_request().header("traceparent"), UNSAMPLED_PARENT);
    // A sampled parent is honoured whatever the ratio (Envoy's default).
    assert_eq!(get_with(&proxy, "/c", &[("traceparent", SAMPLED_PARENT)]).status, 200);

    let spans = collector.wait_for_spans(2);
    std::thread::sleep(nuncio_trace::BATCH_DELAY * 3); // anything else would have come by now
    let spans_now = collector.spans();
    assert_eq!(spans_now.len(), 2, "only the sampled parent's request: {spans_now:#?}");
    assert!(spans.iter().all(|s| s.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"));
}

#[test]
fn an_unsampled_parent_is_honoured_too() {
    let collector = Collector::start();
    let app = Upstream::echo("app");
    let proxy = Proxy::start(&traced(&collector, "1.0", "", "    endpoints: [ '{app}' ]"), &[("app", app.addr)]);
    assert_eq!(get_with(&proxy, "/quiet", &[("traceparent", UNSAMPLED_PARENT)]).status, 200);
    assert_eq!(proxy.get("/loud").status, 200);
    collector.wait_for_spans(2);
    std::thread::sleep(nuncio_trace::BATCH_DELAY * 3);
    let spans = collector.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert!(spans.iter().all(|s| s.trace_id != "0af7651916cd43dd8448eb211c80319c"));
    let ingress = named(&spans, "ingress")[0];
    assert_eq!((ingress.parent_span_id.as_ref(), ingress.flags), (None, 0x101), "a root: no remote parent");
}

#[test]
fn without_tracing_trace_context_passes_untouched() {
    let app = Upstream::echo("app");
    let proxy = Proxy::to(&app);
    let reply = get_with(&proxy, "/", &[("traceparent", SAMPLED_PARENT), ("tracestate", "vendor=1")]);
    assert_eq!(reply.status, 200);
    let seen = app.last_request();
    assert_eq!((seen.header("traceparent"), seen.header("tracestate")), (SAMPLED_PARENT, "vendor=1"));
    assert_eq!(seen.header("x-request-id").len(), 32, "an id, made as the request is forwarded");
}

/// Answers `200 from try N`, except that the first request it gets is
/// never answered.
fn stall_first() -> Upstream {
    let count = Arc::new(AtomicUsize::new(0));
    Upstream::scripted("app", move |_| match count.fetch_add(1, Ordering::SeqCst) {
        0 => Answer::Hold,
        n => Answer::status(200).body(&format!("from try {}\n", n + 1)),
    })
}

#[test]
fn each_hedged_try_has_a_span_and_the_loser_ends_canceled() {
    let collector = Collector::start();
    let app = stall_first();
    let route = "        retries: { attempts: 2, on: [5xx], per_try_timeout: 200ms, hedge_on_per_try_timeout: true }";
    let proxy = Proxy::start(&traced(&collector, "1.0", route, "    endpoints: [ '{app}' ]"), &[("app", app.addr)]);
    let reply = proxy.get("/slow");
    assert_eq!((reply.status, reply.text().as_str()), (200, "from try 2\n"));

    let spans = collector.wait_for("three spans", 3, |_| true);
    let ingress = named(&spans, "ingress")[0];
    let tries = named(&spans, "router app egress");
    assert_eq!(tries.len(), 2, "{spans:#?}");
    assert!(tries.iter().all(|t| t.parent_span_id.as_ref() == Some(&ingress.span_id)));
    let first = tries.iter().find(|t| t.attr("nuncio.try") == "1").unwrap();
    let hedge = tries.iter().find(|t| t.attr("nuncio.try") == "2").unwrap();
    assert_eq!((hedge.attr("nuncio.hedge"), hedge.attr("http.status_code")), ("true", "200"));
    assert_eq!(first.attr("canceled"), "true");
    assert_eq!((first.status_code, first.status_message.as_str()), (2, "canceled: another try answered first"));
    // Each try told the upstream its own span.
    let parents: Vec<String> = app.requests().iter().map(|r| parse_traceparent(r.header("traceparent")).1).collect();
    assert_eq!(parents, [first.span_id.clone(), hedge.span_id.clone()]);
}

#[test]
fn a_retry_is_a_try_of_its_own() {
    let collector = Collector::start();
    let count = Arc::new(AtomicUsize::new(0));
    let app = Upstream::scripted("app", move |_| {
        if count.fetch_add(1, Ordering::SeqCst) == 0 { Answer::status(503) } else { Answer::status(200) }
    });
    let route = "        retries: { attempts: 1, on: [\"503\"], backoff: { base: 1ms, max: 2ms } }";
    let proxy = Proxy::start(&traced(&collector, "1.0", route, "    endpoints: [ '{app}' ]"), &[("app", app.addr)]);
    assert_eq!(proxy.get("/").status, 200);
    let spans = collector.wait_for_spans(3);
    let tries = named(&spans, "router app egress");
    let statuses: Vec<(&str, &str, i32)> =
        tries.iter().map(|t| (t.attr("nuncio.try"), t.attr("http.status_code"), t.status_code)).collect();
    assert_eq!(statuses.len(), 2, "{spans:#?}");
    assert!(statuses.contains(&("1", "503", 2)) && statuses.contains(&("2", "200", 0)), "{statuses:?}");
}

#[test]
fn a_mirror_copy_has_its_own_span_which_may_outlive_the_request() {
    let collector = Collector::start();
    let app = Upstream::echo("app");
    let shadow = Upstream::slow("shadow", Duration::from_millis(300));
    let yaml = format!(
        "tracing: {{ otlp_endpoint: '{}' }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: app
        mirror: [ {{ cluster: shadow }} ]
clusters:
  - name: app
    endpoints: [ '{{app}}' ]
  - name: shadow
    endpoints: [ '{{shadow}}' ]
",
        collector.url()
    );
    let proxy = Proxy::start(&yaml, &[("app", app.addr), ("shadow", shadow.addr)]);
    assert_eq!(proxy.get("/copied").status, 200);
    let spans = collector.wait_for_spans(3);
    let ingress = named(&spans, "ingress")[0];
    let mirror = named(&spans, "mirror shadow egress")[0];
    assert_eq!(mirror.parent_span_id.as_ref(), Some(&ingress.span_id));
    assert_eq!((mirror.kind, mirror.attr("http.status_code")), (3, "200"));
    assert!(mirror.end > ingress.end, "the copy ended after the request it copies");
    let (trace_id, parent, _) = parse_traceparent(shadow.last_request().header("traceparent"));
    assert_eq!((trace_id, parent), (ingress.trace_id.clone(), mirror.span_id.clone()));
}

/// Holds the request headers 30 ms on the worker (`Hook::pending`).
struct Sleepy;

impl Filter for Sleepy {
    fn request_headers<'a>(&'a mut self, _cx: &'a mut StreamCx, _head: &'a mut RequestHead, _eos: bool) -> Hook<'a> {
        Hook::pending(async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Status::Continue
        })
    }
}

/// Stops the chain and resumes it from another thread 30 ms later
/// (through the `StreamHandle`, as work on the extension pool would).
struct OffWorker;

impl Filter for OffWorker {
    fn request_headers<'a>(&'a mut self, cx: &'a mut StreamCx, _head: &'a mut RequestHead, _eos: bool) -> Hook<'a> {
        let handle = cx.handle().expect("streams have handles");
        rt().spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let _ = handle.resume().await;
        });
        Status::StopIteration.into()
    }
}

/// Answers at once (no span).
struct Quick;

impl Filter for Quick {}

struct Kind(&'static str);

impl FilterFactory for Kind {
    fn name(&self) -> &str {
        self.0
    }

    fn create(&self) -> Box<dyn Filter> {
        match self.0 {
            "sleepy" => Box::new(Sleepy),
            "off_worker" => Box::new(OffWorker),
            _ => Box::new(Quick),
        }
    }
}

#[test]
fn filters_that_go_async_or_off_the_worker_have_spans_and_quick_ones_none() {
    let collector = Collector::start();
    let app = Upstream::echo("app");
    let mut options = Options::default();
    let chain: Vec<Arc<dyn FilterFactory>> =
        vec![Arc::new(Kind("quick")), Arc::new(Kind("sleepy")), Arc::new(Kind("off_worker"))];
    options.filters.insert("main".to_owned(), chain.into());
    let yaml = traced(&collector, "1.0", "", "    endpoints: [ '{app}' ]");
    let proxy = Proxy::start_with(&yaml, &[("app", app.addr)], options);
    assert_eq!(proxy.get("/").status, 200);

    let spans = collector.wait_for_spans(4);
    let ingress = named(&spans, "ingress")[0];
    let sleepy = named(&spans, "filter sleepy request_headers")[0];
    let off = named(&spans, "filter off_worker request_headers")[0];
    for span in [sleepy, off] {
        assert_eq!((span.kind, span.parent_span_id.as_ref()), (1, Some(&ingress.span_id)));
        assert!(span.end - span.start >= 25_000_000, "held about 30 ms: {span:?}");
    }
    assert_eq!((sleepy.attr("filter.wait"), sleepy.attr("filter.result")), ("async", "continue"));
    assert_eq!((off.attr("filter.wait"), off.attr("filter.result")), ("stopped", "resumed"));
    assert!(sleepy.end <= off.start, "in chain order");
    assert!(named(&spans, "filter quick request_headers").is_empty(), "a synchronous hook has no span");
    std::thread::sleep(nuncio_trace::BATCH_DELAY * 3);
    assert_eq!(collector.spans().len(), 4, "ingress, one try, two filters: {:#?}", collector.spans());
}

#[test]
fn a_client_that_leaves_ends_its_spans_canceled() {
    let collector = Collector::start();
    let app = Upstream::scripted("app", |_| Answer::Hold);
    let proxy = Proxy::start(&traced(&collector, "1.0", "", "    endpoints: [ '{app}' ]"), &[("app", app.addr)]);
    let mut client = RawClient::connect(proxy.addr());
    client.send("GET /held HTTP/1.1\r\nHost: test\r\n\r\n");
    app.wait_for_requests(1);
    drop(client);

    let spans = collector.wait_for_spans(2);
    let (ingress, egress) = (named(&spans, "ingress")[0], named(&spans, "router app egress")[0]);
    for span in [ingress, egress] {
        assert_eq!(span.attr("canceled"), "true", "{span:#?}");
        assert_eq!((span.status_code, span.status_message.as_str()), (2, "canceled: the client disconnected"));
    }
    assert_eq!(ingress.attr("response_flags"), "DC");
    wait_until("the upstream request given up", || app.abandoned() == 1);
}

#[test]
fn a_collector_that_is_down_costs_requests_nothing_and_drops_are_counted() {
    let blackhole = Blackhole::new();
    let app = Upstream::echo("app");
    let yaml = format!(
        "tracing: {{ otlp_endpoint: 'http://{}', queue_size: 4 }}\n{}",
        blackhole.addr,
        catch_all("", "", "    endpoints: [ '{app}' ]")
    );
    let proxy = Proxy::start(&yaml, &[("app", app.addr)]);
    let mut client = Client::connect(proxy.addr());
    for i in 0..60 {
        assert_eq!(client.get(&format!("/{i}")).status, 200);
    }
    // 120 spans, a queue of 4, an exporter stuck connecting: most are
    // dropped, each one counted.
    wait_until("drops counted", || {
        proxy
            .stat("nuncio_tracing_spans_dropped_total{reason=\"queue_full\"}")
            .is_some_and(|n| n.parse::<u64>().unwrap() >= 100)
    });
    assert_eq!(proxy.stat("nuncio_tracing_spans_exported_total").as_deref(), Some("0"));
    proxy.wait_for_stats(&["nuncio_downstream_rq_class_total{class=\"2xx\"}: 60"]);
}

#[test]
fn a_reload_changes_sampling_and_collector() {
    let (first, second) = (Collector::start(), Collector::start());
    let app = Upstream::echo("app");
    let mut proxy = Proxy::start(&traced(&first, "0.0", "", "    endpoints: [ '{app}' ]"), &[("app", app.addr)]);
    assert_eq!(proxy.get("/before").status, 200);
    proxy.reload(&traced(&second, "1.0", "", "    endpoints: [ '{app}' ]"), &[("app", app.addr)]);
    assert_eq!(proxy.get("/after").status, 200);
    let spans = second.wait_for_spans(2);
    assert!(named(&spans, "ingress")[0].attr("http.url").ends_with("/after"));
    std::thread::sleep(nuncio_trace::BATCH_DELAY * 3);
    assert!(first.spans().is_empty(), "nothing was sampled before the reload");
    // Both exporters' counts, summed.
    proxy.wait_for_stats(&["nuncio_tracing_spans_exported_total: 2"]);
}
