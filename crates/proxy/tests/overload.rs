//! Overload protection (issue 14): past a `shed` threshold new requests get
//! `503` with `Connection: close` and `/ready` says so; past `refuse` new
//! connections are closed as they are accepted. Driven with real
//! connections, and with the process's real memory.

use std::io::Read;
use std::net::TcpStream;

use nuncio_test_support::{Admin, Proxy, RawClient, TIMEOUT, Upstream, catch_all, wait_until};

fn proxy(overload: &str, upstream: &Upstream) -> Proxy {
    let config = format!("overload:\n{overload}\n{}", catch_all("", "", "    endpoints: [ '{app}' ]"));
    Proxy::start(&config, &[("app", upstream.addr)])
}

#[test]
fn open_connections_past_the_thresholds_shed_requests_then_refuse_connections() {
    let upstream = Upstream::echo("app");
    let proxy = proxy("  downstream_connections: { shed: 3, refuse: 5 }", &upstream);
    assert_eq!(proxy.get("/").status, 200);
    assert_eq!(proxy.admin_get("/ready").status, 200);

    // Three open connections: shedding.
    let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(proxy.addr()).unwrap()).collect();
    proxy.wait_for_stats(&["nuncio_downstream_cx_active: 2"]);
    let mut client = RawClient::connect(proxy.addr());
    proxy.wait_for_stats(&["nuncio_downstream_cx_active: 3"]);
    let ready = proxy.admin_get("/ready");
    assert_eq!((ready.status, ready.text().as_str()), (503, "overloaded\n"));
    client.send("GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = client.response();
    assert_eq!((reply.status, reply.header("connection")), (503, "close"), "{}", reply.text());
    assert!(client.is_closed(), "no keep-alive while shedding");
    assert_eq!(upstream.requests().len(), 1, "the shed request never went upstream");
    proxy.wait_for_stats(&["nuncio_overload_shed_requests_total: 1"]);

    // Five: new connections are closed as they come.
    let more: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(proxy.addr()).unwrap()).collect();
    wait_until("a connection past `refuse` is closed at once", || {
        let mut extra = TcpStream::connect(proxy.addr()).unwrap();
        extra.set_read_timeout(Some(TIMEOUT)).unwrap();
        matches!(extra.read(&mut [0u8; 1]), Ok(0) | Err(_))
    });
    let refused = proxy.stat("nuncio_overload_refused_connections_total").unwrap();
    assert!(refused.parse::<u64>().unwrap() >= 1, "{refused}");

    // Load gone: serving again.
    drop(idle);
    drop(more);
    proxy.wait_for_stats(&["nuncio_downstream_cx_active: 0"]);
    wait_until("ready again", || proxy.admin_get("/ready").status == 200);
    assert_eq!(proxy.get("/").status, 200);
}

#[test]
fn memory_past_the_shed_threshold_sheds_requests() {
    let upstream = Upstream::echo("app");
    // Any process has more than 1 KiB resident: shedding from the first
    // sample on.
    let proxy = proxy("  memory: { shed: 1KiB }", &upstream);
    wait_until("the first memory sample says overloaded", || proxy.admin_get("/ready").status == 503);
    let reply = proxy.get("/");
    assert_eq!(reply.status, 503);
    assert!(reply.text().contains("overloaded"), "{}", reply.text());
    proxy.wait_for_stats(&["nuncio_overload_level: 1"]);
    assert!(upstream.requests().is_empty());
    // Refusing is a level of its own: connections are still taken.
    let mut client = RawClient::connect(proxy.addr());
    client.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.response().status, 503);
}
