//! Signals to a real nuncio process: `SIGTERM` drains and exits 0, a
//! second `SIGTERM` or a `SIGINT` stops at once, `SIGHUP` reloads the
//! config file. Real sockets, a real upstream.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nuncio_test_support::{Admin, Control, Process, RawClient, Scratch, Upstream, get, wait_until};

const NUNCIO: &str = env!("CARGO_BIN_EXE_nuncio");

/// Runs `nuncio -c config` until it serves.
fn start(config: &str) -> Process {
    Process::start(NUNCIO, &["-c", config, "--log-level", "info"])
}

/// Writes (or rewrites) `nuncio.yaml` in `dir`: listener `main` routing
/// everything to `upstream`; returns its path.
fn config(dir: &Scratch, upstream: SocketAddr, drain_timeout: &str) -> String {
    dir.write(
        "nuncio.yaml",
        &format!(
            "admin: {{ address: 127.0.0.1:0 }}
workers: 2
drain_timeout: {drain_timeout}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: app
clusters:
  - name: app
    endpoints: [ '{upstream}' ]
"
        ),
    )
}

#[test]
fn sigterm_lets_a_slow_request_finish_refuses_new_connections_and_exits_0() {
    let dir = Scratch::new("signals-term");
    // The request is held at the upstream until the test lets it go.
    let control = Control::new();
    let slow = Upstream::controlled("slow", &control);
    let mut nuncio = start(&config(&dir, slow.addr, "10s"));
    let addr = nuncio.listener("main");
    let mut in_flight = RawClient::connect(addr);
    in_flight.send("GET /held HTTP/1.1\r\nHost: test\r\n\r\n");
    slow.wait_for_requests(1);
    nuncio.signal("TERM");
    nuncio.wait_for_log("SIGTERM: draining");
    wait_until("new connections to be refused while draining", || TcpStream::connect(addr).is_err());
    control.release();
    let response = in_flight.response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("connection"), "close", "{response:?}");
    assert_eq!(nuncio.wait_for_exit().code(), Some(0));
}

#[test]
fn a_second_sigterm_stops_at_once() {
    let dir = Scratch::new("signals-twice");
    let slow = Upstream::slow("slow", Duration::from_secs(30));
    let mut nuncio = start(&config(&dir, slow.addr, "60s"));
    let mut in_flight = RawClient::connect(nuncio.listener("main"));
    in_flight.send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    slow.wait_for_requests(1);
    nuncio.signal("TERM");
    nuncio.wait_for_log("SIGTERM: draining");
    nuncio.signal("TERM");
    // Well before the 30 s upstream or the 60 s drain_timeout.
    let started = Instant::now();
    let status = nuncio.wait_for_exit();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}

#[test]
fn sighup_reloads_the_config_file_and_a_bad_file_changes_nothing() {
    let dir = Scratch::new("signals-hup");
    let (a, b) = (Upstream::echo("a"), Upstream::echo("b"));
    let path = config(&dir, a.addr, "1s");
    let nuncio = start(&path);
    let main = nuncio.listener("main");
    assert_eq!(get(main, "/").header("x-upstream"), "a");

    // A broken file first: refused, logged with its line, still serving a.
    // (Written whole, then signalled; the watcher may see it too.)
    dir.write("nuncio.yaml", "listeners:\n  - name: main\n    routes: nope\n");
    nuncio.signal("HUP");
    nuncio.wait_for_log("config reload refused");
    assert_eq!(get(main, "/").header("x-upstream"), "a");

    config(&dir, b.addr, "1s");
    nuncio.signal("HUP");
    nuncio.wait_for_log("config reloaded: every worker serves it");
    assert_eq!(get(main, "/").header("x-upstream"), "b");
    let status = nuncio.admin_get("/stats?filter=config_reload").text();
    assert!(status.contains("nuncio_config_reload_failed_total: "), "{status}");
}
