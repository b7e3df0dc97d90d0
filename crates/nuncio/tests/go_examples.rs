//! The example Go filters (examples/go/authz, examples/go/bodyrewrite) in
//! the `nuncio` binary, as the README runs them: the libraries built by
//! this test run with `go build -buildmode=c-shared`, nuncio started with a
//! config naming them, real upstreams and clients. Also what an operator
//! sees of a library built for another ABI version, and that nuncio with a
//! Go runtime loaded still drains and exits on SIGTERM.
//!
//! Without a Go toolchain the tests print a note and pass, unless
//! `NUNCIO_REQUIRE_GO=1`.

// A note for a developer without Go.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NUNCIO: &str = env!("CARGO_BIN_EXE_nuncio");
const TIMEOUT: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The Go toolchain: `$NUNCIO_GO`, `go` on the PATH, or Debian's.
fn go_binary() -> Option<PathBuf> {
    if let Some(go) = std::env::var_os("NUNCIO_GO") {
        return Some(PathBuf::from(go));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("go"))
        .find(|p| p.is_file())
        .or_else(|| Some(PathBuf::from("/usr/lib/go-1.23/bin/go")).filter(|p| p.is_file()))
}

/// Builds `examples/go/<example>` into the test target dir as
/// `lib<name>.so`; `None` (with a note) without Go, unless Go is required.
fn build(example: &str, name: &str, ldflags: Option<&str>) -> Option<PathBuf> {
    // Once per process and library: a nuncio of another test may have the
    // file loaded, and must not see it rewritten.
    static BUILT: Mutex<Vec<(String, Option<PathBuf>)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let path = build_once(example, name, ldflags);
    built.push((name.to_owned(), path.clone()));
    path
}

fn build_once(example: &str, name: &str, ldflags: Option<&str>) -> Option<PathBuf> {
    let Some(go) = go_binary() else {
        assert!(
            std::env::var("NUNCIO_REQUIRE_GO").as_deref() != Ok("1"),
            "NUNCIO_REQUIRE_GO=1 but no Go toolchain was found (install golang-1.23-go: see the README)"
        );
        println!("note: no Go toolchain found: skipping the Go example tests");
        return None;
    };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-examples").join(format!("lib{name}.so"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut command = Command::new(go);
    command
        .current_dir(repo().join("examples/go").join(example))
        .args(["build", "-buildmode=c-shared", "-o"])
        .arg(&out);
    if let Some(ldflags) = ldflags {
        command.arg(format!("-ldflags={ldflags}"));
    }
    let output = command
        .arg(".")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .output()
        .expect("run go");
    assert!(output.status.success(), "go build failed:\n{}", String::from_utf8_lossy(&output.stderr));
    Some(out)
}

/// A nuncio process, killed when dropped (its log shown if a test fails).
struct Nuncio {
    child: Child,
    log: Arc<Mutex<String>>,
    listener: SocketAddr,
    admin: SocketAddr,
}

impl Nuncio {
    fn start(config: &Path) -> Nuncio {
        let mut child = Command::new(NUNCIO)
            .args(["-c"])
            .arg(config)
            .args(["--admin", "127.0.0.1:0", "--workers", "2", "--log-level", "debug"])
            .current_dir(repo())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nuncio");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + TIMEOUT;
        let mut listener = None;
        let admin = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left) else { panic!("nuncio did not start:\n{}", log.lock().unwrap()) };
            if let Some((_, url)) = line.split_once(" on http://").filter(|_| line.contains(" listener ")) {
                listener = Some(url.trim().parse().unwrap());
            } else if let Some((_, url)) = line.split_once("admin on http://") {
                break url.trim().parse().unwrap();
            }
        };
        Nuncio { child, log, listener: listener.expect("a listener"), admin }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "the log never said {text:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stat(&self, line: &str) -> bool {
        request(self.admin, "GET /stats HTTP/1.1\r\nHost: admin\r\n\r\n").1.lines().any(|l| l == line)
    }

    fn wait_for_stat(&self, line: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.stat(line) {
            assert!(Instant::now() < deadline, "/stats never had {line:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nuncio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- nuncio log ---\n{}", self.log());
        }
    }
}

/// One request on a fresh connection (closed after): status line and
/// headers, and body.
fn request(address: SocketAddr, raw: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let raw = raw.replacen("\r\n", "\r\nConnection: close\r\n", 1);
    stream.write_all(raw.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.to_owned(), body.to_owned())
}

/// A server answering each request with `answer(path)`: status, extra
/// header lines, body, and a delay. Counts connections it saw closed by
/// the other side while it waited to answer.
struct Server {
    addr: SocketAddr,
    abandoned: Arc<AtomicUsize>,
}

type Answer = (u16, &'static str, String, Duration);

fn serve(answer: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    let abandoned = Arc::new(AtomicUsize::new(0));
    let gone = abandoned.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let (answer, gone) = (answer.clone(), gone.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                    let mut header = String::new();
                    while reader.read_line(&mut header).unwrap_or(0) > 2 {
                        header.clear();
                    }
                    let (status, headers, body, delay) = answer(&path);
                    if !delay.is_zero() {
                        // Waits, watching for the caller to hang up.
                        conn.set_read_timeout(Some(delay)).unwrap();
                        let mut byte = [0u8; 1];
                        if let Ok(0) = conn.read(&mut byte) {
                            gone.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        conn.set_read_timeout(None).unwrap();
                    }
                    let response =
                        format!("HTTP/1.1 {status} X\r\n{headers}content-length: {}\r\n\r\n{body}", body.len());
                    if conn.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Server { addr, abandoned }
}

fn config(name: &str, yaml: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn the_authz_example_asks_a_cluster_and_honours_ctx() {
    let Some(library) = build("authz", "authz", None) else { return };
    let app = serve(|path| (200, "", format!("app {path}"), Duration::ZERO));
    let authz = serve(|path| match path {
        "/check/ok" => (200, "x-user: alice\r\n", String::new(), Duration::ZERO),
        "/check/slow" => (200, "", String::new(), Duration::from_secs(2)),
        "/check/hang" => (200, "", String::new(), Duration::from_secs(15)),
        _ => (
            401,
            "www-authenticate: Basic\r\ncontent-type: text/plain\r\n",
            "who are you?\n".to_owned(),
            Duration::ZERO,
        ),
    });
    let yaml = format!(
        "
listeners:
  - name: public
    address: 127.0.0.1:0
    filters:
      - name: go
        config:
          library: {}
          filter: authz
          config: {{ cluster: authz, path_prefix: /check, timeout_ms: 300 }}
    routes:
      - match: {{ prefix: / }}
        cluster: app
        timeout: 5s
clusters:
  - name: app
    endpoints: [ {} ]
  - name: authz
    endpoints: [ {} ]
",
        library.display(),
        app.addr,
        authz.addr
    );
    let nuncio = Nuncio::start(&config("authz", &yaml));
    let (head, body) = request(nuncio.listener, "GET /ok HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "app /ok");
    let (head, body) = request(nuncio.listener, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 401") && head.contains("www-authenticate: Basic"), "{head}");
    assert_eq!(body, "who are you?\n");
    // The service is too slow: its call is bounded by the filter's timeout.
    let started = Instant::now();
    let (head, _) = request(nuncio.listener, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(2), "not bounded: {:?}", started.elapsed());
    nuncio.wait_for_log("authorization service gave no answer");
    assert!(nuncio.log().contains("filter=go.authz"), "slog lands in nuncio's log naming the filter");
    // A client that leaves cancels the check: the service sees it hang up.
    let mut client = TcpStream::connect(nuncio.listener).unwrap();
    client.write_all(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(client);
    let deadline = Instant::now() + TIMEOUT;
    while authz.abandoned.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the check outlived its client");
        std::thread::sleep(Duration::from_millis(10));
    }
    for (counter, n) in [("allowed", 1), ("denied", 1), ("failed", 1)] {
        nuncio.wait_for_stat(&format!(
            "nuncio_filter_go_authz_{counter}_total{{filter=\"go.authz\",listener=\"public\"}}: {n}"
        ));
    }
}

#[test]
fn the_bodyrewrite_example_rewrites_a_response_body() {
    let Some(library) = build("bodyrewrite", "bodyrewrite", None) else { return };
    let app = serve(|path| match path {
        "/json" => (200, "content-type: application/json\r\n", "{\"upstream\":1}".to_owned(), Duration::ZERO),
        _ => (200, "content-type: text/plain\r\n", format!("hello upstream, from upstream {path}"), Duration::ZERO),
    });
    let yaml = format!(
        "
listeners:
  - name: public
    address: 127.0.0.1:0
    filters:
      - name: go
        config:
          library: {}
          filter: bodyrewrite
          config: {{ from: upstream, to: nuncio, content_types: [ text/plain ] }}
    routes:
      - match: {{ prefix: / }}
        cluster: app
clusters:
  - name: app
    endpoints: [ {} ]
",
        library.display(),
        app.addr
    );
    let nuncio = Nuncio::start(&config("bodyrewrite", &yaml));
    let (head, body) = request(nuncio.listener, "GET /page HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(body, "hello nuncio, from nuncio /page");
    assert!(head.to_ascii_lowercase().contains(&format!("content-length: {}", body.len())), "{head}");
    let (_, body) = request(nuncio.listener, "GET /json HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(body, "{\"upstream\":1}", "other types pass untouched");
    nuncio.wait_for_stat(
        "nuncio_filter_go_bodyrewrite_rewritten_total{filter=\"go.bodyrewrite\",listener=\"public\"}: 1",
    );

    // With a Go runtime loaded, SIGTERM still drains and exits 0.
    let status = Command::new("kill").args(["-s", "TERM", &nuncio.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut nuncio = nuncio;
    let deadline = Instant::now() + TIMEOUT;
    let exit = loop {
        if let Some(exit) = nuncio.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "nuncio did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn validate_refuses_a_library_built_for_another_abi_and_names_bad_fields() {
    let Some(library) =
        build("authz", "authz-abi2", Some("-X nuncio.dev/sdk/go/internal/abi.abiTag=nuncio-filter-abi-version:2"))
    else {
        return;
    };
    let yaml = |library: &Path, config: &str| {
        format!(
            "
listeners:
  - name: public
    address: 127.0.0.1:0
    filters:
      - name: go
        config:
          library: {}
          filter: authz
          config: {config}
    routes:
      - match: {{ prefix: / }}
        cluster: authz
clusters:
  - name: authz
    endpoints: [ 127.0.0.1:1 ]
",
            library.display()
        )
    };
    let validate = |path: &Path| {
        let output = Command::new(NUNCIO).arg("validate").arg("-c").arg(path).output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (code, errors) = validate(&config("abi2", &yaml(&library, "{ cluster: authz }")));
    assert_eq!(code, Some(1), "{errors}");
    assert!(
        errors.contains(&format!(
            "listeners[0].filters[0].config.library: library {} was built for ABI v2, this nuncio speaks v1: \
             rebuild it against sdk/go of this nuncio",
            library.display()
        )),
        "{errors}"
    );
    let Some(good) = build("authz", "authz", None) else { return };
    let (code, errors) = validate(&config("badfield", &yaml(&good, "{ cluster: authz, timeout_ms: -5 }")));
    assert_eq!(code, Some(1));
    assert!(
        errors.contains("badfield.yaml:10:") && errors.contains("config.config.timeout_ms: must be positive, not -5"),
        "{errors}"
    );
    let (code, errors) = validate(&config("nocluster", &yaml(&good, "{ cluster: nowhere }")));
    assert_eq!(code, Some(1));
    assert!(errors.contains("config.config.cluster"), "{errors}");
    let (code, errors) = validate(&config("fine", &yaml(&good, "{ cluster: authz }")));
    assert_eq!(code, Some(0), "{errors}");
}
