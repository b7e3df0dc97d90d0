//! How a cluster spreads requests over its endpoints.

use nuncio_test_support::{Client, Control, Proxy, Upstream, catch_all, get, get_in_background, wait_until};

/// nuncio (one worker, so one balancer) in front of endpoints `a` and `b`
/// with policy `lb`.
fn balanced(lb: &str, a: &Upstream, b: &Upstream) -> Proxy {
    let cluster = format!("    lb: {lb}\n    endpoints: [ '{{a}}', '{{b}}' ]");
    Proxy::start(&format!("workers: 1\n{}", catch_all("", "", &cluster)), &[("a", a.addr), ("b", b.addr)])
}

#[test]
fn round_robin_alternates() {
    let (a, b) = (Upstream::echo("a"), Upstream::echo("b"));
    let proxy = balanced("round_robin", &a, &b);

    let mut client = Client::connect(proxy.addr());
    let answered: Vec<String> = (0..6).map(|_| client.get("/").header("x-upstream").to_owned()).collect();

    for pair in answered.windows(2) {
        assert_ne!(pair[0], pair[1], "{answered:?}");
    }
    assert_eq!((a.requests().len(), b.requests().len()), (3, 3));
}

#[test]
fn least_request_avoids_the_endpoint_stuck_on_a_slow_request() {
    // Both endpoints hold `/held` requests until released.
    let control = Control::new();
    let (a, b) = (Upstream::controlled("a", &control), Upstream::controlled("b", &control));
    let proxy = balanced("least_request", &a, &b);
    let addr = proxy.addr();

    // A held request keeps one endpoint busy (whichever was picked)...
    let slow = get_in_background(addr, "/held");
    wait_until("the held request at an upstream", || a.requests().len() + b.requests().len() == 1);
    let busy = if a.requests().is_empty() { "b" } else { "a" };

    // ...so every other request goes to the other one.
    for _ in 0..10 {
        let reply = get(addr, "/");
        assert_ne!(reply.header("x-upstream"), busy);
    }
    control.release();
    assert_eq!(slow.join().unwrap().header("x-upstream"), busy);
}
