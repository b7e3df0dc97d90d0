//! The `nuncio` binary, run as a newcomer would: no arguments, `--upstream`,
//! `validate`. Real processes, real sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NUNCIO: &str = env!("CARGO_BIN_EXE_nuncio");

/// A nuncio process, killed when dropped. Its log (stderr) is kept so that
/// a failing test can show what nuncio said.
struct Proxy {
    child: Child,
    log: Arc<Mutex<String>>,
    /// Listener name → address, from the log line nuncio prints once every
    /// worker serves.
    listeners: Vec<(String, SocketAddr)>,
    admin: SocketAddr,
}

impl Proxy {
    fn listener(&self, name: &str) -> SocketAddr {
        self.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| *a).unwrap_or_else(|| panic!("no listener {name}"))
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- nuncio log ---\n{}", self.log());
        }
    }
}

/// Starts nuncio with `args` and waits until it says every worker serves
/// (its `admin on` line): no port probing, so no race with the kernel
/// handing the same port to someone else.
fn start(args: &[&str]) -> Proxy {
    let mut child = Command::new(NUNCIO)
        .args(args)
        .args(["--log-level", "debug"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nuncio");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push_str(&format!("{line}\n"));
            let _ = lines_tx.send(line);
        }
    });
    let mut listeners = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let admin = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else { panic!("nuncio did not start:\n{}", log.lock().unwrap()) };
        if let Some((name, url)) = line.split_once(" INFO listener ").and_then(|(_, r)| r.split_once(" on http://")) {
            listeners.push((name.to_owned(), url.trim().parse().unwrap()));
        } else if let Some((_, url)) = line.split_once("admin on http://") {
            break url.trim().parse().unwrap();
        }
    };
    Proxy { child, log, listeners, admin }
}

/// One HTTP/1.1 request on a fresh connection; the whole response as text.
fn get(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn with_no_arguments_it_serves_the_builtin_page_and_admin() {
    // The documented defaults: 127.0.0.1:8080 and admin on 127.0.0.1:9901.
    let proxy = start(&[]);
    let page: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    assert_eq!(proxy.listener("default"), page);
    assert_eq!(proxy.admin, "127.0.0.1:9901".parse().unwrap());
    let response = get(page, "/anything");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("nuncio is running"), "{response}");
    assert!(response.contains("--upstream"), "the page says how to go on: {response}");
    // Admin says ready once every worker serves (it may still be starting).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = get("127.0.0.1:9901".parse().unwrap(), "/ready");
        if ready.starts_with("HTTP/1.1 200 OK\r\n") {
            break;
        }
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(Instant::now() < deadline, "never ready: {ready}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn upstream_flag_proxies_everything_to_one_service() {
    // A real upstream: answers every request with its path.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_address = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in upstream.incoming().take(2) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let path = request_line.split(' ').nth(1).unwrap_or("?").to_owned();
            let body = format!("upstream saw {path}");
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                .unwrap();
        }
    });
    let url = format!("http://{upstream_address}");
    let args = ["--upstream", &url, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "1"];
    let proxy = start(&args);
    let response = get(proxy.listener("default"), "/hello?x=1");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("upstream saw /hello?x=1"), "{response}");
}

#[test]
fn validate_accepts_the_examples() {
    for example in ["basic.yaml", "single-upstream.yaml", "h2-upstream.yaml"] {
        let path = format!("{}/../../examples/{example}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(NUNCIO).args(["validate", "-c", &path]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{example}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("valid"), "{stdout}");
    }
}

#[test]
fn validate_reports_every_error_with_line_and_field() {
    let dir = std::env::temp_dir().join(format!("nuncio-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    routes:\n      - match: { prefix: / }\n        cluster: nope\n        timeout: 5x\n",
    )
    .unwrap();
    let out = Command::new(NUNCIO).args(["validate", "-c", file.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:6:18: listeners[0].routes[0].cluster"), "{stderr}");
    assert!(stderr.contains("bad.yaml:7:18: listeners[0].routes[0].timeout"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_prints_the_version() {
    let out = Command::new(NUNCIO).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_readme_config_is_valid() {
    let readme = std::fs::read_to_string(format!("{}/../../README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let start = readme.find("```yaml\n").expect("README has a yaml block") + "```yaml\n".len();
    let yaml = &readme[start..start + readme[start..].find("```").unwrap()];
    let file = std::env::temp_dir().join(format!("nuncio-readme-{}.yaml", std::process::id()));
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(NUNCIO).args(["validate", "-c", file.to_str().unwrap()]).output().unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// One request with `method` on a fresh connection; the whole response.
fn request(address: SocketAddr, method: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn admin_changes_the_log_level_with_post_only() {
    let proxy = start(&["--upstream", "http://127.0.0.1:9", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    // Started at debug (see `start`): now quieter, and debug lines stop.
    let reply = request(proxy.admin, "POST", "/logging?level=warn");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(request(proxy.admin, "GET", "/logging?level=debug").starts_with("HTTP/1.1 405"));
    let bad = request(proxy.admin, "POST", "/logging?level=loud");
    assert!(bad.starts_with("HTTP/1.1 400") && bad.contains("unknown level"), "{bad}");
    let before = proxy.log().len();
    // A request that logs at debug (connect failure) must not show now.
    let _ = get(proxy.listener("default"), "/");
    std::thread::sleep(Duration::from_millis(200));
    let after = proxy.log();
    assert!(!after[before..].contains("DEBUG"), "{}", &after[before..]);
}

#[test]
fn a_non_loopback_admin_flag_is_refused() {
    let out = Command::new(NUNCIO)
        .args(["--upstream", "http://127.0.0.1:9", "--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_remote"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sigusr1_reopens_the_access_log() {
    let dir = std::env::temp_dir().join(format!("nuncio-cli-usr1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let config = dir.join("nuncio.yaml");
    std::fs::write(
        &config,
        format!(
            "admin: {{ address: 127.0.0.1:0 }}\nworkers: 1\nlisteners:\n  - name: web\n    address: 127.0.0.1:0\n    access_log: {{ path: '{}', format: '%REQ(:PATH)%' }}\n    routes:\n      - match: {{}}\n        direct_response: {{ status: 200 }}\n",
            log.display()
        ),
    )
    .unwrap();
    let proxy = start(&["-c", config.to_str().unwrap()]);
    let web = proxy.listener("web");
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(get(web, "/before").starts_with("HTTP/1.1 200"));
    wait("first line", &|| read(&log).contains("/before"));
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let pid = proxy.child.id().to_string();
    assert!(Command::new("kill").args(["-USR1", &pid]).status().unwrap().success());
    // The reopen is asynchronous: log until a line lands in the new file.
    wait("a line in the reopened file", &|| {
        let _ = get(web, "/after");
        read(&log).contains("/after")
    });
    assert!(read(&rotated).starts_with("/before\n"));
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_filters_run_and_bad_filter_config_names_line_and_field() {
    let dir = std::env::temp_dir().join(format!("nuncio-cli-filters-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        "admin: { address: 127.0.0.1:0 }\nworkers: 1\nlisteners:\n  - name: web\n    address: 127.0.0.1:0\n    filters:\n      - name: headers\n        config: { response: { set: [ { name: x-via, value: nuncio } ] } }\n    routes:\n      - match: {}\n        direct_response: { status: 200 }\n",
    )
    .unwrap();
    let proxy = start(&["-c", good.to_str().unwrap()]);
    let reply = get(proxy.listener("web"), "/");
    assert!(reply.starts_with("HTTP/1.1 200") && reply.to_ascii_lowercase().contains("x-via: nuncio\r\n"), "{reply}");
    drop(proxy);

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    filters:\n      - name: local_ratelimit\n        config: { tokens: 10, interval: soon }\n    routes:\n      - match: {}\n        direct_response: { status: 200 }\n",
    )
    .unwrap();
    let out = Command::new(NUNCIO).args(["validate", "-c", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:6:") && stderr.contains("listeners[0].filters[0].config.interval"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
