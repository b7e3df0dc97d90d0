//! Deadlines travel: the route timeout (or a gRPC client's shorter
//! `grpc-timeout`) bounds the whole stream, and each try tells the upstream
//! how long it has left, in the listener's `time_left_header` (or
//! `grpc-timeout` for gRPC).

use nuncio_test_support::{Admin, Proxy, Upstream, catch_all, exchange};

/// Listener `main`, with `listener_fields` (YAML lines at its indentation),
/// routing everything to `upstream` with a 2s timeout.
fn proxy_with(upstream: &Upstream, listener_fields: &str) -> Proxy {
    let yaml = catch_all(listener_fields, "        timeout: 2s", "    endpoints: [ '{app}' ]");
    Proxy::start(&yaml, &[("app", upstream.addr)])
}

fn proxy(upstream: &Upstream) -> Proxy {
    proxy_with(upstream, "")
}

/// Every value of `name` the upstream got in its last request.
fn values(upstream: &Upstream, name: &str) -> Vec<String> {
    upstream.last_request().headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

/// `GET /` with `extra` header lines, on a new connection; the status.
fn get_with(proxy: &Proxy, extra: &str) -> u16 {
    exchange(proxy.addr(), format!("GET / HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n")).status
}

/// A gRPC call over HTTP/1.1 (as a client may make one) with its own
/// `grpc-timeout`; the status.
fn grpc_with(proxy: &Proxy, timeout: &str) -> u16 {
    let request = format!(
        "POST /svc/M HTTP/1.1\r\nHost: t\r\ncontent-type: application/grpc\r\ngrpc-timeout: {timeout}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    exchange(proxy.addr(), request).status
}

#[test]
fn the_upstream_hears_the_time_left() {
    let upstream = Upstream::echo("up");
    let proxy = proxy(&upstream);
    assert_eq!(proxy.get("/").status, 200);
    let left: u64 = upstream.last_request().header("x-nuncio-expected-timeout-ms").parse().unwrap();
    assert!(left > 0 && left <= 2000, "{left}");

    // A client cannot say it for nuncio: its value is replaced.
    assert_eq!(get_with(&proxy, "X-Nuncio-Expected-Timeout-Ms: 999999\r\n"), 200);
    let sent = values(&upstream, "x-nuncio-expected-timeout-ms");
    assert_eq!(sent.len(), 1, "one value, nuncio's: {sent:?}");
    let left: u64 = sent[0].parse().unwrap();
    assert!(left > 0 && left <= 2000, "{left}");
}

#[test]
fn a_listener_names_its_own_time_left_header() {
    let upstream = Upstream::echo("up");
    let proxy = proxy_with(&upstream, "    time_left_header: X-Deadline-Ms\n");
    assert_eq!(get_with(&proxy, "x-deadline-ms: 999999\r\nx-nuncio-expected-timeout-ms: 7\r\n"), 200);
    let sent = values(&upstream, "x-deadline-ms");
    assert_eq!(sent.len(), 1, "nuncio's value replaces the client's: {sent:?}");
    let left: u64 = sent[0].parse().unwrap();
    assert!(left > 0 && left <= 2000, "{left}");
    assert_eq!(
        values(&upstream, "x-nuncio-expected-timeout-ms"),
        ["7"],
        "the default field is no longer nuncio's: the client's passes as any other"
    );

    // gRPC keeps grpc-timeout, and only that.
    assert_eq!(grpc_with(&proxy, "300m"), 200);
    let sent = values(&upstream, "grpc-timeout");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(values(&upstream, "x-deadline-ms"), Vec::<String>::new());

    let dump = proxy.admin_get("/config_dump").text();
    assert!(dump.contains("time_left_header: x-deadline-ms\n"), "{dump}");
}

#[test]
fn time_left_header_none_sends_no_time_left() {
    let upstream = Upstream::echo("up");
    let proxy = proxy_with(&upstream, "    time_left_header: none\n");
    assert_eq!(get_with(&proxy, "x-nuncio-expected-timeout-ms: 5\r\n"), 200);
    assert_eq!(
        values(&upstream, "x-nuncio-expected-timeout-ms"),
        ["5"],
        "the client's, untouched: nuncio says nothing"
    );

    // The deadline still holds: a slow upstream gets the route's 504.
    assert_eq!(get_with(&proxy, "x-delay-ms: 2500\r\n"), 504);

    // gRPC still hears its deadline.
    assert_eq!(grpc_with(&proxy, "300m"), 200);
    assert_eq!(values(&upstream, "grpc-timeout").len(), 1);

    let dump = proxy.admin_get("/config_dump").text();
    assert!(dump.contains("time_left_header: none\n"), "{dump}");
}

#[test]
fn a_grpc_timeout_shortens_the_deadline_and_travels_as_grpc_timeout() {
    let upstream = Upstream::echo("up");
    let proxy = proxy(&upstream);
    let request = |timeout: &str, delay: u32| {
        exchange(
            proxy.addr(),
            format!(
                "POST /svc/M HTTP/1.1\r\nHost: t\r\ncontent-type: application/grpc\r\ngrpc-timeout: {timeout}\r\nx-delay-ms: {delay}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    assert_eq!(request("300m", 0).status, 200);
    let seen = upstream.last_request();
    assert_eq!(seen.headers.get_all("grpc-timeout").iter().count(), 1, "nuncio's replaces the client's");
    let sent = seen.header("grpc-timeout");
    let ms: u64 = sent.strip_suffix('m').unwrap().parse().unwrap();
    assert!(ms > 0 && ms <= 300, "the client's 300ms, not the route's 2s: {sent}");
    assert_eq!(seen.header("x-nuncio-expected-timeout-ms"), "", "gRPC gets grpc-timeout instead");
    // Shorter than the upstream's delay: a 504 long before the route's 2s
    // (the upstream would answer after 1.5s).
    assert_eq!(request("100m", 1500).status, 504);
    // A longer grpc-timeout cannot lengthen the route's deadline.
    assert_eq!(request("10S", 2500).status, 504);
}
