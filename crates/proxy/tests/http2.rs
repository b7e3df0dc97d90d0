//! HTTP/2 on both sides: h2c clients (prior knowledge, the `h2` crate as a
//! real client), `protocol: http2` clusters (hyper's and h2's servers), and
//! every mix with HTTP/1.1. Flow control with bodies larger than the
//! windows, trailers, and a client's RST_STREAM cancelling the upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use nuncio_test_support::{Client, Proxy, TIMEOUT, Upstream, catch_all, rt};
use tokio::net::TcpStream;

/// A response as an h2 client received it.
struct H2Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    trailers: Option<HeaderMap>,
}

impl H2Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

/// An h2c connection to nuncio (prior knowledge).
async fn h2_connect(addr: std::net::SocketAddr) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake with nuncio");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// One request on `client`; the whole response.
async fn h2_request(client: &SendRequest<Bytes>, method: Method, path: &str, body: &[u8]) -> H2Reply {
    let request = Request::builder().method(method).uri(format!("http://test.example{path}")).body(()).unwrap();
    let mut client = client.clone().ready().await.unwrap();
    let (response, mut stream) = client.send_request(request, body.is_empty()).unwrap();
    if !body.is_empty() {
        // Respect nuncio's window, as a real client must.
        let mut rest = Bytes::copy_from_slice(body);
        while !rest.is_empty() {
            stream.reserve_capacity(rest.len());
            let n = std::future::poll_fn(|cx| stream.poll_capacity(cx)).await.unwrap().unwrap();
            stream.send_data(rest.split_to(n.min(rest.len())), false).unwrap();
        }
        stream.send_data(Bytes::new(), true).unwrap();
    }
    let response = tokio::time::timeout(TIMEOUT, response).await.expect("response in time").unwrap();
    let (parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap();
    H2Reply { status: parts.status, headers: parts.headers, body: bytes, trailers }
}

fn proxy_to(upstream: &Upstream, protocol: &str) -> Proxy {
    let cluster = format!("    protocol: {protocol}\n    endpoints: [ '{{app}}' ]");
    Proxy::start(&catch_all("", "", &cluster), &[("app", upstream.addr)])
}

/// A body whose bytes depend on their position, so that any reordering or
/// loss shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn h2c_client_to_http1_upstream() {
    let upstream = Upstream::echo("one");
    let proxy = proxy_to(&upstream, "http1");
    let reply = rt().block_on(async {
        let client = h2_connect(proxy.addr()).await;
        h2_request(&client, Method::POST, "/echo?x=1", b"hello over h2").await
    });
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, b"hello over h2");
    assert_eq!(reply.header("x-upstream"), "one");
    assert_eq!(reply.header("content-length"), "13");
    let seen = upstream.last_request();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.target, "/echo?x=1");
    // `:authority` becomes Host; the forwarding fields are added.
    assert_eq!(seen.header("host"), "test.example");
    assert_eq!(seen.header("x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen.header("x-forwarded-proto"), "http");
    assert_eq!(seen.header("x-request-id").len(), 32);
    // A request body of unknown length (no content-length from the h2
    // client) but small is sent with its exact length.
    assert_eq!(seen.body, b"hello over h2");
}

#[test]
fn many_concurrent_streams_share_one_client_connection() {
    let upstream = Upstream::slow("one", Duration::from_millis(50));
    let proxy = proxy_to(&upstream, "http1");
    let replies = rt().block_on(async {
        let client = h2_connect(proxy.addr()).await;
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { h2_request(&client, Method::GET, &format!("/n/{i}"), b"").await })
            })
            .collect();
        let mut replies = Vec::new();
        for task in tasks {
            replies.push(task.await.unwrap());
        }
        replies
    });
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-path"), format!("/n/{i}"), "each stream gets its own response");
    }
    assert_eq!(upstream.requests().len(), 40);
}

#[test]
fn http1_client_to_http2_upstream_reuses_one_connection() {
    let upstream = Upstream::echo_h2("h2");
    let proxy = Proxy::start(
        "
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {}
        cluster: app
clusters:
  - name: app
    protocol: http2
    endpoints: [ '{app}' ]
",
        &[("app", upstream.addr)],
    );
    let mut client = Client::connect(proxy.addr());
    for i in 0..5 {
        let reply = client.get(&format!("/r/{i}"));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-path"), format!("/r/{i}"));
        assert_eq!(reply.text(), "hello from h2\n");
    }
    let seen = upstream.last_request();
    assert_eq!(seen.version, Version::HTTP_2);
    assert_eq!(seen.header("x-forwarded-proto"), "http");
    assert!(seen.header("x-request-id").len() == 32);
    // The client's Host travels as `:authority`.
    assert!(seen.authority.is_some(), "{seen:?}");
    assert_eq!(upstream.connections(), 1, "one worker, one HTTP/2 connection for every request");
}

#[test]
fn h2c_client_to_http2_upstream_with_large_bodies_both_ways() {
    let upstream = Upstream::echo_h2("h2");
    let proxy = proxy_to(&upstream, "http2");
    // Larger than every window on the way (64 KiB default, 1 MiB streams,
    // 4 MiB connection), so flow control must work on both hops.
    let body = pattern(5 * 1024 * 1024 + 17);
    let reply = rt().block_on(async {
        let client = h2_connect(proxy.addr()).await;
        h2_request(&client, Method::PUT, "/big", &body).await
    });
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), body.len());
    assert!(reply.body == body, "the body arrived intact and in order");
    assert_eq!(upstream.last_request().body.len(), body.len());
}

#[test]
fn http1_chunked_upload_to_http2_upstream_and_back() {
    let upstream = Upstream::echo_h2("h2");
    let proxy = proxy_to(&upstream, "http2");
    let body = pattern(300 * 1024);
    let mut client = Client::connect(proxy.addr());
    let request = Request::post("/up")
        .header("host", "test.example")
        .body(http_body_util::Full::new(Bytes::from(body.clone())))
        .unwrap();
    let reply = client.send(request);
    assert_eq!(reply.status, 200);
    assert!(reply.body == body);
}

#[test]
fn trailers_pass_from_an_http2_upstream_to_an_h2c_client() {
    // A gRPC-like upstream on the h2 crate: data, then trailers.
    let upstream = Upstream::raw("grpc", |conn| async move {
        let mut server = h2::server::handshake(conn.stream).await.unwrap();
        while let Some(Ok((_request, mut respond))) = server.accept().await {
            let response = http::Response::builder().header("content-type", "application/grpc").body(()).unwrap();
            let mut send = respond.send_response(response, false).unwrap();
            send.send_data(Bytes::from_static(b"payload"), false).unwrap();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            send.send_trailers(trailers).unwrap();
        }
    });
    let proxy = proxy_to(&upstream, "http2");
    let reply = rt().block_on(async {
        let client = h2_connect(proxy.addr()).await;
        h2_request(&client, Method::POST, "/svc/Call", b"req").await
    });
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, b"payload");
    let trailers = reply.trailers.expect("trailers relayed");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
}

#[test]
fn a_client_reset_cancels_the_upstream_request() {
    // The upstream holds every request, and reports on a channel each one
    // it receives and each one nuncio then gives up on (resets).
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let (cancelled_tx, mut cancelled) = tokio::sync::mpsc::unbounded_channel();
    let upstream = Upstream::raw("hold", move |conn| {
        let (arrived, cancelled) = (arrived_tx.clone(), cancelled_tx.clone());
        async move {
            let mut server = h2::server::handshake(conn.stream).await.unwrap();
            while let Some(Ok((_request, mut respond))) = server.accept().await {
                let _ = arrived.send(());
                let cancelled = cancelled.clone();
                tokio::spawn(async move {
                    // Resolves when nuncio resets the stream.
                    let reason = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
                    if reason.is_ok() {
                        let _ = cancelled.send(());
                    }
                });
            }
        }
    });
    let proxy = proxy_to(&upstream, "http2");
    rt().block_on(async {
        let client = h2_connect(proxy.addr()).await;
        let mut client = client.ready().await.unwrap();
        let request = Request::get("http://test.example/slow").body(()).unwrap();
        let (response, mut stream) = client.send_request(request, true).unwrap();
        // Once nuncio forwarded it, give up on it.
        tokio::time::timeout(TIMEOUT, arrived.recv()).await.expect("the request reaches the upstream");
        stream.send_reset(h2::Reason::CANCEL);
        drop(response);
        tokio::time::timeout(TIMEOUT, cancelled.recv()).await.expect("the upstream stream was never reset");
        // The connection lives on for other streams.
        let client = client.ready().await.unwrap();
        drop(client);
    });
}

#[test]
fn a_refused_stream_is_retried_when_the_route_says_so() {
    // Refuses the first stream it sees (REFUSED_STREAM: not processed),
    // answers every other one.
    let streams = Arc::new(AtomicUsize::new(0));
    let counter = streams.clone();
    let upstream = Upstream::raw("picky", move |conn| {
        let counter = counter.clone();
        async move {
            let mut server = h2::server::handshake(conn.stream).await.unwrap();
            while let Some(Ok((_request, mut respond))) = server.accept().await {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                } else {
                    let response = http::Response::builder().status(200).body(()).unwrap();
                    let mut send = respond.send_response(response, false).unwrap();
                    send.send_data(Bytes::from_static(b"second time lucky"), true).unwrap();
                }
            }
        }
    });
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {}
        cluster: app
        retries: { attempts: 1, on: [refused-stream] }
clusters:
  - name: app
    protocol: http2
    endpoints: [ '{app}' ]
",
        &[("app", upstream.addr)],
    );
    let reply = proxy.get("/");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "second time lucky");
    assert_eq!(streams.load(Ordering::SeqCst), 2);
}

#[test]
fn without_a_retry_policy_a_refused_stream_is_a_503() {
    let upstream = Upstream::raw("refuser", |conn| async move {
        let mut server = h2::server::handshake(conn.stream).await.unwrap();
        while let Some(Ok((_request, mut respond))) = server.accept().await {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        }
    });
    let proxy = proxy_to(&upstream, "http2");
    let reply = rt().block_on(async {
        let client = h2_connect(proxy.addr()).await;
        h2_request(&client, Method::GET, "/", b"").await
    });
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&reply.body).contains("refused"));
}

#[test]
fn local_replies_and_routes_work_over_h2c() {
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: { path: /healthz }
        direct_response: { status: 200, body: \"ok\\n\" }
      - match: { prefix: /old/ }
        redirect: { prefix_rewrite: /new/, status: 301 }
",
        &[],
    );
    let (health, redirect, missing, head) = rt().block_on(async {
        let client = h2_connect(proxy.addr()).await;
        (
            h2_request(&client, Method::GET, "/healthz", b"").await,
            h2_request(&client, Method::GET, "/old/page?q=1", b"").await,
            h2_request(&client, Method::GET, "/nowhere", b"").await,
            h2_request(&client, Method::HEAD, "/healthz", b"").await,
        )
    });
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, b"ok\n");
    assert_eq!(redirect.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(redirect.header("location"), "http://test.example/new/page?q=1");
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty(), "no body for HEAD");
    assert_eq!(head.header("content-length"), "3");
}

#[test]
fn an_http1_only_listener_answers_the_h2_preface_with_505() {
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    protocol: http1
    routes:
      - match: {}
        direct_response: { status: 200 }
",
        &[],
    );
    let reply = proxy.exchange("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert_eq!(reply.status, 505, "HTTP Version Not Supported");
}

#[test]
fn an_http2_only_listener_serves_h2c() {
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    protocol: http2
    routes:
      - match: {}
        direct_response: { status: 204 }
",
        &[],
    );
    let reply = rt().block_on(async {
        let client = h2_connect(proxy.addr()).await;
        h2_request(&client, Method::GET, "/", b"").await
    });
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
}

#[test]
fn an_idle_h2c_connection_is_closed_after_the_idle_timeout() {
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
    rt().block_on(async {
        let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let connection = tokio::spawn(connection);
        let reply = h2_request(&client, Method::GET, "/", b"").await;
        assert_eq!(reply.status, StatusCode::OK);
        // Nothing more to send: nuncio says GOAWAY and the connection ends.
        let ended = tokio::time::timeout(TIMEOUT, connection).await;
        assert!(ended.is_ok(), "the connection was not closed");
    });
}

#[test]
fn the_h2c_idle_timeout_counts_from_the_end_of_the_last_stream() {
    // 300 ms of idle allowed; the upstream takes 500 ms to answer.
    let upstream = Upstream::slow("slow", Duration::from_millis(500));
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    idle_timeout: 300ms
    routes:
      - match: { prefix: /slow }
        cluster: app
      - match: {}
        direct_response: { status: 200 }
clusters:
  - name: app
    endpoints: [ '{app}' ]
",
        &[("app", upstream.addr)],
    );
    rt().block_on(async {
        let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let mut connection = tokio::spawn(connection);
        // A stream open longer than the idle timeout: not idle.
        assert_eq!(h2_request(&client, Method::GET, "/slow", b"").await.status, StatusCode::OK);
        // Requests 150 ms apart, 900 ms in all: each idle spell is shorter
        // than the timeout, though their sum is not.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(h2_request(&client, Method::GET, "/", b"").await.status, StatusCode::OK);
        }
        assert!(!connection.is_finished(), "the connection was closed while in use");
        // Then silence: nuncio says GOAWAY and the connection ends.
        let ended = tokio::time::timeout(TIMEOUT, &mut connection).await;
        assert!(ended.is_ok(), "the connection was not closed");
    });
}

#[test]
fn a_full_http2_connection_makes_nuncio_open_another() {
    // The upstream allows 2 streams per connection and holds every answer
    // until 8 streams are open at once (the warm-up request aside), which
    // takes 4 connections: nuncio queueing streams on one would never get
    // there (and the test would fail on its timeout).
    let open = Arc::new(AtomicUsize::new(0));
    let (seen, gate) = (open.clone(), open.clone());
    let upstream = Upstream::raw("narrow", move |conn| {
        let (seen, gate) = (seen.clone(), gate.clone());
        async move {
            let mut server = h2::server::Builder::new().max_concurrent_streams(2).handshake(conn.stream).await.unwrap();
            while let Some(Ok((_request, mut respond))) = server.accept().await {
                let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                let gate = gate.clone();
                tokio::spawn(async move {
                    // The first stream is the warm-up; then 8 at once.
                    let deadline = tokio::time::Instant::now() + TIMEOUT;
                    while n > 1 && gate.load(Ordering::SeqCst) < 9 && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let response = http::Response::builder().status(200).body(()).unwrap();
                    let mut send = respond.send_response(response, false).unwrap();
                    let _ = send.send_data(Bytes::from_static(b"ok"), true);
                });
            }
        }
    });
    let proxy = Proxy::start(
        "
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {}
        cluster: app
clusters:
  - name: app
    protocol: http2
    endpoints: [ '{app}' ]
",
        &[("app", upstream.addr)],
    );
    // Warm up: the first connection learns the peer's limit.
    assert_eq!(proxy.get("/").status, 200);
    let replies = rt().block_on(async {
        let client = h2_connect(proxy.addr()).await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { h2_request(&client, Method::GET, "/", b"").await })
            })
            .collect();
        let mut replies = Vec::new();
        for task in tasks {
            replies.push(task.await.unwrap());
        }
        replies
    });
    assert!(replies.iter().all(|r| r.status == StatusCode::OK && r.body == b"ok"));
    assert_eq!(open.load(Ordering::SeqCst), 9, "8 streams were open at once");
    assert!(upstream.connections() >= 4, "8 streams at 2 per connection: {} connections", upstream.connections());
}

#[test]
fn cookies_sent_as_separate_fields_reach_an_http1_upstream_as_one() {
    // RFC 9113 §8.2.3: an HTTP/2 client may split `cookie`; HTTP/1.1 has one.
    let upstream = Upstream::echo("one");
    let proxy = proxy_to(&upstream, "http1");
    let reply = rt().block_on(async {
        let client = h2_connect(proxy.addr()).await;
        let request = Request::builder()
            .uri("http://test.example/c")
            .header("cookie", "a=1")
            .header("x-other", "kept")
            .header("cookie", "b=2")
            .body(())
            .unwrap();
        let mut client = client.ready().await.unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        tokio::time::timeout(TIMEOUT, response).await.expect("response in time").unwrap().status()
    });
    assert_eq!(reply, StatusCode::OK);
    let seen = upstream.last_request();
    assert_eq!(seen.all("cookie"), ["a=1; b=2"]);
    assert_eq!(seen.header("x-other"), "kept");
}

#[test]
fn responses_relayed_whole_leave_the_upstream_connection_for_the_next_request() {
    // A response whose last piece went out cleanly ends the try cleanly:
    // its upstream connection goes back to the pool (a regression: the
    // codec once answered the last write of every h2c response with an
    // error, so each request opened a new upstream connection).
    let upstream = Upstream::echo("one");
    let proxy = proxy_to(&upstream, "http1");
    rt().block_on(async {
        let client = h2_connect(proxy.addr()).await;
        for i in 0..5 {
            let reply = h2_request(&client, Method::POST, &format!("/r{i}"), b"some body").await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.body, b"some body");
        }
    });
    let connections: std::collections::HashSet<usize> = upstream.requests().iter().map(|r| r.connection).collect();
    assert_eq!(connections.len(), 1, "one upstream connection for five requests: {connections:?}");
}
