//! The operational fields: admin exposure, drain, access logs, endpoint
//! weights, load-balancing keys, DNS refresh, circuit breakers, health
//! checks and outlier detection.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{error, errors, ok};
use nuncio_accesslog::Format;
use nuncio_config::*;

/// `yaml` is accepted, and its dump reads back to the same config.
fn round_trip(yaml: &str) -> Config {
    let config = ok(yaml);
    let dump = config.to_yaml();
    match Config::from_yaml(&dump, "dump.yaml") {
        Ok(again) => assert_eq!(again, config, "dump:\n{dump}"),
        Err(errors) => panic!("the dump is rejected:\n{errors}\n---\n{dump}"),
    }
    config
}

/// A listener (lines 1-4) and then `rest` from line 5.
fn with(rest: &str) -> String {
    format!(
        "listeners:\n  - name: l\n    address: 127.0.0.1:18080\n    routes: [ {{ match: {{}}, direct_response: {{ status: 200 }} }} ]\n{rest}"
    )
}

/// A listener forwarding to cluster `app`, whose lines (after `- name: app`
/// on line 6) are `fields`, from line 7.
fn with_cluster(fields: &str) -> String {
    format!(
        "listeners:\n  - name: l\n    address: 127.0.0.1:18080\n    routes: [ {{ match: {{}}, cluster: app }} ]\nclusters:\n  - name: app\n{fields}"
    )
}

// ---- admin ----

#[test]
fn admin_is_loopback_unless_allowed() {
    let message = "is not a loopback address; admin can change nuncio's state, \
                   so set admin.allow_remote: true to expose it";
    assert_eq!(
        error(&with("admin: { address: 0.0.0.0:9901 }\n")),
        format!("nuncio.yaml:5:19: admin.address: 0.0.0.0:9901 {message}")
    );
    assert_eq!(
        error(&with("admin:\n  address: \"[2001:db8::1]:9901\"\n  allow_remote: false\n")),
        format!("nuncio.yaml:6:12: admin.address: [2001:db8::1]:9901 {message}")
    );

    let c = ok(&with("admin: { address: 0.0.0.0:9901, allow_remote: true }\n"));
    assert_eq!(c.admin, Admin { address: "0.0.0.0:9901".parse().unwrap(), allow_remote: true });
    // Every loopback form is fine without it.
    for address in ["127.0.0.1:9901", "127.0.0.2:9901", "'[::1]:9901'", "'[::ffff:127.0.0.1]:9901'"] {
        let c = ok(&with(&format!("admin: {{ address: {address} }}\n")));
        assert!(!c.admin.allow_remote);
    }
    // A loopback address may say allow_remote: true all the same.
    assert!(ok(&with("admin: { allow_remote: true }\n")).admin.allow_remote);
}

#[test]
fn admin_allow_remote_must_be_a_boolean() {
    // One error: the address is not judged against an unreadable flag.
    assert_eq!(
        error(&with("admin: { address: 0.0.0.0:9901, allow_remote: yes }\n")),
        r#"nuncio.yaml:5:47: admin.allow_remote: invalid value "yes" (use true or false)"#
    );
    assert_eq!(
        error(&with("admin: { admin_port: 1 }\n")),
        "nuncio.yaml:5:10: admin.admin_port: unknown field `admin_port`, expected `address` or `allow_remote`"
    );
}

// ---- drain_timeout ----

#[test]
fn drain_timeout() {
    assert_eq!(ok(&with("drain_timeout: 0\n")).drain_timeout, Duration::ZERO);
    assert_eq!(ok(&with("drain_timeout: 2m\n")).drain_timeout, Duration::from_secs(120));
    assert_eq!(ok(&with("")).drain_timeout, Duration::from_secs(15));
    assert_eq!(
        error(&with("drain_timeout: soon\n")),
        r#"nuncio.yaml:5:16: drain_timeout: invalid duration "soon" (use 250ms, 5s, 1m or 1h)"#
    );
}

// ---- tracing ----

#[test]
fn tracing_defaults_and_round_trip() {
    assert_eq!(ok(&with("")).tracing, None, "off unless configured");
    let c = round_trip(&with("tracing: { otlp_endpoint: http://127.0.0.1:4318, sampling: 0.1 }\n"));
    let t = c.tracing.unwrap();
    assert_eq!(t.otlp_endpoint.to_string(), "http://127.0.0.1:4318/v1/traces", "the default path");
    assert_eq!((t.sampling_per_million, t.service_name.as_str(), t.queue_size), (100_000, "nuncio", 2048));
    let c = round_trip(&with(
        "tracing:\n  otlp_endpoint: http://collector.internal:4318/otlp/v1/traces\n  service_name: edge-eu\n  queue_size: 64\n",
    ));
    let t = c.tracing.unwrap();
    assert_eq!((t.otlp_endpoint.path(), t.sampling_per_million), ("/otlp/v1/traces", 1_000_000), "all by default");
    assert_eq!((t.service_name.as_str(), t.queue_size), ("edge-eu", 64));
    assert_eq!(
        ok(&with("tracing: { otlp_endpoint: 'http://[::1]:4318', sampling: 0 }\n"))
            .tracing
            .unwrap()
            .sampling_per_million,
        0
    );
}

#[test]
fn tracing_errors_name_line_and_field() {
    assert_eq!(
        error(&with("tracing: { sampling: 0.5 }\n")),
        "nuncio.yaml:5:10: tracing.otlp_endpoint: missing (the OTLP/HTTP collector spans go to, e.g. http://127.0.0.1:4318)"
    );
    assert_eq!(
        error(&with("tracing: { otlp_endpoint: https://collector:4318 }\n")),
        "nuncio.yaml:5:27: tracing.otlp_endpoint: invalid OTLP endpoint \"https://collector:4318\": https is not supported \
         yet (use http://HOST:PORT[/PATH], e.g. http://127.0.0.1:4318)"
    );
    assert_eq!(
        error(&with("tracing: { otlp_endpoint: http://collector }\n")),
        "nuncio.yaml:5:27: tracing.otlp_endpoint: invalid OTLP endpoint \"http://collector\": missing port \
         (use http://HOST:PORT[/PATH], e.g. http://127.0.0.1:4318)"
    );
    let every = errors(&with(
        "tracing:\n  otlp_endpoint: http://c:4318\n  sampling: 1.5\n  service_name: ''\n  queue_size: 0\n",
    ));
    assert_eq!(
        every,
        [
            r#"nuncio.yaml:7:13: tracing.sampling: invalid sampling "1.5" (use a number from 0.0 to 1.0: the share of requests traced)"#,
            "nuncio.yaml:8:17: tracing.service_name: must not be empty",
            "nuncio.yaml:9:15: tracing.queue_size: must be at least 1",
        ]
    );
    assert_eq!(
        error(&with("tracing: { otlp_endpoint: http://c:4318, rate: 1 }\n")),
        "nuncio.yaml:5:42: tracing.rate: unknown field `rate`, expected one of `otlp_endpoint`, `sampling`, \
         `service_name`, `queue_size`"
    );
}

// ---- access_log ----

/// The listener of `with`, with `access_log` set to `log` on line 5.
fn with_access_log(log: &str) -> String {
    format!(
        "listeners:\n  - name: l\n    address: 127.0.0.1:18080\n    routes: [ {{ match: {{}}, direct_response: {{ status: 200 }} }} ]\n    access_log: {log}\n"
    )
}

#[test]
fn access_log_text_and_json() {
    let c = round_trip(&with_access_log(
        r#"{ path: /var/log/nuncio/access.log, format: "[%START_TIME%] %RESPONSE_CODE%" }"#,
    ));
    assert_eq!(
        c.listeners[0].access_log,
        Some(AccessLog {
            path: LogPath::File(PathBuf::from("/var/log/nuncio/access.log")),
            format: Format::text("[%START_TIME%] %RESPONSE_CODE%").unwrap(),
        })
    );

    let c = round_trip(&with_access_log(
        r#"{ path: stdout, json_format: { status: "%RESPONSE_CODE%", path: "%REQ(:PATH)%", a.b: "%DURATION%" } }"#,
    ));
    let fields: Vec<(String, String)> =
        [("status", "%RESPONSE_CODE%"), ("path", "%REQ(:PATH)%"), ("a.b", "%DURATION%")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    // Keys stay in file order: it is the order of the logged object's keys.
    assert_eq!(
        c.listeners[0].access_log,
        Some(AccessLog { path: LogPath::Stdout, format: Format::json(&fields).unwrap() })
    );
    let dump = c.to_yaml();
    assert!(dump.contains("json_format:"), "{dump}");
    assert!(dump.find("status:").unwrap() < dump.find("a.b:").unwrap(), "{dump}");
}

#[test]
fn access_log_defaults() {
    let c = round_trip(&with_access_log("{}"));
    assert_eq!(c.listeners[0].access_log, Some(AccessLog { path: LogPath::Stdout, format: Format::default_text() }));
    let c = round_trip(&with_access_log("{ path: stderr }"));
    assert_eq!(c.listeners[0].access_log.as_ref().unwrap().path, LogPath::Stderr);
    let c = round_trip(&with_access_log("{ path: ./stdout }"));
    assert_eq!(c.listeners[0].access_log.as_ref().unwrap().path, LogPath::File("./stdout".into()));
    // Nothing given is no access log, as for every field.
    assert_eq!(ok(&with_access_log("~")).listeners[0].access_log, None);
}

#[test]
fn access_log_errors() {
    assert_eq!(
        error(&with_access_log(r#"{ format: "%DURATION%", json_format: { d: "%DURATION%" } }"#)),
        "nuncio.yaml:5:41: listeners[0].access_log.json_format: use either `format` (a text line) or `json_format`, not both"
    );
    assert_eq!(
        errors(&with(
            "    access_log: { path: \"\" }\n  - name: m\n    address: 127.0.0.1:18081\n    routes: [ { match: {}, direct_response: { status: 200 } } ]\n    access_log: { path: Stdout }\n  - name: n\n    address: 127.0.0.1:18082\n    routes: [ { match: {}, direct_response: { status: 200 } } ]\n    access_log: { path: /var/log/ }\n"
        )),
        [
            r#"nuncio.yaml:5:25: listeners[0].access_log.path: must not be empty (use stdout, stderr or a file path)"#,
            r#"nuncio.yaml:9:25: listeners[1].access_log.path: "Stdout": write stdout in lowercase, or ./Stdout for a file of that name"#,
            r#"nuncio.yaml:13:25: listeners[2].access_log.path: "/var/log/" names a directory: give a file path"#,
        ]
    );
    assert_eq!(
        error(&with_access_log("{ json_format: {} }")),
        "nuncio.yaml:5:32: listeners[0].access_log.json_format: needs at least one field (or use `format` for a text line)"
    );
    assert_eq!(
        error(&with_access_log(r#"{ json_format: { a: "%DURATION%", b: ~ } }"#)),
        r#"nuncio.yaml:5:54: listeners[0].access_log.json_format.b: missing format string (e.g. "%RESPONSE_CODE%")"#
    );
    assert_eq!(
        error(&with_access_log(r#"{ json_format: { a: "%DURATION%", a: "%BYTES_SENT%" } }"#)),
        "nuncio.yaml:5:51: listeners[0].access_log.json_format.a: given twice in the same mapping"
    );
    // Values are strings, not nested objects.
    assert_eq!(
        error(&with_access_log("{ json_format: { a: { b: c } } }")),
        "nuncio.yaml:5:37: listeners[0].access_log.json_format.a: invalid type: map, expected a string"
    );
    assert_eq!(
        error(&with_access_log("{ fromat: x }")),
        "nuncio.yaml:5:19: listeners[0].access_log.fromat: unknown field `fromat`, expected one of `path`, `format`, `json_format`"
    );
}

#[test]
fn access_log_format_errors_name_line_and_field() {
    // The message is the access-log crate's; the config places it.
    let why = Format::text("%NOPE%").unwrap_err().to_string();
    assert!(why.contains("%NOPE%"), "{why}");
    assert_eq!(
        error(&with_access_log(r#"{ path: stdout, format: "%NOPE%" }"#)),
        format!("nuncio.yaml:5:41: listeners[0].access_log.format: {why}")
    );
    // In a JSON format, every bad field at its own key (the key is in the
    // path, so the message does not repeat it).
    let all = errors(&with_access_log(r#"{ json_format: { a: "%NOPE%", ok: "%DURATION%", b: "x %NOPE%" } }"#));
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all[0].starts_with("nuncio.yaml:5:37: listeners[0].access_log.json_format.a: `%NOPE%`"), "{}", all[0]);
    assert!(all[1].starts_with("nuncio.yaml:5:68: listeners[0].access_log.json_format.b: `%NOPE%`"), "{}", all[1]);
}

// ---- endpoints, lb, hash_on ----

#[test]
fn endpoints_with_weights() {
    let c = round_trip(&with_cluster(
        "    endpoints:\n      - 127.0.0.1:19000\n      - { address: localhost:19001, weight: 3 }\n      - address: '[::1]:19002'\n        weight: 128\n      - { address: 127.0.0.1:19003 }\n",
    ));
    let e = &c.clusters[0].endpoints;
    assert_eq!(
        e.iter().map(|e| (e.address.as_str(), e.weight)).collect::<Vec<_>>(),
        [("127.0.0.1:19000", 1), ("localhost:19001", 3), ("[::1]:19002", 128), ("127.0.0.1:19003", 1),]
    );
    assert!(e[1].resolved.iter().all(|a| a.ip().is_loopback() && a.port() == 19001) && !e[1].resolved.is_empty());
    assert_eq!(e[2].resolved, vec!["[::1]:19002".parse::<SocketAddr>().unwrap()]);
    // The dump keeps the short form where the weight is the default.
    let dump = c.to_yaml();
    assert!(dump.contains("- 127.0.0.1:19000\n"), "{dump}");
    assert!(dump.contains("- address: localhost:19001\n"), "{dump}");
}

#[test]
fn endpoint_errors() {
    let yaml = with_cluster(
        "    endpoints:
      - { address: 127.0.0.1:19000, weight: 0 }
      - { address: 127.0.0.1:19001, weight: 129 }
      - { address: 127.0.0.1:19002, weight: heavy }
      - { weight: 2 }
      - { address: 127.0.0.1:19000 }
      - 8080
      - { address: 'http://x:1' }
",
    );
    assert_eq!(
        errors(&yaml),
        [
            "nuncio.yaml:8:45: clusters[0].endpoints[0].weight: must be at least 1",
            "nuncio.yaml:9:45: clusters[0].endpoints[1].weight: must be at most 128",
            r#"nuncio.yaml:10:45: clusters[0].endpoints[2].weight: invalid number "heavy" (use a whole number such as 1)"#,
            "nuncio.yaml:11:9: clusters[0].endpoints[3].address: missing (HOST:PORT)",
            r#"nuncio.yaml:12:20: clusters[0].endpoints[4].address: endpoint "127.0.0.1:19000" is listed twice"#,
            r#"nuncio.yaml:13:9: clusters[0].endpoints[5]: invalid endpoint "8080": missing port (use HOST:PORT, e.g. localhost:8080)"#,
            r#"nuncio.yaml:14:20: clusters[0].endpoints[6].address: invalid endpoint "http://x:1": write HOST:PORT, without a scheme"#,
        ]
    );
    assert_eq!(
        error(&with_cluster("    endpoints: [ { adress: 127.0.0.1:19000 } ]\n")),
        "nuncio.yaml:7:20: clusters[0].endpoints[0].adress: unknown field `adress`, expected `address` or `weight`"
    );
    assert_eq!(
        error(&with_cluster("    endpoints: [ [ 127.0.0.1:19000 ] ]\n")),
        "nuncio.yaml:7:18: clusters[0].endpoints[0]: invalid type: sequence, \
         expected an endpoint: HOST:PORT, or a mapping with address (and weight)"
    );
}

#[test]
fn lb_policies_and_hash_on() {
    let c = round_trip(&with_cluster(
        "    endpoints: [ 127.0.0.1:19000 ]\n    lb: ring_hash\n    hash_on: { header: X-User }\n  - name: b\n    endpoints: [ 127.0.0.1:19000 ]\n    lb: ring_hash\n    hash_on: source_ip\n  - name: c\n    endpoints: [ 127.0.0.1:19000 ]\n    lb: random\n",
    ));
    let lbs: Vec<_> = c.clusters.iter().map(|c| (c.lb, c.hash_on.clone())).collect();
    assert_eq!(
        lbs,
        [
            (LbPolicy::RingHash, Some(HashOn::Header("x-user".into()))),
            (LbPolicy::RingHash, Some(HashOn::SourceIp)),
            (LbPolicy::Random, None),
        ]
    );
}

#[test]
fn hash_on_errors() {
    assert_eq!(
        error(&with_cluster("    endpoints: [ 127.0.0.1:19000 ]\n    lb: ring_hash\n")),
        "nuncio.yaml:8:9: clusters[0].lb: ring_hash needs hash_on (a header or source_ip)"
    );
    assert_eq!(
        error(&with_cluster("    endpoints: [ 127.0.0.1:19000 ]\n    lb: least_request\n    hash_on: source_ip\n")),
        "nuncio.yaml:9:5: clusters[0].hash_on: only applies to lb: ring_hash (this cluster's lb is least_request)"
    );
    assert_eq!(
        error(&with_cluster("    endpoints: [ 127.0.0.1:19000 ]\n    hash_on: source_ip\n")),
        "nuncio.yaml:8:5: clusters[0].hash_on: only applies to lb: ring_hash (this cluster's lb is round_robin)"
    );
    // A misspelt lb is the one error.
    assert_eq!(
        error(&with_cluster("    endpoints: [ 127.0.0.1:19000 ]\n    lb: ringhash\n    hash_on: source_ip\n")),
        r#"nuncio.yaml:8:9: clusters[0].lb: invalid lb "ringhash" (use round_robin, least_request, random or ring_hash)"#
    );
    let yaml = with_cluster(
        "    endpoints: [ 127.0.0.1:19000 ]
    lb: ring_hash
    hash_on: client_ip
  - name: b
    endpoints: [ 127.0.0.1:19000 ]
    lb: ring_hash
    hash_on: { header: 'x user' }
  - name: c
    endpoints: [ 127.0.0.1:19000 ]
    lb: ring_hash
    hash_on: {}
",
    );
    assert_eq!(
        errors(&yaml),
        [
            r#"nuncio.yaml:9:14: clusters[0].hash_on: invalid hash_on "client_ip" (use source_ip, or { header: NAME })"#,
            r#"nuncio.yaml:13:24: clusters[1].hash_on.header: invalid header name "x user""#,
            "nuncio.yaml:17:14: clusters[2].hash_on.header: missing (the request header whose value is hashed, e.g. x-user-id)",
        ]
    );
}

// ---- dns_refresh, circuit breakers, when_all_unhealthy ----

#[test]
fn dns_refresh_and_circuit_breakers() {
    let c = round_trip(&with_cluster(
        "    endpoints: [ localhost:19000 ]\n    dns_refresh: 5m\n    max_connections: 100\n    max_pending_requests: 50\n    max_requests: 200\n    max_retries: 3\n    when_all_unhealthy: use_all\n  - name: b\n    endpoints: [ localhost:19000 ]\n    dns_refresh: 0\n",
    ));
    let a = &c.clusters[0];
    assert_eq!(a.dns_refresh, Some(Duration::from_secs(300)));
    assert_eq!(
        (a.max_connections, a.max_pending_requests, a.max_requests, a.max_retries),
        (Some(100), Some(50), Some(200), Some(3))
    );
    assert_eq!(a.when_all_unhealthy, AllUnhealthy::UseAll);
    assert_eq!(c.clusters[1].dns_refresh, None);
    assert_eq!(c.clusters[1].when_all_unhealthy, AllUnhealthy::Fail);

    let yaml = with_cluster(
        "    endpoints: [ localhost:19000 ]
    dns_refresh: often
    max_connections: 0
    max_pending_requests: 0
    max_requests: many
    max_retries: -1
    when_all_unhealthy: panic
",
    );
    assert_eq!(
        errors(&yaml),
        [
            r#"nuncio.yaml:8:18: clusters[0].dns_refresh: invalid duration "often" (use 250ms, 5s, 1m or 1h); 0 means never re-resolve"#,
            "nuncio.yaml:9:22: clusters[0].max_connections: must be at least 1",
            "nuncio.yaml:10:27: clusters[0].max_pending_requests: must be at least 1",
            r#"nuncio.yaml:11:19: clusters[0].max_requests: invalid number "many" (use a whole number such as 1)"#,
            r#"nuncio.yaml:12:18: clusters[0].max_retries: invalid number "-1" (use a whole number such as 1)"#,
            r#"nuncio.yaml:13:25: clusters[0].when_all_unhealthy: invalid when_all_unhealthy "panic" (use fail or use_all)"#,
        ]
    );
}

// ---- health_check ----

#[test]
fn health_check_host_and_status_ranges() {
    let c = round_trip(&with_cluster(
        "    endpoints: [ 127.0.0.1:19000 ]\n    health_check:\n      path: /healthz\n      host: health.internal:8080\n      expected_statuses: [ 200-299, 404, \"500 - 503\", 301-301 ]\n",
    ));
    let hc = c.clusters[0].health_check.as_ref().unwrap();
    assert_eq!(hc.host.as_deref(), Some("health.internal:8080"));
    assert_eq!(hc.expected_statuses, vec![(200, 299), (404, 404), (500, 503), (301, 301)]);
    for (status, expected) in [(200, true), (250, true), (299, true), (300, false), (301, true), (404, true)] {
        assert_eq!(hc.is_expected(status), expected, "{status}");
    }
    assert!(hc.is_expected(503) && !hc.is_expected(504));
    let dump = c.to_yaml();
    assert!(dump.contains("- 200-299\n") && dump.contains("- 404\n") && dump.contains("- 301\n"), "{dump}");

    let yaml = with_cluster(
        "    endpoints: [ 127.0.0.1:19000 ]
    health_check:
      path: /h
      host: 'a b'
      expected_statuses: [ 299-200, 600, ok, 200-, 99-200 ]
  - name: b
    endpoints: [ 127.0.0.1:19000 ]
    health_check: { path: /h, expected_statuses: [] }
",
    );
    let forms = "(use a code from 100 to 599, or a range such as 200-299)";
    assert_eq!(
        errors(&yaml),
        [
            r#"nuncio.yaml:10:13: clusters[0].health_check.host: invalid host "a b" (use a host name or IP, with an optional :PORT)"#
                .to_owned(),
            r#"nuncio.yaml:11:28: clusters[0].health_check.expected_statuses[0]: invalid status range "299-200": 299 is above 200 (write the lower code first)"#.to_owned(),
            format!(r#"nuncio.yaml:11:37: clusters[0].health_check.expected_statuses[1]: invalid status "600" {forms}"#),
            format!(r#"nuncio.yaml:11:42: clusters[0].health_check.expected_statuses[2]: invalid status "ok" {forms}"#),
            format!(r#"nuncio.yaml:11:46: clusters[0].health_check.expected_statuses[3]: invalid status "200-" {forms}"#),
            format!(r#"nuncio.yaml:11:52: clusters[0].health_check.expected_statuses[4]: invalid status "99-200" {forms}"#),
            "nuncio.yaml:14:50: clusters[1].health_check.expected_statuses: needs at least one status (or leave it out for 200-299)".to_owned(),
        ]
    );
}

// ---- outlier_detection ----

#[test]
fn outlier_detection_defaults_and_values() {
    let c = round_trip(&with_cluster(
        "    endpoints: [ 127.0.0.1:19000 ]\n    outlier_detection: {}\n  - name: b\n    endpoints: [ 127.0.0.1:19000 ]\n    outlier_detection:\n      consecutive_5xx: 0\n      consecutive_connect_failures: 2\n      base_ejection_time: 10s\n      max_ejection_time: 1m\n      max_ejection_percent: 0\n  - name: c\n    endpoints: [ 127.0.0.1:19000 ]\n    outlier_detection: { base_ejection_time: 10m }\n",
    ));
    assert_eq!(
        c.clusters[0].outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx: Some(5),
            consecutive_connect_failures: Some(5),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
        })
    );
    assert_eq!(
        c.clusters[1].outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx: None,
            consecutive_connect_failures: Some(2),
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(60),
            max_ejection_percent: 0,
        })
    );
    // The default cap never undercuts a longer base.
    let od = c.clusters[2].outlier_detection.as_ref().unwrap();
    assert_eq!((od.base_ejection_time, od.max_ejection_time), (Duration::from_secs(600), Duration::from_secs(600)));
    assert!(c.to_yaml().contains("consecutive_5xx: 0\n"));
}

#[test]
fn outlier_detection_errors() {
    let yaml = with_cluster(
        "    endpoints: [ 127.0.0.1:19000 ]
    outlier_detection:
      consecutive_5xx: five
      consecutive_connect_failures: -1
      base_ejection_time: 1m
      max_ejection_time: 30s
      max_ejection_percent: 101
  - name: b
    endpoints: [ 127.0.0.1:19000 ]
    outlier_detection: { base_ejection_time: 0, max_ejection_time: 1x }
",
    );
    assert_eq!(
        errors(&yaml),
        [
            r#"nuncio.yaml:9:24: clusters[0].outlier_detection.consecutive_5xx: invalid number "five" (use a whole number such as 5)"#,
            r#"nuncio.yaml:10:37: clusters[0].outlier_detection.consecutive_connect_failures: invalid number "-1" (use a whole number such as 5)"#,
            "nuncio.yaml:12:26: clusters[0].outlier_detection.max_ejection_time: must be at least base_ejection_time (1m)",
            "nuncio.yaml:13:29: clusters[0].outlier_detection.max_ejection_percent: must be at most 100",
            "nuncio.yaml:16:46: clusters[1].outlier_detection.base_ejection_time: must be greater than 0",
            r#"nuncio.yaml:16:68: clusters[1].outlier_detection.max_ejection_time: invalid duration "1x" (use 250ms, 5s, 1m or 1h)"#,
        ]
    );
    assert_eq!(
        error(&with_cluster("    endpoints: [ 127.0.0.1:19000 ]\n    outlier_detection: { consecutive_errors: 5 }\n")),
        "nuncio.yaml:8:26: clusters[0].outlier_detection.consecutive_errors: unknown field `consecutive_errors`, \
         expected one of `consecutive_5xx`, `consecutive_connect_failures`, `base_ejection_time`, \
         `max_ejection_time`, `max_ejection_percent`"
    );
}

// ---- all of it at once ----

#[test]
fn every_new_field_reads_back_from_a_dump() {
    let c = round_trip(
        r#"
admin: { address: 0.0.0.0:19901, allow_remote: true }
drain_timeout: 30s
listeners:
  - name: l
    address: 127.0.0.1:18080
    access_log: { path: /tmp/nuncio-access.log, json_format: { code: "%RESPONSE_CODE%" } }
    routes: [ { match: {}, cluster: app } ]
clusters:
  - name: app
    endpoints: [ 127.0.0.1:19000, { address: 127.0.0.1:19001, weight: 4 } ]
    lb: ring_hash
    hash_on: { header: x-user }
    dns_refresh: 0
    max_connections: 10
    max_pending_requests: 10
    max_requests: 10
    max_retries: 1
    health_check: { path: /h, host: app.internal, expected_statuses: [ 200-204, 302 ] }
    when_all_unhealthy: use_all
    outlier_detection: { consecutive_5xx: 3 }
"#,
    );
    let dump = c.to_yaml();
    for line in [
        "allow_remote: true",
        "drain_timeout: 30s",
        "path: /tmp/nuncio-access.log",
        "lb: ring_hash",
        "header: x-user",
        "dns_refresh: '0'",
        "when_all_unhealthy: use_all",
        "max_ejection_time: 5m",
    ] {
        assert!(dump.contains(line), "{line:?} not in\n{dump}");
    }
    // And the defaults are spelled out where a config has none of these.
    let dump = ok(&with_cluster("    endpoints: [ 127.0.0.1:19000 ]\n")).to_yaml();
    for line in ["allow_remote: false", "drain_timeout: 15s", "dns_refresh: 30s", "when_all_unhealthy: fail"] {
        assert!(dump.contains(line), "{line:?} not in\n{dump}");
    }
}
