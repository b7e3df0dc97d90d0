//! `ext_authz` through the real proxy: nuncio loaded from a config that
//! names the filter (as the `nuncio` command loads one), a real
//! authorization service (a cluster of that config) and a real upstream,
//! a raw client.

use std::net::SocketAddr;

use nuncio_config::Config;
use nuncio_proxy::{FilterKinds, Options};
use nuncio_test_support::{
    Admin, Answer, Proxy, RawClient, Upstream, dead_address, exchange, wait_until, with_addresses,
};

/// One listener `main` whose every request passes `ext_authz` with
/// `config` (a flow mapping) on its way to cluster `app`; cluster `authz`
/// is the service, speaking `protocol`.
fn config(filter: &str, protocol: &str) -> String {
    format!(
        "
admin: {{ address: 127.0.0.1:0 }}
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    filters:
      - name: ext_authz
        config: {filter}
    routes:
      - match: {{}}
        cluster: app
clusters:
  - name: app
    endpoints: [ '{{app}}' ]
  - name: authz
    endpoints: [ '{{authz}}' ]
    protocol: {protocol}
    connect_timeout: 1s
"
    )
}

/// nuncio from a whole config, loaded as the `nuncio` command loads one
/// (the built-in filter kinds), each `{name}` replaced by its address.
fn with_builtin_kinds(yaml: &str, addresses: &[(&str, SocketAddr)]) -> Proxy {
    let mut options = Options::default();
    options.filter_kinds = builtin_kinds();
    Proxy::start_with(yaml, addresses, options)
}

/// The filter kinds the `nuncio` command knows.
fn builtin_kinds() -> FilterKinds {
    FilterKinds::new(nuncio_filters::builtin())
}

/// `yaml` checked as the `nuncio` command checks a file named
/// `nuncio.yaml`; the errors as it prints them.
fn load(yaml: &str) -> Result<Config, String> {
    Config::from_yaml_with(yaml, "nuncio.yaml", &builtin_kinds()).map_err(|e| e.to_string())
}

fn start(filter: &str, upstream: &Upstream, authz: SocketAddr) -> Proxy {
    with_builtin_kinds(&config(filter, "http1"), &[("app", upstream.addr), ("authz", authz)])
}

// ---------------------------------------------------------------- allow --

#[test]
fn an_allowed_request_goes_upstream_with_the_copied_fields() {
    let upstream = Upstream::plain("app");
    let authz = Upstream::scripted("authz", |_| Answer::status(200).with("x-user", "ada").with("x-internal", "no"));
    let proxy = start(
        "{ cluster: authz, path_prefix: /authz, headers_to_copy: [ x-user ], headers_to_send: [ authorization ] }",
        &upstream,
        authz.addr,
    );
    let reply = proxy.exchange(
        "GET /orders?id=7 HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer t0k3n\r\nCookie: c=1\r\n\
         X-User: mallory\r\nX-Nuncio-Ext-Authz-Failure-Mode-Allowed: true\r\n\r\n",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "hello from app\n");

    let check = authz.last_request();
    assert_eq!(check.method, "GET");
    assert_eq!(check.target, "/authz/orders?id=7", "the prefix and the original path and query");
    assert_eq!(check.header("host"), "shop", "the original authority");
    assert_eq!(check.header("authorization"), "Bearer t0k3n");
    assert_eq!(check.header("cookie"), "", "only the fields named are sent");
    assert_eq!(check.body, b"");

    let seen = upstream.last_request();
    assert_eq!(seen.all("x-user"), ["ada"], "the service's value replaces the client's");
    assert_eq!(seen.header("x-internal"), "", "only the fields named are copied");
    assert_eq!(seen.header("x-nuncio-ext-authz-failure-mode-allowed"), "", "a client cannot claim it");
    assert_eq!(seen.header("authorization"), "Bearer t0k3n", "the request itself is unchanged");

    // The call counts into the service's cluster like any upstream request.
    wait_until("the check counted in cluster authz's stats", || {
        let stats = proxy.stats();
        stats.contains("nuncio_upstream_rq_total{cluster=\"authz\"}: 1\n")
            && stats.contains("nuncio_upstream_rq_class_total{class=\"2xx\",cluster=\"authz\"}: 1\n")
    });
}

#[test]
fn checks_reuse_the_pooled_connection() {
    let upstream = Upstream::plain("app");
    let authz = Upstream::scripted("authz", |_| Answer::status(204));
    let proxy = start("{ cluster: authz }", &upstream, authz.addr);
    for _ in 0..3 {
        assert_eq!(proxy.get("/").status, 200);
    }
    assert_eq!(authz.requests().len(), 3);
    wait_until("three checks counted", || proxy.stats().contains("nuncio_upstream_rq_total{cluster=\"authz\"}: 3\n"));
    let stats = proxy.stats();
    assert!(
        stats.contains("nuncio_upstream_cx_total{cluster=\"authz\"}: 1\n"),
        "one connection for the three:\n{stats}"
    );
}

// ----------------------------------------------------------------- deny --

#[test]
fn a_denial_passes_the_services_status_body_and_fields() {
    let upstream = Upstream::plain("app");
    let authz = Upstream::scripted("authz", |check| {
        Answer::status(401)
            .with("www-authenticate", "Bearer realm=\"shop\"")
            .with("connection", "keep-alive")
            .body(&format!("no entry to {}\n", check.target))
    });
    let proxy = start("{ cluster: authz }", &upstream, authz.addr);
    let reply = proxy.get("/admin");
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.text(), "no entry to /admin\n");
    assert_eq!(reply.header("www-authenticate"), "Bearer realm=\"shop\"");
    assert_eq!(reply.header("content-length"), "19");
    assert!(upstream.requests().is_empty(), "nothing went upstream");
}

// ------------------------------------------------------ no decision --

#[test]
fn a_service_down_fails_closed_with_status_on_error() {
    let upstream = Upstream::plain("app");
    let proxy = start("{ cluster: authz, status_on_error: 503 }", &upstream, dead_address());
    let reply = proxy.get("/");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().contains("cannot connect to cluster authz"), "{}", reply.text());
    assert!(upstream.requests().is_empty(), "nothing went upstream");
}

#[test]
fn a_service_down_fails_open_with_failure_mode_allow() {
    let upstream = Upstream::plain("app");
    let proxy = start("{ cluster: authz, failure_mode_allow: true }", &upstream, dead_address());
    let reply = proxy.get("/");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.last_request().header("x-nuncio-ext-authz-failure-mode-allowed"), "true");
}

#[test]
fn a_service_slower_than_the_timeout_is_no_decision() {
    let upstream = Upstream::plain("app");
    let authz = Upstream::scripted("authz", |_| Answer::Hold);
    let proxy = start("{ cluster: authz, timeout: 100ms }", &upstream, authz.addr);
    let reply = proxy.get("/");
    assert_eq!(reply.status, 403, "the default status_on_error: {}", reply.text());
    assert!(reply.text().contains("did not answer in time"), "{}", reply.text());
    assert!(upstream.requests().is_empty());
    // The call was dropped, its connection closed.
    wait_until("the service to see the check abandoned", || authz.abandoned() == 1);
    wait_until("the timeout counted", || {
        proxy.stats().contains("nuncio_upstream_rq_timeout_total{cluster=\"authz\"}: 1\n")
    });
}

#[test]
fn a_client_leaving_cancels_the_pending_check() {
    let upstream = Upstream::plain("app");
    let authz =
        Upstream::scripted("authz", |check| if check.target == "/hold" { Answer::Hold } else { Answer::status(200) });
    // A long timeout: only the client's leaving can end the check.
    let proxy = start("{ cluster: authz, timeout: 1h }", &upstream, authz.addr);
    let mut client = RawClient::connect(proxy.addr());
    client.send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_until("the check to reach the service", || authz.requests().len() == 1);
    drop(client);
    wait_until("the service to see the check abandoned", || authz.abandoned() == 1);
    assert!(upstream.requests().is_empty(), "nothing went upstream for a client that left");
    // The proxy serves on.
    assert_eq!(proxy.get("/").status, 200);
}

#[test]
fn the_time_left_reaches_the_service() {
    let upstream = Upstream::plain("app");
    let authz = Upstream::scripted("authz", |_| Answer::status(200));
    let proxy = start("{ cluster: authz, timeout: 5s }", &upstream, authz.addr);
    assert_eq!(proxy.get("/").status, 200);
    let left: u64 =
        authz.last_request().header("x-nuncio-expected-timeout-ms").parse().expect("the time left in milliseconds");
    assert!((1..=5000).contains(&left), "within the 5s timeout: {left}");
}

// ------------------------------------------------------------- counted --

#[test]
fn every_decision_is_counted_per_listener() {
    let upstream = Upstream::plain("app");
    let authz = Upstream::scripted("authz", |check| match check.target.as_str() {
        "/ok" => Answer::status(200),
        "/hold" => Answer::Hold,
        _ => Answer::status(403),
    });
    // Two listeners: one refusing without a decision, one letting through.
    let yaml = "
admin: { address: 127.0.0.1:0 }
workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
    filters:
      - name: ext_authz
        config: { cluster: authz, timeout: 100ms }
    routes: [ { match: {}, cluster: app } ]
  - name: open
    address: 127.0.0.1:0
    filters:
      - name: ext_authz
        config: { cluster: authz, timeout: 100ms, failure_mode_allow: true }
    routes: [ { match: {}, cluster: app } ]
clusters:
  - name: app
    endpoints: [ '{app}' ]
  - name: authz
    endpoints: [ '{authz}' ]
";
    let proxy = with_builtin_kinds(yaml, &[("app", upstream.addr), ("authz", authz.addr)]);
    let open = proxy.listener("open");
    let get = |addr, path: &str| exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")).status;
    let mut answered = Vec::new();
    for path in ["/ok", "/ok", "/no", "/hold", "/ok", "/no", "/no"] {
        answered.push(get(proxy.addr(), path));
    }
    for path in ["/ok", "/hold", "/hold"] {
        answered.push(get(open, path));
    }
    assert_eq!(answered, [200, 200, 403, 403, 200, 403, 403, 200, 200, 200]);

    let line = |name: &str, listener: &str, n: u32| {
        format!("nuncio_filter_ext_authz_{name}_total{{filter=\"ext_authz\",listener=\"{listener}\"}}: {n}")
    };
    proxy.wait_for_stats(&[
        line("allowed", "main", 3),
        line("denied", "main", 3),
        line("failed_closed", "main", 1),
        line("failed_open", "main", 0),
        line("allowed", "open", 1),
        line("denied", "open", 0),
        line("failed_closed", "open", 0),
        line("failed_open", "open", 2),
    ]);
    assert_eq!(upstream.requests().len(), 3 + 3, "the allowed and the let-through requests went upstream");
}

// ---------------------------------------------------------------- h2c --

#[test]
fn an_http2_service_works_too() {
    let upstream = Upstream::plain("app");
    let authz = Upstream::scripted_h2("authz", |check| match check.header("authorization") {
        "Bearer ok" => Answer::status(200).with("x-user", "ada"),
        _ => Answer::status(403).with("content-type", "text/plain").body("denied\n"),
    });
    let yaml = config("{ cluster: authz, headers_to_copy: [ x-user ] }", "http2");
    let proxy = with_builtin_kinds(&yaml, &[("app", upstream.addr), ("authz", authz.addr)]);

    let reply = proxy.exchange("GET /a HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer ok\r\n\r\n");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.last_request().header("x-user"), "ada");
    assert_eq!(authz.last_request().header("host"), "shop");

    let reply = proxy.exchange("GET /a HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer no\r\n\r\n");
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.text(), "denied\n");
    assert_eq!(reply.header("content-type"), "text/plain");
    assert_eq!(upstream.requests().len(), 1, "the denied request never went upstream");
}

// --------------------------------------------------------------- config --

/// The `FILE:LINE:COL: FIELD` an error should start with, for the first
/// line of `yaml` containing `needle` (column of the needle's value).
fn position(yaml: &str, needle: &str, field: &str) -> String {
    let (index, line) = yaml.lines().enumerate().find(|(_, l)| l.contains(needle)).expect("the needle is in the YAML");
    let column = line.find(needle).unwrap() + needle.find(": ").map_or(0, |colon| colon + 2) + 1;
    format!("nuncio.yaml:{}:{column}: {field}", index + 1)
}

#[test]
fn a_config_naming_an_unknown_cluster_is_refused_at_its_line() {
    let yaml = with_addresses(
        &config("\n          cluster: authx\n          timeout: 1s", "http1"),
        &[("app", dead_address()), ("authz", dead_address())],
    );
    let errors = load(&yaml).expect_err("an unknown cluster");
    let expected = position(&yaml, "cluster: authx", "listeners[0].filters[0].config.cluster");
    assert!(errors.contains(&format!("{expected}: unknown cluster \"authx\" (defined: app, authz)")), "{errors}");
}

#[test]
fn a_bad_field_is_refused_at_its_line() {
    let addresses = [("app", dead_address()), ("authz", dead_address())];
    let yaml = with_addresses(&config("\n          cluster: authz\n          timeout: 5x", "http1"), &addresses);
    let errors = load(&yaml).expect_err("a bad duration");
    let expected = position(&yaml, "timeout: 5x", "listeners[0].filters[0].config.timeout");
    assert!(errors.contains(&expected), "{errors}");

    let yaml = with_addresses(&config("\n          cluster: authz\n          status_on_err: 503", "http1"), &addresses);
    let errors = load(&yaml).expect_err("an unknown field");
    let expected = position(&yaml, "status_on_err", "listeners[0].filters[0].config.status_on_err");
    assert!(errors.contains(&format!("{expected}: unknown field `status_on_err`")), "{errors}");
}

#[test]
fn the_example_config_is_accepted() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/ext-authz.yaml");
    let text = std::fs::read_to_string(path).expect("examples/ext-authz.yaml");
    let config = load(&text).unwrap_or_else(|e| panic!("examples/ext-authz.yaml is refused:\n{e}"));
    assert_eq!(config.listeners[0].filters[0].name, "ext_authz");
}
