//! The `nuncio` command's log (issue 17): `--log-format json` writes one
//! JSON object a line, and a line about a request says its request id
//! (and its trace id when traced), in either format.

use nuncio_test_support::{Client, Collector, Process, Scratch, dead_address};
use serde_json::Value;

const NUNCIO: &str = env!("CARGO_BIN_EXE_nuncio");

/// One route to a cluster nothing listens on (each try logs its connect
/// failure at debug), tracing to `collector`.
fn config(scratch: &Scratch, collector: &Collector) -> String {
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
workers: 1
tracing: {{ otlp_endpoint: '{}', sampling: 0.0 }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: down
clusters:
  - name: down
    endpoints: [ '{}' ]
",
        collector.url(),
        dead_address()
    );
    scratch.write("nuncio.yaml", &yaml)
}

fn get(process: &Process, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = http::Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Client::connect(process.listener("main")).send(request.body(Default::default()).unwrap()).status
}

#[test]
fn json_lines_carry_the_request_and_trace_ids() {
    let scratch = Scratch::new("log-json");
    let collector = Collector::start();
    let path = config(&scratch, &collector);
    let nuncio = Process::start(NUNCIO, &["-c", &path, "--log-format", "json", "--log-level", "debug"]);
    let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(get(&nuncio, "/a", &[("x-request-id", "req-42"), ("traceparent", sampled)]), 503);
    let line = nuncio.wait_for_log("upstream connect failed");
    let json: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(json["level"], "DEBUG");
    assert_eq!(json["message"], "upstream connect failed");
    assert_eq!(json["request_id"], "req-42", "{line}");
    assert_eq!(json["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{line}");
    assert_eq!(json["thread"], "nuncio-worker-0");
    assert!(json["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
    assert!(json.get("error").is_some(), "the event's own fields: {line}");

    // Unsampled, and no id from the client: nuncio's id, no trace id.
    assert_eq!(get(&nuncio, "/b", &[]), 503);
    let line = nuncio.wait_for_log("upstream connect failed");
    let json: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["request_id"].as_str().map(str::len), Some(32), "{line}");
    assert!(json.get("trace_id").is_none(), "{line}");

    // Every line is JSON, and lines about no request carry no id.
    for line in nuncio.log().lines() {
        let json: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if json["message"].as_str().is_some_and(|m| m.starts_with("admin on")) {
            assert!(json.get("request_id").is_none(), "{line}");
        }
    }
}

#[test]
fn text_lines_carry_the_request_id_too() {
    let scratch = Scratch::new("log-text");
    let collector = Collector::start();
    let path = config(&scratch, &collector);
    let nuncio = Process::start(NUNCIO, &["-c", &path, "--log-level", "debug"]);
    assert_eq!(get(&nuncio, "/a", &[("x-request-id", "req-7")]), 503);
    let line = nuncio.wait_for_log("upstream connect failed");
    assert!(line.contains(" DEBUG ") && line.ends_with(" request_id=req-7"), "{line}");
}
