//! The `nuncio` binary, run as a newcomer would: no arguments, `--upstream`,
//! `validate`. Real processes, real sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NUNCIO: &str = env!("CARGO_BIN_EXE_nuncio");

/// A nuncio process, killed when dropped.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts nuncio with `args` and waits until `address` accepts connections.
fn start(args: &[&str], address: SocketAddr) -> Proxy {
    let child =
        Command::new(NUNCIO).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("run nuncio");
    let proxy = Proxy(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "nuncio did not start listening on {address}");
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy
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

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[test]
fn with_no_arguments_it_serves_the_builtin_page_and_admin() {
    // The documented defaults: 127.0.0.1:8080 and admin on 127.0.0.1:9901.
    let page: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let _proxy = start(&[], page);
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
    let listen = free_port();
    let url = format!("http://{upstream_address}");
    let args = ["--upstream", &url, "--listen", &listen.to_string(), "--admin", "127.0.0.1:0", "--workers", "1"];
    let _proxy = start(&args, listen);
    let response = get(listen, "/hello?x=1");
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
