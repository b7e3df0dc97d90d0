//! Fan-out under one context (issue 16): hedged tries, mirrored copies,
//! retries with back-off within the deadline, retry budgets, and the richer
//! route matching (methods, query, regex) — against real upstreams.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nuncio_test_support::{
    Admin, Answer, Control, Proxy, RawClient, Scratch, Upstream, catch_all, get_in_background, wait_until,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the hedging origin saw, by connection.
#[derive(Default)]
struct Timeline {
    connections: Mutex<Vec<Seen>>,
}

/// (request arrived, answered at, closed by nuncio at).
type Seen = (Instant, Option<Instant>, Option<Instant>);

/// An origin that holds the first request it gets without answering, and
/// answers every later one at once (`200 from try N`).
fn stall_first(timeline: Arc<Timeline>) -> Upstream {
    Upstream::raw("hedged", move |mut conn| {
        let timeline = timeline.clone();
        async move {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match conn.stream.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            let number = {
                let mut all = timeline.connections.lock().unwrap();
                all.push((Instant::now(), None, None));
                all.len() - 1
            };
            if number > 0 {
                let body = format!("from try {}\n", number + 1);
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let _ = conn.stream.write_all(answer.as_bytes()).await;
                timeline.connections.lock().unwrap()[number].1 = Some(Instant::now());
            }
            // Until nuncio closes the connection.
            let mut rest = [0u8; 1024];
            while matches!(conn.stream.read(&mut rest).await, Ok(n) if n > 0) {}
            timeline.connections.lock().unwrap()[number].2 = Some(Instant::now());
        }
    })
}

#[test]
fn a_try_past_its_per_try_timeout_is_hedged_and_the_loser_cancelled_at_once() {
    let scratch = Scratch::new("hedge");
    let log = scratch.path("access.log");
    let mut cancel_delays = Vec::new();
    for _ in 0..5 {
        let timeline = Arc::new(Timeline::default());
        let origin = stall_first(timeline.clone());
        let listener = format!(
            "    access_log: {{ path: '{}', format: \"%RESPONSE_CODE% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %UPSTREAM_HEDGE_WON%\\n\" }}",
            log.display()
        );
        let route =
            "        retries: { attempts: 2, on: [5xx], per_try_timeout: 200ms, hedge_on_per_try_timeout: true }";
        let proxy = Proxy::start(&catch_all(&listener, route, "    endpoints: [ '{app}' ]"), &[("app", origin.addr)]);
        let started = Instant::now();
        let reply = proxy.get("/slow");
        let took = started.elapsed();
        assert_eq!((reply.status, reply.text().as_str()), (200, "from try 2\n"));
        assert!(took >= Duration::from_millis(200), "the hedge starts at the per-try timeout: {took:?}");
        proxy.wait_for_stats(&[
            "nuncio_upstream_rq_hedged_total{cluster=\"app\"}: 1",
            "nuncio_upstream_rq_hedge_won_by_later_try_total{cluster=\"app\"}: 1",
            "nuncio_upstream_rq_total{cluster=\"app\"}: 2",
        ]);
        // The first try's connection is closed once the second answered.
        wait_until("the stalled try is cancelled", || timeline.connections.lock().unwrap()[0].2.is_some());
        let all = timeline.connections.lock().unwrap();
        let won = all[1].1.expect("try 2 answered");
        let closed = all[0].2.expect("try 1 closed");
        cancel_delays.push(closed.saturating_duration_since(won));
        drop(all);
        drop(proxy);
    }
    // The bound, on the best of five runs (one run can lose its
    // core to another process on a loaded 2-core machine); every run within
    // a bound that still rules out waiting for a timeout.
    cancel_delays.sort();
    eprintln!("the losing try's connection closed {cancel_delays:?} after the winner answered");
    assert!(cancel_delays[0] <= Duration::from_millis(10), "{cancel_delays:?}");
    assert!(cancel_delays.iter().all(|d| *d < Duration::from_secs(1)), "{cancel_delays:?}");
    wait_until("the access log has the five lines", || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.lines().count() == 5)
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().all(|line| line == "200 2 1"), "{text}");
}

#[test]
fn without_a_stall_nothing_is_hedged() {
    let origin = Upstream::echo("app");
    let route = "        retries: { attempts: 2, per_try_timeout: 5s, hedge_on_per_try_timeout: true }";
    let proxy = Proxy::start(&catch_all("", route, "    endpoints: [ '{app}' ]"), &[("app", origin.addr)]);
    for _ in 0..3 {
        assert_eq!(proxy.get("/").status, 200);
    }
    proxy.wait_for_stats(&[
        "nuncio_upstream_rq_total{cluster=\"app\"}: 3",
        "nuncio_upstream_rq_hedged_total{cluster=\"app\"}: 0",
    ]);
}

/// A config with a main cluster and a mirror cluster `shadow`.
fn mirrored(mirror: &str, route_timeout: &str) -> String {
    format!(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: app
        timeout: {route_timeout}
        mirror: [ {mirror} ]
clusters:
  - name: app
    endpoints: [ '{{app}}' ]
  - name: shadow
    endpoints: [ '{{shadow}}' ]
"
    )
}

#[test]
fn a_mirror_gets_the_same_request_with_its_host_suffixed() {
    let (app, shadow) = (Upstream::echo("app"), Upstream::echo("shadow"));
    let proxy = Proxy::start(
        &mirrored("{ cluster: shadow, percent: 100 }", "5s"),
        &[("app", app.addr), ("shadow", shadow.addr)],
    );
    let reply = proxy.exchange(
        "POST /orders?x=1 HTTP/1.1\r\nHost: shop.example:8080\r\nX-Trace: t1\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!((reply.status, reply.header("x-upstream")), (200, "app"));
    shadow.wait_for_requests(1);
    let (main, copy) = (app.last_request(), shadow.last_request());
    assert_eq!(
        (copy.method.as_str(), copy.target.as_str(), copy.body.as_slice()),
        ("POST", "/orders?x=1", &b"hello"[..])
    );
    assert_eq!(copy.header("host"), "shop.example-shadow:8080");
    assert_eq!(main.header("host"), "shop.example:8080");
    assert_eq!(copy.header("x-trace"), "t1");
    assert_eq!(copy.header("x-request-id"), main.header("x-request-id"), "the same request");
    proxy.wait_for_stats(&["nuncio_upstream_mirror_rq_total{cluster=\"shadow\"}: 1"]);
}

#[test]
fn a_stalling_mirror_neither_delays_the_answer_nor_is_cancelled_by_its_end() {
    let control = Control::new();
    let app = Upstream::echo("app");
    // The mirror holds every request on /held... until released.
    let shadow = Upstream::controlled("shadow", &control);
    let proxy = Proxy::start(
        &mirrored("{ cluster: shadow, percent: 100, timeout: 30s }", "5s"),
        &[("app", app.addr), ("shadow", shadow.addr)],
    );
    for i in 0..3 {
        let started = Instant::now();
        let reply = proxy.get(&format!("/held/{i}"));
        assert_eq!(reply.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered while the mirror stalls: {:?}",
            started.elapsed()
        );
    }
    shadow.wait_for_requests(3);
    // The clients are long gone; the copies are still open at the mirror,
    // and complete when it answers.
    assert_eq!(shadow.abandoned(), 0, "no copy was cancelled by its request's end");
    control.release();
    proxy.wait_for_stats(&["nuncio_upstream_rq_class_total{class=\"2xx\",cluster=\"shadow\"}: 3"]);
}

#[test]
fn a_mirror_over_its_breaker_or_with_a_streamed_body_is_skipped_and_counted() {
    let control = Control::new();
    let app = Upstream::echo("app");
    let shadow = Upstream::controlled("shadow", &control);
    let yaml = mirrored("{ cluster: shadow }", "5s")
        .replace("  - name: shadow\n    endpoints", "  - name: shadow\n    max_requests: 1\n    endpoints");
    let proxy = Proxy::start(&yaml, &[("app", app.addr), ("shadow", shadow.addr)]);
    assert_eq!(proxy.get("/held/1").status, 200);
    shadow.wait_for_requests(1);
    // The mirror's one request slot is taken by the held copy.
    assert_eq!(proxy.get("/held/2").status, 200);
    proxy.wait_for_stats(&["nuncio_upstream_mirror_skipped_total{cluster=\"shadow\",reason=\"overflow\"}: 1"]);
    // A body too large to keep a copy of streams to the main cluster only.
    let big = "x".repeat(100 * 1024);
    let reply = proxy.exchange(format!("POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{big}", big.len()));
    assert_eq!(reply.status, 200);
    assert_eq!(app.last_request().body.len(), big.len());
    proxy.wait_for_stats(&["nuncio_upstream_mirror_skipped_total{cluster=\"shadow\",reason=\"body_too_large\"}: 1"]);
    control.release();
}

#[test]
fn a_mirror_samples_its_share_of_requests() {
    let (app, shadow) = (Upstream::echo("app"), Upstream::echo("shadow"));
    let proxy =
        Proxy::start(&mirrored("{ cluster: shadow, percent: 0 }", "5s"), &[("app", app.addr), ("shadow", shadow.addr)]);
    for _ in 0..20 {
        assert_eq!(proxy.get("/").status, 200);
    }
    proxy.wait_for_stats(&["nuncio_upstream_rq_total{cluster=\"app\"}: 20"]);
    assert_eq!(shadow.requests().len(), 0, "percent 0: no copy");
}

/// An origin that answers 503 to everything and records when each request
/// arrived.
fn always_503(arrivals: Arc<Mutex<Vec<Instant>>>) -> Upstream {
    Upstream::scripted("failing", move |_| {
        arrivals.lock().unwrap().push(Instant::now());
        Answer::status(503)
    })
}

#[test]
fn retries_back_off_within_the_jitter_bounds() {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let origin = always_503(arrivals.clone());
    let route =
        "        timeout: 10s\n        retries: { attempts: 4, on: [\"503\"], backoff: { base: 50ms, max: 120ms } }";
    let proxy = Proxy::start(&catch_all("", route, "    endpoints: [ '{app}' ]"), &[("app", origin.addr)]);
    assert_eq!(proxy.get("/").status, 503, "the last try's answer");
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 5, "one try and four retries");
    // Before retry n: at most min(max, base × 2^(n-1)) (plus what a loaded
    // machine adds to a round trip).
    let ceilings = [50, 100, 120, 120];
    for (n, pair) in arrivals.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        assert!(gap <= Duration::from_millis(ceilings[n] + 200), "retry {}: waited {gap:?}", n + 1);
    }
}

#[test]
fn no_retry_waits_past_the_deadline() {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let origin = always_503(arrivals.clone());
    // Back-offs up to 2s against a 300ms deadline: only retries whose wait
    // ends before it are made.
    let route =
        "        timeout: 300ms\n        retries: { attempts: 50, on: [\"503\"], backoff: { base: 200ms, max: 2s } }";
    let proxy = Proxy::start(&catch_all("", route, "    endpoints: [ '{app}' ]"), &[("app", origin.addr)]);
    let reply = proxy.get("/");
    // The last try's answer; or, when the last try started just before the
    // deadline and its answer came after it, the route's timeout.
    assert!(matches!(reply.status, 503 | 504), "{} {}", reply.status, reply.text());
    let arrivals = arrivals.lock().unwrap().clone();
    assert!(arrivals.len() < 50, "{}", arrivals.len());
    // The deadline started before the first try arrived: every retry must
    // have started before first + 300ms (what the trip to the origin adds
    // allowed for).
    for at in &arrivals[1..] {
        let after = at.duration_since(arrivals[0]);
        assert!(after < Duration::from_millis(350), "a try {after:?} after the first");
    }
}

#[test]
fn a_retry_budget_bounds_retries_in_flight() {
    // Each request is held 40 ms, then 503; every client request would be
    // retried 5 times. The budget allows retries for 20 % of the requests
    // in flight, at least 1 per worker.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (now, peak) = (in_flight, most.clone());
    let origin = Upstream::raw("slow-503", move |mut conn| {
        let (now, peak) = (now.clone(), peak.clone());
        async move {
            while conn.read_request().await.is_some() {
                let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(current, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(40)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                conn.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n").await;
            }
        }
    });
    let route =
        "        timeout: 10s\n        retries: { attempts: 5, on: [\"503\"], backoff: { base: 1ms, max: 2ms } }";
    let cluster = "    endpoints: [ '{app}' ]\n    retry_budget: { percent: 20, min_retry_concurrency: 2 }";
    let proxy = Proxy::start(&catch_all("", route, cluster), &[("app", origin.addr)]);
    let clients = 10;
    let handles: Vec<_> = (0..clients).map(|i| get_in_background(proxy.addr(), &format!("/{i}"))).collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap().status, 503);
    }
    // Requests in flight at the origin: the clients' own, and at most the
    // budget's retries (20 % of 10 = 2, at least 1 per worker × 2).
    let peak = most.load(Ordering::SeqCst);
    assert!(peak <= clients + 2, "peak {peak}");
    let overflow = proxy.stat("nuncio_upstream_rq_retry_overflow_total{cluster=\"app\"}");
    assert!(overflow.as_deref().is_some_and(|n| n.parse::<u64>().unwrap() > 0), "retries refused: {overflow:?}");
}

#[test]
fn routes_match_on_methods_query_and_regex() {
    let (users, api, other) = (Upstream::echo("users"), Upstream::echo("api"), Upstream::echo("other"));
    let proxy = Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: { prefix: /api/, methods: [GET, HEAD], query: [ { name: debug, present: false } ] }
        cluster: api
      - match: { regex: '/v[0-9]+/users/[^/]+' }
        cluster: users
      - match: { prefix: / }
        cluster: other
clusters:
  - { name: api, endpoints: [ '{api}' ] }
  - { name: users, endpoints: [ '{users}' ] }
  - { name: other, endpoints: [ '{other}' ] }
",
        &[("api", api.addr), ("users", users.addr), ("other", other.addr)],
    );
    let to = |request: &str| proxy.exchange(request).header("x-upstream").to_owned();
    assert_eq!(to("GET /api/items HTTP/1.1\r\nHost: t\r\n\r\n"), "api");
    let mut head = RawClient::connect(proxy.addr());
    head.send("HEAD /api/items HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(head.head_response().header("x-upstream"), "api");
    assert_eq!(to("POST /api/items HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), "other");
    assert_eq!(to("GET /api/items?debug=1 HTTP/1.1\r\nHost: t\r\n\r\n"), "other");
    assert_eq!(to("GET /v2/users/ann HTTP/1.1\r\nHost: t\r\n\r\n"), "users");
    assert_eq!(to("GET /v2/users/ann/posts HTTP/1.1\r\nHost: t\r\n\r\n"), "other");
}
