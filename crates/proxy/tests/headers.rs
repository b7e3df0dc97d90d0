//! What nuncio changes in the heads it forwards: hop-by-hop fields out,
//! forwarding fields in, Host and path rewrites.

use nuncio_test_support::{Proxy, RawClient, Upstream, exchange};

#[test]
fn hop_by_hop_request_fields_are_removed() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    let reply = exchange(
        proxy.addr(),
        "GET / HTTP/1.1\r\nHost: test\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n\
         TE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\nX-Secret: 1\r\nX-Kept: 1\r\n\r\n",
    );

    assert_eq!(reply.status, 200);
    let seen = upstream.last_request();
    for name in ["connection", "keep-alive", "te", "upgrade", "proxy-connection", "x-secret"] {
        assert!(!seen.headers.contains_key(name), "{name} was forwarded: {:?}", seen.headers);
    }
    assert_eq!(seen.header("x-kept"), "1");
}

#[test]
fn transfer_encoding_is_not_forwarded_beside_the_framing_nuncio_writes() {
    let upstream = Upstream::raw("app", |mut conn| async move {
        while conn.read_request().await.is_some() {
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        }
    });
    let proxy = Proxy::to(&upstream);

    let reply = exchange(
        proxy.addr(),
        "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );

    assert_eq!(reply.status, 200);
    let seen = upstream.last_request();
    assert_eq!(seen.body, b"abc");
    let framing: Vec<_> = seen.headers.get_all("transfer-encoding").iter().collect();
    assert_eq!(framing.len(), 1, "exactly one framing field upstream: {:?}", seen.headers);
    assert!(!seen.headers.contains_key("content-length"));
}

#[test]
fn hop_by_hop_response_fields_are_removed() {
    let upstream = Upstream::raw("app", |mut conn| async move {
        while conn.read_request().await.is_some() {
            conn.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Internal\r\n\
                  Keep-Alive: timeout=5\r\nX-Internal: 1\r\nX-Public: 1\r\n\r\nok",
            )
            .await;
        }
    });
    let proxy = Proxy::to(&upstream);

    let reply = exchange(proxy.addr(), "GET / HTTP/1.1\r\nHost: test\r\n\r\n");

    assert_eq!(reply.text(), "ok");
    for name in ["connection", "keep-alive", "x-internal"] {
        assert!(!reply.headers.contains_key(name), "{name} reached the client: {}", reply.head);
    }
    assert_eq!(reply.header("x-public"), "1");
}

#[test]
fn a_response_head_is_relayed_as_received_but_for_hop_by_hop_fields_and_framing() {
    // Names in the upstream's case, repeated fields in their order: an
    // HTTP/1.1 client without response filters gets the fields as the
    // upstream wrote them (nuncio does not rebuild the head).
    let upstream = Upstream::raw("app", |mut conn| async move {
        while conn.read_request().await.is_some() {
            conn.write(
                b"HTTP/1.1 200 OK\r\nX-Custom-Case: A\r\nSet-Cookie: a=1\r\nconnection: X-Internal\r\n\
                  Vary: x\r\nSet-Cookie: b=2\r\nX-Internal: 1\r\nContent-Length:  2\r\n\r\nok",
            )
            .await;
        }
    });
    let proxy = Proxy::to(&upstream);

    let reply = exchange(proxy.addr(), "GET / HTTP/1.1\r\nHost: test\r\n\r\n");

    assert_eq!(reply.text(), "ok");
    assert!(
        reply.head.contains("\r\nX-Custom-Case: A\r\nSet-Cookie: a=1\r\nVary: x\r\nSet-Cookie: b=2\r\n"),
        "fields not relayed as received: {}",
        reply.head
    );
    assert!(!reply.headers.contains_key("x-internal"), "{}", reply.head);
    // Exactly one framing field, nuncio's own.
    let framing: Vec<_> = reply.head.lines().filter(|l| l.to_ascii_lowercase().starts_with("content-length")).collect();
    assert_eq!(framing, ["content-length: 2"], "{}", reply.head);
}

#[test]
fn forwarding_fields_are_added() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    exchange(proxy.addr(), "GET / HTTP/1.1\r\nHost: test\r\n\r\n");

    let seen = upstream.last_request();
    assert_eq!(seen.header("x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen.header("x-forwarded-proto"), "http");
    let id = seen.header("x-request-id");
    assert!(id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "generated request id: {id:?}");
}

#[test]
fn x_forwarded_for_is_appended_to() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    exchange(proxy.addr(), "GET / HTTP/1.1\r\nHost: test\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n");
    assert_eq!(upstream.last_request().header("x-forwarded-for"), "203.0.113.7, 127.0.0.1");

    // Several field lines are one list.
    exchange(
        proxy.addr(),
        "GET / HTTP/1.1\r\nHost: test\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.1\r\n\r\n",
    );
    let seen = upstream.last_request();
    let values: Vec<_> = seen.headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(values, ["203.0.113.7, 198.51.100.1, 127.0.0.1"]);
}

#[test]
fn x_forwarded_proto_from_the_client_is_replaced() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    exchange(proxy.addr(), "GET / HTTP/1.1\r\nHost: test\r\nX-Forwarded-Proto: https\r\n\r\n");

    assert_eq!(upstream.last_request().header("x-forwarded-proto"), "http");
}

#[test]
fn request_id_is_kept_when_present_and_unique_when_generated() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    exchange(proxy.addr(), "GET / HTTP/1.1\r\nHost: test\r\nX-Request-Id: abc-123\r\n\r\n");
    assert_eq!(upstream.last_request().header("x-request-id"), "abc-123");

    let mut client = RawClient::connect(proxy.addr());
    for _ in 0..2 {
        client.send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
        client.response();
    }
    let requests = upstream.requests();
    assert_ne!(requests[1].header("x-request-id"), requests[2].header("x-request-id"));
}

#[test]
fn host_is_kept() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    exchange(proxy.addr(), "GET / HTTP/1.1\r\nHost: app.example.com:8080\r\n\r\n");

    assert_eq!(upstream.last_request().header("host"), "app.example.com:8080");
}

#[test]
fn host_rewrite_replaces_host() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {}
        cluster: app
        host_rewrite: backend.internal
clusters:
  - name: app
    endpoints: [ '{app}' ]
",
        &[("app", upstream.addr)],
    );

    exchange(proxy.addr(), "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n");

    let seen = upstream.last_request();
    let hosts: Vec<_> = seen.headers.get_all("host").iter().collect();
    assert_eq!(hosts, ["backend.internal"]);
}

#[test]
fn prefix_rewrite_replaces_the_matched_prefix() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: { prefix: /api/ }
        cluster: app
        prefix_rewrite: /
      - match: { path: /old }
        cluster: app
        prefix_rewrite: /new
clusters:
  - name: app
    endpoints: [ '{app}' ]
",
        &[("app", upstream.addr)],
    );

    exchange(proxy.addr(), "GET /api/users?page=2 HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(upstream.last_request().target, "/users?page=2");

    exchange(proxy.addr(), "GET /old?x=1 HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(upstream.last_request().target, "/new?x=1");
}
