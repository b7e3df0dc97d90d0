//! Clusters beyond plain rotation, over real sockets: endpoint weights
//! under every policy, consistent hashing, circuit breakers (a 503 at once,
//! counted), active health checks, `when_all_unhealthy`, passive outlier
//! detection and its `max_ejection_percent`, and HTTP/2 multiplexing.
//!
//! In-flight requests are held by a gate ([`Control::release`]) rather than
//! a delay, so no test depends on how fast the machine is; every state
//! change (health, ejection, counters) is polled with a deadline through
//! the admin listener.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nuncio_test_support::{
    Admin, Blackhole, Client, Control, Proxy, Reply, TIMEOUT, Upstream, catch_all, dead_address, get,
    get_in_background, wait_until,
};

/// nuncio with `workers` workers and one catch-all route to cluster `app`,
/// whose fields (`endpoints` included) are `cluster`, indented by 4 spaces.
fn start(workers: usize, cluster: &str, addresses: &[(&str, SocketAddr)]) -> Proxy {
    start_with_route(workers, "", cluster, addresses)
}

/// [`start`] with extra route fields `route`, indented by 8 spaces.
fn start_with_route(workers: usize, route: &str, cluster: &str, addresses: &[(&str, SocketAddr)]) -> Proxy {
    Proxy::start(&format!("workers: {workers}\n{}", catch_all("", route, cluster)), addresses)
}

/// A `GET /` with header `name: value`.
fn get_with(client: &mut Client, name: &str, value: &str) -> Reply {
    client.send(http::Request::get("/").header(name, value).body(Default::default()).unwrap())
}

// ---------------------------------------------------------------- weights --

#[test]
fn weighted_round_robin_gives_an_endpoint_of_weight_3_six_of_eight_requests() {
    let (a, b) = (Upstream::echo("a"), Upstream::echo("b"));
    let proxy = start(
        1,
        "
    lb: round_robin
    endpoints: [ { address: '{a}', weight: 3 }, '{b}' ]
",
        &[("a", a.addr), ("b", b.addr)],
    );

    let mut client = Client::connect(proxy.addr());
    let answered: Vec<String> = (0..8).map(|_| client.get("/").header("x-upstream").to_owned()).collect();

    assert_eq!((a.requests().len(), b.requests().len()), (6, 2), "{answered:?}");
    // Smooth: b's turns are spread out, not bunched.
    for pair in answered.windows(2) {
        assert!(pair != ["b", "b"], "{answered:?}");
    }
}

#[test]
fn weighted_random_follows_the_weights() {
    let (a, b) = (Upstream::echo("a"), Upstream::echo("b"));
    let proxy = start(
        2,
        "
    lb: random
    endpoints: [ { address: '{a}', weight: 3 }, '{b}' ]
",
        &[("a", a.addr), ("b", b.addr)],
    );

    let mut client = Client::connect(proxy.addr());
    for _ in 0..400 {
        assert_eq!(client.get("/").status, 200);
    }

    // Expected 300 of 400 (σ ≈ 8.7): a band of about ±7σ.
    let to_a = a.requests().len();
    assert_eq!(to_a + b.requests().len(), 400);
    assert!((240..=360).contains(&to_a), "a got {to_a} of 400 requests, expected about 300");
}

#[test]
fn weighted_least_request_compares_requests_in_flight_per_unit_of_weight() {
    // Both endpoints hold `/held` requests until released.
    let control = Control::new();
    let (a, b) = (Upstream::controlled("a", &control), Upstream::controlled("b", &control));
    let proxy = start(
        1,
        "
    lb: least_request
    endpoints: [ { address: '{a}', weight: 3 }, '{b}' ]
",
        &[("a", a.addr), ("b", b.addr)],
    );
    let addr = proxy.addr();
    let in_flight = || a.requests().len() + b.requests().len();

    // The first held request goes anywhere; the second to the other
    // endpoint (1 in flight beats 0 whatever the weight); the third to a
    // (1/3 per unit of weight beats 1/1).
    let mut held = Vec::new();
    for n in 1..=3 {
        held.push(get_in_background(addr, "/held"));
        wait_until(&format!("held request {n} upstream"), || in_flight() == n);
    }
    assert_eq!((a.requests().len(), b.requests().len()), (2, 1), "held requests by endpoint");

    // a has 2 in flight for weight 3 (0.67 each), b 1 for weight 1: every
    // new request goes to a, though it has more in flight.
    let mut client = Client::connect(addr);
    for _ in 0..10 {
        assert_eq!(client.get("/").header("x-upstream"), "a");
    }

    control.release();
    for request in held {
        assert_eq!(request.join().unwrap().status, 200);
    }
}

// -------------------------------------------------------------- ring hash --

#[test]
fn ring_hash_sends_each_user_to_one_endpoint_on_every_worker() {
    let upstreams = [Upstream::echo("a"), Upstream::echo("b"), Upstream::echo("c")];
    let proxy = start(
        2,
        "
    lb: ring_hash
    hash_on: { header: x-user }
    endpoints: [ '{a}', '{b}', '{c}' ]
",
        &[("a", upstreams[0].addr), ("b", upstreams[1].addr), ("c", upstreams[2].addr)],
    );

    // Each request on a new connection, so both workers serve each user.
    let mut reached: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for round in 0..4 {
        for user in 0..15 {
            let user = format!("user-{user}");
            let reply = get_with(&mut Client::connect(proxy.addr()), "x-user", &user);
            assert_eq!(reply.status, 200, "round {round}, {user}");
            reached.entry(user).or_default().insert(reply.header("x-upstream").to_owned());
        }
    }

    for (user, endpoints) in &reached {
        assert_eq!(endpoints.len(), 1, "{user} reached {endpoints:?}");
    }
    let used: BTreeSet<&String> = reached.values().flatten().collect();
    assert!(used.len() >= 2, "15 users all hashed to {used:?}");

    // No header: still served, by some endpoint.
    let reply = get(proxy.addr(), "/");
    assert_eq!(reply.status, 200);
    assert!(["a", "b", "c"].contains(&reply.header("x-upstream")), "{reply:?}");
}

#[test]
fn ring_hash_on_source_ip_keeps_a_client_on_one_endpoint() {
    let upstreams = [Upstream::echo("a"), Upstream::echo("b"), Upstream::echo("c")];
    let proxy = start(
        2,
        "
    lb: ring_hash
    hash_on: source_ip
    endpoints: [ '{a}', '{b}', '{c}' ]
",
        &[("a", upstreams[0].addr), ("b", upstreams[1].addr), ("c", upstreams[2].addr)],
    );

    let reached: BTreeSet<String> = (0..12).map(|_| get(proxy.addr(), "/").header("x-upstream").to_owned()).collect();

    assert_eq!(reached.len(), 1, "127.0.0.1 reached {reached:?}");
}

#[test]
fn ring_hash_moves_only_the_users_of_an_unhealthy_endpoint() {
    let controls = [Control::new(), Control::new(), Control::new()];
    let upstreams: Vec<Upstream> =
        ["a", "b", "c"].iter().zip(&controls).map(|(name, c)| Upstream::controlled(name, c)).collect();
    let proxy = start(
        2,
        &format!(
            "    lb: ring_hash\n    hash_on: {{ header: x-user }}\n    endpoints: [ '{{a}}', '{{b}}', '{{c}}' ]{HEALTH_CHECK}"
        ),
        &[("a", upstreams[0].addr), ("b", upstreams[1].addr), ("c", upstreams[2].addr)],
    );
    let endpoint_of = |user: &str| -> String {
        let reply = get_with(&mut Client::connect(proxy.addr()), "x-user", user);
        assert_eq!(reply.status, 200, "{user}");
        reply.header("x-upstream").to_owned()
    };
    let users: Vec<String> = (0..20).map(|u| format!("user-{u}")).collect();
    let before: Vec<String> = users.iter().map(|u| endpoint_of(u)).collect();

    // The endpoint of the first user goes unhealthy.
    let sick = ["a", "b", "c"].iter().position(|name| *name == before[0]).unwrap();
    controls[sick].set_health(503);
    proxy.wait_for_endpoint("app", upstreams[sick].addr, "healthy", "false");

    for (user, was) in users.iter().zip(&before) {
        let now = endpoint_of(user);
        if *was == before[0] {
            assert_ne!(now, *was, "{user} left the unhealthy endpoint");
        } else {
            assert_eq!(now, *was, "{user} stays where it was");
        }
    }
}

// ------------------------------------------------------- circuit breakers --

#[test]
fn max_requests_refuses_a_second_request_while_one_is_in_flight() {
    let control = Control::new();
    let upstream = Upstream::controlled("app", &control);
    // Two workers: the count is the cluster's, whichever worker asks.
    let proxy = start(
        2,
        "
    max_requests: 1
    endpoints: [ '{app}' ]
",
        &[("app", upstream.addr)],
    );

    let first = get_in_background(proxy.addr(), "/held");
    upstream.wait_for_requests(1);

    // Answered while the first is still held: refused, not queued.
    let refused = get(proxy.addr(), "/");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.text(), "nuncio: circuit breaker max_requests open for cluster app\n");
    assert!(!first.is_finished(), "the first request is still in flight");
    assert_eq!(upstream.requests().len(), 1, "the refused request never went upstream");
    assert_eq!(
        proxy.stat(r#"nuncio_upstream_cb_open_total{breaker="max_requests",cluster="app"}"#).as_deref(),
        Some("1")
    );

    // Once the first one ends, the breaker closes.
    control.release();
    assert_eq!(first.join().unwrap().status, 200);
    proxy.wait_for_stats(&["nuncio_downstream_rq_total: 2"]);
    assert_eq!(get(proxy.addr(), "/").status, 200);
    assert_eq!(upstream.requests().len(), 2);
    proxy.wait_for_stats(&[r#"nuncio_upstream_cb_open_total{breaker="max_requests",cluster="app"}: 1"#]);
}

#[test]
fn max_connections_refuses_a_request_that_needs_a_second_connection() {
    let control = Control::new();
    let upstream = Upstream::controlled("app", &control);
    // One worker: its one pooled connection serves the requests after.
    let proxy = start(
        1,
        "
    max_connections: 1
    endpoints: [ '{app}' ]
",
        &[("app", upstream.addr)],
    );

    let first = get_in_background(proxy.addr(), "/held");
    upstream.wait_for_requests(1);

    // The only connection is busy with the first request.
    let refused = get(proxy.addr(), "/");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.text(), "nuncio: circuit breaker max_connections open for cluster app\n");
    assert!(!first.is_finished(), "the first request is still in flight");
    assert_eq!(upstream.connections(), 1);
    assert_eq!(
        proxy.stat(r#"nuncio_upstream_cb_open_total{breaker="max_connections",cluster="app"}"#).as_deref(),
        Some("1")
    );

    // Released, the connection goes back to the pool and carries the next
    // requests.
    control.release();
    assert_eq!(first.join().unwrap().status, 200);
    proxy.wait_for_stats(&["nuncio_downstream_rq_total: 2"]);
    for _ in 0..3 {
        assert_eq!(get(proxy.addr(), "/").status, 200);
    }
    assert_eq!(upstream.connections(), 1);
    assert_eq!(upstream.requests().len(), 4);
    proxy.wait_for_stats(&[r#"nuncio_upstream_cx_total{cluster="app"}: 1"#]);
}

#[test]
fn max_pending_requests_refuses_a_request_while_another_is_still_connecting() {
    let blackhole = Blackhole::new();
    let proxy = start(
        1,
        "
    max_pending_requests: 1
    connect_timeout: 4s
    endpoints: [ '{blackhole}' ]
",
        &[("blackhole", blackhole.addr)],
    );

    // The first request waits for a connection that never completes...
    let first = get_in_background(proxy.addr(), "/");
    proxy.wait_for_stats(&[r#"nuncio_upstream_rq_total{cluster="app"}: 1"#]);

    // ...so the second is refused at once rather than queued behind it.
    let refused = get(proxy.addr(), "/");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.text(), "nuncio: circuit breaker max_pending_requests open for cluster app\n");
    assert!(!first.is_finished(), "the first request is still connecting");
    assert_eq!(
        proxy.stat(r#"nuncio_upstream_cb_open_total{breaker="max_pending_requests",cluster="app"}"#).as_deref(),
        Some("1")
    );

    // The first ends on its own connect timeout.
    let first = first.join().unwrap();
    assert_eq!(first.status, 503);
    assert!(first.text().contains("connect timeout"), "{}", first.text());
}

#[test]
fn max_retries_counts_retries_in_flight_so_one_request_may_retry_twice() {
    let control = Control::new();
    control.set_status(503);
    let upstream = Upstream::controlled("down", &control);
    let proxy = start_with_route(
        1,
        "        retries: { attempts: 2, on: ['503'] }",
        "
    max_retries: 1
    endpoints: [ '{down}' ]
",
        &[("down", upstream.addr)],
    );

    // Each retry is over when the next starts: never more than 1 in flight.
    let reply = get(proxy.addr(), "/");

    assert_eq!(reply.status, 503);
    assert_eq!(upstream.requests().len(), 3, "one try and two retries");
    proxy.wait_for_stats(&[
        r#"nuncio_upstream_rq_retry_total{cluster="app"}: 2"#,
        r#"nuncio_upstream_cb_open_total{breaker="max_retries",cluster="app"}: 0"#,
    ]);
}

#[test]
fn max_retries_refuses_a_retry_while_another_is_in_flight() {
    // Request numbers on the upstream, in the order the test makes them:
    // 0 A's try (503), 1 A's retry (held until released, then 200),
    // 2 B's try (503: B's retry is refused), 3 C's try (503), 4 C's retry (200).
    let released = Arc::new(AtomicBool::new(false));
    let gate = released.clone();
    let upstream = Upstream::raw("flaky", move |mut conn| {
        let gate = gate.clone();
        async move {
            while let Some(n) = conn.read_request().await {
                if n == 1 {
                    let deadline = Instant::now() + TIMEOUT;
                    while !gate.load(Ordering::SeqCst) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                if n == 1 || n >= 4 {
                    conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n").await;
                } else {
                    conn.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 13\r\n\r\nupstream 503\n").await;
                }
            }
        }
    });
    let proxy = start_with_route(
        1,
        "        retries: { attempts: 1, on: ['503'] }",
        "
    max_retries: 1
    endpoints: [ '{flaky}' ]
",
        &[("flaky", upstream.addr)],
    );

    // A's retry is in flight (held upstream)...
    let a = get_in_background(proxy.addr(), "/a");
    upstream.wait_for_requests(2);

    // ...so B's 503 is not retried: B gets the upstream's own answer.
    let b = get(proxy.addr(), "/b");
    assert_eq!((b.status, b.text().as_str()), (503, "upstream 503\n"));
    assert_eq!(upstream.requests().len(), 3, "B was tried once");
    assert!(!a.is_finished(), "A's retry is still in flight");
    assert_eq!(
        proxy.stat(r#"nuncio_upstream_cb_open_total{breaker="max_retries",cluster="app"}"#).as_deref(),
        Some("1")
    );

    // Once A is done, retries are allowed again.
    released.store(true, Ordering::SeqCst);
    assert_eq!(a.join().unwrap().status, 200);
    proxy.wait_for_stats(&["nuncio_downstream_rq_total: 2"]);
    let c = get(proxy.addr(), "/c");
    assert_eq!((c.status, c.text().as_str()), (200, "ok\n"), "C's retry went through");
    let targets: Vec<String> = upstream.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/a", "/a", "/b", "/c", "/c"]);
    proxy.wait_for_stats(&[
        r#"nuncio_upstream_cb_open_total{breaker="max_retries",cluster="app"}: 1"#,
        r#"nuncio_upstream_rq_retry_total{cluster="app"}: 2"#,
    ]);
}

// ---------------------------------------------------------- health checks --

/// Health checks every 100ms; 2 failures take an endpoint out, 2 passes put
/// it back.
const HEALTH_CHECK: &str = "
    health_check: { path: /health, interval: 100ms, timeout: 1s, unhealthy_threshold: 2, healthy_threshold: 2 }";

#[test]
fn an_endpoint_failing_health_checks_gets_no_requests_until_it_passes_again() {
    let (sick, well) = (Control::new(), Control::new());
    let (a, b) = (Upstream::controlled("a", &sick), Upstream::controlled("b", &well));
    let proxy =
        start(2, &format!("    endpoints: [ '{{a}}', '{{b}}' ]{HEALTH_CHECK}"), &[("a", a.addr), ("b", b.addr)]);
    let mut client = Client::connect(proxy.addr());
    let answered = |client: &mut Client, n: usize| -> Vec<String> {
        (0..n).map(|_| client.get("/").header("x-upstream").to_owned()).collect()
    };
    assert_eq!(proxy.endpoint_field("app", a.addr, "healthy"), "true");
    assert!(answered(&mut client, 4).contains(&"a".to_owned()));

    sick.set_health(503);
    proxy.wait_for_endpoint("app", a.addr, "healthy", "false");
    assert_eq!(proxy.endpoint_field("app", b.addr, "healthy"), "true");
    let before = a.requests().len();
    assert_eq!(answered(&mut client, 6), ["b"; 6]);
    assert_eq!(a.requests().len(), before, "an unhealthy endpoint gets no request");
    let failures = proxy.stat(r#"nuncio_health_check_total{cluster="app",result="failure"}"#).unwrap();
    assert!(failures.parse::<u64>().unwrap() >= 2, "{failures} failed checks");

    sick.set_health(200);
    proxy.wait_for_endpoint("app", a.addr, "healthy", "true");
    // Round robin over both again: a's turn comes within two requests.
    assert!(answered(&mut client, 2).contains(&"a".to_owned()));
}

#[test]
fn when_every_endpoint_is_unhealthy_fail_answers_503_at_once() {
    let control = Control::new();
    control.set_health(503);
    let (a, b) = (Upstream::controlled("a", &control), Upstream::controlled("b", &control));
    let proxy = start(
        2,
        &format!("    when_all_unhealthy: fail\n    endpoints: [ '{{a}}', '{{b}}' ]{HEALTH_CHECK}"),
        &[("a", a.addr), ("b", b.addr)],
    );

    proxy.wait_for_endpoint("app", a.addr, "healthy", "false");
    proxy.wait_for_endpoint("app", b.addr, "healthy", "false");
    let before = a.requests().len() + b.requests().len();
    let reply = get(proxy.addr(), "/");

    assert_eq!((reply.status, reply.text().as_str()), (503, "nuncio: no healthy endpoint in cluster app\n"));
    assert_eq!(a.requests().len() + b.requests().len(), before, "no endpoint was tried");
}

#[test]
fn when_every_endpoint_is_unhealthy_use_all_still_reaches_them() {
    let control = Control::new();
    control.set_health(503);
    let (a, b) = (Upstream::controlled("a", &control), Upstream::controlled("b", &control));
    let proxy = start(
        1,
        &format!("    when_all_unhealthy: use_all\n    endpoints: [ '{{a}}', '{{b}}' ]{HEALTH_CHECK}"),
        &[("a", a.addr), ("b", b.addr)],
    );

    proxy.wait_for_endpoint("app", a.addr, "healthy", "false");
    proxy.wait_for_endpoint("app", b.addr, "healthy", "false");
    let (a_before, b_before) = (a.requests().len(), b.requests().len());
    let mut client = Client::connect(proxy.addr());
    for _ in 0..4 {
        assert_eq!(client.get("/").status, 200);
    }

    assert_eq!((a.requests().len() - a_before, b.requests().len() - b_before), (2, 2), "balanced over all");
}

// ------------------------------------------------------ outlier detection --

/// Whether `/clusters` shows `endpoint` of cluster `app` ejected.
fn ejected(proxy: &Proxy, endpoint: SocketAddr) -> bool {
    proxy.endpoint_field("app", endpoint, "ejected") == "true"
}

#[test]
fn five_hundreds_in_a_row_eject_an_endpoint_for_the_ejection_time() {
    let bad_control = Control::new();
    bad_control.set_status(500);
    let (good, bad) = (Upstream::echo("good"), Upstream::controlled("bad", &bad_control));
    let proxy = start(
        1,
        "
    outlier_detection: { consecutive_5xx: 3, base_ejection_time: 1s }
    endpoints: [ '{good}', '{bad}' ]
",
        &[("good", good.addr), ("bad", bad.addr)],
    );
    let mut client = Client::connect(proxy.addr());

    // Round robin: good, bad, good, bad, good, bad. The third 500 in a row
    // ejects bad; each one reaches the client as it is.
    for i in 0..6 {
        let reply = client.get("/");
        assert_eq!(reply.status, if i % 2 == 0 { 200 } else { 500 }, "request {i}: {reply:?}");
    }
    assert_eq!(bad.requests().len(), 3);
    proxy.wait_for_stats(&[r#"nuncio_outlier_ejections_total{cluster="app"}: 1"#]);

    // While /clusters shows it ejected, every request goes to good. (A
    // request is checked only if the ejection still held after it ended.)
    let mut checked = 0;
    for _ in 0..5 {
        let before = bad.requests().len();
        let reply = client.get("/");
        if !ejected(&proxy, bad.addr) {
            break;
        }
        assert_eq!((reply.status, reply.header("x-upstream")), (200, "good"));
        assert_eq!(bad.requests().len(), before);
        checked += 1;
    }
    assert!(checked > 0, "the 1s ejection ended before one request was made");
    assert_eq!(proxy.endpoint_field("app", good.addr, "ejected"), "false");

    // Then it is back in rotation.
    proxy.wait_for_endpoint("app", bad.addr, "ejected", "false");
    let before = bad.requests().len();
    let statuses: Vec<u16> = (0..2).map(|_| client.get("/").status).collect();
    assert!(statuses.contains(&500), "{statuses:?}");
    assert_eq!(bad.requests().len(), before + 1);
    proxy.wait_for_stats(&[r#"nuncio_outlier_ejections_total{cluster="app"}: 1"#]);
}

#[test]
fn connect_failures_in_a_row_eject_an_endpoint() {
    let good = Upstream::echo("good");
    let dead = dead_address();
    let proxy = start(
        1,
        "
    outlier_detection: { consecutive_connect_failures: 3, base_ejection_time: 1s }
    endpoints: [ '{good}', '{dead}' ]
",
        &[("good", good.addr), ("dead", dead)],
    );
    let mut client = Client::connect(proxy.addr());

    // good, dead, good, dead, good, dead: three refused connections.
    let statuses: Vec<u16> = (0..6).map(|_| client.get("/").status).collect();
    assert_eq!(statuses, [200, 503, 200, 503, 200, 503]);
    proxy.wait_for_stats(&[
        r#"nuncio_outlier_ejections_total{cluster="app"}: 1"#,
        r#"nuncio_upstream_cx_connect_fail_total{cluster="app"}: 3"#,
    ]);

    let mut checked = 0;
    for _ in 0..5 {
        let reply = client.get("/");
        if !ejected(&proxy, dead) {
            break;
        }
        assert_eq!((reply.status, reply.header("x-upstream")), (200, "good"));
        checked += 1;
    }
    assert!(checked > 0, "the 1s ejection ended before one request was made");

    proxy.wait_for_endpoint("app", dead, "ejected", "false");
    let statuses: Vec<u16> = (0..2).map(|_| client.get("/").status).collect();
    assert!(statuses.contains(&503), "the dead endpoint is tried again: {statuses:?}");
}

/// Sends requests on `client` until each of `bad` has answered `n`
/// (at most 50 requests).
fn until_each_answered(client: &mut Client, bad: &[&Upstream], n: usize) {
    for _ in 0..50 {
        if bad.iter().all(|u| u.requests().len() >= n) {
            return;
        }
        client.get("/");
    }
    let seen: Vec<usize> = bad.iter().map(|u| u.requests().len()).collect();
    panic!("after 50 requests the failing endpoints answered {seen:?} times, expected {n} each");
}

#[test]
fn max_ejection_percent_0_still_lets_one_endpoint_be_ejected_but_no_second() {
    let control = Control::new();
    control.set_status(500);
    let (bad1, bad2) = (Upstream::controlled("bad1", &control), Upstream::controlled("bad2", &control));
    let good = Upstream::echo("good");
    let proxy = start(
        1,
        "
    outlier_detection: { consecutive_5xx: 3, base_ejection_time: 60s, max_ejection_percent: 0 }
    endpoints: [ '{bad1}', '{bad2}', '{good}' ]
",
        &[("bad1", bad1.addr), ("bad2", bad2.addr), ("good", good.addr)],
    );
    let mut client = Client::connect(proxy.addr());

    // Both failing endpoints answer 500 three times in a row.
    until_each_answered(&mut client, &[&bad1, &bad2], 3);
    proxy.wait_for_stats(&[r#"nuncio_outlier_ejections_total{cluster="app"}: 1"#]);

    let out: Vec<bool> = [bad1.addr, bad2.addr].into_iter().map(|e| ejected(&proxy, e)).collect();
    assert_eq!(out.iter().filter(|e| **e).count(), 1, "exactly one ejected: {out:?}");
    let (ejected_one, kept) = if out[0] { (&bad1, &bad2) } else { (&bad2, &bad1) };

    // The one kept shares the requests with good (round robin: about half,
    // depending on where the rotation stood); the ejected one gets none.
    let (ejected_before, kept_before) = (ejected_one.requests().len(), kept.requests().len());
    for _ in 0..6 {
        client.get("/");
    }
    assert_eq!(ejected_one.requests().len(), ejected_before);
    let kept_got = kept.requests().len() - kept_before;
    assert!((2..=4).contains(&kept_got), "the endpoint kept got {kept_got} of 6 requests");
    assert!(!ejected(&proxy, kept.addr));
    assert_eq!(proxy.stat(r#"nuncio_outlier_ejections_total{cluster="app"}"#).as_deref(), Some("1"));
}

#[test]
fn max_ejection_percent_bounds_how_many_endpoints_are_ejected_at_once() {
    let control = Control::new();
    control.set_status(500);
    let bad: Vec<Upstream> = (1..=3).map(|i| Upstream::controlled(&format!("bad{i}"), &control)).collect();
    let good = Upstream::echo("good");
    // 50% of 4 endpoints: 2 may be out at once.
    let proxy = start(
        1,
        "
    outlier_detection: { consecutive_5xx: 3, base_ejection_time: 60s, max_ejection_percent: 50 }
    endpoints: [ '{bad1}', '{bad2}', '{bad3}', '{good}' ]
",
        &[("bad1", bad[0].addr), ("bad2", bad[1].addr), ("bad3", bad[2].addr), ("good", good.addr)],
    );
    let mut client = Client::connect(proxy.addr());

    until_each_answered(&mut client, &[&bad[0], &bad[1], &bad[2]], 3);
    proxy.wait_for_stats(&[r#"nuncio_outlier_ejections_total{cluster="app"}: 2"#]);

    let out: Vec<bool> = bad.iter().map(|u| ejected(&proxy, u.addr)).collect();
    assert_eq!(out.iter().filter(|e| **e).count(), 2, "exactly two ejected: {out:?}");
    let kept = &bad[out.iter().position(|e| !e).unwrap()];
    let before: Vec<usize> = bad.iter().map(|u| u.requests().len()).collect();
    for _ in 0..6 {
        client.get("/");
    }
    for (i, upstream) in bad.iter().enumerate() {
        let got = upstream.requests().len() - before[i];
        if out[i] {
            assert_eq!(got, 0, "bad{} is ejected", i + 1);
        } else {
            assert!((2..=4).contains(&got), "bad{}, kept, got {got} of 6 requests", i + 1);
        }
    }
    assert!(!ejected(&proxy, kept.addr));
    assert_eq!(proxy.stat(r#"nuncio_outlier_ejections_total{cluster="app"}"#).as_deref(), Some("2"));
}

#[test]
fn an_endpoint_refused_ejection_by_max_ejection_percent_is_ejected_once_there_is_room() {
    let (control1, control2) = (Control::new(), Control::new());
    control1.set_status(500);
    control2.set_status(500);
    let (bad1, bad2) = (Upstream::controlled("bad1", &control1), Upstream::controlled("bad2", &control2));
    let good = Upstream::echo("good");
    let proxy = start(
        1,
        "
    outlier_detection: { consecutive_5xx: 3, base_ejection_time: 1s, max_ejection_percent: 0 }
    endpoints: [ '{bad1}', '{bad2}', '{good}' ]
",
        &[("bad1", bad1.addr), ("bad2", bad2.addr), ("good", good.addr)],
    );
    let mut client = Client::connect(proxy.addr());

    // One is ejected; the other's run of 500s is refused for lack of room.
    until_each_answered(&mut client, &[&bad1, &bad2], 3);
    proxy.wait_for_stats(&[r#"nuncio_outlier_ejections_total{cluster="app"}: 1"#]);
    let (out, out_control, kept) =
        if ejected(&proxy, bad1.addr) { (&bad1, &control1, &bad2) } else { (&bad2, &control2, &bad1) };
    assert!(!ejected(&proxy, kept.addr));

    // The ejected one recovers and comes back: there is room again.
    out_control.set_status(200);
    proxy.wait_for_endpoint("app", out.addr, "ejected", "false");

    // The other still answers nothing but 500: three more in a row eject it.
    let target = kept.requests().len() + 3;
    until_each_answered(&mut client, &[kept], target);
    proxy.wait_for_stats(&[r#"nuncio_outlier_ejections_total{cluster="app"}: 2"#]);
    assert!(ejected(&proxy, kept.addr));
}

// ------------------------------------------------------------------ HTTP/2 --

#[test]
fn an_http2_cluster_carries_a_workers_requests_on_one_connection() {
    let upstream = Upstream::echo_h2("h2");
    let proxy = start(
        1,
        "
    protocol: http2
    endpoints: [ '{h2}' ]
",
        &[("h2", upstream.addr)],
    );

    for _ in 0..10 {
        assert_eq!(get(proxy.addr(), "/").status, 200);
    }
    let concurrent: Vec<_> = (0..5).map(|_| get_in_background(proxy.addr(), "/")).collect();
    for request in concurrent {
        assert_eq!(request.join().unwrap().status, 200);
    }

    assert_eq!(upstream.requests().len(), 15);
    assert_eq!(upstream.connections(), 1);
    proxy.wait_for_stats(&[
        r#"nuncio_upstream_cx_total{cluster="app"}: 1"#,
        r#"nuncio_upstream_rq_total{cluster="app"}: 15"#,
    ]);
}
