//! The `nuncio-example` binary run as its user would: a config naming the
//! `fault` filter, a real upstream, a real HTTP/1.1 client over real
//! sockets. Every server binds 127.0.0.1; every wait is bounded by
//! [`TIMEOUT`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nuncio_filter_example::MAX_DELAY_MS;

const NUNCIO_EXAMPLE: &str = env!("CARGO_BIN_EXE_nuncio-example");

/// The longest any single wait may take. Generous: a loaded 2-core
/// machine must keep it.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A `nuncio-example` process, killed when dropped. Its log (stderr) is
/// kept so that a failing test shows what it said.
struct Proxy {
    child: Child,
    log: Arc<Mutex<String>>,
    /// Listener name → address, from the lines nuncio logs once every
    /// worker serves.
    listeners: Vec<(String, SocketAddr)>,
    admin: SocketAddr,
}

impl Proxy {
    /// Runs `nuncio-example` with `args` and waits for its `admin on` line
    /// (logged once every worker serves): no port probing.
    fn start(args: &[&str]) -> Proxy {
        let mut child = Command::new(NUNCIO_EXAMPLE)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nuncio-example");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (lines_tx, lines) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = lines_tx.send(line);
            }
        });
        let mut listeners = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        let admin = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left) else {
                let _ = child.kill();
                panic!("nuncio-example did not start:\n{}", log.lock().unwrap());
            };
            if let Some((name, url)) = line.split_once(" listener ").and_then(|(_, r)| r.split_once(" on http://")) {
                listeners.push((name.to_owned(), url.trim().parse().unwrap()));
            } else if let Some((_, url)) = line.split_once("admin on http://") {
                break url.trim().parse().unwrap();
            }
        };
        Proxy { child, log, listeners, admin }
    }

    fn listener(&self, name: &str) -> SocketAddr {
        self.listeners.iter().find(|(n, _)| n == name).map_or_else(|| panic!("no listener {name}"), |(_, a)| *a)
    }

    /// Waits (at most [`TIMEOUT`]) until the counter `name` reads `value`:
    /// a worker counts as the stream goes, which a client may see after
    /// its response.
    fn wait_for_counter(&self, name: &str, value: u64) {
        let deadline = Instant::now() + TIMEOUT;
        while self.counter(name) != value {
            assert!(Instant::now() < deadline, "{name} is {}, not {value}", self.counter(name));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of the counter `name` in admin `/stats`.
    fn counter(&self, name: &str) -> u64 {
        let stats = get(self.admin, "/stats");
        stats
            .body
            .lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(": ")))
            .map_or_else(|| panic!("no {name} in /stats:\n{}", stats.body), |v| v.trim().parse().unwrap())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- nuncio-example log ---\n{}", self.log.lock().unwrap());
        }
    }
}

/// An HTTP/1.1 upstream that answers `upstream saw PATH` and records each
/// request's path, in order of arrival. Serves at most `requests`
/// connections.
struct Upstream {
    address: SocketAddr,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    fn start(requests: usize) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&paths);
        std::thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let Ok(mut stream) = stream else { continue };
                stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request_line.split(' ').nth(1).unwrap_or("?").to_owned();
                let body = format!("upstream saw {path}");
                seen.lock().unwrap().push(path);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Upstream { address, paths }
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

/// A response as the client read it.
#[derive(Debug)]
struct Response {
    status: u16,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn parse(text: &str) -> Response {
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head end: {text:?}"));
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok());
        let status = status.unwrap_or_else(|| panic!("bad status line: {text:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Response { status, headers, body: body.to_owned() }
    }
}

/// Sends `GET path` on a new connection, unanswered yet.
fn send_get(address: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    stream
}

/// `GET path` on a new connection: the whole response.
fn get(address: SocketAddr, path: &str) -> Response {
    let mut stream = send_get(address, path);
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    Response::parse(&text)
}

/// A scratch directory for one test's files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("nuncio-example-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
    let upstream = Upstream::start(3);
    let dir = Scratch::new("rules");
    let filters = format!(
        "      - name: headers\n        config: {{ response: {{ set: [ {{ name: x-served-by, value: example }} ] }} }}\n      - name: fault\n        config:\n          report_header: x-fault-delay-ms\n          rules:\n            - {{ prefix: /slow, delay_ms: {DELAY_MS} }}\n            - {{ prefix: /broken, delay_ms: {DELAY_MS}, abort: {{ status: {ABORT}, body: {ABORT_BODY} }} }}\n"
    );
    let file = dir.write("nuncio.yaml", &config(upstream.address, &filters));
    let proxy = Proxy::start(&["-c", &file]);
    let web = proxy.listener("web");

    // A delay: held, then proxied; the response says for how long (read
    // back from the stream's state map by the filter's response hook).
    let started = Instant::now();
    let slow = get(web, "/slow/page");
    let held = started.elapsed();
    assert_eq!(slow.status, 200, "{slow:?}");
    assert_eq!(slow.body, "upstream saw /slow/page");
    assert_eq!(slow.header("x-fault-delay-ms"), Some(DELAY_MS.to_string().as_str()), "{slow:?}");
    assert_eq!(slow.header("x-served-by"), Some("example"), "the built-in filter ran too: {slow:?}");
    // A lower bound only, which cannot flake: a tokio timer never fires
    // early, and the client's clock started before nuncio's.
    assert!(held >= Duration::from_millis(DELAY_MS), "answered after {held:?}");

    // An abort: the filter's local reply; nothing goes upstream. The
    // `headers` filter, before `fault`, still sees the reply.
    let broken = get(web, "/broken");
    assert_eq!(broken.status, ABORT, "{broken:?}");
    assert_eq!(broken.body, ABORT_BODY);
    assert!(broken.header("content-type").is_some_and(|t| t.starts_with("text/plain")), "{broken:?}");
    assert_eq!(broken.header("x-fault-delay-ms"), Some(DELAY_MS.to_string().as_str()), "{broken:?}");
    assert_eq!(broken.header("x-served-by"), Some("example"), "{broken:?}");

    // No rule: untouched.
    let other = get(web, "/other");
    assert_eq!(other.status, 200, "{other:?}");
    assert_eq!(other.body, "upstream saw /other");
    assert_eq!(other.header("x-fault-delay-ms"), None, "{other:?}");

    assert_eq!(upstream.paths(), ["/slow/page", "/other"]);

    // Counted by the filter: two delays (`/slow/page`, `/broken`), one abort.
    proxy.wait_for_counter("nuncio_filter_fault_delays_injected_total{filter=\"fault\",listener=\"web\"}", 2);
    proxy.wait_for_counter("nuncio_filter_fault_aborts_injected_total{filter=\"fault\",listener=\"web\"}", 1);
}

#[test]
fn a_held_request_leaves_the_worker_serving_and_ends_with_its_client() {
    let upstream = Upstream::start(2);
    let dir = Scratch::new("held");
    let filters = format!(
        "      - name: fault\n        config:\n          rules:\n            - {{ prefix: /held, delay_ms: {MAX_DELAY_MS} }}\n"
    );
    // One worker: the held request and the next one share it.
    let file = dir.write("nuncio.yaml", &config(upstream.address, &filters));
    let proxy = Proxy::start(&["-c", &file]);
    let web = proxy.listener("web");
    let answered = |proxy: &Proxy| proxy.counter("nuncio_downstream_rq_total");

    let held = send_get(web, "/held");
    // While `/held` waits at the filter (for a minute), the worker serves on.
    let free = get(web, "/free");
    assert_eq!(free.status, 200, "{free:?}");
    assert_eq!(free.body, "upstream saw /free");
    held.set_nonblocking(true).unwrap();
    let unanswered = (&held).read(&mut [0; 1]).map_err(|e| e.kind());
    assert_eq!(unanswered, Err(std::io::ErrorKind::WouldBlock), "/held is still held");

    // The client leaves: nuncio drops the pending hook and ends the stream
    // (counted), and the request never reaches the upstream.
    drop(held);
    let deadline = Instant::now() + TIMEOUT;
    while answered(&proxy) < 2 {
        assert!(Instant::now() < deadline, "the held stream never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(upstream.paths(), ["/free"]);
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
    let dir = Scratch::new("validate");
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
    let upstream = Upstream::start(1);
    let mut moved = std::fs::read_to_string(&shipped).unwrap();
    for (from, to) in [
        ("address: 127.0.0.1:9901", "address: 127.0.0.1:0".to_owned()),
        ("address: 127.0.0.1:8080", "address: 127.0.0.1:0".to_owned()),
        ("127.0.0.1:3000", upstream.address.to_string()),
    ] {
        assert!(moved.contains(from), "the shipped config changed: no {from}");
        moved = moved.replace(from, &to);
    }
    let dir = Scratch::new("shipped");
    let file = dir.write("nuncio.yaml", &moved);
    let proxy = Proxy::start(&["-c", &file, "--workers", "1"]);
    let public = proxy.listener("public");
    let api = get(public, "/api/x");
    assert_eq!(api.status, 200, "{api:?}");
    assert_eq!(api.body, "upstream saw /api/x");
    let broken = get(public, "/broken");
    assert!(broken.status >= 400, "the shipped abort rule answers: {broken:?}");
    assert!(broken.header("x-fault-delay-ms").is_some(), "{broken:?}");
    assert_eq!(upstream.paths(), ["/api/x"]);
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
    let dir = Scratch::new("stock");
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
    let upstream = Upstream::start(1);
    let url = format!("http://{}", upstream.address);
    let proxy =
        Proxy::start(&["--upstream", &url, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "1"]);
    let reply = get(proxy.listener("default"), "/hello?x=1");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "upstream saw /hello?x=1");
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
