//! The `nuncio-example` binary run as its user would: a config naming the
//! `fault` filter, a real upstream, a real HTTP/1.1 client over real
//! sockets. Every server binds 127.0.0.1; every wait is bounded.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nuncio_filter_example::MAX_DELAY_MS;
use nuncio_test_support::{Admin, Process, RawClient, Scratch, Upstream, get, wait_until};

const NUNCIO_EXAMPLE: &str = env!("CARGO_BIN_EXE_nuncio-example");

/// The value of the counter `name` in `proxy`'s admin `/stats`.
fn counter(proxy: &Process, name: &str) -> u64 {
    proxy.stat(name).unwrap_or_else(|| panic!("no {name} in /stats:\n{}", proxy.stats())).parse().unwrap()
}

/// A one-listener config (`web`, on a free port, one worker) with
/// `filters` (YAML lines at the list's indentation) in front of a route
/// to `upstream`.
fn config(upstream: SocketAddr, filters: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nworkers: 1\nlisteners:\n  - name: web\n    address: 127.0.0.1:0\n    filters:\n{filters}    routes:\n      - match: {{}}\n        cluster: app\nclusters:\n  - name: app\n    endpoints: [ '{upstream}' ]\n"
    )
}

fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn fault_rules_delay_abort_and_pass_through_beside_a_builtin_filter() {
    const DELAY_MS: u64 = 150;
    const ABORT: u16 = 503;
    const ABORT_BODY: &str = "injected by the test";
    let upstream = Upstream::echo("app");
    let dir = Scratch::new("example-rules");
    let filters = format!(
        "      - name: headers\n        config: {{ response: {{ set: [ {{ name: x-served-by, value: example }} ] }} }}\n      - name: fault\n        config:\n          report_header: x-fault-delay-ms\n          rules:\n            - {{ prefix: /slow, delay_ms: {DELAY_MS} }}\n            - {{ prefix: /broken, delay_ms: {DELAY_MS}, abort: {{ status: {ABORT}, body: {ABORT_BODY} }} }}\n"
    );
    let file = dir.write("nuncio.yaml", &config(upstream.addr, &filters));
    let proxy = Process::start(NUNCIO_EXAMPLE, &["-c", &file]);
    let web = proxy.listener("web");

    // A delay: held, then proxied; the response says for how long (read
    // back from the stream's state map by the filter's response hook).
    let started = Instant::now();
    let slow = get(web, "/slow/page");
    let held = started.elapsed();
    assert_eq!(slow.status, 200, "{slow:?}");
    assert_eq!((slow.header("x-path"), slow.text().as_str()), ("/slow/page", "hello from app\n"));
    assert_eq!(slow.header("x-fault-delay-ms"), DELAY_MS.to_string(), "{slow:?}");
    assert_eq!(slow.header("x-served-by"), "example", "the built-in filter ran too: {slow:?}");
    // A lower bound only, which cannot flake: a tokio timer never fires
    // early, and the client's clock started before nuncio's.
    assert!(held >= Duration::from_millis(DELAY_MS), "answered after {held:?}");

    // An abort: the filter's local reply; nothing goes upstream. The
    // `headers` filter, before `fault`, still sees the reply.
    let broken = get(web, "/broken");
    assert_eq!(broken.status, ABORT, "{broken:?}");
    assert_eq!(broken.text(), ABORT_BODY);
    assert!(broken.header("content-type").starts_with("text/plain"), "{broken:?}");
    assert_eq!(broken.header("x-fault-delay-ms"), DELAY_MS.to_string(), "{broken:?}");
    assert_eq!(broken.header("x-served-by"), "example", "{broken:?}");

    // No rule: untouched.
    let other = get(web, "/other");
    assert_eq!(other.status, 200, "{other:?}");
    assert_eq!((other.header("x-path"), other.text().as_str()), ("/other", "hello from app\n"));
    assert_eq!(other.header("x-fault-delay-ms"), "", "{other:?}");

    assert_eq!(upstream.targets(), ["/slow/page", "/other"]);

    // Counted by the filter: two delays (`/slow/page`, `/broken`), one abort.
    proxy.wait_for_stats(&[
        "nuncio_filter_fault_delays_injected_total{filter=\"fault\",listener=\"web\"}: 2",
        "nuncio_filter_fault_aborts_injected_total{filter=\"fault\",listener=\"web\"}: 1",
    ]);
}

#[test]
fn a_held_request_leaves_the_worker_serving_and_ends_with_its_client() {
    let upstream = Upstream::echo("app");
    let dir = Scratch::new("example-held");
    let filters = format!(
        "      - name: fault\n        config:\n          rules:\n            - {{ prefix: /held, delay_ms: {MAX_DELAY_MS} }}\n"
    );
    // One worker: the held request and the next one share it.
    let file = dir.write("nuncio.yaml", &config(upstream.addr, &filters));
    let proxy = Process::start(NUNCIO_EXAMPLE, &["-c", &file]);
    let web = proxy.listener("web");
    let answered = |proxy: &Process| counter(proxy, "nuncio_downstream_rq_total");

    let mut held = RawClient::connect(web);
    held.send("GET /held HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    // While `/held` waits at the filter (for a minute), the worker serves on.
    let free = get(web, "/free");
    assert_eq!(free.status, 200, "{free:?}");
    assert_eq!((free.header("x-path"), free.text().as_str()), ("/free", "hello from app\n"));
    held.stream.set_nonblocking(true).unwrap();
    let unanswered = held.stream.read(&mut [0; 1]).map_err(|e| e.kind());
    assert_eq!(unanswered, Err(std::io::ErrorKind::WouldBlock), "/held is still held");

    // The client leaves: nuncio drops the pending hook and ends the stream
    // (counted), and the request never reaches the upstream.
    drop(held);
    wait_until("the held stream to end", || answered(&proxy) >= 2);
    assert_eq!(upstream.targets(), ["/free"]);
}

#[test]
fn validate_reports_fault_config_errors_with_line_and_field() {
    // Four filters, one mistake each: the config reports every one, each
    // at its line, with the field's full path.
    let filters = [
        ("delay_ms: soon", "rules[0].delay_ms"),
        ("dleay_ms: 5", "rules[0].dleay_ms"),
        ("abort: { status: 302 }", "rules[0].abort.status"),
        ("delay_ms: 99999999", "rules[0].delay_ms"),
    ];
    let mut yaml = String::new();
    for (mistake, _) in filters {
        yaml.push_str(&format!(
            "      - name: fault\n        config:\n          rules:\n            - prefix: /a\n              {mistake}\n"
        ));
    }
    let yaml = config("127.0.0.1:1".parse().unwrap(), &yaml);
    let dir = Scratch::new("example-validate");
    let file = dir.write("bad.yaml", &yaml);
    let out = Command::new(NUNCIO_EXAMPLE).args(["validate", "-c", &file]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (j, (mistake, field)) in filters.iter().enumerate() {
        // The n-th line holding this mistake is the j-th filter's (the
        // mistakes differ, so: the first).
        let line = yaml.lines().position(|l| l.trim() == *mistake).expect("the mistake is in the file") + 1;
        let expected = format!("bad.yaml:{line}:");
        let path = format!("listeners[0].filters[{j}].config.{field}");
        assert!(
            stderr.lines().any(|l| l.contains(&expected) && l.contains(&path)),
            "no `{expected}...{path}` in:\n{stderr}"
        );
    }
}

#[test]
fn the_shipped_config_is_valid_and_serves() {
    let shipped = repository().join("examples/filter-example/nuncio.yaml");
    let out = Command::new(NUNCIO_EXAMPLE).args(["validate", "-c", shipped.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("valid"), "{stdout}");

    // Run it as shipped but on free ports, in front of a real upstream.
    let upstream = Upstream::echo("app");
    let mut moved = std::fs::read_to_string(&shipped).unwrap();
    for (from, to) in [
        ("address: 127.0.0.1:9901", "address: 127.0.0.1:0".to_owned()),
        ("address: 127.0.0.1:8080", "address: 127.0.0.1:0".to_owned()),
        ("127.0.0.1:3000", upstream.addr.to_string()),
    ] {
        assert!(moved.contains(from), "the shipped config changed: no {from}");
        moved = moved.replace(from, &to);
    }
    let dir = Scratch::new("example-shipped");
    let file = dir.write("nuncio.yaml", &moved);
    let proxy = Process::start(NUNCIO_EXAMPLE, &["-c", &file, "--workers", "1"]);
    let public = proxy.listener("public");
    let api = get(public, "/api/x");
    assert_eq!(api.status, 200, "{api:?}");
    assert_eq!((api.header("x-path"), api.text().as_str()), ("/api/x", "hello from app\n"));
    let broken = get(public, "/broken");
    assert!(broken.status >= 400, "the shipped abort rule answers: {broken:?}");
    assert_ne!(broken.header("x-fault-delay-ms"), "", "{broken:?}");
    assert_eq!(upstream.targets(), ["/api/x"]);
}

#[test]
fn the_stock_command_line_works_with_the_added_kind() {
    let out = Command::new(NUNCIO_EXAMPLE).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));

    // The repository's stock examples still validate.
    let basic = repository().join("examples/basic.yaml");
    let out = Command::new(NUNCIO_EXAMPLE).args(["validate", "-c", basic.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // An unknown filter name lists the built-in kinds and `fault` together.
    let dir = Scratch::new("example-stock");
    let file = dir.write("unknown.yaml", &config("127.0.0.1:1".parse().unwrap(), "      - name: faulty\n"));
    let out = Command::new(NUNCIO_EXAMPLE).args(["validate", "-c", &file]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let known = stderr.split_once("known: ").map(|(_, k)| k.trim()).unwrap_or_else(|| panic!("{stderr}"));
    let known: Vec<&str> = known.split(", ").collect();
    assert!(known.contains(&"fault"), "{stderr}");
    for builtin in nuncio_filters::builtin() {
        assert!(known.contains(&builtin.name()), "{} missing: {stderr}", builtin.name());
    }

    // --upstream: everything to one service.
    let upstream = Upstream::echo("app");
    let url = format!("http://{}", upstream.addr);
    let proxy = Process::start(
        NUNCIO_EXAMPLE,
        &["--upstream", &url, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "1"],
    );
    let reply = get(proxy.listener("default"), "/hello?x=1");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!((reply.header("x-path"), reply.text().as_str()), ("/hello?x=1", "hello from app\n"));
}

#[test]
fn the_filter_walkthrough_quotes_the_example_verbatim() {
    let docs = std::fs::read_to_string(repository().join("docs/filters.md")).unwrap();
    let start = docs.find("\n## Writing a filter\n").expect("docs/filters.md has the walkthrough");
    let section = &docs[start + 1..];
    let section = section[3..].find("\n## ").map_or(section, |end| &section[..end + 3]);
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &str| std::fs::read_to_string(crate_dir.join(path)).unwrap();
    let code = [read("src/lib.rs"), read("src/main.rs")];
    let shipped = read("nuncio.yaml");
    let mut quotes = 0;
    for (language, block) in fenced_blocks(section) {
        match language {
            "rust" => {
                assert!(code.iter().any(|file| file.contains(block)), "quoted but not in the example's code:\n{block}");
                quotes += 1;
            }
            // A YAML quote may be re-indented: its lines, in order, are the
            // shipped config's.
            "yaml" => {
                let mut lines = shipped.lines().map(str::trim);
                for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    assert!(lines.any(|l| l == line), "`{line}` is not in nuncio.yaml (in this order)");
                }
                quotes += 1;
            }
            _ => {}
        }
    }
    assert!(quotes > 0, "the walkthrough quotes no code");
}

/// The ```-fenced blocks of `text`: (language, body).
fn fenced_blocks(text: &str) -> Vec<(&str, &str)> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let Some(newline) = after.find('\n') else { break };
        let language = after[..newline].trim();
        let body = &after[newline + 1..];
        let Some(close) = body.find("```") else { break };
        blocks.push((language, &body[..close]));
        rest = &body[close + 3..];
    }
    blocks
}
