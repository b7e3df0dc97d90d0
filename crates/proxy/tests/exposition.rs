//! `/stats/prometheus` follows the text exposition format (0.0.4) to the
//! letter, as a real parser reads it: Python's `prometheus_client`
//! (Debian's `python3-prometheus-client`, which `.ci/run` installs),
//! against a running nuncio with counters, gauges, per-worker gauges,
//! histograms, label values and help texts that need escaping, filter
//! counters, and the tracing exporter's stats.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use nuncio_filter::{
    CounterSet, CounterSpec, Filter, FilterCounter, FilterFactory, Hook, RequestHead, Status, StreamCx,
};
use nuncio_proxy::Options;
use nuncio_test_support::{Admin, Collector, Proxy, Upstream, get};
use serde_json::Value;

/// Reads the exposition on stdin with prometheus_client's parser and
/// writes every family as JSON (a value that is not finite as text).
const PARSE: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": family.name,
        "type": family.type,
        "help": family.documentation,
        "samples": [
            [s.name, s.labels, s.value if math.isfinite(s.value) else str(s.value)]
            for s in family.samples
        ],
    })
print(json.dumps(families))
"#;

/// A Python that has prometheus_client: `$NUNCIO_PYTHON`, `python3` on the
/// path, or Debian's.
fn python() -> String {
    let candidates = std::env::var("NUNCIO_PYTHON").into_iter().chain(["python3".into(), "/usr/bin/python3".into()]);
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", "import prometheus_client"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return python;
        }
    }
    panic!("no Python with prometheus_client: apt-get install python3-prometheus-client (.ci/run does)")
}

/// What prometheus_client makes of `text`; fails the test with its error
/// if it refuses it.
fn parse(text: &str) -> Vec<Value> {
    let mut child = Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition:\n{}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

/// A filter kind whose name and counter help need care: a `.` in the
/// kind, a backslash in the help.
struct Tally {
    counters: CounterSet,
    requests: FilterCounter,
}

impl FilterFactory for Tally {
    fn name(&self) -> &str {
        "acme.tally"
    }

    fn create(&self) -> Box<dyn Filter> {
        Box::new(TallyFilter(self.requests))
    }

    fn counters(&self) -> &[CounterSpec] {
        self.counters.specs()
    }
}

struct TallyFilter(FilterCounter);

impl Filter for TallyFilter {
    fn request_headers<'a>(&'a mut self, cx: &'a mut StreamCx, _head: &'a mut RequestHead, _eos: bool) -> Hook<'a> {
        cx.inc(self.0);
        Status::Continue.into()
    }
}

fn family<'f>(families: &'f [Value], name: &str) -> &'f Value {
    families.iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("no family {name}"))
}

/// The value of the sample `name{labels}` (labels exactly these).
fn sample(family: &Value, name: &str, labels: &[(&str, &str)]) -> Value {
    let wanted: serde_json::Map<String, Value> =
        labels.iter().map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned()))).collect();
    family["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == name && s[1].as_object() == Some(&wanted))
        .map(|s| s[2].clone())
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {family:#}"))
}

#[test]
fn prometheus_client_reads_every_family_and_label_as_written() {
    let app = Upstream::echo("app");
    let collector = Collector::start();
    let mut counters = CounterSet::new();
    let requests = counters.declare("requests_total", "Requests seen by the tally\\filter (one a request).").unwrap();
    let mut options = Options::default();
    let chain: Vec<Arc<dyn FilterFactory>> = vec![Arc::new(Tally { counters, requests })];
    options.filters.insert("main".to_owned(), chain.into());
    // A cluster name with a quote and a backslash: label values must be
    // escaped.
    let weird = r#"we"ird\back"#;
    let yaml = format!(
        "tracing: {{ otlp_endpoint: '{}' }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: '{weird}'
clusters:
  - name: '{weird}'
    endpoints: [ '{{app}}' ]
",
        collector.url()
    );
    let proxy = Proxy::start_with(&yaml, &[("app", app.addr)], options);
    for _ in 0..3 {
        assert_eq!(get(proxy.addr(), "/").status, 200);
    }
    collector.wait_for_spans(6);
    proxy.wait_for_stats(&["nuncio_downstream_rq_total: 3", "nuncio_tracing_spans_exported_total: 6"]);

    let reply = proxy.admin_get("/stats/prometheus");
    assert_eq!(reply.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    let text = reply.text();
    let families = parse(&text);
    let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(families.len(), types, "one family per # TYPE line");

    // Counters (the parser names the family without `_total`).
    let upstream = family(&families, "nuncio_upstream_rq");
    assert_eq!(upstream["type"], "counter");
    assert_eq!(sample(upstream, "nuncio_upstream_rq_total", &[("cluster", weird)]), 3.0);
    let classes = family(&families, "nuncio_downstream_rq_class");
    assert_eq!(sample(classes, "nuncio_downstream_rq_class_total", &[("class", "2xx")]), 3.0);
    // Gauges, per-worker gauges.
    assert_eq!(family(&families, "nuncio_downstream_cx_active")["type"], "gauge");
    let versions = family(&families, "nuncio_config_version");
    for worker in ["0", "1", "main"] {
        assert_eq!(sample(versions, "nuncio_config_version", &[("worker", worker)]), 1.0);
    }
    // Histograms: cumulative buckets to +Inf, which is the count.
    let duration = family(&families, "nuncio_upstream_rq_duration_seconds");
    assert_eq!(duration["type"], "histogram");
    let labels = [("cluster", weird), ("le", "+Inf")];
    assert_eq!(sample(duration, "nuncio_upstream_rq_duration_seconds_bucket", &labels), 3.0);
    assert_eq!(sample(duration, "nuncio_upstream_rq_duration_seconds_count", &[("cluster", weird)]), 3.0);
    let buckets: Vec<f64> = duration["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[0] == "nuncio_upstream_rq_duration_seconds_bucket")
        .map(|s| s[2].as_f64().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "cumulative: {buckets:?}");
    // A filter's counter, its help escaped and read back as declared.
    let tally = family(&families, "nuncio_filter_acme_tally_requests");
    assert_eq!(tally["help"], "Requests seen by the tally\\filter (one a request).");
    assert_eq!(
        sample(tally, "nuncio_filter_acme_tally_requests_total", &[("filter", "acme.tally"), ("listener", "main")]),
        3.0
    );
    // The tracing exporter's own store.
    let exported = family(&families, "nuncio_tracing_spans_exported");
    assert_eq!(sample(exported, "nuncio_tracing_spans_exported_total", &[]), 6.0);
    let dropped = family(&families, "nuncio_tracing_spans_dropped");
    assert_eq!(sample(dropped, "nuncio_tracing_spans_dropped_total", &[("reason", "queue_full")]), 0.0);
    assert_eq!(family(&families, "nuncio_tracing_export_duration_seconds")["type"], "histogram");
}
