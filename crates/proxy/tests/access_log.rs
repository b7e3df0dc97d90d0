//! Access logs: a line per stream with the fields of the format, for
//! success, no route, upstream down and timeout; JSON lines; reopening the
//! file after logrotate moved it. And endpoint re-resolution moving traffic
//! without failing a request in flight.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nuncio_proxy::Options;
use nuncio_test_support::{Client, Proxy, Scratch, TIMEOUT, Upstream, dead_address, exchange, get, wait_until};

/// The file's lines once it has `n` of them (the writer thread flushes a
/// few milliseconds after a stream ends).
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "{} has {} lines, expected {n}: {text}", path.display(), lines.len());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn proxy_logging(file: &Path, format: &str, endpoints: &[(&str, SocketAddr)]) -> Proxy {
    let names: Vec<String> = endpoints.iter().map(|(name, _)| format!("'{{{name}}}'")).collect();
    Proxy::start(
        &format!(
            "
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    access_log: {{ path: '{}'{format} }}
    routes:
      - match: {{ prefix: /slow }}
        cluster: app
        timeout: 200ms
      - match: {{ prefix: /app }}
        cluster: app
clusters:
  - name: app
    connect_timeout: 300ms
    endpoints: [ {} ]
",
            file.display(),
            names.join(", ")
        ),
        endpoints,
    )
}

#[test]
fn a_line_per_stream_for_success_no_route_upstream_down_and_timeout() {
    let dir = Scratch::new("access-log-kinds");
    let file = dir.path("access.log");
    let format = ", format: '%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:METHOD)% %REQ(:PATH)% %UPSTREAM_CLUSTER% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %BYTES_SENT%'";
    let up = Upstream::slow("up", Duration::from_millis(0));
    let proxy = proxy_logging(&file, format, &[("up", up.addr)]);

    assert_eq!(get(proxy.addr(), "/app/ok").status, 200);
    assert_eq!(get(proxy.addr(), "/nowhere").status, 404);
    let slow = proxy.exchange("GET /slow HTTP/1.1\r\nHost: t\r\nx-delay-ms: 2000\r\nConnection: close\r\n\r\n");
    assert_eq!(slow.status, 504);
    drop(up);
    let down = proxy_logging(&dir.path("down.log"), format, &[("dead", dead_address())]);
    assert_eq!(get(down.addr(), "/app/x").status, 503);

    let lines = wait_lines(&file, 3);
    let body = "hello from up\n".len();
    assert_eq!(lines[0], format!("200 - GET /app/ok app 1 {body}"));
    // No route: no cluster, no upstream try; the local reply's bytes.
    assert!(lines[1].starts_with("404 NR GET /nowhere - 0 "), "{}", lines[1]);
    assert!(lines[1].rsplit(' ').next().unwrap().parse::<u64>().unwrap() > 0, "{}", lines[1]);
    assert!(lines[2].starts_with("504 UT GET /slow app 1 "), "{}", lines[2]);
    let down_lines = wait_lines(&dir.path("down.log"), 1);
    assert!(down_lines[0].starts_with("503 UF GET /app/x app 1 "), "{}", down_lines[0]);
}

#[test]
fn the_default_format_is_envoys() {
    let dir = Scratch::new("access-log-default");
    let file = dir.path("access.log");
    let up = Upstream::echo("up");
    let proxy = proxy_logging(&file, "", &[("up", up.addr)]);
    let mut client = Client::connect(proxy.addr());
    let request = http::Request::get("/app/x?q=1")
        .header("host", "shop.example")
        .header("user-agent", "test-agent")
        .header("x-request-id", "req-1")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(client.send(request).status, 200);
    let line = &wait_lines(&file, 1)[0];
    // [START_TIME] "METHOD PATH PROTOCOL" CODE FLAGS RECEIVED SENT DURATION
    // UPSTREAM_TIME "XFF" "UA" "REQUEST_ID" "AUTHORITY" "UPSTREAM_HOST"
    assert!(line.starts_with("[20") && line.contains("Z] "), "{line}");
    let rest = line.split_once("Z] ").unwrap().1;
    let sent = "hello from up\n".len();
    assert!(rest.starts_with(&format!("\"GET /app/x?q=1 HTTP/1.1\" 200 - 0 {sent} ")), "{rest}");
    assert!(
        rest.ends_with(&format!("\"127.0.0.1\" \"test-agent\" \"req-1\" \"shop.example\" \"{}\"", up.addr)),
        "{rest}"
    );
}

#[test]
fn json_lines_parse_and_carry_typed_values() {
    let dir = Scratch::new("access-log-json");
    let file = dir.path("access.json");
    let up = Upstream::echo("up");
    let json = ", json_format: { status: '%RESPONSE_CODE%', path: '%REQ(:PATH)%', flags: '%RESPONSE_FLAGS%', ua: '%REQ(USER-AGENT)%', took: '%RESPONSE_DURATION%' }";
    let proxy = proxy_logging(&file, json, &[("up", up.addr)]);
    let mut client = Client::connect(proxy.addr());
    let request = http::Request::get("/app/\"quoted\"")
        .header("host", "t")
        .header("user-agent", "agent \"with quotes\"")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(client.send(request).status, 200);
    assert_eq!(client.get("/nowhere").status, 404);
    let lines = wait_lines(&file, 2);
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["status"], 200, "a lone numeric command is a number: {first}");
    assert_eq!(first["ua"], "agent \"with quotes\"");
    assert_eq!(first["flags"], "-");
    assert!(first["took"].is_u64(), "the response head's time, in ms, for a logged stream: {first}");
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!((second["status"].as_u64(), second["flags"].as_str()), (Some(404), Some("NR")));
}

#[test]
fn reopening_after_logrotate_writes_to_a_new_file() {
    let dir = Scratch::new("access-log-reopen");
    let file = dir.path("access.log");
    let up = Upstream::echo("up");
    let format = ", format: '%REQ(:PATH)%'";
    let proxy = proxy_logging(&file, format, &[("up", up.addr)]);
    assert_eq!(get(proxy.addr(), "/app/before").status, 200);
    wait_lines(&file, 1);
    // logrotate: move the file away, then signal.
    let rotated = dir.path("access.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    proxy.reopen_access_logs();
    // The reopen is asynchronous: requests until one lands in the new file.
    let mut n = 0;
    wait_until("a line in the reopened file", || {
        n += 1;
        assert_eq!(get(proxy.addr(), &format!("/app/after-{n}")).status, 200);
        !std::fs::read_to_string(&file).unwrap_or_default().is_empty()
    });
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.starts_with("/app/before\n"), "{old}");
    let new = wait_lines(&file, 1);
    assert!(new.iter().all(|l| l.starts_with("/app/after-")), "{new:?}");
}

#[test]
fn re_resolving_a_name_moves_traffic_without_failing_a_request_in_flight() {
    let (first, second) = (Upstream::slow("first", Duration::from_millis(0)), Upstream::echo("second"));
    // The name resolves to `first` until the test says otherwise.
    let answer = Arc::new(Mutex::new(first.addr));
    let resolved = answer.clone();
    let mut options = Options::default();
    options.resolver = Some(Arc::new(move |_name: &str| Ok(vec![*resolved.lock().unwrap()])));
    let yaml = format!(
        "
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {{}}
        cluster: app
clusters:
  - name: app
    dns_refresh: 50ms
    endpoints: [ 'localhost:{}' ]
",
        first.addr.port()
    );
    let proxy = Proxy::start_with(&yaml, &[], options);
    let addr = proxy.addr();
    assert_eq!(get(addr, "/").header("x-upstream"), "first");
    // A request in flight on `first` while the name moves to `second`.
    let in_flight = std::thread::spawn(move || {
        exchange(addr, "GET /slow HTTP/1.1\r\nHost: t\r\nx-delay-ms: 500\r\nConnection: close\r\n\r\n")
    });
    first.wait_for_requests(2);
    *answer.lock().unwrap() = second.addr;
    wait_until("traffic to move to the new address", || get(addr, "/").header("x-upstream") == "second");
    let reply = in_flight.join().unwrap();
    assert_eq!((reply.status, reply.header("x-upstream")), (200, "first"), "the request in flight finished");
    proxy.into_server().shutdown();
}
