//! Fixtures for the Go filter tests: the Go library built by the test run,
//! nuncio started in-process from YAML with the `go` kind, an upstream
//! that echoes what it received, and a raw HTTP/1.1 client. Every server
//! binds 127.0.0.1 only; every wait is bounded by [`TIMEOUT`].
//!
//! (To be replaced by the shared `crates/test-support` fixtures once they
//! are merged.)

#![allow(dead_code, unreachable_pub, clippy::print_stdout)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nuncio_config::Config;
use nuncio_filter_abi::GoKind;
use nuncio_proxy::{FilterKinds, Options, RunningServer};

/// The longest any single wait may take: a loaded 2-core machine keeps it.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// The Go toolchain, if there is one: `$NUNCIO_GO`, `go` on the `PATH`,
/// or Debian's /usr/lib/go-1.23/bin/go.
pub fn go_binary() -> Option<PathBuf> {
    if let Some(go) = std::env::var_os("NUNCIO_GO") {
        return Some(PathBuf::from(go));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("go"))
        .find(|p| p.is_file());
    on_path.or_else(|| Some(PathBuf::from("/usr/lib/go-1.23/bin/go")).filter(|p| p.is_file()))
}

/// Builds the c-shared library of the Go main package `package` (a path
/// from the repository's root) into the test target dir, once per test
/// process; `extra` are more `go build` arguments. `None` (and a note)
/// when there is no Go toolchain, unless `NUNCIO_REQUIRE_GO=1`, which
/// makes a missing toolchain a failure.
pub fn go_library(package: &str, name: &str, extra: &[&str]) -> Option<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<String, Option<PathBuf>>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let key = format!("{package} {name} {extra:?}");
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let path = build(package, name, extra);
    built.insert(key, path.clone());
    path
}

fn build(package: &str, name: &str, extra: &[&str]) -> Option<PathBuf> {
    let Some(go) = go_binary() else {
        assert!(
            std::env::var("NUNCIO_REQUIRE_GO").as_deref() != Ok("1"),
            "NUNCIO_REQUIRE_GO=1 but no Go toolchain was found (set NUNCIO_GO, put `go` on the PATH, or install \
             golang-1.23-go from bookworm-backports: see the README)"
        );
        println!("note: no Go toolchain found: skipping the Go filter tests (install golang-1.23-go; see the README)");
        return None;
    };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go").join(format!("lib{name}.so"));
    std::fs::create_dir_all(out.parent().expect("a dir")).expect("create the output dir");
    let module = repo().join(package);
    let started = Instant::now();
    let output = Command::new(&go)
        .current_dir(&module)
        .args(["build", "-buildmode=c-shared", "-o"])
        .arg(&out)
        .args(extra)
        .arg(".")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .env("CGO_ENABLED", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", go.display()));
    assert!(
        output.status.success(),
        "go build of {package} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("built {} in {:?}", out.display(), started.elapsed());
    Some(out)
}

/// The library of sdk/go/internal/testfilters (every scenario's filter).
pub fn test_library() -> Option<PathBuf> {
    go_library("sdk/go/internal/testfilters", "testfilters", &["-tags", "nunciotest"])
}

/// Runs the tests of one binary one at a time: they share the process's
/// library and its live counts.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The filter kinds these tests run with: the `go` kind.
pub fn kinds() -> FilterKinds {
    FilterKinds::new(vec![Arc::new(GoKind)])
}

/// `yaml` checked as the `nuncio` command checks a file named
/// `nuncio.yaml`; the errors as it prints them.
pub fn load(yaml: &str) -> Result<Config, String> {
    Config::from_yaml_with(yaml, "nuncio.yaml", &kinds()).map_err(|e| e.to_string())
}

/// nuncio from a config with `{name}` placeholders replaced.
pub struct Proxy {
    pub server: RunningServer,
}

impl Proxy {
    pub fn start(yaml: &str, vars: &[(&str, &str)]) -> Proxy {
        let yaml = fill(yaml, vars);
        let config = load(&yaml).unwrap_or_else(|e| panic!("bad test config:\n{e}\n{yaml}"));
        let mut options = Options::default();
        options.filter_kinds = kinds();
        Proxy { server: RunningServer::start_with(config, options).expect("nuncio starts") }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.listener("main").expect("listener main")
    }

    pub fn admin(&self, path: &str) -> Response {
        exchange(self.server.addresses().admin, &format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n"))
    }

    pub fn get(&self, path: &str) -> Response {
        self.request(&format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
    }

    pub fn request(&self, raw: &str) -> Response {
        exchange(self.addr(), raw)
    }

    /// Waits until `/stats` has the line `series: value`.
    pub fn wait_for_stat(&self, line: &str) {
        wait_until(&format!("/stats has `{line}`"), || self.admin("/stats").body_text().lines().any(|l| l == line));
    }
}

/// `text` with each `{name}` replaced.
pub fn fill(text: &str, vars: &[(&str, &str)]) -> String {
    let mut text = text.to_owned();
    for (name, value) in vars {
        text = text.replace(&format!("{{{name}}}"), value);
    }
    text
}

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 upstream on its own threads. It records each request (the
/// last 256) and
/// answers 200 with `x-upstream: yes` and body `upstream <path>`, except:
/// `/delay/<ms>/...` waits first; `/big/<n>` answers n bytes of `a`.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                c.fetch_add(1, Ordering::Relaxed);
                let s = s.clone();
                std::thread::spawn(move || serve_upstream(conn, &s));
            }
        });
        Upstream { addr, seen, connections }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.requests().pop().expect("the upstream got a request")
    }
}

fn serve_upstream(conn: TcpStream, seen: &Mutex<Vec<Seen>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut conn = conn;
    loop {
        let Some((method, path, headers)) = read_head(&mut reader) else { return };
        let body = read_body(&mut reader, &headers);
        {
            // The last 256 only: a long run must not grow the test's memory.
            let mut seen = seen.lock().unwrap();
            if seen.len() == 256 {
                seen.remove(0);
            }
            seen.push(Seen { method, path: path.clone(), headers, body });
        }
        if let Some(rest) = path.strip_prefix("/delay/") {
            let ms: u64 = rest.split('/').next().and_then(|m| m.parse().ok()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms));
        }
        let body = match path.strip_prefix("/big/") {
            Some(n) => vec![b'a'; n.parse().unwrap_or(0)],
            None => format!("upstream {path}").into_bytes(),
        };
        let mut answer =
            format!("HTTP/1.1 200 OK\r\nx-upstream: yes\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        answer.extend_from_slice(&body);
        if conn.write_all(&answer).is_err() {
            return;
        }
    }
}

type Head = (String, String, Vec<(String, String)>);

fn read_head(reader: &mut impl BufRead) -> Option<Head> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Some((method, path, headers))
}

fn read_body(reader: &mut impl BufRead, headers: &[(String, String)]) -> Vec<u8> {
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap_or(0) == 0 {
                return body;
            }
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if n == 0 {
                let mut end = String::new();
                while reader.read_line(&mut end).unwrap_or(0) > 0 && end.trim() != "" {
                    end.clear();
                }
                return body;
            }
            let mut chunk = vec![0; n + 2];
            if reader.read_exact(&mut chunk).is_err() {
                return body;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let n: usize = get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; n];
    let _ = reader.read_exact(&mut body);
    body
}

/// A response as the client read it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `raw` on a new connection and reads one response.
pub fn exchange(addr: SocketAddr, raw: &str) -> Response {
    let mut client = Client::connect(addr);
    client.send(raw.as_bytes());
    client.response()
}

/// A raw HTTP/1.1 client connection.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one response (panics on a closed or silent connection).
    pub fn response(&mut self) -> Response {
        self.try_response().expect("a response")
    }

    pub fn try_response(&mut self) -> Option<Response> {
        let (version, status, headers) = read_head(&mut self.reader)?;
        assert!(version.starts_with("HTTP/1.1"), "{version}");
        let status: u16 = status.parse().ok()?;
        let body = read_body(&mut self.reader, &headers);
        Some(Response { status, headers, body })
    }

    /// Closes the connection at once (RST when unread data is left, FIN
    /// otherwise).
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Waits (at most [`TIMEOUT`]) until `condition` holds.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {TIMEOUT:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until nuncio and the library hold nothing for any stream.
pub fn wait_until_idle() {
    wait_until("every stream and Go call and goroutine is gone", || {
        nuncio_filter_abi::live_streams() == 0
            && nuncio_filter_abi::library_stats().is_none_or(|s| s.streams == 0 && s.calls == 0 && s.goroutines == 0)
    });
}

/// The process's resident memory, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
