//! Limits and request smuggling: oversized or malformed heads, ambiguous
//! framing, slow clients and too many connections each get an exact
//! status (or none), the connection closes, and nothing reaches upstream.

use std::time::Duration;

use nuncio_test_support::{Proxy, RawClient, TIMEOUT, Upstream, catch_all, exchange};

/// nuncio in front of `upstream` with small limits on listener `main`.
fn limited(upstream: &Upstream) -> Proxy {
    let listener = "
    max_request_headers_bytes: 1024
    max_request_headers: 10
    request_headers_timeout: 300ms";
    Proxy::start(&catch_all(listener, "", "    endpoints: [ '{app}' ]"), &[("app", upstream.addr)])
}

/// Sends `request` on a new connection; expects `status`, then the
/// connection closed, and nothing forwarded.
fn rejected(request: &str, status: u16) {
    let upstream = Upstream::echo("app");
    let proxy = limited(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    client.send(request);
    let reply = client.response();

    assert_eq!(reply.status, status, "{}{}", reply.head, reply.text());
    assert_eq!(reply.header("connection"), "close");
    assert!(client.is_closed(), "nuncio closes the connection");
    assert!(upstream.requests().is_empty(), "nothing was forwarded");
}

#[test]
fn request_head_over_the_size_limit_is_431() {
    rejected(&format!("GET / HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n", "a".repeat(2000)), 431);
}

#[test]
fn too_many_header_fields_is_431() {
    let fields: String = (0..20).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    rejected(&format!("GET / HTTP/1.1\r\nHost: test\r\n{fields}\r\n"), 431);
}

#[test]
fn malformed_request_is_400() {
    rejected("GET / HTTP/1.1\r\nHost: test\r\nBad Name: x\r\n\r\n", 400);
}

#[test]
fn garbage_is_400() {
    rejected("\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03 not http at all\r\n\r\n", 400);
}

#[test]
fn missing_host_is_400() {
    rejected("GET / HTTP/1.1\r\n\r\n", 400);
}

#[test]
fn content_length_with_transfer_encoding_is_400() {
    rejected(
        "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n",
        400,
    );
}

#[test]
fn conflicting_content_lengths_are_400() {
    rejected("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400);
}

#[test]
fn obfuscated_transfer_encoding_is_rejected() {
    rejected("POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400);
    rejected("POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400);
}

#[test]
fn bad_chunked_body_is_400() {
    // The head is fine and forwarding may have started; the bad chunk
    // still gets a 400 (or, once response bytes went out, a close).
    let upstream = Upstream::echo("app");
    let proxy = limited(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    client.send("POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n");
    let reply = client.response();

    assert_eq!(reply.status, 400, "{}{}", reply.head, reply.text());
    assert!(client.is_closed());
}

#[test]
fn slow_request_head_is_408() {
    let upstream = Upstream::echo("app");
    let proxy = limited(&upstream);

    // Part of a head, then nothing (slowloris).
    let mut client = RawClient::connect(proxy.addr());
    client.send("GET / HTTP/1.1\r\nHost: te");
    let reply = client.response();

    assert_eq!(reply.status, 408);
    assert!(client.is_closed());
    assert!(upstream.requests().is_empty());
}

#[test]
fn head_trickling_in_within_the_timeout_is_served() {
    let upstream = Upstream::echo("app");
    let proxy = limited(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    for part in ["GET / HTTP/1.1\r\n", "Host: test\r\n", "\r\n"] {
        client.send(part);
        // The subject: pauses within the 300ms request_headers_timeout.
        std::thread::sleep(Duration::from_millis(20));
    }

    assert_eq!(client.response().status, 200);
}

#[test]
fn idle_keep_alive_connection_is_not_a_slow_head() {
    // The header timeout starts with the first byte of a head: a client
    // quiet between requests is governed by idle_timeout (60s) instead.
    let upstream = Upstream::echo("app");
    let proxy = limited(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    client.send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(client.response().status, 200);
    assert!(!client.is_closed_within(Duration::from_millis(800)), "kept open past request_headers_timeout");
    client.send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(client.response().status, 200);
}

#[test]
fn idle_timeout_closes_quiet_connections() {
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    idle_timeout: 200ms
    routes:
      - match: {}
        direct_response: { status: 200 }
",
        &[],
    );

    let mut client = RawClient::connect(proxy.addr());
    client.send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(client.response().status, 200);

    assert!(client.is_closed(), "closed after idling");
}

#[test]
fn connections_over_max_connections_are_closed_unserved() {
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    max_connections: 2
    routes:
      - match: {}
        direct_response: { status: 200, body: served }
",
        &[],
    );
    let request = "GET / HTTP/1.1\r\nHost: test\r\n\r\n";
    // Two connections, each known to be open (it has been served).
    let mut first = RawClient::connect(proxy.addr());
    let mut second = RawClient::connect(proxy.addr());
    for client in [&mut first, &mut second] {
        client.send(request);
        assert_eq!(client.response().text(), "served");
    }

    let mut third = RawClient::connect(proxy.addr());
    assert!(third.is_closed(), "the third connection is closed without a response");

    // The others keep working, and a slot frees up when one closes.
    first.send(request);
    assert_eq!(first.response().text(), "served");
    drop(second);
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let mut client = RawClient::connect(proxy.addr());
        client.send(request);
        if let Some(reply) = client.try_response() {
            assert_eq!(reply.text(), "served");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the closed connection's slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn request_after_a_rejected_one_is_never_read() {
    // The smuggled second request behind a bad one is not served.
    let upstream = Upstream::echo("app");
    let proxy = limited(&upstream);

    let reply = exchange(
        proxy.addr(),
        "GET / HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n",
    );

    assert_eq!(reply.status, 400);
    assert!(upstream.requests().is_empty());
}
