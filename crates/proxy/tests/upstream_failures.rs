//! Upstream faults map to exact statuses (503 can't connect, 502 broken,
//! 504 too slow), retries recover from them when the route allows, and a
//! fault on one request harms no other.

use std::time::{Duration, Instant};

use nuncio_test_support::{
    Blackhole, Client, Control, Proxy, RawClient, Upstream, catch_all, dead_address, get, get_in_background, wait_until,
};

/// nuncio with one catch-all route to cluster `app` of `endpoints`, with
/// the given extra route fields (`timeout`, `retries`...).
fn proxy(route: &str, endpoints: &[(&str, std::net::SocketAddr)]) -> Proxy {
    let names: Vec<String> = endpoints.iter().map(|(name, _)| format!("'{{{name}}}'")).collect();
    let cluster = format!("    connect_timeout: 300ms\n    endpoints: [ {} ]", names.join(", "));
    Proxy::start(&format!("workers: 1\n{}", catch_all("", route, &cluster)), endpoints)
}

#[test]
fn connection_refused_is_503_after_retries() {
    let proxy = proxy("        retries: { attempts: 2, on: [connect-failure] }", &[("dead", dead_address())]);

    let reply = get(proxy.addr(), "/");

    assert_eq!(reply.status, 503);
    assert!(reply.text().contains("connect"), "{}", reply.text());
}

#[test]
fn connect_timeout_is_503() {
    let blackhole = Blackhole::new();
    let proxy = proxy("", &[("blackhole", blackhole.addr)]);

    let reply = get(proxy.addr(), "/");

    assert_eq!(reply.status, 503);
    assert!(reply.text().contains("connect timeout"), "{}", reply.text());
}

#[test]
fn upstream_closing_before_responding_is_502() {
    let upstream = Upstream::raw("rude", |mut conn| async move {
        conn.read_request().await;
        // Closes without a word.
    });
    let proxy = proxy("", &[("rude", upstream.addr)]);

    let reply = get(proxy.addr(), "/");

    assert_eq!(reply.status, 502);
    assert_eq!(upstream.requests().len(), 1, "not retried: the request may have been processed");
}

#[test]
fn upstream_closing_mid_body_closes_the_client_connection() {
    let upstream = Upstream::fixed("cut", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it");
    let proxy = proxy("", &[("cut", upstream.addr)]);

    let mut client = RawClient::connect(proxy.addr());
    client.send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");

    // The head and what arrived went out; the truncation shows as a close
    // before the promised length.
    let mut received = Vec::new();
    let _ = std::io::Read::read_to_end(&mut client.stream, &mut received);
    let received = String::from_utf8_lossy(&received);
    assert!(received.starts_with("HTTP/1.1 200 OK\r\n"), "{received}");
    assert!(received.ends_with("only part of it"), "{received}");
}

#[test]
fn invalid_upstream_response_is_502() {
    let upstream =
        Upstream::fixed("broken", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
    let proxy = proxy("", &[("broken", upstream.addr)]);

    assert_eq!(get(proxy.addr(), "/").status, 502);
}

#[test]
fn route_timeout_exceeded_is_504() {
    let upstream = Upstream::slow("slow", Duration::from_secs(30));
    let proxy = proxy("        timeout: 300ms", &[("slow", upstream.addr)]);

    let started = Instant::now();
    let reply = get(proxy.addr(), "/");

    assert_eq!(reply.status, 504);
    assert!(started.elapsed() < Duration::from_secs(8), "answered long before the upstream would have");
}

#[test]
fn route_timeout_does_not_cut_a_slow_response_body() {
    // The route timeout runs until the response head; a body that takes
    // longer still arrives whole.
    let upstream = Upstream::raw("trickle", |mut conn| async move {
        if conn.read_request().await.is_some() {
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello").await;
            // The subject: the rest comes well after the 300ms route timeout.
            tokio::time::sleep(Duration::from_millis(800)).await;
            conn.write(b"world").await;
        }
    });
    let proxy = proxy("        timeout: 300ms", &[("trickle", upstream.addr)]);

    let reply = get(proxy.addr(), "/");

    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "helloworld");
}

#[test]
fn connect_failure_retry_succeeds_on_the_next_endpoint() {
    let live = Upstream::echo("live");
    let proxy = proxy(
        "        retries: { attempts: 1, on: [connect-failure] }",
        &[("dead", dead_address()), ("live", live.addr)],
    );

    // Round robin starts with the dead endpoint; every request still succeeds.
    let mut client = Client::connect(proxy.addr());
    for _ in 0..4 {
        let reply = client.get("/");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-upstream"), "live");
    }
}

#[test]
fn retry_on_503_returns_the_second_answer() {
    let upstream = Upstream::raw("flaky", |mut conn| async move {
        while let Some(n) = conn.read_request().await {
            if n == 0 {
                conn.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nfirst").await;
            } else {
                conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond").await;
            }
        }
    });
    let proxy = proxy("        retries: { attempts: 1, on: ['503'] }", &[("flaky", upstream.addr)]);

    let request = http::Request::post("/").body(http_body_util::Full::from("payload")).unwrap();
    let reply = Client::connect(proxy.addr()).send(request);

    assert_eq!((reply.status, reply.text().as_str()), (200, "second"));
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].body, b"payload", "the body is sent again");
}

#[test]
fn retries_run_out_and_the_last_answer_is_returned() {
    let upstream = Upstream::raw("down", |mut conn| async move {
        while conn.read_request().await.is_some() {
            conn.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown").await;
        }
    });
    let proxy = proxy("        retries: { attempts: 2, on: ['503'] }", &[("down", upstream.addr)]);

    let reply = get(proxy.addr(), "/");

    assert_eq!((reply.status, reply.text().as_str()), (503, "down"));
    assert_eq!(upstream.requests().len(), 3, "one try and two retries");
}

#[test]
fn per_try_timeout_retries_on_another_endpoint() {
    let (slow, fast) = (Upstream::slow("slow", Duration::from_secs(30)), Upstream::echo("fast"));
    let proxy = proxy(
        "        retries: { attempts: 1, on: [gateway-error], per_try_timeout: 300ms }",
        &[("slow", slow.addr), ("fast", fast.addr)],
    );

    // Round robin tries the slow endpoint first.
    let reply = get(proxy.addr(), "/");

    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-upstream"), "fast");
    assert_eq!(slow.requests().len(), 1);
}

#[test]
fn per_try_timeout_without_retries_is_504() {
    let upstream = Upstream::slow("slow", Duration::from_secs(30));
    let proxy = proxy("        retries: { attempts: 0, per_try_timeout: 300ms }", &[("slow", upstream.addr)]);

    assert_eq!(get(proxy.addr(), "/").status, 504);
}

#[test]
fn a_stuck_request_harms_no_other() {
    // `/slow` is held at its upstream until released.
    let control = Control::new();
    let (slow, fast) = (Upstream::controlled("slow", &control), Upstream::echo("fast"));
    let proxy = Proxy::start(
        "
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: { prefix: /held }
        cluster: slow
      - match: { prefix: /dead }
        cluster: dead
      - match: {}
        cluster: fast
clusters:
  - name: slow
    endpoints: [ '{slow}' ]
  - name: dead
    endpoints: [ '{dead}' ]
  - name: fast
    endpoints: [ '{fast}' ]
",
        &[("slow", slow.addr), ("fast", fast.addr), ("dead", dead_address())],
    );
    let addr = proxy.addr();

    // One request stuck on the slow upstream (same worker as the rest)...
    let stuck = get_in_background(addr, "/held");
    slow.wait_for_requests(1);

    // ...while others, including failing ones, are served meanwhile.
    assert_eq!(get(addr, "/dead").status, 503);
    let mut client = Client::connect(addr);
    for _ in 0..5 {
        assert_eq!(client.get("/").status, 200);
    }
    assert!(!stuck.is_finished(), "the others were answered while the slow one was in flight");
    control.release();
    assert_eq!(stuck.join().unwrap().status, 200);
}

#[test]
fn client_going_away_cancels_its_upstream_request() {
    // An upstream that never answers, and notes when nuncio hangs up on it.
    let hung_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = hung_up.clone();
    let upstream = Upstream::raw("silent", move |mut conn| {
        let flag = flag.clone();
        async move {
            if conn.read_request().await.is_some() && conn.read_exact_bytes(1).await.is_none() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let proxy = proxy("        timeout: 0", &[("silent", upstream.addr)]);

    let mut client = RawClient::connect(proxy.addr());
    client.send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    upstream.wait_for_requests(1);
    drop(client);

    wait_until("the upstream request to end with its client", || hung_up.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn the_client_connection_outlives_an_upstream_error() {
    // A 503 for one request does not cost the client its keep-alive
    // connection (as with Envoy): the request was read in full.
    let proxy = proxy("", &[("dead", dead_address())]);
    let mut client = Client::connect(proxy.addr());
    for _ in 0..3 {
        let reply = client.get("/");
        assert_eq!(reply.status, 503);
        assert_ne!(reply.header("connection"), "close");
    }
}
