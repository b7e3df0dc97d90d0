//! Parsing and validation of whole configuration files.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{error, errors, ok};
use nuncio_config::*;

/// The issue's example, with high ports.
const BASIC: &str = r#"
admin:
  address: 127.0.0.1:19901
workers: 2
listeners:
  - name: public
    address: 127.0.0.1:18080
    routes:
      - match: { path: /healthz }
        direct_response: { status: 200, body: "ok\n" }
      - match: { host: api.example.com, prefix: / }
        cluster: api
        timeout: 2s
        retries: { attempts: 2, on: [connect-failure, "503"], per_try_timeout: 500ms }
      - match: { prefix: /static/, headers: [ { name: x-canary, exact: "1" } ] }
        weighted_clusters:
          - { cluster: static, weight: 90 }
          - { cluster: api, weight: 10 }
      - match: { prefix: /old/ }
        redirect: { prefix_rewrite: /new/, status: 301 }
      - match: { prefix: / }
        cluster: static
        timeout: 5s
clusters:
  - name: api
    endpoints: [ 127.0.0.1:19001, 127.0.0.1:19002 ]
    lb: round_robin
    connect_timeout: 250ms
  - name: static
    endpoints: [ localhost:19003 ]
    lb: least_request
    max_connections: 1024
    health_check: { path: /health, interval: 1s, timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 1 }
"#;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn forward(route: &Route) -> &Forward {
    match &route.action {
        RouteAction::Forward(f) => f,
        other => panic!("not a forward: {other:?}"),
    }
}

/// One listener, with `routes` (indented for its place) and `clusters` appended.
fn with_routes(routes: &str) -> String {
    format!(
        "listeners:\n  - name: l\n    address: 127.0.0.1:18080\n    routes:\n{routes}clusters:\n  - name: app\n    endpoints: [ 127.0.0.1:19000 ]\n"
    )
}

#[test]
fn the_issue_example_is_accepted() {
    let c = ok(BASIC);
    assert_eq!(c.admin.address, addr("127.0.0.1:19901"));
    assert_eq!(c.workers, 2);
    let l = &c.listeners[0];
    assert_eq!((l.name.as_str(), l.address), ("public", addr("127.0.0.1:18080")));
    assert_eq!(l.routes.len(), 5);

    let r = &l.routes[0];
    assert_eq!(r.matcher.path, PathMatch::Exact("/healthz".into()));
    assert_eq!(r.action, RouteAction::DirectResponse(DirectResponse { status: 200, body: Some("ok\n".into()) }));

    let r = &l.routes[1];
    assert_eq!(r.matcher.host, Some(HostMatch::Exact("api.example.com".into())));
    assert_eq!(r.matcher.path, PathMatch::Prefix("/".into()));
    let f = forward(r);
    assert_eq!(f.target, Target::Cluster("api".into()));
    assert_eq!(f.timeout, Some(Duration::from_secs(2)));
    assert_eq!(
        f.retries,
        Some(RetryPolicy {
            attempts: 2,
            on: vec![RetryOn::ConnectFailure, RetryOn::Status(503)],
            per_try_timeout: Some(Duration::from_millis(500)),
            backoff: Backoff { base: Duration::from_millis(25), max: Duration::from_millis(250) },
            hedge_on_per_try_timeout: false,
        })
    );

    let r = &l.routes[2];
    assert_eq!(r.matcher.headers, vec![HeaderMatch { name: "x-canary".into(), rule: HeaderRule::Exact("1".into()) }]);
    assert_eq!(
        forward(r).target,
        Target::Weighted(vec![
            WeightedCluster { cluster: "static".into(), weight: 90 },
            WeightedCluster { cluster: "api".into(), weight: 10 },
        ])
    );

    assert_eq!(
        l.routes[3].action,
        RouteAction::Redirect(Redirect {
            path: RedirectPath::PrefixRewrite("/new/".into()),
            host: None,
            https: false,
            status: 301
        })
    );
    assert_eq!(forward(&l.routes[4]).timeout, Some(Duration::from_secs(5)));

    let api = c.cluster("api").unwrap();
    assert_eq!(api.endpoints[1].resolved, vec![addr("127.0.0.1:19002")]);
    assert_eq!(api.lb, LbPolicy::RoundRobin);
    assert_eq!(api.connect_timeout, Duration::from_millis(250));
    let stat = c.cluster("static").unwrap();
    assert_eq!(stat.endpoints[0].address, "localhost:19003");
    assert!(stat.endpoints[0].resolved.iter().all(|a| a.ip().is_loopback() && a.port() == 19003));
    assert!(!stat.endpoints[0].resolved.is_empty());
    assert_eq!(stat.lb, LbPolicy::LeastRequest);
    assert_eq!(stat.max_connections, Some(1024));
    assert_eq!(
        stat.health_check,
        Some(HealthCheck {
            path: "/health".into(),
            host: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
            expected_statuses: vec![(200, 299)],
        })
    );
}

#[test]
fn every_default() {
    let c = ok(r#"
listeners:
  - name: l
    address: "[::1]:18080"
    routes:
      - match: {}
        cluster: app
      - match: { prefix: /r }
        redirect: { host: example.com }
      - match: { path: /x }
        cluster: app
        retries: {}
clusters:
  - name: app
    endpoints: [ 127.0.0.1:19000 ]
    health_check: { path: /h }
"#);
    assert_eq!(c.admin.address, addr("127.0.0.1:9901"));
    assert!(!c.admin.allow_remote);
    assert_eq!(c.workers, std::thread::available_parallelism().unwrap().get());
    assert_eq!(c.drain_timeout, Duration::from_secs(15));
    let l = &c.listeners[0];
    assert_eq!(l.address, addr("[::1]:18080"));
    assert_eq!(l.protocol, ListenerProtocol::Auto);
    assert_eq!(l.max_connections, 10_000);
    assert_eq!(l.max_request_headers_bytes, 61_440);
    assert_eq!(l.max_request_headers, 100);
    assert_eq!(l.request_headers_timeout, Some(Duration::from_secs(10)));
    assert_eq!(l.idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(l.time_left_header.as_deref(), Some("x-nuncio-expected-timeout-ms"));
    assert_eq!(l.time_left_header.as_deref(), Some(DEFAULT_TIME_LEFT_HEADER));
    assert_eq!(l.access_log, None);

    assert_eq!(
        l.routes[0].matcher,
        RouteMatch { host: None, path: PathMatch::Any, headers: vec![], methods: vec![], query: vec![] }
    );
    let f = forward(&l.routes[0]);
    assert_eq!(f.timeout, Some(Duration::from_secs(15)));
    assert_eq!((&f.retries, &f.prefix_rewrite, &f.host_rewrite), (&None, &None, &None));
    assert_eq!(
        l.routes[1].action,
        RouteAction::Redirect(Redirect {
            path: RedirectPath::Keep,
            host: Some("example.com".into()),
            https: false,
            status: 301
        })
    );
    assert_eq!(
        forward(&l.routes[2]).retries,
        Some(RetryPolicy {
            attempts: 1,
            on: vec![RetryOn::ConnectFailure, RetryOn::RefusedStream],
            per_try_timeout: None,
            backoff: Backoff { base: Duration::from_millis(25), max: Duration::from_millis(250) },
            hedge_on_per_try_timeout: false,
        })
    );

    let app = &c.clusters[0];
    assert_eq!(app.lb, LbPolicy::RoundRobin);
    assert_eq!(app.connect_timeout, Duration::from_secs(1));
    assert_eq!(app.protocol, UpstreamProtocol::Http1);
    assert_eq!(app.idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(app.hash_on, None);
    assert_eq!(app.dns_refresh, Some(Duration::from_secs(30)));
    assert_eq!(app.endpoints[0].weight, 1);
    // Circuit breakers: no limit unless given.
    assert_eq!(
        (app.max_connections, app.max_pending_requests, app.max_requests, app.max_retries),
        (None, None, None, None)
    );
    assert_eq!(app.when_all_unhealthy, AllUnhealthy::Fail);
    assert_eq!(app.outlier_detection, None);
    let hc = app.health_check.as_ref().unwrap();
    assert_eq!(hc.host, None);
    assert_eq!((hc.interval, hc.timeout), (Duration::from_secs(5), Duration::from_secs(1)));
    assert_eq!((hc.unhealthy_threshold, hc.healthy_threshold), (3, 2));
    assert_eq!(hc.expected_statuses, vec![(200, 299)]);
    assert!(hc.is_expected(200) && hc.is_expected(299) && !hc.is_expected(301) && !hc.is_expected(199));
}

#[test]
fn every_field_set() {
    let c = ok(r#"
workers: 3
listeners:
  - name: l
    address: 127.0.0.1:18080
    protocol: http2
    max_connections: 5
    max_request_headers_bytes: 4096
    max_request_headers: 10
    request_headers_timeout: 0
    idle_timeout: 0s
    time_left_header: X-Deadline-Ms
    routes:
      - match: { host: "*.Example.COM", path: /a, headers: [ { name: X-A, present: true }, { name: x-b, present: false } ] }
        cluster: app
        timeout: 0
        retries: { attempts: 0, on: [reset, 5xx, gateway-error, 429], per_try_timeout: 1m }
        prefix_rewrite: /b
        host_rewrite: "internal:8080"
      - match: { prefix: /p }
        redirect: { path: /q, host: "[::1]:8443", status: 308 }
      - match: { path: /e }
        direct_response: { status: 503 }
clusters:
  - name: app
    endpoints: [ "[::1]:19000" ]
    lb: least_request
    protocol: http2
    idle_timeout: 1h
    connect_timeout: 2s
    health_check: { path: /h, expected_statuses: [200, "204"] }
"#);
    assert_eq!(c.workers, 3);
    let l = &c.listeners[0];
    assert_eq!(l.protocol, ListenerProtocol::Http2);
    assert_eq!((l.max_connections, l.max_request_headers_bytes, l.max_request_headers), (5, 4096, 10));
    assert_eq!((l.request_headers_timeout, l.idle_timeout), (None, None));
    assert_eq!(l.time_left_header.as_deref(), Some("x-deadline-ms"), "lower-cased");
    let m = &l.routes[0].matcher;
    assert_eq!(m.host, Some(HostMatch::Wildcard("example.com".into())));
    assert_eq!(
        m.headers,
        vec![
            HeaderMatch { name: "x-a".into(), rule: HeaderRule::Present },
            HeaderMatch { name: "x-b".into(), rule: HeaderRule::Absent },
        ]
    );
    let f = forward(&l.routes[0]);
    assert_eq!(f.timeout, None);
    let retries = f.retries.as_ref().unwrap();
    assert_eq!(retries.attempts, 0);
    assert_eq!(retries.on, vec![RetryOn::Reset, RetryOn::Status5xx, RetryOn::GatewayError, RetryOn::Status(429)]);
    assert_eq!(retries.per_try_timeout, Some(Duration::from_secs(60)));
    assert_eq!(f.prefix_rewrite.as_deref(), Some("/b"));
    assert_eq!(f.host_rewrite.as_deref(), Some("internal:8080"));
    assert_eq!(
        l.routes[1].action,
        RouteAction::Redirect(Redirect {
            path: RedirectPath::Replace("/q".into()),
            host: Some("[::1]:8443".into()),
            https: false,
            status: 308
        })
    );
    assert_eq!(l.routes[2].action, RouteAction::DirectResponse(DirectResponse { status: 503, body: None }));
    let app = &c.clusters[0];
    assert_eq!((app.lb, app.protocol), (LbPolicy::LeastRequest, UpstreamProtocol::Http2));
    assert_eq!((app.idle_timeout, app.connect_timeout), (Some(Duration::from_secs(3600)), Duration::from_secs(2)));
    assert_eq!(app.health_check.as_ref().unwrap().expected_statuses, vec![(200, 200), (204, 204)]);
}

#[test]
fn matching_helpers() {
    let exact = HostMatch::Exact("api.example.com".into());
    assert!(exact.matches("API.example.com"));
    assert!(exact.matches("api.example.com:8443"));
    assert!(!exact.matches("x.api.example.com"));
    let wild = HostMatch::Wildcard("example.com".into());
    assert!(wild.matches("a.b.example.com"));
    assert!(!wild.matches("example.com") && !wild.matches("badexample.com"));
    assert!(PathMatch::Any.matches("/anything"));
    assert!(PathMatch::Exact("/healthz".into()).matches("/healthz?full=1"));
}

// ---- errors: one of each kind, with exact position and path ----

#[test]
fn the_style_guide_example() {
    // The message STYLE.md shows, down to its position.
    let yaml = "\
admin:
  address: 127.0.0.1:19901
clusters:
  - name: app
    endpoints: [ 127.0.0.1:19000 ]
listeners:
  - name: l
    address: 127.0.0.1:18080
    routes:
      - match: { path: /a }
        cluster: app
      - { match: { path: /b }, cluster: app }
      - cluster: app
        timeout: 5x
        match: {}
";
    assert_eq!(
        error(yaml),
        r#"nuncio.yaml:14:18: listeners[0].routes[2].timeout: invalid duration "5x" (use 250ms, 5s, 1m or 1h); 0 means no timeout"#
    );
}

#[test]
fn unknown_field() {
    let yaml = with_routes("      - match: { prefix: / }\n        cluster: app\n        timout: 5s\n");
    assert_eq!(
        error(&yaml),
        "nuncio.yaml:7:9: listeners[0].routes[0].timout: unknown field `timout`, expected one of `match`, `cluster`, \
         `weighted_clusters`, `direct_response`, `redirect`, `timeout`, `retries`, `prefix_rewrite`, `host_rewrite`, `mirror`"
    );
}

#[test]
fn unknown_field_at_the_top_and_deep() {
    assert_eq!(
        error("listeners: []\nadmni: {}\n"),
        "nuncio.yaml:2:1: admni: unknown field `admni`, expected one of `admin`, `workers`, `drain_timeout`, \
         `tracing`, `listeners`, `clusters`, `overload`"
    );
    let yaml = with_routes("      - match: { headers: [ { name: a, exakt: b } ] }\n        cluster: app\n");
    assert_eq!(
        error(&yaml),
        "nuncio.yaml:5:40: listeners[0].routes[0].match.headers[0].exakt: unknown field `exakt`, \
         expected one of `name`, `exact`, `present`"
    );
}

#[test]
fn bad_duration() {
    let yaml = with_routes("      - match: {}\n        cluster: app\n        timeout: 5x\n");
    assert_eq!(
        error(&yaml),
        r#"nuncio.yaml:7:18: listeners[0].routes[0].timeout: invalid duration "5x" (use 250ms, 5s, 1m or 1h); 0 means no timeout"#
    );
    let yaml = "listeners: []\nclusters:\n  - name: a\n    endpoints: [127.0.0.1:1]\n    connect_timeout: 0\n";
    assert!(errors(yaml).contains(&"nuncio.yaml:5:22: clusters[0].connect_timeout: must be greater than 0".to_owned()));
}

#[test]
fn unknown_cluster() {
    let yaml = with_routes("      - match: {}\n        cluster: nope\n");
    assert_eq!(
        error(&yaml),
        r#"nuncio.yaml:6:18: listeners[0].routes[0].cluster: unknown cluster "nope" (defined: app)"#
    );
}

#[test]
fn duplicate_names() {
    let yaml = "\
listeners:
  - name: a
    address: 127.0.0.1:18080
    routes: [ { match: {}, cluster: c } ]
  - name: a
    address: 127.0.0.1:18081
    routes: [ { match: {}, cluster: c } ]
clusters:
  - name: c
    endpoints: [ 127.0.0.1:19000 ]
  - name: c
    endpoints: [ 127.0.0.1:19001 ]
";
    assert_eq!(
        errors(yaml),
        [
            r#"nuncio.yaml:5:11: listeners[1].name: duplicate listener name "a" (also listeners[0], line 2)"#,
            r#"nuncio.yaml:11:11: clusters[1].name: duplicate cluster name "c" (also clusters[0], line 9)"#,
        ]
    );
}

#[test]
fn duplicate_field() {
    let yaml = "listeners:\n  - name: a\n    name: b\n";
    assert_eq!(error(yaml), "nuncio.yaml:3:5: listeners[0].name: given twice in the same mapping");
}

#[test]
fn zero_weight() {
    let yaml = with_routes("      - match: {}\n        weighted_clusters: [ { cluster: app, weight: 0 } ]\n");
    assert_eq!(
        error(&yaml),
        "nuncio.yaml:6:54: listeners[0].routes[0].weighted_clusters[0].weight: must be greater than 0"
    );
}

#[test]
fn bad_status() {
    let yaml = with_routes(
        "      - match: {}\n        direct_response: { status: 700 }\n      - match: {}\n        redirect: { host: a, status: 200 }\n",
    );
    assert_eq!(
        errors(&yaml),
        [
            r#"nuncio.yaml:6:36: listeners[0].routes[0].direct_response.status: invalid status "700" (use a number from 200 to 599)"#,
            r#"nuncio.yaml:8:38: listeners[0].routes[1].redirect.status: invalid status "200" (use 301, 302, 303, 307 or 308)"#,
        ]
    );
}

#[test]
fn both_path_and_prefix() {
    let yaml = with_routes("      - match: { path: /a, prefix: /b }\n        cluster: app\n");
    assert_eq!(
        error(&yaml),
        "nuncio.yaml:5:28: listeners[0].routes[0].match.prefix: use one of `path` (exact), `prefix` or `regex`, not `path` too"
    );
}

#[test]
fn no_action() {
    let yaml = with_routes("      - match: { prefix: / }\n        timeout: 1s\n");
    assert_eq!(
        error(&yaml),
        "nuncio.yaml:5:9: listeners[0].routes[0]: no action: give one of cluster, weighted_clusters, direct_response or redirect"
    );
}

#[test]
fn two_actions() {
    let yaml = with_routes("      - match: {}\n        cluster: app\n        direct_response: { status: 200 }\n");
    assert_eq!(
        error(&yaml),
        "nuncio.yaml:7:9: listeners[0].routes[0].direct_response: a route has exactly one action, and this one already has `cluster`"
    );
}

#[test]
fn forwarding_settings_on_a_direct_response() {
    let yaml = with_routes("      - match: {}\n        direct_response: { status: 200 }\n        timeout: 1s\n");
    assert_eq!(
        error(&yaml),
        "nuncio.yaml:7:9: listeners[0].routes[0].timeout: only applies to routes that forward to a cluster, not to `direct_response`"
    );
}

#[test]
fn unresolvable_endpoint() {
    let yaml = "listeners: []\nclusters:\n  - name: a\n    endpoints:\n      - 127.0.0.1:19000\n      - no-such-host.invalid:80\n";
    let all = errors(yaml);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0], "nuncio.yaml:1:12: listeners: needs at least one listener");
    assert!(
        all[1].starts_with(r#"nuncio.yaml:6:9: clusters[0].endpoints[1]: cannot resolve "no-such-host.invalid": "#),
        "{}",
        all[1]
    );
}

#[test]
fn bad_addresses() {
    let yaml = "\
admin: { address: localhost:9901 }
listeners:
  - name: a
    address: 127.0.0.1
    routes: [ { match: {}, direct_response: { status: 200 } } ]
clusters:
  - name: c
    endpoints: [ 127.0.0.1, 'http://127.0.0.1:80', '::1:80' ]
";
    assert_eq!(
        errors(yaml),
        [
            r#"nuncio.yaml:1:19: admin.address: invalid address "localhost:9901" (use IP:PORT, e.g. 127.0.0.1:8080 or [::]:8080)"#,
            r#"nuncio.yaml:4:14: listeners[0].address: invalid address "127.0.0.1" (use IP:PORT, e.g. 127.0.0.1:8080 or [::]:8080)"#,
            r#"nuncio.yaml:8:18: clusters[0].endpoints[0]: invalid endpoint "127.0.0.1": missing port (use HOST:PORT, e.g. localhost:8080)"#,
            r#"nuncio.yaml:8:29: clusters[0].endpoints[1]: invalid endpoint "http://127.0.0.1:80": write HOST:PORT, without a scheme"#,
            r#"nuncio.yaml:8:52: clusters[0].endpoints[2]: invalid endpoint "::1:80": put an IPv6 address in brackets, as in [::1]:8080"#,
        ]
    );
}

#[test]
fn address_clashes() {
    let yaml = "\
listeners:
  - name: a
    address: 127.0.0.1:9901
    routes: [ { match: {}, direct_response: { status: 200 } } ]
  - name: b
    address: 127.0.0.1:0
    routes: [ { match: {}, direct_response: { status: 200 } } ]
  - name: c
    address: 127.0.0.1:0
    routes: [ { match: {}, direct_response: { status: 200 } } ]
";
    assert_eq!(
        error(yaml),
        "nuncio.yaml:3:14: listeners[0].address: address 127.0.0.1:9901 is already used by admin.address"
    );
}

#[test]
fn missing_fields() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:18080
  - name: b
    routes:
      - cluster: c
clusters:
  - name: c
";
    assert_eq!(
        errors(yaml),
        [
            "nuncio.yaml:2:5: listeners[0].name: missing (every listener needs a unique name)",
            "nuncio.yaml:2:5: listeners[0].routes: missing (a listener needs at least one route)",
            "nuncio.yaml:3:5: listeners[1].address: missing (the IP:PORT to listen on, e.g. 127.0.0.1:8080)",
            "nuncio.yaml:5:9: listeners[1].routes[0].match: missing (use `match: {}` or `match: { prefix: / }` to match every request)",
            "nuncio.yaml:7:5: clusters[0].endpoints: missing (a list of HOST:PORT)",
        ]
    );
    assert_eq!(error("workers: 1\n"), "nuncio.yaml:1:1: listeners: missing (a config needs at least one listener)");
}

#[test]
fn bad_values_in_matches_and_retries() {
    let yaml = with_routes(
        "      - match: { host: 'a.*.com', path: nope, headers: [ { name: 'a b', exact: x }, { name: y, present: yes } ] }
        cluster: app
        retries: { attempts: -1, on: [ 5xx, 5xx, sometimes, 600 ] }
        prefix_rewrite: /x
",
    );
    assert_eq!(
        errors(&yaml),
        [
            r#"nuncio.yaml:5:24: listeners[0].routes[0].match.host: invalid host "a.*.com": a wildcard must be the whole first label, as in *.example.com"#,
            r#"nuncio.yaml:5:41: listeners[0].routes[0].match.path: invalid path "nope": must start with /"#,
            r#"nuncio.yaml:5:66: listeners[0].routes[0].match.headers[0].name: invalid header name "a b""#,
            r#"nuncio.yaml:5:105: listeners[0].routes[0].match.headers[1].present: invalid value "yes" (use true or false)"#,
            r#"nuncio.yaml:7:30: listeners[0].routes[0].retries.attempts: invalid number "-1" (use a whole number such as 1)"#,
            r#"nuncio.yaml:7:45: listeners[0].routes[0].retries.on[1]: "5xx" is listed twice"#,
            r#"nuncio.yaml:7:50: listeners[0].routes[0].retries.on[2]: invalid retry condition "sometimes" (use connect-failure, refused-stream, reset, 5xx, gateway-error or a status code from 100 to 599)"#,
            r#"nuncio.yaml:7:61: listeners[0].routes[0].retries.on[3]: invalid retry condition "600" (use connect-failure, refused-stream, reset, 5xx, gateway-error or a status code from 100 to 599)"#,
        ]
    );
}

#[test]
fn prefix_rewrite_needs_a_path_match() {
    let yaml = with_routes("      - match: {}\n        cluster: app\n        prefix_rewrite: /x\n");
    assert_eq!(
        error(&yaml),
        "nuncio.yaml:7:9: listeners[0].routes[0].prefix_rewrite: needs a `prefix` or `path` in the route's match (it replaces the matched part)"
    );
}

#[test]
fn several_errors_at_once() {
    let yaml = with_routes(
        "      - match: { prefix: /a }
        cluster: nope
      - match: { prefix: /b }
        weighted_clusters:
          - { cluster: app, weight: 0 }
          - { cluster: gone, weight: 1 }
",
    );
    assert_eq!(
        errors(&yaml),
        [
            r#"nuncio.yaml:6:18: listeners[0].routes[0].cluster: unknown cluster "nope" (defined: app)"#,
            "nuncio.yaml:9:37: listeners[0].routes[1].weighted_clusters[0].weight: must be greater than 0",
            r#"nuncio.yaml:10:24: listeners[0].routes[1].weighted_clusters[1].cluster: unknown cluster "gone" (defined: app)"#,
        ]
    );
}

#[test]
fn structure_and_syntax_errors_stop_at_the_first() {
    assert_eq!(error("listeners: 5\n"), "nuncio.yaml:1:12: listeners: invalid type: integer `5`, expected a sequence");
    assert_eq!(
        error("listeners: [ { name: a, routes: [ 1, 2 }\n"),
        "nuncio.yaml:1:40: listeners[0].routes: invalid YAML: while parsing a flow sequence, expected ',' or ']'"
    );
    assert_eq!(
        error(""),
        "nuncio.yaml:1:1: the file is empty: a config needs at least `listeners` (see docs/config.md)"
    );
}

#[test]
fn errors_display_one_per_line() {
    let yaml = with_routes("      - match: {}\n        cluster: x\n      - match: {}\n        cluster: y\n");
    let errors = Config::from_yaml(&yaml, "nuncio.yaml").unwrap_err();
    assert_eq!(errors.len(), 2);
    assert_eq!(
        errors.to_string(),
        "nuncio.yaml:6:18: listeners[0].routes[0].cluster: unknown cluster \"x\" (defined: app)\n\
         nuncio.yaml:8:18: listeners[0].routes[1].cluster: unknown cluster \"y\" (defined: app)"
    );
    let first = &errors.errors()[0];
    assert_eq!((first.file.as_str(), first.line, first.column), ("nuncio.yaml", 6, 18));
    assert_eq!(first.path, "listeners[0].routes[0].cluster");
}

// ---- files, the built-in configs, dumps ----

#[test]
fn load_reads_a_file() {
    let dir = std::env::temp_dir().join(format!("nuncio-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nuncio.yaml");
    std::fs::write(&path, BASIC.replace("timeout: 5s", "timeout: 5x")).unwrap();
    let errors = Config::load(&path).unwrap_err();
    assert_eq!(errors.errors()[0].file, path.display().to_string());
    assert_eq!(errors.errors()[0].line, 23);
    std::fs::write(&path, BASIC).unwrap();
    assert_eq!(Config::load(&path).unwrap(), ok(BASIC));
    std::fs::remove_dir_all(&dir).unwrap();

    let missing = Config::load(&dir.join("missing.yaml")).unwrap_err().to_string();
    assert!(missing.starts_with(&format!("{}: cannot read the config file: ", dir.join("missing.yaml").display())));
}

#[test]
fn builtin_default() {
    let c = Config::builtin_default();
    assert_eq!(c.admin.address, addr("127.0.0.1:9901"));
    assert_eq!(c.listeners.len(), 1);
    let l = &c.listeners[0];
    assert_eq!(l.address, addr("127.0.0.1:8080"));
    assert_eq!(l.routes.len(), 1);
    assert_eq!(l.routes[0].matcher, RouteMatch::default());
    let RouteAction::DirectResponse(d) = &l.routes[0].action else { panic!("{:?}", l.routes[0].action) };
    assert_eq!(d.status, 200);
    let body = d.body.as_deref().unwrap();
    for needle in ["nuncio is running", "nuncio -c FILE", "nuncio --upstream http://HOST:PORT", "docs/config.md"] {
        assert!(body.contains(needle), "{needle:?} not in {body}");
    }
    assert!(c.clusters.is_empty());
    assert_eq!(ok(&c.to_yaml()), c);
}

#[test]
fn single_upstream() {
    let listen = addr("127.0.0.1:18080");
    let c = Config::single_upstream("http://localhost:19000", listen).unwrap();
    assert_eq!(c.listeners[0].address, listen);
    assert_eq!(c.listeners[0].routes.len(), 1);
    let f = forward(&c.listeners[0].routes[0]);
    assert_eq!(f.target, Target::Cluster("upstream".into()));
    assert_eq!(f.host_rewrite.as_deref(), Some("localhost:19000"));
    let up = c.cluster("upstream").unwrap();
    assert_eq!(up.endpoints[0].address, "localhost:19000");
    assert!(up.endpoints[0].resolved.contains(&addr("127.0.0.1:19000")));
    assert_eq!(ok(&c.to_yaml()), c);

    let c = Config::single_upstream("http://127.0.0.1/", listen).unwrap();
    assert_eq!(c.clusters[0].endpoints[0].resolved, vec![addr("127.0.0.1:80")]);
    let c = Config::single_upstream("http://[::1]:19000", listen).unwrap();
    assert_eq!(c.clusters[0].endpoints[0].resolved, vec![addr("[::1]:19000")]);
}

#[test]
fn single_upstream_rejects_what_it_cannot_serve() {
    let listen = addr("127.0.0.1:18080");
    let err = |url: &str| Config::single_upstream(url, listen).unwrap_err().to_string();
    assert_eq!(
        err("https://example.com"),
        r#"--upstream:1:1: upstream: invalid upstream URL "https://example.com": https is not supported yet (use http://HOST:PORT)"#
    );
    assert_eq!(
        err("localhost:3000"),
        r#"--upstream:1:1: upstream: invalid upstream URL "localhost:3000": missing http:// (use http://HOST:PORT)"#
    );
    assert_eq!(
        err("http://localhost:3000/api"),
        r#"--upstream:1:22: upstream: invalid upstream URL "http://localhost:3000/api": a path, query or fragment is not supported (use http://HOST:PORT)"#
    );
    assert!(err("http://no-such-host.invalid").starts_with(
        r#"--upstream:1:8: upstream: invalid upstream URL "http://no-such-host.invalid": cannot resolve "no-such-host.invalid""#
    ));
    assert!(err("http://a@localhost").contains("credentials are not supported"));
    assert!(err("http://").contains("missing host"));
    assert_eq!(
        Config::single_upstream("http://localhost:19000", addr("127.0.0.1:9901")).unwrap_err().to_string(),
        "--listen:1:1: listen: address 127.0.0.1:9901 is already used by the admin interface"
    );
}

#[test]
fn dump_reads_back_with_defaults_spelled_out() {
    let c = ok(BASIC);
    let dump = c.to_yaml();
    assert_eq!(ok(&dump), c);
    for line in [
        "max_request_headers_bytes: 61440",
        "request_headers_timeout: 10s",
        "connect_timeout: 250ms",
        "lb: least_request",
    ] {
        assert!(dump.contains(line), "{line:?} not in\n{dump}");
    }
}

/// One listener with `time_left_header: {value}` (on line 4, its value at
/// column 23).
fn with_time_left_header(value: &str) -> String {
    format!(
        "listeners:\n  - name: l\n    address: 127.0.0.1:18080\n    time_left_header: {value}\n    routes:\n      - match: {{}}\n        direct_response: {{ status: 204 }}\n"
    )
}

#[test]
fn time_left_header_names_a_field_or_none() {
    let header = |value: &str| ok(&with_time_left_header(value)).listeners[0].time_left_header.clone();
    assert_eq!(header("x-deadline"), Some("x-deadline".to_owned()));
    assert_eq!(header("X-Upstream-Budget_ms"), Some("x-upstream-budget_ms".to_owned()));
    assert_eq!(header("none"), None);
    assert_eq!(header("NONE"), None, "any case");
    assert_eq!(header("~"), Some(DEFAULT_TIME_LEFT_HEADER.to_owned()), "set to nothing: the default");

    // Off, and a custom name, read back from the dump.
    for value in ["none", "x-deadline"] {
        let config = ok(&with_time_left_header(value));
        let dump = config.to_yaml();
        assert!(dump.contains(&format!("time_left_header: {value}\n")), "{dump}");
        assert_eq!(ok(&dump), config);
    }
}

#[test]
fn time_left_header_refuses_what_is_not_a_field_it_may_set() {
    let at = "nuncio.yaml:4:23: listeners[0].time_left_header";
    for (value, message) in [
        ("\"\"", "empty (write `none` to send no time-left field)".to_owned()),
        (
            "\"x deadline\"",
            "invalid header name \"x deadline\" (a token: letters, digits and !#$%&'*+-.^_`|~), or none".to_owned(),
        ),
        (
            "x/deadline",
            "invalid header name \"x/deadline\" (a token: letters, digits and !#$%&'*+-.^_`|~), or none".to_owned(),
        ),
        (
            "grpc-timeout",
            "gRPC requests get `grpc-timeout` anyway; name the field for the other requests (or none)".to_owned(),
        ),
        (
            "Content-Length",
            "`content-length` is set or removed by nuncio itself (framing, hop-by-hop and forwarding fields)"
                .to_owned(),
        ),
        (
            "connection",
            "`connection` is set or removed by nuncio itself (framing, hop-by-hop and forwarding fields)".to_owned(),
        ),
        ("host", "`host` is set or removed by nuncio itself (framing, hop-by-hop and forwarding fields)".to_owned()),
        (
            "x-request-id",
            "`x-request-id` is set or removed by nuncio itself (framing, hop-by-hop and forwarding fields)".to_owned(),
        ),
    ] {
        assert_eq!(error(&with_time_left_header(value)), format!("{at}: {message}"), "{value}");
    }
}

#[test]
fn empty_lists_and_zero_counts() {
    let yaml = "\
workers: 0
listeners:
  - name: l
    address: 127.0.0.1:18080
    max_request_headers: 0
    routes:
      - match: {}
        weighted_clusters: []
      - match: { prefix: /a }
        cluster: app
        retries: { on: [] }
      - match: { prefix: /b }
        redirect: { status: 302 }
      - match: { headers: [ { name: a, exact: b, present: true }, { name: c } ] }
        cluster: app
  - name: m
    address: 127.0.0.1:18081
    routes: []
clusters:
  - name: app
    endpoints: []
";
    assert_eq!(
        errors(yaml),
        [
            "nuncio.yaml:1:10: workers: must be at least 1",
            "nuncio.yaml:5:26: listeners[0].max_request_headers: must be at least 1",
            "nuncio.yaml:8:28: listeners[0].routes[0].weighted_clusters: needs at least one cluster",
            "nuncio.yaml:11:24: listeners[0].routes[1].retries.on: needs at least one condition (or leave `on` out for the default)",
            "nuncio.yaml:13:19: listeners[0].routes[2].redirect: would redirect to the same URL: give `path`, `prefix_rewrite`, `host` or `https: true`",
            "nuncio.yaml:14:50: listeners[0].routes[3].match.headers[0].present: use either `exact` or `present`, not both",
            "nuncio.yaml:14:67: listeners[0].routes[3].match.headers[1]: give `exact: VALUE`, or `present: true` (or false, for absent)",
            "nuncio.yaml:18:13: listeners[1].routes: needs at least one route",
            "nuncio.yaml:21:16: clusters[0].endpoints: needs at least one endpoint",
        ]
    );
}

/// Issue 16's example: richer matching, back-off, hedging, mirrors, a
/// retry budget.
#[test]
fn fan_out_and_matching() {
    let yaml = r#"
listeners:
  - name: l
    address: 127.0.0.1:18080
    routes:
      - match: { prefix: /api/, methods: [GET, HEAD], query: [ { name: debug, present: false }, { name: v, exact: "2" } ] }
        cluster: api
        timeout: 2s
        retries:
          attempts: 3
          on: [connect-failure, refused-stream, "503", reset]
          per_try_timeout: 200ms
          backoff: { base: 25ms, max: 250ms }
          hedge_on_per_try_timeout: true
        mirror:
          - { cluster: shadow, percent: 10 }
          - { cluster: other, percent: 0.5, timeout: 1s }
      - match: { regex: "^/v[0-9]+/users/[^/]+$" }
        cluster: users
clusters:
  - { name: api, endpoints: [ 127.0.0.1:19001 ], retry_budget: { percent: 20, min_retry_concurrency: 3 } }
  - { name: shadow, endpoints: [ 127.0.0.1:19002 ] }
  - { name: other, endpoints: [ 127.0.0.1:19003 ] }
  - { name: users, endpoints: [ 127.0.0.1:19004 ], retry_budget: {} }
"#;
    let c = ok(yaml);
    let routes = &c.listeners[0].routes;
    let m = &routes[0].matcher;
    assert_eq!(m.methods, ["GET", "HEAD"]);
    assert_eq!(
        m.query,
        [
            QueryMatch { name: "debug".into(), rule: HeaderRule::Absent },
            QueryMatch { name: "v".into(), rule: HeaderRule::Exact("2".into()) }
        ]
    );
    let f = forward(&routes[0]);
    let retries = f.retries.as_ref().unwrap();
    assert_eq!(retries.backoff, Backoff { base: Duration::from_millis(25), max: Duration::from_millis(250) });
    assert!(retries.hedge_on_per_try_timeout);
    assert_eq!(
        f.mirrors,
        [
            Mirror { cluster: "shadow".into(), per_million: 100_000, timeout: Some(Duration::from_secs(2)) },
            Mirror { cluster: "other".into(), per_million: 5_000, timeout: Some(Duration::from_secs(1)) },
        ]
    );
    let PathMatch::Regex(regex) = &routes[1].matcher.path else { panic!("{:?}", routes[1].matcher.path) };
    assert_eq!(regex.as_str(), "^/v[0-9]+/users/[^/]+$");
    assert!(routes[1].matcher.path.matches("/v2/users/ann?x=1"));
    assert!(!routes[1].matcher.path.matches("/v2/users/ann/posts"));
    assert!(!routes[1].matcher.path.matches("/v/users/ann"));
    assert_eq!(c.clusters[0].retry_budget, Some(RetryBudget { percent: 20, min_retry_concurrency: 3 }));
    assert_eq!(c.clusters[3].retry_budget, Some(RetryBudget { percent: 20, min_retry_concurrency: 3 }), "defaults");
    // The dump reads back as the same config.
    let dumped = c.to_yaml();
    assert_eq!(ok(&dumped).listeners[0].routes, c.listeners[0].routes, "{dumped}");
}

/// A regular expression is anchored at both ends, as Envoy's `safe_regex`.
#[test]
fn a_path_regex_matches_the_whole_path() {
    let regex = PathRegex::new("/api/[a-z]+").unwrap();
    assert!(regex.is_match("/api/users"));
    assert!(!regex.is_match("/v1/api/users"));
    assert!(!regex.is_match("/api/users/1"));
}

#[test]
fn bad_fan_out_and_matching_settings_are_refused_at_their_line() {
    let yaml = r#"
listeners:
  - name: l
    address: 127.0.0.1:18080
    routes:
      - match: { regex: "^/v[0-9+/users$" }
        cluster: api
      - match: { prefix: /a, regex: "/b" }
        cluster: api
      - match: { methods: ["GE T"], query: [ { name: "a=b", present: true } ] }
        cluster: api
        retries: { hedge_on_per_try_timeout: true, backoff: { base: 100ms, max: 10ms } }
        mirror: [ { cluster: nowhere, percent: 150 } ]
      - match: { regex: "/r/.*" }
        cluster: api
        prefix_rewrite: /x/
      - match: {}
        direct_response: { status: 200 }
        mirror: [ { cluster: api } ]
clusters:
  - { name: api, endpoints: [ 127.0.0.1:19001 ], retry_budget: { percent: 0 } }
"#;
    let all = errors(yaml);
    let expect = [
        "nuncio.yaml:6:25: listeners[0].routes[0].match.regex: invalid regular expression",
        "nuncio.yaml:8:30: listeners[0].routes[1].match.regex: use one of `path` (exact), `prefix` or `regex`, not `prefix` too",
        "nuncio.yaml:10:28: listeners[0].routes[2].match.methods[0]: invalid method \"GE T\"",
        "nuncio.yaml:10:54: listeners[0].routes[2].match.query[0].name: invalid query parameter name \"a=b\"",
        "nuncio.yaml:12:20: listeners[0].routes[2].retries.hedge_on_per_try_timeout: needs a per_try_timeout",
        "nuncio.yaml:12:81: listeners[0].routes[2].retries.backoff.max: must be at least base (100ms)",
        "nuncio.yaml:13:30: listeners[0].routes[2].mirror[0].cluster: unknown cluster \"nowhere\"",
        "nuncio.yaml:13:48: listeners[0].routes[2].mirror[0].percent: invalid percent \"150\"",
        "nuncio.yaml:16:9: listeners[0].routes[3].prefix_rewrite: needs a `prefix` or `path`",
        "nuncio.yaml:19:9: listeners[0].routes[4].mirror: only applies to routes that forward to a cluster",
        "nuncio.yaml:21:75: clusters[0].retry_budget.percent:",
    ];
    for line in expect {
        assert!(all.iter().any(|e| e.starts_with(line)), "missing {line:?} in:\n{}", all.join("\n"));
    }
    assert_eq!(all.len(), expect.len(), "{}", all.join("\n"));
}

#[test]
fn overload_thresholds() {
    let c = ok(
        "overload:\n  downstream_connections: { shed: 900, refuse: 1000 }\n  memory: { shed: 512MiB }\nlisteners:\n  - name: l\n    address: 127.0.0.1:18080\n    routes:\n      - match: {}\n        direct_response: { status: 200 }\n",
    );
    assert_eq!(c.overload.downstream_connections, Thresholds { shed: Some(900), refuse: Some(1000) });
    assert_eq!(c.overload.memory, Thresholds { shed: Some(512 << 20), refuse: None });
    assert_eq!(ok(&c.to_yaml()).overload, c.overload, "the dump reads back");
    let all = errors(
        "overload:\n  downstream_connections: { shed: 10, refuse: 5 }\n  memory: { shed: 1PiB }\nlisteners:\n  - name: l\n    address: 127.0.0.1:18080\n    routes:\n      - match: {}\n        direct_response: { status: 200 }\n",
    );
    assert!(all.iter().any(|e| e.starts_with("nuncio.yaml:2:47: overload.downstream_connections.refuse: must be at least `shed`")), "{all:?}");
    assert!(
        all.iter().any(|e| e.starts_with("nuncio.yaml:3:19: overload.memory.shed: invalid value \"1PiB\"")),
        "{all:?}"
    );
}
