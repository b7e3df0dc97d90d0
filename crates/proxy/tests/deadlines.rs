//! Deadlines travel: the route timeout (or a gRPC client's shorter
//! `grpc-timeout`) bounds the whole stream, and each try tells the upstream
//! how long it has left.

mod support;

use support::{Proxy, Upstream, exchange};

fn proxy(upstream: &Upstream) -> Proxy {
    Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {}
        cluster: app
        timeout: 2s
clusters:
  - name: app
    endpoints: [ '{app}' ]
",
        &[("app", upstream.addr)],
    )
}

#[test]
fn the_upstream_hears_the_time_left() {
    let upstream = Upstream::echo("up");
    let proxy = proxy(&upstream);
    assert_eq!(support::get(proxy.addr(), "/").status, 200);
    let left: u64 = upstream.last_request().header("x-nuncio-expected-timeout-ms").parse().unwrap();
    assert!(left > 0 && left <= 2000, "{left}");
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
