//! Hot reload and drain, with real sockets: a real client keeps load on
//! nuncio while configs change under it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use nuncio_proxy::{Options, RunningServer};
use nuncio_test_support::*;

/// The same path to one of two upstreams, by config.
const TO_ONE: &str = "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: { prefix: / }
        cluster: app
clusters:
  - name: app
    endpoints: [ '{app}' ]
";

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    from_a: AtomicUsize,
    from_b: AtomicUsize,
    strangers: AtomicUsize,
}

/// `connections` keep-alive hyper clients sending `GET /` until `total`
/// requests went out or `stop` is set (and for at most a minute).
fn load(
    addr: SocketAddr,
    connections: usize,
    total: usize,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sent = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(60);
    (0..connections)
        .map(|_| {
            let (sent, stop, tally) = (sent.clone(), stop.clone(), tally.clone());
            rt().spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                while !stop.load(Ordering::Relaxed)
                    && Instant::now() < until
                    && sent.fetch_add(1, Ordering::Relaxed) < total
                {
                    let request =
                        http::Request::get("/").header("host", "test").body(Full::<Bytes>::default()).unwrap();
                    let answer = async {
                        sender.ready().await.ok()?;
                        let response = sender.send_request(request).await.ok()?;
                        let status = response.status();
                        let upstream =
                            response.headers().get("x-upstream").map(|v| v.to_str().unwrap_or("").to_owned());
                        response.into_body().collect().await.ok()?;
                        Some((status, upstream))
                    };
                    match tokio::time::timeout(TIMEOUT, answer).await {
                        Ok(Some((status, upstream))) if status == 200 => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                            match upstream.as_deref() {
                                Some("a") => tally.from_a.fetch_add(1, Ordering::Relaxed),
                                Some("b") => tally.from_b.fetch_add(1, Ordering::Relaxed),
                                _ => tally.strangers.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                        _ => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            return; // a broken connection is not reused
                        }
                    }
                }
            })
        })
        .collect()
}

#[test]
fn a_hundred_reloads_under_load_fail_no_request() {
    let (a, b) = (Upstream::echo("a"), Upstream::echo("b"));
    let mut proxy = Proxy::start(TO_ONE, &[("app", a.addr)]);
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients = load(proxy.addr(), 32, 20_000, &stop, &tally);

    wait_until("the load is on", || tally.ok.load(Ordering::Relaxed) > 100);
    let at_first_reload = tally.ok.load(Ordering::Relaxed);
    let mut versions = Vec::new();
    for i in 0..100 {
        let upstream = if i % 2 == 0 { b.addr } else { a.addr };
        if i == 50 {
            // A bad config in the middle: refused with its line and field,
            // and the traffic carries on.
            let bad = "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    routes:\n      - match: { prefix: / }\n        cluster: nowhere\n";
            let reply = exchange(
                proxy.admin(),
                format!("POST /config HTTP/1.1\r\nHost: admin\r\nContent-Length: {}\r\n\r\n{bad}", bad.len()),
            );
            assert_eq!(reply.status, 400, "{}", reply.text());
            assert!(reply.text().contains("POST /config:6:"), "the error gives the line: {}", reply.text());
            assert!(reply.text().contains("nowhere"), "{}", reply.text());
        }
        versions.push(proxy.reload(TO_ONE, &[("app", upstream)]).version);
        // The subject: reloads spread over the load, not back to back.
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let the load run past the last reload, then stop it.
    let before = tally.ok.load(Ordering::Relaxed);
    assert!(before > at_first_reload + 500, "the reloads happened under load ({at_first_reload} -> {before})");
    wait_until("requests after the last reload", || tally.ok.load(Ordering::Relaxed) > before + 100);
    stop.store(true, Ordering::Relaxed);
    rt().block_on(async {
        for client in clients {
            client.await.expect("a client task ends");
        }
    });

    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "no request failed");
    assert_eq!(tally.strangers.load(Ordering::Relaxed), 0, "every answer came from a or b");
    assert!(tally.from_a.load(Ordering::Relaxed) > 0 && tally.from_b.load(Ordering::Relaxed) > 0);
    assert!(versions.windows(2).all(|w| w[1] == w[0] + 1), "each reload is one version: {versions:?}");
    assert_eq!(*versions.last().unwrap(), 101);

    // The last config sent everything to a: new connections and old ones.
    for _ in 0..10 {
        assert_eq!(get(proxy.addr(), "/").header("x-upstream"), "a");
    }
    assert_eq!(proxy.stat("nuncio_config_reload_total").as_deref(), Some("100"));
    assert_eq!(proxy.stat("nuncio_config_reload_failed_total").as_deref(), Some("1"));
    let dump = proxy.admin_get("/config_dump?format=json");
    let dump: serde_json::Value = serde_json::from_slice(&dump.body).unwrap();
    assert_eq!(dump["version"], 101);
    assert_eq!(dump["workers"]["0"], 101, "{dump:#}");
    assert_eq!(dump["workers"]["1"], 101, "{dump:#}");
    assert_eq!(dump["last_reload"]["version"], 101);
    assert!(dump["last_reload"]["duration_ms"].as_f64().is_some());
}

#[test]
fn the_next_request_on_a_kept_alive_connection_gets_the_new_config() {
    let (a, b) = (Upstream::echo("a"), Upstream::echo("b"));
    let mut proxy = Proxy::start(TO_ONE, &[("app", a.addr)]);
    let mut client = Client::connect(proxy.addr());
    assert_eq!(client.get("/").header("x-upstream"), "a");
    proxy.reload(TO_ONE, &[("app", b.addr)]);
    assert_eq!(client.get("/").header("x-upstream"), "b");
}

#[test]
fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let slow = Upstream::slow("a", Duration::from_millis(400));
    let b = Upstream::echo("b");
    let mut proxy = Proxy::start(TO_ONE, &[("app", slow.addr)]);
    let addr = proxy.addr();
    let in_flight = std::thread::spawn(move || get(addr, "/"));
    slow.wait_for_requests(1);
    // The cluster's only endpoint changes while the request waits on it.
    proxy.reload(TO_ONE, &[("app", b.addr)]);
    let reply = in_flight.join().unwrap();
    assert_eq!((reply.status, reply.header("x-upstream")), (200, "a"));
    assert_eq!(get(proxy.addr(), "/").header("x-upstream"), "b");
}

#[test]
fn listeners_added_and_removed_by_reload() {
    let app = Upstream::slow("app", Duration::from_millis(300));
    let two = "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes: [ { match: { prefix: / }, cluster: app } ]
  - name: old
    address: 127.0.0.1:0
    routes: [ { match: { prefix: / }, cluster: app } ]
clusters:
  - name: app
    endpoints: [ '{app}' ]
";
    let swapped = two.replace("name: old", "name: new");
    let mut proxy = Proxy::start(two, &[("app", app.addr)]);
    let old = proxy.server().listener("old").unwrap();
    let main = proxy.addr();
    let mut kept = Client::connect(main);
    assert_eq!(kept.get("/").status, 200);

    // A request in flight on the listener about to go.
    let in_flight = std::thread::spawn(move || get(old, "/"));
    app.wait_for_requests(2);
    let reloaded = proxy.reload(&swapped, &[("app", app.addr)]);
    let new = reloaded.listeners["new"];
    assert!(!reloaded.listeners.contains_key("old"));
    assert_eq!(reloaded.listeners["main"], main, "an unchanged listener keeps its socket");

    assert_eq!(get(new, "/").status, 200, "the added listener serves");
    assert_eq!(in_flight.join().unwrap().status, 200, "the removed listener's request in flight finishes");
    wait_until("the removed listener refuses connections", || std::net::TcpStream::connect(old).is_err());
    assert_eq!(kept.get("/").status, 200, "a connection on an unchanged listener carries on");
}

#[test]
fn reload_from_the_file_through_admin_and_by_watching_it() {
    let (a, b) = (Upstream::echo("a"), Upstream::echo("b"));
    let dir = Scratch::new("reload-file");
    let path = dir.path("nuncio.yaml");
    let yaml = |upstream: SocketAddr| {
        format!("admin: {{ address: 127.0.0.1:0 }}\nworkers: 2\n{}", TO_ONE.replace("{app}", &upstream.to_string()))
    };
    std::fs::write(&path, yaml(a.addr)).unwrap();
    let kinds = nuncio_proxy::FilterKinds::default();
    let config = nuncio_config::Config::load_with(&path, &kinds).unwrap();
    let mut options = Options::default();
    options.config_path = Some(path.clone());
    options.watch_config = true;
    let server = RunningServer::start_with(config, options).unwrap();
    let (addr, admin) = (server.listener("main").unwrap(), server.addresses().admin);
    assert_eq!(get(addr, "/").header("x-upstream"), "a");

    // Edited and reloaded through admin.
    std::fs::write(&path, yaml(b.addr)).unwrap();
    let reply = exchange(admin, "POST /config/reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("config version 2 serving on every worker"), "{}", reply.text());
    assert_eq!(get(addr, "/").header("x-upstream"), "b");

    // A broken file is refused with its line; the running config serves on.
    std::fs::write(&path, "listeners:\n  - name: main\n    adress: 127.0.0.1:0\n").unwrap();
    let reply = exchange(admin, "POST /config/reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("nuncio.yaml:3:"), "{}", reply.text());
    assert_eq!(get(addr, "/").header("x-upstream"), "b");

    // Edited again: the watcher applies it by itself.
    std::fs::write(&path, yaml(a.addr)).unwrap();
    wait_until("the watcher reloads the file", || get(addr, "/").header("x-upstream") == "a");
    drop(server);
}

#[test]
fn drain_finishes_requests_in_flight_refuses_new_connections_and_stops() {
    let slow = Upstream::slow("app", Duration::from_millis(500));
    let proxy = Proxy::start(&format!("drain_timeout: 10s\n{TO_ONE}"), &[("app", slow.addr)]);
    let (addr, admin) = (proxy.addr(), proxy.admin());
    let idle = RawClient::connect(addr);
    let in_flight = std::thread::spawn(move || get(addr, "/"));
    slow.wait_for_requests(1);

    let reply = exchange(admin, "POST /drain HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(reply.status, 202, "{}", reply.text());
    let ready = exchange(admin, "GET /ready HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert_eq!((ready.status, ready.text().as_str()), (503, "draining\n"));

    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "the request in flight finishes");
    assert_eq!(reply.header("connection"), "close", "and its connection is told to close");
    let mut idle = idle;
    assert!(idle.is_closed_within(TIMEOUT), "an idle connection is closed");
    wait_until("new connections are refused", || std::net::TcpStream::connect(addr).is_err());
    // Nothing is left open: the server stops by itself.
    let server = proxy.into_server();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        server.wait();
        let _ = tx.send(());
    });
    rx.recv_timeout(TIMEOUT).expect("the server stops once drained");
}

#[test]
fn a_drain_out_of_time_closes_what_is_left() {
    let control = Control::new();
    let held = Upstream::controlled("app", &control);
    let proxy = Proxy::start(&format!("drain_timeout: 200ms\n{TO_ONE}"), &[("app", held.addr)]);
    let addr = proxy.addr();
    let mut client = RawClient::connect(addr);
    client.send("GET /held HTTP/1.1\r\nHost: test\r\n\r\n");
    held.wait_for_requests(1);
    proxy.server().drain();
    assert!(client.is_closed_within(TIMEOUT), "the held request's connection is closed at drain_timeout");
    let server = proxy.into_server();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        server.wait();
        let _ = tx.send(());
    });
    rx.recv_timeout(TIMEOUT).expect("the server stops");
    control.release();
}

#[test]
fn an_http2_connection_gets_goaway_on_drain_and_its_stream_finishes() {
    let slow = Upstream::slow("app", Duration::from_millis(300));
    let proxy = Proxy::start(TO_ONE, &[("app", slow.addr)]);
    let addr = proxy.addr();
    let (status, closed) = rt().block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = h2::client::handshake(stream).await.unwrap();
        let conn = tokio::spawn(conn);
        let request = http::Request::get(format!("http://{addr}/")).body(()).unwrap();
        let (response, _) = sender.send_request(request, true).unwrap();
        (response, conn)
    });
    slow.wait_for_requests(1);
    proxy.server().drain();
    rt().block_on(async {
        let response = tokio::time::timeout(TIMEOUT, status).await.expect("in time").expect("a response");
        assert_eq!(response.status(), 200, "the stream in flight finishes after GOAWAY");
        let ended = tokio::time::timeout(TIMEOUT, closed).await.expect("the connection ends after GOAWAY");
        assert!(ended.is_ok());
    });
}
