//! Route selection (path, host, headers, first match wins), weighted
//! clusters, direct responses, redirects and the 404 when nothing matches.

use nuncio_test_support::{Client, Proxy, RawClient, Upstream, exchange};

/// Routes that each answer with their own name, so a reply says which one
/// matched.
const ROUTES: &str = "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: { path: /exact }
        direct_response: { status: 200, body: exact }
      - match: { host: api.example.com, prefix: / }
        direct_response: { status: 200, body: host-exact }
      - match: { host: '*.example.com', prefix: / }
        direct_response: { status: 200, body: host-wildcard }
      - match: { prefix: /, headers: [ { name: x-canary, exact: 'yes' } ] }
        direct_response: { status: 200, body: header-exact }
      - match: { prefix: /, headers: [ { name: x-debug, present: true } ] }
        direct_response: { status: 200, body: header-present }
      - match: { prefix: /static/ }
        direct_response: { status: 200, body: prefix }
      - match: { prefix: /static/images/ }
        direct_response: { status: 200, body: never-reached }
";

/// The body of the route answering `GET path` with `Host: host` and extra
/// header lines `fields`.
fn matched(proxy: &Proxy, host: &str, path: &str, fields: &str) -> String {
    let reply = exchange(proxy.addr(), format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{fields}\r\n"));
    format!("{} {}", reply.status, reply.text())
}

#[test]
fn path_exact_and_prefix() {
    let proxy = Proxy::start(ROUTES, &[]);

    assert_eq!(matched(&proxy, "test", "/exact", ""), "200 exact");
    assert_eq!(matched(&proxy, "test", "/exact?query=ignored", ""), "200 exact");
    assert_eq!(matched(&proxy, "test", "/static/app.js", ""), "200 prefix");
    assert_ne!(matched(&proxy, "test", "/exact/more", ""), "200 exact");
}

#[test]
fn host_exact_and_wildcard() {
    let proxy = Proxy::start(ROUTES, &[]);

    assert_eq!(matched(&proxy, "api.example.com", "/x", ""), "200 host-exact");
    assert_eq!(matched(&proxy, "API.Example.com:8080", "/x", ""), "200 host-exact");
    assert_eq!(matched(&proxy, "www.example.com", "/x", ""), "200 host-wildcard");
    assert_eq!(matched(&proxy, "a.b.example.com", "/x", ""), "200 host-wildcard");
    assert!(matched(&proxy, "example.com", "/x", "").starts_with("404"), "the bare domain is not *.example.com");
}

#[test]
fn header_exact_and_presence() {
    let proxy = Proxy::start(ROUTES, &[]);

    assert_eq!(matched(&proxy, "test", "/x", "X-Canary: yes\r\n"), "200 header-exact");
    assert!(matched(&proxy, "test", "/x", "X-Canary: no\r\n").starts_with("404"));
    assert_eq!(matched(&proxy, "test", "/x", "X-Debug: \r\n"), "200 header-present");
}

#[test]
fn first_match_wins() {
    let proxy = Proxy::start(ROUTES, &[]);

    // Both prefixes match; the earlier route answers.
    assert_eq!(matched(&proxy, "test", "/static/images/logo.png", ""), "200 prefix");
    // Host and header routes both match; the host route comes first.
    assert_eq!(matched(&proxy, "api.example.com", "/static/x", "X-Canary: yes\r\n"), "200 host-exact");
}

#[test]
fn no_route_is_a_404_saying_why() {
    let proxy = Proxy::start(ROUTES, &[]);

    let reply = exchange(proxy.addr(), "GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n");

    assert_eq!(reply.status, 404);
    assert!(reply.text().contains("no route"), "{}", reply.text());
    assert!(reply.text().contains("/nowhere"), "{}", reply.text());
}

#[test]
fn direct_response_answers_with_status_and_body() {
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: { path: /healthz }
        direct_response: { status: 200, body: ok }
      - match: {}
        direct_response: { status: 503, body: 'down for maintenance' }
",
        &[],
    );

    let mut client = RawClient::connect(proxy.addr());
    client.send("GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(client.response().text(), "ok");
    client.send("GET /other HTTP/1.1\r\nHost: test\r\n\r\n");
    let reply = client.response();
    assert_eq!((reply.status, reply.text().as_str()), (503, "down for maintenance"));

    // An empty body leaves nothing unread: the connection stays open.
    client.send("POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(client.response().header("connection"), "");

    client.send("HEAD /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
    let head = client.head_response();
    assert_eq!((head.status, head.header("content-length")), (200, "2"));
    client.send("GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(client.response().text(), "ok", "no stray body after HEAD");
}

#[test]
fn redirect_sets_location_and_status() {
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: { prefix: /old/ }
        redirect: { prefix_rewrite: /new/, status: 302 }
      - match: { path: /moved }
        redirect: { host: elsewhere.example.com, path: /here }
",
        &[],
    );

    let reply = exchange(proxy.addr(), "GET /old/page?x=1 HTTP/1.1\r\nHost: www.example.com\r\n\r\n");
    assert_eq!(reply.status, 302);
    assert_eq!(reply.header("location"), "http://www.example.com/new/page?x=1");

    let reply = exchange(proxy.addr(), "GET /moved HTTP/1.1\r\nHost: www.example.com\r\n\r\n");
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), "http://elsewhere.example.com/here");
}

#[test]
fn routes_send_to_their_clusters() {
    let (a, b) = (Upstream::echo("a"), Upstream::echo("b"));
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: { prefix: /b/ }
        cluster: b
      - match: {}
        cluster: a
clusters:
  - name: a
    endpoints: [ '{a}' ]
  - name: b
    endpoints: [ '{b}' ]
",
        &[("a", a.addr), ("b", b.addr)],
    );

    let mut client = Client::connect(proxy.addr());
    assert_eq!(client.get("/b/x").header("x-upstream"), "b");
    assert_eq!(client.get("/x").header("x-upstream"), "a");
}

#[test]
fn weighted_clusters_split_roughly_by_weight() {
    let (a, b) = (Upstream::echo("a"), Upstream::echo("b"));
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {}
        weighted_clusters: [ { cluster: a, weight: 80 }, { cluster: b, weight: 20 } ]
clusters:
  - name: a
    endpoints: [ '{a}' ]
  - name: b
    endpoints: [ '{b}' ]
",
        &[("a", a.addr), ("b", b.addr)],
    );

    let mut client = Client::connect(proxy.addr());
    let to_b = (0..200).filter(|_| client.get("/").header("x-upstream") == "b").count();

    // Expected 40; the bounds are many standard deviations wide.
    assert!((10..=80).contains(&to_b), "{to_b} of 200 went to b");
}

#[test]
fn no_route_for_a_request_with_a_large_body_still_gets_its_404() {
    // nuncio answers without reading the body, then closes: the client,
    // still sending, must nonetheless receive the answer.
    let proxy = Proxy::start(ROUTES, &[]);
    let body = vec![b'x'; 4 * 1024 * 1024];

    let mut client = RawClient::connect(proxy.addr());
    let mut writer = client.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        let _ = writer.write_all(
            format!("POST /nowhere HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
        );
        let _ = writer.write_all(&body);
    });
    let reply = client.response();
    let _ = sender.join();

    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("connection"), "close");
}

#[test]
fn connect_to_a_forwarding_route_is_501_and_never_reaches_upstream() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);
    let reply = exchange(proxy.addr(), "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert_eq!(reply.status, 501, "{}", reply.text());
    assert!(reply.text().contains("CONNECT is not supported"), "{}", reply.text());
    assert!(upstream.requests().is_empty());
}
